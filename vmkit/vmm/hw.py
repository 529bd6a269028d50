"""Hardware-assisted virtualization: a VT-x-like monitor (Intel SDM Vol. 3C, chapters 24-29).

Section numbers are those of the Intel SDM's combined Volumes 3A-3D of September 2023 (order
number 325384-081US) throughout; editions before the VMX chapters moved number chapters 25-29
one lower (VM exits were chapter 27 there, chapter 28 here).

Root and non-root mode
----------------------
VT-x adds a second dimension to the CPU's privilege: *VMX root* operation, where the VMM runs,
and *VMX non-root* operation, where guests run. It is orthogonal to the rings: the guest kernel
runs in **non-root ring 0** and its user programs in non-root ring 3, so ``push cs`` shows ring 0
and ``popfd``, ``sgdt``, ``smsw``, ``lar`` see and change the guest's own state. (The course
notes' "a new root mode privilege level under level 0" is imprecise: there is no ring -1; root
mode has its own rings 0-3 too, and non-root ring 0 is a real ring 0 whose *sensitive* operations
the VMM chooses to make exit.) What makes it work is the **VMCS**, one per VM: on VM entry the
CPU loads the guest's registers (GDTR, IDTR, CR0, CR3, CR4, segment registers, EFLAGS ...) from
its guest-state area, and on a **VM exit** it saves them there and loads the VMM's from the
host-state area, recording why (exit reason, qualification). The **VM-execution controls** say
which events exit: this module models HLT exiting, CR3-load/store exiting, the CR0/CR4
guest/host masks with read shadows, unconditional I/O exiting or I/O bitmaps, the exception
bitmap, external-interrupt exiting, interrupt-window exiting, INVLPG and RDTSC exiting; CPUID
always exits. Exit reasons carry Intel's basic numbers and Linux's names (``EXIT_REASONS``).

How non-root mode is modelled
-----------------------------
One host :class:`~vmkit.machine.machine.Machine` (a :class:`_NonRootMachine`) holds every VM
(the host layout of ``TrapAndEmulate``: a VMM area, 1 MiB per VM for its EPT or shadow tables,
then one memory slice per VM). While a VM runs, **the real CPU state is the guest state**: its
CPL is the guest's (0 in the kernel), GDTR/IDTR/TR are the guest's, EFLAGS.IF is the guest's,
and CR0/CR4 are the guest's values plus the bits VMX operation requires (CR0.NE, CR4.VMXE; with
shadow paging also CR0.PG and CR0.WP), which the read shadows hide. The instructions the
controls make exit are intercepted when the machine compiles them (``Machine.intercept``): it
gets a stub that makes the checks with priority over a VM exit (CPL for privileged instructions,
IOPL and the TSS I/O bitmap for IN/OUT, SDM 26.1.1) and then raises :class:`NonRootExit`;
conditional exits (I/O bitmaps, CR0/CR4 writes that change an owned bit) decide at run time and
run the instruction natively otherwise. The icache is flushed whenever the controls change.
Exceptions in the exception bitmap exit through ``Machine.exception_hook``, also when they
happen *during* event delivery (the event is then saved as IDT-vectoring information and
re-injected). The VMM's own timer is an external interrupt that exits whatever the guest's IF
(external-interrupt exiting); interrupt-window exiting exits at the first instruction boundary
where the guest's IF is 1 and no STI shadow blocks. A VM exit unwinds like a fault (the
instruction has changed nothing), ends the machine's run, and the VMM (Python, "root mode")
handles it from the VMCS's exit fields, then resumes the guest (VM entry).

Nested paging (``ept=True``, the default)
-----------------------------------------
The guest's page tables map linear to guest-physical addresses, and the VMM's **EPT** maps
guest-physical to host-physical. The hardware walks both (``MMUMixin._walk_nested``): every
guest-physical address of the guest's walk (each page-table entry, then the final frame) is
itself translated through the EPT, so a TLB miss costs ``n*m + n + m`` memory references for
n guest and m EPT levels -- 8 here, where the EPT has **two levels** of 4-byte entries (a 32-bit
guest-physical address: 10 + 10 + 12 bits; R/W/X in bits 0-2 as in VT-x). Real VT-x uses four
levels of 8-byte entries (48-bit guest-physical), 24 references for a 4-level guest. They are
counted in ``stats["walk_references"]`` and priced as ``page_walk``. The guest loads CR3 and
runs INVLPG without exits (CR3-load exiting off), and its page faults go straight to its own
handler. The EPT maps the VM's memory when the VM is created (``lazy_ept=True`` maps each page
on its first touch instead, an EPT_VIOLATION exit per page, as KVM does); guest-physical
addresses beyond the VM's memory are never mapped, so touching one is an EPT violation that the
VMM emulates (reads give all ones, writes are dropped, as on a PC bus).

Shadow paging (``ept=False``)
-----------------------------
Without EPT the real CR3 holds a shadow page directory (guest-linear -> host-physical) that the
VMM builds as a virtual TLB, with the logic of ``TrapAndEmulate``: CR3-load and CR3-store
exiting (the guest's CR3 is virtualized), INVLPG exiting, #PF in the exception bitmap (a #PF that
exits leaves CR2 alone, SDM 28.1), and CR0.PG/WP and CR4.PSE owned by the VMM through the masks.
A #PF exit either fills the shadow entry (a hidden page fault) or injects the guest's own #PF.

Event injection
---------------
Virtual devices (console, interrupt controller, timer, input, power-off) belong to the VMM, one
set per VM, as in ``TrapAndEmulate``. When the virtual interrupt controller has a line to
deliver, the VMM writes the **VM-entry interruption-information field** (vector, type, error
code; ``vmcs.inject``) if the guest can take it (IF = 1, no STI blocking), else it turns on
interrupt-window exiting and injects at that exit. On VM entry the CPU delivers the event
through the guest's IDT, with the guest's own gate checks, stack switch and frame: it is the
machine's own ``deliver()`` in non-root mode. The timer interrupt therefore reaches the guest at
the same guest instruction as under ``Native``.

I/O exiting and direct assignment
---------------------------------
By default every IN/OUT exits (unconditional I/O exiting), and the VMM emulates it from the exit
qualification alone (port, size, direction: no decoding). With ``controls={"io_exiting": False}``
the VMM switches to I/O bitmaps that still exit on the ports it must virtualize to keep control
(interrupt controller 0x20/0x21, timer 0x40, power-off 0xF4: ``REQUIRED_IO_EXITS``) and gives
the VM the other devices directly (console, input, clock): *direct assignment*, the guest's
IN/OUT reach the VM's device with no exit. ``io_bitmap=`` names the exiting ports explicitly;
it must include ``REQUIRED_IO_EXITS``.

Several VMs
-----------
``HardwareAssisted(img_a, img_b, slice=...)``: each VM has its own VMCS, EPT (or shadow tables),
devices and memory slice; the VMX-preemption timer ends a slice (exit 52) and the VMM switches
worlds (the TLB and the icache go: no VPID is modelled).

Cycles: ``vm_exit`` per exit round trip, ``emulate`` per instruction the VMM completes,
``page_walk`` per 2-D reference, ``shadow_update`` per EPT or shadow entry written,
``hidden_fault`` per hidden page fault, ``interrupt`` per event the CPU delivers through the
guest's IDT, ``world_switch``; everything else the guest runs directly counts as ``native``.

Limits: a guest-physical access beyond memory during event delivery (a guest IDT or stack placed
beyond its memory) ends the VM; software interrupts whose delivery exits are executed again
rather than re-injected (same effect); no VPID, no CR3-target list, no MSRs, no descriptor-table
exiting, no posted interrupts or APIC virtualization; CPUID shows the host's leaves without the
"hypervisor present" bit (so that guests see exactly what they see natively).
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, fields, replace

from vmkit.errors import VmkitError
from vmkit.isa import semantics as sem
from vmkit.isa.decode import DECODER, Imm, Mem, Reg
from vmkit.isa.faults import HAS_ERROR_CODE, Fault, Resched
from vmkit.machine import rules
from vmkit.machine.cpu import CPU, EFLAGS, MASK32
from vmkit.machine.devices import IRQ_BASE, Devices
from vmkit.machine.machine import BOOT_GDT, BOOT_GDT_BYTES, Machine, RunResult
from vmkit.machine.mmu import CR0_PG, CR0_WP, CR4_PSE, NESTED_R, NESTED_W, NESTED_X, Sync
from vmkit.machine.system import SystemMixin, TripleFault
from vmkit.trace import Emulation, InstructionRetired, VmEntry, VmExit
from vmkit.vmm import passthrough
from vmkit.vmm.base import MonitorSnapshot
from vmkit.vmm.sched import _init_scheduling, _sched_state, _set_sched_state
from vmkit.vmm.te import DEFAULT_SLICE, TEVM, CannotEmulate, _name
from vmkit.vmm.shadow import ShadowPaging
from vmkit.vmm.world import HostedMonitor
from vmkit.vmm.world import VMStop as _VMStop

__all__ = ["HardwareAssisted", "VmcsControls", "VMCS", "HostState", "EPT", "GuestCPU", "HWVM",
           "NonRootExit", "EXIT_REASONS", "EXIT_NUMBERS", "REQUIRED_IO_EXITS",
           "interruption_info", "exit_handler"]

MiB = 1 << 20
IF = 0x200
CR0_PE, CR0_TS, CR0_ET, CR0_NE = 1, 1 << 3, 1 << 4, 1 << 5
CR4_TSD, CR4_UMIP, CR4_VMXE = 1 << 2, 1 << 11, 1 << 13

#: Basic exit reasons (SDM Vol. 3D, Appendix C), named as Linux names them
#: (arch/x86/include/uapi/asm/vmx.h). The ones this monitor produces are marked in the docs.
EXIT_REASONS = {
    0: "EXCEPTION_NMI", 1: "EXTERNAL_INTERRUPT", 2: "TRIPLE_FAULT", 3: "INIT_SIGNAL",
    4: "SIPI_SIGNAL", 7: "INTERRUPT_WINDOW", 8: "NMI_WINDOW", 9: "TASK_SWITCH", 10: "CPUID",
    12: "HLT", 13: "INVD", 14: "INVLPG", 15: "RDPMC", 16: "RDTSC", 18: "VMCALL",
    28: "CR_ACCESS", 29: "DR_ACCESS", 30: "IO_INSTRUCTION", 31: "MSR_READ", 32: "MSR_WRITE",
    33: "INVALID_STATE", 36: "MWAIT_INSTRUCTION", 37: "MONITOR_TRAP_FLAG",
    40: "PAUSE_INSTRUCTION", 46: "GDTR_IDTR", 47: "LDTR_TR", 48: "EPT_VIOLATION",
    49: "EPT_MISCONFIG", 52: "PREEMPTION_TIMER", 54: "WBINVD", 55: "XSETBV",
}
EXIT_NUMBERS = {n: k for k, n in EXIT_REASONS.items()}
EXCEPTION_NMI, EXTERNAL_INTERRUPT, TRIPLE_FAULT, INTERRUPT_WINDOW = 0, 1, 2, 7
CPUID, HLT, INVLPG, RDTSC, CR_ACCESS, IO_INSTRUCTION = 10, 12, 14, 16, 28, 30
EPT_VIOLATION, PREEMPTION_TIMER = 48, 52
#: exits caused by an instruction: the VMM completes it and moves EIP past it
INSTRUCTION_EXITS = frozenset({CPUID, HLT, INVLPG, RDTSC, CR_ACCESS, IO_INSTRUCTION})

# interruption types (bits 10:8 of the interruption-information fields, SDM Vol. 3C 25.8.3)
INTR_EXTERNAL, INTR_NMI, INTR_HW_EXCEPTION, INTR_SW_INTERRUPT = 0, 2, 3, 4
INTR_PRIV_SW_EXCEPTION, INTR_SW_EXCEPTION = 5, 6
INTR_VALID, INTR_ERROR_VALID = 1 << 31, 1 << 11
INTR_TYPE_NAMES = {0: "external interrupt", 2: "NMI", 3: "hardware exception",
                   4: "software interrupt", 5: "privileged software exception",
                   6: "software exception"}
_SOURCE_TYPE = {"irq": INTR_EXTERNAL, "exception": INTR_HW_EXCEPTION, "int": INTR_SW_INTERRUPT,
                "int3": INTR_SW_EXCEPTION, "into": INTR_SW_EXCEPTION}

#: ports whose accesses the VMM must see to keep control: it virtualizes the interrupt
#: controller and the timer (how it injects interrupts at the right guest instruction) and
#: power-off ends the VM, not the host
REQUIRED_IO_EXITS = frozenset({0x20, 0x21, 0x40, 0xF4})

#: the ports of the kit's devices (vmkit.machine.devices)
DEVICE_PORTS = (0xE9, 0x20, 0x21, 0x40, 0x41, 0x60, 0x64, 0xF4)

#: host-physical page of all ones (frames beyond a VM's memory under shadow paging)
H_ONES = 0x15000
_WINDOW = -1     # pseudo IRQ line of the interrupt window in _NonRootMachine
_I = struct.Struct("<I")


def interruption_info(vector: int, type_: int, error_code: int | None = None) -> int:
    """An interruption-information field (VM-exit, IDT-vectoring or VM-entry; SDM Vol. 3C,
    Table 25-17): bits 7:0 vector, 10:8 type, 11 error code valid, 31 valid."""
    return (vector & 0xFF) | (type_ << 8) | (INTR_ERROR_VALID if error_code is not None else 0) \
        | INTR_VALID


def _decode_info(info: int) -> tuple[int, int]:
    return info & 0xFF, (info >> 8) & 7


# =================================================================================================
# The VMCS
# =================================================================================================
@dataclass(frozen=True)
class VmcsControls:
    """The VM-execution controls a VMM writes into every VMCS (SDM Vol. 3C, 25.6). ``None``
    means "the VMM's choice for its paging mode" (see :meth:`resolve`).

    Every field is a control of real VT-x. CPUID always exits (there is no control for it);
    interrupt-window exiting is set and cleared by the VMM at run time (``VMCS.
    interrupt_window_exiting``), not here."""
    #: HLT exits (else the CPU halts in non-root mode until the VMM's timer exits)
    hlt_exiting: bool = True
    #: every IN/OUT exits ("unconditional I/O exiting"); ignored when ``io_bitmap`` is given.
    #: False = I/O bitmaps exiting only on REQUIRED_IO_EXITS, the rest assigned directly
    io_exiting: bool = True
    #: "use I/O bitmaps": the ports whose IN/OUT exit (a set of port numbers)
    io_bitmap: frozenset | None = None
    #: MOV to CR3 exits (None: on with shadow paging, off with EPT)
    cr3_load_exiting: bool | None = None
    #: MOV from CR3 exits (None: on with shadow paging, off with EPT)
    cr3_store_exiting: bool | None = None
    #: INVLPG exits (None: on with shadow paging, off with EPT)
    invlpg_exiting: bool | None = None
    #: RDTSC exits (the VMM answers with the VM's guest time, as the CPU does natively)
    rdtsc_exiting: bool = False
    #: CR0 bits the VMM owns: a guest MOV to CR0 that changes one exits, and reads of an owned
    #: bit show the read shadow (default: every bit but TS, as KVM owns CR0)
    cr0_guest_host_mask: int = 0xFFFFFFFF & ~CR0_TS
    #: CR4 bits the VMM owns (default: all; the real CR4 has VMXE set, the guest must not see it)
    cr4_guest_host_mask: int = 0xFFFFFFFF
    #: bit n set: exception n exits instead of going through the guest's IDT (None: none with
    #: EPT, #PF with shadow paging)
    exception_bitmap: int | None = None
    #: external interrupts (the VMM's timer) exit whatever the guest's IF; the VMM needs it
    external_interrupt_exiting: bool = True

    @classmethod
    def make(cls, controls, ept: bool) -> "VmcsControls":
        """Controls from None, a dict of field -> value, or a VmcsControls; resolved for the
        paging mode and checked (VmkitError says what the VMM needs and why)."""
        if controls is None:
            c = cls()
        elif isinstance(controls, VmcsControls):
            c = controls
        elif isinstance(controls, dict):
            names = {f.name for f in fields(cls)}
            bad = sorted(set(controls) - names)
            if bad:
                raise VmkitError(f"unknown VMCS controls {bad}; expected some of "
                                 f"{', '.join(sorted(names))}")
            c = cls(**controls)
        else:
            raise VmkitError(f"controls must be a dict or a VmcsControls, got "
                             f"{type(controls).__name__}")
        return c.resolve(ept)

    def resolve(self, ept: bool) -> "VmcsControls":
        """Fill the ``None`` fields for the paging mode and check the result."""
        shadow = not ept
        ch = {}
        for f in ("cr3_load_exiting", "cr3_store_exiting", "invlpg_exiting"):
            if getattr(self, f) is None:
                ch[f] = shadow
        if self.exception_bitmap is None:
            ch["exception_bitmap"] = 1 << 14 if shadow else 0
        if self.io_bitmap is not None:
            ch["io_bitmap"] = frozenset(self.io_bitmap)
        elif not self.io_exiting:
            ch["io_bitmap"] = REQUIRED_IO_EXITS
        c = replace(self, **ch)
        c._check(ept)
        return c

    def _check(self, ept: bool) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("cr0_guest_host_mask", "cr4_guest_host_mask", "exception_bitmap"):
                if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MASK32:
                    raise VmkitError(f"VMCS control {f.name} must be a 32-bit mask, got {v!r}")
            elif f.name == "io_bitmap":
                if v is not None and not all(isinstance(p, int) and 0 <= p <= 0xFFFF for p in v):
                    raise VmkitError("VMCS control io_bitmap must be a set of port numbers "
                                     "0-0xFFFF")
            elif not isinstance(v, bool):
                raise VmkitError(f"VMCS control {f.name} must be True or False, got {v!r}")
        if not self.external_interrupt_exiting:
            raise VmkitError("external_interrupt_exiting must stay on: the VMM's timer is how it "
                             "takes the CPU back (with it off, VT-x would deliver the host's "
                             "interrupts through the guest's IDT)")
        if self.io_bitmap is not None and not REQUIRED_IO_EXITS <= self.io_bitmap:
            missing = ", ".join(f"{p:#x}" for p in sorted(REQUIRED_IO_EXITS - self.io_bitmap))
            raise VmkitError(f"io_bitmap must make ports {missing} exit: the VMM virtualizes the "
                             f"interrupt controller and the timer (how it injects interrupts) and "
                             f"power-off ends the VM (the other ports may be assigned directly)")
        if not ept:
            need = [n for n in ("cr3_load_exiting", "cr3_store_exiting", "invlpg_exiting")
                    if not getattr(self, n)]
            if not self.exception_bitmap & (1 << 14):
                need.append("exception_bitmap bit 14 (#PF)")
            if ~self.cr0_guest_host_mask & (CR0_PG | CR0_WP | CR0_PE):
                need.append("cr0_guest_host_mask bits PE, WP, PG")
            if not self.cr4_guest_host_mask & CR4_PSE:
                need.append("cr4_guest_host_mask bit PSE")
            if need:
                raise VmkitError(f"shadow paging (ept=False) needs {', '.join(need)}: the VMM "
                                 f"keeps its shadow page tables right only if it sees every "
                                 f"change of the guest's paging")

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class HostState:
    """The host-state area (SDM Vol. 3C, 25.5): what every VM exit loads into the CPU, the
    VMM's own control registers, tables and the address of its exit handler. The kit's VMM is
    Python, so nothing runs there: these are the values a VMM would program, for display."""
    cr0: int = 0x80050033       # PG, AM, WP, NE, ET, MP, PE
    cr3: int = 0x00001000       # the VMM's page directory
    cr4: int = CR4_VMXE | CR4_PSE
    gdtr_base: int = 0x00002000
    idtr_base: int = 0x00003000
    tr_selector: int = 0x18
    rsp: int = 0x00010000       # the VMM's stack
    rip: int = 0x00004000       # the VMM's exit handler ("vmx_vmexit")


class VMCS:
    """One VM's virtual-machine control structure (SDM Vol. 3C, chapter 25).

    * guest-state area: ``guest`` (the guest's registers: the real CPU while the VM runs, the
      saved copy while another VM has the CPU), ``activity_state`` ("active"/"hlt") and
      ``interruptibility`` (blocking by STI);
    * host-state area: ``host`` (:class:`HostState`);
    * VM-execution controls: ``controls`` (:class:`VmcsControls`), the CR0/CR4 read shadows,
      ``interrupt_window_exiting``, ``ept_pointer``;
    * VM-exit information: ``exit_reason`` (basic number; ``exit_name``), ``exit_qualification``,
      ``guest_linear_address``, ``guest_physical_address``, ``exit_interruption_info`` and
      ``exit_interruption_error_code``, ``idt_vectoring_info`` and ``idt_vectoring_error_code``
      (the event being delivered when the exit happened), ``exit_instruction_length``;
    * VM-entry controls: ``entry_interruption_info``, ``entry_exception_error_code``,
      ``entry_instruction_length`` (event injection, :meth:`inject`).
    """

    _STATE = ("controls", "interrupt_window_exiting", "cr0_read_shadow", "cr4_read_shadow",
              "ept_pointer", "exit_reason", "exit_qualification", "guest_linear_address",
              "guest_physical_address", "exit_interruption_info", "exit_interruption_error_code",
              "idt_vectoring_info", "idt_vectoring_error_code", "exit_instruction_length",
              "exit_instruction", "entry_interruption_info", "entry_exception_error_code",
              "entry_instruction_length")

    def __init__(self, vm: "HWVM", controls: VmcsControls):
        self.vm = vm
        self.host = HostState()
        self.controls = controls
        self.interrupt_window_exiting = False
        self.cr0_read_shadow = 0x00000011       # the CR0 the guest believes (power-on: PE, ET)
        self.cr4_read_shadow = 0
        self.ept_pointer: int | None = None
        self.exit_reason: int | None = None
        self.exit_qualification = 0
        self.guest_linear_address: int | None = None
        self.guest_physical_address: int | None = None
        self.exit_interruption_info = 0
        self.exit_interruption_error_code: int | None = None
        self.idt_vectoring_info = 0
        self.idt_vectoring_error_code: int | None = None
        self.exit_instruction_length = 0
        self.exit_instruction = None            # the decoded instruction (the kit's extra)
        self.entry_interruption_info = 0
        self.entry_exception_error_code: int | None = None
        self.entry_instruction_length = 0

    @property
    def guest(self) -> CPU:
        """The guest-state area's registers (live in the CPU while this VM runs)."""
        return self.vm.real_cpu

    @property
    def activity_state(self) -> str:
        return "hlt" if self.guest.halted else "active"

    @property
    def interruptibility(self) -> int:
        """Bit 0 "blocking by STI" (SDM Vol. 3C, Table 25-3)."""
        vm = self.vm
        if vm.current:
            m = vm.machine
            return 1 if m.steps < m._irq_inhibit_until else 0
        return 1 if vm.inhibit_left else 0

    @property
    def exit_name(self) -> str | None:
        r = self.exit_reason
        return None if r is None else EXIT_REASONS.get(r, f"EXIT_{r}")

    def inject(self, vector: int, type_: int = INTR_EXTERNAL, error_code: int | None = None,
               length: int = 0) -> None:
        """Event injection: the next VM entry delivers ``vector`` through the guest's IDT."""
        self.entry_interruption_info = interruption_info(vector, type_, error_code)
        self.entry_exception_error_code = error_code
        self.entry_instruction_length = length

    @property
    def injection_pending(self) -> bool:
        return bool(self.entry_interruption_info & INTR_VALID)

    def state(self) -> dict:
        return {k: getattr(self, k) for k in self._STATE}

    def set_state(self, st: dict) -> None:
        for k, v in st.items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        last = f", last exit {self.exit_name}" if self.exit_reason is not None else ""
        return f"<VMCS vm{self.vm.index}{last}>"


class NonRootExit(Fault):
    """A VM exit raised while the CPU runs a guest in non-root mode: an exiting instruction, an
    EPT violation, an exception in the exception bitmap, the VMM's timer, an interrupt window.

    It is a :class:`Fault` (vector -1, never delivered) so that it unwinds an instruction the way
    a fault does, before anything is committed, and reaches the monitor through
    ``Machine.exception_hook``. Its fields are what the CPU writes into the VMCS's exit
    information fields."""

    def __init__(self, reason: int, qualification: int = 0, *, insn=None,
                 linear: int | None = None, physical: int | None = None, interruption: int = 0,
                 error_code: int | None = None, vectoring: int = 0,
                 vectoring_error: int | None = None, length: int | None = None):
        super().__init__(-1, None, None, EXIT_REASONS.get(reason, str(reason)))
        self.reason = reason
        self.qualification = qualification
        self.insn = insn
        self.linear = linear
        self.physical = physical
        self.interruption = interruption
        self.interruption_error = error_code
        self.vectoring = vectoring
        self.vectoring_error = vectoring_error
        self.length = length if length is not None else (insn.size if insn is not None else 0)

    def __str__(self) -> str:
        return f"VM exit {self.reason} ({EXIT_REASONS.get(self.reason, '?')})"


class _DuringDelivery(Exception):
    """A VM exit during event delivery, carried through the machine's delivery code (which
    treats Faults as nested exceptions) to the place that records it."""

    def __init__(self, exit_: NonRootExit):
        super().__init__(str(exit_))
        self.exit = exit_


# =================================================================================================
# The EPT
# =================================================================================================
class EPT:
    """One VM's extended page table: guest-physical -> host-physical (SDM Vol. 3C, 29.3).

    **Two levels** of 4-byte entries cover the 32-bit guest-physical space (10 + 10 + 12 bits):
    a root table at ``root`` (VT-x: the EPT pointer in the VMCS) and one table per 4 MiB. Bits
    0-2 of an entry are read, write, execute (as in VT-x); bits 12-31 the next table or the
    frame; an access needs its right at both levels. (Real VT-x: four levels of 8-byte entries,
    48-bit guest-physical.) ``levels`` is the m of the walk formula."""

    levels = 2
    RWX = NESTED_R | NESTED_W | NESTED_X

    def __init__(self, machine: Machine, root: int, pool: list[int]):
        self.mem = machine.mem
        self.machine = machine
        self.root = root
        self.pool = pool              # free host pages for EPT tables
        self.tables: dict[int, int] = {}
        self.mem[root:root + 0x1000] = bytes(0x1000)

    def translate(self, gpa: int, access: int) -> int | None:
        """Host-physical address of ``gpa`` for an access needing ``access`` (NESTED_R/W/X),
        or None (a violation). Side-effect free: the walk's references are counted by the MMU."""
        mem = self.mem
        e = _I.unpack_from(mem, self.root + ((gpa >> 20) & 0xFFC))[0]
        if not e & access:
            return None
        e = _I.unpack_from(mem, (e & 0xFFFFF000) | ((gpa >> 10) & 0xFFC))[0]
        if not e & access:
            return None
        return (e & 0xFFFFF000) | (gpa & 0xFFF)

    def rights(self, gpa: int) -> int:
        """The R/W/X rights both levels grant ``gpa`` (0 when not mapped)."""
        mem = self.mem
        e = _I.unpack_from(mem, self.root + ((gpa >> 20) & 0xFFC))[0]
        if not e & 7:
            return 0
        return e & _I.unpack_from(mem, (e & 0xFFFFF000) | ((gpa >> 10) & 0xFFC))[0] & 7

    def map(self, gpa: int, hpa: int, rights: int = RWX) -> None:
        """Map the guest-physical page of ``gpa`` to the host page of ``hpa``."""
        mem = self.mem
        pdi = (gpa >> 22) & 0x3FF
        table = self.tables.get(pdi)
        if table is None:
            if not self.pool:
                raise VmkitError("out of EPT tables in the VM's VMM area")
            table = self.pool.pop(0)
            mem[table:table + 0x1000] = bytes(0x1000)
            self.tables[pdi] = table
            _I.pack_into(mem, self.root + 4 * pdi, table | self.RWX)
        _I.pack_into(mem, table + 4 * ((gpa >> 12) & 0x3FF), (hpa & 0xFFFFF000) | rights)

    def violation(self, lin: int, gpa: int, access: int, final: bool) -> None:
        """Raise the EPT_VIOLATION exit, with the qualification of SDM Vol. 3C, Table 28-7:
        bits 0-2 the access (read, write, fetch), 3-5 the rights the entries grant, bit 7 a
        guest-linear address is valid, bit 8 the access was to the final translation (0: to
        a guest paging-structure entry)."""
        q = (access & 7) | (self.rights(gpa) << 3) | 0x80 | (0x100 if final else 0)
        raise NonRootExit(EPT_VIOLATION, q, linear=lin, physical=gpa)

    def mappings(self) -> list[tuple[int, int, int]]:
        """(guest-physical page, host-physical page, rights) of every mapped page."""
        out = []
        for pdi, table in sorted(self.tables.items()):
            for k in range(1024):
                e = _I.unpack_from(self.mem, table + 4 * k)[0]
                if e & 7:
                    out.append(((pdi << 22) | (k << 12), e & 0xFFFFF000, e & 7))
        return out


# =================================================================================================
# The guest's view of the CPU, and one VM
# =================================================================================================
class GuestCPU:
    """The CPU as the guest believes it is. In non-root mode that is the real CPU (registers,
    EFLAGS with the real IF, segments, GDTR/IDTR/TR, CPL, CR2), except CR0 and CR4, whose bits
    the VMM owns come from the read shadows, and CR3 under shadow paging (the VMM's copy of the
    guest's value; the real CR3 holds the shadow). Writes go to the real CPU; CR0/CR3/CR4 are
    changed through the VMM (``monitor.write_cr(vm, n, value)``)."""

    def __init__(self, vm: "HWVM"):
        object.__setattr__(self, "_vm", vm)

    def __getattr__(self, name):
        return getattr(self._vm.real_cpu, name)

    def __setattr__(self, name, value):
        if name in ("cr0", "cr3", "cr4"):
            raise VmkitError(f"{name} of the guest is the VMM's to set: "
                             f"monitor.write_cr(vm, {name[2]}, value)")
        setattr(self._vm.real_cpu, name, value)

    @property
    def cr0(self) -> int:
        vmcs, real = self._vm.vmcs, self._vm.real_cpu
        mask = vmcs.controls.cr0_guest_host_mask
        return (real.cr0 & ~mask) | (vmcs.cr0_read_shadow & mask)

    @property
    def cr4(self) -> int:
        vmcs, real = self._vm.vmcs, self._vm.real_cpu
        mask = vmcs.controls.cr4_guest_host_mask
        return (real.cr4 & ~mask) | (vmcs.cr4_read_shadow & mask)

    @property
    def cr3(self) -> int:
        vm = self._vm
        return vm.real_cpu.cr3 if vm.monitor.ept else vm.guest_cr3

    @property
    def IF(self) -> int:
        return (self._vm.real_cpu.ef >> 9) & 1

    @property
    def paging(self) -> bool:
        return bool(self.cr0 & CR0_PG)

    @property
    def flags(self) -> EFLAGS:
        return EFLAGS(self._vm.real_cpu.eflags)

    def __repr__(self) -> str:
        r = self._vm.real_cpu
        return (f"<GuestCPU vm{self._vm.index} eip={r.eip:08x} eflags={r.eflags:08x} "
                f"cpl={r.cpl} cr0={self.cr0:08x} cr3={self.cr3:08x} cr4={self.cr4:08x}>")


class HWVM(TEVM):
    """One guest under :class:`HardwareAssisted`: its VMCS (``vm.vmcs``), EPT (``vm.ept``, or
    the shadow page tables of ``TrapAndEmulate`` with ``ept=False``), devices, memory slice.
    Shares the guest-memory helpers of :class:`~vmkit.vmm.te.TEVM` (``read``/``write`` with the
    guest's paging, ``phys_read``, ``memory()``, ``walk``, ``port_in``/``port_out``)."""

    def __init__(self, index, image, machine, monitor, slice_base, vmm_base):
        super().__init__(index, image, machine, monitor, slice_base, vmm_base)
        self._vcpu = GuestCPU(self)
        self.vmcs = VMCS(self, monitor.controls)
        self.ept: EPT | None = None
        self.guest_cr3 = 0          # shadow paging: the CR3 the guest loaded
        self.exit_pending = False   # an exit recorded in the VMCS, not yet handled
        self.entry_due = False      # the next run of the guest is a VM entry after an exit
        self.inhibit_left = 0       # blocking by STI while another VM has the CPU

    def translate(self, lin: int, write: bool = False, user: bool = False) -> int:
        # no VMM-side TLB: with EPT the guest changes its mappings without any exit
        return self.walk(lin, write, user)[0]

    def __repr__(self) -> str:
        r = self.result.reason if self.result else "running"
        return f"<HWVM {self.index} {self.image.name} {r}>"


# =================================================================================================
# The host machine in non-root mode
# =================================================================================================
class _NonRootMachine(Machine):
    """The host machine while it runs guests in VMX non-root mode. Overrides only the event
    handling that non-root mode changes:

    * interrupts of the machine's device (the VMM's timer) exit whatever the guest's IF
      (external-interrupt exiting); with interrupt-window exiting on, the first boundary where
      the guest's IF is 1 and no STI shadow blocks exits;
    * a fault during event delivery that the VMCS makes exit (exception bitmap, EPT violation)
      exits with the event saved as IDT-vectoring information instead of becoming a nested
      exception;
    * a #PF that exits leaves CR2 unchanged (SDM Vol. 3C, 28.1);
    * LAR/LSL/VERR/VERW let an exit (or a hidden page fault) on the descriptor read through.
    """

    def __init__(self, memory_size: int, vmm: "HardwareAssisted", trace):
        super().__init__(memory_size, trace=trace)
        self.vmm = vmm
        self.window_exiting = False
        self.pf_exits = False

    def _deliverable_irq(self):
        line = self.dev.pending_vector()
        if line is not None:
            return line
        if self.window_exiting and self.cpu.ef & IF and self.steps >= self._irq_inhibit_until:
            return _WINDOW
        return None

    def _deliver_irq(self, line: int) -> bool:
        if line == _WINDOW:
            x = NonRootExit(INTERRUPT_WINDOW)
        else:
            self.dev.acknowledge(line)   # "acknowledge interrupt on exit"
            x = NonRootExit(EXTERNAL_INTERRUPT,
                            interruption=interruption_info(IRQ_BASE + line, INTR_EXTERNAL))
        self.vmm._record(x)
        return True

    def deliver(self, vector, error_code, return_eip, source):
        try:
            SystemMixin.deliver(self, vector, error_code, return_eip, source)
        except Fault as f:
            x = self.vmm._exit_during_delivery(f, vector, error_code, source)
            if x is None:
                raise
            raise _DuringDelivery(x) from None
        self.vmm.delivered[_name(vector, source)] += 1

    def soft_int(self, vector, next_eip, source):
        try:
            SystemMixin.soft_int(self, vector, next_eip, source)
        except _DuringDelivery as d:
            raise d.exit from None   # unwinds the INT like a fault; it runs again after the exit

    def _exception(self, f):
        try:
            Machine._exception(self, f)
        except _DuringDelivery as d:
            self.vmm._record(d.exit)

    def _page_fault(self, lin, err, refs):
        if not self.pf_exits:
            return super()._page_fault(lin, err, refs)
        cr2 = self.cpu.cr2
        try:
            super()._page_fault(lin, err, refs)
        finally:
            self.cpu.cr2 = cr2

    def _visible(self, selector):
        # an exit or a hidden page fault on the table read goes through, not "invisible"
        return rules.visible_descriptor(self, self.cpu.cpl, selector, only_gp_hides=True)


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


# =================================================================================================
# The monitor
# =================================================================================================
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
        instruction the VMM completed counts once, as ``emulate``; every event the CPU delivered
        through a guest's IDT (injected ones included) is an ``exception`` (a fault) or an
        ``interrupt`` (a system call or an external interrupt)."""
        counts = Counter(self.events)
        m = self._host
        counts["native"] += m.steps
        counts["page_walk"] += m.walk_refs
        # a fault delivered in non-root mode is priced as natively (``exception``), a system
        # call or interrupt as ``interrupt``
        faults = sum(n for k, n in self.delivered.items()
                     if not k.startswith(("int ", "irq ")))
        counts["interrupt"] += sum(self.delivered.values()) - faults
        counts["exception"] += faults
        return counts

    # ---- snapshots ---------------------------------------------------------------------------
    def snapshot(self) -> MonitorSnapshot:
        vms = []
        for vm in self.vms:
            vms.append(dict(
                vmcs=vm.vmcs.state(), devices=vm.devices.copy(), saved=vm.saved.state(),
                clock=vm._clock, steps=vm.steps, pending=vm.pending, result=vm.result,
                pool=list(vm.pool), pts=dict(vm.shadow_pts), sinks=set(vm.sinks),
                guest_cr3=vm.guest_cr3, flags=(vm.exit_pending, vm.entry_due, vm.inhibit_left),
                ept=(dict(vm.ept.tables), list(vm.ept.pool)) if vm.ept else None,
                ticks=list(vm.tick_steps)))
        state = dict(vms=vms, sched=_sched_state(self), declared=self._save_declared())
        return MonitorSnapshot(id(self), [self._host.snapshot()], state)

    def restore(self, snap: MonitorSnapshot) -> None:
        if not isinstance(snap, MonitorSnapshot) or snap.owner != id(self):
            raise VmkitError("restore() takes a snapshot made by this monitor's snapshot()")
        st = snap.state
        m = self._host
        self.current = st["declared"]["current"]   # its EPT first: the machine's memory view
        m.nested = self.vms[self.current].ept
        m.restore(snap.machines[0])
        for vm, s in zip(self.vms, st["vms"]):
            vm.vmcs.set_state(s["vmcs"])
            vm.devices = s["devices"].copy()
            vm.saved.set_state(s["saved"])
            vm._clock, vm.steps = s["clock"], s["steps"]
            vm.pending, vm.result = s["pending"], s["result"]
            vm.pool, vm.shadow_pts, vm.sinks = list(s["pool"]), dict(s["pts"]), set(s["sinks"])
            vm.guest_cr3 = s["guest_cr3"]
            vm.exit_pending, vm.entry_due, vm.inhibit_left = s["flags"]
            if s["ept"] is not None:
                vm.ept.tables, vm.ept.pool = dict(s["ept"][0]), list(s["ept"][1])
            vm.tick_steps = list(s["ticks"])
        self._restore_declared(st["declared"])
        m.vm_index = self.current
        _set_sched_state(self, st["sched"])


# =================================================================================================
# Stubs: instructions in non-root mode (compiled once per instruction, see Machine.intercept)
# =================================================================================================
def _named(fn, insn):
    fn.__name__ = insn.text            # what an InstructionRetired event shows
    return fn


def _address(regs: list, m: Mem):
    """A function computing the linear address of memory operand ``m`` (flat segments)."""
    disp, base, index, scale = m.disp, m.base, m.index, m.scale

    def ea():
        a = disp
        if base is not None:
            a += regs[base]
        if index is not None:
            a += regs[index] * scale
        return a & MASK32
    return ea


def _gp(cpu) -> Fault:
    return Fault(13, 0, detail=f"privileged instruction at CPL {cpu.cpl}")


def _stub_hlt(hw: HardwareAssisted, insn):
    if not hw.controls.hlt_exiting:
        return None
    m = hw._host
    C = m.cpu

    def hlt():
        if C.cpl:
            raise _gp(C)
        if m._in_burst:
            raise Sync()
        raise NonRootExit(HLT, insn=insn)
    return _named(hlt, insn)


def _stub_cpuid(hw: HardwareAssisted, insn):
    m = hw._host

    def cpuid():
        if m._in_burst:
            raise Sync()
        raise NonRootExit(CPUID, insn=insn)
    return _named(cpuid, insn)


def _stub_rdtsc(hw: HardwareAssisted, insn):
    if not hw.controls.rdtsc_exiting:
        return None
    m = hw._host
    C = m.cpu

    def rdtsc():
        if C.cpl and C.cr4 & CR4_TSD:
            raise Fault(13, 0, detail="CR4.TSD")
        if m._in_burst:
            raise Sync()
        raise NonRootExit(RDTSC, insn=insn)
    return _named(rdtsc, insn)


def _stub_io(hw: HardwareAssisted, insn):
    """IN/OUT: the CPU's IOPL and TSS-bitmap check first (it has priority over the exit), then
    the exit decision for this port (unconditional I/O exiting or the I/O bitmap), else the
    access goes to the device directly (direct assignment)."""
    m = hw._host
    C = m.cpu
    R = C.regs
    is_in = insn.mnemonic == "in"
    a, b = insn.operands
    port_op, data = (b, a) if is_in else (a, b)
    size = data.size
    fixed = port_op.value if isinstance(port_op, Imm) else None
    normal = sem.compile_insn(insn, m._g)
    if isinstance(normal, str):
        return None
    base_q = (size - 1) | (8 if is_in else 0) | (0x40 if fixed is not None else 0)

    def io():
        if m._in_burst:
            raise Sync()
        port = fixed if fixed is not None else R[2] & 0xFFFF
        if not m.io_permitted(port, size):
            raise Fault(13, 0, detail=f"port {port:#x} not permitted at CPL {C.cpl}")
        if hw._io_exits(port, size):
            raise NonRootExit(IO_INSTRUCTION, base_q | (port << 16), insn=insn)
        normal()
    return _named(io, insn)


def _stub_mov(hw: HardwareAssisted, insn):
    """MOV to/from CR0, CR3, CR4 (SDM Vol. 3C, 26.1.3 and 26.3): writes that change a bit the
    VMM owns exit, reads of owned bits show the read shadow; CR3 by its load/store controls."""
    d, s = insn.operands
    m = hw._host
    C = m.cpu
    R = C.regs
    nxt = insn.next
    c = hw.controls

    def vmcs():
        return hw.vms[hw.current].vmcs

    if isinstance(d, Reg) and d.kind == "cr" and d.index in (0, 3, 4):
        n, gpr = d.index, s.index
        q = n | (gpr << 8)                        # access type 0: MOV to CR
        if n == 3:
            if not c.cr3_load_exiting:
                return None

            def mov_to_cr3():
                if C.cpl:
                    raise _gp(C)
                if m._in_burst:
                    raise Sync()
                raise NonRootExit(CR_ACCESS, q, insn=insn)
            return _named(mov_to_cr3, insn)

        def mov_to_cr():
            if C.cpl:
                raise _gp(C)
            if m._in_burst:
                raise Sync()
            v = R[gpr]
            x = vmcs()
            if n == 0:
                mask, shadow, real = x.controls.cr0_guest_host_mask, x.cr0_read_shadow, C.cr0
            else:
                mask, shadow, real = x.controls.cr4_guest_host_mask, x.cr4_read_shadow, C.cr4
            if (v ^ shadow) & mask:
                raise NonRootExit(CR_ACCESS, q, insn=insn)
            m.write_cr(n, (v & ~mask) | (real & mask))   # owned bits keep their real values
            C.eip = nxt
            raise Resched()
        return _named(mov_to_cr, insn)

    if isinstance(s, Reg) and s.kind == "cr" and s.index in (0, 3, 4):
        n, gpr = s.index, d.index
        if n == 3:
            if not c.cr3_store_exiting:
                return None
            q = 3 | (1 << 4) | (gpr << 8)             # access type 1: MOV from CR

            def mov_from_cr3():
                if C.cpl:
                    raise _gp(C)
                if m._in_burst:
                    raise Sync()
                raise NonRootExit(CR_ACCESS, q, insn=insn)
            return _named(mov_from_cr3, insn)

        def mov_from_cr():
            if C.cpl:
                raise _gp(C)
            x = vmcs()
            if n == 0:
                mask, shadow, real = x.controls.cr0_guest_host_mask, x.cr0_read_shadow, C.cr0
            else:
                mask, shadow, real = x.controls.cr4_guest_host_mask, x.cr4_read_shadow, C.cr4
            R[gpr] = (real & ~mask) | (shadow & mask)
            C.eip = nxt
        return _named(mov_from_cr, insn)
    return None


def _guest_cr0(hw: HardwareAssisted) -> int:
    x = hw.vms[hw.current].vmcs
    mask = x.controls.cr0_guest_host_mask
    return (hw._host.cpu.cr0 & ~mask) | (x.cr0_read_shadow & mask)


def _stub_smsw(hw: HardwareAssisted, insn):
    """SMSW in non-root mode: owned CR0 bits come from the read shadow (SDM Vol. 3C, 26.3)."""
    (d,) = insn.operands
    m = hw._host
    C = m.cpu
    R = C.regs
    g = m._g
    nxt = insn.next
    ea = _address(R, d) if isinstance(d, Mem) else None

    def smsw():
        if C.cpl and C.cr4 & CR4_UMIP:
            raise Fault(13, 0, detail="UMIP")
        v = _guest_cr0(hw)
        if ea is not None:
            g["wr2"](ea(), v & 0xFFFF)
        elif d.size == 4:
            R[d.index] = v
        else:
            R[d.index] = (R[d.index] & 0xFFFF0000) | (v & 0xFFFF)
        C.eip = nxt
    return _named(smsw, insn)


def _stub_lmsw(hw: HardwareAssisted, insn):
    """LMSW (SDM Vol. 3C, 26.1.3): exits if it would set an owned PE the shadow has clear or
    change an owned MP/EM/TS; else it changes only the bits the guest owns (PE never cleared)."""
    (src,) = insn.operands
    m = hw._host
    C = m.cpu
    R = C.regs
    g = m._g
    nxt = insn.next
    ea = _address(R, src) if isinstance(src, Mem) else None

    def lmsw():
        if C.cpl:
            raise _gp(C)
        if m._in_burst:
            raise Sync()
        v = (g["rd2"](ea()) if ea is not None else R[src.index]) & 0xF
        x = hw.vms[hw.current].vmcs
        mask, shadow = x.controls.cr0_guest_host_mask, x.cr0_read_shadow
        if (mask & 1 and v & 1 and not shadow & 1) or (v ^ shadow) & mask & 0xE:
            raise NonRootExit(CR_ACCESS, (3 << 4) | (0x40 if ea is not None else 0) | (v << 16),
                              insn=insn)
        own = 0xE & ~mask
        new = (C.cr0 & ~own) | (v & own) | (v & 1 & ~mask)
        m.write_cr(0, new)
        C.eip = nxt
        raise Resched()
    return _named(lmsw, insn)


def _stub_clts(hw: HardwareAssisted, insn):
    """CLTS (SDM Vol. 3C, 26.1.3): exits if TS is owned and set in the read shadow; if owned
    and clear there, CR0.TS is left alone; else cleared."""
    m = hw._host
    C = m.cpu
    nxt = insn.next

    def clts():
        if C.cpl:
            raise _gp(C)
        x = hw.vms[hw.current].vmcs
        mask, shadow = x.controls.cr0_guest_host_mask, x.cr0_read_shadow
        if mask & CR0_TS and shadow & CR0_TS:
            if m._in_burst:
                raise Sync()
            raise NonRootExit(CR_ACCESS, 2 << 4, insn=insn)
        if not mask & CR0_TS:
            m.write_cr(0, C.cr0 & ~CR0_TS)
        C.eip = nxt
    return _named(clts, insn)


def _stub_invlpg(hw: HardwareAssisted, insn):
    if not hw.controls.invlpg_exiting:
        return None
    m = hw._host
    C = m.cpu
    ea = _address(C.regs, insn.operands[0])

    def invlpg():
        if C.cpl:
            raise _gp(C)
        if m._in_burst:
            raise Sync()
        a = ea()
        raise NonRootExit(INVLPG, a, insn=insn, linear=a)
    return _named(invlpg, insn)


_STUBS = {"hlt": _stub_hlt, "cpuid": _stub_cpuid, "rdtsc": _stub_rdtsc, "in": _stub_io,
          "out": _stub_io, "mov": _stub_mov, "smsw": _stub_smsw, "lmsw": _stub_lmsw,
          "clts": _stub_clts, "invlpg": _stub_invlpg}
