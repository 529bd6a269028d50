"""The trap-and-emulate monitor (see the package text)."""

from __future__ import annotations

import struct
from collections import Counter

from vmkit.errors import VmkitError
from vmkit.isa import semantics as sem
from vmkit.isa.decode import Insn
from vmkit.isa.faults import Fault, Resched
from vmkit.machine import rules
from vmkit.machine.cpu import MASK32
from vmkit.machine.devices import IRQ_BASE, Devices
from vmkit.machine.machine import Machine, RunResult
from vmkit.machine.mmu import CR0_PG, CR0_WP, CR4_PSE, PTE_A, PTE_D, PTE_P, PTE_W
from vmkit.machine.rules import Descriptor
from vmkit.trace import Emulation, InstructionRetired, Interrupt, Reflection, RingTransition
from vmkit.vmm import passthrough
from vmkit.vmm.layout import (GDT_BYTES, H_IDT, H_ONES, H_STUB, H_TSS, RESERVED_ENTRY, TSS_LIMIT,
                              V_WINPT, VMM_CS, VMM_DS, VMM_TSS, VMM_WINDOW, W_GDT, W_IDT, W_STUB,
                              W_TSS, MiB)
from vmkit.vmm.sched import _init_scheduling, machine_time
from vmkit.vmm.shadow import ShadowPaging
from vmkit.vmm.te.handlers import _DEFAULT_HANDLERS, DEPRIVILEGED
from vmkit.vmm.te.vcpu import _I, _Q, IF, NT, REAL_CR0, REAL_CR4_FROM_GUEST, RF, TEVM, TF, VM_FLAG
from vmkit.vmm.vm import CannotEmulate, NotEmulated, event_name
from vmkit.vmm.world import DEFAULT_SLICE, HostedMonitor
from vmkit.vmm.world import VMStop as _VMStop


class TrapAndEmulate(ShadowPaging, HostedMonitor):
    """Trap-and-emulate: the guest kernel in ring 1 under a ring-0 VMM (see the module text).

    ``TrapAndEmulate(img_a, img_b, ..., slice=DEFAULT_SLICE, costs=CostModel)`` runs each guest
    in its own VM (``vm.vms[i]``: memory slice, virtual CPU, devices, console), switched round
    robin by the VMM's timer every ``slice`` host instructions.

    Scheduling on machine time (:mod:`vmkit.vmm.sched`): ``scheduler="round-robin"``,
    ``scheduler="credit", weights=[...]`` (after Xen's credit scheduler) or a ``Scheduler``
    object, with ``quantum=`` machine cycles per slice (default ``DEFAULT_QUANTUM``); ``slice``
    is then unused. Every world switch is priced (``world_switch``), counted in
    ``world_switches`` and logged in ``switch_log`` (machine time, from VM, to VM).
    ``machine_timer=True`` runs every VM's timer on machine time (its period counts machine
    cycles, descheduled time included): slowdown and jitter show, and equivalence is not
    expected (see :mod:`vmkit.vmm.sharing`).

    ``emulate`` is the extension point: a dict mnemonic -> ``handler(vm, insn)``, where ``vm``
    is the :class:`TEVM` that trapped and ``insn`` the decoded instruction (``insn.mnemonic``,
    ``insn.operands``, ``insn.address``, ``insn.text``). The VMM moves EIP past the
    instruction *before* calling the handler (a handler that transfers control sets
    ``vm.vcpu.eip`` itself), counts it, and resumes the guest. A handler may raise a ``Fault``
    (the guest gets that exception, EIP back on the instruction: check before you change
    anything), ``NotEmulated`` (the fault was the guest's own: reflect it) or
    ``CannotEmulate`` (the VM ends with that reason). ``TrapAndEmulate.emulate`` is the default
    table; each monitor copies it, so replacing a handler on one monitor leaves the others
    alone::

        te = TrapAndEmulate(guests.build("syscall"))
        def my_cli(vm, insn):
            vm.vcpu.IF = 0
            print("cli at", hex(insn.address))
        te.emulate["cli"] = my_cli

    ``assign={0: ["disk"]}`` assigns a device directly to one VM: its ports are allowed in the
    TSS I/O bitmap while that VM runs (no trap); other VMs' accesses are refused
    (``refused_io``). See :mod:`vmkit.vmm.iovirt` and docs/io-virtualization.md.

    ``stats`` adds ``traps``, ``emulated`` (Counter by mnemonic), ``reflected`` (Counter by
    vector name), ``hidden_page_faults``, ``shadow_updates`` and ``world_switches``.
    """

    name = "te"
    title = "trap-and-emulate (kernel in ring 1, shadow page tables)"
    monitor_state = ("traps", "emulated", "reflected")
    #: the default handlers (mnemonic -> handler); every instance works on its own copy
    emulate: dict = dict(_DEFAULT_HANDLERS)

    def __init__(self, *images, costs=None, trace=None, slice: int = DEFAULT_SLICE,
                 scheduler=None, weights=None, quantum=None, machine_timer: bool = False,
                 assign=None):
        if not isinstance(slice, int) or isinstance(slice, bool) or slice < 1:
            raise VmkitError(f"slice must be a positive number of host instructions, got "
                             f"{slice!r}")
        self.slice = slice
        _init_scheduling(self, images, scheduler, weights, quantum, machine_timer)
        # ---- direct assignment (vmkit.vmm.passthrough): assign={vm index: ["disk"]} -> {port: vm}
        self.assigned = passthrough.resolve_assignment(assign, len(images), self.name)
        # ---- end direct assignment
        self.current = 0
        self._host: Machine | None = None
        self.emulate = dict(type(self).emulate)   # instance copy: replace handlers freely
        self.traps = 0
        self.hidden_page_faults = 0
        self.world_switches = 0
        self.emulated: Counter = Counter()
        self.reflected: Counter = Counter()
        # traps through which the VMM learns of guest page-table changes, by kind ("invlpg",
        # "mov cr3"): stats["pt_write_traps"] (docs/memory-virtualization.md)
        self.pt_traps: Counter = Counter()
        super().__init__(*images, costs=costs, trace=trace)
        passthrough.install_te(self)   # direct assignment: host port handlers, the TSS I/O bitmap

    # ---- construction ------------------------------------------------------------------------
    def _make_machine(self, index: int, image) -> Machine:
        """One host machine for every VM: the VMM area, then one memory slice per VM."""
        if self._host is None:
            self._host = Machine(self._plan_slices(), trace=self.trace)
            self._build_vmm_area()
        return self._host

    def _make_vm(self, index: int, image, machine: Machine) -> TEVM:
        vm = TEVM(index, image, machine, self, self._slice_bases[index], (1 + index) * MiB)
        self._boot_vm(vm)
        return vm

    def _build_vmm_area(self) -> None:
        """The real IDT, the VMM's TSS (an I/O bitmap denying every port) and the all-ones
        page, shared by every VM."""
        m = self._host
        mem = m.mem
        stub = VMM_WINDOW + W_STUB
        # the real IDT: every vector leads into the VMM. The simulator's VMM runs in Python, so
        # these gates are never taken (Machine.exception_hook intercepts first); they are what
        # the real IDT holds, and what a guest's sidt points at.
        gate = (stub & 0xFFFF) | (VMM_CS << 16) | (0x8E << 40) | ((stub >> 16) << 48)
        for v in range(256):
            _Q.pack_into(mem, H_IDT + 8 * v, gate)
        mem[H_IDT + 2048:H_IDT + 4096] = bytes(2048)
        tss = bytearray(3 * 4096)
        _I.pack_into(tss, 4, stub + 0x1000)        # ESP0: the VMM's (unused) stack
        _I.pack_into(tss, 8, VMM_DS)               # SS0
        struct.pack_into("<H", tss, 0x66, 104)     # I/O bitmap right after the TSS
        tss[104:104 + 8193] = b"\xFF" * 8193       # every port denied, and the end byte
        mem[H_TSS:H_TSS + len(tss)] = tss
        mem[H_STUB:H_STUB + 4096] = b"\xF4" * 4096  # hlt: never reached
        mem[H_ONES:H_ONES + 4096] = b"\xFF" * 4096  # guest frames beyond a VM's memory

    def _boot_vm(self, vm: TEVM) -> None:
        """The VM's slice as the machine powers on (0xAA everywhere, the boot GDT, the image),
        its VMM structures, and the real CPU state that runs it: ring 1, paging on the shadow."""
        m = self._host
        mem = m.mem
        self._power_on_slice(vm)
        # the VMM's own descriptors at the top of this VM's real GDT
        tss_base = VMM_WINDOW + W_TSS
        tss_desc = ((TSS_LIMIT & 0xFFFF) | ((tss_base & 0xFFFFFF) << 16) | (0x8B << 40)
                    | (((TSS_LIMIT >> 16) & 0xF) << 48) | ((tss_base >> 24) << 56))
        for sel, raw in ((VMM_CS, 0x00CF9B000000FFFF), (VMM_DS, 0x00CF93000000FFFF),
                         (VMM_TSS, tss_desc)):
            _Q.pack_into(mem, vm.gdt_base + sel, raw)
        # the window: the real GDT, IDT and TSS, read-only and supervisor-only
        frames = [vm.gdt_base + 0x1000 * k for k in range(GDT_BYTES // 0x1000)]
        frames += [H_IDT, H_TSS, H_TSS + 0x1000, H_TSS + 0x2000, H_STUB]
        winpt = vm.vmm_base + V_WINPT
        for k, f in enumerate(frames):
            _I.pack_into(mem, winpt + 4 * k, f | PTE_P | PTE_A | PTE_D)
        _I.pack_into(mem, vm.pd + 4 * 1023, winpt | PTE_P | PTE_W | PTE_A)
        self.shadow_gdt(vm)
        # the real CPU for this VM
        cpu = vm.saved
        cpu.regs[:] = [0] * 8
        cpu.regs[4] = vm.memory_size            # as Machine: a stack at the top of memory
        cpu.eip = vm.image.entry
        cpu.eflags = IF                          # real IF on, IOPL 0; the virtual IF is 0
        for i, sel in enumerate((0x10, 0x08, 0x10, 0x10, 0x10, 0x10)):
            d = self._shadow_descriptor(vm, sel)
            real = sel | 1 if i in (1, 2) else sel
            s = cpu.seg[i]
            s.selector, s.base, s.limit, s.access, s.flags = real, d.base, d.limit, \
                d.access | 1, d.flags
        cpu.cr0, cpu.cr2, cpu.cr3, cpu.cr4 = REAL_CR0, 0, vm.pd, 0
        cpu.gdtr.base, cpu.gdtr.limit = VMM_WINDOW + W_GDT, GDT_BYTES - 1
        cpu.idtr.base, cpu.idtr.limit = VMM_WINDOW + W_IDT, 256 * 8 - 1
        cpu.ldtr.selector, cpu.ldtr.base, cpu.ldtr.limit = 0, 0, 0
        cpu.tr.selector, cpu.tr.base, cpu.tr.limit = VMM_TSS, VMM_WINDOW + W_TSS, TSS_LIMIT
        cpu.cpl = 1
        vm.vcpu.cpl = 0

    def _setup(self) -> None:
        m = self._host
        m.exception_hook = self._on_exception
        m.ring_hook = self._on_ring
        # the VMM's timer: a one-shot, armed before every run of a guest (see _arm)
        m.dev = Devices(timer_period=1 << 62)
        m.cpu.set_state(self.vms[0].saved.state())
        m.clock = 0
        m.vm_index = 0
        m.flush_tlb()
        m._mode_changed()
        self._slice_end = self.slice

    # ---- the run loop's policy (vmkit.vmm.world) -----------------------------------------------
    def _deliver_pending(self, vm: TEVM) -> bool:
        line = self._deliverable(vm)
        if line is None:
            return False
        self._guarded(vm, self._inject_irq, vm, line)
        return True

    def _halted(self, vm: TEVM) -> bool:
        return vm.vcpu.halted        # HLT is emulated: the virtual CPU waits

    def _enter(self, vm: TEVM, deadline: int) -> None:
        m = self._host
        if vm.steps < vm.inhibit_until:        # STI shadow: stop right after one instruction
            deadline = min(deadline, m.clock + vm.inhibit_until - vm.steps)
        self._arm(deadline)
        m.exit_request = False

    def _guest_stopped(self, vm: TEVM, r: RunResult) -> None:
        # a crash of the guest's code (unsupported instruction ...); the real CPU never halts
        # or powers off itself: those are emulated
        self._host.stopped = None
        self._end(vm, "crash", r.detail, event=r.reason != "crash")

    def _count_preemption(self, vm: TEVM) -> None:
        """The VMM's timer ended ``vm``'s slice: a trap into the VMM."""
        self.traps += 1
        self.events["trap"] += 1

    def _deliverable(self, vm: TEVM) -> int | None:
        """The virtual IRQ line to deliver now: virtual IF set, outside an STI shadow, a line
        pending, unmasked and not blocked by one in service."""
        if not vm.vcpu.IF or vm.steps < vm.inhibit_until:
            return None
        return vm.devices.pending_vector()

    def _guest_if(self, vm: TEVM) -> bool:
        return vm.vcpu.IF     # the virtual IF: the real one stays 1 while the guest runs

    def _switched_in(self, vm: TEVM) -> None:
        if self.assigned:   # direct assignment: the I/O bitmap lets only the owner through
            passthrough.te_switched(self)

    # ---- traps into the VMM ----------------------------------------------------------------
    def _on_exception(self, vector: int, fault: Fault | None, source: str, next_eip) -> bool:
        """The real IDT's gates, all leading here (Machine.exception_hook): every exception,
        software interrupt and device interrupt arrives at the VMM first."""
        m = self._host
        vm = self.vms[self.current]
        self.traps += 1
        self.events["trap"] += 1
        if self.scheduler is not None and len(self.vms) > 1 \
                and machine_time(self) >= self._slice_end:
            m.exit_request = True   # the slice (machine cycles) is spent: back to the run loop
        self.trace.add(Interrupt(m.clock, vector=vector, name=event_name(vector, source),
                                 source=source, error_code=fault.error_code if fault else None,
                                 from_ring=m.cpu.cpl, to_ring=0, eip=m.cpu.eip, handler=0,
                                 vm=vm.index))
        if source == "irq":
            # the VMM's own timer: a virtual tick is due, the budget or the slice is spent
            m.exit_request = True
            return True
        if source != "exception":
            # int n / int3 / into: reflect through the guest's gate. A fault doing so leaves
            # this hook, so the instruction does not retire (as natively); the VMM gets it next.
            try:
                self._sync_gdt(vm)
                self._reflect(vm, vector, None, next_eip, source)
            except Fault:
                raise
            except _VMStop as s:
                self._stop_soon(vm, s.reason, s.detail)
            except Exception as ex:
                self._stop_soon(vm, "crash", _error_text(ex))
            return True
        self._guarded(vm, self._handle_exception, vm, fault)
        return True

    def _handle_exception(self, vm: TEVM, fault: Fault) -> None:
        self._sync_gdt(vm)
        try:
            if fault.vector == 14:
                self._page_fault(vm, fault)
            elif fault.vector == 13:
                self._general_protection(vm, fault)
            else:
                self._reflect_exception(vm, fault)
        except Fault as f:   # the guest's own fault, found while handling: deliver it
            self._reflect_exception(vm, f)

    def _general_protection(self, vm: TEVM, fault: Fault) -> None:
        """#GP: a privileged or I/O instruction of the deprivileged kernel (decode, emulate,
        resume after it), or the guest's own #GP (reflect)."""
        m = self._host
        vc = vm.vcpu
        eip = m.cpu.eip
        try:
            insn = self._fetch_insn(vm, eip)
        except Fault:
            insn = None
        if insn is None or not insn.id:
            self._reflect_exception(vm, fault)
            return
        handler = self.emulate.get(insn.mnemonic)
        if handler is None:
            if vc.cpl == 0 and insn.mnemonic in DEPRIVILEGED:
                raise CannotEmulate(f"cannot emulate {insn.text!r} at {eip:#010x}: no "
                                    f"handler in emulate[{insn.mnemonic!r}]")
            self._reflect_exception(vm, fault)
            return
        done = self._call_handler(vm, handler, insn, eip)
        if done is None:
            self._reflect_exception(vm, fault)   # the handler declines: the guest's own #GP
        elif done:
            self._retired(vm, insn)

    def _call_handler(self, vm: TEVM, handler, insn: Insn, eip: int) -> bool | None:
        """Run an emulation handler as the VMM always does: EIP past the instruction during
        the call (as the CPU's would be). -> True: it retired; False: it raised a Fault, the
        guest's, now reflected; None: it declined (NotEmulated). EIP is back at ``eip``
        unless it retired; CannotEmulate ends the VM, naming the instruction."""
        vc = vm.vcpu
        vc.eip = insn.next
        try:
            handler(vm, insn)
        except NotEmulated:
            vc.eip = eip
            return None
        except CannotEmulate as ce:
            vc.eip = eip
            raise CannotEmulate(f"cannot emulate {insn.text!r} at {eip:#010x}: {ce.detail}") \
                from None
        except Fault as f:
            vc.eip = eip
            self._reflect_exception(vm, f)
            return False
        return True

    def _fetch_insn(self, vm: TEVM, eip: int) -> Insn | None:
        """The guest instruction at ``eip`` for the VMM to emulate, fetched as the real CPU
        fetched it (through the shadow page tables)."""
        return self._host.fetch_decode(eip)

    def _retired(self, vm: TEVM, insn: Insn) -> None:
        """Count an emulated instruction: it retired in guest time (it never did on the real
        CPU, so the cost model counts it as "emulate", not "native")."""
        m = self._host
        if self.trace.wants_instructions():
            self.trace.add(InstructionRetired(m.clock, address=insn.address, text=insn.text,
                                              ring=vm.vcpu.cpl, vm=vm.index))
        m.clock += 1
        vm.steps += 1
        self.emulated[insn.mnemonic] += 1
        self.events["emulate"] += 1
        self.trace.add(Emulation(m.clock, address=insn.address, text=insn.text,
                                 mnemonic=insn.mnemonic, vm=vm.index))
        # the VMM's run loop looks at virtual interrupts, devices and halts before going on
        m.exit_request = True

    def _on_ring(self, old: int, new: int, cause: str) -> None:
        """The real CPU changed rings on its own (Machine.ring_hook): an outward iretd or retf
        of the ring-1 kernel to user mode, which does not trap."""
        vm = self.vms[self.current]
        vc = vm.vcpu
        vc.cpl = new
        if cause == "iret" and old == 1:
            # a ring-0 iretd loads IF and IOPL from the image; the ring-1 one loaded neither.
            # The image is still in guest memory where the iretd popped it.
            image = vm.peek((self._host.iret_frame + 8) & MASK32, 4)
            if image is not None:
                fl = int.from_bytes(image, "little")
                vc.IF, vc.iopl = (fl >> 9) & 1, (fl >> 12) & 3
        if self._deliverable(vm) is not None:
            self._host.exit_request = True

    # ---- reflection: the VMM delivers into the guest ------------------------------------------
    def _reflect(self, vm: TEVM, vector: int, error_code: int | None, return_eip: int,
                 source: str) -> None:
        """Deliver vector into the guest kernel through the guest's IDT (SDM 6.12.1, as
        ``Machine.deliver`` with the guest's tables and the virtual CPU): gate checks against
        the virtual CPL, the stack switch to the guest TSS's SS0:ESP0, the frame the guest
        expects (virtual IF and IOPL, CS as the guest believes it), virtual IF cleared for an
        interrupt gate. Raises the guest's Fault if delivery fails (state unchanged)."""
        m = self._host
        cpu, vc = m.cpu, vm.vcpu
        gate, cd, new, ext = rules.interrupt_gate(vm, vc.idtr, vc.cpl, vector, source,
                                                  "guest's IDT")
        sel = gate.gate_selector
        old = vc.cpl
        flags = vc.eflags
        frame = [flags, vc.cs, return_eip]
        new_ss = None
        if new < old:
            esp, new_ss = self._inner_stack(vm, new, ext)
            rules.inner_stack_segment(vm, new_ss, new, ext)
            frame = [vc.ss, cpu.regs[4]] + frame
        else:
            esp = cpu.regs[4]
        if error_code is not None:
            frame.append(error_code)
        pushes = []
        for v in frame:
            esp = (esp - 4) & MASK32
            pushes.append((esp, v))
        for a, v in pushes:
            vm.write(a, 4, v & MASK32)
        # commit, on the real CPU and the virtual one
        if new_ss is not None:
            self._load_real_segment(vm, 2, new_ss)
        cpu.regs[4] = esp
        cpu.eflags = cpu.eflags & ~(TF | NT | RF | VM_FLAG)
        if gate.type == 0xE:
            vc.IF = 0
        vc.halted = False
        self._load_real_cs(vm, sel, new, "interrupt", cd)
        cpu.eip = gate.gate_offset
        name = event_name(vector, source)
        self.reflected[name] += 1
        self.trace.add(Reflection(m.clock, vector=vector, name=name, from_ring=old,
                                  vm=vm.index))

    def _inner_stack(self, vm: TEVM, new: int, ext: int) -> tuple[int, int]:
        """(ESP, SS) for a reflection into virtual ring ``new``: the guest TSS's, read now
        (the kernel stores ESP0 freely)."""
        return rules.tss_stack(vm, vm.vcpu.tr, new, ext)

    def _reflect_exception(self, vm: TEVM, f: Fault) -> None:
        """Reflect an exception with the double-fault rules of SDM Table 6-5, as
        ``Machine.deliver_exception`` does natively; a fault while reflecting #DF is a triple
        fault and ends the VM (reason "crash", the chain of faults in the detail)."""
        eip = self._host.cpu.eip
        rules.deliver_exception(lambda v, c: self._reflect(vm, v, c, eip, "exception"), f,
                                lambda chain: _VMStop("crash", "triple fault: " + chain))

    def _inject_irq(self, vm: TEVM, line: int) -> None:
        """A virtual device interrupt, now deliverable: acknowledge it on the VM's interrupt
        controller and reflect it (as Machine._deliver_irq does)."""
        vm.devices.acknowledge(line)
        vm.vcpu.halted = False
        if self.machine_timer and line == 0:
            vm.tick_steps.append(vm.steps)
        try:
            self._reflect(vm, IRQ_BASE + line, None, self._host.cpu.eip, "irq")
        except Fault as f:
            self._reflect_exception(vm, f)

    # ---- the real CPU's segment registers ----------------------------------------------------
    def _shadow_descriptor(self, vm: TEVM, selector: int) -> Descriptor:
        return Descriptor.parse(_Q.unpack_from(self._host.mem,
                                               vm.gdt_base + (selector & 0xFFF8))[0])

    def _load_real_segment(self, vm: TEVM, index: int, selector: int) -> None:
        """Load a real data or stack segment register from the shadow GDT; the kernel's
        stack selector gets RPL 1 (the real CPL)."""
        real = selector | 1 if index == 2 and selector & 3 == 0 else selector
        self._host._load_cache(index, real, self._shadow_descriptor(vm, selector))

    def _load_real_cs(self, vm: TEVM, selector: int, vring: int, cause: str,
                      d: Descriptor | None = None) -> None:
        """CS := the guest's code selector for virtual ring ``vring``, in the real ring that
        stands for it (0 -> 1); the guest descriptor's accessed bit is set as natively."""
        m = self._host
        cpu, vc = m.cpu, vm.vcpu
        vm.set_accessed(selector, d if d is not None else vm.descriptor(selector))
        ring = 1 if vring == 0 else vring
        m._load_cache(1, (selector & 0xFFFC) | ring, self._shadow_descriptor(vm, selector))
        old = cpu.cpl
        vc.cpl = vring
        if ring != old:
            cpu.cpl = ring
            m._mode_changed()
            self.trace.add(RingTransition(m.clock, from_ring=old, to_ring=ring, cause=cause,
                                          vm=vm.index))
            if ring > old:
                m._null_outer_segments(ring)

    # ---- the shadow GDT ----------------------------------------------------------------------
    def shadow_gdt(self, vm: TEVM) -> None:
        """Rebuild the real GDT from the guest's: code and data descriptors of DPL 0 get DPL 1
        (accessed bits kept: a clear one makes the CPU's write fault into the VMM, which sets
        it in the guest's table too); the VMM's own entries stay at the top."""
        gdtr = vm.vcpu.gdtr
        n = min(gdtr.limit + 1, RESERVED_ENTRY * 8)
        raw = vm.peek(gdtr.base, n) or b""
        out = bytearray(raw + bytes(-len(raw) % 8))
        for off in range(0, len(out), 8):
            d = _Q.unpack_from(out, off)[0]
            access = (d >> 40) & 0xFF
            if access & 0x10 and not access & 0x60:    # code or data with DPL 0
                d |= 1 << 45                           # DPL 1: the kernel's new ring
            _Q.pack_into(out, off, d)
        mem = self._host.mem
        clear = max(vm.gdt_shadowed, len(out))
        mem[vm.gdt_base:vm.gdt_base + clear] = bytes(out) + bytes(clear - len(out))
        vm.gdt_shadowed = len(out)
        vm.gdt_copy = raw
        vm.gdt_src = None
        self.events["shadow_update"] += 1

    def _sync_gdt(self, vm: TEVM) -> None:
        """On every entry into the VMM: re-shadow if the guest changed its GDT in memory since
        (a plain store, which does not trap). A byte comparison at the table's host address."""
        if vm.gdt_src is None:
            gdtr = vm.vcpu.gdtr
            n = len(vm.gdt_copy)
            src, k = [], 0
            try:
                while k < n:
                    a = (gdtr.base + k) & MASK32
                    take = min(n - k, 0x1000 - (a & 0xFFF))
                    h = vm.host_address(vm.walk(a, touch=False)[0])
                    if h is None or h + take > vm.slice_base + vm.memory_size:
                        return
                    src.append((h, take))
                    k += take
            except Fault:
                return
            vm.gdt_src = src
        mem = self._host.mem
        if b"".join(bytes(mem[h:h + t]) for h, t in vm.gdt_src) != vm.gdt_copy:
            self.shadow_gdt(vm)

    # ---- control registers -------------------------------------------------------------------
    def write_cr(self, vm: TEVM, n: int, v: int) -> None:
        """MOV to CRn on the virtual CPU. The real CR0 keeps paging on; a change of the guest's
        paging (CR3, CR0.PG/WP, CR4.PSE) drops the VM's shadow page tables, as the hardware
        flushes its TLB."""
        vc = vm.vcpu
        v &= MASK32
        if n == 0:
            if v & CR0_PG and not v & 1:
                raise Fault(13, 0, detail="CR0.PG without CR0.PE")
            if not v & 1:
                raise CannotEmulate("clearing CR0.PE (real mode is not in the subset)")
            old = vc.cr0
            vc.cr0 = v | 0x10
            if (old ^ v) & (CR0_PG | CR0_WP):
                self.flush_shadow(vm)
        elif n == 2:
            vc.cr2 = v
        elif n == 3:
            vc.cr3 = v
            self.pt_traps["mov cr3"] += 1
            self.flush_shadow(vm)
        elif n == 4:
            old = vc.cr4
            vc.cr4 = v
            self._host.cpu.cr4 = v & REAL_CR4_FROM_GUEST
            if (old ^ v) & CR4_PSE:
                self.flush_shadow(vm)
        else:
            raise Fault(6, detail=f"cr{n} does not exist")

    # ---- shadow page tables: a virtual TLB ---------------------------------------------------
    def invlpg(self, vm: TEVM, lin: int) -> None:
        """Drop one page's shadow entry (the guest's invlpg)."""
        self._shadow_invlpg(vm, lin)

    def _page_fault(self, vm: TEVM, fault: Fault) -> None:
        """A real #PF while the guest ran: hidden (fill the shadow entry, retry) when the
        guest's own tables allow the access, else the guest's #PF, reflected."""
        lin, err = fault.address, fault.error_code
        write, user = bool(err & 2), bool(err & 4)
        if lin >= VMM_WINDOW:
            self._window_fault(vm, lin, write, user)
            return
        pte, ok = self._shadow_entry(vm, lin, write, user)   # the guest's #PF: reflected
        if not ok:
            self._emulate_one(vm)
            return
        self._hidden_fault(vm, lin, pte)

    def _window_fault(self, vm: TEVM, lin: int, write: bool, user: bool) -> None:
        """A fault in the VMM's window: the CPU setting a descriptor's accessed bit in the
        (read-only) shadow GDT, or the guest touching addresses it believes are its own."""
        m = self._host
        off = lin - VMM_WINDOW
        if write and not user and off < GDT_BYTES and off & 7 == 5:
            idx = off >> 3
            shadow = m.mem[vm.gdt_base + off]
            if shadow & 0x10 and not shadow & 1 and idx * 8 + 7 <= vm.vcpu.gdtr.limit:
                # set it where the guest's hardware would have: in the guest's own table
                sel = idx * 8
                vm.set_accessed(sel, vm.descriptor(sel))
                m.mem[vm.gdt_base + off] = shadow | 1
                return
        gpa, _, _ = vm.walk(lin, write, user)
        if vm.host_address(gpa) is not None:
            raise _VMStop("crash", f"the guest maps linear address {lin:#010x}, inside the "
                          f"VMM's reserved window {VMM_WINDOW:#010x}-0xffffffff")
        self._emulate_one(vm)   # beyond the guest's memory: all ones, writes dropped

    def _emulate_one(self, vm: TEVM) -> None:
        """Run the faulting instruction with the VMM's software MMU: every memory access goes
        through the guest's page tables (all ones beyond memory, writes there dropped). For
        the few accesses a shadow entry cannot express."""
        m = self._host
        insn = self._fetch_insn(vm, m.cpu.eip)
        if insn is None or not insn.id:
            raise _VMStop("crash", f"cannot decode the instruction at {m.cpu.eip:#010x}")
        user = vm.vcpu.cpl == 3
        g = dict(m._g)
        for n in (1, 2, 4):
            g[f"rd{n}"] = lambda a, n=n: vm.read(a, n, user)
            g[f"wr{n}"] = lambda a, v, n=n: vm.write(a, n, v, user)
        fn = sem.compile_insn(insn, g)
        if isinstance(fn, str):
            raise _VMStop("crash", f"cannot emulate {insn.text!r} at {insn.address:#010x}: "
                          f"{fn}")
        try:
            fn()
        except Resched:
            pass
        self._retired(vm, insn)

    # ---- statistics and cycles ---------------------------------------------------------------
    @property
    def stats(self) -> dict:
        c = self.trace.counts
        return {
            "instructions": self._total_steps(),
            "host_instructions": self._host.steps,
            "interrupts": sum(self.reflected.values()),
            "ring_transitions": c["ring"],
            "page_faults": self.reflected["#PF"],
            "real_page_faults": c["page_fault"],
            "tlb_misses": self._host.tlb_misses,
            "port_io": c["io"],
            "traps": self.traps,
            "emulated": Counter(self.emulated),
            "reflected": Counter(self.reflected),
            "hidden_page_faults": self.hidden_page_faults,
            "shadow_updates": self.events["shadow_update"],
            "world_switches": self.world_switches,
            "walk_references": self._host.walk_refs,
            "pt_write_traps": sum(self.pt_traps.values()),
            "pt_traps": Counter(self.pt_traps),
        }

    def event_counts(self) -> Counter:
        """Events by cost category. ``native`` is what the real CPU retired: an emulated
        instruction never retired there, so it is counted once, as ``emulate``; the delivery
        of every trap is in ``trap`` (reflections are the VMM's work after a trap)."""
        counts = Counter(self.events)
        counts["native"] += self._host.steps
        counts["page_walk"] += self._host.walk_refs
        return counts


def _error_text(ex: Exception) -> str:
    if isinstance(ex, VmkitError):
        return str(ex)
    return f"VMM error ({type(ex).__name__}: {ex})"

