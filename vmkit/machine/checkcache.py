"""Remembered protection checks and one-write interrupt frames: the fast path of INT n,
interrupts, IRET and segment loads on the machine's CPU.

**Checks.** A protection rule (:mod:`vmkit.machine.rules`: the gate checks of a delivery, the
inner stack from the TSS, a code or stack segment, a data segment load) is a pure function of
its arguments, of the table registers (GDTR, LDTR, IDTR, TR) and of the memory it reads through
the view's ``lin_read`` (``read_descriptor`` reads through it too). :func:`checked` runs a
rule the first time through a recording view, remembering every read (address, size, value)
and the result, under a key of the arguments and the table registers. Later, with the same
key, it *replays* the reads in their order, each a TLB hit (or, paging off, plain memory) with
no side effect but the TLB hit a real read counts, and when every value read is the same it
returns the remembered result without calling the rule: with the same inputs the rule would
have read the same addresses, in the same order, and decided the same. Anything else (a value
changed, a TLB miss, a read across a page, watched memory, a read beyond memory's end) runs the
rule for real, so page walks, accessed bits, faults and their events happen as without the
cache, in the same order. A rule that raises is not remembered. Measured on the ``syscall``
guest (Native, block mode, with the other changes of the same step: frames as one access,
INT n and IRET inside the burst, DS/ES loads inside blocks): a system call went from 146
Python calls and about 7,600 bytecodes to 91 calls and 5,400 bytecodes (300 calls and 10,400
bytecodes when issue 18 was filed); benchmarks/bench_speed.py's figures are in the README.

**Frames.** :func:`push_frame` writes an interrupt frame as one store when the whole frame lies
in one page that the TLB maps writable for the supervisor (paging off: plain memory), with no
compiled code and no watched byte there; else one ``lin_write`` a doubleword, as the SDM's
pseudo-code pushes, so a #PF on the third push leaves the first two written.
"""

from __future__ import annotations

import struct

from vmkit.machine.mmu import CR0_PG

__all__ = ["checked", "checked_segment", "push_frame", "read_dwords", "MAX_ENTRIES"]

#: remembered checks kept at most (the cache is emptied beyond: guests use a handful)
MAX_ENTRIES = 4096

_FRAMES = {k: struct.Struct(f"<{k}I") for k in range(1, 8)}
_PG = CR0_PG
_Q = struct.Struct("<Q").unpack_from     # a descriptor's eight bytes, without a slice
#: n -> the unpacker of an n-byte little-endian value (the sizes the rules read)
_UNPACK = {1: struct.Struct("<B").unpack_from, 2: struct.Struct("<H").unpack_from,
           4: struct.Struct("<I").unpack_from, 8: _Q}


class _Recorder:
    """The view a rule runs against the first time: the machine's reads, remembered."""

    __slots__ = ("m", "cpu", "reads", "plain")

    def __init__(self, m):
        self.m = m
        self.cpu = m.cpu
        self.reads: list = []
        self.plain = True       # only supervisor reads (what a replay checks)

    def lin_read(self, lin: int, n: int, user: bool = False, write: bool = False) -> int:
        v = self.m.lin_read(lin, n, user, write)
        if user or write:
            self.plain = False
        lin &= 0xFFFFFFFF
        # the last field: how to read it again; None for a read across a page or of a size
        # the rules do not use (never replayed)
        self.reads.append((lin, n, v, None if (lin & 0xFFF) + n > 0x1000 else
                           _UNPACK.get(n)))
        return v

    def read_descriptor(self, selector: int, fault: int = 13):
        # the machine's own reader, reading through this view
        return type(self.m).read_descriptor(self, selector, fault)


def checked_segment(m, key: tuple, selector: int, rule, *args):
    """:func:`checked` for a rule whose only table read is ``selector``'s descriptor
    (``read_descriptor``: the checks of a segment load). For a GDT selector within GDTR's
    limit the result depends on the arguments and the descriptor's eight bytes alone, so
    those bytes, read once (a TLB hit, or paging off), are the key: one read and one dict
    lookup. Anything else runs the rule on the machine itself."""
    cpu = m.cpu
    g = cpu.gdtr
    off = selector & 0xFFF8
    if selector & 4 or off + 7 > g.limit:
        return checked(m, key, rule, *args)
    lin = (g.base + off) & 0xFFFFFFFF
    if (lin & 0xFFF) > 0xFF8:
        return checked(m, key, rule, *args)
    if cpu.cr0 & _PG or m.nested is not None:
        base = m.tlb["rs"].get(lin >> 12)
        if base is None:
            return checked(m, key, rule, *args)
        pa = base | (lin & 0xFFF)
        hit = 1
    elif m.watched_pages:
        return checked(m, key, rule, *args)
    else:
        pa, hit = lin, 0
    if pa + 8 > m.memory_size:
        return checked(m, key, rule, *args)
    k = (*key, _Q(m.mem, pa)[0])
    memo = m._checks
    result = memo.get(k, memo)
    if result is not memo:
        m.tlb_hits += hit
        return result
    result = rule(m, *args)     # its one read is the read above (a TLB hit: no side effect)
    if len(memo) >= MAX_ENTRIES:
        memo.clear()
    memo[k] = result
    return result


def checked(m, key: tuple, rule, *args):
    """``rule(view, *args)`` for machine ``m``, remembered under ``key`` (the arguments that
    decide the result; the table registers are added here) as the module text says."""
    cpu = m.cpu
    g, l, i, t = cpu.gdtr, cpu.ldtr, cpu.idtr, cpu.tr
    return _checked(m, (*key, g.base, g.limit, l.selector, l.base, l.limit, i.base, i.limit,
                        t.selector, t.base, t.limit), rule, args)


def _checked(m, k: tuple, rule, args: tuple):
    memo = m._checks
    e = memo.get(k)
    if e is not None:
        # replay the reads: are the values still what memory holds? (counting the TLB hits
        # the real reads would count; nothing else changes)
        reads, result = e
        mem = m.mem
        if m.cpu.cr0 & _PG or m.nested is not None:
            get = m.tlb["rs"].get
            for lin, n, v, unpack in reads:
                base = get(lin >> 12)
                if base is None or unpack is None:
                    break
                pa = base | (lin & 0xFFF)
                if pa + n > m.memory_size or unpack(mem, pa)[0] != v:
                    break
            else:
                m.tlb_hits += len(reads)
                return result
        elif not m.watched_pages:
            for lin, n, v, unpack in reads:
                if lin + n > m.memory_size or unpack is None or unpack(mem, lin)[0] != v:
                    break
            else:
                return result
    rec = _Recorder(m)
    result = rule(rec, *args)
    if rec.plain:
        if len(memo) >= MAX_ENTRIES:
            memo.clear()
        memo[k] = (tuple(rec.reads), result)
    return result


def read_dwords(m, lin: int, k: int, user: bool) -> tuple | None:
    """The ``k`` doublewords at linear ``lin`` when they lie in one page the TLB maps for
    reading at that privilege (paging off: plain, unwatched memory), counting the TLB hits the
    accessors would; else None (read them one by one)."""
    n = 4 * k
    off = lin & 0xFFF
    if off + n > 0x1000:
        return None
    if m.cpu.cr0 & CR0_PG or m.nested is not None:
        base = m.tlb["ru" if user else "rs"].get(lin >> 12)
        if base is None:
            return None
        pa = base | off
        if pa + n > m.memory_size:
            return None
        m.tlb_hits += k
    else:
        if m.watched_pages or lin + n > m.memory_size:
            return None
        pa = lin
    return _FRAMES[k].unpack_from(m.mem, pa)


def push_frame(m, esp: int, frame: tuple) -> int:
    """Push ``frame`` (first value first: it ends at the highest address) below ``esp`` as
    supervisor writes; -> the new ESP. A fault leaves ESP to the caller (the registers are
    untouched) and the pushes before it written."""
    n = 4 * len(frame)
    new = (esp - n) & 0xFFFFFFFF
    off = new & 0xFFF
    if off + n <= 0x1000:
        if m.cpu.cr0 & CR0_PG or m.nested is not None:
            base = m.tlb["ws"].get(new >> 12)
            hits = len(frame)
        else:
            base = None if m.watched_pages else new & 0xFFFFF000
            hits = 0
        if base is not None:
            pa = base | off
            if pa + n <= m.memory_size and pa >> 12 not in m.code_pages:
                pack = _FRAMES[len(frame)].pack_into
                try:    # the values are 32-bit already (registers, selectors): no masking
                    pack(m.mem, pa, *frame[::-1])
                except struct.error:    # one is not: as the pushes would store it
                    pack(m.mem, pa, *[v & 0xFFFFFFFF for v in reversed(frame)])
                m.tlb_hits += hits
                return new
    write = m.lin_write
    for v in frame:
        esp = (esp - 4) & 0xFFFFFFFF
        write(esp, 4, v & 0xFFFFFFFF)
    return esp
