"""Memory virtualization: cycles (p4-2006 and modern-2020 cost presets) and wall time of the
memory-heavy guests under every way of virtualizing the MMU.

``te``, ``bt`` and ``hw-shadow`` keep shadow page tables as a virtual TLB (hidden page faults,
a full flush at every CR3 load); ``hw-ept`` is nested paging (no hidden faults, 8 references
per TLB miss); ``pv`` (direct paging through validated hypercalls) is included when
``vmkit.vmm.Paravirtual`` exists. ``native`` is the reference. The cycles come from the cost
model (the same run, priced twice); wall time is what the simulator takes (best of ``REPEAT``
runs after a warm-up run that fills the decode and compile caches).

    .venv/bin/python benchmarks/bench_memory.py
"""

from __future__ import annotations

import time
from collections import Counter

from vmkit import guests
from vmkit.vmm import CostModel
from vmkit.vmm.memory import MEMORY_CATEGORIES, MEMORY_MONITORS, memory_monitors

CASES = (("pagefault", {"pages": 256}), ("ptemod", {"iterations": 2000}),
         ("tlbwalk", {"pages": 96, "passes": 20, "processes": 2}))
PRESETS = ("p4-2006", "modern-2020")
REPEAT = 3


def measure(factory, img):
    factory(img).run(max_steps=100_000)             # warm-up
    best, vm, r = None, None, None
    for _ in range(REPEAT):
        vm = factory(img)
        t = time.perf_counter()
        r = vm.run(max_steps=50_000_000)
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    assert r.reason == "poweroff", r
    return best, vm, r


def main() -> None:
    factories = memory_monitors()
    monitors = [m for m in MEMORY_MONITORS if m in factories]
    costs = {p: CostModel.preset(p) for p in PRESETS}
    print(f"{'guest':<9} {'monitor':<10} {'instr':>9} {'seconds':>8} {'hidden':>7} "
          f"{'pt-traps':>8} {'tlb-miss':>8} {'walk-refs':>9} "
          + " ".join(f"{'Mcyc ' + p:>17} {'mem%':>5}" for p in PRESETS) + "  console")
    for name, params in CASES:
        img = guests.build(name, **params)
        pv_img = guests.build(name, paravirtual=True, **params) if "pv" in monitors else None
        for m in monitors:
            dt, vm, r = measure(factories[m], pv_img if m == "pv" else img)
            st = vm.stats
            counts = Counter(vm.event_counts())
            cells = []
            for p in PRESETS:
                cyc = costs[p].price(counts)
                total = sum(cyc.values())
                mem = sum(cyc.get(c, 0) for c in MEMORY_CATEGORIES)
                cells.append(f"{total / 1e6:>17.2f} {100 * mem / total:>4.0f}%")
            dash = lambda k: "—" if st.get(k) is None else f"{st[k]:,}"  # noqa: E731
            walk = st.get("walk_references", counts.get("page_walk", 0))
            ok = "ok" if vm.console == (pv_img if m == "pv" else img).expected else "DIFFERS"
            print(f"{name:<9} {m:<10} {r.steps:>9,} {dt:>8.2f} {dash('hidden_page_faults'):>7} "
                  f"{dash('pt_write_traps'):>8} {st['tlb_misses']:>8,} {walk:>9,} "
                  + " ".join(cells) + f"  {ok}")


if __name__ == "__main__":
    main()
