"""``vmkit grade``: grade submitted notebooks, each in its own kernel.

For each submission, in order:

0. who and what: the student and the assignment come from the instructor (``--student``,
   a ``--roster``, ``--assignment`` or the nbgrader layout ``submitted/<student>/<assignment>/``),
   never from the notebook alone;
1. read it: a file over ``max_notebook_mb`` or with more than ``max_cells`` cells is refused
   before nbformat parses it; not a notebook: one ``error`` row and a message;
2. the instructor's copy of that assignment; a notebook stamped (``metadata.vmkit``) for
   another assignment is an ``error`` row, one whose ``student_id`` names someone else is
   graded as the instructor's student plus an ``identity`` row (``tampered``, 0 of 0); a kit
   version other than the release's is reported;
3. ``check_tampering`` against the released checksums (before the cells are restored);
4. ``restore_cells``: the instructor's tests (hidden ones included), setup and instructions
   around the student's answers, matched by grade_id;
5. ``execute`` in a fresh kernel in the submission's own sandbox
   (:mod:`vmkit.homework.sandbox`: bubblewrap, an unprivileged uid, no network, a read-only
   system, an empty scratch folder), with the student's id in ``VMKIT_STUDENT_ID`` so that the
   variant is the student's, within time, memory and output limits;
6. ``score`` one row per question of the instructor's copy (cells a student adds never score);
7. ``verify_answers``: the answers that hidden tests handed over are checked outside the
   kernel against the reference answers in ``<source>/reference/``, computed in the grader's
   own process (hw02's handlers run in the submission's sandbox, called by the grader's VMM);
   a tampered notebook's automatic rows become ``tampered`` with 0 points;
8. ``write_feedback``: a sanitised HTML page per submission, named after the student.

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
import io
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
from vmkit.homework.reference import REFERENCE_DIR
from vmkit.homework.release import default_source, kit_version, release_notebook
from vmkit.homework.restore_cells import restore_cells
from vmkit.homework.sandbox import (Limits, Sandbox, acquire_uid, check_available, kill_uid,
                                    prune_cgroups)
from vmkit.homework.sandbox import layout as sandbox_layout
from vmkit.homework.score import Row, score
from vmkit.homework.stamp import stamped
from vmkit.homework.verify_answers import verify_answers

__all__ = ["Settings", "Result", "Submission", "grade_one", "grade", "write_csv", "CsvWriter",
           "identify", "read_roster", "summary", "csv_field", "feedback_path", "CSV_FIELDS",
           "IdentityError", "default_source"]

CSV_FIELDS = ["student", "assignment", "notebook", "question", "points", "max_points", "status"]


@dataclass
class Settings:
    source: Path = field(default_factory=default_source)  #: the instructor's copies
    timeout: float = 120.0             #: seconds per notebook, kernel start excluded
    memory_mb: int = 2048              #: address-space limit of the kernel (RLIMIT_AS)
    output_limit: int = 256 * 1024     #: bytes of output kept per cell
    feedback: Path | None = None       #: a folder for the HTML pages (None: no pages)
    output_total: int = 2 << 20        #: bytes of output kept per notebook (all cells)
    max_notebook_mb: float = 16        #: larger files are refused before they are read
    max_cells: int = 1000              #: notebooks with more cells are refused before parsing
    deadline: float | None = None      #: seconds for a whole submission (None: 2 * timeout + 60)
    sandbox: bool = True               #: run the student's code in a bubblewrap sandbox
    assignment: str | None = None      #: the assignment of every submission (--assignment)
    student: str | None = None         #: the student of every submission (--student)
    roster: dict | None = None         #: resolved path -> student id (:func:`read_roster`)
    run_as: str | None = None          #: without the sandbox: a user whom hw02's handler
                                       #: processes run as (the Gradescope autograder's)

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


@dataclass
class Submission:
    """One notebook with the student and assignment the instructor gave it."""
    path: Path
    student: str | None = None
    assignment: str | None = None


class IdentityError(ValueError):
    """A submission's student or assignment is not given by the instructor."""


def read_roster(path) -> dict:
    """A roster: a CSV file with the header ``path,student``, one submission a line, where
    ``path`` is a notebook or a folder of notebooks (relative to the roster's folder, or
    absolute) and ``student`` the id under which it is graded. -> resolved path -> id.
    Raises IdentityError naming the line of a bad entry."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise IdentityError(f"{path}: cannot read the roster ({type(e).__name__})") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip() for c in rows[0]] != ["path", "student"]:
        raise IdentityError(f"{path}:1: a roster starts with the header 'path,student'")
    out = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise IdentityError(f"{path}:{n}: expected 'path,student', got {','.join(row)!r}")
        where = Path(row[0].strip())
        where = where if where.is_absolute() else path.parent / where
        out[str(where.resolve())] = row[1].strip()
    return out


def _layout(path: Path):
    """(student, assignment) of nbgrader's ``submitted/<student>/<assignment>/file.ipynb``."""
    parts = path.resolve().parts
    if len(parts) >= 4 and parts[-4] == "submitted":
        return parts[-3], parts[-2]
    return None, None


def identify(path, settings: Settings) -> Submission:
    """The submission ``path`` with its student (``settings.student``, else the roster's entry
    for the file or its nearest listed folder, else the nbgrader layout) and its assignment
    (``settings.assignment``, else the layout). Raises IdentityError (one line) when the
    instructor gave neither."""
    path = Path(path)
    lay_student, lay_assignment = _layout(path)
    student = settings.student
    if student is None and settings.roster:
        here = path.resolve()
        for where in [here, *here.parents]:
            if str(where) in settings.roster:
                student = settings.roster[str(where)]
                break
    student = student or lay_student
    assignment = settings.assignment or lay_assignment
    if not student:
        raise IdentityError(f"{path}: no student id: give --student ID, a --roster file, or "
                            "hand it in as submitted/<student>/<assignment>/")
    if not assignment:
        raise IdentityError(f"{path}: no assignment: give --assignment NAME or hand it in as "
                            "submitted/<student>/<assignment>/")
    return Submission(path, student, assignment)


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
    if not assignment or "/" in assignment or assignment.startswith("."):
        return None
    path = source / f"{assignment}.ipynb"
    return nbformat.read(path, as_version=4) if path.is_file() else None


def _safe_name(text: str) -> str:
    """A file name made of ``text``: letters, digits, ``._-`` kept, the rest ``_``, at most
    80 characters, never starting with a dot; a short hash keeps different ids apart."""
    import hashlib
    import re

    clean = re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".")[:80] or "x"
    if clean != text:
        clean += "-" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:8]
    return clean


def feedback_path(folder, student: str | None, notebook: Path) -> Path:
    """Where the page of ``student``'s ``notebook`` goes: always a file directly inside
    ``folder``, whatever the id or the file is called."""
    folder = Path(folder)
    name = _safe_name(f"{student or 'unknown'}-{Path(notebook).stem}") + ".html"
    out = folder / name
    if out.resolve().parent != folder.resolve():  # cannot happen with _safe_name; kept as a guard
        raise ValueError(f"{name!r}: not a file name")
    return out


def grade_one(sub, settings: Settings | None = None) -> Result:
    """Grade one submission (a :class:`Submission`, or a path identified with
    :func:`identify`); never raises for anything the submission does (a grader error on a
    strange notebook becomes that notebook's ``error`` row, the batch goes on)."""
    settings = settings or Settings()
    path = sub.path if isinstance(sub, Submission) else Path(sub)
    res = Result(str(path))
    try:
        if not isinstance(sub, Submission):
            sub = identify(path, settings)
        res.student, res.assignment = sub.student, sub.assignment
        return _grade_one(Path(sub.path), settings, res)
    except IdentityError as e:
        res.rows = []
        return _failed(res, str(e), settings)
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
    assignment, student = res.assignment, res.student
    stamp, version = stamped(sub)
    if stamp is not None and stamp != assignment:
        return _failed(res, f"{path}: a notebook of {str(stamp)[:80]!r} handed in for "
                            f"{assignment!r}", settings)
    instructor = _instructor(Path(settings.source), assignment)
    if instructor is None:
        return _failed(res, f"{path}: unknown assignment {assignment!r} (no "
                            f"{assignment}.ipynb in {settings.source})", settings)
    if version is not None and version != kit_version():
        res.messages.append(f"{path}: released with vmkit {str(version)[:40]}, graded with "
                            f"{kit_version()}")
    claimed = (sub.get("metadata", {}).get("vmkit", {}) or {}).get("student_id")
    tampered = check_tampering(sub, release_notebook(instructor, assignment))
    if tampered:
        res.messages.append(f"{path}: locked cells changed: {', '.join(tampered)}")
    nb = restore_cells(sub, instructor)
    # what the sandbox lets in of it: nothing of the grader's own environment
    env = {"VMKIT_STUDENT_ID": student, "PYTHONHASHSEED": "0",
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    with Sandbox(settings.limits(), enabled=settings.sandbox, uid=_WORKER["uid"]) as sandbox:
        statuses, errors, truncated = execute(
            nb, env=env, timeout=min(settings.timeout, _remaining(10)), sandbox=sandbox,
            output_limit=settings.output_limit, output_total=settings.output_total)
        res.rows = score(nb, statuses, errors, str(path), instructor)
        # the student's handlers run in the same sandbox, called by the grader's VMM
        popen = sandbox.popen
        if settings.run_as and not settings.sandbox:
            from vmkit.homework.gradescope import demote
            prefix = demote(settings.run_as)
            popen = lambda argv, *a, **kw: sandbox.popen(prefix + list(argv), *a, **kw)  # noqa: E731
        verify_answers(nb, res.rows, assignment, student,
                       Path(settings.source) / REFERENCE_DIR, popen=popen, env=env,
                       timeout=min(settings.timeout, _remaining()))
    if truncated:
        res.messages.append(f"{path}: output limited in {len(truncated)} cell(s)")
    if tampered:
        for r in res.rows:
            if r.status != "manual":
                r.points, r.status = 0, "tampered"
    if claimed is not None and str(claimed) != student:
        res.messages.append(f"{path}: the notebook names the student {str(claimed)[:80]!r}; "
                            f"graded as {student!r}")
        res.rows.append(Row(str(path), "identity", 0, 0, "tampered",
                            "the notebook names another student"))
    if settings.feedback:
        out = feedback_path(settings.feedback, student, path)
        res.feedback = str(write_feedback(nb, res.rows, out, res.messages, student=student,
                                          assignment=assignment))
    return res


def _failed(res: Result, message: str, settings: Settings, status: str = "error") -> Result:
    res.messages.append(message)
    res.rows = [Row(res.notebook, "notebook", 0, None, status, message)]
    if settings.feedback:
        out = feedback_path(settings.feedback, res.student, Path(res.notebook))
        res.feedback = str(write_feedback(None, res.rows, out, res.messages,
                                          student=res.student, assignment=res.assignment))
    return res


def grade(paths, settings: Settings | None = None, jobs: int = 1, on_result=None) -> list[Result]:
    """Grade every submission, each in its own watched worker process, ``jobs`` at a time;
    results in the given order, each also handed to ``on_result`` as soon as it and every
    earlier one are done. Raises :class:`~vmkit.homework.sandbox.SandboxUnavailable` before
    grading anything when ``settings.sandbox`` is set and no sandbox can start here."""
    settings = settings or Settings()
    if settings.sandbox:
        check_available()
    subs = [p if isinstance(p, Submission) else Path(p) for p in paths]
    return _Batch(subs, settings, max(1, int(jobs)), on_result).run()


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
        sub = self.paths[i]
        path = sub.path if isinstance(sub, Submission) else sub
        res = Result(str(path))
        if isinstance(sub, Submission):
            res.student, res.assignment = sub.student, sub.assignment
        return _failed(res, f"{path}: {why}", self.settings, status)


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


#: a spreadsheet reads a cell that starts with one of these as a formula
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_field(value) -> str:
    """``value`` as a CSV field that no spreadsheet runs: text starting with ``= + - @``, a
    tab or a carriage return gets a leading ``'`` (OWASP's advice); numbers are kept."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_rows(res: Result):
    for r in res.rows:
        yield [csv_field(x) for x in (res.student, res.assignment, r.notebook, r.question,
                                      r.points, r.max_points, r.status)]


class CsvWriter:
    """The grader CSV (``student,assignment,notebook,question,points,max_points,status``, every
    text field neutralised: :func:`csv_field`) to ``out`` (a path, a file object, or None /
    ``-`` for stdout), written and flushed one submission at a time (:meth:`add`), so that
    whatever stops a batch leaves the rows so far."""

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
    """The grader CSV (:data:`CSV_FIELDS`) of ``results`` to ``out`` (a path or a file
    object; default stdout)."""
    with CsvWriter(out) as w:
        for res in results:
            w.add(res)


def summary(results) -> str:
    """One line for a run: submissions, automatic points out of the maximum, statuses."""
    from collections import Counter

    got = top = 0
    statuses: Counter = Counter()
    for res in results:
        for r in res.rows:
            statuses[r.status] += 1
            if r.status != "manual":
                got += r.points or 0
                top += r.max_points or 0
    fmt = lambda x: int(x) if float(x).is_integer() else round(x, 2)  # noqa: E731
    counts = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
    return (f"{len(results)} submission(s), {fmt(got)} of {fmt(top)} automatic points; "
            f"rows: {counts or 'none'}")
