"""A monitor's past: checkpoints within a memory budget, a log of runs, deterministic replay.

A long run leaves a checkpoint after about ``checkpoint_seconds`` (0.1 s) of running
(:meth:`Timeline.stride`, :meth:`Timeline.due`), so going back replays about that long at
most, whatever the guest's speed.

Positions count guest instructions retired (all VMs together) since the timeline was made;
what moved the monitor is logged as *segments* ``[start, n, bps]``: one ``monitor.run(max_steps=...)``
that retired ``n`` instructions, with ``bps`` the breakpoint addresses that were set (None: none,
the run went its full length). Guests are deterministic (guest time drives their timers), so
replaying the log from a checkpoint reaches exactly the state the monitor was in; ``run(j)`` is
a state ``run(k)`` went through for ``j <= k`` (the kit's monitors stop bursts at the budget,
see DESIGN.md "Two clocks"), so any position inside a segment can be reached too. A run that
stopped at a breakpoint right after delivering an exception (0 instructions retired) leaves a
segment of length 0: replaying it (same breakpoint set) delivers the exception again.

Checkpoints are the monitors' own snapshots (``monitor.snapshot()``), kept as they are: a machine
snapshot's memory is copy-on-write at page granularity (``Machine.snapshot``: a 4 KiB page
that did not change since the previous snapshot is the same object), so a checkpoint usually
costs tens of KiB rather than the 4-6 MiB of a full copy; the trace's retained events are
shared the same way, in pieces (``Trace.state``). ``budget`` (bytes, default 64 MiB) bounds
the distinct pages and trace pieces the checkpoints hold plus a few KiB each for the rest
(CPU, devices, TLB); when it is exceeded, checkpoints are thinned where they are densest,
never step 0's nor the newest ``keep_newest`` (the last stops: reverse-continue lands on one
of them with a single restore).
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from vmkit.errors import VmkitError
from vmkit.trace import PIECE_BYTES, Trace

__all__ = ["Timeline", "DEFAULT_BUDGET"]

DEFAULT_BUDGET = 64 << 20
#: how much running a checkpoint may stand for: going back replays at most about this long
#: (a checkpoint costs about 1 ms, so ~1 % of a run; Back stays under 200 ms however slow
#: the guest runs: benchmarks/bench_snapshots.py)
CHECKPOINT_SECONDS = 0.1


class _Checkpoint:
    __slots__ = ("position", "nseg", "snap", "shared", "overhead")

    def __init__(self, position, nseg, snap, shared, overhead):
        self.position, self.nseg, self.snap = position, nseg, snap
        self.shared, self.overhead = shared, overhead


class Timeline:
    """Forward runs, checkpoints and ``goto`` on a monitor (only its public API is used:
    ``run``, ``snapshot``, ``restore``, ``vms[i].machine.breakpoints``)."""

    @property
    def vm(self):
        """The monitor (the attribute's name before it was ``monitor``; kept so that notebooks
        reading ``.vm`` keep working)."""
        return self.monitor

    def __init__(self, monitor, *, budget: int = DEFAULT_BUDGET, keep_newest: int = 3,
                 checkpoint_seconds: float = CHECKPOINT_SECONDS):
        if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
            raise VmkitError(f"budget must be a positive number of bytes, got {budget!r}")
        self.monitor = monitor
        self.budget = budget
        self.keep_newest = keep_newest
        self.checkpoint_seconds = checkpoint_seconds
        self.rate = 0.0                        # instructions a second of the recent runs
        self.position = 0
        self.log: list[list] = []              # [start, n, bps]
        # id -> [object, checkpoints holding it, bytes]: memory pages and trace pieces that
        # checkpoints share, each counted once
        self._held: dict[int, list] = {}
        self._shared_bytes = 0
        self._cps: list[_Checkpoint] = []
        self.diverged = False
        self.restores = 0
        self.replayed = 0                      # instructions re-executed by goto (counter)
        cp = self._make_checkpoint()
        if self._cost_of([cp]) > budget:
            raise VmkitError(f"the checkpoint budget ({budget:,} bytes) is smaller than one "
                             f"snapshot of this monitor ({self._cost_of([cp]):,} bytes)")
        self._cps.append(cp)

    # ---- checkpoints ------------------------------------------------------------------------
    def _make_checkpoint(self) -> _Checkpoint:
        snap = self.monitor.snapshot()
        self._cp_time = time.perf_counter()
        overhead = 2048
        # memory pages and trace pieces, each counted once (by id): a snapshot's 1,024-1,536
        # pages are mostly the one untouched page and pages shared with its neighbours, so
        # the refcounts below see tens of objects, not thousands (dropping the hundreds of
        # checkpoints of a long run at a reverse_continue: 1.5 ms each before, ~50 us now)
        distinct: dict = {}
        for ms in snap.machines:
            distinct.update({id(p): p for p in ms.pages})
            own, pieces = self._trace_parts(ms)
            distinct.update({id(p): p for p in pieces})
            overhead += own + 8192       # CPU, devices, TLB and counters: a few KiB
        held = self._held
        for key, obj in distinct.items():
            e = held.get(key)
            if e is None:
                size = len(obj) if isinstance(obj, bytes) else PIECE_BYTES
                e = held[key] = [obj, 0, size]
                self._shared_bytes += size
            e[1] += 1
        return _Checkpoint(self.position, len(self.log), snap, list(distinct.values()),
                           overhead)

    @staticmethod
    def _trace_parts(ms) -> tuple:
        try:
            return Trace.state_parts(ms.extra["trace"])
        except Exception:
            return 0, ()

    def _cost_of(self, cps) -> int:
        seen, total = {}, 0
        for cp in cps:
            total += cp.overhead
            for o in cp.shared:
                seen[id(o)] = self._held[id(o)][2]
        return total + sum(seen.values())

    def _drop(self, cp: _Checkpoint) -> None:
        self._cps.remove(cp)
        held = self._held
        for o in cp.shared:
            e = held[id(o)]
            e[1] -= 1
            if e[1] == 0:
                del held[id(o)]
                self._shared_bytes -= e[2]

    @property
    def used(self) -> int:
        """Bytes held by the checkpoints (distinct pages plus the estimated rest)."""
        return self._shared_bytes + sum(cp.overhead for cp in self._cps)

    def checkpoint(self) -> None:
        """Keep a checkpoint of the state now (at most one per position and log length)."""
        for cp in self._cps:
            if cp.position == self.position and cp.nseg == len(self.log):
                return
        self._cps.append(self._make_checkpoint())
        self._cps.sort(key=lambda c: (c.position, c.nseg))
        self._enforce_budget()

    def _enforce_budget(self) -> None:
        while self.used > self.budget and len(self._cps) > 1 + self.keep_newest:
            cands = self._cps[1:len(self._cps) - self.keep_newest]
            if not cands:
                break
            # drop where checkpoints are densest: the smallest gap its removal leaves
            best, gap = None, None
            for k, cp in enumerate(self._cps[1:len(self._cps) - self.keep_newest], start=1):
                g = self._cps[k + 1].position - self._cps[k - 1].position
                if gap is None or g < gap:
                    best, gap = cp, g
            self._drop(best)
        while self.used > self.budget and len(self._cps) > 1:
            self._drop(self._cps[1])           # the newest ones too, oldest first

    @property
    def checkpoints(self) -> list[int]:
        """Positions of the checkpoints kept (step 0's first)."""
        return [cp.position for cp in self._cps]

    def _restore(self, cp: _Checkpoint) -> None:
        self.monitor.restore(cp.snap)
        self._cp_time = time.perf_counter()
        self.restores += 1

    # ---- moving forward ---------------------------------------------------------------------
    def _machines(self):
        seen, out = set(), []
        for v in getattr(self.monitor, "vms", ()):
            m = getattr(v, "machine", None)
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                out.append(m)
        return out

    @contextmanager
    def breakpoints(self, addrs):
        """Set the machines' breakpoints to ``addrs`` (a set, or None for none) for a run."""
        saved = []
        for m in self._machines():
            saved.append((m, set(m.breakpoints)))
            m.breakpoints.clear()
            if addrs:
                m.breakpoints.update(addrs)
        try:
            yield
        finally:
            for m, old in saved:
                m.breakpoints.clear()
                m.breakpoints.update(old)

    def run(self, max_steps: int, bps=None, *, preset: bool = False):
        """``monitor.run(max_steps=...)`` with the breakpoint addresses ``bps`` (None: none); logs
        it and returns the RunResult. ``preset``: the caller has already set the machines'
        breakpoints to ``bps`` (:meth:`breakpoints`), as a loop of single steps does."""
        bps = frozenset(bps) if bps else None
        t = time.perf_counter()
        if preset:
            r = self.monitor.run(max_steps=max_steps)
        else:
            with self.breakpoints(bps):
                r = self.monitor.run(max_steps=max_steps)
        n = getattr(r, "steps", 0) or 0
        dt = time.perf_counter() - t
        if n >= 1000 and dt > 0:
            self.rate = n / dt
        if r.reason != "breakpoint":
            bps = None          # it ran its full length (or the guest stopped): a plain run
        if n or bps:
            log = self.log
            if bps is None and log and log[-1][2] is None and \
                    log[-1][0] + log[-1][1] == self.position:
                log[-1][1] += n                # merge consecutive plain runs
            else:
                log.append([self.position, n, bps])
            self.position += n
        return r

    def due(self) -> bool:
        """Whether ``checkpoint_seconds`` have passed since the last checkpoint was taken
        (for runs of one instruction at a time, whose rate :meth:`stride` does not see)."""
        return time.perf_counter() - self._cp_time >= self.checkpoint_seconds

    def stride(self, limit: int) -> int:
        """How many instructions to run before the next checkpoint: about
        ``checkpoint_seconds`` of running at the recent rate, at least 1,000 and at most
        ``limit``, so that going back replays about that long whatever the guest's speed."""
        if not self.rate:
            return min(limit, 5_000)
        return max(1_000, min(limit, int(self.rate * self.checkpoint_seconds)))

    # ---- going back -------------------------------------------------------------------------
    def goto(self, target: int, *, zero_segments: bool = True) -> int:
        """Put the monitor in the state it was in at position ``target`` (at most the current
        one): restore the nearest checkpoint at or before it and replay the log. With
        ``zero_segments`` the 0-instruction segments at ``target`` are replayed too (the
        state after an exception delivered at a breakpoint). Returns the position reached."""
        if target < 0 or target > self.position:
            raise VmkitError(f"can only go back to a step between 0 and {self.position}, "
                             f"got {target}")
        # the number of log segments the target state has applied
        nseg = 0
        for k, (s, n, _) in enumerate(self.log):
            if s < target or (s == target and n == 0 and zero_segments):
                nseg = k + 1
            else:
                break
        if target == self.position and nseg == len(self.log):
            return target
        cp = self._cps[0]
        for c in self._cps:
            if c.position <= target and c.nseg <= nseg:
                cp = c
        self._restore(cp)
        pos = cp.position
        for k in range(nseg):
            s, n, bps = self.log[k]
            e = s + n
            if k < cp.nseg and e <= pos:
                continue                        # applied before the checkpoint was taken
            start = max(s, pos)                 # a checkpoint inside a (merged) plain run
            if bps and start == s and e <= target:
                with self.breakpoints(bps):     # the run that stopped at a breakpoint
                    r = self.monitor.run(max_steps=n + 1)
                want = e
            else:
                want = min(e, target)
                if want <= start:
                    continue
                with self.breakpoints(None):    # a prefix of a run is a plain run
                    r = self.monitor.run(max_steps=want - start)
            got = getattr(r, "steps", 0) or 0
            self.replayed += got
            pos = start + got
            if pos != want:
                break
        self.diverged = pos != target
        self._truncate(pos, nseg)
        return pos

    def redo(self, log: list, target: int) -> int:
        """Run forward again along ``log`` (an earlier copy of :attr:`log` that the present
        is a prefix of) up to position ``target``, the same runs with the same breakpoints;
        returns the position reached."""
        for s, n, bps in log:
            e = s + n
            if e < self.position or (e == self.position and (n or not bps)):
                continue
            if self.position >= target and n:
                break
            if bps and s == self.position and e <= target:
                r = self.run(n + 1, bps)
                want = e
            else:
                want = min(e, target)
                if want <= self.position:
                    continue
                r = self.run(want - self.position)
            if self.position != want:
                break
        self.diverged = self.position != target
        return self.position

    def _truncate(self, position: int, nseg: int) -> None:
        self.position = position
        log = [list(seg) for seg in self.log[:nseg]]
        if log:
            s, n, bps = log[-1]
            if s + n > position:
                log[-1] = [s, position - s, None]
        self.log = log
        for cp in [c for c in self._cps[1:] if c.position > position or c.nseg > len(log)]:
            self._drop(cp)

    def __repr__(self) -> str:
        return (f"<Timeline at {self.position}, {len(self._cps)} checkpoints, "
                f"{self.used / 2**20:.1f} of {self.budget / 2**20:.0f} MiB>")
