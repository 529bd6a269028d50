"""How long does classifying instructions by experiment take? (issue 18)

Two users pay for it once a process (``vmkit.vmm.classify``): trap-and-emulate's first run in
a kernel, which classifies the forms of the instructions it compiles to find the
virtualization holes (about 1,000 laboratory runs for the hello guest), and
``vmkit.classify_all()`` (notebook 03, homework 3: 4,200 runs). Each is timed in a fresh
process (CPU seconds, modules imported before the clock starts), with a digest of what came
out: te's hole answer for every form it asked about, and every row of the table with its
evidence, which must be the same with every checkout.

``--before DIR`` times another checkout's code (DIR, e.g. a ``git worktree`` of an earlier
commit) in the same run, alternating with this one; each figure is the best of ``--repeat``
fresh processes.

    python benchmarks/bench_classify.py [--before DIR] [--repeat N]
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
import hashlib, json, sys, time
import vmkit
import vmkit.isa.asm, vmkit.vmm.classify, vmkit.vmm.classify.table, vmkit.vmm.te.holes
from vmkit import guests
from vmkit.vmm.te import TrapAndEmulate, holes

if sys.argv[1] == "te":
    image = guests.build("hello")
    t = time.process_time()
    TrapAndEmulate(image).run()
    cpu = time.process_time() - t
    out = repr(sorted(holes._FORMS.items()))
else:
    t = time.process_time()
    table = vmkit.classify_all()
    cpu = time.process_time() - t
    out = repr(table) + repr([repr(r) for r in table]) + repr(sorted(table.skipped.items()))
print(json.dumps({"cpu": cpu, "digest": hashlib.sha256(out.encode()).hexdigest()[:16]}))
"""

_WHAT = {"te": "te's first run (hello)", "all": "classify_all()"}


def measure(tree: Path, what: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", _CHILD, what], env=env, capture_output=True,
                         text=True, check=False, cwd=str(tree))
    if out.returncode != 0:
        last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""
        raise SystemExit(f"bench_classify.py: {_WHAT[what]} failed with the code of {tree}: "
                         f"{last}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench_classify.py", description=__doc__.split("\n")[0])
    checkouts.add_options(p, "fresh processes per checkout and user; the best is reported "
                          "(default 3)")
    a = p.parse_args(argv)
    trees = checkouts.checkouts("bench_classify.py", a, ROOT)
    best: dict = {}
    for _ in range(a.repeat):
        for what in _WHAT:
            for label, tree in trees:       # alternating: the machine's load hits both alike
                r = measure(tree, what)
                key = (label, what)
                if key not in best or r["cpu"] < best[key]["cpu"]:
                    best[key] = r
    print(f"{'code':<8} {'user':<24} {'CPU s':>7}  digest")
    for what, name in _WHAT.items():
        for label, _ in trees:
            r = best[(label, what)]
            print(f"{label:<8} {name:<24} {r['cpu']:>7.3f}  {r['digest']}")
    if len(trees) == 2:
        same = True
        for what, name in _WHAT.items():
            b, n = best[("before", what)], best[("after", what)]
            ok = b["digest"] == n["digest"]
            same &= ok
            print(f"{name}: after/before {n['cpu'] / b['cpu']:.2f} of the CPU time "
                  f"({b['cpu'] / n['cpu']:.1f}x faster); "
                  f"{'identical results' if ok else 'RESULTS DIFFER'}")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
