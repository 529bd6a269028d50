"""Physical memory and the MMU: 32-bit two-level paging (4 KiB pages, 4 MiB pages with
CR4.PSE), U/S and R/W checks with CR0.WP, accessed and dirty bits, and a TLB.

Compiled instructions call six accessors, ``rd1 rd2 rd4 wr1 wr2 wr4``, that take a *linear*
address. The machine rebinds them (in the compiled code's globals) whenever the mode changes:
paging off, or paging on for a supervisor (CPL 0-2) or user (CPL 3) access. With paging on the
fast path is one dict lookup in the TLB (virtual page -> physical frame); a miss walks the page
tables (SDM Vol. 3A, 4.3) and fills the TLB, setting the accessed (and, for writes, dirty) bits.

Reads beyond physical memory return all ones and writes there are dropped, as on a PC.

A monitor using nested paging (``vmkit.vmm.hw``, Intel EPT) sets ``nested``: then every TLB miss
is a two-dimensional walk (``_walk_nested``) and the TLB caches guest-linear -> host-physical.

Writes into physical bytes that hold compiled instructions invalidate them (self-modifying
code); the check is one set lookup per write, on the page number.

**Watched memory** (``watch_memory``, for debuggers' watchpoints): every read and write of a
watched physical range, whoever makes it (an instruction's explicit or implicit operand, the
page walk, descriptor and TSS reads, interrupt frames, a monitor writing through the machine),
is a :class:`~vmkit.trace.MemoryAccess` trace event, a write of the value already there
included. The TLB entries of pages holding watched bytes are kept aside (``tlb_watched``: the
accessors' fast path never finds them, ``translate`` does, so hits, misses and accessed/dirty
bits are as without the watch) and, paging off, the accessors are rebuilt with a page check,
so every access to such a page takes the slow path through ``phys_read``/``phys_write``,
where the check is;
a run with watched memory goes one instruction at a time (the events carry exact guest time).
With nothing watched nothing changes: the cost is one test of an empty set on the slow path.
"""

from __future__ import annotations

import struct
import sys
import weakref

from vmkit.isa.faults import Fault
from vmkit.trace import MemoryAccess, PageFault, TlbMiss

__all__ = ["MMUMixin", "Sync", "walk_tables", "SILENT",
           "PTE_P", "PTE_W", "PTE_U", "PTE_A", "PTE_D", "PTE_PS", "NESTED_R",
           "NESTED_W", "NESTED_X"]

PTE_P, PTE_W, PTE_U, PTE_PWT, PTE_PCD, PTE_A, PTE_D, PTE_PS = 1, 2, 4, 8, 16, 32, 64, 128
CR0_PG, CR0_WP = 1 << 31, 1 << 16
CR4_PSE = 1 << 4
#: access rights of a nested (EPT) access, as the EPT entry bits 0-2: read, write, execute
NESTED_R, NESTED_W, NESTED_X = 1, 2, 4

#: access sources that are never reported to watchers: instruction fetch (decoding) and the
#: side-effect-free peeks of debuggers and listings
SILENT = frozenset({"fetch", "peek"})

#: the memories of machines that are gone, by size, for the next machine of that size: the
#: kernel maps a new bytearray's pages one fault at a time (6 MiB of 0xAA: about 4.5 ms; the
#: notebooks on the comparisons make some 250 machines), while filling a used one again is a
#: memset (0.2 ms). A memory is taken again only when nothing but this list refers to it
#: (its reference count says so: no closure, memoryview or object of the old machine kept
#: it), so no one can see it reused. At most _SPARE_BYTES are kept (resident memory: a few
#: machines' worth; the rest is freed as before).
_SPARE: dict[int, list] = {}
_SPARE_BYTES = 16 << 20
_spare_total = 0


def _spare_memory(size: int) -> bytearray | None:
    """A memory of ``size`` bytes that nothing refers to, filled with 0xAA again, or None."""
    global _spare_total
    pool = _SPARE.get(size)
    while pool:
        mem = pool.pop()
        _spare_total -= size
        if sys.getrefcount(mem) == _ALONE:  # nothing but ``mem`` here refers to it
            import ctypes
            view = (ctypes.c_char * size).from_buffer(mem)
            ctypes.memset(view, 0xAA, size)
            del view
            return mem
    return None


def _refs_alone() -> int:
    """What ``sys.getrefcount`` says of an object only a local name refers to (2 on CPython
    3.11: the name and the call's argument; measured, not assumed)."""
    mem = bytearray(1)
    return sys.getrefcount(mem)


_ALONE = _refs_alone()


def _give_back(mem: bytearray) -> None:
    """A machine is gone: its memory may serve the next one of the same size."""
    global _spare_total
    if _spare_total + len(mem) <= _SPARE_BYTES:
        _SPARE.setdefault(len(mem), []).append(mem)
        _spare_total += len(mem)


_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
#: n -> unpacker of an n-byte little-endian value
_UNPACK = {1: struct.Struct("<B").unpack_from, 2: _U16.unpack_from, 4: _U32.unpack_from,
           8: struct.Struct("<Q").unpack_from}


class Sync(Exception):
    """Raised *before* an instruction has changed anything, by an operation that needs the
    exact guest time (RDTSC, port I/O, STI's interrupt shadow; INT n, IRET and page faults,
    whose trace events carry the time) while ``Machine._burst`` runs: a burst brings
    ``clock`` and ``steps`` up to date only when it ends, so that the hot loop does no
    bookkeeping. The burst ends and runs that one instruction again with exact clocks; only
    these rare instructions pay (one more pass through the run loop)."""


def walk_tables(rd, wr, lin: int, write: bool, user: bool, cr0: int, cr3: int, cr4: int,
                fault, touch: bool = True) -> tuple[int, int, bool, int]:
    """The two-level page walk (SDM Vol. 3A, 4.3), once for every walker: the real MMU, a
    monitor's walk of the guest's own tables, and the memory pictures of :mod:`vmkit.viz`.

    The tables are reached through ``rd(address, 4)`` (read an entry) and ``wr(address, 4,
    value)`` (write back the accessed and dirty bits, only when they change and only with
    ``touch``): host-physical for the machine, guest-physical for a monitor. A denied access
    calls ``fault(lin, error_code, references)``, which raises (the machine's #PF, the guest's
    #PF). -> (frame, flags, dirty, references): the base of ``lin``'s 4 KiB frame (inside a
    4 MiB page too), the U/W flags that apply (both levels'), whether the mapping is dirty
    (after this access), and how many entries were read (1 for a 4 MiB page, else 2)."""
    err = (2 if write else 0) | (4 if user else 0)
    pde_a = (cr3 & 0xFFFFF000) | ((lin >> 20) & 0xFFC)
    pde = rd(pde_a, 4)
    if not pde & PTE_P:
        fault(lin, err, 1)
    if pde & PTE_PS and cr4 & CR4_PSE:
        pte_a = pte = None
        flags = pde
        frame = (pde & 0xFFC00000) | (lin & 0x3FF000)
        refs = 1
    else:
        pte_a = (pde & 0xFFFFF000) | ((lin >> 10) & 0xFFC)
        pte = rd(pte_a, 4)
        refs = 2
        if not pte & PTE_P:
            fault(lin, err, refs)
        flags = pde & pte  # U and W must be set at both levels
        frame = pte & 0xFFFFF000
    if user and not flags & PTE_U:
        fault(lin, err | 1, refs)
    if write and not flags & PTE_W and (user or cr0 & CR0_WP):
        fault(lin, err | 1, refs)
    if touch:   # accessed and dirty bits (written back only when they change)
        if not pde & PTE_A or (pte is None and write and not pde & PTE_D):
            pde |= PTE_A | (PTE_D if pte is None and write else 0)
            wr(pde_a, 4, pde)
        if pte is not None and (not pte & PTE_A or (write and not pte & PTE_D)):
            pte |= PTE_A | (PTE_D if write else 0)
            wr(pte_a, 4, pte)
    return frame, flags & (PTE_U | PTE_W), bool((pde if pte is None else pte) & PTE_D), refs


class MMUMixin:
    """Memory accessors and paging for :class:`vmkit.machine.Machine`."""

    in_burst = False   # True while Machine._burst runs (clock and steps lag behind)

    # ---- physical memory -----------------------------------------------------------------
    def _init_memory(self, size: int) -> None:
        self.memory_size = size
        mem = _spare_memory(size)
        self.mem = mem if mem is not None else bytearray(b"\xAA") * size
        weakref.finalize(self, _give_back, self.mem).atexit = False
        # TLB: virtual page number -> physical frame base, one dict per (privilege, access)
        self.tlb = {"rs": {}, "ws": {}, "ru": {}, "wu": {}}
        # the TLB entries of watched pages (watch_memory), kept aside so the accessors' fast
        # path never finds them: hits, misses and accessed/dirty bits stay what they would be
        self.tlb_watched = {"rs": {}, "ws": {}, "ru": {}, "wu": {}}
        # 4 MiB regions (lin >> 22) whose translations came from a large page: the TLB holds
        # them as 4 KiB pieces, and INVLPG anywhere in the region must drop them all
        self.tlb_large: set[int] = set()
        self.tlb_hits = 0
        self.tlb_misses = 0
        self.tlb_flushes = 0
        self.walk_refs = 0
        # second-level translation (nested paging: Intel EPT), None on a bare machine. When a
        # monitor sets it, every address the CPU produces (paging on or off) is guest-physical
        # and goes through it; see _walk_nested. Only TLB misses look at it, so the hit path
        # and a machine without it run as before.
        self.nested = None
        # physical page number -> {physical byte address: {(tag, eip, pa)}}: the compiled code
        # those bytes hold (vmkit.machine.codecache)
        self.code_pages: dict[int, dict[int, set]] = {}
        # physical page number -> callback(pa, n): a monitor's translations live on that page
        # (binary translation); every write there calls it. Watched pages stay in code_pages
        # across icache flushes, so the accessors' one set lookup per write still finds them.
        self.code_watch: dict[int, object] = {}
        # watched physical memory (watch_memory): [(start, end)] and the page numbers they touch
        self.watch_ranges: list[tuple[int, int]] = []
        self.watched_pages: set[int] = set()

    # ---- watched memory ------------------------------------------------------------------
    def watch_memory(self, ranges) -> None:
        """Report every access to the physical ``ranges`` (``[(address, size)]``; empty: none)
        as ``MemoryAccess`` trace events (see the module text). Replaces the ranges set before."""
        rs = [(int(a), int(a) + int(n)) for a, n in ranges if n > 0]
        pages = {p for a, b in rs for p in range(a >> 12, ((b - 1) >> 12) + 1)}
        if rs == self.watch_ranges:
            return
        self.watch_ranges = rs
        self.watched_pages = pages
        self._split_tlb()
        self._accessors.clear()          # paging off: accessors with the page check
        self.mode_changed()

    def _split_tlb(self) -> None:
        """Entries of watched pages to ``tlb_watched``, the others back to ``tlb``."""
        wp = self.watched_pages
        for k, t in self.tlb.items():
            aside = self.tlb_watched[k]
            back = {v: f for v, f in aside.items() if f >> 12 not in wp}
            for v in back:
                del aside[v]
            for v in [v for v, f in t.items() if f >> 12 in wp]:
                aside[v] = t.pop(v)
            t.update(back)

    def watched_page(self, pa: int) -> bool:
        """True when physical address ``pa`` lies on a page holding watched bytes: code that
        caches translations or runs several instructions at once (a block translator) takes
        the one-instruction slow path there."""
        return pa >> 12 in self.watched_pages

    def _watch_hit(self, pa: int, n: int, access: str, old: bytes, new: bytes,
                   source: str) -> None:
        end = pa + n
        for a, b in self.watch_ranges:
            if pa < b and a < end:
                self.trace.add(MemoryAccess(self.clock, address=pa, size=n, access=access,
                                            old=old, new=new, eip=self.cpu.eip, source=source,
                                            vm=self.vm_index))
                return

    def phys_read(self, pa: int, n: int, source: str = "system") -> bytes:
        """n bytes of physical memory (all ones beyond its end). ``source`` names who reads,
        for watched memory (see the module text)."""
        mem, size = self.mem, self.memory_size
        if pa + n <= size:
            data = bytes(mem[pa:pa + n])
        else:
            data = bytes(mem[pa:size]) + b"\xFF" * (pa + n - max(pa, size)) if pa < size \
                else b"\xFF" * n
        wp = self.watched_pages
        if wp and (pa >> 12 in wp or (pa + n - 1) >> 12 in wp) and source not in SILENT:
            self._watch_hit(pa, n, "read", data, data, source)
        return data

    def phys_write(self, pa: int, data: bytes, source: str = "system") -> None:
        """Write physical memory (bytes beyond its end are dropped); invalidates code there.
        ``source`` names who writes, for watched memory (see the module text)."""
        size = self.memory_size
        end = min(pa + len(data), size)
        if pa >= size:
            return
        wp = self.watched_pages
        if wp and (pa >> 12 in wp or (end - 1) >> 12 in wp):
            old = bytes(self.mem[pa:end])
            self.mem[pa:end] = data[:end - pa]
            self._watch_hit(pa, end - pa, "write", old, bytes(data[:end - pa]), source)
        else:
            self.mem[pa:end] = data[:end - pa]
        cp = self.code_pages
        if cp:
            for p in range(pa >> 12, ((end - 1) >> 12) + 1):
                if p in cp:
                    self._smc(pa, end - pa)
                    break

    def _phys_rd(self, pa: int, n: int, source: str = "system") -> int:
        return int.from_bytes(self.phys_read(pa, n, source), "little")

    def _phys_wr(self, pa: int, n: int, v: int, source: str = "system") -> None:
        self.phys_write(pa, (v & ((1 << (8 * n)) - 1)).to_bytes(n, "little"), source)

    def _walk_rd(self, pa: int, n: int) -> int:
        return self._phys_rd(pa, n, "walk")

    def _walk_wr(self, pa: int, n: int, v: int) -> None:
        self._phys_wr(pa, n, v, "walk")

    def _insn_rd(self, pa: int, n: int) -> int:
        return self._phys_rd(pa, n, "insn")

    def _insn_wr(self, pa: int, n: int, v: int) -> None:
        self._phys_wr(pa, n, v, "insn")

    # ---- page walk -------------------------------------------------------------------------
    def translate(self, lin: int, write: bool = False, user: bool | None = None,
                  fetch: bool = False) -> int:
        """Linear -> physical address for an access, walking the page tables on a TLB miss.
        Raises #PF (with CR2 and the error code) when the access is not allowed."""
        cpu = self.cpu
        if not cpu.cr0 & CR0_PG and self.nested is None:
            return lin & 0xFFFFFFFF
        if user is None:
            user = cpu.cpl == 3
        key = ("wu" if write else "ru") if user else ("ws" if write else "rs")
        t = self.tlb[key]
        vpn = lin >> 12
        base = t.get(vpn)
        if base is None and self.watched_pages:
            base = self.tlb_watched[key].get(vpn)    # a watched page: the entry kept aside
            if base is not None:
                self.tlb_hits += 1
                return base | (lin & 0xFFF)
        if base is None:
            base = self._walk(lin, write, user, fetch)
            if base >> 12 in self.watched_pages:
                self.tlb_watched[key][vpn] = base
            else:
                t[vpn] = base
        else:
            self.tlb_hits += 1
        return base | (lin & 0xFFF)

    def peek_translate(self, lin: int) -> int | None:
        """Linear -> physical without side effects (no fault, no A/D bits, no TLB fill, no
        counters): for debuggers, listings and crash reports. None when not mapped."""
        cpu = self.cpu
        lin &= 0xFFFFFFFF
        nt = self.nested
        if nt is not None:
            return self._peek_nested(lin)
        if not cpu.cr0 & CR0_PG:
            return lin
        pde = self._phys_rd((cpu.cr3 & 0xFFFFF000) | ((lin >> 20) & 0xFFC), 4, "peek")
        if not pde & PTE_P:
            return None
        if pde & PTE_PS and cpu.cr4 & CR4_PSE:
            return (pde & 0xFFC00000) | (lin & 0x3FFFFF)
        pte = self._phys_rd((pde & 0xFFFFF000) | ((lin >> 10) & 0xFFC), 4, "peek")
        if not pte & PTE_P:
            return None
        return (pte & 0xFFFFF000) | (lin & 0xFFF)

    def _peek_nested(self, lin: int) -> int | None:
        """peek_translate through both dimensions (guest tables, then the nested table)."""
        cpu, nt = self.cpu, self.nested
        if not cpu.cr0 & CR0_PG:
            return nt.translate(lin, NESTED_R)
        a = nt.translate((cpu.cr3 & 0xFFFFF000) | ((lin >> 20) & 0xFFC), NESTED_R)
        pde = self._phys_rd(a, 4, "peek") if a is not None else 0
        if not pde & PTE_P:
            return None
        if pde & PTE_PS and cpu.cr4 & CR4_PSE:
            return nt.translate((pde & 0xFFC00000) | (lin & 0x3FFFFF), NESTED_R)
        a = nt.translate((pde & 0xFFFFF000) | ((lin >> 10) & 0xFFC), NESTED_R)
        pte = self._phys_rd(a, 4, "peek") if a is not None else 0
        if not pte & PTE_P:
            return None
        return nt.translate((pte & 0xFFFFF000) | (lin & 0xFFF), NESTED_R)

    def peek(self, lin: int, n: int) -> bytes | None:
        """n bytes at a linear address without side effects, or None if any is unmapped."""
        out = bytearray()
        for k in range(n):
            pa = self.peek_translate(lin + k)
            if pa is None:
                return None
            out += self.phys_read(pa, 1, "peek")
        return bytes(out)

    def _walk(self, lin: int, write: bool, user: bool, fetch: bool = False) -> int:
        """Walk the two-level page table for ``lin``; return the frame base (SDM 4.3)."""
        if self.nested is not None:
            return self._walk_nested(lin, write, user, fetch)
        cpu = self.cpu
        self.tlb_misses += 1
        frame, _, _, refs = walk_tables(self._walk_rd, self._walk_wr, lin, write, user, cpu.cr0,
                                        cpu.cr3, cpu.cr4, self._walk_fault)
        if refs == 1:
            self.tlb_large.add(lin >> 22)
        self.walk_refs += refs
        tr = self.trace
        tr.counts["tlb_miss"] += 1  # counted always; the event object only when watched
        if "tlb_miss" in tr._subs:
            tr.add(TlbMiss(self.clock, address=lin, references=refs, vm=self.vm_index))
        return frame

    def _walk_fault(self, lin: int, err: int, refs: int) -> None:
        if refs == 1 and err & 1:   # a 4 MiB page that denies the access: still known as large
            self.tlb_large.add(lin >> 22)
        self.page_fault(lin, err, refs)

    def _walk_nested(self, lin: int, write: bool, user: bool, fetch: bool) -> int:
        """The two-dimensional walk of nested paging (Intel EPT, AMD NPT; SDM Vol. 3C, 29.3):
        the guest's page tables map linear to *guest-physical* addresses, and every
        guest-physical address the walk uses -- the page-directory entry, the page-table entry
        and the final frame -- is itself translated by the nested table ``self.nested`` (guest-
        physical -> host-physical, ``nested.levels`` levels). Returns the host-physical frame.

        Memory references of one TLB miss when no paging-structure cache helps, for ``n``
        guest levels and ``m`` nested levels::

            n * m   nested walks of the n guest entries (their addresses are guest-physical)
          +     n   the guest entries themselves
          +     m   the nested walk of the final guest-physical frame
          = n*m + n + m  =  (n + 1)(m + 1) - 1

        2 * 2 + 2 + 2 = 8 for the kit's two-level guest tables and a two-level nested table (5 for
        a 4 MiB guest page, n = 1; m = 2 with the guest's paging off); 24 for x86-64's 4 and 4.
        ``walk_refs`` counts them and each ``TlbMiss`` event carries its walk's count.

        Guest page faults are raised as usual (CR2, error code); a nested access the nested
        table does not allow calls ``nested.violation(...)``, which raises the monitor's exit
        (an EPT violation). Accessed and dirty bits go to the guest's entries (host-physical
        addresses of its tables), as the hardware writes them."""
        cpu = self.cpu
        nt = self.nested
        m = nt.levels
        self.tlb_misses += 1
        acc = NESTED_W if write else (NESTED_X if fetch else NESTED_R)
        tr = nt.translate
        if not cpu.cr0 & CR0_PG:
            # guest paging off: linear = guest-physical; only the nested dimension
            frame = tr(lin & 0xFFFFF000, acc)
            if frame is None:
                self._nested_violation(lin, lin & 0xFFFFFFFF, acc, True, 0)
            refs = m
        else:
            err = (2 if write else 0) | (4 if user else 0)
            g = (cpu.cr3 & 0xFFFFF000) | ((lin >> 20) & 0xFFC)
            pde_a = tr(g, NESTED_R)
            if pde_a is None:
                self._nested_violation(lin, g, NESTED_R, False, 0)
            pde = self._phys_rd(pde_a, 4, "walk")
            refs = m + 1
            if not pde & PTE_P:
                self.page_fault(lin, err, refs)
            if pde & PTE_PS and cpu.cr4 & CR4_PSE:
                flags = pde
                frame_g = (pde & 0xFFC00000) | (lin & 0x3FF000)
                pte_a, pte = None, None
                self.tlb_large.add(lin >> 22)
            else:
                g = (pde & 0xFFFFF000) | ((lin >> 10) & 0xFFC)
                pte_a = tr(g, NESTED_R)
                if pte_a is None:
                    self._nested_violation(lin, g, NESTED_R, False, refs)
                pte = self._phys_rd(pte_a, 4, "walk")
                refs += m + 1
                if not pte & PTE_P:
                    self.page_fault(lin, err, refs)
                flags = pde & pte
                frame_g = pte & 0xFFFFF000
            if user and not flags & PTE_U:
                self.page_fault(lin, err | 1, refs)
            if write and not flags & PTE_W and (user or cpu.cr0 & CR0_WP):
                self.page_fault(lin, err | 1, refs)
            # the final guest-physical frame, before any A/D bit is written (restartable)
            frame = tr(frame_g, acc)
            if frame is None:
                self._nested_violation(lin, frame_g | (lin & 0xFFF), acc, True, refs)
            refs += m
            if not pde & PTE_A or (pte is None and write and not pde & PTE_D):
                self._phys_wr(pde_a, 4, pde | PTE_A | (PTE_D if pte is None and write else 0),
                              "walk")
            if pte is not None and (not pte & PTE_A or (write and not pte & PTE_D)):
                self._phys_wr(pte_a, 4, pte | PTE_A | (PTE_D if write else 0), "walk")
        self.walk_refs += refs
        trc = self.trace
        trc.counts["tlb_miss"] += 1
        if "tlb_miss" in trc._subs:
            trc.add(TlbMiss(self.clock, address=lin, references=refs, vm=self.vm_index))
        return frame

    def _nested_violation(self, lin: int, gpa: int, access: int, final: bool, refs: int):
        """A nested access the nested table denies (not mapped, or without that right): the
        references made so far count, then the monitor's exit (restartable, like a #PF)."""
        if self.in_burst:
            self.tlb_misses -= 1
            raise Sync()   # exact clocks for the exit, as for a page fault
        self.walk_refs += refs
        self.nested.violation(lin & 0xFFFFFFFF, gpa & 0xFFFFFFFF, access, final)
        raise AssertionError("nested.violation must raise")

    def page_fault(self, lin: int, err: int, refs: int):
        """A #PF at linear address ``lin`` with error code ``err``: CR2, then the fault."""
        if self.in_burst:
            # inside a burst the clock lags: have the instruction run again with exact clocks
            # (it changed nothing yet: faults are restartable), so the PageFault event and
            # anything a monitor does about it see the right guest time; undo this walk's count
            self.tlb_misses -= 1
            raise Sync()
        self.walk_refs += refs
        self.cpu.cr2 = lin & 0xFFFFFFFF
        self.trace.add(PageFault(self.clock, address=lin & 0xFFFFFFFF, error_code=err,
                                 eip=self.cpu.eip, vm=self.vm_index))
        raise Fault(14, err, lin & 0xFFFFFFFF,
                    ("protection violation" if err & 1 else "page not present") +
                    (" on write" if err & 2 else " on read") + (" from user mode" if err & 4 else ""))

    def flush_tlb(self, vpn: int | None = None) -> None:
        """Drop every TLB entry (CR3 load) or one page's (INVLPG); the live compiled code
        fetched through the dropped translations goes with them (the next fetch translates
        again and finds the code kept at its physical address: vmkit.machine.codecache)."""
        self.tlb_flushes += 1
        if vpn is None:
            for t in (*self.tlb.values(), *self.tlb_watched.values()):
                t.clear()
            self.tlb_large.clear()
            if self.cpu.cr0 & CR0_PG:
                self.drop_live_code()   # the code itself is kept (vmkit.machine.codecache)
        elif vpn >> 10 in self.tlb_large:
            # INVLPG in a 4 MiB page invalidates the whole large page (SDM 4.10.4.1)
            region = vpn >> 10
            self.tlb_large.discard(region)
            for t in (*self.tlb.values(), *self.tlb_watched.values()):
                for v in [v for v in t if v >> 10 == region]:
                    del t[v]
            if self.cpu.cr0 & CR0_PG:
                self.drop_live_code()
        else:
            for t in (*self.tlb.values(), *self.tlb_watched.values()):
                t.pop(vpn, None)
            if self.cpu.cr0 & CR0_PG:
                self._flush_icache_page(vpn)

    def tlb_state(self) -> dict:
        """A copy of the TLB (for snapshots: a stale entry is guest-visible state)."""
        state = {k: {**t, **self.tlb_watched[k]} for k, t in self.tlb.items()}
        state["large"] = frozenset(self.tlb_large)
        return state

    def set_tlb_state(self, state: dict) -> None:
        """Load a copy made by :meth:`tlb_state`, in place (the accessors hold the dicts)."""
        for k, t in self.tlb.items():
            t.clear()
            self.tlb_watched[k].clear()
            t.update(state.get(k, {}))
        if self.watched_pages:
            self._split_tlb()
        self.tlb_large = set(state.get("large", ()))

    # ---- accessors for compiled code ------------------------------------------------------
    def _make_accessors(self, user: bool) -> dict:
        """The six accessors for the current paging mode and privilege
        (:func:`vmkit.machine.accessors.make_accessors`; made once per mode and cached)."""
        from vmkit.machine.accessors import make_accessors   # it imports this module
        return make_accessors(self, user)

    # ---- linear-address helpers for the machine's own use ----------------------------------
    def lin_read(self, lin: int, n: int, user: bool = False, write: bool = False) -> int:
        """Read n bytes at a linear address with the access rights given (supervisor by
        default: descriptor tables, TSS and interrupt stacks are implicit supervisor
        accesses, SDM 4.6)."""
        lin &= 0xFFFFFFFF
        if not self.cpu.cr0 & CR0_PG and self.nested is None:
            return self._phys_rd(lin, n)
        if (lin & 0xFFF) + n <= 0x1000:  # one page: one translation
            # a TLB hit, as translate() and phys_read() would take it (the TLB never holds a
            # watched page): descriptors, gates, the TSS and interrupt frames read this way
            # made the syscall guest's system calls a fifth faster
            base = self.tlb[("wu" if write else "ru") if user else
                            ("ws" if write else "rs")].get(lin >> 12)
            if base is not None:
                pa = base | (lin & 0xFFF)
                if pa + n <= self.memory_size:
                    self.tlb_hits += 1
                    u = _UNPACK.get(n)   # unpack_from: no slice (a fifth of a syscall)
                    if u is not None:
                        return u(self.mem, pa)[0]
                    return int.from_bytes(self.mem[pa:pa + n], "little")
            return int.from_bytes(self.phys_read(self.translate(lin, write, user), n), "little")
        out = 0
        for k in range(n):
            pa = self.translate((lin + k) & 0xFFFFFFFF, write, user)
            out |= self._phys_rd(pa, 1) << (8 * k)
        return out

    def lin_write(self, lin: int, n: int, v: int, user: bool = False) -> None:
        lin &= 0xFFFFFFFF
        if not self.cpu.cr0 & CR0_PG and self.nested is None:
            self._phys_wr(lin, n, v)
            return
        if (lin & 0xFFF) + n <= 0x1000:
            base = self.tlb["wu" if user else "ws"].get(lin >> 12)   # a hit: as lin_read
            if base is not None:
                pa = base | (lin & 0xFFF)
                if pa + n <= self.memory_size:
                    self.tlb_hits += 1
                    self.mem[pa:pa + n] = (v & ((1 << (8 * n)) - 1)).to_bytes(n, "little")
                    if pa >> 12 in self.code_pages:
                        self._smc(pa, n)
                    return
            self._phys_wr(self.translate(lin, True, user), n, v)
            return
        pas = [self.translate((lin + k) & 0xFFFFFFFF, True, user) for k in range(n)]
        for k, pa in enumerate(pas):
            self._phys_wr(pa, 1, (v >> (8 * k)) & 0xFF)
