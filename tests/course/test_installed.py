"""Installed, not cloned: the kit built as an sdist and a wheel, installed into a fresh venv,
teaches and grades from a folder outside any checkout.

The sdist is built from a copy of the source tree (with ``solutions/`` in it, which must stay
out), the wheel from the sdist (``python -m build --no-isolation``: offline, with the
setuptools of the test's venv). The fresh venv gets the wheel alone (``--no-deps``); the
dependencies come from the test's own venv through a ``.pth`` file, so the install takes
seconds and the network is not needed. Every command then runs from a temporary folder with no
PYTHONPATH: ``import vmkit`` finds the installed copy and nothing of the checkout.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

from kit_source import copy_source

ROOT = Path(__file__).resolve().parents[2]
#: an assignment that grades in a few seconds
ASSIGNMENT = "hw03-popek-goldberg"


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """(python of the fresh venv, environment for its commands, the sdist, the wheel)."""
    base = tmp_path_factory.mktemp("installed")
    src, dist = base / "src", base / "dist"
    copy_source(src)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir",
                            str(dist), str(src)], capture_output=True, text=True, env=env,
                           timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [sdist] = dist.glob("vmkit-*.tar.gz")
    [wheel] = dist.glob("vmkit-*.whl")

    target = base / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies: the site-packages of the venv running the tests (not its vmkit: the
    # fresh venv's own site-packages comes first on sys.path)
    Path(purelib, "vmkit-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                                "--no-deps", "--no-index", "--disable-pip-version-check", "-q",
                                str(wheel)], capture_output=True, text=True, env=env,
                               timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    work = base / "work"
    work.mkdir()
    env = {**env, "HOME": str(base / "home"), "XDG_CACHE_HOME": str(base / "cache"),
           # the dependencies' data files (nbconvert's templates, kernel specs) as well
           "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter"),
           "PATH": f"{target / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"}
    # slides: the npm packages of the checkout's cache, when there, save a download
    # (under the lock vmkit.nbtools.slides takes while it installs them; the copy is used
    # only if its stamp matches the lock file, else npm ci runs again)
    cached = ROOT / "build" / "npm"
    if (cached / "node_modules").is_dir():
        import fcntl
        with open(cached / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            shutil.copytree(cached / "node_modules",
                            base / "cache" / "vmkit" / "npm" / "node_modules", symlinks=True)
    return {"python": python, "env": env, "sdist": sdist, "wheel": wheel, "work": work,
            "bin": target / "bin"}


def vmkit(kit, *args, cwd=None, timeout=300):
    return subprocess.run([str(kit["bin"] / "vmkit"), *map(str, args)], cwd=cwd or kit["work"],
                          env=kit["env"], capture_output=True, text=True, timeout=timeout)


def test_sdist_and_wheel_carry_the_course_but_not_the_solutions(kit):
    """Do the sdist and the wheel hold the guests, notebooks, exercises and slide template,
    and no solution?"""
    with tarfile.open(kit["sdist"]) as t:
        snames = [n.split("/", 1)[1] for n in t.getnames() if "/" in n]
    with zipfile.ZipFile(kit["wheel"]) as z:
        wnames = z.namelist()
    for name in ("notebooks/02-trap-and-emulate.ipynb", f"exercises/{ASSIGNMENT}.ipynb",
                 "share/slides/package-lock.json", "vmkit/guests/kernel.s", "setup.py"):
        assert name in snames, name
    for name in ("vmkit/_course/notebooks/02-trap-and-emulate.ipynb",
                 f"vmkit/_course/exercises/{ASSIGNMENT}.ipynb",
                 "vmkit/_course/slides/package-lock.json",
                 "vmkit/_course/slides/vmkit-reveal/index.html.j2",
                 "vmkit/_course/notebooks/rise.css", "vmkit/_course/docs/reference.md",
                 "vmkit/_course/site/site.css",
                 "vmkit/_course/labextension/vmkit-slides/package.json",
                 "vmkit/guests/kernel.s", "vmkit/nbtools/runtime.py"):
        assert name in wnames, name
    assert not [n for n in snames + wnames
                if n.startswith(("solutions/", "vmkit/_course/solutions")) or "/reference/" in n]


def test_imports_come_from_the_installed_kit(kit):
    """Does the fresh venv import the wheel's vmkit, which knows it is no checkout?"""
    out = subprocess.run([str(kit["python"]), "-c",
                          "import vmkit, vmkit.resources as r; print(vmkit.__file__); "
                          "print(r.checkout_root()); print(r.notebooks_dir())"],
                         cwd=kit["work"], env=kit["env"], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert "site-packages" in out[0] and not out[0].startswith(str(ROOT))
    assert out[1] == "None"
    assert out[2].endswith("vmkit/_course/notebooks")


def test_run_classify_compare(kit):
    """Do the simulator commands (run, classify, compare, debug) work from the installed
    kit?"""
    run = vmkit(kit, "run", "hello", "--monitor", "te")
    assert run.returncode == 0, run.stderr
    assert "-- poweroff" in run.stdout
    cl = vmkit(kit, "classify", "popfd")
    assert cl.returncode == 0 and "popfd" in cl.stdout, cl.stderr
    cmp = vmkit(kit, "compare", "syscall", "--param", "iterations=5")
    assert cmp.returncode == 0, cmp.stderr
    assert "bt" in cmp.stdout and "hw" in cmp.stdout
    script = kit["work"] / "debug.txt"
    script.write_text("break sys_write\ncontinue\ninfo gdt\n")
    dbg = vmkit(kit, "debug", "hello", "-x", script)
    assert dbg.returncode == 0 and "TSS" in dbg.stdout, dbg.stdout + dbg.stderr


def test_course_copy_slides_release_grade(kit, tmp_path):
    """Can a student get the course, and an instructor make decks, release and grade, with
    the solutions from a checkout given on the command line?"""
    course = kit["work"] / "course"
    cp = vmkit(kit, "course", "copy", course)
    assert cp.returncode == 0, cp.stderr
    lectures = sorted(p.name for p in (course / "notebooks").glob("*.ipynb"))
    assert lectures == sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
    assert (course / "exercises" / f"{ASSIGNMENT}.ipynb").is_file()
    assert not (course / "solutions").exists()
    # a student's work is never overwritten
    mine = course / "exercises" / f"{ASSIGNMENT}.ipynb"
    mine.write_text(mine.read_text() + " ")
    again = vmkit(kit, "course", "copy", course)
    assert again.returncode == 0 and "kept" in again.stderr
    assert mine.read_text().endswith(" ")

    decks = kit["work"] / "decks"
    sl = vmkit(kit, "slides", "-o", decks, course / "notebooks" / "01-machine-and-rings.ipynb")
    assert sl.returncode == 0, sl.stderr
    deck = decks / "01-machine-and-rings.slides.html"
    assert deck.is_file() and (decks / "assets" / "reveal.js" / "dist" / "reveal.js").is_file()
    html = deck.read_text()
    assert "vmkitFits" in html and "assets/reveal.js/dist/reveal.js" in html  # the template
    assert (course / "notebooks" / "rise.css").is_file()      # live slides' style sheet

    # the course website from the installed kit: lectures, exercises and docs, offline assets
    site = kit["work"] / "site"
    st = vmkit(kit, "site", site, timeout=600)
    assert st.returncode == 0, st.stderr
    assert (site / "index.html").is_file() and (site / "reference.html").is_file()
    assert (site / f"{ASSIGNMENT}.html").is_file()
    assert (site / "assets" / "site" / "site.css").is_file()

    # the instructor's side: without solutions, one line that says where they come from
    for cmd in (["release"], ["grade", mine, "--student", "s1", "--assignment", ASSIGNMENT]):
        r = vmkit(kit, *cmd)
        assert r.returncode == 1, (cmd, r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and "--source" in r.stderr, r.stderr
    solutions = tmp_path / "instructor" / "solutions"
    shutil.copytree(ROOT / "solutions", solutions)
    rel = vmkit(kit, "release", "--source", solutions)
    assert rel.returncode == 0, rel.stderr
    released = tmp_path / "instructor" / "exercises" / f"{ASSIGNMENT}.ipynb"
    assert released.read_bytes() == (ROOT / "exercises" / f"{ASSIGNMENT}.ipynb").read_bytes()

    graded = vmkit(kit, "grade", "--source", solutions, "--student", "s1", "--assignment",
                   ASSIGNMENT, solutions / f"{ASSIGNMENT}.ipynb", timeout=600)
    assert graded.returncode == 0, graded.stderr
    rows = list(csv.DictReader(io.StringIO(graded.stdout)))
    assert rows and {r["assignment"] for r in rows} == {ASSIGNMENT}, graded.stdout
    scored = [r for r in rows if r["status"] != "manual"]
    assert scored and all(r["status"] == "ok" for r in scored), graded.stdout
    assert sum(float(r["points"]) for r in scored) == sum(float(r["max_points"])
                                                          for r in scored) > 0
