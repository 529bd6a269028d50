"""How long does building a guest take, in a process that builds many? (issue 18)

A notebook builds the same guests again and again with other parameters (``compare`` and
``per_operation`` build each guest once per monitor and per value: notebook 08 assembles 195
distinct programs), so what counts is a build in a process that has built others: the kernel's
lines are the same each time, only a few constants differ. This script makes a fixed list of
distinct builds (every guest, native and paravirtual where it has both, at three values of its
first parameter, and the timer off and on) in a fresh process and reports the CPU time per
build and per assembly (``vmkit.isa.asm.assemble`` call), and a digest of everything the
assembler produced (bytes, symbols, constants, line table, listing, macro call sites), which
must be the same with every checkout.

``--before DIR`` runs the same list with another checkout's code (DIR, e.g. a ``git
worktree`` of an earlier commit), in the same run, alternating with this one; each figure is
the best of ``--repeat`` fresh processes.

    python benchmarks/bench_assemble.py [--before DIR] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import checkouts   # benchmarks/checkouts.py: --before and --repeat

ROOT = Path(__file__).resolve().parents[1]

#: run in a child process with the checkout's code on PYTHONPATH; prints one JSON line
_CHILD = r"""
import hashlib, json, time
from vmkit import guests
from vmkit.isa import asm

calls = [0]
_assemble = asm.assemble
def counted(*a, **k):
    calls[0] += 1
    return _assemble(*a, **k)
asm.assemble = counted

plan = []
for name in guests.names():
    s = guests.spec(name)
    first = next(iter(s.params), None)
    values = [None]
    if first is not None:
        lo, hi = s.ranges.get(first, (0, 2**32 - 1))
        values = [lo, s.params[first], min(hi, s.params[first] * 2 + 1)]
    for pv in ((True,) if s.paravirtual_only else (False, True)):
        for v in values:
            for period in (0, None):
                plan.append((name, pv, {} if v is None else {first: v}, period))

made = []
t = time.process_time()
for name, pv, params, period in plan:
    try:
        made.append(guests.build(name, paravirtual=pv, timer_period=period, **params))
    except guests.GuestError as e:      # a guest without a paravirtual build
        made.append(str(e))
cpu = time.process_time() - t
h = hashlib.sha256()
builds = 0
for img in made:
    if isinstance(img, str):
        h.update(img.encode())
        continue
    builds += 1
    for pname, p in sorted(img.programs.items()):
        text = repr((pname, p.code, p.base, sorted(p.symbols.items()),
                     sorted(p.constants.items()), p.lines, p.listing(),
                     sorted(p._expansions.items())))
        h.update(text.replace(guests.GUEST_DIR, "GUEST_DIR").encode())  # the checkout's path
print(json.dumps({"builds": builds, "assemblies": calls[0], "cpu": cpu,
                  "digest": h.hexdigest()[:16]}))
"""


def measure(tree: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                         text=True, check=False, cwd=str(tree))
    if out.returncode != 0:
        raise SystemExit(f"bench_assemble.py: the builds failed with the code of {tree}:\n"
                         f"{out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ''}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench_assemble.py", description=__doc__.split("\n")[0])
    checkouts.add_options(p, "fresh processes per checkout; the best is reported (default 3)")
    a = p.parse_args(argv)
    trees = checkouts.checkouts("bench_assemble.py", a, ROOT)
    best: dict = {}
    for _ in range(a.repeat):
        for label, tree in trees:           # alternating: the machine's load hits both alike
            r = measure(tree)
            if label not in best or r["cpu"] < best[label]["cpu"]:
                best[label] = r
    print(f"{'code':<8} {'builds':>6} {'assemblies':>10} {'CPU s':>7} {'ms/build':>9} "
          f"{'ms/assembly':>11}  digest")
    for label, _ in trees:
        r = best[label]
        print(f"{label:<8} {r['builds']:>6} {r['assemblies']:>10} {r['cpu']:>7.2f} "
              f"{1000 * r['cpu'] / r['builds']:>9.1f} {1000 * r['cpu'] / r['assemblies']:>11.1f}"
              f"  {r['digest']}")
    if len(trees) == 2:
        b, n = best["before"], best["after"]
        same = "identical output" if b["digest"] == n["digest"] else "OUTPUT DIFFERS"
        print(f"after/before: {n['cpu'] / b['cpu']:.2f} of the CPU time "
              f"({b['cpu'] / n['cpu']:.1f}x faster); {same}")
        return 0 if b["digest"] == n["digest"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
