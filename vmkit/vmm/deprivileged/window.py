"""The ring-1 core's accesses the real MMU cannot make: faults in the VMM's window at the top of
the address space, and the instructions the paging mode hands to the software MMU
(:mod:`vmkit.vmm.paging.softmmu`)."""

from __future__ import annotations

from vmkit.vmm.deprivileged.vcpu import TEVM
from vmkit.vmm.layout import GDT_BYTES, VMM_WINDOW
from vmkit.vmm.paging import softmmu
from vmkit.vmm.world import VMStop as _VMStop


def window_fault(te, vm: TEVM, lin: int, write: bool, user: bool) -> None:
    """A fault in the VMM's window: the CPU setting a descriptor's accessed bit in the
    (read-only) shadow GDT, or the guest touching addresses it believes are its own."""
    m = te._host
    off = lin - VMM_WINDOW
    if write and not user and off < GDT_BYTES and off & 7 == 5:
        idx = off >> 3
        shadow = m.mem[vm.gdt_base + off]
        if shadow & 0x10 and not shadow & 1 and idx * 8 + 7 <= vm.vcpu.gdtr.limit:
            # set it where the guest's hardware would have: in the guest's own table
            sel = idx * 8
            vm.set_accessed(sel, vm.descriptor(sel))
            m.mem[vm.gdt_base + off] = shadow | 1
            return
    gpa, _, _ = vm.walk(lin, write, user)
    if vm.host_address(gpa) is not None:
        raise _VMStop("crash", f"the guest maps linear address {lin:#010x}, inside the "
                      f"VMM's reserved window {VMM_WINDOW:#010x}-0xffffffff")
    emulate_one(te, vm)   # beyond the guest's memory: all ones, writes dropped


def emulate_one(te, vm: TEVM) -> None:
    """Run the faulting instruction with the VMM's software MMU: every memory access goes
    through the guest's page tables (all ones beyond memory, writes there dropped). For
    the few accesses a shadow entry cannot express."""
    m = te._host
    insn = te._fetch_insn(vm, m.cpu.eip)
    if insn is None or not insn.id:
        raise _VMStop("crash", f"cannot decode the instruction at {m.cpu.eip:#010x}")
    fn = softmmu.compile_through_guest(m, vm, insn, vm.vcpu.cpl == 3)
    if isinstance(fn, str):
        raise _VMStop("crash", f"cannot emulate {insn.text!r} at {insn.address:#010x}: "
                      f"{fn}")
    softmmu.run(fn)
    te._retired(vm, insn)
