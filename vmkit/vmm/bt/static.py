"""Static translation: the kernel's text translated ahead of time by a linear sweep (a contrast
with dynamic translation: what the sweep misses)."""

from __future__ import annotations

from vmkit.isa import semantics as sem
from vmkit.isa.decode import DECODER, Imm
from vmkit.vmm.bt.translator import _DIRECT, MAX_BLOCK, classify, ends_unit, translate
from vmkit.vmm.deprivileged.vcpu import TEVM


# ---- static translation ---------------------------------------------------------------------
def static_translate(bt, vm: TEVM) -> None:
    """Translate the kernel's text ahead of time: a linear sweep from its first byte,
    blocks cut at control transfers, callouts, page ends and the direct branch targets the
    sweep found. Keys assume the kernel runs where it is loaded (identity-mapped)."""
    prog = next(iter(vm.image.programs.values()))
    start, size = prog.sections.get("text", (prog.base, len(prog.code)))
    code, base = prog.code, prog.base
    sweep: list = []
    a = start
    while a < start + size:
        off = a - base
        insn = DECODER.decode(a, bytes(code[off:off + 15]))
        ok = insn is not None and insn.id and a + insn.size <= start + size
        if ok:
            try:
                sem.source_of(insn)
            except sem.Unsupported:
                ok = False
        if not ok:
            sweep.append((a, 1, "(bad)", None))
            a += 1
            continue
        sweep.append((a, insn.size, insn.text, insn))
        a += insn.size
    bt.static_sweep.append([(a, n, t) for a, n, t, _ in sweep])
    bt._sweep_starts[vm.index] = {a for a, _, _, insn in sweep if insn is not None}
    targets = set()
    for a, n, t, insn in sweep:
        if insn is not None and (insn.mnemonic in _DIRECT or insn.mnemonic.startswith("j")
                                 or insn.mnemonic == "call") \
                and insn.operands and isinstance(insn.operands[0], Imm):
            targets.add(insn.operands[0].value)
    group: list = []

    def flush():
        if group:
            eip = group[0].address
            translate(bt, vm, eip, eip, (vm.index, eip, eip, 0), list(group), static=True)
            group.clear()

    for a, n, t, insn in sweep:
        if insn is None:
            flush()
            continue
        if group and (a in targets or (a >> 12) != (group[0].address >> 12)
                      or (a + n - 1) >> 12 != a >> 12):
            flush()
        if (a + n - 1) >> 12 != a >> 12:
            continue                       # straddles a page: left to the dynamic path
        group.append(insn)
        kind = classify(bt, insn)[0]
        if ends_unit(insn, kind) or len(group) >= MAX_BLOCK:
            flush()
    flush()
    bt._text_ranges[vm.index] = (start, start + size)


def static_miss(bt, vm: TEVM, eip: int) -> None:
    """A lookup in static mode found no static translation: note why (``static_miss_log``),
    then the dynamic translator takes over."""
    bt.static_misses += 1
    lo, hi = bt._text_ranges.get(vm.index, (0, 0))
    dropped = [r for a, e, r in bt._static_dropped.get(vm.index, ()) if a <= eip < e]
    if not lo <= eip < hi:
        why = "outside the text section"
    elif dropped:
        why = f"static translation dropped at run time ({dropped[-1]})"
    elif eip not in bt._sweep_starts[vm.index]:
        why = ("not an instruction boundary of the sweep: it decoded data before it as "
               "code and lost alignment")
    elif any(b.static and b.eip < eip < b.end and b.vm == vm.index
             for b in bt._tc.values()):
        why = ("inside a static block: an entry point the sweep did not see (reached by a "
               "computed jump)")
    else:
        why = "not translated ahead of time"
    bt.static_miss_log[(eip, why)] += 1
