"""Snapshots that cost pages, not megabytes (issue 18), beside the old full copy in one run.

1. Memory and time of 20 snapshots of a long run (the syscall guest, one snapshot every
   50,000 instructions: 10^6 instructions): the kit's ``vm.snapshot()`` (memory copy-on-write
   at 4 KiB pages, the trace's retained events in shared pieces) against the old full copy
   (``bytes(mem)`` and a tuple of the retained events, what ``Machine.snapshot`` did before),
   the memory each set holds measured with tracemalloc (what freeing it gives back), beside
   the guest's memory. Goal: under 10 MiB beyond the guest's memory.
2. Finding what changed: the page compare at snapshot time (``bytearray.startswith`` per page,
   no copy) against what tracking writes would add to every guest write (one set insertion in
   the accessor, measured on the accessor's body).
3. Back and ``reverse_continue`` over 10^6 steps with the debugger (``Debugger``, whose
   checkpoints are these snapshots; the Stepper's Back is ``reverse_step``). Goal: under
   200 ms each.

    .venv/bin/python benchmarks/bench_snapshots.py [native|te|bt|hw|pv ...]
"""

from __future__ import annotations

import gc
import sys
import time
import timeit
import tracemalloc

from vmkit import guests
from vmkit.debug import Debugger
from vmkit.machine.machine import distinct_pages
from vmkit.vmm import MONITORS

GUEST = dict(name="syscall", iterations=400_000)      # ~4.4 M instructions: room for 10^6
SNAPSHOTS, EVERY = 20, 50_000
MiB = 1 << 20


def _machines(vm):
    seen, out = set(), []
    for v in vm.vms:
        m = v.machine
        if id(m) not in seen:
            seen.add(id(m))
            out.append(m)
    return out


def full_copy(vm):
    """The old snapshot's expensive parts: every byte of memory and a tuple of the retained
    events, per machine (the rest of a snapshot is the same either way)."""
    return [(bytes(m.mem), tuple(m.trace.events)) for m in _machines(vm)]


def full_restore(vm, snap) -> None:
    for m, (mem, events) in zip(_machines(vm), snap):
        m.mem[:] = mem
        m.trace.events.clear()
        m.trace.events.extend(events)


def held(take, vm):
    """Take SNAPSHOTS snapshots EVERY instructions apart with ``take(vm)``; -> (snapshots,
    bytes they hold (tracemalloc: what deleting them frees), median seconds per snapshot)."""
    gc.collect()
    tracemalloc.start()
    snaps, times = [], []
    for _ in range(SNAPSHOTS):
        t = time.perf_counter()
        snaps.append(take(vm))
        times.append(time.perf_counter() - t)
        vm.run(max_steps=EVERY)
    with_snaps = tracemalloc.get_traced_memory()[0]
    kept = list(snaps)
    snaps.clear()
    del kept
    gc.collect()
    without = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    times.sort()
    return with_snaps - without, times[len(times) // 2]


def snapshot_figures(monitor: str) -> None:
    cls = MONITORS[monitor]
    img = guests.build(GUEST["name"], iterations=GUEST["iterations"])
    rows = []
    for label, take in (("full copy (old)", full_copy), ("copy-on-write", lambda v: v.snapshot())):
        vm = cls(img)
        vm.run(max_steps=10_000)
        # timing runs without tracemalloc (it slows every allocation)
        t_snaps = []
        for _ in range(5):
            t = time.perf_counter()
            take(vm)
            t_snaps.append(time.perf_counter() - t)
        nbytes, _ = held(take, vm)
        s = take(vm)
        vm.run(max_steps=EVERY)
        if label.startswith("full"):
            t = time.perf_counter()
            full_restore(vm, s)
            restore = time.perf_counter() - t
        else:
            t = time.perf_counter()
            vm.restore(s)
            restore = time.perf_counter() - t
        guest_mem = sum(m.memory_size for m in _machines(vm))
        rows.append((label, nbytes, guest_mem, sorted(t_snaps)[2], restore))
    for label, nbytes, guest_mem, t_snap, restore in rows:
        beyond = nbytes - guest_mem
        print(f"{monitor:<6} {label:<16} {SNAPSHOTS} snapshots hold {nbytes / MiB:7.1f} MiB "
              f"({beyond / MiB:+7.1f} MiB beyond the guest's {guest_mem / MiB:.0f} MiB); "
              f"snapshot {t_snap * 1e3:5.2f} ms, restore {restore * 1e3:5.2f} ms", flush=True)
    # the copy-on-write set once more: distinct page objects (what the tests count)
    vm = cls(img)
    snaps = []
    for _ in range(SNAPSHOTS):
        snaps.append(vm.snapshot())
        vm.run(max_steps=EVERY)
    pages = distinct_pages([m for s in snaps for m in s.machines])
    print(f"{monitor:<6} copy-on-write: {len(pages)} distinct 4 KiB pages "
          f"({sum(map(len, pages.values())) / MiB:.1f} MiB) for {SNAPSHOTS} snapshots")


def dirty_tracking_figures() -> None:
    """What a write would pay to track dirty pages, on the accessor's body (paging off)."""
    setup = ("mem = bytearray(4 << 20); cp = {5}; dirty = set(); lim = (4 << 20) - 1; "
             "a = 0x12345")
    plain = "if a <= lim:\n    mem[a] = 7\n    if a >> 12 in cp: pass"
    tracked = "if a <= lim:\n    mem[a] = 7\n    dirty.add(a >> 12)\n    if a >> 12 in cp: pass"
    n = 2_000_000
    p = min(timeit.repeat(plain, setup, number=n, repeat=3)) / n
    t = min(timeit.repeat(tracked, setup, number=n, repeat=3)) / n
    mem = bytearray(b"\xAA") * (6 << 20)
    prev = tuple(bytes(mem[o:o + 4096]) for o in range(0, len(mem), 4096))
    same = mem.startswith
    cmp = min(timeit.repeat(lambda: [same(q, i * 4096) for i, q in enumerate(prev)],
                            number=20, repeat=3)) / 20
    copy = min(timeit.repeat(lambda: bytes(mem), number=20, repeat=3)) / 20
    print(f"write accessor body {p * 1e9:.0f} ns, with dirty tracking {t * 1e9:.0f} ns "
          f"(+{(t - p) * 1e9:.0f} ns a guest write); page compare of 6 MiB at snapshot time "
          f"{cmp * 1e3:.2f} ms (a full copy: {copy * 1e3:.2f} ms)")


def reverse_figures(monitor: str, n: int = 1_000_000) -> None:
    cls = MONITORS[monitor]
    img = guests.build(GUEST["name"], iterations=GUEST["iterations"])
    d = Debugger(cls(img))
    d.break_at("syscall:_start")
    hit = d.cont()
    assert hit.kind == "breakpoint", hit
    t = time.perf_counter()
    s = d.cont(max_steps=n)
    forward = time.perf_counter() - t
    assert s.kind == "max_steps", s
    at = d.position
    t = time.perf_counter()
    d.reverse_step(1)
    back = time.perf_counter() - t
    assert d.position == at - 1, (d.position, at)
    t = time.perf_counter()
    stop = d.reverse_continue()
    rc = time.perf_counter() - t
    assert (stop.kind, stop.step) == ("breakpoint", hit.step), stop
    tl = d.timeline
    print(f"{monitor:<6} {n:,} steps: forward {forward:.1f} s; Back (reverse_step) "
          f"{back * 1e3:.0f} ms; reverse_continue to the hit {rc * 1e3:.0f} ms; "
          f"{len(tl.checkpoints)} checkpoints hold {tl.used / MiB:.1f} MiB")


def main() -> None:
    monitors = sys.argv[1:] or ["native", "te"]
    for m in monitors:
        if m not in MONITORS:
            sys.exit(f"bench_snapshots: unknown monitor {m!r}; expected one of "
                     f"{', '.join(MONITORS)}")
    for m in monitors:
        snapshot_figures(m)
    dirty_tracking_figures()
    for m in monitors:
        reverse_figures(m)


if __name__ == "__main__":
    main()
