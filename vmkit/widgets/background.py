"""Drawing a live view's picture off the kernel's main thread, at a lower CPU priority.

A picture made by graphviz's ``dot`` costs 15-25 ms of CPU (most of it ``dot`` starting up:
loading its libraries and fontconfig), and a Step that crosses rings asks for one. Drawn in the
click's own turn of the event loop it kept the kernel busy that long; on a server where a class
clicks at once, twenty ``dot`` processes competed with the clicks still being answered
(``benchmarks/bench_class.py``: the presses that crossed rings were the slowest 5 %).

:func:`draw` runs the drawing on one worker thread of the kernel whose CPU priority is lowered
(``nice`` +10; on Linux a thread's own, and the ``dot`` it starts inherits it): the kernel's
main thread answers the click and the next message at once, and a busy server answers its
students' clicks before it draws their pictures. Where a thread's priority cannot be set
(other systems) the drawing still happens off the main thread.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["draw", "NICE"]

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
