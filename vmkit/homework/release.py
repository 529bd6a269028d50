"""``vmkit release``: generate ``exercises/`` from ``solutions/``.

Each ``solutions/NAME.ipynb`` becomes ``exercises/NAME.ipynb``; the assignment id is NAME.
The solutions are the instructor's: the checkout's ``solutions/`` (an installed kit carries
none; ``vmkit release --source DIR`` names them), and the exercises go beside them.
"""

from __future__ import annotations

import copy
from pathlib import Path

from vmkit.homework.clear_hidden_tests import clear_hidden_tests
from vmkit.homework.clear_outputs import clear_outputs
from vmkit.homework.clear_solutions import clear_solutions
from vmkit.homework.compute_checksums import compute_checksums
from vmkit.homework.stamp import stamp
from vmkit import resources as course_material

__all__ = ["PIPELINE", "ROOT", "release_notebook", "release", "write", "default_source"]

#: the source checkout the kit runs from, or None for an installed kit
ROOT = course_material.checkout_root()

#: in order: the clearing steps first, because the checksums are of the cells as released;
#: the stamp last
PIPELINE = [clear_solutions, clear_hidden_tests, clear_outputs, compute_checksums, stamp]


def kit_version() -> str:
    from vmkit import __version__
    return __version__


def release_notebook(nb, assignment: str):
    """A released copy of the solution notebook ``nb`` (``nb`` itself is not changed)."""
    out = copy.deepcopy(nb)
    resources = {"assignment": assignment, "kit_version": kit_version()}
    for step in PIPELINE:
        out = step(out, resources)
    return out


def dumps(nb) -> str:
    import nbformat
    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def write(nb, path) -> None:
    Path(path).write_text(dumps(nb), encoding="utf-8")


def default_source() -> Path:
    """The instructor's solutions when none are named: the checkout's ``solutions/``, else
    ``solutions/`` in the current folder."""
    return course_material.solutions_dir() or Path("solutions")


def release(source=None, dest=None) -> list[Path]:
    """Release every ``source/*.ipynb`` (default :func:`default_source`) into ``dest``
    (default ``exercises/`` beside ``source``); returns the files written. Exercises without a
    solution any more are removed."""
    import nbformat

    source = Path(source) if source else default_source()
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such folder")
    dest = Path(dest) if dest else source.resolve().parent / "exercises"
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    names = set()
    for path in sorted(source.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        out = dest / path.name
        write(release_notebook(nb, path.stem), out)
        written.append(out)
        names.add(path.name)
    for stale in dest.glob("*.ipynb"):
        if stale.name not in names:
            stale.unlink()
    return written
