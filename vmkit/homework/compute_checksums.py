"""Release step: record an nbgrader-style ``checksum`` in every locked or graded cell."""

from __future__ import annotations

from vmkit.homework import cells

__all__ = ["compute_checksums"]


def compute_checksums(nb, resources: dict):
    """Changes ``nb`` in place: ``metadata.nbgrader.checksum`` of each locked, graded or task
    cell, over the cell as released (so run it after the clearing steps). Returns ``nb``."""
    for cell in nb.cells:
        md = cells.nbgrader(cell)
        if md.get("locked") or md.get("grade") or md.get("task"):
            md["checksum"] = cells.checksum(cell)
    return nb
