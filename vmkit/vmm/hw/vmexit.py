"""VM exits: how one is recorded in the VMCS (with the event being delivered, if any), the
exceptions the controls make exit, and the dispatch to the exit handlers."""

from __future__ import annotations

from vmkit.isa.faults import HAS_ERROR_CODE, Fault
from vmkit.machine.cpu import MASK32
from vmkit.trace import VmExit
from vmkit.vmm.hw.vcpu import HWVM
from vmkit.vmm.hw.vmcs import (_SOURCE_TYPE, EPT_VIOLATION, EXCEPTION_NMI, EXIT_REASONS,
                               INSTRUCTION_EXITS, INTR_HW_EXCEPTION, INTR_SW_EXCEPTION,
                               NonRootExit, interruption_info)
from vmkit.vmm.vm import CannotEmulate
from vmkit.vmm.world import VMStop as _VMStop


def ept_exit(qualification: int, linear: int, physical: int) -> None:
    """The EPT's violation exit (``EPT.violation`` computes the qualification)."""
    raise NonRootExit(EPT_VIOLATION, qualification, linear=linear, physical=physical)


def record_exit(hw, x: NonRootExit) -> None:
    """The CPU's side of a VM exit: write the exit information fields of the current VM's
    VMCS, count and trace it, and leave non-root mode (the machine's run returns)."""
    m = hw._host
    vm = hw.vms[hw.current]
    vmcs = vm.vmcs
    vmcs.exit_reason = x.reason
    vmcs.exit_qualification = x.qualification
    vmcs.guest_linear_address = x.linear
    vmcs.guest_physical_address = x.physical
    vmcs.exit_interruption_info = x.interruption
    vmcs.exit_interruption_error_code = x.interruption_error
    vmcs.idt_vectoring_info = x.vectoring
    vmcs.idt_vectoring_error_code = x.vectoring_error
    vmcs.exit_instruction_length = x.length
    vmcs.exit_instruction = x.insn
    vm.exit_pending = True
    vm.entry_due = True
    name = EXIT_REASONS.get(x.reason, str(x.reason))
    hw.vm_exits[name] += 1
    hw.events["vm_exit"] += 1
    hw.events["exit_handling"] += 1
    hw.trace.add(VmExit(m.clock, reason=x.reason, name=name, qualification=x.qualification,
                          address=m.cpu.eip, vm=vm.index))
    m.request_exit()
    hw.vmx_mode = "root"


def on_exception(hw, vector: int, fault: Fault | None, source: str, next_eip) -> bool:
    """MachineHooks.on_exception: exits raised by the CPU, and the exception bitmap. Anything
    that does not exit is delivered by the CPU through the guest's IDT (return False)."""
    if isinstance(fault, NonRootExit):
        hw._record(fault)
        return True
    bitmap = hw._controls.exception_bitmap
    if source == "exception":
        if bitmap >> vector & 1:
            code = fault.error_code if fault is not None else None
            if vector in HAS_ERROR_CODE and code is None:
                code = 0
            q = fault.address if vector == 14 and fault.address is not None else 0
            hw._record(NonRootExit(EXCEPTION_NMI, q, linear=q if vector == 14 else None,
                                     interruption=interruption_info(vector, INTR_HW_EXCEPTION,
                                                                    code), error_code=code))
            return True
        return False
    if source in ("int3", "into") and bitmap >> vector & 1:
        # raised, not recorded here: the int3 must not retire (it unwinds like a fault and
        # comes back through this hook as a NonRootExit); the VMM injects it
        eip = hw._host.cpu.eip
        raise NonRootExit(EXCEPTION_NMI,
                          interruption=interruption_info(vector, INTR_SW_EXCEPTION),
                          length=(next_eip - eip) & MASK32)
    return False   # int n: delivered through the guest's IDT, never an exit


def exit_during_delivery(hw, f: Fault, vector: int, error_code, source: str):
    """A fault while the CPU delivers an event: the exit it causes (with the event as
    IDT-vectoring information), or None when the hardware handles it as a nested
    exception (double-fault rules)."""
    if isinstance(f, NonRootExit):
        x = f
    elif hw._controls.exception_bitmap >> f.vector & 1:
        code = f.error_code
        if f.vector in HAS_ERROR_CODE and code is None:
            code = 0
        q = f.address if f.vector == 14 and f.address is not None else 0
        x = NonRootExit(EXCEPTION_NMI, q, linear=q if f.vector == 14 else None,
                        interruption=interruption_info(f.vector, INTR_HW_EXCEPTION, code),
                        error_code=code)
    else:
        return None
    if not x.vectoring:
        type_ = _SOURCE_TYPE.get(source, INTR_HW_EXCEPTION)
        x.vectoring = interruption_info(vector, type_, error_code)
        x.vectoring_error = error_code
    return x


def handle_exit(hw, vm: HWVM) -> None:
    """Root mode: run the handler of the exit recorded in the VM's VMCS. An instruction
    exit's handler runs with EIP already past the instruction, which then counts as
    retired; a Fault from the handler is injected with EIP back on the instruction."""
    vmcs = vm.vmcs
    vm.exit_pending = False
    hw.vmx_mode = "root"
    reason = vmcs.exit_reason
    handler = hw.handlers.get(EXIT_REASONS.get(reason, ""))
    if handler is None:
        raise CannotEmulate(f"no handler for VM exit {reason} ({vmcs.exit_name}) in "
                            f"handlers[{vmcs.exit_name!r}]")
    if reason not in INSTRUCTION_EXITS:
        handler(vm, vmcs)
        return
    cpu = hw._host.cpu
    eip = cpu.eip
    insn = vmcs.exit_instruction
    cpu.eip = (eip + vmcs.exit_instruction_length) & MASK32
    try:
        handler(vm, vmcs)
    except Fault as f:
        cpu.eip = eip
        hw.inject_fault(vm, f)
        return
    except Exception as ex:                # the VM ends (see _guarded), EIP on the insn
        cpu.eip = eip
        if isinstance(ex, _VMStop):
            text = insn.text if insn is not None else vmcs.exit_name
            raise _VMStop(ex.reason, f"cannot complete {text!r} at {eip:#010x} "
                          f"({vmcs.exit_name} exit): {ex.detail}") from None
        raise
    mnemonic = insn.mnemonic if insn is not None else vmcs.exit_name.lower()
    hw._retired(vm, mnemonic, eip, insn.text if insn is not None else mnemonic)
