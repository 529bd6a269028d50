"""Pictures of a binary translator's translation cache (``vmkit.vmm.BinaryTranslation``).

* :func:`tc_diagram` — the translated blocks now in the cache as a graph: one node per block,
  labelled with its guest address range and instruction count, filled by how often it ran from
  the cache (a colour-blind-safe sequential scale, *cividis*), and the chaining edges between
  blocks (``block.links``);
* :func:`hit_rate_series` / :func:`tc_hit_rate_figure` — the cache's hit rate over guest time,
  from ``TcLookup`` events recorded while the guest ran (:func:`record_lookups`);
* :func:`tc_stats_html` — a small table of the translator's counters.

>>> from vmkit.viz.tcache import record_lookups, tc_diagram, tc_hit_rate_figure
>>> vm = BinaryTranslation(guests.build("syscall"))    # doctest: +SKIP
>>> lookups = record_lookups(vm); vm.run()             # doctest: +SKIP
>>> tc_diagram(vm); tc_hit_rate_figure(lookups)        # doctest: +SKIP

Nothing here changes the monitor; everything is deterministic (guest time, not host time).
"""

from __future__ import annotations

import html

from vmkit.viz.render import CSS_MUTED, GREY, OKABE_ITO, Diagram, new_figure

__all__ = ["TC_SCALE", "tc_diagram", "record_lookups", "hit_rate_series",
           "tc_hit_rate_figure", "tc_stats_html", "block_runs"]

#: cividis (Nuñez, Anderton & Renslow 2018), sampled at 0, 0.2 … 1: a sequential scale made to
#: be read the same with and without colour-vision deficiencies; dark = rarely run, light = hot
TC_SCALE = ("#00224e", "#35456c", "#666970", "#948e77", "#c8b866", "#fee838")
_BINS = (0, 10, 100, 1_000, 10_000, 100_000)    # lower bounds of the bins (runs from the cache)


def block_runs(blk) -> int:
    """How often a block ran from the cache: lookup hits plus chained entries."""
    return getattr(blk, "hits", 0) + getattr(blk, "chained_in", 0)


def _bin(runs: int) -> int:
    b = 0
    for i, lo in enumerate(_BINS):
        if runs >= lo:
            b = i
    return b


def _bin_label(i: int) -> str:
    lo = _BINS[i]
    if i + 1 < len(_BINS):
        return f"{lo:,}–{_BINS[i + 1] - 1:,}"
    return f"≥ {lo:,}"


def _symbolizer(bt):
    """address -> "name+off" from the guest images' symbols (nearest symbol at or below)."""
    import bisect
    tables = {}
    for v in getattr(bt, "vms", ()):
        syms = []
        try:
            for prog in v.image.programs.values():
                syms += [(a, n) for n, a in prog.symbols.items() if not n.startswith(".")]
        except Exception:
            pass
        syms.sort()
        tables[v.index] = syms

    def name(vm: int, addr: int) -> str:
        syms = tables.get(vm) or []
        i = bisect.bisect_right([a for a, _ in syms], addr) - 1
        if i < 0 or addr - syms[i][0] > 0x400:
            return ""
        a, n = syms[i]
        return n if a == addr else f"{n}+{addr - a:#x}"
    return name


def tc_diagram(bt, *, title: str | None = None, vm: int | None = None,
               max_blocks: int = 20) -> Diagram:
    """The translation cache of ``bt`` (a ``BinaryTranslation``) as a graphviz graph.

    Each node is a translated block: its guest-linear address range, its instruction count,
    how often it ran from the cache (lookup hits + chained entries) and, if the block ends in a
    callout, which one. Fill colour: runs from the cache on the :data:`TC_SCALE` (cividis)
    scale, in decades. An edge A → B means A's exit is chained to B (no lookup). ``vm`` picks
    one VM of a multi-VM monitor; ``max_blocks`` keeps the hottest blocks when there are more
    (the title says so): twenty keep the labels readable in a notebook column (text >= 9.5 px
    at 1,366 px; syscall under bt translates 67 blocks, and all of them drawn is 1,650 pt wide).
    """
    blocks = [b for b in bt.blocks() if vm is None or b.vm == vm]
    shown = blocks
    if len(blocks) > max_blocks:
        hot = sorted(blocks, key=lambda b: (-block_runs(b), b.vm, b.eip))[:max_blocks]
        keep = {id(b) for b in hot}
        shown = [b for b in blocks if id(b) in keep]
    if title is None:
        try:
            names = ", ".join(v.image.name for v in bt.vms)
        except Exception:
            names = "guest"
        title = (f"Translation cache: {names} under {bt.name}, threshold N = "
                 f"{getattr(bt, 'threshold', '?')} ({len(blocks)} blocks"
                 + (f"; the {len(shown)} hottest shown)" if len(shown) < len(blocks) else ")"))
    g = Diagram("tcache", title=title)
    # pack: the chains of blocks (disconnected components) tile the picture instead of
    # standing side by side (1,660 px wide for syscall; packed ~1,150 px, so its text stays
    # readable scaled to a notebook column)
    # the colour scale's legend is a row under the title (a legend node of its own would be
    # packed as one more component, somewhere)
    cells = "".join(
        f'<td bgcolor="{colour}" border="1"><font color="{"#ffffff" if i <= 2 else "#000000"}"'
        f' point-size="9">{html.escape(_bin_label(i))}</font></td>'
        for i, colour in enumerate(TC_SCALE))
    label = (f'<<table border="0" cellspacing="2" cellpadding="2"><tr><td colspan="7">'
             f'{html.escape(title)}</td></tr><tr><td><font point-size="10">runs from the '
             f'cache:</font></td>{cells}</tr></table>>')
    g.attr("graph", rankdir="TB", label=label, labelloc="t", fontname="Helvetica",
           fontsize="14", nodesep="0.25", ranksep="0.35", pack="true", packmode="graph")
    g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10",
           penwidth="1")
    g.attr("edge", color=GREY, arrowsize="0.6")
    multi = len(getattr(bt, "vms", ())) > 1
    ids = {}
    sym = _symbolizer(bt)
    for b in shown:
        nid = f"b{b.vm}_{b.eip:08x}"
        ids[id(b)] = nid
        runs = block_runs(b)
        k = _bin(runs)
        fill = TC_SCALE[k]
        font = "#ffffff" if k <= 2 else "#000000"
        where = sym(b.vm, b.eip)
        lines = ([where] if where else []) + [
                 f"{b.eip:#010x}–{b.end - 1:#010x}" + (f"  (VM {b.vm})" if multi else ""),
                 f"{b.n} instruction{'s' if b.n != 1 else ''}"
                 + (", static" if getattr(b, "static", False) else ""),
                 f"ran {runs:,}× from the cache"]
        if b.kinds and b.kinds[-1] == "callout":
            lines.append(f"ends in callout: {b.insns[-1].mnemonic}")
        callouts = sum(1 for x in b.kinds[:-1] if x in ("callout", "adapted"))
        if callouts:
            lines.append(f"{callouts} adapted instruction{'s' if callouts != 1 else ''}")
        g.node(nid, "\n".join(lines), fillcolor=fill, fontcolor=font,
               color=OKABE_ITO["black"])
    for b in shown:
        for addr in sorted(b.links):
            nxt = b.links[addr]
            if getattr(nxt, "valid", True) and id(nxt) in ids:
                g.edge(ids[id(b)], ids[id(nxt)])
    if not shown:
        g.node("empty", "no translations yet (run the guest first)", shape="plaintext",
               style="", fontcolor=GREY)
    return g


def record_lookups(bt) -> list:
    """Start recording ``bt``'s translation-cache lookups (``TcLookup`` events: ``step`` =
    guest time, ``hit``); returns the list that fills as the guest runs."""
    seen: list = []
    bt.on("tc_lookup", seen.append)
    return seen


def hit_rate_series(lookups, *, window: int = 50) -> tuple[list, list, list]:
    """(guest times, cumulative hit rate, hit rate over the last ``window`` lookups), one point
    per lookup, from ``TcLookup`` events."""
    xs, cum, win = [], [], []
    hits = 0
    recent: list = []
    rsum = 0
    for i, e in enumerate(lookups, 1):
        h = 1 if e.hit else 0
        hits += h
        recent.append(h)
        rsum += h
        if len(recent) > window:
            rsum -= recent.pop(0)
        xs.append(e.step)
        cum.append(hits / i)
        win.append(rsum / len(recent))
    return xs, cum, win


def tc_hit_rate_figure(lookups, *, title: str | None = None, window: int = 50,
                       width: float = 8.0, height: float = 2.8, end: int | None = None,
                       others: dict | None = None):
    """The translation cache's hit rate over guest time (a matplotlib figure that displays as
    deterministic SVG). ``lookups`` are ``TcLookup`` events (:func:`record_lookups`) or a dict
    {label: events} to compare several runs (e.g. thresholds); one line per run shows the
    cumulative hit rate, and for a single run a thin line shows the rate over the last
    ``window`` lookups."""
    runs = dict(lookups) if isinstance(lookups, dict) else {"hit rate": lookups}
    if others:
        runs.update(others)
    fig = new_figure(figsize=(width, height), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title or "Translation-cache hit rate over guest time", fontsize=11)
    colours = [OKABE_ITO[c] for c in ("blue", "vermillion", "bluish_green", "orange",
                                      "reddish_purple", "sky_blue", "black")]
    styles = ["-", "--", "-.", ":"]
    any_points = False
    for k, (label, evs) in enumerate(runs.items()):
        xs, cum, win = hit_rate_series(evs, window=window)
        if not xs:
            continue
        any_points = True
        c = colours[k % len(colours)]
        if len(runs) == 1:
            ax.plot(xs, win, color=OKABE_ITO["sky_blue"], linewidth=0.8,
                    label=f"last {window} lookups")
            ax.plot(xs, cum, color=c, linewidth=1.8, label=f"cumulative ({cum[-1]:.1%})")
        else:
            ax.plot(xs, cum, color=c, linewidth=1.6, linestyle=styles[k % len(styles)],
                    label=f"{label} ({cum[-1]:.1%})")
    if not any_points:
        ax.text(0.5, 0.5, "no lookups recorded", transform=ax.transAxes, ha="center",
                va="center", color=GREY)
    ax.set_ylim(-0.02, 1.02)
    if end is not None:
        ax.set_xlim(0, end)
    ax.set_ylabel("hits / lookups")
    ax.set_xlabel("guest time (instructions retired)")
    ax.grid(color="#dddddd", linewidth=0.6)
    h, lab = ax.get_legend_handles_labels()
    if h:
        ax.legend(h, lab, loc="lower right", fontsize=8, frameon=True)
    return fig


_ROWS = (
    ("instructions", "guest instructions retired"),
    ("tc_lookups", "cache lookups"),
    ("tc_hits", "lookup hits"),
    ("tc_misses", "lookup misses"),
    ("chained", "chained exits (no lookup)"),
    ("interpreted", "instructions interpreted"),
    ("translations", "blocks translated"),
    ("translated_instructions", "instructions translated"),
    ("callouts", "callouts"),
    ("tc_invalidations", "invalidations (code written)"),
    ("adaptations", "adaptive retranslations"),
)


def tc_stats_html(bt, keys=None) -> str:
    """A small HTML table of ``bt``'s translation counters (and the hit rate, and cycles)."""
    s = bt.stats
    rows = []
    for k, label in _ROWS:
        if keys is not None and k not in keys:
            continue
        v = s.get(k, 0)
        rows.append((label, f"{v:,}", k))
    look = s.get("tc_lookups", 0)
    if look:
        rows.append(("hit rate", f"{s.get('tc_hits', 0) / look:.1%}", "tc_hits / tc_lookups"))
    try:
        rows.append(("cycles (cost model)", f"{sum(bt.cycles.values()):,.0f}", "vm.cycles"))
    except Exception:
        pass
    body = "".join(
        f'<tr><td style="text-align:left">{html.escape(a)}</td>'
        f'<td style="text-align:right;font-variant-numeric:tabular-nums">{html.escape(b)}</td>'
        f'<td style="text-align:left;color:{CSS_MUTED}"><code>{html.escape(c)}</code></td></tr>'
        for a, b, c in rows)
    return (f'<table class="vmkit-tc-stats" style="border-collapse:collapse;font-size:12px;'
            f'line-height:1.35">'
            f"<thead><tr><th style=\"text-align:left\">counter</th><th>value</th>"
            f"<th style=\"text-align:left\">name</th></tr></thead><tbody>{body}</tbody></table>")
