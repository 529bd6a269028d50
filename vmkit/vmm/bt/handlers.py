"""Handlers the translator adds to the trap-and-emulate table (``int``, LAR/LSL/VERR/VERW,
``lcall``)."""

from __future__ import annotations

from vmkit.isa.decode import Insn
from vmkit.isa.faults import Fault
from vmkit.machine import rules
from vmkit.machine.cpu import MASK32
from vmkit.vmm.deprivileged.vcpu import TEVM

_BT_HANDLERS: dict = {}


def _bt_handles(*mnemonics: str):
    def deco(fn):
        for m in mnemonics:
            _BT_HANDLERS[m] = fn
        return fn
    return deco


@_bt_handles("int", "int3", "into")
def emulate_int(vm: TEVM, insn: Insn) -> None:
    """INT n / INT3 / INTO (SDM Vol. 2A) in the kernel: delivered through the guest's IDT by
    the VMM, as the hardware would (gate DPL against the virtual CPL, the frame with the
    virtual IF and the believed CS)."""
    mn = insn.mnemonic
    if mn == "into":
        if not vm.vcpu.eflags & 0x800:
            return
        vector = 4
    else:
        vector = 3 if mn == "int3" else insn.operands[0].value
    vm.monitor._reflect(vm, vector, None, insn.next, "int" if mn == "int" else mn)


def _visible(vm: TEVM, selector: int):
    """The guest's descriptor if visible at max(virtual CPL, RPL) (SDM LAR), else None."""
    return rules.visible_descriptor(vm, vm.vcpu.cpl, selector)


_QUERIES = rules.DESCRIPTOR_QUERIES


@_bt_handles("lar", "lsl", "verr", "verw")
def emulate_descriptor_query(vm: TEVM, insn: Insn) -> None:
    """LAR/LSL/VERR/VERW (SDM Vol. 2A/2B) on the guest's own descriptors at the virtual CPL:
    the kernel's data segment shows DPL 0, as natively (the shadow GDT has DPL 1)."""
    ops = insn.operands
    dst, src = ops if len(ops) == 2 else (None, ops[0])
    v = _QUERIES[insn.mnemonic](_visible(vm, vm.value(src, 2) & 0xFFFF))
    cpu = vm.real_cpu
    flags = cpu.eflags
    if v is None:
        cpu.ef = flags & ~0x40
        return
    cpu.ef = flags | 0x40
    if dst is not None:
        vm.store(dst, v & (0xFFFF if dst.size == 2 else MASK32))


@_bt_handles("lcall")
def emulate_lcall(vm: TEVM, insn: Insn) -> None:
    """CALL ptr16:32 / CALL m16:32 (SDM Vol. 2A) to a code segment of the same privilege: the
    pushed CS is the one the guest believes (RPL 0), not the real ring-1 selector."""
    vc = vm.vcpu
    ops = insn.operands
    if len(ops) == 2:
        sel, off = ops[0].value, ops[1].value
    else:
        a = vm.address(ops[0])
        off = vm.lin_read(a, 4)
        sel = vm.lin_read((a + 4) & MASK32, 2)
    d = vm.descriptor(sel)
    if d.system:
        raise Fault(13, sel & 0xFFFC, detail="far call through a gate is not in the subset")
    if not d.conforming and (sel & 3) > vc.cpl:
        raise Fault(13, sel & 0xFFFC, detail="far call with RPL > CPL")
    d = vm.check_code(sel, vc.cpl)
    vm.set_accessed(sel, d)
    esp = vc.esp
    vm.lin_write((esp - 4) & MASK32, 4, vc.cs)
    vm.lin_write((esp - 8) & MASK32, 4, insn.next)
    vc.esp = esp - 8
    vm.monitor._load_real_cs(vm, sel, vc.cpl, "far call", d)
    vc.eip = off
