"""Grading step: rebuild the notebook to run from the instructor's copy and the student's answers.

Cells are matched by ``grade_id``, so a reordered submission is handled, and every cell that is
not the student's to write (tests with their hidden parts, the setup cell, instructions) comes
from the instructor's copy: a deleted or edited test changes nothing.
"""

from __future__ import annotations

import copy

from vmkit.homework import cells
from vmkit.homework.clear_solutions import CODE_STUB, PROSE_STUB

__all__ = ["restore_cells"]


def _blank(cell):
    cell = copy.deepcopy(cell)
    cell["source"] = PROSE_STUB if cell["cell_type"] == "markdown" else CODE_STUB
    return cell


def _unmarked(cell):
    """The student's own cell without nbgrader metadata: only the instructor's cells are
    graded, so an added cell marked ``grade: true`` (or a task) never becomes a question."""
    cell = copy.deepcopy(cell)
    cell.get("metadata", {}).pop("nbgrader", None)
    return cell


def restore_cells(submission, instructor):
    """A new notebook: the instructor's cells in the instructor's order, each solution cell's
    source taken from the submission's cell of the same ``grade_id`` (a missing one gets the
    released stub), and the student's own extra cells (without a known ``grade_id``) before the
    graded cell they preceded in the submission (a helper usually comes before the answer that
    uses it), stripped of their nbgrader metadata. Outputs are cleared. Changes neither input."""
    known = cells.by_grade_id(instructor)
    answers: dict = {}
    before: dict = {}  # grade_id -> the student's extra cells just before that cell
    pending: list = []
    for cell in submission.cells:
        gid = cells.grade_id(cell)
        if gid in known:
            if gid not in answers:
                answers[gid] = cell
                before[gid], pending = pending, []
            continue  # a second copy of a known cell: dropped
        pending.append(_unmarked(cell))

    out = copy.deepcopy(instructor)
    new_cells = []
    for cell in instructor.cells:
        gid = cells.grade_id(cell)
        new_cells.extend(copy.deepcopy(c) for c in before.get(gid, []) if gid is not None)
        cell = copy.deepcopy(cell)
        if cells.is_solution(cell):
            if gid in answers and answers[gid]["cell_type"] == cell["cell_type"]:
                cell["source"] = answers[gid]["source"]
            else:
                cell = _blank(cell)
        new_cells.append(cell)
    new_cells.extend(copy.deepcopy(c) for c in pending)  # after the last graded cell: at the end
    for cell in new_cells:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    out.cells = new_cells
    return out
