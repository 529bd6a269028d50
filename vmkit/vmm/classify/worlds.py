"""The laboratory machine of the classification: its memory layout, the worlds (machine states
that differ in one virtualized resource) and the set-ups of an instruction's operands."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

from vmkit.isa.decode import GPR_NAMES, Insn, Mem, Reg
from vmkit.isa.ops_control import far_indirect

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
        m.load_segment_cache(i, data, d)
    m.set_cs(code, m.read_descriptor(code), ring, "classify set-up")


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
