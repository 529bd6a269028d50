"""The trap-and-emulate monitor: the deprivileged core with the instruction handlers as its
policy (see the package text)."""

from __future__ import annotations

from collections import Counter

from vmkit.isa import semantics as sem
from vmkit.vmm.deprivileged.handlers import _DEFAULT_HANDLERS
from vmkit.vmm.deprivileged.monitor import Deprivileged
from vmkit.vmm.te.holes import HoleCheck, is_hole_form, never_compared

__all__ = ["TrapAndEmulate"]


class TrapAndEmulate(Deprivileged):
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

    ``shadow="vtlb" | "traced"`` (or ``paging=``) names the shadow paging mode
    (:mod:`vmkit.vmm.paging`): the virtual TLB by default, or traced shadow page tables (guest
    page tables write-protected, each guest PTE store a trap that updates the shadow).

    ``assign={0: ["disk"]}`` assigns a device directly to one VM: its ports are allowed in the
    TSS I/O bitmap while that VM runs (no trap); other VMs' accesses are refused
    (``refused_io``). See :mod:`vmkit.vmm.iovirt` and docs/io-virtualization.md.

    ``stats`` adds ``traps``, ``emulated`` (Counter by mnemonic), ``reflected`` (Counter by
    vector name), ``hidden_page_faults``, ``shadow_updates``, ``world_switches`` and ``holes``
    (Counter by mnemonic: the virtualization holes the guest fell into, each also a ``Hole``
    trace event; see :mod:`vmkit.vmm.te.holes`).
    """

    name = "te"
    title = "trap-and-emulate (kernel in ring 1, shadow page tables)"
    #: the default handlers (mnemonic -> handler); every instance works on its own copy
    emulate: dict = dict(_DEFAULT_HANDLERS)
    monitor_state = ("holes",)
    stats_fields = ("holes",)

    def __init__(self, *images, **kw):
        self.holes: Counter = Counter()
        super().__init__(*images, **kw)

    def intercept(self, insn):
        """A sensitive, unprivileged instruction (``vmkit.classify``) runs checked for holes
        (MachineHooks.intercept, asked once when the machine compiles it); every other one as
        compiled, and so does one whose bare run could never be made (``never_compared``)."""
        if not is_hole_form(insn) or never_compared(insn):
            return None
        real = sem.compile_insn(insn, self._host.compile_globals)
        if isinstance(real, str):
            return None
        return HoleCheck(self, insn, real)

