"""Hardware assist's power-on of a VM: its slice, its paging mode's structures (EPT or shadow
tables), the VMCS guest state."""

from __future__ import annotations

from vmkit.machine.machine import BOOT_GDT, BOOT_GDT_BYTES
from vmkit.vmm.hw.vcpu import HWVM
from vmkit.vmm.hw.vmcs import CR0_NE, CR4_VMXE


def boot_vm(hw, vm: HWVM) -> None:
    """The VM's slice as the machine powers on (0xAA everywhere, the boot GDT, the image),
    its EPT or shadow page directory, and its guest-state area: the power-on CPU."""
    hw._power_on_slice(vm)
    cpu = vm.saved                           # the guest-state area
    cpu.regs[:] = [0] * 8
    cpu.regs[4] = vm.memory_size            # as Machine: a stack at the top of memory
    cpu.eip = vm.image.entry
    cpu.eflags = 0x2
    cpu.gdtr.base, cpu.gdtr.limit = BOOT_GDT, len(BOOT_GDT_BYTES) - 1
    cpu.idtr.base, cpu.idtr.limit = 0, 0
    cpu.cpl = 0
    vm.vmcs.cr0_read_shadow, vm.vmcs.cr4_read_shadow = 0x11, 0
    hw.paging.boot_vm(vm)
    if hw.ept:
        vm.vmcs.ept_pointer = vm.ept.root
    # unrestricted guest with EPT: paging off is fine; shadow paging keeps it on
    cpu.cr0, cpu.cr3 = 0x11 | CR0_NE | hw.paging.cr0_forced, hw.paging.root(vm)
    cpu.cr4 = CR4_VMXE
