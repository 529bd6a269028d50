"""Release step: remove outputs and execution counts (a student's copy starts blank)."""

from __future__ import annotations

__all__ = ["clear_outputs"]


def clear_outputs(nb, resources: dict):
    """Changes ``nb`` in place: code cells lose their outputs and execution counts, every cell
    its ``execution`` timing metadata; the notebook loses what running it recorded (widget
    state, and ``language_info`` beyond the language's name, which names the Python version
    that ran it), so that executing a solution does not change its exercise. Returns ``nb``."""
    for cell in nb.cells:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)
    meta = nb.get("metadata", {})
    meta.pop("widgets", None)
    if "language_info" in meta:
        meta["language_info"] = {"name": meta["language_info"].get("name", "python")}
    return nb
