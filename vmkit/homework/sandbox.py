"""A sandbox per submission (STAND-IN: plain subprocesses, no isolation).

This stand-in keeps the interface of the bubblewrap sandbox (``Sandbox``, ``Limits``,
``SandboxUnavailable``) so that the grading code written against it runs; it gives no
protection at all. The real sandbox replaces this file.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SandboxUnavailable", "Limits", "Sandbox", "check_available"]


class SandboxUnavailable(Exception):
    """The sandbox cannot start on this machine (the message names the fix)."""


@dataclass
class Limits:
    memory_mb: int = 2048
    cpu_seconds: int = 600
    processes: int = 256
    file_size_mb: int = 64
    open_files: int = 256


class Sandbox:
    """One per submission; a context manager. ``scratch`` is a fresh empty folder."""

    def __init__(self, limits: Limits | None = None, enabled: bool = True):
        self.limits = limits or Limits()
        self.enabled = enabled
        self.scratch = Path(tempfile.mkdtemp(prefix="vmkit-sandbox-"))
        self._procs: list = []

    def popen(self, argv, env, **popen_kw) -> subprocess.Popen:
        popen_kw.setdefault("cwd", str(self.scratch))
        proc = subprocess.Popen(list(argv), env=dict(env), start_new_session=True, **popen_kw)
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self._procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=5)
            except Exception:
                pass
        self._procs.clear()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def check_available() -> None:
    """This stand-in isolates nothing: it says so, like a machine without bubblewrap."""
    raise SandboxUnavailable("no sandbox in this build of the kit (a stand-in); grade with "
                             "--no-sandbox")
