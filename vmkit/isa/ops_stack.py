"""Stack: push pop pushad popad pushfd popfd leave, push/pop of segment registers.

The stack is SS-relative with a 32-bit stack pointer (flat segments). Memory is written before
ESP changes, so a push that faults leaves ESP as it was (the instruction can be restarted).
"""

from __future__ import annotations

from vmkit.isa.decode import Reg
from vmkit.isa.semantics import Emit, semantics

#: EFLAGS bits popfd may change at CPL 0 (SDM POPF: all but VM, VIP, VIF)
POPF_CPL0 = 0x257FD5
IF, IOPL = 0x200, 0x3000


def push(e: Emit, expr: str, size: int = 4) -> None:
    """Emit a push of ``expr`` (a ``size``-byte value)."""
    e.line(f"sp = (R[4] - {size}) & 0xFFFFFFFF")
    e.line(f"wr{size}(sp, {expr})")
    e.line("R[4] = sp")


def pop(e: Emit, var: str, size: int = 4) -> None:
    """Emit a pop into local ``var`` (ESP is updated)."""
    e.line(f"{var} = rd{size}(R[4])")
    e.line(f"R[4] = (R[4] + {size}) & 0xFFFFFFFF")


@semantics("push", sdm="PUSH—Push Word, Doubleword or Quadword Onto the Stack (SDM Vol. 2B)")
def op_push(e: Emit, insn) -> None:
    """ESP -= size; [ESP] := src. ``push esp`` pushes the old ESP. ``push cs`` (or any segment
    register) pushes the selector zero-extended to 32 bits — its low two bits are the CPL,
    which is why ``push cs`` reveals the ring (sensitive, not privileged)."""
    (s,) = insn.operands
    if isinstance(s, Reg) and s.kind == "seg":
        size = 2 if insn.opsize else 4
        e.line(f"v = C.seg[{s.index}].selector")
    else:
        size = s.size
        e.line(f"v = {e.read(s)}")
    push(e, "v", size)


@semantics("pop", sdm="POP—Pop a Value From the Stack (SDM Vol. 2B)")
def op_pop(e: Emit, insn) -> None:
    """dest := [ESP]; ESP += size. A memory destination addressed through ESP uses the
    incremented ESP. Popping a segment register loads it with the checks of MOV Sreg."""
    (d,) = insn.operands
    if isinstance(d, Reg) and d.kind == "seg":
        size = 2 if insn.opsize else 4
        e.line(f"v = rd{size}(R[4])")
        e.line(f"M.load_seg({d.index}, v & 0xFFFF)")
        e.line(f"R[4] = (R[4] + {size}) & 0xFFFFFFFF")
        if d.index == 1:
            raise AssertionError("pop cs does not exist")
        e.resched = d.index == 2  # pop ss: the run loop re-reads the stack segment
        return
    size = d.size
    e.line(f"v = rd{size}(R[4])")
    e.line(f"old = R[4]")
    e.line(f"R[4] = (R[4] + {size}) & 0xFFFFFFFF")
    e.line("try:")
    with e.indent():
        e.write(d, "v")
    e.line("except BaseException:")
    with e.indent():
        e.line("R[4] = old")
        e.line("raise")


@semantics("pushal", "pushaw", sdm="PUSHA/PUSHAD—Push All General-Purpose Registers (SDM Vol. 2B)")
def op_pushad(e: Emit, insn) -> None:
    """Push eax, ecx, edx, ebx, the original esp, ebp, esi, edi."""
    size = 2 if insn.mnemonic == "pushaw" else 4
    m = 0xFFFF if size == 2 else 0xFFFFFFFF
    e.line("sp = R[4]")
    if size == 4:
        # the machine's own accessor pushes all eight as one store where the page allows
        # (``wr4.x8``, vmkit.machine.accessors); other accessors go one by one
        regs = ", ".join(f"R[{i}] & {m:#x}" for i in range(8))
        e.line("x8 = getattr(wr4, 'x8', None)")
        e.line("if x8 is not None:")
        with e.indent():
            e.line(f"x8(sp, ({regs}))")
        e.line("else:")
        with e.indent():
            for i in range(8):
                e.line(f"wr4((sp - {(i + 1) * 4}) & 0xFFFFFFFF, R[{i}] & {m:#x})")
    else:
        for i in range(8):
            e.line(f"wr{size}((sp - {(i + 1) * size}) & 0xFFFFFFFF, R[{i}] & {m:#x})")
    e.line(f"R[4] = (sp - {8 * size}) & 0xFFFFFFFF")


@semantics("popal", "popaw", sdm="POPA/POPAD—Pop All General-Purpose Registers (SDM Vol. 2B)")
def op_popad(e: Emit, insn) -> None:
    """Pop edi, esi, ebp, (skip esp), ebx, edx, ecx, eax."""
    size = 2 if insn.mnemonic == "popaw" else 4
    e.line("sp = R[4]")
    if size == 4:   # one load where the machine's accessor allows (``rd4.x8``, as PUSHAD)
        e.line("x8 = getattr(rd4, 'x8', None)")
        e.line("vals = x8(sp) if x8 is not None else "
               "[rd4((sp + 4 * k) & 0xFFFFFFFF) for k in range(8)]")
    else:
        e.line(f"vals = [rd{size}((sp + {size} * k) & 0xFFFFFFFF) for k in range(8)]")
    for k, reg in enumerate((7, 6, 5, None, 3, 2, 1, 0)):
        if reg is None:
            continue
        if size == 4:
            e.line(f"R[{reg}] = vals[{k}]")
        else:
            e.line(f"R[{reg}] = (R[{reg}] & 0xFFFF0000) | vals[{k}]")
    e.line(f"R[4] = (sp + {8 * size}) & 0xFFFFFFFF")


@semantics("pushfd", "pushf", sdm="PUSHF/PUSHFD—Push EFLAGS Register onto the Stack (SDM Vol. 2B)",
           sensitive=True)
def op_pushfd(e: Emit, insn) -> None:
    """Push EFLAGS with VM and RF cleared. Unprivileged, and it shows the real IF and IOPL:
    behaviour-sensitive (Robin & Irvine 2000)."""
    size = 2 if insn.mnemonic == "pushf" else 4
    push(e, "C.eflags & 0xFCFFFF" if size == 4 else "C.eflags & 0xFFFF", size)


@semantics("popfd", "popf", sdm="POPF/POPFD—Pop Stack into EFLAGS Register (SDM Vol. 2B)",
           flags="all", sensitive=True)
def op_popfd(e: Emit, insn) -> None:
    """Pop EFLAGS. At CPL 0 every flag but VM/VIP/VIF may change; at 0 < CPL <= IOPL all but
    IOPL; at CPL > IOPL neither IF nor IOPL changes — silently, no fault. That silence is why
    x86 fails Popek & Goldberg: a deprivileged kernel's ``popfd`` cannot enable interrupts and
    the monitor never hears of it."""
    size = 2 if insn.mnemonic == "popf" else 4
    pop(e, "v", size)
    e.line("F = C.eflags")
    e.line("cpl = C.cpl")
    e.line(f"mask = {POPF_CPL0:#x} if cpl == 0 else "
           f"({POPF_CPL0 & ~IOPL:#x} if cpl <= (F >> 12) & 3 else {POPF_CPL0 & ~IOPL & ~IF:#x})")
    if size == 2:
        e.line("mask &= 0xFFFF")
    e.line("C.eflags = (F & ~mask) | (v & mask)")
    e.resched = True


@semantics("leave", sdm="LEAVE—High Level Procedure Exit (SDM Vol. 2A)")
def op_leave(e: Emit, insn) -> None:
    """esp := ebp; ebp := pop."""
    e.line("v = rd4(R[5])")
    e.line("R[4] = (R[5] + 4) & 0xFFFFFFFF")
    e.line("R[5] = v")
