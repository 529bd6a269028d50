"""``vmkit grade``: grade submitted notebooks, each in its own kernel.

For each submission, in order:

1. read it: a file over ``max_notebook_mb`` or with more than ``max_cells`` cells is refused
   before nbformat parses it; not a notebook: one ``error`` row and a message;
2. find the instructor's copy from the stamped assignment id (``metadata.vmkit``), whatever
   the file is called; a kit version other than the release's is reported;
3. ``check_tampering`` against the released checksums (before the cells are restored);
4. ``restore_cells``: the instructor's tests (hidden ones included), setup and instructions
   around the student's answers, matched by grade_id;
5. ``execute`` in a fresh kernel in the submission's own sandbox
   (:mod:`vmkit.homework.sandbox`: bubblewrap, an unprivileged uid, no network, a read-only
   system, an empty scratch folder), with the student's id in ``VMKIT_STUDENT_ID`` so that the
   variant is the student's, within time, memory and output limits;
6. ``score`` one row per question;
7. ``verify_answers``: the answers that hidden tests handed over are checked again outside the
   kernel, against values computed in a fresh process in the same sandbox (a patched kernel
   cannot fake them);
   a tampered notebook's automatic rows become ``tampered`` with 0 points;
8. ``write_feedback``: an HTML page per submission.

**The batch.** Each submission is graded in its own worker process (forked from a
forkserver, so that starting one costs milliseconds), ``jobs`` at a time, each watched by the
batch: a worker still running at the submission's deadline (``deadline``: the kernel, the
outside check and the feedback page together) is killed and the submission is one ``timeout``
row; a worker that dies is one ``error`` row; the rest of the batch goes on. Results are handed
to ``on_result`` in the order of the submissions as soon as every earlier one is done, so the
CSV is written while the batch runs (:class:`CsvWriter`) and a batch that stops half-way keeps
the rows so far. As root, each worker slot has its own sandbox uid, and every process left
with that uid is killed before the slot takes the next submission.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from vmkit.homework.check_tampering import check_tampering
from vmkit.homework.execute import execute
from vmkit.homework.feedback import write_feedback
from vmkit.homework.release import ROOT, kit_version, release_notebook
from vmkit.homework.restore_cells import restore_cells
from vmkit.homework.sandbox import (Limits, Sandbox, acquire_uid, check_available, kill_uid,
                                    prune_cgroups)
from vmkit.homework.sandbox import layout as sandbox_layout
from vmkit.homework.score import Row, score
from vmkit.homework.stamp import stamped
from vmkit.homework.verify_answers import verify_answers

__all__ = ["Settings", "Result", "grade_one", "grade", "write_csv", "CsvWriter", "student_of",
           "CSV_FIELDS"]

CSV_FIELDS = ["notebook", "question", "points", "max_points", "status"]


@dataclass
class Settings:
    source: Path = ROOT / "solutions"  #: where the instructor's copies are (solutions/)
    timeout: float = 120.0             #: seconds per notebook, kernel start excluded
    memory_mb: int = 2048              #: address-space limit of the kernel (RLIMIT_AS)
    output_limit: int = 256 * 1024     #: bytes of output kept per cell
    feedback: Path | None = None       #: a folder for the HTML pages (None: no pages)
    output_total: int = 2 << 20        #: bytes of output kept per notebook (all cells)
    max_notebook_mb: float = 16        #: larger files are refused before they are read
    max_cells: int = 1000              #: notebooks with more cells are refused before parsing
    deadline: float | None = None      #: seconds for a whole submission (None: 2 * timeout + 60)
    sandbox: bool = True               #: run the student's code in a bubblewrap sandbox

    def seconds(self) -> float:
        """The submission's deadline in seconds: its cells, the kernel's start, the outside
        check and the feedback page."""
        return float(self.deadline) if self.deadline else 2 * float(self.timeout) + 60

    def limits(self) -> Limits:
        return Limits(memory_mb=int(self.memory_mb), cpu_seconds=int(self.seconds()) + 10)


@dataclass
class Result:
    notebook: str
    rows: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    assignment: str | None = None
    student: str | None = None
    feedback: str | None = None
    grader_mb: float | None = None  #: peak memory of the worker that graded it (MB)


def student_of(nb, path: Path, assignment: str | None) -> str:
    """The student id: ``metadata.vmkit.student_id`` if set, else the nbgrader layout's
    folder (``submitted/<student>/<assignment>/file.ipynb``), else the file's stem."""
    sid = (nb.get("metadata", {}).get("vmkit", {}) or {}).get("student_id")
    if sid:
        return str(sid)
    if assignment and path.parent.name == assignment and path.parent.parent.name:
        return path.parent.parent.name
    return path.stem


#: set in a batch's worker process: its sandbox uid (root) and its deadline (monotonic)
_WORKER: dict = {"uid": None, "deadline": None}


def _remaining(reserve: float = 5.0) -> float:
    """Seconds left before the worker's deadline, less ``reserve`` (for the feedback page)."""
    if _WORKER["deadline"] is None:
        return 3600.0
    return max(1.0, _WORKER["deadline"] - time.monotonic() - reserve)


def _read(path: Path, settings: Settings):
    """The submission as a notebook, refused (ValueError) before nbformat parses it when the
    file or its cell count is over the limits: a notebook of 10,000 empty cells costs the
    grader minutes and gigabytes otherwise."""
    import nbformat
    size = path.stat().st_size
    if size > settings.max_notebook_mb * (1 << 20):
        raise ValueError(f"{size / (1 << 20):.1f} MB, over the limit of "
                         f"{settings.max_notebook_mb:g} MB")
    text = path.read_bytes().decode("utf-8")
    cells = json.loads(text).get("cells")
    if isinstance(cells, list) and len(cells) > settings.max_cells:
        raise ValueError(f"{len(cells)} cells, over the limit of {settings.max_cells}")
    return nbformat.reads(text, as_version=4)


def _instructor(source: Path, assignment: str):
    import nbformat
    path = source / f"{assignment}.ipynb"
    return nbformat.read(path, as_version=4) if path.is_file() else None


def grade_one(path, settings: Settings | None = None) -> Result:
    """Grade one submission; never raises for anything the submission does (a grader error
    on a strange notebook becomes that notebook's ``error`` row, the batch goes on)."""
    settings = settings or Settings()
    res = Result(str(path))
    try:
        return _grade_one(Path(path), settings, res)
    except Exception as e:
        res.rows = []
        return _failed(res, f"{path}: not graded ({type(e).__name__}: {str(e)[:200]})",
                       settings)


def _grade_one(path: Path, settings: Settings, res: Result) -> Result:
    try:
        sub = _read(path, settings)
        if not isinstance(sub.get("cells"), list):
            raise ValueError("no cells")
    except Exception as e:  # invalid JSON, not a notebook, unreadable
        msg = f"{path}: not a readable notebook ({type(e).__name__}: {str(e)[:200]})"
        return _failed(res, msg, settings)
    assignment, version = stamped(sub)
    res.assignment = assignment
    instructor = _instructor(Path(settings.source), assignment) if assignment else None
    if instructor is None:
        what = f"unknown assignment {assignment!r}" if assignment else "no assignment id"
        return _failed(res, f"{path}: {what} in metadata.vmkit", settings)
    if version != kit_version():
        res.messages.append(f"{path}: released with vmkit {version}, graded with "
                            f"{kit_version()}")
    res.student = student_of(sub, path, assignment)
    tampered = check_tampering(sub, release_notebook(instructor, assignment))
    if tampered:
        res.messages.append(f"{path}: locked cells changed: {', '.join(tampered)}")
    nb = restore_cells(sub, instructor)
    # what the sandbox lets in of it: nothing of the grader's own environment
    env = {"VMKIT_STUDENT_ID": res.student, "PYTHONHASHSEED": "0",
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    with Sandbox(settings.limits(), enabled=settings.sandbox, uid=_WORKER["uid"]) as sandbox:
        statuses, errors, truncated = execute(
            nb, env=env, timeout=min(settings.timeout, _remaining(10)), sandbox=sandbox,
            output_limit=settings.output_limit, output_total=settings.output_total)
        res.rows = score(nb, statuses, errors, str(path))
        # the student's handler sources run in the same sandbox, after the kernel is gone
        verify_answers(nb, res.rows, assignment, res.student, env=env, sandbox=sandbox,
                       timeout=min(settings.timeout, _remaining()))
    if truncated:
        res.messages.append(f"{path}: output limited in {len(truncated)} cell(s)")
    if tampered:
        for r in res.rows:
            if r.status != "manual":
                r.points, r.status = 0, "tampered"
    if settings.feedback:
        out = Path(settings.feedback) / f"{res.student}-{path.stem}.html"
        res.feedback = str(write_feedback(nb, res.rows, out, res.messages))
    return res


def _failed(res: Result, message: str, settings: Settings, status: str = "error") -> Result:
    res.messages.append(message)
    res.rows = [Row(res.notebook, "notebook", 0, None, status, message)]
    if settings.feedback:
        import html
        out = Path(settings.feedback) / f"{Path(res.notebook).stem}.html"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"<!DOCTYPE html><html><body><h2>Not graded</h2><p>{html.escape(message)}"
                       "</p></body></html>\n", encoding="utf-8")
        res.feedback = str(out)
    return res


def grade(paths, settings: Settings | None = None, jobs: int = 1, on_result=None) -> list[Result]:
    """Grade every submission, each in its own watched worker process, ``jobs`` at a time;
    results in the given order, each also handed to ``on_result`` as soon as it and every
    earlier one are done. Raises :class:`~vmkit.homework.sandbox.SandboxUnavailable` before
    grading anything when ``settings.sandbox`` is set and no sandbox can start here."""
    settings = settings or Settings()
    if settings.sandbox:
        check_available()
    return _Batch([Path(p) for p in paths], settings, max(1, int(jobs)), on_result).run()


def _work(path, settings, conn, uid, deadline, tmp, layout) -> None:
    """A worker: grade one submission, send the result, exit."""
    import resource

    from vmkit.homework import sandbox
    _WORKER.update(uid=uid, deadline=deadline)
    if layout:
        sandbox._LAYOUT = layout  # what the batch found once, not once per submission
    tempfile.tempdir = tmp  # the sandbox's folders: the batch deletes them if this is killed
    res = grade_one(path, settings)
    res.grader_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    conn.send(res)
    conn.close()


class _Batch:
    """Runs workers, watches their deadlines, hands results on in order."""

    def __init__(self, paths, settings, jobs, on_result):
        self.paths, self.settings, self.jobs, self.on_result = paths, settings, jobs, on_result

    def run(self) -> list[Result]:
        import multiprocessing
        from multiprocessing.connection import wait

        # forkserver: a clean single-threaded process (the caller may have threads, and a
        # forked copy of a threaded process can hang on a lock) that has imported the grader
        # already, so a worker starts in milliseconds
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        results: list = [None] * len(self.paths)
        done = 0
        uids = []  # (uid, lock) per worker slot when the grader is root
        if self.settings.sandbox and os.geteuid() == 0:
            uids = [acquire_uid() for _ in range(min(self.jobs, len(self.paths)))]
        free = [u for u, _ in uids] or [None] * self.jobs
        base = Path(tempfile.mkdtemp(prefix="vmkit-grade-"))
        layout = sandbox_layout() if self.settings.sandbox else None
        todo = list(enumerate(self.paths))[::-1]
        running: dict = {}  # index -> (process, connection, deadline, uid, folder)
        try:
            while todo or running:
                while todo and free:
                    i, path = todo.pop()
                    uid = free.pop()
                    folder = base / f"job{i}"
                    folder.mkdir()
                    if uid is not None:
                        os.chmod(folder, 0o711)
                    recv, send = ctx.Pipe(duplex=False)
                    deadline = time.monotonic() + self.settings.seconds()
                    proc = ctx.Process(target=_work, daemon=True, name=f"vmkit-grade-{i}",
                                       args=(path, self.settings, send, uid, deadline,
                                             str(folder), layout))
                    proc.start()
                    send.close()
                    running[i] = (proc, recv, deadline, uid, folder)
                soonest = min(r[2] for r in running.values())
                ready = set(wait([x for r in running.values() for x in (r[1], r[0].sentinel)],
                                 timeout=max(0.0, soonest - time.monotonic())))
                for i, (proc, recv, deadline, uid, folder) in list(running.items()):
                    res = None
                    if recv in ready or proc.sentinel in ready:
                        try:
                            res = recv.recv() if recv.poll() else None
                        except (EOFError, OSError):
                            res = None
                        if res is None:
                            proc.join(5)
                            res = self._lost(i, f"the grader's worker died ({_how(proc)})",
                                             "error")
                    elif time.monotonic() >= deadline:
                        res = self._lost(i, f"not graded within {self.settings.seconds():g} s "
                                            "(the kernel, the outside check and the feedback "
                                            "page together)", "timeout")
                    else:
                        continue
                    if proc.is_alive():
                        proc.kill()
                    proc.join(10)
                    recv.close()
                    if uid is not None:
                        kill_uid(uid)  # whatever the worker's sandbox left, before reuse
                        prune_cgroups()
                    shutil.rmtree(folder, ignore_errors=True)
                    del running[i]
                    free.append(uid)
                    results[i] = res
                    while done < len(results) and results[done] is not None:
                        if self.on_result:
                            self.on_result(results[done])
                        done += 1
        finally:
            for proc, recv, _, uid, _ in running.values():
                proc.kill()
                proc.join(10)
                if uid is not None:
                    kill_uid(uid)
            for _, lock in uids:
                os.close(lock)
            shutil.rmtree(base, ignore_errors=True)
        return results

    def _lost(self, i: int, why: str, status: str) -> Result:
        path = self.paths[i]
        return _failed(Result(str(path)), f"{path}: {why}", self.settings, status)


def _how(proc) -> str:
    code = proc.exitcode
    if code is None:
        return "no exit status"
    if code < 0:
        import signal
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _csv_rows(res: Result):
    for r in res.rows:
        yield [r.notebook, r.question, "" if r.points is None else r.points,
               "" if r.max_points is None else r.max_points, r.status]


class CsvWriter:
    """The grader CSV (``notebook,question,points,max_points,status``) to ``out`` (a path, a
    file object, or None / ``-`` for stdout), written and flushed one submission at a time
    (:meth:`add`), so that whatever stops a batch leaves the rows so far."""

    def __init__(self, out=None):
        self._own = out is not None and out != "-" and not hasattr(out, "write")
        self.file = (open(out, "w", newline="", encoding="utf-8") if self._own
                     else out if hasattr(out, "write") else sys.stdout)
        self._w = csv.writer(self.file, lineterminator="\n")
        self._w.writerow(CSV_FIELDS)
        self.file.flush()

    def add(self, res: Result) -> None:
        self._w.writerows(_csv_rows(res))
        self.file.flush()

    def close(self) -> None:
        if self._own:
            self.file.close()

    def __enter__(self) -> "CsvWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_csv(results, out=None) -> None:
    """The grader CSV (``notebook,question,points,max_points,status``) to ``out`` (a path or
    a file object; default stdout)."""
    with CsvWriter(out) as w:
        for res in results:
            w.add(res)
