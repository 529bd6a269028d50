"""What does one system call cost each monitor, counted so that a busy machine cannot blur it?

CPU seconds on a shared machine vary by a third from run to run (``bench_speed.py`` prints
them); the number of Python bytecodes the kit executes for a guest's system call does not
vary at all. This counts them with ``sys.settrace`` (opcode events) for the ``syscall`` guest
at two sizes and prints the difference per call (boot and exit cancel out), optionally beside
another checkout's figures (``--before DIR``, in a child process; the mode is the environment's,
``VMKIT_BLOCKS``, and a checkout older than block mode runs per instruction). A bytecode is not a fixed time (a C call inside one can take
long), so this is a guide to where a change removed work, beside bench_speed's timings.

``--guest compute`` counts one iteration of the compute loop (7 guest instructions, no system
call) instead, and each monitor's count beside native's: the issue's "te, bt, hw, pv within 20 %
of native on compute", in a figure load cannot blur.

    python benchmarks/bench_trap_bytecodes.py [--guest syscall|compute]
                                              [--monitors native,te,bt,hw,pv] [--before DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SIZES = {"syscall": (200, 600),         # iterations of the two runs compared
         "compute": (2000, 6000)}
UNIT = {"syscall": "bytecodes per system call", "compute": "bytecodes per loop iteration"}


def count(monitor: str, iterations: int, guest: str = "syscall") -> int:
    """Bytecodes executed by one run of ``guest`` (after a first run that compiles)."""
    from vmkit import guests
    from vmkit.vmm import MONITORS
    img = guests.build(guest, paravirtual=monitor == "pv", iterations=iterations)
    MONITORS[monitor](img).run(max_steps=10**8)
    mon = MONITORS[monitor](img)
    n = [0]

    def tracer(frame, event, arg):
        frame.f_trace_opcodes = True
        if event == "opcode":
            n[0] += 1
        return tracer
    sys.settrace(tracer)
    try:
        mon.run(max_steps=10**8)
    finally:
        sys.settrace(None)
    return n[0]


def per_call(monitors: list, guest: str = "syscall") -> dict:
    lo, hi = SIZES[guest]
    return {m: (count(m, hi, guest) - count(m, lo, guest)) / (hi - lo) for m in monitors}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench_trap_bytecodes.py",
                                description=__doc__.split("\n")[0])
    p.add_argument("--monitors", default="native,te,bt,hw,pv",
                   help="comma-separated monitors (default: all five)")
    p.add_argument("--guest", choices=sorted(SIZES), default="syscall",
                   help="syscall (per system call, default) or compute (per loop iteration)")
    p.add_argument("--before", type=Path, help="another checkout of the kit: its figures too")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    mons = [m for m in a.monitors.split(",") if m]
    from vmkit.vmm import MONITORS
    bad = [m for m in mons if m not in MONITORS]
    if bad:
        p.error(f"unknown monitor {bad[0]!r}; expected some of {', '.join(MONITORS)}")
    if a.json:
        print(json.dumps(per_call(mons, a.guest)))
        return 0
    before = None
    if a.before is not None:
        if not (a.before / "vmkit").is_dir():
            print(f"bench_trap_bytecodes.py: --before {a.before}: no vmkit package there",
                  file=sys.stderr)
            return 2
        env = dict(os.environ, PYTHONPATH=str(a.before.resolve()))
        r = subprocess.run([sys.executable, __file__, "--json", "--monitors", ",".join(mons),
                            "--guest", a.guest],
                           env=env, capture_output=True, text=True, check=True)
        before = json.loads(r.stdout)
    now = per_call(mons, a.guest)
    native = now.get("native") if a.guest == "compute" else None
    print(f"{'monitor':<8} {UNIT[a.guest]:>29}" + (f" {'/ native':>9}" if native else "")
          + (f" {'before':>8} {'ratio':>6}" if before else ""))
    for m in mons:
        line = f"{m:<8} {now[m]:>29.1f}" if a.guest == "compute" else f"{m:<8} {now[m]:>29.0f}"
        if native:
            line += f" {now[m] / native:>9.3f}"
        if before:
            line += f" {before[m]:>8.0f} {before[m] / now[m]:>5.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
