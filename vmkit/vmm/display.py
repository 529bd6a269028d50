"""How vmm's results are drawn without vmm drawing: a small registry of displays.

The experiments (``compare``, ``memory_comparison``, ``io_comparison``) return data objects;
their pictures come from :mod:`vmkit.viz`, which registers one function per (result type,
display kind) here. ``result.plot()`` asks :func:`draw`; the first time a display is asked
for, the provider module :data:`PROVIDER` (which registers viz's drawings) is loaded by name,
so vmm never imports viz and still works without the caller importing it first (as a plotting
library finds its backends).

>>> from vmkit.vmm import display
>>> @display.register("Comparison", "plot")           # doctest: +SKIP
... def comparison_figure(result, **kw): ...
"""

from __future__ import annotations

import importlib
from typing import Callable

from vmkit.errors import VmkitError

__all__ = ["register", "draw", "displays", "PROVIDER"]

#: the module that registers viz's drawings of vmm's results (loaded on first use)
PROVIDER = "vmkit.viz.displays"

_DISPLAYS: dict[tuple[str, str], Callable] = {}


def register(type_name: str, kind: str):
    """Register ``fn(result, **kwargs)`` as the ``kind`` display ("plot", ...) of results of
    the class named ``type_name`` (decorator; returns ``fn``)."""
    def deco(fn):
        _DISPLAYS[type_name, kind] = fn
        return fn
    return deco


def displays() -> dict:
    """Every registered display: {(type name, kind): function} (the provider loaded)."""
    _load()
    return dict(_DISPLAYS)


def _load() -> None:
    try:
        importlib.import_module(PROVIDER)
    except ImportError as ex:
        raise VmkitError(f"the displays of vmm's results come from {PROVIDER}, which could "
                         f"not be loaded ({ex})") from None


def draw(result, kind: str, **kwargs):
    """The ``kind`` display of ``result`` (e.g. a matplotlib figure for "plot")."""
    key = (type(result).__name__, kind)
    fn = _DISPLAYS.get(key)
    if fn is None:
        _load()
        fn = _DISPLAYS.get(key)
    if fn is None:
        raise VmkitError(f"no {kind!r} display is registered for {key[0]} results")
    return fn(result, **kwargs)
