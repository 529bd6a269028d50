"""Grading step: check the answers that hidden tests handed over, outside the kernel.

A test cell that passed in the kernel may still have been fooled (the kernel is the student's),
and hidden tests no longer check anything there: each calls ``checks.submit(name, value, ...)``,
and the grader checks the value here with :func:`vmkit.homework.reference.verify`, against the
reference answers that live with the instructor's solutions (``<source>/reference/``), for the
student's variant; hw02's handlers are run by the grader's VMM in a separate process. A
missing or wrong answer turns the question's ``ok`` into ``failed``.
"""

from __future__ import annotations

import re

from vmkit.homework import cells
from vmkit.homework.checks import answers_in

__all__ = ["verify_answers", "required_answers"]

_SUBMIT = re.compile(r"""checks\.submit\(\s*["']([^"']+)["']""")


def required_answers(cell) -> list[str]:
    """The answer names that the instructor's test cell hands to the grader."""
    return _SUBMIT.findall(cell.get("source", ""))


def verify_answers(nb, rows, assignment: str, student: str, folder, **run) -> list:
    """Changes ``rows`` in place (and returns them): an ``ok`` row whose test cell in ``nb``
    (the executed notebook) submitted answers that the reference in ``folder`` rejects, or did
    not submit them, becomes ``failed`` with 0 points (the check's reason as its message).
    ``run`` goes to :func:`vmkit.homework.reference.verify` (the sandbox's ``popen``,
    ``env``, ``timeout``)."""
    from vmkit.homework.reference import verify

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
        verdict = verify(folder, assignment, given, student, **run) if given else {}
    except Exception as e:  # the check itself could not run: say so, give nothing
        verdict = {}
        for gid in wanted:
            by_id[gid].message = f"grader's check failed: {str(e)[:200]}"
    for gid, names in wanted.items():
        results = [verdict.get(n, (False, "no answer handed over")) for n in names]
        if not all(ok for ok, _ in results):
            row = by_id[gid]
            row.points, row.status = 0, "failed"
            why = "; ".join(m for ok, m in results if not ok and m)
            row.message = row.message or why or "not the expected answer"
    return rows
