"""``vmkit grade``: grade submitted notebooks, each in its own kernel.

For each submission, in order:

1. read it (not a notebook: one ``error`` row and a message);
2. find the instructor's copy from the stamped assignment id (``metadata.vmkit``), whatever
   the file is called; a kit version other than the release's is reported;
3. ``check_tampering`` against the released checksums (before the cells are restored);
4. ``restore_cells``: the instructor's tests (hidden ones included), setup and instructions
   around the student's answers, matched by grade_id;
5. ``execute`` in a fresh kernel in an empty scratch directory, with the student's id in
   ``VMKIT_STUDENT_ID`` so that the variant is the student's, within time, memory and output
   limits;
6. ``score`` one row per question;
7. ``verify_answers``: the answers that hidden tests handed over are checked again outside the
   kernel, against values computed in a fresh process (a patched kernel cannot fake them);
   a tampered notebook's automatic rows become ``tampered`` with 0 points;
8. ``write_feedback``: an HTML page per submission.

Submissions are graded in parallel by ``jobs`` worker processes (each runs one kernel).
"""

from __future__ import annotations

import csv
import functools
import os
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from vmkit.homework.check_tampering import check_tampering
from vmkit.homework.execute import execute
from vmkit.homework.feedback import write_feedback
from vmkit.homework.release import ROOT, kit_version, release_notebook
from vmkit.homework.restore_cells import restore_cells
from vmkit.homework.score import Row, score
from vmkit.homework.stamp import stamped
from vmkit.homework.verify_answers import verify_answers

__all__ = ["Settings", "Result", "grade_one", "grade", "write_csv", "student_of", "CSV_FIELDS"]

CSV_FIELDS = ["notebook", "question", "points", "max_points", "status"]


@dataclass
class Settings:
    source: Path = ROOT / "solutions"  #: where the instructor's copies are (solutions/)
    timeout: float = 120.0             #: seconds per notebook, kernel start excluded
    memory_mb: int = 2048              #: address-space limit of the kernel (RLIMIT_AS)
    output_limit: int = 256 * 1024     #: bytes of output kept per cell
    feedback: Path | None = None       #: a folder for the HTML pages (None: no pages)


@dataclass
class Result:
    notebook: str
    rows: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    assignment: str | None = None
    student: str | None = None
    feedback: str | None = None


def student_of(nb, path: Path, assignment: str | None) -> str:
    """The student id: ``metadata.vmkit.student_id`` if set, else the nbgrader layout's
    folder (``submitted/<student>/<assignment>/file.ipynb``), else the file's stem."""
    sid = (nb.get("metadata", {}).get("vmkit", {}) or {}).get("student_id")
    if sid:
        return str(sid)
    if assignment and path.parent.name == assignment and path.parent.parent.name:
        return path.parent.parent.name
    return path.stem


def _limit_memory(memory_mb: int) -> None:
    import resource
    n = int(memory_mb) << 20
    resource.setrlimit(resource.RLIMIT_AS, (n, n))


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
    import nbformat

    try:
        sub = nbformat.read(path, as_version=4)
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
    env = {k: v for k, v in os.environ.items() if k != "JUPYTERHUB_USER"}
    env.update({"VMKIT_STUDENT_ID": res.student, "PYTHONHASHSEED": "0",
                "MPLBACKEND": "module://matplotlib_inline.backend_inline"})
    scratch = Path(tempfile.mkdtemp(prefix="vmkit-grade-"))
    try:
        statuses, errors, truncated = execute(nb, scratch, env, timeout=settings.timeout,
                                              memory_mb=settings.memory_mb,
                                              output_limit=settings.output_limit)
        res.rows = score(nb, statuses, errors, str(path))
        # the student's handler sources run here too: same folder, same memory limit
        verify_answers(nb, res.rows, assignment, res.student, env=env, cwd=str(scratch),
                       timeout=settings.timeout,
                       preexec_fn=functools.partial(_limit_memory, settings.memory_mb))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
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


def _failed(res: Result, message: str, settings: Settings) -> Result:
    res.messages.append(message)
    res.rows = [Row(res.notebook, "notebook", 0, None, "error", message)]
    if settings.feedback:
        import html
        out = Path(settings.feedback) / f"{Path(res.notebook).stem}.html"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"<!DOCTYPE html><html><body><h2>Not graded</h2><p>{html.escape(message)}"
                       "</p></body></html>\n", encoding="utf-8")
        res.feedback = str(out)
    return res


def grade(paths, settings: Settings | None = None, jobs: int = 1) -> list[Result]:
    """Grade every submission, ``jobs`` at a time (processes); results in the given order."""
    settings = settings or Settings()
    paths = [Path(p) for p in paths]
    if jobs <= 1 or len(paths) <= 1:
        return [grade_one(p, settings) for p in paths]
    # spawn, not fork: the caller may have threads (a test runner, a notebook's kernel), and
    # a forked copy of a threaded process can hang on a lock some other thread held
    import multiprocessing

    with ProcessPoolExecutor(max_workers=jobs,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(grade_one, paths, [settings] * len(paths)))


def write_csv(results, out=None) -> None:
    """The grader CSV (``notebook,question,points,max_points,status``) to ``out`` (a path or
    a file object; default stdout)."""
    def emit(f):
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_FIELDS)
        for res in results:
            for r in res.rows:
                w.writerow([r.notebook, r.question, "" if r.points is None else r.points,
                            "" if r.max_points is None else r.max_points, r.status])
    if out is None or out == "-":
        emit(sys.stdout)
    elif hasattr(out, "write"):
        emit(out)
    else:
        with open(out, "w", newline="", encoding="utf-8") as f:
            emit(f)
