"""Live slides: jupyterlab-rise presents a lecture notebook with running widgets.

JupyterLab (the kit's settings from vmkit.labsetup, notebooks/rise.css beside a cleared copy of
notebooks/01) in headless chromium at 1280x720, offline but for the local server: RISE's slide
page (/rise/<notebook>) opens, the lecturer's Shift+Enter runs the cells slide by slide until
the Stepper is live, the slide with the Stepper is shown, and then:

- everything on that slide lies inside the 1280x720 window, nothing cut off inside it: the
  live Stepper is taller than the window, and the vmkit-slides extension (vmkit.rise) shrinks
  the slide to fit, not below SLIDE_MIN_ZOOM;
- a click on Step changes the EIP the Stepper shows (a running kernel behind the slide);
- the instructor's notes cell is in the speaker notes (reveal.js ``aside.notes``), not on a slide;
- "T" opens the speaker view (one pop-up: the vmkit-slides extension's, not RISE's broken
  one) with the shown slide's notes, the next slide's title and a running clock, and it follows
  the lecturer to the last slide (the notebook's notes) and back; the notes never show on the
  slide.

Screenshots: build/test-artifacts/rise-01-machine-and-rings.png (the Stepper's slide, live),
rise-01-last-slide.png and rise-01-speaker-notes.png (the speaker view beside it).

The browser test takes about a minute (a kernel, the cells up to the Stepper, RISE's page):
`make test-live-slides` runs it (VMKIT_LIVE_SLIDES=1; CI runs that target after `make test`);
`make test` runs the quick checks of this file only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from browser_util import chromium_context, local_only, require_chromium, screenshot
from test_browser import STEP_TEXT, JupyterLab, cleared_copy
from vmkit import labsetup, nbtools, resources, rise

ROOT = Path(__file__).resolve().parents[2]
LECTURE_01 = ROOT / "notebooks" / "01-machine-and-rings.ipynb"
WIDTH, HEIGHT = nbtools.SLIDE_SIZE
BUDGET = 150  # s for the kernel, running the cells up to the Stepper and the checks


def test_rise_css_is_current():
    """Is notebooks/rise.css what `python -m vmkit.rise` writes now?"""
    path = resources.notebooks_dir() / rise.RISE_CSS
    assert path.read_text(encoding="utf-8") == rise.rise_css(), \
        "notebooks/rise.css is stale: run `python -m vmkit.rise`"


def test_labsetup_writes_rise_settings(tmp_path):
    """Does `make lab` set RISE to the decks' theme, and leave the slide the window's size?"""
    labsetup.install(tmp_path)
    overrides = json.loads((tmp_path / "labconfig" / "default_setting_overrides.d"
                            / labsetup.FILE_NAME).read_text())
    settings = overrides[labsetup.RISE_PLUGIN]
    assert "width" not in settings and "height" not in settings  # see labsetup.RISE_SETTINGS
    assert settings["theme"] == nbtools.REVEAL_THEME
    # only keys RISE's settings schema knows (it allows no others)
    schema = json.loads((Path(labsetup.sys.prefix) / "share" / "jupyter" / "labextensions"
                         / "jupyterlab-rise" / "schemas" / "jupyterlab-rise"
                         / "plugin.json").read_text())
    assert set(settings) <= set(schema["properties"])


def test_write_rise_css_refuses_a_missing_folder(tmp_path):
    with pytest.raises(NotADirectoryError, match="not a folder"):
        rise.write_rise_css(tmp_path / "absent")


# The slide shown now (reveal's innermost section.present): the box of everything on it in
# window pixels (SVG internals left out), elements whose content is cut off, and where the
# Stepper's Step button is.
MEASURE = """() => {
  const shown = [...document.querySelectorAll('.reveal section.present')].pop();
  let left = Infinity, top = Infinity, right = -Infinity, bottom = -Infinity;
  const cut = [];
  for (const el of [shown, ...shown.querySelectorAll('*')]) {
    if (el.parentElement && el.parentElement.closest('svg')) continue;
    if (el.closest('aside.notes')) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    left = Math.min(left, r.left); top = Math.min(top, r.top);
    right = Math.max(right, r.right); bottom = Math.max(bottom, r.bottom);
    const style = getComputedStyle(el);
    if ((style.overflowX === 'hidden' && el.scrollWidth > el.clientWidth + 1)
        || (style.overflowY === 'hidden' && el.scrollHeight > el.clientHeight + 1))
      cut.push(`<${el.tagName.toLowerCase()} class="${el.getAttribute('class') || ''}">`);
  }
  return {id: shown.id, left, top, right, bottom, cut,
          zoom: parseFloat(shown.style.zoom || '1'),
          stepper: shown.querySelectorAll('.vmkit-stepper-live').length};
}"""

# the notes cells: where they are and whether anything of them is visible
NOTES = """() => [...document.querySelectorAll('.jp-Cell')]
  .filter(c => /Notes for the instructor/.test(c.textContent))
  .map(c => ({inAside: !!c.closest('aside.notes'),
              visible: c.getBoundingClientRect().width > 0
                       && getComputedStyle(c.closest('aside') || c).display !== 'none'}))"""


# the speaker view's window: slide number, notes (text), next slide, clock
SPEAKER = """() => ({number: document.getElementById('vmkit-slide-number').textContent,
  notes: document.getElementById('vmkit-notes').innerText,
  next: document.getElementById('vmkit-next').textContent,
  elapsed: document.getElementById('vmkit-elapsed').textContent})"""

# the number of the slide shown (1 for the first), slides and subslides counted in order
SHOWN_NUMBER = """() => {
  const slides = [...document.querySelectorAll('.reveal .slides section')]
    .filter(s => !s.querySelector('section'));
  return slides.indexOf([...document.querySelectorAll('.reveal section.present')].pop()) + 1;
}"""


def plain(markdown: str) -> str:
    """The words of a Markdown text as a browser shows them (emphasis, code marks and links
    dropped, white space as single spaces)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", markdown)
    return " ".join(re.sub(r"[*_`#>]", "", text).split())


def kernels(lab: JupyterLab) -> list[str]:
    with urllib.request.urlopen(f"{lab.base}/api/kernels?token={lab.token}", timeout=5) as r:
        return [k["execution_state"] for k in json.load(r)]


def test_install_labextension(tmp_path):
    """Is the extension installed where JupyterLab looks, as a federated extension?"""
    dest = rise.install_labextension(tmp_path)
    assert dest == tmp_path / "labextensions" / rise.LABEXTENSION
    package = json.loads((dest / "package.json").read_text())
    assert package["name"] == rise.LABEXTENSION
    assert (dest / package["jupyterlab"]["_build"]["load"]).is_file()
    rise.install_labextension(tmp_path)  # again: replaced, not nested
    assert not (dest / rise.LABEXTENSION).exists()


def test_live_stepper_slide(tmp_path, monkeypatch):
    """Presented with RISE, does notebook 01's Stepper slide fit 1280x720 and step live?"""
    if os.environ.get("VMKIT_LIVE_SLIDES") != "1":
        pytest.skip("about a minute: `make test-live-slides` runs it (VMKIT_LIVE_SLIDES=1)")
    require_chromium()
    root = tmp_path / "notebooks"
    root.mkdir()
    notebook = cleared_copy(LECTURE_01, root).name
    shutil.copyfile(resources.notebooks_dir() / rise.RISE_CSS, root / rise.RISE_CSS)
    labsetup.install(tmp_path / "config")
    rise.install_labextension(tmp_path / "data")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "data"))  # the Lab finds it there
    source = nbformat.read(LECTURE_01, as_version=4)
    stepper_cell = next(i for i, c in enumerate(source.cells) if "Stepper(" in c.source)
    lab = JupyterLab(root, tmp_path)
    network, deadline = [], time.monotonic() + BUDGET

    def left() -> float:
        return max(1000.0, (deadline - time.monotonic()) * 1000)

    try:
        with chromium_context(viewport={"width": WIDTH, "height": HEIGHT}) as context:
            local_only(context, lab.base, network)
            page = context.new_page()
            try:
                page.goto(f"{lab.base}/rise/{notebook}?token={lab.token}", timeout=left())
                page.wait_for_selector(".reveal .slides section.present .jp-Cell",
                                       timeout=left())
                while kernels(lab) != ["idle"]:
                    assert time.monotonic() < deadline, "the kernel did not start"
                    page.wait_for_timeout(250)
                # the lecturer: command mode on the first cell, then Shift+Enter (RISE's
                # "execute cell, and move to the next") until the Stepper shows
                page.click(".reveal section.present .jp-Cell", position={"x": 4, "y": 4})
                page.keyboard.press("Escape")
                step = page.locator(".vmkit-stepper-live button", has_text=STEP_TEXT).first
                for _ in range(3 * stepper_cell):
                    if step.count():
                        break
                    page.keyboard.press("Shift+Enter")
                    page.wait_for_timeout(400)
                step.wait_for(state="attached", timeout=left())
                for _ in range(len(source.cells)):  # back to the Stepper's slide
                    if page.locator("section.present .vmkit-stepper-live").count():
                        break
                    page.keyboard.press("ArrowLeft")
                    page.wait_for_timeout(300)
                page.wait_for_timeout(1000)  # reveal.js lays the slide out
                seen = page.evaluate(MEASURE)
                eip = page.locator(".vmkit-stepper-live .vmkit-eip").first
                before = eip.inner_text().strip()
                step.click(timeout=left())
                deadline_step = time.monotonic() + 15
                while eip.inner_text().strip() == before and time.monotonic() < deadline_step:
                    page.wait_for_timeout(100)
                after = eip.inner_text().strip()
                notes = page.evaluate(NOTES)
                page.screenshot(path=str(screenshot_path("rise-01-machine-and-rings")))
                # the speaker view: T in command mode, as RISE's help says
                page.keyboard.press("Escape")
                windows = len(context.pages)    # the slides, and chromium's first blank page
                with context.expect_page(timeout=left()) as opened:
                    page.keyboard.press("t")
                speaker = opened.value
                speaker.wait_for_selector("#vmkit-notes", timeout=left())
                at_stepper = speaker.evaluate(SPEAKER)
                page.keyboard.press("End")      # RISE: the last slide, the notes' slide
                speaker.wait_for_function(
                    "() => !document.querySelector('#vmkit-notes .vmkit-none')",
                    timeout=left())
                page.wait_for_timeout(1200)     # the clock ticks on
                at_end = speaker.evaluate(SPEAKER)
                notes_at_end = page.evaluate(NOTES)
                page.screenshot(path=str(screenshot_path("rise-01-last-slide")))
                speaker.set_viewport_size({"width": 900, "height": 600})
                speaker.screenshot(path=str(screenshot_path("rise-01-speaker-notes")))
                page.keyboard.press("ArrowLeft")
                speaker.wait_for_function(
                    "() => !!document.querySelector('#vmkit-notes .vmkit-none')",
                    timeout=left())
                back = speaker.evaluate(SPEAKER)
                back_shown = page.evaluate(SHOWN_NUMBER)
                opened_on_t = [p.title() for p in context.pages[windows - 1:]
                               if p is not page]
            except BaseException:
                print("screenshot:", screenshot(page, "rise-01-failed"))
                print("jupyter lab log:\n" + lab.log_text())
                raise
    finally:
        lab.stop()
    assert seen["stepper"] == 1, f"the slide shown ({seen['id']}) has no live Stepper"
    assert seen["left"] >= -1 and seen["top"] >= -1, seen
    assert seen["right"] <= WIDTH + 1 and seen["bottom"] <= HEIGHT + 1, \
        f"the Stepper's slide is {seen['right'] - seen['left']:.0f}x" \
        f"{seen['bottom'] - seen['top']:.0f} px (x {seen['left']:.0f}..{seen['right']:.0f}, " \
        f"y {seen['top']:.0f}..{seen['bottom']:.0f}): it does not fit {WIDTH}x{HEIGHT}"
    assert seen["cut"] == [], f"content cut off: {seen['cut']}"
    assert nbtools.SLIDE_MIN_ZOOM <= seen["zoom"] < 1, \
        f"the Stepper's slide at zoom {seen['zoom']}: not shrunk by the extension"
    assert re.search(r"EIP [0-9a-f]{8}", before), before
    assert after != before, f"Step did not change {before!r}"
    assert notes and all(n["inAside"] and not n["visible"] for n in notes), notes
    # the speaker view: the slide's own notes, the next title, following the slide shown
    headings = [re.match(r"#+ (.*)", c.source) for c in source.cells
                if c.cell_type == "markdown" and c.metadata.get("slideshow", {}).get(
                    "slide_type") in ("slide", "subslide")]
    titles = [plain(h.group(1)) for h in headings if h]
    notes_text = plain(next(c.source for c in source.cells if c.metadata.get(
        "slideshow", {}).get("slide_type") == "notes"))
    assert opened_on_t == ["Speaker notes"], f"windows opened on T: {opened_on_t}"
    assert "No notes for this slide" in at_stepper["notes"], at_stepper
    stepper_title = plain(source.cells[stepper_cell - 1].source.splitlines()[0].lstrip("# "))
    following = titles[titles.index(stepper_title) + 1]
    assert at_stepper["next"] == f"Next: {following}", (at_stepper, following)
    assert re.fullmatch(r"Slide \d+ of \d+", at_stepper["number"]), at_stepper
    assert " ".join(at_end["notes"].split()) == notes_text, (at_end["notes"], notes_text)
    last, total = re.fullmatch(r"Slide (\d+) of (\d+)", at_end["number"]).groups()
    assert last == total, at_end
    assert at_end["next"] == "Next: the end of the presentation.", at_end
    assert re.fullmatch(r"\d+:\d\d", at_end["elapsed"]) and at_end["elapsed"] != "0:00", at_end
    assert "No notes for this slide" in back["notes"], back
    assert back["number"] == f"Slide {back_shown} of {total}" and back_shown < int(last), \
        (back, back_shown)
    assert notes_at_end and all(n["inAside"] and not n["visible"] for n in notes_at_end), \
        f"the notes show on the last slide: {notes_at_end}"
    assert network == [], f"requests to the network: {network}"


def screenshot_path(name: str) -> Path:
    from browser_util import ARTIFACTS
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / f"{name}.png"
