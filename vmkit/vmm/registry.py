"""One name -> monitor registry. Every place that turns a monitor's short name into a
monitor reads it: ``compare``, ``memory_comparison``, the I/O comparison, ``sharing``, the
``vmkit`` command (``--monitor``), the widgets and the notebooks (``vmkit.vmm.MONITORS``).

``MONITORS`` maps each monitor's ``name`` to its class; ``VARIANTS`` names configurations
the experiments compare besides them: ``hw-shadow``, hardware assist with shadow paging (first-
generation VT-x had no nested paging), ``hw-ept``, with nested paging, and the monitors with
*traced* shadow page tables (``shadow="traced"``, :mod:`vmkit.vmm.paging.traced`), as Adams &
Agesen's VMMs had in 2006: ``te-traced``, ``bt-traced`` and ``hw-traced`` (hardware assist, no
EPT, traced shadows: the hardware VMM they measured).
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


def _traced(cls, **kw):
    def make(image, costs=None):
        return cls(image, costs=costs, shadow="traced", **kw)
    make.__name__ = f"_{cls.name}_traced"
    return make


#: name -> ``factory(image, costs=...)`` of a configuration the experiments compare
VARIANTS = {"hw-shadow": _hw_shadow, "hw-ept": _hw_ept,
            "te-traced": _traced(TrapAndEmulate), "bt-traced": _traced(BinaryTranslation),
            "hw-traced": _traced(HardwareAssisted)}


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
