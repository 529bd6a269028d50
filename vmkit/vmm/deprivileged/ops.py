"""The ring-1 core's table of operations (the monitor protocol, :mod:`vmkit.vmm.ops`): how the
world's run loop boots, enters and resumes a guest whose kernel runs deprivileged in ring 1.
Trap-and-emulate uses it as it is; binary translation and paravirtualization replace the
operations they do differently (``dataclasses.replace`` of :data:`DEPRIVILEGED_OPS`)."""

from __future__ import annotations

from vmkit.machine.devices import Devices
from vmkit.machine.machine import Machine, RunResult
from vmkit.vmm import passthrough
from vmkit.vmm.deprivileged.vcpu import TEVM
from vmkit.vmm.layout import MiB
from vmkit.vmm.ops import MonitorOps

__all__ = ["DEPRIVILEGED_OPS"]


def make_vm(te, index: int, image, machine: Machine) -> TEVM:
    """Boot a VM: its per-VM object and virtual CPU, its slice and VMM structures."""
    vm = TEVM(index, image, machine, te, te._slice_bases[index], (1 + index) * MiB)
    te._boot_vm(vm)
    return vm


def setup(te) -> None:
    """The host machine ready for the first VM: the VMM attached as the machine's hooks, the
    VMM's timer (a one-shot, armed before every run of a guest), the VM's real CPU."""
    m = te._host
    m.attach(te)
    m.dev = Devices(timer_period=1 << 62)
    m.cpu.set_state(te.vms[0].saved.state())
    m.clock = 0
    m.vm_index = 0
    m.flush_tlb()
    m.mode_changed()
    te._slice_end = te.slice


def deliver_pending(te, vm: TEVM) -> bool:
    """A deliverable virtual interrupt is reflected through the guest's IDT."""
    line = te._deliverable(vm)
    if line is None:
        return False
    te._guarded(vm, te._inject_irq, vm, line)
    return True


def halted(te, vm: TEVM) -> bool:
    return vm.vcpu.halted        # HLT is emulated: the virtual CPU waits


def guest_if(te, vm: TEVM) -> bool:
    return vm.vcpu.IF     # the virtual IF: the real one stays 1 while the guest runs


def enter(te, vm: TEVM, deadline: int) -> None:
    """Arm the VMM's timer for ``deadline`` (right after one instruction in a virtual STI
    shadow)."""
    m = te._host
    if vm.steps < vm.inhibit_until:        # STI shadow: stop right after one instruction
        deadline = min(deadline, m.clock + vm.inhibit_until - vm.steps)
    te._arm(deadline)
    m.cancel_exit()


def guest_stopped(te, vm: TEVM, r: RunResult) -> None:
    """A crash of the guest's code (unsupported instruction ...); the real CPU never halts or
    powers off itself: those are emulated."""
    te._host.stopped = None
    te._end(vm, "crash", r.detail, event=r.reason != "crash")


def count_preemption(te, vm: TEVM) -> None:
    """The VMM's timer ended ``vm``'s slice: a trap into the VMM."""
    te.traps += 1
    te.events["trap"] += 1


def switched_in(te, vm: TEVM) -> None:
    if te.assigned:   # direct assignment: the I/O bitmap lets only the owner through
        passthrough.te_switched(te)


#: the ring-1 core's operations
DEPRIVILEGED_OPS = MonitorOps(
    make_vm=make_vm, setup=setup, deliver_pending=deliver_pending, halted=halted,
    guest_if=guest_if, enter=enter, guest_stopped=guest_stopped,
    count_preemption=count_preemption, switched_in=switched_in,
    paging_kinds=("shadow",), default_paging="vtlb")
