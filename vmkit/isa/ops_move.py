"""Data movement: mov movzx movsx lea xchg cmpxchg cmovcc nop.

``mov`` to and from segment and control registers is system semantics (ops_system) because it
is privileged or sensitive; this module hands those forms over.
"""

from __future__ import annotations

from vmkit.isa.decode import Reg
from vmkit.isa.ops_logic import CC, cond
from vmkit.isa.semantics import MASKS, SIGNS, Emit, semantics


@semantics("mov", sdm="MOV—Move (SDM Vol. 2B); MOV—Move to/from Control Registers; "
           "MOV to/from segment registers", category="native")
def op_mov(e: Emit, insn) -> None:
    """dest := src. Control- and segment-register forms are system instructions."""
    d, s = insn.operands
    if isinstance(d, Reg) and d.kind in ("cr", "seg") or isinstance(s, Reg) and s.kind in ("cr", "seg"):
        from vmkit.isa.ops_system import mov_system
        mov_system(e, insn)
        return
    e.write(d, e.read(s))


@semantics("movzx", sdm="MOVZX—Move with Zero-Extend (SDM Vol. 2B)")
def op_movzx(e: Emit, insn) -> None:
    """dest := zero-extend(src)."""
    d, s = insn.operands
    e.write(d, e.read(s))


@semantics("movsx", sdm="MOVSX—Move with Sign-Extension (SDM Vol. 2B)")
def op_movsx(e: Emit, insn) -> None:
    """dest := sign-extend(src)."""
    d, s = insn.operands
    ext = MASKS[d.size] ^ MASKS[s.size]
    e.line(f"v = {e.read(s)}")
    e.write(d, f"(v | {ext:#x} if v & {SIGNS[s.size]:#x} else v)")


@semantics("lea", sdm="LEA—Load Effective Address (SDM Vol. 2A)")
def op_lea(e: Emit, insn) -> None:
    """dest := effective address of src (no memory access)."""
    d, s = insn.operands
    a = e.addr(s)
    e.write(d, a if d.size == 4 else f"{a} & {MASKS[d.size]:#x}")


@semantics("xchg", sdm="XCHG—Exchange Register/Memory with Register (SDM Vol. 2B)")
def op_xchg(e: Emit, insn) -> None:
    """Swap the operands (a memory operand is read before either write)."""
    d, s = insn.operands
    e.line(f"x = {e.read(d)}")
    e.line(f"y = {e.read(s)}")
    e.write(d, "y")
    e.write(s, "x")


@semantics("cmpxchg", sdm="CMPXCHG—Compare and Exchange (SDM Vol. 2A)",
           flags="OF SF ZF AF CF PF")
def op_cmpxchg(e: Emit, insn) -> None:
    """Compare accumulator with dest (flags of acc - dest); if equal dest := src, else
    acc := dest. The destination is always written (SDM: the processor writes back)."""
    d, s = insn.operands
    size = d.size
    acc = Reg("gpr", 0, size, False, {1: "al", 2: "ax", 4: "eax"}[size])
    e.line(f"a = {e.read(acc)}")
    e.line(f"b = {e.read(d)}")
    e.line(f"r = (a - b) & {MASKS[size]:#x}")
    e.line("if a == b:")
    with e.indent():
        e.write(d, e.read(s))
    e.line("else:")
    with e.indent():
        e.write(d, "b")
        e.write(acc, "b")
    e.line(f"C.lz = (LZ_SUB, {size}, a, b, r)")


def _make_cmov(cc: str):
    def op_cmov(e: Emit, insn) -> None:
        d, s = insn.operands
        e.line(f"v = {e.read(s)}")  # the source is read (and may fault) whatever the condition
        t = cond(e, cc)
        e.line(f"if {t}:")
        with e.indent():
            e.write(d, "v")
    op_cmov.__doc__ = f"dest := src if condition {cc!r} holds."
    return op_cmov


for _cc in CC:
    semantics(f"cmov{_cc}", sdm="CMOVcc—Conditional Move (SDM Vol. 2A)")(_make_cmov(_cc))


@semantics("nop", sdm="NOP—No Operation (SDM Vol. 2B)")
def op_nop(e: Emit, insn) -> None:
    """Nothing."""
    e.line("pass")


@semantics("bswap", sdm="BSWAP—Byte Swap (SDM Vol. 2A)")
def op_bswap(e: Emit, insn) -> None:
    """Reverse the byte order of a 32-bit register."""
    (d,) = insn.operands
    e.write(d, f"int.from_bytes({e.read(d)}.to_bytes(4, 'little'), 'big')")
