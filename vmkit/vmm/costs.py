"""The cost model: cycles charged per event category, with named presets that cite their sources.

Monitors count events (instructions, traps, emulations, VM exits, translations, ...); the cost
model turns counts into cycles, so the same run can be priced on different hardware. Changing the
model never reruns a guest: ``CostModel.price(counts)`` recomputes.

Categories (``CostModel.CATEGORIES``):

=====================  ==========================================================================
native                 one guest instruction retired on the hardware (direct execution)
interrupt              the hardware delivering a system call or interrupt through the IDT and
                       the return (natively, or to a guest in non-root mode)
trap                   a trap into the VMM (the fault/interrupt delivery to ring 0 and back)
emulate                the VMM decoding and emulating one instruction on the virtual CPU
vm_exit                one VM exit plus VM entry round trip (hardware assist)
exit_handling          the hardware VMM's own software per exit beyond what ``vm_exit`` holds
                       (dispatch, reconstructing the guest's state, resuming it)
translate              binary translation, per guest instruction translated
tc_lookup              one translation-cache lookup (an indirect branch or a block exit)
callout                a call from translated code into the VMM
interpret              one instruction run by the BT's interpreter before it is translated
page_walk              one memory reference of a page walk (TLB miss)
shadow_update          one shadow page table update by the VMM
hidden_fault           a page fault that the VMM handles without the guest seeing it
hypercall              one hypercall round trip (paravirtualization)
world_switch           switching the CPU from one VM to another
exception              the hardware delivering a fault (#PF, #DE, #GP ...) through the guest's
                       IDT and the return, where no VMM intervenes (natively, or in non-root
                       mode)
port_io                one ``in`` or ``out`` reaching a real device (natively): an off-CPU
                       chipset register, far slower than an instruction
tc_emulate             a sensitive instruction emulated by a short sequence inside the
                       translation cache (BT), e.g. ``in`` against the virtual device model
=====================  ==========================================================================
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields, replace

from vmkit.errors import VmkitError

__all__ = ["CostModel"]


@dataclass(frozen=True)
class CostModel:
    """Cycles per event, by category.

    ``CostModel()`` is an unnamed ("custom") model of round figures, a starting point for
    sliders; what monitors, :func:`~vmkit.vmm.compare` and the ``vmkit`` command price with
    when given no model is :meth:`default`, the named preset ``DEFAULT_PRESET``."""
    native: float = 1.0
    interrupt: float = 200.0
    trap: float = 1000.0
    emulate: float = 400.0
    vm_exit: float = 1900.0
    exit_handling: float = 1000.0
    translate: float = 100.0
    tc_lookup: float = 10.0
    callout: float = 300.0
    interpret: float = 40.0
    page_walk: float = 30.0
    shadow_update: float = 800.0
    hidden_fault: float = 1200.0
    hypercall: float = 1000.0
    world_switch: float = 5000.0
    exception: float = 1000.0
    port_io: float = 1000.0
    tc_emulate: float = 200.0
    name: str = "custom"
    source: str = ""
    notes: dict = field(default_factory=dict, compare=False, hash=False)

    CATEGORIES = ("native", "interrupt", "trap", "emulate", "vm_exit", "exit_handling",
                  "translate", "tc_lookup", "callout", "interpret", "page_walk", "shadow_update",
                  "hidden_fault", "hypercall", "world_switch", "exception", "port_io",
                  "tc_emulate")

    def cost(self, category: str) -> float:
        try:
            return getattr(self, category)
        except AttributeError:
            raise VmkitError(f"unknown cost category {category!r}; expected one of "
                             f"{', '.join(self.CATEGORIES)}") from None

    def price(self, counts) -> Counter:
        """Cycles by category for event ``counts`` (a mapping category -> count)."""
        out = Counter()
        for k, n in counts.items():
            if n:
                out[k] = n * self.cost(k)
        return out

    def with_(self, **changes) -> "CostModel":
        """A copy with some costs changed (for sliders)."""
        bad = [k for k in changes if k not in self.CATEGORIES]
        if bad:
            raise VmkitError(f"unknown cost categories {bad}; expected {self.CATEGORIES}")
        # "(modified)" once: a model changed twice is still "p4-2006 (modified)"
        name = self.name if self.name.endswith(" (modified)") else f"{self.name} (modified)"
        return replace(self, name=name, **changes)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in self.CATEGORIES}

    #: the preset that monitors, compare() and the ``vmkit`` command use when given no model
    DEFAULT_PRESET = "p4-2006"

    @classmethod
    def default(cls) -> "CostModel":
        """The model used when none is given: ``CostModel.preset(CostModel.DEFAULT_PRESET)``."""
        return cls.preset(cls.DEFAULT_PRESET)

    @classmethod
    def presets(cls) -> list[str]:
        return sorted(_PRESETS)

    @classmethod
    def preset(cls, name: str) -> "CostModel":
        try:
            return _PRESETS[name]
        except KeyError:
            raise VmkitError(f"unknown cost preset {name!r}; expected one of "
                             f"{', '.join(sorted(_PRESETS))}") from None


_PRESETS: dict[str, CostModel] = {}


def _preset(m: CostModel) -> None:
    _PRESETS[m.name] = m


# The presets, each figure with its source, live in vmkit.vmm.presets.
from vmkit.vmm import presets as _presets  # noqa: E402

for _m in _presets._make(CostModel):
    _preset(_m)
