"""Hardware assist's power-on of a VM: its slice, its EPT (or shadow tables), the VMCS guest
state."""

from __future__ import annotations

from vmkit.machine.machine import BOOT_GDT, BOOT_GDT_BYTES
from vmkit.machine.mmu import CR0_PG, CR0_WP
from vmkit.vmm.hw.ept import EPT
from vmkit.vmm.hw.vcpu import HWVM
from vmkit.vmm.hw.vmcs import CR0_NE, CR4_VMXE, MiB


def boot_vm(hw, vm: HWVM) -> None:
    """The VM's slice as the machine powers on (0xAA everywhere, the boot GDT, the image),
    its EPT or shadow page directory, and its guest-state area: the power-on CPU."""
    m = hw._host
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
    if hw.ept:
        root = vm.vmm_base
        vm.ept = EPT(m, root, [vm.vmm_base + a for a in range(0x1000, MiB, 0x1000)])
        vm.vmcs.ept_pointer = root
        if not hw.lazy_ept:
            for g in range(0, vm.memory_size, 0x1000):
                vm.ept.map(g, vm.slice_base + g)
        cpu.cr0, cpu.cr3 = 0x11 | CR0_NE, 0       # unrestricted guest: paging off is fine
    else:
        cpu.cr0, cpu.cr3 = 0x11 | CR0_NE | CR0_PG | CR0_WP, vm.pd
    cpu.cr4 = CR4_VMXE
