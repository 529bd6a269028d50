"""Hardware assist's guest CPU view (:class:`GuestCPU`) and per-VM object (:class:`HWVM`)."""

from __future__ import annotations

from vmkit.errors import VmkitError
from vmkit.vmm.hw.vmcs import VMCS
from vmkit.vmm.vcpu import RealBackedCPU
from vmkit.vmm.vm import GuestVM


# =================================================================================================
# The guest's view of the CPU, and one VM
# =================================================================================================
def _real(name: str, doc: str):
    """A member that is the real CPU's own in non-root mode."""
    def get(self):
        return getattr(self._vm.real_cpu, name)

    def set_(self, v):
        setattr(self._vm.real_cpu, name, v)
    return property(get, set_, doc=doc)


def _owned_by_vmm(n: int):
    def set_(self, v):
        raise VmkitError(f"cr{n} of the guest is the VMM's to set: "
                         f"monitor.write_cr(vm, {n}, value)")
    return set_


class GuestCPU(RealBackedCPU):
    """The CPU as the guest believes it is (the interface :class:`vmkit.vmm.vcpu.VCPU`). In
    non-root mode that is the real CPU (registers, EFLAGS with the real IF, segments,
    GDTR/IDTR/TR, CPL, CR2), except CR0 and CR4, whose bits the VMM owns come from the read
    shadows, and CR3 under shadow paging (the VMM's copy of the guest's value; the real CR3
    holds the shadow). Writes go to the real CPU; CR0/CR3/CR4 are changed through the VMM
    (``monitor.write_cr(vm, n, value)``)."""

    eflags = _real("eflags", "EFLAGS: the real register, IF and IOPL included")
    cs = _real("cs", "CS: the real selector (the guest kernel runs in ring 0 of non-root mode)")
    ss = _real("ss", "SS: the real selector")
    cpl = _real("cpl", "CPL: the real one")
    cr2 = _real("cr2", "CR2: the real one (a #PF in non-root mode sets it)")
    gdtr = _real("gdtr", "GDTR: the real one")
    idtr = _real("idtr", "IDTR: the real one")
    ldtr = _real("ldtr", "LDTR: the real one")
    tr = _real("tr", "TR: the real one")
    halted = _real("halted", "HLT: the real CPU's (or the VMCS's HLT activity state)")

    @property
    def IF(self) -> int:
        return (self._vm.real_cpu.ef >> 9) & 1

    @IF.setter
    def IF(self, v: int) -> None:
        r = self._vm.real_cpu
        r.ef = (r.ef & ~0x200) | ((v & 1) << 9)

    @property
    def iopl(self) -> int:
        return self._vm.real_cpu.iopl

    def _cr0(self) -> int:
        vmcs, real = self._vm.vmcs, self._vm.real_cpu
        mask = vmcs.controls.cr0_guest_host_mask
        return (real.cr0 & ~mask) | (vmcs.cr0_read_shadow & mask)

    def _cr4(self) -> int:
        vmcs, real = self._vm.vmcs, self._vm.real_cpu
        mask = vmcs.controls.cr4_guest_host_mask
        return (real.cr4 & ~mask) | (vmcs.cr4_read_shadow & mask)

    def _cr3(self) -> int:
        vm = self._vm
        return vm.real_cpu.cr3 if vm.monitor.ept else vm.guest_cr3

    cr0 = property(_cr0, _owned_by_vmm(0), doc="CR0: the real bits the guest owns, the read "
                   "shadow's where the VMM owns them (CR0 guest/host mask)")
    cr4 = property(_cr4, _owned_by_vmm(4), doc="CR4: as CR0, with the CR4 mask and shadow")
    cr3 = property(_cr3, _owned_by_vmm(3), doc="CR3: the real one under EPT, else the value "
                   "the guest loaded (the real CR3 holds the shadow tables)")


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
