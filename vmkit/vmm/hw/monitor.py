"""The hardware-assisted monitor (see the package text)."""

from __future__ import annotations

from collections import Counter

from vmkit.errors import VmkitError
from vmkit.isa import semantics as sem
from vmkit.isa.decode import DECODER
from vmkit.isa.faults import HAS_ERROR_CODE, Fault, Resched
from vmkit.machine import rules
from vmkit.machine.cpu import MASK32
from vmkit.machine.devices import IRQ_BASE, Devices
from vmkit.machine.machine import BOOT_GDT, BOOT_GDT_BYTES, Machine, RunResult
from vmkit.machine.mmu import CR0_PG, CR0_WP, CR4_PSE
from vmkit.machine.system import TripleFault
from vmkit.trace import Emulation, InstructionRetired, VmEntry, VmExit
from vmkit.vmm import passthrough
from vmkit.vmm.hw.ept import EPT
from vmkit.vmm.hw.exits import _DEFAULT_HANDLERS
from vmkit.vmm.hw.nonroot import _STUBS, _NonRootMachine
from vmkit.vmm.hw.vcpu import HWVM
from vmkit.vmm.hw.vmcs import (_SOURCE_TYPE, CR0_ET, CR0_NE, CR0_PE, CR4_VMXE, DEVICE_PORTS,
                               EXCEPTION_NMI, EXIT_REASONS, H_ONES, IF, INSTRUCTION_EXITS,
                               INTR_ERROR_VALID, INTR_EXTERNAL, INTR_HW_EXCEPTION, INTR_NMI,
                               INTR_SW_EXCEPTION, INTR_SW_INTERRUPT, INTR_VALID, PREEMPTION_TIMER,
                               TRIPLE_FAULT, VMCS, MiB, NonRootExit, VmcsControls, _decode_info,
                               _DuringDelivery, interruption_info)
from vmkit.vmm.sched import _init_scheduling
from vmkit.vmm.shadow import ShadowPaging
from vmkit.vmm.vm import CannotEmulate
from vmkit.vmm.world import DEFAULT_SLICE, HostedMonitor
from vmkit.vmm.world import VMStop as _VMStop


class HardwareAssisted(ShadowPaging, HostedMonitor):
    """Hardware-assisted virtualization, VT-x style (see the module text).

    ``HardwareAssisted(img, ..., ept=True, lazy_ept=False, controls=None, slice=DEFAULT_SLICE,
    costs=CostModel)``: ``ept`` chooses nested paging or shadow paging; ``controls`` (a dict of
    :class:`VmcsControls` fields or a VmcsControls) turns VM-execution controls on and off
    (``set_controls`` changes them between runs); several images run in several VMs.

    ``handlers`` is the extension point: exit-reason name -> ``handler(vm, vmcs)``, copied per
    monitor. For an instruction exit (CPUID, HLT, INVLPG, RDTSC, CR_ACCESS, IO_INSTRUCTION) the
    VMM moves EIP past the instruction first and counts it afterwards; a handler may raise a
    ``Fault`` (injected into the guest, EIP back on the instruction) or ``CannotEmulate`` (the
    VM ends)::

        hw = HardwareAssisted(guests.build("hello"))
        def my_cpuid(vm, vmcs):
            vm.vcpu.eax = vm.vcpu.ebx = vm.vcpu.ecx = vm.vcpu.edx = 0
        hw.handlers["CPUID"] = my_cpuid

    ``stats`` adds ``vm_exits`` (Counter by exit-reason name), ``injections``,
    ``walk_references``, ``hidden_page_faults``, ``ept_fills``, ``emulated`` and
    ``world_switches``; ``traps`` is the number of VM exits. ``scheduler=``, ``weights=``,
    ``quantum=`` and ``machine_timer=`` as for ``TrapAndEmulate`` (:mod:`vmkit.vmm.sched`).
    ``assign={0: ["disk"]}`` assigns a device directly to one VM: the I/O bitmap lets its
    accesses through with no exit; other VMs' accesses exit and are refused (``refused_io``).
    See :mod:`vmkit.vmm.iovirt` and docs/io-virtualization.md.
    """

    name = "hw"
    title = "hardware assist (VT-x: guest kernel in non-root ring 0, EPT)"
    monitor_state = ("vm_exits", "emulated", "delivered", "injections", "ept_fills",
                     "_controls", "vmx_mode")
    #: the default exit handlers (exit-reason name -> handler); every instance works on a copy
    handlers: dict = dict(_DEFAULT_HANDLERS)

    def __init__(self, *images, costs=None, trace=None, ept: bool = True,
                 lazy_ept: bool = False, controls=None, slice: int = DEFAULT_SLICE,
                 scheduler=None, weights=None, quantum=None, machine_timer: bool = False,
                 assign=None):
        # ---- direct assignment (vmkit.vmm.passthrough): assign={vm index: ["disk"]} -> {port: vm}
        self.assigned = passthrough.resolve_assignment(assign, len(images), self.name)
        # ---- end direct assignment
        if not isinstance(ept, bool):
            raise VmkitError(f"ept must be True (nested paging) or False (shadow paging), got "
                             f"{ept!r}")
        if not isinstance(lazy_ept, bool):
            raise VmkitError(f"lazy_ept must be True or False, got {lazy_ept!r}")
        if lazy_ept and not ept:
            raise VmkitError("lazy_ept needs ept=True (there is no EPT with shadow paging)")
        if not isinstance(slice, int) or isinstance(slice, bool) or slice < 1:
            raise VmkitError(f"slice must be a positive number of host instructions, got "
                             f"{slice!r}")
        self.ept = ept
        self.lazy_ept = lazy_ept
        self.slice = slice
        _init_scheduling(self, images, scheduler, weights, quantum, machine_timer)
        self._controls = VmcsControls.make(controls, ept)
        self.handlers = dict(type(self).handlers)
        self.current = 0
        self._host: _NonRootMachine | None = None
        self.vm_exits: Counter = Counter()
        self.emulated: Counter = Counter()
        self.delivered: Counter = Counter()
        self.injections = 0
        self.hidden_page_faults = 0
        self.ept_fills = 0
        self.world_switches = 0
        # shadow paging: exits through which the VMM learns of guest page-table changes, by
        # kind ("invlpg", "mov cr3"): stats["pt_write_traps"] (docs/memory-virtualization.md)
        self.pt_traps: Counter = Counter()
        self.vmx_mode = "root"
        super().__init__(*images, costs=costs, trace=trace)
        passthrough.install_hw(self)   # the disk's ports: direct path, and refusal for non-owners

    # ---- controls ----------------------------------------------------------------------------
    @property
    def controls(self) -> VmcsControls:
        """The VM-execution controls of every VMCS (resolved: no ``None`` left)."""
        return self._controls

    def set_controls(self, **changes) -> VmcsControls:
        """Change VM-execution controls (field=value) in every VMCS; the CPU's compiled
        instructions are dropped, so the next ones are intercepted by the new rules."""
        c = VmcsControls.make({**self._controls.as_dict(), **changes}, self.ept)
        self._controls = c
        for vm in self.vms:
            vm.vmcs.controls = c
        self._host._flush_icache()
        return c

    # ---- construction ------------------------------------------------------------------------
    def _make_machine(self, index: int, image) -> Machine:
        """One host machine for every VM: the VMM area, 1 MiB per VM, then the slices."""
        if self._host is None:
            self._host = _NonRootMachine(self._plan_slices(), self, self.trace)
            mem = self._host.mem
            mem[0:MiB] = bytes(MiB)
            mem[H_ONES:H_ONES + 0x1000] = b"\xFF" * 0x1000
        return self._host

    def _make_vm(self, index: int, image, machine: Machine) -> HWVM:
        vm = HWVM(index, image, machine, self, self._slice_bases[index], (1 + index) * MiB)
        self._boot_vm(vm)
        return vm

    def _boot_vm(self, vm: HWVM) -> None:
        """The VM's slice as the machine powers on (0xAA everywhere, the boot GDT, the image),
        its EPT or shadow page directory, and its guest-state area: the power-on CPU."""
        m = self._host
        self._power_on_slice(vm)
        cpu = vm.saved                           # the guest-state area
        cpu.regs[:] = [0] * 8
        cpu.regs[4] = vm.memory_size            # as Machine: a stack at the top of memory
        cpu.eip = vm.image.entry
        cpu.eflags = 0x2
        cpu.gdtr.base, cpu.gdtr.limit = BOOT_GDT, len(BOOT_GDT_BYTES) - 1
        cpu.idtr.base, cpu.idtr.limit = 0, 0
        cpu.cpl = 0
        vm.vmcs.cr0_read_shadow, vm.vmcs.cr4_read_shadow = 0x11, 0
        if self.ept:
            root = vm.vmm_base
            vm.ept = EPT(m, root, [vm.vmm_base + a for a in range(0x1000, MiB, 0x1000)])
            vm.vmcs.ept_pointer = root
            if not self.lazy_ept:
                for g in range(0, vm.memory_size, 0x1000):
                    vm.ept.map(g, vm.slice_base + g)
            cpu.cr0, cpu.cr3 = 0x11 | CR0_NE, 0       # unrestricted guest: paging off is fine
        else:
            cpu.cr0, cpu.cr3 = 0x11 | CR0_NE | CR0_PG | CR0_WP, vm.pd
        cpu.cr4 = CR4_VMXE

    def _setup(self) -> None:
        m = self._host
        m.exception_hook = self._on_exception
        m.intercept = self._intercept
        m.dev = Devices(timer_period=1 << 62)      # the VMM's one-shot timer, armed per entry
        # the ports of the VM's devices, for the IN/OUT that do not exit (direct assignment):
        # they reach the running VM's own device, at its guest time
        for port in DEVICE_PORTS:
            m.port_handlers[port] = self._direct_port(port)
        vm = self.vms[0]
        m.cpu.set_state(vm.saved.state())
        m.nested = vm.ept
        m.clock = 0
        m.vm_index = 0
        m.flush_tlb()
        m._flush_icache()
        m._mode_changed()
        self._slice_end = self.slice

    def _direct_port(self, port: int):
        m = self._host

        def read(size: int) -> int:
            return self.vms[self.current].devices.read(port, size, m.clock)

        def write(size: int, value: int) -> None:
            self.vms[self.current].devices.write(port, size, value, m.clock)
        return read, write

    # ---- the public surface --------------------------------------------------------------------
    @property
    def vmcs(self) -> VMCS:
        """The VMCS of the current VM."""
        return self.vms[self.current].vmcs

    # ---- the run loop's policy (vmkit.vmm.world) -----------------------------------------------
    def _root_work(self, vm: HWVM) -> bool:
        if not vm.exit_pending:
            return False
        self._guarded(vm, self._handle_exit, vm)     # root mode: handle the exit
        return True

    def _deliver_pending(self, vm: HWVM) -> bool:
        self._virtual_interrupts(vm)
        if not vm.vmcs.injection_pending:
            return False
        self._guarded(vm, self._enter_with_event, vm)   # VM entry with event injection
        return True

    def _halted(self, vm: HWVM) -> bool:
        return self._host.cpu.halted   # the HLT activity state

    def _enter(self, vm: HWVM, deadline: int) -> None:
        """VM entry: the guest runs in non-root mode until an exit."""
        m, vmcs = self._host, vm.vmcs
        self._arm(deadline)
        m.window_exiting = vmcs.interrupt_window_exiting
        m.pf_exits = bool(vmcs.controls.exception_bitmap & (1 << 14))
        m.exit_request = False
        if vm.entry_due:
            vm.entry_due = False
            self.trace.add(VmEntry(m.clock, injected=None, vm=vm.index))
        self.vmx_mode = "non-root"

    def _guest_stopped(self, vm: HWVM, r: RunResult) -> None:
        m = self._host
        if r.reason == "crash":
            m.stopped = None
            if r.detail.startswith("triple fault"):
                # VT-x: a triple fault in non-root mode is a VM exit (reason 2), not a reset
                self._record(NonRootExit(TRIPLE_FAULT))
                vm.exit_pending = False
                self.vmx_mode = "root"
            self._end(vm, "crash", r.detail, event=False)
        elif r.reason == "halt":                   # HLT exiting off, IF = 0: natively the end
            m.stopped = None
            self._end(vm, "halt", r.detail, event=False)

    def _count_preemption(self, cur: HWVM) -> None:
        """The VMX-preemption timer ended ``cur``'s slice: a VM exit."""
        if not cur.exit_pending:
            self._record(NonRootExit(PREEMPTION_TIMER))
            cur.exit_pending = False
            cur.entry_due = True

    def _switched_out(self, vm: HWVM) -> None:
        m = self._host   # blocking by STI goes with the VM (the VMCS's interruptibility state)
        vm.inhibit_left = max(0, m._irq_inhibit_until - m.steps)

    def _switched_in(self, vm: HWVM) -> None:
        """The VM's guest state is loaded from its VMCS, with its EPT (or shadow page
        directory); the compiled code goes too (no VPID)."""
        m = self._host
        m._irq_inhibit_until = m.steps + vm.inhibit_left if vm.inhibit_left else -1
        m.nested = vm.ept
        m._flush_icache()

    def _virtual_interrupts(self, vm: HWVM) -> None:
        """The VMM's virtual interrupt controller: inject its next line if the guest can take it
        (IF = 1, no blocking by STI), else ask for an interrupt-window exit."""
        vmcs = vm.vmcs
        if vmcs.injection_pending:
            return
        dv = vm.devices
        line = dv.pending_vector()
        if line is None:
            vmcs.interrupt_window_exiting = False
            return
        m = self._host
        if m.cpu.ef & IF and m.steps >= m._irq_inhibit_until:
            dv.acknowledge(line)
            if self.machine_timer and line == 0:
                vm.tick_steps.append(vm.steps)
            vmcs.inject(IRQ_BASE + line, INTR_EXTERNAL)
            vmcs.interrupt_window_exiting = False
        else:
            vmcs.interrupt_window_exiting = True

    def _enter_with_event(self, vm: HWVM) -> None:
        """VM entry with event injection: the CPU, in non-root mode, delivers the event through
        the guest's IDT (SDM Vol. 3C, 27.6). A fault that exits during the delivery is recorded
        with the event as IDT-vectoring information (re-injected after the exit); any other
        fault is delivered as the hardware would."""
        m = self._host
        vmcs = vm.vmcs
        info, code = vmcs.entry_interruption_info, vmcs.entry_exception_error_code
        length = vmcs.entry_instruction_length
        vmcs.entry_interruption_info = 0
        vector, type_ = _decode_info(info)
        self.injections += 1
        vm.entry_due = False
        self.vmx_mode = "non-root"
        self.trace.add(VmEntry(m.clock, injected=vector, vm=vm.index))
        m.exit_request = False
        try:
            if type_ == INTR_HW_EXCEPTION:
                m.deliver_exception(Fault(vector, code if info & INTR_ERROR_VALID else None))
            elif type_ == INTR_EXTERNAL:
                try:
                    m.deliver(vector, None, m.cpu.eip, "irq")
                except Fault as f:
                    m._exception(f)
            else:                                  # software interrupt or exception
                eip = m.cpu.eip
                source = {INTR_SW_INTERRUPT: "int"}.get(type_, "int3" if vector == 3 else "into")
                try:
                    m.deliver(vector, None, (eip + length) & MASK32, source)
                except Fault as f:
                    m._exception(f)
                else:
                    self._retired(vm, source, eip, m.text_at(eip) or source)
        except _DuringDelivery as d:
            self._record(d.exit)
        except TripleFault as tf:
            self._record(NonRootExit(TRIPLE_FAULT))
            vm.exit_pending = False
            raise _VMStop("crash", f"triple fault: {tf}") from None

    def _guest_if(self, vm: HWVM) -> bool:
        return bool(self._host.cpu.ef & IF)   # non-root mode: the guest's IF is the real one

    # ---- VM exits ----------------------------------------------------------------------------
    def _record(self, x: NonRootExit) -> None:
        """The CPU's side of a VM exit: write the exit information fields of the current VM's
        VMCS, count and trace it, and leave non-root mode (the machine's run returns)."""
        m = self._host
        vm = self.vms[self.current]
        vmcs = vm.vmcs
        vmcs.exit_reason = x.reason
        vmcs.exit_qualification = x.qualification
        vmcs.guest_linear_address = x.linear
        vmcs.guest_physical_address = x.physical
        vmcs.exit_interruption_info = x.interruption
        vmcs.exit_interruption_error_code = x.interruption_error
        vmcs.idt_vectoring_info = x.vectoring
        vmcs.idt_vectoring_error_code = x.vectoring_error
        vmcs.exit_instruction_length = x.length
        vmcs.exit_instruction = x.insn
        vm.exit_pending = True
        vm.entry_due = True
        name = EXIT_REASONS.get(x.reason, str(x.reason))
        self.vm_exits[name] += 1
        self.events["vm_exit"] += 1
        self.trace.add(VmExit(m.clock, reason=x.reason, name=name, qualification=x.qualification,
                              address=m.cpu.eip, vm=vm.index))
        m.exit_request = True
        self.vmx_mode = "root"

    def _on_exception(self, vector: int, fault: Fault | None, source: str, next_eip) -> bool:
        """Machine.exception_hook: exits raised by the CPU, and the exception bitmap. Anything
        that does not exit is delivered by the CPU through the guest's IDT (return False)."""
        if isinstance(fault, NonRootExit):
            self._record(fault)
            return True
        bitmap = self._controls.exception_bitmap
        if source == "exception":
            if bitmap >> vector & 1:
                code = fault.error_code if fault is not None else None
                if vector in HAS_ERROR_CODE and code is None:
                    code = 0
                q = fault.address if vector == 14 and fault.address is not None else 0
                self._record(NonRootExit(EXCEPTION_NMI, q, linear=q if vector == 14 else None,
                                         interruption=interruption_info(vector, INTR_HW_EXCEPTION,
                                                                        code), error_code=code))
                return True
            return False
        if source in ("int3", "into") and bitmap >> vector & 1:
            # raised, not recorded here: the int3 must not retire (it unwinds like a fault and
            # comes back through this hook as a NonRootExit); the VMM injects it
            eip = self._host.cpu.eip
            raise NonRootExit(EXCEPTION_NMI,
                              interruption=interruption_info(vector, INTR_SW_EXCEPTION),
                              length=(next_eip - eip) & MASK32)
        return False   # int n: delivered through the guest's IDT, never an exit

    def _exit_during_delivery(self, f: Fault, vector: int, error_code, source: str):
        """A fault while the CPU delivers an event: the exit it causes (with the event as
        IDT-vectoring information), or None when the hardware handles it as a nested
        exception (double-fault rules)."""
        if isinstance(f, NonRootExit):
            x = f
        elif self._controls.exception_bitmap >> f.vector & 1:
            code = f.error_code
            if f.vector in HAS_ERROR_CODE and code is None:
                code = 0
            q = f.address if f.vector == 14 and f.address is not None else 0
            x = NonRootExit(EXCEPTION_NMI, q, linear=q if f.vector == 14 else None,
                            interruption=interruption_info(f.vector, INTR_HW_EXCEPTION, code),
                            error_code=code)
        else:
            return None
        if not x.vectoring:
            type_ = _SOURCE_TYPE.get(source, INTR_HW_EXCEPTION)
            x.vectoring = interruption_info(vector, type_, error_code)
            x.vectoring_error = error_code
        return x

    def _handle_exit(self, vm: HWVM) -> None:
        """Root mode: run the handler of the exit recorded in the VM's VMCS. An instruction
        exit's handler runs with EIP already past the instruction, which then counts as
        retired; a Fault from the handler is injected with EIP back on the instruction."""
        vmcs = vm.vmcs
        vm.exit_pending = False
        self.vmx_mode = "root"
        reason = vmcs.exit_reason
        handler = self.handlers.get(EXIT_REASONS.get(reason, ""))
        if handler is None:
            raise CannotEmulate(f"no handler for VM exit {reason} ({vmcs.exit_name}) in "
                                f"handlers[{vmcs.exit_name!r}]")
        if reason not in INSTRUCTION_EXITS:
            handler(vm, vmcs)
            return
        cpu = self._host.cpu
        eip = cpu.eip
        insn = vmcs.exit_instruction
        cpu.eip = (eip + vmcs.exit_instruction_length) & MASK32
        try:
            handler(vm, vmcs)
        except Fault as f:
            cpu.eip = eip
            self.inject_fault(vm, f)
            return
        except Exception as ex:                # the VM ends (see _guarded), EIP on the insn
            cpu.eip = eip
            if isinstance(ex, _VMStop):
                text = insn.text if insn is not None else vmcs.exit_name
                raise _VMStop(ex.reason, f"cannot complete {text!r} at {eip:#010x} "
                              f"({vmcs.exit_name} exit): {ex.detail}") from None
            raise
        mnemonic = insn.mnemonic if insn is not None else vmcs.exit_name.lower()
        self._retired(vm, mnemonic, eip, insn.text if insn is not None else mnemonic)

    def _retired(self, vm: HWVM, mnemonic: str, address: int, text: str) -> None:
        """Count an instruction the VMM completed: it retired in guest time (not on the CPU,
        so the cost model counts it as ``emulate``); blocking by STI ends with it."""
        m = self._host
        if self.trace.wants_instructions():
            self.trace.add(InstructionRetired(m.clock, address=address, text=text,
                                              ring=m.cpu.cpl, vm=vm.index))
        m.clock += 1
        vm.steps += 1
        m._irq_inhibit_until = -1
        self.emulated[mnemonic] += 1
        self.events["emulate"] += 1
        self.trace.add(Emulation(m.clock, address=address, text=text, mnemonic=mnemonic,
                                 vm=vm.index))

    def inject_fault(self, vm: HWVM, f: Fault, vectoring: int = 0) -> None:
        """Inject exception ``f`` into the guest at the next entry. When it arose while the CPU
        delivered an exception (``vectoring``), apply the double-fault rules of SDM Vol. 3A,
        Table 6-5 as the hardware would have: #DF, or a triple fault that ends the VM."""
        vector, code = f.vector, f.error_code
        if vector in HAS_ERROR_CODE and code is None:
            code = 0
        if vector == 14 and f.address is not None:
            self._host.cpu.cr2 = f.address & MASK32
        if vectoring & INTR_VALID and (vectoring >> 8) & 7 == INTR_HW_EXCEPTION:
            first = vectoring & 0xFF
            if first == 8:
                raise _VMStop("crash", f"triple fault: {f} while delivering #DF")
            if rules.escalates(first, vector):
                vector, code = 8, 0
        vm.vmcs.inject(vector, INTR_HW_EXCEPTION, code)

    def _reinject(self, vm: HWVM) -> None:
        """After an exit during event delivery, deliver the event again (IDT-vectoring info):
        an external interrupt or a hardware exception is injected; a software interrupt has not
        retired and simply runs again."""
        vmcs = vm.vmcs
        info = vmcs.idt_vectoring_info
        if not info & INTR_VALID:
            return
        vector, type_ = _decode_info(info)
        if type_ in (INTR_EXTERNAL, INTR_HW_EXCEPTION, INTR_NMI):
            vmcs.inject(vector, type_, vmcs.idt_vectoring_error_code
                        if info & INTR_ERROR_VALID else None)

    def exception_exit(self, vm: HWVM, vmcs: VMCS) -> None:
        """EXCEPTION_NMI: #PF under shadow paging is a hidden fault or the guest's own; any
        other exception is the guest's, reflected by injection."""
        vector, type_ = _decode_info(vmcs.exit_interruption_info)
        code = vmcs.exit_interruption_error_code
        if vector == 14 and not self.ept:
            self._shadow_fault(vm, vmcs.exit_qualification, code or 0, vmcs.idt_vectoring_info)
            return
        if type_ == INTR_SW_EXCEPTION:
            vmcs.inject(vector, type_, None, vmcs.exit_instruction_length)
            return
        addr = vmcs.exit_qualification if vector == 14 else None
        self.inject_fault(vm, Fault(vector, code, addr), vmcs.idt_vectoring_info)

    def ept_violation(self, vm: HWVM, vmcs: VMCS) -> None:
        """EPT_VIOLATION: map a page of the VM's memory (lazy EPT), or emulate an access beyond
        it."""
        gpa = vmcs.guest_physical_address
        if gpa < vm.memory_size and vm.ept.rights(gpa) == 0:
            page = gpa & 0xFFFFF000
            vm.ept.map(page, vm.slice_base + page)
            self.ept_fills += 1
            self.events["shadow_update"] += 1
            self._reinject(vm)
            return
        if gpa < vm.memory_size:
            raise CannotEmulate(f"EPT violation at guest-physical {gpa:#x} with the page mapped")
        if vmcs.idt_vectoring_info & INTR_VALID:
            raise CannotEmulate(f"event delivery touched guest-physical {gpa:#010x}, beyond the "
                                f"VM's {vm.memory_size:#x} bytes of memory")
        self._emulate_insn(vm)

    # ---- the VMM's side of the guest's control registers --------------------------------------
    def write_cr(self, vm: HWVM, n: int, v: int) -> None:
        """MOV to CRn for the guest: the read shadow gets the guest's value, the real register
        the guest's value with the bits VMX operation needs (CR0.NE, CR4.VMXE; with shadow
        paging CR0.PG and WP on and CR4.PSE off, and the guest's CR3 kept by the VMM)."""
        m, vmcs, vc = self._host, vm.vmcs, vm.vcpu
        v &= MASK32
        if n == 0:
            if v & CR0_PG and not v & CR0_PE:
                raise Fault(13, 0, detail="CR0.PG without CR0.PE")
            if not v & CR0_PE:
                raise CannotEmulate("clearing CR0.PE (real mode is not in the subset)")
            old = vc.cr0
            v |= CR0_ET
            vmcs.cr0_read_shadow = v
            m.write_cr(0, v | CR0_NE | (0 if self.ept else CR0_PG | CR0_WP))
            if not self.ept and (old ^ v) & (CR0_PG | CR0_WP):
                self.flush_shadow(vm)
        elif n == 3:
            if self.ept:
                m.write_cr(3, v)
            else:
                vm.guest_cr3 = v
                self.pt_traps["mov cr3"] += 1
                self.flush_shadow(vm)
        elif n == 4:
            old = vc.cr4
            vmcs.cr4_read_shadow = v
            m.write_cr(4, (v | CR4_VMXE) & (MASK32 if self.ept else ~CR4_PSE))
            if not self.ept and (old ^ v) & CR4_PSE:
                self.flush_shadow(vm)
        elif n == 2:
            m.cpu.cr2 = v
        else:
            raise Fault(6, detail=f"cr{n} does not exist")

    def guest_invlpg(self, vm: HWVM, lin: int) -> None:
        """The guest's INVLPG, after an exit."""
        if self.ept:
            self._host.invlpg(lin & MASK32)
        else:
            self._shadow_invlpg(vm, lin)

    # ---- shadow paging (ept=False): the virtual TLB (vmkit.vmm.shadow) ---------------------
    def _shadow_fault(self, vm: HWVM, lin: int, err: int, vectoring: int) -> None:
        """A #PF exit under shadow paging: walk the guest's tables; if they allow the access,
        fill the shadow entry (a hidden page fault) and retry, else inject the guest's #PF."""
        write, user = bool(err & 2), bool(err & 4)
        try:
            pte, ok = self._shadow_entry(vm, lin, write, user)   # sets the guest's A/D bits
        except Fault as f:
            self.inject_fault(vm, f, vectoring)              # the guest's own fault (CR2 set)
            return
        if not ok:
            if vectoring & INTR_VALID:
                raise CannotEmulate(f"event delivery writes guest-linear {lin:#010x}, which "
                                    f"the shadow page tables cannot map writable")
            self._emulate_insn(vm)
            return
        self._hidden_fault(vm, lin, pte)
        self._reinject(vm)

    def _emulate_insn(self, vm: HWVM) -> None:
        """Run the instruction at EIP with the VMM's software MMU (the guest's tables, all ones
        beyond memory, writes there dropped): for the accesses no EPT or shadow entry can
        express. Faults are injected."""
        m = self._host
        cpu = m.cpu
        eip = cpu.eip
        user = cpu.cpl == 3
        window = bytearray()
        fault = None
        while len(window) < 15:
            a = (eip + len(window)) & MASK32
            take = min(15 - len(window), 0x1000 - (a & 0xFFF))
            try:
                window += vm.read(a, take, user).to_bytes(take, "little")
            except Fault as f:
                fault = f
                break
        insn = DECODER.decode(eip, bytes(window))
        if insn is None or not insn.id or insn.size > len(window):
            self.inject_fault(vm, fault if fault is not None else
                              Fault(6, detail=f"undefined encoding at {eip:#010x}"))
            return
        g = dict(m._g)
        for n in (1, 2, 4):
            g[f"rd{n}"] = lambda a, n=n: vm.read(a, n, user)
            g[f"wr{n}"] = lambda a, v, n=n: vm.write(a, n, v, user)
        fn = sem.compile_insn(insn, g)
        if isinstance(fn, str):
            raise CannotEmulate(f"cannot emulate {insn.text!r} at {eip:#010x}: {fn}")
        try:
            fn()
        except Resched:
            pass
        except Fault as f:
            cpu.eip = eip
            self.inject_fault(vm, f)
            return
        self._retired(vm, insn.mnemonic, eip, insn.text)

    # ---- intercepts: what the CPU does with an instruction in non-root mode -------------------
    def _intercept(self, insn):
        """Machine.intercept: the stub that replaces an instruction the controls make exit (or
        that reads a read shadow), or None to run the instruction's own semantics."""
        build = _STUBS.get(insn.mnemonic)
        return build(self, insn) if build is not None else None

    def _io_exits(self, port: int, size: int) -> bool:
        if self.assigned:   # direct assignment: the owner's ports pass, the others' exit
            r = passthrough.hw_exits(self, port, size)
            if r is not None:
                return r
        c = self._controls
        bitmap = c.io_bitmap
        if bitmap is None:
            return c.io_exiting
        if port + size > 0x10000:
            return True            # an access that wraps around the port space exits
        return any(port + k in bitmap for k in range(size))

    # ---- statistics and cycles ---------------------------------------------------------------
    @property
    def stats(self) -> dict:
        c = self.trace.counts
        m = self._host
        return {
            "instructions": self._total_steps(),
            "native_instructions": m.steps,
            "interrupts": sum(self.delivered.values()),
            "ring_transitions": c["ring"],
            "page_faults": self.delivered["#PF"],
            "tlb_misses": m.tlb_misses,
            "port_io": c["io"],
            "traps": sum(self.vm_exits.values()),
            "vm_exits": Counter(self.vm_exits),
            "injections": self.injections,
            "emulated": Counter(self.emulated),
            "walk_references": m.walk_refs,
            "hidden_page_faults": self.hidden_page_faults,
            "ept_fills": self.ept_fills,
            "world_switches": self.world_switches,
            "shadow_updates": self.events["shadow_update"],
            "pt_write_traps": sum(self.pt_traps.values()),
            "pt_traps": Counter(self.pt_traps),
        }

    def event_counts(self) -> Counter:
        """Events by cost category: ``native`` is what the CPU retired in non-root mode; an
        instruction the VMM completed counts once, as ``emulate``; ``interrupt`` is every event
        the CPU delivered through a guest's IDT (injected ones included)."""
        counts = Counter(self.events)
        m = self._host
        counts["native"] += m.steps
        counts["page_walk"] += m.walk_refs
        counts["interrupt"] += sum(self.delivered.values())
        return counts

    # ---- snapshots ---------------------------------------------------------------------------
    def _before_restore(self, st: dict) -> None:
        self.current = st["declared"]["current"]   # its EPT first: the machine's memory view
        self._host.nested = self.vms[self.current].ept
