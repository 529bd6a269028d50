"""Event injection through the guest's IDT: an exception, interrupt or system call reflected into
the guest kernel with the frame the guest expects (the rules of vmkit.machine.rules on the
guest's tables, at the virtual CPL)."""

from __future__ import annotations

from vmkit.isa.faults import Fault
from vmkit.machine import rules
from vmkit.trace import Reflection
from vmkit.vmm.deprivileged.checks import checked
from vmkit.vmm.deprivileged.vcpu import IF, IOPL, NT, RF, TEVM, TF, VM_FLAG
from vmkit.vmm.vm import event_name
from vmkit.vmm.world import VMStop as _VMStop


def guest_tss_stack(te, vm: TEVM, new: int, ext: int) -> tuple[int, int]:
    """(ESP, SS) for a reflection into virtual ring ``new``: the guest TSS's, read now (the
    kernel stores ESP0 freely: the remembered check replays that read too). The ring-1 core's
    ``_inner_stack``; pv's comes from its ``stack_switch`` hypercall instead."""
    t = vm._vcpu.tr
    return checked(vm, (rules.tss_stack, t.selector, t.base, t.limit, new, ext),
                   rules.tss_stack, t, new, ext)


def _gate(view, idtr, cpl: int, vector: int, source: str):
    return rules.interrupt_gate(view, idtr, cpl, vector, source, "guest's IDT")


def _delivery(view, idtr, tr, cpl: int, vector: int, source: str):
    """Every check of a reflection in the SDM's order (6.12.1), the inner stack from the guest
    TSS: the gate's, then (entering an inner ring) the TSS's stack and its SS's -> (gate,
    handler's code descriptor, new CPL, EXT, (ESP, SS) or None)."""
    gate, cd, new, ext = _gate(view, idtr, cpl, vector, source)
    if new >= cpl:
        return gate, cd, new, ext, None
    esp, ss = rules.tss_stack(view, tr, new, ext)
    rules.inner_stack_segment(view, ss, new, ext)
    return gate, cd, new, ext, (esp, ss)


_GATE, _SS, _ALL = "gate", "inner SS", "delivery"   # what a remembered check is, in its key


def reflect(te, vm: TEVM, vector: int, error_code: int | None, return_eip: int,
            source: str) -> None:
    """Deliver vector into the guest kernel through the guest's IDT (SDM 6.12.1, as
    ``Machine.deliver`` with the guest's tables and the virtual CPU): gate checks against
    the virtual CPL, the stack switch to the guest TSS's SS0:ESP0, the frame the guest
    expects (virtual IF and IOPL, CS as the guest believes it), virtual IF cleared for an
    interrupt gate. Raises the guest's Fault if delivery fails (state unchanged). The VM is
    the one on the real CPU."""
    m = te._host
    cpu, vc = m.cpu, vm._vcpu
    old = vc.cpl
    # the checks, remembered with the guest memory they read (checks.py): all in one when
    # the inner stack is the guest TSS's (a system call's checks: 330 Python bytecodes, from
    # 600 run for real)
    i, g, l = vc.idtr, vc.gdtr, vc.ldtr
    if type(te)._inner_stack is guest_tss_stack:
        t = vc.tr
        gate, cd, new, ext, inner = checked(
            vm, (_ALL, i.base, i.limit, t.selector, t.base, t.limit, old, vector, source,
                 g.base, g.limit, l.selector, l.base, l.limit),
            _delivery, i, t, old, vector, source)
    else:
        gate, cd, new, ext = checked(
            vm, (_GATE, i.base, i.limit, old, vector, source, g.base, g.limit, l.selector,
                 l.base, l.limit), _gate, i, old, vector, source)
        inner = None
        if new < old:
            inner = te._inner_stack(vm, new, ext)
            checked(vm, (_SS, inner[1], new, ext, g.base, g.limit, l.selector, l.base,
                         l.limit), rules.inner_stack_segment, inner[1], new, ext)
    # the frame: EFLAGS with the virtual IF and IOPL, CS and SS as the guest believes them
    # (VirtualCPU.eflags, .cs, .ss, read here from the real CPU the VM is on)
    real = cpu.eflags
    cs = cpu.seg[1].selector
    if old == 0 and cs & 3 == 1:
        cs &= ~3
    frame = [(real & ~(IF | IOPL)) | (vc.IF << 9) | (vc.iopl << 12), cs, return_eip]
    if inner is not None:
        esp, new_ss = inner
        ss = cpu.seg[2].selector
        if old == 0 and ss & 3 == 1:
            ss &= ~3
        frame = [ss, cpu.regs[4]] + frame
    else:
        esp = cpu.regs[4]
    if error_code is not None:
        frame.append(error_code)
    esp = vm.push_frame(esp, frame)
    # commit, on the real CPU and the virtual one
    if inner is not None:
        te._load_real_segment(vm, 2, new_ss)
    cpu.regs[4] = esp
    cpu.eflags = real & ~(TF | NT | RF | VM_FLAG)
    if gate.type == 0xE:
        vc.IF = 0
    vc.halted = False
    te._load_real_cs(vm, gate.gate_selector, new, "interrupt", cd)
    cpu.eip = gate.gate_offset
    name = event_name(vector, source)
    te.reflected[name] += 1
    te.trace.record((Reflection, vm.index, m.clock, vector, name, old))


def reflect_exception(te, vm: TEVM, f: Fault) -> None:
    """Reflect an exception with the double-fault rules of SDM Table 6-5, as
    ``Machine.deliver_exception`` does natively; a fault while reflecting #DF is a triple
    fault and ends the VM (reason "crash", the chain of faults in the detail)."""
    eip = te._host.cpu.eip
    rules.deliver_exception(lambda v, c: te._reflect(vm, v, c, eip, "exception"), f,
                            lambda chain: _VMStop("crash", "triple fault: " + chain))
