"""`make site`: the course website, read offline.

The site is built once for the module (vmkit.site.build_site) from two lectures (01: the
Stepper's and the graphs' pictures; 06: a displayed formula and figures), every exercise and
every doc, into a temporary folder. Headless chromium opens index.html from file:// with
every other request aborted and recorded, and crawls every page reachable from it:

- no request other than file:// (and data:) is attempted, no script error;
- every internal link resolves: its file is on the site, its #fragment an id on that page;
- every page of the site is reached from the index;
- pictures are shown (each <img> loaded, the lectures' pictures drawn at a nonzero size);
- formulas are typeset (MathJax's output on lecture 06's page);
- the search page finds a word.

Screenshots: build/test-artifacts/site-index.png, site-lecture-06.png, site-search.png.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import nbformat
import pytest

from browser_util import chromium_context, require_chromium, screenshot
from vmkit import resources, site

LECTURES = [resources.notebooks_dir() / "01-machine-and-rings.ipynb",
            resources.notebooks_dir() / "06-memory-virtualization.ipynb"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("site")
    return out, site.build_site(out, notebooks=LECTURES)


def test_pages_and_order(built):
    """Are the lectures, the homework, the docs and the reference card all there, in order,
    with the index first?"""
    out, pages = built
    names = [p.name for p in pages]
    assert names[0] == "index.html" and names[-1] == "search.html"
    assert names[1:3] == ["01-machine-and-rings.html", "06-memory-virtualization.html"]
    assert "homework.html" in names and "hw01-rings-and-traps.html" in names
    assert names[-2] == "reference.html", "the reference card closes the docs"
    index = (out / "index.html").read_text(encoding="utf-8")
    for anchor in ('id="lectures"', 'id="exercises"', 'id="docs"'):
        assert anchor in index
    assert (out / site.SEARCH_INDEX).is_file()


def test_no_solutions_and_no_notes(built):
    """Do the exercise pages hold no solution or hidden test, and the lecture pages no
    instructor's notes?"""
    out, _ = built
    for page in out.glob("hw*.html"):
        text = page.read_text(encoding="utf-8")
        for marker in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
            assert marker not in text, f"{page.name}: {marker}"
    lecture = (out / "01-machine-and-rings.html").read_text(encoding="utf-8")
    assert "Notes for the instructor" not in lecture


def test_an_exercise_with_a_solution_is_refused(tmp_path):
    cell = nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n"
                                     "    ### END SOLUTION\n")
    folder = tmp_path / "exercises"
    folder.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), folder / "hw09-leak.ipynb")
    with pytest.raises(site.SiteError, match=r"hw09-leak.ipynb: cell 0 holds '### BEGIN "
                                             r"SOLUTION'.*vmkit release"):
        site.site_pages(notebooks=[], exercises=folder, docs=None)


def test_links_between_sources_point_at_pages(tmp_path):
    """Does a link to another doc or lecture lead to its page, and one to a file that is not
    on the site become plain text (no broken link)?"""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nSee [b](b.md#part), [02](../notebooks/02-x.ipynb) and "
                               "[the kernel](../vmkit/guests/kernel.s).\n")
    (docs / "b.md").write_text("# B\n\n## Part\n")
    pages = site.site_pages(notebooks=[], exercises=None, docs=docs)
    targets = {p.source.resolve(): p.name for p in pages}
    targets[(tmp_path / "notebooks" / "02-x.ipynb").resolve()] = "02-x.html"
    html = site._relink('<p><a href="b.md#part">b</a> <a href="../notebooks/02-x.ipynb">02</a> '
                        '<a href="../vmkit/guests/kernel.s">the kernel</a> '
                        '<a href="https://example.org/">out</a> <a href="index.html">home</a>'
                        "</p>", docs / "a.md", targets)
    assert '<a href="b.html#part">b</a>' in html
    assert '<a href="02-x.html">02</a>' in html
    assert 'title="../vmkit/guests/kernel.s' in html and 'href="../vmkit' not in html
    assert '<a href="https://example.org/">out</a>' in html
    assert '<a href="index.html">home</a>' in html


def test_cli_bad_outdir(tmp_path, capsys):
    from vmkit.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["site", str(blocker / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("vmkit site: ") and "\n" not in err


# every link of the page (resolved by the browser), the ids on it, broken <img>s, the
# pictures of the notebook's outputs drawn at a nonzero size, MathJax's formulas
LOOK = """() => {
  const pictures = [...document.querySelectorAll('.jp-OutputArea-output img, '
                                                 + '.jp-OutputArea-output svg')]
    .filter(e => !e.closest('mjx-container') && !e.parentElement.closest('svg'));
  return {
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    broken: [...document.images].filter(i => !i.complete || i.naturalWidth === 0)
              .map(i => i.src.slice(0, 80)),
    pictures: pictures.length,
    drawn: pictures.filter(e => { const r = e.getBoundingClientRect();
                                  return r.width > 0 && r.height > 0; }).length,
    formulas: document.querySelectorAll('mjx-container svg').length,
    rawTex: /\\$\\$|\\\\\\[|\\\\begin\\{/.test(document.querySelector('main')
                                                  ? document.querySelector('main').innerText : ''),
  };
}"""


def test_site_offline(built):
    """Crawled from the index in chromium with the network blocked: does every page load
    with its pictures and formulas, every internal link resolve, and nothing go out?"""
    require_chromium()
    out, pages = built
    root = out.resolve()
    remote, errors, failed = [], [], []

    def route(r):
        url = r.request.url
        if url.startswith(("file://", "data:")):
            r.continue_()
        else:
            remote.append(url)
            r.abort()

    seen: dict[Path, dict] = {}
    wanted: list[tuple[str, Path, str]] = []  # (from page, target file, fragment)
    with chromium_context(viewport={"width": 1280, "height": 900}) as context:
        context.route("**/*", route)
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
        page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
        todo = [root / "index.html"]
        try:
            while todo:
                path = todo.pop(0)
                if path in seen:
                    continue
                page.goto(path.as_uri())
                if page.evaluate("!!(window.MathJax && MathJax.startup)"):
                    page.wait_for_function("() => MathJax.startup.promise", timeout=30_000)
                    page.evaluate("MathJax.startup.promise.then(() => true)")
                look = page.evaluate(LOOK)
                seen[path] = look
                for link in look["links"]:
                    url, fragment = urldefrag(link)
                    if not url.startswith("file://"):
                        continue  # a link out (a paper, a project): not followed, not fetched
                    target = Path(unquote(urlparse(url).path))
                    wanted.append((path.name, target, fragment))
                    if target.suffix == ".html" and target.is_file() and target not in seen:
                        todo.append(target)
                if path.name == "index.html":
                    screenshot(page, "site-index")
                if path.name == "06-memory-virtualization.html":
                    screenshot(page, "site-lecture-06")
            page.goto((root / "search.html").as_uri() + "?q=shadow+page")
            page.wait_for_selector("#vmkit-search-results li", timeout=10_000)
            results = page.locator("#vmkit-search-results li a").all_inner_texts()
            screenshot(page, "site-search")
        except BaseException:
            print("screenshot:", screenshot(page, "site-failed"))
            raise

    assert remote == [], f"requests to the network: {remote}"
    assert errors == [], f"script errors: {errors}"
    assert failed == [], f"failed requests: {failed}"
    broken = [f"{src} -> {target}" for src, target, _ in wanted
              if not target.is_file() or root not in target.parents]
    assert broken == [], f"links that lead nowhere: {broken}"
    missing_ids = [f"{src} -> {target.name}#{frag}" for src, target, frag in wanted
                   if frag and target in seen and frag not in seen[target]["ids"]]
    assert missing_ids == [], f"links to a missing anchor: {missing_ids}"
    assert {p.resolve() for p in pages} <= set(seen), \
        f"pages not reached from the index: {sorted(p.name for p in pages if p.resolve() not in seen)}"
    for path, look in seen.items():
        assert look["broken"] == [], f"{path.name}: pictures not shown: {look['broken']}"
        assert not look["rawTex"], f"{path.name}: TeX left untypeset"
    for name in ("01-machine-and-rings.html", "06-memory-virtualization.html"):
        look = seen[root / name]
        assert look["pictures"] >= 2 and look["drawn"] == look["pictures"], (name, look)
    assert seen[root / "06-memory-virtualization.html"]["formulas"] > 0, "no formula typeset"
    assert any("Memory" in r or "memory" in r for r in results), results
