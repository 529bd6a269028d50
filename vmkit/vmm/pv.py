"""Paravirtualization: the guest kernel is changed to call the hypervisor (after Xen: Barham et
al., "Xen and the Art of Virtualization", SOSP 2003).

The guest is built from the same kernel source with ``guests.build(name, paravirtual=True)``:
the kernel's privileged operations are macros (``vmkit/guests/pvops.s``, like Linux's pvops),
and the paravirtual set (``pvops_pv.s``) replaces each with a **hypercall**: ``int 0x82`` from
the ring-1 kernel, number in eax, arguments in ebx, ecx, edx, result in eax (0, a count, or a
negative error code). What the hypervisor does instead of trapping and emulating:

* **Trap table and kernel stack are registered** (``set_trap_table``, ``stack_switch``): the
  hypervisor bounces exceptions into the guest through that table onto that stack. System
  calls do not enter the hypervisor at all: when the guest's ``int 0x80`` entry is a DPL-3
  *trap* gate, the hypervisor copies it into the real IDT and puts the kernel stack into the
  real TSS (Xen's "fast trap", set_int80_direct_trap), so the hardware goes from ring 3 to the
  ring-1 kernel directly. (Per VM: the gate and the stack are reinstalled on a world switch.)
* **Direct, validated paging.** The guest's page tables are the real ones and hold machine
  addresses (the VM's memory is one contiguous machine range whose base the hypervisor tells
  the guest). A frame becomes a page table only after the hypervisor has validated it
  (``mmuext_op`` pin, or when it is loaded as CR3): every present entry must map the VM's own
  memory and no entry may map a page table writable; the hypervisor counts the writable
  mappings of every frame (Xen's page type counts) to keep that true. From then on the table is
  read-only to the guest, and changes are ``mmu_update`` hypercalls: a *batch* of (entry
  address, new value) pairs, each checked; an update that would map memory that is not the
  VM's or make a page table writable is refused with ``-EPERM`` and counted in
  ``stats["hypercall_refusals"]``; it never takes effect. No shadow tables, no hidden page
  faults, one-dimensional TLB walks: the cost moved into the hypercalls.
* **Events instead of interrupts.** The timer is an event channel (``set_timer_op``,
  ``event_channel_op`` bind). The guest's IF is replaced by a mask byte in ``vcpu_info``, a
  page shared with the hypervisor: delivering an event (an upcall through the trap table's
  vector 32) sets the mask, and the kernel clears it with a plain store before it returns to
  user mode, with no hypercall on that path. The hypervisor delivers an event when the mask is
  clear and the VM runs in user mode; like its native twin, whose interrupt gates keep
  interrupts off in the kernel, this kernel is never interrupted in kernel mode (a reentrant
  kernel like Linux takes events in kernel mode too, and Xen closes the race at its exit with a
  critical-section fixup). The faulting address of a page fault is written to ``vcpu_info``
  (the guest cannot read CR2).
* **I/O by hypercall**: ``console_io`` writes the whole buffer of a ``write`` system call in one
  hypercall (the native kernel executes one ``out`` per byte: one trap each under
  trap-and-emulate); ``sched_op`` yields or shuts the VM down; ``event_channel_op`` send
  notifies the split-driver backend (:mod:`vmkit.vmm.iovirt`).

``stats`` adds ``hypercalls`` (Counter by name), ``mmu_update_batches`` (Counter: batch size ->
calls), ``pt_updates`` (validated entries written), ``hypercall_refusals`` (Counter by reason),
``upcalls`` (events delivered), ``fast_syscalls`` and ``pinned_tables``. ``hidden_page_faults``
and shadow page table updates stay 0. A privileged instruction executed by a paravirtual kernel
is the guest's own #GP (reflected, as Xen does). ``Paravirtual`` runs only paravirtual images,
several at once like every other monitor (``Paravirtual(img_a, img_b, scheduler=...)``).

What is simplified, documented rather than hidden: hypercall arguments that Xen takes as machine
frame numbers (mmu_update's entry pointer) are guest-physical here, since the kit's kernel
identity-maps its memory; the trap table has the IDT's own format; ``mmu_update`` takes the page
to invalidate afterwards as its third argument (Xen's ``update_va_mapping`` flag); and the GDT
is shadowed as under trap-and-emulate (descriptors of DPL 0 run at DPL 1).
"""

from __future__ import annotations

import struct
from collections import Counter

from vmkit.errors import VmkitError
from vmkit.isa.faults import Fault
from vmkit.machine.cpu import MASK32, TableReg
from vmkit.machine.devices import IRQ_BASE, PORT_TIMER
from vmkit.machine.mmu import PTE_A, PTE_D, PTE_P, PTE_PS, PTE_W
from vmkit.trace import Hypercall
from vmkit.vmm.deprivileged.monitor import Deprivileged
from vmkit.vmm.deprivileged.vcpu import TEVM
from vmkit.vmm.layout import H_IDT, H_TSS, RESERVED_ENTRY, V_WINPT
from vmkit.vmm.sched import machine_time
from vmkit.vmm.splitdriver import pv_backend
from vmkit.vmm.world import VMStop as _VMStop

__all__ = ["Paravirtual", "PVVM", "HYPERCALLS", "HYPERCALL_VECTOR", "EPERM", "EINVAL", "EFAULT",
           "ENOSYS"]

HYPERCALL_VECTOR = 0x82
#: hypercall number -> name (the numbers are in vmkit/guests/pvops_pv.s)
HYPERCALLS = {0: "set_trap_table", 1: "mmu_update", 2: "set_gdt", 3: "stack_switch",
              4: "mmuext_op", 5: "console_io", 6: "sched_op", 7: "set_timer_op",
              8: "event_channel_op", 9: "vcpu_op"}
EPERM, EFAULT, EINVAL, ENOSYS = 1, 14, 22, 38     # Linux/Xen errno values
MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L2_TABLE, MMUEXT_NEW_BASEPTR, MMUEXT_INVLPG = 0, 1, 2, 3
CONSOLEIO_WRITE, CONSOLEIO_READ = 0, 1
SCHEDOP_YIELD, SCHEDOP_BLOCK, SCHEDOP_SHUTDOWN = 0, 1, 2
EVTCHNOP_BIND_VIRQ, EVTCHNOP_SEND = 0, 1
VCPUOP_REGISTER_VCPU_INFO = 0
VI_PENDING, VI_MASK, VI_CR2, VI_MACHINE_BASE = 0, 1, 8, 12
MAX_BATCH = 1024
MAX_CONSOLE = 1 << 16
IF = 0x200

_Q = struct.Struct("<Q")
_I = struct.Struct("<I")


class _Refused(Exception):
    """A hypercall the hypervisor refuses: ``code`` (positive errno), ``reason`` (counted)."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class PVVM(TEVM):
    """One paravirtual guest: its memory slice, virtual CPU, devices, and what it registered
    with the hypervisor (``vcpu_info``, the kernel stack, the fast trap), plus the hypervisor's
    page-table bookkeeping: ``l1``/``l2`` (machine frames validated as page tables and
    directories) and ``writable`` (machine frame -> writable mappings in validated tables)."""

    #: what the guest registered and the hypervisor's page-table bookkeeping, saved and restored
    #: with trap-and-emulate's per-VM state
    vm_state = ("vcpu_info", "kernel_ss", "kernel_esp", "fast_trap", "l1", "l2", "writable")

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.vcpu_info: int | None = None     # guest-physical address
        self.kernel_ss = 0
        self.kernel_esp = 0
        self.fast_trap: int | None = None     # the real IDT's gate 0x80 for this VM
        self.l1: set[int] = set()
        self.l2: set[int] = set()
        self.writable: Counter = Counter()
        self.bootstrap: dict[int, int] = {}   # guest frame -> host address of its boot PTE
        # the split driver's backend, on event channel port 1 (vmkit.vmm.splitdriver)
        self.io_backend = pv_backend

    # ---- guest memory through the real page tables (which are the guest's) ------------------
    def _mwalk(self, lin: int) -> int | None:
        """Machine address of ``lin`` in this VM's current address space, no side effects."""
        cr3 = self.real_cpu.cr3
        mem = self.machine.mem
        lin &= MASK32
        pde = _I.unpack_from(mem, (cr3 & 0xFFFFF000) | ((lin >> 20) & 0xFFC))[0]
        if not pde & PTE_P:
            return None
        a = (pde & 0xFFFFF000) | ((lin >> 10) & 0xFFC)
        if a + 4 > len(mem):
            return None
        pte = _I.unpack_from(mem, a)[0]
        if not pte & PTE_P:
            return None
        return (pte & 0xFFFFF000) | (lin & 0xFFF)

    def guest_physical(self, machine: int) -> int | None:
        g = machine - self.slice_base
        return g if 0 <= g < self.memory_size else None

    def walk(self, lin: int, write: bool = False, user: bool = False,
             touch: bool = True) -> tuple[int, int, bool]:
        m = self.machine
        if touch and self.current:
            pa = m.translate(lin & MASK32, write, user)
        else:
            pa = self._mwalk(lin)
            if pa is None:
                raise Fault(14, (2 if write else 0) | (4 if user else 0), lin & MASK32,
                            "page not present (guest tables)")
        g = self.guest_physical(pa)
        if g is None:
            raise _VMStop("crash", f"guest address {lin:#010x} maps machine address "
                          f"{pa:#010x}, outside the VM's memory")
        return g, PTE_W, True

    def translate(self, lin: int, write: bool = False, user: bool = False) -> int:
        return self.walk(lin, write, user)[0]

    def flush_tlb(self, vpn: int | None = None) -> None:
        pass                                  # the real TLB is the only one

    def read(self, lin: int, n: int, user: bool = False) -> int:
        if self.current:
            return self.machine.lin_read(lin, n, user)
        data = self.peek(lin, n)
        if data is None:
            raise Fault(14, 4 if user else 0, lin & MASK32, "page not present (guest tables)")
        return int.from_bytes(data, "little")

    def write(self, lin: int, n: int, v: int, user: bool = False) -> None:
        if not self.current:
            raise VmkitError("cannot write the memory of a VM that is not running")
        self.machine.lin_write(lin, n, v, user)

    def peek(self, lin: int, n: int) -> bytes | None:
        out, k = bytearray(), 0
        mem = self.machine.mem
        while k < n:
            a = (lin + k) & MASK32
            take = min(n - k, 0x1000 - (a & 0xFFF))
            pa = self._mwalk(a)
            if pa is None or self.guest_physical(pa) is None:
                return None
            out += mem[pa:pa + take]
            k += take
        return bytes(out)


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
    def _make_vm(self, index: int, image, machine) -> PVVM:
        vm = PVVM(index, image, machine, self, self._slice_bases[index], (1 << 20) * (1 + index))
        self._boot_vm(vm)
        return vm

    def _build_vmm_area(self) -> None:
        super()._build_vmm_area()
        self._vmm_gate = _Q.unpack_from(self._host.mem, H_IDT + 8 * 0x80)[0]

    def _boot_vm(self, vm: PVVM) -> None:
        """As under trap-and-emulate, plus the start-of-day address space Xen's domain builder
        gives a guest: guest-physical memory mapped at the same virtual addresses, supervisor
        and writable, until the kernel loads page tables of its own."""
        super()._boot_vm(vm)
        mem = self._host.mem
        for pdi in range((vm.memory_size + (4 << 20) - 1) >> 22):
            pt = vm.pool.pop()
            mem[pt:pt + 0x1000] = bytes(0x1000)
            _I.pack_into(mem, vm.pd + 4 * pdi, pt | PTE_P | PTE_W | PTE_A)
            for k in range(1024):
                g = (pdi << 22) | (k << 12)
                if g >= vm.memory_size:
                    break
                if g == 0:
                    continue                       # the null page stays unmapped
                _I.pack_into(mem, pt + 4 * k, (vm.slice_base + g) | PTE_P | PTE_W | PTE_A
                             | PTE_D)
                vm.bootstrap[g] = pt + 4 * k
        vm.vcpu.cr0 = 0x80010011                   # paging is on from the start
        vm.vcpu.IF = 1                             # the event mask stands for IF

    def _setup(self) -> None:
        super()._setup()
        self._install(self.vms[self.current])

    def _install(self, vm: PVVM) -> None:
        """The running VM's fast trap gate in the real IDT and kernel stack in the real TSS."""
        mem = self._host.mem
        _Q.pack_into(mem, H_IDT + 8 * 0x80, vm.fast_trap if vm.fast_trap is not None
                     else self._vmm_gate)
        _I.pack_into(mem, H_TSS + 12, vm.kernel_esp)
        _I.pack_into(mem, H_TSS + 16, vm.kernel_ss | 1 if vm.kernel_ss else 0)
        self._host.flush_tlb()

    def _world_switch(self, to: int) -> None:
        super()._world_switch(to)
        self._install(self.vms[to])

    # ---- entries into the hypervisor ---------------------------------------------------------
    def _on_exception(self, vector: int, fault, source: str, next_eip) -> bool:
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
                m.exit_request = True
            self._hypercall(vm, next_eip)
            return True
        return super()._on_exception(vector, fault, source, next_eip)

    def _page_fault(self, vm: PVVM, fault: Fault) -> None:
        """Every page fault is the guest's (its tables are the real ones): CR2 goes into
        vcpu_info, the fault is bounced through the trap table."""
        lin = fault.address & MASK32
        vm.vcpu.cr2 = lin
        if vm.vcpu_info is not None:
            vm.phys_write(vm.vcpu_info + VI_CR2, 4, lin)
        self._reflect_exception(vm, fault)

    def _inner_stack(self, vm: PVVM, new: int, ext: int) -> tuple[int, int]:
        if not vm.kernel_ss:
            raise Fault(10, ext, detail="no kernel stack registered (stack_switch hypercall)")
        return vm.kernel_esp, vm.kernel_ss & ~3

    # ---- events ---------------------------------------------------------------------------------
    def _masked(self, vm: PVVM) -> bool:
        return bool(vm.phys_read(vm.vcpu_info + VI_MASK, 1))

    def _deliverable(self, vm: PVVM) -> int | None:
        """An event to deliver now: one pending, events unmasked, the VM in user mode."""
        if vm.vcpu_info is None:
            return None
        line = vm.devices.pending_vector()
        if line is None:
            return None
        if self._masked(vm) or vm.real_cpu.cpl != 3:
            vm.phys_write(vm.vcpu_info + VI_PENDING, 1, 1)
            return None
        return line

    def _inject_irq(self, vm: PVVM, line: int) -> None:
        """The upcall: clear the event, mask events, bounce vector 32 + line into the kernel."""
        vm.devices.acknowledge(line)
        vm.devices.eoi()                          # an event channel needs no EOI
        vm.phys_write(vm.vcpu_info + VI_PENDING, 1, 0)
        vm.phys_write(vm.vcpu_info + VI_MASK, 1, 1)
        vm.vcpu.halted = False
        if self.machine_timer and line == 0:
            vm.tick_steps.append(vm.steps)
        self.upcalls += 1
        try:
            self._reflect(vm, IRQ_BASE + line, None, self._host.cpu.eip, "irq")
        except Fault as f:
            self._reflect_exception(vm, f)

    def _on_ring(self, old: int, new: int, cause: str) -> None:
        vm = self.vms[self.current]
        vm.vcpu.cpl = 0 if new == 1 else new
        if new == 3 and self._deliverable(vm) is not None:
            self._host.exit_request = True

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
                r = getattr(self, "_hc_" + name)(vm, a, b, c)
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
        m.exit_request = True               # devices, events or the VM's state may have changed

    def _hc_set_trap_table(self, vm: PVVM, table: int, entries: int, _c: int) -> int:
        if not 1 <= entries <= 256:
            raise _Refused(EINVAL, "bad trap table size")
        vm.vcpu.idtr = TableReg(table, entries * 8 - 1)
        vm.fast_trap = None
        if entries > 0x80:
            gate = vm.read(table + 8 * 0x80, 8)
            access = (gate >> 40) & 0xFF
            # Xen installs the direct trap only for a present DPL-3 trap gate (an interrupt
            # gate would need the hypervisor to mask events on the way in)
            if access == 0xEF:
                vm.fast_trap = gate
        if vm.current:
            self._install(vm)
        return 0

    def _hc_set_gdt(self, vm: PVVM, base: int, entries: int, _c: int) -> int:
        if not 1 <= entries <= RESERVED_ENTRY:
            raise _Refused(EINVAL, "bad GDT size")
        vm.vcpu.gdtr = TableReg(base, entries * 8 - 1)
        self.shadow_gdt(vm)
        return 0

    def _hc_stack_switch(self, vm: PVVM, ss: int, esp: int, _c: int) -> int:
        if ss & 3 != 1 or not ss & 0xFFFC:
            raise _Refused(EINVAL, "kernel stack selector must have RPL 1")
        d = vm.descriptor(ss & ~3)
        if d.system or d.code or not d.writable:
            raise _Refused(EINVAL, "kernel stack selector is not a writable data segment")
        vm.kernel_ss, vm.kernel_esp = ss, esp & MASK32
        if vm.current:
            mem = self._host.mem
            _I.pack_into(mem, H_TSS + 12, vm.kernel_esp)
            _I.pack_into(mem, H_TSS + 16, ss)
        return 0

    def _hc_vcpu_op(self, vm: PVVM, cmd: int, addr: int, _c: int) -> int:
        if cmd != VCPUOP_REGISTER_VCPU_INFO:
            raise _Refused(EINVAL, "unknown vcpu_op")
        if addr & 3 or addr + 64 > vm.memory_size:
            raise _Refused(EINVAL, "vcpu_info outside the VM's memory")
        vm.vcpu_info = addr
        vm.phys_write(addr + VI_PENDING, 1, 0)
        vm.phys_write(addr + VI_MASK, 1, 1)           # events masked until the kernel is ready
        vm.phys_write(addr + VI_CR2, 4, 0)
        vm.phys_write(addr + VI_MACHINE_BASE, 4, vm.slice_base)
        return 0

    def _hc_set_timer_op(self, vm: PVVM, period: int, _b: int, _c: int) -> int:
        vm.devices.write(PORT_TIMER, 4, period, vm.clock)
        return 0

    def _hc_event_channel_op(self, vm: PVVM, cmd: int, port: int, arg: int):
        if cmd == EVTCHNOP_BIND_VIRQ:
            if port != 0:
                raise _Refused(EINVAL, "unknown virtual IRQ")
            vm.devices.imr &= ~1                       # the timer's events reach the VM
            return 0
        if cmd == EVTCHNOP_SEND:
            backend = getattr(vm, "io_backend", None)
            if port != 1 or backend is None:
                raise _Refused(EINVAL, "no backend on that event channel")
            return backend(self, vm, arg)
        raise _Refused(EINVAL, "unknown event_channel_op")

    def _hc_console_io(self, vm: PVVM, cmd: int, count: int, buf: int):
        if not 0 <= count <= MAX_CONSOLE:
            raise _Refused(EINVAL, "console_io count too large")
        if cmd == CONSOLEIO_WRITE:
            if count:
                vm.devices.console.extend(vm.read(buf, count).to_bytes(count, "little"))
            return count, count
        if cmd == CONSOLEIO_READ:
            dv = vm.devices
            n = 0
            while n < count and dv.input_waiting:
                vm.write(buf + n, 1, dv.read(0x60, 1, vm.clock))
                n += 1
            return n, count
        raise _Refused(EINVAL, "unknown console_io command")

    def _hc_sched_op(self, vm: PVVM, cmd: int, arg: int, _c: int) -> int:
        if cmd == SCHEDOP_SHUTDOWN:
            vm.devices.poweroff_code = arg
            return 0
        if cmd == SCHEDOP_YIELD:
            if len(self.vms) > 1:           # the rest of the slice goes to the next VM
                self._slice_end = self._slice_clock() if self.scheduler is None \
                    else machine_time(self)
            return 0
        if cmd == SCHEDOP_BLOCK:
            vm.vcpu.halted = True
            return 0
        raise _Refused(EINVAL, "unknown sched_op")

    # ---- page tables: validation (Xen's page types, simplified) --------------------------------
    def _own(self, vm: PVVM, machine: int) -> bool:
        return vm.slice_base <= machine < vm.slice_base + vm.memory_size

    def _check_l1e(self, vm: PVVM, val: int) -> None:
        if not val & PTE_P:
            return
        frame = val & 0xFFFFF000
        if not self._own(vm, frame):
            raise _Refused(EPERM, "maps memory that is not the VM's")
        if val & PTE_W and (frame in vm.l1 or frame in vm.l2):
            raise _Refused(EPERM, "would map a page table writable")

    def _drop_bootstrap_write(self, vm: PVVM, frame: int) -> None:
        """A new page table is read-only in the start-of-day mappings too."""
        a = vm.bootstrap.get(frame - vm.slice_base)
        if a is not None:
            mem = self._host.mem
            _I.pack_into(mem, a, _I.unpack_from(mem, a)[0] & ~PTE_W)
            if vm.current:
                self._host.flush_tlb((frame - vm.slice_base) >> 12)

    def _new_table(self, vm: PVVM, frame: int, pinned: set, other: set, what: str,
                   other_what: str) -> bool:
        """The checks before ``frame`` becomes a table of kind ``what``: the VM's own, page
        aligned, not already the other kind, mapped writable nowhere. False if it already is
        one (nothing to do)."""
        if frame & 0xFFF or not self._own(vm, frame):
            raise _Refused(EPERM, f"{what} outside the VM's memory")
        if frame in pinned:
            return False
        if frame in other:
            raise _Refused(EINVAL, f"a {other_what} cannot be a {what}")
        if vm.writable[frame]:
            raise _Refused(EPERM, f"{what} is mapped writable")
        return True

    def _check_l2e(self, vm: PVVM, e: int) -> None:
        """A present page directory entry must lead to a (validated) page table."""
        if e & PTE_P:
            if e & PTE_PS:
                raise _Refused(EINVAL, "large pages are not supported")
            self._pin_l1(vm, e & 0xFFFFF000)

    def _pin_l1(self, vm: PVVM, frame: int) -> None:
        if not self._new_table(vm, frame, vm.l1, vm.l2, "page table", "page directory"):
            return
        mem = self._host.mem
        entries = struct.unpack_from("<1024I", mem, frame)
        for e in entries:
            self._check_l1e(vm, e)
            if e & PTE_P and e & 0xFFFFF000 == frame and e & PTE_W:
                raise _Refused(EPERM, "would map a page table writable")
        vm.l1.add(frame)
        for e in entries:
            if e & PTE_P and e & PTE_W:
                vm.writable[e & 0xFFFFF000] += 1
        self._drop_bootstrap_write(vm, frame)

    def _pin_l2(self, vm: PVVM, frame: int) -> None:
        if not self._new_table(vm, frame, vm.l2, vm.l1, "page directory", "page table"):
            return
        mem = self._host.mem
        for e in struct.unpack_from("<1023I", mem, frame):
            self._check_l2e(vm, e)
        vm.l2.add(frame)
        # the hypervisor's own slot: the window with the real GDT, IDT and TSS
        _I.pack_into(mem, frame + 4 * 1023, (vm.vmm_base + V_WINPT) | PTE_P | PTE_W | PTE_A)
        self._drop_bootstrap_write(vm, frame)

    def _update(self, vm: PVVM, ptr: int, val: int) -> None:
        """One validated page table update: ``ptr`` the guest-physical address of the entry."""
        val &= MASK32
        if ptr & 3 or not 0 <= ptr < vm.memory_size:
            raise _Refused(EINVAL, "entry address outside the VM's memory")
        a = vm.slice_base + ptr
        frame = a & 0xFFFFF000
        mem = self._host.mem
        old = _I.unpack_from(mem, a)[0]
        if frame in vm.l1:
            self._check_l1e(vm, val)
            if old & PTE_P and old & PTE_W:
                vm.writable[old & 0xFFFFF000] -= 1
            if val & PTE_P and val & PTE_W:
                vm.writable[val & 0xFFFFF000] += 1
        elif frame in vm.l2:
            if (a & 0xFFF) >> 2 == 1023:
                raise _Refused(EPERM, "the hypervisor's page directory slot")
            self._check_l2e(vm, val)
        else:
            raise _Refused(EINVAL, "not a page table")
        self._host.phys_write(a, val.to_bytes(4, "little"))
        self.pt_updates += 1

    def _hc_mmu_update(self, vm: PVVM, reqs: int, count: int, va: int):
        if not 0 <= count <= MAX_BATCH:
            raise _Refused(EINVAL, "batch too large")
        self.batches[count] += 1
        done = 0
        try:
            for k in range(count):
                ptr = vm.read(reqs + 8 * k, 4)
                val = vm.read(reqs + 8 * k + 4, 4)
                self._update(vm, ptr, val)
                done += 1
        except _Refused as ref:
            ref.batch = count
            self._host.cpu.regs[2] = done           # edx: updates done before the refusal
            raise
        self._host.cpu.regs[2] = done
        if va != MASK32:
            self._host.flush_tlb((va & MASK32) >> 12)
        return 0, count

    def _hc_mmuext_op(self, vm: PVVM, cmd: int, arg: int, _c: int) -> int:
        m = self._host
        if cmd == MMUEXT_PIN_L1_TABLE:
            self._pin_l1(vm, arg)
        elif cmd == MMUEXT_PIN_L2_TABLE:
            self._pin_l2(vm, arg)
        elif cmd == MMUEXT_NEW_BASEPTR:
            self._pin_l2(vm, arg)
            m.cpu.cr3 = arg
            vm.vcpu.cr3 = arg - vm.slice_base
            m.flush_tlb()
        elif cmd == MMUEXT_INVLPG:
            m.flush_tlb((arg & MASK32) >> 12)
        else:
            raise _Refused(EINVAL, "unknown mmuext_op")
        return 0

    # ---- statistics, snapshots ------------------------------------------------------------------
    @property
    def stats(self) -> dict:
        s = super().stats
        s.update({
            "hypercalls": Counter(self.hypercalls),
            "mmu_update_batches": Counter(self.batches),
            "pt_updates": self.pt_updates,
            "hypercall_refusals": Counter(self.refusals),
            "upcalls": self.upcalls,
            "fast_syscalls": self.fast_syscalls,
            "pinned_tables": sum(len(vm.l1) + len(vm.l2) for vm in self.vms),
            "hidden_page_faults": 0,
            "shadow_updates": 0,
            # page-table operations the hypervisor sees: mmu_update and mmuext_op calls
            "pt_write_traps": self.hypercalls["mmu_update"] + self.hypercalls["mmuext_op"],
        })
        s["interrupts"] = sum(self.reflected.values()) + self.fast_syscalls
        return s

    def event_counts(self) -> Counter:
        """As trap-and-emulate's, plus the hardware's delivery of every fast system call (as
        natively: an interrupt through the IDT); no shadow page table updates (installing the
        registered GDT is part of the set_gdt hypercall)."""
        counts = super().event_counts()
        counts["interrupt"] += self.fast_syscalls
        counts.pop("shadow_update", None)
        return counts
