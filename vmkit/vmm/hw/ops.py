"""Hardware assist's table of operations (the monitor protocol, :mod:`vmkit.vmm.ops`): how the
world's run loop boots a VM, enters it (a VM entry, with event injection when one is pending),
handles its exits in root mode, and switches VMCSs."""

from __future__ import annotations

from vmkit.machine.devices import Devices
from vmkit.machine.machine import Machine, RunResult
from vmkit.trace import VmEntry
from vmkit.vmm.hw.boot import boot_vm
from vmkit.vmm.hw.inject import enter_with_event, virtual_interrupts
from vmkit.vmm.hw.vcpu import HWVM
from vmkit.vmm.hw.vmcs import IF, PREEMPTION_TIMER, TRIPLE_FAULT, MiB, NonRootExit
from vmkit.vmm.hw.vmexit import handle_exit
from vmkit.vmm.ops import MonitorOps

__all__ = ["HW_OPS"]


def make_vm(hw, index: int, image, machine: Machine) -> HWVM:
    """Boot a VM: its VMCS, the paging mode's structures, the guest-state area."""
    vm = HWVM(index, image, machine, hw, hw._slice_bases[index], (1 + index) * MiB)
    boot_vm(hw, vm)
    return vm


def setup(hw) -> None:
    """The host machine ready for the first VM: non-root mode's hooks attached, the VMM's
    timer, the first VM's guest state loaded."""
    m = hw._host
    m.attach(hw.nonroot)
    m.dev = Devices(timer_period=1 << 62)      # the VMM's one-shot timer, armed per entry
    vm = hw.vms[0]
    m.cpu.set_state(vm.saved.state())
    hw.paging.switched_in(vm)
    m.clock = 0
    m.vm_index = 0
    m.flush_tlb()
    m.flush_icache()
    m.mode_changed()
    hw._slice_end = hw.slice


def root_work(hw, vm: HWVM) -> bool:
    """Root mode: handle the exit the last run of the guest recorded in its VMCS."""
    if not vm.exit_pending:
        return False
    hw._guarded(vm, handle_exit, hw, vm)    # root mode: handle the exit
    return True


def deliver_pending(hw, vm: HWVM) -> bool:
    """The virtual interrupt controller, then a VM entry with event injection."""
    virtual_interrupts(hw, vm)
    if not vm.vmcs.injection_pending:
        return False
    hw._guarded(vm, enter_with_event, hw, vm)   # VM entry with event injection
    return True


def halted(hw, vm: HWVM) -> bool:
    return hw._host.cpu.halted   # the HLT activity state


def enter(hw, vm: HWVM, deadline: int) -> None:
    """VM entry: the guest runs in non-root mode until an exit."""
    m, vmcs = hw._host, vm.vmcs
    hw._arm(deadline)
    hw.nonroot.window_exiting = vmcs.interrupt_window_exiting
    hw.nonroot.pf_exits = bool(vmcs.controls.exception_bitmap & (1 << 14))
    m.cancel_exit()
    if vm.entry_due:
        vm.entry_due = False
        hw.trace.add(VmEntry(m.clock, injected=None, vm=vm.index))
    hw.vmx_mode = "non-root"


def guest_stopped(hw, vm: HWVM, r: RunResult) -> None:
    """A triple fault in non-root mode is a VM exit; HLT with IF = 0 and HLT exiting off is the
    end, as natively."""
    m = hw._host
    if r.reason == "crash":
        m.stopped = None
        if r.detail.startswith("triple fault"):
            # VT-x: a triple fault in non-root mode is a VM exit (reason 2), not a reset
            hw._record(NonRootExit(TRIPLE_FAULT))
            vm.exit_pending = False
            hw.vmx_mode = "root"
        hw._end(vm, "crash", r.detail, event=False)
    elif r.reason == "halt":                   # HLT exiting off, IF = 0: natively the end
        m.stopped = None
        hw._end(vm, "halt", r.detail, event=False)


def count_preemption(hw, cur: HWVM) -> None:
    """The VMX-preemption timer ended ``cur``'s slice: a VM exit."""
    if not cur.exit_pending:
        hw._record(NonRootExit(PREEMPTION_TIMER))
        cur.exit_pending = False
        cur.entry_due = True


def switched_out(hw, vm: HWVM) -> None:
    """Blocking by STI goes with the VM (the VMCS's interruptibility state)."""
    m = hw._host
    vm.inhibit_left = max(0, m.irq_inhibit_until - m.steps)


def switched_in(hw, vm: HWVM) -> None:
    """The VM's guest state is loaded from its VMCS (its EPT or shadow page directory is
    the paging mode's); the live compiled code goes too (no VPID): the code kept by host-
    physical address stays, each VM's in its own memory (vmkit.machine.codecache; the
    controls that decide what a compiled instruction intercepts are every VMCS's)."""
    m = hw._host
    m.irq_inhibit_until = m.steps + vm.inhibit_left if vm.inhibit_left else -1
    m.drop_live_code()


def guest_if(hw, vm: HWVM) -> bool:
    return bool(hw._host.cpu.ef & IF)   # non-root mode: the guest's IF is the real one


#: hardware assist's operations; it takes nested paging (EPT) or a shadow mode
HW_OPS = MonitorOps(
    make_vm=make_vm, setup=setup, root_work=root_work, deliver_pending=deliver_pending,
    halted=halted, guest_if=guest_if, enter=enter, guest_stopped=guest_stopped,
    count_preemption=count_preemption, switched_out=switched_out, switched_in=switched_in,
    paging_kinds=("nested", "shadow"), default_paging="ept")
