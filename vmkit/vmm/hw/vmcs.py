"""The VMCS (SDM Vol. 3C, chapter 25): exit reasons, interruption information, the controls,
the host-state area, and the exit the non-root machine raises (:class:`NonRootExit`)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields, replace

from vmkit.errors import VmkitError
from vmkit.isa.faults import Fault
from vmkit.machine.cpu import CPU, MASK32
from vmkit.machine.mmu import CR0_PG, CR0_WP, CR4_PSE

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

    def __init__(self, vm, controls: VmcsControls):
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
            return 1 if m.steps < m.irq_inhibit_until else 0
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
    the ``on_exception`` hook. Its fields are what the CPU writes into the VMCS's exit
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
