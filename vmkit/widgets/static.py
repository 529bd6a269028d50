"""A static form for every widget.

A live widget needs a kernel and the widget manager; a notebook exported to HTML, a slide deck
or an autograder's feedback page has neither and would show "Error displaying widget". Widgets
here therefore offer, beside the widget view, a picture of their current state: ``text/html``
(and ``image/svg+xml`` where the widget is a picture). JupyterLab picks the live view; nbconvert
drops the widget view when the notebook carries no widget state and falls back to the HTML.
JupyterLab saves the whole bundle; with the kit's Lab settings (``vmkit.labsetup``) it saves the
widget state too, and a save without that state keeps the picture alone (its pre-save hook), so
a reopened notebook never shows "Error displaying widget: model not found".
"""

from __future__ import annotations

import html

__all__ = ["StaticMixin"]


class StaticMixin:
    """Adds ``static_html()`` (subclasses implement it) to the widget's mime bundle."""

    def static_html(self) -> str:  # pragma: no cover - every widget overrides it
        raise NotImplementedError

    def static_svg(self) -> str | None:
        """SVG of the widget's picture, if it is one (None otherwise)."""
        return None

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        data = super()._repr_mimebundle_(**kwargs) or {}
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
