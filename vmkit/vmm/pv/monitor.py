"""The paravirtual monitor (see the package text)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from vmkit.errors import VmkitError
from vmkit.isa.faults import Fault
from vmkit.machine.cpu import MASK32
from vmkit.trace import Hypercall
from vmkit.vmm.deprivileged import ops as core
from vmkit.vmm.deprivileged.monitor import Deprivileged
from vmkit.vmm.layout import H_IDT, H_TSS
from vmkit.vmm.pv.abi import (_I, _Q, EFAULT, ENOSYS, HYPERCALL_VECTOR, HYPERCALLS, VI_CR2,
                              VI_MASK, VI_PENDING, _Refused)
from vmkit.vmm.paging.direct import mmu_update, mmuext_op
from vmkit.vmm.pv.hypercalls import (console_io, event_channel_op, sched_op, set_gdt, set_timer_op,
                                     set_trap_table, stack_switch, vcpu_op)
from vmkit.vmm.pv.vm import PVVM
from vmkit.vmm.sched import machine_time

#: hypercall name -> handler(monitor, vm, ebx, ecx, edx) -> result, or (result, batch size)
HANDLERS = {"set_trap_table": set_trap_table, "mmu_update": mmu_update, "set_gdt": set_gdt,
            "stack_switch": stack_switch, "mmuext_op": mmuext_op, "console_io": console_io,
            "sched_op": sched_op, "set_timer_op": set_timer_op,
            "event_channel_op": event_channel_op, "vcpu_op": vcpu_op}


class Paravirtual(Deprivileged):
    """Paravirtualization after Xen (see the module text): ``Paravirtual(image, ...)`` with
    images from ``guests.build(name, paravirtual=True)``; several images share the CPU with
    the same scheduling keywords as :class:`~vmkit.vmm.TrapAndEmulate`."""

    name = "pv"
    title = "paravirtualization (Xen-style hypercalls, validated direct paging)"
    monitor_state = ("hypercalls", "batches", "refusals", "pt_updates", "upcalls",
                     "fast_syscalls")
    # the policy: nothing is emulated (the kernel asks by hypercall, and a privileged
    # instruction it executes gets its own #GP, as under Xen); the GDT is registered by the
    # set_gdt hypercall, not watched
    emulates = False
    watches_gdt = False

    def __init__(self, *images, **kw):
        from vmkit.vmm.base import _check_image
        for img in images:
            img = _check_image(img)
            if not getattr(img, "paravirtual", False):
                raise VmkitError(
                    f"image {img.name!r} is not paravirtual: the Paravirtual monitor runs "
                    f"kernels built with guests.build({img.name!r}, paravirtual=True), whose "
                    f"privileged operations are hypercalls")
        self.hypercalls: Counter = Counter()
        self.batches: Counter = Counter()
        self.refusals: Counter = Counter()
        self.pt_updates = 0
        self.upcalls = 0
        self.fast_syscalls = 0
        super().__init__(*images, **kw)

    # ---- construction ------------------------------------------------------------------------
    def _build_vmm_area(self) -> None:
        super()._build_vmm_area()
        self._vmm_gate = _Q.unpack_from(self._host.mem, H_IDT + 8 * 0x80)[0]

    def _boot_vm(self, vm: PVVM) -> None:
        """As under trap-and-emulate (the paging mode makes the start-of-day address space
        Xen's domain builder gives a guest: ``DirectPaging.boot_vm``), with paging on."""
        super()._boot_vm(vm)
        vm.vcpu.cr0 = 0x80010011                   # paging is on from the start
        vm.vcpu.IF = 1                             # the event mask stands for IF

    def _install(self, vm: PVVM) -> None:
        """The running VM's fast trap gate in the real IDT and kernel stack in the real TSS."""
        mem = self._host.mem
        _Q.pack_into(mem, H_IDT + 8 * 0x80, vm.fast_trap if vm.fast_trap is not None
                     else self._vmm_gate)
        _I.pack_into(mem, H_TSS + 12, vm.kernel_esp)
        _I.pack_into(mem, H_TSS + 16, vm.kernel_ss | 1 if vm.kernel_ss else 0)
        self._host.flush_tlb()

    # ---- entries into the hypervisor ---------------------------------------------------------
    def on_exception(self, vector: int, fault, source: str, next_eip) -> bool:
        m = self._host
        if source == "int" and vector == 0x80 and m.cpu.cpl == 3 \
                and self.vms[self.current].fast_trap is not None:
            self.fast_syscalls += 1
            return False            # the hardware delivers it through the real IDT
        if source == "int" and vector == HYPERCALL_VECTOR:
            if m.cpu.cpl != 1:      # the hypercall gate has DPL 1
                raise Fault(13, (vector << 3) | 2, detail="hypercall from user mode")
            vm = self.vms[self.current]
            if self.scheduler is not None and len(self.vms) > 1 \
                    and machine_time(self) >= self._slice_end:
                m.request_exit()
            self._hypercall(vm, next_eip)
            return True
        return super().on_exception(vector, fault, source, next_eip)

    def _page_fault(self, vm: PVVM, fault: Fault) -> None:
        """Every page fault is the guest's (its tables are the real ones): CR2 goes into
        vcpu_info, the fault is bounced through the trap table."""
        lin = fault.address & MASK32
        vm.vcpu.cr2 = lin
        if vm.vcpu_info is not None:
            vm.phys_write_uint(vm.vcpu_info + VI_CR2, 4, lin)
        self._reflect_exception(vm, fault)

    def _inner_stack(self, vm: PVVM, new: int, ext: int) -> tuple[int, int]:
        if not vm.kernel_ss:
            raise Fault(10, ext, detail="no kernel stack registered (stack_switch hypercall)")
        return vm.kernel_esp, vm.kernel_ss & ~3

    # ---- events ---------------------------------------------------------------------------------
    def _masked(self, vm: PVVM) -> bool:
        return bool(vm.phys_read_uint(vm.vcpu_info + VI_MASK, 1))

    def _deliverable(self, vm: PVVM) -> int | None:
        """An event to deliver now: one pending, events unmasked, the VM in user mode."""
        if vm.vcpu_info is None:
            return None
        line = vm.devices.pending_vector()
        if line is None:
            return None
        if self._masked(vm) or vm.real_cpu.cpl != 3:
            vm.phys_write_uint(vm.vcpu_info + VI_PENDING, 1, 1)
            return None
        return line

    def _inject_irq(self, vm: PVVM, line: int) -> None:
        """The upcall: clear the event, mask events, bounce vector 32 + line into the kernel."""
        vector = vm.acknowledge_irq(line)
        vm.devices.eoi()                          # an event channel needs no EOI
        vm.phys_write_uint(vm.vcpu_info + VI_PENDING, 1, 0)
        vm.phys_write_uint(vm.vcpu_info + VI_MASK, 1, 1)
        vm.vcpu.halted = False
        self.upcalls += 1
        try:
            self._reflect(vm, vector, None, self._host.cpu.eip, "irq")
        except Fault as f:
            self._reflect_exception(vm, f)

    def on_ring_change(self, old: int, new: int, cause: str) -> None:
        vm = self.vms[self.current]
        vm.vcpu.cpl = 0 if new == 1 else new
        if new == 3 and self._deliverable(vm) is not None:
            self._host.request_exit()

    def _idle(self, vm: PVVM) -> None:
        vm.vcpu.IF = 1
        super()._idle(vm)

    # ---- hypercalls -----------------------------------------------------------------------------
    def _hypercall(self, vm: PVVM, next_eip: int) -> None:
        m = self._host
        cpu = m.cpu
        cpu.eip = next_eip & MASK32
        nr, a, b, c = cpu.regs[0], cpu.regs[3], cpu.regs[1], cpu.regs[2]
        name = HYPERCALLS.get(nr)
        batch = 1
        if name is None:
            result = -ENOSYS
            name = f"unknown({nr})"
        else:
            try:
                r = HANDLERS[name](self, vm, a, b, c)
                result, batch = r if isinstance(r, tuple) else (r, 1)
            except _Refused as ref:
                self.refusals[ref.reason] += 1
                result = -ref.code
                batch = getattr(ref, "batch", 1)
            except Fault as f:
                if f.vector != 14:
                    raise
                result = -EFAULT            # a bad pointer in the arguments
        cpu.regs[0] = result & MASK32
        self.hypercalls[name] += 1
        self.events["hypercall"] += 1
        self.trace.add(Hypercall(m.clock, name=name, batch=batch, result=result, vm=vm.index))
        m.request_exit()               # devices, events or the VM's state may have changed

    # ---- page tables: validation (Xen's page types, simplified) --------------------------------

    # ---- statistics, snapshots ------------------------------------------------------------------
    #: stats: the core's, with pv's counters (vmkit.vmm.state.report); no hidden faults and
    #: no shadow updates (the guest's tables are the real ones)
    stats_fields = (
        ("interrupts", lambda pv: sum(pv.reflected.values()) + pv.fast_syscalls),
        ("hidden_page_faults", lambda pv: 0), ("shadow_updates", lambda pv: 0),
        # page-table operations the hypervisor sees: mmu_update and mmuext_op calls
        ("pt_write_traps", lambda pv: pv.hypercalls["mmu_update"] + pv.hypercalls["mmuext_op"]),
        "hypercalls", ("mmu_update_batches", "batches"), "pt_updates",
        ("hypercall_refusals", "refusals"), "upcalls", "fast_syscalls",
        ("pinned_tables", lambda pv: sum(len(vm.l1) + len(vm.l2) for vm in pv.vms)))

    def event_counts(self) -> Counter:
        """As trap-and-emulate's, plus the hardware's delivery of every fast system call (as
        natively: an interrupt through the IDT); no shadow page table updates (installing the
        registered GDT is part of the set_gdt hypercall)."""
        counts = super().event_counts()
        counts["interrupt"] += self.fast_syscalls
        counts.pop("shadow_update", None)
        return counts


# ---- the monitor protocol (vmkit.vmm.ops): the ring-1 core's, with what pv does differently --
def make_vm(pv, index: int, image, machine) -> PVVM:
    vm = PVVM(index, image, machine, pv, pv._slice_bases[index], (1 << 20) * (1 + index))
    pv._boot_vm(vm)
    return vm


def setup(pv) -> None:
    core.setup(pv)
    pv._install(pv.vms[pv.current])


def switched_in(pv, vm: PVVM) -> None:
    """The VM's fast trap gate and kernel stack go into the real IDT and TSS."""
    core.switched_in(pv, vm)
    pv._install(vm)


# the guest's own tables are the real ones (vmkit.vmm.paging.direct)
Paravirtual.ops = replace(core.DEPRIVILEGED_OPS, make_vm=make_vm, setup=setup,
                          switched_in=switched_in, paging_kinds=("direct",),
                          default_paging="direct")
