"""Guest instructions per second under Native (issue: >= 1,000,000/s on one core for compute).

Runs `compute` and `syscall` with default settings (trace at its default: no per-instruction
events), at least 5 million instructions each, after a warm-up run that compiles the code.

    .venv/bin/python benchmarks/bench_native.py
"""

from __future__ import annotations

import time

from vmkit import guests
from vmkit.vmm import Native

TARGET = 5_000_000


def measure(name: str, **params) -> tuple[float, int, float]:
    img = guests.build(name, **params)
    # warm-up: the decode/compile caches are process-wide, so a first run pays for them
    Native(img).run(max_steps=200_000)
    vm = Native(img)
    t = time.perf_counter()
    r = vm.run(max_steps=TARGET + 1_000_000)
    dt = time.perf_counter() - t
    return r.steps / dt, r.steps, dt


def main() -> None:
    print(f"{'guest':<10} {'instructions':>12} {'seconds':>8} {'instr/s':>12}")
    for name, params in (("compute", {"iterations": 900_000}),
                         ("syscall", {"iterations": 120_000})):
        rate, n, dt = measure(name, **params)
        print(f"{name:<10} {n:>12,} {dt:>8.2f} {rate:>12,.0f}")


if __name__ == "__main__":
    main()
