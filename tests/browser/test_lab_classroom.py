"""The kit's JupyterLab settings (vmkit.labsetup), as a student and an instructor meet them.

- Does a saved notebook reopen with its widgets shown? JupyterLab in headless chromium, with
  the settings `make lab` writes, runs notebooks/01 (a Stepper), saves it, closes it (reopened
  while its kernel runs, the Stepper is live), shuts its kernel down and opens it again: no
  "model not found" anywhere, the Stepper's ring picture is there. Screenshot: build/test-artifacts/lab-reopened-<notebook>.png.
- Does a save keep the static picture where the widget state is not saved? The pre-save hook
  of vmkit.labsetup, through JupyterLab's own contents API.
- Does the student's Lab show no nbgrader tools, and the instructor's show them?

The student's checks share one JupyterLab (a start takes seconds), each with its notebook in a
folder of its own and the kernels shut down after it; the instructor's Lab is another.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from browser_util import chromium_browser, chromium_context, require_chromium, screenshot
from test_browser import (ALL_CELLS_RUN, CELL_ERRORS, NOTEBOOK_READY, STEP_TEXT, STEP_TIMEOUT,
                          UI_BUDGET, JupyterLab, cleared_copy, live)
from vmkit import labsetup, nbtools
from vmkit.widgets.static import OFFLINE_NOTE

ROOT = Path(__file__).resolve().parents[2]
LECTURE_01 = ROOT / "notebooks" / "01-machine-and-rings.ipynb"
SMOKE = ROOT / "tests" / "data" / "smoke.ipynb"
MISSING = "model not found"


def start_lab(work: Path, instructor: bool = False) -> JupyterLab:
    """JupyterLab over ``work``/notebooks with the kit's settings (vmkit.labsetup) written into
    its (temporary, user-level) Jupyter configuration folder."""
    root = work / "notebooks"
    root.mkdir(parents=True)
    labsetup.install(work / "config", instructor=instructor)
    return JupyterLab(root, work)


def copy_in(lab: JupyterLab, src: Path, folder: str) -> str:
    """A cleared copy of ``src`` in a folder of its own in ``lab``; its path there."""
    (lab.root_dir / folder).mkdir()
    return f"{folder}/{cleared_copy(src, lab.root_dir / folder).name}"


def save_state_setting(lab: JupyterLab, on: bool) -> None:
    """The user's "Save Jupyter widget state" setting: the kit's (on) or turned off by the
    user in their settings (the server reads them when a page loads)."""
    user = lab.settings_dir / "@jupyter-widgets" / "jupyterlab-manager"
    if on:
        (user / "plugin.jupyterlab-settings").unlink(missing_ok=True)
    else:
        user.mkdir(parents=True, exist_ok=True)
        (user / "plugin.jupyterlab-settings").write_text('{"saveState": false}')


@pytest.fixture(scope="module")
def browser():
    """One chromium for the module's checks, each in a fresh context of its own."""
    require_chromium()
    with chromium_browser() as b:
        yield b


@pytest.fixture(scope="module")
def student_lab(tmp_path_factory):
    """One student's JupyterLab (the kit's settings, as `make lab` writes them) for the
    module's tests, started when the first one asks; stopped after the last."""
    labs = []

    def get() -> JupyterLab:
        if not labs:
            labs.append(start_lab(tmp_path_factory.mktemp("student")))
        return labs[0]

    yield get
    for lab in labs:
        lab.stop()


@pytest.fixture
def student(student_lab):
    """The student's JupyterLab; after the test, its kernels are shut down and the kit's
    settings are back."""
    lab = student_lab()
    yield lab
    lab.shut_down_kernels()
    save_state_setting(lab, True)


def offline_page(context, lab: JupyterLab):
    local = (lab.base + "/", "data:", "blob:")
    context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(local)
                  else r.abort())
    return context.new_page()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


# Reopened without a kernel: the kit's top-level widgets (.vmkit-live not inside another),
# their visible notes, visible controls and visible broken-link icons (::before content).
OFFLINE_LOOK = """() => {
  const shown = e => { const r = e.getBoundingClientRect(); const s = getComputedStyle(e);
                       return r.width > 0 && r.height > 0 && s.visibility !== 'hidden'; };
  const roots = [...document.querySelectorAll('.jp-OutputArea-output .vmkit-live')]
    .filter(e => !e.parentElement.closest('.vmkit-live'));
  let notes = 0, controls = 0, icons = 0;
  for (const root of roots) {
    notes += [...root.querySelectorAll('.vmkit-offline-note')].filter(shown).length;
    controls += [...root.querySelectorAll('button, input, select')].filter(shown).length;
    for (const e of [root, ...root.querySelectorAll('.jupyter-widgets-disconnected')]) {
      const c = getComputedStyle(e, '::before').content;
      if (c && c !== 'none' && c !== 'normal') icons += 1;
    }
  }
  return {widgets: roots.length, notes, controls, icons};
}"""

# the current notebook's model has been written to disk
SAVED = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  return !!panel && !!panel.context && !panel.context.model.dirty;
}"""

# nbgrader's Lab tools on the page: its main menu, its notebook toolbar button, its
# "Create Assignment" side panel
NBGRADER_TOOLS = """() => {
  const labels = [...document.querySelectorAll('.lm-MenuBar-itemLabel')].map(e => e.textContent);
  const buttons = [...document.querySelectorAll('.jp-NotebookPanel-toolbar .jp-ToolbarButton')]
    .map(e => e.textContent.trim());
  const right = document.querySelector('.jp-SideBar.jp-mod-right');
  const config = JSON.parse(document.getElementById('jupyter-config-data').textContent);
  return {menu: labels.includes('Nbgrader'), validate: buttons.includes('Validate'),
          create: !!right && right.textContent.includes('Create Assignment'),
          disabled: config.disabledExtensions || []};
}"""


@pytest.mark.parametrize("save_state", [True, False], ids=["state-saved", "state-off"])
def test_reopened_notebook_shows_its_widgets(student, browser, save_state):
    """Run, save, close, kernel shut down, reopen: is every widget shown, none "not found"?
    With the kit's settings the widgets come back from their saved state (and, reopened while
    the kernel still runs, live: Step steps); with saveState turned off by the user, each
    shows its static picture instead."""
    require_chromium()
    if not LECTURE_01.exists():
        pytest.skip(f"{LECTURE_01.relative_to(ROOT)} is missing")
    lab = student
    save_state_setting(lab, save_state)
    name = copy_in(lab, LECTURE_01, "state-saved" if save_state else "state-off")
    shot = f"lab-reopened-{Path(name).stem}" + ("" if save_state else "-without-state")
    with chromium_context(browser, viewport={"width": 1400, "height": 1000}) as context:
        page = offline_page(context, lab)
        deadline = time.monotonic() + 2 * UI_BUDGET

        def left() -> float:
            return max(1000.0, (deadline - time.monotonic()) * 1000)

        try:
            page.goto(lab.url(name), timeout=left())
            page.wait_for_function(NOTEBOOK_READY, timeout=left(), polling=250)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_function(ALL_CELLS_RUN, timeout=left(), polling=250)
            assert page.evaluate(CELL_ERRORS) == []
            outputs = page.locator(".jp-OutputArea-output")
            outputs.locator(live(".vmkit-rings")).first.locator("svg").first.wait_for(
                state="visible", timeout=left())
            live_views = page.locator(".jp-OutputArea-output .jupyter-widgets").count()

            page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
            page.wait_for_function(SAVED, timeout=left(), polling=250)
            if save_state:
                # closed with its kernel still running, it reopens live: Step still steps
                page.evaluate("window.jupyterapp.shell.currentWidget.dispose()")
                page.goto(lab.url(name), timeout=left())
                page.wait_for_function(NOTEBOOK_READY, timeout=left(), polling=250)
                eip = outputs.locator(live(".vmkit-eip")).first
                step = outputs.locator(live("button"), has_text=STEP_TEXT).first
                eip.wait_for(state="visible", timeout=left())
                before = eip.inner_text()
                step.scroll_into_view_if_needed()
                step.click()
                page.wait_for_function(
                    "([sel, old]) => { const e = document.querySelector(sel); "
                    "return !!e && e.textContent !== old; }",
                    arg=[".jp-OutputArea-output .jupyter-widgets .vmkit-eip, "
                         ".jp-OutputArea-output .vmkit-eip.jupyter-widgets", before],
                    timeout=min(left(), STEP_TIMEOUT), polling=100)
                page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
                page.wait_for_function(SAVED, timeout=left(), polling=250)
            page.evaluate("""async () => {
              const panel = window.jupyterapp.shell.currentWidget;
              await panel.sessionContext.shutdown();
              panel.dispose();
            }""")
            page.wait_for_timeout(500)

            # what the save wrote: the widgets' state and a picture beside each view, or
            # (no state) the picture alone
            saved = nbformat.read(lab.root_dir / name, as_version=4)
            state = saved.metadata.get("widgets", {}).get(nbtools.WIDGET_STATE, {})
            shown = [o for c in saved.cells for o in c.get("outputs", ())
                     if "vmkit-stepper" in o.get("data", {}).get("text/html", "")]
            assert shown, "the Stepper's output carries no static picture (text/html)"
            views = [o for c in saved.cells for o in c.get("outputs", ())
                     if nbtools.WIDGET_VIEW in o.get("data", {})]
            if save_state:
                assert state.get("state"), "the save kept no widget state"
                assert views, "no widget view was saved"
                assert all(o["data"][nbtools.WIDGET_VIEW]["model_id"] in state["state"]
                           for o in views)
            else:
                assert not state.get("state") and views == [], \
                    "without saved state, the views should have been stored as pictures"

            page.goto(lab.url(name), timeout=left())
            page.wait_for_function(NOTEBOOK_READY, timeout=left(), polling=250)
            rings = outputs.locator(".vmkit-rings svg").first
            rings.wait_for(state="visible", timeout=left())
            # every saved view has rendered (or failed): nothing is still loading
            page.wait_for_function(
                "() => ![...document.querySelectorAll('.jp-OutputArea-output')]"
                ".some(e => e.textContent.includes('Loading widget'))",
                timeout=left(), polling=250)
            page.wait_for_timeout(1000)
            text = page.evaluate("document.body.innerText")
            assert MISSING not in text, "a widget shows 'Error displaying widget: " \
                                        "model not found' after reopening"
            reopened_views = page.locator(".jp-OutputArea-output .jupyter-widgets").count()
            if save_state:
                assert reopened_views >= min(live_views, 1)
                # no kernel behind them: each kit widget is one picture and one line on
                # how to make it live, no controls, no broken-link icons
                seen = page.evaluate(OFFLINE_LOOK)
                assert seen["widgets"] > 0, seen
                assert seen["notes"] == seen["widgets"], seen
                assert seen["controls"] == 0, seen
                assert seen["icons"] == 0, seen
            else:  # the static forms: HTML, no widget views
                assert reopened_views == 0
                assert page.locator(".jp-OutputArea-output .vmkit-stepper").count() > 0
            rings.scroll_into_view_if_needed()
            box = rings.bounding_box()
            assert box and box["width"] > 100 and box["height"] > 100, box
            if save_state:
                note = outputs.locator(".vmkit-offline-note").first
                assert note.is_visible() and note.inner_text().strip() == OFFLINE_NOTE
            page.screenshot(path=str(screenshot_path(shot)))
        except BaseException:
            print("screenshot:", screenshot(page, shot + "-failed"))
            print("jupyter lab log:\n" + lab.log_text())
            raise


def screenshot_path(name: str) -> Path:
    from browser_util import ARTIFACTS

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / f"{name}.png"


def _put(lab: JupyterLab, path: str, nb: dict) -> dict:
    body = json.dumps({"type": "notebook", "format": "json", "content": nb}).encode()
    url = f"{lab.base}/api/contents/{path}?token={lab.token}"
    request = urllib.request.Request(url, data=body, method="PUT",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status in (200, 201)
    return json.loads((lab.root_dir / path).read_text(encoding="utf-8"))


def _widget_output(model_id: str, picture: bool = True) -> dict:
    data = {nbtools.WIDGET_VIEW: {"model_id": model_id, "version_major": 2,
                                  "version_minor": 0},
            "text/plain": "Stepper(...)"}
    if picture:
        data["text/html"] = '<div class="vmkit-stepper"><svg></svg></div>'
    return {"output_type": "display_data", "data": data, "metadata": {}}


def test_save_keeps_the_picture_where_no_widget_state_is_saved(student):
    """Does JupyterLab's save (through the kit's pre-save hook) store a stateless widget view
    as its static picture, and leave views with saved state and views without a picture?"""
    lab = student
    try:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell("stepper", outputs=[
            nbformat.from_dict(_widget_output("a" * 32)),                 # no state: picture
            nbformat.from_dict(_widget_output("b" * 32)),                 # state saved: kept
            nbformat.from_dict(_widget_output("c" * 32, picture=False)),  # nothing else: kept
        ])]
        nb.metadata["widgets"] = {nbtools.WIDGET_STATE: {
            "version_major": 2, "version_minor": 0,
            "state": {"b" * 32: {"model_name": "BoxModel", "model_module":
                                 "@jupyter-widgets/controls", "model_module_version": "2.0.0",
                                 "state": {}}}}}
        saved = _put(lab, "hook.ipynb", json.loads(nbformat.writes(nb)))
        a, b, c = saved["cells"][0]["outputs"]
        assert nbtools.WIDGET_VIEW not in a["data"] and "text/html" in a["data"]
        assert nbtools.WIDGET_VIEW in b["data"] and nbtools.WIDGET_VIEW in c["data"]
        plain = _put(lab, "plain.txt.ipynb", json.loads(nbformat.writes(
            nbformat.v4.new_notebook())))
        assert plain["cells"] == []
    except BaseException:
        print("jupyter lab log:\n" + lab.log_text())
        raise


def test_drop_orphan_widget_views():
    """Which views does the hook drop (no JupyterLab)? Only stateless ones with a picture."""
    nb = {"metadata": {"widgets": {nbtools.WIDGET_STATE: {"state": {"b": {}}}}},
          "cells": [{"cell_type": "code", "outputs": [
              _widget_output("a"), _widget_output("b"), _widget_output("c", picture=False),
              {"output_type": "stream", "name": "stdout", "text": "x"}]},
                    {"cell_type": "markdown", "source": ""}]}
    assert nbtools.drop_orphan_widget_views(nb) == 1
    kinds = [sorted(o.get("data", {})) for o in nb["cells"][0]["outputs"]]
    assert kinds[0] == ["text/html", "text/plain"]
    assert nbtools.WIDGET_VIEW in kinds[1] and nbtools.WIDGET_VIEW in kinds[2]
    del nb["metadata"]["widgets"]
    assert nbtools.drop_orphan_widget_views(nb) == 1  # now "b" has no state either


def test_install_writes_settings(tmp_path):
    """What does vmkit.labsetup write, for the student and for the instructor?"""
    paths = labsetup.install(tmp_path)
    assert {p.relative_to(tmp_path).as_posix() for p in paths} == {
        "labconfig/default_setting_overrides.d/vmkit.json",
        "labconfig/page_config.d/vmkit.json",
        "jupyter_server_config.json"}
    overrides, page, server = (json.loads(p.read_text()) for p in paths)
    assert overrides == {"@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True},
                         "@jupyterlab/apputils-extension:notification": {
                             "fetchNews": "false", "checkForUpdates": False},
                         labsetup.RISE_PLUGIN: labsetup.RISE_SETTINGS}
    assert page == {"disabledExtensions": {"@jupyter/nbgrader": True}}
    server = server["ServerApp"]["jpserver_extensions"]
    assert server.pop("vmkit.labsetup") is True
    assert set(server.values()) == {False} and "nbgrader.server_extensions.formgrader" in server
    # the server settings are merged into what the file held
    paths[2].write_text(json.dumps({"ServerApp": {"jpserver_extensions": {"other": True},
                                                  "port": 9999}}))
    labsetup.install(tmp_path, instructor=True)
    assert json.loads(paths[2].read_text())["ServerApp"]["port"] == 9999
    assert json.loads(paths[1].read_text()) == {"disabledExtensions": {"@jupyter/nbgrader": False}}
    server = json.loads(paths[2].read_text())["ServerApp"]["jpserver_extensions"]
    assert set(server.values()) == {True} and "other" in server
    paths[2].write_text("{oops")
    assert labsetup.main(["--config-dir", str(tmp_path)]) == 1
    assert labsetup.main(["--config-dir", str(tmp_path / "x" / "y")]) == 0
    assert (tmp_path / "x" / "y" / "labconfig" / "page_config.d" / "vmkit.json").is_file()


@pytest.mark.parametrize("instructor", [False, True], ids=["student", "instructor"])
def test_instructor_tools_only_for_the_instructor(request, tmp_path, browser, instructor):
    """Does the student's Lab show no nbgrader menu or Validate button (and no formgrader
    page), while the instructor's (`make lab NBGRADER=1`) shows them?"""
    require_chromium()
    pytest.importorskip("nbgrader")
    # the student's: the module's student Lab; the instructor's: one of its own
    lab = start_lab(tmp_path, instructor=True) if instructor else \
        request.getfixturevalue("student")
    name = copy_in(lab, SMOKE, "tools")
    who = "instructor" if instructor else "student"
    try:
        with chromium_context(browser, viewport={"width": 1400, "height": 1000}) as context:
            page = offline_page(context, lab)
            try:
                page.goto(lab.url(name), timeout=UI_BUDGET * 1000)
                page.wait_for_function(NOTEBOOK_READY, timeout=UI_BUDGET * 1000, polling=250)
                if instructor:
                    page.wait_for_function(f"() => ({NBGRADER_TOOLS})().menu", timeout=30_000)
                else:
                    page.wait_for_timeout(2000)  # every plugin has had its chance
                tools = page.evaluate(NBGRADER_TOOLS)
                page.screenshot(path=str(screenshot_path(f"lab-{who}-toolbar")))
            except BaseException:
                print("screenshot:", screenshot(page, f"lab-{who}-failed"))
                print("jupyter lab log:\n" + lab.log_text())
                raise
        formgrader = http_status(f"{lab.base}/formgrader?token={lab.token}")
    finally:
        if instructor:
            lab.stop()
    if instructor:
        assert tools["menu"] and tools["validate"] and tools["create"], tools
        assert "@jupyter/nbgrader" not in tools["disabled"]
        assert formgrader != 404
    else:
        assert not (tools["menu"] or tools["validate"] or tools["create"]), tools
        assert "@jupyter/nbgrader" in tools["disabled"]
        assert formgrader == 404
