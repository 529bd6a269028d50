"""``RingView(monitor)``: the ring diagram (and optionally the ring timeline) of a monitor, kept up to
date as a :class:`~vmkit.widgets.Stepper` moves it.

>>> from vmkit.widgets import Stepper, RingView
>>> view = RingView(monitor)            # doctest: +SKIP
>>> view.follow(Stepper(monitor))       # doctest: +SKIP   (or Stepper(monitor, ring_view=True))
"""

from __future__ import annotations

import asyncio
import html
import time
from functools import partial

import ipywidgets as W

from vmkit.viz.render import CSS_TEXT, cached_svg, diagram_html, diagram_svg, figure_html
from vmkit.viz.rings import ring_diagram
from vmkit.widgets.background import draw, pipe_svg
from vmkit.widgets.static import StaticMixin

__all__ = ["RingView"]


class RingView(StaticMixin, W.VBox):
    """Rings 0–3, what runs in each, and the transitions seen so far (with counts).

    ``timeline=True`` adds the ring-over-time plot (matplotlib; redrawn on :meth:`refresh`).
    ``compact=True`` (the Stepper's side panel) draws the narrow form of the diagram: arrows
    labelled with letters, explained under the rings. The picture scales down to the view's
    width. Call :meth:`refresh` after moving the monitor yourself, or :meth:`follow` a
    Stepper."""

    @property
    def vm(self):
        """The monitor (the attribute's name before it was ``monitor``; kept so that notebooks
        reading ``.vm`` keep working)."""
        return self.monitor

    def __init__(self, monitor, *, timeline: bool = False, compact: bool = False, **kwargs):
        self.monitor = monitor
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
        self._drawing = None      # the picture being drawn off the main thread (a future)
        self._again = False       # the monitor moved while it was drawn: draw once more
        self._generation = 0      # every redraw's number: a late drawing never overwrites
        self.refresh()

    def diagram(self):
        """The current ring diagram (a ``graphviz.Digraph``)."""
        return ring_diagram(self.monitor, compact=self.compact)

    def refresh(self, *_):
        """Redraw from the monitor's current trace (dot runs only when the picture changed;
        the line under it, where the CPU is now, is updated every time)."""
        self._last_refresh = time.perf_counter()
        self._generation += 1
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
                    self.timeline_view.value = figure_html(ring_timeline(self.monitor))
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
            parts.append(f"guest time {self.monitor.machine.clock:,}")
            cpu, vcpu = self.monitor.cpu, self.monitor.vcpu
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
            tr = self.monitor.trace
            return (tr.total, len(tr), self.monitor.cpu.cpl, self.monitor.vcpu.cpl)
        except Exception:
            return None

    def follow(self, stepper, *, min_interval: float = 0.5) -> "RingView":
        """Redraw whenever ``stepper`` moves (returns self). While it runs, redraw at most
        every ``min_interval`` seconds (dot takes tens of milliseconds); once more at the end.

        Under a kernel (a running event loop) the redraw is scheduled right after the click
        instead of inside it, so a Step's registers and code answer at once, and a new picture
        is drawn off the main thread at a lower CPU priority (:meth:`_deferred_refresh`); it
        follows some milliseconds later. Without an event loop it redraws at once."""
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
        """The redraw after a click. When the picture stays (no new transition) or is cached,
        at once; a new picture (dot) is drawn on the drawing thread
        (:func:`vmkit.widgets.background.draw`, lower CPU priority) and shown, with the line
        under it of the state it was drawn for, when it is ready. A move while it is drawn is
        drawn after it."""
        self._pending = False
        if self._drawing is not None:
            self._again = True
            return
        try:
            key = self._state_key()
            if self.show_timeline or key is None or key == self._key:
                self.refresh()
                return
            g = self.diagram()
            if g.source == self._source or cached_svg(g) is not None:
                self.refresh()
                return
            now = self._now()
        except Exception:        # refresh() shows what went wrong in the view
            self.refresh()
            return
        self._last_refresh = time.perf_counter()
        self._generation += 1
        generation = self._generation
        self._drawing = draw(partial(diagram_html, pipe=pipe_svg), g)
        self._drawing.add_done_callback(
            lambda f: self._drawn(f, generation, key, g.source, now))

    def _drawn(self, future, generation: int, key, source: str, now: str) -> None:
        """A picture drawn off the main thread is ready (on the event loop's thread)."""
        self._drawing = None
        if generation == self._generation:     # no redraw since it was asked for
            try:
                picture = future.result()
            except Exception as e:               # pragma: no cover - diagram_html never raises
                picture = f"<pre>ring view: could not draw: {html.escape(str(e))}</pre>"
            self._key, self._source, self._picture = key, source, picture
            self.diagram_view.value = picture + now
        if self._again:
            self._again = False
            self._request_refresh()

    async def drawn(self) -> None:
        """Wait until the redraws asked for so far are shown (the picture drawn off the main
        thread included): for tests and scripts under an event loop."""
        while self._pending or self._drawing is not None:
            if self._drawing is not None:
                await asyncio.wait([self._drawing])
            await asyncio.sleep(0)

    # ---- static form ------------------------------------------------------------------------
    def static_html(self) -> str:
        out = f'<div class="vmkit-rings">{diagram_html(self.diagram())}{self._now()}</div>'
        if self.show_timeline:
            from vmkit.viz.timeline import ring_timeline
            out += figure_html(ring_timeline(self.monitor))
        return out

    def static_svg(self) -> str | None:
        try:
            return diagram_svg(self.diagram())
        except Exception:
            return None
