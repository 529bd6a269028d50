"""A person's view of a notebook: JupyterLab in headless chromium runs it, and the Stepper steps.

Starts JupyterLab on a free port of 127.0.0.1 (one for the module's tests: a start takes
seconds) over temporary copies of the notebooks (outputs and saved widget state cleared, so
that only live widgets can match), opens one, runs all cells
(the app's "notebook:run-all-cells" command), waits for the widget, clicks its "Step" button
and checks that the EIP display and the ring picture change.

The hooks, agreed with the lecture notebooks' Stepper widget (the first of each is used):
- a button whose own text is exactly ``Step`` (an icon beside it is fine; "Step ×N" is not it);
- an element with class ``vmkit-eip`` whose text shows EIP in hex and changes with a step
  (``widget.add_class("vmkit-eip")``, or ``<span class="vmkit-eip">`` inside an HTML widget);
- an element with class ``vmkit-rings`` holding the ring picture (an ``<svg>`` or ``<img>``)
  whose HTML changes with the step.

This module drives tests/data/smoke.ipynb, a stand-in Stepper with the same hooks (and an
IntText counting the steps), which proves the harness. The lecture notebooks' own checks (01's
Stepper and watchpoint, 05's VM-exit view) use the helpers here but run in
tests/browser/test_browser_fit.py, on the page where that module has already run the notebook:
a lecture notebook runs once in JupyterLab for all its browser checks.
Screenshots: build/test-artifacts/browser-<notebook>.png (and -failed.png on failure).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from browser_util import chromium_context, local_only, require_chromium, screenshot
from vmkit import nbtools

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "tests" / "data" / "smoke.ipynb"
JUPYTER = Path(sys.executable).parent / "jupyter"

SERVER_TIMEOUT = 60  # s for JupyterLab to answer
UI_BUDGET = 90  # s for the page, the kernel, all cells and the click together
STEP_TIMEOUT = 15_000  # ms at most for one click to show
STEP_TEXT = re.compile(r"^\s*Step\s*$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cleared_copy(src: Path, dest_dir: Path) -> Path:
    """``src`` without outputs or saved widget state, in ``dest_dir``."""
    nb = nbformat.read(src, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("widgets", None)
    dest = dest_dir / src.name
    nbtools.write_notebook(nb, dest)
    return dest


class JupyterLab:
    """``jupyter lab`` on 127.0.0.1 in its own session, with every Jupyter folder temporary."""

    def __init__(self, root_dir: Path, work: Path):
        self.token = secrets.token_hex(16)
        self.log_path = work / "jupyterlab.log"
        settings = self.settings_dir = work / "settings"
        # no news or update checks: nothing to fetch, no notification over the notebook
        notification = settings / "@jupyterlab" / "apputils-extension"
        notification.mkdir(parents=True, exist_ok=True)
        (notification / "notification.jupyterlab-settings").write_text(
            '{"checkForUpdates": false, "fetchNews": "false"}')
        self.env = {
            **os.environ,
            **nbtools.KERNEL_ENV,
            "JUPYTER_CONFIG_DIR": str(work / "config"),
            # the test's own configuration first: in a venv Jupyter otherwise prefers the
            # venv's (where `make venv` wrote the student's Lab settings)
            "JUPYTER_PREFER_ENV_PATH": "0",
            "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
            "IPYTHONDIR": str(work / "ipython"),
        }
        self.args = [
            "--no-browser", "--allow-root", "--ip=127.0.0.1", "--port-retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root_dir}",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run commands
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={work / 'workspaces'}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        self.root_dir = root_dir
        self.log = open(self.log_path, "w")
        self.proc = None
        for _ in range(3):  # another program may take the free port before the server does
            self.port = free_port()
            self.base = f"http://127.0.0.1:{self.port}"
            self.proc = subprocess.Popen(
                [str(JUPYTER), "lab", f"--port={self.port}", *self.args],
                cwd=root_dir, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
            if self._wait():
                return
        raise RuntimeError("jupyter lab did not start:\n" + self.log_text())

    def _wait(self) -> bool:
        """True once the server answers; False if it exited; raises after SERVER_TIMEOUT."""
        deadline = time.monotonic() + SERVER_TIMEOUT
        url = f"{self.base}/api/status?token={self.token}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"jupyter lab did not answer in {SERVER_TIMEOUT} s:\n"
                           + self.log_text())

    def url(self, notebook: str) -> str:
        return f"{self.base}/lab/tree/{notebook}?token={self.token}&reset"

    def shut_down_kernels(self) -> None:
        """Shut the server's kernels down (DELETE of each session): a notebook done with
        leaves an idle kernel holding its live widgets, which would take memory and CPU from
        the next."""
        url = f"{self.base}/api/sessions"
        with urllib.request.urlopen(f"{url}?token={self.token}", timeout=10) as r:
            sessions = json.load(r)
        for session in sessions:
            request = urllib.request.Request(f"{url}/{session['id']}?token={self.token}",
                                             method="DELETE")
            urllib.request.urlopen(request, timeout=30).close()

    def log_text(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 10 s; on SIGTERM the server
        shuts its kernels down."""
        if self.proc is not None and self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
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


# JupyterLab's current notebook is open, its kernel connected and idle
NOTEBOOK_READY = """() => {
  const app = window.jupyterapp;
  const panel = app && app.shell && app.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext || !panel.context.isReady) return false;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}"""

# every code cell has run and the kernel is idle again
ALL_CELLS_RUN = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  const kernel = panel.sessionContext.session.kernel;
  return cells.every(c => c.model.executionCount !== null) && kernel.status === 'idle';
}"""

# the text of code cells' error outputs, if any
CELL_ERRORS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const errors = [];
  for (const cell of panel.content.widgets) {
    if (cell.model.type !== 'code') continue;
    const outputs = cell.model.outputs;
    for (let i = 0; i < outputs.length; i++) {
      const out = outputs.get(i).toJSON();
      if (out.output_type === 'error') errors.push(out.ename + ': ' + out.evalue);
    }
  }
  return errors;
}"""


def live(selector: str) -> str:
    """``selector`` in a live widget (an ipywidgets view), not in static HTML output."""
    return f"{selector}.jupyter-widgets, .jupyter-widgets {selector}"


def changed(page, read, old, timeout_ms: float, what: str) -> None:
    """Wait until ``read()`` differs from ``old``; fail after ``timeout_ms``."""
    deadline = time.monotonic() + timeout_ms / 1000
    while read() == old:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not change within {timeout_ms / 1000:.0f} s "
                                 f"of clicking Step (still {str(old)[:200]!r})")
        page.wait_for_timeout(100)


def budget(seconds: float):
    """``left(at_most)``: the milliseconds left of ``seconds`` from now (at least 1 s, at most
    ``at_most``), for the waits that share one budget."""
    deadline = time.monotonic() + seconds

    def left(at_most: float = seconds * 1000) -> float:
        return max(1000.0, min(at_most, (deadline - time.monotonic()) * 1000))

    return left


def open_and_run_all(page, lab: JupyterLab, notebook: str, left) -> None:
    """Open ``notebook`` in ``page``, wait for its kernel, run all its cells and wait until
    every one has run; no cell may raise. ``left``: a :func:`budget`."""
    page.goto(lab.url(notebook), timeout=left())
    page.wait_for_function(NOTEBOOK_READY, timeout=left(), polling=250)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(ALL_CELLS_RUN, timeout=left(), polling=250)
    errors = page.evaluate(CELL_ERRORS)
    assert errors == [], f"cells raised: {errors}"


def run_stepper(page, lab: JupyterLab, notebook: str, counter: str | None = None) -> dict:
    """Open ``notebook``, run all cells, click Step once; returns what was seen before/after.

    ``counter``: the selector of an input whose value is recorded too (the smoke IntText).
    Every wait shares one budget of UI_BUDGET seconds.
    """
    left = budget(UI_BUDGET)
    open_and_run_all(page, lab, notebook, left)
    return step_once(page, left, counter)


def step_once(page, left, counter: str | None = None) -> dict:
    """In a notebook whose cells have run: click the first Stepper's Step once; returns what
    was seen before/after (``counter``: see :func:`run_stepper`)."""
    outputs = page.locator(".jp-OutputArea-output")
    # the button's own text is "Step" (an icon beside it is fine: Font Awesome's glyph comes
    # from CSS and is not part of the text); "Step ×N" is another button
    step = outputs.locator(live("button"), has_text=STEP_TEXT).first
    eip = outputs.locator(live(".vmkit-eip")).first
    rings = outputs.locator(live(".vmkit-rings")).first
    step.wait_for(state="visible", timeout=left())
    eip.wait_for(state="visible", timeout=left())
    rings.wait_for(state="visible", timeout=left())
    step.scroll_into_view_if_needed()
    # the Step button at the top of the window: the EIP and the picture under it on screen too
    # (JupyterLab does not render the text of cells out of view)
    step.evaluate("e => e.scrollIntoView({block: 'start'})")

    def look() -> dict:
        seen = {"eip": eip.inner_text().strip(), "rings": rings.inner_html()}
        if counter:
            seen["counter"] = outputs.locator(counter).first.input_value()
        return seen

    before = look()
    assert re.search(r"[0-9a-fA-F]{4,}", before["eip"]), f".vmkit-eip shows {before['eip']!r}"
    assert rings.locator("svg, img").count() > 0, ".vmkit-rings holds no <svg> or <img>"

    step.click()
    # Poll through the locators, not element handles: a widget may redraw by replacing its
    # element. The EIP and the picture come in separate comm messages: each gets its time.
    changed(page, lambda: eip.inner_text().strip(), before["eip"], left(STEP_TIMEOUT), "EIP")
    changed(page, rings.inner_html, before["rings"], left(STEP_TIMEOUT), "ring picture")
    if counter:
        changed(page, outputs.locator(counter).first.input_value, before["counter"],
                left(STEP_TIMEOUT), counter)
    return {"before": before, "after": look()}


@pytest.fixture(scope="module")
def module_lab(tmp_path_factory):
    """One JupyterLab for the module's tests, started when the first one asks (a start
    takes seconds); stopped after the last."""
    work = tmp_path_factory.mktemp("lab")
    root = work / "notebooks"
    root.mkdir()
    labs = []

    def get() -> JupyterLab:
        if not labs:
            labs.append(JupyterLab(root, work))
        return labs[0]

    yield get
    for lab in labs:
        lab.stop()


@pytest.fixture
def lab_for(module_lab):
    """A cleared copy of a notebook in the module's JupyterLab; after the test, the kernels
    are shut down."""
    started = []

    def start(src: Path) -> tuple[JupyterLab, str]:
        lab = module_lab()
        started.append(lab)
        return lab, cleared_copy(src, lab.root_dir).name

    yield start
    for lab in started:
        lab.shut_down_kernels()


def watch_hit(page) -> dict:
    """In the first Stepper (after its Step): open the Watchpoints panel, watch the physical
    page-table entry at 0x00201000 (the one that maps the user program at 0x00400000), press
    Run and wait for the hit: the status line and the hits table say who wrote."""
    deadline = time.monotonic() + UI_BUDGET

    def left(at_most: float = STEP_TIMEOUT) -> float:
        return max(1000.0, min(at_most, (deadline - time.monotonic()) * 1000))

    outputs = page.locator(".jp-OutputArea-output")
    stepper = outputs.locator(live(".vmkit-stepper-live")).first
    panels = stepper.locator(".vmkit-stepper-panels").first
    # the closed accordion's header opens it on its first tab, Watchpoints
    panels.get_by_text("Debugger: watchpoints", exact=False).first.click(timeout=left())
    address = panels.locator(".vmkit-watch-address input").first
    address.wait_for(state="visible", timeout=left())
    address.fill("0x201000")
    panels.locator(".vmkit-watch-physical input").first.check(timeout=left())
    panels.locator(".vmkit-watch-button").first.click(timeout=left())
    points = panels.locator(".vmkit-watch-hits").first
    page.wait_for_function("() => [...document.querySelectorAll('.vmkit-stepper-panels')]"
                           ".some(e => e.innerText.includes('watchpoint 1 (write)'))",
                           timeout=left(), polling=100)
    status = stepper.locator(".vmkit-status").first
    # read the status line before pressing Run: a fast hit can change it before the click returns
    before = status.inner_text()
    stepper.locator("button", has_text=re.compile(r"^\s*Run\s*$")).first.click(timeout=left())
    text = _wait_for_change(page, status.inner_text, before, left(),
                            "the status line after Run with a watchpoint")
    while "watchpoint" not in text and time.monotonic() < deadline:
        page.wait_for_timeout(100)        # "running…" first
        text = status.inner_text()
    points.scroll_into_view_if_needed(timeout=left())
    return {"status": text, "hits": points.inner_text()}


def drive(lab: JupyterLab, notebook: str, counter: str | None = None) -> dict:
    network = []
    with chromium_context(viewport={"width": 1400, "height": 1000}) as context:
        # only the local server: anything else (news, CDNs) would hang or leak
        local_only(context, lab.base, network)
        page = context.new_page()
        shot = f"browser-{Path(notebook).stem}"
        try:
            seen = run_stepper(page, lab, notebook, counter)
        except BaseException:
            print("screenshot:", screenshot(page, shot + "-failed"))
            print("jupyter lab log:\n" + lab.log_text())
            raise
        screenshot(page, shot)
    seen["network"] = network
    return seen


def test_smoke_stepper(lab_for):
    require_chromium()
    lab, notebook = lab_for(SMOKE)
    seen = drive(lab, notebook, counter=".smoke-steps input")
    # the notebook's last cell has already stepped once
    assert (seen["before"]["eip"], seen["after"]["eip"]) == ("EIP 0x00001002", "EIP 0x00001004")
    assert (seen["before"]["counter"], seen["after"]["counter"]) == ("1", "2")
    assert seen["before"]["rings"] != seen["after"]["rings"]
    assert seen["network"] == []


def check_lecture_01(seen: dict) -> None:
    """What notebook 01's Stepper must show after Step and a watchpoint's Run (``seen``: what
    :func:`step_once` returned, with :func:`watch_hit`'s answer as ``then``); the test runs in
    tests/browser/test_browser_fit.py, on the page the fit check has run the notebook in."""
    assert seen["before"]["eip"] != seen["after"]["eip"]
    assert seen["before"]["rings"] != seen["after"]["rings"]
    # a watchpoint hit: the kernel clears the new page table (rep stosd) before mapping
    hit = seen["then"]
    assert "watchpoint 1: 0xaaaaaaaa → 0x00000000, written by guest" in hit["status"], hit
    assert "guest: rep stosd" in hit["hits"], hit


# ---- notebook 05: the VM-exit view -------------------------------------------------------------
EXITS_TEXT = re.compile(r"([\d,]+) VM exits .* of ([\d,]+) cycles", re.S)


def _exits_and_cycles(text: str) -> tuple[int, int]:
    m = EXITS_TEXT.search(text)
    assert m, f".vmkit-exits-total shows {text!r}"
    return int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))


def _wait_for_change(page, read, old, timeout_ms: float, what: str):
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        now = read()
        if now != old:
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not change within {timeout_ms / 1000:.0f} s "
                                 f"(still {str(old)[:200]!r})")
        page.wait_for_timeout(100)


def exit_view_changes(page, left) -> dict:
    """In notebook 05, its cells run: tick "CR3-load exiting" in the VmExitView (the guest
    reruns: more exits, and the view says so) and type an exit cost into the box beside the
    slider (re-priced: same exits, other cycles), then one out of range (refused, with a
    message; the cost and the box stay). Returns (exits, cycles) before and after each.
    ``left``: a :func:`budget`."""
    outputs = page.locator(".jp-OutputArea-output")
    total = outputs.locator(live(".vmkit-exits-total")).first
    cr3 = outputs.locator(live(".vmkit-ctl-cr3_load_exiting")).first.locator("input")
    readout = outputs.locator(live(".vmkit-exit-cost")).first.locator("input")
    total.wait_for(state="visible", timeout=left())
    cr3.scroll_into_view_if_needed(timeout=left())
    seen = {"start": _exits_and_cycles(total.inner_text())}
    assert not cr3.is_checked(), "with EPT, CR3-load exiting starts off"

    text = total.inner_text()
    cr3.check(timeout=left(STEP_TIMEOUT))            # the guest runs again with the control on
    text = _wait_for_change(page, total.inner_text, text, left(STEP_TIMEOUT),
                            "the exit count after ticking CR3-load exiting")
    seen["cr3"] = _exits_and_cycles(text)
    message = outputs.locator(live(".vmkit-exits-message")).first
    message.wait_for(state="visible", timeout=left(STEP_TIMEOUT))
    seen["cr3_message"] = message.inner_text()      # what the control changed, in words

    readout.click(timeout=left(STEP_TIMEOUT))        # the cost box: type a value
    page.keyboard.press("Control+A")
    page.keyboard.type("500")
    page.keyboard.press("Enter")
    text = _wait_for_change(page, total.inner_text, text, left(STEP_TIMEOUT),
                            "the cycles after setting the exit cost to 500")
    seen["cost"] = _exits_and_cycles(text)
    seen["cost_text"] = text

    readout.click(timeout=left(STEP_TIMEOUT))        # out of range: refused, not clamped
    page.keyboard.press("Control+A")
    page.keyboard.type("99999")
    page.keyboard.press("Enter")
    refused = outputs.locator(live(".vmkit-exits-refused")).first
    refused.wait_for(state="visible", timeout=left(STEP_TIMEOUT))
    seen["refused"] = refused.inner_text()
    seen["after_refusal"] = total.inner_text()
    seen["box_after_refusal"] = readout.input_value()
    return seen


def check_exit_view(seen: dict) -> None:
    """What notebook 05's VmExitView must show (``seen``: what :func:`exit_view_changes`
    returned); the test runs in tests/browser/test_browser_fit.py, on the page the fit check
    has run the notebook in."""
    (exits0, cycles0), (exits1, cycles1), (exits2, cycles2) = \
        seen["start"], seen["cr3"], seen["cost"]
    assert exits1 > exits0, "CR3-load exiting adds exits (ctxswitch loads CR3 on every switch)"
    assert cycles1 > cycles0
    assert exits2 == exits1, "the slider re-prices the same run"
    assert cycles2 < cycles1 and "at 500 cycles per exit" in seen["cost_text"]
    assert seen["cr3_message"].startswith(f"CR3-load exiting on: VM exits {exits0:,} → "
                                          f"{exits1:,}")
    assert "99,999" in seen["refused"] and "between 50 and 20,000" in seen["refused"]
    assert seen["after_refusal"] == seen["cost_text"] and seen["box_after_refusal"] == "500"
