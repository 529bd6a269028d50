"""Release step: remove outputs and execution counts (a student's copy starts blank)."""

from __future__ import annotations

__all__ = ["clear_outputs"]


def clear_outputs(nb, resources: dict):
    """Changes ``nb`` in place: code cells lose their outputs and execution counts, every cell
    its ``execution`` timing metadata. Returns ``nb``."""
    for cell in nb.cells:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)
    return nb
