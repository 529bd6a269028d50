"""``vmkit grade``: grade submitted notebooks, each in its own kernel.

For each submission, in order:

0. who and what: the student and the assignment come from the instructor (``--student``,
   a ``--roster``, ``--assignment`` or the nbgrader layout ``submitted/<student>/<assignment>/``),
   never from the notebook alone;
1. read it (not a notebook: one ``error`` row and a message);
2. the instructor's copy of that assignment; a notebook stamped (``metadata.vmkit``) for
   another assignment is an ``error`` row, one whose ``student_id`` names someone else is
   graded as the instructor's student plus an ``identity`` row (``tampered``, 0 of 0); a kit
   version other than the release's is reported;
3. ``check_tampering`` against the released checksums (before the cells are restored);
4. ``restore_cells``: the instructor's tests (hidden ones included), setup and instructions
   around the student's answers, matched by grade_id;
5. ``execute`` in a fresh kernel in the submission's sandbox (:mod:`vmkit.homework.sandbox`),
   with the student's id in ``VMKIT_STUDENT_ID`` so that the variant is the student's,
   within time, memory and output limits;
6. ``score`` one row per question of the instructor's copy (cells a student adds never score);
7. ``verify_answers``: the answers that hidden tests handed over are checked outside the
   kernel against the reference answers in ``<source>/reference/`` (hw02's handlers run in
   the sandbox, called by the grader's VMM); a tampered notebook's automatic rows become
   ``tampered`` with 0 points;
8. ``write_feedback``: a sanitised HTML page per submission, named after the student.

Submissions are graded in parallel by ``jobs`` worker processes (each runs one kernel).
"""

from __future__ import annotations

import csv
import io
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from vmkit.homework.check_tampering import check_tampering
from vmkit.homework.execute import execute
from vmkit.homework.feedback import write_feedback
from vmkit.homework.reference import REFERENCE_DIR
from vmkit.homework.release import ROOT, kit_version, release_notebook
from vmkit.homework.restore_cells import restore_cells
from vmkit.homework.score import Row, score
from vmkit.homework.stamp import stamped
from vmkit.homework.verify_answers import verify_answers

__all__ = ["Settings", "Result", "Submission", "grade_one", "grade", "write_csv", "identify",
           "read_roster", "summary", "csv_field", "feedback_path", "CSV_FIELDS", "IdentityError", "default_source"]

CSV_FIELDS = ["student", "assignment", "notebook", "question", "points", "max_points", "status"]


def default_source() -> Path:
    """The checkout's ``solutions/`` (where the instructor's copies are when the kit runs from
    a checkout)."""
    return ROOT / "solutions"


@dataclass
class Settings:
    source: Path = field(default_factory=default_source)  #: the instructor's copies
    timeout: float = 120.0             #: seconds per notebook, kernel start excluded
    memory_mb: int = 2048              #: address-space limit of the kernel (RLIMIT_AS)
    output_limit: int = 256 * 1024     #: bytes of output kept per cell
    feedback: Path | None = None       #: a folder for the HTML pages (None: no pages)
    assignment: str | None = None      #: the assignment of every submission (--assignment)
    student: str | None = None         #: the student of every submission (--student)
    roster: dict | None = None         #: resolved path -> student id (:func:`read_roster`)
    sandbox: bool = True               #: False: no sandbox (--no-sandbox; see the README)
    run_as: str | None = None          #: a user whom hw02's handler processes run as (the
                                       #: Gradescope autograder's unprivileged user)


@dataclass
class Submission:
    """One notebook with the student and assignment the instructor gave it."""
    path: Path
    student: str | None = None
    assignment: str | None = None


@dataclass
class Result:
    notebook: str
    rows: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    assignment: str | None = None
    student: str | None = None
    feedback: str | None = None


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
    import nbformat

    from vmkit.homework.sandbox import Limits, Sandbox

    try:
        sub = nbformat.read(path, as_version=4)
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
    env = {k: v for k, v in os.environ.items()
           if k not in ("JUPYTERHUB_USER", "VMKIT_REFERENCE")}
    env.update({"VMKIT_STUDENT_ID": student, "PYTHONHASHSEED": "0",
                "MPLBACKEND": "module://matplotlib_inline.backend_inline"})
    with Sandbox(Limits(memory_mb=settings.memory_mb), enabled=settings.sandbox) as box:
        statuses, errors, truncated = execute(nb, box.scratch, env, timeout=settings.timeout,
                                              memory_mb=settings.memory_mb,
                                              output_limit=settings.output_limit)
        res.rows = score(nb, statuses, errors, str(path), instructor)
        # the student's handlers run in the same sandbox, called by the grader's VMM
        child_env = {"PATH": env.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0",
                     "HOME": str(box.scratch), "VMKIT_STUDENT_ID": student}
        popen = box.popen
        if settings.run_as and not settings.sandbox:
            from vmkit.homework.gradescope import demote
            prefix = demote(settings.run_as)
            popen = lambda argv, *a, **kw: box.popen(prefix + list(argv), *a, **kw)  # noqa: E731
        verify_answers(nb, res.rows, assignment, student,
                       Path(settings.source) / REFERENCE_DIR, popen=popen,
                       env=child_env, timeout=settings.timeout)
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


def _failed(res: Result, message: str, settings: Settings) -> Result:
    res.messages.append(message)
    res.rows = [Row(res.notebook, "notebook", 0, None, "error", message)]
    if settings.feedback:
        out = feedback_path(settings.feedback, res.student, Path(res.notebook))
        res.feedback = str(write_feedback(None, res.rows, out, res.messages,
                                          student=res.student, assignment=res.assignment))
    return res


def grade(paths, settings: Settings | None = None, jobs: int = 1) -> list[Result]:
    """Grade every submission (paths or :class:`Submission` objects), ``jobs`` at a time
    (processes); results in the given order."""
    settings = settings or Settings()
    subs = [p if isinstance(p, Submission) else Path(p) for p in paths]
    if jobs <= 1 or len(subs) <= 1:
        return [grade_one(p, settings) for p in subs]
    # spawn, not fork: the caller may have threads (a test runner, a notebook's kernel), and
    # a forked copy of a threaded process can hang on a lock some other thread held
    import multiprocessing

    with ProcessPoolExecutor(max_workers=jobs,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(grade_one, subs, [settings] * len(subs)))


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


def write_csv(results, out=None) -> None:
    """The grader CSV (``student,assignment,notebook,question,points,max_points,status``) to
    ``out`` (a path or a file object; default stdout); every text field neutralised
    (:func:`csv_field`)."""
    def emit(f):
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_FIELDS)
        for res in results:
            for r in res.rows:
                w.writerow([csv_field(x) for x in (res.student, res.assignment, r.notebook,
                                                   r.question, r.points, r.max_points,
                                                   r.status)])
    if out is None or out == "-":
        emit(sys.stdout)
    elif hasattr(out, "write"):
        emit(out)
    else:
        with open(out, "w", newline="", encoding="utf-8") as f:
            emit(f)


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
