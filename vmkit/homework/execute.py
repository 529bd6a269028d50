"""Grading step: run a notebook in a fresh kernel, in a sandbox, within limits.

The kernel is started by :class:`SandboxKernelManager` inside the submission's
:class:`~vmkit.homework.sandbox.Sandbox` (bubblewrap; or unsandboxed with ``--no-sandbox``):
its command is wrapped by :meth:`Sandbox.command`, its connection file and Unix sockets
(jupyter_client's ``ipc`` transport: the sandbox has no network of its own to share) are in the
sandbox's runtime folder, and its kernelspec is fixed here (``python -m ipykernel_launcher``),
never looked up, so nothing a submission writes can change which kernel the next one gets.

- **time**: one budget for the whole notebook; the cell that exhausts it is cut
  (``timeout``) and the cells after it are not run;
- **memory**: the sandbox's address-space limit is set when the kernel starts, so the student's
  code cannot raise it, and processes it starts inherit it; going over it raises
  ``MemoryError`` in that cell only;
- **output**: every message that would add to the notebook counts (stream, display data,
  execute results, display *updates*, which rewrite every output with that display id, and
  widget comm messages): a message that would take a cell past ``output_limit`` bytes, or the
  notebook past ``output_total``, is dropped and one note says so. The instructor's test cells
  count toward their own cell's limit only, so that a flood in the student's cells cannot
  crowd out the answers the hidden tests hand to the grader. Error outputs are always kept
  (they decide the question's status) but cut to a few KiB. A single kernel message larger than
  ``max_message`` bytes (64 MiB: far above anything a notebook keeps) is refused by the socket
  (ZeroMQ's ``MAXMSGSIZE``) before the grader reads it into memory; the kernel's output channel
  does not come back after that, so the rest of that notebook's outputs are lost.

A kernel that dies (``os._exit``, a signal) or a ``sys.exit()`` stops the run: the cells after it
get the status ``stopped``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import zmq
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.v4 import new_output

from vmkit.homework import cells
from vmkit.homework.sandbox import Limits, Sandbox

__all__ = ["execute", "LimitedClient", "CellRun", "SandboxKernelManager"]

_DISPLAY = {"display_data", "update_display_data", "execute_result"}
_ERROR_TEXT = 4096  # characters kept of an error's value and of each traceback line


class CellRun(dict):
    """index -> status for every cell: "ok", "error", "timeout", "stopped"."""


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager whose ``python3`` kernel runs in :attr:`sandbox` (a class attribute:
    :func:`execute` makes a subclass per sandbox, so that nbclient creates and owns it)."""

    sandbox: Sandbox = None  # type: ignore[assignment]
    sandbox_env: dict = {}
    max_message: int = 64 << 20

    def __init__(self, **kw):
        kw.update(transport="ipc", ip=str(self.sandbox.runtime / "kernel"))
        super().__init__(**kw)
        self.connection_file = str(self.sandbox.runtime / "kernel.json")
        self.context.setsockopt(zmq.MAXMSGSIZE, int(self.max_message))

    def client(self, **kw):
        kc = super().client(**kw)
        # the client's own sockets (made later, by start_channels) refuse a larger message
        kc.context.setsockopt(zmq.MAXMSGSIZE, int(self.max_message))
        return kc

    @property
    def kernel_spec(self) -> KernelSpec:
        return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f",
                                "{connection_file}"],
                          display_name="Python 3", language="python", env={}, metadata={})

    def format_kernel_cmd(self, extra_arguments=None) -> list[str]:
        return self.sandbox.command(super().format_kernel_cmd(extra_arguments), self.sandbox_env)

    def write_connection_file(self, **kw) -> None:
        super().write_connection_file(**kw)
        if self.sandbox.uid is not None:  # the kernel's user reads it
            os.chown(self.connection_file, self.sandbox.uid, self.sandbox.uid)


def _size(msg) -> int:
    """About the bytes ``msg`` adds to a notebook: its strings and numbers, its binary buffers
    (counted without serializing it again: the message may be large)."""
    n, todo = 0, [msg.get("content")]
    while todo:
        x = todo.pop()
        if isinstance(x, str):
            n += len(x) + 2
        elif isinstance(x, dict):
            todo.extend(x.keys())
            todo.extend(x.values())
        elif isinstance(x, (list, tuple)):
            todo.extend(x)
        else:
            n += 8
    return n + sum(len(b) for b in msg.get("buffers") or ())


def _cut(text, n=_ERROR_TEXT):
    text = str(text)
    return text if len(text) <= n else text[:n] + " [...]"


class LimitedClient(NotebookClient):
    """A NotebookClient that keeps at most ``output_limit`` bytes of output per cell and
    ``output_total`` per notebook, counting every kind of message that adds to it."""

    output_limit = 256 * 1024
    output_total = 2 << 20

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.output_bytes: dict = {}
        self.total_bytes = 0
        self.truncated: set = set()
        #: cells outside the notebook's total (the instructor's tests)
        self.own_budget: set = set()

    def _charge(self, cell_index: int, cost: int, outs) -> bool:
        used = self.output_bytes.get(cell_index, 0) + cost
        total = 0 if cell_index in self.own_budget else cost
        if used <= self.output_limit and self.total_bytes + total <= self.output_total:
            self.output_bytes[cell_index] = used
            self.total_bytes += total
            return True
        if cell_index not in self.truncated:
            self.truncated.add(cell_index)
            what = (f"beyond {self.output_limit} bytes" if used > self.output_limit else
                    f"beyond {self.output_total} bytes for the notebook")
            outs.append(new_output("stream", name="stderr",
                                   text=f"[grader: output {what} dropped]\n"))
        return False

    def process_message(self, msg, cell, cell_index):
        kind = msg["msg_type"]
        content = msg.get("content") or {}
        if kind == "error":
            content["evalue"] = _cut(content.get("evalue", ""))
            content["ename"] = _cut(content.get("ename", ""), 200)
            content["traceback"] = [_cut(t) for t in (content.get("traceback") or [])[:50]]
        elif kind in _DISPLAY or kind == "stream" or kind.startswith("comm"):
            cost = _size(msg)
            transient = content.get("transient")
            display_id = transient.get("display_id") if isinstance(transient, dict) else None
            if display_id and kind in _DISPLAY:  # rewrites every output with that id
                shown = self._display_id_map.get(display_id, {})
                cost *= 1 + sum(len(v) for v in shown.values())
            if not self._charge(cell_index, cost, cell.outputs):
                return None
        return super().process_message(msg, cell, cell_index)


def _status(cell) -> tuple[str, str]:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return "error", out.get("ename", "")
    return "ok", ""


def execute(nb, cwd=None, env: dict | None = None, timeout: float = 60, memory_mb: int = 2048,
            output_limit: int = 256 * 1024, *, sandbox: Sandbox | None = None,
            output_total: int = 2 << 20):
    """Run every code cell of ``nb`` (changed in place: outputs) in a fresh ``python3`` kernel
    in ``sandbox`` (its scratch folder as working folder) with the allow-listed part of
    ``env``. Without a sandbox, one is made unsandboxed (``--no-sandbox``) with ``memory_mb``,
    working in ``cwd`` if given. Returns (statuses, errors, truncated): cell index -> status,
    cell index -> exception name, indices whose output was cut."""
    own = sandbox is None
    if own:
        sandbox = Sandbox(Limits(memory_mb=memory_mb), enabled=False)
        if cwd:
            sandbox.scratch = type(sandbox.scratch)(cwd)
    km_class = type("BoundSandboxKernelManager", (SandboxKernelManager,),
                    {"sandbox": sandbox, "sandbox_env": dict(env or {}),
                     "max_message": max(16 * output_total, 64 << 20)})
    client = LimitedClient(nb, kernel_name="python3", kernel_manager_class=km_class,
                           allow_errors=True, record_timing=False,
                           timeout=max(1, int(timeout)), interrupt_on_timeout=False,
                           shutdown_kernel="immediate", startup_timeout=60,
                           resources={"metadata": {"path": str(sandbox.scratch)}})
    client.output_limit = output_limit
    client.output_total = output_total
    client.own_budget = {i for i, c in enumerate(nb.cells) if cells.is_test(c)}
    statuses, errors = CellRun(), {}
    stop = None
    try:
        # the kernel's own stderr (ipykernel's start-up warnings, os-level writes of the
        # student's code) is not the grader's: what a cell prints comes back as its outputs
        with client.setup_kernel(env=sandbox.environment(env), cwd=str(sandbox.scratch),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
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
    finally:
        if own:
            sandbox.close()
    return statuses, errors, set(client.truncated)
