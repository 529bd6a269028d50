"""Scheduling several VMs on one CPU, on machine time.

A multi-VM monitor (``TrapAndEmulate``, ``BinaryTranslation``, ``HardwareAssisted``) asks a
*scheduler* which VM runs next. The interface is small:

``pick(vms, now) -> index``
    the VM to run from machine time ``now`` on (``vms`` is the monitor's list of VMs; a VM with
    a ``result`` has stopped and must not be picked; at least one is running);
``charge(vm, cycles)``
    the VM that just ran used ``cycles`` of machine time;
``quantum``
    machine cycles a VM runs before the monitor asks ``pick`` again (its time slice).

**Machine time** is the total of the cost model across all VMs (``sum(monitor.cycles.values())``,
DESIGN.md "Two clocks"): direct execution, traps, emulation, VM exits, translations and world
switches all advance it. The monitor converts the cycles left in a slice into an instruction
budget (cycles / the ``native`` cost: an upper bound, since every instruction costs at least
that), runs the guest, and asks again at the next entry into the VMM, so a slice may overrun by
the cost of one VMM entry, as a real timer interrupt arrives only between instructions. (Direct
execution runs in chunks of at most a quarter slice, since its page walks are priced too; a trap
that the VMM handles without leaving the guest's run checks the slice as well.)

Policies
--------
``RoundRobin(quantum)``
    every running VM in turn, ``quantum`` cycles each.
``CreditScheduler(weights, quantum, period)``
    after Xen's credit scheduler (Xen 3.0 onwards, written by Emmanuel Ackaouy at XenSource:
    ``xen/common/sched/credit.c`` in Xen's source, 30 ms slices, default weight 256; described
    by L. Cherkasova, D. Gupta, A. Vahdat, "Comparison of the three CPU schedulers in Xen",
    SIGMETRICS Performance Evaluation Review 35(2), 2007; the Xen wiki page "Credit
    Scheduler"). Each VM has a *weight*. At the start of every accounting *period*
    (Xen: 30 ms; here ``period`` machine cycles, by default one quantum per running VM) each
    running VM earns credits in proportion to its weight (``period * w / sum of running
    weights``); the running VM is debited the machine cycles it uses. A VM with credit left is
    *UNDER*, one without is *OVER*; the scheduler picks the next UNDER VM round robin, and only
    when none is left an OVER one (work-conserving, as Xen without a cap), and it starts a new
    period when every running VM is OVER. Credits are capped at one period's worth, as Xen
    caps an idle VM's credit, so a VM cannot hoard. Simplifications: one CPU, no BOOST priority
    for waking VMs, no caps, no 10 ms accounting tick (accounting happens at every slice end).

Timer clocks
------------
A VM's timer counts *guest time* (its own instructions) unless its image was built with
``guests.build(name, timer_clock="machine")``: then, and only for that VM, the monitor brings
the VM's clock up to machine time at every entry into the VMM (``_sync_machine_timer``), so
descheduled time and the VMM's work count and the guest sees sharing as slowdown and jitter.
The monitors' ``machine_timer=True`` does the same for every VM, whatever its image says
(``monitor.timer_clocks`` lists each VM's clock; ``monitor.machine_timer`` is true when any VM
is on machine time, and then every VM's delivered ticks are logged in ``vm.tick_steps``).
``Native`` ignores ``timer_clock`` (decided so that it stays the reference): one guest, no VMM
and no other VM, so there is no descheduled time to show, and machine time would differ from
the guest's own only by the price of its page walks and interrupts; an image with
``"machine"`` runs under ``Native`` exactly as with ``"guest"``.

Without ``scheduler=`` a monitor keeps its historical behaviour: round robin every ``slice``
*host instructions* (``DEFAULT_SLICE``), which the existing demonstrations and tests rely on.
"""

from __future__ import annotations

import math
import operator

from vmkit.errors import VmkitError

__all__ = ["Scheduler", "RoundRobin", "CreditScheduler", "make_scheduler", "timer_clocks",
           "DEFAULT_QUANTUM"]

DEFAULT_QUANTUM = 30_000
"""Machine cycles per time slice. Xen's credit scheduler runs a VM for 30 ms; the kit's guests
are tiny, so 30 000 cycles (about 30 µs at 1 GHz, six world switches' worth with p4-2006's
5 000-cycle switch) interleaves the kit's guests many times; the price is that switching takes
about 13 % of machine time while every VM is busy (benchmarks/bench_many_vms.py), where Xen's
30 ms slices make it negligible."""


class Scheduler:
    """Base class: round robin. Subclasses override ``pick`` and ``charge``."""

    name = "scheduler"

    def __init__(self, quantum: int = DEFAULT_QUANTUM):
        if not isinstance(quantum, (int, float)) or isinstance(quantum, bool) or quantum <= 0:
            raise VmkitError(f"quantum must be a positive number of machine cycles, got "
                             f"{quantum!r}")
        self.quantum = quantum
        self.last = -1
        self.used: list[float] = []

    def bind(self, n: int) -> None:
        """Called by the monitor with the number of VMs, before the first ``pick``."""
        self.last = -1
        self.used = [0.0] * n

    def _next_running(self, vms, ok=lambda i: True):
        n = len(vms)
        for k in range(1, n + 1):
            i = (self.last + k) % n
            if vms[i].result is None and ok(i):
                return i
        return None

    def pick(self, vms, now: float) -> int:
        i = self._next_running(vms)
        if i is None:
            raise VmkitError("pick() needs at least one running VM")
        self.last = i
        return i

    def charge(self, vm, cycles: float) -> None:
        self.used[vm.index] += cycles

    def state(self) -> dict:
        return {"last": self.last, "used": list(self.used)}

    def set_state(self, st: dict) -> None:
        self.last, self.used = st["last"], list(st["used"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(quantum={self.quantum})"


class RoundRobin(Scheduler):
    """Every running VM in turn, ``quantum`` machine cycles each."""

    name = "round-robin"


class CreditScheduler(Scheduler):
    """Proportional share after Xen's credit scheduler (see the module text)."""

    name = "credit"

    def __init__(self, weights=None, quantum: int = DEFAULT_QUANTUM, period: float | None = None):
        super().__init__(quantum)
        if weights is not None:
            weights = list(weights)
            if not weights or any(not isinstance(w, (int, float)) or isinstance(w, bool)
                                  or w <= 0 for w in weights):
                raise VmkitError(f"weights must be positive numbers, got {weights!r}")
        if period is not None and (not isinstance(period, (int, float)) or period <= 0):
            raise VmkitError(f"period must be a positive number of machine cycles, got "
                             f"{period!r}")
        self.weights = weights
        self.period = period
        self.credits: list[float] = []

    def bind(self, n: int) -> None:
        super().bind(n)
        if self.weights is None:
            self.weights = [1] * n
        if len(self.weights) != n:
            raise VmkitError(f"{len(self.weights)} weights for {n} VMs")
        self.credits = [0.0] * n

    def _refill(self, vms) -> None:
        running = [i for i, vm in enumerate(vms) if vm.result is None]
        period = self.period or self.quantum * len(running)
        total = sum(self.weights[i] for i in running)
        for i in running:
            share = period * self.weights[i] / total
            self.credits[i] = min(self.credits[i] + share, share)   # capped: no hoarding

    def pick(self, vms, now: float) -> int:
        i = self._next_running(vms, lambda i: self.credits[i] > 0)   # UNDER first
        if i is None:
            self._refill(vms)                                        # a new period
            i = self._next_running(vms, lambda i: self.credits[i] > 0)
        if i is None:
            i = self._next_running(vms)                              # OVER: work-conserving
        if i is None:
            raise VmkitError("pick() needs at least one running VM")
        self.last = i
        return i

    def charge(self, vm, cycles: float) -> None:
        super().charge(vm, cycles)
        self.credits[vm.index] -= cycles

    def state(self) -> dict:
        return {**super().state(), "credits": list(self.credits)}

    def set_state(self, st: dict) -> None:
        super().set_state(st)
        self.credits = list(st["credits"])

    def __repr__(self) -> str:
        return f"CreditScheduler(weights={self.weights}, quantum={self.quantum})"


def make_scheduler(scheduler, weights=None, quantum=None) -> Scheduler | None:
    """The monitor's ``scheduler=`` argument as a Scheduler (None: the historical
    instruction-count round robin). A Scheduler object is copied: one object may serve many
    monitors."""
    import copy
    if scheduler is None:
        if weights is None and quantum is None:
            return None
        scheduler = "credit" if weights is not None else "round-robin"
    kw = {} if quantum is None else {"quantum": quantum}
    if isinstance(scheduler, Scheduler):
        if weights is not None or quantum is not None:
            raise VmkitError("give weights= and quantum= to the scheduler object, not both")
        return copy.deepcopy(scheduler)
    if scheduler == "round-robin":
        if weights is not None:
            raise VmkitError("weights= needs scheduler='credit'")
        return RoundRobin(**kw)
    if scheduler == "credit":
        return CreditScheduler(weights, **kw)
    raise VmkitError(f"scheduler must be 'round-robin', 'credit' or a Scheduler object, got "
                     f"{scheduler!r}")


# ---- the monitors' side (TrapAndEmulate, BinaryTranslation, HardwareAssisted) -------------------
def timer_clocks(images, machine_timer: bool = False) -> list[str]:
    """The clock each VM's timer runs on, ``"guest"`` or ``"machine"``: the image's
    ``timer_clock`` (``guests.build(..., timer_clock="machine")``), or ``"machine"`` for every
    VM when the monitor was given ``machine_timer=True`` (the monitor-wide switch wins)."""
    clocks = []
    for i, img in enumerate(images):
        c = getattr(img, "timer_clock", "guest")     # a guest's name: built with the default
        if c not in ("guest", "machine"):
            raise VmkitError(f"VM {i}: timer_clock must be 'guest' or 'machine', got {c!r}")
        clocks.append("machine" if machine_timer else c)
    return clocks


def _init_scheduling(mon, images, scheduler, weights, quantum, machine_timer) -> None:
    """``images``: the monitor's guest images (or, as before, just their number)."""
    n = images if isinstance(images, int) else len(images)
    mon.scheduler = make_scheduler(scheduler, weights, quantum)
    if mon.scheduler is not None:
        mon.scheduler.bind(n)
    if not isinstance(machine_timer, bool):
        raise VmkitError(f"machine_timer must be True or False, got {machine_timer!r}")
    #: per VM, the clock its timer runs on ("guest" or "machine"; see timer_clocks)
    mon.timer_clocks = (timer_clocks(images, machine_timer) if not isinstance(images, int)
                        else ["machine" if machine_timer else "guest"] * n)
    #: True when any VM's timer runs on machine time (then every VM's ticks are logged in
    #: ``vm.tick_steps``; only those VMs' clocks are moved to machine time)
    mon.machine_timer = "machine" in mon.timer_clocks
    mon._slice_start = None     # machine time at which the running VM's slice began
    #: every world switch as (machine time it began, from VM, to VM): the trace keeps only
    #: its last events, this keeps them all (for vmkit.viz.vmtimeline)
    mon.switch_log = []


def machine_time(mon) -> float:
    """Machine time: the cost model's cycles so far, all VMs together."""
    # the sum of ``costs.price(counts).values()``, the same products added in the same order
    # (so the same float), without building the priced Counter: the scheduler asks at every
    # run chunk and VMM entry, and pricing was a twentieth of notebook 09's multi-VM cells.
    # The cost of each category is read once per cost model (``_PRICES``); a category with
    # no events adds its ``0 * cost``, a zero, which changes no sum of finite costs, so the
    # products are summed as they come (``map``) instead of filtered: the same float. A sum
    # that comes out 0 (nothing counted yet: the filtered sum is the int 0) and a model with
    # a cost that is not finite (0 * inf is nan) are priced as ``CostModel.price`` does.
    counts = mon.event_counts()
    costs = mon.costs
    hit = _PRICES.get(id(costs))
    prices = hit[1] if hit is not None and hit[0] is costs else _price_table(costs)
    if prices is not None:
        try:
            t = sum(map(_mul, counts.values(), map(prices.__getitem__, counts)))
        except KeyError:    # a category the model does not have: its error, below
            t = 0
        if t:
            return t
    return sum([n * costs.cost(k) for k, n in counts.items() if n])


_mul = operator.mul
#: id of a cost model -> (the model, its cost per category; None when a cost is not a finite
#: number), for machine_time. A CostModel is frozen; the model is kept, so its id stays its own.
_PRICES: dict = {}


def _price_table(costs) -> dict | None:
    try:
        table = {k: getattr(costs, k) for k in costs.CATEGORIES}
    except AttributeError:
        table = None
    if table is not None and not all(isinstance(v, (int, float)) and math.isfinite(v)
                                     for v in table.values()):
        table = None
    if len(_PRICES) >= 64:
        _PRICES.clear()
    _PRICES[id(costs)] = (costs, table)
    return table


def _cycle_budget(mon, now=None) -> int:
    """Instructions the running VM may retire before its slice (in machine cycles) ends: an
    upper bound, as every instruction costs at least ``native`` cycles. ``now``: the machine
    time, when the caller has it (nothing counted since)."""
    left = mon._slice_end - (machine_time(mon) if now is None else now)
    n = max(1, int(left / max(mon.costs.native, 1e-9)))
    # page walks and other costs inside a direct-execution run are not known in advance: run
    # in chunks of at most a quarter slice and look at the machine's time again
    return min(n, max(1, int(mon.scheduler.quantum / 4 / max(mon.costs.native, 1e-9))))


def _schedule_machine_time(mon, preempted) -> float:
    """Scheduling on machine time: ask the scheduler at the end of each slice (or when the
    running VM stops), charge the slice's cycles to the VM that ran, world-switch if needed.
    Returns the machine time after all that (what ``machine_time`` would say)."""
    vms, sch = mon.vms, mon.scheduler
    cur = vms[mon.current]
    now = machine_time(mon)
    if mon._slice_start is not None and cur.result is None and now < mon._slice_end:
        return now
    if mon._slice_start is not None:
        sch.charge(cur, now - mon._slice_start)
        if cur.result is None:
            preempted(cur)
    idx = sch.pick(vms, now)
    if idx != mon.current:
        mon._world_switch(idx)
    mon._slice_start = now = machine_time(mon)
    mon._slice_end = now + sch.quantum
    return now


def _sync_machine_timer(mon, now=None) -> None:
    """If the running VM's timer runs on machine time (``machine_timer=True``, or its image
    built with ``timer_clock="machine"``), its clock is brought up to the machine's (in
    native-instruction units) at every entry into the VMM, so the time it spent descheduled,
    and the VMM's own work, count too. A VM whose timer is on guest time is left alone.
    ``now``: the machine time, when the caller has it (nothing counted since)."""
    if mon.timer_clocks[mon.current] != "machine":
        return
    m = mon._host
    t = int((machine_time(mon) if now is None else now) / max(mon.costs.native, 1e-9))
    if t > m.clock:
        m.clock = t


def _sched_state(mon) -> dict:
    return {"start": mon._slice_start, "switches": len(mon.switch_log),
            "sched": mon.scheduler.state() if mon.scheduler is not None else None}


def _set_sched_state(mon, st: dict) -> None:
    mon._slice_start = st["start"]
    del mon.switch_log[st["switches"]:]
    if mon.scheduler is not None:
        mon.scheduler.set_state(st["sched"])
