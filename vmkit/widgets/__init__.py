"""Notebook widgets composed from :mod:`vmkit.viz`: each is an ipywidgets ``Box`` (displayable as
the last line of a cell) with a static HTML/SVG form for exported notebooks and feedback pages.

>>> from vmkit.widgets import Stepper, RingView
>>> Stepper(vm)                      # doctest: +SKIP
"""

from vmkit.widgets.exits import VmExitView
from vmkit.widgets.costs import CostDashboard
from vmkit.widgets.history import StepHistory
from vmkit.widgets.rings import RingView
from vmkit.widgets.stepper import Stepper
from vmkit.widgets.tcache import TranslationCacheView

__all__ = ["Stepper", "RingView", "StepHistory", "TranslationCacheView", "VmExitView"]
