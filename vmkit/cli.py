"""The ``vmkit`` command.

    vmkit asm FILE.s                  print the listing of an assembly file
    vmkit run GUEST [--monitor M]     run a guest under a monitor
    vmkit classify INSTR...           Popek-Goldberg classes of instructions
    vmkit compare GUEST...            cycles of guests under every monitor
    vmkit release                     generate exercises/ from solutions/
    vmkit grade NOTEBOOK...           grade submitted notebooks
    vmkit autograder gradescope A     build a Gradescope autograder zip
    vmkit course copy DIR             copy the lecture notebooks and exercises into DIR
    vmkit course link PATH --hub --repo   the nbgitpuller link that hands PATH out on a hub
    vmkit slides [NOTEBOOK...]        lecture notebooks as offline reveal.js decks
    vmkit debug GUEST [--monitor M]   the debugger (break, watch, continue, reverse-continue...)
    vmkit site OUTDIR                 the course website (lectures, exercises, docs), offline

Every command has ``--help`` and exits non-zero with a one-line message on bad input.

Exit codes (``EXIT_CODES``; ``vmkit --help`` and the README list them too):

    0  success (for ``run``: the guest powered off or halted)
    1  bad input: an unreadable file, assembly errors, an unknown guest, monitor or preset,
       a bad parameter, a bad command in a ``debug`` script
    2  bad usage: an unknown command or option, a missing argument
    3  ``run``: stopped by ``--max-steps`` before the guest stopped
    4  ``run``: the guest crashed (a triple fault, an instruction outside the subset)
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

__all__ = ["main", "build_parser"]

#: the names of vmkit.vmm.registry.MONITORS, spelt out so that ``--help`` needs no simulator
#: import (a test checks that they agree)
MONITORS = ("native", "te", "bt", "hw", "pv")

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_MAX_STEPS, EXIT_CRASH = 0, 1, 2, 3, 4
#: exit code -> what it means (printed by ``vmkit --help`` and ``vmkit run --help``)
EXIT_CODES = {
    EXIT_OK: "success (run: the guest powered off or halted)",
    EXIT_INPUT: "bad input (unreadable file, assembly errors, unknown guest, monitor or "
                "preset, bad parameter, a bad command in a debug script)",
    EXIT_USAGE: "bad usage (unknown command or option, missing argument)",
    EXIT_MAX_STEPS: "run: stopped by --max-steps before the guest stopped",
    EXIT_CRASH: "run: the guest crashed (triple fault, instruction outside the subset)",
}

#: at most this many errors of one file are printed by ``vmkit asm``
ASM_MAX_ERRORS = 20


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
        import os

        from vmkit.guests import GUEST_DIR
        prog = assemble(source, base=args.base, filename=args.file,
                        include_path=[os.path.dirname(os.path.abspath(args.file)), GUEST_DIR],
                        max_errors=ASM_MAX_ERRORS)
    except AssemblyError as first:
        errors = getattr(first, "errors", None) or [first]
        for e in errors:
            where = e.file if getattr(e, "file", "<input>") not in ("", "<input>") else args.file
            message = getattr(e, "message", None) or str(e)
            print(f"{where}:{e.line}:{e.column}: {_one_line(message)}", file=sys.stderr)
        if getattr(first, "truncated", False):
            print(f"vmkit asm: stopped after {len(errors)} errors", file=sys.stderr)
        elif len(errors) > 1:
            print(f"vmkit asm: {len(errors)} errors", file=sys.stderr)
        return EXIT_INPUT
    print(prog.listing())
    return 0


def _parse_params(items) -> dict:
    params = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param takes NAME=VALUE, got {item!r}")
        try:
            params[key] = int(value, 0)
        except ValueError:
            raise ValueError(f"--param {key}: not an integer: {value!r}") from None
    return params


def _guest_image(args: argparse.Namespace, params: dict):
    """The GuestImage of ``args.guest`` (a guest name, or a bare-metal FILE.s); raises
    ValueError with a one-line message for a file that cannot be used."""
    import os

    from vmkit import guests
    if args.guest.endswith(".s") or os.path.sep in args.guest:
        try:
            with open(args.guest, encoding="utf-8") as f:
                source = f.read()
        except OSError as e:
            raise ValueError(f"cannot read {args.guest}: {e.strerror or e}") from None
        if params:
            raise ValueError("--param applies to named guests, not to a .s file")
        return guests.from_source(source, name=os.path.basename(args.guest),
                                  filename=args.guest)
    return guests.build(args.guest, paravirtual=args.monitor == "pv", **params)


def _cmd_run(args: argparse.Namespace) -> int:
    from vmkit.errors import AssemblyError, VmkitError
    from vmkit.trace import Trace

    try:
        params = _parse_params(args.param)
    except ValueError as e:
        return _fail("run", str(e), 1)
    try:
        try:
            image = _guest_image(args, params)
        except ValueError as e:
            return _fail("run", str(e), 1)
        from vmkit.vmm.registry import MONITORS as registry
        cls = registry[args.monitor]
        trace = Trace(instructions=args.trace, maxlen=args.trace_events if args.trace else 20_000)
        monitor = cls(image, trace=trace)
        result = monitor.run(max_steps=args.max_steps)
    except AssemblyError as e:
        print(f"{e.file}:{e.line}:{e.column}: {_one_line(e.message)}", file=sys.stderr)
        return 1
    except VmkitError as e:
        return _fail("run", _one_line(e), 1)
    if args.trace:
        for ev in trace:
            print(_format_event(ev))
        print()
    console = monitor.console
    sys.stdout.write(console)
    if console and not console.endswith("\n"):
        sys.stdout.write("\n")
    line = f"-- {result.reason} after {result.steps} steps"
    if result.detail:
        line += f": {result.detail}"
    if result.reason == "crash" and result.instruction:
        line += f" (at {result.eip:#010x}: {result.instruction})"
    print(line)
    stats = monitor.stats
    parts = []
    for k, v in stats.items():
        if isinstance(v, dict):
            if v:
                parts.append(f"{k}: " + ", ".join(f"{n}={c}" for n, c in sorted(v.items())))
        else:
            parts.append(f"{k}={v}")
    print("-- " + " ".join(p for p in parts if "=" in p and ": " not in p))
    for p in parts:
        if ": " in p:
            print("-- " + p)
    cycles = monitor.cycles
    print(f"-- cycles ({monitor.costs.name}): {sum(cycles.values()):,.0f} = " + ", ".join(
        f"{k} {v:,.0f}" for k, v in cycles.most_common()))
    if result.reason in ("poweroff", "halt"):
        return EXIT_OK
    if result.reason == "max_steps":
        print(f"vmkit run: the guest did not stop within --max-steps {args.max_steps}",
              file=sys.stderr)
        return EXIT_MAX_STEPS
    if result.reason == "crash":
        return EXIT_CRASH
    return EXIT_INPUT   # no other reason is expected from a run without breakpoints


def _cmd_debug(args: argparse.Namespace) -> int:
    from vmkit.errors import AssemblyError, VmkitError

    try:
        params = _parse_params(args.param)
        image = _guest_image(args, params)
    except ValueError as e:
        return _fail("debug", str(e), 1)
    except AssemblyError as e:
        print(f"{e.file}:{e.line}:{e.column}: {_one_line(e.message)}", file=sys.stderr)
        return 1
    except VmkitError as e:
        return _fail("debug", _one_line(e), 1)
    lines = None
    if args.x:
        try:
            with open(args.x, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            return _fail("debug", f"cannot read {args.x}: {e.strerror or e}", 1)
    from vmkit import debugshell
    from vmkit.debug import Debugger
    from vmkit.vmm.registry import MONITORS as registry
    try:
        dbg = Debugger(registry[args.monitor](image), budget=args.budget << 20)
    except VmkitError as e:
        return _fail("debug", _one_line(e), 1)
    shell = debugshell.Shell(dbg)
    if lines is not None:
        return debugshell.run_script(shell, lines, args.x)
    return debugshell.interactive(shell)


def _format_event(ev) -> str:
    from dataclasses import fields
    vals = []
    for f in fields(ev):
        if f.name in ("step",):
            continue
        v = getattr(ev, f.name)
        if f.name == "vm" and v == 0:
            continue
        if isinstance(v, int) and f.name in ("address", "eip", "handler"):
            v = f"{v:#010x}"
        vals.append(f"{f.name}={v}")
    return f"{ev.step:>9} {ev.kind:<12} " + " ".join(vals)


def _cmd_classify(args: argparse.Namespace) -> int:
    """One instruction: its classes and the evidence; several: a table; ``all``: the whole
    subset (``vmkit.classify_all()``)."""
    from vmkit.errors import VmkitError
    from vmkit.vmm import classify as cl

    if [i.strip().lower() for i in args.instr] == ["all"]:
        table = cl.classify_all()
        print(repr(table))
        print(repr(cl.theorem1(table)))
        print(repr(cl.theorem3(table)))
        return 0
    rows = []
    for text in args.instr:
        try:
            rows.append(cl.classify(text))
        except VmkitError as e:
            return _fail("classify", _one_line(e), 1)
    if len(rows) == 1:
        r = rows[0]
        print(_classify_line(r, len(r.instruction)))
        for e in r.evidence:
            print(f"    {e}")
        return 0
    w = max(len(r.instruction) for r in rows)
    for r in rows:
        print(_classify_line(r, w))
    return 0


def _classify_line(r, width: int) -> str:
    s = f"{r.instruction:<{width}}  {r.classes}"
    if r.violates_theorem1:
        s += "  (sensitive but not privileged: breaks Theorem 1)"
    return s


def _cmd_compare(args: argparse.Namespace) -> int:
    from vmkit.errors import VmkitError
    from vmkit.vmm.compare import compare
    from vmkit.vmm.costs import CostModel

    try:
        params = _parse_params(args.param)
    except ValueError as e:
        return _fail("compare", str(e), 1)
    if args.max_steps < 1:
        return _fail("compare", "--max-steps must be positive", 1)
    try:
        # the same named model as `vmkit run`, the monitors and the notebooks
        costs = CostModel.preset(args.preset) if args.preset else CostModel.default()
        guests = [(g, params) if params else g for g in args.guest]
        table = compare(guests, monitors=args.monitor, costs=costs, max_steps=args.max_steps)
    except VmkitError as e:
        return _fail("compare", _one_line(e), 1)
    print(table.to_text())
    return 0


#: what to say when the instructor's solutions are not where they were looked for
NO_SOLUTIONS = ("no solutions/ here: the instructor's solution notebooks stay in the course's "
                "checkout (an installed kit carries only the exercises); give them with "
                "--source DIR")


def _cmd_site(args: argparse.Namespace) -> int:
    from vmkit import site

    return site.run(args.outdir, prog="vmkit site")


def _cmd_release(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vmkit.homework.release import default_source, release

    if args.source and not Path(args.source).is_dir():
        return _fail("release", f"{args.source}: no such folder", 1)
    if not args.source and not default_source().is_dir():
        return _fail("release", NO_SOLUTIONS, 1)
    source = Path(args.source) if args.source else default_source()
    if not any(source.glob("*.ipynb")):
        return _fail("release", f"{source}: no solution notebooks (*.ipynb) there", 1)
    for path in release(args.source, args.dest):
        print(path)
    return 0


def _cmd_course(args: argparse.Namespace) -> int:
    from vmkit.errors import VmkitError
    from vmkit.resources import copy_course

    try:
        copied, kept = copy_course(args.dir, force=args.force)
    except (VmkitError, OSError) as e:
        return _fail("course copy", _one_line(e), 1)
    for path in copied:
        print(path)
    for path in kept:
        print(f"vmkit course copy: kept {path} (already there; --force overwrites)",
              file=sys.stderr)
    return 0


def _cmd_course_link(args: argparse.Namespace) -> int:
    from vmkit.errors import VmkitError
    from vmkit.resources import pull_link

    try:
        print(pull_link(args.hub, args.repo, args.path, branch=args.branch))
    except VmkitError as e:
        return _fail("course link", _one_line(e), 1)
    return 0


def _cmd_slides(args: argparse.Namespace) -> int:
    from vmkit.errors import VmkitError
    from vmkit.nbtools.command import make_slides

    try:
        decks = make_slides(args.notebook, args.output_dir)
    except VmkitError as e:
        return _fail("slides", _one_line(e), 1)
    for deck in decks:
        print(deck)
    return 0


def _cmd_grade(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vmkit.homework.grade import (CsvWriter, IdentityError, Settings, grade, identify,
                                      read_roster, summary)
    from vmkit.homework.sandbox import SandboxUnavailable, check_available

    settings = Settings(timeout=args.timeout, memory_mb=args.memory,
                        feedback=Path(args.feedback) if args.feedback else None,
                        sandbox=not args.no_sandbox, assignment=args.assignment,
                        student=args.student)
    if args.source:
        if not Path(args.source).is_dir():
            return _fail("grade", f"{args.source}: no such folder", 1)
        settings.source = Path(args.source)
    elif not settings.source.is_dir():
        return _fail("grade", NO_SOLUTIONS, 1)
    args.notebook = list(args.notebook) + list(args.notebook_files)
    if not args.notebook:
        return _fail("grade", "no NOTEBOOK given", 2)
    missing = [n for n in args.notebook if not Path(n).is_file()]
    if missing:
        return _fail("grade", f"{missing[0]!r}: no such file", 1)
    try:
        if args.roster:
            settings.roster = read_roster(args.roster)
        subs = [identify(n, settings) for n in args.notebook]
    except IdentityError as e:
        return _fail("grade", str(e), 1)
    try:
        if settings.sandbox:
            check_available()
    except SandboxUnavailable as e:
        return _fail("grade", str(e), 2)

    with CsvWriter(args.csv) as out:  # rows are written as the results come in
        def report(res) -> None:
            for message in res.messages:
                print(f"vmkit grade: {message}", file=sys.stderr)
            out.add(res)

        results = grade(subs, settings, jobs=args.jobs, on_result=report)
    print(f"vmkit grade: {summary(results)}", file=sys.stderr)
    return 0


def _cmd_autograder(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vmkit.homework.gradescope import build
    from vmkit.homework.reference import ReferenceError
    from vmkit.homework.release import ROOT

    source = Path(args.source) if args.source else ROOT / "solutions"
    if not source.is_dir():
        return _fail("autograder", f"{source}: no such folder", 1)
    out = Path(args.out or f"{args.assignment}-gradescope.zip")
    try:
        path = build(args.assignment, source, out, id_field=args.id_field)
    except (FileNotFoundError, ValueError, ReferenceError) as e:
        return _fail("autograder", str(e), 1)
    print(path)
    return 0


def _grade_argv(argv: list[str]) -> list[str]:
    """``vmkit grade``'s arguments with every existing notebook file that looks like an
    option (``--x.ipynb``, ``--source=x.ipynb``) passed as ``--notebook-file=FILE``, so that
    it is graded as a notebook and never taken for an option (nor aborts the batch)."""
    import os

    if not argv or argv[0] != "grade" or "--" in argv:
        return argv
    out = [argv[0]]
    for tok in argv[1:]:
        if tok.startswith("-") and tok.endswith(".ipynb") and os.path.isfile(tok):
            out.append(f"--notebook-file={tok}")
        else:
            out.append(tok)
    return out


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


def _exit_codes_help() -> str:
    return "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())


def build_parser() -> argparse.ArgumentParser:
    from vmkit import __version__

    parser = _Parser(
        prog="vmkit", description="A teaching kit for virtual machine monitors.",
        epilog=_exit_codes_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vmkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("asm", help="assemble a file and print its listing",
                       description="Assemble FILE and print its listing.")
    p.add_argument("file", metavar="FILE", help="assembly source (.s)")
    p.add_argument("--base", type=_address, default=0x1000,
                   help="load address (default: 0x1000)")
    p.set_defaults(func=_cmd_asm)

    p = sub.add_parser("run", help="run a guest under a monitor",
                       description="Run GUEST and print its console and statistics.",
                       epilog=_exit_codes_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("guest", metavar="GUEST",
                   help="guest name (see vmkit.guests.names()) or a bare-metal FILE.s")
    p.add_argument("--monitor", choices=MONITORS, default="native",
                   help="monitor to run it under (default: native)")
    p.add_argument("--max-steps", type=_positive_int, default=1_000_000, metavar="N",
                   help="stop after N instructions (default: 1000000)")
    p.add_argument("--trace", action="store_true",
                   help="print the event trace (every instruction retired, interrupts, ...)")
    p.add_argument("--trace-events", type=_positive_int, default=2000, metavar="N",
                   help="with --trace: keep the last N events (default: 2000)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="a guest parameter, e.g. --param iterations=1000 (repeatable)")
    p.set_defaults(func=_cmd_run)

    from vmkit.debugshell import COMMANDS as debug_commands   # stdlib only: cheap
    p = sub.add_parser("debug", help="debug a guest under a monitor",
                       description="Debug GUEST under a monitor: breakpoints, watchpoints,\n"
                                   "event breaks, reverse execution, live tables. Commands come\n"
                                   "from the terminal or, one a line, from -x FILE:\n\n" +
                                   "\n".join(f"  {usage}" for _, usage in
                                             debug_commands.values()),
                       epilog=_exit_codes_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("guest", metavar="GUEST",
                   help="guest name (see vmkit.guests.names()) or a bare-metal FILE.s")
    p.add_argument("--monitor", choices=MONITORS, default="native",
                   help="monitor to run it under (default: native)")
    p.add_argument("-x", metavar="FILE", help="run the debugger commands in FILE (one a "
                                              "line), then exit")
    p.add_argument("--budget", type=_positive_int, default=64, metavar="MiB",
                   help="memory for reverse execution's checkpoints (default 64)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="a guest parameter, e.g. --param iterations=1000 (repeatable)")
    p.set_defaults(func=_cmd_debug)

    p = sub.add_parser("classify", help="Popek-Goldberg classes of instructions",
                       description="Classify each INSTR by experiment (privileged, sensitive, "
                                   "innocuous).")
    p.add_argument("instr", metavar="INSTR", nargs="+", help='an instruction, e.g. "popfd"')
    p.set_defaults(func=_cmd_classify)

    p = sub.add_parser("compare", help="compare guests under every monitor",
                       description="Print the cycles of each GUEST under every monitor.")
    p.add_argument("guest", metavar="GUEST", nargs="+", help="guest name")
    p.add_argument("--preset", metavar="NAME",
                   help="cost model preset (default: p4-2006, the one `vmkit run` and the "
                        "notebooks use; also modern-2020)")
    p.add_argument("--monitor", metavar="M", action="append",
                   help="a monitor to include (repeatable; default: every monitor; native "
                        "is always run as the reference; also hw-shadow)")
    p.add_argument("--param", metavar="NAME=VALUE", action="append",
                   help="a guest parameter for every GUEST, e.g. --param iterations=100")
    p.add_argument("--max-steps", type=int, default=5_000_000, metavar="N",
                   help="instructions allowed per run (default 5000000)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("release", help="generate exercises/ from solutions/",
                       description="Generate exercises/ from solutions/: solution regions "
                                   "become stubs, hidden tests and outputs go, locked cells "
                                   "get checksums, each notebook is stamped with its "
                                   "assignment id and the kit version.")
    p.add_argument("--source", metavar="DIR", help="solution notebooks (default solutions/)")
    p.add_argument("--dest", metavar="DIR", help="where the exercises go (default: exercises/ "
                                                 "beside the solutions' folder)")
    p.set_defaults(func=_cmd_release)

    p = sub.add_parser("grade", help="grade submitted notebooks",
                       description="Grade each NOTEBOOK in its own kernel, in its own "
                                   "sandbox. The student and the assignment come from the "
                                   "instructor: --student/--roster/--assignment or the "
                                   "nbgrader layout submitted/<student>/<assignment>/.")
    p.add_argument("notebook", metavar="NOTEBOOK", nargs="*", help="submitted .ipynb (a "
                   "file named like an option is taken as a file when it exists; `--` works "
                   "too)")
    p.add_argument("--notebook-file", dest="notebook_files", action="append", default=[],
                   help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=_positive_float, default=120.0, metavar="S",
                   help="seconds allowed per notebook (default 120)")
    p.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                   help="notebooks graded at once, one process and kernel each (default 1)")
    p.add_argument("--csv", metavar="FILE", help="write the grades as CSV to FILE "
                                                 "(default: standard output)")
    p.add_argument("--feedback", metavar="DIR", help="write an HTML feedback page per "
                                                     "submission into DIR")
    p.add_argument("--source", metavar="DIR", help="the instructor's solution notebooks "
                                                   "(default solutions/)")
    p.add_argument("--memory", type=_positive_int, default=2048, metavar="MB",
                   help="address-space limit of each kernel (default 2048)")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run submissions without the bubblewrap sandbox, as the grading user "
                        "with its files and network (see the README before you do)")
    p.add_argument("--assignment", metavar="NAME",
                   help="the assignment of every NOTEBOOK (default: from the nbgrader layout "
                        "submitted/<student>/<assignment>/)")
    p.add_argument("--student", metavar="ID",
                   help="the student id of every NOTEBOOK (default: from --roster or the "
                        "nbgrader layout; never from the notebook)")
    p.add_argument("--roster", metavar="FILE",
                   help="a CSV file 'path,student': each submission file or folder (relative "
                        "to FILE's folder) and its student id")
    p.set_defaults(func=_cmd_grade)

    p = sub.add_parser("autograder", help="build an autograder for another platform",
                       description="Build an autograder for a grading platform.")
    asub = p.add_subparsers(dest="platform", metavar="PLATFORM", required=True)
    g = asub.add_parser("gradescope", help="the zip that Gradescope's autograder expects",
                        description="Build ASSIGNMENT's Gradescope autograder zip (setup.sh, "
                                    "run_autograder, the kit, the instructor's notebook and "
                                    "reference answers).")
    g.add_argument("assignment", metavar="ASSIGNMENT", help="e.g. hw04-translation-cache")
    g.add_argument("--source", metavar="DIR", help="the instructor's solution notebooks, with "
                                                   "reference/ (default solutions/)")
    g.add_argument("--out", metavar="FILE", help="the zip (default ASSIGNMENT-gradescope.zip)")
    g.add_argument("--id-field", default="email", choices=["email", "sid", "id", "name"],
                   help="the field of Gradescope's user metadata that is the student id, "
                        "which chooses the variant (default email)")
    g.set_defaults(func=_cmd_autograder)

    p = sub.add_parser("course", help="the course material of this kit",
                       description="The course material that comes with the kit (checkout or "
                                   "installed wheel).")
    csub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = csub.add_parser("copy", help="copy the lecture notebooks and exercises into DIR",
                        description="Copy the lecture notebooks (DIR/notebooks/) and the "
                                    "exercises (DIR/exercises/) into DIR, for a student or a "
                                    "hub's course repository. Files already there are kept.")
    c.add_argument("dir", metavar="DIR", help="the folder to copy into (made if missing)")
    c.add_argument("--force", action="store_true", help="overwrite files already in DIR")
    c.set_defaults(func=_cmd_course)
    c = csub.add_parser("link", help="the nbgitpuller link that hands out PATH on a hub",
                        description="Print the nbgitpuller link to PATH of the course "
                                    "repository REPO on the JupyterHub at HUB: a student's "
                                    "click clones (first visit) or pulls it into their home "
                                    "and opens PATH in JupyterLab.")
    c.add_argument("path", metavar="PATH", nargs="?", default="notebooks",
                   help="a file or folder of the repository (default: notebooks)")
    c.add_argument("--hub", required=True, metavar="URL", help="e.g. https://hub.example.org")
    c.add_argument("--repo", required=True, metavar="URL",
                   help="the course repository, e.g. https://github.com/me/vmkit-course")
    c.add_argument("--branch", default="main", help="default: main")
    c.set_defaults(func=_cmd_course_link)

    p = sub.add_parser("slides", help="lecture notebooks as offline reveal.js decks",
                       description="Export notebooks (default: the lecture notebooks) to "
                                   "reveal.js decks that load nothing from the network; the "
                                   "pinned reveal.js, require.js and MathJax are installed "
                                   "with npm once and copied into DIR/assets.")
    p.add_argument("notebook", metavar="NOTEBOOK", nargs="*",
                   help="a notebook to export (default: the lecture notebooks)")
    p.add_argument("-o", "--output-dir", metavar="DIR",
                   help="where the decks go (default: build/slides in a checkout, else "
                        "./slides)")
    p.set_defaults(func=_cmd_slides)
    p = sub.add_parser("site", help="build the course website (static, works offline)",
                       description="Build the course website into OUTDIR: the lectures with "
                                   "their outputs and pictures, the exercises (no solutions), "
                                   "the docs and the reference card, with an index, "
                                   "previous/next links and search. MathJax and every other "
                                   "asset are copied into OUTDIR/assets: open "
                                   "OUTDIR/index.html from disk, no network needed.")
    p.add_argument("outdir", metavar="OUTDIR", help="the folder to write (created if needed)")
    p.set_defaults(func=_cmd_site)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(_grade_argv(list(sys.argv[1:] if argv is None else argv)))
    except SystemExit as e:  # --help, --version, usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if args.command is None:
        print("vmkit: missing COMMAND (try vmkit --help)", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:  # `vmkit asm f.s | head`: the reader left; not an error
        import os
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
