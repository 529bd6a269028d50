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
from vmkit.machine.machine import RunResult
from vmkit.machine.rules import halt_outcome
from vmkit.trace import Stop, WorldSwitch
from vmkit.vmm.base import Monitor
from vmkit.vmm.layout import MiB
from vmkit.vmm.sched import _schedule_machine_time, _sync_machine_timer, machine_time

__all__ = ["HostedMonitor", "VMStop"]


class VMStop(Exception):
    """The VM must end (reason and detail for its RunResult)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class HostedMonitor(Monitor):
    """A monitor whose VMs share one host machine (``self._host``), VM i's guest-physical
    memory at host-physical ``self._slice_bases[i]``, after the VMM area. Subclasses say how
    a guest runs; the bookkeeping below is the same for all of them."""

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

    # ---- which VM runs: the schedulers' mechanics -----------------------------------------
    def _slice_clock(self) -> int:
        """What the round-robin time slices measure: host instructions retired."""
        return self._host.steps

    def _count_preemption(self, vm) -> None:
        """The VMM's timer ended ``vm``'s slice (a policy: a trap into the VMM, an exit...)."""
        raise NotImplementedError

    def _schedule(self):
        """The VM to run next: the current one until it stops or its time slice ends, then
        the next running one (round robin every ``slice``, or the ``scheduler`` on machine
        time), with a world switch when it changes."""
        running = [vm for vm in self.vms if vm.result is None]
        if not running:
            return None
        if self.scheduler is not None and len(self.vms) > 1:
            _schedule_machine_time(self, self._count_preemption)
        else:
            self._schedule_rr()
        if self.machine_timer:
            _sync_machine_timer(self)
        return self.vms[self.current]

    def _schedule_rr(self) -> None:
        """Without a scheduler: round robin every ``slice`` host instructions."""
        cur = self.vms[self.current]
        if len(self.vms) > 1 and (cur.result is not None
                                  or self._slice_clock() >= self._slice_end):
            if cur.result is None:
                self._count_preemption(cur)   # the slice ended while it ran
            order = self.vms[self.current + 1:] + self.vms[:self.current + 1]
            nxt = next(vm for vm in order if vm.result is None)
            if nxt is not cur:
                self._world_switch(nxt.index)
            self._slice_end = self._slice_clock() + self.slice

    # ---- the world switch ----------------------------------------------------------------
    def _world_switch(self, to: int) -> None:
        """Save the real CPU of the running VM, load VM ``to``'s: the real TLB and the
        compiled code go (no tagged TLB). What else moves with a VM is the monitor's policy
        (:meth:`_switched_out`, :meth:`_switched_in`)."""
        m = self._host
        old, new = self.vms[self.current], self.vms[to]
        self._switched_out(old)
        old.saved.set_state(m.cpu.state())
        old._clock = m.clock
        m.cpu.set_state(new.saved.state())
        m.clock = new._clock
        self.current = to
        m.vm_index = to
        self._switched_in(new)
        m.flush_tlb()
        m._mode_changed()
        self.world_switches += 1
        self.events["world_switch"] += 1
        t = machine_time(self) - self.costs.world_switch   # when the switch began
        self.switch_log.append((t, old.index, new.index))
        self.trace.add(WorldSwitch(m.clock, from_vm=old.index, to_vm=new.index, vm=new.index,
                                   machine_time=t))

    def _switched_out(self, vm) -> None:
        """``vm`` leaves the real CPU (its registers are saved next)."""

    def _switched_in(self, vm) -> None:
        """``vm`` has the real CPU (its registers loaded; the TLB is flushed next)."""

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
        self._host.exit_request = True

    # ---- a halted virtual CPU --------------------------------------------------------------
    def _guest_if(self, vm) -> bool:
        """The IF the guest's HLT is judged by (a policy: the virtual one, or the real)."""
        raise NotImplementedError

    def _idle(self, vm) -> None:
        """A halted virtual CPU (mirrors the machine's run loop): end the VM if nothing can
        wake it, else move its guest time to the next timer tick (idle time)."""
        wake = halt_outcome(self._guest_if(vm), vm.devices)
        if isinstance(wake, str):
            self._end(vm, "halt", wake)
        elif wake is not None:
            m = self._host
            m.clock = max(m.clock, wake)
