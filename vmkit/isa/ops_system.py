"""System instructions: the privileged ones (lgdt lidt lldt ltr lmsw clts invlpg hlt, mov to and
from control registers), the I/O-sensitive ones (cli sti in out), and the sensitive but
unprivileged ones (sgdt sidt sldt str smsw, mov from/to segment registers, lar lsl verr verw)
plus cpuid, rdtsc and ud2.

Privilege is checked here as the SDM says; the machine (``M``) does what needs its state:
descriptor tables, control registers, ports, the TLB.
"""

from __future__ import annotations

from vmkit.isa.decode import Mem, Reg
from vmkit.isa.semantics import Emit, Unsupported, semantics

CR4_UMIP = 1 << 11
CR4_TSD = 1 << 2


def _umip(e: Emit) -> None:
    """sgdt/sidt/sldt/str/smsw fault at CPL > 0 only when CR4.UMIP is set (SDM Vol. 3A, 2.5)."""
    e.line(f"if C.cpl and C.cr4 & {CR4_UMIP:#x}: raise Fault(13, 0, detail='UMIP')")


def _iopl(e: Emit) -> None:
    e.line("if C.cpl > (C.ef >> 12) & 3: "
           "raise Fault(13, 0, detail='CPL %d > IOPL %d' % (C.cpl, (C.ef >> 12) & 3))")


def mov_system(e: Emit, insn) -> None:
    """MOV to/from control registers (privileged) and segment registers (checked loads)."""
    d, s = insn.operands
    if isinstance(d, Reg) and d.kind == "cr":
        e.privileged()
        e.line(f"M.write_cr({d.index}, {e.read(s)})")
        e.resched = True
    elif isinstance(s, Reg) and s.kind == "cr":
        e.privileged()
        e.write(d, f"M.read_cr({s.index})")
    elif isinstance(d, Reg) and d.kind == "seg":
        if d.index == 1:
            raise Unsupported("mov cs, r/m is not an instruction (#UD)")
        e.line(f"M.load_seg({d.index}, {e.read(s, 2)} & 0xFFFF)")
        e.resched = d.index == 2
    else:
        # mov r/m, Sreg: a register destination gets the selector zero-extended; memory 16 bits
        v = f"C.seg[{s.index}].selector"
        if isinstance(d, Mem):
            e.line(f"wr2({e.addr(d)}, {v})")
        else:
            e.write(d, v)


@semantics("cli", sdm="CLI—Clear Interrupt Flag (SDM Vol. 2A)", flags="IF", category="system",
           sensitive=True)
def op_cli(e: Emit, insn) -> None:
    """IF := 0; #GP(0) when CPL > IOPL."""
    _iopl(e)
    e.line("C.ef &= ~0x200")


@semantics("sti", sdm="STI—Set Interrupt Flag (SDM Vol. 2B)", flags="IF", category="system",
           sensitive=True)
def op_sti(e: Emit, insn) -> None:
    """IF := 1; #GP(0) when CPL > IOPL. Interrupts are recognised only after the next
    instruction (the STI shadow), so ``sti; hlt`` cannot miss a wake-up."""
    _iopl(e)
    e.line("if not C.ef & 0x200:")
    with e.indent():
        e.line("M.irq_shadow()")  # first: it may ask to run this STI again with exact clocks
        e.line("C.ef |= 0x200")
    e.resched = True


@semantics("hlt", sdm="HLT—Halt (SDM Vol. 2A)", category="system", privileged=True)
def op_hlt(e: Emit, insn) -> None:
    """Stop until an interrupt (privileged)."""
    e.privileged()
    e.line(f"C.eip = {insn.next:#x}")
    e.line("M.halt()")
    e.jumps = True
    e.resched = True


def _port(e: Emit, op) -> str:
    return hex(op.value) if not isinstance(op, Reg) else "(R[2] & 0xFFFF)"


@semantics("in", sdm="IN—Input from Port (SDM Vol. 2A)", category="io", sensitive=True)
def op_in(e: Emit, insn) -> None:
    """al/ax/eax := port; allowed when CPL <= IOPL or the TSS I/O bitmap permits (else #GP)."""
    d, p = insn.operands
    e.line(f"v = M.port_in({_port(e, p)}, {d.size})")
    e.write(d, "v")
    e.resched = True


@semantics("out", sdm="OUT—Output to Port (SDM Vol. 2B)", category="io", sensitive=True)
def op_out(e: Emit, insn) -> None:
    """port := al/ax/eax; same permission rule as IN."""
    p, s = insn.operands
    e.line(f"M.port_out({_port(e, p)}, {s.size}, {e.read(s)})")
    e.resched = True


def _table_load(e: Emit, insn, which: str) -> None:
    (m,) = insn.operands
    e.privileged()
    a = e.addr(m)
    e.line(f"M.load_table('{which}', rd4(({a} + 2) & 0xFFFFFFFF), rd2({a}))")


@semantics("lgdt", sdm="LGDT/LIDT—Load Global/Interrupt Descriptor Table Register "
           "(SDM Vol. 2A)", category="system", privileged=True)
def op_lgdt(e: Emit, insn) -> None:
    """GDTR := the 6-byte limit:base at m (privileged)."""
    _table_load(e, insn, "gdtr")
    e.resched = True


@semantics("lidt", sdm="LGDT/LIDT—Load Global/Interrupt Descriptor Table Register "
           "(SDM Vol. 2A)", category="system", privileged=True)
def op_lidt(e: Emit, insn) -> None:
    """IDTR := the 6-byte limit:base at m (privileged)."""
    _table_load(e, insn, "idtr")
    e.resched = True


def _table_store(e: Emit, insn, which: str) -> None:
    (m,) = insn.operands
    _umip(e)
    a = e.addr(m)
    e.line(f"t = C.{which}")
    e.line(f"wr2({a}, t.limit)")
    e.line(f"wr4(({a} + 2) & 0xFFFFFFFF, t.base)")


@semantics("sgdt", sdm="SGDT—Store Global Descriptor Table Register (SDM Vol. 2B)",
           category="system", sensitive=True)
def op_sgdt(e: Emit, insn) -> None:
    """m := GDTR (limit, base). Unprivileged: a deprivileged kernel sees the real GDTR."""
    _table_store(e, insn, "gdtr")


@semantics("sidt", sdm="SIDT—Store Interrupt Descriptor Table Register (SDM Vol. 2B)",
           category="system", sensitive=True)
def op_sidt(e: Emit, insn) -> None:
    """m := IDTR (limit, base). Unprivileged: reveals where the real IDT is (the Red Pill)."""
    _table_store(e, insn, "idtr")


@semantics("lldt", sdm="LLDT—Load Local Descriptor Table Register (SDM Vol. 2A)",
           category="system", privileged=True)
def op_lldt(e: Emit, insn) -> None:
    """LDTR := selector (privileged)."""
    e.privileged()
    e.line(f"M.load_ldtr({e.read(insn.operands[0], 2)} & 0xFFFF)")


@semantics("ltr", sdm="LTR—Load Task Register (SDM Vol. 2A)", category="system",
           privileged=True)
def op_ltr(e: Emit, insn) -> None:
    """TR := selector of an available TSS, marked busy (privileged)."""
    e.privileged()
    e.line(f"M.load_tr({e.read(insn.operands[0], 2)} & 0xFFFF)")


def _sel_store(e: Emit, insn, expr: str) -> None:
    (d,) = insn.operands
    _umip(e)
    if isinstance(d, Mem):
        e.line(f"wr2({e.addr(d)}, {expr})")
    else:
        e.write(d, expr)


@semantics("sldt", sdm="SLDT—Store Local Descriptor Table Register (SDM Vol. 2B)",
           category="system", sensitive=True)
def op_sldt(e: Emit, insn) -> None:
    """dest := LDTR selector (unprivileged)."""
    _sel_store(e, insn, "C.ldtr.selector")


@semantics("str", sdm="STR—Store Task Register (SDM Vol. 2B)", category="system",
           sensitive=True)
def op_str(e: Emit, insn) -> None:
    """dest := TR selector (unprivileged)."""
    _sel_store(e, insn, "C.tr.selector")


@semantics("smsw", sdm="SMSW—Store Machine Status Word (SDM Vol. 2B)", category="system",
           sensitive=True)
def op_smsw(e: Emit, insn) -> None:
    """dest := CR0 (low 16 bits to memory; a 32-bit register gets all of CR0, as P6 and later
    processors store it). Unprivileged: shows the real PE/TS/PG."""
    (d,) = insn.operands
    _umip(e)
    if isinstance(d, Mem):
        e.line(f"wr2({e.addr(d)}, C.cr0 & 0xFFFF)")
    else:
        e.write(d, "C.cr0" if d.size == 4 else "C.cr0 & 0xFFFF")


@semantics("lmsw", sdm="LMSW—Load Machine Status Word (SDM Vol. 2A)", category="system",
           privileged=True)
def op_lmsw(e: Emit, insn) -> None:
    """CR0[3:0] := src[3:0] (PE, MP, EM, TS); PE cannot be cleared this way (privileged)."""
    e.privileged()
    e.line(f"v = {e.read(insn.operands[0], 2)} & 0xF")
    e.line("M.write_cr(0, (C.cr0 & ~0xE) | v | (C.cr0 & 1))")
    e.resched = True


@semantics("clts", sdm="CLTS—Clear Task-Switched Flag in CR0 (SDM Vol. 2A)", category="system",
           privileged=True)
def op_clts(e: Emit, insn) -> None:
    """CR0.TS := 0 (privileged)."""
    e.privileged()
    e.line("M.write_cr(0, C.cr0 & ~8)")


@semantics("invlpg", sdm="INVLPG—Invalidate TLB Entries (SDM Vol. 2A)", category="system",
           privileged=True)
def op_invlpg(e: Emit, insn) -> None:
    """Drop the TLB entry for the page holding m (privileged; m is not accessed)."""
    e.privileged()
    e.line(f"M.invlpg({e.addr(insn.operands[0])})")


def _desc_query(e: Emit, insn, what: str) -> None:
    d, s = insn.operands if len(insn.operands) == 2 else (None, insn.operands[0])
    e.line(f"v = M.{what}({e.read(s, 2)} & 0xFFFF)")
    e.line("F = C.eflags")
    e.line("if v is None:")
    with e.indent():
        e.line("C.ef = F & ~0x40")
    e.line("else:")
    with e.indent():
        e.line("C.ef = F | 0x40")
        if d is not None:
            e.write(d, f"v & {0xFFFF if d.size == 2 else 0xFFFFFFFF:#x}")


@semantics("lar", sdm="LAR—Load Access Rights Byte (SDM Vol. 2A)", flags="ZF",
           category="system", sensitive=True)
def op_lar(e: Emit, insn) -> None:
    """dest := access rights of the descriptor (masked 0x00F0FF00), ZF = 1, if it is visible at
    max(CPL, RPL); else ZF = 0. Unprivileged: the DPL it reports shows how the VMM shadows
    descriptors."""
    _desc_query(e, insn, "lar")


@semantics("lsl", sdm="LSL—Load Segment Limit (SDM Vol. 2A)", flags="ZF", category="system",
           sensitive=True)
def op_lsl(e: Emit, insn) -> None:
    """dest := the descriptor's byte-granular limit, ZF = 1, if visible; else ZF = 0."""
    _desc_query(e, insn, "lsl")


@semantics("verr", sdm="VERR/VERW—Verify a Segment for Reading or Writing (SDM Vol. 2B)",
           flags="ZF", category="system", sensitive=True)
def op_verr(e: Emit, insn) -> None:
    """ZF = 1 if the segment is readable at the current privilege."""
    _desc_query(e, insn, "verr")


@semantics("verw", sdm="VERR/VERW—Verify a Segment for Reading or Writing (SDM Vol. 2B)",
           flags="ZF", category="system", sensitive=True)
def op_verw(e: Emit, insn) -> None:
    """ZF = 1 if the segment is writable at the current privilege."""
    _desc_query(e, insn, "verw")


@semantics("cpuid", sdm="CPUID—CPU Identification (SDM Vol. 2A)", category="system")
def op_cpuid(e: Emit, insn) -> None:
    """eax, ebx, ecx, edx := processor identification for leaf eax."""
    e.line("M.cpuid()")


@semantics("rdtsc", sdm="RDTSC—Read Time-Stamp Counter (SDM Vol. 2B)", category="system",
           sensitive=True)
def op_rdtsc(e: Emit, insn) -> None:
    """edx:eax := time-stamp counter (guest time: retired instructions); #GP(0) at CPL > 0
    when CR4.TSD is set."""
    e.line(f"if C.cpl and C.cr4 & {CR4_TSD:#x}: raise Fault(13, 0, detail='CR4.TSD')")
    e.line("t = M.rdtsc()")
    e.line("R[0] = t & 0xFFFFFFFF")
    e.line("R[2] = (t >> 32) & 0xFFFFFFFF")


@semantics("ud2", sdm="UD—Undefined Instruction (SDM Vol. 2B)", category="system")
def op_ud2(e: Emit, insn) -> None:
    """Raise #UD."""
    e.line("raise Fault(6, detail='ud2')")
