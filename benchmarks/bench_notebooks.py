"""How long do the lecture notebooks take to execute, per-instruction and in block mode? (issue 18)

Each lecture notebook (``notebooks/NN-*.ipynb``) is executed on a copy in a fresh kernel, as
``python -m vmkit.nbtools execute`` does, once with ``VMKIT_BLOCKS=0`` (per-instruction mode)
and once with ``VMKIT_BLOCKS=1`` (block mode), in one run. What is reported is the kernel's CPU
time (user + system of the kernel process: the machine's other load does not count), and
whether the executed copy is byte-identical to the committed notebook (a speed-up that changes
an output is a bug).

``--before DIR`` also executes the notebooks of another checkout of the kit (DIR, e.g. a
``git worktree`` of an earlier commit) with its own code, in the same run: the figures before
and after a change side by side. Given several times, each checkout gets its own columns,
named after its folder. Every checkout's modules are compiled to bytecode first (as a first
import does where Python may write ``__pycache__``), so that no kernel compiles the kit's sources.

    python benchmarks/bench_notebooks.py [--before DIR ...] [--only 01,08] [--modes 0,1]
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def execute(tree: Path, book: Path, blocks: str, scratch: Path) -> tuple[float, float, str]:
    """Execute ``book`` (a notebook of checkout ``tree``) on a copy, with ``tree``'s code in the
    kernel -> (kernel CPU seconds, wall seconds, "identical" or what differed)."""
    from vmkit.nbtools import hygiene

    copy = scratch / book.name
    shutil.copy(book, copy)
    saved = {k: os.environ.get(k) for k in ("VMKIT_BLOCKS", "PYTHONPATH")}
    os.environ["VMKIT_BLOCKS"] = blocks
    os.environ["PYTHONPATH"] = str(tree)     # the kernel imports this checkout's vmkit
    t, c = time.perf_counter(), _children_cpu()
    try:
        hygiene.execute_notebook(copy)
        same = "identical" if copy.read_bytes() == book.read_bytes() else "outputs differ"
    except Exception as ex:     # noqa: BLE001 - reported, the other notebooks still run
        same = f"error: {type(ex).__name__}: {str(ex).splitlines()[0][:120]}"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return _children_cpu() - c, time.perf_counter() - t, same


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench_notebooks.py", description=__doc__.split("\n")[0])
    p.add_argument("--before", type=Path, action="append", default=[],
                   help="another checkout of the kit to time beside this one (its notebooks, "
                   "with its code); may be given several times (each column is named after "
                   "the checkout's folder)")
    p.add_argument("--only", default="", help="comma-separated notebook numbers (default: all)")
    p.add_argument("--modes", default="0,1", help="VMKIT_BLOCKS values to run (default 0,1)")
    a = p.parse_args(argv)
    trees = []
    for d in a.before:
        if not (d / "notebooks").is_dir():
            print(f"bench_notebooks.py: --before {d}: no notebooks/ folder there",
                  file=sys.stderr)
            return 2
        label = "before" if len(a.before) == 1 else d.resolve().name[:10]
        trees.append((label, d.resolve()))
    trees.append(("after", ROOT))
    only = {s.strip() for s in a.only.split(",") if s.strip()}
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    books = [b.name for b in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
             if not only or b.name[:2] in only]
    for _, tree in trees:
        # every checkout's modules compiled to bytecode first, as Python does on a first
        # import where it may write __pycache__: a machine with PYTHONDONTWRITEBYTECODE set
        # would otherwise compile the kit's sources in every kernel, and a checkout that has a
        # __pycache__ and one that has none would not be timed alike
        compileall.compile_dir(str(tree / "vmkit"), quiet=1)
    totals: dict = {}
    bad = []
    print(f"{'notebook':34}" + "".join(f" {t + ' ' + ('blocks' if m == '1' else 'per-insn'):>18}"
                                       for t, _ in trees for m in modes)
          + "   (kernel CPU seconds)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in books:
            row = []
            for label, tree in trees:
                for m in modes:
                    d = Path(tmp) / f"{label}-{m}"
                    d.mkdir(exist_ok=True)
                    cpu, wall, same = execute(tree, tree / "notebooks" / name, m, d)
                    totals[(label, m)] = totals.get((label, m), 0.0) + cpu
                    row.append(f" {cpu:>18.1f}")
                    if same != "identical":
                        bad.append(f"{label} VMKIT_BLOCKS={m} {name}: {same}")
            print(f"{name:34}" + "".join(row), flush=True)
    print(f"{'total':34}" + "".join(f" {totals[(t, m)]:>18.1f}" for t, _ in trees for m in modes))
    first = (trees[0][0], modes[0])
    for key, v in totals.items():
        if key != first and v:
            print(f"{first[0]} VMKIT_BLOCKS={first[1]} / {key[0]} VMKIT_BLOCKS={key[1]}: "
                  f"{totals[first] / v:.2f}x")
    for b in bad:
        print(b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
