"""The x86 protection rules, written once, for the real CPU and for every virtual one.

A rule here checks what the SDM says must be checked (a gate, a code or stack descriptor, the
I/O permission bitmap, the double-fault table, the flags an IRET may load, the descriptor LTR
takes) and raises the :class:`~vmkit.isa.faults.Fault` the processor would raise. It reads the
machine only through a small interface, :class:`SystemView`, as KVM's instruction emulator
reaches a vCPU only through ``struct x86_emulate_ops``:

* :class:`vmkit.machine.machine.Machine` implements it on the real CPU (its GDT, IDT and TSS
  in host memory);
* :class:`vmkit.vmm.te.TEVM` (and the monitors built on it) implements it on the *virtual*
  CPU: the guest's own tables, read through the guest's page tables, at the virtual CPL.

What a rule then *does* with its answer (push a frame on the real stack, or on the guest's;
load the real CS, or the ring-compressed one) stays with the caller: the rules decide, the
CPUs act.

Each rule cites the section of the Intel SDM (Vol. 3A unless said otherwise) it follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from vmkit.isa.faults import HAS_ERROR_CODE, Fault

__all__ = ["SystemView", "Descriptor", "CONTRIBUTORY", "PAGE_FAULT", "BENIGN",
           "code_segment", "stack_segment", "tss_segment", "interrupt_gate", "tss_stack",
           "delivery", "data_segment",
           "inner_stack_segment", "inner_stack",
           "io_denied", "iret_flags_mask", "escalates", "deliver_exception", "fault_chain",
           "FLAGS_WRITABLE", "halt_outcome", "visible_descriptor", "DESCRIPTOR_QUERIES"]

#: SDM Vol. 3A, Table 6-4: exception classes for the double-fault rule
CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})
PAGE_FAULT = 14
BENIGN = frozenset(range(32)) - CONTRIBUTORY - {PAGE_FAULT, 8}

#: the EFLAGS bits software can write at CPL 0 (POPF/IRET; SDM Vol. 1, 3.4.3)
FLAGS_WRITABLE = 0x257FD5
_IF, _IOPL = 0x200, 0x3000


_PARSED: dict = {}


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A parsed 8-byte segment or gate descriptor (SDM 3.4.5, 6.11).

    Every field the checks read is computed once when the raw value is parsed (``parse`` keeps
    one object per raw value), so a check is an attribute read, not a property call: the
    syscall guest reads about ten descriptors a system call."""
    raw: int
    base: int
    limit: int        # byte-granular limit (G applied)
    access: int       # byte 5: P DPL S type
    flags: int        # high nibble of byte 6: G D/B L AVL
    present: bool = field(init=False, repr=False, compare=False)
    dpl: int = field(init=False, repr=False, compare=False)
    #: a system descriptor (TSS, LDT, gate) rather than code or data
    system: bool = field(init=False, repr=False, compare=False)
    type: int = field(init=False, repr=False, compare=False)
    code: bool = field(init=False, repr=False, compare=False)
    conforming: bool = field(init=False, repr=False, compare=False)
    readable: bool = field(init=False, repr=False, compare=False)
    writable: bool = field(init=False, repr=False, compare=False)
    # gate fields
    gate_selector: int = field(init=False, repr=False, compare=False)
    gate_offset: int = field(init=False, repr=False, compare=False)
    #: what a segment register's hidden part holds once loaded from a flat descriptor (base,
    #: limit, access with the accessed bit, flags), None for any other: one tuple to unpack
    #: in ``load_segment_cache`` (eight segment loads a system call)
    hidden: tuple | None = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        a, raw = self.access, self.raw
        system = not a & 0x10
        code = not system and bool(a & 0x8)
        put = object.__setattr__
        put(self, "present", bool(a & 0x80))
        put(self, "dpl", (a >> 5) & 3)
        put(self, "system", system)
        put(self, "type", a & 0xF)
        put(self, "code", code)
        put(self, "conforming", code and bool(a & 0x4))
        put(self, "readable", not system and (not code or bool(a & 0x2)))
        put(self, "writable", not system and not code and bool(a & 0x2))
        put(self, "gate_selector", (raw >> 16) & 0xFFFF)
        put(self, "gate_offset", (raw & 0xFFFF) | ((raw >> 32) & 0xFFFF0000))
        put(self, "hidden", (self.base, self.limit, a | 1, self.flags)
            if not self.base and self.limit == 0xFFFFFFFF else None)

    @classmethod
    def parse(cls, raw: int) -> "Descriptor":
        d = _PARSED.get(raw)     # descriptors are immutable: each 8-byte value parsed once
        if d is None:
            if len(_PARSED) > 4096:
                _PARSED.clear()
            d = _PARSED[raw] = cls._parse(raw)
        return d

    @classmethod
    def _parse(cls, raw: int) -> "Descriptor":
        lo, hi = raw & 0xFFFFFFFF, raw >> 32
        base = ((lo >> 16) & 0xFFFF) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)
        limit = (lo & 0xFFFF) | (hi & 0xF0000)
        flags = (hi >> 20) & 0xF
        if flags & 0x8:
            limit = (limit << 12) | 0xFFF
        return cls(raw, base, limit, (hi >> 8) & 0xFF, flags)


class SystemView(Protocol):
    """What the rules read from a CPU, real or virtual."""

    def read_descriptor(self, selector: int, fault: int = 13) -> Descriptor:
        """The descriptor ``selector`` names in the GDT or LDT; ``Fault(fault, selector)``
        beyond the table's limit."""

    def lin_read(self, lin: int, n: int) -> int:
        """``n`` bytes at a linear address, little-endian, as a supervisor access (descriptor
        tables, the TSS and interrupt stacks are implicit supervisor accesses, SDM 4.6)."""


# ---- segment descriptors -------------------------------------------------------------------
def code_segment(view: SystemView, selector: int, new_cpl: int, fault: int = 13) -> Descriptor:
    """The checks of loading CS to run at ``new_cpl`` (IRET, RETF, far JMP/CALL; SDM 5.8)."""
    if selector & 0xFFFC == 0:
        raise Fault(fault, 0, detail="null code selector")
    d = view.read_descriptor(selector, fault)
    if not d.code:
        raise Fault(fault, selector & 0xFFFC, detail=f"selector {selector:#x} is not code")
    if (d.conforming and d.dpl > new_cpl) or (not d.conforming and d.dpl != new_cpl):
        raise Fault(fault, selector & 0xFFFC,
                    detail=f"code segment DPL {d.dpl} cannot run at ring {new_cpl}")
    if not d.present:
        raise Fault(11, selector & 0xFFFC, detail="code segment not present")
    return d


def stack_segment(view: SystemView, selector: int, ring: int, fault: int = 13, ext: int = 0,
                  what: str = "SS") -> Descriptor:
    """The checks of loading SS for ``ring`` (MOV SS, the outer stack of IRET/RETF, the inner
    stack of an interrupt from the TSS; SDM 5.7, 6.12.1): a non-null selector of that RPL naming
    a writable data segment of that DPL, present (#SS otherwise). ``ext`` is the EXT bit of the
    error code (a fault while delivering an external event)."""
    code = (selector & 0xFFFC) | ext
    if selector & 0xFFFC == 0 or selector & 3 != ring:
        raise Fault(fault, code, detail=f"{what} {selector:#x} is not a ring-{ring} selector")
    d = view.read_descriptor(selector, fault)
    if d.dpl != ring or not d.writable:
        raise Fault(fault, code, detail=f"{what} {selector:#x} not a ring-{ring} writable "
                    "data segment")
    if not d.present:
        raise Fault(12, code, detail=f"{what} {selector:#x} not present")
    return d


def tss_segment(view: SystemView, selector: int) -> Descriptor:
    """LTR's checks (SDM Vol. 2A, LTR): a GDT selector of an available 32-bit TSS, present.
    The caller marks it busy and loads TR."""
    if selector & 0xFFFC == 0 or selector & 4:
        raise Fault(13, selector & 0xFFFC, detail="TR needs a GDT selector")
    d = view.read_descriptor(selector)
    if not d.system or d.type != 9:
        raise Fault(13, selector & 0xFFFC,
                    detail=f"selector {selector:#x} is not an available 32-bit TSS")
    if not d.present:
        raise Fault(11, selector & 0xFFFC, detail="TSS not present")
    return d


# ---- descriptor queries (LAR, LSL, VERR, VERW) -------------------------------------------
def visible_descriptor(view: SystemView, cpl: int, selector: int,
                       only_gp_hides: bool = False) -> Descriptor | None:
    """The descriptor LAR/LSL/VERR/VERW may look at: non-null, readable from the table, and
    (unless conforming code) of DPL >= max(CPL, RPL); None otherwise (ZF cleared; SDM Vol. 2A,
    LAR). With ``only_gp_hides`` a fault other than #GP on the table read is raised, not
    taken as "invisible" (a monitor's exit or hidden page fault on the read)."""
    if selector & 0xFFFC == 0:
        return None
    try:
        d = view.read_descriptor(selector)
    except Fault as f:
        if only_gp_hides and f.vector != 13:
            raise
        return None
    rpl = selector & 3
    if not d.conforming and (d.dpl < cpl or d.dpl < rpl):
        return None
    return d


def _lar(d: Descriptor | None):
    """Access rights, or None; valid system types: TSS, LDT, call/task gates."""
    if d is None or (d.system and d.type not in (1, 2, 3, 4, 5, 9, 0xB, 0xC)):
        return None
    return (d.raw >> 32) & 0x00F0FF00


def _lsl(d: Descriptor | None):
    if d is None or (d.system and d.type not in (1, 2, 3, 9, 0xB)):
        return None
    return d.limit


#: what each query returns for a visible descriptor (None: ZF cleared)
DESCRIPTOR_QUERIES = {"lar": _lar, "lsl": _lsl,
                      "verr": lambda d: None if d is None or not d.readable else 1,
                      "verw": lambda d: None if d is None or not d.writable else 1}


# ---- interrupt and exception delivery ------------------------------------------------------
def interrupt_gate(view: SystemView, idtr, cpl: int, vector: int, source: str,
                   idt: str = "IDT") -> tuple[Descriptor, Descriptor, int, int]:
    """The gate checks of delivering ``vector`` from ``cpl`` (SDM 6.12.1): the IDT entry is a
    present 32-bit interrupt or trap gate, a software interrupt's gate has DPL >= CPL, and it
    leads to a present code segment of DPL <= CPL. -> (gate, handler's code descriptor, new
    CPL, EXT bit). ``source`` is "irq", "exception", "int", "int3" or "into"; ``idt`` names
    the table in messages ("IDT", "guest's IDT")."""
    # EXT (bit 0 of an error code): the fault arose while delivering an event external to
    # the program, a hardware interrupt or an earlier exception (SDM 6.13)
    ext = 1 if source in ("irq", "exception") else 0
    idt_err = (vector << 3) | 2 | ext
    if vector * 8 + 7 > idtr.limit:
        raise Fault(13, idt_err, detail=f"vector {vector} beyond the {idt} limit")
    gate = Descriptor.parse(view.lin_read(idtr.base + vector * 8, 8))
    if not gate.system or gate.type not in (0xE, 0xF):
        raise Fault(13, idt_err, detail=f"{idt} entry {vector} is not a 32-bit interrupt "
                    f"or trap gate (type {gate.type:#x})")
    if source in ("int", "int3", "into") and gate.dpl < cpl:
        raise Fault(13, idt_err, detail=f"int {vector} from ring {cpl}: gate DPL {gate.dpl}")
    if not gate.present:
        raise Fault(11, idt_err, detail=f"{idt} entry {vector} not present")
    sel = gate.gate_selector
    if sel & 0xFFFC == 0:
        raise Fault(13, ext, detail="interrupt gate with a null selector")
    cd = view.read_descriptor(sel)
    if not cd.code or cd.dpl > cpl:
        raise Fault(13, (sel & 0xFFFC) | ext, detail=f"gate {vector} leads to selector "
                    f"{sel:#x} (DPL {cd.dpl}) from ring {cpl}")
    if not cd.present:
        raise Fault(11, (sel & 0xFFFC) | ext, detail="handler code segment not present")
    return gate, cd, (cpl if cd.conforming else cd.dpl), ext


def delivery(view: SystemView, idtr, tr, cpl: int, vector: int,
             source: str) -> tuple[Descriptor, Descriptor, int, int, tuple | None]:
    """Every check of delivering ``vector`` from ``cpl`` in the SDM's order (6.12.1):
    :func:`interrupt_gate`, then, when the handler runs in an inner ring, :func:`inner_stack`
    -> (gate, handler's code descriptor, new CPL, EXT, (ESP, SS, SS's descriptor) of the inner
    stack or None)."""
    gate, cd, new_cpl, ext = interrupt_gate(view, idtr, cpl, vector, source)
    inner = inner_stack(view, tr, new_cpl, ext) if new_cpl < cpl else None
    return gate, cd, new_cpl, ext, inner


def data_segment(view: SystemView, index: int, selector: int, cpl: int) -> Descriptor | None:
    """The checks of MOV/POP to segment register ``index`` (SDM Vol. 2B, MOV): SS (index 2)
    takes a writable data segment of DPL = RPL = CPL, present (#SS otherwise); DS, ES, FS, GS
    take null (-> None) or a readable segment that CPL and RPL may use, present (#NP)."""
    rpl = selector & 3
    if index == 2:  # SS
        if selector & 0xFFFC == 0:
            raise Fault(13, 0, detail="null selector loaded into SS")
        d = view.read_descriptor(selector)
        if rpl != cpl or d.dpl != cpl or not d.writable:
            raise Fault(13, selector & 0xFFFC, detail=f"SS selector {selector:#x} not a "
                        f"writable data segment at ring {cpl}")
        if not d.present:
            raise Fault(12, selector & 0xFFFC, detail="stack segment not present")
        return d
    if selector & 0xFFFC == 0:
        return None
    d = view.read_descriptor(selector)
    if not d.readable or ((not d.code or not d.conforming) and (d.dpl < cpl or d.dpl < rpl)):
        raise Fault(13, selector & 0xFFFC, detail=f"selector {selector:#x} not loadable "
                    f"at CPL {cpl} (DPL {d.dpl}, RPL {rpl})")
    if not d.present:
        raise Fault(11, selector & 0xFFFC, detail="segment not present")
    return d


def tss_stack(view: SystemView, tr, new_cpl: int, ext: int) -> tuple[int, int]:
    """SSn:ESPn for an interrupt that enters inner ring ``new_cpl``: read from the TSS now
    (SDM 6.12.1, 7.2.1; #TS with no TSS or one too small) -> (ESP, SS), SS not yet checked."""
    if not tr.selector:
        raise Fault(10, ext, detail="privilege change with no TSS loaded")
    off = 4 + 8 * new_cpl
    if off + 5 > tr.limit:
        raise Fault(10, (tr.selector & 0xFFFC) | ext, detail="TSS too small")
    return view.lin_read(tr.base + off, 4), view.lin_read(tr.base + off + 4, 2)


def inner_stack_segment(view: SystemView, ss: int, new_cpl: int, ext: int) -> Descriptor:
    """The checks of the inner stack's SS (#TS, or #SS when not present; SDM 6.12.1)."""
    return stack_segment(view, ss, new_cpl, 10, ext, f"TSS SS{new_cpl}")


def inner_stack(view: SystemView, tr, new_cpl: int, ext: int) -> tuple[int, int, Descriptor]:
    """The checked stack of an interrupt that enters an inner ring -> (ESP, SS, SS's
    descriptor): :func:`tss_stack`, then :func:`inner_stack_segment`."""
    esp, ss = tss_stack(view, tr, new_cpl, ext)
    return esp, ss, inner_stack_segment(view, ss, new_cpl, ext)


def escalates(first: int, second: int) -> bool:
    """Does exception ``second``, raised while delivering ``first``, become a double fault?
    (SDM Table 6-5: a contributory fault or #PF while delivering a contributory fault or a #PF,
    except a #PF while delivering a contributory fault; benign ones are handled serially.)"""
    return ((second in CONTRIBUTORY or second == PAGE_FAULT)
            and (first in CONTRIBUTORY or first == PAGE_FAULT)
            and not (first in CONTRIBUTORY and second == PAGE_FAULT))


def fault_chain(history: tuple) -> str:
    """'#UD, then #GP(0x32) delivering it, ...': what a triple fault reports (``history``
    holds the faults, or their texts)."""
    first, rest = history[0], history[1:]
    return str(first) + "".join(f", then {h} delivering it" for h in rest)


def deliver_exception(deliver: Callable[[int, int | None], None], f: Fault,
                      triple: Callable[[str], Exception], _history: tuple = ()) -> None:
    """Deliver exception ``f`` with ``deliver(vector, error_code)`` (which raises the Fault
    of a failed delivery, leaving state unchanged) under the double-fault rules of SDM Table
    6-5; a fault while delivering #DF raises ``triple(chain)``, ``chain`` telling the whole
    story from the first exception (:func:`fault_chain`)."""
    history = _history + (f,)     # texts made only for a triple fault's message
    vector, code = f.vector, f.error_code
    if vector in HAS_ERROR_CODE and code is None:
        code = 0
    try:
        deliver(vector, code)
        return
    except Fault as second:
        if vector == 8:
            raise triple(fault_chain(history + (second,))) from None
        if not escalates(vector, second.vector):
            deliver_exception(deliver, second, triple, history)   # serial: the second one
            return
        history += (second,)
    try:
        deliver(8, 0)
    except Fault as third:
        raise triple(fault_chain(history + ("#DF", third))) from None


# ---- returns -------------------------------------------------------------------------------
def iret_flags_mask(cpl: int, iopl: int) -> int:
    """The EFLAGS bits an IRET (or POPF) at ``cpl`` loads from the image (SDM Vol. 2A, IRET):
    all writable ones at CPL 0; not IOPL elsewhere; not IF either when CPL > IOPL (then IF is
    kept *silently*: why a ring-1 kernel's flags need a monitor's help)."""
    if cpl == 0:
        return FLAGS_WRITABLE
    if cpl <= iopl:
        return FLAGS_WRITABLE & ~_IOPL
    return FLAGS_WRITABLE & ~_IOPL & ~_IF


#: ``IRET_FLAGS_MASKS[cpl][iopl]``: :func:`iret_flags_mask` for every CPL and IOPL (an index
#: instead of a call on the machine's IRET)
IRET_FLAGS_MASKS = tuple(tuple(iret_flags_mask(c, i) for i in range(4)) for c in range(4))


# ---- ports ---------------------------------------------------------------------------------
def io_denied(view: SystemView, cpl: int, iopl: int, tr, port: int, size: int) -> str | None:
    """Why an IN/OUT of ``size`` bytes at ``port`` is refused, or None if it is permitted:
    CPL <= IOPL, or the TSS I/O permission bitmap clears every bit of the access (SDM Vol. 1,
    19.5)."""
    if cpl <= iopl:
        return None
    if not tr.selector or tr.limit < 0x67:
        return f"port {port:#x} not permitted at CPL {cpl}"
    iomap = view.lin_read(tr.base + 0x66, 2)
    first, last = iomap + port // 8, iomap + (port + size - 1) // 8
    if last > tr.limit:
        return f"port {port:#x} beyond the I/O bitmap"
    bits = view.lin_read(tr.base + first, last - first + 1)
    if bits & (((1 << size) - 1) << (port % 8)):
        return f"port {port:#x} denied by the I/O bitmap"
    return None


# ---- HLT -----------------------------------------------------------------------------------
def halt_outcome(interrupts_enabled: bool, dev) -> str | int | None:
    """What a halted CPU does next (SDM Vol. 2A, HLT: only an interrupt wakes it), given IF and
    its interrupt controller and timer ``dev``: None when an interrupt is pending (it wakes);
    the guest time of the next timer tick when it idles until then; or, as a string, why
    nothing can ever wake it (the run ends with reason "halt")."""
    if not interrupts_enabled:
        return "hlt with interrupts disabled"
    if dev.pending_vector() is not None:
        return None
    if dev.next_tick is None:
        return "hlt with no interrupt source armed"
    if not dev.can_deliver(0):
        # IRQ 0 masked or blocked by one in service: nothing can wake it
        return "hlt waiting for a timer interrupt that is masked or blocked (no EOI)"
    return dev.next_tick   # idle: guest time jumps to the next timer tick
