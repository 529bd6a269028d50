"""Grading step: one row per question from the statuses of the executed test cells."""

from __future__ import annotations

from dataclasses import dataclass

from vmkit.homework import cells

__all__ = ["Row", "score", "STATUSES"]

#: the grader CSV's statuses (DESIGN.md, Homework)
STATUSES = ("ok", "failed", "error", "timeout", "tampered", "manual")


@dataclass
class Row:
    """One line of the grader CSV; ``points`` is None for a question left for a person."""
    notebook: str
    question: str
    points: float | None
    max_points: float | None
    status: str
    message: str = ""


def _fmt(x):
    return int(x) if x is not None and float(x).is_integer() else x


def score(nb, statuses: dict, errors: dict, notebook: str, instructor=None) -> list[Row]:
    """Rows for every test cell (``ok`` full points, ``failed`` an assertion, ``error`` any
    other exception or a kernel that stopped, ``timeout``) and every task or hand-graded
    markdown cell (``manual``), in notebook order. With ``instructor`` (the instructor's
    notebook) only cells whose grade_id is one of its graded cells make rows, one row per
    grade_id, with the instructor's points. Changes nothing."""
    rows = []
    known = None
    if instructor is not None:
        known = {cells.grade_id(c): c for c in instructor.cells
                 if cells.grade_id(c) and (cells.is_grade(c) or cells.is_task(c))}
    seen = set()
    for i, cell in enumerate(nb.cells):
        gid = cells.grade_id(cell)
        if known is not None:
            if gid not in known or gid in seen:
                continue
            seen.add(gid)
            cell_md = known[gid]
        else:
            cell_md = cell
        pts = _fmt(cells.points(cell_md))
        if cells.is_task(cell_md) or (cell_md["cell_type"] == "markdown"
                                      and cells.is_grade(cell_md)):
            rows.append(Row(notebook, gid, None, pts, "manual"))
        elif cells.is_test(cell_md):
            status, err = statuses.get(i, "error"), errors.get(i, "")
            if status == "ok":
                rows.append(Row(notebook, gid, pts, pts, "ok"))
            elif status == "error":
                rows.append(Row(notebook, gid, 0, pts,
                                "failed" if err == "AssertionError" else "error", err))
            elif status == "timeout":
                rows.append(Row(notebook, gid, 0, pts, "timeout", "time limit"))
            else:  # "stopped": an earlier cell ended the kernel
                rows.append(Row(notebook, gid, 0, pts, "error", "the kernel stopped earlier"))
    return rows
