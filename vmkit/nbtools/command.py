"""``python -m vmkit.nbtools execute|slides|check``: the Makefile's notebook tools."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv=None) -> int:
    from vmkit.errors import VmkitError
    from vmkit.nbtools import hygiene

    parser = argparse.ArgumentParser(prog="python -m vmkit.nbtools",
                                     description="Notebook tooling: deterministic execution, "
                                                 "slide-metadata checks and offline slides.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("execute", help="re-execute notebooks in place (deterministic)")
    p.add_argument("notebooks", nargs="+", type=Path)
    p = sub.add_parser("slides", help="export notebooks to offline reveal.js slides")
    p.add_argument("notebooks", nargs="*", type=Path,
                   help="default: the lecture notebooks, notebooks/NN-*.ipynb")
    p.add_argument("-o", "--output-dir", type=Path, default=None,
                   help="default: build/slides in a checkout, else ./slides")
    p = sub.add_parser("check", help="check slide metadata and the setup cell")
    p.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)

    if args.command == "execute":
        for path in args.notebooks:
            print(f"executing {path}", flush=True)
            hygiene.execute_notebook(path)
        return 0
    if args.command == "slides":
        try:
            decks = make_slides(args.notebooks, args.output_dir)
        except VmkitError as e:
            print(f"slides: {e}", file=sys.stderr)
            return 1
        for deck in decks:
            print(deck)
        return 0
    import nbformat

    bad = 0
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        for problem in hygiene.check_slides_metadata(nb) + hygiene.check_setup_cell(nb):
            print(f"{path}: {problem}")
            bad += 1
    return 1 if bad else 0


def make_slides(notebooks=(), output_dir=None) -> list[Path]:
    """What ``vmkit slides`` and ``make slides`` do: ``notebooks`` (default: the lecture
    notebooks of the checkout or the installed kit) as decks in ``output_dir`` (default
    :func:`vmkit.nbtools.slides.default_output_dir`). Raises ``VmkitError`` (one line) when a
    notebook is missing or the build fails."""
    from vmkit.nbtools import slides
    from vmkit.resources import MaterialMissing, lecture_notebooks

    notebooks = [Path(n) for n in notebooks] or lecture_notebooks()
    if not notebooks:
        raise MaterialMissing("no lecture notebooks (notebooks/NN-*.ipynb): no slides")
    for path in notebooks:
        if not path.is_file():
            raise MaterialMissing(f"{path}: no such notebook")
    out = Path(output_dir) if output_dir is not None else slides.default_output_dir()
    return slides.build_slides(notebooks, out)
