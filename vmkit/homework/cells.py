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


def checksum(cell) -> str:
    """An md5 over what a locked cell must keep (nbgrader's recipe: source, type and the
    grading flags; whitespace at the ends of the source does not count)."""
    m = hashlib.md5()
    m.update(str(cell.get("source", "")).strip().encode("utf-8"))
    m.update(cell["cell_type"].encode())
    md = nbgrader(cell)
    for key in ("grade", "solution", "locked", "task"):
        m.update(f"{key}={bool(md.get(key))};".encode())
    if md.get("grade") or md.get("task"):
        m.update(f"id={md.get('grade_id')};points={points(cell)};".encode())
    return m.hexdigest()


def by_grade_id(nb) -> dict:
    """grade_id -> (index, cell) for every cell that has one (the first wins)."""
    out: dict = {}
    for i, cell in enumerate(nb.cells):
        gid = grade_id(cell)
        if gid and gid not in out:
            out[gid] = (i, cell)
    return out
