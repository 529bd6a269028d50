"""Control transfer: jmp jcc call ret loop/loope/loopne jecxz, far jmp/call/ret, int int3
into iretd.

Near transfers are compiled inline; far transfers, software interrupts and iretd go through
the machine (``M.far_jump`` ...), which checks descriptors and privilege and may change CPL.
"""

from __future__ import annotations

from vmkit.isa.decode import Imm, Mem
from vmkit.isa.ops_logic import CC, cond
from vmkit.isa.ops_stack import pop, push
from vmkit.isa.semantics import Emit, Unsupported, semantics


def _target(e: Emit, op) -> str:
    if isinstance(op, Imm):
        return hex(op.value)
    e.line(f"tgt = {e.read(op)}")
    return "tgt"


_PREFIXES = frozenset((0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65))


def far_indirect(insn) -> bool:
    """``jmp m16:32`` (FF /5) or ``call m16:32`` (FF /3). Capstone gives them the ids of the
    near forms (printing "jmp ptr [m]", "call ptr [m]", and a 4-byte operand for the call), so
    the ModRM reg field decides. Public: the translator and ``classify`` ask it too."""
    raw = insn.raw
    i = 0
    while i < len(raw) and raw[i] in _PREFIXES:
        i += 1
    return i + 1 < len(raw) and raw[i] == 0xFF and (raw[i + 1] >> 3) & 7 in (3, 5)



@semantics("jmp", sdm="JMP—Jump (SDM Vol. 2A)", category="control")
def op_jmp(e: Emit, insn) -> None:
    """eip := target (relative, register or memory)."""
    op = insn.operands[0]
    if far_indirect(insn):
        op_ljmp(e, insn)
        return
    e.set_eip(_target(e, op))


def _make_jcc(cc: str):
    def op_jcc(e: Emit, insn) -> None:
        t = cond(e, cc)
        e.set_eip(f"{insn.operands[0].value:#x} if {t} else {insn.next:#x}")
    op_jcc.__doc__ = f"Jump if condition {cc!r} holds."
    return op_jcc


for _cc in CC:
    semantics(f"j{_cc}", sdm="Jcc—Jump if Condition Is Met (SDM Vol. 2A)",
              category="control")(_make_jcc(_cc))


@semantics("jecxz", "jcxz", sdm="Jcc—Jump if Condition Is Met (SDM Vol. 2A)", category="control")
def op_jecxz(e: Emit, insn) -> None:
    """Jump if ecx (cx) is 0."""
    m = "0xFFFF" if insn.mnemonic == "jcxz" else "0xFFFFFFFF"
    e.set_eip(f"{insn.operands[0].value:#x} if not R[1] & {m} else {insn.next:#x}")


@semantics("loop", "loope", "loopne", sdm="LOOP/LOOPcc—Loop According to ECX Counter "
           "(SDM Vol. 2A)", category="control")
def op_loop(e: Emit, insn) -> None:
    """ecx -= 1 (no flags); jump if ecx != 0 (and ZF = 1 for loope, ZF = 0 for loopne)."""
    e.line("c = (R[1] - 1) & 0xFFFFFFFF")
    e.line("R[1] = c")
    extra = ""
    if insn.mnemonic != "loop":
        z = cond(e, "e")
        extra = f" and {z}" if insn.mnemonic == "loope" else f" and not {z}"
    e.set_eip(f"{insn.operands[0].value:#x} if c{extra} else {insn.next:#x}")


@semantics("call", sdm="CALL—Call Procedure (SDM Vol. 2A)", category="control")
def op_call(e: Emit, insn) -> None:
    """push eip of the next instruction; eip := target."""
    op = insn.operands[0]
    if far_indirect(insn):
        op_lcall(e, insn)
        return
    t = _target(e, op)
    push(e, hex(insn.next))
    e.set_eip(t)


@semantics("ret", sdm="RET—Return from Procedure (SDM Vol. 2B)", category="control")
def op_ret(e: Emit, insn) -> None:
    """eip := pop; esp += imm16 (ret n)."""
    n = insn.operands[0].value if insn.operands else 0
    e.line("v = rd4(R[4])")
    e.line(f"R[4] = (R[4] + {4 + n}) & 0xFFFFFFFF")
    e.set_eip("v")


def _far_pointer(e: Emit, insn) -> tuple[str, str]:
    ops = insn.operands
    if len(ops) == 2:
        return hex(ops[0].value), hex(ops[1].value)
    (m,) = ops
    if not isinstance(m, Mem):
        raise Unsupported(f"{insn.mnemonic} needs a memory operand m16:32")
    a = e.addr(m)
    e.line(f"off = rd4({a})")
    e.line(f"sel = rd2(({a} + 4) & 0xFFFFFFFF)")
    return "sel", "off"


@semantics("ljmp", sdm="JMP—Jump (far) (SDM Vol. 2A)", category="control")
def op_ljmp(e: Emit, insn) -> None:
    """Far jump: load CS from a code-segment descriptor (privilege checked), eip := offset."""
    sel, off = _far_pointer(e, insn)
    e.line(f"M.far_jump({sel}, {off})")
    e.jumps = True
    e.resched = True


@semantics("lcall", sdm="CALL—Call Procedure (far) (SDM Vol. 2A)", category="control")
def op_lcall(e: Emit, insn) -> None:
    """Far call: push cs and eip, then as a far jump."""
    sel, off = _far_pointer(e, insn)
    e.line(f"M.far_call({sel}, {off}, {insn.next:#x})")
    e.jumps = True
    e.resched = True


@semantics("retf", sdm="RET—Return from Procedure (far) (SDM Vol. 2B)", category="control")
def op_retf(e: Emit, insn) -> None:
    """Far return: pop eip and cs (to an outer ring also pop esp and ss)."""
    n = insn.operands[0].value if insn.operands else 0
    e.line(f"M.far_ret({n})")
    e.jumps = True
    e.resched = True


@semantics("int", sdm="INT n/INTO/INT3/INT1—Call to Interrupt Procedure (SDM Vol. 2A)",
           category="control", sensitive=True)
def op_int(e: Emit, insn) -> None:
    """Software interrupt through IDT gate n; the gate's DPL must be >= CPL (#GP otherwise)."""
    e.line(f"M.soft_int({insn.operands[0].value}, {insn.next:#x}, 'int')")
    e.jumps = True
    e.resched = True


@semantics("int3", sdm="INT n/INTO/INT3/INT1—Call to Interrupt Procedure (SDM Vol. 2A)",
           category="control")
def op_int3(e: Emit, insn) -> None:
    """Breakpoint trap: vector 3, DPL checked like ``int n``."""
    e.line(f"M.soft_int(3, {insn.next:#x}, 'int3')")
    e.jumps = True
    e.resched = True


@semantics("into", sdm="INT n/INTO/INT3/INT1—Call to Interrupt Procedure (SDM Vol. 2A)",
           category="control")
def op_into(e: Emit, insn) -> None:
    """Vector 4 if OF is set, else nothing."""
    e.line("if C.eflags & 0x800:")
    with e.indent():
        e.line(f"M.soft_int(4, {insn.next:#x}, 'into')")
        e.line("raise Resched()")
    e.line(f"C.eip = {insn.next:#x}")
    e.jumps = True


@semantics("iretd", "iret", sdm="IRET/IRETD/IRETQ—Interrupt Return (SDM Vol. 2A)",
           category="control", sensitive=True)
def op_iretd(e: Emit, insn) -> None:
    """Return from interrupt: pop eip, cs, eflags (and esp, ss to an outer ring). IF and IOPL
    are loaded only as POPF allows (CPL <= IOPL for IF, CPL 0 for IOPL)."""
    if insn.mnemonic == "iret" and insn.opsize:
        raise Unsupported("16-bit iret")
    e.line("M.iret()")
    e.jumps = True
    e.resched = True


_ = (pop, CC)
