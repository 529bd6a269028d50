"""Grading in kernels: one submission per bad case, each built from the released fixture by a
small factory, graded together (``jobs=2``) once per module; each test reads its own rows.

The fixture assignment (tests/data/homework/hw99-fixture.ipynb) imports nothing heavy, so its
kernels start quickly; the real assignments are graded for full marks, for a per-student
variant and against a student who patches the kit.
"""

from __future__ import annotations

import copy
import csv
import io
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from vmkit.homework import cells
from vmkit.homework.grade import Settings, grade, write_csv
from vmkit.homework.release import release_notebook, write
from vmkit.homework.variant import student_params

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "homework"
FIXTURE = "hw99-fixture"

# --- factories ------------------------------------------------------------------------------


def released(assignment: str = FIXTURE, source: Path = DATA):
    return release_notebook(nbformat.read(source / f"{assignment}.ipynb", as_version=4),
                            assignment)


def answered(assignment: str = FIXTURE, source: Path = DATA, **answers):
    """The released notebook with the solution cells of the given grade_ids (``q1_answer=``
    for ``q1-answer``) replaced; the others keep the instructor's solution."""
    nb = released(assignment, source)
    solution = {cells.grade_id(c): c.source
                for c in nbformat.read(source / f"{assignment}.ipynb", as_version=4).cells}
    for c in nb.cells:
        gid = cells.grade_id(c)
        if cells.is_solution(c):
            c.source = answers.get(gid.replace("-", "_"), solution[gid])
    return nb


def cell(nb, gid):
    return next(c for c in nb.cells if cells.grade_id(c) == gid)


def fixture_cases() -> dict:
    """name -> notebook (or raw text for a file that is not one)."""
    cases = {}
    cases["loop"] = answered(q1_answer="def double(x):\n    return 2 * x\nwhile True:\n    pass")
    cases["solution"] = answered()
    cases["raise"] = answered(q1_answer="raise ValueError('oops')")
    cases["wrong"] = answered(q1_answer="def double(x):\n    return 4 if x == 2 else 0")
    cases["exit"] = answered(q2_answer="import sys\nsys.exit(3)")
    cases["killed"] = answered(q2_answer="import os\nos._exit(1)")
    cases["output"] = answered(q1_answer="def double(x):\n    return 2 * x\n"
                                         "for i in range(60_000):\n    print('x' * 40)")
    cases["memory"] = answered(q1_answer="block = bytearray(3 << 30)")
    nb = answered(q1_answer="def double(x):\n    return 4")
    cell(nb, "test-q1").source = "pass"  # edited visible test: the instructor's comes back
    nb.cells.remove(cell(nb, "test-q3"))  # deleted test: comes back too
    cases["edited-tests"] = nb
    nb = answered()
    helper = new_code_cell("def helper(x):\n    return x * 3")
    nb.cells = nb.cells[::-1] + [helper]
    cell(nb, "q3-answer").source = "def triple(x):\n    return helper(x)"
    nb.cells.insert(nb.cells.index(cell(nb, "q3-answer")), nb.cells.pop())  # helper first
    nb.metadata.vmkit["kit_version"] = "0.0.0-old"
    cases["reordered"] = nb
    nb = answered()
    cell(nb, "setup").source += "\nSTUDENT = 'someone else'"
    cases["tampered"] = nb
    # the answer defines triple() only if the kernel's folder is empty
    cases["scratch"] = answered(q3_answer="import os\nassert os.listdir('.') == []\n"
                                          "def triple(x):\n    return 3 * x")
    cases["not-json"] = "{ this is not a notebook"
    cases["not-a-notebook"] = ('{"cells": [{"cell_type": "code"}], "metadata": {"vmkit": '
                               '{"assignment": "hw99-fixture"}}, "nbformat": 4, '
                               '"nbformat_minor": 5}')
    nb = answered()
    nb.metadata.vmkit["assignment"] = "hw-unknown"
    cases["unknown-assignment"] = nb
    return cases


def real_cases() -> dict:
    cases = {}
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nb.metadata["vmkit"] = released(path.stem, path.parent).metadata.vmkit
        nb.metadata.vmkit["student_id"] = "alice"
        cases[f"full-{path.stem}"] = nb
    # hw01 answered with constants that are right for alice's variant only
    aid = "hw01-rings-and-traps"
    from vmkit import guests
    from vmkit.vmm import Native
    p = student_params(aid, "alice")
    vm = Native(guests.build(p["guest"], iterations=p["iterations"]))
    vm.run(max_steps=1_000_000)
    hard = answered(aid, ROOT / "solutions",
                    q1_answer=f"ring_transitions = {vm.trace.counts['ring']}")
    for student in ("alice", "bob"):
        nb = copy.deepcopy(hard)
        nb.metadata.vmkit["student_id"] = student
        cases[f"variant-{student}"] = nb
    cases["equal-to-anything"] = answered(
        aid, ROOT / "solutions",
        q1_answer=("class Anything(int):\n    def __eq__(self, other):\n        return True\n"
                   "    __hash__ = int.__hash__\n\nring_transitions = Anything(0)"))
    cases["patched-checks"] = answered(
        "hw03-popek-goldberg", ROOT / "solutions",
        q1_answer=("checks.same = lambda answer, expected: True\n"
                   "predictions = {i: 'innocuous' for i in P['predict']}"))
    cases["patched-te-check"] = answered(
        "hw02-trap-and-emulate", ROOT / "solutions",
        q2_answer=("def emulate_out(vm, insn):\n    pass\n\n"
                   "real = checks.te_equivalence\n"
                   "def fake(handlers, extra=()):\n"
                   "    runs = real(handlers, extra)\n"
                   "    for run in runs.values():\n"
                   "        run['te'] = run['native']\n"
                   "        run['emulated']['out'] = 1\n"
                   "    return runs\n"
                   "checks.te_equivalence = fake\n"
                   "TrapAndEmulate.console = property(lambda self: 'Hello from user mode! pid 1\\n')"))
    cases["patched-hw05"] = answered(
        "hw05-shadow-vs-nested", ROOT / "solutions",
        q3_answer=("checks.same = lambda answer, expected: True\n"
                   "exits = {'ept': 0, 'shadow': 1, 'hidden_page_faults': 0}"))
    cases["patched-kit"] = answered(
        "hw03-popek-goldberg", ROOT / "solutions",
        q1_answer=("class Fake:\n    privileged = sensitive = False\n"
                   "vmkit.classify = lambda instr: Fake()\n"
                   "predictions = {i: 'innocuous' for i in P['predict']}"),
        q2_answer="violators = []")
    return cases


def _grade(cases: dict, folder: Path, settings: Settings) -> dict:
    folder.mkdir()
    paths = []
    for name, nb in cases.items():
        path = folder / f"{name}.ipynb"
        if isinstance(nb, str):
            path.write_text(nb)
        else:
            write(nb, path)
        paths.append(path)
    results = grade(paths, settings, jobs=2)
    return {Path(r.notebook).stem: r for r in results}


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    base = tmp_path_factory.mktemp("grading")
    # both batches at once: the kernels spend much of their time starting or waiting (the
    # time limit), so four processes on two cores finish sooner than two batches in turn
    with ThreadPoolExecutor(2) as pool:
        fixture = pool.submit(_grade, fixture_cases(), base / "fixture",
                              Settings(source=DATA, timeout=5, memory_mb=1024,
                                       output_limit=64 * 1024, feedback=base / "feedback"))
        real = pool.submit(_grade, real_cases(), base / "real",
                           Settings(source=ROOT / "solutions", timeout=90))
        return {**fixture.result(), **real.result()}


def rows(result) -> dict:
    return {r.question: (r.points, r.status) for r in result.rows}


# --- the cases ------------------------------------------------------------------------------


def test_solution_gets_full_marks(graded):
    """Does the fixture's solution get every automatic point, the task left as manual?"""
    assert rows(graded["solution"]) == {"test-q1": (1, "ok"), "test-q2": (2, "ok"),
                                        "test-q3": (1, "ok"), "q4-task": (None, "manual")}


@pytest.mark.parametrize("name", ["full-hw01-rings-and-traps", "full-hw02-trap-and-emulate",
                                  "full-hw03-popek-goldberg", "full-hw04-translation-cache",
                                  "full-hw05-shadow-vs-nested", "full-hw06-cost-analysis"])
def test_real_solutions_get_full_marks(graded, name):
    """Does grading each assignment's solution give full automatic marks?"""
    res = graded[name]
    auto = [r for r in res.rows if r.status != "manual"]
    assert auto and all(r.status == "ok" and r.points == r.max_points for r in auto), res.rows


def test_infinite_loop_is_cut_at_the_time_limit(graded):
    """Is an infinite loop in a submission cut at the time limit?"""
    r = rows(graded["loop"])
    assert [r[q][1] for q in ("test-q1", "test-q2", "test-q3")] == ["timeout"] * 3


def test_raise_fails_only_that_question(graded):
    """Does an exception in one answer cost that question only?"""
    r = rows(graded["raise"])
    assert r["test-q1"] == (0, "error") and r["test-q2"] == (2, "ok") and r["test-q3"] == (1, "ok")


def test_wrong_answer_is_failed(graded):
    """Is an answer that passes the visible test but not the hidden one marked failed?"""
    assert rows(graded["wrong"])["test-q1"] == (0, "failed")


@pytest.mark.parametrize("name", ["exit", "killed"])
def test_exit_or_killed_kernel_is_error_for_the_rest(graded, name):
    """Do sys.exit() and a killed kernel give `error` from that question on, earlier ones
    kept?"""
    r = rows(graded[name])
    assert r["test-q1"] == (1, "ok")
    assert r["test-q2"] == (0, "error") and r["test-q3"] == (0, "error")


def test_huge_output_is_limited(graded):
    """Are megabytes of printed output cut and flagged, and the question still graded?"""
    res = graded["output"]
    assert rows(res)["test-q1"] == (1, "ok")
    assert any("output limited" in m for m in res.messages)
    page = Path(res.feedback).read_text()
    assert "output beyond" in page and len(page) < 2_000_000


def test_memory_limit_fails_only_that_question(graded):
    """Does allocating past the memory limit fail that question (MemoryError), not the run?"""
    r = rows(graded["memory"])
    assert r["test-q1"][1] == "error" and r["test-q2"] == (2, "ok")


def test_edited_or_deleted_tests_change_nothing(graded):
    """Are an edited test and a deleted test put back from the instructor's copy?"""
    r = rows(graded["edited-tests"])
    assert r["test-q1"] == (0, "failed") and r["test-q3"] == (1, "ok")


def test_reordered_notebook_is_graded_by_grade_id(graded):
    """Is a reordered submission with a helper cell graded in full, and an old kit version
    reported?"""
    res = graded["reordered"]
    assert rows(res)["test-q3"] == (1, "ok")
    assert all(p == m for p, m in [(r.points, r.max_points) for r in res.rows
                                   if r.status != "manual"])
    assert any("0.0.0-old" in m for m in res.messages)


def test_tampered_locked_cell(graded):
    """Does an edited locked cell give `tampered` and no points?"""
    res = graded["tampered"]
    assert {r.status for r in res.rows if r.question != "q4-task"} == {"tampered"}
    assert sum(r.points or 0 for r in res.rows) == 0


@pytest.mark.parametrize("name", ["not-json", "not-a-notebook", "unknown-assignment"])
def test_unreadable_submission_is_one_error_row(graded, name):
    """Does a file that is not a notebook (or not ours) give one `error` row and a message?"""
    res = graded[name]
    assert [(r.status, r.points) for r in res.rows] == [("error", 0)] and res.messages


def test_variant_is_regenerated_for_each_student(graded):
    """Does the grader recompute each student's own variant, so answers copied from another
    student's variant fail?"""
    assert rows(graded["variant-alice"])["test-q1"] == (1, "ok")
    assert rows(graded["variant-bob"])["test-q1"] == (0, "failed")


def test_patching_the_kit_does_not_pass(graded):
    """Can a student make the tests pass by patching vmkit.classify in the kernel?"""
    r = rows(graded["patched-kit"])
    assert r["test-q1"] == (0, "failed") and r["test-q2"] == (0, "failed")


def test_csv_and_feedback(graded):
    """Is the CSV in the design's columns and is there a feedback page per submission?"""
    buf = io.StringIO()
    write_csv([graded["solution"], graded["not-json"]], buf)
    table = list(csv.reader(io.StringIO(buf.getvalue())))
    assert table[0] == ["notebook", "question", "points", "max_points", "status"]
    assert table[-2][1:] == ["q4-task", "", "1", "manual"]
    assert table[-1][1:] == ["notebook", "0", "", "error"]
    page = Path(graded["solution"].feedback).read_text()
    assert "Automatic total: 4 / 4" in page


def test_submission_runs_in_an_empty_scratch_directory(graded):
    """Does the kernel run in a scratch directory with nothing in it (no solutions), and is
    the student's id in its environment?"""
    res = graded["scratch"]
    assert rows(res)["test-q2"] == (2, "ok") and rows(res)["test-q3"] == (1, "ok")


def test_answer_equal_to_anything_does_not_pass(graded):
    """Can an answer whose __eq__ always says True pass a hidden test?"""
    assert rows(graded["equal-to-anything"])["test-q1"] == (0, "failed")


@pytest.mark.parametrize("name", ["patched-checks", "patched-te-check", "patched-hw05"])
def test_patching_the_checks_does_not_pass(graded, name):
    """Can a student who patches the test helpers in the kernel (so that the in-kernel tests
    pass) get the points? The grader re-checks the handed-over answers outside the kernel."""
    r = rows(graded[name])
    failed = r[{"patched-checks": "test-q1", "patched-te-check": "test-q2",
                "patched-hw05": "test-q3"}[name]]
    assert failed == (0, "failed")
