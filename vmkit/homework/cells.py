"""nbgrader cell metadata (schema version 3): reading it, and nbgrader-style checksums."""

from __future__ import annotations

import hashlib

__all__ = ["SCHEMA_VERSION", "nbgrader", "grade_id", "is_grade", "is_solution", "is_locked",
           "is_task", "is_test", "points", "checksum", "by_grade_id"]

SCHEMA_VERSION = 3


def nbgrader(cell) -> dict:
    """The cell's ``metadata.nbgrader`` (an empty dict when it has none)."""
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def grade_id(cell) -> str | None:
    return nbgrader(cell).get("grade_id")


def is_grade(cell) -> bool:
    return bool(nbgrader(cell).get("grade"))


def is_solution(cell) -> bool:
    return bool(nbgrader(cell).get("solution"))


def is_locked(cell) -> bool:
    return bool(nbgrader(cell).get("locked"))


def is_task(cell) -> bool:
    return bool(nbgrader(cell).get("task"))


def is_test(cell) -> bool:
    """An autograder test: a code cell with ``grade`` and without ``solution``."""
    return cell["cell_type"] == "code" and is_grade(cell) and not is_solution(cell)


def points(cell) -> float:
    return float(nbgrader(cell).get("points", 0) or 0)


def is_locked_nbgrader(cell) -> bool:
    """Locked as nbgrader counts it: never a solution cell, always a grade cell, else the
    ``locked`` flag."""
    if is_solution(cell):
        return False
    return True if is_grade(cell) else bool(nbgrader(cell).get("locked", False))


def checksum(cell) -> str:
    """The checksum of a cell exactly as nbgrader computes it (``nbgrader.utils.
    compute_checksum``), so that nbgrader's Validate agrees with vmkit: an md5 over the source,
    the cell type, the grade/solution/locked flags, the grade_id and a grade cell's points."""
    md = nbgrader(cell)
    m = hashlib.md5()
    source = cell.get("source", "")
    m.update(("".join(source) if isinstance(source, list) else str(source)).encode("utf-8"))
    m.update(str(cell["cell_type"]).encode("utf-8"))
    m.update(str(md.get("grade", False)).encode("utf-8"))
    m.update(str(md.get("solution", False)).encode("utf-8"))
    m.update(str(is_locked_nbgrader(cell)).encode("utf-8"))
    m.update(str(md.get("grade_id")).encode("utf-8"))
    if md.get("grade", False):
        m.update(str(float(md.get("points", 0))).encode("utf-8"))
    return m.hexdigest()


def by_grade_id(nb) -> dict:
    """grade_id -> (index, cell) for every cell that has one (the first wins)."""
    out: dict = {}
    for i, cell in enumerate(nb.cells):
        gid = grade_id(cell)
        if gid and gid not in out:
            out[gid] = (i, cell)
    return out
