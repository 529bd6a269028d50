"""The picture of an I/O virtualization comparison (:func:`vmkit.vmm.iovirt.io_comparison`):
VMM entries and cycles per KB, one bar per way."""

from __future__ import annotations

from vmkit.viz.render import GREY, OKABE_ITO, new_figure

__all__ = ["io_comparison_figure"]


def io_comparison_figure(result, width: float = 8.0):
    """Two panels of horizontal bars: VMM entries per KB and cycles per KB, one bar per
    way (a deterministic-SVG matplotlib figure, Okabe-Ito colours)."""
    rows = result._priced()
    fig = new_figure(figsize=(width, 0.8 + 0.32 * len(rows) * 2))
    axes = fig.subplots(2, 1)
    colour = {"native": OKABE_ITO["black"], "emulated": OKABE_ITO["vermillion"],
              "pv": OKABE_ITO["blue"], "split": OKABE_ITO["sky_blue"],
              "direct": OKABE_ITO["bluish_green"]}
    ys = list(range(len(rows)))[::-1]
    for ax, key, title in ((axes[0], "entries_per_kb", "traps/exits/hypercalls per KB"),
                           (axes[1], "cycles_per_kb", f"cycles per KB ({result.costs.name})")):
        top = max([r[key] for r in rows] + [1e-9])
        for y, r in zip(ys, rows):
            c = colour.get(r["way"].split("-")[0], GREY)
            ax.barh(y, r[key], color=c, edgecolor="white")
            ax.text(r[key], y, f" {r[key]:,.1f}", va="center", fontsize=8)
        ax.set_yticks(ys, [r["way"] for r in rows])
        ax.set_xlim(0, top * 1.25)
        ax.set_title(title, loc="left", fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(f"I/O virtualization: the guest kernel writes {result.kb} KB", fontsize=10)
    fig.tight_layout()
    return fig
