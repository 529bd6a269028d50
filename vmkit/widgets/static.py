"""A static form for every widget.

A live widget needs a kernel and the widget manager; a notebook exported to HTML, a slide deck
or an autograder's feedback page has neither and would show "Error displaying widget". Widgets
here therefore offer, beside the widget view, a picture of their current state: ``text/html``
(and ``image/svg+xml`` where the widget is a picture). JupyterLab picks the live view; nbconvert
drops the widget view when the notebook carries no widget state and falls back to the HTML.
JupyterLab saves the whole bundle; with the kit's Lab settings (``vmkit.labsetup``) it saves the
widget state too, and a save without that state keeps the picture alone (its pre-save hook), so
a reopened notebook never shows "Error displaying widget: model not found".

Reopened from its saved state with no kernel behind it, a widget is a picture, not a control:
ipywidgets marks every view ``jupyter-widgets-disconnected`` (and draws a broken-link icon on
each). The first child of every widget here is a small note that CSS shows only then, while the
controls (buttons, boxes, sliders) and the icons are hidden, so the student sees one picture
and one line that says how to make it live again. The CSS travels in the note's own HTML
(JupyterLab takes a user's custom CSS only from the user's settings folder), so it works in
any Lab that opens the notebook.
"""

from __future__ import annotations

import html

import ipywidgets as W

__all__ = ["StaticMixin", "OFFLINE_NOTE", "offline_note"]

#: what a reopened widget without a kernel says, in place of its controls
OFFLINE_NOTE = ("Saved picture: the kernel behind this widget is gone. Run the cell "
                "(Shift+Enter) to make it live again.")

# Scoped to the kit's widgets (.vmkit-live) while ipywidgets marks them disconnected.
_OFFLINE_CSS = """
.vmkit-live.jupyter-widgets-disconnected::before,
.vmkit-live .jupyter-widgets-disconnected::before { content: none !important;
  display: none !important; }
.vmkit-live.jupyter-widgets-disconnected .widget-button,
.vmkit-live.jupyter-widgets-disconnected .widget-toggle-button,
.vmkit-live.jupyter-widgets-disconnected .widget-text,
.vmkit-live.jupyter-widgets-disconnected .widget-dropdown,
.vmkit-live.jupyter-widgets-disconnected .widget-slider,
.vmkit-live.jupyter-widgets-disconnected .widget-checkbox,
.vmkit-live.jupyter-widgets-disconnected .widget-radio { display: none !important; }
.vmkit-live.jupyter-widgets-disconnected > .vmkit-offline { display: block !important; }
.vmkit-live .vmkit-live > .vmkit-offline { display: none !important; }
"""


def offline_note() -> W.HTML:
    """The note (and its CSS) a widget shows when reopened without a kernel; hidden live."""
    note = W.HTML(
        value=(f"<style>{_OFFLINE_CSS}</style>"
               f'<div class="vmkit-offline-note" style="font-family:sans-serif;font-size:13px;'
               f'padding:2px 6px;border-left:3px solid var(--jp-warn-color1, #e69f00);'
               f'color:var(--jp-content-font-color1, #000)">{html.escape(OFFLINE_NOTE)}</div>'),
        layout=W.Layout(display="none"))
    note.add_class("vmkit-offline")
    return note


class StaticMixin:
    """Adds ``static_html()`` (subclasses implement it) to the widget's mime bundle, and the
    note a reopened widget shows without a kernel (the first child of the box)."""

    def __init__(self, children=(), **kwargs):
        super().__init__([offline_note(), *children], **kwargs)
        self.add_class("vmkit-live")

    def static_html(self) -> str:  # pragma: no cover - every widget overrides it
        raise NotImplementedError

    def static_svg(self) -> str | None:
        """SVG of the widget's picture, if it is one (None otherwise)."""
        return None

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        data = super()._repr_mimebundle_(**kwargs) or {}
        # ipywidgets' text/plain is the whole tree of children (long, and it changes with
        # every layout detail); one line says what it is
        data["text/plain"] = (f"{type(self).__name__}: an interactive widget (run the "
                              f"notebook in JupyterLab to use it)")
        try:
            data["text/html"] = self.static_html()
        except Exception as e:  # a static form must never break displaying the widget
            data["text/html"] = (f"<pre>{html.escape(type(self).__name__)}: could not draw "
                                 f"its static form: {html.escape(str(e))}</pre>")
        try:
            svg = self.static_svg()
        except Exception:
            svg = None
        if svg:
            data["image/svg+xml"] = svg
        if include:
            data = {k: v for k, v in data.items() if k in include}
        if exclude:
            data = {k: v for k, v in data.items() if k not in exclude}
        return data
