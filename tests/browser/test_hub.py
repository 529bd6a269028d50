"""A course on a real JupyterHub (hub/): two students, their own system users, nbgitpuller links.

What it starts, all on loopback ports that were free and all removed afterwards:
- two system users (``useradd``), homes 0700, the students;
- the users' environment: a venv in a world-readable temporary folder with the kit's wheel
  installed (built from this checkout) and the dependencies of the venv running the test;
- the course repository: ``vmkit course copy`` of that installed kit, committed with git;
- JupyterHub with hub/jupyterhub_config.py (dummy authenticator with a shared password,
  LocalProcessSpawner, the idle culler, configurable-http-proxy from ``make hub-proxy``).

Then, in headless chromium, each student logs in, opens an nbgitpuller link to lecture 01 and
runs it all (a Stepper steps), opens an nbgitpuller link to homework 3 and runs its variant
cell: each sees the variant of their own id (``vmkit.homework.variant`` reads
``JUPYTERHUB_USER``), their kernel runs as their own user, and can read neither the other's
files nor, through the hub, the other's server.

Needs root (it creates users), chromium and ``make hub-proxy``; slower than `make test`
allows, so it runs in ``make hub-test`` (VMKIT_HUB_TEST=1), which .ci/run calls.
Screenshots: build/test-artifacts/hub-<student>-*.png.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from browser_util import CHROMIUM, CHROMIUM_ARGS, require_chromium, screenshot
from kit_source import copy_source
from test_browser import (ALL_CELLS_RUN, CELL_ERRORS, NOTEBOOK_READY, STEP_TEXT, free_port,
                          live)

ROOT = Path(__file__).resolve().parents[2]
HUB = ROOT / "hub"
PROXY = HUB / "node_modules" / ".bin" / "configurable-http-proxy"
LECTURE = "notebooks/01-machine-and-rings.ipynb"
EXERCISE = "exercises/hw03-popek-goldberg.ipynb"
ASSIGNMENT = "hw03-popek-goldberg"
STUDENTS = ["vmkit-st-a", "vmkit-st-b"]
REPO = "vmkit-course"
PAGE_BUDGET = 180  # s for one student's visit: spawn, pull, run the lecture, the exercise

pytestmark = pytest.mark.skipif(not os.environ.get("VMKIT_HUB_TEST"),
                                reason="the hub test runs in `make hub-test`")


def _run(cmd, check: bool = True, **kw):
    """Run ``cmd``; with ``check``, a failure shows its command and the end of its output."""
    done = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, **kw)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {done.returncode}:\n"
                             f"{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return done


def _world_can_reach(path: Path) -> bool:
    """Can another user read ``path`` (every folder above it searchable)?"""
    path = path.resolve()
    for p in [path, *path.parents]:
        if not os.stat(p).st_mode & 0o001:
            return False
    return bool(os.stat(path).st_mode & 0o004)


def users_python() -> Path:
    """A Python of the test's version that the students may run: the one under the test's
    venv, or the system's when that one is private (e.g. pyenv under /root)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path(sys._base_executable).resolve(), Path("/usr/bin") / version):
        if candidate.is_file() and _world_can_reach(candidate) and \
                os.stat(candidate).st_mode & 0o001:
            return candidate
    pytest.skip(f"no {version} that other users may run (the test's is private): install "
                "Debian's python3")


def users_env(base: Path) -> Path:
    """A venv with the kit's wheel in it that every student can run. Its dependencies: the
    test venv's site-packages (a .pth file; its Jupyter data and configuration linked) when
    other users can read it, else (or with VMKIT_HUB_FULL_INSTALL=1) a full install at the
    pins of constraints.txt, as `make hub-env` does."""
    dist = base / "dist"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    src = copy_source(base / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
          "-w", dist, src], env=env, cwd=base)
    [wheel] = dist.glob("vmkit-*.whl")
    target = base / "env"
    deps = Path(sysconfig.get_paths()["purelib"])
    python = users_python()
    if _world_can_reach(deps) and not os.environ.get("VMKIT_HUB_FULL_INSTALL"):
        _run([python, "-m", "venv", "--without-pip", target], env=env)
        purelib = _run([target / "bin" / "python", "-c", "import sysconfig; print("
                        "sysconfig.get_paths()['purelib'])"], env=env).stdout.strip()
        Path(purelib, "vmkit-hub-deps.pth").write_text(f"{deps}\n")
        # the dependencies' Jupyter data (Lab's static files, nbconvert's templates) and
        # configuration (their server extensions: nbgitpuller's among them)
        (target / "share").mkdir(exist_ok=True)
        (target / "share" / "jupyter").symlink_to(Path(sys.prefix) / "share" / "jupyter")
        shutil.copytree(Path(sys.prefix) / "etc" / "jupyter", target / "etc" / "jupyter",
                        symlinks=True)
        _run([sys.executable, "-m", "pip", "--python", target / "bin" / "python", "install",
              "--no-deps", "--no-index", "-q", wheel], env=env)
    else:
        _run([python, "-m", "venv", target], env=env)
        _run([target / "bin" / "pip", "install", "-q", "--disable-pip-version-check", "-c",
              ROOT / "constraints.txt", f"{wheel}[hub]"], env=env, timeout=900)
    # the kit's Lab settings for the students, as `make hub-env` writes them
    _run([target / "bin" / "python", "-m", "vmkit.labsetup"], env=env, cwd=base)
    _run(["chmod", "-R", "a+rX", target])
    return target


class Hub:
    """JupyterHub with hub/jupyterhub_config.py on free loopback ports, in its own session."""

    def __init__(self, base: Path, env_dir: Path, repo: Path):
        self.password = secrets.token_hex(8)
        self.users_env = env_dir
        self.data = base / "data"
        self.log_path = base / "jupyterhub.log"
        # the test's additions to the course configuration: Lab exposes its application
        # object (the test drives it) and checks for no news
        config = base / "jupyterhub_test_config.py"
        config.write_text(
            f"c = get_config()  # noqa\n"
            f"load_subconfig({str(HUB / 'jupyterhub_config.py')!r})  # noqa\n"
            "c.Spawner.args = ['--LabApp.expose_app_in_browser=True',\n"
            "    '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate']\n")
        for _ in range(3):
            self.port = free_port()
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)
                   and not k.startswith(("VMKIT_STUDENT", "JUPYTER"))}
            env.update({
                "VMKIT_HUB_PORT": str(self.port), "VMKIT_HUB_API_PORT": str(free_port()),
                "VMKIT_HUB_HUB_PORT": str(free_port()), "VMKIT_HUB_DATA": str(self.data),
                "VMKIT_HUB_USERS_ENV": str(env_dir), "VMKIT_HUB_STUDENTS": ",".join(STUDENTS),
                "VMKIT_HUB_PASSWORD": self.password, "VMKIT_HUB_COURSE_REPO": str(repo),
                "VMKIT_HUB_PROXY": str(PROXY)})
            self.log = open(self.log_path, "w")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=base, env=env,
                stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
            if self._wait():
                return
            self.log.close()
        raise RuntimeError("JupyterHub did not start:\n" + self.log_text())

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait(self, timeout: float = 90) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.base}/hub/api/", timeout=2) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"JupyterHub did not answer in {timeout} s:\n" + self.log_text())

    def log_text(self, tail: int | None = 6000) -> str:
        if not self.log.closed:
            self.log.flush()
        text = self.log_path.read_text(errors="replace")
        return text[-tail:] if tail else text

    def stop(self) -> None:
        """SIGINT to the hub's session, as Ctrl-C (the hub stops the proxy, the culler and the
        users' servers; JupyterHub 6 may hang on SIGTERM), then SIGTERM, then SIGKILL."""
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if not self.log.closed:
            self.log.close()


def pull_link(hub: Hub, repo: Path, path: str) -> str:
    """The nbgitpuller link that a course page would give the students (`vmkit course
    link`)."""
    out = _run([sys.executable, "-m", "vmkit.cli", "course", "link", path, "--hub", hub.base,
                "--repo", repo])
    return out.stdout.strip()


@pytest.fixture(scope="module")
def course():
    """(hub, course repository) with the students created; everything removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the hub test creates system users: run it as root (make hub-test)")
    require_chromium()
    if not PROXY.exists():
        pytest.skip(f"{PROXY.relative_to(ROOT)} is missing: `make hub-proxy` installs it")
    for name in STUDENTS:
        try:
            pwd.getpwnam(name)
            _run(["userdel", "-r", name], check=False)  # left over from an interrupted run
        except KeyError:
            pass
    base = Path(tempfile.mkdtemp(prefix="vmkit-hub-"))  # the students must reach it
    base.chmod(0o755)
    created, hub = [], None
    try:
        for name in STUDENTS:
            _run(["useradd", "--create-home", "--shell", "/bin/bash", name])
            created.append(name)
            Path(pwd.getpwnam(name).pw_dir).chmod(0o700)
        env_dir = users_env(base)
        repo = base / "course" / REPO
        _run([env_dir / "bin" / "vmkit", "course", "copy", repo], cwd=base,
             env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        git = ["git", "-C", repo, "-c", "user.name=Instructor", "-c", "user.email=i@example.org"]
        _run(["git", "init", "-q", "-b", "main", repo])
        _run([*git, "add", "-A"])
        _run([*git, "commit", "-q", "-m", "The course"])
        _run(["chmod", "-R", "a+rX", base / "course"])
        hub = Hub(base, env_dir, repo)
        yield hub, repo
    finally:
        if hub is not None:
            hub.stop()
        for name in created:
            _run(["pkill", "-KILL", "-u", name], check=False)  # anything the hub left
            _run(["userdel", "-r", name], check=False)
        shutil.rmtree(base, ignore_errors=True)


def login(page, hub: Hub, name: str, left) -> None:
    page.goto(f"{hub.base}/hub/login", timeout=left())
    page.fill("#username_input", name)
    page.fill("#password_input", hub.password)
    page.click("#login_submit")
    page.wait_for_url(re.compile(r".*/(hub/spawn-pending|hub/home|user)/.*"), timeout=left())


# the current notebook panel is the one at this path, its session made
CURRENT_IS = """(path) => {
  const app = window.jupyterapp;
  const panel = app && app.shell && app.shell.currentWidget;
  return !!panel && !!panel.context && panel.context.path === path
    && !!panel.sessionContext && !!panel.sessionContext.session;
}"""


def open_notebook(page, url: str, notebook: str, left) -> None:
    """Follow an nbgitpuller link until Lab shows ``notebook`` with its kernel ready."""
    page.goto(url, timeout=left())
    page.wait_for_url(re.compile(rf".*/lab/tree/{REPO}/{re.escape(notebook)}.*"),
                      timeout=left())
    # Lab restores the notebooks opened before: wait for this one to be current and ready
    page.wait_for_function(CURRENT_IS, arg=f"{REPO}/{notebook}", timeout=left(),
                           polling=250)
    page.wait_for_function(NOTEBOOK_READY, timeout=left(), polling=250)


def run_cell_source(page, source: str, left) -> str:
    """Append a code cell with ``source`` to the open notebook, run it; its text output."""
    page.evaluate("""(source) => {
      const app = window.jupyterapp;
      const nb = app.shell.currentWidget.content;
      nb.activeCellIndex = nb.widgets.length - 1;
      return app.commands.execute('notebook:insert-cell-below').then(() => {
        nb.activeCell.model.sharedModel.setSource(source);
        return app.commands.execute('notebook:run-cell');
      });
    }""", source)
    page.wait_for_function("""() => {
      const panel = window.jupyterapp.shell.currentWidget;
      const cell = panel.content.widgets[panel.content.widgets.length - 1];
      return cell.model.executionCount !== null
        && panel.sessionContext.session.kernel.status === 'idle';
    }""", timeout=left(), polling=250)
    return page.evaluate("""() => {
      const panel = window.jupyterapp.shell.currentWidget;
      const cell = panel.content.widgets[panel.content.widgets.length - 1];
      const out = [];
      for (let i = 0; i < cell.model.outputs.length; i++) {
        const o = cell.model.outputs.get(i).toJSON();
        out.push(o.text || (o.data && o.data['text/plain']) || (o.ename + ': ' + o.evalue));
      }
      return out.join('');
    }""")


def run_first_code_cell(page, left) -> str:
    """Run the open notebook's first code cell, as a student does; its text output."""
    index = page.evaluate("""() => {
      const app = window.jupyterapp;
      const nb = app.shell.currentWidget.content;
      const i = nb.widgets.findIndex(c => c.model.type === 'code');
      nb.activeCellIndex = i;
      app.commands.execute('notebook:run-cell');
      return i;
    }""")
    page.wait_for_function("""(i) => {
      const panel = window.jupyterapp.shell.currentWidget;
      return panel.content.widgets[i].model.executionCount !== null
        && panel.sessionContext.session.kernel.status === 'idle';
    }""", arg=index, timeout=left(), polling=250)
    return page.evaluate("""(i) => {
      const outputs = window.jupyterapp.shell.currentWidget.content.widgets[i].model.outputs;
      const out = [];
      for (let k = 0; k < outputs.length; k++) {
        const o = outputs.get(k).toJSON();
        out.push(o.text || (o.data && o.data['text/plain']) || (o.ename + ': ' + o.evalue));
      }
      return out.join('');
    }""", index)


def visit(context, hub: Hub, repo: Path, name: str, other: str) -> dict:
    """One student's first visit from the links; returns what they saw."""
    page = context.new_page()
    deadline = time.monotonic() + PAGE_BUDGET

    def left() -> float:
        return max(1000.0, (deadline - time.monotonic()) * 1000)

    seen = {}
    try:
        login(page, hub, name, left)
        open_notebook(page, pull_link(hub, repo, LECTURE), LECTURE, left)
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_function(ALL_CELLS_RUN, timeout=left(), polling=250)
        seen["lecture_errors"] = page.evaluate(CELL_ERRORS)
        outputs = page.locator(".jp-OutputArea-output")
        eip = outputs.locator(live(".vmkit-eip")).first
        step = outputs.locator(live("button"), has_text=STEP_TEXT).first
        eip.wait_for(state="visible", timeout=left())
        before = eip.inner_text()
        step.scroll_into_view_if_needed()
        step.click()
        page.wait_for_function(
            "([old]) => { const e = document.querySelector("
            "'.jp-OutputArea-output .jupyter-widgets .vmkit-eip, "
            ".jp-OutputArea-output .vmkit-eip.jupyter-widgets'); "
            "return !!e && e.textContent !== old; }", arg=[before], timeout=left(),
            polling=100)
        seen["stepped"] = (before, eip.inner_text())
        screenshot(page, f"hub-{name}-lecture")

        open_notebook(page, pull_link(hub, repo, EXERCISE), EXERCISE, left)
        # the exercise's own first cell: P = student_params(...); P
        seen["variant"] = run_first_code_cell(page, left)
        seen["whoami"] = run_cell_source(page, "import getpass; print(getpass.getuser())",
                                         left).strip()
        seen["vmkit_cmd"] = run_cell_source(
            page, "import shutil, vmkit; print(shutil.which('vmkit')); print(vmkit.__file__)",
            left).split()
        other_home = pwd.getpwnam(other).pw_dir
        seen["other_files"] = run_cell_source(
            page, f"import os\ntry:\n    print(os.listdir({other_home!r}))\n"
                  f"except OSError as e:\n    print(type(e).__name__)", left).strip()
        screenshot(page, f"hub-{name}-exercise")
        # the other student's server, through the hub: refused
        response = page.goto(f"{hub.base}/user/{other}/api/contents", timeout=left())
        seen["other_server"] = response.status if response else None
        seen["other_server_text"] = page.content()[:2000]
        return seen
    except Exception:
        screenshot(page, f"hub-{name}-failed")
        raise
    finally:
        page.close()


def test_two_students_on_the_hub(course):
    """Does each student, from nbgitpuller links, run a lecture and see their own variant of
    the homework, as their own system user, unable to read the other's files or server?"""
    from IPython.lib.pretty import pretty
    from playwright.sync_api import sync_playwright

    from vmkit.homework.variant import student_params

    hub, repo = course
    started = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=CHROMIUM_ARGS)
        try:
            results = {}
            for name, other in zip(STUDENTS, reversed(STUDENTS)):
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                try:
                    results[name] = visit(context, hub, repo, name, other)
                except Exception as e:
                    raise AssertionError(f"{name}: {e}\n--- hub log ---\n{hub.log_text()}")
                finally:
                    context.close()
        finally:
            browser.close()
    for name, other in zip(STUDENTS, reversed(STUDENTS)):
        seen = results[name]
        assert seen["lecture_errors"] == [], (name, seen["lecture_errors"])
        assert seen["stepped"][0] != seen["stepped"][1]
        assert seen["variant"] == pretty(student_params(ASSIGNMENT, name)), seen
        assert seen["whoami"] == name
        # the kit of the users' environment, on their PATH for a terminal too
        assert seen["vmkit_cmd"][0] == str(hub.users_env / "bin" / "vmkit"), seen
        assert seen["vmkit_cmd"][1].startswith(str(hub.users_env)), seen
        assert seen["other_files"] == "PermissionError", seen
        assert seen["other_server"] in (403, 404), seen["other_server_text"]
        # each student's copy of the course is theirs, in their own home
        home = Path(pwd.getpwnam(name).pw_dir)
        assert (home / REPO / EXERCISE).stat().st_uid == pwd.getpwnam(name).pw_uid
    a, b = (results[n]["variant"] for n in STUDENTS)
    assert a != b, "both students got the same variant"
    print(f"hub test: two students in {time.monotonic() - started:.0f} s")


def test_idle_culler_runs(course):
    """Is the idle culler a running service of the hub, allowed to stop idle servers?"""
    hub, _ = course
    deadline = time.monotonic() + 30
    # the culler's first round: it lists the users with its own token and role
    while not re.search(r"200 GET /hub/api/users\S* \(idle-culler@", hub.log_text(None)):
        assert time.monotonic() < deadline, hub.log_text()
        time.sleep(0.5)
    assert "Starting managed service idle-culler" in hub.log_text(None)
