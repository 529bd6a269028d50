"""Hardware assist's guest CPU view (:class:`GuestCPU`) and per-VM object (:class:`HWVM`)."""

from __future__ import annotations

from vmkit.errors import VmkitError
from vmkit.machine.cpu import EFLAGS
from vmkit.machine.mmu import CR0_PG
from vmkit.vmm.hw.vmcs import VMCS
from vmkit.vmm.vm import GuestVM


# =================================================================================================
# The guest's view of the CPU, and one VM
# =================================================================================================
class GuestCPU:
    """The CPU as the guest believes it is. In non-root mode that is the real CPU (registers,
    EFLAGS with the real IF, segments, GDTR/IDTR/TR, CPL, CR2), except CR0 and CR4, whose bits
    the VMM owns come from the read shadows, and CR3 under shadow paging (the VMM's copy of the
    guest's value; the real CR3 holds the shadow). Writes go to the real CPU; CR0/CR3/CR4 are
    changed through the VMM (``monitor.write_cr(vm, n, value)``)."""

    def __init__(self, vm: "HWVM"):
        object.__setattr__(self, "_vm", vm)

    def __getattr__(self, name):
        return getattr(self._vm.real_cpu, name)

    def __setattr__(self, name, value):
        if name in ("cr0", "cr3", "cr4"):
            raise VmkitError(f"{name} of the guest is the VMM's to set: "
                             f"monitor.write_cr(vm, {name[2]}, value)")
        setattr(self._vm.real_cpu, name, value)

    @property
    def cr0(self) -> int:
        vmcs, real = self._vm.vmcs, self._vm.real_cpu
        mask = vmcs.controls.cr0_guest_host_mask
        return (real.cr0 & ~mask) | (vmcs.cr0_read_shadow & mask)

    @property
    def cr4(self) -> int:
        vmcs, real = self._vm.vmcs, self._vm.real_cpu
        mask = vmcs.controls.cr4_guest_host_mask
        return (real.cr4 & ~mask) | (vmcs.cr4_read_shadow & mask)

    @property
    def cr3(self) -> int:
        vm = self._vm
        return vm.real_cpu.cr3 if vm.monitor.ept else vm.guest_cr3

    @property
    def IF(self) -> int:
        return (self._vm.real_cpu.ef >> 9) & 1

    @property
    def paging(self) -> bool:
        return bool(self.cr0 & CR0_PG)

    @property
    def flags(self) -> EFLAGS:
        return EFLAGS(self._vm.real_cpu.eflags)

    def __repr__(self) -> str:
        r = self._vm.real_cpu
        return (f"<GuestCPU vm{self._vm.index} eip={r.eip:08x} eflags={r.eflags:08x} "
                f"cpl={r.cpl} cr0={self.cr0:08x} cr3={self.cr3:08x} cr4={self.cr4:08x}>")


class HWVM(GuestVM):
    """One guest under :class:`HardwareAssisted`: its VMCS (``vm.vmcs``), the paging mode's
    structures (``vm.ept`` under nested paging, shadow page tables under ``"vtlb"``), and the
    core's per-VM object
    (:class:`~vmkit.vmm.vm.GuestVM`: devices, memory slice, guest memory through the guest's
    paging, ``port_in``/``port_out``). The VMM keeps no TLB of its own: with EPT the guest
    changes its mappings without any exit, so every VMM access to guest memory walks."""

    #: hardware assist's own per-VM state, saved and restored with the core's
    vm_state = ("vmcs", "guest_cr3", "exit_pending", "entry_due", "inhibit_left")

    def __init__(self, index, image, machine, monitor, slice_base, vmm_base):
        super().__init__(index, image, machine, monitor, slice_base, vmm_base)
        self._vcpu = GuestCPU(self)
        self.vmcs = VMCS(self, monitor.controls)
        self.guest_cr3 = 0          # shadow paging: the CR3 the guest loaded
        self.exit_pending = False   # an exit recorded in the VMCS, not yet handled
        self.entry_due = False      # the next run of the guest is a VM entry after an exit
        self.inhibit_left = 0       # blocking by STI while another VM has the CPU
