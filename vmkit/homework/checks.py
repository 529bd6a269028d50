"""What instructor test cells call in the student's kernel: hand answers to the grader.

This module is in the package a student imports, so it holds no answers. A hidden test hands
each answer over with :func:`submit` (one marked line of output) and learns nothing back: the
grader reads the line from the executed notebook and checks the answer itself, outside the
kernel, against the reference answers that live with the instructor's solutions
(:mod:`vmkit.homework.reference`). A forged line can only report the right answer.

Visible tests check only what a student may know (types, shapes, sanity), with messages that
help.

For nbgrader's own autograde (which has no outside check), ``VMKIT_REFERENCE`` names the
reference folder and :func:`submit` then also asserts that the answer is right.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import textwrap

__all__ = ["same", "handler_source", "submit", "answers_in", "ANSWER_MARK"]

#: the start of the output line by which :func:`submit` hands an answer to the grader
ANSWER_MARK = "@@vmkit-answer "

_dumps, _loads = json.dumps, json.loads
_getsource, _dedent = inspect.getsource, textwrap.dedent
_write = sys.stdout.write
_cache: dict = {}


def handler_source(func) -> str:
    """The source of a function defined in a notebook cell (the grader reruns it apart)."""
    return _dedent(_getsource(func))


def same(answer, expected) -> bool:
    """Whether ``answer`` equals ``expected`` as JSON: an object whose ``__eq__`` says yes to
    everything (an ``int`` subclass, say) is compared by its value, not by its ``__eq__``."""
    try:
        return _dumps(answer, sort_keys=True) == _dumps(expected, sort_keys=True)
    except (TypeError, ValueError):
        return False


def submit(name: str, value, assignment: str | None = None) -> None:
    """Hand ``value`` (JSON) to the grader as the answer ``name`` of ``assignment`` (a marked
    output line). Only when ``$VMKIT_REFERENCE`` is set (grading with nbgrader itself) is the
    answer also checked here, against that folder's reference."""
    sys.stdout.write(ANSWER_MARK + _dumps({"name": name, "value": value}, sort_keys=True) + "\n")
    folder = os.environ.get("VMKIT_REFERENCE")
    if folder and assignment:
        _check_here(folder, assignment, name, value)


def _check_here(folder: str, assignment: str, name: str, value) -> None:
    from vmkit.homework import reference
    from vmkit.homework.variant import student_id

    student = student_id()
    if assignment == "hw02-trap-and-emulate":
        ok, why = reference.check_device(folder, {name: value}, student,
                                         env=dict(os.environ))[name]
        assert ok, why
        return
    key = (folder, assignment, student)
    if key not in _cache:
        _cache[key] = reference.expected(folder, assignment, student)
    want = _cache[key]
    assert name in want and same(value, want[name]), f"{name}: not the expected answer"


def answers_in(outputs) -> dict:
    """name -> value of every answer that :func:`submit` wrote into a cell's ``outputs``."""
    found = {}
    for out in outputs:
        if out.get("output_type") != "stream" or out.get("name") != "stdout":
            continue
        text = out.get("text", "")
        for line in ("".join(text) if isinstance(text, list) else text).splitlines():
            if line.startswith(ANSWER_MARK):
                try:
                    item = _loads(line[len(ANSWER_MARK):])
                    found[item["name"]] = item["value"]
                except (ValueError, KeyError, TypeError):
                    continue
    return found
