"""Reverse execution in the debugger (issue 17: ``reverse_continue`` across 10^6 guest
instructions in under 1 s).

For N = 10^5 and 10^6: a breakpoint on the user program's entry (hit once, early), ``cont``
to it, ``cont(max_steps=N)`` on (no hit), then ``reverse_continue`` back to the hit -- the
time of that call is the figure. A checkpoint is kept at every stop, so going back costs one
restore plus a replay of the instructions between that checkpoint and the hit (none here).
Then the "cold" case: the breakpoint is set only after the N steps were run (``step``), so
``reverse_continue`` must search those N steps again (at full speed: a breakpoint needs no look
after each instruction). Finally the memory the checkpoints hold and how many there are.

Then the same with a write watchpoint on the user program's ``label`` (its first hit is the
page becoming mapped, early; nothing writes it after that, not even its own value): the
forward ``cont`` over N instructions is what a watchpoint costs (the machine reports accesses
to the watched page; the run goes an instruction at a time inside the machine, chunks of it
through the debugger), and ``reverse_continue`` goes back to the hit.

    .venv/bin/python benchmarks/bench_debug.py [native|te|bt|hw ...]
"""

from __future__ import annotations

import sys
import time

from vmkit import guests
from vmkit.debug import Debugger
from vmkit.vmm import MONITORS

GUEST = dict(name="syscall", iterations=400_000)      # ~4.4 M instructions: room for 10^6


def forward_and_back(monitor: str, n: int, arm, kind: str):
    """A debugger on the guest, armed by ``arm(d)``: run to the first hit (of ``kind``), then
    ``n`` steps on, then reverse_continue back to it (which must land on the hit). Returns the
    debugger, the hit, the forward time and the reverse_continue time."""
    img = guests.build(GUEST["name"], iterations=GUEST["iterations"])
    d = Debugger(MONITORS[monitor](img))
    arm(d)
    t = time.perf_counter()
    hit = d.cont()
    assert hit.kind == kind, hit
    s = d.cont(max_steps=n)
    forward = time.perf_counter() - t
    assert s.kind == "max_steps", s
    t = time.perf_counter()
    back = d.reverse_continue()
    warm = time.perf_counter() - t
    assert (back.kind, back.step, back.eip) == (kind, hit.step, hit.eip), back
    return d, hit, forward, warm


def bench(monitor: str, n: int) -> None:
    d, hit, forward, warm = forward_and_back(monitor, n, lambda d: d.break_at("syscall:_start"),
                                             "breakpoint")
    cps, used = len(d.timeline.checkpoints), d.timeline.used
    img = guests.build(GUEST["name"], iterations=GUEST["iterations"])
    d2 = Debugger(MONITORS[monitor](img))
    d2.step(hit.step + n)
    d2.break_at("syscall:_start")
    t = time.perf_counter()
    back2 = d2.reverse_continue()
    cold = time.perf_counter() - t
    assert (back2.step, back2.eip) == (hit.step, hit.eip), back2
    print(f"{monitor:6} N={n:>9,}  forward {forward:6.2f} s  reverse_continue {warm * 1e3:7.1f} ms"
          f"  (cold, searching N again: {cold:6.2f} s)  checkpoints {cps:3}, "
          f"{used / 2**20:5.1f} MiB of {d.budget >> 20} MiB")


def bench_watch(monitor: str, n: int) -> None:
    _, _, forward, warm = forward_and_back(monitor, n, lambda d: d.watch("syscall:label"),
                                           "watchpoint")
    print(f"{monitor:6} N={n:>9,}  watchpoint: forward {forward:6.2f} s  reverse_continue "
          f"{warm * 1e3:7.1f} ms")


def main(argv: list[str]) -> None:
    monitors = argv or ["native", "te"]
    for m in monitors:
        for n in (10**5, 10**6):
            bench(m, n)
        for n in (10**5, 10**6):
            bench_watch(m, n)


if __name__ == "__main__":
    main(sys.argv[1:])
