"""Block mode of the machine's run loop: the block cache and the burst that runs blocks
(mixed into :class:`vmkit.machine.machine.Machine`; the translator is
:mod:`vmkit.machine.blocks`, its clean-ups :mod:`vmkit.machine.blockopt`).

A block-cache entry is a tuple whose second element says what it is: ``n > 0`` a block of
``n`` instructions (``blocks.translate``), ``0`` an instruction that runs alone, ``-1`` an
address still cold (its counter in the third element), ``-2`` an instruction that needs the
exact clocks at once (it ends the burst as a ``Sync`` would, without the exception).
"""

from __future__ import annotations

import os

from vmkit.errors import VmkitError
from vmkit.isa.faults import Fault, Resched
from vmkit.machine import blocks as blk
from vmkit.machine.mmu import CR0_PG, Sync

__all__ = ["BlockRunMixin", "blocks_default"]

_SINGLE = (None, 0, None, None, None)   # what runs is not a block (for blocks.locate)
#: machine calls that end a burst at once (they raise Sync for exact clocks)
_EXACT = frozenset(("soft_int", "iret", "far_ret", "port_in", "port_out", "rdtsc"))


def blocks_default() -> bool:
    """Block translation on unless the environment says ``VMKIT_BLOCKS=0`` (the switch for
    whole runs, to compare with per-instruction mode)."""
    v = os.environ.get("VMKIT_BLOCKS", "1").strip().lower()
    if v in ("0", "off", "no", "false"):
        return False
    if v in ("1", "on", "yes", "true", ""):
        return True
    raise VmkitError(f"VMKIT_BLOCKS must be 1 or 0 (block translation on or off), got {v!r}")


class BlockRunMixin:
    """``_translate`` and ``_burst_blocks`` for :class:`~vmkit.machine.machine.Machine`."""

    def _translate(self, eip: int):
        """The block-cache entry for ``eip`` in the current mode: the one kept at its physical
        address, else made, kept and registered for self-modifying code: a block (``blocks.translate``), or ``(f, 0, ...)`` for an
        instruction that runs alone, or ``(f, -1, [count])`` while ``eip`` is cold: a block is
        made only once a run has reached ``eip`` ``blocks.HOT`` times (compiling a block costs
        about a millisecond, as much as running a thousand instructions singly)."""
        cache = self._bcache
        tag = 3 if cache is self._bcache_usr else 2
        old = cache.get(eip)
        if old is None:
            # a live miss: the fetch's translation, then the entry kept at that physical
            # address (vmkit.machine.codecache); a cold one whose count ran out counts afresh
            pa = self.code_address(eip)
            if pa is not None:
                b = self._code_sets[tag][0].get((eip, pa))
                if b is not None and (b[1] != -1 or b[2][0] > 0):
                    cache[eip] = b
                    return b
        if old is not None:
            b = blk.translate(self, eip)
            pa = b[7] if b is not None else self.code_address(eip)
        elif eip in blk._MADE_AT:   # made in this process (another machine): bind it now
            b = blk.translate(self, eip, made_only=True, pa=pa)
        else:
            b = None
        if b is None:
            f = self._icache.get(eip) or self._compile(eip, pa)
            if old is None:
                # the count goes on from before the last flush (a CR3 load, a world switch):
                # started afresh at every flush, code that runs between two flushes was never
                # hot and was compiled again an instruction at a time after each one (most of
                # an exit-heavy guest's time under hw, and of notebook 09's multi-VM runs)
                key = (eip, cache is self._bcache_usr)
                heat = self._heat.get(key)
                if heat is None or heat[0] <= 0:
                    if len(self._heat) >= 1 << 16:
                        self._heat.clear()
                    heat = self._heat[key] = [blk.HOT]
                b = (f, -1, heat, None, None)
            else:   # -2: it asks for exact clocks at once (Sync): run it as _run_one would
                names = getattr(getattr(f, "__code__", None), "co_names", ())
                b = (f, -2 if _EXACT.intersection(names) else 0, None, None, None)
            size = getattr(f, "size", None)
            if size is None:
                insn = self.insn_at(eip)
                size = insn.size if insn is not None else 1
        else:
            size = b[5][-1].next - eip
            for a in b[2][1:]:      # instructions inside it start over as cold
                inner = cache.get(a)
                if inner is not None and inner[1] == -1:
                    inner[2][0] = blk.HOT
        cache[eip] = b
        self._keep(tag, eip, pa, b, size)
        return b

    def _burst_blocks(self, budget: int) -> None:
        """``_burst`` in block mode: a block runs when the budget covers one pass of it (a block
        that loops runs as many passes as the budget covers), else one instruction runs. An
        exception from inside a block is located by ``blocks.locate``: EIP goes back to the
        instruction that raised and only the instructions before it count."""
        cpu = self.cpu
        n = 0
        sync = False
        b = _SINGLE
        ticks = self.dev.next_tick
        self.in_burst = True
        try:
            bcache = self._bcache
            bget = bcache.get
            get = self._icache.get
            translate = self._translate
            while n < budget:
                eip = cpu.eip
                b = bget(eip)
                if b is None:
                    b = _SINGLE
                    b = translate(eip)
                k = b[1]
                if k > 0:
                    if k <= budget - n:
                        n += b[0](budget - n)
                        continue
                    b = _SINGLE
                    f = get(eip)
                    if f is None:
                        f = self._compile(eip)
                    f()
                    n += 1
                    continue
                if k == -1:     # cold: count, and make the block when it is hot
                    c = b[2]
                    c[0] -= 1
                    if not c[0]:
                        b = _SINGLE
                        translate(eip)
                        continue
                elif k == -2:   # what the burst would end in (Sync), without the exception
                    b = _SINGLE
                    self.in_burst = False       # self._retire(n), without the call
                    self.steps += n
                    self.clock += n
                    budget -= n + 1
                    n = 0
                    self._run_one()     # with exact clocks (INT n, IRET, I/O ...)
                    if budget <= 0 or not self._go_on(ticks):
                        return
                    # what the run loop would do next is this burst again: go on here
                    self.in_burst = True
                    bcache = self._bcache     # the mode may have changed (CPL, paging)
                    bget = bcache.get
                    get = self._icache.get
                    continue
                b[0]()
                n += 1
        except Resched as ex:
            at = blk.locate(b, ex.__traceback__)
            n += 1 if at is None else at[0] + at[1] + 1
        except Sync as ex:
            n += self._rewind(b, ex)
            sync = True
        except Fault as ex:
            n += self._rewind(b, ex)
            self._retire(n)
            n = 0
            self.take_exception(ex)
        finally:
            self._retire(n)
        if sync:
            self._run_one()

    def _go_on(self, ticks) -> bool:
        """After an instruction run alone inside a burst: would the run loop (``Machine.run``)
        do nothing at this boundary but start the burst again? (no exit asked, no power-off,
        the timer not reprogrammed (``ticks``: its deadline when the burst began), no
        interrupt to deliver, not halted, no single-step trap, no interrupt shadow)"""
        cpu = self.cpu
        dv = self.dev
        if (self.exit_request or dv.poweroff_code is not None or dv.next_tick != ticks
                or cpu.halted or cpu.ef & 0x100 or self.steps < self.irq_inhibit_until
                or not self.blocks):
            return False
        dv.tick(self.clock)     # Machine._tick
        return self.deliverable_irq() is None

    def _rewind(self, b, ex: BaseException) -> int:
        """A block stopped inside by ``ex`` (a fault, or an instruction that needs exact
        clocks): EIP back at that instruction; returns the instructions that retired before
        it (0 when ``ex`` did not come from inside block ``b``)."""
        at = blk.locate(b, ex.__traceback__)
        if at is None:
            return 0
        self.cpu.eip = b[2][at[1]]
        return at[0] + at[1]
