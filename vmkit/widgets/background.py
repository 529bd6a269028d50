"""Drawing a live view's picture off the kernel's main thread, at a lower CPU priority.

A picture made by graphviz's ``dot`` costs 15-25 ms of CPU (most of it ``dot`` starting up:
loading its libraries and fontconfig), and a Step that crosses rings asks for one. Drawn in the
click's own turn of the event loop it kept the kernel busy that long; on a server where a class
clicks at once, twenty ``dot`` processes competed with the clicks still being answered
(``benchmarks/bench_class.py``: the presses that crossed rings were the slowest 5 %).

:func:`draw` runs the drawing on one worker thread of the kernel whose CPU priority is lowered
(``nice`` +10; on Linux a thread's own), so the kernel's main thread answers the click and the
next message at once. :func:`pipe_svg` runs ``dot`` as ``graph.pipe(format="svg")`` does, at
that priority and in a session of its own: Linux puts every session in its own scheduling
group ("autogroup", on by default) and shares the CPU between groups before nice values count,
so a ``dot`` in its kernel's session would compete with the other students' kernels as an
equal; in its own group with the group's nice raised, a busy server answers its students'
clicks before it draws their pictures. (Where each student's server has a cgroup of its own,
as on Kubernetes, the picture yields to its own kernel only.) Where priorities cannot be set
(other systems) the drawing still happens off the main thread.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import graphviz

__all__ = ["draw", "pipe_svg", "NICE"]

#: how much lower than the kernel the drawing thread (and the dot it starts) runs: nice +10 is
#: about a tenth of the CPU share of a normal process when both want the CPU
NICE = 10

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _lower_priority() -> None:
    """Lower this thread's CPU priority by :data:`NICE` (Linux: ``setpriority`` on a thread id
    affects that thread only; elsewhere it would name a process, so it is left alone)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + NICE)
    except (AttributeError, OSError):
        pass


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vmkit-draw",
                                       initializer=_lower_priority)
        return _pool


def draw(func, *args) -> asyncio.Future:
    """Run ``func(*args)`` on the drawing thread; returns a future of the running event loop
    (its done callbacks run on the loop's thread, where widgets are updated). ``func`` must not
    touch widgets or the monitor: it gets what it needs (e.g. a graph's DOT source)."""
    return asyncio.get_running_loop().run_in_executor(_executor(), func, *args)


def pipe_svg(graph) -> str:
    """``graph.pipe(format="svg", encoding="utf-8")`` (the same command and bytes) with ``dot``
    in a session of its own whose scheduling group's nice value is raised by :data:`NICE`
    (Linux autogroups; elsewhere the process runs at the calling thread's priority). Raises
    ``graphviz.ExecutableNotFound`` without ``dot`` and ``subprocess.CalledProcessError`` when
    it fails, as ``graph.pipe`` does."""
    cmd = ["dot", f"-K{graph.engine}", "-Tsvg"]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise graphviz.ExecutableNotFound(cmd) from e
        raise
    if sys.platform.startswith("linux"):
        try:    # raising a nice value needs no privilege; a dot already gone is fine
            with open(f"/proc/{proc.pid}/autogroup", "w") as f:
                f.write(str(NICE))
        except OSError:
            pass
    out, err = proc.communicate(graph.source.encode(graph.encoding or "utf-8"))
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd, output=out, stderr=err)
    return out.decode(graph.encoding or "utf-8")
