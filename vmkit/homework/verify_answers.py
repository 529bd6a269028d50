"""Grading step: check the answers that hidden tests handed over, outside the kernel.

A test cell that passed in the kernel may still have been fooled (the kernel is the student's:
:mod:`vmkit.homework.checks` itself could have been patched there). Each hidden test that calls
``checks.submit(name, value)`` is therefore re-checked by the grader with
:func:`vmkit.homework.checks.verify`, which computes the expected values in a fresh process
for the student's variant; a missing or wrong answer turns the question's ``ok`` into
``failed``.
"""

from __future__ import annotations

import re

from vmkit.homework import cells
from vmkit.homework.checks import answers_in, verify

__all__ = ["verify_answers", "required_answers"]

_SUBMIT = re.compile(r"""checks\.submit\(\s*["']([^"']+)["']""")


def required_answers(cell) -> list[str]:
    """The answer names that the instructor's test cell hands to the grader."""
    return _SUBMIT.findall(cell.get("source", ""))


def verify_answers(nb, rows, assignment: str, student: str, **run) -> list:
    """Changes ``rows`` in place (and returns them): an ``ok`` row whose test cell in ``nb``
    (the executed notebook) submitted answers that :func:`verify` rejects, or did not submit
    them, becomes ``failed`` with 0 points. ``run`` goes to the fresh process (env, cwd,
    limits)."""
    by_id = {r.question: r for r in rows}
    wanted, given = {}, {}
    for cell in nb.cells:
        gid = cells.grade_id(cell)
        row = by_id.get(gid)
        if not cells.is_test(cell) or row is None or row.status != "ok":
            continue
        names = required_answers(cell)
        if names:
            wanted[gid] = names
            given.update({n: v for n, v in answers_in(cell.get("outputs", [])).items()
                          if n in names})
    if not wanted:
        return rows
    try:
        verdict = verify(assignment, given, student, **run) if given else {}
    except Exception as e:  # the check itself could not run: say so, give nothing
        verdict = {}
        for gid in wanted:
            by_id[gid].message = f"grader's check failed: {type(e).__name__}"
    for gid, names in wanted.items():
        if not all(verdict.get(n) for n in names):
            row = by_id[gid]
            row.points, row.status = 0, "failed"
            row.message = row.message or "the grader's own check of the answer disagrees"
    return rows
