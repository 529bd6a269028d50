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

The mechanisms live one a module: the split driver's backend in :mod:`vmkit.vmm.splitdriver`,
direct assignment in :mod:`vmkit.vmm.passthrough`; their names are re-exported here. This module
holds the experiment (and a harness for the split driver on the bare machine), and imports the
monitors; the monitors import only the mechanisms.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from vmkit.errors import VmkitError
from vmkit.machine.hooks import MachineHooks
from vmkit.vmm import display
from vmkit.vmm.passthrough import (_CANNOT, check_can_assign, hw_exits,  # noqa: F401
                                   install_hw, install_te, resolve_assignment,
                                   te_switched)
from vmkit.vmm.costs import CostModel
from vmkit.vmm.splitdriver import (DISK_EVTCHN, EFAULT, EINVAL, ENOSYS,  # noqa: F401
                                   EVTCHNOP_SEND, HC_EVENT_CHANNEL_OP, MAX_REQUEST, MAX_SLOTS,
                                   SplitDriverBackend, attach_pv_backends, backend_of,
                                   event_channel_op, pv_backend)

__all__ = ["SplitDriverBackend", "event_channel_op", "backend_of", "pv_backend",
           "attach_pv_backends", "resolve_assignment",
           "check_can_assign", "IOComparison", "io_comparison", "run_split_driver_native",
           "WAYS", "run_way", "HC_EVENT_CHANNEL_OP", "EVTCHNOP_SEND", "DISK_EVTCHN",
           "MAX_REQUEST",
           "EINVAL", "EFAULT", "ENOSYS"]


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

    class Shim(MachineHooks):
        def on_exception(self, vector, fault, source, next_eip):
            return hypercall(vector, source, next_eip)

    def hypercall(vector, source, next_eip):
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
    m.attach(Shim())
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
    def cell(key, v) -> str:
        """How the tables show value ``v`` of column ``key``."""
        if isinstance(v, float):
            return f"{v:,.1f}" if key.endswith("per_kb") else f"{v:,.0f}"
        return f"{v:,}"

    def to_text(self) -> str:
        head = ["way"] + [h for _, h, _ in _COLUMNS] + ["ok"]
        body = [[r["way"]] + [self.cell(k, r[k]) for k, _, _ in _COLUMNS]
                + ["yes" if r["correct"] else "NO"] for r in self._priced()]
        widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
        fmt = lambda x: "  ".join(s.ljust(w) if i == 0 else s.rjust(w)  # noqa: E731
                                  for i, (s, w) in enumerate(zip(x, widths)))
        return "\n".join([f"diskio kb={self.kb} (batch {self.batch}), cycles under "
                          f"{self.costs.name}", fmt(head)] + [fmt(x) for x in body])

    def to_html(self) -> str:
        """The table of the three ways (built by :func:`vmkit.viz.results.io_comparison_html`)."""
        return display.draw(self, "html")

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return f"<IOComparison kb={self.kb}: {', '.join(self.ways)}>"

    def plot(self, width: float = 8.0):
        """Two panels of horizontal bars: VMM entries per KB and cycles per KB, one bar per
        way (a deterministic-SVG matplotlib figure, Okabe-Ito colours)."""
        return display.draw(self, "plot", width=width)


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
