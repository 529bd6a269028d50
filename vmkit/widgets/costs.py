"""``CostDashboard(comparison)``: change the hardware, keep the runs.

A preset dropdown and one slider per cost category; every change reprices the comparison's
stored event counts (:meth:`~vmkit.vmm.compare.Comparison.reprice`, nothing is rerun) and redraws
the table and the stacked bars.

>>> from vmkit.vmm import compare
>>> from vmkit.widgets import CostDashboard
>>> CostDashboard(compare(["syscall", "ptemod"]))        # doctest: +SKIP
"""

from __future__ import annotations

import html

import ipywidgets as W

from vmkit.viz.render import figure_svg_html
from vmkit.vmm.costs import CostModel
from vmkit.widgets.static import StaticMixin

__all__ = ["CostDashboard", "SLIDER_CATEGORIES"]

#: the categories that get a slider (the ones that decide between the techniques)
SLIDER_CATEGORIES = ("trap", "emulate", "vm_exit", "translate", "tc_lookup", "callout",
                     "page_walk", "shadow_update", "hidden_fault", "interrupt")


class CostDashboard(StaticMixin, W.VBox):
    """Preset dropdown + sliders (cycles per event, log scale) -> table and plot."""

    def __init__(self, comparison, *, preset: str | None = None, plot: bool = True,
                 categories=SLIDER_CATEGORIES, **kwargs):
        self.base = comparison
        self.show_plot = plot
        start = CostModel.preset(preset) if preset else comparison.costs
        self.costs = start
        self.preset = W.Dropdown(options=CostModel.presets() + (
            [] if start.name in CostModel.presets() else [start.name]),
            value=start.name, description="preset")
        self.sliders = {}
        for cat in categories:
            s = W.FloatLogSlider(value=max(start.cost(cat), 1.0), base=10, min=0, max=4.5,
                                 step=0.05, description=cat, readout_format=".0f",
                                 continuous_update=False,
                                 # the longest name (shadow_update) whole, never "shadow_up…"
                                 style={"description_width": "8.5em"},
                                 layout=W.Layout(width="25em"))
            s.observe(self._on_slider, names="value")
            self.sliders[cat] = s
        self.preset.observe(self._on_preset, names="value")
        self.table_view = W.HTML()
        self.plot_view = W.HTML()
        # as many columns as the page has room for (two in a notebook, one on a phone)
        grid = W.GridBox(list(self.sliders.values()),
                         layout=W.Layout(grid_template_columns="repeat(auto-fill, 26em)"))
        children = [self.preset, grid, self.table_view] + ([self.plot_view] if plot else [])
        super().__init__(children, **kwargs)
        self._muted = False
        self._drawn = None        # (state, (svg, html)) of the plot last drawn: see _plot
        self.refresh()

    # ---- state -----------------------------------------------------------------------------
    @property
    def comparison(self):
        """The comparison priced with the dashboard's current costs."""
        return self.base.reprice(self.costs)

    def set_costs(self, **changes) -> None:
        """Change some costs (as moving their sliders would)."""
        for k, v in changes.items():
            if k in self.sliders:
                self.sliders[k].value = v       # observers reprice
            else:
                self.costs = self.costs.with_(**{k: v})
                self.refresh()

    def _on_preset(self, change) -> None:
        if change["new"] not in CostModel.presets():
            return
        self.costs = CostModel.preset(change["new"])
        self._muted = True
        try:
            for cat, s in self.sliders.items():
                s.value = max(self.costs.cost(cat), 1.0)
        finally:
            self._muted = False
        self.refresh()

    def _on_slider(self, change) -> None:
        if self._muted:
            return
        owner = change["owner"]
        cat = next(k for k, s in self.sliders.items() if s is owner)
        self.costs = self.costs.with_(**{cat: float(change["new"])})
        self.refresh()

    # ---- drawing ---------------------------------------------------------------------------
    def _figure(self):
        return self.comparison.plot()

    def _plot(self) -> tuple[str, str]:
        """(SVG, HTML) of the plot under the current costs, drawn once for them: the live
        view and the static form (its HTML and its SVG) show the same picture, and drawing it
        (a second each) three times was most of the dashboard's cost."""
        key = (self.base, self.costs)
        if self._drawn is None or self._drawn[0] != key:
            self._drawn = (key, figure_svg_html(self._figure()))
        return self._drawn[1]

    def refresh(self, *_) -> None:
        c = self.comparison
        # the widget's own line height (28 px, a control's) would space a table's lines apart
        self.table_view.value = f'<div style="line-height:1.35">{c.to_html()}</div>'
        if self.show_plot:
            self.plot_view.value = self._plot()[1]

    def static_html(self) -> str:
        c = self.comparison
        costs = ", ".join(f"{k} {self.costs.cost(k):.0f}" for k in self.sliders)
        parts = [f"<p><b>Costs</b> ({html.escape(self.costs.name)}): {costs}</p>", c.to_html()]
        if self.show_plot:
            parts.append(self._plot()[1])
        return "\n".join(parts)

    def static_svg(self) -> str | None:
        return self._plot()[0] if self.show_plot else None
