"""Kernel memory of every lecture notebook after Run All (issue 19: goal under 200 MiB each).

Each notebook runs in a fresh ``python3`` kernel (nbclient, the environment the notebooks are
executed in: ``vmkit.nbtools.hygiene.KERNEL_ENV``); then one more cell in that kernel reports
its resident memory (RSS and peak, from /proc, read before that cell collects anything) and what holds memory: the machines alive and
their guest memory, the monitors' traces, snapshots and the debugger's checkpoints (distinct
pages), Steppers, matplotlib figures, the decode cache. Nothing is written back.

    .venv/bin/python benchmarks/bench_notebook_memory.py [NOTEBOOK.ipynb ...]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from vmkit.nbtools.hygiene import KERNEL_ENV, KERNEL_NAME, lecture_notebooks

GOAL_MIB = 200

PROBE = r'''
import gc as _gc, json as _json, sys as _sys
def _vmkit_probe():
    from vmkit.machine.machine import Machine, Snapshot, distinct_pages
    from vmkit.trace import Trace
    with open("/proc/self/status") as f:     # what the kernel holds, before any collection
        st = dict(line.split(":", 1) for line in f)
    _gc.collect()
    objs = _gc.get_objects()
    machines = [o for o in objs if isinstance(o, Machine)]
    traces = [o for o in objs if isinstance(o, Trace)]
    snaps = [o for o in objs if isinstance(o, Snapshot)]
    pages = distinct_pages(snaps)
    out = {"machines": len(machines),
           "guest_mib": sum(m.memory_size for m in machines) / 2**20,
           "traces": len(traces), "events": sum(len(t) for t in traces),
           "snapshots": len(snaps),
           "snapshot_pages_mib": sum(map(len, pages.values())) / 2**20}
    try:
        from vmkit.widgets import Stepper
        out["steppers"] = sum(isinstance(o, Stepper) for o in objs)
    except Exception:
        out["steppers"] = 0
    try:
        from vmkit.debug.timeline import Timeline
        tls = [o for o in objs if isinstance(o, Timeline)]
        out["timelines"] = len(tls)
        out["checkpoints"] = sum(len(t.checkpoints) for t in tls)
    except Exception:
        pass
    mpl = _sys.modules.get("matplotlib.pyplot")
    out["figures"] = len(mpl.get_fignums()) if mpl else 0
    try:
        from vmkit.isa.decode import DECODER
        out["decode_cache"] = len(getattr(DECODER, "_cache", ()) or ())
    except Exception:
        pass
    out["rss_mib"] = int(st["VmRSS"].split()[0]) / 1024
    out["peak_mib"] = int(st["VmHWM"].split()[0]) / 1024
    return out
print("VMKIT-PROBE " + _json.dumps(_vmkit_probe()))
'''


def measure(path: Path) -> dict:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=1200,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    t = time.perf_counter()
    with client.setup_kernel(env={**os.environ, **KERNEL_ENV}):
        for i, cell in enumerate(nb.cells):
            client.execute_cell(cell, i)
        seconds = time.perf_counter() - t
        probe = nbformat.v4.new_code_cell(PROBE)
        nb.cells.append(probe)
        client.execute_cell(probe, len(nb.cells) - 1)
    text = "".join(o.get("text", "") for o in probe.outputs if o.get("name") == "stdout")
    line = [ln for ln in text.splitlines() if ln.startswith("VMKIT-PROBE ")]
    if not line:
        raise SystemExit(f"{path.name}: the probe cell printed nothing: {probe.outputs}")
    out = json.loads(line[0].split(" ", 1)[1])
    out["seconds"] = seconds
    return out


def main() -> None:
    paths = [Path(p) for p in sys.argv[1:]] or lecture_notebooks()
    for p in paths:
        if not p.is_file():
            sys.exit(f"bench_notebook_memory: no such notebook: {p}")
    print(f"{'notebook':<32} {'RSS':>6} {'peak':>6} {'run s':>6}  what holds memory")
    worst = 0.0
    for p in paths:
        r = measure(p)
        worst = max(worst, r["rss_mib"])
        print(f"{p.name:<32} {r['rss_mib']:6.0f} {r['peak_mib']:6.0f} {r['seconds']:6.0f}  "
              f"{r['machines']} machines ({r['guest_mib']:.0f} MiB guest memory), "
              f"{r['traces']} traces ({r['events']:,} events), {r['snapshots']} snapshots "
              f"({r['snapshot_pages_mib']:.1f} MiB of pages), {r.get('timelines', 0)} "
              f"timelines ({r.get('checkpoints', 0)} checkpoints), {r['steppers']} Steppers, "
              f"{r['figures']} figures, {r.get('decode_cache', '?')} decoded", flush=True)
    print(f"worst {worst:.0f} MiB (goal: under {GOAL_MIB} MiB each)")


if __name__ == "__main__":
    main()
