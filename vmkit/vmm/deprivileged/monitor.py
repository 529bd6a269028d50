"""The core of the monitors that run the guest kernel in ring 1: :class:`Deprivileged`."""

from __future__ import annotations

from collections import Counter

from vmkit.errors import VmkitError
from vmkit.isa.decode import Insn
from vmkit.isa.faults import Fault
from vmkit.machine.cpu import MASK32
from vmkit.machine.hooks import MachineHooks
from vmkit.machine.machine import Machine
from vmkit.machine.rules import Descriptor
from vmkit.trace import Emulation, InstructionRetired, Interrupt
from vmkit.vmm import passthrough, state
from vmkit.vmm.deprivileged.boot import boot_vm, build_vmm_area
from vmkit.vmm.deprivileged.control import write_cr
from vmkit.vmm.deprivileged.handlers import DEPRIVILEGED
from vmkit.vmm.deprivileged.ops import DEPRIVILEGED_OPS
from vmkit.vmm.deprivileged.reflect import guest_tss_stack, reflect, reflect_exception
from vmkit.vmm.deprivileged.segments import load_real_cs, load_real_segment, shadow_gdt, sync_gdt
from vmkit.vmm.deprivileged.vcpu import TEVM
from vmkit.vmm.deprivileged.window import emulate_one, window_fault
from vmkit.vmm.layout import VMM_WINDOW
from vmkit.vmm.paging import EMULATE, select, shadow_choice
from vmkit.vmm.sched import _init_scheduling, machine_time
from vmkit.vmm.vm import CannotEmulate, NotEmulated, event_name
from vmkit.vmm.world import DEFAULT_SLICE, HostedMonitor
from vmkit.vmm.world import VMStop as _VMStop


class Deprivileged(HostedMonitor, MachineHooks):
    """The core of every monitor that runs the guest kernel deprivileged in ring 1 under a
    ring-0 VMM on one host machine (trap-and-emulate, binary translation, paravirtualization):
    the virtual CPU, traps into the VMM and their reflection through the guest's IDT, the
    shadow GDT, control registers, the power-on layout, and the run loop's
    policy for such guests. Not a monitor itself: each monitor subclasses it and states its
    policy (``emulate``: the instruction handlers a #GP of the kernel runs; ``emulates``: whether
    such a #GP is emulated at all; ``watches_gdt``: whether the guest's GDT is shadowed by
    watching its stores; ``ops``: the operations the run loop asks of it, vmkit.vmm.ops), and
    overrides the steps it does differently.

    Takes ``slice``, ``scheduler``, ``weights``, ``quantum``, ``machine_timer``, ``assign`` (see
    :class:`vmkit.vmm.TrapAndEmulate`) and ``paging``, the name of its paging mode
    (:mod:`vmkit.vmm.paging`; ``ops.default_paging`` by default: ``"vtlb"``)."""

    #: the instruction handlers (mnemonic -> handler(vm, insn)); every instance copies them
    emulate: dict = {}
    #: a #GP of the guest kernel is a deprivileged instruction to emulate (else the guest's own)
    emulates = True
    #: the real GDT follows the guest's table by comparing it at each entry into the VMM
    watches_gdt = True
    #: the monitor protocol's operations (vmkit.vmm.ops): boot, enter, resume the guest
    ops = DEPRIVILEGED_OPS
    monitor_state = ("traps", "emulated", "reflected")

    def __init__(self, *images, costs=None, trace=None, slice: int = DEFAULT_SLICE,
                 scheduler=None, weights=None, quantum=None, machine_timer: bool = False,
                 assign=None, paging=None, shadow=None):
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
        paging = shadow_choice(self, shadow, paging)
        self.paging = select(self, self.ops.default_paging if paging is None else paging,
                             self.ops.paging_kinds)
        super().__init__(*images, costs=costs, trace=trace)
        passthrough.install_te(self)   # direct assignment: host port handlers, the TSS I/O bitmap

    # ---- construction ------------------------------------------------------------------------
    def _make_machine(self, index: int, image) -> Machine:
        """One host machine for every VM: the VMM area, then one memory slice per VM."""
        if self._host is None:
            self._host = Machine(self._plan_slices(), trace=self.trace)
            self._build_vmm_area()
        return self._host

    def _build_vmm_area(self) -> None:
        """As ``boot.build_vmm_area`` (a method: subclasses and the VM call it)."""
        build_vmm_area(self)

    def _boot_vm(self, vm: TEVM) -> None:
        """As ``boot.boot_vm`` (a method: subclasses and the VM call it)."""
        boot_vm(self, vm)

    def _deliverable(self, vm: TEVM) -> int | None:
        """The virtual IRQ line to deliver now: virtual IF set, outside an STI shadow, a line
        pending, unmasked and not blocked by one in service."""
        if not vm.vcpu.IF or vm.steps < vm.inhibit_until:
            return None
        return vm.devices.pending_vector()

    def _go_on(self, vm: TEVM, left: int) -> bool:
        """Between two runs of ``vm``'s guest inside one ``run_guest`` (bt: its user code run
        directly, then its kernel in the translator, or back): would the world's run loop
        (``HostedMonitor._run``) do nothing but run the guest again? Its steps for the one VM
        it would run: no stop pending, no power-off, the virtual timer brought up to guest
        time, ``left`` (the budget still unspent) above 0, no virtual interrupt deliverable, not
        halted, no breakpoint to look at. True: the guest is entered again (``ops.enter``) and
        goes on; False: back to the loop, which finds the same and acts (the timer's tick is
        idempotent). One VM only, its timer on guest time (the loop's ``_schedule`` has work
        otherwise). A system call under bt saves a trip through the loop by it (about 200 of
        its 8,000 Python bytecodes)."""
        dv = vm.devices
        if (vm.pending is not None or dv.poweroff_code is not None or len(self.vms) != 1
                or self.machine_timer):
            return False
        m = self._host
        clock, tick = m.clock, dv.next_tick
        if tick is not None and clock >= tick:     # (Devices.tick has work)
            dv.tick(clock)
            tick = dv.next_tick
        if (left <= 0 or vm._vcpu.halted or m.breakpoints
                or self._deliverable(vm) is not None):
            return False
        deadline = clock + left
        if tick is not None and tick < deadline:
            deadline = tick
        self.ops.enter(self, vm, deadline)
        return True

    # ---- traps into the VMM ----------------------------------------------------------------
    def on_exception(self, vector: int, fault: Fault | None, source: str, next_eip) -> bool:
        """The real IDT's gates, all leading here (MachineHooks.on_exception): every exception,
        software interrupt and device interrupt arrives at the VMM first."""
        m = self._host
        vm = self.vms[self.current]
        self.traps += 1
        self.events["trap"] += 1
        if self.scheduler is not None and len(self.vms) > 1 \
                and machine_time(self) >= self._slice_end:
            m.request_exit()   # the slice (machine cycles) is spent: back to the run loop
        cpu = m.cpu     # (Trace.record: the event made only when the trace is read)
        self.trace.record((Interrupt, vm.index, m.clock, vector, event_name(vector, source),
                           source, fault.error_code if fault else None, cpu.cpl, 0, cpu.eip,
                           0))
        if source == "irq":
            # the VMM's own timer: a virtual tick is due, the budget or the slice is spent
            m.request_exit()
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
        if not self.emulates:
            self._reflect_exception(vm, fault)
            return
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
        self.trace.record((Emulation, vm.index, m.clock, insn.address, insn.text,
                           insn.mnemonic))
        # the VMM's run loop looks at virtual interrupts, devices and halts before going on
        m.request_exit()

    def on_ring_change(self, old: int, new: int, cause: str) -> None:
        """The real CPU changed rings on its own (MachineHooks.on_ring_change): an outward
        iretd or retf of the ring-1 kernel to user mode, which does not trap."""
        vm = self.vms[self.current]
        vc = vm._vcpu
        vc.cpl = new
        if cause == "iret" and old == 1:
            # a ring-0 iretd loads IF and IOPL from the image; the ring-1 one loaded neither.
            # The image is still in guest memory where the iretd popped it.
            fl = self._popped_eflags(vm, (self._host.iret_frame + 8) & MASK32)
            if fl is not None:
                vc.IF, vc.iopl = (fl >> 9) & 1, (fl >> 12) & 3
        if self._deliverable(vm) is not None:
            self._host.request_exit()

    def _popped_eflags(self, vm: TEVM, lin: int) -> int | None:
        """The EFLAGS image an outward iretd just popped at guest-linear ``lin``: read where
        the real CPU read it, through the real TLB entry its pop left (a dictionary lookup, no
        side effects), else peeked through the guest's tables (None when unmapped)."""
        m = self._host
        if (lin & 0xFFF) <= 0xFFC:
            base = m.tlb["rs"].get(lin >> 12)
            if base is not None:
                pa = base | (lin & 0xFFF)
                if vm.slice_base <= pa and pa + 4 <= vm.slice_base + vm.memory_size:
                    return int.from_bytes(m.mem[pa:pa + 4], "little")
        image = vm.peek(lin, 4)
        return None if image is None else int.from_bytes(image, "little")

    # ---- reflection: the VMM delivers into the guest ------------------------------------------
    def _reflect(self, vm: TEVM, vector: int, error_code: int | None, return_eip: int,
                 source: str) -> None:
        """As ``reflect.reflect`` (a method: subclasses and the VM call it)."""
        reflect(self, vm, vector, error_code, return_eip, source)

    #: (ESP, SS) for a reflection into virtual ring ``new``: the guest TSS's
    #: (``reflect.guest_tss_stack``; ``reflect`` makes its checks in one go with it)
    _inner_stack = guest_tss_stack

    def _reflect_exception(self, vm: TEVM, f: Fault) -> None:
        """As ``reflect.reflect_exception`` (a method: subclasses and the VM call it)."""
        reflect_exception(self, vm, f)

    def _inject_irq(self, vm: TEVM, line: int) -> None:
        """A virtual device interrupt, now deliverable: acknowledge it on the VM's interrupt
        controller and reflect it (as Machine.deliver_irq does)."""
        vector = vm.acknowledge_irq(line)
        vm.vcpu.halted = False
        try:
            self._reflect(vm, vector, None, self._host.cpu.eip, "irq")
        except Fault as f:
            self._reflect_exception(vm, f)

    # ---- the real CPU's segment registers ----------------------------------------------------

    def _load_real_segment(self, vm: TEVM, index: int, selector: int) -> None:
        """As ``segments.load_real_segment`` (a method: subclasses and the VM call it)."""
        load_real_segment(self, vm, index, selector)

    def _load_real_cs(self, vm: TEVM, selector: int, vring: int, cause: str,
                      d: Descriptor | None = None) -> None:
        """As ``segments.load_real_cs`` (a method: subclasses and the VM call it)."""
        load_real_cs(self, vm, selector, vring, cause, d)

    # ---- the shadow GDT ----------------------------------------------------------------------
    def shadow_gdt(self, vm: TEVM) -> None:
        """As ``segments.shadow_gdt`` (a method: subclasses and the VM call it)."""
        shadow_gdt(self, vm)

    def _sync_gdt(self, vm: TEVM) -> None:
        """As ``segments.sync_gdt``, for a monitor that ``watches_gdt``."""
        if self.watches_gdt:
            sync_gdt(self, vm)

    # ---- control registers -------------------------------------------------------------------
    def write_cr(self, vm: TEVM, n: int, v: int) -> None:
        """MOV to CRn on the virtual CPU. The real CR0 keeps paging on; a change of the guest's
        paging (CR3, CR0.PG/WP, CR4.PSE) drops the VM's shadow page tables, as the hardware
        flushes its TLB."""
        write_cr(self, vm, n, v)

    # ---- the paging mode (vmkit.vmm.paging) ---------------------------------------------------
    def invlpg(self, vm: TEVM, lin: int) -> None:
        """The guest's invlpg: the paging mode's (shadow paging drops the page's entry)."""
        self.paging.invlpg(vm, lin)

    def _page_fault(self, vm: TEVM, fault: Fault) -> None:
        """A real #PF while the guest ran: the paging mode hides it (shadow paging: fills the
        shadow entry when the guest's own tables allow the access; the guest retries) or hands
        the access to the software MMU; the guest's own #PF is raised and reflected."""
        lin, err = fault.address, fault.error_code
        write, user = bool(err & 2), bool(err & 4)
        if lin >= VMM_WINDOW:
            window_fault(self, vm, lin, write, user)
            return
        outcome = self.paging.page_fault(vm, lin, write, user)
        if outcome == EMULATE:
            emulate_one(self, vm)
        elif outcome != "hidden":
            raise fault                          # the guest's own, as it arrived

    # ---- statistics and cycles ---------------------------------------------------------------
    #: stats (vmkit.vmm.state.report): names of declared counters, or (key, source)
    stats_fields = (
        ("instructions", HostedMonitor._total_steps), ("host_instructions", state.host("steps")),
        ("interrupts", state.total("reflected")), ("ring_transitions", state.traced("ring")),
        ("page_faults", lambda te: te.reflected["#PF"]),
        ("real_page_faults", state.traced("page_fault")),
        ("tlb_misses", state.host("tlb_misses")), ("port_io", state.traced("io")), "traps",
        "emulated", "reflected", "hidden_page_faults",
        ("shadow_updates", state.event("shadow_update")), "world_switches",
        ("walk_references", state.host("walk_refs")), ("pt_write_traps", state.total("pt_traps")),
        "pt_traps")

    def event_counts(self) -> Counter:
        """Events by cost category. ``native`` is what the real CPU retired: an emulated
        instruction never retired there, so it is counted once, as ``emulate``; the delivery
        of every trap is in ``trap`` (reflections are the VMM's work after a trap)."""
        counts = state.copy_counts(self.events)
        counts["native"] += self._host.steps
        counts["page_walk"] += self._host.walk_refs
        return counts


def _error_text(ex: Exception) -> str:
    if isinstance(ex, VmkitError):
        return str(ex)
    return f"VMM error ({type(ex).__name__}: {ex})"

