"""The ``vmkit`` command.

    vmkit asm FILE.s                  print the listing of an assembly file
    vmkit run GUEST [--monitor M]     run a guest under a monitor
    vmkit classify INSTR...           Popek-Goldberg classes of instructions
    vmkit compare GUEST...            cycles of guests under every monitor
    vmkit release                     generate exercises/ from solutions/
    vmkit grade NOTEBOOK...           grade submitted notebooks

Every command has ``--help`` and exits non-zero with a one-line message on bad input.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

__all__ = ["main", "build_parser"]

MONITORS = ("native", "te", "bt", "hw", "pv")


def _fail(command: str, message: str, code: int) -> int:
    print(f"vmkit {command}: {message}", file=sys.stderr)
    return code


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _cmd_asm(args: argparse.Namespace) -> int:
    from vmkit.errors import AssemblyError

    try:
        with open(args.file, encoding="utf-8") as f:
            source = f.read()
    except OSError as e:
        return _fail("asm", f"cannot read {args.file}: {e.strerror or e}", 1)
    try:
        import vmkit

        assemble = vmkit.assemble
    except (ImportError, AttributeError):
        return _fail("asm", "the assembler is not yet available", 2)
    try:
        prog = assemble(source, base=args.base)
    except AssemblyError as e:
        where = e.file if getattr(e, "file", "<input>") not in ("", "<input>") else args.file
        message = getattr(e, "message", None) or str(e)
        print(f"{where}:{e.line}:{e.column}: {_one_line(message)}", file=sys.stderr)
        return 1
    print(prog.listing())
    return 0


def _not_yet(command: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return _fail(command, "not yet available", 2)

    return run


def _address(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an address: {text!r}") from None
    if not 0 <= value < 1 << 32:
        raise argparse.ArgumentTypeError(f"address out of 32-bit range: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {_one_line(message)} (try {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from vmkit import __version__

    parser = _Parser(
        prog="vmkit", description="A teaching kit for virtual machine monitors.")
    parser.add_argument("--version", action="version", version=f"vmkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("asm", help="assemble a file and print its listing",
                       description="Assemble FILE and print its listing.")
    p.add_argument("file", metavar="FILE", help="assembly source (.s)")
    p.add_argument("--base", type=_address, default=0x1000,
                   help="load address (default: 0x1000)")
    p.set_defaults(func=_cmd_asm)

    p = sub.add_parser("run", help="run a guest under a monitor",
                       description="Run GUEST and print its console and statistics.")
    p.add_argument("guest", metavar="GUEST", help="guest name (see vmkit.guests.names())")
    p.add_argument("--monitor", choices=MONITORS, default="native",
                   help="monitor to run it under (default: native)")
    p.add_argument("--max-steps", type=_positive_int, default=1_000_000, metavar="N",
                   help="stop after N instructions (default: 1000000)")
    p.add_argument("--trace", action="store_true", help="print the event trace")
    p.set_defaults(func=_not_yet("run"))

    p = sub.add_parser("classify", help="Popek-Goldberg classes of instructions",
                       description="Classify each INSTR by experiment (privileged, sensitive, "
                                   "innocuous).")
    p.add_argument("instr", metavar="INSTR", nargs="+", help='an instruction, e.g. "popfd"')
    p.set_defaults(func=_not_yet("classify"))

    p = sub.add_parser("compare", help="compare guests under every monitor",
                       description="Print the cycles of each GUEST under every monitor.")
    p.add_argument("guest", metavar="GUEST", nargs="+", help="guest name")
    p.add_argument("--preset", metavar="NAME", help="cost model preset (e.g. p4-2006)")
    p.set_defaults(func=_not_yet("compare"))

    p = sub.add_parser("release", help="generate exercises/ from solutions/",
                       description="Generate exercises/ from solutions/.")
    p.set_defaults(func=_not_yet("release"))

    p = sub.add_parser("grade", help="grade submitted notebooks",
                       description="Grade each NOTEBOOK in its own kernel.")
    p.add_argument("notebook", metavar="NOTEBOOK", nargs="+", help="submitted .ipynb")
    p.add_argument("--timeout", type=_positive_float, metavar="S",
                   help="seconds allowed per notebook")
    p.add_argument("--csv", metavar="FILE", help="write the grades as CSV to FILE")
    p.set_defaults(func=_not_yet("grade"))

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if args.command is None:
        print("vmkit: missing COMMAND (try vmkit --help)", file=sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
