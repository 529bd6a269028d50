"""The kit's source tree, as the tests that build it copy it: tests/course/test_installed.py
(an sdist and a wheel) and tests/browser/test_hub.py (the students' wheel).

One list for both, so that a folder added to the kit (docs/ once was missing from one of them)
reaches every build. ``solutions/`` is in it: the packaging must leave it out by itself
(MANIFEST.in, setup.py), and test_installed checks that it does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: what a source tree of the kit holds, relative to the checkout
SOURCE = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "constraints.txt",
          "environment.yml", "vmkit", "notebooks", "exercises", "share", "docs", "solutions"]

#: never copied: caches, npm's packages, a wheel build's course folder
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", ".ipynb_checkpoints",
                                "_course")


def copy_source(dest: Path) -> Path:
    """Copy the :data:`SOURCE` of this checkout into ``dest`` (created); returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in SOURCE:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=IGNORE)
        else:
            shutil.copy2(src, dest / name)
    return dest
