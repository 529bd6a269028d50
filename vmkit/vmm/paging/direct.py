"""Validated direct paging (``"direct"``, after Xen's page types, xen/arch/x86/mm.c, simplified):
the guest's page tables are the real ones, holding machine addresses; a frame becomes a table
only once validated, and every change is an ``mmu_update`` or ``mmuext_op`` hypercall, each
entry checked (no frame outside the VM's memory, no page table mapped writable). Used by pv.

The hypercalls' command numbers and the errno values of a refusal are Xen's (xen.h); they are
defined here, with the mechanism they drive, and re-exported by :mod:`vmkit.vmm.pv.abi`.
Each VM keeps ``l1``/``l2`` (machine frames validated as page tables and directories),
``writable`` (machine frame -> writable mappings in validated tables) and ``bootstrap`` (guest
frame -> host address of its start-of-day entry).
"""

from __future__ import annotations

import struct
from collections import Counter

from vmkit.machine.cpu import MASK32
from vmkit.machine.mmu import PTE_A, PTE_D, PTE_P, PTE_PS, PTE_W
from vmkit.vmm.layout import V_WINPT
from vmkit.vmm.paging.mode import PagingMode, PagingView, register

__all__ = ["DirectPaging", "Refused", "mmu_update", "mmuext_op"]

EPERM, EINVAL = 1, 22                              # Linux/Xen errno values
# mmuext_op's commands, as Xen numbers them (xen.h)
MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L2_TABLE, MMUEXT_NEW_BASEPTR, MMUEXT_INVLPG_LOCAL = 0, 1, 5, 7
MAX_BATCH = 1024

_I = struct.Struct("<I")


class Refused(Exception):
    """A hypercall the hypervisor refuses: ``code`` (positive errno), ``reason`` (counted)."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


_Refused = Refused


def owns(pv, vm, machine: int) -> bool:
    return vm.slice_base <= machine < vm.slice_base + vm.memory_size


def check_l1e(pv, vm, val: int) -> None:
    if not val & PTE_P:
        return
    frame = val & 0xFFFFF000
    if not owns(pv, vm, frame):
        raise _Refused(EPERM, "maps memory that is not the VM's")
    if val & PTE_W and (frame in vm.l1 or frame in vm.l2):
        raise _Refused(EPERM, "would map a page table writable")


def drop_bootstrap_write(pv, vm, frame: int) -> None:
    """A new page table is read-only in the start-of-day mappings too."""
    a = vm.bootstrap.get(frame - vm.slice_base)
    if a is not None:
        mem = pv._host.mem
        _I.pack_into(mem, a, _I.unpack_from(mem, a)[0] & ~PTE_W)
        if vm.current:
            pv._host.flush_tlb((frame - vm.slice_base) >> 12)


def new_table(pv, vm, frame: int, pinned: set, other: set, what: str,
              other_what: str) -> bool:
    """The checks before ``frame`` becomes a table of kind ``what``: the VM's own, page
    aligned, not already the other kind, mapped writable nowhere. False if it already is
    one (nothing to do)."""
    if frame & 0xFFF or not owns(pv, vm, frame):
        raise _Refused(EPERM, f"{what} outside the VM's memory")
    if frame in pinned:
        return False
    if frame in other:
        raise _Refused(EINVAL, f"a {other_what} cannot be a {what}")
    if vm.writable[frame]:
        raise _Refused(EPERM, f"{what} is mapped writable")
    return True


def check_l2e(pv, vm, e: int) -> None:
    """A present page directory entry must lead to a (validated) page table."""
    if e & PTE_P:
        if e & PTE_PS:
            raise _Refused(EINVAL, "large pages are not supported")
        pin_l1(pv, vm, e & 0xFFFFF000)


def pin_l1(pv, vm, frame: int) -> None:
    if not new_table(pv, vm, frame, vm.l1, vm.l2, "page table", "page directory"):
        return
    mem = pv._host.mem
    entries = struct.unpack_from("<1024I", mem, frame)
    for e in entries:
        check_l1e(pv, vm, e)
        if e & PTE_P and e & 0xFFFFF000 == frame and e & PTE_W:
            raise _Refused(EPERM, "would map a page table writable")
    vm.l1.add(frame)
    for e in entries:
        if e & PTE_P and e & PTE_W:
            vm.writable[e & 0xFFFFF000] += 1
    drop_bootstrap_write(pv, vm, frame)


def pin_l2(pv, vm, frame: int) -> None:
    if not new_table(pv, vm, frame, vm.l2, vm.l1, "page directory", "page table"):
        return
    mem = pv._host.mem
    for e in struct.unpack_from("<1023I", mem, frame):
        check_l2e(pv, vm, e)
    vm.l2.add(frame)
    # the hypervisor's own slot: the window with the real GDT, IDT and TSS
    _I.pack_into(mem, frame + 4 * 1023, (vm.vmm_base + V_WINPT) | PTE_P | PTE_W | PTE_A)
    drop_bootstrap_write(pv, vm, frame)


def update_entry(pv, vm, ptr: int, val: int) -> None:
    """One validated page table update: ``ptr`` the guest-physical address of the entry."""
    val &= MASK32
    if ptr & 3 or not 0 <= ptr < vm.memory_size:
        raise _Refused(EINVAL, "entry address outside the VM's memory")
    a = vm.slice_base + ptr
    frame = a & 0xFFFFF000
    mem = pv._host.mem
    old = _I.unpack_from(mem, a)[0]
    if frame in vm.l1:
        check_l1e(pv, vm, val)
        if old & PTE_P and old & PTE_W:
            vm.writable[old & 0xFFFFF000] -= 1
        if val & PTE_P and val & PTE_W:
            vm.writable[val & 0xFFFFF000] += 1
    elif frame in vm.l2:
        if (a & 0xFFF) >> 2 == 1023:
            raise _Refused(EPERM, "the hypervisor's page directory slot")
        check_l2e(pv, vm, val)
    else:
        raise _Refused(EINVAL, "not a page table")
    pv._host.phys_write(a, val.to_bytes(4, "little"))
    pv.pt_updates += 1


def mmu_update(pv, vm, reqs: int, count: int, va: int):
    if not 0 <= count <= MAX_BATCH:
        raise _Refused(EINVAL, "batch too large")
    pv.batches[count] += 1
    done = 0
    try:
        for k in range(count):
            ptr = vm.lin_read(reqs + 8 * k, 4)
            val = vm.lin_read(reqs + 8 * k + 4, 4)
            update_entry(pv, vm, ptr, val)
            done += 1
    except _Refused as ref:
        ref.batch = count
        pv._host.cpu.regs[2] = done           # edx: updates done before the refusal
        raise
    pv._host.cpu.regs[2] = done
    if va != MASK32:
        pv._host.flush_tlb((va & MASK32) >> 12)
    return 0, count


def mmuext_op(pv, vm, cmd: int, arg: int, _c: int) -> int:
    if cmd == MMUEXT_PIN_L1_TABLE:
        pin_l1(pv, vm, arg)
    elif cmd == MMUEXT_PIN_L2_TABLE:
        pin_l2(pv, vm, arg)
    elif cmd == MMUEXT_NEW_BASEPTR:
        pin_l2(pv, vm, arg)
        vm.vcpu.cr3 = arg - vm.slice_base
        pv.paging.update_cr3(vm, arg)
    elif cmd == MMUEXT_INVLPG_LOCAL:
        pv.paging.invlpg(vm, arg)
    else:
        raise _Refused(EINVAL, "unknown mmuext_op")
    return 0


@register
class DirectPaging(PagingMode):
    """Validated direct paging (see the module text): the real MMU walks the guest's own
    tables; the guest changes them by hypercall (``mmu_update``, ``mmuext_op``)."""

    name = "direct"
    kind = "direct"
    title = "validated direct paging (the guest's tables are the real ones, changed by hypercall)"
    vm_state = ("l1", "l2", "writable", "bootstrap")

    def boot_vm(self, vm) -> None:
        """The start-of-day address space Xen's domain builder gives a guest: guest-physical
        memory mapped at the same virtual addresses, supervisor and writable, until the kernel
        loads page tables of its own."""
        vm.l1, vm.l2 = set(), set()
        vm.writable = Counter()
        vm.bootstrap = {}
        mem = self.monitor._host.mem
        for pdi in range((vm.memory_size + (4 << 20) - 1) >> 22):
            pt = vm.pool.pop()
            mem[pt:pt + 0x1000] = bytes(0x1000)
            _I.pack_into(mem, vm.pd + 4 * pdi, pt | PTE_P | PTE_W | PTE_A)
            for k in range(1024):
                g = (pdi << 22) | (k << 12)
                if g >= vm.memory_size:
                    break
                if g == 0:
                    continue                       # the null page stays unmapped
                _I.pack_into(mem, pt + 4 * k, (vm.slice_base + g) | PTE_P | PTE_W | PTE_A
                             | PTE_D)
                vm.bootstrap[g] = pt + 4 * k

    def update_cr3(self, vm, value: int) -> None:
        """MMUEXT_NEW_BASEPTR: ``value`` the machine address of a validated page directory."""
        m = self.monitor._host
        m.cpu.cr3 = value
        m.flush_tlb()

    def invlpg(self, vm, lin: int) -> None:
        self.monitor._host.flush_tlb((lin & MASK32) >> 12)

    def view(self, vm) -> PagingView:
        return PagingView(self.kind, vm.real_cpu.cr3)
