"""The ``Monitor`` base class and ``Native``, the reference every other monitor is compared with.

A monitor runs one or more guest images (``Monitor(img_a, img_b)``); each guest lives in a
:class:`VM` (its machine, console, result). ``Native`` runs one guest directly on the bare
machine: the guest kernel in ring 0, no monitor in between. Every monitor offers the same
surface (DESIGN.md): ``step``, ``run``, ``console``, ``vcpu``, ``cpu``, ``trace``, ``stats``,
``cycles``, ``snapshot``/``restore``, ``on``.

Subclasses override only their policy (what traps, what exits, what is translated); the running,
bookkeeping and snapshots live here.
"""

from __future__ import annotations

from collections import Counter

from vmkit.errors import VmkitError
from vmkit.machine.machine import Machine, RunResult
from vmkit.trace import Trace
from vmkit.vmm import state
from vmkit.vmm.costs import CostModel

__all__ = ["Monitor", "Native", "VM", "MonitorSnapshot"]


class VM:
    """One guest under a monitor: its image, machine, console and result."""

    def __init__(self, index: int, image, machine: Machine):
        self.index = index
        self.image = image
        self.machine = machine
        self.result: RunResult | None = None

    @property
    def console(self) -> str:
        return self.machine.console

    @property
    def vcpu(self):
        return self.machine.cpu

    @property
    def stopped(self) -> bool:
        return self.machine.stopped is not None

    def __repr__(self) -> str:
        r = self.result.reason if self.result else "running"
        return f"<VM {self.index} {self.image.name} {r}>"


class MonitorSnapshot:
    """A snapshot of a whole monitor (every VM and the monitor's own state)."""

    def __init__(self, owner: int, machines: list, state: dict):
        self.owner = owner
        self.machines = machines
        self.state = state


def _check_image(img):
    from vmkit.guests import GuestImage
    if isinstance(img, str):
        from vmkit import guests
        return guests.build(img)
    if not isinstance(img, GuestImage):
        raise VmkitError(f"a monitor runs GuestImage objects (from vmkit.guests.build) or guest "
                         f"names, got {type(img).__name__}")
    return img


class Monitor:
    """Base class of every monitor. ``Monitor(image, ..., costs=CostModel)``."""

    name = "monitor"
    title = "monitor"
    max_vms: int | None = None   # None: any number

    def __init__(self, *images, costs: CostModel | None = None, trace: Trace | None = None):
        if not images:
            raise VmkitError(f"{type(self).__name__} needs at least one guest image")
        if self.max_vms is not None and len(images) > self.max_vms:
            raise VmkitError(f"{type(self).__name__} runs {self.max_vms} guest(s); multiplexing "
                             f"several VMs is a monitor's job (use TrapAndEmulate, "
                             f"BinaryTranslation, HardwareAssisted or Paravirtual)")
        if costs is None:
            costs = CostModel.default()
        if not isinstance(costs, CostModel):
            raise VmkitError(f"costs must be a CostModel, got {type(costs).__name__}")
        self.costs = costs
        self.trace = trace if trace is not None else Trace()
        self.images = [_check_image(i) for i in images]
        self.vms: list[VM] = []
        self.events = Counter()   # counts by cost category, priced by the cost model
        for i, img in enumerate(self.images):
            m = self._make_machine(i, img)
            self.vms.append(self._make_vm(i, img, m))
        self.current = 0
        self._setup()

    # ---- construction hooks ---------------------------------------------------------------
    def _make_machine(self, index: int, image) -> Machine:
        m = Machine(image.memory_size, input=image.input, trace=self.trace, vm_index=index)
        for addr, data in image.loads:
            m.write(addr, data)
        m.cpu.eip = image.entry
        return m

    def _make_vm(self, index: int, image, machine: Machine) -> VM:
        """The VM object for one guest (monitors with their own per-VM state subclass VM)."""
        return VM(index, image, machine)

    def _setup(self) -> None:
        """Subclasses install their intercepts here."""

    # ---- the public surface ---------------------------------------------------------------
    @property
    def machine(self) -> Machine:
        return self.vms[self.current].machine

    @property
    def console(self) -> str:
        return self.vms[self.current].console if len(self.vms) == 1 else self.vms[0].console

    @property
    def vcpu(self):
        """The CPU as the guest believes it is."""
        return self.vms[self.current].vcpu

    @property
    def cpu(self):
        """The real CPU underneath."""
        return self.machine.cpu

    @property
    def breakpoints(self) -> set:
        return self.machine.breakpoints

    @property
    def result(self) -> RunResult | None:
        return self.vms[self.current].result

    def on(self, kind: str, callback) -> None:
        """Call ``callback(event)`` for every event of ``kind`` (or "*" for all) as it happens."""
        self.trace.subscribe(kind, callback)

    def step(self) -> list:
        """Run one instruction of the current VM; returns the events it produced."""
        vm = self.vms[self.current]
        total = self.trace.total
        if vm.machine.stopped is None:
            r = vm.machine.run(max_steps=1, _single=True)
            if vm.machine.stopped is not None:
                vm.result = vm.machine.stopped
            else:
                vm.result = None
            self._after_run(r)
        return self.trace.since(total)

    def run(self, max_steps: int = 1_000_000, until=None) -> RunResult:
        """Run until every VM has stopped or ``max_steps`` instructions (all VMs together) have
        retired. Returns the result of the run (for one VM, that VM's)."""
        if len(self.vms) == 1:
            vm = self.vms[0]
            r = vm.machine.run(max_steps=max_steps, until=until)
            if vm.machine.stopped is not None:
                vm.result = vm.machine.stopped
            self._after_run(r)
            return r
        return self._run_many(max_steps, until)

    def _run_many(self, max_steps, until) -> RunResult:
        raise VmkitError(f"{type(self).__name__} runs one VM")

    def _after_run(self, r: RunResult) -> None:
        """Subclasses update their counters after a run or step."""

    # ---- statistics -----------------------------------------------------------------------
    @property
    def stats(self) -> dict:
        """Counters (DESIGN.md names): instructions, traps, emulated, ring_transitions, ..."""
        c = self.trace.counts
        m_steps = sum(vm.machine.steps for vm in self.vms)
        s = {
            "instructions": m_steps,
            "interrupts": c["interrupt"],
            "ring_transitions": c["ring"],
            "page_faults": c["page_fault"],
            "tlb_misses": sum(vm.machine.tlb_misses for vm in self.vms),
            "port_io": c["io"],
            "traps": 0,
            "emulated": Counter(),
        }
        s.update(self._extra_stats())
        return s

    def _extra_stats(self) -> dict:
        return {}

    def event_counts(self) -> Counter:
        """Events by cost category (what ``cycles`` prices)."""
        counts = state.copy_counts(self.events)
        counts["native"] += sum(vm.machine.steps for vm in self.vms) - counts.get("_not_native", 0)
        counts.pop("_not_native", None)
        counts["interrupt"] += self._hardware_interrupts()
        counts["page_walk"] += sum(vm.machine.walk_refs for vm in self.vms)
        return counts

    def _hardware_interrupts(self) -> int:
        return self.trace.counts["interrupt"]

    @property
    def cycles(self) -> Counter:
        """Cycles by category from ``self.costs``; ``sum(vm.cycles.values())`` is the total."""
        return self.costs.price(self.event_counts())

    # ---- snapshots ------------------------------------------------------------------------
    def snapshot(self) -> MonitorSnapshot:
        return MonitorSnapshot(id(self), [vm.machine.snapshot() for vm in self.vms],
                               self._state())

    def restore(self, snap: MonitorSnapshot) -> None:
        if not isinstance(snap, MonitorSnapshot) or snap.owner != id(self):
            raise VmkitError("restore() takes a snapshot made by this monitor's snapshot()")
        for vm, s in zip(self.vms, snap.machines):
            vm.machine.restore(s)
            vm.result = vm.machine.stopped
        self._set_state(snap.state)

    def _state(self) -> dict:
        return {"events": Counter(self.events), "current": self.current,
                "results": [vm.result for vm in self.vms]}

    def _set_state(self, st: dict) -> None:
        self.events = Counter(st["events"])
        self.current = st["current"]
        for vm, r in zip(self.vms, st["results"]):
            vm.result = r

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {', '.join(vm.image.name for vm in self.vms)}>"


class Native(Monitor):
    """The reference: the guest runs directly on the machine, its kernel in ring 0."""

    name = "native"
    title = "native (no monitor)"
    max_vms = 1

    def _setup(self) -> None:
        # the hardware's own prices (A&A 2006, Fig. 4's native column): delivering a fault
        # costs more than a system call (the machine counts them: a subscriber to every
        # interrupt would make each one an object, vmkit.trace.Trace.record), and a port
        # access goes off the CPU to the chipset
        self.on("io", self._count_port)

    def _count_port(self, ev) -> None:
        self.events["port_io"] += 1

    def event_counts(self) -> Counter:
        counts = super().event_counts()
        faults = self.vms[0].machine.exceptions_delivered
        if faults:
            counts["exception"] += faults
        return counts

    def _hardware_interrupts(self) -> int:
        return self.trace.counts["interrupt"] - self.vms[0].machine.exceptions_delivered
