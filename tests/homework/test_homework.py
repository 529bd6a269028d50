"""Homework without kernels: release, checksums, variants, restoring cells by grade_id."""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from vmkit import __version__
from vmkit.homework import cells
from vmkit.homework.check_tampering import check_tampering
from vmkit.homework.release import dumps, release, release_notebook
from vmkit.homework.restore_cells import restore_cells
from vmkit.homework.variant import VARIANTS, student_params

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
FIXTURE = ROOT / "tests" / "data" / "homework" / "hw99-fixture.ipynb"


def nbg(**kw) -> dict:
    return {"grade": False, "solution": False, "locked": False, "task": False,
            "schema_version": 3, **kw}


def code(gid: str, source: str, **kw):
    c = new_code_cell(source)
    c.metadata["nbgrader"] = nbg(grade_id=gid, **kw)
    return c


def solution_cell(gid: str, source: str):
    return code(gid, source, solution=True)


def grade_cell(gid: str, source: str, points: float = 1):
    return code(gid, source, grade=True, locked=True, points=points)


def load(path):
    return nbformat.read(path, as_version=4)


def test_solutions_exist():
    """Is there a solution for every assignment, each with points, tests and hidden tests?"""
    assert [p.stem for p in SOLUTIONS] == list(VARIANTS)
    for path in SOLUTIONS:
        nb = load(path)
        tests = [c for c in nb.cells if cells.is_test(c)]
        assert tests and all(cells.points(c) > 0 for c in tests)
        assert all("### BEGIN HIDDEN TESTS" in c.source for c in tests)
        assert any("### BEGIN SOLUTION" in c.source for c in nb.cells if cells.is_solution(c))
        ids = [cells.grade_id(c) for c in nb.cells]
        assert None not in ids and len(set(ids)) == len(ids)


def test_exercises_in_sync(tmp_path):
    """Is exercises/ exactly what `vmkit release` makes from solutions/ now?"""
    release(ROOT / "solutions", tmp_path)
    made = {p.name: p.read_text() for p in tmp_path.glob("*.ipynb")}
    have = {p.name: p.read_text() for p in (ROOT / "exercises").glob("*.ipynb")}
    assert made == have, "exercises/ is stale: run `vmkit release`"


def test_release_clears_solution_regions_and_keeps_indentation():
    """Does a solution region become the stub at the region's indentation?"""
    nb = new_notebook(cells=[solution_cell("a", "def f():\n    ### BEGIN SOLUTION\n    return 1\n"
                                                "    ### END SOLUTION\nprint(f)")])
    out = release_notebook(nb, "hw-x")
    assert out.cells[0].source == ("def f():\n    # YOUR CODE HERE\n    raise NotImplementedError()"
                                   "\nprint(f)")
    assert nb.cells[0].source.count("BEGIN SOLUTION") == 1  # the input is untouched


def test_release_blanks_prose_answers():
    """Does a markdown answer cell become a marked blank?"""
    c = new_markdown_cell("### BEGIN SOLUTION\nsecret\n### END SOLUTION")
    c.metadata["nbgrader"] = nbg(grade_id="p", solution=True)
    out = release_notebook(new_notebook(cells=[c]), "hw-x")
    assert out.cells[0].source == "YOUR ANSWER HERE"


def test_release_removes_hidden_tests_and_outputs():
    """Are hidden tests, outputs and execution counts gone from the released copy?"""
    c = grade_cell("t", "assert 1\n### BEGIN HIDDEN TESTS\nassert secret\n### END HIDDEN TESTS")
    c.outputs = [nbformat.v4.new_output("stream", text="x")]
    c.execution_count = 3
    nb = new_notebook(cells=[c])
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
    out = release_notebook(nb, "hw-x")
    assert out.cells[0].source == "assert 1"
    assert out.cells[0].outputs == [] and out.cells[0].execution_count is None
    # kept whole: JupyterLab would write the kernel's and mark the notebook modified
    assert out.metadata.language_info == {"name": "python", "version": "3.11.7"}


def test_release_stamps_and_checksums():
    """Does a released notebook carry its assignment id, the kit version and checksums of
    its locked cells?"""
    out = release_notebook(load(SOLUTIONS[0]), SOLUTIONS[0].stem)
    assert out.metadata.vmkit == {"assignment": SOLUTIONS[0].stem, "kit_version": __version__}
    for c in out.cells:
        if cells.is_locked(c):
            assert cells.nbgrader(c)["checksum"] == cells.checksum(c)
    for path in SOLUTIONS:
        text = dumps(release_notebook(load(path), path.stem))
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text


def test_tampering_is_found_by_checksum():
    """Is an edited locked setup cell reported, and an edited test cell not (it is restored)?"""
    released = release_notebook(load(FIXTURE), FIXTURE.stem)
    sub = copy.deepcopy(released)
    assert check_tampering(sub, released) == []
    by = {cells.grade_id(c): c for c in sub.cells}
    by["test-q1"].source = "pass"
    assert check_tampering(sub, released) == []
    by["setup"].source += "\nimport builtins"
    assert check_tampering(sub, released) == ["setup"]


def test_restore_cells_follows_grade_ids():
    """Is a reordered submission put back in the instructor's order by grade_id (tests with
    their hidden parts restored, the student's own helper cell kept)?"""
    instructor = load(FIXTURE)
    sub = release_notebook(instructor, FIXTURE.stem)
    by = {cells.grade_id(c): c for c in sub.cells}
    by["q1-answer"].source = "def double(x):\n    return x + x"
    del by["test-q3"]
    helper = new_code_cell("HELPER = 1")
    sub.cells = [c for c in sub.cells if cells.grade_id(c) != "test-q3"][::-1]
    sub.cells.insert(sub.cells.index(by["q1-answer"]) + 1, helper)
    out = restore_cells(sub, instructor)
    ids = [cells.grade_id(c) for c in out.cells]
    expected = [cells.grade_id(c) for c in instructor.cells]
    assert [i for i in ids if i] == expected
    assert out.cells[ids.index("q1-answer")].source == "def double(x):\n    return x + x"
    assert "HIDDEN TESTS" in out.cells[ids.index("test-q3")].source
    assert any(c.source == "HELPER = 1" for c in out.cells)


@pytest.mark.parametrize("assignment", list(VARIANTS))
def test_variant_is_a_function_of_the_student(assignment):
    """Does the same student always get the same parameters, and do students differ?"""
    assert student_params(assignment, "alice") == student_params(assignment, "alice")
    seen = {repr(student_params(assignment, f"s{i}")) for i in range(20)}
    assert len(seen) > 1


def test_cli_release_writes_the_exercises(tmp_path, capsys):
    """Does `vmkit release --dest DIR` write one exercise per solution?"""
    from vmkit.cli import main

    assert main(["release", "--dest", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == [p.name for p in SOLUTIONS]


def test_cli_grade_bad_input(tmp_path, capsys):
    """Does `vmkit grade` refuse a missing file in one line, and give a file that is not a
    notebook one CSV row with status error?"""
    from vmkit.cli import main

    assert main(["grade", str(tmp_path / "missing.ipynb")]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    bad = tmp_path / "bad.ipynb"
    bad.write_text("not json")
    out = tmp_path / "grades.csv"
    assert main(["grade", str(bad), "--csv", str(out), "--student", "ann",
                 "--assignment", "hw01-rings-and-traps"]) == 0
    assert out.read_text().splitlines() == [
        "student,assignment,notebook,question,points,max_points,status",
        f"ann,hw01-rings-and-traps,{bad},notebook,0,,error"]
    assert "not a readable notebook" in capsys.readouterr().err


def test_roster_and_layout_name_the_student(tmp_path):
    """Does the student come from --student, else the roster (file or folder entries), else
    the nbgrader layout, and the assignment from --assignment or the layout?"""
    from vmkit.homework.grade import IdentityError, Settings, identify, read_roster

    sub = tmp_path / "submitted" / "carol" / "hw01-rings-and-traps"
    sub.mkdir(parents=True)
    nb = sub / "x.ipynb"
    nb.write_text("{}")
    loose = tmp_path / "in" / "y.ipynb"
    loose.parent.mkdir()
    loose.write_text("{}")
    roster = tmp_path / "roster.csv"
    roster.write_text("path,student\nin,dave\n")
    s = Settings(roster=read_roster(roster))
    assert (identify(nb, s).student, identify(nb, s).assignment) == \
        ("carol", "hw01-rings-and-traps")
    with pytest.raises(IdentityError, match="no assignment"):
        identify(loose, s)
    s.assignment = "hw04-translation-cache"
    assert identify(loose, s).student == "dave"
    s.student = "erin"
    assert identify(loose, s).student == "erin"
    with pytest.raises(IdentityError, match="no student id"):
        identify(loose, Settings(assignment="hw01-rings-and-traps"))
    roster.write_text("file,who\n")
    with pytest.raises(IdentityError, match="roster.csv:1"):
        read_roster(roster)


def test_csv_fields_are_neutralised():
    """Is a CSV text field that a spreadsheet would run as a formula neutralised, and are
    numbers kept?"""
    from vmkit.homework.grade import csv_field

    for bad in ("=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx"):
        assert csv_field(bad) == "'" + bad
    assert csv_field("alice") == "alice" and csv_field(3) == "3" and csv_field(None) == ""


def test_hw04_variants_fill_the_cache():
    """Does every hw04 variant fill its translation cache, so that LRU, FIFO and
    FlushWhenFull give three different hit rates? (each distinct guest, threshold and cache
    size that 200 student ids draw, at the fewest iterations)"""
    from vmkit import guests
    from vmkit.vmm import BinaryTranslation
    from vmkit.vmm.bt import FIFO, LRU, FlushWhenFull

    combos = set()
    for i in range(200):
        p = student_params("hw04-translation-cache", f"s{i}")
        combos.add((p["guest"], p["threshold"], p["tc_size"]))
    assert len(combos) >= 8
    for guest, threshold, size in sorted(combos):
        rates = set()
        for policy in (LRU, FIFO, FlushWhenFull):
            vm = BinaryTranslation(guests.build(guest, iterations=10), threshold=threshold,
                                   tc_size=size, policy=policy())
            vm.run(max_steps=2_000_000)
            rates.add(vm.stats["tc_hits"] / vm.stats["tc_lookups"])
        assert len(rates) == 3, (guest, threshold, size)


def test_exercises_point_at_nothing_outside_their_folder():
    """Do the exercises avoid links to docs/ (or any path outside exercises/, which a Lab
    rooted there cannot open) and instructor-only notes?"""
    import re

    for path in sorted((ROOT / "exercises").glob("*.ipynb")):
        text = "\n".join(c.source for c in load(path).cells)
        assert "docs/" not in text and not re.search(r"\]\((\.\./|/)", text), path.name
        assert "Notes for the instructor" not in text, path.name


def test_cli_autograder_bad_assignment(tmp_path, capsys):
    """Does `vmkit autograder gradescope` refuse an unknown assignment in one line, and build
    a zip with setup.sh, run_autograder and the reference for a known one?"""
    import zipfile

    from vmkit.cli import main

    assert main(["autograder", "gradescope", "hw99-none", "--out", str(tmp_path / "z.zip")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hw99-none" in err[0]
    out = tmp_path / "hw03.zip"
    assert main(["autograder", "gradescope", "hw03-popek-goldberg", "--out", str(out)]) == 0
    names = set(zipfile.ZipFile(out).namelist())
    assert {"setup.sh", "run_autograder", "config.json", "solutions/hw03-popek-goldberg.ipynb",
            "solutions/reference/hw03-popek-goldberg.py", "kit/pyproject.toml"} <= names
