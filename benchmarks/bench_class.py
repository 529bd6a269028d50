"""A class at once: N kernels driven like N students on one server.

Each "student" is a Jupyter kernel (ipykernel, as a hub's user server starts it) with their own
``VMKIT_STUDENT_ID``. All start together and run every code cell of a lecture notebook
(default notebook 02, "Run All"), then, once every kernel is done, each presses the Stepper's
**Step** button ``--steps`` times, once every ``--interval`` seconds: the same comm message
JupyterLab sends for a click (``{"method": "custom", "content": {"event": "click"}}`` to the
button's model), timed from sending it until the kernel is idle again, having sent every widget
update of that click. Reported:

- per kernel: its resident memory after Run All (RSS, and the peak), the Run All time, and its
  Step latencies (median, 95th percentile, worst);
- for the class: every press's latency pooled (median, 95th percentile, worst), the total wall
  time, and the machine (cores, load before the start);
- what a press costs, which does not depend on the load: the kernel's CPU time per press (its
  threads, and the programs it ran such as graphviz's dot), the widget messages it sent and
  their size (JSON), the mean over every press.

No browser and no hub: what is measured is the kernel side, which is what a server for a class
has to provide; the hub's proxy and JupyterLab's drawing add to the latency a student sees.

    .venv/bin/python benchmarks/bench_class.py                      # 20 students, 100 steps
    .venv/bin/python benchmarks/bench_class.py --students 4 --steps 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.manager import AsyncKernelManager

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "02-trap-and-emulate.ipynb"
#: how the benchmark finds the Step button after Run All: the notebook's last Stepper
FIND_STEP = """
import gc as _gc
from vmkit.widgets import Stepper as _Stepper
_steppers = [o for o in _gc.get_objects() if isinstance(o, _Stepper)]
print(_steppers[-1].step_button.model_id if _steppers else "")
"""
CLICK = {"method": "custom", "content": {"event": "click"}}


def rss_mib(pid: int) -> tuple[float, float]:
    """(resident, peak resident) memory of process ``pid`` in MiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid`` so far: its threads (``schedstat``, nanoseconds) and the
    children it has waited for (``stat``, clock ticks)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass             # a thread that ended meanwhile
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    children = (int(fields[14]) + int(fields[15])) / os.sysconf("SC_CLK_TCK")
    return total / 1e9 + children


async def wait_idle(kc, msg_id: str, timeout: float, out: list | None = None,
                    sent: list | None = None) -> None:
    """Read iopub until the kernel is idle after ``msg_id``; stream text goes to ``out``,
    the JSON size of each widget message to ``sent``; an error output raises."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no idle after {timeout} s")
        msg = await kc.get_iopub_msg(timeout=left)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and out is not None:
            out.append(content["text"])
        elif kind == "comm_msg" and sent is not None:
            sent.append(len(json.dumps(content)))
        elif kind == "error":
            raise RuntimeError(f"{content['ename']}: {content['evalue']}")
        elif kind == "status" and content["execution_state"] == "idle":
            return


class Student:
    def __init__(self, index: int, notebook: Path, sockets: str):
        self.name = f"student{index:02d}"
        self.sockets = sockets
        self.notebook = notebook
        self.latencies: list[float] = []
        self.sent: list[list[int]] = []      # each press: the JSON size of each widget message
        self.cpu = 0.0                       # the kernel's CPU seconds over the presses
        self.run_all_s = 0.0
        self.rss = (0.0, 0.0)

    async def start(self) -> None:
        env = {**os.environ, "PYTHONHASHSEED": "0", "VMKIT_STUDENT_ID": self.name}
        # IPC sockets, each kernel its own: many kernels starting at once over TCP race for
        # the same free ports ("Address already in use")
        self.km = AsyncKernelManager(kernel_name="python3", transport="ipc",
                                     ip=str(Path(self.sockets) / self.name))
        await self.km.start_kernel(env=env, cwd=str(self.notebook.parent))
        self.kc = self.km.client()
        self.kc.start_channels()
        await self.kc.wait_for_ready(timeout=120)

    async def execute(self, code: str, timeout: float = 600) -> str:
        out: list[str] = []
        msg_id = self.kc.execute(code, store_history=True)
        await wait_idle(self.kc, msg_id, timeout, out)
        return "".join(out)

    async def run_all(self) -> None:
        nb = nbformat.read(self.notebook, as_version=4)
        t0 = time.perf_counter()
        for cell in nb.cells:
            if cell.cell_type == "code" and cell.source.strip():
                await self.execute(cell.source)
        self.run_all_s = time.perf_counter() - t0
        self.rss = rss_mib(self.km.provisioner.process.pid)
        self.button = (await self.execute(FIND_STEP)).strip()
        if not self.button:
            raise RuntimeError(f"{self.notebook.name} has no Stepper")
        self.position = int((await self.execute("print(_steppers[-1].position)")).strip())

    async def press(self, steps: int, interval: float, start: float) -> None:
        pid = self.km.provisioner.process.pid
        cpu0 = cpu_seconds(pid)
        for k in range(steps):
            # once a second on the class's common clock: a slow press delays no later one
            await asyncio.sleep(max(0.0, start + k * interval - time.monotonic()))
            t0 = time.perf_counter()
            msg = self.kc.session.msg("comm_msg", {"comm_id": self.button, "data": CLICK})
            self.kc.shell_channel.send(msg)
            sent: list[int] = []
            await wait_idle(self.kc, msg["header"]["msg_id"], timeout=120, sent=sent)
            self.latencies.append(time.perf_counter() - t0)
            self.sent.append(sent)
        await asyncio.sleep(min(interval, 1.0))    # the last press's picture, if any, drawn
        self.cpu = cpu_seconds(pid) - cpu0
        # every press stepped: the Stepper is as many steps further
        after = int((await self.execute("print(_steppers[-1].position)")).strip())
        if after - self.position != steps:
            raise RuntimeError(f"{self.name}: {steps} presses moved the Stepper "
                               f"{after - self.position} steps")

    async def stop(self) -> None:
        self.kc.stop_channels()
        await self.km.shutdown_kernel(now=True)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def ms(x: float) -> str:
    return f"{x * 1e3:7.1f}"


async def main_async(args) -> int:
    sockets = tempfile.mkdtemp(prefix="vmkit-class-")
    students = [Student(i + 1, args.notebook, sockets) for i in range(args.students)]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(s.start() for s in students))
        await asyncio.gather(*(s.run_all() for s in students))
        ready = time.perf_counter()
        start = time.monotonic() + 1.0
        await asyncio.gather(*(s.press(args.steps, args.interval, start) for s in students))
        total = time.perf_counter() - t0
    finally:
        await asyncio.gather(*(s.stop() for s in students), return_exceptions=True)
        shutil.rmtree(sockets, ignore_errors=True)

    print(f"{args.students} students, {args.notebook.name}: Run All, then Step x{args.steps} "
          f"every {args.interval:g} s, all together; {os.cpu_count()} cores, load "
          f"{load:.1f} before the start")
    print(f"{'student':<10} {'RSS MiB':>8} {'peak MiB':>9} {'Run All s':>10} "
          f"{'step ms: median':>16} {'p95':>7} {'worst':>7}")
    for s in students:
        print(f"{s.name:<10} {s.rss[0]:8.0f} {s.rss[1]:9.0f} {s.run_all_s:10.1f} "
              f"{ms(statistics.median(s.latencies)):>16} {ms(pct(s.latencies, 95)):>7} "
              f"{ms(max(s.latencies)):>7}")
    every = [x for s in students for x in s.latencies]
    rss = [s.rss[0] for s in students]
    print(f"class: RSS median {statistics.median(rss):.0f} MiB, max {max(rss):.0f} MiB, "
          f"sum {sum(rss):.0f} MiB; Run All {ready - t0:.1f} s for everyone (kernel starts "
          f"included)")
    print(f"class: {len(every)} presses, step latency median {ms(statistics.median(every))} "
          f"ms, p95 {ms(pct(every, 95))} ms, worst {ms(max(every))} ms; total {total:.1f} s")
    presses = sum(len(s.sent) for s in students)
    messages = sum(len(x) for s in students for x in s.sent)
    size = sum(sum(x) for s in students for x in s.sent)
    print(f"per press (mean of all): kernel CPU {sum(s.cpu for s in students) / presses * 1e3:.1f}"
          f" ms (its threads and the programs it ran), {messages / presses:.2f} widget messages, "
          f"{size / presses / 1024:.1f} KiB")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=20, help="kernels (default 20)")
    parser.add_argument("--steps", type=int, default=100, help="Step presses each (100)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between presses")
    parser.add_argument("--notebook", type=Path, default=NOTEBOOK,
                        help="a lecture notebook with a Stepper (default 02)")
    args = parser.parse_args(argv)
    if args.students < 1 or args.steps < 1 or args.interval <= 0:
        parser.error("--students and --steps must be positive, --interval > 0")
    if not args.notebook.is_file():
        parser.error(f"{args.notebook}: no such notebook")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
