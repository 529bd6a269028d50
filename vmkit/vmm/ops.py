"""The monitor protocol as one declared table of operations (after KVM's ``struct kvm_x86_ops``,
arch/x86/include/asm/kvm_host.h): what the world's one run loop (:mod:`vmkit.vmm.world`) asks
of a monitor, and nothing else. Each monitor fills one :class:`MonitorOps` at the end of its
module (``Deprivileged.ops``, ``HardwareAssisted.ops``); a monitor built on another states only
the operations it does differently (``dataclasses.replace`` of its base's table), as VMX and
SVM fill ``kvm_x86_ops`` over KVM's common x86.c.

Every operation is a function taking the monitor first. The defaults below are those of a
monitor that needs nothing at that point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["MonitorOps", "no_root_work", "run_directly", "nothing"]


def no_root_work(mon, vm) -> bool:
    """Nothing to do before the guest runs (no pending exit)."""
    return False


def run_directly(mon, vm, budget: int, until, single: bool):
    """Run the guest directly on the real CPU until the VMM is needed; counts its guest time
    in ``vm.steps``."""
    m = mon._host
    s0 = m.steps
    try:
        return m.run(max_steps=budget, until=until, _single=single)
    finally:
        vm.steps += m.steps - s0


def nothing(mon, vm) -> None:
    """No work at this point."""


@dataclass(frozen=True)
class MonitorOps:
    """The operations of one monitor (see the module text), in the order the run loop meets
    them:

    * ``make_vm(mon, index, image, machine) -> vm``: boot a VM (its per-VM object, memory
      slice, VMM structures, the CPU state it powers on with);
    * ``setup(mon)``: the host machine ready to run the first VM (hooks attached, timer);
    * ``root_work(mon, vm) -> bool``: handle an exit or trap left pending by the last run of
      the guest (True: done something, schedule again);
    * ``deliver_pending(mon, vm) -> bool``: deliver a pending virtual interrupt or event now if
      one is deliverable (True: delivered);
    * ``halted(mon, vm) -> bool``: is the guest's CPU halted, waiting for an interrupt?
    * ``guest_if(mon, vm) -> bool``: the IF a halted guest is judged by;
    * ``enter(mon, vm, deadline)``: prepare the real CPU to run the guest until guest time
      ``deadline`` at the latest (the VMM's timer, a VM entry);
    * ``run_guest(mon, vm, budget, until, single) -> RunResult``: run it (directly, or through
      a translator) until the VMM is needed;
    * ``guest_stopped(mon, vm, result)``: the real CPU stopped with "crash", "halt" or
      "poweroff" while the guest ran;
    * ``count_preemption(mon, vm)``: the VMM's timer ended the VM's slice (a trap, an exit);
    * ``switched_out(mon, vm)`` / ``switched_in(mon, vm)``: the world switch, around the real
      CPU's registers;
    * ``paging_kinds``, ``default_paging``: the kinds of paging mode (:mod:`vmkit.vmm.paging`)
      the monitor runs guests with, and the mode it takes when none is named.
    """

    make_vm: Callable
    setup: Callable
    deliver_pending: Callable
    halted: Callable
    guest_if: Callable
    enter: Callable
    guest_stopped: Callable
    count_preemption: Callable
    paging_kinds: tuple
    default_paging: str
    root_work: Callable = no_root_work
    run_guest: Callable = run_directly
    switched_out: Callable = nothing
    switched_in: Callable = nothing
