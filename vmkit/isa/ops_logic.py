"""Logic, shifts, rotates, conditions and flag instructions: and or xor test not, shl sal shr
sar rol ror, setcc, clc stc cmc cld std.

Also home of :func:`cond`, the condition-code evaluator that jcc, setcc and cmovcc share
(SDM Vol. 1, Appendix B, "EFLAGS Condition Codes").
"""

from __future__ import annotations

from vmkit.isa.semantics import MASKS, SIGNS, Emit, semantics

#: condition suffix -> Python expression over ``F`` (materialized EFLAGS)
CONDITIONS = {
    "o": "F & 0x800", "no": "not F & 0x800",
    "b": "F & 1", "ae": "not F & 1",
    "e": "F & 0x40", "ne": "not F & 0x40",
    "be": "F & 0x41", "a": "not F & 0x41",
    "s": "F & 0x80", "ns": "not F & 0x80",
    "p": "F & 4", "np": "not F & 4",
    "l": "(F & 0x80) >> 7 != (F & 0x800) >> 11",
    "ge": "(F & 0x80) >> 7 == (F & 0x800) >> 11",
    "le": "F & 0x40 or (F & 0x80) >> 7 != (F & 0x800) >> 11",
    "g": "not F & 0x40 and (F & 0x80) >> 7 == (F & 0x800) >> 11",
}
CC = tuple(CONDITIONS)


def cond(e: Emit, cc: str) -> str:
    """Emit code computing condition ``cc`` into local ``t``; returns "t".

    ZF-only conditions read the lazy result directly (the ``dec ecx; jnz`` loop never
    materializes EFLAGS); the others materialize EFLAGS once.
    """
    if cc in ("e", "ne"):
        e.line("lz = C.lz")
        e.line("z = (lz[4] == 0) if lz is not None else (C.ef & 0x40)")
        e.line("t = z" if cc == "e" else "t = not z")
    else:
        e.line("F = C.eflags")
        e.line(f"t = {CONDITIONS[cc]}")
    return "t"


def _logic(e: Emit, insn, op: str, store: bool) -> None:
    d, s = insn.operands
    e.line(f"r = {e.read(d)} {op} {e.read(s)}")
    if store:
        e.write(d, "r")
    e.line(f"C.lz = (LZ_LOGIC, {d.size}, 0, 0, r)")


@semantics("and", sdm="AND—Logical AND (SDM Vol. 2A)", flags="OF=0 CF=0 SF ZF PF",
           undefined="AF")
def op_and(e: Emit, insn) -> None:
    """dest := dest & src (undefined AF is cleared)."""
    _logic(e, insn, "&", True)


@semantics("or", sdm="OR—Logical Inclusive OR (SDM Vol. 2B)", flags="OF=0 CF=0 SF ZF PF",
           undefined="AF")
def op_or(e: Emit, insn) -> None:
    """dest := dest | src."""
    _logic(e, insn, "|", True)


@semantics("xor", sdm="XOR—Logical Exclusive OR (SDM Vol. 2B)", flags="OF=0 CF=0 SF ZF PF",
           undefined="AF")
def op_xor(e: Emit, insn) -> None:
    """dest := dest ^ src."""
    _logic(e, insn, "^", True)


@semantics("test", sdm="TEST—Logical Compare (SDM Vol. 2B)", flags="OF=0 CF=0 SF ZF PF",
           undefined="AF")
def op_test(e: Emit, insn) -> None:
    """Flags of dest & src; nothing stored."""
    _logic(e, insn, "&", False)


@semantics("not", sdm="NOT—One's Complement Negation (SDM Vol. 2B)")
def op_not(e: Emit, insn) -> None:
    """dest := ~dest; no flags."""
    (d,) = insn.operands
    e.write(d, f"{e.read(d)} ^ {MASKS[d.size]:#x}")


def _count(e: Emit, insn) -> None:
    ops = insn.operands
    if len(ops) == 1:  # capstone prints "shl eax" for D1 /4 as "shl eax, 1"; keep both
        e.line("n = 1")
    else:
        e.line(f"n = {e.read(ops[1])} & 0x1F")


@semantics("shl", "sal", sdm="SAL/SAR/SHL/SHR—Shift (SDM Vol. 2B)", flags="CF SF ZF PF OF(1)",
           undefined="AF OF(n>1)")
def op_shl(e: Emit, insn) -> None:
    """dest := dest << n (n masked to 5 bits); CF = last bit out; OF = MSB(result) ^ CF for
    n = 1. n = 0 changes nothing. Undefined AF cleared, OF for n > 1 computed as for n = 1."""
    d = insn.operands[0]
    size, bits, m = d.size, 8 * d.size, MASKS[d.size]
    _count(e, insn)
    e.line("if n:")
    with e.indent():
        e.line(f"a = {e.read(d)}")
        e.line(f"w = a << n")
        e.line(f"r = w & {m:#x}")
        e.write(d, "r")
        e.line(f"cf = (w >> {bits}) & 1")
        e.line(f"of = 0x800 if ((r >> {bits - 1}) & 1) ^ cf else 0")
        e.line(f"C.ef = (C.eflags & ~0x8D5) | cf | of | {_szp(size)}")


@semantics("shr", sdm="SAL/SAR/SHL/SHR—Shift (SDM Vol. 2B)", flags="CF SF ZF PF OF(1)",
           undefined="AF OF(n>1)")
def op_shr(e: Emit, insn) -> None:
    """dest := dest >> n (logical); CF = last bit out; OF = MSB(original) for n = 1."""
    d = insn.operands[0]
    size, bits = d.size, 8 * d.size
    _count(e, insn)
    e.line("if n:")
    with e.indent():
        e.line(f"a = {e.read(d)}")
        e.line("r = a >> n")
        e.write(d, "r")
        e.line("cf = (a >> (n - 1)) & 1")
        e.line(f"of = 0x800 if a & {SIGNS[size]:#x} else 0")
        e.line(f"C.ef = (C.eflags & ~0x8D5) | cf | of | {_szp(size)}")


@semantics("sar", sdm="SAL/SAR/SHL/SHR—Shift (SDM Vol. 2B)", flags="CF SF ZF PF OF(1)=0",
           undefined="AF")
def op_sar(e: Emit, insn) -> None:
    """dest := dest >> n (arithmetic); CF = last bit out; OF = 0."""
    d = insn.operands[0]
    size, m = d.size, MASKS[d.size]
    _count(e, insn)
    e.line("if n:")
    with e.indent():
        e.line(f"a = {e.read(d)}")
        e.line(f"s = a - {m + 1:#x} if a & {SIGNS[size]:#x} else a")
        e.line(f"r = (s >> n) & {m:#x}")
        e.write(d, "r")
        e.line("cf = (s >> (n - 1)) & 1")
        e.line(f"C.ef = (C.eflags & ~0x8D5) | cf | {_szp(size)}")


@semantics("rol", "ror", sdm="RCL/RCR/ROL/ROR—Rotate (SDM Vol. 2B)", flags="CF OF(1)",
           undefined="OF(n>1)")
def op_rotate(e: Emit, insn) -> None:
    """Rotate by n masked to 5 bits (then modulo the width); only CF and OF change.
    ROL: CF = LSB(result), OF = MSB ^ CF. ROR: CF = MSB(result), OF = MSB ^ next bit."""
    d = insn.operands[0]
    bits, m = 8 * d.size, MASKS[d.size]
    left = insn.mnemonic == "rol"
    _count(e, insn)
    e.line("if n:")
    with e.indent():
        e.line(f"a = {e.read(d)}")
        e.line(f"k = n % {bits}")
        if left:
            e.line(f"r = ((a << k) | (a >> ({bits} - k))) & {m:#x}")
            e.line("cf = r & 1")
            e.line(f"of = 0x800 if ((r >> {bits - 1}) & 1) ^ cf else 0")
        else:
            e.line(f"r = ((a >> k) | (a << ({bits} - k))) & {m:#x}")
            e.line(f"cf = (r >> {bits - 1}) & 1")
            e.line(f"of = 0x800 if cf ^ ((r >> {bits - 2}) & 1) else 0")
        e.write(d, "r")
        e.line("C.ef = (C.eflags & ~0x801) | cf | of")


def _szp(size: int) -> str:
    return (f"PARITY[r & 0xFF] | (0x40 if r == 0 else 0) | "
            f"(0x80 if r & {SIGNS[size]:#x} else 0)")


def _make_setcc(cc: str):
    def op_setcc(e: Emit, insn) -> None:
        t = cond(e, cc)
        e.write(insn.operands[0], f"(1 if {t} else 0)")
    op_setcc.__doc__ = f"dest8 := 1 if condition {cc!r} holds, else 0."
    return op_setcc


for _cc in CC:
    semantics(f"set{_cc}", sdm="SETcc—Set Byte on Condition (SDM Vol. 2B)")(_make_setcc(_cc))


def _flag_op(name: str, expr: str, doc: str, sdm: str):
    def op(e: Emit, insn) -> None:
        e.line(f"C.ef = {expr}")
    op.__doc__ = doc
    semantics(name, sdm=sdm, flags=name[-1:].upper() + "F")(op)


_flag_op("clc", "C.eflags & ~1", "CF := 0.", "CLC—Clear Carry Flag (SDM Vol. 2A)")
_flag_op("stc", "C.eflags | 1", "CF := 1.", "STC—Set Carry Flag (SDM Vol. 2B)")
_flag_op("cmc", "C.eflags ^ 1", "CF := not CF.", "CMC—Complement Carry Flag (SDM Vol. 2A)")
_flag_op("cld", "C.eflags & ~0x400", "DF := 0 (string operations count up).",
         "CLD—Clear Direction Flag (SDM Vol. 2A)")
_flag_op("std", "C.eflags | 0x400", "DF := 1 (string operations count down).",
         "STD—Set Direction Flag (SDM Vol. 2B)")
