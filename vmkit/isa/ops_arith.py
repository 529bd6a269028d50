"""Integer arithmetic: add adc sub sbb cmp inc dec neg mul imul div idiv cdq cwde cbw cwd.

Status flags are left lazy (``C.lz``) where the SDM defines them from the operands and result;
see ``vmkit.machine.cpu.lazy_status``. Flags the SDM leaves undefined are given a fixed,
documented value so runs are deterministic (the oracle tests compare defined flags only).
"""

from __future__ import annotations

from vmkit.isa.decode import Imm, Reg
from vmkit.isa.semantics import MASKS, SIGNS, Emit, semantics


def _binop(e: Emit, insn, kind: str, op: str, store: bool, carry: bool) -> None:
    d, s = insn.operands
    size = d.size
    m = MASKS[size]
    e.line(f"a = {e.read(d)}")
    e.line(f"b = {e.read(s)}")
    if carry:
        e.line("c = C.eflags & 1")
        e.line(f"r = (a {op} b {op} c) & {m:#x}")
    else:
        e.line(f"r = (a {op} b) & {m:#x}")
    if store:
        e.write(d, "r")
    e.line(f"C.lz = ({kind}, {size}, a, b, r{', c' if carry else ''})")


@semantics("add", sdm="ADD—Add (SDM Vol. 2A)", flags="OF SF ZF AF CF PF")
def op_add(e: Emit, insn) -> None:
    """dest := dest + src."""
    _binop(e, insn, "LZ_ADD", "+", True, False)


@semantics("adc", sdm="ADC—Add with Carry (SDM Vol. 2A)", flags="OF SF ZF AF CF PF")
def op_adc(e: Emit, insn) -> None:
    """dest := dest + src + CF."""
    _binop(e, insn, "LZ_ADC", "+", True, True)


@semantics("sub", sdm="SUB—Subtract (SDM Vol. 2B)", flags="OF SF ZF AF CF PF")
def op_sub(e: Emit, insn) -> None:
    """dest := dest - src."""
    _binop(e, insn, "LZ_SUB", "-", True, False)


@semantics("sbb", sdm="SBB—Integer Subtraction with Borrow (SDM Vol. 2B)",
           flags="OF SF ZF AF CF PF")
def op_sbb(e: Emit, insn) -> None:
    """dest := dest - (src + CF)."""
    _binop(e, insn, "LZ_SBB", "-", True, True)


@semantics("cmp", sdm="CMP—Compare Two Operands (SDM Vol. 2A)", flags="OF SF ZF AF CF PF")
def op_cmp(e: Emit, insn) -> None:
    """Flags of dest - src; nothing stored."""
    _binop(e, insn, "LZ_SUB", "-", False, False)


@semantics("inc", "dec", sdm="INC—Increment by 1 / DEC—Decrement by 1 (SDM Vol. 2A)",
           flags="OF SF ZF AF PF")
def op_incdec(e: Emit, insn) -> None:
    """dest := dest ± 1; CF is preserved."""
    (d,) = insn.operands
    m = MASKS[d.size]
    inc = insn.mnemonic == "inc"
    e.line(f"a = {e.read(d)}")
    e.line(f"r = (a {'+' if inc else '-'} 1) & {m:#x}")
    e.write(d, "r")
    e.line(f"C.lz = ({'LZ_INC' if inc else 'LZ_DEC'}, {d.size}, a, C.eflags & 1, r)")


@semantics("neg", sdm="NEG—Two's Complement Negation (SDM Vol. 2B)", flags="OF SF ZF AF CF PF")
def op_neg(e: Emit, insn) -> None:
    """dest := 0 - dest; CF = (dest != 0)."""
    (d,) = insn.operands
    m = MASKS[d.size]
    e.line(f"b = {e.read(d)}")
    e.line(f"r = (-b) & {m:#x}")
    e.write(d, "r")
    e.line(f"C.lz = (LZ_SUB, {d.size}, 0, b, r)")


def _szp(size: int, var: str) -> str:
    """Expression for SF, ZF and PF of ``var`` (a ``size``-byte value)."""
    return (f"(PARITY[{var} & 0xFF] | (0x40 if {var} == 0 else 0) | "
            f"(0x80 if {var} & {SIGNS[size]:#x} else 0))")


def _acc(size: int):
    """(low, high) accumulator registers for mul/div of ``size`` bytes."""
    if size == 1:
        return Reg("gpr", 0, 1, False, "al"), Reg("gpr", 0, 1, True, "ah")
    if size == 2:
        return Reg("gpr", 0, 2, False, "ax"), Reg("gpr", 2, 2, False, "dx")
    return Reg("gpr", 0, 4, False, "eax"), Reg("gpr", 2, 4, False, "edx")


@semantics("mul", sdm="MUL—Unsigned Multiply (SDM Vol. 2B)", flags="OF CF",
           undefined="SF ZF AF PF")
def op_mul(e: Emit, insn) -> None:
    """edx:eax := eax * src (ah:al / dx:ax for smaller sizes); CF = OF = (high half != 0).
    Undefined SF/ZF/PF are set from the low half, AF cleared."""
    (s,) = insn.operands
    size = s.size
    bits = 8 * size
    lo, hi = _acc(size)
    e.line(f"p = {e.read(lo)} * {e.read(s)}")
    e.line(f"l = p & {MASKS[size]:#x}")
    e.line(f"h = p >> {bits}")
    if size == 1:
        e.write(Reg("gpr", 0, 2, False, "ax"), "p")
    else:
        e.write(lo, "l")
        e.write(hi, "h")
    e.line(f"C.ef = (C.eflags & ~0x8D5) | (0x801 if h else 0) | {_szp(size, 'l')}")


def _signed(var: str, size: int) -> str:
    """Expression for ``var`` (a ``size``-byte unsigned value; size 8 for idiv's edx:eax)
    read as two's complement."""
    bits = 8 * size
    return f"({var} - {1 << bits:#x} if {var} & {1 << (bits - 1):#x} else {var})"


@semantics("imul", sdm="IMUL—Signed Multiply (SDM Vol. 2A)", flags="OF CF",
           undefined="SF ZF AF PF")
def op_imul(e: Emit, insn) -> None:
    """One operand: edx:eax := eax * src (signed). Two/three operands: dest := truncated
    product. CF = OF = (the product does not fit the destination, signed)."""
    ops = insn.operands
    if len(ops) == 1:
        (s,) = ops
        size = s.size
        lo, hi = _acc(size)
        e.line(f"x = {e.read(lo)}")
        e.line(f"y = {e.read(s)}")
    else:
        d = ops[0]
        size = d.size
        s1, s2 = (ops[0], ops[1]) if len(ops) == 2 else (ops[1], ops[2])
        e.line(f"x = {e.read(s1)}")
        e.line(f"y = {e.read(s2)}")
    bits = 8 * size
    m = MASKS[size]
    e.line(f"p = {_signed('x', size)} * {_signed('y', size)}")
    e.line(f"l = p & {m:#x}")
    e.line(f"ov = not ({-(1 << (bits - 1))} <= p < {1 << (bits - 1)})")
    if len(ops) == 1:
        if size == 1:
            e.write(Reg("gpr", 0, 2, False, "ax"), f"p & 0xFFFF")
        else:
            e.write(lo, "l")
            e.write(hi, f"(p >> {bits}) & {m:#x}")
    else:
        e.write(ops[0], "l")
    e.line(f"C.ef = (C.eflags & ~0x8D5) | (0x801 if ov else 0) | {_szp(size, 'l')}")


@semantics("div", "idiv", sdm="DIV—Unsigned Divide / IDIV—Signed Divide (SDM Vol. 2A)",
           undefined="OF SF ZF AF CF PF")
def op_div(e: Emit, insn) -> None:
    """eax := edx:eax / src, edx := remainder (al/ah, ax/dx for smaller sizes); #DE when the
    divisor is 0 or the quotient does not fit. IDIV truncates toward zero. The undefined flags
    are left unchanged."""
    (s,) = insn.operands
    size = s.size
    bits = 8 * size
    m = MASKS[size]
    signed = insn.mnemonic == "idiv"
    lo, hi = _acc(size)
    e.line(f"d = {e.read(s)}")
    e.line("if d == 0: raise Fault(0, detail='divide by zero')")
    if size == 1:
        e.line("n = R[0] & 0xFFFF")
    else:
        e.line(f"n = ({e.read(hi)} << {bits}) | {e.read(lo)}")
    if signed:
        e.line(f"n = {_signed('n', size * 2)}")
        e.line(f"d = {_signed('d', size)}")
        e.line("q = abs(n) // abs(d)")
        e.line("if (n < 0) != (d < 0): q = -q")
        e.line("rem = n - q * d")
        e.line(f"if not ({-(1 << (bits - 1))} <= q < {1 << (bits - 1)}): "
               "raise Fault(0, detail='quotient too large')")
    else:
        e.line("q, rem = divmod(n, d)")
        e.line(f"if q > {m:#x}: raise Fault(0, detail='quotient too large')")
    if size == 1:
        e.line(f"R[0] = (R[0] & 0xFFFF0000) | ((rem & 0xFF) << 8) | (q & 0xFF)")
    else:
        e.write(lo, f"q & {m:#x}")
        e.write(hi, f"rem & {m:#x}")


@semantics("cdq", "cwd", sdm="CWD/CDQ/CQO—Convert Word to Doubleword/Convert Doubleword to "
           "Quadword (SDM Vol. 2A)")
def op_cdq(e: Emit, insn) -> None:
    """edx := sign of eax (dx := sign of ax for cwd)."""
    if insn.mnemonic == "cdq":
        e.line("R[2] = 0xFFFFFFFF if R[0] & 0x80000000 else 0")
    else:
        e.line("R[2] = (R[2] & 0xFFFF0000) | (0xFFFF if R[0] & 0x8000 else 0)")


@semantics("cwde", "cbw", sdm="CBW/CWDE/CDQE—Convert Byte to Word/Convert Word to Doubleword "
           "(SDM Vol. 2A)")
def op_cwde(e: Emit, insn) -> None:
    """eax := sign-extend(ax) (ax := sign-extend(al) for cbw)."""
    if insn.mnemonic == "cwde":
        e.line("a = R[0] & 0xFFFF")
        e.line("R[0] = a | 0xFFFF0000 if a & 0x8000 else a")
    else:
        e.line("a = R[0] & 0xFF")
        e.line("R[0] = (R[0] & 0xFFFF0000) | (a | 0xFF00 if a & 0x80 else a)")


_ = Imm  # re-exported for family modules' type hints
