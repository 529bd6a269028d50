"""``RingView(vm)``: the ring diagram (and optionally the ring timeline) of a monitor, kept up to
date as a :class:`~vmkit.widgets.Stepper` moves it.

>>> from vmkit.widgets import Stepper, RingView
>>> view = RingView(vm)            # doctest: +SKIP
>>> view.follow(Stepper(vm))       # doctest: +SKIP   (or Stepper(vm, ring_view=True))
"""

from __future__ import annotations

import asyncio
import html
import time

import ipywidgets as W

from vmkit.viz.render import CSS_TEXT, diagram_html, diagram_svg, figure_html
from vmkit.viz.rings import ring_diagram
from vmkit.widgets.static import StaticMixin

__all__ = ["RingView"]


class RingView(StaticMixin, W.VBox):
    """Rings 0–3, what runs in each, and the transitions seen so far (with counts).

    ``timeline=True`` adds the ring-over-time plot (matplotlib; redrawn on :meth:`refresh`).
    ``compact=True`` (the Stepper's side panel) draws the narrow form of the diagram: arrows
    labelled with letters, explained under the rings. The picture scales down to the view's
    width. Call :meth:`refresh` after moving the monitor yourself, or :meth:`follow` a
    Stepper."""

    def __init__(self, vm, *, timeline: bool = False, compact: bool = False, **kwargs):
        self.vm = vm
        self.show_timeline = timeline
        self.compact = compact
        self.diagram_view = W.HTML(layout=W.Layout(max_width="100%"))
        self.diagram_view.add_class("vmkit-rings")   # hook for tests/browser/test_browser.py
        self.timeline_view = W.HTML()
        children = [self.diagram_view] + ([self.timeline_view] if timeline else [])
        super().__init__(children, **kwargs)
        self._source = None
        self._picture = ""
        self._key = None
        self._last_refresh = 0.0
        self._followed = []
        self._pending = False
        self.refresh()

    def diagram(self):
        """The current ring diagram (a ``graphviz.Digraph``)."""
        return ring_diagram(self.vm, compact=self.compact)

    def refresh(self, *_):
        """Redraw from the monitor's current trace (dot runs only when the picture changed;
        the line under it, where the CPU is now, is updated every time)."""
        self._last_refresh = time.perf_counter()
        try:
            key = self._state_key()
            if key is None or key != self._key:
                self._key = key
                g = self.diagram()
                if g.source != self._source:
                    self._source = g.source
                    self._picture = diagram_html(g)
                if self.show_timeline:
                    from vmkit.viz.timeline import ring_timeline
                    self.timeline_view.value = figure_html(ring_timeline(self.vm))
            self.diagram_view.value = self._picture + self._now()
        except Exception as e:  # a picture must never break the notebook
            self.diagram_view.value = (f"<pre>ring view: could not draw: "
                                       f"{html.escape(str(e))}</pre>")

    def _now(self) -> str:
        """One line: the step (of the stepper followed), guest time and the ring(s) now."""
        parts = []
        if self._followed:
            parts.append(f"step {self._followed[0].position:,}")
        try:
            parts.append(f"guest time {self.vm.machine.clock:,}")
            cpu, vcpu = self.vm.cpu, self.vm.vcpu
            ring = f"CPU in ring {cpu.cpl}"
            if vcpu is not cpu:
                ring += f" (the guest believes ring {vcpu.cpl})"
            parts.append(ring)
        except Exception:
            pass
        return (f'<div class="vmkit-rings-now" style="font-family:sans-serif;font-size:12px;'
                f'line-height:1.4;color:{CSS_TEXT}">now: {html.escape(" · ".join(parts))}</div>')

    def _state_key(self):
        """What the picture depends on, cheaply: the trace's event count and the rings."""
        try:
            tr = self.vm.trace
            return (tr.total, len(tr), self.vm.cpu.cpl, self.vm.vcpu.cpl)
        except Exception:
            return None

    def follow(self, stepper, *, min_interval: float = 0.5) -> "RingView":
        """Redraw whenever ``stepper`` moves (returns self). While it runs, redraw at most
        every ``min_interval`` seconds (dot takes tens of milliseconds); once more at the end.

        Under a kernel (a running event loop) the redraw is scheduled right after the click
        instead of inside it, so a Step's registers and code answer at once and the picture
        follows a few milliseconds later; without an event loop it redraws at once."""
        def moved(change):
            now = time.perf_counter()
            if change["name"] == "position" and stepper.running and \
                    now - self._last_refresh < min_interval:
                return
            self._request_refresh()
        stepper.observe(moved, names=["position", "running"])
        self._followed.append(stepper)
        self.refresh()
        return self

    def _request_refresh(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.refresh()
            return
        if not self._pending:        # several moves before it runs: one redraw
            self._pending = True
            loop.call_soon(self._deferred_refresh)

    def _deferred_refresh(self) -> None:
        self._pending = False
        self.refresh()

    # ---- static form ------------------------------------------------------------------------
    def static_html(self) -> str:
        out = f'<div class="vmkit-rings">{diagram_html(self.diagram())}{self._now()}</div>'
        if self.show_timeline:
            from vmkit.viz.timeline import ring_timeline
            out += figure_html(ring_timeline(self.vm))
        return out

    def static_svg(self) -> str | None:
        try:
            return diagram_svg(self.diagram())
        except Exception:
            return None
