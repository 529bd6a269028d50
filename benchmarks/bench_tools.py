"""The kit's tools, timed: the assembler on a kernel-sized program (2,000 lines, 250 labels),
the assembler expanding a thousand macro invocations, and ``vmkit.classify_all()`` (the
experiment that classifies every instruction form) cold and cached.

These were timed assertions in the tests once; a timing depends on the machine's load, so
the figures are measured here and the tests check only what the tools produce.

    .venv/bin/python benchmarks/bench_tools.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import vmkit
from vmkit.isa.asm import assemble

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "helpers"))
from asm_programs import kernel_sized_program, macro_heavy_program  # noqa: E402


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    rows = [
        ("assemble 2,000 lines, 250 labels", timed(lambda: assemble(kernel_sized_program()))),
        ("assemble 1,000 macro invocations", timed(lambda: assemble(macro_heavy_program()))),
        ("classify_all(), first call", timed(vmkit.classify_all)),
        ("classify_all(), cached", timed(vmkit.classify_all)),
    ]
    for what, dt in rows:
        print(f"{what:<36} {dt * 1000:>9.1f} ms")


if __name__ == "__main__":
    main()
