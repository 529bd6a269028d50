"""The hardware-assisted monitor (see the package text)."""

from __future__ import annotations

from collections import Counter

from vmkit.errors import VmkitError
from vmkit.isa.faults import Fault
from vmkit.machine.machine import Machine
from vmkit.trace import Emulation, InstructionRetired
from vmkit.vmm import passthrough, state
from vmkit.vmm.hw.exits import _DEFAULT_HANDLERS
from vmkit.vmm.hw.guestmmu import ept_violation, exception_exit, guest_invlpg, write_cr
from vmkit.vmm.hw.inject import inject_fault
from vmkit.vmm.hw.nonroot import NonRootMode
from vmkit.vmm.hw.ops import HW_OPS
from vmkit.vmm.hw.vcpu import HWVM
from vmkit.vmm.hw.vmcs import H_ONES, VMCS, MiB, NonRootExit, VmcsControls
from vmkit.vmm.hw.vmexit import ept_exit, exit_during_delivery, record_exit
from vmkit.vmm.paging import mode_class, shadow_choice
from vmkit.vmm.sched import _init_scheduling
from vmkit.vmm.world import DEFAULT_SLICE, HostedMonitor


#: event name (``delivered``'s keys) -> True for a system call or an interrupt, False for a fault
_INTERRUPT: dict = {}


class HardwareAssisted(HostedMonitor):
    """Hardware-assisted virtualization, VT-x style (see the module text).

    ``HardwareAssisted(img, ..., ept=True, lazy_ept=False, paging=None, controls=None,
    slice=DEFAULT_SLICE, costs=CostModel)``: ``ept`` chooses nested paging or shadow paging;
    ``paging`` names the paging mode (:mod:`vmkit.vmm.paging`: ``"ept"``, or a shadow mode
    such as ``"vtlb"`` or ``"traced"``; ``ept=False`` is ``paging="vtlb"``; ``shadow="vtlb" |
    "traced"`` is a shadow mode, without EPT); ``controls`` (a dict of
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
    #: the monitor protocol's operations (vmkit.vmm.ops): VM entry, exits, the VMCS switch
    ops = HW_OPS

    def __init__(self, *images, costs=None, trace=None, ept: bool | None = None,
                 lazy_ept: bool = False, controls=None, slice: int = DEFAULT_SLICE,
                 scheduler=None, weights=None, quantum=None, machine_timer: bool = False,
                 assign=None, paging: str | None = None, shadow: str | None = None):
        # ---- direct assignment (vmkit.vmm.passthrough): assign={vm index: ["disk"]} -> {port: vm}
        self.assigned = passthrough.resolve_assignment(assign, len(images), self.name)
        # ---- end direct assignment
        if ept is not None and not isinstance(ept, bool):
            raise VmkitError(f"ept must be True (nested paging) or False (shadow paging), got "
                             f"{ept!r}")
        if not isinstance(lazy_ept, bool):
            raise VmkitError(f"lazy_ept must be True or False, got {lazy_ept!r}")
        paging = shadow_choice(self, shadow, paging)
        if paging is None:
            paging = "vtlb" if ept is False else self.ops.default_paging
        mode = mode_class(self, paging, self.ops.paging_kinds)
        if ept is not None and ept != (mode.kind == "nested"):
            raise VmkitError(f"ept={ept} contradicts paging={paging!r} (a {mode.kind} paging "
                             f"mode): give one of them")
        ept = mode.kind == "nested"
        if lazy_ept and not ept:
            raise VmkitError("lazy_ept needs ept=True (there is no EPT with shadow paging)")
        if not isinstance(slice, int) or isinstance(slice, bool) or slice < 1:
            raise VmkitError(f"slice must be a positive number of host instructions, got "
                             f"{slice!r}")
        self.ept = ept
        self.lazy_ept = lazy_ept
        self.paging = mode(self, lazy=lazy_ept, exit=ept_exit) if ept else mode(self)
        self.slice = slice
        _init_scheduling(self, images, scheduler, weights, quantum, machine_timer)
        self._controls = VmcsControls.make(controls, ept)
        self.handlers = dict(type(self).handlers)
        self.current = 0
        self._host: Machine | None = None
        self.nonroot = NonRootMode(self)   # the machine's hooks in non-root mode
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
        self._host.flush_icache()
        return c

    # ---- construction ------------------------------------------------------------------------
    def _make_machine(self, index: int, image) -> Machine:
        """One host machine for every VM: the VMM area, 1 MiB per VM, then the slices."""
        if self._host is None:
            self._host = Machine(self._plan_slices(), trace=self.trace)
            mem = self._host.mem
            mem[0:MiB] = bytes(MiB)
            mem[H_ONES:H_ONES + 0x1000] = b"\xFF" * 0x1000
        return self._host

    # ---- the public surface --------------------------------------------------------------------
    @property
    def vmcs(self) -> VMCS:
        """The VMCS of the current VM."""
        return self.vms[self.current].vmcs

    # ---- VM exits ----------------------------------------------------------------------------
    def _record(self, x: NonRootExit) -> None:
        """The CPU's side of a VM exit: write the exit information fields of the current VM's
        VMCS, count and trace it, and leave non-root mode (the machine's run returns)."""
        record_exit(self, x)

    def _exit_during_delivery(self, f: Fault, vector: int, error_code, source: str):
        """A fault while the CPU delivers an event: the exit it causes (with the event as
        IDT-vectoring information), or None when the hardware handles it as a nested
        exception (double-fault rules)."""
        return exit_during_delivery(self, f, vector, error_code, source)

    def _retired(self, vm: HWVM, mnemonic: str, address: int, text: str) -> None:
        """Count an instruction the VMM completed: it retired in guest time (not on the CPU,
        so the cost model counts it as ``emulate``); blocking by STI ends with it."""
        m = self._host
        if self.trace.wants_instructions():
            self.trace.add(InstructionRetired(m.clock, address=address, text=text,
                                              ring=m.cpu.cpl, vm=vm.index))
        m.clock += 1
        vm.steps += 1
        m.irq_inhibit_until = -1
        self.emulated[mnemonic] += 1
        self.events["emulate"] += 1
        self.trace.add(Emulation(m.clock, address=address, text=text, mnemonic=mnemonic,
                                 vm=vm.index))

    def inject_fault(self, vm: HWVM, f: Fault, vectoring: int = 0) -> None:
        """Inject exception ``f`` into the guest at the next entry. When it arose while the CPU
        delivered an exception (``vectoring``), apply the double-fault rules of SDM Vol. 3A,
        Table 6-5 as the hardware would have: #DF, or a triple fault that ends the VM."""
        inject_fault(self, vm, f, vectoring)

    def exception_exit(self, vm: HWVM, vmcs: VMCS) -> None:
        """EXCEPTION_NMI: #PF under shadow paging is a hidden fault or the guest's own; any
        other exception is the guest's, reflected by injection."""
        exception_exit(self, vm, vmcs)

    def ept_violation(self, vm: HWVM, vmcs: VMCS) -> None:
        """EPT_VIOLATION: map a page of the VM's memory (lazy EPT), or emulate an access beyond
        it."""
        ept_violation(self, vm, vmcs)

    # ---- the VMM's side of the guest's control registers --------------------------------------
    def write_cr(self, vm: HWVM, n: int, v: int) -> None:
        """MOV to CRn for the guest: the read shadow gets the guest's value, the real register
        the guest's value with the bits VMX operation needs (CR0.NE, CR4.VMXE; with shadow
        paging CR0.PG and WP on and CR4.PSE off, and the guest's CR3 kept by the VMM)."""
        write_cr(self, vm, n, v)

    def guest_invlpg(self, vm: HWVM, lin: int) -> None:
        """The guest's INVLPG, after an exit."""
        guest_invlpg(self, vm, lin)

    # ---- intercepts: what the CPU does with an instruction in non-root mode -------------------
    # (the stubs are the machine's ``intercept`` hook: vmkit.vmm.hw.nonroot.NonRootMode)
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
    #: stats (vmkit.vmm.state.report): names of declared counters, or (key, source)
    stats_fields = (
        ("instructions", HostedMonitor._total_steps),
        ("native_instructions", state.host("steps")), ("interrupts", state.total("delivered")),
        ("ring_transitions", state.traced("ring")),
        ("page_faults", lambda hw: hw.delivered["#PF"]), ("tlb_misses", state.host("tlb_misses")),
        ("port_io", state.traced("io")), ("traps", state.total("vm_exits")), "vm_exits",
        "injections", "emulated", ("walk_references", state.host("walk_refs")),
        "hidden_page_faults", "ept_fills", "world_switches",
        ("shadow_updates", state.event("shadow_update")),
        ("pt_write_traps", state.total("pt_traps")), "pt_traps")

    def event_counts(self) -> Counter:
        """Events by cost category: ``native`` is what the CPU retired in non-root mode; an
        instruction the VMM completed counts once, as ``emulate``; every event the CPU delivered
        through a guest's IDT (injected ones included) is an ``exception`` (a fault) or an
        ``interrupt`` (a system call or an external interrupt)."""
        counts = state.copy_counts(self.events)
        m = self._host
        get = counts.get    # (+= on a Counter calls its __missing__ for a new key)
        counts["native"] = get("native", 0) + m.steps
        counts["page_walk"] = get("page_walk", 0) + m.walk_refs
        # a fault delivered in non-root mode is priced as natively (``exception``), a system
        # call or interrupt as ``interrupt`` (the scheduler prices the counts at every run
        # chunk: each event name's kind is looked up once a process, _INTERRUPT)
        interrupts = faults = 0
        for k, n in self.delivered.items():
            kind = _INTERRUPT.get(k)
            if kind is None:
                kind = _INTERRUPT[k] = k.startswith(("int ", "irq "))
            if kind:
                interrupts += n
            else:
                faults += n
        counts["interrupt"] = get("interrupt", 0) + interrupts
        counts["exception"] = get("exception", 0) + faults
        return counts

    # ---- snapshots ---------------------------------------------------------------------------
    def _before_restore(self, st: dict) -> None:
        self.current = st["declared"]["current"]   # its EPT first: the machine's memory view
        self.paging.switched_in(self.vms[self.current])
