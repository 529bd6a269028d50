"""The machine's code cache: compiled instructions and blocks kept by the physical address of
their bytes, so that they outlive CR3 loads and TLB flushes (as QEMU finds its translation
blocks by physical PC and CPU flags). Mixed into :class:`vmkit.machine.machine.Machine`.

Two levels:

* **live** (``_icache_sup/_usr``: linear EIP -> compiled instruction; ``_bcache_sup/_usr``:
  linear EIP -> block-cache entry, :mod:`vmkit.machine.blockrun`) is what the run loops read,
  one dict lookup a dispatch. A live entry stands only while the TLB holds the translation its
  bytes were fetched through: a flush of the whole TLB (a CR3 load, a world switch) empties
  the live caches, INVLPG drops its page's entries.
* **kept** (``_istore_*``, ``_bstore_*``): (linear EIP, physical address) -> the same objects,
  for every instruction and block whose 15-byte fetch window lies in one page. Such code
  depends only on the bytes at that physical address, on the privilege class (which store)
  and on the monitor's hooks (attaching others, or ``flush_icache``, drops everything): a TLB
  flush keeps it.

A live miss fetches as the per-instruction path always has: EIP's translation through the TLB
(a miss walks the page tables, with the same TLB fill, accessed bits, page fault, TLB-miss
count and event as any fetch), then the code kept at (EIP, physical address) is live again
without a decode, a compile or a registration. Only where nothing is kept is the instruction
fetched, decoded and compiled. Two address spaces running the same physical code (a kernel
mapped in every process) share it; another mapping at the same EIP finds other code.

Self-modifying code: each kept entry is registered once, per byte, in ``code_pages`` (physical
page -> {byte address: {(tag, eip, pa)}}); a write there drops the kept entry, and the live one
when it is that same object (another address space may run other code at that EIP). Entries
that are only live (an instruction whose fetch window crosses a page) register as
``(tag, eip, None)`` and a write drops them from the live cache.

Measured (``benchmarks/bench_speed.py --guests ctxswitch``, a context switch, hence a CR3
load, every 120 instructions): the figures are in the README ("How it works").
"""

from __future__ import annotations

from vmkit.errors import UnsupportedInstruction
from vmkit.isa import semantics as sem
from vmkit.isa.decode import DECODER, Insn
from vmkit.isa.faults import Fault
from vmkit.machine.mmu import CR0_PG

__all__ = ["CodeCacheMixin", "KEPT_LIMIT"]

#: an EIP at most this far into its page has its whole 15-byte fetch window in that page
_WINDOW_LAST = 0x1000 - 15
#: kept entries per store before everything is dropped (a guest rewriting code in ever new
#: places, or a long multi-VM run): the guests of the kit keep a few thousand
KEPT_LIMIT = 1 << 15


class CodeCacheMixin:
    """Live and kept compiled code for :class:`~vmkit.machine.machine.Machine`."""

    def _init_code_cache(self) -> None:
        self._icache_sup: dict[int, object] = {}
        self._icache_usr: dict[int, object] = {}
        self._bcache_sup: dict[int, tuple] = {}
        self._bcache_usr: dict[int, tuple] = {}
        self._istore_sup: dict[tuple[int, int], object] = {}
        self._istore_usr: dict[tuple[int, int], object] = {}
        self._bstore_sup: dict[tuple[int, int], tuple] = {}
        self._bstore_usr: dict[tuple[int, int], tuple] = {}
        #: tag -> (kept, live): a registration in code_pages names its pair by this tag
        self._code_sets = ((self._istore_sup, self._icache_sup),
                           (self._istore_usr, self._icache_usr),
                           (self._bstore_sup, self._bcache_sup),
                           (self._bstore_usr, self._bcache_usr))
        self._icache = self._icache_sup
        self._bcache = self._bcache_sup

    # ---- fetching and compiling -----------------------------------------------------------
    def fetch_decode(self, eip: int, pa: int | None = None) -> Insn | None:
        """Fetch up to 15 bytes at linear ``eip`` (with fetch permission) and decode. ``pa``:
        :meth:`code_address` of ``eip``, just found (the window lies in its page): the one
        translation is a TLB hit then, counted as such without being done again."""
        if pa is not None:
            if self.cpu.cr0 & CR0_PG or self.nested is not None:
                self.tlb_hits += 1
            return DECODER.decode(eip, self.phys_read(pa, 15, "fetch"))
        window = bytearray()
        user = self.cpu.cpl == 3
        paging = self.cpu.cr0 & CR0_PG or self.nested is not None
        fault = None
        a = eip
        while len(window) < 15:
            try:
                pa = self.translate(a, False, user, fetch=True) if paging else a
            except Fault as f:
                fault = f
                break
            take = min(15 - len(window), 0x1000 - (a & 0xFFF))
            window += self.phys_read(pa, take, "fetch")
            a = (a + take) & 0xFFFFFFFF
        insn = DECODER.decode(eip, bytes(window))
        if fault is not None and (insn is None or insn.size > len(window) - 0):
            raise fault
        return insn

    def code_address(self, eip: int) -> int | None:
        """The physical address of ``eip`` as a fetch translates it (TLB, page walk, faults
        as any fetch), or None when its fetch window crosses a page (such code is not kept:
        the fetch of the next page may fault or not, :meth:`fetch_decode`)."""
        if eip & 0xFFF > _WINDOW_LAST:
            return None
        if self.cpu.cr0 & CR0_PG or self.nested is not None:
            return self.translate(eip, False, self.cpu.cpl == 3, True)
        return eip

    def _compile(self, eip: int, pa=-1):
        """The compiled instruction at ``eip`` in the current live icache: the kept one at its
        physical address, else decoded and compiled (and kept). ``pa``: what
        :meth:`code_address` gave for ``eip`` just before (the caller's, in the same mode),
        so that it is not translated again: each translation it spares counts its TLB hit,
        as the translation would."""
        tag = 1 if self._icache is self._icache_usr else 0
        if pa == -1:
            pa = self.code_address(eip)
        elif pa is not None and (self.cpu.cr0 & CR0_PG or self.nested is not None):
            self.tlb_hits += 1      # code_address again: a TLB hit
        if pa is not None:
            fn = self._code_sets[tag][0].get((eip, pa))
            if fn is not None:
                self._icache[eip] = fn
                return fn
        insn = self.fetch_decode(eip, pa)
        if insn is None or insn.id == 0:
            raise Fault(6, detail=f"undefined or unsupported encoding at {eip:#010x}"
                        + (f" ({insn.text})" if insn else ""))
        fn = self._hook_intercept(insn) if self._hook_intercept is not None else None
        if fn is None:
            fn = sem.compile_insn(insn, self.compile_globals)
        if isinstance(fn, str):
            raise UnsupportedInstruction(insn.mnemonic, eip, fn)
        try:
            fn.size = insn.size     # for the block cache's own registration
        except AttributeError:
            pass
        self._icache[eip] = fn
        self._keep(tag, eip, pa, fn, insn.size)
        return fn

    def _keep(self, tag: int, eip: int, pa: int | None, obj, size: int) -> None:
        """Register live entry ``obj`` at ``eip`` (tag: which pair) for self-modifying code,
        and keep it at (eip, pa) when ``pa`` is known (its bytes then lie in pa's page)."""
        if pa is None:
            self._register(tag, eip, size)
            return
        kept = self._code_sets[tag][0]
        if len(kept) >= KEPT_LIMIT:
            live = self._code_sets[tag][1]
            self.flush_icache()
            live[eip] = obj
        kept[(eip, pa)] = obj
        self._note_bytes((tag, eip, pa), pa, size)

    def _note_bytes(self, entry: tuple, pa: int, n: int) -> None:
        """Register ``entry`` under each of the ``n`` bytes at physical ``pa`` (one page) in
        ``code_pages``, where a write to them finds it."""
        page = self.code_pages.get(pa >> 12)
        if page is None:
            page = self.code_pages[pa >> 12] = {}
        for p in range(pa, pa + n):
            at = page.get(p)
            if at is None:
                page[p] = {entry}
            else:
                at.add(entry)

    def _register(self, tag: int, eip: int, size: int) -> None:
        """Register a live-only entry (its bytes may span two pages: each translated, as the
        fetch just did) for self-modifying code."""
        paging = self.cpu.cr0 & CR0_PG or self.nested is not None
        user = self.cpu.cpl == 3
        entry = (tag, eip, None)
        k = 0
        while k < size:
            la = (eip + k) & 0xFFFFFFFF
            run = min(size - k, 0x1000 - (la & 0xFFF))
            pa = self.translate(la, False, user) if paging else la
            self._note_bytes(entry, pa, run)
            k += run

    # ---- invalidation ---------------------------------------------------------------------
    def _smc(self, pa: int, n: int) -> None:
        """A write hit a page holding compiled code: drop the code it overlaps, kept and live
        (and tell the monitor watching the page, if any: ``code_watch``)."""
        watch = self.code_watch
        if watch:
            for p in {pa >> 12, (pa + n - 1) >> 12}:
                cb = watch.get(p)
                if cb is not None:
                    cb(pa, n)
        for a in range(pa, pa + n):
            page = self.code_pages.get(a >> 12)
            if not page:
                continue
            keys = page.pop(a, None)
            if keys:
                self.smc_gen += 1
                self._drop_code(keys)
                if not page and a >> 12 not in watch:
                    del self.code_pages[a >> 12]

    def _drop_code(self, keys) -> None:
        """Drop the compiled code registered under ``keys`` (one byte's entries of
        ``code_pages``: (tag, eip, physical address or None)), kept and live; a live entry
        only if it is the kept object (another address space may have bound its own)."""
        sets = self._code_sets
        for tag, eip, at in keys:
            kept, live = sets[tag]
            if at is None:
                live.pop(eip, None)
                continue
            obj = kept.pop((eip, at), None)
            if obj is not None and live.get(eip) is obj:
                del live[eip]

    def drop_page_code(self, page: int) -> None:
        """Every compiled instruction and block whose bytes lie on physical ``page`` goes,
        kept and live (its memory was replaced: a snapshot restored). A monitor's watch of
        the page stays, uncalled, as ``flush_icache`` leaves it."""
        at_page = self.code_pages.get(page)
        if not at_page:
            return
        for keys in at_page.values():
            self._drop_code(keys)
        at_page.clear()
        self.smc_gen += 1
        if page not in self.code_watch:
            del self.code_pages[page]

    def flush_icache(self) -> None:
        """Forget every compiled instruction and block, kept ones too (a monitor changed what
        it intercepts, paging was switched on or off)."""
        for kept, live in self._code_sets:
            kept.clear()
            live.clear()
        self.code_pages.clear()
        for p in self.code_watch:   # a monitor's translations outlive the machine's icache
            self.code_pages[p] = {}

    def drop_live_code(self) -> None:
        """The whole TLB went (a CR3 load): no live code, every fetch translates again; the
        kept code stays (module text)."""
        for _, live in self._code_sets:
            live.clear()

    def _flush_icache_page(self, vpn: int) -> None:
        """INVLPG of page ``vpn``: the live code fetched through it goes (the kept stays)."""
        lo = vpn << 12
        for _, live in self._code_sets:
            for eip in [e for e in live if lo - 15 < e < lo + 0x1000]:
                del live[eip]
