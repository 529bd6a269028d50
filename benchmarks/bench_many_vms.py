"""Many VMs on one CPU: machine cycles and wall time for 1, 2, 4 and 8 copies of a guest under
trap-and-emulate, binary translation and hardware assist, scheduled round robin on machine time
(``scheduler="round-robin"``), guest-time timer (equivalence holds). Also the Python overhead
of scheduling on machine time: instructions per second next to one VM.

    .venv/bin/python benchmarks/bench_many_vms.py [guest] [iterations]
"""

from __future__ import annotations

import sys
import time

from vmkit import guests
from vmkit.vmm import MONITORS


def measure(monitor: str, name: str, n: int, params: dict) -> dict:
    imgs = [guests.build(name, **params) for _ in range(n)]
    mon = MONITORS[monitor](*imgs, scheduler="round-robin")
    t = time.perf_counter()
    r = mon.run(max_steps=50_000_000 * n)
    dt = time.perf_counter() - t
    assert all(vm.result and vm.result.reason == "poweroff" for vm in mon.vms), r
    return dict(cycles=sum(mon.cycles.values()), seconds=dt, instructions=r.steps,
                switches=mon.world_switches,
                switch_cycles=mon.cycles["world_switch"])


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "compute"
    its = int(sys.argv[2]) if len(sys.argv) > 2 else 30_000
    params = {"iterations": its}
    print(f"guest {name} {params}, round robin on machine time")
    print(f"{'monitor':<7} {'VMs':>3} {'machine cycles':>15} {'cycles/VM':>12} {'switches':>8} "
          f"{'switch %':>8} {'seconds':>8} {'instr/s':>10}")
    for monitor in ("te", "bt", "hw"):
        measure(monitor, name, 1, params)            # warm-up: decode and compile caches
        for n in (1, 2, 4, 8):
            m = measure(monitor, name, n, params)
            print(f"{monitor:<7} {n:>3} {m['cycles']:>15,.0f} {m['cycles'] / n:>12,.0f} "
                  f"{m['switches']:>8,} {100 * m['switch_cycles'] / m['cycles']:>7.1f}% "
                  f"{m['seconds']:>8.2f} {m['instructions'] / m['seconds']:>10,.0f}")


if __name__ == "__main__":
    main()
