"""I/O virtualization three ways: the same guest I/O (the ``diskio`` guest's kernel writing
``kb`` KB to the output disk, :class:`vmkit.machine.devices.OutputDisk`) done by

1. **an emulated device**: the guest's driver does one ``out`` per dword; under
   trap-and-emulate each one traps to the VMM, which emulates it on the VM's virtual disk,
   under hardware assist each is an IO_INSTRUCTION VM exit, under binary translation a callout;
2. **a paravirtual split driver** (Xen's blkfront/blkback, virtio): the guest puts requests
   into a shared ring and sends ONE event-channel notification (hypercall) per batch; the
   backend here, :class:`SplitDriverBackend`, consumes the ring on notification;
3. **direct assignment** (device passthrough; an IOMMU would confine the device's DMA on real
   hardware): ``TrapAndEmulate(img, assign={0: ["disk"]})`` clears the disk's ports in the TSS
   I/O permission bitmap while VM 0 runs; ``HardwareAssisted(img, assign={0: ["disk"]})`` lets
   them through the VMCS I/O bitmap. No trap, no exit.

:func:`io_comparison` runs every way and tabulates VMM entries, hypercalls and cycles, per KB.
The page docs/io-virtualization.md tells the story; the guest is :mod:`vmkit.guests.iodemo`.

The split driver's hook into the paravirtual monitor: its ``event_channel_op`` hypercall
(``int 0x82``, eax = 8) with ebx = EVTCHNOP_send (1) and ecx = 1 calls ``vm.io_backend(monitor,
vm, edx)``; :func:`pv_backend` is that function (:func:`attach_pv_backends` installs it on every
VM), keeping one :class:`SplitDriverBackend` per VM (:func:`backend_of`). A monitor with
another calling convention can use :func:`event_channel_op`::

    eax = iovirt.event_channel_op(vm, ebx, ecx, edx, read_phys, write_phys)
"""

from __future__ import annotations

import html
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

from vmkit.errors import VmkitError
from vmkit.machine.devices import ASSIGNABLE, OutputDisk
from vmkit.vmm.costs import CostModel

__all__ = ["SplitDriverBackend", "event_channel_op", "backend_of", "pv_backend",
           "attach_pv_backends", "resolve_assignment",
           "check_can_assign", "IOComparison", "io_comparison", "run_split_driver_native",
           "WAYS", "run_way", "HC_EVENT_CHANNEL_OP", "EVTCHNOP_SEND", "DISK_EVTCHN",
           "MAX_REQUEST",
           "EINVAL", "EFAULT", "ENOSYS"]

HC_EVENT_CHANNEL_OP = 8      # hypercall number (eax)
EVTCHNOP_SEND = 1            # ebx: the event-channel operation "send"
DISK_EVTCHN = 1              # ecx: the split-driver disk's event-channel port
MAX_REQUEST = 64 * 1024      # the longest request the backend accepts (bytes)
MAX_SLOTS = (4096 - 16) // 16   # a ring fits in one page
EINVAL, EFAULT, ENOSYS = 22, 14, 38

_I = struct.Struct("<I")


# =================================================================================================
# The split driver's backend
# =================================================================================================
class SplitDriverBackend:
    """The hypervisor half of a split driver (Xen's blkback, a virtio device model): on each
    notification it consumes the requests the frontend put in the shared ring, copies their
    bytes from guest-physical memory to ``device`` (:meth:`OutputDisk.dma_write`), writes each
    slot's status and advances the consumer index.

    ``memory_size`` bounds the VM's guest-physical memory: a request whose buffer is not wholly
    inside it is refused (status ``STATUS_BAD_ADDRESS`` in its slot, counted in ``refused`` and
    in the ring's ``errors`` field), as is a request of length 0 or over ``MAX_REQUEST``
    (``STATUS_BAD_LENGTH``). A ring that is itself outside memory, has an impossible slot count
    or claims more outstanding requests than slots is not touched (``bad_notifications``).

    Accounting: ``notifications`` (one per hypercall the frontend made), ``requests`` and
    ``bytes`` delivered, ``refused`` requests, ``bad_notifications``. The ring layout is in
    :mod:`vmkit.guests.iodemo` and docs/io-virtualization.md."""

    def __init__(self, device: OutputDisk, memory_size: int):
        if not isinstance(device, OutputDisk):
            raise VmkitError(f"SplitDriverBackend drives an OutputDisk, got "
                             f"{type(device).__name__}")
        if not isinstance(memory_size, int) or memory_size <= 0:
            raise VmkitError(f"memory_size must be a positive number of bytes, got "
                             f"{memory_size!r}")
        self.device = device
        self.memory_size = memory_size
        self.notifications = 0
        self.requests = 0
        self.bytes = 0
        self.refused = 0
        self.bad_notifications = 0
        self.last_error = ""
        self.batches: list[int] = []      # requests consumed per notification

    def stats(self) -> dict:
        return {"notifications": self.notifications, "requests": self.requests,
                "bytes": self.bytes, "refused": self.refused,
                "bad_notifications": self.bad_notifications}

    def _inside(self, gpa: int, n: int) -> bool:
        return 0 <= gpa and gpa + n <= self.memory_size

    def notify(self, read_phys, write_phys, ring_gpa: int) -> tuple[int, int]:
        """One notification: consume every request between the consumer and the producer
        index. ``read_phys(gpa, n) -> bytes`` and ``write_phys(gpa, data)`` access the VM's
        guest-physical memory. Returns (requests consumed, bytes delivered); a ring the backend
        cannot use returns (-1, 0) with the reason in ``last_error``."""
        from vmkit.guests.iodemo import (RING_CONS, RING_ERRORS, RING_SLOT0, SLOT_ADDR,
                                         SLOT_SIZE, SLOT_STATUS, STATUS_BAD_ADDRESS,
                                         STATUS_BAD_LENGTH, STATUS_OK)
        self.notifications += 1
        ring_gpa &= 0xFFFFFFFF

        def bad(why: str) -> tuple[int, int]:
            self.bad_notifications += 1
            self.last_error = why
            self.batches.append(0)
            return -1, 0

        if not self._inside(ring_gpa, RING_SLOT0):
            return bad(f"ring at {ring_gpa:#x} is outside the VM's {self.memory_size:#x} bytes")
        head = bytes(read_phys(ring_gpa, RING_SLOT0))
        # the header: req_prod, req_cons, nslots, errors (RING_PROD ... RING_ERRORS)
        prod, cons, nslots, errors = struct.unpack_from("<4I", head)
        if not 1 <= nslots <= MAX_SLOTS:
            return bad(f"ring at {ring_gpa:#x} has {nslots} slots (1 to {MAX_SLOTS})")
        if not self._inside(ring_gpa, RING_SLOT0 + nslots * SLOT_SIZE):
            return bad(f"ring at {ring_gpa:#x} with {nslots} slots ends outside the VM's memory")
        pending = (prod - cons) & 0xFFFFFFFF
        if pending > nslots:
            return bad(f"ring at {ring_gpa:#x}: {pending} requests outstanding in {nslots} "
                       f"slots (producer {prod}, consumer {cons})")
        done = delivered = 0
        for k in range(pending):
            slot = ring_gpa + RING_SLOT0 + ((cons + k) % nslots) * SLOT_SIZE
            # addr, len (SLOT_ADDR, SLOT_LEN)
            addr, length = struct.unpack("<2I", bytes(read_phys(slot + SLOT_ADDR, 8)))
            if not 0 < length <= MAX_REQUEST:
                status = STATUS_BAD_LENGTH
            elif not self._inside(addr, length):
                status = STATUS_BAD_ADDRESS
            else:
                data = bytes(read_phys(addr, length))
                self.device.dma_write(data)
                delivered += length
                status = STATUS_OK
            if status != STATUS_OK:
                self.refused += 1
                errors = (errors + 1) & 0xFFFFFFFF
            write_phys(slot + SLOT_STATUS, _I.pack(status))
            done += 1
        write_phys(ring_gpa + RING_ERRORS, _I.pack(errors))
        write_phys(ring_gpa + RING_CONS, _I.pack(prod))
        self.requests += done
        self.bytes += delivered
        self.batches.append(done)
        return done, delivered


def backend_of(vm) -> SplitDriverBackend:
    """The split-driver backend of ``vm`` (made on first use: the VM's own disk,
    ``vm.devices.disk``, bounded by its guest-physical memory)."""
    b = getattr(vm, "split_backend", None)
    if b is None:
        devices = getattr(vm, "devices", None)
        if devices is None:
            devices = vm.machine.dev
        size = getattr(vm, "memory_size", None) or vm.image.memory_size
        b = SplitDriverBackend(devices.disk, size)
        vm.split_backend = b
    return b


def event_channel_op(vm, cmd: int, port: int, arg: int, read_phys, write_phys) -> int:
    """The ``event_channel_op`` hypercall (number 8) for ``vm``: ``cmd`` (ebx) =
    EVTCHNOP_send (1), ``port`` (ecx) = 1 (the disk), ``arg`` (edx) = the ring's
    guest-physical address. Returns the value for eax: the number of requests consumed, or a
    negative errno (-EINVAL: unknown port, -ENOSYS: unknown operation, -EFAULT: a ring the
    backend cannot use)."""
    if cmd != EVTCHNOP_SEND:
        return -ENOSYS & 0xFFFFFFFF
    if port != DISK_EVTCHN:
        return -EINVAL & 0xFFFFFFFF
    n, _ = backend_of(vm).notify(read_phys, write_phys, arg)
    return n if n >= 0 else -EFAULT & 0xFFFFFFFF


def pv_backend(monitor, vm, ring_gpa: int) -> int:
    """The split-driver backend as the paravirtual monitor calls it (``vm.io_backend(monitor,
    vm, edx)`` for ``event_channel_op`` EVTCHNOP_send to port 1): consume the ring of ``vm`` (a
    VM with a memory slice: ``slice_base``, ``memory_size``, ``devices``). Returns eax: the
    requests consumed, or -EFAULT for a ring the backend cannot use."""
    mem, base = vm.machine.mem, vm.slice_base

    def read(gpa: int, n: int) -> bytes:      # the backend checked gpa + n <= memory_size
        return bytes(mem[base + gpa:base + gpa + n])

    def write(gpa: int, data: bytes) -> None:
        vm.machine.phys_write(base + gpa, data)
    n, _ = backend_of(vm).notify(read, write, ring_gpa)
    return n if n >= 0 else -EFAULT


def attach_pv_backends(monitor) -> None:
    """Give every VM of a paravirtual monitor the split-driver backend (``vm.io_backend``),
    unless it has one already."""
    for vm in monitor.vms:
        if getattr(vm, "io_backend", None) is None:
            vm.io_backend = pv_backend


# =================================================================================================
# Direct assignment: the keyword, and what te and hw do with it
# =================================================================================================
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
    from vmkit.vmm.te import H_TSS
    if not monitor.assigned:
        return
    mem = monitor._host.mem
    bitmap = H_TSS + 104
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


# =================================================================================================
# A harness: the split driver on the bare machine, with int 0x82 answered in Python
# =================================================================================================
def run_split_driver_native(kb: int = 16, batch: int = 8, costs: CostModel | None = None,
                            max_steps: int = 20_000_000, image=None, run: bool = True):
    """Run the diskio frontend (``PV_BOOT_HOOK``) in a ring-0 kernel under ``Native``, with
    ``int 0x82`` answered by this module (a test harness, not a monitor: each notification is
    priced as one ``hypercall``; the backend's copying is not priced). Returns (monitor,
    backend); ``run=False`` only sets them up."""
    from vmkit.guests.iodemo import build_split_driver
    from vmkit.vmm.base import Native
    img = image if image is not None else build_split_driver(paravirtual=False, kb=kb,
                                                             batch=batch)
    vm = Native(img, costs=costs)
    m = vm.machine
    backend = SplitDriverBackend(m.dev.disk, img.memory_size)
    vm.vms[0].split_backend = backend

    def hook(vector, fault, source, next_eip):
        if source != "int" or vector != 0x82:
            return False
        r = m.cpu.regs
        if r[0] == HC_EVENT_CHANNEL_OP:
            r[0] = event_channel_op(vm.vms[0], r[3], r[1], r[2],
                                    lambda a, n: m.read(a, n), lambda a, d: m.write(a, d))
        else:
            r[0] = -ENOSYS & 0xFFFFFFFF
        vm.events["hypercall"] += 1
        m.cpu.eip = next_eip
        return True
    m.exception_hook = hook
    if run:
        vm.run(max_steps=max_steps)
    return vm, backend


# =================================================================================================
# The experiment
# =================================================================================================
#: the ways io_comparison knows: label -> (monitor name, driver, assign)
WAYS = {
    "native": ("native", "port", None),
    "emulated-te": ("te", "port", None),
    "emulated-bt": ("bt", "port", None),
    "emulated-hw": ("hw", "port", None),
    "pv": ("pv", "split", None),
    "split-shim": ("native", "split", None),
    "direct-te": ("te", "port", {0: ["disk"]}),
    "direct-hw": ("hw", "port", {0: ["disk"]}),
}
DEFAULT_WAYS = ("native", "emulated-te", "emulated-bt", "emulated-hw", "pv", "direct-te",
                "direct-hw")

_COLUMNS = [
    ("vmm_entries", "traps/exits", "entries into the VMM for the whole run: traps (te), VM exits "
     "(hw), traps + callouts (bt), the pv monitor's traps"),
    ("device_entries", "device traps/exits", "accesses to the disk's ports that went through "
     "the VMM (emulated, refused or a callout)"),
    ("hypercalls", "hypercalls", "hypercalls of the run (pv and the shim)"),
    ("notifications", "notifications", "split-driver notifications the backend handled"),
    ("cycles", "cycles", "cycles of the whole run (boot and the hello process included)"),
    ("entries_per_kb", "exits per KB", "traps/exits (+ hypercalls) per KB, by difference "
     "between runs of kb and 2 kb"),
    ("cycles_per_kb", "cycles per KB", "cycles per KB, by difference between runs of kb and 2 kb"),
    ("bytes", "bytes delivered", "bytes the disk received"),
]


def _has_pv() -> bool:
    try:
        from vmkit.vmm.pv import Paravirtual  # noqa: F401
        return True
    except ImportError:
        return False


def run_way(way: str, kb: int, batch: int = 8, costs: CostModel | None = None,
            max_steps: int = 50_000_000) -> dict:
    """One run of the diskio guest ``way`` (a label of :data:`WAYS`): a dict with the counts
    (``vmm_entries``, ``device_entries``, ``hypercalls``, ``notifications``, ``bytes``,
    ``requests``), the event ``counts`` to price, ``correct``, ``console`` and ``wall`` (seconds
    of host time)."""
    costs = costs if costs is not None else CostModel.preset("p4-2006")
    from vmkit import guests
    from vmkit.guests.iodemo import build_split_driver, diskio_data
    mon, driver, assign = WAYS[way]
    t0 = time.perf_counter()
    backend = None
    if way == "split-shim":
        vm, backend = run_split_driver_native(kb, batch, costs, max_steps)
        image = vm.images[0]
    else:
        if driver == "split":
            image = build_split_driver(paravirtual=True, kb=kb, batch=batch)
        else:
            image = guests.build("diskio", kb=kb, batch=batch)
        if mon == "pv":
            from vmkit.vmm.pv import Paravirtual as factory
        else:
            from vmkit.vmm import MONITORS
            factory = MONITORS[mon]
        vm = factory(image, costs=costs, assign=assign) if assign else factory(image, costs=costs)
        if mon == "pv":
            attach_pv_backends(vm)
        vm.run(max_steps=max_steps)
        backend = getattr(vm.vms[0], "split_backend", None)
    wall = time.perf_counter() - t0
    v0 = vm.vms[0]
    disk = v0.devices.disk if hasattr(v0, "devices") else v0.machine.dev.disk
    st = vm.stats
    hyper = st.get("hypercalls", 0)
    hyper = sum(hyper.values()) if isinstance(hyper, Counter) else int(hyper or 0)
    if way == "split-shim":
        hyper = vm.events["hypercall"]
    traps = int(st.get("traps", 0)) + int(st.get("callouts", 0) if mon == "bt" else 0)
    port_accesses = disk.port_writes + disk.port_reads
    device_entries = 0 if mon == "native" else port_accesses - disk.direct
    device_entries += sum(getattr(vm, "refused_io", Counter()).values())
    counts = Counter(vm.event_counts())
    return dict(way=way, monitor=mon, vmm_entries=traps, device_entries=device_entries,
                hypercalls=hyper, notifications=backend.notifications if backend else 0,
                counts=counts, bytes=len(disk.data),
                correct=(bytes(disk.data) == diskio_data(kb) and vm.console == image.expected),
                console=vm.console, wall=wall, requests=disk.requests)


@dataclass
class IOComparison:
    """The rows of :func:`io_comparison`: ``rows[i]`` is a dict with the way, the monitor, the
    columns of ``COLUMNS`` and ``correct`` (the disk got exactly the guest's bytes and the
    console is the expected one). Cycles are priced with ``costs``; :meth:`reprice` changes the
    hardware without rerunning."""
    kb: int
    batch: int
    rows: list
    costs: CostModel = field(default_factory=lambda: CostModel.preset("p4-2006"))

    COLUMNS = _COLUMNS

    def _priced(self) -> list:
        out = []
        for r in self.rows:
            c = sum(self.costs.price(r["counts"]).values())
            c2 = sum(self.costs.price(r["counts2"]).values())
            d = dict(r)
            d["cycles"] = c
            d["cycles_per_kb"] = (c2 - c) / self.kb
            out.append(d)
        return out

    def table(self) -> list[dict]:
        """The rows with cycles priced by ``costs``."""
        return self._priced()

    def row(self, way: str) -> dict:
        for r in self._priced():
            if r["way"] == way:
                return r
        raise VmkitError(f"no row {way!r}; rows: {', '.join(r['way'] for r in self.rows)}")

    @property
    def ways(self) -> list[str]:
        return [r["way"] for r in self.rows]

    def reprice(self, costs: CostModel) -> "IOComparison":
        if not isinstance(costs, CostModel):
            raise VmkitError(f"reprice() takes a CostModel, got {costs!r}")
        return IOComparison(self.kb, self.batch, self.rows, costs)

    @staticmethod
    def _fmt(key, v) -> str:
        if isinstance(v, float):
            return f"{v:,.1f}" if key.endswith("per_kb") else f"{v:,.0f}"
        return f"{v:,}"

    def to_text(self) -> str:
        head = ["way"] + [h for _, h, _ in _COLUMNS] + ["ok"]
        body = [[r["way"]] + [self._fmt(k, r[k]) for k, _, _ in _COLUMNS]
                + ["yes" if r["correct"] else "NO"] for r in self._priced()]
        widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
        fmt = lambda x: "  ".join(s.ljust(w) if i == 0 else s.rjust(w)  # noqa: E731
                                  for i, (s, w) in enumerate(zip(x, widths)))
        return "\n".join([f"diskio kb={self.kb} (batch {self.batch}), cycles under "
                          f"{self.costs.name}", fmt(head)] + [fmt(x) for x in body])

    def to_html(self) -> str:
        e = html.escape
        out = ['<table class="vmkit-compare vmkit-io">',
               f"<caption>The guest kernel writes {self.kb} KB to a disk, three ways "
               f"(cycles under <b>{e(self.costs.name)}</b>; per KB by difference of runs "
               f"of {self.kb} and {2 * self.kb} KB)</caption>",
               "<thead><tr><th>way</th>"
               + "".join(f'<th title="{e(t)}">{e(h)}</th>' for _, h, t in _COLUMNS)
               + "<th>correct</th></tr></thead><tbody>"]
        for r in self._priced():
            ok = ("yes" if r["correct"] else
                  '<b style="color:#D55E00">NO: bytes or console differ</b>')
            out.append(f"<tr><th>{e(r['way'])}</th>"
                       + "".join(f'<td style="text-align:right">{e(self._fmt(k, r[k]))}</td>'
                                 for k, _, _ in _COLUMNS)
                       + f"<td>{ok}</td></tr>")
        out.append("</tbody></table>")
        return "\n".join(out)

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return f"<IOComparison kb={self.kb}: {', '.join(self.ways)}>"

    def plot(self, width: float = 8.0):
        """Two panels of horizontal bars: VMM entries per KB and cycles per KB, one bar per
        way (a deterministic-SVG matplotlib figure, Okabe-Ito colours)."""
        from vmkit.viz.render import GREY, OKABE_ITO, new_figure
        rows = self._priced()
        fig = new_figure(figsize=(width, 0.8 + 0.32 * len(rows) * 2))
        axes = fig.subplots(2, 1)
        colour = {"native": OKABE_ITO["black"], "emulated": OKABE_ITO["vermillion"],
                  "pv": OKABE_ITO["blue"], "split": OKABE_ITO["sky_blue"],
                  "direct": OKABE_ITO["bluish_green"]}
        ys = list(range(len(rows)))[::-1]
        for ax, key, title in ((axes[0], "entries_per_kb", "traps/exits/hypercalls per KB"),
                               (axes[1], "cycles_per_kb", f"cycles per KB ({self.costs.name})")):
            top = max([r[key] for r in rows] + [1e-9])
            for y, r in zip(ys, rows):
                c = colour.get(r["way"].split("-")[0], GREY)
                ax.barh(y, r[key], color=c, edgecolor="white")
                ax.text(r[key], y, f" {r[key]:,.1f}", va="center", fontsize=8)
            ax.set_yticks(ys, [r["way"] for r in rows])
            ax.set_xlim(0, top * 1.25)
            ax.set_title(title, loc="left", fontsize=9)
            ax.spines[["top", "right"]].set_visible(False)
        fig.suptitle(f"I/O virtualization: the guest kernel writes {self.kb} KB", fontsize=10)
        fig.tight_layout()
        return fig


def io_comparison(kb: int = 16, costs: CostModel | str | None = None, *, batch: int = 8,
                  ways=None, max_steps: int = 50_000_000) -> IOComparison:
    """Run the diskio guest every way (``ways``: labels of :data:`WAYS`; default
    native, emulated-te, emulated-bt, emulated-hw, pv when ``vmkit.vmm.Paravirtual`` exists,
    direct-te, direct-hw; "split-shim" is the split driver on the bare machine with a Python
    hypercall harness) at ``kb`` and ``2 * kb`` KB, and tabulate."""
    if isinstance(costs, str):
        costs = CostModel.preset(costs)
    elif costs is None:
        costs = CostModel.preset("p4-2006")
    elif not isinstance(costs, CostModel):
        raise VmkitError(f"costs must be a CostModel or a preset name, got {costs!r}")
    if not isinstance(kb, int) or isinstance(kb, bool) or not 1 <= kb <= 256:
        raise VmkitError(f"kb must be an integer from 1 to 256 (the guest allows 512 and the "
                         f"comparison also runs 2 * kb), got {kb!r}")
    if ways is None:
        ways = [w for w in DEFAULT_WAYS if w != "pv" or _has_pv()]
    else:
        ways = list(ways)
        for w in ways:
            if w not in WAYS:
                raise VmkitError(f"unknown way {w!r}; expected one of {', '.join(WAYS)}")
        if "pv" in ways and not _has_pv():
            raise VmkitError("way 'pv' needs vmkit.vmm.Paravirtual, which this kit does not "
                             "have yet")
    rows = []
    for w in ways:
        a = run_way(w, kb, batch, costs, max_steps)
        b = run_way(w, 2 * kb, batch, costs, max_steps)
        a["counts2"] = b["counts"]
        a["entries_per_kb"] = ((b["vmm_entries"] + b["hypercalls"])
                               - (a["vmm_entries"] + a["hypercalls"])) / kb
        a["wall_per_kb"] = (b["wall"] - a["wall"]) / kb
        a["correct"] = a["correct"] and b["correct"]
        rows.append(a)
    return IOComparison(kb, batch, rows, costs)
