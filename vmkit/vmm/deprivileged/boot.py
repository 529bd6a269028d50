"""Trap-and-emulate's host layout at power-on: the VMM area every VM shares (the real IDT, the
VMM's TSS, the all-ones page) and each VM's structures and real CPU (ring 1, paging on the
shadow tables)."""

from __future__ import annotations

import struct

from vmkit.machine.mmu import PTE_A, PTE_D, PTE_P, PTE_W
from vmkit.vmm.deprivileged.segments import shadow_descriptor
from vmkit.vmm.deprivileged.vcpu import _I, _Q, IF, REAL_CR0, TEVM
from vmkit.vmm.layout import (GDT_BYTES, H_IDT, H_ONES, H_STUB, H_TSS, TSS_LIMIT, V_WINPT, VMM_CS,
                              VMM_DS, VMM_TSS, VMM_WINDOW, W_GDT, W_IDT, W_STUB, W_TSS)


def build_vmm_area(te) -> None:
    """The real IDT, the VMM's TSS (an I/O bitmap denying every port) and the all-ones
    page, shared by every VM."""
    m = te._host
    mem = m.mem
    stub = VMM_WINDOW + W_STUB
    # the real IDT: every vector leads into the VMM. The simulator's VMM runs in Python, so
    # these gates are never taken (MachineHooks.on_exception intercepts first); they are what
    # the real IDT holds, and what a guest's sidt points at.
    gate = (stub & 0xFFFF) | (VMM_CS << 16) | (0x8E << 40) | ((stub >> 16) << 48)
    for v in range(256):
        _Q.pack_into(mem, H_IDT + 8 * v, gate)
    mem[H_IDT + 2048:H_IDT + 4096] = bytes(2048)
    tss = bytearray(3 * 4096)
    _I.pack_into(tss, 4, stub + 0x1000)        # ESP0: the VMM's (unused) stack
    _I.pack_into(tss, 8, VMM_DS)               # SS0
    struct.pack_into("<H", tss, 0x66, 104)     # I/O bitmap right after the TSS
    tss[104:104 + 8193] = b"\xFF" * 8193       # every port denied, and the end byte
    mem[H_TSS:H_TSS + len(tss)] = tss
    mem[H_STUB:H_STUB + 4096] = b"\xF4" * 4096  # hlt: never reached
    mem[H_ONES:H_ONES + 4096] = b"\xFF" * 4096  # guest frames beyond a VM's memory


def boot_vm(te, vm: TEVM) -> None:
    """The VM's slice as the machine powers on (0xAA everywhere, the boot GDT, the image),
    its VMM structures, and the real CPU state that runs it: ring 1, paging on the shadow."""
    m = te._host
    mem = m.mem
    te._power_on_slice(vm)
    # the VMM's own descriptors at the top of this VM's real GDT
    tss_base = VMM_WINDOW + W_TSS
    tss_desc = ((TSS_LIMIT & 0xFFFF) | ((tss_base & 0xFFFFFF) << 16) | (0x8B << 40)
                | (((TSS_LIMIT >> 16) & 0xF) << 48) | ((tss_base >> 24) << 56))
    for sel, raw in ((VMM_CS, 0x00CF9B000000FFFF), (VMM_DS, 0x00CF93000000FFFF),
                     (VMM_TSS, tss_desc)):
        _Q.pack_into(mem, vm.gdt_base + sel, raw)
    # the window: the real GDT, IDT and TSS, read-only and supervisor-only
    frames = [vm.gdt_base + 0x1000 * k for k in range(GDT_BYTES // 0x1000)]
    frames += [H_IDT, H_TSS, H_TSS + 0x1000, H_TSS + 0x2000, H_STUB]
    winpt = vm.vmm_base + V_WINPT
    for k, f in enumerate(frames):
        _I.pack_into(mem, winpt + 4 * k, f | PTE_P | PTE_A | PTE_D)
    _I.pack_into(mem, vm.pd + 4 * 1023, winpt | PTE_P | PTE_W | PTE_A)
    te.shadow_gdt(vm)
    # the real CPU for this VM
    cpu = vm.saved
    cpu.regs[:] = [0] * 8
    cpu.regs[4] = vm.memory_size            # as Machine: a stack at the top of memory
    cpu.eip = vm.image.entry
    cpu.eflags = IF                          # real IF on, IOPL 0; the virtual IF is 0
    for i, sel in enumerate((0x10, 0x08, 0x10, 0x10, 0x10, 0x10)):
        d = shadow_descriptor(te, vm, sel)
        real = sel | 1 if i in (1, 2) else sel
        s = cpu.seg[i]
        s.selector, s.base, s.limit, s.access, s.flags = real, d.base, d.limit, \
            d.access | 1, d.flags
    cpu.cr0, cpu.cr2, cpu.cr3, cpu.cr4 = REAL_CR0, 0, te.paging.root(vm), 0
    cpu.gdtr.base, cpu.gdtr.limit = VMM_WINDOW + W_GDT, GDT_BYTES - 1
    cpu.idtr.base, cpu.idtr.limit = VMM_WINDOW + W_IDT, 256 * 8 - 1
    cpu.ldtr.selector, cpu.ldtr.base, cpu.ldtr.limit = 0, 0, 0
    cpu.tr.selector, cpu.tr.base, cpu.tr.limit = VMM_TSS, VMM_WINDOW + W_TSS, TSS_LIMIT
    cpu.cpl = 1
    vm.vcpu.cpl = 0
    te.paging.boot_vm(vm)                    # the paging mode's structures
