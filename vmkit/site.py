"""The course website: one static site from the notebooks and docs, readable offline.

``make site`` (``vmkit site OUTDIR``) writes, into one folder:

- a page per lecture notebook (``notebooks/NN-*.ipynb``) with its stored outputs, where each
  widget shows its static picture (the display priority of the decks; no widget state); the
  instructor's notes cells (slide type ``notes``) are left out;
- a page per exercise (``exercises/*.ipynb``, as ``vmkit release`` made them: no solutions,
  no hidden tests; a notebook that still holds a solution block is refused) and the
  homework's README;
- a page per ``docs/*.md`` (markdown-it-py, CommonMark with tables), the reference card
  (``docs/reference.md``) among them;
- ``index.html`` (every page, by kind), a navigation bar on every page (home, search box)
  and previous/next links, ``search.html`` over a prebuilt index
  (``assets/site/search-index.js``: a script, not JSON, so that it loads from ``file://``).

Everything a page loads is under ``assets/``: MathJax 3 and require.js from the npm packages
pinned for the decks (:func:`vmkit.nbtools.ensure_slide_assets`), the site's CSS and scripts
from ``share/site/``. A page that would still fetch from the network is an error
(:func:`vmkit.nbtools.external_urls`). Links between the sources (``foo.md``,
``../notebooks/02-….ipynb``) point at the pages made of them; a relative link to a file that
is not on the site becomes plain text with the path as a tooltip.

Why not Jupyter Book 2 (mystmd): its HTML build downloads the site theme from the internet on
first use, which an offline or registry-only machine cannot do (see the README, Course
website).

Command line::

    python -m vmkit.site [-o OUTDIR]        # default build/site
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from vmkit import resources
from vmkit.errors import VmkitError
from vmkit.nbtools import ensure_slide_assets, external_urls, lecture_notebooks
from vmkit.nbtools.slides import SLIDES_DISPLAY_PRIORITY

__all__ = ["SiteError", "Page", "site_pages", "build_site", "main"]

#: the site is built from the course's notebooks/, exercises/, docs/ and share/site/, found by
#: vmkit.resources in a checkout or in the installed kit (``DEFAULT``: look them up then)
DEFAULT = "default"
SITE_TEMPLATE = "vmkit-page"
#: the site's own files, copied to assets/site/
_SITE_FILES = ("site.css", "mathjax-config.js", "search.js")
ASSETS = "assets"
SEARCH_INDEX = f"{ASSETS}/site/search-index.js"
#: the reference card among the docs
REFERENCE_CARD = "reference.md"
#: outputs on the pages: the decks' choice (static pictures and HTML first; never the widget
#: view, which needs the widget manager and a kernel, nor application/javascript)
PAGE_DISPLAY_PRIORITY = SLIDES_DISPLAY_PRIORITY
#: how much of each page's text goes into the search index
SEARCH_TEXT_LIMIT = 40_000

# a solution region or hidden tests left in an exercise (vmkit.homework's markers)
_SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS")


class SiteError(VmkitError):
    """Building the site failed: a missing source, a solution in an exercise, a page that
    would load from the network."""


@dataclass
class Page:
    """One page of the site: ``kind`` is "lecture", "exercise" or "doc"."""

    kind: str
    source: Path
    name: str  # the output file, e.g. "01-machine-and-rings.html"
    title: str
    text: str = field(default="", repr=False)  # plain text for the search index


# --- what goes on the site ----------------------------------------------------------------------


def _title_of_markdown(text: str, fallback: str) -> str:
    for line in text.splitlines():
        m = re.match(r"\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", line)
        if m:
            return re.sub(r"[`*_]", "", m.group(1)).strip()
    return fallback


def _read_notebook(path: Path):
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except (OSError, ValueError) as e:  # nbformat's errors derive from ValueError
        raise SiteError(f"{path}: cannot read the notebook ({e})") from None


def _notebook_page(kind: str, path: Path) -> Page:
    nb = _read_notebook(path)
    markdown = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown"
                           and not _is_notes(c))
    if kind == "exercise":
        for i, cell in enumerate(nb.cells):
            for marker in _SOLUTION_MARKERS:
                if marker in cell.source:
                    raise SiteError(f"{path}: cell {i} holds {marker!r}: an exercise on the "
                                    "site must come from `vmkit release`")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    return Page(kind, path, f"{path.stem}.html", _title_of_markdown(markdown, path.stem),
                _plain(markdown + "\n" + code))


def _markdown_page(kind: str, path: Path, name: str | None = None,
                   title: str | None = None) -> Page:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SiteError(f"{path}: cannot read ({e.strerror})") from None
    return Page(kind, path, name or f"{path.stem}.html",
                title or _title_of_markdown(text, path.stem), _plain(text))


def _plain(text: str) -> str:
    text = re.sub(r"<[^>]+>", " ", text)
    text = re.sub(r"[#*`|>_]+", " ", text)
    return re.sub(r"\s+", " ", text).strip()[:SEARCH_TEXT_LIMIT]


def _is_notes(cell) -> bool:
    return cell.get("metadata", {}).get("slideshow", {}).get("slide_type") == "notes"


def site_pages(notebooks: Iterable | None = None, exercises=DEFAULT,
               docs=DEFAULT) -> list[Page]:
    """The pages of the site in reading order: the lectures (default
    ``notebooks/NN-*.ipynb``), the homework's README and exercises (``exercises/``), the docs
    (``docs/*.md``, the reference card last). ``exercises`` or ``docs`` None: left out."""
    if exercises == DEFAULT:
        exercises = resources.exercises_dir()
    if docs == DEFAULT:
        docs = resources.docs_dir()
    notebooks = (lecture_notebooks(resources.notebooks_dir()) if notebooks is None
                 else [Path(p) for p in notebooks])
    pages = [_notebook_page("lecture", Path(p)) for p in notebooks]
    if exercises is not None:
        exercises = Path(exercises)
        if not exercises.is_dir():
            raise SiteError(f"{exercises}: no such folder (the released exercises)")
        readme = exercises / "README.md"
        if readme.is_file():
            # its heading speaks to the instructor ("generated: do not edit")
            pages.append(_markdown_page("exercise", readme, "homework.html",
                                        "The homework: how it works"))
        pages += [_notebook_page("exercise", p) for p in sorted(exercises.glob("*.ipynb"))]
    if docs is not None:
        docs = Path(docs)
        if not docs.is_dir():
            raise SiteError(f"{docs}: no such folder")
        mds = sorted(docs.glob("*.md"), key=lambda p: (p.name == REFERENCE_CARD, p.name))
        pages += [_markdown_page("doc", p) for p in mds]
    names = [p.name for p in pages]
    for name in names:
        if names.count(name) > 1 or name in ("index.html", "search.html"):
            clash = [str(p.source) for p in pages if p.name == name]
            raise SiteError(f"two sources would make the same page {name}: {clash}")
    return pages


# --- the parts of every page --------------------------------------------------------------------


def _nav(pages: list[Page]) -> str:
    reference = next((p for p in pages if p.source.name == REFERENCE_CARD), None)
    links = ['<a class="vmkit-site-home" href="index.html">vmkit course</a>',
             '<a href="index.html#lectures">Lectures</a>',
             '<a href="index.html#exercises">Exercises</a>',
             '<a href="index.html#docs">Docs</a>']
    if reference is not None:
        links.append(f'<a href="{reference.name}">Reference card</a>')
    return ('<nav class="vmkit-site-nav" aria-label="course">' + "\n".join(links)
            + '<form action="search.html" role="search"><input type="search" name="q" '
              'placeholder="Search the course" aria-label="Search the course"></form></nav>')


def _pager(pages: list[Page], i: int) -> str:
    parts = ['<nav class="vmkit-site-pager" aria-label="previous and next page">']
    if i > 0:
        prev = pages[i - 1]
        parts.append(f'<a class="vmkit-site-prev" rel="prev" href="{prev.name}">← '
                     f'{html.escape(prev.title)}</a>')
    if i + 1 < len(pages):
        nxt = pages[i + 1]
        parts.append(f'<a class="vmkit-site-next" rel="next" href="{nxt.name}">'
                     f'{html.escape(nxt.title)} →</a>')
    return "".join(parts) + "</nav>"


def _shell(title: str, body: str, nav: str, scripts: Iterable[str] = (),
           math: bool = True) -> str:
    """A page of the site that nbconvert does not make (markdown, index, search)."""
    head = [f'<link rel="stylesheet" href="{ASSETS}/site/site.css">']
    if math:
        head += [f'<script src="{ASSETS}/site/mathjax-config.js"></script>',
                 f'<script src="{ASSETS}/mathjax/es5/tex-svg.js"></script>']
    tail = "".join(f'<script src="{s}"></script>' for s in scripts)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)} · vmkit course</title>\n" + "\n".join(head)
            + f"\n</head>\n<body>\n{nav}\n{body}\n{tail}\n</body>\n</html>\n")


_HREF = re.compile(r'(<a\b[^>]*?\shref=")([^"]*)("[^>]*>)(.*?)(</a>)', re.IGNORECASE | re.DOTALL)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//")


def _relink(page_html: str, source: Path, targets: dict[Path, str]) -> str:
    """Point relative links of ``source``'s page at the site's pages (see the module doc)."""

    own = set(targets.values()) | {"index.html", "search.html"}

    def fix(m: re.Match) -> str:
        href = html.unescape(m.group(2))
        if not href or href.startswith("#") or _SCHEME.match(href):
            return m.group(0)
        path, _, fragment = href.partition("#")
        if not path or path in own:  # a link of the site's own (navigation)
            return m.group(0)
        target = targets.get((source.parent / path).resolve())
        if target is not None:
            new = target + (f"#{fragment}" if fragment else "")
            return f"{m.group(1)}{html.escape(new)}{m.group(3)}{m.group(4)}{m.group(5)}"
        return (f'<span class="vmkit-site-offsite" title="{html.escape(path)} (in the kit\'s '
                f'files, not on this site)">{m.group(4)}</span>')

    return _HREF.sub(fix, page_html)


# --- building -----------------------------------------------------------------------------------


def _exporter():
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    c = Config()
    c.HTMLExporter.extra_template_basedirs = [str(resources.site_share())]
    c.HTMLExporter.template_name = SITE_TEMPLATE
    c.HTMLExporter.mathjax_url = f"{ASSETS}/mathjax/es5/tex-svg.js"
    c.HTMLExporter.require_js_url = f"{ASSETS}/requirejs/require.js"
    # nothing may point at a CDN, even where the template does not use it
    c.HTMLExporter.jquery_url = ""
    c.HTMLExporter.mermaid_js_url = ""
    c.HTMLExporter.mermaid_layout_elk_js_url = ""
    c.HTMLExporter.jupyter_widgets_base_url = ""
    c.HTMLExporter.font_awesome_url = ""
    c.NbConvertBase.display_data_priority = PAGE_DISPLAY_PRIORITY
    c.HTMLExporter.anchor_link_text = "¶"
    return HTMLExporter(config=c)


def _notebook_html(exporter, page: Page, nav: str, pager: str) -> str:
    nb = _read_notebook(page.source)
    nb.metadata.pop("widgets", None)  # the widgets' static pictures, not the widget views
    nb.cells = [c for c in nb.cells if not _is_notes(c)]  # the instructor's notes: not here
    resources = {"metadata": {"name": page.title, "path": str(page.source.parent)},
                 "vmkit_site": {"assets": ASSETS, "header": nav, "footer": pager}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return body


def _markdown_html(page: Page, nav: str, pager: str) -> str:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True}).enable("table")
    text = page.source.read_text(encoding="utf-8")
    body = f'<main class="vmkit-doc">\n{md.render(text)}\n</main>\n{pager}'
    return _shell(page.title, body, nav)


_KINDS = (("lectures", "lecture", "Lectures"), ("exercises", "exercise", "Exercises"),
          ("docs", "doc", "Documentation"))


def _index_html(pages: list[Page], nav: str) -> str:
    parts = ['<main class="vmkit-doc vmkit-site-index">',
             "<h1>vmkit: virtual machine monitors, hands on</h1>",
             "<p>The lectures with their results and pictures, the homework and the kit's "
             "documentation. Everything here works offline; to run the notebooks and their "
             "widgets, open them in JupyterLab (<code>make lab</code>). Looking for something? "
             '<a href="search.html">Search</a> the whole course.</p>']
    for anchor, kind, heading in _KINDS:
        chosen = [p for p in pages if p.kind == kind]
        if not chosen:
            continue
        parts.append(f'<h2 id="{anchor}">{heading}</h2><ul>')
        parts += [f'<li><a href="{p.name}">{html.escape(p.title)}</a></li>' for p in chosen]
        parts.append("</ul>")
    parts.append("</main>")
    return _shell("Contents", "\n".join(parts), nav, math=False)


def _search_html(nav: str) -> str:
    body = ('<main class="vmkit-doc"><h1>Search</h1>'
            '<form action="search.html" role="search"><input id="vmkit-search-query" '
            'type="search" name="q" aria-label="Search the course"> '
            '<button type="submit">Search</button></form>'
            '<div id="vmkit-search-results"></div></main>')
    return _shell("Search", body, nav, scripts=[SEARCH_INDEX, f"{ASSETS}/site/search.js"],
                  math=False)


def build_site(output_dir, notebooks: Iterable | None = None, exercises=DEFAULT,
               docs=DEFAULT, build=None) -> list[Path]:
    """Write the site into ``output_dir``; returns the paths of its HTML pages (index first).

    ``notebooks``, ``exercises`` and ``docs`` as in :func:`site_pages`; ``build``: where the
    npm packages are cached (:func:`vmkit.nbtools.ensure_slide_assets`). Raises
    :class:`SiteError` (or :class:`vmkit.nbtools.SlidesError` when npm fails).
    """
    pages = site_pages(notebooks, exercises, docs)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ensure_slide_assets(out / ASSETS, build=build)
    (out / ASSETS / "site").mkdir(parents=True, exist_ok=True)
    for name in _SITE_FILES:
        shutil.copyfile(resources.site_share() / name, out / ASSETS / "site" / name)
    targets = {p.source.resolve(): p.name for p in pages}
    nav = _nav(pages)
    exporter = _exporter()
    written = []
    for i, page in enumerate(pages):
        pager = _pager(pages, i)
        if page.source.suffix == ".ipynb":
            text = _notebook_html(exporter, page, nav, pager)
        else:
            text = _markdown_html(page, nav, pager)
        written.append(_write(out / page.name, _relink(text, page.source, targets)))
    index = [{"title": p.title, "url": p.name, "kind": p.kind, "text": p.text} for p in pages]
    (out / SEARCH_INDEX).write_text(
        "// Generated by vmkit.site: the search index of the course website.\n"
        "window.VMKIT_SEARCH_INDEX = " + json.dumps(index, ensure_ascii=False, indent=0)
        + ";\n", encoding="utf-8")
    written.insert(0, _write(out / "index.html", _index_html(pages, nav)))
    written.append(_write(out / "search.html", _search_html(nav)))
    return written


def _write(path: Path, text: str) -> Path:
    leftover = external_urls(text)
    if leftover:
        raise SiteError(f"{path.name} would load from the network: {leftover}")
    path.write_text(text, encoding="utf-8")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vmkit.site",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output-dir", type=Path, default=Path("build") / "site")
    args = parser.parse_args(argv)
    return run(args.output_dir)


def run(output_dir, prog: str = "python -m vmkit.site") -> int:
    """Build the site into ``output_dir`` and print where; 1 with a one-line message on
    failure (the command line's ``vmkit site`` and ``python -m vmkit.site``)."""
    from vmkit.nbtools import SlidesError

    try:
        pages = build_site(output_dir)
    except (VmkitError, SlidesError, OSError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    print(f"{len(pages)} pages in {output_dir}; open {pages[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
