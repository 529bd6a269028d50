"""Trap-and-emulate's control registers: a guest write to CR0, CR3 or CR4, and what it changes in
the real CPU and the paging mode (:mod:`vmkit.vmm.paging`)."""

from __future__ import annotations

from vmkit.isa.faults import Fault
from vmkit.machine.cpu import MASK32
from vmkit.machine.mmu import CR0_PG
from vmkit.vmm.deprivileged.vcpu import REAL_CR4_FROM_GUEST, TEVM
from vmkit.vmm.vm import CannotEmulate


def write_cr(te, vm: TEVM, n: int, v: int) -> None:
    """MOV to CRn on the virtual CPU. The real CR0 keeps paging on; a change of the guest's
    paging (CR3, CR0.PG/WP, CR4.PSE) is the paging mode's to follow (shadow paging drops the
    VM's shadow tables, as the hardware flushes its TLB)."""
    vc = vm.vcpu
    v &= MASK32
    if n == 0:
        if v & CR0_PG and not v & 1:
            raise Fault(13, 0, detail="CR0.PG without CR0.PE")
        if not v & 1:
            raise CannotEmulate("clearing CR0.PE (real mode is not in the subset)")
        old = vc.cr0
        vc.cr0 = v | 0x10
        te.paging.update_paging(vm, 0, old, v)
    elif n == 2:
        vc.cr2 = v
    elif n == 3:
        vc.cr3 = v
        te.paging.update_cr3(vm, v)
    elif n == 4:
        old = vc.cr4
        vc.cr4 = v
        te._host.cpu.cr4 = v & REAL_CR4_FROM_GUEST
        te.paging.update_paging(vm, 4, old, v)
    else:
        raise Fault(6, detail=f"cr{n} does not exist")
