"""How fast does vmkit run x86 with full per-instruction visibility, beside Unicorn? (issue 18)

One run, side by side, guest instructions per CPU second (best of ``--repeat``):

* the compute loop of the issue: an LCG, 7 instructions an iteration (``compute`` guest,
  300,000 iterations, about 2.1 M instructions), and a syscall-heavy guest (``syscall``);
* Unicorn 2 (QEMU's TCG) on the same loop without hooks, and with a Python hook on every
  instruction (what a Python user reaches for to watch each instruction);
* vmkit under native, te, bt, hw and pv, in per-instruction mode (``VMKIT_BLOCKS=0``) and in
  block mode (vmkit/machine/blocks.py).

Goals (issue 18): native block mode >= 3x Unicorn with a Python hook on compute; te, bt, hw, pv
within 20 % of native on compute; syscall-heavy >= 2x per-instruction mode.

``--before DIR`` also measures the vmkit rows with another checkout's code (DIR, e.g. a
``git worktree`` of an earlier commit), in a child process of the same run: the syscall goal
is stated against the per-instruction figures of the code before the change (the first
``--before`` when there are several). The notebooks'
times are ``benchmarks/bench_notebooks.py``'s (kernel CPU time, both modes, ``--before`` too).

``--guests ctxswitch,divzero,pagefault`` adds columns for other trap-heavy guests (a context
switch, a divide error, a page fault an iteration).

    python benchmarks/bench_speed.py [--repeat N] [--iterations N] [--before DIR]
                                     [--monitors LIST] [--guests LIST]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import vmkit
from vmkit import guests
from vmkit.machine import machine as machine_mod
from vmkit.vmm import MONITORS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
from asm_programs import lcg_loop  # noqa: E402



def unicorn_rate(iterations: int, hook: bool, repeat: int) -> float | None:
    try:
        import unicorn
        from unicorn import x86_const as X
    except ImportError:
        return None
    prog = vmkit.assemble(lcg_loop(iterations), base=0x1000)
    best = 0.0
    for _ in range(repeat):
        mu = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
        mu.mem_map(0, 0x10000)
        mu.mem_write(0x1000, prog.code)
        count = [0]
        if hook:
            def on_insn(uc, address, size, user):
                count[0] += 1
            mu.hook_add(unicorn.UC_HOOK_CODE, on_insn)
        end = 0x1000 + len(prog.code) - 1          # stop before the hlt
        t = time.process_time()
        mu.emu_start(0x1000, end)
        dt = time.process_time() - t
        assert mu.reg_read(X.UC_X86_REG_ECX) == 0
        steps = 3 + 7 * iterations
        if hook:
            assert count[0] == steps, count[0]
        best = max(best, steps / dt)
    return best


def vmkit_rate(guest: str, monitor: str, blocks: bool, repeat: int, **params) -> tuple:
    os.environ["VMKIT_BLOCKS"] = "1" if blocks else "0"
    img = guests.build(guest, paravirtual=monitor == "pv", **params)
    best, console = 0.0, None
    for _ in range(repeat):
        vm = MONITORS[monitor](img)
        t = time.process_time()
        r = vm.run(max_steps=50_000_000)
        dt = time.process_time() - t
        best = max(best, r.steps / dt)
        console = vm.console
    return best, r.steps, console


#: the trap-heavy guests ``--guests`` adds (each a kernel round trip per iteration: a system
#: call, a context switch, a divide error, a page fault) and their parameters from --syscalls
TRAP_GUESTS = {"ctxswitch": lambda n: {"iterations": max(1, n // 10)},  # 120 instructions
               "divzero": lambda n: {"iterations": n},
               "pagefault": lambda n: {"pages": 448}}


def vmkit_rates(a) -> dict:
    """(monitor, blocks) -> (compute rate, syscall rate, compute console, syscall console,
    {guest of --guests: (rate, console)})."""
    saved = os.environ.get("VMKIT_BLOCKS")
    out = {}
    try:
        for blocks in (False, True):
            for mon in a.mons:
                c, _, con_c = vmkit_rate("compute", mon, blocks, a.repeat,
                                         iterations=a.iterations)
                s, _, con_s = vmkit_rate("syscall", mon, blocks, a.repeat,
                                         iterations=a.syscalls)
                extra = {}
                for g in a.guests:
                    r, _, con = vmkit_rate(g, mon, blocks, a.repeat,
                                           **TRAP_GUESTS[g](a.syscalls))
                    extra[g] = (r, con)
                out[(mon, blocks)] = (c, s, con_c, con_s, extra)
    finally:
        if saved is None:
            os.environ.pop("VMKIT_BLOCKS", None)
        else:
            os.environ["VMKIT_BLOCKS"] = saved
        if hasattr(machine_mod, "blocks_default"):   # older checkouts (--before) have none
            machine_mod.blocks_default()   # the environment is as it was
    return out


def before_rates(a, before: Path) -> dict:
    """vmkit_rates with the code of checkout ``before``, in a child process."""
    env = dict(os.environ, PYTHONPATH=str(Path(before).resolve()))
    r = subprocess.run([sys.executable, __file__, "--rates-json", "--repeat", str(a.repeat),
                        "--iterations", str(a.iterations), "--syscalls", str(a.syscalls),
                        "--monitors", ",".join(a.mons), "--guests", ",".join(a.guests)],
                       env=env, capture_output=True, text=True, check=True)
    return {(m, b): tuple(v[:4]) + ({g: tuple(x) for g, x in v[4].items()},)
            for m, b, v in json.loads(r.stdout)}


MONS = ("native", "te", "bt", "hw", "pv")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench_speed.py", description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="runs per cell; the best counts")
    p.add_argument("--iterations", type=int, default=300_000,
                   help="LCG iterations (7 instructions each)")
    p.add_argument("--syscalls", type=int, default=20_000, help="syscall guest iterations")
    p.add_argument("--before", type=Path, action="append", default=[],
                   help="another checkout of the kit (repeatable): its vmkit rows "
                   "too, and the syscall goal against its per-instruction figures")
    p.add_argument("--monitors", default=",".join(MONS),
                   help="comma-separated monitors to measure (native is always measured: the "
                        "ratios are to it)")
    p.add_argument("--guests", default="",
                   help="comma-separated trap-heavy guests measured too, each a kernel round "
                        f"trip an iteration ({', '.join(TRAP_GUESTS)}; --syscalls sets their "
                        "iterations: ctxswitch a tenth, pagefault touches 448 pages)")
    p.add_argument("--rates-json", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.mons = ["native"] + [m for m in a.monitors.split(",") if m and m != "native"]
    unknown = [m for m in a.mons if m not in MONITORS]
    if unknown:
        p.error(f"unknown monitor {unknown[0]!r}; expected some of {', '.join(MONITORS)}")
    a.guests = [g for g in a.guests.split(",") if g]
    unknown = [g for g in a.guests if g not in TRAP_GUESTS]
    if unknown:
        p.error(f"unknown guest {unknown[0]!r} for --guests; expected some of "
                f"{', '.join(TRAP_GUESTS)}")
    if a.rates_json:
        print(json.dumps([(m, b, v) for (m, b), v in vmkit_rates(a).items()]))
        return 0
    for before in a.before:
        if not (Path(before) / "vmkit").is_dir():
            print(f"bench_speed.py: --before {before}: no vmkit package there",
                  file=sys.stderr)
            return 2
    u0 = unicorn_rate(a.iterations, False, a.repeat)
    u1 = unicorn_rate(a.iterations, True, a.repeat)
    head = "".join(f" {g:>14}" for g in a.guests)
    print(f"{'':<48} {'compute':>14} {'syscall':>14}{head}   (guest instructions per CPU "
          "second)")
    if u0 is not None:
        print(f"{'unicorn, no hook':<48} {u0 / 1e6:>12.2f} M")
        print(f"{'unicorn, Python hook':<48} {u1 / 1e6:>12.2f} M")
    runs = []
    for k, before in enumerate(a.before):
        tag = "before" if len(a.before) == 1 else f"before {k + 1} ({Path(before).name})"
        runs.append((tag, before_rates(a, before)))
    runs.append(("", vmkit_rates(a)))
    for tag, rates in runs:
        for blocks in (False, True):
            for mon in a.mons:
                c, s = rates[(mon, blocks)][:2]
                extra = rates[(mon, blocks)][4]
                label = (f"{tag + ': ' if tag else ''}vmkit {mon}, "
                         f"{'blocks' if blocks else 'per-instruction'}")
                cols = "".join(f" {extra[g][0] / 1e6:>12.3f} M" for g in a.guests)
                print(f"{label:<48} {c / 1e6:>12.2f} M {s / 1e6:>12.3f} M{cols}")
    rates = runs[-1][1]
    base = runs[0][1]       # "today's" figures: the (first) checkout before, else this one
    # the same guest output in both modes (a benchmark of a wrong answer is worthless)
    bad = [m for m in a.mons
           if len({(rates[(m, b)][2:4], tuple(sorted((g, x[1]) for g, x in
                                                       rates[(m, b)][4].items())))
                   for b in (False, True)}) != 1]
    native_b = rates[("native", True)][0]
    print()
    if u1:
        print(f"native blocks / unicorn with hook: {native_b / u1:.2f}x (goal >= 3)")
    for mon in a.mons[1:]:
        print(f"{mon} blocks / native blocks, compute: {rates[(mon, True)][0] / native_b:.2f} "
              f"(goal >= 0.8)")
    what = "per-instruction before" if a.before else "per-instruction"
    for mon in a.mons:
        print(f"{mon} syscall, blocks / {what}: "
              f"{rates[(mon, True)][1] / base[(mon, False)][1]:.2f}x (goal >= 2)")
        for g in a.guests:
            print(f"{mon} {g}, blocks / {what}: "
                  f"{rates[(mon, True)][4][g][0] / base[(mon, False)][4][g][0]:.2f}x")
    if bad:
        print(f"consoles differ between modes under {', '.join(bad)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
