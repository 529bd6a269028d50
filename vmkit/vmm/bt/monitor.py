"""The binary-translation monitor (see the package text)."""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import replace

from vmkit.errors import VmkitError
from vmkit.isa.decode import Insn
from vmkit.machine.machine import RunResult
from vmkit.vmm.base import MonitorSnapshot
from vmkit.vmm.bt.engine import run_kernel
from vmkit.vmm.bt.handlers import _BT_HANDLERS
from vmkit.vmm.bt.static import static_translate
from vmkit.vmm.bt.tcache import (DEFAULT_TC_SIZE, Block, EvictionPolicy, FlushWhenFull, flush,
                                 on_code_write)
from vmkit.vmm.bt.translator import DEFAULT_THRESHOLD, fetch, guest_text
from vmkit.vmm.deprivileged import ops as core
from vmkit.vmm.deprivileged.handlers import _DEFAULT_HANDLERS
from vmkit.vmm.deprivileged.monitor import Deprivileged
from vmkit.vmm.deprivileged.segments import load_real_cs
from vmkit.vmm.deprivileged.vcpu import TEVM
from vmkit.vmm.ops import run_directly


class BinaryTranslation(Deprivileged):
    """Binary translation of the guest kernel; user code runs directly (see the module text).

    ``BinaryTranslation(img, ..., threshold=DEFAULT_THRESHOLD, tc_size=DEFAULT_TC_SIZE,
    policy=FlushWhenFull(), static=False, adapt_after=4, slice=..., costs=...)``:

    * ``threshold``: executions of a unit before it is translated (1 = on first execution;
      a huge number = interpret only);
    * ``tc_size``: translated blocks the cache holds; ``policy`` decides what goes when it is
      full (an :class:`EvictionPolicy`: :class:`FlushWhenFull`, :class:`LRU`, :class:`FIFO`);
    * ``static``: also translate the kernel's text ahead of time by a linear sweep (a contrast:
      see the module text and ``static_miss_log``);
    * ``adapt_after``: hidden page faults of one translated instruction before it is
      retranslated as a callout (0 turns adaptation off).
    * ``scheduler``, ``weights``, ``quantum``, ``machine_timer``: several VMs scheduled on
      machine time, as for ``TrapAndEmulate`` (:mod:`vmkit.vmm.sched`);
    * ``paging`` (or ``shadow``): the shadow paging mode (:mod:`vmkit.vmm.paging`): ``"vtlb"``
      by default, or ``"traced"`` (write-protected guest page tables, as VMware's; a store that
      keeps writing them is adapted into an in-TC sequence).

    ``emulate`` is the handler table for callouts and for sensitive instructions met by the
    interpreter (trap-and-emulate's, plus ``int``, ``lar`` ``lsl`` ``verr`` ``verw`` and
    ``lcall``); replacing an entry changes only this monitor. ``stats`` adds ``tc_lookups``,
    ``tc_hits``, ``tc_misses``, ``translations``, ``translated_instructions``,
    ``tc_invalidations``, ``tc_evictions``, ``tc_flushes``, ``tc_blocks``, ``interpreted``,
    ``chained``, ``callouts``, ``adaptations``, ``static_translations``, ``static_misses``.
    """

    name = "bt"
    title = "binary translation (kernel translated, user code direct)"
    emulate: dict = {**_DEFAULT_HANDLERS, **_BT_HANDLERS}
    adapt_after = 4

    def __init__(self, *images, costs=None, trace=None, slice: int | None = None,
                 threshold: int = DEFAULT_THRESHOLD, tc_size: int = DEFAULT_TC_SIZE,
                 policy: EvictionPolicy | None = None, static: bool = False,
                 adapt_after: int | None = None, scheduler=None, weights=None, quantum=None,
                 machine_timer: bool = False, paging: str | None = None,
                 shadow: str | None = None):
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
            raise VmkitError(f"threshold must be a positive number of executions, got "
                             f"{threshold!r}")
        if not isinstance(tc_size, int) or isinstance(tc_size, bool) or tc_size < 1:
            raise VmkitError(f"tc_size must be a positive number of blocks, got {tc_size!r}")
        if policy is None:
            policy = FlushWhenFull()
        elif isinstance(policy, type) and issubclass(policy, EvictionPolicy):
            policy = policy()
        if not isinstance(policy, EvictionPolicy):
            raise VmkitError(f"policy must be an EvictionPolicy (FlushWhenFull(), LRU(), "
                             f"FIFO()), got {type(policy).__name__}")
        policy = copy.deepcopy(policy)      # its own state: one object may serve many monitors
        if adapt_after is not None:
            if not isinstance(adapt_after, int) or isinstance(adapt_after, bool) \
                    or adapt_after < 0:
                raise VmkitError(f"adapt_after must be a non-negative number of traps, got "
                                 f"{adapt_after!r}")
            self.adapt_after = adapt_after
        self.threshold = threshold
        self.tc_size = tc_size
        self.policy = policy
        # the policy's ``used``, or None when it keeps no order (a lookup that hits calls it)
        self._policy_used = None if type(policy).used is EvictionPolicy.used else policy.used
        policy.clear()
        self.static = bool(static)
        self._reset_tc_state()
        self._zero_counters()
        kw = {} if slice is None else {"slice": slice}
        kw.update(scheduler=scheduler, weights=weights, quantum=quantum,
                  machine_timer=machine_timer, paging=paging, shadow=shadow)
        super().__init__(*images, costs=costs, trace=trace, **kw)

    def _reset_tc_state(self) -> None:
        self._tc: dict = {}               # key -> Block
        self._dynamic = 0                 # blocks subject to the cache size (not static)
        self._counts: dict = {}           # key -> executions seen by the interpreter
        self._code_bytes: dict = {}       # host-physical byte -> [Block]
        self._page_refs: Counter = Counter()   # host-physical page -> watched bytes
        self._traps: Counter = Counter()  # instruction key -> hidden faults from translated code
        self._adapted: set = set()        # instruction keys translated as MMU callouts
        self._innocent: dict = {}         # adapted instruction key -> runs that would not trap
        self._soft: dict = {}             # adapted instruction -> its software-MMU function
        self._would_trap = False          # set by an adapted instruction's run (callouts._probe)
        self._inline_code: dict = {}
        self._interp: dict = {}           # decoded instruction -> how the interpreter runs it
        self._stale = [False]
        self._resume = None
        self._stepwise = False            # a careful run for breakpoints (engine.run_kernel)
        self._link_from: Block | None = None

    def _zero_counters(self) -> None:
        self.tc_lookups = self.tc_hits = self.tc_misses = 0
        self.translations = self.translated_instructions = 0
        self.tc_invalidations = self.tc_evictions = self.tc_flushes = 0
        self.interpreted = self.chained = self.callouts = self.adaptations = 0
        self.indirect_lookups = 0
        self.static_translations = self.static_misses = 0
        self._engine_steps = 0            # guest instructions the VMM ran (interpreted, callouts)
        self.static_miss_log: Counter = Counter()
        self.static_sweep: list = []       # per VM: what the linear sweep decoded
        self._text_ranges: dict = {}
        self._sweep_starts: dict = {}
        self._static_dropped: dict = {}     # VM -> [(start, end, why)] of dropped static blocks

    def _slice_clock(self) -> int:
        """Slices count host instructions plus the guest instructions the VMM ran itself."""
        return self._host.steps + self._engine_steps

    def _load_real_cs(self, vm: TEVM, selector: int, vring: int, cause: str, d=None) -> None:
        """As trap-and-emulate, and when the guest enters its kernel (a reflected interrupt,
        exception or system call) the real CPU stops running guest code directly: the
        translator takes over."""
        was = vm._vcpu.cpl
        load_real_cs(self, vm, selector, vring, cause, d)     # the core's
        if vring == 0 and was != 0:
            self._host.request_exit()

    def _fetch_insn(self, vm: TEVM, eip: int) -> Insn | None:
        """Kernel code is never fetched by the real CPU under BT: read it through the guest's
        page tables."""
        if vm.vcpu.cpl == 0:
            return fetch(self, vm, eip)
        return super()._fetch_insn(vm, eip)

    def _text_at_eip(self, vm: TEVM | None = None) -> str:
        if vm is None or vm.current:
            v = vm or self.vms[self.current]
            if v.vcpu.cpl == 0:
                return guest_text(self, v, self._host.cpu.eip)
        return super()._text_at_eip(vm)

    def flush_tc(self, reason: str = "flush") -> None:
        """Drop every dynamic translation (QEMU's tb_flush); static ones stay."""
        flush(self, reason)

    def _on_code_write(self, pa: int, n: int) -> None:
        """Machine.code_watch: a store into a page holding translations."""
        on_code_write(self, pa, n)

    def blocks(self) -> list[Block]:
        """The translations in the cache now (each with ``source`` and ``listing()``)."""
        return sorted(self._tc.values(), key=lambda b: (b.vm, b.eip))

    def block_at(self, address: int, vm: int = 0) -> Block | None:
        """The translation starting at guest-linear ``address``, if one is cached."""
        for b in self._tc.values():
            if b.eip == address and b.vm == vm:
                return b
        return None

    # ---- statistics, cycles, snapshots ---------------------------------------------------------
    #: stats: the core's, then the translator's counters (vmkit.vmm.state.report)
    stats_fields = ("tc_lookups", "tc_hits", "tc_misses", "translations",
                    "translated_instructions", "tc_invalidations", "tc_evictions", "tc_flushes",
                    ("tc_blocks", lambda bt: len(bt._tc)), "interpreted", "chained",
                    "indirect_lookups", "callouts", "adaptations", "static_translations",
                    "static_misses")

    # the translator's counters, saved and restored with the monitor's state (world.py)
    monitor_state = _COUNTERS = (
        "tc_lookups", "tc_hits", "tc_misses", "translations", "translated_instructions",
        "tc_invalidations", "tc_evictions", "tc_flushes", "interpreted", "chained",
        "indirect_lookups", "callouts", "adaptations", "static_translations", "static_misses",
        "_engine_steps")

    def restore(self, snap: MonitorSnapshot) -> None:
        """Put every VM back; the translation cache is emptied (memory may differ now) and
        refilled as the guest runs again."""
        super().restore(snap)
        m = self._host
        for p in list(m.code_watch):
            m.code_watch.pop(p, None)
        for blk in list(self._tc.values()):
            blk.valid = False
        self.policy.clear()
        self._reset_tc_state()
        g = m.compile_globals
        g["_bt_stale"] = self._stale
        if self.static:
            for vm in self.vms:
                static_translate(self, vm)
        # after refilling: the counters are those of the snapshot, not of this refill
        declared = snap.state["declared"]
        self._restore_declared({k: declared[k] for k in self._COUNTERS})


# ---- the monitor protocol (vmkit.vmm.ops): the ring-1 core's, with the translator ------------
def setup(bt) -> None:
    """As the ring-1 core, plus what translated code reads from the machine's namespace, and
    the static translation of the kernel's text when asked."""
    core.setup(bt)
    g = bt._host.compile_globals
    g["_bt_stale"] = bt._stale
    for vm in bt.vms:
        g[f"_bt_vc{vm.index}"] = vm.vcpu
        g[f"_bt_vm{vm.index}"] = vm
    if bt.static:
        for vm in bt.vms:
            static_translate(bt, vm)


def run_guest(bt, vm: TEVM, budget: int, until, single: bool) -> RunResult:
    """User code runs directly, as under trap-and-emulate; kernel code (virtual CPL 0) runs in
    the translator. When one stops only because the guest changed rings (a system call into
    its kernel, the kernel's return to user code) and the run loop would have nothing else to
    do (``Deprivileged._go_on``), the other goes on at once."""
    vc = vm._vcpu
    if until is not None or single:
        if vc.cpl != 0:
            return run_directly(bt, vm, budget, until, single)
        return run_kernel(bt, vm, budget, until, single)
    while True:
        g0 = vm.steps
        if vc.cpl != 0:
            r = run_directly(bt, vm, budget, None, False)
        else:
            r = run_kernel(bt, vm, budget, None, False)
        budget -= vm.steps - g0
        if r.reason != "vmm" or not bt._go_on(vm, budget):
            return r


BinaryTranslation.ops = replace(core.DEPRIVILEGED_OPS, setup=setup, run_guest=run_guest)
