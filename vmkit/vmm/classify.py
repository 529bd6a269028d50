"""Popek & Goldberg classes of the kit's instructions, found by experiment.

``classify("popfd")`` does not look anything up: it assembles the instruction, runs it once on
bare machines prepared in many states, and compares what happened (Popek & Goldberg, "Formal
Requirements for Virtualizable Third Generation Architectures", CACM 17(7), 1974):

* **privileged**: it traps at CPL 3 and does not trap at CPL 0: every CPL-3 run traps and at
  least one CPL-0 run does not. (This implies Popek & Goldberg's condition on pairs of states
  that differ only in the mode, and it also keeps out instructions that trap at CPL 3 for some
  operands only, like ``mov ss, ax`` with a ring-0 selector.) The user-mode states are the ones
  a monitor can give a deprivileged guest: IOPL 0 and a TSS whose I/O bitmap denies every port
  — so CLI, STI, IN and OUT count as privileged, which is what a trap-and-emulate monitor
  relies on.
* **control-sensitive**: in some run that does not trap it changes the virtualized state: GDTR,
  IDTR, LDTR, TR, CR0-CR4, EFLAGS.IF/IOPL (and TF, NT, RF, VM), the CPL, a segment register,
  the halted state, the devices (interrupt controller, timer, console, power), the system
  tables in memory (GDT, LDT, IDT, TSS, page tables) or the TLB (entries dropped).
* **behaviour-sensitive**: two runs that do not trap, from states that differ only in the
  virtualized state or only in the mode (and start with the same registers, flags and
  memory), end differently: other registers, flags or memory, or different final values of
  the virtualized state they write (POPF at CPL 3 leaves IF alone where CPL 0 sets it).
* **sensitive** = control- or behaviour-sensitive; **innocuous** = not sensitive.
* **user-sensitive** (for Theorem 3, the hybrid monitor) = sensitive *when executed in user
  mode*: a CPL-3 run changes the virtualized state, or two CPL-3 runs from states differing in
  the virtualized state end differently. A software interrupt whose gate takes user mode into
  ring 0 is not counted here: it enters the supervisor through the IDT, the trap sequence, and
  under a monitor the real IDT is the monitor's.

A *trap* is an exception the processor raises for the instruction (#GP, #UD, #PF, #NM, ...),
delivered through the IDT to a handler that records the vector and halts. ``int n`` going
through its gate is the instruction's own effect, not a trap (so INT n comes out sensitive and
not privileged, as Robin & Irvine count it).

The states (:data:`WORLDS`) change one virtualized resource at a time from a base state; each
runs at CPL 0 and, except ``iopl``, at CPL 3. Each instruction form also gets one or more
operand set-ups (:func:`setups_for`): the register, stack and memory contents it reads, the
same in every state (e.g. ``mov ds, ax`` with a ring-0 and a ring-3 data selector; ``popfd``
with IF and IOPL set in the popped value and with them clear). Memory operands are pointed
into a scratch area. Every run is one instruction with a step budget for the trap handler;
a run the kit cannot execute (an encoding outside the subset) is an outcome too.

Two results to expect, both consequences of the kit's design rather than gaps: RDTSC comes out
innocuous because it reads guest time, which every monitor keeps equal to native time
(DESIGN.md, "Two clocks"), so no state differs in it; and CR4.UMIP is never set, since with it
SGDT, SIDT, SLDT, SMSW and STR would trap at CPL 3 (that is what UMIP is for).

``classify_all()`` runs every instruction form of the subset (derived from the semantics
registry, :func:`canonical_forms`) and caches the table for the process. ``theorem1(table)``
and ``theorem3(table)`` return the instructions that break the conditions of Popek &
Goldberg's Theorems 1 and 3; ``robin_irvine()`` lists the instructions Robin & Irvine (USENIX
Security 2000) found sensitive and unprivileged, and ``compare_robin_irvine()`` checks the
experiments against them.
"""

from __future__ import annotations

import html
import struct
from dataclasses import dataclass, field
from typing import Callable, Iterable

from vmkit.errors import AssemblyError, VmkitError
from vmkit.isa import semantics as sem
from vmkit.isa.decode import GPR_NAMES, SEG_NAMES, Insn, Mem, Reg, decode_one
from vmkit.isa.faults import VECTOR_NAMES
from vmkit.isa.ops_control import far_indirect
from vmkit.trace import Interrupt

__all__ = ["Classification", "ClassificationTable", "classify", "classify_all",
           "canonical_forms", "setups_for", "theorem1", "theorem3", "robin_irvine",
           "compare_robin_irvine", "RobinIrvineEntry", "Violators", "WORLDS", "Setup"]

# ---- the laboratory machine: physical layout (linear = physical; paging identity-maps) --------
MEMORY = 0x40000             # 256 KiB is plenty and keeps a state restore cheap
CODE = 0x1000                # the instruction under test
TARGET = 0x2000              # where far jumps, calls and returns in the set-ups land
SCRATCH = 0x3000             # memory operands point here (two pages)
HANDLERS = 0x5000            # 256 IDT handlers, 16 bytes each
GDT_A, GDT_B, LDT = 0x6000, 0x6100, 0x6200
IDT_A, IDT_B = 0x7000, 0x7800
TSS_A, TSS_B = 0x8000, 0xB000
TSS_SIZE = 0x68 + 8192 + 1   # header, an I/O bitmap for every port, the terminating byte
PD, PT, PD2 = 0xE000, 0xF000, 0x10000
SYSTEM = (0x5000, 0x11000)   # handlers and system tables: virtualized memory
STACK = 0x1FF00              # ESP in every state (ring 0 and ring 3 alike)
STACK2 = 0x1E000             # the outer stack that set-ups for retf/iretd hand over
KSTACK = 0x28000             # ESP0 in the TSS: the ring-0 stack of an interrupt from ring 3
REC = 0x30000                # the handlers write the vector here

KCODE, KDATA, UCODE, UDATA = 0x08, 0x10, 0x1B, 0x23
TSS_A_SEL, TSS_B_SEL, LDT_SEL = 0x28, 0x30, 0x38
KCODE2, KDATA2, UCODE2, UDATA2, CONFORMING = 0x40, 0x48, 0x53, 0x5B, 0x60
GDT_LIMIT = 16 * 8 - 1
IDT_LIMIT = 256 * 8 - 1
STEP_BUDGET = 16             # instructions a trap handler may take to record and stop

CR0_PE, CR0_MP, CR0_TS, CR0_ET, CR0_WP, CR0_PG = 1, 2, 8, 0x10, 1 << 16, 1 << 31
CR4_PSE = 1 << 4
IF, IOPL = 0x200, 0x3000
#: EFLAGS bits a program owns (status flags, DF, AC, ID): part of an instruction's result
USER_FLAGS = 0x8D5 | 0x400 | 0x40000 | 0x200000
#: system EFLAGS bits, each a virtualized resource
SYSTEM_FLAGS = {"IF": (9, 1), "IOPL": (12, 3), "TF": (8, 1), "NT": (14, 1), "RF": (16, 1),
                "VM": (17, 1)}


def _seg(base: int = 0, limit: int = 0xFFFFF, access: int = 0x93, flags: int = 0xC) -> bytes:
    """An 8-byte descriptor (flat by default); ``access`` = P DPL S type."""
    lo = (limit & 0xFFFF) | ((base & 0xFFFF) << 16)
    hi = ((base >> 16) & 0xFF) | (access << 8) | (((limit >> 16) & 0xF) << 16) | \
        (flags << 20) | (base & 0xFF000000)
    return struct.pack("<II", lo, hi)


def _gate(offset: int, dpl: int = 0) -> bytes:
    """A 32-bit interrupt gate to KCODE:offset."""
    return struct.pack("<II", (offset & 0xFFFF) | (KCODE << 16),
                       (offset & 0xFFFF0000) | ((0x8E | (dpl << 5)) << 8))


def _gdt(busy_tss: int) -> bytes:
    """The laboratory GDT. Accessed bits are preset (as Linux does) so that loading a segment
    never writes the table — a write there would count as a change of virtualized state."""
    tss_type = {TSS_A_SEL: (0x8B, 0x89), TSS_B_SEL: (0x89, 0x8B)}[busy_tss]
    entries = [bytes(8),
               _seg(access=0x9B),                               # 0x08 ring-0 code
               _seg(access=0x93),                               # 0x10 ring-0 data
               _seg(access=0xFB),                               # 0x18 ring-3 code
               _seg(access=0xF3),                               # 0x20 ring-3 data
               _seg(TSS_A, TSS_SIZE - 1, tss_type[0], 0),       # 0x28 TSS A
               _seg(TSS_B, TSS_SIZE - 1, tss_type[1], 0),       # 0x30 TSS B
               _seg(LDT, 15, 0x82, 0),                          # 0x38 an LDT of two entries
               _seg(access=0x9B),                               # 0x40 second ring-0 code
               _seg(access=0x93),                               # 0x48 second ring-0 data
               _seg(access=0xFB),                               # 0x50 second ring-3 code
               _seg(access=0xF3),                               # 0x58 second ring-3 data
               _seg(access=0x9F)]                               # 0x60 conforming code, DPL 0
    return b"".join(entries).ljust(GDT_LIMIT + 1, b"\0")


def _tss() -> bytes:
    t = bytearray(TSS_SIZE)
    struct.pack_into("<II", t, 4, KSTACK, KDATA)       # ESP0, SS0
    struct.pack_into("<H", t, 0x66, 0x68)              # the I/O bitmap follows the header
    t[0x68:] = b"\xFF" * (TSS_SIZE - 0x68)             # every port denied
    return bytes(t)


def _handler(vector: int) -> bytes:
    """mov dword ptr [REC], vector; hlt — record the vector and stop (IF is clear in an
    interrupt gate, so the run ends there)."""
    return b"\xC7\x05" + struct.pack("<II", REC, vector) + b"\xF4"


def _memory() -> bytes:
    """The memory image every state starts from (only registers differ between states)."""
    m = bytearray(b"\xAA" * MEMORY)

    def put(a: int, b: bytes) -> None:
        m[a:a + len(b)] = b
    put(TARGET, b"\x90" * 16)
    put(SCRATCH, bytes((i * 7 + 3) & 0xFF for i in range(0x2000)))
    for v in range(256):
        put(HANDLERS + 16 * v, _handler(v))
    put(GDT_A, _gdt(TSS_A_SEL))
    put(GDT_B, _gdt(TSS_A_SEL))
    put(LDT, _seg(access=0xF3) + _seg(access=0xFB))
    idt = b"".join(_gate(HANDLERS + 16 * v, 3 if v in (3, 4, 0x80) else 0) for v in range(256))
    put(IDT_A, idt)
    put(IDT_B, idt)
    put(TSS_A, _tss())
    put(TSS_B, _tss())
    # page tables: identity map of 0-4 MiB, user and writable, accessed and dirty preset
    pde = PT | 0x27
    put(PD, struct.pack("<I", pde) + bytes(4092))
    put(PD2, struct.pack("<I", pde) + bytes(4092))
    put(PT, b"".join(struct.pack("<I", (i << 12) | 0x67) for i in range(1024)))
    # the stack: a return address to TARGET, then a recognisable pattern
    put(STACK, struct.pack("<16I", TARGET, *[0x11111111 * k for k in range(1, 16)]))
    put(REC, bytes(16))
    return bytes(m)


# ---- the states ----------------------------------------------------------------------------
@dataclass(frozen=True)
class World:
    """One machine state: the base state with one virtualized resource changed."""
    name: str
    description: str
    apply: Callable
    user: bool = True          # also run at CPL 3


def _w_gdtr(m):
    m.cpu.gdtr.base = GDT_B


def _w_idtr(m):
    m.cpu.idtr.base = IDT_B


def _w_ldtr(m):
    m.load_ldtr(LDT_SEL)


def _w_tr(m):
    for g in (GDT_A, GDT_B):
        m.write(g, _gdt(TSS_B_SEL))
    m.cpu.tr.selector, m.cpu.tr.base, m.cpu.tr.limit = TSS_B_SEL, TSS_B, TSS_SIZE - 1


def _w_cr0(m):
    m.cpu.cr0 |= CR0_TS | CR0_MP


def _w_if(m):
    m.cpu.eflags = m.cpu.eflags | IF


def _w_iopl(m):
    m.cpu.eflags = m.cpu.eflags | IOPL


def _w_paging(m):
    m.write_cr(3, PD)
    m.write_cr(0, m.cpu.cr0 | CR0_PG | CR0_WP)
    m.cpu.cr2 = 0x00BAD000     # as if a page fault had happened


def _w_cr4(m):
    m.write_cr(4, CR4_PSE)


def _w_pic(m):
    m.dev.imr = 0xFE


#: what each state changes, for the evidence sentences
_RESOURCE = {"gdtr": "GDTR", "idtr": "IDTR", "ldtr": "LDTR", "tr": "TR", "cr0": "CR0",
             "if": "EFLAGS.IF", "iopl": "EFLAGS.IOPL", "paging": "paging (CR0.PG, CR3, CR2)",
             "cr4": "CR4", "pic": "the interrupt controller's state"}

WORLDS: tuple[World, ...] = (
    World("base", "GDT A, IDT A, no LDT, TSS A, CR0 = PE|ET, IF 0, IOPL 0, paging off, "
          "interrupt controller mask 0xff", lambda m: None),
    World("gdtr", "GDTR points at a copy of the GDT elsewhere", _w_gdtr),
    World("idtr", "IDTR points at a copy of the IDT elsewhere", _w_idtr),
    World("ldtr", "an LDT is loaded", _w_ldtr),
    World("tr", "TR holds the other TSS", _w_tr),
    World("cr0", "CR0.TS and CR0.MP set", _w_cr0),
    World("if", "EFLAGS.IF = 1", _w_if),
    World("iopl", "EFLAGS.IOPL = 3 (CPL 0 only: a monitor runs user mode at IOPL 0)", _w_iopl,
          user=False),
    World("paging", "paging on (identity map, CR3 = page directory, CR0.PG|WP, CR2 set)",
          _w_paging),
    World("cr4", "CR4.PSE set", _w_cr4),
    World("pic", "interrupt controller mask 0xfe (a device's state)", _w_pic),
)


def _enter(m, ring: int) -> None:
    """Put the CPU at ``ring`` with that ring's flat selectors (as an iretd would)."""
    data = KDATA if ring == 0 else UDATA
    code = KCODE if ring == 0 else UCODE
    d = m.read_descriptor(data)
    for i in (0, 2, 3, 4, 5):
        m._load_cache(i, data, d)
    m._set_cs(code, m.read_descriptor(code), ring, "classify set-up")


# ---- operand set-ups -----------------------------------------------------------------------
#: the register file every run starts from (set-ups override some)
STANDARD_REGS = {"eax": SCRATCH, "ecx": 3, "edx": 0, "ebx": 7, "esp": STACK,
                 "ebp": SCRATCH + 0x300, "esi": SCRATCH + 0x100, "edi": SCRATCH + 0x200}


@dataclass(frozen=True)
class Setup:
    """Operand values for one series of runs: registers (a value, or a function of the
    prepared CPU for values that must be relative to the state, like "CR0 with TS flipped"),
    dwords at ESP, bytes at addresses, status flags to set."""
    name: str = "standard"
    regs: tuple = ()           # ((register name, int or callable(cpu)), ...)
    stack: tuple = ()          # dwords written at ESP
    mem: tuple = ()            # ((address, bytes), ...)
    flags: int = 0             # EFLAGS bits OR-ed in (status flags only)


def _selector_name(s: int) -> str:
    return {KCODE: "ring-0 code", KDATA: "ring-0 data", UCODE: "ring-3 code",
            UDATA: "ring-3 data", KCODE2: "another ring-0 code", KDATA2: "another ring-0 data",
            UCODE2: "another ring-3 code", UDATA2: "another ring-3 data",
            CONFORMING: "conforming code", TSS_B_SEL: "a TSS", LDT_SEL: "the LDT",
            0: "null"}.get(s, f"{s:#x}")


def _reg_of(op) -> str | None:
    if isinstance(op, Reg) and op.kind == "gpr":
        return GPR_NAMES[op.index]
    return None


def _value_setups(insn: Insn, op, values: list[tuple[str, object]]) -> list[Setup]:
    """Set-ups that give source operand ``op`` each value (register or memory)."""
    out = []
    for name, v in values:
        r = _reg_of(op)
        if r is not None:
            out.append(Setup(name, regs=((r, v),)))
        elif isinstance(op, Mem):
            ea = _effective_address(op)
            if callable(v):
                raise AssertionError("memory set-ups take plain values")
            out.append(Setup(name, mem=((ea, struct.pack("<I", v)[:op.size or 4]),)))
    return out


def _effective_address(m: Mem) -> int:
    """Where a memory operand points with the standard registers (see :func:`_regs_for_mem`)."""
    regs = _regs_for_mem(m)
    a = m.disp
    if m.base is not None:
        a += regs[GPR_NAMES[m.base]]
    if m.index is not None:
        a += regs[GPR_NAMES[m.index]] * m.scale
    return a & 0xFFFFFFFF


def _regs_for_mem(m: Mem) -> dict:
    """The standard registers, with a memory operand's base register pointed at the scratch
    area (or left alone for ESP/EBP) and its index register zeroed."""
    regs = dict(STANDARD_REGS)
    if m.base is not None and m.base not in (4, 5):
        regs[GPR_NAMES[m.base]] = SCRATCH
    if m.index is not None:
        regs[GPR_NAMES[m.index]] = 0
    return regs


def _far_pointer(target: int, sel: int) -> bytes:
    return struct.pack("<IH", target, sel)


def setups_for(insn: Insn) -> list[Setup]:
    """The operand set-ups a form is tried with. Most forms need only the standard registers;
    instructions whose outcome hangs on an operand that names a privileged resource (a
    selector, a control register value, a descriptor table, a far pointer, a popped EFLAGS)
    get several values, the same in every state."""
    m = insn.mnemonic
    ops = insn.operands
    base_mem = []
    for op in ops:
        if isinstance(op, Mem):
            for r, v in _regs_for_mem(op).items():
                if v != STANDARD_REGS[r]:
                    base_mem.append((r, v))

    def with_base(setups: list[Setup]) -> list[Setup]:
        if not base_mem:
            return setups
        return [Setup(s.name, tuple(base_mem) + s.regs, s.stack, s.mem, s.flags)
                for s in setups]

    sels = [(f"selector {s:#x} ({_selector_name(s)})", s) for s in (KDATA2, UDATA2)]
    dest = ops[0] if ops else None
    src = ops[-1] if ops else None
    if m == "mov" and isinstance(dest, Reg) and dest.kind == "seg":
        return with_base(_value_setups(insn, src, sels))
    if m == "pop" and isinstance(dest, Reg) and dest.kind == "seg":
        return [Setup(n, stack=(v,)) for n, v in sels]
    if m == "mov" and isinstance(dest, Reg) and dest.kind == "cr":
        n = dest.index
        vals = {0: ("CR0 with TS flipped", lambda c: c.cr0 ^ CR0_TS),
                2: ("CR2 = 0x00c0f000", lambda c: 0x00C0F000),
                3: ("CR3 = the other page directory", lambda c: PD2 if c.cr3 != PD2 else PD),
                4: ("CR4 with PSE flipped", lambda c: c.cr4 ^ CR4_PSE)}.get(n)
        if vals is None:
            return [Setup()]
        return with_base(_value_setups(insn, src, [vals]))
    if m == "lmsw":
        return with_base(_value_setups(insn, src, [("MSW with TS flipped",
                                                     lambda c: (c.cr0 ^ CR0_TS) & 0xFFFF)])
                         if _reg_of(src) else
                         [Setup("MSW = PE|MP|TS", mem=((_effective_address(src),
                                                         struct.pack("<H", 0xB)),))])
    if m in ("lgdt", "lidt"):
        ea = _effective_address(src)
        limit, base = (GDT_LIMIT, GDT_B) if m == "lgdt" else (IDT_LIMIT, IDT_B)
        return with_base([Setup(f"the other {'GDT' if m == 'lgdt' else 'IDT'} "
                                f"({base:#x}, limit {limit:#x})",
                                mem=((ea, struct.pack("<HI", limit, base)),))])
    if m == "lldt":
        return with_base(_value_setups(insn, src, [("the LDT selector", LDT_SEL),
                                                   ("a null selector", 0)]))
    if m == "ltr":
        return with_base(_value_setups(insn, src, [("the other TSS", TSS_B_SEL)]))
    if m in ("lar", "lsl", "verr", "verw"):
        vals = [(f"selector {s:#x} ({_selector_name(s)})", s) for s in (KDATA, UDATA2, TSS_B_SEL)]
        return with_base(_value_setups(insn, src, vals))
    if isinstance(src, Mem) and far_indirect(insn):
        ea = _effective_address(src)
        return with_base([Setup(f"far pointer {s:#x}:{TARGET:#x} ({_selector_name(s)})",
                                mem=((ea, _far_pointer(TARGET, s)),))
                          for s in (KCODE2, UCODE2, CONFORMING)])
    if m == "retf":
        return [Setup(f"return to {_selector_name(UCODE2)} {UCODE2:#x}",
                      stack=(TARGET, UCODE2, STACK2, UDATA2)),
                Setup(f"return to {_selector_name(KCODE2)} {KCODE2:#x}",
                      stack=(TARGET, KCODE2, STACK2, KDATA2))]
    if m in ("iretd", "iret"):
        return [Setup(f"return to {_selector_name(UCODE2)} {UCODE2:#x} with IF=1 IOPL=3",
                      stack=(TARGET, UCODE2, 0x3202, STACK2, UDATA2)),
                Setup(f"return to {_selector_name(KCODE2)} {KCODE2:#x} with IF=1 IOPL=3",
                      stack=(TARGET, KCODE2, 0x3202, STACK2, KDATA2))]
    if m in ("popfd", "popf"):
        return [Setup("popped EFLAGS with IF=1 IOPL=3 and status flags", stack=(0x32D7,)),
                Setup("popped EFLAGS 0x2 (IF=0 IOPL=0)", stack=(0x2,))]
    if m == "into":
        return [Setup("OF = 1", flags=0x800), Setup("OF = 0")]
    if m in ("in", "out"):
        port = ops[1] if m == "in" else ops[0]
        if isinstance(port, Reg):
            return [Setup("dx = 0x21 (interrupt controller mask)", regs=(("edx", 0x21),))]
        return [Setup()]
    return with_base([Setup()])


# ---- running one experiment ----------------------------------------------------------------
@dataclass
class Outcome:
    """What one run did."""
    world: str
    cpl: int
    setup: str
    trap: int | None = None           # vector of the exception the instruction raised
    recorded: int | None = None       # the vector the IDT handler recorded
    crash: str = ""                   # the kit could not run it
    gate_to_ring0: bool = False       # a software interrupt took user mode into ring 0
    n_before: tuple = ()
    n_after: tuple = ()
    v_before: dict = field(default_factory=dict)
    v_after: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)   # system memory written (address -> byte)
    tlb_lost: frozenset = frozenset()

    @property
    def trapped(self) -> bool:
        return self.trap is not None

    @property
    def ran(self) -> bool:
        """Completed without a trap and without a crash."""
        return self.trap is None and not self.crash

    @property
    def where(self) -> str:
        return f"CPL {self.cpl} [{self.world}]"

    def changes(self) -> dict:
        """Virtualized-state fields this run changed: name -> (before, after)."""
        out = {k: (self.v_before[k], self.v_after[k]) for k in self.v_before
               if self.v_before[k] != self.v_after[k]}
        if self.tables:
            out["system tables"] = ("", _describe_bytes(self.tables))
        if self.tlb_lost:
            out["TLB"] = (f"{len(self.tlb_lost)} entries", "dropped")
        return out


def _describe_bytes(d: dict) -> str:
    a = min(d)
    return f"{len(d)} byte(s) written at {a:#x}"


def _vstate(m) -> dict:
    c = m.cpu
    ef = c.eflags
    v = {"GDTR": (c.gdtr.base, c.gdtr.limit), "IDTR": (c.idtr.base, c.idtr.limit),
         "LDTR": c.ldtr.selector, "TR": c.tr.selector, "CR0": c.cr0, "CR2": c.cr2,
         "CR3": c.cr3, "CR4": c.cr4, "CPL": c.cpl, "halted": c.halted}
    for name, (sh, mask) in SYSTEM_FLAGS.items():
        v[name] = (ef >> sh) & mask
    for i, n in enumerate(SEG_NAMES):
        v[n.upper()] = c.seg[i].selector
    d = m.dev
    v["devices"] = (d.imr, d.isr, d.irr, d.timer_period, len(d.console), d.poweroff_code)
    return v


def _tlb(m) -> frozenset:
    return frozenset((k, vpn) for k, t in m.tlb.items() for vpn in t)


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:#x}"
    if isinstance(v, tuple) and all(isinstance(x, int) for x in v):
        return "(" + ", ".join(f"{x:#x}" for x in v) + ")"
    return str(v)


class Lab:
    """Template machines, one per (state, CPL), each restored before a run."""

    def __init__(self):
        from vmkit.machine.machine import Machine
        self.image = _memory()
        self.states: list[tuple[World, int, object, object]] = []
        for w in WORLDS:
            for cpl in ((0, 3) if w.user else (0,)):
                m = Machine(MEMORY)
                m.write(0, self.image)
                c = m.cpu
                c.gdtr.base, c.gdtr.limit = GDT_A, GDT_LIMIT
                c.idtr.base, c.idtr.limit = IDT_A, IDT_LIMIT
                c.tr.selector, c.tr.base, c.tr.limit = TSS_A_SEL, TSS_A, TSS_SIZE - 1
                c.cr0 = CR0_PE | CR0_ET
                c.eflags = 0x2
                m.dev.imr = 0xFF
                _enter(m, 0)
                w.apply(m)
                _enter(m, cpl)
                c.eip = CODE
                self.states.append((w, cpl, m, m.snapshot()))

    def run(self, code: bytes, setup: Setup, world: World, cpl: int, m, snap) -> Outcome:
        m.restore(snap)
        c = m.cpu
        regs = dict(STANDARD_REGS)
        for r, v in setup.regs:
            regs[r] = v(c) if callable(v) else v
        for i, r in enumerate(GPR_NAMES):
            c.regs[i] = regs[r] & 0xFFFFFFFF
        if setup.stack:
            m.write(c.regs[4], struct.pack(f"<{len(setup.stack)}I", *setup.stack))
        for a, b in setup.mem:
            m.write(a, b)
        if setup.flags:
            c.eflags = c.eflags | setup.flags
        m.write(CODE, code)
        if c.cr0 & CR0_PG:   # warm the TLB so that dropping entries can be seen
            for a in (CODE, TARGET, SCRATCH, SCRATCH + 0x1000, STACK, STACK2, KSTACK - 4):
                for user in ((False, True) if cpl == 3 else (False,)):
                    m.translate(a, False, user)
                    m.translate(a, True, user)
        before_mem = bytes(m.mem)
        out = Outcome(world.name, cpl, setup.name)
        out.n_before = (tuple(c.regs), c.eip, c.eflags & USER_FLAGS,
                        tuple((r, regs[r]) for r, _ in setup.regs), setup.stack, setup.mem)
        out.v_before = _vstate(m)
        tlb0 = _tlb(m)
        events = m.step()
        res = m.last_result
        if res.reason == "crash":
            out.crash = res.detail
            return out
        for e in events:
            if isinstance(e, Interrupt):
                if e.source == "exception" and out.trap is None:
                    out.trap = e.vector
                elif e.source in ("int", "int3", "into") and e.from_ring == 3 and e.to_ring == 0:
                    out.gate_to_ring0 = True
        # non-trapping result
        diff = _mem_diff(before_mem, m.mem)
        lo, hi = SYSTEM
        ordinary = frozenset((a, v) for a, v in diff.items() if not lo <= a < hi)
        out.tables = {a: v for a, v in diff.items() if lo <= a < hi}
        out.n_after = (tuple(c.regs), c.eip, c.eflags & USER_FLAGS, ordinary)
        out.v_after = _vstate(m)
        out.tlb_lost = frozenset(tlb0 - _tlb(m))
        if out.trap is not None:
            # let the IDT handler run: it records the vector and halts
            m.run(max_steps=STEP_BUDGET)
            out.recorded = struct.unpack("<I", m.read(REC, 4))[0]
        return out


def _mem_diff(before: bytes, after: bytearray) -> dict[int, int]:
    out = {}
    n = len(before)
    for a in range(0, n, 4096):
        if before[a:a + 4096] != after[a:a + 4096]:
            for i in range(a, min(a + 4096, n)):
                if before[i] != after[i]:
                    out[i] = after[i]
    return out


_LAB: Lab | None = None


def _lab() -> Lab:
    global _LAB
    if _LAB is None:
        _LAB = Lab()
    return _LAB


# ---- the classification --------------------------------------------------------------------
@dataclass(frozen=True)
class Classification:
    """Popek & Goldberg classes of one instruction form, with the evidence that decided them.

    ``instruction`` is the form as classified (capstone's spelling); ``evidence`` short
    sentences naming the experiments that showed each class."""
    instruction: str
    privileged: bool
    sensitive: bool
    control_sensitive: bool
    behavior_sensitive: bool
    innocuous: bool
    evidence: tuple = ()
    user_sensitive: bool = False
    mnemonic: str = ""
    runs: int = 0
    crashed: int = 0

    @property
    def classes(self) -> str:
        """A short summary: "privileged, control-sensitive" ..."""
        parts = ["privileged" if self.privileged else "unprivileged"]
        if self.sensitive:
            kinds = [k for k, f in (("control", self.control_sensitive),
                                    ("behaviour", self.behavior_sensitive)) if f]
            parts.append(f"sensitive ({', '.join(kinds)})")
        else:
            parts.append("innocuous")
        return ", ".join(parts)

    @property
    def violates_theorem1(self) -> bool:
        return self.sensitive and not self.privileged

    @property
    def violates_theorem3(self) -> bool:
        return self.user_sensitive and not self.privileged

    def __str__(self) -> str:
        s = f"{self.instruction}: {self.classes}"
        if self.violates_theorem1:
            s += " -- sensitive but not privileged"
        return s


def _analyse(text: str, mnemonic: str, outs: list[Outcome]) -> Classification:
    ev: list[str] = []
    user_worlds = [w.name for w in WORLDS if w.user]
    setups = sorted({o.setup for o in outs}, key=[o.setup for o in outs].index)
    ev.append(f"ran {len(outs)} times: {len(WORLDS)} states at CPL 0 "
              f"({', '.join(w.name for w in WORLDS)}) and {len(user_worlds)} at CPL 3 (IOPL 0), "
              f"{len(setups)} operand set-up(s): {'; '.join(setups)}")
    crashes = [o for o in outs if o.crash]
    if crashes:
        ev.append(f"the kit cannot run it in {len(crashes)} run(s), e.g. {crashes[0].where}: "
                  f"{crashes[0].crash}")
    idx = {(o.world, o.cpl, o.setup): o for o in outs}

    # privileged: every CPL-3 run traps, and at CPL 0 it runs (in some state)
    free0 = [o for o in outs if o.cpl == 0 and o.ran]
    user = [o for o in outs if o.cpl == 3 and not o.crash]
    traps3 = [o for o in user if o.trapped]
    runs3 = [o for o in user if o.ran]
    privileged = bool(free0) and bool(user) and not runs3
    if privileged:
        names = sorted({_vname(o.trap) for o in traps3})
        rec = sorted({o.recorded for o in traps3 if o.recorded is not None})
        ev.append(f"privileged: traps at CPL 3 in all {len(traps3)} user-mode runs "
                  f"({', '.join(names)}; the IDT handler recorded vector "
                  f"{', '.join(map(str, rec))}), runs at CPL 0 in {len(free0)}")
    elif not free0:
        t0 = [o for o in outs if o.cpl == 0 and o.trapped]
        if t0:
            ev.append(f"not privileged: it traps at CPL 0 too ({_vname(t0[0].trap)} at "
                      f"{t0[0].where}, {t0[0].setup})")
    elif runs3:
        o = runs3[0]
        ev.append(f"not privileged: runs without trapping at {o.where} ({o.setup})")

    # control-sensitive: a non-trapping run that changes the virtualized state
    control = None
    user_control = None
    for o in outs:
        if not o.ran:
            continue
        ch = o.changes()
        if ch and control is None:
            control = (o, ch)
        if ch and o.cpl == 3 and not o.gate_to_ring0 and user_control is None:
            user_control = (o, ch)
    if control:
        o, ch = control
        ev.append(f"control-sensitive: at {o.where} ({o.setup}) it changes "
                  + ", ".join(f"{k} {_fmt(a)} -> {_fmt(b)}" if k not in ("system tables", "TLB")
                              else f"{k}: {b}" for k, (a, b) in list(ch.items())[:4])
                  + " without trapping")

    # behaviour-sensitive: runs from the same registers, flags and memory, in states that
    # differ only in the mode or only in one virtualized resource, that end differently
    mode_dep = None
    state_dep = None
    user_dep = None
    for s in setups:
        for w in WORLDS:
            a, b = idx.get((w.name, 0, s)), idx.get((w.name, 3, s))
            if mode_dep is None and a and b:
                d = _differs(a, b)
                if d:
                    mode_dep = (a, b, d, "the mode")
            if w.name == "base":
                continue
            for cpl in (0, 3):
                a, b = idx.get(("base", cpl, s)), idx.get((w.name, cpl, s))
                if not (a and b):
                    continue
                d = _differs(a, b)
                if d and state_dep is None:
                    state_dep = (a, b, d, f"{_RESOURCE[w.name]} (state {w.name})")
                if d and cpl == 3 and user_dep is None \
                        and not (a.gate_to_ring0 or b.gate_to_ring0):
                    user_dep = (a, b, d, f"{_RESOURCE[w.name]} (state {w.name})")
    for dep in (mode_dep, state_dep):
        if dep:
            a, b, d, what = dep
            ev.append(f"behaviour-sensitive: depends on {what}: {d} ({a.where} vs {b.where}, "
                      f"{a.setup})")
    behaviour = mode_dep or state_dep
    user_behaviour = user_dep
    control_s = control is not None
    behaviour_s = behaviour is not None
    sensitive = control_s or behaviour_s
    user_s = user_control is not None or user_behaviour is not None
    if sensitive and not user_s:
        ev.append("not user-sensitive: run at CPL 3 it neither changes the virtualized state "
                  "nor shows it" + (" (its gate enters ring 0: the trap sequence)"
                                    if any(o.gate_to_ring0 for o in outs) else ""))
    elif user_s:
        if user_control:
            o, ch = user_control
            ev.append(f"user-sensitive: at {o.where} it changes {', '.join(list(ch)[:3])}")
        else:
            a, b, d, what = user_behaviour
            ev.append(f"user-sensitive: at CPL 3 it depends on {what}: {d}")
    if not sensitive:
        ok = [o for o in outs if o.ran]
        if ok:
            ev.append(f"innocuous: {len(ok)} runs without a trap changed no virtualized state, "
                      "and runs from states differing in it or in the mode ended alike")
        else:
            vs = sorted({_vname(o.trap) for o in outs if o.trapped})
            ev.append(f"innocuous: it traps ({', '.join(vs)}) in every state, at both CPLs, "
                      "so it can neither change nor show the virtualized state")
    return Classification(text, privileged, sensitive, control_s, behaviour_s, not sensitive,
                          tuple(ev), user_s, mnemonic, len(outs), len(crashes))


def _vname(v: int | None) -> str:
    return VECTOR_NAMES.get(v, f"vector {v}") if v is not None else "none"


def _differs(a: Outcome, b: Outcome) -> str | None:
    """How two non-trapping runs from comparable states ended differently (None if alike)."""
    if not (a.ran and b.ran) or a.n_before != b.n_before:
        return None
    ra, rb = a.n_after, b.n_after
    if ra[0] != rb[0]:
        for i, (x, y) in enumerate(zip(ra[0], rb[0])):
            if x != y:
                return f"{GPR_NAMES[i]} = {x:#x} vs {y:#x}"
    if ra[1] != rb[1]:
        return f"EIP = {ra[1]:#x} vs {rb[1]:#x}"
    if ra[2] != rb[2]:
        return f"flags = {ra[2]:#x} vs {rb[2]:#x}"
    if ra[3] != rb[3]:
        ma, mb = dict(ra[3]), dict(rb[3])
        addrs = sorted(set(ma) | set(mb))
        diff = [x for x in addrs if ma.get(x) != mb.get(x)]
        at = diff[0] & ~3
        return (f"memory at {at:#x} written {_dword(ma, at)} vs {_dword(mb, at)}"
                if diff else "memory differs")
    # the virtualized state it writes: compare final values of what either run changed
    # Fields that started equal are compared. The resource two states differ in is not (lmsw
    # keeps CR0.PG as it was), except between the modes when both runs write it: the segment
    # registers start different there by construction, and where a far jump leaves CS is a
    # result. Which table a descriptor write lands in and the TLB's contents are not results.
    ca, cb = a.changes(), b.changes()
    for k in list(ca) + [k for k in cb if k not in ca]:
        if k in ("TLB", "system tables"):
            continue
        if a.v_before[k] != b.v_before[k] and not (a.cpl != b.cpl and k in ca and k in cb):
            continue
        if a.v_after[k] != b.v_after[k]:
            return f"{k} ends {_fmt(a.v_after[k])} vs {_fmt(b.v_after[k])}"
    return None


def _dword(m: dict, at: int) -> str:
    if not any(at + k in m for k in range(4)):
        return "nothing"
    return "0x" + "".join(f"{m[at + k]:02x}" if at + k in m else "__" for k in (3, 2, 1, 0))


# ---- forms and parsing ----------------------------------------------------------------------
_HARNESS = (f".equ TARGET, {TARGET:#x}\n.equ SCRATCH, {SCRATCH:#x}\n.equ KCODE, {KCODE:#x}\n"
            f".equ KDATA, {KDATA:#x}\n.equ UCODE, {UCODE:#x}\n.equ UDATA, {UDATA:#x}\n")

_BINARY = {"add", "adc", "sub", "sbb", "cmp", "and", "or", "xor", "test"}
_SHIFTS = {"shl", "sal", "shr", "sar", "rol", "ror"}
_SPECIAL = {
    "mov": ["mov eax, ebx", "mov eax, dword ptr [eax]", "mov eax, cr0", "mov cr0, eax",
            "mov eax, cr2", "mov cr2, eax", "mov eax, cr3", "mov cr3, eax", "mov eax, cr4",
            "mov cr4, eax", "mov eax, cs", "mov eax, ds", "mov eax, ss", "mov ds, ax",
            "mov es, ax", "mov ss, ax"],
    "push": ["push eax", "push cs", "push ds", "push ss"],
    "pop": ["pop eax", "pop ds", "pop ss"],
    "in": ["in al, dx", "in al, 0x21"],
    "out": ["out dx, al", "out 0x21, al"],
    "smsw": ["smsw eax", "smsw word ptr [eax]"],
    "sldt": ["sldt ax"], "str": ["str ax"], "lldt": ["lldt ax"], "ltr": ["ltr ax"],
    "lmsw": ["lmsw ax"], "lgdt": ["lgdt [eax]"], "lidt": ["lidt [eax]"],
    "sgdt": ["sgdt [eax]"], "sidt": ["sidt [eax]"], "invlpg": ["invlpg [eax]"],
    "lar": ["lar eax, ebx"], "lsl": ["lsl eax, ebx"], "verr": ["verr bx"], "verw": ["verw bx"],
    "ljmp": ["ljmp [eax]"], "lcall": ["lcall [eax]"], "retf": ["retf"], "int": ["int 0x80"],
    "iret": ["iretw"], "pushf": ["pushfw"], "popf": ["popfw"],
    "jmp": ["jmp 0x2000", "jmp eax"], "call": ["call 0x2000"], "ret": ["ret"],
    "jecxz": ["jecxz 0x1010"], "loop": ["loop 0x1010"], "loope": ["loope 0x1010"],
    "loopne": ["loopne 0x1010"], "xchg": ["xchg eax, ebx"], "cmpxchg": ["cmpxchg [eax], ebx"],
    "bswap": ["bswap eax"], "movzx": ["movzx eax, bl"], "movsx": ["movsx eax, bl"],
    "lea": ["lea eax, [ebx + 4]"], "imul": ["imul eax, ebx"], "mul": ["mul ebx"],
    "div": ["div ebx"], "idiv": ["idiv ebx"], "inc": ["inc eax"], "dec": ["dec eax"],
    "neg": ["neg eax"], "not": ["not eax"],
}
#: mnemonics whose only encodings the kit does not run (capstone knows them; the subset not)
_NOT_RUNNABLE = {"jcxz": "needs a 0x67 address-size prefix (16-bit addressing is not in the "
                         "subset)"}


def canonical_forms(mnemonic: str | None = None) -> list[str]:
    """Instruction forms to classify, derived from the semantics registry: one canonical form
    per registered mnemonic, several where the operands matter (mov to and from control and
    segment registers, push/pop of segment registers, in/out with an immediate port and with
    dx, smsw to a register and to memory, ...). With ``mnemonic``, that mnemonic's forms."""
    sem._load()
    names = [mnemonic] if mnemonic else sorted(sem.BY_MNEMONIC)
    out = []
    for m in names:
        if m in _NOT_RUNNABLE:
            continue
        if m in _SPECIAL:
            out += _SPECIAL[m]
        elif m in _BINARY:
            out.append(f"{m} eax, ebx")
        elif m in _SHIFTS:
            out.append(f"{m} eax, 3")
        elif m.startswith("set"):
            out.append(f"{m} al")
        elif m.startswith("cmov"):
            out.append(f"{m} eax, ebx")
        elif m.startswith("j"):
            out.append(f"{m} 0x2000")
        else:
            out.append(m)
    return out


@dataclass(frozen=True)
class _Form:
    line: str
    code: bytes
    insn: Insn
    text: str


_FORM_CACHE: dict[str, _Form] = {}


def _form(line: str) -> _Form:
    f = _FORM_CACHE.get(line)
    if f is not None:
        return f
    from vmkit.isa.asm import assemble
    if "\n" in line or ";" in line.split("#")[0]:
        raise VmkitError(f"classify takes one instruction, got {line!r}")
    try:
        prog = assemble(_HARNESS + line + "\n", base=CODE)
    except AssemblyError as e:
        raise VmkitError(f"cannot assemble {line!r}: {e.message}") from None
    code = prog.code
    if not code:
        raise VmkitError(f"{line!r} is not an instruction")
    insn = decode_one(code + bytes(15), CODE)
    if insn is None or insn.size != len(code):
        raise VmkitError(f"{line!r} must be exactly one instruction")
    sem._load()
    if insn.id == 0 or insn.id not in sem.REGISTRY:
        raise VmkitError(f"{insn.text!r} is not in the kit's instruction subset")
    if insn.adsize:
        raise VmkitError(f"{insn.text!r}: 16-bit addressing (0x67 prefix) is not in the subset")
    f = _Form(line, code, insn, _display(insn, line))
    _FORM_CACHE[line] = f
    return f


def _display(insn: Insn, line: str) -> str:
    """Capstone's spelling, unless it does not assemble back to the same bytes (capstone prints
    ``lcall [eax]`` as ``call ptr [eax]``): then the line as written."""
    from vmkit.isa.asm import assemble
    try:
        if assemble(insn.text + "\n", base=CODE).code == insn.raw:
            return insn.text
    except AssemblyError:
        pass
    return " ".join(line.split())


def _resolve(asm_line: str) -> str:
    """A bare mnemonic becomes its canonical form; anything else is kept."""
    s = " ".join(str(asm_line).split())
    if not s:
        raise VmkitError("classify needs an instruction, e.g. 'popfd' or 'mov eax, cr0'")
    if " " not in s:
        sem._load()
        low = s.lower()
        if low in sem.BY_MNEMONIC or low in _SPECIAL:
            forms = canonical_forms(low)
            if forms:
                return forms[0]
    return s


_CACHE: dict[str, Classification] = {}


def classify(asm_line: str) -> Classification:
    """Classify one instruction by experiment (see the module docstring).

    ``asm_line`` is an instruction in the kit's Intel syntax (``"mov eax, cr0"``, ``"lgdt
    [eax]"``, ``"out dx, al"``) or a bare mnemonic (then its canonical form, e.g. ``"lgdt"`` is
    ``lgdt [eax]``). The symbols TARGET and SCRATCH name the landing code and the scratch
    area (``"ljmp KCODE, TARGET"``). Raises VmkitError for text that is not exactly one
    instruction of the subset."""
    line = _resolve(asm_line)
    hit = _CACHE.get(line)
    if hit is not None:
        return hit
    f = _form(line)
    lab = _lab()
    outs = []
    for setup in setups_for(f.insn):
        for world, cpl, m, snap in lab.states:
            outs.append(lab.run(f.code, setup, world, cpl, m, snap))
    c = _analyse(f.text, f.insn.mnemonic, outs)
    _CACHE[line] = c
    return c


# ---- the whole subset ------------------------------------------------------------------------
class Violators(list):
    """The instructions that break a theorem's condition (a list of Classification); ``holds``
    is True when there are none."""

    def __init__(self, rows: Iterable[Classification], theorem: str, condition: str):
        super().__init__(rows)
        self.theorem = theorem
        self.condition = condition

    @property
    def holds(self) -> bool:
        return not self

    @property
    def instructions(self) -> list[str]:
        return [r.instruction for r in self]

    def __repr__(self) -> str:
        if not self:
            return f"<{self.theorem}: {self.condition} holds>"
        return (f"<{self.theorem}: {self.condition} fails for {len(self)} instruction(s): "
                f"{', '.join(self.instructions)}>")


class ClassificationTable:
    """The classification of every instruction form of the subset (``classify_all()``)."""

    def __init__(self, rows: list[Classification], skipped: dict[str, str]):
        self.rows = rows
        self.skipped = skipped   # mnemonic or form -> why it was not classified

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, key):
        """A row by index or by instruction text (capstone spelling or the form written)."""
        if isinstance(key, int):
            return self.rows[key]
        k = " ".join(str(key).split()).lower()
        for r in self.rows:
            if r.instruction.lower() == k:
                return r
        try:
            text = _form(_resolve(key)).text
        except VmkitError:
            text = None
        for r in self.rows:
            if r.instruction == text:
                return r
        raise KeyError(key)

    def __contains__(self, key) -> bool:
        try:
            self[key]
            return True
        except KeyError:
            return False

    def violators(self) -> Violators:
        """Sensitive but unprivileged instructions (Theorem 1's violators)."""
        return theorem1(self)

    def counts(self) -> dict:
        rows = self.rows
        return {"forms": len(rows),
                "privileged": sum(r.privileged for r in rows),
                "sensitive": sum(r.sensitive for r in rows),
                "control_sensitive": sum(r.control_sensitive for r in rows),
                "behavior_sensitive": sum(r.behavior_sensitive for r in rows),
                "innocuous": sum(r.innocuous for r in rows),
                "user_sensitive": sum(r.user_sensitive for r in rows),
                "theorem1_violators": sum(r.violates_theorem1 for r in rows),
                "theorem3_violators": sum(r.violates_theorem3 for r in rows)}

    def __repr__(self) -> str:
        head = ("instruction", "priv", "control", "behaviour", "sensitive", "user-sens",
                "class")
        w = max(len(head[0]), *(len(r.instruction) for r in self.rows)) if self.rows else 12
        lines = [f"{head[0]:<{w}}  {'priv':4}  {'ctrl':4}  {'behv':4}  {'sens':4}  {'user':4}  "
                 "class"]
        yes = {True: "yes", False: "-"}
        for r in self.rows:
            cls = "innocuous" if r.innocuous else ("privileged" if r.privileged
                                                   else "SENSITIVE, UNPRIVILEGED")
            lines.append(f"{r.instruction:<{w}}  {yes[r.privileged]:4}  "
                         f"{yes[r.control_sensitive]:4}  {yes[r.behavior_sensitive]:4}  "
                         f"{yes[r.sensitive]:4}  {yes[r.user_sensitive]:4}  {cls}")
        c = self.counts()
        lines.append(f"{c['forms']} forms: {c['privileged']} privileged, {c['sensitive']} "
                     f"sensitive, {c['innocuous']} innocuous; Theorem 1 violators: "
                     f"{c['theorem1_violators']}, Theorem 3 violators: "
                     f"{c['theorem3_violators']}")
        return "\n".join(lines)

    def to_html(self) -> str:
        """An HTML table (Jupyter shows it through ``_repr_html_``)."""
        yes = {True: "&#10003;", False: ""}
        rows = []
        for r in self.rows:
            style = ' style="background:#fdd"' if r.violates_theorem1 else ""
            title = html.escape("\n".join(r.evidence), quote=True)
            rows.append(f"<tr{style} title=\"{title}\"><td><code>{html.escape(r.instruction)}"
                        f"</code></td><td>{yes[r.privileged]}</td>"
                        f"<td>{yes[r.control_sensitive]}</td><td>{yes[r.behavior_sensitive]}"
                        f"</td><td>{yes[r.sensitive]}</td><td>{yes[r.user_sensitive]}</td>"
                        f"<td>{yes[r.innocuous]}</td></tr>")
        c = self.counts()
        caption = (f"{c['forms']} instruction forms classified by experiment: "
                   f"{c['privileged']} privileged, {c['sensitive']} sensitive, "
                   f"{c['innocuous']} innocuous. Red rows are sensitive but not privileged "
                   f"(they break Popek &amp; Goldberg's Theorem 1). Hover a row for the "
                   f"evidence.")
        return ("<table><caption>" + caption + "</caption><thead><tr><th>instruction</th>"
                "<th>privileged</th><th>control-sensitive</th><th>behaviour-sensitive</th>"
                "<th>sensitive</th><th>user-sensitive</th><th>innocuous</th></tr></thead>"
                "<tbody>" + "".join(rows) + "</tbody></table>")

    def _repr_html_(self) -> str:
        return self.to_html()


_ALL: ClassificationTable | None = None


def classify_all() -> ClassificationTable:
    """Classify every instruction form of the subset (cached for the process)."""
    global _ALL
    if _ALL is not None:
        return _ALL
    rows, seen, skipped = [], {}, dict(_NOT_RUNNABLE)
    for line in canonical_forms():
        try:
            f = _form(line)
        except VmkitError as e:
            skipped[line] = str(e)
            continue
        if f.code in seen:      # an alias (sal is shl): one row
            continue
        seen[f.code] = line
        c = classify(line)
        if c.crashed == c.runs:
            skipped[line] = c.evidence[1]
            continue
        rows.append(c)
    _ALL = ClassificationTable(rows, skipped)
    return _ALL


def theorem1(table: ClassificationTable | None = None) -> Violators:
    """Popek & Goldberg's Theorem 1: a virtual machine monitor may be constructed if the set
    of sensitive instructions is a subset of the privileged ones. Returns the violators
    (sensitive, not privileged); empty means the condition holds."""
    table = table or classify_all()
    return Violators([r for r in table.rows if r.violates_theorem1], "Theorem 1",
                     "sensitive ⊆ privileged")


def theorem3(table: ClassificationTable | None = None) -> Violators:
    """Popek & Goldberg's Theorem 3: a hybrid virtual machine monitor (one that interprets
    every instruction of the virtual supervisor and runs only virtual user mode directly)
    may be constructed if the set of user-sensitive instructions is a subset of the privileged
    ones. Returns the violators (user-sensitive, not privileged)."""
    table = table or classify_all()
    return Violators([r for r in table.rows if r.violates_theorem3], "Theorem 3",
                     "user-sensitive ⊆ privileged")


# ---- Robin & Irvine (2000) -------------------------------------------------------------------
@dataclass(frozen=True)
class RobinIrvineEntry:
    """One instruction of Robin & Irvine's list: its name in the paper, the paper's group,
    the kit's forms of it, and (paraphrased) why the paper counts it sensitive."""
    name: str
    group: str
    forms: tuple
    why: str


REGISTER = "sensitive register instructions"
PROTECTION = "protection system references"

#: J. S. Robin and C. E. Irvine, "Analysis of the Intel Pentium's Ability to Support a Secure
#: Virtual Machine Monitor", Proc. 9th USENIX Security Symposium, Denver, August 2000. The paper
#: finds seventeen sensitive, unprivileged instructions in two groups: instructions that read
#: or change sensitive registers or memory locations (the descriptor-table registers, the
#: machine status word, EFLAGS), and instructions that reference the protection system (they
#: check or reveal CPL, RPL and descriptor privileges). As their list is usually reproduced it
#: names the eighteen mnemonics below. Reasons are paraphrased, not quoted.
_RI = (
    ("SGDT", REGISTER, ("sgdt [eax]",), "stores GDTR: a guest sees the monitor's GDT address"),
    ("SIDT", REGISTER, ("sidt [eax]",), "stores IDTR: a guest sees the monitor's IDT address"),
    ("SLDT", REGISTER, ("sldt ax",), "stores LDTR: a guest sees the real LDT selector"),
    ("SMSW", REGISTER, ("smsw eax", "smsw word ptr [eax]"),
     "stores the low bits of CR0 (PE, MP, TS ...): the real, not the virtual, values"),
    ("PUSHF", REGISTER, ("pushfd", "pushfw"), "pushes the real IF and IOPL"),
    ("POPF", REGISTER, ("popfd", "popfw"),
     "at CPL > IOPL does not change IF (and not IOPL above CPL 0), silently: a deprivileged "
     "kernel cannot enable or disable interrupts with it and the monitor is not told"),
    ("LAR", PROTECTION, ("lar eax, ebx",),
     "the descriptor is checked against CPL and RPL: the result depends on the ring"),
    ("LSL", PROTECTION, ("lsl eax, ebx",), "as LAR: the check uses the current ring"),
    ("VERR", PROTECTION, ("verr bx",), "as LAR: readability is judged at the current ring"),
    ("VERW", PROTECTION, ("verw bx",), "as LAR: writability is judged at the current ring"),
    ("POP", PROTECTION, ("pop ds", "pop ss"),
     "popping a segment register checks the selector against CPL"),
    ("PUSH", PROTECTION, ("push cs", "push ds", "push ss"),
     "pushing CS (or SS) reveals the ring in the selector's low bits"),
    ("CALL", PROTECTION, ("lcall [eax]",),
     "a far call checks privileges and pushes CS, whose RPL shows the ring"),
    ("JMP", PROTECTION, ("ljmp [eax]",), "a far jump checks privileges against CPL"),
    ("INT n", PROTECTION, ("int 0x80",),
     "the gate is checked against CPL, and the frame pushed (stack switch, CS) depends on "
     "the ring"),
    ("RET", PROTECTION, ("retf",),
     "a far return compares the popped CS's RPL with CPL: same-ring or outer-ring return"),
    ("STR", PROTECTION, ("str ax",), "stores TR: a guest sees the real task register"),
    ("MOV", PROTECTION, ("mov eax, cs", "mov eax, ds", "mov ds, ax", "mov ss, ax"),
     "moving from CS/SS reveals the ring; loads into segment registers are checked against "
     "CPL"),
)


def robin_irvine() -> list[RobinIrvineEntry]:
    """Robin & Irvine's (USENIX Security 2000) sensitive, unprivileged Pentium instructions,
    with their group in the paper and the kit's forms of each."""
    return [RobinIrvineEntry(*e) for e in _RI]


@dataclass(frozen=True)
class RobinIrvineCheck:
    entry: RobinIrvineEntry
    rows: tuple           # Classification of each kit form
    agrees: bool          # every form came out sensitive and not privileged


def compare_robin_irvine(table: ClassificationTable | None = None) -> list[RobinIrvineCheck]:
    """Each Robin & Irvine instruction with the experiments' verdict on the kit's forms."""
    table = table or classify_all()
    out = []
    for e in robin_irvine():
        rows = []
        for f in e.forms:
            try:
                rows.append(table[f])
            except KeyError:
                rows.append(classify(f))
        agrees = all(r.sensitive and not r.privileged for r in rows)
        out.append(RobinIrvineCheck(e, tuple(rows), agrees))
    return out

