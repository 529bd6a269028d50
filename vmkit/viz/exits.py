"""VM exits of a hardware-assisted monitor: by reason, with Intel's numbers, and what they cost.

>>> from vmkit.viz.exits import exits_figure, exits_table_html, qualification_text
>>> exits_figure(hw)                  # doctest: +SKIP   (bar chart of exits by reason)
>>> exits_table_html(hw)              # doctest: +SKIP   (reason, count, cycles)

Pure functions of a :class:`~vmkit.vmm.hw.HardwareAssisted` monitor (its ``stats["vm_exits"]``,
a ``Counter`` by Linux's exit-reason name, and its cost model) or of such a ``Counter``. Reasons
are labelled "28 CR_ACCESS": the basic exit-reason number of the Intel SDM (Vol. 3D, Appendix C,
"VMX Basic Exit Reasons") and the name Linux gives it. Colours are Okabe–Ito; bars are also
labelled with their counts, so colour never carries the meaning alone.
"""

from __future__ import annotations

import html
from collections import Counter

from vmkit.viz.render import CSS_BORDER, GREY, OKABE_ITO, new_figure

__all__ = ["exit_rows", "exits_figure", "exits_table_html", "exit_cycles",
           "qualification_text", "REASON_COLOURS"]

#: a colour per kind of exit (instruction exits, memory, events), Okabe–Ito
REASON_COLOURS = {
    "IO_INSTRUCTION": OKABE_ITO["orange"],
    "CR_ACCESS": OKABE_ITO["blue"],
    "INVLPG": OKABE_ITO["sky_blue"],
    "EXCEPTION_NMI": OKABE_ITO["vermillion"],
    "EPT_VIOLATION": OKABE_ITO["reddish_purple"],
    "EXTERNAL_INTERRUPT": OKABE_ITO["bluish_green"],
    "INTERRUPT_WINDOW": OKABE_ITO["bluish_green"],
    "HLT": OKABE_ITO["yellow"],
    "CPUID": OKABE_ITO["black"],
    "RDTSC": OKABE_ITO["black"],
    "PREEMPTION_TIMER": OKABE_ITO["bluish_green"],
}

#: one line per reason: what made the guest exit
REASON_TEXT = {
    "EXCEPTION_NMI": "an exception in the exception bitmap (shadow paging: #PF)",
    "EXTERNAL_INTERRUPT": "the VMM's timer (a virtual tick is due)",
    "TRIPLE_FAULT": "a triple fault in the guest",
    "INTERRUPT_WINDOW": "the guest's IF became 1 while an interrupt waited",
    "CPUID": "CPUID (always exits)",
    "HLT": "HLT (HLT exiting)",
    "INVLPG": "INVLPG (INVLPG exiting)",
    "RDTSC": "RDTSC (RDTSC exiting)",
    "CR_ACCESS": "MOV to/from a control register, CLTS, LMSW",
    "IO_INSTRUCTION": "IN/OUT (I/O exiting or the I/O bitmap)",
    "EPT_VIOLATION": "an access the EPT does not allow",
    "PREEMPTION_TIMER": "the end of a time slice (several VMs)",
}


def _numbers() -> dict:
    from vmkit.vmm.hw import EXIT_NUMBERS
    return EXIT_NUMBERS


def _exits(target) -> Counter:
    if isinstance(target, Counter) or isinstance(target, dict):
        return Counter(target)
    return Counter(target.stats["vm_exits"])


def exit_rows(target, costs=None) -> list[dict]:
    """One row per exit reason that happened, by Intel number: ``number``, ``name``, ``count``,
    ``cycles`` (count × the cost model's ``vm_exit``, the round trip alone; ``costs`` defaults
    to the monitor's) and ``what``. ``target`` is a monitor or a Counter of exits by name."""
    exits = _exits(target)
    if costs is None:
        costs = getattr(target, "costs", None)
    per_exit = costs.vm_exit if costs is not None else None
    numbers = _numbers()
    rows = []
    for name, n in exits.items():
        if not n:
            continue
        rows.append({"number": numbers.get(name, -1), "name": name, "count": n,
                     "cycles": None if per_exit is None else n * per_exit,
                     "what": REASON_TEXT.get(name, "")})
    rows.sort(key=lambda r: (r["number"], r["name"]))
    return rows


def _label(row) -> str:
    return f"{row['number']} {row['name']}" if row["number"] >= 0 else row["name"]


def _describe(target) -> str:
    try:
        name = target.vms[0].image.name
        paging = "EPT" if target.ept else "shadow paging"
        return f"{name} under hw ({paging})"
    except Exception:
        return ""


def exits_figure(target, *, title: str | None = None, width: float = 7.0, log: bool = False):
    """A horizontal bar chart of VM exits by reason ("30 IO_INSTRUCTION"), each bar labelled
    with its count. ``log=True`` uses a logarithmic axis (counts that differ by thousands).
    Returns a matplotlib Figure that displays as deterministic SVG."""
    rows = exit_rows(target)
    if title is None:
        what = _describe(target)
        title = "VM exits by reason" + (f": {what}" if what else "")
    n = max(1, len(rows))
    fig = new_figure(figsize=(width, 0.9 + 0.42 * n))
    ax = fig.add_subplot()
    if not rows:
        ax.text(0.5, 0.5, "no VM exits", ha="center", va="center", transform=ax.transAxes,
                color=GREY)
        ax.set_yticks([])
    else:
        labels = [_label(r) for r in rows]
        counts = [r["count"] for r in rows]
        colours = [REASON_COLOURS.get(r["name"], GREY) for r in rows]
        ys = list(range(len(rows)))[::-1]
        ax.barh(ys, counts, color=colours, edgecolor="black", linewidth=0.6)
        ax.set_yticks(ys, labels, fontfamily="monospace", fontsize=9)
        top = max(counts)
        if log:
            ax.set_xscale("log")
            ax.set_xlim(0.8, top * 8)
        else:
            ax.set_xlim(0, top * 1.18)
        for y, c in zip(ys, counts):
            ax.text(c * (1.08 if log else 1) + (0 if log else top * 0.01), y, f"{c:,}",
                    va="center", ha="left", fontsize=9)
    ax.set_xlabel("VM exits (count)" + (", log scale" if log and rows else ""))
    ax.set_title(title, fontsize=11)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


def exit_cycles(target, costs=None) -> dict:
    """What the exits cost: ``exits`` (total), ``per_exit`` (cycles per round trip),
    ``exit_cycles`` (their cycles), ``total`` (all the run's cycles under ``costs``, which
    defaults to the monitor's) and ``share`` of the total."""
    costs = costs if costs is not None else target.costs
    cycles = costs.price(target.event_counts())
    total = sum(cycles.values())
    ex = cycles.get("vm_exit", 0)
    return {"exits": sum(target.stats["vm_exits"].values()), "per_exit": costs.vm_exit,
            "exit_cycles": ex, "total": total, "share": ex / total if total else 0.0,
            "cycles": cycles}


_TABLE = ('style="border-collapse:collapse;font-family:monospace;font-size:12px;'
          'line-height:1.3"')
_CELL = f"padding:1px 6px;border:1px solid {CSS_BORDER};white-space:nowrap;"
_L, _R = _CELL + "text-align:left;", _CELL + "text-align:right;"
# the "caused by" text and the long labels of the total rows wrap, so the numbers keep their
# column on a narrow page
_W = _L + "white-space:normal;min-width:12em;"


def exits_table_html(target, costs=None, *, title: str | None = "VM exits by reason",
                     totals: bool = True) -> str:
    """An HTML table: Intel number, name, what causes it, count and round-trip cycles; with
    ``totals`` a last row with the exits' cycles and the run's total under ``costs``."""
    if costs is None:
        costs = getattr(target, "costs", None)
    rows = exit_rows(target, costs)
    e = html.escape
    head = ("<tr>" + "".join(f'<th style="{_L if i < 3 else _R}">{h}</th>' for i, h in enumerate(
        ("#", "exit reason", "caused by", "exits", "cycles (round trips)"))) + "</tr>")
    body = []
    for r in rows:
        cyc = "" if r["cycles"] is None else f"{r['cycles']:,.0f}"
        body.append(f'<tr class="vmkit-exit-row"><td style="{_R}">{r["number"]}</td>'
                    f'<td style="{_L}">{e(r["name"])}</td><td style="{_W}">{e(r["what"])}</td>'
                    f'<td style="{_R}">{r["count"]:,}</td><td style="{_R}">{cyc}</td></tr>')
    if not rows:
        body.append(f'<tr><td style="{_L}" colspan="5">no VM exits</td></tr>')
    if totals and costs is not None and not isinstance(target, (dict, Counter)):
        c = exit_cycles(target, costs)
        body.append(f'<tr style="font-weight:bold"><td style="{_W}" colspan="3">all exits, at '
                    f'{c["per_exit"]:,.0f} cycles each</td><td style="{_R}">{c["exits"]:,}</td>'
                    f'<td style="{_R}">{c["exit_cycles"]:,.0f}</td></tr>')
        body.append(f'<tr class="vmkit-exits-total-row"><td style="{_W}" colspan="4">the whole '
                    f'run ({e(costs.name)}), exits are {c["share"]:.0%} of it</td>'
                    f'<td style="{_R}">{c["total"]:,.0f}</td></tr>')
    cap = (f'<caption style="text-align:left;font-weight:bold;font-family:sans-serif;'
           f'font-size:12px;padding:2px 0">{e(title)}</caption>' if title else "")
    return f'<table class="vmkit-exits" {_TABLE}>{cap}{head}{"".join(body)}</table>'


# ---- exit qualifications ----------------------------------------------------------------------
_REGS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
_CR_ACCESS = {0: "MOV to CR", 1: "MOV from CR", 2: "CLTS", 3: "LMSW"}


def qualification_text(reason, qualification: int) -> list[str]:
    """The exit qualification's fields, one line each, for CR_ACCESS (SDM Vol. 3C, Table 28-3)
    and IO_INSTRUCTION (Table 28-5) exits, and the linear address of INVLPG and #PF exits.
    ``reason`` is the number or the name."""
    if isinstance(reason, int):
        from vmkit.vmm.hw import EXIT_REASONS
        reason = EXIT_REASONS.get(reason, str(reason))
    q = qualification
    if reason == "CR_ACCESS":
        kind = (q >> 4) & 3
        lines = [f"bits 3:0   = {q & 15}: control register CR{q & 15}",
                 f"bits 5:4   = {kind}: access type, {_CR_ACCESS[kind]}"]
        if kind in (0, 1):
            lines.append(f"bits 11:8  = {(q >> 8) & 15}: general register "
                         f"{_REGS[(q >> 8) & 7]}")
        if kind == 3:
            lines.append(f"bits 31:16 = {q >> 16:#06x}: LMSW source data")
        return lines
    if reason == "IO_INSTRUCTION":
        return [f"bits 2:0   = {q & 7}: size of access {(q & 7) + 1} byte(s)",
                f"bit 3      = {(q >> 3) & 1}: direction, {'IN' if q & 8 else 'OUT'}",
                f"bit 4      = {(q >> 4) & 1}: string instruction" + (
                    "" if q & 16 else " (no)"),
                f"bit 5      = {(q >> 5) & 1}: REP prefix" + ("" if q & 32 else " (no)"),
                f"bit 6      = {(q >> 6) & 1}: operand encoding, "
                f"{'immediate port' if q & 64 else 'port in DX'}",
                f"bits 31:16 = {q >> 16:#06x}: port number"]
    if reason in ("INVLPG", "EXCEPTION_NMI"):
        return [f"linear address {q:#010x}"]
    return [f"{q:#010x}"]
