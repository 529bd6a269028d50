"""Event injection on VM entry (SDM Vol. 3C 27.6): the virtual interrupt controller's line, a
fault for the guest, an event re-injected after an exit during its delivery."""

from __future__ import annotations

from vmkit.isa.faults import HAS_ERROR_CODE, Fault
from vmkit.machine import rules
from vmkit.machine.cpu import MASK32
from vmkit.machine.system import TripleFault
from vmkit.trace import VmEntry
from vmkit.vmm.hw.vcpu import HWVM
from vmkit.vmm.hw.vmcs import (IF, INTR_ERROR_VALID, INTR_EXTERNAL, INTR_HW_EXCEPTION, INTR_NMI,
                               INTR_SW_INTERRUPT, INTR_VALID, TRIPLE_FAULT, NonRootExit,
                               _decode_info, _DuringDelivery)
from vmkit.vmm.world import VMStop as _VMStop


def virtual_interrupts(hw, vm: HWVM) -> None:
    """The VMM's virtual interrupt controller: inject its next line if the guest can take it
    (IF = 1, no blocking by STI), else ask for an interrupt-window exit."""
    vmcs = vm.vmcs
    if vmcs.injection_pending:
        return
    dv = vm.devices
    line = dv.pending_vector()
    if line is None:
        vmcs.interrupt_window_exiting = False
        return
    m = hw._host
    if m.cpu.ef & IF and m.steps >= m.irq_inhibit_until:
        vmcs.inject(vm.acknowledge_irq(line), INTR_EXTERNAL)
        vmcs.interrupt_window_exiting = False
    else:
        vmcs.interrupt_window_exiting = True


def enter_with_event(hw, vm: HWVM) -> None:
    """VM entry with event injection: the CPU, in non-root mode, delivers the event through
    the guest's IDT (SDM Vol. 3C, 27.6). A fault that exits during the delivery is recorded
    with the event as IDT-vectoring information (re-injected after the exit); any other
    fault is delivered as the hardware would."""
    m = hw._host
    vmcs = vm.vmcs
    info, code = vmcs.entry_interruption_info, vmcs.entry_exception_error_code
    length = vmcs.entry_instruction_length
    vmcs.entry_interruption_info = 0
    vector, type_ = _decode_info(info)
    hw.injections += 1
    vm.entry_due = False
    hw.vmx_mode = "non-root"
    hw.trace.add(VmEntry(m.clock, injected=vector, vm=vm.index))
    m.cancel_exit()
    try:
        if type_ == INTR_HW_EXCEPTION:
            m.deliver_exception(Fault(vector, code if info & INTR_ERROR_VALID else None))
        elif type_ == INTR_EXTERNAL:
            try:
                m.deliver(vector, None, m.cpu.eip, "irq")
            except Fault as f:
                m.take_exception(f)
        else:                                  # software interrupt or exception
            eip = m.cpu.eip
            source = {INTR_SW_INTERRUPT: "int"}.get(type_, "int3" if vector == 3 else "into")
            try:
                m.deliver(vector, None, (eip + length) & MASK32, source)
            except Fault as f:
                m.take_exception(f)
            else:
                hw._retired(vm, source, eip, m.text_at(eip) or source)
    except _DuringDelivery as d:
        hw._record(d.exit)
    except TripleFault as tf:
        hw._record(NonRootExit(TRIPLE_FAULT))
        vm.exit_pending = False
        raise _VMStop("crash", f"triple fault: {tf}") from None


def inject_fault(hw, vm: HWVM, f: Fault, vectoring: int = 0) -> None:
    """Inject exception ``f`` into the guest at the next entry. When it arose while the CPU
    delivered an exception (``vectoring``), apply the double-fault rules of SDM Vol. 3A,
    Table 6-5 as the hardware would have: #DF, or a triple fault that ends the VM."""
    vector, code = f.vector, f.error_code
    if vector in HAS_ERROR_CODE and code is None:
        code = 0
    if vector == 14 and f.address is not None:
        hw._host.cpu.cr2 = f.address & MASK32
    if vectoring & INTR_VALID and (vectoring >> 8) & 7 == INTR_HW_EXCEPTION:
        first = vectoring & 0xFF
        if first == 8:
            raise _VMStop("crash", f"triple fault: {f} while delivering #DF")
        if rules.escalates(first, vector):
            vector, code = 8, 0
    vm.vmcs.inject(vector, INTR_HW_EXCEPTION, code)


def reinject(hw, vm: HWVM) -> None:
    """After an exit during event delivery, deliver the event again (IDT-vectoring info):
    an external interrupt or a hardware exception is injected; a software interrupt has not
    retired and simply runs again."""
    vmcs = vm.vmcs
    info = vmcs.idt_vectoring_info
    if not info & INTR_VALID:
        return
    vector, type_ = _decode_info(info)
    if type_ in (INTR_EXTERNAL, INTR_HW_EXCEPTION, INTR_NMI):
        vmcs.inject(vector, type_, vmcs.idt_vectoring_error_code
                    if info & INTR_ERROR_VALID else None)
