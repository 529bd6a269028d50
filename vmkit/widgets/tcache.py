"""``TranslationCacheView``: run a guest under binary translation with a chosen threshold N and
look at the translation cache, its hit rate over guest time and the translator's counters. A
slider for N reruns the guest from the start and redraws everything.

>>> from vmkit.widgets import TranslationCacheView
>>> TranslationCacheView(guests.build("syscall"), threshold=3)     # doctest: +SKIP
>>> TranslationCacheView(lambda n: BinaryTranslation(img, threshold=n))   # doctest: +SKIP
"""

from __future__ import annotations

import html

import ipywidgets as W

from vmkit.viz.render import diagram_html, diagram_svg, figure_svg_html
from vmkit.viz.tcache import record_lookups, tc_diagram, tc_hit_rate_figure, tc_stats_html
from vmkit.widgets.static import StaticMixin

__all__ = ["TranslationCacheView"]


class TranslationCacheView(StaticMixin, W.VBox):
    """The translation cache of a ``BinaryTranslation`` run, with a slider for the threshold N.

    ``source`` is a guest image (run as ``BinaryTranslation(image, threshold=N, **monitor_kw)``)
    or a factory ``f(threshold) -> monitor``. Each change of the slider builds a new monitor,
    runs the guest to its end (``max_steps``) and redraws the cache diagram, the hit-rate figure
    and the counters. ``monitor`` is the last run; ``runs`` maps each N tried to its counters.
    """

    def __init__(self, source, *, threshold: int = 3, max_steps: int = 5_000_000,
                 min_threshold: int = 1, max_threshold: int = 20, monitor_kw: dict | None = None,
                 **kwargs):
        self.source = source
        self.max_steps = max_steps
        self.monitor_kw = dict(monitor_kw or {})
        self.monitor = None
        self.lookups: list = []
        self.runs: dict = {}
        self._drawn = None        # (run, HTML) of the hit-rate figure last drawn
        self.slider = W.IntSlider(value=threshold, min=min_threshold,
                                  max=max(max_threshold, threshold), step=1,
                                  description="threshold N", continuous_update=False,
                                  style={"description_width": "initial"})
        self.slider.add_class("vmkit-tc-threshold")
        self.summary = W.HTML()
        # no box of its own to scroll in: the picture scales down to the column's width
        self.diagram_view = W.HTML(layout=W.Layout(max_width="100%"))
        self.diagram_view.add_class("vmkit-tcache")
        self.figure_view = W.HTML()
        self.stats_view = W.HTML()
        row = W.HBox([self.stats_view, self.figure_view],
                     layout=W.Layout(flex_flow="row wrap", grid_gap="0 12px",
                                     align_items="flex-start"))
        super().__init__([self.slider, self.summary, row, self.diagram_view], **kwargs)
        self.slider.observe(self._changed, names="value")
        self.rerun()

    @property
    def threshold(self) -> int:
        return self.slider.value

    def _make(self, n: int):
        if callable(self.source) and not hasattr(self.source, "programs"):
            return self.source(n)
        from vmkit.vmm import BinaryTranslation
        return BinaryTranslation(self.source, threshold=n, **self.monitor_kw)

    def _changed(self, change) -> None:
        self.rerun()

    def rerun(self) -> None:
        """Build a monitor with the slider's threshold, run the guest and redraw."""
        try:
            vm = self._make(self.threshold)
            self.lookups = record_lookups(vm)
            self.result = vm.run(max_steps=self.max_steps)
            self.monitor = vm
            s = vm.stats
            self.runs[self.threshold] = {k: s.get(k, 0) for k in (
                "translations", "interpreted", "tc_hits", "tc_lookups", "chained")}
            self._redraw()
        except Exception as e:  # a picture must never break the notebook
            self.summary.value = (f"<pre>translation-cache view: could not run: "
                                  f"{html.escape(str(e))}</pre>")

    def diagram(self):
        """The translation-cache diagram of the last run (a ``graphviz.Digraph``)."""
        return tc_diagram(self.monitor)

    def figure(self):
        """The hit-rate figure of the last run (matplotlib)."""
        end = self.monitor.stats.get("instructions") if self.monitor is not None else None
        return tc_hit_rate_figure(self.lookups, end=end, width=6.0, height=2.6,
                                  title=f"Hit rate over guest time, N = {self.threshold}")

    def _figure_html(self) -> str:
        """The hit-rate figure as HTML, drawn once a run: the live view and the static form
        show the same picture (drawing it twice was a second of the view's cost)."""
        end = self.monitor.stats.get("instructions") if self.monitor is not None else None
        key = (self.monitor, self.threshold, end, len(self.lookups))
        if self._drawn is None or self._drawn[0] != key:
            self._drawn = (key, figure_svg_html(self.figure())[1])
        return self._drawn[1]

    def _summary_html(self) -> str:
        vm = self.monitor
        if vm is None:
            return ""
        s = vm.stats
        return (f'<div style="font-family:sans-serif;font-size:12px;line-height:1.4">N = '
                f'{self.threshold}: '
                f"{html.escape(str(self.result))}; {s.get('translations', 0)} blocks translated, "
                f"{s.get('interpreted', 0):,} instructions interpreted, "
                f"{sum(vm.cycles.values()):,.0f} cycles</div>")

    def _redraw(self) -> None:
        self.summary.value = self._summary_html()
        self.stats_view.value = tc_stats_html(self.monitor)
        self.figure_view.value = self._figure_html()
        self.diagram_view.value = diagram_html(self.diagram())

    # ---- static form ------------------------------------------------------------------------
    def static_html(self) -> str:
        if self.monitor is None:
            return self.summary.value
        return (f'<div class="vmkit-tcache-view">{self._summary_html()}'
                f'<div style="display:flex;gap:1em;flex-wrap:wrap;align-items:flex-start">'
                f"{tc_stats_html(self.monitor)}{self._figure_html()}</div>"
                f"{diagram_html(self.diagram())}</div>")

    def static_svg(self) -> str | None:
        try:
            return diagram_svg(self.diagram())
        except Exception:
            return None
