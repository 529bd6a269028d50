"""nbgrader compatibility: a course that uses nbgrader itself gets the same points as `vmkit grade`.

A temporary nbgrader course directory (``nbgrader_config.py``, ``source/<assignment>/``) holds
one solution notebook; ``nbgrader generate_assignment`` must release it, and ``nbgrader
autograde`` must grade two submissions in nbgrader's layout (``submitted/<student>/<assignment>/``):
the solution, and one with a wrong answer. Each question's points in nbgrader's gradebook must
equal the points of `vmkit grade` on the same files. The submissions are made from vmkit's
released exercise (stamped), so that both graders read the same notebooks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from vmkit.homework import cells
from vmkit.homework.grade import Settings, grade
from vmkit.homework.release import release_notebook, write

pytest.importorskip("nbgrader")

ROOT = Path(__file__).resolve().parents[2]
ASSIGNMENT = "hw05-shadow-vs-nested"  # fast runs, no prose question
STUDENTS = {"alice": {}, "bob": {"q3-answer": "exits = {'ept': 0, 'shadow': 1, "
                                              "'hidden_page_faults': 0}"}}

CONFIG = f'''c = get_config()
c.CourseDirectory.course_id = "vmkit-test"
c.CourseDirectory.db_assignments = [dict(name="{ASSIGNMENT}")]
c.CourseDirectory.db_students = [{", ".join(f'dict(id="{s}")' for s in STUDENTS)}]
c.ExecutePreprocessor.timeout = 120
'''


def nbgrader(course: Path, *args: str, student: str | None = None) -> None:
    # nbgrader runs `alembic` by name: the venv's bin folder first on PATH
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                 f"{os.environ.get('PATH', '')}"}
    if student:
        env["VMKIT_STUDENT_ID"] = student  # the variant nbgrader's kernel computes
    # nbgrader has no check outside the kernel: the hidden tests check against the reference
    env["VMKIT_REFERENCE"] = str(ROOT / "solutions" / "reference")
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    course = tmp_path_factory.mktemp("course")
    (course / "nbgrader_config.py").write_text(CONFIG)
    src = course / "source" / ASSIGNMENT
    src.mkdir(parents=True)
    solution = nbformat.read(ROOT / "solutions" / f"{ASSIGNMENT}.ipynb", as_version=4)
    write(solution, src / f"{ASSIGNMENT}.ipynb")
    nbgrader(course, "generate_assignment", ASSIGNMENT, "--force")
    answers = {cells.grade_id(c): c.source for c in solution.cells}
    for student, changed in STUDENTS.items():
        nb = release_notebook(solution, ASSIGNMENT)
        for c in nb.cells:
            if cells.is_solution(c):
                c.source = changed.get(cells.grade_id(c), answers[cells.grade_id(c)])
        folder = course / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        write(nb, folder / f"{ASSIGNMENT}.ipynb")
    for student in STUDENTS:
        nbgrader(course, "autograde", ASSIGNMENT, "--student", student, "--force",
                 student=student)
    return course


def test_generate_assignment_releases_without_solutions(course):
    """Does nbgrader's own release of a vmkit solution drop its solutions and hidden tests?"""
    text = (course / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text()
    assert "### BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    assert "YOUR CODE HERE" in text


def test_autograde_points_equal_vmkit_grade(course):
    """Do nbgrader's autograde and `vmkit grade` give each question the same points, for the
    solution (full marks) and for a wrong answer?"""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        theirs = {}
        for student in STUDENTS:
            sub = gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, student)
            theirs[student] = {g.name: g.score for g in sub.grades}
    paths = [course / "submitted" / s / ASSIGNMENT / f"{ASSIGNMENT}.ipynb" for s in STUDENTS]
    ours = {res.student: {r.question: r.points for r in res.rows}
            for res in grade(paths, Settings(source=ROOT / "solutions", timeout=120))}
    assert ours == theirs
    assert ours["alice"] == {"test-q1": 1, "test-q2": 2, "test-q3": 2}
    assert ours["bob"]["test-q3"] == 0


def test_validate_agrees_on_untouched_and_tampered_exercises(tmp_path):
    """Does nbgrader's Validate find no changed cell in an untouched vmkit exercise, and find
    the edited locked cell of a tampered one, as vmkit's own check does?"""
    from nbgrader.validator import Validator

    from vmkit.homework.check_tampering import check_tampering

    fixture = ROOT / "tests" / "data" / "homework" / "hw99-fixture.ipynb"
    released = release_notebook(nbformat.read(fixture, as_version=4), "hw99-fixture")
    untouched = tmp_path / "untouched.ipynb"
    write(released, untouched)
    tampered_nb = nbformat.read(untouched, as_version=4)
    next(c for c in tampered_nb.cells if cells.grade_id(c) == "setup").source += "\nX = 1"
    tampered = tmp_path / "tampered.ipynb"
    write(tampered_nb, tampered)
    theirs = {p.stem: Validator().validate(str(p)) for p in (untouched, tampered)}
    assert "changed" not in theirs["untouched"]
    assert [c["source"] for c in theirs["tampered"]["changed"]] == \
        [next(c for c in tampered_nb.cells if cells.grade_id(c) == "setup").source.strip()]
    assert check_tampering(nbformat.read(untouched, as_version=4), released) == []
    assert check_tampering(tampered_nb, released) == ["setup"]
