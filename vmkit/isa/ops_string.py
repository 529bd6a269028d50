"""String instructions: movs stos lods cmps scas (byte, word, dword) with rep/repe/repne.

ESI/EDI move by the element size, down when DF = 1. With a rep prefix the instruction runs
at most ``REP_CHUNK`` iterations per execution (up to the next multiple of ``REP_CHUNK`` in ECX)
and then re-executes itself (EIP stays) until ECX is 0, as a real CPU may pause a rep string instruction between iterations for an
interrupt (SDM Vol. 2B, REP). So a huge ECX cannot freeze the simulator, and ``max_steps``
bounds it; each chunk counts as one step of guest time.
"""

from __future__ import annotations

from vmkit.isa.semantics import MASKS, Emit, semantics

REP_CHUNK = 4096


def _string(e: Emit, insn, size: int, body: list[str], cond: str | None,
            fill: str | None = None) -> None:
    rep = insn.rep
    e.line(f"d = {-size} if C.ef & 0x400 else {size}")
    if not rep:
        for b in body:
            e.line(b)
        return
    # chunks end where ECX crosses a multiple of REP_CHUNK, not REP_CHUNK iterations after
    # the start: a fault inside a chunk (a monitor's hidden page fault, say) then restarts it
    # without moving the boundaries, so guest time is the same with or without the fault
    e.line(f"k = (R[1] & {REP_CHUNK - 1:#x}) or {REP_CHUNK}")
    if fill is not None:
        # REP STOS upward: the memory accessor's ``fill`` (the machine's own accessors have
        # one; a monitor's accessors through the guest's tables do not) stores the elements
        # that lie in one page at once where an element-by-element store could not fault;
        # it returns 0 where it cannot, and one element then goes the usual way
        e.line(f"fl = getattr(wr{size}, 'fill', None) if d > 0 else None")
    e.line("while R[1] and k:")
    with e.indent():
        if fill is not None:
            e.line("if fl is not None:")
            with e.indent():
                e.line(f"c = fl(R[7], {fill}, R[1] if R[1] < k else k)")
                e.line("if c:")
                with e.indent():
                    e.line(f"R[7] = (R[7] + {size} * c) & 0xFFFFFFFF")
                    e.line("R[1] -= c")
                    e.line("k -= c")
                    e.line("continue")
        for b in body:
            e.line(b)
        e.line("R[1] = (R[1] - 1) & 0xFFFFFFFF")
        e.line("k -= 1")
        if cond is not None:
            # repe (F3) goes on while equal, repne (F2) while not equal
            e.line(f"if {'r != 0' if rep == 0xF3 else 'r == 0'}: break")
    e.line("else:")
    with e.indent():
        e.line(f"if R[1]: C.eip = {insn.address:#x}; return")
    e.line(f"C.eip = {insn.next:#x}")
    e.jumps = True


def _size(insn) -> int:
    return {"b": 1, "w": 2, "d": 4}[insn.mnemonic[-1]]


@semantics("movsb", "movsw", "movsd", sdm="MOVS/MOVSB/MOVSW/MOVSD—Move Data From String to "
           "String (SDM Vol. 2B)", category="string")
def op_movs(e: Emit, insn) -> None:
    """[edi] := [esi]; esi, edi += ±size."""
    s = _size(insn)
    _string(e, insn, s, [f"wr{s}(R[7], rd{s}(R[6]))",
                         "R[6] = (R[6] + d) & 0xFFFFFFFF",
                         "R[7] = (R[7] + d) & 0xFFFFFFFF"], None)


@semantics("stosb", "stosw", "stosd", sdm="STOS/STOSB/STOSW/STOSD—Store String (SDM Vol. 2B)",
           category="string")
def op_stos(e: Emit, insn) -> None:
    """[edi] := al/ax/eax; edi += ±size."""
    s = _size(insn)
    _string(e, insn, s, [f"wr{s}(R[7], R[0] & {MASKS[s]:#x})",
                         "R[7] = (R[7] + d) & 0xFFFFFFFF"], None, f"R[0] & {MASKS[s]:#x}")


@semantics("lodsb", "lodsw", "lodsd", sdm="LODS/LODSB/LODSW/LODSD—Load String (SDM Vol. 2A)",
           category="string")
def op_lods(e: Emit, insn) -> None:
    """al/ax/eax := [esi]; esi += ±size."""
    s = _size(insn)
    store = {1: "R[0] = (R[0] & 0xFFFFFF00) | v", 2: "R[0] = (R[0] & 0xFFFF0000) | v",
             4: "R[0] = v"}[s]
    _string(e, insn, s, [f"v = rd{s}(R[6])", store, "R[6] = (R[6] + d) & 0xFFFFFFFF"], None)


@semantics("cmpsb", "cmpsw", "cmpsd", sdm="CMPS/CMPSB/CMPSW/CMPSD—Compare String Operands "
           "(SDM Vol. 2A)", flags="OF SF ZF AF CF PF", category="string")
def op_cmps(e: Emit, insn) -> None:
    """Flags of [esi] - [edi]; esi, edi += ±size; repe/repne stop on ZF."""
    s = _size(insn)
    _string(e, insn, s, [f"a = rd{s}(R[6])", f"b = rd{s}(R[7])",
                         f"r = (a - b) & {MASKS[s]:#x}",
                         f"C.lz = (LZ_SUB, {s}, a, b, r)",
                         "R[6] = (R[6] + d) & 0xFFFFFFFF",
                         "R[7] = (R[7] + d) & 0xFFFFFFFF"], "r")


@semantics("scasb", "scasw", "scasd", sdm="SCAS/SCASB/SCASW/SCASD—Scan String (SDM Vol. 2B)",
           flags="OF SF ZF AF CF PF", category="string")
def op_scas(e: Emit, insn) -> None:
    """Flags of al/ax/eax - [edi]; edi += ±size; repe/repne stop on ZF."""
    s = _size(insn)
    _string(e, insn, s, [f"a = R[0] & {MASKS[s]:#x}", f"b = rd{s}(R[7])",
                         f"r = (a - b) & {MASKS[s]:#x}",
                         f"C.lz = (LZ_SUB, {s}, a, b, r)",
                         "R[7] = (R[7] + d) & 0xFFFFFFFF"], "r")
