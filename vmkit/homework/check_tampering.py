"""Grading step: find locked code cells that the student changed (nbgrader-style checksums)."""

from __future__ import annotations

from vmkit.homework import cells

__all__ = ["check_tampering"]


def check_tampering(submission, released) -> list[str]:
    """grade_ids of the locked code cells (other than tests) whose source in ``submission``
    no longer matches the checksum recorded in the ``released`` exercise. Tests are not
    counted: the grader restores them, so editing one changes nothing; a deleted locked cell is
    restored too. Changes nothing."""
    locked = {cells.grade_id(c): c for c in released.cells
              if c["cell_type"] == "code" and cells.is_locked(c) and not cells.is_test(c)}
    expected = {gid: cells.nbgrader(c).get("checksum") for gid, c in locked.items()}
    bad = []
    for cell in submission.cells:
        gid = cells.grade_id(cell)
        if gid in expected and cell["cell_type"] == "code" and expected[gid]:
            # the released cell's metadata with the submission's source: only the source
            # decides (the metadata is the instructor's anyway)
            probe = {"cell_type": "code", "source": cell.get("source", ""),
                     "metadata": {"nbgrader": dict(cells.nbgrader(locked[gid]))}}
            if cells.checksum(probe) != expected[gid] and gid not in bad:
                bad.append(gid)
    return bad
