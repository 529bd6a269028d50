"""HTML of vmm's results (registered with :mod:`vmkit.vmm.display` as their "html" display):
vmm's experiments return data, and their ``to_html()`` / ``_repr_html_`` find the table here."""

from __future__ import annotations

import html

from vmkit.vmm import display

__all__ = ["comparison_html", "memory_comparison_html", "classification_html",
           "io_comparison_html"]


@display.register("Comparison", "html")
def comparison_html(result) -> str:
    """A table: cycles per guest x monitor, relative to native, and the breakdown by
    category (largest first); a console that differs from native's is flagged."""
    cyc, rel, br, bad = result.cycles, result.relative, result.breakdown, set(result.mismatches)
    e = html.escape
    out = ['<table class="vmkit-compare">',
           f"<caption>Cycles under <b>{e(result.costs.name)}</b>, relative to native; "
           "below each total, its largest cost categories</caption>",
           "<thead><tr><th>guest</th>"
           + "".join(f"<th>{e(m)}</th>" for m in result.monitors) + "</tr></thead><tbody>"]
    for g in result.guests:
        out.append(f"<tr><th>{e(g)}</th>")
        for m in result.monitors:
            total = cyc[(g, m)]
            parts = sorted(br[(g, m)].items(), key=lambda kv: (-kv[1], kv[0]))[:4]
            detail = ", ".join(f"{e(k)} {100 * v / total:.0f}%" for k, v in parts
                               if total)
            warn = ('<br><b style="color:#D55E00">console differs from native</b>'
                    if (g, m) in bad else "")
            out.append(f'<td style="text-align:right">{total:,.0f}<br>'
                       f"<b>{rel[(g, m)]:.2f}&times;</b><br>"
                       f'<small>{detail}</small>{warn}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


@display.register("ClassificationTable", "html")
def classification_html(result) -> str:
    """An HTML table (Jupyter shows it through ``_repr_html_``)."""
    yes = {True: "&#10003;", False: ""}
    rows = []
    for r in result.rows:
        style = ' style="background:#fdd"' if r.violates_theorem1 else ""
        title = html.escape("\n".join(r.evidence), quote=True)
        rows.append(f"<tr{style} title=\"{title}\"><td><code>{html.escape(r.instruction)}"
                    f"</code></td><td>{yes[r.privileged]}</td>"
                    f"<td>{yes[r.control_sensitive]}</td><td>{yes[r.behavior_sensitive]}"
                    f"</td><td>{yes[r.sensitive]}</td><td>{yes[r.user_sensitive]}</td>"
                    f"<td>{yes[r.innocuous]}</td></tr>")
    c = result.counts()
    caption = (f"{c['forms']} instruction forms classified by experiment: "
               f"{c['privileged']} privileged, {c['sensitive']} sensitive, "
               f"{c['innocuous']} innocuous. Red rows are sensitive but not privileged "
               f"(they break Popek &amp; Goldberg's Theorem 1). Hover a row for the "
               f"evidence.")
    return ("<table><caption>" + caption + "</caption><thead><tr><th>instruction</th>"
            "<th>privileged</th><th>control-sensitive</th><th>behaviour-sensitive</th>"
            "<th>sensitive</th><th>user-sensitive</th><th>innocuous</th></tr></thead>"
            "<tbody>" + "".join(rows) + "</tbody></table>")


@display.register("IOComparison", "html")
def io_comparison_html(result) -> str:
    e = html.escape
    out = ['<table class="vmkit-compare vmkit-io">',
           f"<caption>The guest kernel writes {result.kb} KB to a disk, three ways "
           f"(cycles under <b>{e(result.costs.name)}</b>; per KB by difference of runs "
           f"of {result.kb} and {2 * result.kb} KB)</caption>",
           "<thead><tr><th>way</th>"
           + "".join(f'<th title="{e(t)}">{e(h)}</th>' for _, h, t in result.COLUMNS)
           + "<th>correct</th></tr></thead><tbody>"]
    for r in result.table():
        ok = ("yes" if r["correct"] else
              '<b style="color:#D55E00">NO: bytes or console differ</b>')
        out.append(f"<tr><th>{e(r['way'])}</th>"
                   + "".join(f'<td style="text-align:right">{e(result.cell(k, r[k]))}</td>'
                             for k, _, _ in result.COLUMNS)
                   + f"<td>{ok}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


@display.register("MemoryComparison", "html")
def memory_comparison_html(result) -> str:
    """One table per guest: a row per counter, a column per monitor; "—" where the monitor
    has no such mechanism; a console that differs from native's is flagged."""
    e = html.escape
    t = result.table
    bad = set(result.mismatches)
    out = ['<div class="vmkit-memory">']
    for g in result.guests:
        out.append('<table class="vmkit-memory-compare">')
        out.append(f"<caption>Memory virtualization: <b>{e(g)}</b> (cycles under "
                   f"<b>{e(result.costs.name)}</b>; — = the monitor has no such "
                   "mechanism)</caption>")
        out.append("<thead><tr><th></th>" + "".join(
            f"<th>{e(m)}" + ('<br><b style="color:#D55E00">console differs</b>'
                             if (g, m) in bad else "") + "</th>"
            for m in result.monitors) + "</tr></thead><tbody>")
        for k in result.row_keys():
            out.append(f'<tr><th style="text-align:left">{e(result.label(k))} '
                       f"<code>{e(k)}</code></th>" + "".join(
                           f'<td style="text-align:right">{e(result.cell(k, t[(g, m)][k]))}'
                           "</td>" for m in result.monitors) + "</tr>")
        out.append("</tbody></table>")
    out.append("</div>")
    return "\n".join(out)
