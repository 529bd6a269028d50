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
from nbformat.v4 import new_code_cell, new_markdown_cell

from vmkit.homework import cells
from vmkit.homework.grade import Settings, Submission, grade, write_csv
from vmkit.homework.release import release_notebook, write
from vmkit.homework.variant import student_params

ROOT = Path(__file__).resolve().parents[2]
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
    # 2.4 MB in 600 writes of 4 KB (60,000 one-line prints cost the sandboxed kernel more
    # than the fixture's time limit on a busy machine)
    cases["output"] = answered(q1_answer="def double(x):\n    return 2 * x\n"
                                         "for i in range(600):\n"
                                         "    print(('x' * 40 + '\\n') * 100, end='')")
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
    # cells the student adds, marked as graded: a bonus, a formula as its name, a manual row
    nb = answered()
    bonus = new_code_cell("pass")
    bonus.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True,
                                  "points": 100, "grade_id": "bonus", "schema_version": 3}
    formula = new_code_cell("pass")
    formula.metadata["nbgrader"] = {"grade": True, "solution": False, "points": 5,
                                    "grade_id": '=HYPERLINK("http://x.example/","win")',
                                    "schema_version": 3}
    manual = new_markdown_cell("I deserve it")
    manual.metadata["nbgrader"] = {"grade": True, "solution": True, "points": 10,
                                   "grade_id": "manual-extra", "schema_version": 3}
    nb.cells += [bonus, formula, manual]
    cases["added-graded-cells"] = nb
    # script in markdown and in outputs; the feedback page must not run any of it
    nb = answered(q1_answer=SCRIPT_OUTPUT)
    nb.cells.insert(0, new_markdown_cell(SCRIPT_MARKDOWN))
    cases["script"] = nb
    cases["path-id"] = (answered(), "../../escape/x", FIXTURE)
    return cases


#: what a student's scripts would do if they ran in the feedback page
SCRIPT_MARKDOWN = (
    "<script>document.title = 'pwned-md'; window.PWNED = 1;</script>\n"
    "<img src=\"x\" onerror=\"document.title = 'pwned-img'; window.PWNED = 2\">\n"
    "[click](javascript:document.title='pwned-link')\n"
    "<iframe src=\"https://x.example/\"></iframe>\n"
    "<img src=\"https://x.example/track.png\">\n\n$e^{i\\pi} = -1$")
SCRIPT_OUTPUT = (
    "from IPython.display import HTML, Javascript, display\n"
    "display(HTML(\"<script>document.title = 'pwned-out'; window.PWNED = 3;</script>\"\n"
    "             \"<b onmouseover=alert(1)>bold</b>\"))\n"
    "display(Javascript(\"document.title = 'pwned-js'; window.PWNED = 4;\"))\n"
    "display({'application/javascript': 'window.PWNED = 5', 'text/plain': 'js'}, raw=True)\n"
    "print('<script>window.PWNED = 6</script>')\n"
    "def double(x):\n    return 2 * x")


def real_cases() -> dict:
    cases = {}
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nb.metadata["vmkit"] = released(path.stem, path.parent).metadata.vmkit
        cases[f"full-{path.stem}"] = (nb, "alice", path.stem)
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
        cases[f"variant-{student}"] = (copy.deepcopy(hard), student, aid)
    # a friend's notebook (alice's answers, alice's id in its metadata) handed in by bob
    friend = copy.deepcopy(hard)
    friend.metadata.vmkit["student_id"] = "alice"
    cases["friend-id"] = (friend, "bob", aid)
    cases["equal-to-anything"] = answered(
        aid, ROOT / "solutions",
        q1_answer=("class Anything(int):\n    def __eq__(self, other):\n        return True\n"
                   "    __hash__ = int.__hash__\n\nring_transitions = Anything(0)"))
    cases["patched-checks"] = answered(
        "hw03-popek-goldberg", ROOT / "solutions",
        q1_answer=("checks.same = lambda answer, expected: True\n"
                   "predictions = {i: 'innocuous' for i in P['predict']}"))
    full01 = cases["full-hw01-rings-and-traps"][0]
    cases["wrong-assignment"] = (copy.deepcopy(full01), "alice", "hw04-translation-cache")
    hw02 = "hw02-trap-and-emulate"
    cases["kit-handlers"] = answered(
        hw02, ROOT / "solutions",
        q1_answer="from vmkit.vmm.te import emulate_out as dev_out",
        q2_answer=("def dev_in(dev, offset, size):\n"
                   "    from vmkit.vmm.te import emulate_in\n"
                   "    return emulate_in(dev, offset)"))
    cases["getsource-handlers"] = answered(
        hw02, ROOT / "solutions",
        q1_answer=("import inspect\nimport vmkit.vmm.te as kit\n"
                   "exec(inspect.getsource(kit.emulate_out).replace('def emulate_out', "
                   "'def dev_out'))"),
        q2_answer=("import inspect\nimport vmkit.vmm.te as kit\n"
                   "exec(inspect.getsource(kit.emulate_in).replace('def emulate_in', "
                   "'def dev_in'))"))
    cases["stub-handlers"] = released(hw02, ROOT / "solutions")
    # the handler's process prints a forged reply and answers garbage: trusted for nothing
    cases["forged-handler"] = answered(
        hw02, ROOT / "solutions",
        q2_answer=("def dev_in(dev, offset, size):\n"
                   "    import os\n"
                   "    os.write(1, b'{\"ok\": true}\\n')\n"
                   "    dev['extra'] = 1\n"
                   "    return 0"))
    hw04 = "hw04-translation-cache"
    cases["reads-reference-kit"] = answered(
        hw04, ROOT / "solutions",
        q1_answer=("from vmkit.homework import checks\n"
                   "hit_rate = checks.expected('hw04-translation-cache')['hit_rate']"),
        q2_answer=("from vmkit.homework import reference\n"
                   "rates = reference.expected(reference.REFERENCE_DIR, "
                   "'hw04-translation-cache', __import__('os').environ['VMKIT_STUDENT_ID'])"
                   "['rates']"))
    cases["reads-solutions"] = answered(
        hw04, ROOT / "solutions",
        q1_answer=("from vmkit.homework.release import ROOT\n"
                   "from vmkit.homework import reference\n"
                   "import os\n"
                   "_want = reference.expected(ROOT / 'solutions' / 'reference', "
                   "'hw04-translation-cache', os.environ['VMKIT_STUDENT_ID'])\n"
                   "hit_rate = _want['hit_rate']"))
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
    """Grade each case: a notebook (or text) handed in by ``student-<name>`` for the fixture,
    or (notebook, student, assignment)."""
    folder.mkdir()
    subs = []
    for name, case in cases.items():
        nb, student, assignment = case if isinstance(case, tuple) else \
            (case, f"student-{name}", None)
        if assignment is None:
            assignment = FIXTURE if isinstance(nb, str) else \
                nb.metadata.get("vmkit", {}).get("assignment", FIXTURE)
            if name in ("unknown-assignment",):
                assignment = FIXTURE
        path = folder / f"{name}.ipynb"
        if isinstance(nb, str):
            path.write_text(nb)
        else:
            write(nb, path)
        subs.append(Submission(path, student, assignment))
    results = grade(subs, settings, jobs=2)
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
                           Settings(source=ROOT / "solutions", timeout=90,
                                    feedback=base / "feedback-real"))
        return {**fixture.result(), **real.result()}


def rows(result) -> dict:
    return {r.question: (r.points, r.status) for r in result.rows}


# --- the cases ------------------------------------------------------------------------------


def test_solution_gets_full_marks(graded):
    """Does the fixture's solution get every automatic point, the task left as manual?"""
    assert rows(graded["solution"]) == {"test-q1": (1, "ok"), "test-q2": (2, "ok"),
                                        "test-q3": (1, "ok"), "q4-answer": (None, "manual")}


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
    assert {r.status for r in res.rows if r.question != "q4-answer"} == {"tampered"}
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
    assert table[0] == ["student", "assignment", "notebook", "question", "points",
                        "max_points", "status"]
    assert table[-2][:2] == ["student-solution", FIXTURE]
    assert table[-2][3:] == ["q4-answer", "", "1", "manual"]
    assert table[-1][3:] == ["notebook", "0", "", "error"]
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


@pytest.mark.parametrize("name", ["patched-checks", "patched-hw05"])
def test_patching_the_checks_does_not_pass(graded, name):
    """Can a student who patches the test helpers in the kernel (so that the in-kernel tests
    pass) get the points? The grader re-checks the handed-over answers outside the kernel."""
    r = rows(graded[name])
    failed = r[{"patched-checks": "test-q1", "patched-hw05": "test-q3"}[name]]
    assert failed == (0, "failed")


def test_added_graded_cells_make_no_rows(graded):
    """Do cells a student adds with nbgrader `grade: true` (a bonus, a formula as its name, a
    fake manual question) make no rows: only the instructor's questions score?"""
    assert rows(graded["added-graded-cells"]) == rows(graded["solution"])


def test_friends_id_in_metadata(graded):
    """Is a friend's notebook (the friend's id in its metadata) graded as the student who
    handed it in, with the friend's answers failing and an `identity` row?"""
    res = graded["friend-id"]
    assert res.student == "bob"
    r = rows(res)
    assert r["identity"] == (0, "tampered") and r["test-q1"] == (0, "failed")
    assert [x.max_points for x in res.rows if x.question == "identity"] == [0]


def test_notebook_of_another_assignment_is_an_error(graded):
    """Is an hw01 notebook handed in for hw04 one `error` row that says so?"""
    res = graded["wrong-assignment"]
    assert [(r.question, r.points, r.status) for r in res.rows] == [("notebook", 0, "error")]
    assert "hw01-rings-and-traps" in res.messages[0] and res.assignment == \
        "hw04-translation-cache"


@pytest.mark.parametrize("name", ["kit-handlers", "getsource-handlers", "stub-handlers",
                                  "forged-handler"])
def test_hw02_is_not_answered_by_the_kit(graded, name):
    """Do hw02 handlers taken from the kit (imported, or copied with inspect.getsource), the
    untouched stubs, or a handler whose process forges replies and an invalid state score
    nothing?"""
    r = rows(graded[name])
    want = {"test-q1": 0, "test-q2": 0} if name != "forged-handler" else {"test-q2": 0}
    assert {q: r[q][0] for q in want} == want


def test_hw02_stub_says_so(graded):
    """Does an untouched hw02 stub fail its visible test with a message that says so, and a
    wrong handler with the VMM's own reason?"""
    page = Path(graded["stub-handlers"].feedback).read_text()
    assert "still the stub" in page
    assert "Student: <code>student-stub-handlers</code>" in page  # whose, and which variant
    assert "Graded for the variant <code>P = {&quot;data&quot;: [" in page
    page = Path(graded["kit-handlers"].feedback).read_text()
    assert "VMM error (TypeError" in page


@pytest.mark.parametrize("name", ["reads-reference-kit", "reads-solutions"])
def test_reference_answers_are_out_of_reach(graded, name):
    """Can a cell read the reference answers, through the kit's checks or reference modules
    or through solutions/ found by the kit's path? It must score nothing."""
    r = rows(graded[name])
    assert r["test-q1"][0] == 0
    if name == "reads-reference-kit":
        assert r["test-q2"][0] == 0


def test_student_id_with_a_path_stays_in_the_feedback_folder(graded):
    """Does a student id with ../ write its feedback page inside the feedback folder?"""
    res = graded["path-id"]
    page = Path(res.feedback)
    assert page.parent == Path(graded["solution"].feedback).parent and page.is_file()
    assert rows(res)["test-q1"] == (1, "ok")


def test_feedback_runs_no_student_script(graded, tmp_path):
    """Does the feedback page of a submission with scripts in markdown and outputs run none of
    them, load nothing from the network, hide the hidden tests, draw its math without MathJax
    and name the student? (chromium, network blocked)"""
    playwright = pytest.importorskip("playwright.sync_api")
    page_file = Path(graded["script"].feedback)
    text = page_file.read_text()
    assert "HIDDEN TESTS" not in text and "double(21)" not in text  # the hidden test's code
    assert "student-script" in text
    assert '<img class="math" alt="e^{i\\pi} = -1" src="data:image/svg+xml;base64,' in text
    requests = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        page = browser.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.route("http*://**", lambda route: route.abort())
        page.goto(page_file.as_uri())
        page.wait_for_timeout(500)
        for link in page.locator("a").all():
            link.click(no_wait_after=True)
        page.mouse.move(10, 10)
        page.wait_for_timeout(300)
        title = page.title()
        pwned = page.evaluate("window.PWNED")
        out = ROOT / "build" / "test-artifacts" / "feedback-script.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    assert "pwned" not in title and pwned is None
    assert requests == [page_file.as_uri()], requests  # nothing but the page itself


def test_odd_file_names_are_graded_one_by_one(tmp_path, monkeypatch, capsys):
    """Are files named like options (`--x.ipynb`, `--source=x.ipynb`), 200 characters long
    or with a newline graded one by one (never taken for options, never aborting the batch),
    a formula-like student id neutralised in the CSV, and a summary line printed?"""
    from vmkit.cli import main

    folder = tmp_path / "sub"
    folder.mkdir()
    names = ["--x.ipynb", "--source=x.ipynb", "a" * 194 + ".ipynb", "new\nline.ipynb"]
    for n in names:
        write(answered(), folder / n)
    monkeypatch.chdir(folder)
    out = tmp_path / "grades.csv"
    code = main(["grade", *names, "--assignment", FIXTURE, "--student", "=cmd|' /C calc'!A0",
                 "--source", str(DATA), "--csv", str(out), "--timeout", "10", "--jobs", "2",
                 "--feedback", str(tmp_path / "fb")])
    assert code == 0
    table = list(csv.reader(out.open(newline="")))
    assert sorted(r[2].removeprefix("'") for r in table[1:] if r[3] == "test-q1") == \
        sorted(names)
    assert all(r[0] == "'=cmd|' /C calc'!A0" for r in table[1:])
    assert all(r[6] in ("ok", "manual") for r in table[1:])
    pages = list((tmp_path / "fb").iterdir())
    assert len(pages) == 4 and all(p.suffix == ".html" for p in pages)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("vmkit grade: 4 submission(s), 16 of 16 automatic points"), last


def test_grade_refuses_without_a_student(tmp_path, capsys):
    """Does `vmkit grade` refuse, in one line, a notebook whose student the instructor did not
    give (no --student, roster or nbgrader layout), even if its metadata names one?"""
    from vmkit.cli import main

    nb = answered()
    nb.metadata.vmkit["student_id"] = "alice"
    write(nb, tmp_path / "a.ipynb")
    assert main(["grade", str(tmp_path / "a.ipynb"), "--source", str(DATA),
                 "--assignment", FIXTURE]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no student id" in err[0]
