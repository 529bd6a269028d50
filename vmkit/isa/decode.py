"""Decoder: capstone (detail mode) turned into a small typed form, behind a decode cache.

Capstone does the decoding (about 4-7 us an instruction in detail mode), so the kit decodes
each instruction once: :class:`Decoder` keeps a cache keyed by the guest address *and* the bytes
found there, so self-modifying code (new bytes at an old address) is decoded afresh while a
flushed instruction cache refills from here without calling capstone again.

Capstone's text (``mnemonic op_str``) is the one spelling used in listings, traces and widgets.
"""

from __future__ import annotations

from dataclasses import dataclass

import capstone
from capstone import x86_const as X

__all__ = ["Reg", "Imm", "Mem", "Insn", "Decoder", "GPR_NAMES", "SEG_NAMES", "decode_one"]

MAX_INSN = 15  # longest legal x86 instruction (SDM Vol. 2, 2.3.11)

#: 32-bit general registers in encoding order: the index used everywhere in the kit.
GPR_NAMES = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
#: segment registers in encoding order (sreg field of ModRM).
SEG_NAMES = ("es", "cs", "ss", "ds", "fs", "gs")


@dataclass(frozen=True, slots=True)
class Reg:
    """A register operand. ``kind`` is "gpr", "seg" or "cr"; ``index`` its encoding number;
    ``size`` in bytes; ``high`` for ah/ch/dh/bh (bits 8-15 of register ``index``)."""
    kind: str
    index: int
    size: int
    high: bool
    name: str


@dataclass(frozen=True, slots=True)
class Imm:
    """An immediate; ``value`` is masked to ``size`` bytes (unsigned)."""
    value: int
    size: int


@dataclass(frozen=True, slots=True)
class Mem:
    """A memory operand ``seg:[base + index*scale + disp]``; base/index are GPR indices or None,
    ``seg`` the segment register index (ds by default, ss for esp/ebp bases)."""
    seg: int
    base: int | None
    index: int | None
    scale: int
    disp: int
    size: int


Operand = Reg | Imm | Mem


@dataclass(frozen=True, slots=True)
class Insn:
    """One decoded instruction in the kit's typed form."""
    address: int
    size: int
    id: int            # capstone X86_INS_* id (the semantics registry key)
    mnemonic: str
    op_str: str
    operands: tuple
    rep: int           # 0, 0xF3 (rep/repe) or 0xF2 (repne)
    opsize: bool       # 0x66 operand-size prefix present
    adsize: bool       # 0x67 address-size prefix present (not in the subset: #UD)
    lock: bool
    raw: bytes

    @property
    def text(self) -> str:
        return f"{self.mnemonic} {self.op_str}".strip()

    @property
    def next(self) -> int:
        return (self.address + self.size) & 0xFFFFFFFF

    def __str__(self) -> str:
        return self.text


def _reg_table() -> dict[int, Reg]:
    t: dict[int, Reg] = {}
    for i, n in enumerate(GPR_NAMES):
        t[getattr(X, f"X86_REG_{n.upper()}")] = Reg("gpr", i, 4, False, n)
    for i, n in enumerate(("ax", "cx", "dx", "bx", "sp", "bp", "si", "di")):
        t[getattr(X, f"X86_REG_{n.upper()}")] = Reg("gpr", i, 2, False, n)
    for i, n in enumerate(("al", "cl", "dl", "bl")):
        t[getattr(X, f"X86_REG_{n.upper()}")] = Reg("gpr", i, 1, False, n)
    for i, n in enumerate(("ah", "ch", "dh", "bh")):
        t[getattr(X, f"X86_REG_{n.upper()}")] = Reg("gpr", i, 1, True, n)
    for i, n in enumerate(SEG_NAMES):
        t[getattr(X, f"X86_REG_{n.upper()}")] = Reg("seg", i, 2, False, n)
    for i in range(8):
        t[getattr(X, f"X86_REG_CR{i}")] = Reg("cr", i, 4, False, f"cr{i}")
    return t


_REGS = _reg_table()
_SEG_OF = {getattr(X, f"X86_REG_{n.upper()}"): i for i, n in enumerate(SEG_NAMES)}
_GPR32 = {getattr(X, f"X86_REG_{n.upper()}"): i for i, n in enumerate(GPR_NAMES)}
_DS, _SS = 3, 2


def _make_cs() -> capstone.Cs:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    md.detail = True
    return md


_CS = _make_cs()


def decode_one(code: bytes, address: int) -> Insn | None:
    """Decode the first instruction of ``code`` at ``address``; None if capstone cannot
    (the machine raises #UD for that)."""
    for ci in _CS.disasm(code, address, 1):
        return _convert(ci)
    return None


def _convert(ci) -> Insn | None:
    ops = []
    for o in ci.operands:
        if o.type == X.X86_OP_REG:
            r = _REGS.get(o.reg)
            if r is None:
                return _unsupported(ci)
            ops.append(r)
        elif o.type == X.X86_OP_IMM:
            size = o.size or 4
            ops.append(Imm(o.imm & ((1 << (8 * size)) - 1), size))
        elif o.type == X.X86_OP_MEM:
            m = o.mem
            base = _GPR32.get(m.base) if m.base else None
            index = _GPR32.get(m.index) if m.index else None
            if (m.base and base is None) or (m.index and index is None):
                return _unsupported(ci)  # 16-bit addressing (0x67 prefix)
            if m.segment:
                seg = _SEG_OF[m.segment]
            else:
                seg = _SS if base in (4, 5) else _DS
            ops.append(Mem(seg, base, index, m.scale, m.disp & 0xFFFFFFFF, o.size))
        else:
            return _unsupported(ci)
    prefix = ci.prefix
    rep = prefix[0] if prefix[0] in (0xF2, 0xF3) else 0
    return Insn(ci.address, ci.size, ci.id, ci.mnemonic, ci.op_str, tuple(ops), rep,
                prefix[2] == 0x66, prefix[3] == 0x67, prefix[0] == 0xF0, bytes(ci.bytes))


def _unsupported(ci) -> Insn:
    # An operand kind outside the subset (x87, MMX, debug registers ...): keep the text so the
    # machine can say what it was; the empty-operand marker id 0 makes it #UD.
    return Insn(ci.address, ci.size, 0, ci.mnemonic, ci.op_str, (), 0, False, False, False,
                bytes(ci.bytes))


def _decode_moveable(code: bytes, address: int) -> tuple[Insn | None, int]:
    """:func:`decode_one`, and how the result moves to another address: 1 with only its
    ``address`` changed (everything but a relative branch), 2 a relative branch whose target
    moves with it (a 32-bit target printed in hex, capstone's ``CS_GRP_BRANCH_RELATIVE``:
    jmp, jcc, call, loop, jecxz rel; not with an operand-size prefix, whose target wraps at
    64 KiB), 0 not at all (decoded afresh: undecodable or unsupported bytes, other
    branches)."""
    for ci in _CS.disasm(code, address, 1):
        insn = _convert(ci)
        if insn is None or insn.id == 0:
            return insn, 0
        if not ci.group(capstone.CS_GRP_BRANCH_RELATIVE):
            return insn, 1
        ops = insn.operands
        if (not insn.opsize and len(ops) == 1 and isinstance(ops[0], Imm) and ops[0].size == 4
                and insn.op_str == f"{ops[0].value:#x}"):
            return insn, 2
        return insn, 0
    return None, 0


class Decoder:
    """Decode cache keyed by (address, bytes): stale entries can never be returned.

    ``decode(address, window)`` takes up to 15 bytes read at ``address``. The same instruction
    bytes at another address decode to the same instruction at that address, a relative
    branch with its target moved as far: decoded instructions are kept by their bytes alone
    too (``_moved``: x86 encodings are prefix-free, so the bytes an instruction took decide it
    whatever follows them in the window), and a new address costs a copy instead of
    capstone (about 90 us). Guests whose kernels differ a little (another guest, another
    parameter) run the same code at shifted addresses: notebook 08 decoded 4,169 windows
    holding 940 distinct instructions. Counters ``hits`` and ``misses`` say how often
    capstone was spared (a copy of a moved instruction counts as a hit).
    """

    def __init__(self, max_entries: int = 1 << 16):
        self._cache: dict[tuple[int, bytes], Insn | None] = {}
        self._moved: dict[bytes, tuple[Insn, int]] = {}
        self._sizes: list[int] = []     # the sizes of the instructions in _moved, ascending
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def decode(self, address: int, window: bytes) -> Insn | None:
        key = (address, window)
        try:
            insn = self._cache[key]
            self.hits += 1
            return insn
        except KeyError:
            pass
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
            self._moved.clear()
            self._sizes.clear()
        insn = self._move(address, window)
        if insn is not None:
            self.hits += 1
        else:
            self.misses += 1
            insn, how = _decode_moveable(window, address)
            if how:
                self._moved[insn.raw] = (insn, how)
                if insn.size not in self._sizes:
                    self._sizes.append(insn.size)
                    self._sizes.sort()
        self._cache[key] = insn
        return insn

    def _move(self, address: int, window: bytes) -> Insn | None:
        """The instruction that ``window`` starts with, moved from where it was decoded, or
        None (unknown, or a branch whose target would be printed in decimal there)."""
        moved = self._moved
        for n in self._sizes:
            hit = moved.get(window[:n])
            if hit is not None:
                seen, how = hit
                ops, text = seen.operands, seen.op_str
                if how == 2:
                    target = (ops[0].value + address - seen.address) & 0xFFFFFFFF
                    if target <= 9:     # capstone prints 0 .. 9 in decimal
                        return None
                    ops, text = (Imm(target, 4),), f"{target:#x}"
                return Insn(address, seen.size, seen.id, seen.mnemonic, text, ops, seen.rep,
                            seen.opsize, seen.adsize, seen.lock, seen.raw)
        return None


#: One process-wide decoder: decoding depends only on (address, bytes), so every machine and
#: monitor can share it.
DECODER = Decoder()
