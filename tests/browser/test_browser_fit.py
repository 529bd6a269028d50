"""The lecture notebooks in JupyterLab: do their widgets and pictures fit a laptop, in
JupyterLab's light and dark themes; do their widgets work when clicked?

One JupyterLab (over cleared copies of the lecture notebooks) serves the whole module; one
headless chromium at 1366×768, the file browser open beside the notebook, as on a student's
laptop. Each notebook runs all its cells once (the ``executed`` fixture), for all the checks of
that notebook: first the fit check, on the page as the run left it; then the checks that click
(01: the Stepper steps and a watchpoint stops Run; 05: the VM-exit view reruns, re-prices and
refuses; helpers and hooks in tests/browser/test_browser.py). Its kernel is shut down after
its last check.

The fit check, for every output that holds a widget or a picture, in the light and in the dark
theme (the theme the page already has first: a switch costs seconds):

- nothing is cut and nothing scrolls sideways: the output's ``scrollWidth`` is at most its
  ``clientWidth``, and no element inside it that clips or scrolls (``overflow`` other than
  visible) holds more than it shows (vertical scrolling is allowed only for ``<pre>`` text, a
  guest's console say);
- text stays readable: every graphviz text of an inline SVG is at least MIN_TEXT_PX high on
  screen, and a picture shown as an image (or an inline SVG with its text drawn as paths,
  matplotlib's) is not shrunk below MIN_SCALE of its natural size;
- the Stepper's buttons and its ring picture fit in one screen height of the notebook area.

Screenshots (build/test-artifacts/fit-<notebook>-<theme>[-<n>].png): each widget or picture
output, in the light and in the dark theme, for a person to look at; browser-<notebook>.png
after the clicks (-then: 01's watchpoint hit; -failed: a failed click check).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from browser_util import ARTIFACTS, chromium_context, local_only, require_chromium, screenshot
from test_browser import (ALL_CELLS_RUN, CELL_ERRORS, NOTEBOOK_READY, UI_BUDGET, JupyterLab,
                          budget, check_exit_view, check_lecture_01, cleared_copy,
                          exit_view_changes, step_once, watch_hit)

ROOT = Path(__file__).resolve().parents[2]
#: the lecture notebooks with widgets or pictures (09's pictures are plain figures as well)
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("0*.ipynb"))
VIEWPORT = {"width": 1366, "height": 768}
MIN_TEXT_PX = 9.5      # smallest on-screen text of a diagram (graphviz 10 pt at scale 0.71)
MIN_SCALE = 0.70       # an <img> picture (matplotlib, 10 pt text) at no less than this
RUN_BUDGET = 120       # s to open a notebook and run all its cells
#: JupyterLab's theme -> its short name in the screenshots' names
THEMES = {"JupyterLab Light": "light", "JupyterLab Dark": "dark"}

# every output that holds a widget or a picture, measured; returns a list of dicts
MEASURE = r"""() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const found = [];
  const name = el => {
    const cls = (el.getAttribute('class') || '').split(/\s+/).filter(c => c).slice(0, 3);
    return el.tagName.toLowerCase() + (cls.length ? '.' + cls.join('.') : '');
  };
  let index = 0;
  panel.content.widgets.forEach((cell, ci) => {
    if (cell.model.type !== 'code') return;
    cell.node.querySelectorAll('.jp-OutputArea-output').forEach(out => {
      const widget = out.querySelector('.jupyter-widgets');
      const pictures = out.querySelectorAll('svg, img');
      if (!widget && pictures.length === 0) return;
      const problems = [];
      if (out.scrollWidth > out.clientWidth + 1)
        problems.push(`output is ${out.scrollWidth} px wide in ${out.clientWidth} px`);
      const orect = out.getBoundingClientRect();
      for (const el of out.querySelectorAll('*')) {
        if (el.closest('svg') && el.tagName.toLowerCase() !== 'svg') continue;
        const cs = getComputedStyle(el);
        if (cs.display === 'none') continue;
        const clipsX = cs.overflowX !== 'visible', clipsY = cs.overflowY !== 'visible';
        if (clipsX && el.scrollWidth > el.clientWidth + 1)
          problems.push(`${name(el)} shows ${el.clientWidth} of ${el.scrollWidth} px (width)`);
        if (clipsY && el.scrollHeight > el.clientHeight + 1 && el.tagName !== 'PRE' &&
            !el.closest('pre') && el.tagName !== 'SELECT')
          problems.push(`${name(el)} shows ${el.clientHeight} of ${el.scrollHeight} px (height)`);
        const r = el.getBoundingClientRect();
        const parent = el.parentElement.getBoundingClientRect();
        // the outermost element that sticks out (its children stick out with it)
        if (r.width > 0 && r.right > orect.right + 1 && parent.right <= orect.right + 1)
          problems.push(`${name(el)} ends ${Math.round(r.right - orect.right)} px right of ` +
                        'the output');
        if (el.tagName === 'INPUT' && el.type !== 'checkbox' && el.scrollWidth > el.clientWidth + 1)
          problems.push(`${name(el)} shows part of its value ${JSON.stringify(el.value)}`);
      }
      let minText = null, minScale = null;
      for (const svg of out.querySelectorAll('svg')) {
        if (svg.closest('button') || svg.parentElement.closest('svg')) continue;
        // a picture drawn with its text as paths (matplotlib): its scale, from its size in pt
        const w = svg.getAttribute('width') || '';
        if (!svg.querySelector('text') && w.endsWith('pt')) {
          const s = svg.getBoundingClientRect().width / (parseFloat(w) * 4 / 3);
          if (minScale === null || s < minScale) minScale = s;
        }
        for (const t of svg.querySelectorAll('text')) {
          const size = parseFloat(t.getAttribute('font-size') || getComputedStyle(t).fontSize);
          const ctm = t.getScreenCTM();
          if (!size || !ctm || !t.textContent.trim()) continue;
          const px = size * Math.hypot(ctm.a, ctm.b);
          if (minText === null || px < minText) minText = px;
        }
      }
      for (const img of out.querySelectorAll('img')) {
        if (!img.naturalWidth) continue;
        const s = img.getBoundingClientRect().width / img.naturalWidth;
        if (minScale === null || s < minScale) minScale = s;
      }
      out.setAttribute('data-vmkit-fit', String(index));
      found.push({index: index++, cell: ci, widget: !!widget, problems,
                  width: out.clientWidth, height: Math.round(orect.height),
                  minText, minScale});
    });
  });
  return found;
}"""

# the Stepper: from the top of its buttons to the bottom of its ring picture, and the height of
# the notebook's scrolling area
STEPPER_SPAN = r"""() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const spans = [];
  for (const root of panel.content.node.querySelectorAll('.vmkit-stepper-live')) {
    const buttons = root.querySelector('.vmkit-stepper-controls');
    const rings = root.querySelector('.vmkit-rings svg, .vmkit-rings img');
    if (!buttons || !rings) { spans.push({missing: true}); continue; }
    const top = buttons.getBoundingClientRect().top;
    const bottom = rings.getBoundingClientRect().bottom;
    spans.push({span: Math.round(bottom - top),
                height: Math.round(root.getBoundingClientRect().height)});
  }
  const scroller = panel.content.node;
  return {spans, screen: scroller.clientHeight};
}"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_chromium()
    work = tmp_path_factory.mktemp("fit")
    root = work / "notebooks"
    root.mkdir()
    for name in NOTEBOOKS:
        cleared_copy(ROOT / "notebooks" / name, root)
    # every cell laid out (no windowing): off-screen outputs must have real sizes to measure
    tracker = work / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    server = JupyterLab(root, work)
    yield server
    server.stop()


# the page holds JupyterLab, with no document open and no dialog up
APP_FREE = """() => {
  const app = window.jupyterapp;
  return !!app && !!app.shell && [...app.shell.widgets('main')].length === 0
         && !document.querySelector('.jp-Dialog');
}"""


@pytest.fixture(scope="module")
def network():
    """The addresses the page asked for outside the local server (refused), since the
    current notebook was opened."""
    return []


@pytest.fixture(scope="module")
def page(lab, network):
    with chromium_context(viewport=VIEWPORT) as context:
        local_only(context, lab.base, network)
        yield context.new_page()


@pytest.fixture(scope="module")
def executed(request, lab, page, network):
    """The notebook ``request.param`` opened in the module's page, the file browser open
    beside it, all its cells run: one run for every test of that notebook (pytest runs a
    notebook's tests one after the other, in the order of this file: the fit check first, on
    the page as the run left it, then the checks that click). Afterwards the page leaves the
    notebook and its kernel is shut down. Yields the seconds Run All took."""
    notebook = request.param
    network.clear()
    if page.evaluate(APP_FREE):
        # JupyterLab is loaded already, no notebook open: open this one in it (loading the
        # app again would take seconds)
        page.evaluate("path => window.jupyterapp.commands.execute('docmanager:open', {path})"
                      ".then(() => true)", notebook)
    else:   # the first notebook, or the one before failed to open or run: start afresh
        lab.shut_down_kernels()
        page.goto(lab.url(notebook), timeout=RUN_BUDGET * 1000)
    page.wait_for_function(NOTEBOOK_READY, timeout=RUN_BUDGET * 1000, polling=250)
    page.evaluate("window.jupyterapp.commands.execute('filebrowser:activate')")
    page.wait_for_function("() => !window.jupyterapp.shell.leftCollapsed", timeout=10_000)
    t0 = time.monotonic()
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(ALL_CELLS_RUN, timeout=RUN_BUDGET * 1000, polling=250)
    assert page.evaluate(CELL_ERRORS) == []
    page.wait_for_timeout(500)      # the last widget views render after the kernel is idle
    yield {"notebook": notebook, "ran": time.monotonic() - t0}
    # closed without a question (it has unsaved outputs), then its kernel shut down
    page.evaluate("() => { for (const w of [...window.jupyterapp.shell.widgets('main')]) "
                  "w.dispose(); }")
    lab.shut_down_kernels()


def _theme(page, theme: str) -> None:
    page.evaluate(f"window.jupyterapp.commands.execute('apputils:change-theme', "
                  f"{{theme: '{theme}'}})")
    page.wait_for_function(
        f"() => document.body.dataset.jpThemeName === '{theme}'", timeout=20_000)
    page.wait_for_timeout(300)


def _shoot(page, notebook: str, theme: str, outputs: list) -> list[Path]:
    """A screenshot of each output; the window is made taller for the time of it, so that a
    tall output is shot whole (the width, and so the layout measured, stays the same)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tallest = max((o["height"] for o in outputs), default=0)
    page.set_viewport_size({"width": VIEWPORT["width"],
                            "height": max(VIEWPORT["height"], tallest + 300)})
    paths = []
    try:
        for o in outputs:
            path = ARTIFACTS / f"fit-{Path(notebook).stem}-{theme}-{o['cell']}.png"
            el = page.locator(f"[data-vmkit-fit='{o['index']}']")
            el.scroll_into_view_if_needed()
            el.screenshot(path=str(path))
            paths.append(path)
    finally:
        page.set_viewport_size(VIEWPORT)
        page.wait_for_timeout(300)      # JupyterLab lays itself out again
    return paths


def _n_box_shows(page, value: str) -> list[str]:
    """Type ``value`` into each Stepper's N box; the boxes that show only part of it."""
    bad = []
    boxes = page.locator(".vmkit-stepper-live .vmkit-stepper-n input")
    for i in range(boxes.count()):
        box = boxes.nth(i)
        old = box.input_value()
        box.fill(value)
        shown = box.evaluate("el => el.scrollWidth <= el.clientWidth")
        box.fill(old)       # as the run left it, for the notebook's next checks
        if not shown:
            bad.append(f"Stepper {i}: the N box shows part of {value}")
    return bad


@pytest.mark.parametrize("executed", NOTEBOOKS, indirect=True)
def test_widgets_and_pictures_fit_a_laptop_in_both_themes(page, executed):
    """Opened on a 1366×768 laptop with the file browser open, does every widget and picture
    of the notebook fit its column with readable text, the Stepper's buttons and picture on one
    screen, in the light and the dark theme?"""
    notebook, ran = executed["notebook"], executed["ran"]
    # measured and shot in the theme the page has (the one the last notebook ended in: the
    # setting is kept), then in the other: each theme switch costs seconds
    first = page.wait_for_function("() => document.body.dataset.jpThemeName",
                                   timeout=20_000).json_value()
    themes = [first] + [t for t in THEMES if t != first]
    outputs, measured, shots = None, {}, []
    for n, theme in enumerate(themes):
        if n:
            _theme(page, theme)
        measured[theme] = page.evaluate(MEASURE)
        if n == 0:
            outputs = measured[theme]
            span = page.evaluate(STEPPER_SPAN)      # before the screenshots resize the window
            cut_n = _n_box_shows(page, "200000")
        shots += _shoot(page, notebook, THEMES[theme], measured[theme])

    report = [f"{notebook}: ran in {ran:.1f} s; {len(outputs)} outputs measured"]
    for o in outputs:
        report.append(f"  cell {o['cell']}: {o['width']} px wide, {o['height']} px tall, "
                      f"smallest text {o['minText'] and round(o['minText'], 1)} px, "
                      f"image scale {o['minScale'] and round(o['minScale'], 2)}")
    print("\n".join(report), span)
    bad = [f"cell {o['cell']} ({THEMES[t]}): {p}" for t in themes for o in measured[t]
           for p in o["problems"]] + cut_n
    assert [o["cell"] for o in measured[themes[1]]] == [o["cell"] for o in outputs], \
        "the two themes show different outputs"
    bad += [f"cell {o['cell']}: diagram text {o['minText']:.1f} px (< {MIN_TEXT_PX})"
            for o in outputs if o["minText"] is not None and o["minText"] < MIN_TEXT_PX]
    bad += [f"cell {o['cell']}: picture shrunk to {o['minScale']:.2f} of its size"
            for o in outputs if o["minScale"] is not None and o["minScale"] < MIN_SCALE]
    for s in span["spans"]:
        if s.get("missing"):
            bad.append("a Stepper without its buttons or ring picture")
        elif s["span"] > span["screen"]:
            bad.append(f"Stepper: buttons to picture bottom {s['span']} px on a "
                       f"{span['screen']} px screen")
    assert outputs, f"{notebook}: no widget or picture output found"
    assert all(p.exists() for p in shots)
    assert not bad, "\n".join(bad)


# ---- the lecture notebooks' widgets at work, on the page the fit check has just measured ------


def _on_failure(page, lab, notebook: str):
    """A screenshot and the server's log, printed when a check fails."""
    print("screenshot:", screenshot(page, f"browser-{Path(notebook).stem}-failed"))
    print("jupyter lab log:\n" + lab.log_text())


@pytest.mark.parametrize("executed", ["01-machine-and-rings.ipynb"], indirect=True)
def test_lecture_01_stepper(lab, page, executed, network):
    """Notebook 01 run in JupyterLab: does Step step (EIP and ring picture change), and does a
    watchpoint on a page-table entry, set in the Stepper's debugger panel, stop Run with the
    guest's write (the kernel clearing the new page table)? Nothing fetched from outside."""
    notebook = executed["notebook"]
    left = budget(UI_BUDGET)
    try:
        seen = step_once(page, left)
        seen["then"] = watch_hit(page)
        screenshot(page, f"browser-{Path(notebook).stem}-then")
    except BaseException:
        _on_failure(page, lab, notebook)
        raise
    screenshot(page, f"browser-{Path(notebook).stem}")
    check_lecture_01(seen)
    assert network == []


@pytest.mark.parametrize("executed", ["05-hardware-assist.ipynb"], indirect=True)
def test_lecture_05_exit_view(lab, page, executed, network):
    """Notebook 05 run in JupyterLab: does its VM-exit view rerun the guest when a control is
    ticked, re-price the run when an exit cost is typed, and refuse a cost out of range?
    Nothing fetched from outside."""
    notebook = executed["notebook"]
    try:
        seen = exit_view_changes(page, budget(UI_BUDGET))
    except BaseException:
        _on_failure(page, lab, notebook)
        raise
    screenshot(page, f"browser-{Path(notebook).stem}")
    check_exit_view(seen)
    assert network == []
