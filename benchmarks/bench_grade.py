"""Autograding throughput: wall time to grade 30 submissions of one assignment on 2 cores,
with the bubblewrap sandbox and without it (``--no-sandbox``), in one run.

The submissions are the solution of ``hw01-rings-and-traps`` (the slowest assignment: three
hidden tests, each recomputing the student's variant in a fresh process) stamped as 30
different students, so every kernel runs another variant. Each is graded in its own worker and
kernel (``vmkit grade --jobs 2``); feedback pages are written too, as in a course. The goal:
the sandbox adds at most 1 s per submission.

    .venv/bin/python benchmarks/bench_grade.py [--n 30] [--jobs 2] [--assignment ID]
                                               [--sandbox both|on|off]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import nbformat

from vmkit.homework.grade import Settings, grade
from vmkit.homework.release import ROOT, release_notebook, write


def run(paths, args, sandbox: bool, feedback: Path) -> tuple[float, list]:
    settings = Settings(timeout=120, feedback=feedback, sandbox=sandbox)
    t = time.perf_counter()
    results = grade(paths, settings, jobs=args.jobs)
    return time.perf_counter() - t, results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30, help="submissions (default 30)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--assignment", default="hw01-rings-and-traps",
                    help="assignment id (a solutions/ notebook)")
    ap.add_argument("--sandbox", choices=("both", "on", "off"), default="both",
                    help="grade with the sandbox, without it, or both in turn (default both)")
    args = ap.parse_args()
    solution = nbformat.read(ROOT / "solutions" / f"{args.assignment}.ipynb", as_version=4)
    stamp = release_notebook(solution, args.assignment).metadata.vmkit
    modes = {"both": [False, True], "on": [True], "off": [False]}[args.sandbox]
    per = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.n):
            nb = nbformat.from_dict(solution)
            nb.metadata["vmkit"] = {**stamp, "student_id": f"student{i:03d}"}
            path = Path(tmp) / f"student{i:03d}.ipynb"
            write(nb, path)
            paths.append(path)
        for sandbox in modes:
            dt, results = run(paths, args, sandbox, Path(tmp) / f"feedback-{sandbox}")
            auto = [r for res in results for r in res.rows if r.status != "manual"]
            full = sum(all(r.status == "ok" for r in res.rows if r.status != "manual")
                       for res in results)
            per[sandbox] = dt / args.n
            print(f"{args.assignment}: {args.n} submissions, --jobs {args.jobs} "
                  f"({os.cpu_count()} CPUs here), {'sandbox' if sandbox else '--no-sandbox'}: "
                  f"{dt:.1f} s wall, {dt / args.n:.2f} s per submission, "
                  f"{full}/{args.n} at full marks, {len(auto)} autograded rows", flush=True)
    if len(per) == 2:
        print(f"the sandbox adds {per[True] - per[False]:+.2f} s per submission "
              "(goal: at most 1 s)")


if __name__ == "__main__":
    main()
