"""Guest paging under hardware assist: what exception exits, EPT violations, CR writes and INVLPG
ask of the paging mode (:mod:`vmkit.vmm.paging`: nested, or a shadow mode with ``ept=False``),
and the software MMU completing one instruction after an exit."""

from __future__ import annotations

from vmkit.isa.faults import Fault
from vmkit.machine.cpu import MASK32
from vmkit.machine.mmu import CR0_PG
from vmkit.vmm.hw.inject import reinject
from vmkit.vmm.hw.vcpu import HWVM
from vmkit.vmm.hw.vmcs import (CR0_ET, CR0_NE, CR0_PE, CR4_VMXE, INTR_SW_EXCEPTION, INTR_VALID,
                               VMCS, _decode_info)
from vmkit.vmm.paging import EMULATE, softmmu
from vmkit.vmm.vm import CannotEmulate


def exception_exit(hw, vm: HWVM, vmcs: VMCS) -> None:
    """EXCEPTION_NMI: #PF under shadow paging is a hidden fault or the guest's own; any
    other exception is the guest's, reflected by injection."""
    vector, type_ = _decode_info(vmcs.exit_interruption_info)
    code = vmcs.exit_interruption_error_code
    if vector == 14 and not hw.ept:
        shadow_fault(hw, vm, vmcs.exit_qualification, code or 0, vmcs.idt_vectoring_info)
        return
    if type_ == INTR_SW_EXCEPTION:
        vmcs.inject(vector, type_, None, vmcs.exit_instruction_length)
        return
    addr = vmcs.exit_qualification if vector == 14 else None
    hw.inject_fault(vm, Fault(vector, code, addr), vmcs.idt_vectoring_info)


def ept_violation(hw, vm: HWVM, vmcs: VMCS) -> None:
    """EPT_VIOLATION: map a page of the VM's memory (lazy EPT), or emulate an access beyond
    it."""
    gpa = vmcs.guest_physical_address
    if hw.paging.nested_fault(vm, gpa):
        reinject(hw, vm)
        return
    if gpa < vm.memory_size:
        raise CannotEmulate(f"EPT violation at guest-physical {gpa:#x} with the page mapped")
    if vmcs.idt_vectoring_info & INTR_VALID:
        raise CannotEmulate(f"event delivery touched guest-physical {gpa:#010x}, beyond the "
                            f"VM's {vm.memory_size:#x} bytes of memory")
    emulate_insn(hw, vm)


def shadow_fault(hw, vm: HWVM, lin: int, err: int, vectoring: int) -> None:
    """A #PF exit under shadow paging: the paging mode walks the guest's tables; if they
    allow the access it fills the shadow entry (a hidden page fault) and the guest retries,
    else the guest's #PF is injected."""
    write, user = bool(err & 2), bool(err & 4)
    try:
        outcome = hw.paging.page_fault(vm, lin, write, user)   # sets the guest's A/D bits
    except Fault as f:
        hw.inject_fault(vm, f, vectoring)              # the guest's own fault (CR2 set)
        return
    if outcome == EMULATE:
        if vectoring & INTR_VALID:
            raise CannotEmulate(f"event delivery writes guest-linear {lin:#010x}, which "
                                f"the shadow page tables cannot map writable")
        emulate_insn(hw, vm)
        return
    reinject(hw, vm)


def emulate_insn(hw, vm: HWVM) -> None:
    """Run the instruction at EIP with the VMM's software MMU (the guest's tables, all ones
    beyond memory, writes there dropped): for the accesses no EPT or shadow entry can
    express. Faults are injected."""
    m = hw._host
    cpu = m.cpu
    eip = cpu.eip
    user = cpu.cpl == 3
    insn, fault = softmmu.fetch(vm, eip, user)
    if insn is None:
        hw.inject_fault(vm, fault if fault is not None else
                          Fault(6, detail=f"undefined encoding at {eip:#010x}"))
        return
    fn = softmmu.compile_through_guest(m, vm, insn, user)
    if isinstance(fn, str):
        raise CannotEmulate(f"cannot emulate {insn.text!r} at {eip:#010x}: {fn}")
    try:
        softmmu.run(fn)
    except Fault as f:
        cpu.eip = eip
        hw.inject_fault(vm, f)
        return
    hw._retired(vm, insn.mnemonic, eip, insn.text)


def write_cr(hw, vm: HWVM, n: int, v: int) -> None:
    """MOV to CRn for the guest: the read shadow gets the guest's value, the real register
    the guest's value with the bits VMX operation needs (CR0.NE, CR4.VMXE; with shadow
    paging CR0.PG and WP on and CR4.PSE off, and the guest's CR3 kept by the VMM: the
    paging mode's ``cr0_forced``, ``cr4_cleared``)."""
    m, vmcs, vc, paging = hw._host, vm.vmcs, vm.vcpu, hw.paging
    v &= MASK32
    if n == 0:
        if v & CR0_PG and not v & CR0_PE:
            raise Fault(13, 0, detail="CR0.PG without CR0.PE")
        if not v & CR0_PE:
            raise CannotEmulate("clearing CR0.PE (real mode is not in the subset)")
        old = vc.cr0
        v |= CR0_ET
        vmcs.cr0_read_shadow = v
        m.write_cr(0, v | CR0_NE | paging.cr0_forced)
        paging.update_paging(vm, 0, old, v)
    elif n == 3:
        if not hw.ept:
            vm.guest_cr3 = v      # the real CR3 is the shadow's
        paging.update_cr3(vm, v)
    elif n == 4:
        old = vc.cr4
        vmcs.cr4_read_shadow = v
        m.write_cr(4, (v | CR4_VMXE) & ~paging.cr4_cleared)
        paging.update_paging(vm, 4, old, v)
    elif n == 2:
        m.cpu.cr2 = v
    else:
        raise Fault(6, detail=f"cr{n} does not exist")


def guest_invlpg(hw, vm: HWVM, lin: int) -> None:
    """The guest's INVLPG, after an exit: the paging mode's."""
    hw.paging.invlpg(vm, lin)
