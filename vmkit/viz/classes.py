"""Popek & Goldberg's instruction classes, and what a monitor does (not) see, drawn for lectures.

Pure functions: they read a classification table (:func:`vmkit.classify_all`), Robin & Irvine
comparison rows (:func:`vmkit.vmm.classify.compare_robin_irvine`), console text or trace events,
and return a :class:`~vmkit.viz.render.Diagram` or an HTML string. Nothing here runs a guest or
an instruction. Marks never rely on colour alone: differing console lines are also bold with a
``≠`` marker, violators also carry a dashed border and a ``†`` where Theorem 3 fails as well.

>>> from vmkit.viz.classes import class_diagram, consoles_html
>>> class_diagram(vmkit.classify_all())                     # doctest: +SKIP
>>> HTML(consoles_html({"native": native.console, "te": te.console}))   # doctest: +SKIP
"""

from __future__ import annotations

import html as _html
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from vmkit.viz.render import (CSS_BORDER, CSS_HIGHLIGHT, CSS_MUTED, CSS_PANEL, CSS_TEXT, GREY,
                               OKABE_ITO, Diagram)

__all__ = ["class_groups", "class_diagram", "classification_html", "consoles_html",
           "robin_irvine_html", "Sighting", "vmm_view", "vmm_view_html", "left_align"]

_FONT = "font-family:sans-serif;font-size:13px"
_CELL = f"padding:2px 8px;border:1px solid {CSS_BORDER};text-align:left;vertical-align:top;"
_MONO = "font-family:monospace;font-size:12px"


def _esc(s) -> str:
    return _html.escape(str(s), quote=True)


def _caption(title: str | None) -> str:
    return (f'<caption style="text-align:left;font-weight:bold;{_FONT};padding:2px 0">'
            f'{_esc(title)}</caption>' if title else "")


_CELL_TAG = re.compile(r"<(td|th|caption)(\s[^>]*)?>")


def left_align(html: str) -> str:
    """``html`` with every table cell and caption aligned left and to the top.

    Notebook and nbconvert stylesheets right-align table cells, which makes tables of text
    (descriptions, console lines, the classification table) hard to read; an inline style
    wins over them. Cells that already carry a ``style`` attribute get the alignment first,
    so their own ``text-align`` (if any) still applies."""
    def fix(m: re.Match) -> str:
        tag, attrs = m.group(1), m.group(2) or ""
        align = "text-align:left;vertical-align:top;"
        if re.search(r"\sstyle\s*=\s*\"", attrs):
            attrs = re.sub(r'(\sstyle\s*=\s*")', lambda s: s.group(1) + align, attrs, count=1)
        else:
            attrs += f' style="{align}"'
        return f"<{tag}{attrs}>"
    return _CELL_TAG.sub(fix, html)


# ---- the classes as sets -----------------------------------------------------------------------

def class_groups(rows: Iterable) -> dict[str, list]:
    """Split classified instructions (objects with ``privileged``, ``sensitive``) into the four
    regions of the privileged/sensitive picture, in table order:

    ``"privileged_sensitive"``, ``"sensitive_only"`` (sensitive, not privileged: Theorem 1's
    violators), ``"privileged_only"`` (privileged but innocuous) and ``"innocuous"`` (neither).
    """
    groups: dict[str, list] = {"privileged_sensitive": [], "sensitive_only": [],
                               "privileged_only": [], "innocuous": []}
    for r in rows:
        if r.privileged and r.sensitive:
            groups["privileged_sensitive"].append(r)
        elif r.sensitive:
            groups["sensitive_only"].append(r)
        elif r.privileged:
            groups["privileged_only"].append(r)
        else:
            groups["innocuous"].append(r)
    return groups


def _list_label(rows: list, per_line: int, limit: int | None = None, dagger: bool = False
                ) -> str:
    """Instruction names, ``per_line`` to a line, left-justified (graphviz ``\\l``)."""
    names = [r.instruction + ("†" if dagger and getattr(r, "violates_theorem3", False) else "")
             for r in rows]
    more = 0
    if limit is not None and len(names) > limit:
        more = len(names) - limit
        names = names[:limit]
    lines = ["   ".join(names[i:i + per_line]) for i in range(0, len(names), per_line)]
    if more:
        lines.append(f"… and {more} more")
    return "".join(_dot_escape(line) + "\\l" for line in lines) if lines else "(none)\\l"


def _dot_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def class_diagram(table, *, per_line: int = 4, innocuous_shown: int = 12,
                  title: str | None = None) -> Diagram:
    """The instruction forms of ``table`` (a :class:`ClassificationTable` or any iterable of
    classifications) as nested sets: all forms ⊃ sensitive ⊃ privileged.

    The band of the sensitive set outside the privileged set holds Theorem 1's violators
    (dashed, vermillion; ``†`` marks those that break Theorem 3 too). Theorem 1 holds exactly
    when that band is empty. Privileged but innocuous forms, if any, get a box of their own.
    ``innocuous_shown`` limits the innocuous forms listed by name."""
    rows = list(getattr(table, "rows", table))
    g = class_groups(rows)
    n_sens = len(g["privileged_sensitive"]) + len(g["sensitive_only"])
    n_priv = len(g["privileged_sensitive"]) + len(g["privileged_only"])
    if title is None:
        title = (f"Popek & Goldberg classes of {len(rows)} instruction forms, found by "
                 f"experiment")
    d = Diagram("classes", title=title, engine="dot")
    d.attr(label=title, labelloc="t", fontname="Helvetica", fontsize="14", rankdir="TB",
           nodesep="0.3", ranksep="0.25")
    d.attr("node", shape="box", style="rounded,filled", fontname="Courier", fontsize="11",
           fillcolor="white", color=OKABE_ITO["black"])
    with d.subgraph(name="cluster_all") as a:
        a.attr(label=f"all {len(rows)} instruction forms", labeljust="l", style="rounded",
               color=GREY, fontname="Helvetica", fontsize="12")
        with a.subgraph(name="cluster_sensitive") as s:
            s.attr(label=f"sensitive ({n_sens}): control- or behaviour-sensitive",
                   labeljust="l", style="rounded,bold", color=OKABE_ITO["vermillion"],
                   fontname="Helvetica", fontsize="12")
            with s.subgraph(name="cluster_privileged") as p:
                p.attr(label=f"privileged and sensitive ({len(g['privileged_sensitive'])}): "
                             f"they trap in ring 1 and 3, a monitor emulates them",
                       labeljust="l", style="rounded,filled", fillcolor="#E3F4EE",
                       color=OKABE_ITO["bluish_green"], fontname="Helvetica", fontsize="12")
                p.node("privileged", _list_label(g["privileged_sensitive"], per_line))
            n3 = sum(1 for r in g["sensitive_only"] if getattr(r, "violates_theorem3", False))
            header = (f"sensitive, NOT privileged ({len(g['sensitive_only'])}): "
                      f"Theorem 1 fails for these")
            if n3:
                header += f"; † = user-sensitive too, Theorem 3 fails ({n3})"
            s.node("violators", _dot_escape(header) + "\\l" +
                   _list_label(g["sensitive_only"], per_line, dagger=True),
                   color=OKABE_ITO["vermillion"], style="rounded,filled,dashed,bold",
                   fillcolor="#FBE3D6")
            d.edge("privileged", "violators", style="invis")
        if g["privileged_only"]:
            a.node("privonly", _dot_escape(f"privileged but innocuous "
                                           f"({len(g['privileged_only'])})") + "\\l" +
                   _list_label(g["privileged_only"], per_line), color=OKABE_ITO["blue"])
        a.node("innocuous", _dot_escape(f"innocuous ({len(g['innocuous'])}): run directly, "
                                        f"no monitor needed") + "\\l" +
               _list_label(g["innocuous"], per_line + 2, limit=innocuous_shown),
               color=GREY, fontcolor="#333333")
        d.edge("violators", "innocuous", style="invis")
    d.attr(label=f"{title}\nprivileged: {n_priv}, sensitive: {n_sens}, "
                 f"innocuous: {len(g['innocuous'])}")
    return d


# ---- one classification with its evidence -------------------------------------------------------

def classification_html(c, *, title: str | None = None) -> str:
    """One instruction's classes (a :class:`Classification`) and the evidence sentences that
    decided them, as a small HTML card."""
    def badge(text: str, on: bool, colour: str) -> str:
        if on:
            return (f'<span style="display:inline-block;margin:0 4px 2px 0;padding:0 6px;'
                    f'border:2px solid {colour};border-radius:4px;font-weight:bold">'
                    f'{_esc(text)}</span>')
        return (f'<span style="display:inline-block;margin:0 4px 2px 0;padding:0 6px;'
                f'border:1px dashed {CSS_MUTED};border-radius:4px;color:{CSS_MUTED}">'
                f'not {_esc(text)}</span>')
    badges = "".join([
        badge("privileged", c.privileged, OKABE_ITO["bluish_green"]),
        badge("control-sensitive", c.control_sensitive, OKABE_ITO["vermillion"]),
        badge("behaviour-sensitive", c.behavior_sensitive, OKABE_ITO["vermillion"]),
        badge("innocuous", c.innocuous, OKABE_ITO["blue"]),
    ])
    verdict = ""
    if getattr(c, "violates_theorem1", False):
        verdict = (f'<div style="margin:4px 0;padding:2px 6px;background:#FBE3D6;'
                   f'border-left:4px solid {OKABE_ITO["vermillion"]}"><b>sensitive but not '
                   f'privileged:</b> it does not trap in a deprivileged kernel, so a '
                   f'trap-and-emulate monitor never sees it (Theorem 1\'s condition fails)'
                   f'</div>')
    items = "".join(f"<li>{_esc(e)}</li>" for e in getattr(c, "evidence", ()))
    head = _esc(title) if title else f"<code>{_esc(c.instruction)}</code>"
    return (f'<div class="vmkit-classification" style="{_FONT};border:1px solid #ccc;'
            f'padding:6px 10px;max-width:60em"><div style="font-size:15px;margin-bottom:4px">'
            f'{head}</div><div>{badges}</div>{verdict}<div style="margin-top:4px">'
            f'<b>evidence</b><ul style="margin:2px 0 0 0;padding-left:1.4em">{items}</ul>'
            f'</div></div>')


# ---- consoles side by side ----------------------------------------------------------------------

def _console_of(x) -> str:
    return x if isinstance(x, str) else str(getattr(x, "console", ""))


def consoles_html(runs: Mapping, *, title: str | None = None,
                  notes: Mapping | None = None) -> str:
    """Console texts side by side, one column per run (``{"native": text_or_monitor, ...}``).

    The first column is the reference: a line of another column that differs from the
    reference's line at the same position is highlighted, bold and marked ``≠``. ``notes``
    maps a column's name to a line shown under its heading (e.g. how the run ended)."""
    names = list(runs)
    texts = {n: _console_of(runs[n]) for n in names}
    ref = texts[names[0]].splitlines() if names else []
    cols = []
    for i, n in enumerate(names):
        lines = texts[n].splitlines()
        body = []
        for j, line in enumerate(lines):
            differs = i > 0 and (j >= len(ref) or ref[j] != line)
            if differs:
                body.append(f'<span class="vmkit-differs" title="differs from {_esc(names[0])}"'
                            f' style="{CSS_HIGHLIGHT}font-weight:bold">≠ '
                            f'{_esc(line)}</span>')
            else:
                body.append(("  " if i > 0 else "") + _esc(line))
        if i > 0 and len(lines) < len(ref):
            body.append(f'<i style="color:{CSS_MUTED}">≠ (missing: {len(ref) - len(lines)} '
                        f'line(s) of {_esc(names[0])})</i>')
        if not lines:
            body = [f'<i style="color:{CSS_MUTED}">(no output)</i>']
        same = i > 0 and lines == ref
        status = (" — same as " + _esc(names[0])) if same else (
            " — differs" if i > 0 else " — reference")
        note = ""
        if notes and n in notes:
            note = f'<div style="color:{CSS_TEXT};font-size:12px">{_esc(notes[n])}</div>'
        cols.append(f'<div style="flex:1 1 0;min-width:18em"><div style="font-weight:bold">'
                    f'{_esc(n)}<span style="font-weight:normal;color:{CSS_TEXT}">{status}</span>'
                    f'</div>{note}<pre style="margin:2px 0;padding:4px;background:{CSS_PANEL};'
                    f'color:{CSS_TEXT};border:1px solid {CSS_BORDER};{_MONO};'
                    f'white-space:pre-wrap;word-break:normal;overflow-wrap:break-word">'
                    f'{chr(10).join(body)}</pre></div>')
    cap = f'<div style="font-weight:bold;margin-bottom:2px">{_esc(title)}</div>' if title else ""
    return (f'<div class="vmkit-consoles" style="{_FONT}">{cap}<div style="display:flex;'
            f'gap:12px;flex-wrap:wrap;align-items:flex-start">{"".join(cols)}</div></div>')


# ---- Robin & Irvine ----------------------------------------------------------------------------

def robin_irvine_html(checks: Iterable, *, title: str | None = None) -> str:
    """Robin & Irvine's instructions beside the experiments' verdicts.

    ``checks`` are rows from :func:`vmkit.vmm.classify.compare_robin_irvine` (each with
    ``entry`` — name, group, forms, why — ``rows``, the kit's classification of each form, and
    ``agrees``). The paper's two groups head their entries; each form the kit tried shows the
    kind of sensitivity found, or its whole classification where it is not "unprivileged,
    sensitive" (a disagreement, highlighted). Compact enough for a slide: four columns, one
    line an entry where the forms allow."""
    checks = list(checks)
    body = []
    group = None
    for ch in checks:
        e = ch.entry
        if e.group != group:
            group = e.group
            body.append(f'<tr class="vmkit-ri-group"><th colspan="4" style="{_CELL}'
                        f'text-align:left;background:{CSS_PANEL}">{_esc(group)}</th></tr>')
        forms = "<br>".join(
            f"<code>{_esc(r.instruction)}</code> {_sensitivity(r.classes)}" for r in ch.rows)
        mark = "✓ agrees" if ch.agrees else "✗ differs"
        style = "" if ch.agrees else f"{CSS_HIGHLIGHT}font-weight:bold;"
        body.append(f'<tr class="vmkit-ri-entry"><td style="{_CELL}"><b>{_esc(e.name)}</b></td>'
                    f'<td style="{_CELL}{_MONO}white-space:nowrap">{forms}</td>'
                    f'<td style="{_CELL}{style}white-space:nowrap">{mark}</td>'
                    f'<td style="{_CELL}">{_esc(e.why)}</td></tr>')
    agree = sum(1 for c in checks if c.agrees)
    if title is None:
        title = (f"Robin & Irvine (2000) against the experiments: {agree} of {len(checks)} "
                 f"entries come out sensitive and not privileged")
    head = "".join(f'<th style="{_CELL}">{h}</th>' for h in
                   ("Robin & Irvine", "the kit's forms: sensitive through", "verdict",
                    "why it is sensitive (paraphrased)"))
    return (f'<table class="vmkit-robin-irvine" style="border-collapse:collapse;{_FONT}">'
            f'{_caption(title)}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            f'</table>')


def _sensitivity(classes: str) -> str:
    """'unprivileged, sensitive (control, behaviour)' -> 'control, behaviour'; anything else
    (a form that is privileged or not sensitive) whole and highlighted."""
    prefix = "unprivileged, sensitive ("
    if classes.startswith(prefix) and classes.endswith(")"):
        return f'<span style="color:{CSS_MUTED}">{_esc(classes[len(prefix):-1])}</span>'
    return f'<span style="{CSS_HIGHLIGHT}font-weight:bold">{_esc(classes)}</span>'


# ---- what the monitor saw ----------------------------------------------------------------------

@dataclass(frozen=True)
class Sighting:
    """The first execution of one guest instruction and what the monitor did about it.

    ``ring`` is the real CPU's ring when the guest tried it; ``trap`` the exception it raised
    ("#GP", "#PF", or "" when none), ``emulated`` whether the monitor emulated it."""
    address: int
    text: str
    step: int
    ring: int
    trap: str = ""
    emulated: bool = False

    @property
    def seen(self) -> bool:
        """Did the monitor get control because of this instruction?"""
        return bool(self.trap) or self.emulated

    @property
    def reaction(self) -> str:
        if self.emulated:
            return f"trap ({self.trap or '?'}) → the VMM emulated it"
        if self.trap:
            return f"trap ({self.trap}) → the VMM handled it"
        return "— (no trap: the VMM never knew)"


def vmm_view(events: Iterable, start: int, end: int) -> list[Sighting]:
    """For each guest instruction at an address in ``[start, end)``, its first execution in
    ``events`` (a trace recorded with instruction events, ``Trace(instructions=True)``) and
    whether the monitor got control because of it: an exception raised *at* that address
    (an ``interrupt`` event of source "exception" with that ``eip``) or an ``emulate`` event
    for it. Device interrupts that happen to arrive there do not count: the instruction did
    not cause them. Rows in order of first execution."""
    events = list(events)
    out: dict[int, Sighting] = {}
    # index of each instruction event; the monitor's events for one instruction sit between
    # the previous instruction event and the next one
    idx = [i for i, e in enumerate(events) if getattr(e, "kind", "") == "instruction"]
    for k, i in enumerate(idx):
        e = events[i]
        a = e.address
        if not (start <= a < end) or a in out:
            continue
        lo = idx[k - 1] + 1 if k else 0
        hi = idx[k + 1] if k + 1 < len(idx) else len(events)
        trap, emulated, ring = "", False, e.ring
        for x in events[lo:hi]:
            kind = getattr(x, "kind", "")
            if kind == "interrupt" and getattr(x, "source", "") == "exception" and \
                    getattr(x, "eip", None) == a and getattr(x, "to_ring", None) == 0:
                trap = trap or (getattr(x, "name", "") or f"vector {x.vector}")
                ring = getattr(x, "from_ring", ring)   # where the guest tried it
            elif kind == "emulate" and getattr(x, "address", None) == a:
                emulated = True
        out[a] = Sighting(a, e.text, e.step, ring, trap, emulated)
    return list(out.values())


def vmm_view_html(rows: Iterable[Sighting], *, mark: Iterable[str] = (),
                  title: str | None = None, source=None) -> str:
    """A table of :func:`vmm_view` rows: address, instruction, ring, what the monitor did.
    Rows whose mnemonic is in ``mark`` are highlighted (bold, tinted, ``◀``); ``source`` is an
    optional ``address -> (file, line)`` function (e.g. ``image.line_of``)."""
    marks = {m.lower() for m in mark}
    body = []
    for r in rows:
        mnemonic = r.text.split()[0].lower() if r.text else ""
        hot = mnemonic in marks
        style = f"{CSS_HIGHLIGHT}font-weight:bold;" if hot else ""
        where = ""
        if source is not None:
            try:
                loc = source(r.address)
            except Exception:
                loc = None
            if loc:
                where = f"{str(loc[0]).rsplit('/', 1)[-1]}:{loc[1]}"
        seen = r.reaction
        colour = OKABE_ITO["bluish_green"] if r.seen else OKABE_ITO["vermillion"]
        body.append(f'<tr style="{style}"><td style="{_CELL}{_MONO}">{r.address:08x}</td>'
                    f'<td style="{_CELL}{_MONO}">{_esc(r.text)}{" ◀" if hot else ""}</td>'
                    f'<td style="{_CELL}{_MONO}">{_esc(where)}</td>'
                    f'<td style="{_CELL}text-align:center">{r.ring}</td>'
                    f'<td style="{_CELL}border-left:4px solid {colour}">{_esc(seen)}</td></tr>')
    head = "".join(f'<th style="{_CELL}">{h}</th>' for h in
                   ("address", "instruction", "source", "real ring", "what the monitor saw"))
    return (f'<table class="vmkit-vmm-view" style="border-collapse:collapse;{_FONT}">'
            f'{_caption(title)}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            f'</table>')
