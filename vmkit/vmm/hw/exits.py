"""VM-exit handlers: exit-reason name -> ``handler(vm, vmcs)``, the default table."""

from __future__ import annotations

from vmkit.machine.cpu import MASK32
from vmkit.vmm.hw.vcpu import HWVM
from vmkit.vmm.hw.vmcs import CR0_TS, EXIT_NUMBERS, VMCS

# =================================================================================================
# Exit handlers: exit-reason name -> handler(vm, vmcs)
# =================================================================================================
_DEFAULT_HANDLERS: dict = {}


def exit_handler(*names: str):
    """Register a default VM-exit handler for the exit-reason names given (decorator)."""
    def deco(fn):
        for n in names:
            if n not in EXIT_NUMBERS:
                raise ValueError(f"unknown exit reason {n!r}")
            _DEFAULT_HANDLERS[n] = fn
        return fn
    return deco


@exit_handler("CPUID")
def handle_cpuid(vm: HWVM, vmcs: VMCS) -> None:
    """CPUID always exits (SDM Vol. 3C, 26.1.2): the VMM answers with the host's leaves, on the
    guest's registers. (Real VMMs set the "hypervisor present" bit, ECX bit 31 of leaf 1; it is
    left clear here so that guests see exactly what they see on the bare machine.)"""
    vm.machine.cpuid()


@exit_handler("HLT")
def handle_hlt(vm: HWVM, vmcs: VMCS) -> None:
    """HLT exiting: the VMM puts the virtual CPU in the HLT activity state and idles it until
    its next virtual interrupt, moving guest time to the next tick as the machine does."""
    vm.vcpu.halted = True


@exit_handler("IO_INSTRUCTION")
def handle_io(vm: HWVM, vmcs: VMCS) -> None:
    """IN/OUT on the VM's virtual devices, from the exit qualification alone (SDM Vol. 3C,
    Table 28-5: bits 2:0 size - 1, bit 3 direction (1 = IN), bit 6 immediate port, bits 31:16
    the port): no instruction decoding. The CPU already checked IOPL and the guest's TSS bitmap."""
    q = vmcs.exit_qualification
    size, port = (q & 7) + 1, q >> 16
    mask = (1 << (8 * size)) - 1
    regs = vm.vcpu.regs
    if q & 8:
        regs[0] = (regs[0] & ~mask & MASK32) | (vm.port_in(port, size) & mask)
    else:
        vm.port_out(port, size, regs[0] & mask)


@exit_handler("CR_ACCESS")
def handle_cr(vm: HWVM, vmcs: VMCS) -> None:
    """MOV to/from CRn, CLTS, LMSW, from the qualification (SDM Vol. 3C, Table 28-3: bits 3:0
    the CR, 5:4 the access type, 11:8 the general register, 31:16 LMSW's source)."""
    q = vmcs.exit_qualification
    n, kind, gpr = q & 15, (q >> 4) & 3, (q >> 8) & 15
    mon, vc = vm.monitor, vm.vcpu
    if kind == 0:
        mon.write_cr(vm, n, vc.regs[gpr])
    elif kind == 1:
        vc.regs[gpr] = vm.read_cr(n)
    elif kind == 2:
        mon.write_cr(vm, 0, vc.cr0 & ~CR0_TS)
    else:
        cr0 = vc.cr0
        mon.write_cr(vm, 0, (cr0 & ~0xE) | ((q >> 16) & 0xF) | (cr0 & 1))


@exit_handler("INVLPG")
def handle_invlpg(vm: HWVM, vmcs: VMCS) -> None:
    """INVLPG: the qualification is the linear address. Shadow paging drops the shadow entry
    (the virtual TLB's); with EPT the VMM invalidates the real TLB entry for the guest."""
    vm.monitor.guest_invlpg(vm, vmcs.exit_qualification)


@exit_handler("RDTSC")
def handle_rdtsc(vm: HWVM, vmcs: VMCS) -> None:
    """RDTSC exiting: edx:eax := the VM's guest time (what the CPU would have returned)."""
    t = vm.clock
    vm.vcpu.eax, vm.vcpu.edx = t & MASK32, (t >> 32) & MASK32


@exit_handler("EXCEPTION_NMI")
def handle_exception(vm: HWVM, vmcs: VMCS) -> None:
    """An exception in the exception bitmap: a #PF under shadow paging is a hidden fault or the
    guest's own; anything else is reflected into the guest by event injection."""
    vm.monitor.exception_exit(vm, vmcs)


@exit_handler("EPT_VIOLATION")
def handle_ept_violation(vm: HWVM, vmcs: VMCS) -> None:
    """An access the EPT does not allow: a page of the VM's memory not mapped yet (lazy EPT:
    map it and retry) or an address beyond it (emulate the instruction: all ones, dropped)."""
    vm.monitor.ept_violation(vm, vmcs)


@exit_handler("EXTERNAL_INTERRUPT", "PREEMPTION_TIMER")
def handle_timer(vm: HWVM, vmcs: VMCS) -> None:
    """The VMM's timer (a virtual tick is due, the run's budget or the time slice is spent):
    nothing to do here, the VMM's loop looks at the virtual devices and the schedule."""


@exit_handler("INTERRUPT_WINDOW")
def handle_interrupt_window(vm: HWVM, vmcs: VMCS) -> None:
    """The guest can take an interrupt now: close the window; the entry injects it."""
    vmcs.interrupt_window_exiting = False
