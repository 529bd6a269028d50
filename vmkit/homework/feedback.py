"""Grading step: an HTML feedback page per submission (nbconvert, static outputs only)."""

from __future__ import annotations

import copy
import html
from pathlib import Path

from nbformat.v4 import new_markdown_cell

__all__ = ["feedback_html", "write_feedback"]


def feedback_html(nb, rows, messages=()) -> str:
    """The graded notebook as one HTML page, a table of the questions' points first. Widgets
    appear through the static forms that stored notebooks keep beside them."""
    from nbconvert import HTMLExporter

    auto = [r for r in rows if r.status != "manual"]
    got = sum(r.points or 0 for r in auto)
    top = sum(r.max_points or 0 for r in auto)
    lines = ["## Grade", "", "| question | points | max | status |", "| --- | --- | --- | --- |"]
    for r in rows:
        pts = "—" if r.points is None else r.points
        lines.append(f"| {r.question} | {pts} | {r.max_points} | {r.status} |")
    lines += ["", f"**Automatic total: {got} / {top}** (questions marked *manual* are graded "
              "by hand)."]
    lines += [f"\n> {html.escape(m)}" for m in messages]
    page = copy.deepcopy(nb)
    page.cells.insert(0, new_markdown_cell("\n".join(lines)))
    body, _ = HTMLExporter(exclude_input_prompt=False).from_notebook_node(page)
    return body


def write_feedback(nb, rows, path, messages=()) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(feedback_html(nb, rows, messages), encoding="utf-8")
    return path
