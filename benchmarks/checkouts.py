"""The ``--before DIR`` and ``--repeat N`` options the timing scripts share: which checkouts of
the kit to time side by side, and how many fresh processes each gets."""

from __future__ import annotations

import sys
from pathlib import Path


def add_options(parser, repeat_help: str) -> None:
    """``--before DIR`` (another checkout's vmkit package, timed beside this one) and
    ``--repeat N`` (default 3)."""
    parser.add_argument("--before", type=Path, help="another checkout of the kit to time beside "
                        "this one (its vmkit package)")
    parser.add_argument("--repeat", type=int, default=3, help=repeat_help)


def checkouts(prog: str, args, root: Path) -> list[tuple[str, Path]]:
    """``[("before", DIR), ("after", root)]`` (or only "after"); a bad ``--before`` or
    ``--repeat`` ends the script with a one-line error and status 2."""
    if args.repeat < 1:
        print(f"{prog}: --repeat must be at least 1", file=sys.stderr)
        raise SystemExit(2)
    trees = []
    if args.before is not None:
        if not (args.before / "vmkit").is_dir():
            print(f"{prog}: --before {args.before}: no vmkit package there", file=sys.stderr)
            raise SystemExit(2)
        trees.append(("before", args.before.resolve()))
    trees.append(("after", root))
    return trees
