"""The monitors: Native (the reference), TrapAndEmulate, BinaryTranslation, HardwareAssisted,
Paravirtual; the cost model and the comparison."""

from vmkit.vmm.base import Monitor, Native, VM
from vmkit.vmm.costs import CostModel
from vmkit.vmm.te import TrapAndEmulate
from vmkit.vmm.hw import HardwareAssisted
from vmkit.vmm.bt import BinaryTranslation

__all__ = ["Monitor", "Native", "VM", "CostModel", "MONITORS", "TrapAndEmulate",
           "HardwareAssisted", "BinaryTranslation"]

MONITORS = {"native": Native, "te": TrapAndEmulate, "bt": BinaryTranslation,
            "hw": HardwareAssisted}


def __getattr__(name):
    if name == "TrapAndEmulate":
        from vmkit.vmm.te import TrapAndEmulate
        return TrapAndEmulate
    if name == "BinaryTranslation":
        from vmkit.vmm.bt import BinaryTranslation
        return BinaryTranslation
    if name == "HardwareAssisted":
        from vmkit.vmm.hw import HardwareAssisted
        return HardwareAssisted
    if name == "Paravirtual":
        from vmkit.vmm.pv import Paravirtual
        return Paravirtual
    if name == "compare":
        from vmkit.vmm.compare import compare
        return compare
    raise AttributeError(f"module 'vmkit.vmm' has no attribute {name!r}")
