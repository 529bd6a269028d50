"""The course material as the kit finds it (vmkit.resources) and the commands that hand it out:
`vmkit course copy`, `vmkit course link`, and the one-line errors of `vmkit slides`,
`vmkit release` and `vmkit grade` when something is missing. (From an installed wheel:
tests/course/test_installed.py.)"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from vmkit import resources
from vmkit.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> str:
    """What ``code`` prints, run by this Python in a fresh process in the checkout (the
    process state a kernel starts from; a failure raises with its output)."""
    import subprocess
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT).stdout


def test_a_checkout_finds_its_own_material():
    """Does the kit, run from this checkout, use the checkout's folders?"""
    assert resources.checkout_root() == ROOT
    assert resources.notebooks_dir() == ROOT / "notebooks"
    assert resources.exercises_dir() == ROOT / "exercises"
    assert resources.slides_share() == ROOT / "share" / "slides"
    assert resources.solutions_dir() == ROOT / "solutions"
    assert resources.cache_dir() == ROOT / "build"


def test_nbtools_loads_only_what_a_notebook_needs():
    """Does `from vmkit.nbtools import notebook_setup` leave the slide builder and the
    execution tools unloaded?"""
    out = _python("import sys; from vmkit.nbtools import notebook_setup; "
                  "print(sorted(m for m in sys.modules if m.startswith('vmkit')))")
    assert "vmkit.nbtools.runtime" in out
    assert "vmkit.nbtools.slides" not in out and "vmkit.nbtools.hygiene" not in out
    assert "nbconvert" not in out


def test_matplotlib_is_configured_when_first_imported_not_before():
    """Does notebook_setup() leave matplotlib unloaded (a notebook without plots saves its
    memory) and still give it the repeatable SVG settings once something imports it?"""
    code = ("import sys; import vmkit.nbtools as t; t.notebook_setup(); t.notebook_setup(); "
            "print('matplotlib' in sys.modules); from matplotlib.figure import Figure; "
            "import matplotlib; print(matplotlib.rcParams['svg.hashsalt'], "
            "matplotlib.rcParams['svg.fonttype'], "
            "type(matplotlib.__loader__).__name__ != '_ThenLoader')")
    out = _python(code).split()
    assert out == ["False", "vmkit", "path", "True"], out


def test_course_copy_keeps_a_students_work(tmp_path, capsys):
    """Does `vmkit course copy` copy lectures and exercises, and keep files already there?"""
    assert main(["course", "copy", str(tmp_path)]) == 0
    lectures = sorted(p.name for p in (tmp_path / "notebooks").iterdir())
    assert lectures == sorted([p.name for p in resources.lecture_notebooks()] + ["rise.css"])
    assert (tmp_path / "exercises" / "hw01-rings-and-traps.ipynb").is_file()
    assert not (tmp_path / "solutions").exists()
    mine = tmp_path / "exercises" / "hw01-rings-and-traps.ipynb"
    mine.write_text("my work")
    capsys.readouterr()
    assert main(["course", "copy", str(tmp_path)]) == 0
    assert mine.read_text() == "my work"
    assert "kept" in capsys.readouterr().err
    assert main(["course", "copy", "--force", str(tmp_path)]) == 0
    assert mine.read_text() != "my work"


def test_course_copy_into_a_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "f"
    target.write_text("x")
    assert main(["course", "copy", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a folder" in err


@pytest.mark.parametrize("repo, name", [
    ("https://github.com/me/vmkit-course", "vmkit-course"),
    ("https://github.com/me/vmkit-course.git", "vmkit-course"),
    ("git@github.com:me/course.git", "course"),
    ("/srv/course/vmkit-course", "vmkit-course"),
])
def test_course_link(repo, name, capsys):
    """Is `vmkit course link` the nbgitpuller link that opens PATH in the student's clone?"""
    assert main(["course", "link", "exercises/hw03-popek-goldberg.ipynb",
                 "--hub", "https://hub.example.org/", "--repo", repo]) == 0
    url = capsys.readouterr().out.strip()
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == \
        "https://hub.example.org/hub/user-redirect/git-pull"
    assert parse_qs(parts.query) == {"repo": [repo], "branch": ["main"], "urlpath": [
        f"lab/tree/{name}/exercises/hw03-popek-goldberg.ipynb"]}


def test_course_link_needs_a_hub_address(capsys):
    assert main(["course", "link", "--hub", "hub.example.org", "--repo", "x/y"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "https://" in err


def test_slides_of_a_missing_notebook_is_one_line(tmp_path, capsys):
    assert main(["slides", "-o", str(tmp_path), str(tmp_path / "nope.ipynb")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.ipynb: no such notebook" in err


def test_release_and_grade_without_solutions_say_where_they_come_from(tmp_path, capsys,
                                                                      monkeypatch):
    """An installed kit has no solutions/: do release and grade say to give --source?"""
    monkeypatch.setattr(resources, "solutions_dir", lambda: None)
    monkeypatch.chdir(tmp_path)
    assert main(["release"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--source DIR" in err and "checkout" in err
    sub = tmp_path / "hw.ipynb"
    sub.write_text("{}")
    assert main(["grade", str(sub), "--student", "s", "--assignment", "hw01-rings-and-traps"]) \
        == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--source DIR" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["release", "--source", str(empty)]) == 1
    assert "no solution notebooks" in capsys.readouterr().err


def test_python_m_nbtools_still_works():
    """Do `python -m vmkit.nbtools check` (and its siblings) still run as the Makefile calls
    them, after the split into runtime, hygiene and slides?"""
    import subprocess
    ok = subprocess.run([sys.executable, "-m", "vmkit.nbtools", "check",
                         "tests/data/smoke.ipynb"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    usage = subprocess.run([sys.executable, "-m", "vmkit.nbtools", "--help"], cwd=ROOT,
                           capture_output=True, text=True)
    assert usage.returncode == 0
    assert all(cmd in usage.stdout for cmd in ("execute", "slides", "check"))


#: an IPython shell as release_memory_after_cells sees it: events to register callbacks with
_FAKE_SHELL = r'''
class Events:
    def __init__(self):
        self.callbacks = []

    def register(self, name, callback):
        self.callbacks.append((name, callback))


class Shell:
    events = Events()
'''

_RELEASE_SCRIPT = _FAKE_SHELL + r'''
import gc
from vmkit import guests
from vmkit.nbtools.runtime import release_memory_after_cells
from vmkit.vmm import Native, TrapAndEmulate


def rss():
    with open("/proc/self/status") as f:
        return int(next(ln for ln in f if ln.startswith("VmRSS")).split()[1]) // 1024


shell = Shell()
assert release_memory_after_cells(shell) and release_memory_after_cells(shell)
assert [name for name, _ in shell.events.callbacks] == ["post_run_cell"]
img = guests.build("hello")
first = TrapAndEmulate(img)            # 6 MiB freed: glibc would raise its mmap threshold
del first
gc.collect()
vms = [Native(img) for _ in range(8)]  # 4 MiB each
later = [bytearray(2000) for _ in range(2000)]   # heap blocks after them
before = rss()
del vms
gc.collect()
shell.events.callbacks[0][1]()         # the end of a cell
print(before - rss())
'''


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_kernel_gives_the_memory_of_dropped_monitors_back():
    """Does notebook_setup's hook (once per kernel) give the guest memory of monitors a cell
    dropped back to the system, also after glibc would have raised its mmap threshold?"""
    out = _python(_RELEASE_SCRIPT)
    assert int(out.split()[-1]) >= 24, out      # 8 guests of 4 MiB: most of 32 MiB back


_SKIP_SCRIPT = _FAKE_SHELL + r'''
import gc
import weakref
from vmkit import guests
from vmkit.nbtools.runtime import release_memory_after_cells
from vmkit.vmm import Native


gc.disable()                            # only the hook collects
shell = Shell()
release_memory_after_cells(shell)
end_of_cell = shell.events.callbacks[0][1]
end_of_cell()                           # the setup cell
img = guests.build("hello")
vm = Native(img)
gone = weakref.ref(vm)
end_of_cell()                           # a cell that made a machine (it stays: vm holds it)
del vm
end_of_cell()                           # a cell that made none: no collection
print("kept", gone() is not None)
other = Native(img)
end_of_cell()                           # a cell that made one: the dropped monitor goes
print("freed", gone() is None)
'''


def test_the_end_of_cell_collection_runs_only_after_cells_that_made_a_machine():
    """A full collection after every cell walked all the lecture's objects (20-70 ms a cell,
    a third of the cells make no machine): is it skipped after a cell that made no machine,
    and does a monitor dropped then go at the next cell that makes one?"""
    out = _python(_SKIP_SCRIPT).split()
    assert out == ["kept", "True", "freed", "True"], out


def test_a_set_up_kernel_collects_its_young_objects_less_often():
    """notebook_setup in a kernel raises the collector's young-generation threshold (a full
    collection walks everything a lecture holds; promoted short-lived objects set it off):
    is it raised in a shell, and left alone where there is no shell?"""
    script = ("import gc, vmkit.nbtools\n"
              "from vmkit.nbtools.runtime import YOUNG_COLLECTION_THRESHOLD as T\n"
              "before = gc.get_threshold()\n"
              "vmkit.nbtools.notebook_setup()\n"
              "alone = gc.get_threshold()\n"
              "from IPython.core.interactiveshell import InteractiveShell\n"
              "InteractiveShell.instance()\n"
              "vmkit.nbtools.notebook_setup()\n"
              "print(before == alone, gc.get_threshold() == (T,) + before[1:], T > before[0])\n")
    out = _python(script).split()
    assert out == ["True", "True", "True"], out
