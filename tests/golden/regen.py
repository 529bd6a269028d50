"""Regenerate the golden file: ``python -m tests.golden.regen [MONITOR ...]`` from the
repository's root (every monitor when none is named). Prints which cases changed.

A change that alters what a guest does under a monitor regenerates the golden file in a commit
that says why; a restructuring that is meant to change nothing must leave it identical.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from tests.golden import MONITORS, diff, dumps, path_of, record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.golden.regen",
                                description="Rewrite tests/golden/<monitor>.json.")
    p.add_argument("monitor", nargs="*", metavar="MONITOR",
                   help=f"monitors to regenerate (default: {' '.join(MONITORS)})")
    args = p.parse_args(argv)
    bad = [m for m in args.monitor if m not in MONITORS]
    if bad:
        p.error(f"unknown monitor {bad[0]!r}; expected one of {', '.join(MONITORS)}")
    # recorded per instruction (the reference); the tests replay it in block mode, the default
    os.environ["VMKIT_BLOCKS"] = "0"
    for m in args.monitor or MONITORS:
        t0 = time.perf_counter()
        rec = record(m)
        path = path_of(m)
        old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
        path.write_text(dumps(rec), encoding="utf-8")
        changes = diff(old, rec) if old is not None else ["(new file)"]
        print(f"{path.name}: {time.perf_counter() - t0:.1f} s, "
              f"{'unchanged' if not changes else f'{len(changes)} difference(s)'}")
        for line in changes:
            print(f"    {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
