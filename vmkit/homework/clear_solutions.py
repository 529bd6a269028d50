"""Release step: replace each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region."""

from __future__ import annotations

import re

from vmkit.homework import cells

__all__ = ["clear_solutions", "CODE_STUB", "PROSE_STUB"]

CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
PROSE_STUB = "YOUR ANSWER HERE"
_REGION = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*$",
                     re.M | re.S)


def _stub(match: re.Match) -> str:
    indent = match.group(1)
    return "\n".join(indent + line for line in CODE_STUB.splitlines())


def clear_solutions(nb, resources: dict):
    """Changes ``nb`` in place: in code cells each solution region becomes ``CODE_STUB`` (at
    the region's indentation); a markdown answer cell becomes ``PROSE_STUB``. Returns ``nb``."""
    for cell in nb.cells:
        if not cells.is_solution(cell):
            continue
        if cell["cell_type"] == "markdown":
            cell["source"] = PROSE_STUB
        elif "### BEGIN SOLUTION" in cell["source"]:
            cell["source"] = _REGION.sub(_stub, cell["source"])
        else:  # a solution cell without markers: the whole cell is the answer
            cell["source"] = CODE_STUB
    return nb
