"""Release step: stamp the notebook with its assignment id and the kit's version."""

from __future__ import annotations

__all__ = ["stamp", "stamped"]


def stamp(nb, resources: dict):
    """Changes ``nb`` in place: ``metadata.vmkit = {"assignment": resources["assignment"],
    "kit_version": resources["kit_version"]}``. Returns ``nb``."""
    nb.metadata["vmkit"] = {"assignment": resources["assignment"],
                            "kit_version": resources["kit_version"]}
    return nb


def stamped(nb) -> tuple[str | None, str | None]:
    """(assignment id, kit version) as stamped in ``nb``, ``None`` where missing."""
    md = nb.get("metadata", {}).get("vmkit", {}) or {}
    return md.get("assignment"), md.get("kit_version")
