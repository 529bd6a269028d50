"""Notebook tooling, in three parts that load separately:

- :mod:`vmkit.nbtools.runtime`: what a notebook imports when it runs
  (:func:`notebook_setup` in its first cell); light, and the only part a student's kernel loads;
- :mod:`vmkit.nbtools.hygiene`: deterministic execution (:func:`execute_notebook`),
  normalised outputs and the slide-metadata checks (``make notebooks``, the tests);
- :mod:`vmkit.nbtools.slides`: offline reveal.js decks (``vmkit slides``, ``make slides``).

``vmkit.nbtools`` re-exports the names of all three; ``from vmkit.nbtools import
notebook_setup`` loads only the runtime part (the others are imported on first use).

Command line (the Makefile's ``notebooks`` and ``slides`` targets)::

    python -m vmkit.nbtools execute NOTEBOOK...          # re-execute in place
    python -m vmkit.nbtools slides [-o DIR] [NOTEBOOK...] # default: the lecture notebooks
    python -m vmkit.nbtools check NOTEBOOK...             # slide metadata and setup cell
"""

from __future__ import annotations

import importlib

from vmkit.nbtools.runtime import SVG_HASHSALT, install_error_display, notebook_setup

__all__ = [
    "KERNEL_NAME",
    "KERNEL_ENV",
    "SVG_HASHSALT",
    "SLIDE_TYPES",
    "SLIDE_SIZE",
    "SLIDE_MIN_ZOOM",
    "notebook_setup",
    "install_error_display",
    "execute_notebook",
    "write_notebook",
    "normalize_outputs",
    "drop_orphan_widget_views",
    "check_slides_metadata",
    "check_setup_cell",
    "lecture_notebooks",
    "build_slides",
    "ensure_slide_assets",
    "external_urls",
    "SlidesError",
    "main",
]

# name -> the submodule that defines it (imported when the name is first asked for)
_LAZY = {
    **{name: "hygiene" for name in (
        "KERNEL_NAME", "KERNEL_ENV", "EXECUTE_TIMEOUT", "SLIDE_TYPES", "WIDGET_VIEW",
        "WIDGET_STATE", "execute_notebook", "write_notebook", "normalize_outputs",
        "drop_orphan_widget_views", "check_slides_metadata", "check_setup_cell",
        "lecture_notebooks")},
    **{name: "slides" for name in (
        "SLIDE_SIZE", "SLIDE_MIN_ZOOM", "SLIDES_TEMPLATE", "REVEAL_THEME", "ASSET_URLS",
        "HIDE_INPUT_TAG", "COLUMNS_TAG", "SlidesError", "build_slides", "ensure_slide_assets",
        "external_urls")},
    "main": "command",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vmkit.nbtools' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"vmkit.nbtools.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
