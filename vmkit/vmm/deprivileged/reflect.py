"""Event injection through the guest's IDT: an exception, interrupt or system call reflected into
the guest kernel with the frame the guest expects (the rules of vmkit.machine.rules on the
guest's tables, at the virtual CPL)."""

from __future__ import annotations

from vmkit.isa.faults import Fault
from vmkit.machine import rules
from vmkit.trace import Reflection
from vmkit.vmm.deprivileged.checks import checked
from vmkit.vmm.deprivileged.vcpu import NT, RF, TEVM, TF, VM_FLAG
from vmkit.vmm.vm import event_name
from vmkit.vmm.world import VMStop as _VMStop


def _gate(view, idtr, cpl: int, vector: int, source: str):
    return rules.interrupt_gate(view, idtr, cpl, vector, source, "guest's IDT")


_GATE, _SS = "gate", "inner SS"     # what a remembered check is, in its key


def reflect(te, vm: TEVM, vector: int, error_code: int | None, return_eip: int,
            source: str) -> None:
    """Deliver vector into the guest kernel through the guest's IDT (SDM 6.12.1, as
    ``Machine.deliver`` with the guest's tables and the virtual CPU): gate checks against
    the virtual CPL, the stack switch to the guest TSS's SS0:ESP0, the frame the guest
    expects (virtual IF and IOPL, CS as the guest believes it), virtual IF cleared for an
    interrupt gate. Raises the guest's Fault if delivery fails (state unchanged)."""
    m = te._host
    cpu, vc = m.cpu, vm._vcpu
    old = vc.cpl
    # the checks, remembered with the guest memory they read (checks.py)
    i, g, l = vc.idtr, vc.gdtr, vc.ldtr
    tables = (g.base, g.limit, l.selector, l.base, l.limit)
    gate, cd, new, ext = checked(vm, (_GATE, i.base, i.limit, old, vector, source, *tables),
                                 _gate, i, old, vector, source)
    sel = gate.gate_selector
    flags = vc.eflags
    frame = [flags, vc.cs, return_eip]
    new_ss = None
    if new < old:
        esp, new_ss = te._inner_stack(vm, new, ext)
        checked(vm, (_SS, new_ss, new, ext, *tables), rules.inner_stack_segment, new_ss, new,
                ext)
        frame = [vc.ss, cpu.regs[4]] + frame
    else:
        esp = cpu.regs[4]
    if error_code is not None:
        frame.append(error_code)
    esp = vm.push_frame(esp, frame)
    # commit, on the real CPU and the virtual one
    if new_ss is not None:
        te._load_real_segment(vm, 2, new_ss)
    cpu.regs[4] = esp
    cpu.eflags = cpu.eflags & ~(TF | NT | RF | VM_FLAG)
    if gate.type == 0xE:
        vc.IF = 0
    vc.halted = False
    te._load_real_cs(vm, sel, new, "interrupt", cd)
    cpu.eip = gate.gate_offset
    name = event_name(vector, source)
    te.reflected[name] += 1
    te.trace.add(Reflection(m.clock, vector=vector, name=name, from_ring=old,
                              vm=vm.index))


def reflect_exception(te, vm: TEVM, f: Fault) -> None:
    """Reflect an exception with the double-fault rules of SDM Table 6-5, as
    ``Machine.deliver_exception`` does natively; a fault while reflecting #DF is a triple
    fault and ends the VM (reason "crash", the chain of faults in the detail)."""
    eip = te._host.cpu.eip
    rules.deliver_exception(lambda v, c: te._reflect(vm, v, c, eip, "exception"), f,
                            lambda chain: _VMStop("crash", "triple fault: " + chain))
