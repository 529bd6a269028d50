"""CPU state: one dataclass, EFLAGS as an IntFlag, 32-bit masking in one helper.

Registers live in ``cpu.regs`` (a list in encoding order eax, ecx, edx, ebx, esp, ebp, esi,
edi) so compiled instructions index it directly; ``cpu.eax`` and friends are properties.

Status flags are computed lazily (as Bochs and QEMU do): an arithmetic instruction stores
``cpu.lz = (kind, size, a, b, result[, extra])`` and the six status flags are derived only when
something reads them (a conditional jump, pushfd, an interrupt ...). ``cpu.eflags`` always
returns the materialized value; assigning it drops the lazy record.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from vmkit.isa.decode import GPR_NAMES, SEG_NAMES

__all__ = ["EFLAGS", "CPU", "Segment", "TableReg", "u32", "PARITY", "STATUS_MASK",
           "FLAGS_DEFINED_MASK"]

MASK32 = 0xFFFFFFFF


def u32(x: int) -> int:
    """Mask to 32 bits (the one helper for 32-bit wrap-around)."""
    return x & MASK32


class EFLAGS(enum.IntFlag):
    """EFLAGS bits (SDM Vol. 1, 3.4.3)."""
    CF = 1 << 0
    R1 = 1 << 1      # reserved, always 1
    PF = 1 << 2
    AF = 1 << 4
    ZF = 1 << 6
    SF = 1 << 7
    TF = 1 << 8
    IF = 1 << 9
    DF = 1 << 10
    OF = 1 << 11
    IOPL = 3 << 12
    NT = 1 << 14
    RF = 1 << 16
    VM = 1 << 17
    AC = 1 << 18
    ID = 1 << 21


STATUS_MASK = 0x8D5          # CF PF AF ZF SF OF
#: bits software can change with popfd at CPL 0 (ID/AC/RF/NT included; VM and VIF/VIP not)
FLAGS_WRITABLE = 0x257FD5
FLAGS_DEFINED_MASK = 0x257FD7

#: PARITY[b] is PF for low byte b (PF=1 when the number of set bits is even)
PARITY = bytes(0x04 if bin(i).count("1") % 2 == 0 else 0 for i in range(256))

# lazy-flag kinds
LZ_ADD, LZ_ADC, LZ_SUB, LZ_SBB, LZ_LOGIC, LZ_INC, LZ_DEC = range(7)
_SIGN = {1: 0x80, 2: 0x8000, 4: 0x80000000}
_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}


def lazy_status(lz) -> int:
    """The six status flags (as EFLAGS bits) of a lazy record."""
    kind, size, a, b, r = lz[0], lz[1], lz[2], lz[3], lz[4]
    sign = _SIGN[size]
    f = PARITY[r & 0xFF]
    if r == 0:
        f |= 0x40
    if r & sign:
        f |= 0x80
    if kind == LZ_LOGIC:
        return f
    if kind == LZ_ADD or kind == LZ_ADC:
        cin = lz[5] if kind == LZ_ADC else 0
        if a + b + cin > _MASK[size]:
            f |= 1
        if (a ^ r) & (b ^ r) & sign:
            f |= 0x800
        f |= (a ^ b ^ r) & 0x10
        return f
    if kind == LZ_SUB or kind == LZ_SBB:
        bin_ = lz[5] if kind == LZ_SBB else 0
        if a < b + bin_:
            f |= 1
        if (a ^ b) & (a ^ r) & sign:
            f |= 0x800
        f |= (a ^ b ^ r) & 0x10
        return f
    if kind == LZ_INC:
        f |= b  # b holds the preserved CF
        if r == sign:
            f |= 0x800
        f |= (a ^ 1 ^ r) & 0x10
        return f
    if kind == LZ_DEC:
        f |= b
        if r == sign - 1:
            f |= 0x800
        f |= (a ^ 1 ^ r) & 0x10
        return f
    raise AssertionError(f"bad lazy kind {kind}")


@dataclass(slots=True)
class Segment:
    """A segment register: the visible selector and its hidden descriptor cache."""
    selector: int = 0
    base: int = 0
    limit: int = 0xFFFFFFFF
    access: int = 0        # access byte of the descriptor (P, DPL, S, type)
    flags: int = 0xC       # G and D/B nibble

    @property
    def dpl(self) -> int:
        return (self.access >> 5) & 3

    def copy(self) -> "Segment":
        return Segment(self.selector, self.base, self.limit, self.access, self.flags)


@dataclass(slots=True)
class TableReg:
    """GDTR/IDTR (base, limit) or LDTR/TR (selector plus cached base and limit)."""
    base: int = 0
    limit: int = 0
    selector: int = 0

    def copy(self) -> "TableReg":
        return TableReg(self.base, self.limit, self.selector)


def _flat(selector: int, code: bool) -> Segment:
    return Segment(selector, 0, 0xFFFFFFFF, 0x9A if code else 0x92, 0xC)


@dataclass(slots=True)
class CPU:
    """Architectural state of one x86-32 CPU (what a snapshot saves)."""
    regs: list = field(default_factory=lambda: [0] * 8)
    eip: int = 0
    ef: int = 0x2            # EFLAGS, status bits stale while ``lz`` is set
    lz: tuple | None = None  # lazy status-flag record
    seg: list = field(default_factory=lambda: [_flat(0x10, False), _flat(0x08, True),
                                               _flat(0x10, False), _flat(0x10, False),
                                               _flat(0x10, False), _flat(0x10, False)])
    cr0: int = 0x00000011    # PE=1 (protected mode), ET=1; PG=0
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    gdtr: TableReg = field(default_factory=TableReg)
    idtr: TableReg = field(default_factory=lambda: TableReg(0, 0x3FF))
    ldtr: TableReg = field(default_factory=TableReg)
    tr: TableReg = field(default_factory=TableReg)
    cpl: int = 0
    halted: bool = False

    # --- EFLAGS -------------------------------------------------------------------------------
    @property
    def eflags(self) -> int:
        lz = self.lz
        if lz is not None:
            self.ef = (self.ef & ~STATUS_MASK) | lazy_status(lz)
            self.lz = None
        return self.ef

    @eflags.setter
    def eflags(self, value: int) -> None:
        self.lz = None
        self.ef = (value & FLAGS_DEFINED_MASK) | 0x2

    @property
    def flags(self) -> EFLAGS:
        """EFLAGS as named bits."""
        return EFLAGS(self.eflags)

    # --- segments by name ---------------------------------------------------------------------
    @property
    def cs(self) -> int:
        return self.seg[1].selector

    @property
    def ss(self) -> int:
        return self.seg[2].selector

    @property
    def ds(self) -> int:
        return self.seg[3].selector

    @property
    def es(self) -> int:
        return self.seg[0].selector

    @property
    def fs(self) -> int:
        return self.seg[4].selector

    @property
    def gs(self) -> int:
        return self.seg[5].selector

    @property
    def iopl(self) -> int:
        return (self.ef >> 12) & 3

    @property
    def IF(self) -> int:
        """EFLAGS.IF (1: maskable interrupts enabled), named as a monitor's virtual CPU names
        it (the interface every ``vcpu`` has, ``vmkit.vmm.vcpu.VCPU``)."""
        return (self.ef >> 9) & 1

    @IF.setter
    def IF(self, v: int) -> None:
        self.ef = (self.ef & ~0x200) | ((v & 1) << 9)

    @property
    def paging(self) -> bool:
        return bool(self.cr0 & 0x80000000)

    # --- whole-state copy ---------------------------------------------------------------------
    def state(self) -> tuple:
        """A hashable, immutable copy of the whole state (for snapshots and comparisons)."""
        return (tuple(self.regs), self.eip, self.eflags,
                tuple((s.selector, s.base, s.limit, s.access, s.flags) for s in self.seg),
                self.cr0, self.cr2, self.cr3, self.cr4,
                (self.gdtr.base, self.gdtr.limit), (self.idtr.base, self.idtr.limit),
                (self.ldtr.selector, self.ldtr.base, self.ldtr.limit),
                (self.tr.selector, self.tr.base, self.tr.limit), self.cpl, self.halted)

    def set_state(self, st: tuple) -> None:
        """Load a state made by :meth:`state` in place (compiled code keeps ``regs``)."""
        (regs, self.eip, ef, segs, self.cr0, self.cr2, self.cr3, self.cr4, g, i, l, t,
         self.cpl, self.halted) = st
        self.regs[:] = regs
        self.eflags = ef
        for s, (sel, base, limit, acc, fl) in zip(self.seg, segs):
            s.selector, s.base, s.limit, s.access, s.flags = sel, base, limit, acc, fl
        self.gdtr.base, self.gdtr.limit = g
        self.idtr.base, self.idtr.limit = i
        self.ldtr.selector, self.ldtr.base, self.ldtr.limit = l
        self.tr.selector, self.tr.base, self.tr.limit = t

    def __repr__(self) -> str:
        r = " ".join(f"{n}={v:08x}" for n, v in zip(GPR_NAMES, self.regs))
        return f"<CPU {r} eip={self.eip:08x} eflags={self.eflags:08x} cpl={self.cpl}>"


def _gpr_property(i: int):
    def get(self):
        return self.regs[i]

    def set_(self, v):
        self.regs[i] = v & MASK32
    return property(get, set_, doc=f"{GPR_NAMES[i]} (32-bit)")


def _gpr16_property(i: int):
    def get(self):
        return self.regs[i] & 0xFFFF

    def set_(self, v):
        self.regs[i] = (self.regs[i] & 0xFFFF0000) | (v & 0xFFFF)
    return property(get, set_)


def _gpr8_property(i: int, high: bool):
    sh = 8 if high else 0

    def get(self):
        return (self.regs[i] >> sh) & 0xFF

    def set_(self, v):
        self.regs[i] = (self.regs[i] & ~(0xFF << sh) & MASK32) | ((v & 0xFF) << sh)
    return property(get, set_)


# dataclass(slots=True) builds a new class, so properties are attached afterwards
for _i, _n in enumerate(GPR_NAMES):
    setattr(CPU, _n, _gpr_property(_i))
    setattr(CPU, _n[1:], _gpr16_property(_i))
for _i, _n in enumerate(("al", "cl", "dl", "bl")):
    setattr(CPU, _n, _gpr8_property(_i, False))
for _i, _n in enumerate(("ah", "ch", "dh", "bh")):
    setattr(CPU, _n, _gpr8_property(_i, True))
del _i, _n

SEG_INDEX = {n: i for i, n in enumerate(SEG_NAMES)}
