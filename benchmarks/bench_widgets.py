"""Stepper latency and memory (issue: one Step under 50 ms; Back reaches 5,000 steps back).

Boots the `ctxswitch` guest (8,000 instructions), then steps it 6,000 times through
`Stepper.step()` (the whole click: the debugger's step, its
periodic checkpoint and redrawing every pane), then measures Back by 1, 250, 1,000 and 5,000 steps
from step 6,000, and the memory the debugger's checkpoints hold. Then the same after a Run of 200,000 steps
(Back lands inside a run burst and replays it), and Step/Back under TrapAndEmulate when it is
there. No kernel is needed: widgets update their
values as they would in JupyterLab, minus the websocket.

    .venv/bin/python benchmarks/bench_widgets.py
"""

from __future__ import annotations

import resource
import statistics
import time

from vmkit import guests
from vmkit.vmm import Native
from vmkit.widgets import Stepper

STEPS = 6_000   # so that Back 5,000 lands on step 1,000 (not on step 0's snapshot)
BOOT = 8_000    # ctxswitch's kernel boots in ~7,600 instructions; then yield system calls


def ms(x: float) -> str:
    return f"{x * 1e3:7.2f} ms"


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def back_latency(s: Stepper, n: int, home: int, repeats: int = 5, *,
                 by_run: bool = False) -> list[float]:
    """Back ``n`` from ``home``, then forward to ``home`` again the way it was reached (Step
    clicks or a Run), ``repeats`` times."""
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        s.back(n)
        out.append(time.perf_counter() - t)
        if by_run:
            s.run("stop", max_steps=home - s.position)
        else:
            s.step(home - s.position)   # one click of Step ×N
    return out


def bench_steps(ring_view: bool, monitor=Native) -> None:
    img = guests.build("ctxswitch", iterations=2000)
    vm = monitor(img)
    vm.run(max_steps=BOOT)   # past the kernel's boot: the steps below cross rings often
    s = Stepper(vm, ring_view=ring_view)
    s.step()  # warm-up: decode and compile caches are process-wide
    s.reset()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    lat = []
    for _ in range(STEPS):
        t = time.perf_counter()
        s.step()
        lat.append(time.perf_counter() - t)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    label = ("with RingView" if ring_view else "no RingView") + f", {s.vm.name}"
    crossings = sum(1 for e in s.vm.trace if e.kind == "ring")
    print(f"Step ({label}), {STEPS} clicks on ctxswitch ({crossings} ring changes):")
    print(f"  median {ms(statistics.median(lat))}  p95 {ms(percentile(lat, 95))}  "
          f"p99 {ms(percentile(lat, 99))}  max {ms(max(lat))}  "
          f"(over 50 ms: {sum(x > 0.05 for x in lat)})")
    tl = s.debugger.timeline
    print(f"  debugger checkpoints kept: {len(tl.checkpoints)} (a Step checkpoint every "
          f"{s.checkpoint_steps} steps), {tl.used / 2**20:.1f} MiB of the "
          f"{s.debugger.budget / 2**20:.0f} MiB budget; "
          f"max RSS grew {(rss1 - rss0) / 1024:.0f} MiB")
    home = s.position
    for n in (1, 250, 1000, 5000):
        b = back_latency(s, n, home)
        print(f"  Back {n:>5} steps: median {ms(statistics.median(b))}  max {ms(max(b))}")
    s.back(5000)
    assert s.position == STEPS - 5000


def bench_after_run() -> None:
    img = guests.build("ctxswitch", iterations=2000)
    s = Stepper(Native(img))
    t = time.perf_counter()
    s.run("stop", max_steps=200_000)
    dt = time.perf_counter() - t
    print(f"Run 200,000 steps (synchronous, snapshots at burst ends): {ms(dt)} "
          f"({200_000 / dt:,.0f} steps/s)")
    home = s.position
    for n in (1, 250, 1000, 5000):
        b = back_latency(s, n, home, by_run=True)
        print(f"  Back {n:>5} steps after Run: median {ms(statistics.median(b))}  "
              f"max {ms(max(b))}")


def main() -> None:
    bench_steps(ring_view=False)
    bench_steps(ring_view=True)
    bench_after_run()
    try:
        from vmkit.vmm import TrapAndEmulate
    except (ImportError, AttributeError):
        print("(TrapAndEmulate not available: skipped)")
    else:
        bench_steps(ring_view=True, monitor=TrapAndEmulate)


if __name__ == "__main__":
    main()
