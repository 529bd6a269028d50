"""Trap-and-emulate next to Native: guest instructions per second and traps per second.

``compute`` is the best case for trap-and-emulate (user-mode arithmetic runs directly on the
CPU; only the timer traps), ``syscall`` the worst of the kit's guests (every getpid is a trap
into the VMM and a reflection into the guest kernel). Each run follows a warm-up run that fills
the process-wide decode and compile caches.

    .venv/bin/python benchmarks/bench_te.py
"""

from __future__ import annotations

import time

from vmkit import guests
from vmkit.vmm import Native, TrapAndEmulate

CASES = (("compute", {"iterations": 150_000}), ("syscall", {"iterations": 20_000}))


def measure(monitor, img) -> tuple[int, int, float, dict]:
    monitor(img).run(max_steps=100_000)          # warm-up
    vm = monitor(img)
    t = time.perf_counter()
    r = vm.run(max_steps=50_000_000)
    dt = time.perf_counter() - t
    assert r.reason == "poweroff", r
    return r.steps, vm.stats.get("traps", 0), dt, vm.stats


def main() -> None:
    print(f"{'guest':<9} {'monitor':<7} {'instructions':>12} {'seconds':>8} {'instr/s':>11} "
          f"{'traps':>7} {'traps/s':>9} {'emulated':>9} {'hidden #PF':>10}")
    for name, params in CASES:
        img = guests.build(name, **params)
        for monitor in (Native, TrapAndEmulate):
            n, traps, dt, st = measure(monitor, img)
            emulated = sum(st.get("emulated", {}).values())
            print(f"{name:<9} {monitor.name:<7} {n:>12,} {dt:>8.2f} {n / dt:>11,.0f} "
                  f"{traps:>7,} {traps / dt:>9,.0f} {emulated:>9,} "
                  f"{st.get('hidden_page_faults', 0):>10,}")


if __name__ == "__main__":
    main()
