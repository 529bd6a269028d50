"""Homework: release (solutions/ -> exercises/) and autograding.

Solutions are the source of truth (DESIGN.md, Homework): ``solutions/*.ipynb`` carry nbgrader
cell metadata (schema version 3) and ``### BEGIN SOLUTION`` / ``### END SOLUTION`` and
``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS`` markers.

- :mod:`vmkit.homework.release` runs the release pipeline (one preprocessor per module:
  ``clear_solutions``, ``clear_hidden_tests``, ``clear_outputs``, ``compute_checksums``,
  ``stamp``);
- :mod:`vmkit.homework.grade` runs the grading pipeline (``check_tampering``,
  ``restore_cells``, ``execute``, ``score``, ``verify_answers``, ``feedback``), each
  submission in its own watched worker process;
- :mod:`vmkit.homework.sandbox` is where a submission's code runs: a bubblewrap sandbox per
  submission (own namespaces, no network, read-only binds of only what the kernel needs, an
  unprivileged uid, limits), killed whole when the submission is graded;
- :mod:`vmkit.homework.variant` gives each student their own guest parameters;
- :mod:`vmkit.homework.checks` is what instructor test cells call: expected values recomputed
  in a fresh, isolated Python process that the student's cells cannot have patched.

This package imports nbformat, nbclient and nbconvert only (and the kit's version string); the
sandbox runs the ``bwrap``, ``setpriv`` and ``prlimit`` programs.
"""

__all__ = ["cells", "variant", "checks", "release", "grade", "sandbox"]
