"""Many VMs on one CPU: how the cost grows with the number of VMs. For 1, 2, 4 and 8 copies of
a guest under trap-and-emulate, binary translation and hardware assist, scheduled round robin on
machine time (``scheduler="round-robin"``, guest-time timer, so equivalence holds), it reports
the machine cycles until every VM finished (total and per VM), the world switches and their
share of the cycles, each VM's progress (its instructions per 10⁶ machine cycles, from its
start to the moment it finished: the mean over the VMs), and the host's wall time and
simulation speed (the Python overhead of scheduling on machine time, next to one VM).

    .venv/bin/python benchmarks/bench_many_vms.py [guest] [iterations]
"""

from __future__ import annotations

import statistics
import sys
import time

from vmkit import guests
from vmkit.vmm import MONITORS
from vmkit.vmm.sched import machine_time


def measure(monitor: str, name: str, n: int, params: dict) -> dict:
    imgs = [guests.build(name, paravirtual=monitor == "pv", **params) for _ in range(n)]
    mon = MONITORS[monitor](*imgs, scheduler="round-robin")
    done: dict[int, float] = {}
    mon.on("stop", lambda ev: done.setdefault(ev.vm, machine_time(mon)))
    t = time.perf_counter()
    r = mon.run(max_steps=50_000_000 * n)
    dt = time.perf_counter() - t
    assert all(vm.result and vm.result.reason == "poweroff" for vm in mon.vms), r
    cycles = sum(mon.cycles.values())
    progress = statistics.fmean(vm.steps / done.get(vm.index, cycles) * 1e6 for vm in mon.vms)
    return dict(cycles=cycles, seconds=dt, instructions=r.steps or sum(v.steps for v in mon.vms),
                switches=mon.world_switches, switch_cycles=mon.cycles["world_switch"],
                progress=progress)


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "compute"
    its = int(sys.argv[2]) if len(sys.argv) > 2 else 30_000
    params = {"iterations": its}
    print(f"guest {name} {params}, round robin on machine time (quantum "
          f"{MONITORS['te'](guests.build(name, **params), scheduler='round-robin').scheduler.quantum:,}"
          f" cycles), p4-2006 costs")
    print(f"{'monitor':<7} {'VMs':>3} {'machine cycles':>15} {'cycles/VM':>12} {'switches':>8} "
          f"{'switch %':>8} {'instr/Mcycle/VM':>15} {'vs 1 VM':>7} {'seconds':>8} "
          f"{'instr/s':>10}")
    for monitor in ("te", "bt", "hw", "pv"):
        measure(monitor, name, 1, params)            # warm-up: decode and compile caches
        base = None
        for n in (1, 2, 4, 8):
            m = measure(monitor, name, n, params)
            base = base or m["progress"]
            print(f"{monitor:<7} {n:>3} {m['cycles']:>15,.0f} {m['cycles'] / n:>12,.0f} "
                  f"{m['switches']:>8,} {100 * m['switch_cycles'] / m['cycles']:>7.1f}% "
                  f"{m['progress']:>15,.0f} {m['progress'] / base:>6.2f}x "
                  f"{m['seconds']:>8.2f} {m['instructions'] / m['seconds']:>10,.0f}")


if __name__ == "__main__":
    main()
