"""Release step: remove ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` regions."""

from __future__ import annotations

import re

__all__ = ["clear_hidden_tests"]

_REGION = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[^\n]*\n.*?^[ \t]*### END HIDDEN TESTS[^\n]*"
                     r"(\n|$)", re.M | re.S)


def clear_hidden_tests(nb, resources: dict):
    """Changes ``nb`` in place: every hidden-test region of every code cell is deleted (the
    grader puts it back from the instructor's copy). Returns ``nb``."""
    for cell in nb.cells:
        if cell["cell_type"] == "code" and "### BEGIN HIDDEN TESTS" in cell["source"]:
            cell["source"] = _REGION.sub("", cell["source"]).rstrip("\n")
    return nb
