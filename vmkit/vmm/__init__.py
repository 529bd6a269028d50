"""The monitors: Native (the reference), TrapAndEmulate, BinaryTranslation, HardwareAssisted,
Paravirtual; the cost model and the comparison."""

from vmkit.vmm.base import Monitor, Native, VM
from vmkit.vmm.costs import CostModel
from vmkit.vmm.te import TrapAndEmulate
from vmkit.vmm.hw import HardwareAssisted
from vmkit.vmm.bt import BinaryTranslation
from vmkit.vmm.pv import Paravirtual
from vmkit.vmm.registry import MONITORS
# imported after the submodule so that the package attribute ``compare`` is the function
from vmkit.vmm.compare import Comparison, compare
from vmkit.vmm.memory import MemoryComparison, memory_comparison

__all__ = ["Monitor", "Native", "VM", "CostModel", "MONITORS", "TrapAndEmulate",
           "HardwareAssisted", "BinaryTranslation", "Paravirtual", "compare", "Comparison",
           "memory_comparison", "MemoryComparison"]

