"""Grading step: an HTML feedback page per submission that a student can open safely.

The page is built here cell by cell (not by nbconvert's templates, which load scripts):

- everything that came from the submission (markdown, HTML outputs) goes through ``nh3``, a
  well-kept allow-list sanitiser: no ``<script>``, no event attributes (``onerror``), no
  ``javascript:`` URLs, no styles; JavaScript outputs and widget state are never written;
  images are written by the grader as ``data:`` URLs (an SVG as an ``<img>``, in which no
  script runs);
- a Content-Security-Policy in the page itself forbids every script and every request (images
  from ``data:`` only), in case anything slipped through;
- hidden tests appear only as their result and message: a test cell shows its visible part
  as released, then the row's status, never the hidden code nor its traceback;
- self-contained: no CDN, no asset beside it (math is drawn by matplotlib's mathtext, in a
  process of its own, as inline SVG images, so no MathJax is needed);
- the page names the student, the assignment and the variant ``P`` it graded.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
from pathlib import Path

__all__ = ["feedback_html", "write_feedback", "CSP"]

#: the page's own policy: no script, no request, images from data: URLs only
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; form-action 'none'"

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 1.5rem auto;
       padding: 0 1rem; color: #111; background: #fff; }
pre { background: #f5f5f5; padding: .5rem; overflow-x: auto; white-space: pre-wrap; }
pre.input { border-left: 3px solid #89a; }
pre.error { background: #fdecea; }
table { border-collapse: collapse; } td, th { border: 1px solid #bbb; padding: 2px 8px; }
.result { font-weight: bold; margin: .2rem 0 1rem; }
.ok { color: #176317; } .bad { color: #a11; } img { max-width: 100%; }
img.math { vertical-align: middle; }
"""

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_URL_SCHEMES = {"http", "https", "mailto"}


def _attribute(tag: str, attr: str, value: str):
    """nh3's attribute filter: an image only from a ``data:`` URL (a remote or relative one
    would be a request when the page opens), a link never to one."""
    if tag == "img" and attr == "src" and not value.startswith("data:image/"):
        return None
    if attr != "src" and value.strip().lower().startswith("data:"):
        return None  # a link to a data: page
    return value


def _clean(fragment: str) -> str:
    import nh3
    return nh3.clean(fragment, url_schemes=_URL_SCHEMES | {"data"},
                     link_rel="noopener noreferrer nofollow", attribute_filter=_attribute)


_MATH = re.compile(r"\$\$(.+?)\$\$|\$([^$\n]+?)\$", re.S)
_VERBATIM = re.compile(r"(<pre.*?</pre>|<code.*?</code>)", re.S)


#: draws TeX formulas with matplotlib's mathtext, in a process of its own (this package does
#: not import matplotlib): reads a JSON list of formulas, prints a JSON list of base64 SVGs
#: (None where mathtext cannot draw one)
_DRAW_TEX = r"""
import base64, io, json, sys
from matplotlib import mathtext
out = []
for tex in json.loads(sys.stdin.read()):
    buf = io.BytesIO()
    try:
        mathtext.math_to_image("$" + tex + "$", buf, format="svg")
        out.append(base64.b64encode(buf.getvalue()).decode())
    except Exception:
        out.append(None)
sys.stdout.write(json.dumps(out))
"""


def _draw(formulas: list[str]) -> dict:
    """TeX -> base64 SVG for each of ``formulas`` that mathtext can draw (none if it fails)."""
    import subprocess
    import sys

    todo = sorted(set(formulas))
    if not todo:
        return {}
    try:
        proc = subprocess.run([sys.executable, "-c", _DRAW_TEX], input=json.dumps(todo),
                              capture_output=True, text=True, timeout=120,
                              env={**__import__("os").environ, "MPLBACKEND": "svg"})
        images = json.loads(proc.stdout)
    except Exception:
        return {}
    return {t: i for t, i in zip(todo, images) if i}


def _math_pages(fragments: list[str]) -> list[str]:
    """Every ``$...$`` / ``$$...$$`` of the sanitised HTML ``fragments``, outside code, drawn
    as an inline SVG image (all of a page's formulas in one process)."""
    def split(fragment):
        return _VERBATIM.split(fragment)
    formulas = [html.unescape(m.group(1) or m.group(2))
                for f in fragments for i, p in enumerate(split(f)) if not i % 2
                for m in _MATH.finditer(p)]
    drawn = _draw(formulas)

    def draw(m):
        tex = html.unescape(m.group(1) or m.group(2))
        if tex not in drawn:
            return m.group(0)
        return (f'<img class="math" alt="{html.escape(tex, quote=True)}" '
                f'src="data:image/svg+xml;base64,{drawn[tex]}">')
    return ["".join(p if i % 2 else _MATH.sub(draw, p) for i, p in enumerate(split(f)))
            for f in fragments]


def _markdown(text: str) -> str:
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    return _clean(markdown2html_mistune(text))


def _text(s) -> str:
    s = "".join(s) if isinstance(s, list) else str(s)
    return html.escape(_ANSI.sub("", s))


def _image(mime: str, data) -> str:
    data = "".join(data) if isinstance(data, list) else str(data)
    if mime == "image/svg+xml":
        data = base64.b64encode(data.encode("utf-8")).decode()
    else:
        try:
            base64.b64decode(data.replace("\n", ""), validate=True)
        except (binascii.Error, ValueError):
            return "<pre>[an image that is not valid base64]</pre>"
        data = data.replace("\n", "")
    return f'<img alt="output" src="data:{mime};base64,{data}">'


def _output(out) -> str:
    from vmkit.homework.checks import ANSWER_MARK

    kind = out.get("output_type")
    if kind == "stream":
        text = "".join(out.get("text", "")) if isinstance(out.get("text"), list) \
            else str(out.get("text", ""))
        text = "\n".join(l for l in text.split("\n") if not l.startswith(ANSWER_MARK))
        return f"<pre>{_text(text)}</pre>" if text.strip() else ""
    if kind == "error":
        tb = "\n".join(out.get("traceback", []) or [])
        return f'<pre class="error">{_text(tb or (out.get("ename", "") + ": " + str(out.get("evalue", ""))))}</pre>'
    data = out.get("data", {}) or {}
    for mime in ("image/png", "image/jpeg", "image/svg+xml"):
        if mime in data:
            return _image(mime, data[mime])
    if "text/html" in data:
        h = data["text/html"]
        return _clean("".join(h) if isinstance(h, list) else str(h))
    if "text/markdown" in data:
        m = data["text/markdown"]
        return _markdown("".join(m) if isinstance(m, list) else str(m))
    for mime in ("text/latex", "text/plain"):
        if mime in data:
            return f"<pre>{_text(data[mime])}</pre>"
    return ""  # JavaScript, widget views without a static form: nothing


def _visible(source: str) -> str:
    """A test cell's source without its hidden part (as released)."""
    return re.sub(r"[ \t]*### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS[ \t]*\n?", "",
                  source, flags=re.S).rstrip()


def _fmt(x) -> str:
    return "—" if x is None else html.escape(str(x))


def feedback_html(nb, rows, messages=(), student: str | None = None,
                  assignment: str | None = None) -> str:
    """The graded notebook ``nb`` (None: only the table and messages) as one safe HTML page,
    the student, the assignment, the variant and a table of the questions' points first."""
    from vmkit.homework import cells

    auto = [r for r in rows if r.status != "manual"]
    got = sum(r.points or 0 for r in auto)
    top = sum(r.max_points or 0 for r in auto)
    parts = [f"<h1>Feedback: {_fmt(assignment)}</h1>",
             f"<p>Student: <code>{_fmt(student)}</code></p>"]
    if student is not None and assignment is not None:
        try:
            from vmkit.homework.variant import VARIANTS, student_params
            if assignment in VARIANTS:
                P = json.dumps(student_params(assignment, student), sort_keys=True)
                parts.append(f"<p>Graded for the variant <code>P = {html.escape(P)}</code></p>")
        except Exception:
            pass
    parts.append("<h2>Grade</h2><table><tr><th>question</th><th>points</th><th>max</th>"
                 "<th>status</th><th>message</th></tr>")
    for r in rows:
        parts.append(f"<tr><td>{_fmt(r.question)}</td><td>{_fmt(r.points)}</td>"
                     f"<td>{_fmt(r.max_points)}</td><td>{_fmt(r.status)}</td>"
                     f"<td>{html.escape(getattr(r, 'message', '') or '')}</td></tr>")
    parts.append("</table>")
    parts.append(f"<p><strong>Automatic total: {_fmt(got)} / {_fmt(top)}</strong> (questions "
                 "marked <em>manual</em> are graded by hand).</p>")
    parts += [f"<blockquote>{html.escape(str(m))}</blockquote>" for m in messages]
    by_id = {r.question: r for r in rows}
    if nb is not None:
        parts.append("<h2>Your notebook, as graded</h2>")
        for cell in nb.cells:
            src = cell.get("source", "")
            src = "".join(src) if isinstance(src, list) else str(src)
            if cell.get("cell_type") == "markdown":
                parts.append(_markdown(src))
            elif cell.get("cell_type") == "code":
                if cells.is_test(cell):
                    parts.append(f'<pre class="input">{_text(_visible(src))}</pre>')
                    r = by_id.get(cells.grade_id(cell))
                    if r is not None:
                        cls = "ok" if r.status == "ok" else "bad"
                        msg = f" — {html.escape(r.message)}" if r.message and r.message not in (
                            "AssertionError",) else ""
                        for o in cell.get("outputs", []):
                            if o.get("output_type") == "error":  # the visible test's words
                                msg += " — " + _text(f"{o.get('ename', '')}: "
                                                     f"{o.get('evalue', '')}"[:2000])
                                break
                        parts.append(f'<p class="result {cls}">{_fmt(r.question)}: '
                                     f"{_fmt(r.status)}{msg}</p>")
                    continue
                parts.append(f'<pre class="input">{_text(src)}</pre>')
                parts += [_output(o) for o in cell.get("outputs", [])]
    parts = _math_pages([p for p in parts if p])
    title = html.escape(f"Feedback {assignment or ''} {student or ''}".strip())
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            f"<title>{title}</title><style>{_STYLE}</style></head>\n<body>\n"
            + "\n".join(p for p in parts if p) + "\n</body></html>\n")


def write_feedback(nb, rows, path, messages=(), student: str | None = None,
                   assignment: str | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(feedback_html(nb, rows, messages, student, assignment), encoding="utf-8")
    return path
