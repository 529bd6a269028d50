"""Notebook widgets composed from :mod:`vmkit.viz`: each is an ipywidgets ``Box`` (displayable as
the last line of a cell) with a static HTML/SVG form for exported notebooks and feedback pages.

>>> from vmkit.widgets import Stepper, RingView
>>> Stepper(vm)                      # doctest: +SKIP
"""

import importlib

__all__ = ["Stepper", "RingView", "StepHistory", "TranslationCacheView", "VmExitView",
           "CostDashboard"]

#: each widget's module, imported when the widget is first asked for: a notebook that shows a
#: cost dashboard does not load the Stepper and the debugger behind it (about 0.1 s of a
#: kernel's start)
_MODULES = {"Stepper": "stepper", "RingView": "rings", "StepHistory": "history",
            "TranslationCacheView": "tcache", "VmExitView": "exits",
            "CostDashboard": "costs"}


def __getattr__(name):
    if name in _MODULES:
        return getattr(importlib.import_module(f"vmkit.widgets.{_MODULES[name]}"), name)
    raise AttributeError(f"module 'vmkit.widgets' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
