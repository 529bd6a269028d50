"""The grader against a student who attacks it: each attack is a real submission of the fixture
assignment (tests/data/homework/hw99-fixture.ipynb, built by the factories of
test_homework_grade), graded for real in the bubblewrap sandbox, next to an honest solution in
the same batch (``jobs=2``).

An attack cell defines the answer (``double``) only if the attack worked, so a sandbox that holds
gives that question 0; each test also looks, from outside, for the harm the attack tried to do.
The attacks that would harm the machine if they got out (a fork bomb, ``kill(-1, 9)``, a write
into the venv) run only in the sandbox; the unsandboxed batch (``--no-sandbox``) checks what the
batch machinery keeps without it: a killed worker and a hung one are one row each, the CSV is
written as results arrive.
"""

from __future__ import annotations

import csv
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from nbformat.v4 import new_markdown_cell

from test_homework_grade import DATA, FIXTURE, ROOT, answered, released

import vmkit
from vmkit.homework import sandbox as sandbox_mod
from vmkit.homework.grade import CsvWriter, Settings, Submission, grade
from vmkit.homework.release import write
from vmkit.homework.sandbox import UID_BASE, SandboxUnavailable, check_available

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sandbox")

MARK = "vmkit-detached-7f3a"  # in the command line of the process that tries to outlive grading
FULL = {"test-q1": (1, "ok"), "test-q2": (2, "ok"), "test-q3": (1, "ok"),
        "q4-answer": (None, "manual")}


def _available() -> bool:
    try:
        check_available()
        return True
    except SandboxUnavailable:
        return False


needs_sandbox = pytest.mark.skipif(not _available(), reason="no bubblewrap sandbox here")


def attack(code: str):
    """The fixture with ``code`` as the answer to question 1; the code defines ``double`` (the
    answer) only if the attack worked."""
    return answered(q1_answer=code + "\nif ok:\n    def double(x):\n        return 2 * x")


def rows(result) -> dict:
    return {r.question: (r.points, r.status) for r in result.rows}


def _write(cases: dict, folder: Path) -> list[Submission]:
    """Each case as a file handed in for the fixture by the student named as the case."""
    folder.mkdir(parents=True)
    subs = []
    for name, nb in cases.items():
        path = folder / f"{name}.ipynb"
        if isinstance(nb, str):
            path.write_text(nb)
        else:
            write(nb, path)
        subs.append(Submission(path, name, FIXTURE))
    return subs


def _uid_held_by_a_live_sandbox(uid: int) -> bool:
    """Is ``uid``'s lock held, i.e. a sandbox (another test's grader, on another pytest worker)
    runs as that uid right now? Its processes are that grading's own, not leftovers."""
    import fcntl
    from vmkit.homework import sandbox
    try:
        fd = os.open(sandbox._lock_dir() / f"uid-{uid}.lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _sandbox_uid_processes() -> list[int]:
    """Processes running as a sandbox uid that no live sandbox holds: what a finished grading
    left behind (a uid held by a grader running beside this test is skipped)."""
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                status = Path(f"/proc/{entry.name}/status").read_text()
            except OSError:
                continue
            uid = int(status.split("Uid:")[1].split()[0])
            if UID_BASE <= uid < UID_BASE + 4096 and not _uid_held_by_a_live_sandbox(uid):
                out.append(int(entry.name))
    return out


def _marked_processes() -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if MARK.encode() in Path(f"/proc/{entry.name}/cmdline").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


# --- the attacks ----------------------------------------------------------------------------


def attack_cases(base: Path, port: int) -> dict:
    venv, kit = Path(sys.prefix), Path(vmkit.__file__).parent
    feedback, csv_path = base / "feedback", base / "grades.csv"
    nb = released()
    nb.cells += [new_markdown_cell("x") for _ in range(10_000)]
    cases = {"many-cells": nb}  # first: the time until its row arrives is its own
    cases["kill"] = attack("""
import os, signal, time
ok = False
mine = open("/proc/self/cmdline").read().split("\\0")
mine = mine[mine.index("-f") + 1]  # this kernel's connection file
end = time.time() + 6
while time.time() < end:  # while the honest kernel beside it runs
    for pid in [os.getppid(), 1] + [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        try:  # another kernel in sight?
            cmd = open(f"/proc/{pid}/cmdline").read()
            ok = ok or ("ipykernel" in cmd and mine not in cmd)
        except OSError:
            pass
        if pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass
    time.sleep(0.05)
""")
    cases["honest"] = answered()  # graded while "kill" runs
    cases["remount"] = attack(f"""
import subprocess
venv = {str(venv)!r}
for cmd in (["mount", "-o", "remount,rw,bind", venv],
            ["unshare", "-rm", "sh", "-c", f"mount -o remount,rw,bind {{venv}} {{venv}}"]):
    subprocess.run(cmd, capture_output=True)
ok = False
try:
    open(venv + "/vmkit-remount-test", "w").close()
    ok = True
except OSError:
    pass
""")
    cases["write-bound"] = attack(f"""
ok = False
for folder in ({str(venv)!r}, {str(kit)!r}, {str(venv / 'bin')!r}, "/usr/lib", "/etc"):
    try:
        open(folder + "/vmkit-write-test", "w").close()
        ok = True
    except OSError:
        pass
""")
    cases["read-solutions"] = attack(f"""
import glob, os
ok = False
places = [{str(ROOT / 'solutions' / 'hw01-rings-and-traps.ipynb')!r},
          {str(DATA / 'hw99-fixture.ipynb')!r}]
try:
    from vmkit.homework.release import ROOT
    places += glob.glob(str(ROOT / "solutions" / "*.ipynb"))
except Exception:
    pass
for pid in os.listdir("/proc"):  # the grader's working folder and command line
    try:
        places.append(os.path.join(os.readlink(f"/proc/{{pid}}/cwd"), "solutions"))
        args = open(f"/proc/{{pid}}/cmdline").read().split("\\0")
        places += [a for a in args if "solution" in a]
    except OSError:
        pass
for place in places:
    try:
        ok = ok or "BEGIN SOLUTION" in open(place).read()
    except OSError:
        pass
""")
    cases["network"] = attack(f"""
import socket
ok = False
for address in (("127.0.0.1", {port}), ("1.1.1.1", 53), ("8.8.8.8", 443)):
    try:
        socket.create_connection(address, timeout=1).close()
        ok = True
    except OSError:
        pass
""")
    cases["detached"] = attack(f"""
import os, subprocess, sys
script = '''
import os, sys, time
for _ in range(60):  # a minute of trying, from 3 s on
    time.sleep(1 if _ else 3)
    for target in sys.argv[2:]:
        try:
            open(target, "w").write("REWRITTEN-" + "BY-DETACHED")
        except OSError:
            pass
'''
targets = [{str(csv_path)!r}, {str(feedback / 'detached.html')!r},
           {str(feedback / 'honest.html')!r}]
if os.fork() == 0:  # a double fork into a new session: init's child
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", script, "{MARK}", *targets])
    os._exit(0)
subprocess.Popen(["nohup", "setsid", sys.executable, "-c", script, "{MARK}", *targets],
                 start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
ok = os.path.isdir({str(feedback)!r})
""")
    cases["display-flood"] = attack("""
from IPython.display import display, update_display
for i in range(200):
    display("x", display_id="flood")
big = "y" * 1_000_000
for i in range(40):
    update_display(big, display_id="flood")
ok = True
""")
    cases["widget-flood"] = attack("""
import ipywidgets as widgets
keep = [widgets.Text(value="z" * 200_000) for i in range(150)]
for w in keep[:50]:
    w.value = "w" * 200_000
ok = True
""")
    cases["fork-bomb"] = attack("""
import os, time
ok = False
children = 0
for _ in range(5000):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:  # every child forks on, forever, busy
        while True:
            try:
                os.fork()
            except OSError:
                pass
    children += 1
ok = children >= 5000
""")
    cases["honest-beside-bomb"] = answered()  # its kernel starts while the bomb runs
    return cases


def plant_cases(home: Path) -> dict:
    """A submission that leaves things behind for the next one's kernel to run: IPython startup
    files, a .pth file, a kernelspec (each defines ``double``)."""
    plant = "def double(x):\n    return 2 * x\n"
    pth = "import builtins; builtins.double = lambda x: 2 * x\n"
    code = f"""
import json, os, site, sys
ok = False
def put(path, text):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    except OSError:
        pass
homes = [os.path.expanduser("~"), {str(home)!r}, "/root"]
for h in homes:
    put(h + "/.ipython/profile_default/startup/00-plant.py", {plant!r})
put(os.environ.get("IPYTHONDIR", "/x") + "/profile_default/startup/00-plant.py", {plant!r})
for d in [site.getusersitepackages()] + site.getsitepackages():
    put(d + "/vmkit-plant-test.pth", {pth!r})
spec = {{"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{{connection_file}}",
                  "--IPKernelApp.exec_lines=def double(x): return 2 * x"],
        "display_name": "Python 3", "language": "python"}}
for d in [h + "/.local/share/jupyter" for h in homes] + [
        os.environ.get("JUPYTER_DATA_DIR", "/x"), sys.prefix + "/share/jupyter"]:
    put(d + "/kernels/python3/kernel.json", json.dumps(spec))
put("/tmp/vmkit-plant-test", "x")
"""
    return {"planter": attack(code)}


@pytest.fixture(scope="module")
def server():
    """A TCP server on the grader's loopback: a sandboxed cell must not reach it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    hits = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                hits.append(1)
                conn.close()
            except OSError:
                continue

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], hits
    stop.set()
    t.join()
    srv.close()


@pytest.fixture(scope="module")
def attacked(tmp_path_factory, server):
    """The attacks graded in one sandboxed batch (jobs=2), then the planter, then (after it)
    two submissions that would profit from what it planted."""
    base = tmp_path_factory.mktemp("attacks")
    port, hits = server
    settings = Settings(source=DATA, timeout=12, memory_mb=1024, output_limit=64 * 1024,
                        output_total=512 * 1024, feedback=base / "feedback")
    paths = _write(attack_cases(base, port), base / "submitted")
    t0 = time.monotonic()
    arrived = {}

    def note(res):
        arrived[Path(res.notebook).stem] = time.monotonic() - t0

    results = grade(paths, settings, jobs=2, on_result=note)
    out = {Path(r.notebook).stem: r for r in results}
    # the detached processes would write from 3 s after they start on: wait past that
    time.sleep(4)
    home = Path.home()
    planted = grade(_write(plant_cases(home), base / "planter"), settings, jobs=1)
    out["planter"] = planted[0]
    later = {"after-plant": answered(q1_answer="pass"), "honest-after": answered()}
    for r in grade(_write(later, base / "later"), settings, jobs=2):
        out[Path(r.notebook).stem] = r
    return {"results": out, "base": base, "hits": hits, "arrived": arrived,
            "processes": _sandbox_uid_processes(), "marked": _marked_processes()}


# --- the tests ------------------------------------------------------------------------------


@needs_sandbox
def test_honest_solutions_in_attacked_batches_get_full_marks(attacked):
    """Does an honest solution graded beside the attacks (and one graded after the planter)
    still get every point?"""
    assert rows(attacked["results"]["honest"]) == FULL
    assert rows(attacked["results"]["honest-beside-bomb"]) == FULL
    assert rows(attacked["results"]["honest-after"]) == FULL


@needs_sandbox
@pytest.mark.parametrize("name", ["remount", "write-bound", "fork-bomb", "kill",
                                  "read-solutions", "network", "detached"])
def test_attack_scores_nothing(attacked, name):
    """Does the attack fail in the sandbox (question 1 gets 0), the other questions still
    graded (the fork bomb's own kernel runs out of time)?"""
    r = rows(attacked["results"][name])
    assert r["test-q1"][0] == 0, r
    if name != "fork-bomb":  # the bomb's busy processes starve its own kernel: timeouts
        assert r["test-q2"] == (2, "ok") and r["test-q3"] == (1, "ok"), r


@needs_sandbox
def test_read_only_system_venv_and_kit_are_unchanged(attacked):
    """After a remount attempt and writes into the venv, the kit, /usr and /etc, is none of
    the files there?"""
    kit = Path(vmkit.__file__).parent
    for place in (Path(sys.prefix), kit, Path(sys.prefix) / "bin", Path("/usr/lib"),
                  Path("/etc")):
        assert not (place / "vmkit-write-test").exists()
    assert not (Path(sys.prefix) / "vmkit-remount-test").exists()


@needs_sandbox
def test_fork_bomb_and_detached_processes_do_not_outlive_grading(attacked):
    """Is every process a submission started gone when grading ends (a fork bomb, a
    double-forked setsid process, nohup), and did none of them rewrite the CSV or a page?"""
    assert attacked["processes"] == [] and attacked["marked"] == []
    feedback = attacked["base"] / "feedback"
    assert not (attacked["base"] / "grades.csv").exists()
    for page in feedback.glob("*.html"):
        assert "REWRITTEN-BY-DETACHED" not in page.read_text()


@needs_sandbox
def test_nothing_is_left_for_a_later_submission(attacked):
    """Do a .pth file, IPython startup files and a kernelspec planted by one submission stay
    out of the next one (which answers nothing and must get 0)?"""
    assert rows(attacked["results"]["planter"])["test-q1"][0] == 0
    assert rows(attacked["results"]["after-plant"])["test-q1"] == (0, "error")
    home = Path.home()
    assert not (home / ".ipython/profile_default/startup/00-plant.py").exists()
    assert not (home / ".local/share/jupyter/kernels/python3/kernel.json").exists()
    assert not list(Path(sys.prefix).glob("lib/python*/site-packages/vmkit-plant-test.pth"))
    assert not Path("/tmp/vmkit-plant-test").exists()


@needs_sandbox
def test_network_is_off(attacked):
    """Does a connection to the grader's loopback or to the internet fail in the sandbox?"""
    assert attacked["hits"] == []


@needs_sandbox
@pytest.mark.parametrize("name", ["display-flood", "widget-flood"])
def test_output_flood_keeps_page_and_grader_small(attacked, name):
    """Do display updates and widget messages count toward the output limit, so that the
    feedback page and the grader's memory stay small and the notebook is still graded?"""
    res = attacked["results"][name]
    assert rows(res)["test-q2"] == (2, "ok")
    page = Path(res.feedback).read_text()
    assert len(page) < 2_000_000
    assert any("output limited" in m for m in res.messages)
    assert res.grader_mb is not None and res.grader_mb < 500, res.grader_mb


@needs_sandbox
def test_ten_thousand_cells_are_refused_fast(attacked):
    """Is a notebook of 10,000 markdown cells refused before it is parsed, in seconds?"""
    res = attacked["results"]["many-cells"]
    assert [(r.question, r.status) for r in res.rows] == [("notebook", "error")]
    assert "cells, over the limit of 1000" in res.messages[0]
    assert attacked["arrived"]["many-cells"] < 20


# --- without the sandbox: the batch machinery ----------------------------------------------


@pytest.fixture(scope="module")
def unsandboxed(tmp_path_factory):
    """A batch graded with --no-sandbox: a cell that kills the grader's process, a cell that
    never ends (cut at the time limit), honest solutions; the CSV written by the results as
    they arrive."""
    base = tmp_path_factory.mktemp("no-sandbox")
    cases = {"kill-grader": answered(q1_answer="import os\nos.kill(os.getppid(), 9)"),
             "honest-1": answered(),
             "hang": answered(q1_answer="import time\ntime.sleep(600)"),
             "honest-2": answered()}
    settings = Settings(source=DATA, timeout=8, sandbox=False, feedback=base / "feedback")
    csv_path = base / "grades.csv"
    lines_seen = []
    with CsvWriter(csv_path) as out:
        def note(res):
            out.add(res)
            lines_seen.append(len(csv_path.read_text().splitlines()))
        results = grade(_write(cases, base / "submitted"), settings, jobs=2, on_result=note)
    return {"results": {Path(r.notebook).stem: r for r in results}, "lines": lines_seen,
            "csv": csv_path}


def test_killed_worker_is_one_error_row(unsandboxed):
    """Does `os.kill(os.getppid(), 9)` without the sandbox cost only that submission one
    `error` row, the batch going on?"""
    res = unsandboxed["results"]["kill-grader"]
    assert [(r.question, r.status) for r in res.rows] == [("notebook", "error")]
    assert "worker died" in res.messages[0]
    assert rows(unsandboxed["results"]["honest-1"]) == FULL
    assert rows(unsandboxed["results"]["honest-2"]) == FULL


def test_hung_cell_is_cut_at_the_time_limit(unsandboxed):
    """Is a cell that never ends cut at the time limit, its questions `timeout`?"""
    r = rows(unsandboxed["results"]["hang"])
    assert [r[q][1] for q in ("test-q1", "test-q2", "test-q3")] == ["timeout"] * 3


def test_submission_past_its_deadline_is_one_timeout_row(tmp_path):
    """Is a submission whose grading outlasts its deadline (here: a feedback page of 990
    markdown cells full of formulas, each drawn by the grader, takes many seconds) killed at
    the deadline and one `timeout`
    row?"""
    nb = answered()
    nb.cells += [new_markdown_cell(" ".join(f"$x_{{{i}}}^{{{j}}}$" for j in range(40)))
                 for i in range(990)]
    paths = _write({"slow-page": nb}, tmp_path / "submitted")
    settings = Settings(source=DATA, timeout=1, deadline=4, sandbox=False,
                        feedback=tmp_path / "feedback")
    t = time.monotonic()
    res = grade(paths, settings)[0]
    assert [(r.question, r.status) for r in res.rows] == [("notebook", "timeout")]
    assert time.monotonic() - t < 15 and "not graded within 4 s" in res.messages[0]


def test_csv_is_written_as_results_arrive(unsandboxed):
    """Does the CSV grow with each result (one row for a lost submission, four for one
    graded), in the submissions' order?"""
    assert unsandboxed["lines"] == [2, 6, 10, 14]
    table = list(csv.reader(unsandboxed["csv"].open()))
    assert [Path(r[0]).stem for r in table[1:]] == (["kill-grader"] + ["honest-1"] * 4 +
                                                    ["hang"] * 4 + ["honest-2"] * 4)


def test_a_batch_that_stops_keeps_the_rows_so_far(tmp_path):
    """When the batch stops half-way (here: the caller raises after the first result), is the
    first submission's row in the CSV and is no worker left running?"""
    cases = {"first": "not a notebook", "second": answered(q1_answer="import time\n"
                                                                      "time.sleep(600)")}
    paths = _write(cases, tmp_path / "submitted")

    def stop(res):
        out.add(res)
        raise KeyboardInterrupt

    with CsvWriter(tmp_path / "grades.csv") as out:
        with pytest.raises(KeyboardInterrupt):
            grade(paths, Settings(source=DATA, sandbox=False), jobs=2, on_result=stop)
    table = list(csv.reader((tmp_path / "grades.csv").open()))
    assert len(table) == 2 and table[1][3:] == ["notebook", "0", "", "error"]
    import psutil
    from multiprocessing import forkserver
    server = forkserver._forkserver._forkserver_pid
    time.sleep(1)
    left = [p for p in psutil.Process().children(recursive=True)
            if p.pid != server and "resource_tracker" not in " ".join(p.cmdline())]
    assert left == []


# --- when the sandbox cannot start ----------------------------------------------------------


def test_no_bubblewrap_stops_with_one_line(tmp_path, monkeypatch, capsys):
    """Without bwrap on PATH, does `vmkit grade` stop with one line that names the fix (and
    write no CSV), and does --no-sandbox grade anyway?"""
    from vmkit.cli import main

    path = _write({"solution": answered()}, tmp_path / "submitted")[0].path
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sandbox_mod, "_AVAILABLE", False)
    code = main(["grade", str(path), "--source", str(DATA), "--csv", str(tmp_path / "g.csv"),
                 "--student", "s", "--assignment", FIXTURE])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "apt-get install bubblewrap" in err[0] and "--no-sandbox" in err[0]
    assert not (tmp_path / "g.csv").exists()
    code = main(["grade", str(path), "--source", str(DATA), "--csv", str(tmp_path / "g.csv"),
                 "--no-sandbox", "--timeout", "60", "--student", "s", "--assignment", FIXTURE])
    table = list(csv.reader((tmp_path / "g.csv").open()))
    assert code == 0 and [r[6] for r in table[1:]] == ["ok", "ok", "ok", "manual"]


@needs_sandbox
def test_flood_in_student_cells_leaves_the_tests_output(tmp_path):
    """When a student's cell has used up the notebook's output, does a test cell's output
    (where hidden tests hand answers to the grader) still come through?"""
    from test_homework_grade import cell

    from vmkit.homework.execute import execute
    from vmkit.homework.sandbox import Limits, Sandbox

    nb = answered(q1_answer="for i in range(200):\n    print('x' * 1000, flush=True)\n"
                            "def double(x):\n    return 2 * x")
    cell(nb, "test-q1").source = "print('ANSWER-LINE')"
    with Sandbox(Limits()) as sb:
        statuses, _, truncated = execute(nb, env={}, timeout=60, sandbox=sb,
                                         output_limit=64 * 1024, output_total=16 * 1024)
    out = "".join(o.get("text", "") for o in cell(nb, "test-q1").outputs)
    assert "ANSWER-LINE" in out and truncated
