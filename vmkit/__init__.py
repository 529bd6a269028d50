"""vmkit: a Jupyter teaching kit for virtual machine monitors."""

from vmkit.errors import AssemblyError, GuestError, UnsupportedInstruction, VmkitError

__version__ = "0.1.0"

__all__ = ["AssemblyError", "GuestError", "UnsupportedInstruction", "VmkitError", "__version__",
           "assemble", "Machine", "Debugger"]


def __getattr__(name):  # lazy imports keep `import vmkit` cheap
    if name == "assemble":
        from vmkit.isa.asm import assemble
        return assemble
    if name == "Program":
        from vmkit.isa.asm import Program
        return Program
    if name == "Machine":
        from vmkit.machine.machine import Machine
        return Machine
    if name == "Debugger":
        from vmkit.debug import Debugger
        return Debugger
    if name in ("classify", "classify_all"):
        from vmkit.vmm import classify as _c
        return getattr(_c, name)
    raise AttributeError(f"module 'vmkit' has no attribute {name!r}")
