"""Pictures of what guests cost under each monitor: stacked bars of cycles by cost category.

:func:`comparison_figure` draws a :class:`vmkit.vmm.compare.Comparison` (one panel per guest,
one bar per monitor, one colour *and* hatch per category, Okabe–Ito colours); the figure is
made without pyplot and displays as deterministic SVG.
"""

from __future__ import annotations

from vmkit.viz.render import GREY, OKABE_ITO, new_figure

__all__ = ["comparison_figure", "category_style", "per_operation_figure"]

_COLOURS = [OKABE_ITO[k] for k in ("blue", "orange", "bluish_green", "vermillion",
                                    "sky_blue", "reddish_purple", "yellow", "black")]
_HATCHES = ["", "//", "..", "xx", "\\\\", "oo", "--", "++"]


def category_style(category: str) -> tuple[str, str]:
    """(colour, hatch) of a cost category: a fixed choice, the same in every picture."""
    from vmkit.vmm.costs import CostModel
    cats = CostModel.CATEGORIES
    i = cats.index(category) if category in cats else len(cats)
    return _COLOURS[i % len(_COLOURS)], _HATCHES[(i // len(_COLOURS)) % len(_HATCHES)]


def comparison_figure(comparison, *, title: str | None = None, relative: bool = True,
                      width: float = 8.0, height_per_row: float = 1.0):
    """Stacked horizontal bars: for each guest (a panel), each monitor's cycles split by
    category; ``relative=True`` scales each panel to the guest's native cycles (1 = native)."""
    c = comparison
    cats = c.categories()
    br, cyc = c.breakdown, c.cycles
    n = len(c.guests)
    fig = new_figure(figsize=(width, 0.6 + n * (0.35 * len(c.monitors) + 0.5) * height_per_row))
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, g in zip(axes, c.guests):
        base = cyc.get((g, "native")) or 1.0
        scale = base if relative else 1.0
        ys = list(range(len(c.monitors)))[::-1]
        for y, m in zip(ys, c.monitors):
            left = 0.0
            for cat in cats:
                v = br[(g, m)].get(cat, 0) / scale
                if v <= 0:
                    continue
                colour, hatch = category_style(cat)
                ax.barh(y, v, left=left, color=colour, hatch=hatch, edgecolor="white",
                        linewidth=0.5, label=cat)
                left += v
            ax.text(left, y, f" {cyc[(g, m)] / scale:.2f}×" if relative
                    else f" {cyc[(g, m)]:,.0f}", va="center", fontsize=8)
            if (g, m) in c.mismatches:
                ax.text(0, y, "console differs!", va="center", color=OKABE_ITO["vermillion"])
        ax.set_yticks(ys, list(c.monitors))
        ax.set_title(g, loc="left", fontsize=9)
        if relative:
            ax.axvline(1.0, color=GREY, linewidth=0.8, linestyle=":")
        ax.set_xlim(0, max(cyc[(g, m)] for m in c.monitors) / scale * 1.18)
        ax.spines[["top", "right"]].set_visible(False)
    axes[-1].set_xlabel("cycles relative to native" if relative else "cycles")
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    order = [k for k in cats if k in handles]
    fig.legend([handles[k] for k in order], order, loc="lower center", ncol=min(6, len(order)),
               fontsize=8, frameon=False)
    fig.suptitle(title or f"Cycles by category under the {c.costs.name} cost model",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.02 * ((len(order) - 1) // 6), 1, 0.97))
    return fig


def per_operation_figure(table: dict, *, title: str, monitors=None):
    """Grouped bars (log scale) of cycles per operation: ``table[benchmark][monitor]``."""
    benches = list(table)
    monitors = list(monitors or next(iter(table.values())))
    fig = new_figure(figsize=(8, 3.2))
    ax = fig.subplots()
    w = 0.8 / len(monitors)
    for j, m in enumerate(monitors):
        colour = _COLOURS[j % len(_COLOURS)]
        xs = [i + (j - (len(monitors) - 1) / 2) * w for i in range(len(benches))]
        ax.bar(xs, [max(table[b][m], 1) for b in benches], width=w, color=colour,
               hatch=_HATCHES[j % len(_HATCHES)], edgecolor="white", label=m)
    ax.set_yscale("log")
    ax.set_xticks(range(len(benches)), benches)
    ax.set_ylabel("cycles per operation")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
