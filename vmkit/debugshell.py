"""``vmkit debug GUEST --monitor M [-x FILE]``: the debugger in a terminal.

Commands (one a line; ``#`` starts a comment; ``help`` lists them)::

    break WHERE [ring N] [vm N] [physical]   stop when EIP reaches WHERE (address or symbol)
    watch WHERE [SIZE] [write|read|rw] [physical]
    break-on KIND [FIELD=VALUE ...]          e.g. break-on vm_exit reason=CR_ACCESS
    delete [ID]                              remove one point (or all)
    continue [N]                             run to the next hit (at most N instructions)
    step [N]                                 run N instructions
    reverse-step [N]                         go back N instructions
    reverse-continue                         go back to the previous hit
    info gdt|idt|tss [real] | tab ADDR | vmcs | tc | points | registers
    x ADDR [N] [physical]                    N bytes of guest memory as hex
    quit

With ``-x FILE`` the commands come from FILE (a lecturer's replayable session); a bad command
stops it with one line ``FILE:LINE: what was wrong`` and exit code 1. Interactively, a bad
command prints one line and the prompt comes back.
"""

from __future__ import annotations

import difflib
import shlex
import sys

from vmkit.errors import VmkitError

__all__ = ["Shell", "COMMANDS", "run_script"]

#: command -> (aliases, usage)
COMMANDS = {
    "break": (("b",), "break WHERE [ring N] [vm N] [physical]"),
    "watch": (("w",), "watch WHERE [SIZE] [write|read|rw] [physical]"),
    "break-on": (("catch",), "break-on KIND [FIELD=VALUE ...]"),
    "delete": (("d",), "delete [ID]"),
    "continue": (("c", "cont"), "continue [N]"),
    "step": (("s", "si", "stepi"), "step [N]"),
    "reverse-step": (("rs", "rsi"), "reverse-step [N]"),
    "reverse-continue": (("rc",), "reverse-continue"),
    "info": (("i",), "info gdt|idt|tss [real] | tab ADDR | vmcs | tc | points | registers"),
    "x": ((), "x ADDR [N] [physical]"),
    "help": (("h", "?"), "help"),
    "quit": (("q", "exit"), "quit"),
}
_ALIAS = {a: name for name, (aliases, _) in COMMANDS.items() for a in aliases}
_INFO = ("gdt", "idt", "tss", "tab", "vmcs", "tc", "points", "breakpoints", "registers")


class CommandError(Exception):
    """A bad command: the message is one line."""


class Quit(Exception):
    pass


def _int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise CommandError(f"{what} must be a number, got {text!r}") from None


def _positive(text: str, what: str) -> int:
    v = _int(text, what)
    if v < 1:
        raise CommandError(f"{what} must be positive, got {text!r}")
    return v


class Shell:
    """Runs debugger commands on ``dbg`` and writes what they print to ``out``."""

    def __init__(self, dbg, out=None):
        self.dbg = dbg
        self.out = out if out is not None else sys.stdout

    def say(self, text: str) -> None:
        self.out.write(text + "\n")

    def execute(self, line: str) -> None:
        """Run one command line (raises CommandError with a one-line message, Quit)."""
        line = line.split("#", 1)[0].strip()
        if not line:
            return
        try:
            words = shlex.split(line)
        except ValueError as e:
            raise CommandError(f"cannot parse {line!r}: {e}") from None
        cmd, args = words[0].lower(), words[1:]
        cmd = _ALIAS.get(cmd, cmd)
        if cmd not in COMMANDS:
            close = difflib.get_close_matches(cmd, list(COMMANDS) + list(_ALIAS), n=1)
            hint = f"; did you mean {_ALIAS.get(close[0], close[0])!r}?" if close else \
                "; try help"
            raise CommandError(f"unknown command {words[0]!r}{hint}")
        try:
            getattr(self, "do_" + cmd.replace("-", "_"))(args)
        except VmkitError as e:
            raise CommandError(" ".join(str(e).split())) from None

    # ---- the commands ---------------------------------------------------------------------
    def do_help(self, args) -> None:
        for name, (aliases, usage) in COMMANDS.items():
            extra = f"  (also {', '.join(aliases)})" if aliases else ""
            self.say(f"  {usage}{extra}")

    def do_quit(self, args) -> None:
        raise Quit()

    def _options(self, args, flags=(), keyed=()) -> tuple[list, dict]:
        rest, opts = [], {}
        it = iter(args)
        for a in it:
            low = a.lower()
            if low in flags:
                opts[low] = True
            elif low in keyed:
                try:
                    opts[low] = _int(next(it), low)
                except StopIteration:
                    raise CommandError(f"{low} needs a number") from None
            else:
                rest.append(a)
        return rest, opts

    def do_break(self, args) -> None:
        rest, o = self._options(args, flags=("physical",), keyed=("ring", "vm"))
        if len(rest) != 1:
            raise CommandError(f"usage: {COMMANDS['break'][1]}")
        bp = self.dbg.break_at(rest[0], physical=o.get("physical", False),
                               ring=o.get("ring"), vm=o.get("vm"))
        self.say(bp.describe())

    def do_watch(self, args) -> None:
        rest, o = self._options(args, flags=("physical", "write", "read", "rw"),
                                keyed=("vm",))
        if not 1 <= len(rest) <= 2:
            raise CommandError(f"usage: {COMMANDS['watch'][1]}")
        size = _positive(rest[1], "SIZE") if len(rest) == 2 else 4
        on = "rw" if o.get("rw") or (o.get("read") and o.get("write")) else \
            "read" if o.get("read") else "write"
        w = self.dbg.watch(rest[0], size, on, physical=o.get("physical", False),
                           vm=o.get("vm"))
        self.say(w.describe())

    def do_break_on(self, args) -> None:
        if not args:
            raise CommandError(f"usage: {COMMANDS['break-on'][1]}")
        filt = {}
        for a in args[1:]:
            k, sep, v = a.partition("=")
            if not sep or not k:
                raise CommandError(f"a filter is FIELD=VALUE, got {a!r}")
            try:
                filt[k] = int(v, 0)
            except ValueError:
                filt[k] = {"true": True, "false": False}.get(v.lower(), v)
        e = self.dbg.break_on(args[0], **filt)
        self.say(e.describe())

    def do_delete(self, args) -> None:
        if len(args) > 1:
            raise CommandError(f"usage: {COMMANDS['delete'][1]}")
        self.dbg.delete(_int(args[0], "ID") if args else None)
        self.say("deleted" if args else "deleted every point")

    def _count(self, args, name) -> int | None:
        if len(args) > 1:
            raise CommandError(f"usage: {COMMANDS[name][1]}")
        return _positive(args[0], "N") if args else None

    def do_continue(self, args) -> None:
        self.say(str(self.dbg.cont(self._count(args, "continue"))))

    def do_step(self, args) -> None:
        self.say(str(self.dbg.step(self._count(args, "step") or 1)))

    def do_reverse_step(self, args) -> None:
        self.say(str(self.dbg.reverse_step(self._count(args, "reverse-step") or 1)))

    def do_reverse_continue(self, args) -> None:
        if args:
            raise CommandError(f"usage: {COMMANDS['reverse-continue'][1]}")
        self.say(str(self.dbg.reverse_continue()))

    def do_info(self, args) -> None:
        from vmkit.viz import live
        if not args:
            raise CommandError(f"usage: {COMMANDS['info'][1]}")
        what = args[0].lower()
        mon = self.dbg.monitor
        real = [a.lower() for a in args[1:]] == ["real"]
        if what in ("gdt", "idt"):
            self._no_more(args, 2 if real else 1)
            self.say(live.descriptor_table(mon, what, real=real).to_text())
        elif what == "tss":
            self._no_more(args, 2 if real else 1)
            self.say(live.tss_table(mon, real=real).to_text())
        elif what == "tab":
            if len(args) != 2:
                raise CommandError("usage: info tab ADDR")
            self.say(live.walk_table(mon, self._address(args[1])).to_text())
        elif what == "vmcs":
            self._no_more(args, 1)
            self.say(live.vmcs_table(mon).to_text())
        elif what == "tc":
            self._no_more(args, 1)
            self.say(live.tc_block_table(mon).to_text())
        elif what in ("points", "breakpoints"):
            self._no_more(args, 1)
            self.say(self.dbg.info())
        elif what == "registers":
            self._no_more(args, 1)
            cpu = mon.vcpu
            names = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp", "eip", "eflags",
                     "cr0", "cr2", "cr3", "cr4")
            # every monitor's vcpu has these (vmkit.vmm.vcpu.VCPU)
            self.say("  ".join(f"{n}={getattr(cpu, n):08x}" for n in names) +
                     f"  cpl={cpu.cpl}")
        else:
            close = difflib.get_close_matches(what, _INFO, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CommandError(f"info takes {', '.join(_INFO)}, got {args[0]!r}{hint}")

    @staticmethod
    def _no_more(args, n) -> None:
        if len(args) > n:
            raise CommandError(f"unexpected {' '.join(args[n:])!r} after info {args[0]}")

    def _address(self, text: str) -> int:
        try:
            return self.dbg.resolve(text)[0]
        except VmkitError as e:
            raise CommandError(str(e)) from None

    def do_x(self, args) -> None:
        from vmkit.viz import live
        rest, o = self._options(args, flags=("physical",))
        if not 1 <= len(rest) <= 2:
            raise CommandError(f"usage: {COMMANDS['x'][1]}")
        n = _positive(rest[1], "N") if len(rest) == 2 else 64
        if n > 4096:
            raise CommandError(f"N must be at most 4096, got {n}")
        watched = [p for p in self.dbg.points if hasattr(p, "size")]
        self.say(live.hex_view(self.dbg.monitor, self._address(rest[0]), n,
                               physical=o.get("physical", False), watched=watched).to_text())


def run_script(shell: Shell, lines, name: str, err=None) -> int:
    """Run ``lines`` (a script named ``name``); the first bad command stops it with one line
    ``name:LINE: message``. Returns an exit code (0, or 1 on a bad command)."""
    err = err if err is not None else sys.stderr
    for no, line in enumerate(lines, start=1):
        try:
            shell.execute(line)
        except Quit:
            return 0
        except CommandError as e:
            err.write(f"{name}:{no}: {e}\n")
            return 1
    return 0


def interactive(shell: Shell, stdin=None, err=None) -> int:
    stdin = stdin if stdin is not None else sys.stdin
    err = err if err is not None else sys.stderr
    tty = stdin.isatty()
    no = 0
    while True:
        if tty:
            shell.out.write("(vmkit) ")
            shell.out.flush()
        line = stdin.readline()
        if not line:
            return 0
        no += 1
        try:
            shell.execute(line)
        except Quit:
            return 0
        except CommandError as e:
            err.write(f"{'' if tty else f'<stdin>:{no}: '}{e}\n")
            if not tty:
                return 1
