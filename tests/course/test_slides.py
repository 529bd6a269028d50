"""`make slides`: reveal.js decks that show their pictures and load nothing from the network.

One deck from tests/data/smoke.ipynb (a figure, a graph, math, a widget with its static
fallback) and one from every lecture notebook present (notebooks/NN-*.ipynb), built by
vmkit.nbtools.build_slides into a temporary folder and opened from file:// in headless
chromium with every other request aborted and recorded. A screenshot of the slide with the
picture (or of the failure) goes to build/test-artifacts/slides-<name>.png.

Every slide of every deck fits the 1280x720 slide box (nbtools.SLIDE_SIZE) in a 1280x720
window: each slide, with all its fragments shown, is measured (the rendered boxes of everything
on it, at reveal.js's scale and the template's zoom) and must lie inside the box, with nothing
cut off inside it and no number in a table broken across lines; each deck's tallest slide goes
to build/test-artifacts/slides-<name>-tallest.png.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from browser_util import (ARTIFACTS, chromium_browser, chromium_context, require_chromium,
                          screenshot)
from vmkit import nbtools

DATA = Path(__file__).resolve().parents[1] / "data"
SMOKE = DATA / "smoke.ipynb"
NOTEBOOKS = [SMOKE, *nbtools.lecture_notebooks()]

# names of the CDNs that nbconvert's own templates use; none may survive in a deck
CDN_NAMES = ("unpkg.com", "cdnjs", "jsdelivr", "googleapis", "mathjax.org", "jquery.com")


@pytest.fixture(scope="module")
def decks(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("slides")
    built = nbtools.build_slides(NOTEBOOKS, out)
    return {deck.name.removesuffix(".slides.html"): deck for deck in built}


@pytest.fixture(scope="module")
def browser():
    """One chromium for the module's decks, each opened in a fresh context of its own."""
    require_chromium()
    with chromium_browser() as b:
        yield b


def test_assets_are_local(decks):
    for name, deck in decks.items():
        html = deck.read_text(encoding="utf-8")
        assert nbtools.external_urls(html) == [], name
        for cdn in CDN_NAMES:
            assert cdn not in html, f"{name}: mentions {cdn}"
        for url in nbtools.ASSET_URLS.values():
            assert url in html, f"{name}: does not load {url}"
            assert (deck.parent / url).exists() or (deck.parent / url / "dist").exists()
    assets = next(iter(decks.values())).parent / "assets"
    for licence in ("reveal.js/LICENSE", "mathjax/LICENSE", "requirejs/package.json"):
        assert (assets / licence).is_file(), licence


def test_external_urls_finds_fetches_not_links():
    html = """<script src="https://unpkg.com/x.js"></script><link href='//cdn/x.css'>
    <img src=http://example.org/a.png><style>@import url(https://fonts/x.css);</style>
    <script type="module">import m from 'https://cdn/m.mjs';</script>
    <a href="https://example.org/paper.pdf">paper</a><script src="assets/local.js"></script>"""
    assert nbtools.external_urls(html) == [
        "https://unpkg.com/x.js", "http://example.org/a.png", "//cdn/x.css",
        "https://fonts/x.css", "https://cdn/m.mjs"]


def test_hide_input_tag(tmp_path):
    code = nbformat.v4.new_code_cell("print('shown' + ' output')", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="shown output\n")])
    code.metadata = {"tags": [nbtools.HIDE_INPUT_TAG], "slideshow": {"slide_type": "slide"}}
    nb = nbformat.v4.new_notebook(cells=[code])
    src = tmp_path / "hidden.ipynb"
    nbformat.write(nb, src)
    [deck] = nbtools.build_slides([src], tmp_path / "out")
    html = deck.read_text(encoding="utf-8")
    assert "shown output" in html and "&#39;shown&#39;" not in html and "'shown'" not in html


def test_columns_tag(tmp_path):
    """Does a cell tagged slide-columns get the class that the deck's style sheet puts into
    two columns?"""
    code = nbformat.v4.new_code_cell("print(listing)", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="a\nb\n")])
    code.metadata = {"tags": [nbtools.COLUMNS_TAG], "slideshow": {"slide_type": "slide"}}
    src = tmp_path / "columns.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[code]), src)
    [deck] = nbtools.build_slides([src], tmp_path / "out")
    html = deck.read_text(encoding="utf-8")
    assert f"jp-Cell jp-CodeCell jp-Notebook-cell celltag_{nbtools.COLUMNS_TAG}" in html
    assert re.search(r"\.celltag_slide-columns \.jp-OutputArea-output pre \{\s*column-count: 2",
                     html)


# Go to every slide with all its fragments shown; report the first picture (an <svg> or <img>
# with nonzero size that is not MathJax's) and the slide it is on.
FIND_PICTURE = """async () => {
  const frame = () => new Promise(r => requestAnimationFrame(() => r()));
  for (const slide of Reveal.getSlides()) {
    const at = Reveal.getIndices(slide);
    Reveal.slide(at.h, at.v, 1000);
    await frame();
    const current = Reveal.getCurrentSlide();
    for (const el of current.querySelectorAll('svg, img')) {
      if (el.closest('mjx-container')) continue;
      const box = el.getBoundingClientRect();
      if (box.width > 0 && box.height > 0)
        return {h: at.h, v: at.v, tag: el.tagName.toLowerCase(),
                width: box.width, height: box.height};
    }
  }
  return null;
}"""


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_deck_offline(decks, browser, notebook):
    deck = decks[notebook.stem]
    remote, failed, errors = [], [], []

    def route(r):
        url = r.request.url
        if url.startswith("file://"):
            r.continue_()
        else:
            remote.append(url)
            r.abort()

    with chromium_context(browser) as context:
        context.route("**/*", route)
        page = context.new_page()
        page.on("request", lambda r: None if r.url.startswith(("file:", "data:"))
                else remote.append(r.url))
        page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
        page.on("pageerror", lambda e: errors.append(str(e)))
        shot = f"slides-{notebook.stem}"
        try:
            page.goto(deck.as_uri())
            page.wait_for_function("() => window.Reveal && Reveal.isReady()", timeout=30_000)
            page.wait_for_function("() => window.MathJax && MathJax.startup "
                                   "&& MathJax.startup.promise", timeout=30_000)
            page.evaluate("MathJax.startup.promise.then(() => true)")
            total = page.evaluate("Reveal.getTotalSlides()")
            assert total > 1, f"{deck.name}: {total} slide(s)"
            picture = page.evaluate(FIND_PICTURE)
            assert picture, f"{deck.name}: no slide shows an <svg> or <img> of nonzero size"
            if notebook == SMOKE:
                assert page.evaluate("document.querySelectorAll('mjx-container').length") > 0, \
                    "MathJax rendered no formula"
                # the widget's static fallback, not the widget view
                assert page.locator(".jp-RenderedHTML svg circle").count() == 4
                assert page.locator("script[type*='widget']").count() == 0
            assert remote == [], f"requests to the network: {remote}"
            assert failed == [], f"failed requests: {failed}"
            assert errors == [], f"script errors: {errors}"
        except BaseException:
            print("screenshot:", screenshot(page, shot + "-failed"))
            raise
        screenshot(page, shot)


# Every slide with all its fragments shown: the box of everything on it (SVG and MathJax
# internals and what scrolls inside a notebook's own scroll box left out: their box counts),
# in slide pixels (reveal.js scales the slide box
# to the window: divide by Reveal.getScale()), the zoom the template gave it, its unzoomed
# height and the elements whose content is cut off or scrolls inside them.
MEASURE_SLIDES = """async () => {
  const frame = () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const out = [];
  for (const slide of Reveal.getSlides()) {
    const at = Reveal.getIndices(slide);
    Reveal.slide(at.h, at.v, 1000);
    await frame();
    const s = Reveal.getCurrentSlide();
    const box = Reveal.getSlidesElement().getBoundingClientRect();
    const scale = Reveal.getScale();
    let left = 0, top = 0, right = 0, bottom = 0;
    const cut = [], boxes = [];
    for (const el of [s, ...s.querySelectorAll('*')]) {
      const parent = el.parentElement;
      if (parent && (parent.closest('svg') || parent.closest('mjx-container')
                     || parent.closest('[data-measured-scroll-box]'))) continue;
      const r = el.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue;
      left = Math.min(left, (r.left - box.left) / scale);
      top = Math.min(top, (r.top - box.top) / scale);
      right = Math.max(right, (r.right - box.left) / scale);
      bottom = Math.max(bottom, (r.bottom - box.top) / scale);
      const style = getComputedStyle(el);
      const over = (style.overflowX !== 'visible' && el.scrollWidth > el.clientWidth + 1)
                || (style.overflowY !== 'visible' && el.scrollHeight > el.clientHeight + 1);
      if (!over) continue;
      const what = `<${el.tagName.toLowerCase()} class="${el.getAttribute('class') || ''}"> `
                 + `${el.scrollWidth}x${el.scrollHeight} in ${el.clientWidth}x${el.clientHeight}`;
      // a scroll box the notebook's own HTML asked for (max-height, overflow: auto)
      const own = /max-height/.test(el.getAttribute('style') || '')
                && /auto|scroll/.test(style.overflowX + style.overflowY);
      (own ? boxes : cut).push(what);
      if (own) el.setAttribute('data-measured-scroll-box', '');  // what scrolls inside: no
    }
    // a number in a table cell broken across two lines ("2,4" / "09")
    const broken = [];
    for (const cell of s.querySelectorAll('td, th')) {
      const text = cell.textContent.trim();
      if (!/^[-+]?[\\d][\\d,.]*(%|×|x)?$/.test(text)) continue;
      const range = document.createRange();
      range.selectNodeContents(cell);
      const lines = new Set([...range.getClientRects()].filter(r => r.width > 0)
                               .map(r => Math.round(r.top)));
      if (lines.size > 1) broken.push(text);
    }
    const heading = s.querySelector('h1, h2, h3, h4, h5');
    out.push({at: `${at.h}/${at.v}`, h: at.h, v: at.v,
              title: (heading ? heading.textContent : s.textContent).trim()
                       .replace(/\\s+/g, ' ').slice(0, 60),
              left, top, right, bottom, zoom: parseFloat(s.style.zoom || '1'),
              unzoomed: s.scrollHeight, cut, boxes, broken});
  }
  return out;
}"""


def measure_deck(deck: Path, shot: bool = True, browser=None) -> tuple[list[dict], list[str]]:
    """Open ``deck`` at the slide size; returns each slide's measures and the problems.
    ``shot``: save the tallest slide as build/test-artifacts/slides-<deck>-tallest.png;
    ``browser``: a running chromium to open it in (else one of its own)."""
    width, height = nbtools.SLIDE_SIZE
    with chromium_context(browser, viewport={"width": width, "height": height}) as context:
        context.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file://")
                      else r.abort())
        page = context.new_page()
        page.goto(deck.as_uri())
        page.wait_for_function("() => window.Reveal && Reveal.isReady()", timeout=30_000)
        page.evaluate("MathJax.startup.promise.then(() => true)")
        assert page.evaluate("[Reveal.getConfig().width, Reveal.getConfig().height]") == \
            [width, height]
        slides = page.evaluate(MEASURE_SLIDES)
        if shot:
            tallest = max(slides, key=lambda s: (s["unzoomed"], -s["zoom"]))
            page.evaluate("([h, v]) => Reveal.slide(h, v, 1000)", [tallest["h"], tallest["v"]])
            page.wait_for_timeout(200)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            name = deck.name.removesuffix(".slides.html")
            page.screenshot(path=str(ARTIFACTS / f"slides-{name}-tallest.png"))
    problems = []
    for s in slides:
        where = f"{deck.name} slide {s['at']} ({s['title']!r})"
        w, h = s["right"] - s["left"], s["bottom"] - s["top"]
        if s["left"] < -1 or s["top"] < -1 or s["right"] > width + 1 or s["bottom"] > height + 1:
            problems.append(f"{where}: {w:.0f}x{h:.0f} px at zoom {s['zoom']} "
                            f"(x {s['left']:.0f}..{s['right']:.0f}, "
                            f"y {s['top']:.0f}..{s['bottom']:.0f}) does not fit {width}x{height}")
        if s["zoom"] < nbtools.SLIDE_MIN_ZOOM - 1e-3:
            problems.append(f"{where}: shrunk to {s['zoom']} (< {nbtools.SLIDE_MIN_ZOOM})")
        for what in s["cut"]:
            problems.append(f"{where}: content cut off in {what}")
        for number in s["broken"]:
            problems.append(f"{where}: the number {number!r} in a table breaks across lines")
    return slides, problems


def test_measure_finds_what_does_not_fit(tmp_path, browser):
    """Does the measure catch a slide too tall even when shrunk, content cut off in a box,
    and a number broken in a table cell, and pass a slide that fits?"""

    def cell(source, html=None, text=None):
        outputs = []
        if html is not None:
            outputs.append(nbformat.v4.new_output("display_data", data={"text/html": html}))
        if text is not None:
            outputs.append(nbformat.v4.new_output("stream", name="stdout", text=text))
        c = nbformat.v4.new_code_cell(source, outputs=outputs)
        c.metadata = {"slideshow": {"slide_type": "slide"}}
        return c

    nb = nbformat.v4.new_notebook(cells=[
        cell("print('fits')", text="fits\n"),
        cell("print('tall')", text="".join(f"line {i}\n" for i in range(120))),
        cell("cut", html='<div style="overflow:hidden;width:200px;white-space:nowrap">'
                         + "x" * 400 + "</div>"),
        cell("number", html='<table><tr><td style="word-break:break-all;width:1em">'
                            "123,456,789</td></tr></table>"),
    ])
    src = tmp_path / "misfit.ipynb"
    nbformat.write(nb, src)
    [deck] = nbtools.build_slides([src], tmp_path / "out")
    slides, problems = measure_deck(deck, shot=False, browser=browser)
    assert [s["at"] for s in slides] == ["0/0", "1/0", "2/0", "3/0"]
    text = "\n".join(problems)
    assert "slide 0/0" not in text
    assert "slide 1/0" in text and "does not fit" in text and slides[1]["zoom"] == \
        pytest.approx(nbtools.SLIDE_MIN_ZOOM)
    assert "slide 2/0" in text and "content cut off" in text
    assert "the number '123,456,789' in a table breaks" in text


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_slide_fits(decks, browser, notebook):
    """Does every slide of the deck fit the 1280x720 slide box, nothing cut off?"""
    _, problems = measure_deck(decks[notebook.stem], browser=browser)
    assert problems == [], "\n".join(problems)
