"""The hypercalls other than the page-table ones: trap table, GDT, kernel stack, vcpu_info,
timer, event channels, console, scheduler."""

from __future__ import annotations

from vmkit.machine.cpu import MASK32, TableReg
from vmkit.machine.devices import PORT_TIMER
from vmkit.vmm.layout import H_TSS, RESERVED_ENTRY
from vmkit.vmm.pv.abi import (_I, CONSOLEIO_READ, CONSOLEIO_WRITE, EINVAL, EVTCHNOP_BIND_VIRQ,
                              EVTCHNOP_SEND, MAX_CONSOLE, SCHEDOP_BLOCK, SCHEDOP_SHUTDOWN,
                              SCHEDOP_YIELD, VCPUOP_REGISTER_VCPU_INFO, VI_CR2, VI_MACHINE_BASE,
                              VI_MASK, VI_PENDING, _Refused)
from vmkit.vmm.pv.vm import PVVM
from vmkit.vmm.sched import machine_time


def set_trap_table(pv, vm: PVVM, table: int, entries: int, _c: int) -> int:
    if not 1 <= entries <= 256:
        raise _Refused(EINVAL, "bad trap table size")
    vm.vcpu.idtr = TableReg(table, entries * 8 - 1)
    vm.fast_trap = None
    if entries > 0x80:
        gate = vm.lin_read(table + 8 * 0x80, 8)
        access = (gate >> 40) & 0xFF
        # Xen installs the direct trap only for a present DPL-3 trap gate (an interrupt
        # gate would need the hypervisor to mask events on the way in)
        if access == 0xEF:
            vm.fast_trap = gate
    if vm.current:
        pv._install(vm)
    return 0


def set_gdt(pv, vm: PVVM, base: int, entries: int, _c: int) -> int:
    if not 1 <= entries <= RESERVED_ENTRY:
        raise _Refused(EINVAL, "bad GDT size")
    vm.vcpu.gdtr = TableReg(base, entries * 8 - 1)
    pv.shadow_gdt(vm)
    return 0


def stack_switch(pv, vm: PVVM, ss: int, esp: int, _c: int) -> int:
    if ss & 3 != 1 or not ss & 0xFFFC:
        raise _Refused(EINVAL, "kernel stack selector must have RPL 1")
    d = vm.descriptor(ss & ~3)
    if d.system or d.code or not d.writable:
        raise _Refused(EINVAL, "kernel stack selector is not a writable data segment")
    vm.kernel_ss, vm.kernel_esp = ss, esp & MASK32
    if vm.current:
        mem = pv._host.mem
        _I.pack_into(mem, H_TSS + 12, vm.kernel_esp)
        _I.pack_into(mem, H_TSS + 16, ss)
    return 0


def vcpu_op(pv, vm: PVVM, cmd: int, addr: int, _c: int) -> int:
    if cmd != VCPUOP_REGISTER_VCPU_INFO:
        raise _Refused(EINVAL, "unknown vcpu_op")
    if addr & 3 or addr + 64 > vm.memory_size:
        raise _Refused(EINVAL, "vcpu_info outside the VM's memory")
    vm.vcpu_info = addr
    vm.phys_write_uint(addr + VI_PENDING, 1, 0)
    vm.phys_write_uint(addr + VI_MASK, 1, 1)           # events masked until the kernel is ready
    vm.phys_write_uint(addr + VI_CR2, 4, 0)
    vm.phys_write_uint(addr + VI_MACHINE_BASE, 4, vm.slice_base)
    return 0


def set_timer_op(pv, vm: PVVM, period: int, _b: int, _c: int) -> int:
    vm.devices.write(PORT_TIMER, 4, period, vm.clock)
    return 0


def event_channel_op(pv, vm: PVVM, cmd: int, port: int, arg: int):
    if cmd == EVTCHNOP_BIND_VIRQ:
        if port != 0:
            raise _Refused(EINVAL, "unknown virtual IRQ")
        vm.devices.imr &= ~1                       # the timer's events reach the VM
        return 0
    if cmd == EVTCHNOP_SEND:
        backend = getattr(vm, "io_backend", None)
        if port != 1 or backend is None:
            raise _Refused(EINVAL, "no backend on that event channel")
        return backend(pv, vm, arg)
    raise _Refused(EINVAL, "unknown event_channel_op")


def console_io(pv, vm: PVVM, cmd: int, count: int, buf: int):
    if not 0 <= count <= MAX_CONSOLE:
        raise _Refused(EINVAL, "console_io count too large")
    if cmd == CONSOLEIO_WRITE:
        if count:
            vm.devices.console.extend(vm.lin_read(buf, count).to_bytes(count, "little"))
        return count, count
    if cmd == CONSOLEIO_READ:
        dv = vm.devices
        n = 0
        while n < count and dv.input_waiting:
            vm.lin_write(buf + n, 1, dv.read(0x60, 1, vm.clock))
            n += 1
        return n, count
    raise _Refused(EINVAL, "unknown console_io command")


def sched_op(pv, vm: PVVM, cmd: int, arg: int, _c: int) -> int:
    if cmd == SCHEDOP_SHUTDOWN:
        vm.devices.poweroff_code = arg
        return 0
    if cmd == SCHEDOP_YIELD:
        if len(pv.vms) > 1:           # the rest of the slice goes to the next VM
            pv._slice_end = pv._slice_clock() if pv.scheduler is None \
                else machine_time(pv)
        return 0
    if cmd == SCHEDOP_BLOCK:
        vm.vcpu.halted = True
        return 0
    raise _Refused(EINVAL, "unknown sched_op")
