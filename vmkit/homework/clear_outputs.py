"""Release step: remove outputs and execution counts (a student's copy starts blank)."""

from __future__ import annotations

__all__ = ["clear_outputs"]


def clear_outputs(nb, resources: dict):
    """Changes ``nb`` in place: code cells lose their outputs and execution counts, every cell
    its ``execution`` timing metadata; the notebook loses its widget state. ``language_info``
    stays whole, as the solution's kernel recorded it: JupyterLab writes the running kernel's
    ``language_info`` into a notebook when it opens it, and a notebook that had less (or other
    values) would show as modified as soon as it is opened. Returns ``nb``."""
    for cell in nb.cells:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)
    meta = nb.get("metadata", {})
    meta.pop("widgets", None)
    return nb
