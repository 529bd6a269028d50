"""The translator (QEMU's translate-all): kernel code fetched through the guest's page tables,
each instruction classified (identical, inline, callout), translation units built and compiled
by the machine's block translator (:func:`vmkit.machine.blocks.build`)."""

from __future__ import annotations

import re
import types

from vmkit.errors import UnsupportedInstruction
from vmkit.isa import semantics as sem
from vmkit.isa.decode import DECODER, Insn, Mem, Reg
from vmkit.isa.faults import Fault
from vmkit.isa.ops_control import far_indirect
from vmkit.isa.ops_logic import CC
from vmkit.isa.ops_stack import POPF_CPL0, push
from vmkit.machine.cpu import MASK32
from vmkit.trace import Translation
from vmkit.vmm.bt import tcache
from vmkit.vmm.bt.tcache import Block, invalidate, make_room, watch
from vmkit.vmm.deprivileged.vcpu import TEVM

DEFAULT_THRESHOLD = 1
"""Executions of a unit before it is translated. The default, 1, translates on first execution,
as VMware's translator does (Adams & Agesen, ASPLOS 2006, §3.2: code is translated "on demand",
when it is first about to execute) and QEMU too: their translators do little analysis, so a
translation is cheap (A&A §6.3: about 2300 cycles per x86 instruction) and pays after a few runs.

A larger threshold is the contrast, interpret first and translate hot code: Dynamo (Bala et al.,
PLDI 2000) waited for 50 executions and Transmeta's CMS also interprets first, because their
translators optimize and are expensive. Interpreting until the break-even and translating after
is the ski-rental rule (never worse than twice the best choice made with hindsight). With the
"p4-2006" costs the break-even is translate / (interpret - native) = 2300 / (50 - 1) = about 47
executions (:func:`break_even`): a unit run fewer times is cheaper interpreted."""


def break_even(costs) -> float:
    """Executions of an instruction after which translating it (``costs.translate`` once, then
    ``costs.native`` a run) has cost less than interpreting it (``costs.interpret`` a run):
    ``translate / (interpret - native)`` (``inf`` when interpreting is no dearer)."""
    gain = costs.interpret - costs.native
    return costs.translate / gain if gain > 0 else float("inf")


MAX_BLOCK = 12
"""Longest translation unit: A&A's units end at a control transfer or after at most 12
instructions (their TU limit)."""

IF, IOPL, TF = 0x200, 0x3000, 0x100

#: mnemonics that transfer control: a unit ends after each
CONTROL = frozenset({"jmp", "call", "ret", "loop", "loope", "loopne", "jecxz", "jcxz", "ljmp",
                     "lcall", "retf", "int", "int3", "into", "iretd", "iret", "hlt"}
                    | {f"j{cc}" for cc in CC})
STRING = frozenset({f"{op}{s}" for op in ("movs", "stos", "lods", "cmps", "scas")
                    for s in "bwd"})
#: sensitive instructions emulated inline in translated code (and by the interpreter)
INLINE = frozenset({"cli", "sti", "pushfd", "pushf", "popfd", "popf"})
#: sensitive instructions that become callouts (handlers in BinaryTranslation.emulate)
CALLOUTS = frozenset({"hlt", "in", "out", "lgdt", "lidt", "lldt", "ltr", "lmsw", "clts",
                      "invlpg", "iretd", "iret", "retf", "rdtsc", "sgdt", "sidt", "sldt", "str",
                      "smsw", "int", "int3", "into", "lar", "lsl", "verr", "verw", "lcall"})
#: callouts the cost model prices as an in-TC sequence (``tc_emulate``): A&A 2006 §6.3, BT
#: "translates the in into a short sequence of instructions that interacts with the virtual
#: chipset model" (216 cycles); §3.3 emulates rdtsc in the translation cache the same way
IN_TC = frozenset({"in", "out", "rdtsc"})
#: callouts after which translated code goes straight on: they change nothing the monitor's
#: run loop looks at (virtual IF, CPL, devices' interrupt lines, timer, halt). Every other
#: callout returns to the run loop, as a trap would.
GO_ON = frozenset({"in", "sgdt", "sidt", "sldt", "str", "smsw", "lar", "lsl", "verr", "verw",
                   "rdtsc", "invlpg", "lidt", "ltr", "lldt"})
#: direct control transfers (the static sweep follows their targets)
_DIRECT = frozenset({"jmp", "call", "loop", "loope", "loopne", "jecxz", "jcxz"})

_BARE_RETURN = re.compile(r"\breturn$")



# ---- fetching kernel code through the guest's page tables --------------------------------
def guest_bytes(bt, vm: TEVM, gpa: int, n: int) -> bytes:
    if gpa + n <= vm.memory_size:
        a = vm.slice_base + gpa
        return bytes(bt._host.mem[a:a + n])
    keep = max(0, vm.memory_size - gpa)
    a = vm.slice_base + gpa
    return bytes(bt._host.mem[a:a + keep]) + b"\xFF" * (n - keep)


def fetch(bt, vm: TEVM, eip: int) -> Insn | None:
    """Decode the instruction at guest-linear ``eip`` (the guest's #PF if its page is not
    mapped; a second page is needed only if the instruction reaches into it)."""
    gpa = vm.translate(eip)
    avail = 0x1000 - (eip & 0xFFF)
    window = guest_bytes(bt, vm, gpa, min(15, avail))
    fault = None
    if avail < 15:
        try:
            window += guest_bytes(bt, vm, vm.translate((eip + avail) & MASK32), 15 - avail)
        except Fault as f:
            fault = f
    insn = DECODER.decode(eip, window)
    if fault is not None and (insn is None or insn.size > avail):
        raise fault
    return insn


def guest_text(bt, vm: TEVM, eip: int) -> str:
    for n in (15, 8, 4, 2, 1):
        raw = vm.peek(eip, n)
        if raw is not None:
            insn = DECODER.decode(eip, raw)
            return insn.text if insn is not None else ""
    return ""


# ---- classification: how an instruction is translated -------------------------------------
def classify(bt, insn: Insn):
    """-> (kind, handler): "ident" (innocuous), "inline" (sensitive, emulated in the
    translated code) or "callout" (sensitive, a call into the VMM's handler)."""
    mn = insn.mnemonic
    if mn in INLINE:
        return "inline", None
    ops = insn.operands
    if mn == "mov":
        d, s = ops
        if _is(s, "cr") and _is(d, "gpr") and s.index in (0, 2, 3, 4):
            return "inline", None       # a read of the virtual control register
        if _is(d, "cr") or _is(s, "cr") or (_is(d, "seg") and d.index == 2):
            return "callout", bt.emulate.get("mov")
        if _is(s, "seg") and s.index in (1, 2):
            return "inline", None
        return "ident", None
    if mn == "push":
        if _is(ops[0], "seg") and ops[0].index in (1, 2):
            return "inline", None
        return "ident", None
    if mn == "pop":
        if _is(ops[0], "seg") and ops[0].index == 2:
            return "callout", bt.emulate.get("pop")
        return "ident", None
    if mn == "call" and far_indirect(insn):
        return "callout", bt.emulate.get("lcall")
    if mn in CALLOUTS:
        return "callout", bt.emulate.get(mn)
    return "ident", None


def ends_unit(insn: Insn, kind: str) -> bool:
    """A unit ends after a control transfer, a callout, ``sti``/``popfd`` (interrupts may
    come right after) or a ``rep`` string instruction (it re-executes itself)."""
    mn = insn.mnemonic
    return (kind == "callout" or mn in CONTROL or mn in ("sti", "popfd", "popf")
            or bool(insn.rep and mn.split()[-1] in STRING))


# ---- the translator -----------------------------------------------------------------------
def translate(bt, vm: TEVM, eip: int, gpa: int, key, insns: list | None = None,
              static: bool = False) -> Block | None:
    """Translate the unit at ``eip`` into a block (None when its first instruction cannot
    be translated: it is interpreted then, and gets its #UD or #PF there)."""
    if insns is None:
        insns = []
        a = eip
        while len(insns) < MAX_BLOCK:
            try:
                insn = fetch(bt, vm, a)
            except Fault:
                break
            if insn is None or not insn.id or (a + insn.size - 1) >> 12 != eip >> 12:
                break
            insns.append(insn)
            kind = kind_at(bt, vm, insn, gpa + (a - eip))
            if ends_unit(insn, kind) or kind == "adapted":
                break
            a = insn.next
            if a >> 12 != eip >> 12:
                break
    blk = build(bt, vm, eip, gpa, key, insns)
    if blk is None:
        return None
    blk.static = static
    if not static:
        if bt._dynamic >= bt.tc_size:
            make_room(bt, )
        bt._dynamic += 1
        bt.policy.inserted(key)
        bt.translations += 1
        bt.translated_instructions += blk.n
        bt.events["translate"] += blk.n
        bt.trace.add(Translation(bt._host.clock, address=eip, instructions=blk.n,
                                   end=blk.end, vm=vm.index))
    else:
        bt.static_translations += 1
    old = bt._tc.get(key)
    if old is not None:
        invalidate(bt, old, "replaced", count=False)
    bt._tc[key] = blk
    watch(bt, vm, blk)
    return blk


def kind_at(bt, vm: TEVM, insn: Insn, gpa: int) -> str:
    if (vm.index, gpa, insn.address) in bt._adapted:
        return "adapted"
    return classify(bt, insn)[0]


def build(bt, vm: TEVM, eip: int, gpa: int, key, insns: list) -> Block | None:
    """Make the block for ``insns``: each instruction's Python (the machine's own code for an
    innocuous one, inline emulation on the virtual CPU for a cheap sensitive one), to be
    compiled into one function by the machine's block translator
    (:func:`vmkit.machine.blocks.build`: locals renamed, flags computed only where read,
    constants folded, registers held in locals) when the block is hot (:meth:`Block.compile`),
    and run so by the engine in block mode; a callout or an adapted instruction ends the
    block, as its ``tail``, run by the engine. In per-instruction mode
    (``Machine(blocks=False)``) the engine runs the same instructions one compiled function at
    a time instead, with the same counts."""
    vmi = vm.index
    items: list = []
    kinds: list[str] = []
    tail = None
    resched = False
    kept: list[Insn] = []
    for insn in insns:
        kind, handler = classify(bt, insn)
        if (vmi, gpa + (insn.address - eip), insn.address) in bt._adapted \
                and kind == "ident":
            kind = "adapted"
        if kind in ("callout", "adapted"):
            kept.append(insn)
            kinds.append(kind)
            tail = (insn, kind, handler)
            break
        try:
            lines, term, rs = body_of(bt, vmi, insn, kind, len(kept))
        except sem.Unsupported:
            break
        text = "\n".join(lines)
        if "Resched" in text:
            break           # cannot run inside a block: interpreted there
        items.append((insn, "def _insn():\n" + text + "\n",
                      f"{insn.address:#010x}: {insn.text}  [{kind}]"))
        kept.append(insn)
        kinds.append(kind)
        resched = rs
        if term or any(_BARE_RETURN.search(ln) for ln in lines):
            break
    if not kept:
        return None
    nbody = len(items)
    blk = Block(key, vmi, eip, gpa, kept, kinds)
    blk.nbody = nbody
    blk.tail = tail
    blk.go_on = tail is None or tail[1] == "adapted" or tail[0].mnemonic in GO_ON
    blk.resched = resched
    # the STI shadow counts from the VM's guest time, which a chain of blocks brings up to
    # date only when it stops: such a block is never chained into
    blk.exact = any(i.mnemonic == "sti" for i in kept)
    if nbody:
        blk.items = items
        blk.made_key = (eip, vmi, tuple(i.raw for i in kept[:nbody]), tuple(kinds[:nbody]))
        blk.globals = bt._host.compile_globals
        if blk.made_key in tcache._MADE:
            blk.compile()       # made already in this process: only bound
    return blk


def body_of(bt, vmi: int, insn: Insn, kind: str, index: int):
    """The statements of one instruction inside a block -> (lines, ends the unit,
    asks the run loop to look again)."""
    if kind == "inline":
        src = inline_source(bt, vmi, insn, index)
    else:
        src = sem.source_of(insn)     # IDENT: the machine's own code for the instruction
    lines = src.splitlines()[1:]
    resched = bool(lines) and lines[-1].strip() == "raise Resched()"
    if resched:
        lines = lines[:-1]
    jumps = not lines or lines[-1].strip() != f"C.eip = {insn.next:#x}"
    term = ends_unit(insn, kind) or jumps or resched
    if insn.mnemonic in ("sti", "popfd", "popf"):
        resched = True
    return lines, term, resched


def inline_source(bt, vmi: int, insn: Insn, index: int) -> str:
    """Source of a sensitive instruction emulated inline on the virtual CPU ``_bt_vc{i}``:
    what it does natively in ring 0, on the state the guest believes in. ``index`` is its
    position in its block (the STI shadow counts from the instructions before it)."""
    vc, vmv = f"_bt_vc{vmi}", f"_bt_vm{vmi}"
    e = sem.Emit(insn)
    mn = insn.mnemonic
    iopl = (f"if {vc}.cpl > {vc}.iopl: raise Fault(13, 0, detail='CPL %d > IOPL %d' % "
            f"({vc}.cpl, {vc}.iopl))")
    if mn == "cli":
        e.line(iopl)
        e.line(f"{vc}.IF = 0")
    elif mn == "sti":
        e.line(iopl)
        e.line(f"if not {vc}.IF:")
        with e.indent():
            e.line(f"{vmv}.inhibit_until = {vmv}.steps + {index + 2}")
            e.line(f"{vc}.IF = 1")
    elif mn in ("pushfd", "pushf"):
        size = 2 if mn == "pushf" else 4
        push(e, f"{vc}.eflags & {0xFCFFFF if size == 4 else 0xFFFF:#x}", size)
    elif mn in ("popfd", "popf"):
        size = 2 if mn == "popf" else 4
        e.line(f"v = rd{size}(R[4])")
        e.line(f"R[4] = (R[4] + {size}) & 0xFFFFFFFF")
        e.line(f"F = {vc}.eflags")
        e.line(f"cpl = {vc}.cpl")
        e.line(f"mask = {POPF_CPL0:#x} if cpl == 0 else ({POPF_CPL0 & ~IOPL:#x} if "
               f"cpl <= {vc}.iopl else {POPF_CPL0 & ~IOPL & ~IF:#x})")
        if size == 2:
            e.line("mask &= 0xFFFF")
        e.line(f"{vc}.eflags = (F & ~mask) | (v & mask)")
    elif mn == "push":
        size = 2 if insn.opsize else 4
        e.line(f"v = {vc}.{'cs' if insn.operands[0].index == 1 else 'ss'}")
        push(e, "v", size)
    elif mn == "mov" and _is(insn.operands[1], "cr"):
        d, s = insn.operands
        e.line(f"if {vc}.cpl: raise Fault(13, 0, detail='privileged instruction at CPL %d' "
               f"% {vc}.cpl)")
        e.write(d, f"{vc}.cr{s.index}")
    elif mn == "mov":
        d, s = insn.operands
        v = f"{vc}.{'cs' if s.index == 1 else 'ss'}"
        if isinstance(d, Mem):
            e.line(f"wr2({e.addr(d)}, {v})")
        else:
            e.write(d, v)
    else:
        raise AssertionError(f"no inline translation for {insn.text}")
    return e.source()


def inline_single(bt, vmi: int, insn: Insn):
    """Code object of an inline emulation run on its own (interpreter, block remainders)."""
    k = (vmi, insn.address, insn.raw)
    c = bt._inline_code.get(k)
    if c is None:
        src = inline_source(bt, vmi, insn, 0)
        mod = compile(src, f"<bt inline {insn.address:#010x}: {insn.text}>", "exec")
        c = next(x for x in mod.co_consts if isinstance(x, types.CodeType))
        bt._inline_code[k] = c
    return c


def insn_fn(bt, blk: Block, i: int):
    fn = blk.fns[i]
    if fn is None:
        insn = blk.insns[i]
        g = bt._host.compile_globals
        if blk.kinds[i] == "inline":
            fn = types.FunctionType(inline_single(bt, blk.vm, insn), g, insn.text)
        else:
            fn = sem.compile_insn(insn, g)
            if isinstance(fn, str):
                raise UnsupportedInstruction(insn.mnemonic, insn.address, fn)
        blk.fns[i] = fn
    return fn


def _is(op, kind: str) -> bool:
    return isinstance(op, Reg) and op.kind == kind
