"""Direct assignment of a device to one VM (device passthrough; an IOMMU would confine the
device's DMA on real hardware): the ``assign=`` keyword of the monitors, and what
trap-and-emulate (the TSS I/O permission bitmap) and hardware assist (the VMCS I/O bitmap) do
with it. The third way to do I/O in :mod:`vmkit.vmm.iovirt`."""

from __future__ import annotations

from collections import Counter

from vmkit.errors import VmkitError
from vmkit.machine.devices import ASSIGNABLE
from vmkit.vmm.layout import IO_BITMAP

__all__ = ["check_can_assign", "resolve_assignment", "install_te", "te_switched", "install_hw",
           "hw_exits"]

_CANNOT = {
    "native": "Native has no monitor in between: the guest already drives every device "
              "directly, so there is nothing to assign",
    "bt": "binary translation turns every in/out of the guest kernel into a callout to the "
          "VMM's device emulation; it has no way to let a port through (the translator would "
          "have to emit in/out inline), so use TrapAndEmulate or HardwareAssisted",
    "pv": "the paravirtual guest reaches its disk through the split driver, not through ports",
}


def check_can_assign(monitor_name: str) -> None:
    """Raise VmkitError saying why a monitor cannot assign devices directly."""
    if monitor_name in _CANNOT:
        raise VmkitError(f"direct assignment (assign=) is not possible under {monitor_name!r}: "
                         f"{_CANNOT[monitor_name]}")


def resolve_assignment(assign, n_vms: int, monitor_name: str = "te") -> dict:
    """Check ``assign`` ({VM index: [device names]}) and return {port: owning VM index}.
    ``None`` or ``{}`` assigns nothing."""
    if assign is None or (isinstance(assign, dict) and not assign):
        return {}
    check_can_assign(monitor_name)
    devices = ", ".join(sorted(ASSIGNABLE))
    if not isinstance(assign, dict):
        raise VmkitError(f"assign must be a dict {{VM index: [device names]}}, e.g. "
                         f"assign={{0: ['disk']}}, got {assign!r}")
    owner: dict[str, int] = {}
    ports: dict[int, int] = {}
    for vm, names in assign.items():
        if not isinstance(vm, int) or isinstance(vm, bool) or not 0 <= vm < n_vms:
            raise VmkitError(f"assign: VM {vm!r} does not exist (this monitor runs {n_vms} "
                             f"VM{'s' if n_vms != 1 else ''}: indices 0 to {n_vms - 1})")
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, (list, tuple, set, frozenset)):
            raise VmkitError(f"assign: VM {vm} needs a list of device names (assignable: "
                             f"{devices}), got {names!r}")
        for name in names:
            if name not in ASSIGNABLE:
                raise VmkitError(f"assign: unknown device {name!r} for VM {vm}; assignable "
                                 f"devices: {devices} (the console, interrupt controller, "
                                 f"timer, input and power-off ports stay with the VMM)")
            if name in owner and owner[name] != vm:
                raise VmkitError(f"assign: device {name!r} is given to VM {owner[name]} and to "
                                 f"VM {vm}; a directly assigned device has exactly one owner")
            owner[name] = vm
            for p in ASSIGNABLE[name]:
                ports[p] = vm
    return ports


def _refuser(monitor, vm, port: int):
    """Port handlers for a VM that does not own an assigned device: its access trapped (or
    exited) and the VMM answers as an empty bus: reads all ones, writes dropped, counted in
    ``monitor.refused_io[vm index]``."""
    def read(size: int) -> int:
        monitor.refused_io[vm.index] += 1
        return (1 << (8 * size)) - 1

    def write(size: int, value: int) -> None:
        monitor.refused_io[vm.index] += 1
    return read, write


def _direct(monitor, owner_of):
    """Host port handlers for an access that reached the device with no trap or exit: the
    device of the VM ``owner_of()`` (looked up at each access: snapshots replace devices)."""
    def read(size: int, port: int) -> int:
        disk = monitor.vms[owner_of()].devices.disk
        disk.direct += 1
        return disk.read(port, size)

    def write(size: int, value: int, port: int) -> None:
        disk = monitor.vms[owner_of()].devices.disk
        disk.direct += 1
        disk.write(port, size, value)
    return read, write


def _install_common(monitor, owner_of) -> None:
    m = monitor._host
    rd, wr = _direct(monitor, owner_of)
    for name, ports in ASSIGNABLE.items():
        for p in ports:
            m.port_handlers[p] = ((lambda size, p=p: rd(size, p)),
                                  (lambda size, value, p=p: wr(size, value, p)))
    for p, owner in monitor.assigned.items():
        for vm in monitor.vms:
            if vm.index != owner:
                vm.port_handlers[p] = _refuser(monitor, vm, p)


def install_te(monitor) -> None:
    """TrapAndEmulate: the owner's ports go to its device on the host, and the TSS I/O bitmap
    lets them through while the owner runs (:func:`te_switched` on every world switch)."""
    monitor.refused_io = Counter()
    if not monitor.assigned:
        return
    _install_common(monitor, lambda: monitor.current)
    te_switched(monitor)


def te_switched(monitor) -> None:
    """Set the VMM TSS's I/O bitmap for the VM now running: the ports it owns allowed (bit 0),
    every other port denied (bit 1)."""
    if not monitor.assigned:
        return
    mem = monitor._host.mem
    bitmap = IO_BITMAP
    for p, owner in monitor.assigned.items():
        a = bitmap + p // 8
        if owner == monitor.current:
            mem[a] &= ~(1 << (p % 8)) & 0xFF
        else:
            mem[a] |= 1 << (p % 8)


def install_hw(monitor) -> None:
    """HardwareAssisted: accesses that do not exit reach the running VM's own disk (the
    owner's, when assigned); the others' accesses exit and are refused."""
    monitor.refused_io = Counter()
    _install_common(monitor, lambda: monitor.current)


def hw_exits(monitor, port: int, size: int):
    """The I/O-bitmap decision for assigned ports: False (no exit) for the owner, True for any
    other VM; None when the access touches no assigned port."""
    a = monitor.assigned
    hit = [a[q] for q in range(port, port + size) if q in a]
    if not hit:
        return None
    return any(o != monitor.current for o in hit)
