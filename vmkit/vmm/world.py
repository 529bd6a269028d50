"""The world of a hosted monitor: one host machine, its VMs each in a slice of host memory,
and the bookkeeping every monitor that runs them needs, written once. ``TrapAndEmulate``
(and the monitors built on it) and ``HardwareAssisted`` are both :class:`HostedMonitor`\\ s;
neither borrows the other's methods.

This is the first piece of the shared core (docs/architecture.md): where the VMs' memory
slices go, how a VM ends (its ``RunResult`` and ``Stop`` event), how VMM work provoked by a
guest ends that guest rather than the caller, and what a halted virtual CPU waits for.
"""

from __future__ import annotations

from vmkit.errors import VmkitError
from vmkit.machine.machine import BOOT_GDT, BOOT_GDT_BYTES, Machine, RunResult
from vmkit.machine.rules import halt_outcome
from vmkit.trace import Stop, WorldSwitch
from vmkit.vmm import state
from vmkit.vmm.base import Monitor, MonitorSnapshot
from vmkit.vmm.layout import MiB
from vmkit.vmm.ops import MonitorOps
from vmkit.vmm.sched import (_cycle_budget, _sched_state, _schedule_machine_time, _set_sched_state,
                             _sync_machine_timer, machine_time)

#: what a VM's part of the VMM area starts as (one object: a new ``bytes(MiB)`` a VM cost a
#: millisecond of page faults)
_ZERO_MIB = bytes(MiB)

__all__ = ["HostedMonitor", "VMStop", "DEFAULT_SLICE"]

DEFAULT_SLICE = 20_000
"""Host instructions a VM runs before the VMM's timer switches to the next one (several VMs).
Two timer periods of the default guest timer: long enough that a world switch (thousands of
cycles, see the cost model) stays a small share of the time, short enough that two guests of the
kit's default sizes are interleaved many times."""


class VMStop(Exception):
    """The VM must end (reason and detail for its RunResult)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class HostedMonitor(Monitor):
    """A monitor whose VMs share one host machine (``self._host``), VM i's guest-physical
    memory at host-physical ``self._slice_bases[i]``, after the VMM area. Subclasses say how
    a guest runs in their table of operations, ``ops`` (:class:`~vmkit.vmm.ops.MonitorOps`);
    the bookkeeping below is the same for all of them."""

    #: the monitor's operations (vmkit.vmm.ops), filled by each monitor
    ops: MonitorOps

    #: the monitor's own state (counters and the scheduler's place) that ``snapshot()`` saves,
    #: ``restore()`` rolls back: declared once per class, collected along the MRO
    #: (:meth:`_declared_state`); each monitor's stats read the same attributes
    monitor_state: tuple = ("events", "current", "_slice_end", "hidden_page_faults",
                            "world_switches", "pt_traps", "refused_io")

    #: the machine time the last ``_schedule`` read (None: it read none), for the slice budget
    #: of the same trip of the run loop: a value of one trip, not state
    _sched_now = None

    @classmethod
    def _declared_state(cls) -> tuple:
        return state.declared(cls, "monitor_state")

    def _save_declared(self) -> dict:
        return state.save(self, "monitor_state")

    def _restore_declared(self, saved: dict) -> None:
        state.load(self, saved)

    # ---- snapshots: every VM's declared state, the monitor's, the host machine ----------------
    def snapshot(self) -> MonitorSnapshot:
        st = dict(vms=[vm.save_state() for vm in self.vms], sched=_sched_state(self),
                  declared=self._save_declared())
        return MonitorSnapshot(id(self), [self._host.snapshot()], st)

    def restore(self, snap: MonitorSnapshot) -> None:
        if not isinstance(snap, MonitorSnapshot) or snap.owner != id(self):
            raise VmkitError("restore() takes a snapshot made by this monitor's snapshot()")
        st = snap.state
        self._before_restore(st)
        self._host.restore(snap.machines[0])
        for vm, s in zip(self.vms, st["vms"]):
            vm.load_state(s)
        self._restore_declared(st["declared"])
        self._host.vm_index = self.current
        _set_sched_state(self, st["sched"])

    # ---- the protocol's construction steps (vmkit.vmm.base calls them) --------------------------
    def _make_vm(self, index: int, image, machine: Machine):
        return self.ops.make_vm(self, index, image, machine)

    def _setup(self) -> None:
        self.ops.setup(self)

    def _before_restore(self, st: dict) -> None:
        """What must be in place before the host machine's memory and CPU come back."""

    # ---- the public surface ----------------------------------------------------------------
    @property
    def stats(self) -> dict:
        """The monitor's counters, as its classes declare them (``stats_fields``, read from the
        declared state: :func:`vmkit.vmm.state.report`)."""
        return state.report(self)

    @property
    def machine(self) -> Machine:
        return self._host

    @property
    def result(self) -> RunResult | None:
        return self.vms[self.current].result

    def step(self) -> list:
        """Run one guest instruction of the current VM (with what the VMM does around it:
        a due virtual interrupt first, the traps or exits it takes); returns the events it
        produced."""
        total = self.trace.total
        self._run(1, None, single=True)
        return self.trace.since(total)

    def run(self, max_steps: int = 1_000_000, until=None) -> RunResult:
        """Run until every VM has stopped or ``max_steps`` guest instructions (all VMs
        together, the ones the VMM emulated or completed included) have retired.
        ``until(machine)`` and breakpoints (guest-virtual addresses in ``breakpoints``) stop
        the run as on the machine."""
        if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 0:
            raise VmkitError(f"max_steps must be a non-negative integer, got {max_steps!r}")
        return self._run(max_steps, until, single=False)

    # ---- the one run loop ------------------------------------------------------------------
    def _total_steps(self) -> int:
        vms = self.vms
        return vms[0].steps if len(vms) == 1 else sum([vm.steps for vm in vms])

    def _run(self, max_steps: int, until, single: bool) -> RunResult:
        """The VMM's run loop: schedule a VM, do for its virtual CPU what the machine's run
        loop does for a real one (power-off, timer, pending interrupts, HLT, breakpoints),
        then let the guest run on the real CPU until the VMM is needed. Each step that
        differs between monitors is an operation of ``self.ops`` (``root_work``,
        ``deliver_pending``, ``halted``, ``enter``, ``run_guest``, ``guest_stopped``)."""
        m = self._host
        ops = self.ops
        start = self._total_steps()
        end = start + max_steps
        skip_bp = True      # a run may continue from a breakpoint, as Machine.run
        while True:
            vm = self._schedule()    # (and self._sched_now: the machine time it read)
            if vm is None:
                res = self._all_stopped()
                break
            if vm.pending is not None:
                self._end(vm, *vm.pending)
                continue
            if ops.root_work(self, vm):
                continue
            # -- what the machine's run loop does for a real CPU, done for the virtual one --
            dv = vm.devices
            if dv.poweroff_code is not None:
                self._end(vm, "poweroff", f"exit code {dv.poweroff_code}")
                continue
            dv.tick(m.clock)
            total = self._total_steps()
            if total >= end:
                res = RunResult("max_steps", 0, "", m.cpu.eip)
                break
            if ops.deliver_pending(self, vm):
                continue
            if ops.halted(self, vm):
                self._idle(vm)
                continue
            if not skip_bp and not single and m.cpu.eip in m.breakpoints:
                res = RunResult("breakpoint", 0, "", m.cpu.eip)
                break
            # -- run the guest directly until the VMM is needed ---------------------------------
            deadline = m.clock + (end - total)
            if dv.next_tick is not None:
                deadline = min(deadline, dv.next_tick)
            budget = end - total                   # host steps never outnumber guest steps
            if len(self.vms) > 1:
                # nothing was counted since _schedule read the machine time: what came
                # between (root work, delivery, halt) did nothing, or the loop went round
                budget = min(budget, self._slice_budget(self._sched_now))
            ops.enter(self, vm, deadline)
            g0 = vm.steps
            try:
                r = ops.run_guest(self, vm, budget, until, single)
            except Exception as ex:   # nothing a guest does may reach the caller as a traceback
                m.stopped = None
                self._end(vm, "crash", f"VMM error ({type(ex).__name__}: {ex})")
                continue
            if vm.steps != g0:
                skip_bp = False
            if r.reason in ("crash", "halt", "poweroff"):
                ops.guest_stopped(self, vm, r)
                continue
            if r.reason in ("breakpoint", "until"):
                res = RunResult(r.reason, 0, "", m.cpu.eip)
                break
        res.steps = self._total_steps() - start
        if not res.instruction and res.reason not in ("max_steps",):
            res.instruction = self._text_at_eip()
        return res

    def _arm(self, deadline: int) -> None:
        """Program the VMM's one-shot timer for guest time ``deadline`` of the running VM."""
        d = self._host.dev
        d.irr = d.isr = 0
        d.next_tick = deadline

    def _slice_budget(self, now=None) -> int:
        """Host instructions the running VM may retire before its time slice ends (``now``:
        the machine time, when the caller has it)."""
        if self.scheduler is None:
            return max(1, self._slice_end - self._slice_clock())
        return _cycle_budget(self, now)

    # ---- memory ----------------------------------------------------------------------------
    def _plan_slices(self) -> int:
        """Place the VMs' memory slices after the VMM area (1 MiB, plus 1 MiB per VM) in
        ``self._slice_bases``; returns the host memory size."""
        n = len(self.images)
        self._slice_bases = []
        base = (1 + n) * MiB
        for img in self.images:
            self._slice_bases.append(base)
            base += img.memory_size
        if base > 1 << 30:
            raise VmkitError(f"{n} VMs need {base >> 20} MiB of host memory; the machine "
                             f"has at most 1024")
        return base

    def _power_on_slice(self, vm) -> None:
        """VM ``vm``'s part of the VMM area zeroed, and its memory slice as the machine
        powers on: the boot GDT at ``BOOT_GDT``, then the image, at guest-physical addresses
        (the rest of the slice keeps its power-on 0xAA)."""
        mem = self._host.mem
        mem[vm.vmm_base:vm.vmm_base + MiB] = _ZERO_MIB
        boot = BOOT_GDT_BYTES
        mem[vm.slice_base + BOOT_GDT:vm.slice_base + BOOT_GDT + len(boot)] = boot
        for addr, data in vm.image.loads:
            if addr < 0 or addr + len(data) > vm.memory_size:
                raise VmkitError(f"image {vm.image.name}: {len(data)} bytes at {addr:#x} do not "
                                 f"fit in {vm.memory_size:#x} bytes of memory")
            mem[vm.slice_base + addr:vm.slice_base + addr + len(data)] = data

    # ---- which VM runs: the schedulers' mechanics -----------------------------------------
    def _slice_clock(self) -> int:
        """What the round-robin time slices measure: host instructions retired."""
        return self._host.steps

    def _preempted(self, vm) -> None:
        """The VMM's timer ended ``vm``'s slice (``ops.count_preemption``: a trap, an exit)."""
        self.ops.count_preemption(self, vm)

    def _schedule(self):
        """The VM to run next: the current one until it stops or its time slice ends, then
        the next running one (round robin every ``slice``, or the ``scheduler`` on machine
        time), with a world switch when it changes."""
        if len(self.vms) == 1:   # one VM: no slice ends, no switch (each trip of the loop)
            vm = self.vms[0]
            if vm.result is not None:
                return None
            if self.machine_timer:
                _sync_machine_timer(self)
            return vm
        self._sched_now = now = None
        for vm in self.vms:
            if vm.result is None:
                break
        else:
            return None     # none running
        if self.scheduler is not None:
            now = _schedule_machine_time(self, self._preempted)
        else:
            self._schedule_rr()
        if self.machine_timer:
            _sync_machine_timer(self, now)
        self._sched_now = now
        return self.vms[self.current]

    def _schedule_rr(self) -> None:
        """Without a scheduler: round robin every ``slice`` host instructions."""
        cur = self.vms[self.current]
        if len(self.vms) > 1 and (cur.result is not None
                                  or self._slice_clock() >= self._slice_end):
            if cur.result is None:
                self._preempted(cur)   # the slice ended while it ran
            order = self.vms[self.current + 1:] + self.vms[:self.current + 1]
            nxt = next(vm for vm in order if vm.result is None)
            if nxt is not cur:
                self._world_switch(nxt.index)
            self._slice_end = self._slice_clock() + self.slice

    # ---- the world switch ----------------------------------------------------------------
    def _world_switch(self, to: int) -> None:
        """Save the real CPU of the running VM, load VM ``to``'s: the real TLB and the
        compiled code go (no tagged TLB). What else moves with a VM is the monitor's policy
        (``ops.switched_out``, ``ops.switched_in``) and its paging mode's."""
        m = self._host
        old, new = self.vms[self.current], self.vms[to]
        self.ops.switched_out(self, old)
        old.saved.set_state(m.cpu.state())
        old._clock = m.clock
        m.cpu.set_state(new.saved.state())
        m.clock = new._clock
        self.current = to
        m.vm_index = to
        self.paging.switched_in(new)
        self.ops.switched_in(self, new)
        m.flush_tlb()
        m.mode_changed()
        self.world_switches += 1
        self.events["world_switch"] += 1
        t = machine_time(self) - self.costs.world_switch   # when the switch began
        self.switch_log.append((t, old.index, new.index))
        self.trace.add(WorldSwitch(m.clock, from_vm=old.index, to_vm=new.index, vm=new.index,
                                   machine_time=t))

    # ---- how a VM ends ---------------------------------------------------------------------
    def _end(self, vm, reason: str, detail: str, event: bool = True) -> None:
        vm.pending = None
        vm.result = RunResult(reason, vm.steps, detail, vm.vcpu.eip, self._text_at_eip(vm))
        if event:
            self.trace.add(Stop(vm.clock, reason=reason, detail=detail, vm=vm.index))

    def _all_stopped(self) -> RunResult:
        if len(self.vms) == 1:
            r = self.vms[0].result
            return RunResult(r.reason, 0, r.detail, r.eip, r.instruction)
        last = max(self.vms, key=lambda vm: vm.clock).result
        detail = "; ".join(f"vm{vm.index}: {vm.result.reason}" for vm in self.vms)
        return RunResult(last.reason, 0, detail, last.eip, last.instruction)

    def _text_at_eip(self, vm=None) -> str:
        if vm is not None and not vm.current:
            return vm.result.instruction if vm.result else ""
        return self._host.text_at(self._host.cpu.eip)   # a side-effect-free decode

    def _guarded(self, vm, fn, *args) -> None:
        """Run VMM work for ``vm``; whatever the guest provoked ends that VM, not the caller."""
        try:
            fn(*args)
        except VMStop as s:
            self._stop_soon(vm, s.reason, s.detail)
        except VmkitError as ex:
            self._stop_soon(vm, "crash", str(ex))
        except Exception as ex:
            self._stop_soon(vm, "crash", f"VMM error ({type(ex).__name__}: {ex})")

    def _stop_soon(self, vm, reason: str, detail: str) -> None:
        vm.pending = (reason, detail)
        self._host.request_exit()

    # ---- a halted virtual CPU --------------------------------------------------------------
    def _idle(self, vm) -> None:
        """A halted virtual CPU (mirrors the machine's run loop): end the VM if nothing can
        wake it, else move its guest time to the next timer tick (idle time)."""
        wake = halt_outcome(self.ops.guest_if(self, vm), vm.devices)
        if isinstance(wake, str):
            self._end(vm, "halt", wake)
        elif wake is not None:
            m = self._host
            m.clock = max(m.clock, wake)
