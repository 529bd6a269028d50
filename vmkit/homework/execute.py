"""Grading step: run a notebook in a fresh kernel, in a scratch directory, within limits.

- **time**: one budget for the whole notebook; the cell that exhausts it is cut
  (``timeout``) and the cells after it are not run;
- **memory**: the first cell the kernel runs (added by the grader, removed afterwards) sets
  ``RLIMIT_AS`` soft and hard, so the student's code cannot raise it, and processes it starts
  inherit it; going over it raises ``MemoryError`` in that cell only;
- **output**: past ``output_limit`` bytes a cell's further outputs are dropped and one note
  says so (errors are always kept: they decide the question's status).

A kernel that dies (``os._exit``, a signal) or a ``sys.exit()`` stops the run: the cells after it
get the status ``stopped``.
"""

from __future__ import annotations

import json
import subprocess
import time

from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.v4 import new_code_cell, new_output

__all__ = ["execute", "LimitedClient", "CellRun"]

_LIMITS = ("import resource as _vmkit_resource\n"
           "_vmkit_resource.setrlimit(_vmkit_resource.RLIMIT_AS, ({n}, {n}))\n"
           "del _vmkit_resource")


class CellRun(dict):
    """index -> status for every cell: "ok", "error", "timeout", "stopped"."""


class LimitedClient(NotebookClient):
    """A NotebookClient that keeps at most ``output_limit`` bytes of outputs per cell."""

    output_limit = 256 * 1024

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.output_bytes: dict = {}
        self.truncated: set = set()

    def output(self, outs, msg, display_id, cell_index):
        if msg["msg_type"] != "error":
            size = len(json.dumps(msg["content"]))
            used = self.output_bytes.get(cell_index, 0) + size
            self.output_bytes[cell_index] = used
            if used > self.output_limit:
                if cell_index not in self.truncated:
                    self.truncated.add(cell_index)
                    outs.append(new_output("stream", name="stderr", text=(
                        f"[grader: output beyond {self.output_limit} bytes dropped]\n")))
                return None
        return super().output(outs, msg, display_id, cell_index)


def _status(cell) -> tuple[str, str]:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return "error", out.get("ename", "")
    return "ok", ""


def execute(nb, cwd, env: dict, timeout: float = 60, memory_mb: int = 2048,
            output_limit: int = 256 * 1024):
    """Run every code cell of ``nb`` (changed in place: outputs) in a fresh ``python3`` kernel
    started in ``cwd`` with environment ``env``. Returns (statuses, errors, truncated):
    cell index -> status, cell index -> exception name, indices whose output was cut."""
    limits = new_code_cell(_LIMITS.format(n=int(memory_mb) << 20))
    nb.cells.insert(0, limits)
    client = LimitedClient(nb, kernel_name="python3", allow_errors=True, record_timing=False,
                           timeout=max(1, int(timeout)), interrupt_on_timeout=False,
                           shutdown_kernel="immediate", startup_timeout=60,
                           resources={"metadata": {"path": str(cwd)}})
    client.output_limit = output_limit
    statuses, errors = CellRun(), {}
    stop = None
    try:
        # the kernel's own stderr (ipykernel's start-up warnings, os-level writes of the
        # student's code) is not the grader's: what a cell prints comes back as its outputs
        with client.setup_kernel(env=env, cwd=str(cwd), stderr=subprocess.DEVNULL):
            deadline = time.monotonic() + timeout  # the kernel's start does not count
            for i, cell in enumerate(nb.cells):
                if cell["cell_type"] != "code":
                    continue
                if stop:
                    statuses[i] = stop
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    statuses[i] = stop = "timeout"
                    continue
                client.timeout = max(1, int(remaining + 0.999))
                try:
                    client.execute_cell(cell, i)
                except CellTimeoutError:
                    statuses[i] = stop = "timeout"
                    continue
                except DeadKernelError:
                    statuses[i] = "error"
                    errors[i] = "the kernel died"
                    stop = "stopped"
                    continue
                statuses[i], errors[i] = _status(cell)
                if errors[i] == "SystemExit":
                    stop = "stopped"
    except DeadKernelError:  # died while shutting down: the statuses are complete
        pass
    except RuntimeError as e:  # the kernel did not start
        for i, cell in enumerate(nb.cells):
            if cell["cell_type"] == "code" and i not in statuses:
                statuses[i], errors[i] = "error", f"kernel: {e}"
    nb.cells.pop(0)
    shift = lambda d: {i - 1: v for i, v in d.items() if i > 0}  # noqa: E731
    if statuses.get(0) not in (None, "ok"):
        for i in statuses:  # the limits cell itself failed: nothing ran as it should
            statuses[i] = statuses[i] if statuses[i] != "ok" else "error"
    return CellRun(shift(statuses)), shift(errors), {i - 1 for i in client.truncated if i > 0}
