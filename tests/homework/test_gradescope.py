"""The Gradescope autograder, run on this machine in a temporary root laid out as Gradescope
lays out ``/autograder``: ``setup.sh`` once, then ``run_autograder`` for a solution (full marks)
and for a broken submission that also tries to read the reference answers (it runs as an
unprivileged user, who cannot).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import nbformat
import pytest

from vmkit.homework import cells
from vmkit.homework.release import release_notebook, write

ROOT = Path(__file__).resolve().parents[2]
ASSIGNMENT = "hw01-rings-and-traps"  # a few seconds per run
USER = "nobody"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv (util-linux), as on Gradescope")


def submission(**answers):
    sol = nbformat.read(ROOT / "solutions" / f"{ASSIGNMENT}.ipynb", as_version=4)
    nb = release_notebook(sol, ASSIGNMENT)
    given = {cells.grade_id(c): c.source for c in sol.cells}
    for c in nb.cells:
        if cells.is_solution(c):
            c.source = answers.get(cells.grade_id(c).replace("-", "_"), given[cells.grade_id(c)])
    return nb


def _interpreter(base: Path) -> Path:
    """A venv of the system's Python that sees this venv's packages, standing in for the one
    setup.sh makes on Gradescope: without the sandbox the unprivileged user must be able to
    run it (this venv's own interpreter may live in a folder only root can enter)."""
    system = shutil.which("python3", path="/usr/bin:/bin")
    probe = subprocess.run([system, "-c", "import sys; print(sys.version_info[:2])"],
                           capture_output=True, text=True) if system else None
    if not probe or probe.stdout.strip() != str(tuple(sys.version_info[:2])):
        pytest.skip("needs the system's python3 of this venv's version")
    venv = base / "venv"
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    packages = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    # the kit of this checkout too: without the sandbox, the kernel's environment has no
    # PYTHONPATH
    (site / "vmkit-test.pth").write_text("\n".join([str(ROOT), *packages]) + "\n")
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def autograder():
    from vmkit.cli import main

    # a root that the unprivileged user may walk through (as /autograder is), unlike pytest's
    base = Path(tempfile.mkdtemp(prefix="vmkit-gradescope-"))
    os.chmod(base, 0o755)
    zpath = base / "autograder.zip"
    assert main(["autograder", "gradescope", ASSIGNMENT, "--out", str(zpath)]) == 0
    root = base / "autograder"
    src = root / "source"
    src.mkdir(parents=True)
    with zipfile.ZipFile(zpath) as z:
        z.extractall(src)
        for info in z.infolist():  # zipfile drops the modes
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(src / info.filename, mode)
    for d in (root, src):
        os.chmod(d, 0o755)
    from vmkit.homework.sandbox import SandboxUnavailable, check_available
    try:
        check_available()  # the kernel runs in the sandbox, which binds this venv's Python
        python = Path(sys.executable)
    except SandboxUnavailable:  # the kernel runs as USER, who must be able to run Python
        python = _interpreter(base)
    env = {**os.environ, "VMKIT_AUTOGRADER_ROOT": str(root),
           "VMKIT_AUTOGRADER_PYTHON": str(python), "VMKIT_AUTOGRADER_USER": USER,
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(["bash", "setup.sh"], cwd=src, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    yield root, env
    shutil.rmtree(base, ignore_errors=True)


def grade(autograder, nb, email="alice@example.edu") -> dict:
    root, env = autograder
    sub = root / "submission"
    shutil.rmtree(sub, ignore_errors=True)
    sub.mkdir()
    write(nb, sub / "hw01.ipynb")
    (root / "submission_metadata.json").write_text(json.dumps(
        {"users": [{"email": email, "name": "A", "sid": "1"}]}))
    shutil.rmtree(root / "results", ignore_errors=True)
    proc = subprocess.run(["bash", str(root / "source" / "run_autograder")], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((root / "results" / "results.json").read_text())


def test_zip_holds_what_gradescope_runs(autograder):
    """Does the zip hold setup.sh, run_autograder, the kit, the notebook and the reference, and
    does setup.sh leave the reference readable by root only?"""
    root, _ = autograder
    src = root / "source"
    assert (src / "setup.sh").is_file() and os.access(src / "run_autograder", os.X_OK)
    assert (src / "kit" / "vmkit" / "homework" / "grade.py").is_file()
    ref = src / "solutions" / "reference" / f"{ASSIGNMENT}.py"
    assert ref.is_file() and (ref.stat().st_mode & 0o077) == 0
    assert (src / "solutions").stat().st_mode & 0o077 == 0


def test_solution_gets_full_marks(autograder):
    """Does a solution get every point in results.json, with Gradescope's fields?"""
    out = grade(autograder, submission())
    assert out["tests"] and all(t["score"] == t["max_score"] > 0 for t in out["tests"]), [t["output"] for t in out["tests"]]
    assert out["score"] == 4
    assert set(out["tests"][0]) == {"name", "score", "max_score", "status", "output",
                                    "visibility"}


def test_broken_submission_and_reading_the_reference(autograder):
    """Does a broken submission lose its points, and can its kernel (the unprivileged user)
    not read the reference answers to copy them?"""
    ref = autograder[0] / "source" / "solutions" / "reference" / f"{ASSIGNMENT}.py"
    steal = ("import runpy, os\n"
             f"_ns = runpy.run_path({str(ref)!r})\n"
             "ring_transitions = _ns['expected'](P)['ring_transitions']")
    out = grade(autograder, submission(q1_answer=steal,
                                       q2_answer="vectors = [3]",
                                       q3_answer="raise RuntimeError('broken')"))
    by = {t["name"]: t for t in out["tests"]}
    assert [by[q]["score"] for q in ("test-q1", "test-q2", "test-q3")] == [0, 0, 0]
    assert out["score"] == 0 and all(t["status"] == "failed" for t in out["tests"])
    # the premise: the kernel's user cannot read it, though root (the grader) can
    from vmkit.homework.gradescope import demote
    assert pwd.getpwnam(USER).pw_uid != 0
    proc = subprocess.run(demote(USER) + ["cat", str(ref)], capture_output=True, text=True)
    assert proc.returncode != 0 and "Permission denied" in proc.stderr
