"""Adams & Agesen, ASPLOS 2006, Fig. 4 ("Virtualization nanobenchmarks"), paper next to kit.

Each row's kit guest is measured by ``per_operation`` (two runs, differenced) under native,
``bt-traced`` and ``hw-traced`` (binary translation and hardware assist without nested paging,
both with traced shadow page tables, as A&A's VMMs of 2006), priced with a preset (``p4-2006``
by default, the paper's Pentium 4), and divided into A&A operations (a byte of the ``io`` guest
is two ``in``; a ``kptemod`` iteration eight PTE stores; a ``kcallret`` iteration 50 call/ret
pairs). Prints cycles per operation, kit / paper per cell (a cell more than a factor of
1.5 away is marked ``*``), each row's order, and the hardware/BT ratios on pgfault and ptemod;
then forkwait's native : bt : hw ratio under p4-2006 and core2-2006 next to the paper's, with the
traced shadow page tables A&A's VMMs had (``bt-traced``, ``hw-traced``) and, for contrast, with
the virtual-TLB shadow (``bt``, ``hw-shadow``); a cell outside a factor of 1.5 is marked ``*``.

    .venv/bin/python benchmarks/bench_fig4.py [PRESET]
"""

from __future__ import annotations

import sys

from vmkit.vmm.compare import (FIG4_CYCLES, FIG4_MONITORS, FORKWAIT_MONITORS, FORKWAIT_SECONDS,
                               fig4, forkwait)

TOLERANCE = 1.5


def main(preset: str = "p4-2006") -> None:
    rows = fig4(preset)
    print(f"Adams & Agesen 2006, Fig. 4: cycles per operation, paper vs kit ({preset})")
    print(f"{'':<9}" + "".join(f"{m:>30}" for m in FIG4_MONITORS))
    print(f"{'row':<9}" + f"{'paper':>10}{'kit':>10}{'kit/paper':>10}" * len(FIG4_MONITORS)
          + "  order (cheapest first)")
    for r in rows:
        cells = ""
        for p, k, q, ok in zip(r.paper, r.kit, r.ratio, r.within(TOLERANCE)):
            cells += f"{p:>10,}{k:>10,.0f}{q:>9.2f}{' ' if ok else '*'}"
        same = "same as the paper" if r.order == r.paper_order else \
            f"paper: {' < '.join(r.paper_order)}"
        print(f"{r.name:<9}{cells}  {' < '.join(r.order)} ({same})")
    print(f"{'cr8wr':<9}{'':>4}no counterpart: %cr8 exists only in 64-bit mode "
          f"(paper: {' / '.join(map(str, FIG4_CYCLES['cr8wr']))})")
    by = {r.name: r for r in rows}
    for name in ("pgfault", "ptemod"):
        r = by[name]
        paper, kit = r.paper[2] / r.paper[1], r.kit[2] / r.kit[1]
        ok = 1 / TOLERANCE <= kit / paper <= TOLERANCE
        print(f"hw / bt on {name}: paper {paper:.1f}x, kit {kit:.2f}x"
              f"{'' if ok else '  * outside a factor of 1.5'}")
    misses = [(r.name, m) for r in rows for m, ok in zip(FIG4_MONITORS, r.within(TOLERANCE))
              if not ok]
    print(f"{18 - len(misses)} of 18 cells within a factor of {TOLERANCE}; outside: "
          + (", ".join(f"{n}/{m}" for n, m in misses) or "none"))
    print()
    print("forkwait (A&A §6.2, §7.1; copy-on-write fork): time relative to native, "
          "native : bt : hw")
    for shadow in FORKWAIT_MONITORS:
        for name in FORKWAIT_SECONDS:
            paper, kit = forkwait(name, shadow=shadow)
            marks = ["" if 1 / TOLERANCE <= k / p <= TOLERANCE else "*"
                     for k, p in zip(kit, paper)]
            print(f"  {shadow:<7}{name:<11} paper 1 : {paper[1]:.1f} : {paper[2]:.1f}    "
                  f"kit 1 : {kit[1]:.1f}{marks[1]} : {kit[2]:.1f}{marks[2]}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
