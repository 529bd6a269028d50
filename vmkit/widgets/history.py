"""Going back in time on any monitor: periodic snapshots plus deterministic re-execution.

(The Stepper now goes back through :class:`vmkit.Debugger`'s checkpoints and replay;
``StepHistory`` stays for code that uses it directly.)

A monitor's snapshot shares unchanged 4 KiB pages with the previous one (copy-on-write), but
one per step would still cost time. :class:`StepHistory` keeps one snapshot every ``every``
steps (at most ``max_snapshots`` of them, thinned where densest, plus the one at step 0), and a log of what moved the monitor forward:
``monitor.step()`` calls and ``monitor.run(max_steps=n)`` bursts. Going back to step ``t`` restores the
nearest snapshot at or before ``t`` and replays the log from there; guests are deterministic
(guest time, not wall time, drives their timer), so the replay lands on exactly the state the
monitor was in.

A *step* here is one unit of the log: one ``monitor.step()`` call (which may deliver an exception
without retiring an instruction) or one instruction retired inside ``monitor.run``. Replaying a
prefix of a run (``run(max_steps=j)``) is a state the run went through, so positions inside
runs are exact too. Breakpoints are set aside while a run is replayed, so that adding one later
does not change the past.

Only the Monitor API is used (``step``, ``run``, ``snapshot``, ``restore``, ``breakpoints``),
so this works for every monitor. Memory: ``(max_snapshots + 1)`` monitor snapshots (the
pages they changed). Reach:
with ``every = ceil(reach / (max_snapshots - 1))`` (the default) the oldest snapshot kept is
always at least ``reach`` steps back, so going back ``reach`` steps costs one restore and at most
``every`` replayed steps (see ``benchmarks/bench_widgets.py`` for the figures).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

from vmkit.errors import VmkitError

__all__ = ["StepHistory", "vm_stopped"]


def vm_stopped(monitor) -> bool:
    """True when every VM of the monitor has stopped (finished or crashed)."""
    vms = getattr(monitor, "vms", None)
    if not vms:
        return getattr(monitor, "result", None) is not None
    for v in vms:
        stopped = getattr(v, "stopped", None)
        if stopped is None:
            stopped = getattr(v, "result", None) is not None
        if not stopped:
            return False
    return True


class StepHistory:
    """Step, run and go back on a monitor, keeping snapshots every ``every`` steps.

    ``position`` counts steps since the history was made (step 0 is the monitor's state then).
    """

    @property
    def vm(self):
        """The monitor (the attribute's name before it was ``monitor``; kept so that notebooks
        reading ``.vm`` keep working)."""
        return self.monitor

    def __init__(self, monitor, *, every: int | None = None, max_snapshots: int = 20,
                 reach: int = 5000, run_snapshot_cost: float = 0.01):
        if max_snapshots < 2:
            raise VmkitError(f"max_snapshots must be at least 2, got {max_snapshots}")
        self.monitor = monitor
        self.reach = reach
        self.max_snapshots = max_snapshots
        # the oldest kept snapshot is at least (max_snapshots - 1) * every steps back
        self.every = every if every is not None else max(1, math.ceil(reach /
                                                                      (max_snapshots - 1)))
        # Inside runs a snapshot is worth taking only once replaying from the previous one
        # would cost about this long. A snapshot costs ~1 ms (4 MiB copied; up to 7 ms when
        # fresh pages must be faulted in): one every 264 steps would halve Run's speed on a fast
        # guest; at 10 ms of run per snapshot Run loses ~10 % and Back after a Run replays at
        # most ~10 ms (benchmarks/bench_widgets.py).
        self.run_snapshot_cost = run_snapshot_cost
        self._cost = 0.0                                 # seconds of run since the snapshot
        self.position = 0
        self._origin = monitor.snapshot()
        self._snaps: list[tuple[int, object]] = []      # (position, snapshot), ascending
        self._log: list[list] = []                       # [start, kind "s"|"r", n], ascending
        self.diverged = False                            # a replay did not land (see goto)

    # ---- moving forward -------------------------------------------------------------------
    def step(self) -> list:
        """One ``monitor.step()``; returns its events. A step that retires nothing and only finds
        that the guest has stopped (Native reports the power-off on the step after the OUT
        that asked for it) is not counted, as :meth:`run` does not count it: stepping to the
        end and running to the end give the same position."""
        before = self._retired()
        events = self.monitor.step()
        if before is not None and events and all(e.kind == "stop" for e in events) \
                and self._retired() == before and vm_stopped(self.monitor):
            return events
        self._record("s", 1)
        return events

    def _retired(self) -> int | None:
        """Instructions retired by the monitor's machines so far (None if it cannot say)."""
        try:
            return sum(v.machine.steps for v in self.monitor.vms)
        except Exception:
            return None

    def run(self, max_steps: int, *, breakpoints: bool = False):
        """``monitor.run(max_steps=...)``; returns the RunResult. Advances by the instructions it
        retired. Breakpoints are set aside unless ``breakpoints`` (then the run stops at one,
        reason "breakpoint", as gdb's continue does; not at the first instruction, so a run
        can go on from a breakpoint). Replaying the log never stops at breakpoints: it runs
        the recorded number of instructions."""
        t = time.perf_counter()
        if breakpoints:
            r = self.monitor.run(max_steps=max_steps)
        else:
            with self._no_breakpoints():
                r = self.monitor.run(max_steps=max_steps)
        self._cost += time.perf_counter() - t
        n = getattr(r, "steps", 0) or 0
        if n:
            self._record("r", n)
        return r

    def _record(self, kind: str, n: int) -> None:
        log = self._log
        if log and log[-1][1] == kind and log[-1][0] + log[-1][2] == self.position:
            log[-1][2] += n
        else:
            log.append([self.position, kind, n])
        self.position += n
        last = self._snaps[-1][0] if self._snaps else 0
        if self.position - last >= self.every and (kind == "s" or
                                                    self._cost >= self.run_snapshot_cost):
            self._snapshot()

    def _snapshot(self) -> None:
        self._cost = 0.0
        self._snaps.append((self.position, self.monitor.snapshot()))
        if len(self._snaps) > self.max_snapshots:
            # thin where they are densest (never the newest), so that going back beyond the
            # recent ones restarts from the nearest one kept rather than from step 0
            snaps = self._snaps
            pos = [0] + [p for p, _ in snaps]
            k = min(range(len(snaps) - 1), key=lambda i: pos[i + 2] - pos[i])
            del snaps[k]

    @contextmanager
    def _no_breakpoints(self):
        saved = []
        for v in getattr(self.monitor, "vms", ()):
            bps = getattr(getattr(v, "machine", None), "breakpoints", None)
            if bps:
                saved.append((bps, set(bps)))
                bps.clear()
        try:
            yield
        finally:
            for bps, old in saved:
                bps.update(old)

    # ---- going back -----------------------------------------------------------------------
    def back(self, n: int = 1) -> int:
        """Go back ``n`` steps (not before step 0); returns the new position."""
        return self.goto(max(0, self.position - max(0, n)))

    def reset(self) -> int:
        """Back to step 0."""
        return self.goto(0)

    def goto(self, target: int) -> int:
        """Put the monitor in the state it was in at step ``target`` (at most the current
        position): restore the nearest snapshot at or before it and replay the log."""
        if target < 0 or target > self.position:
            raise VmkitError(f"can only go back to a step between 0 and {self.position}, "
                             f"got {target}")
        if target == self.position:
            return target
        base, snap = 0, self._origin
        for p, s in reversed(self._snaps):
            if p <= target:
                base, snap = p, s
                break
        t = time.perf_counter()
        self.monitor.restore(snap)
        reached = self._replay(base, target)
        self._cost = time.perf_counter() - t
        self.diverged = reached != target
        self._truncate(reached)
        return reached

    def _replay(self, start: int, target: int) -> int:
        pos = start
        for seg_start, kind, n in self._log:
            seg_end = seg_start + n
            if seg_end <= pos:
                continue
            if seg_start >= target:
                break
            k = min(seg_end, target) - pos
            if kind == "s":
                for _ in range(k):
                    self.monitor.step()
                pos += k
            else:
                with self._no_breakpoints():
                    r = self.monitor.run(max_steps=k)
                got = getattr(r, "steps", 0) or 0
                pos += got
                if got != k:
                    return pos
            if pos >= target:
                break
        return pos

    def _truncate(self, position: int) -> None:
        self.position = position
        self._snaps = [(p, s) for p, s in self._snaps if p <= position]
        log = []
        for seg in self._log:
            s, kind, n = seg
            if s >= position:
                break
            log.append([s, kind, min(n, position - s)])
        self._log = log

    # ---- introspection --------------------------------------------------------------------
    @property
    def snapshots(self) -> list[int]:
        """Positions of the snapshots kept (step 0's is always kept besides these)."""
        return [p for p, _ in self._snaps]

    def snapshot_bytes(self) -> int:
        """Approximate memory held by the snapshots (guest memory images)."""
        total = 0
        for s in [self._origin] + [s for _, s in self._snaps]:
            for m in getattr(s, "machines", ()) or ():
                total += len(getattr(m, "memory", b"") or b"")
        return total

    def __repr__(self) -> str:
        return (f"<StepHistory at step {self.position}, {len(self._snaps)} snapshots every "
                f"{self.every} steps>")
