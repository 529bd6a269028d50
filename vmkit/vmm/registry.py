"""One name -> monitor registry. Every place that turns a monitor's short name into a
monitor reads it: ``compare``, ``memory_comparison``, the I/O comparison, ``sharing``, the
``vmkit`` command (``--monitor``), the widgets and the notebooks (``vmkit.vmm.MONITORS``).

``MONITORS`` maps each monitor's ``name`` to its class; ``VARIANTS`` names configurations
the experiments compare besides them: ``hw-shadow``, hardware assist with shadow paging (first-
generation VT-x, as Adams & Agesen measured it in 2006) and ``hw-ept``, with nested paging.
"""

from __future__ import annotations

import difflib

from vmkit.errors import VmkitError
from vmkit.vmm.base import Native
from vmkit.vmm.bt import BinaryTranslation
from vmkit.vmm.hw import HardwareAssisted
from vmkit.vmm.pv import Paravirtual
from vmkit.vmm.te import TrapAndEmulate

__all__ = ["MONITORS", "VARIANTS", "factory"]

MONITORS = {cls.name: cls for cls in (Native, TrapAndEmulate, BinaryTranslation,
                                      HardwareAssisted, Paravirtual)}


def _hw_shadow(image, costs=None):
    return HardwareAssisted(image, costs=costs, ept=False)


def _hw_ept(image, costs=None):
    return HardwareAssisted(image, costs=costs, ept=True)


#: name -> ``factory(image, costs=...)`` of a configuration the experiments compare
VARIANTS = {"hw-shadow": _hw_shadow, "hw-ept": _hw_ept}


def factory(name: str):
    """The monitor class or variant factory called ``name``; an unknown name is a
    VmkitError that says which names exist (and the closest one)."""
    f = MONITORS.get(name) or VARIANTS.get(name)
    if f is None:
        known = list(MONITORS) + list(VARIANTS)
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise VmkitError(f"unknown monitor {name!r}: expected one of {', '.join(known)}{hint}")
    return f
