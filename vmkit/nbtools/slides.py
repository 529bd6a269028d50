"""Offline slides: lecture notebooks as reveal.js decks that load nothing from the internet.

:func:`build_slides` exports notebooks with the template ``vmkit-reveal`` (the checkout's
``share/slides/``, or the installed kit's copy: :func:`vmkit.resources.slides_share`), which
replaces every CDN link of nbconvert's reveal template; :func:`ensure_slide_assets` installs
reveal.js, require.js and MathJax at the versions pinned in the template's
``package-lock.json`` (``npm ci``, cached in :func:`vmkit.resources.cache_dir`'s ``npm/``:
``build/npm`` in a checkout, ``~/.cache/vmkit/npm`` for an installed kit) and copies them into
``assets/`` beside the decks. Widgets appear in slides through the static ``text/html`` or
``image/svg+xml`` that their display bundle carries next to the widget view. Every slide fits
:data:`SLIDE_SIZE`: the template's style sheet (``vmkit-slides.css``) wraps code and bounds
pictures, and its script shrinks a slide that is still too big, down to
:data:`SLIDE_MIN_ZOOM` (``tests/course/test_slides.py`` measures each one).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterable

from vmkit import resources
from vmkit.errors import VmkitError

__all__ = ["SLIDE_SIZE", "SLIDE_MIN_ZOOM", "SLIDES_TEMPLATE", "SlidesError", "build_slides",
           "ensure_slide_assets", "external_urls"]

SLIDES_TEMPLATE = "vmkit-reveal"

REVEAL_THEME = "white"

#: the slide box (width, height) in CSS pixels: a 16:9 projector or laptop screen at 1280x720;
#: reveal.js scales the whole box to the window, and every slide's content must fit inside it
SLIDE_SIZE = (1280, 720)
#: a slide whose content is taller or wider than the box is shrunk (CSS zoom) to fit, but never
#: below this factor: 15 px code stays at least 9 px; content that needs more is split
SLIDE_MIN_ZOOM = 0.6

# (package, files or folders inside it, where under assets/) copied from node_modules:
# what the template loads, the files those load in turn (the theme's fonts, MathJax's TeX
# extensions, fetched on first use) and each package's licence (requirejs states its MIT
# licence in package.json)
_ASSETS = [
    ("reveal.js", ["dist/reveal.js", "dist/reveal.css", "dist/theme", "plugin/notes/notes.js",
                   "LICENSE"], "reveal.js"),
    ("requirejs", ["require.js", "package.json"], "requirejs"),
    ("mathjax", ["es5/tex-svg.js", "es5/input/tex/extensions", "LICENSE"], "mathjax"),
]

# what the decks ask for, relative to the deck
ASSET_URLS = {
    "reveal_url_prefix": "assets/reveal.js",
    "require_js_url": "assets/requirejs/require.js",
    "mathjax_url": "assets/mathjax/es5/tex-svg.js",
}

# outputs in slides: static pictures and HTML first; never the widget view (it needs the
# embed manager) nor application/javascript
SLIDES_DISPLAY_PRIORITY = [
    "text/html",
    "text/markdown",
    "image/svg+xml",
    "text/latex",
    "image/png",
    "image/jpeg",
    "text/plain",
]


#: cell tag: on slides, show the cell's output without its code
HIDE_INPUT_TAG = "hide-input"
#: cell tag: on slides, the cell's printed output flows in two columns (vmkit-slides.css)
COLUMNS_TAG = "slide-columns"


class SlidesError(VmkitError, RuntimeError):
    """Building the slides failed (npm missing or failing, a deck with external links)."""


def _npm_dir(build: Path) -> Path:
    return build / "npm"


def ensure_slide_assets(dest, build=None) -> Path:
    """Put reveal.js, require.js and MathJax into ``dest`` (normally ``<decks>/assets``).

    The packages come from ``npm ci`` on the template's ``package-lock.json`` in
    ``<build>/npm`` (default: :func:`vmkit.resources.cache_dir`), run again only when the lock
    file changes. Safe to call from several processes at once. Returns ``dest``.
    """
    import fcntl

    share = resources.slides_share()
    build = Path(build) if build is not None else resources.cache_dir()
    npm_dir = _npm_dir(build)
    npm_dir.mkdir(parents=True, exist_ok=True)
    lock_src = share / "package-lock.json"
    if not lock_src.is_file():
        raise SlidesError(f"{lock_src} is missing: reinstall vmkit (its wheel carries it)")
    digest = hashlib.sha256(lock_src.read_bytes()
                            + (share / "package.json").read_bytes()).hexdigest()
    with open(npm_dir / ".lock", "w") as lockfile:
        fcntl.flock(lockfile, fcntl.LOCK_EX)
        stamp = npm_dir / "node_modules" / ".vmkit-stamp"
        if not stamp.is_file() or stamp.read_text() != digest:
            npm = shutil.which("npm")
            if npm is None:
                raise SlidesError("npm not found: `make sysdeps` installs it "
                                  "(apt-get install npm)")
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(share / name, npm_dir / name)
            cmd = [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts",
                   "--loglevel=error"]
            proc = subprocess.run(cmd, cwd=npm_dir, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SlidesError(f"{' '.join(cmd)} in {npm_dir} failed:\n"
                                  f"{proc.stdout}{proc.stderr}")
            stamp.write_text(digest)
        dest = Path(dest)
        modules = npm_dir / "node_modules"
        for package, parts, target in _ASSETS:
            for part in parts:
                src = modules / package / part
                out = dest / target / part
                out.parent.mkdir(parents=True, exist_ok=True)
                if src.is_dir():
                    shutil.copytree(src, out, dirs_exist_ok=True)
                else:
                    shutil.copyfile(src, out)
    theme = dest / "reveal.js" / "dist" / "theme" / f"{REVEAL_THEME}.css"
    leftover = external_urls(theme.read_text(encoding="utf-8"))
    if leftover:
        raise SlidesError(f"reveal.js theme {REVEAL_THEME} loads {leftover}")
    return dest


# attributes and CSS that make a browser fetch something (plain <a href> links do not)
_FETCHING = [
    re.compile(r"<(?:script|img|iframe|source|video|audio|embed|track|input)\b[^>]*?"
               r"\ssrc\s*=\s*[\"']?([^\"'\s>]+)", re.IGNORECASE),
    re.compile(r"<link\b[^>]*?\shref\s*=\s*[\"']?([^\"'\s>]+)", re.IGNORECASE),
    re.compile(r"<object\b[^>]*?\sdata\s*=\s*[\"']?([^\"'\s>]+)", re.IGNORECASE),
    re.compile(r"url\(\s*[\"']?([^\"')\s]+)", re.IGNORECASE),
    re.compile(r"@import\s+[\"']([^\"']+)", re.IGNORECASE),
    re.compile(r"\bimport\b[^;'\"]*?\bfrom\s*[\"']([^\"']+)"),
    re.compile(r"\bimport\s*\(\s*[\"']([^\"']+)"),
]
_REMOTE = re.compile(r"^(?:https?:)?//", re.IGNORECASE)


def external_urls(text: str) -> list[str]:
    """URLs in HTML or CSS ``text`` that a browser would fetch from the network."""
    found: list[str] = []
    for pattern in _FETCHING:
        for m in pattern.finditer(text):
            url = m.group(1)
            if _REMOTE.match(url) and url not in found:
                found.append(url)
    return found


def _slides_exporter():
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    c = Config()
    c.SlidesExporter.extra_template_basedirs = [str(resources.slides_share())]
    c.SlidesExporter.template_name = SLIDES_TEMPLATE
    c.SlidesExporter.reveal_theme = REVEAL_THEME
    c.SlidesExporter.reveal_transition = "none"
    c.SlidesExporter.reveal_width = str(SLIDE_SIZE[0])
    c.SlidesExporter.reveal_height = str(SLIDE_SIZE[1])
    for trait, url in ASSET_URLS.items():
        setattr(c.SlidesExporter, trait, url)
    # nothing may point at a CDN, even where the template does not use it
    c.SlidesExporter.jquery_url = ""
    c.SlidesExporter.mermaid_js_url = ""
    c.SlidesExporter.mermaid_layout_elk_js_url = ""
    c.SlidesExporter.jupyter_widgets_base_url = ""
    c.SlidesExporter.font_awesome_url = ""
    c.NbConvertBase.display_data_priority = SLIDES_DISPLAY_PRIORITY
    # a code cell tagged "hide-input" shows only its output on the slide
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_input_tags = {HIDE_INPUT_TAG}
    return SlidesExporter(config=c)


def build_slides(notebooks: Iterable, output_dir, build=None) -> list[Path]:
    """Export each notebook to ``<output_dir>/<name>.slides.html``; returns the deck paths.

    The assets go to ``<output_dir>/assets`` (:func:`ensure_slide_assets`). Saved widget state
    is left out, so widgets show their static fallback. Raises :class:`SlidesError` if a deck
    still refers to something on the network.
    """
    import nbformat

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ensure_slide_assets(output_dir / "assets", build=build)
    exporter = _slides_exporter()
    decks = []
    for path in map(Path, notebooks):
        nb = nbformat.read(path, as_version=4)
        nb.metadata.pop("widgets", None)
        resources = {"metadata": {"name": path.stem, "path": str(path.parent)},
                     "vmkit_min_zoom": SLIDE_MIN_ZOOM}
        try:
            html, _ = exporter.from_notebook_node(nb, resources=resources)
        except ValueError as e:  # nbconvert's "No template sub-directory ..." and the like
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SlidesError(f"{path}: nbconvert could not export it: {first}") from None
        leftover = external_urls(html)
        if leftover:
            raise SlidesError(f"{path}: the deck would load from the network: {leftover}")
        deck = output_dir / f"{path.stem}.slides.html"
        deck.write_text(html, encoding="utf-8")
        decks.append(deck)
    return decks



def default_output_dir() -> Path:
    """Where ``vmkit slides`` writes the decks by default: the checkout's ``build/slides``,
    else ``slides/`` in the current folder (never inside the installed package)."""
    root = resources.checkout_root()
    return root / "build" / "slides" if root is not None else Path("slides")
