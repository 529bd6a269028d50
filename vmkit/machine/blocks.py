"""Block translation: a guest basic block compiled into one Python function (after QEMU's TCG).

Per-instruction mode runs one compiled function per guest instruction (``Machine._compile``):
a dict lookup, a call, an EIP store and often a lazy-flags tuple each time. Block mode stitches
the same per-instruction semantics (``vmkit.isa.semantics``, one table for both modes) into one
function per basic block, so everything between two control transfers runs without dispatch:

* **the same code, renamed**: each instruction's source is parsed (``ast``) and its locals get
  a suffix (``r`` -> ``r_3``), so that later instructions can still read them; the EIP store
  of every instruction but the last is dropped (a fault puts EIP back, below);
* **flags only where read**: a condition, a carry read or a flags merge reads the values of
  the last flag-writing instruction of the block directly (``dec ecx; jnz`` tests ``r_5 != 0``
  instead of building and reading a lazy record); a flags store that the next flag write
  overwrites, with nothing that can fault in between, is dropped;
* **a block that jumps back to its own start loops inside the function** (a chained direct
  exit) as long as the caller's instruction budget covers one more pass;
* **exact**: a block runs only when the budget covers a whole pass (else single instructions
  run), so interrupts come at the same instruction; a fault, a ``Sync`` or a ``Resched`` in the
  middle of a block is located from the traceback's line number (no bookkeeping on the fast
  path): EIP, steps and clock then count the retired instructions only, and the state is as
  after the previous instruction (flag stores are only dropped where nothing can fault);
* **self-modifying code**: every byte of a block is registered like an instruction's (the
  machine's ``code_pages``), and after an instruction that writes memory the block checks the
  machine's SMC generation and leaves if a write dropped compiled code.

Blocks end at a control transfer, before an instruction a monitor intercepts, before an
instruction that needs exact clocks (INT, IRET, far RET, IN/OUT, RDTSC: it runs alone), after
any other instruction that calls into the machine (``M.``: SS loads, control registers;
EIP is stored before it; a DS/ES/FS/GS load is called in the middle of the block) or may
return early (REP), at a page boundary, and after ``MAX_INSNS`` instructions. Constants, dead locals and registers held in locals are
:mod:`vmkit.machine.blockopt`'s; running blocks is :mod:`vmkit.machine.blockrun`'s.

Measured (``benchmarks/bench_speed.py``, the ``compute`` guest, Native, a busy two-core
machine): per-instruction mode 1.1 M instructions per CPU second, block mode 8.1 M.
"""

from __future__ import annotations

import ast
import bisect
import types

from vmkit.isa import semantics as sem
from vmkit.isa.decode import DECODER
from vmkit.machine import blockopt
from vmkit.machine.blockopt import walk
from vmkit.machine.mmu import CR0_PG

__all__ = ["MAX_INSNS", "HOT", "translate", "build", "locate"]

#: at most this many instructions a block (QEMU's TCG allows 512; a Python function of 32
#: instructions compiles in about a millisecond, and a longer straight line is rare in guests)
MAX_INSNS = 32

#: a block is made at an address once a run has come there this many times (before, its
#: instructions run singly): making a block costs a few milliseconds, what running a few
#: thousand instructions singly costs, so code that runs rarely never pays for it
HOT = 64

_SIGN = {1: 0x80, 2: 0x8000, 4: 0x80000000}
_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}


class _Insn:
    """One instruction of a block being built: its statements and what they do to flags."""

    def __init__(self, insn, index: int, src: str, note: str | None = None):
        self.insn = insn
        self.index = index
        self.note = note      # a comment line above its code in the block's source
        self.body = ast.parse(src).body[0].body
        self.calls_machine = "M." in src or "Resched" in src or "return" in src
        self.writes_mem = "wr1(" in src or "wr2(" in src or "wr4(" in src or self.calls_machine
        # can it raise before completing? (memory accessors, faults, machine calls)
        self.may_raise = (self.writes_mem or "rd1(" in src or "rd2(" in src or "rd4(" in src
                          or "raise" in src or "//" in src or "%" in src or "try" in src)
        self.lazy = None      # (kind, size, a, b, r) names when the instruction ends with a lazy
        #                       record written unconditionally at its top level


def _rename(body: list, suffix: str) -> None:
    """Give every local the instruction assigns a suffix (in place)."""
    names = [n for stmt in body for n in walk(stmt) if isinstance(n, ast.Name)]
    stored = {n.id for n in names if isinstance(n.ctx, ast.Store)}
    for n in names:
        if n.id in stored:
            n.id += suffix


def _is_attr(node, obj: str, attr: str) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == attr
            and isinstance(node.value, ast.Name) and node.value.id == obj)


def _flag_uses(stmt) -> bool:
    """Does ``stmt`` touch EFLAGS (C.lz, C.ef, C.eflags) anywhere? (remembered on the node
    until ``_forward`` rewrites the instruction: walking trees is most of a translation's
    cost)"""
    v = getattr(stmt, "_flags", None)
    if v is None:
        v = stmt._flags = any(isinstance(n, ast.Attribute) and n.attr in ("lz", "ef", "eflags")
                              and isinstance(n.value, ast.Name) and n.value.id == "C"
                              for n in walk(stmt))
    return v


def _forget_flags(body: list) -> None:
    for s in body:
        s.__dict__.pop("_flags", None)


def _lazy_record(stmt):
    """``C.lz = (KIND, size, a, b, r[, c])`` -> (kind, size, names...) or None."""
    if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and _is_attr(stmt.targets[0], "C", "lz") and isinstance(stmt.value, ast.Tuple)):
        elts = stmt.value.elts
        if (len(elts) >= 5 and isinstance(elts[0], ast.Name)
                and isinstance(elts[1], ast.Constant)):
            return elts
    return None


def _status_merge(stmt):
    """``C.ef = (C.eflags & ~0x8D5) | X``: every status flag written, other bits kept."""
    if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and _is_attr(stmt.targets[0], "C", "ef") and isinstance(stmt.value, ast.BinOp)
            and isinstance(stmt.value.op, ast.BitOr)):
        left = stmt.value.left
        while isinstance(left, ast.BinOp) and isinstance(left.op, ast.BitOr):
            left = left.left
        if (isinstance(left, ast.BinOp) and isinstance(left.op, ast.BitAnd)
                and _is_attr(left.left, "C", "eflags")
                and ast.unparse(left.right) in ("~2261", "~0x8D5")):
            return left
    return None


def _expr(src: str):
    return ast.parse(src, mode="eval").body


def _status_expr(rec, bits: int) -> str | None:
    """An expression for the status bits ``bits`` (CF 1, ZF 0x40, SF 0x80, OF 0x800) of the
    lazy record ``rec`` (AST elements; kind, size, a, b, r as names or constants), or None
    when this kind is not handled here."""
    kind = rec[0].id
    size = rec[1].value
    a, b, r = (ast.unparse(e) for e in rec[2:5])
    sign, mask = _SIGN[size], _MASK[size]
    parts = []
    if bits & 0x40:
        parts.append(f"(0x40 if {r} == 0 else 0)")
    if bits & 0x80:
        parts.append(f"(0x80 if {r} & {sign:#x} else 0)")
    if kind == "LZ_LOGIC":
        pass
    elif kind == "LZ_ADD" and len(rec) == 5:
        if bits & 1:
            parts.append(f"(1 if {a} + {b} > {mask:#x} else 0)")
        if bits & 0x800:
            parts.append(f"(0x800 if ({a} ^ {r}) & ({b} ^ {r}) & {sign:#x} else 0)")
    elif kind == "LZ_SUB" and len(rec) == 5:
        if bits & 1:
            parts.append(f"(1 if {a} < {b} else 0)")
        if bits & 0x800:
            parts.append(f"(0x800 if ({a} ^ {b}) & ({a} ^ {r}) & {sign:#x} else 0)")
    elif kind in ("LZ_INC", "LZ_DEC"):
        if bits & 1:
            parts.append(f"{b}")
        if bits & 0x800:
            parts.append(f"(0x800 if {r} == {sign if kind == 'LZ_INC' else sign - 1:#x} else 0)")
    else:
        return None
    return " | ".join(parts) if parts else "0"


def _forward(ins: _Insn, prev: _Insn | None) -> bool:
    """Rewrite ``ins``'s flag reads to use ``prev``'s lazy record directly, where the whole
    instruction's flag use is one of the known patterns. Returns True when ``ins`` no longer
    reads the flags ``prev`` left behind (then ``prev``'s store may be dead)."""
    body = ins.body
    touching = [k for k, s in enumerate(body) if _flag_uses(s)]
    rec = prev.lazy if prev is not None else None
    # the ZF test of je/jne: lz = C.lz; z = (lz[4] == 0) if lz is not None else (C.ef & 0x40)
    if (rec is not None and len(touching) == 2 and touching[1] == touching[0] + 1):
        s0, s1 = body[touching[0]], body[touching[1]]
        if (isinstance(s0, ast.Assign) and _is_attr(s0.value, "C", "lz")
                and isinstance(s1, ast.Assign) and isinstance(s1.value, ast.IfExp)):
            body[touching[0]] = ast.Pass()
            s1.value = _expr(f"{ast.unparse(rec[4])} == 0")
            return True
    if len(touching) != 1:
        return False
    s = body[touching[0]]
    # F = C.eflags; t = <condition over F>
    if (rec is not None and isinstance(s, ast.Assign) and _is_attr(s.value, "C", "eflags")
            and touching[0] + 1 < len(body)):
        nxt = body[touching[0] + 1]
        if isinstance(nxt, ast.Assign):
            # every condition but parity reads CF, ZF, SF and OF at most
            parity = any(isinstance(x, ast.BinOp) and isinstance(x.op, ast.BitAnd)
                         and isinstance(x.right, ast.Constant) and x.right.value & 0x14
                         for x in walk(nxt.value))
            e = None if parity else _status_expr(rec, 0x8C1)
            if e is not None:
                s.value = _expr(e)
                return True
        return False
    # a carry read inside an instruction that writes the flags itself (inc/dec, adc/sbb):
    # C.eflags & 1 -> the previous record's CF
    if rec is not None:
        reads = [n for n in walk(s) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitAnd)
                 and _is_attr(n.left, "C", "eflags") and isinstance(n.right, ast.Constant)
                 and n.right.value == 1]
        others = sum(1 for n in walk(s) if _is_attr(n, "C", "eflags"))
        if reads and others == len(reads):
            e = _status_expr(rec, 1)
            if e is not None:
                for n in reads:
                    n.left, n.op, n.right = _expr(f"({e})"), ast.BitOr(), ast.Constant(0)
                return not any(_is_attr(n, "C", a) for n in walk(s)
                               for a in ("eflags", "ef")) or _lazy_record(s) is not None
    # C.ef = (C.eflags & ~0x8D5) | X writes every status flag: the other bits are in C.ef
    # whatever the lazy record holds, so the record is not read (it is dropped instead)
    merge = _status_merge(s)
    if merge is not None:
        merge.left = _expr("C.ef")
        body.insert(touching[0] + 1, ast.parse("C.lz = None").body[0])
        return True
    return False


def _writes_all_status(ins: _Insn) -> bool:
    """Does ``ins`` overwrite every status flag, unconditionally, at its top level?"""
    return any(_lazy_record(s) is not None or _status_merge_done(s) for s in ins.body)


def _status_merge_done(s) -> bool:
    return (isinstance(s, ast.Assign) and _is_attr(s.targets[0], "C", "lz")
            and isinstance(s.value, ast.Constant) and s.value.value is None)


def _fold_constant_ifs(body: list) -> list:
    """``n = 0x10 & 0x1F`` then ``if n:`` (a shift by a constant): keep the branch taken."""
    consts = {}
    out = []
    for s in body:
        if (isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
                and not any(isinstance(n, ast.Name) for n in walk(s.value))):
            try:
                consts[s.targets[0].id] = eval(compile(ast.Expression(s.value), "", "eval"),
                                               {"__builtins__": {}})
            except Exception:   # noqa: BLE001 - not a constant after all: leave it
                pass
        if (isinstance(s, ast.If) and isinstance(s.test, ast.Name) and s.test.id in consts):
            out.extend(s.body if consts[s.test.id] else s.orelse)
            continue
        out.append(s)
    return out


def translate(m, eip: int, made_only: bool = False, pa: int | None = None):
    """Build the block starting at linear ``eip`` in the machine's current mode. Returns
    ``(function, n, addresses, line_starts, code, insns, source, physical)`` or None when no
    block of two or more instructions starts there (the caller then runs single instructions).

    Only the first instruction is fetched through the MMU, as the per-instruction path fetches
    it; the others are read from the same physical page without side effects, and only when
    their whole 15-byte fetch window lies in that page (so no fetch touches the TLB, the
    accessed bits or a fault that the per-instruction path would not). With ``made_only``
    the block is returned only when this process has made it already (``_MADE``), else
    None: binding a made block costs little, building one a few milliseconds. ``pa``: the
    machine's ``code_address(eip)`` just found, not translated again (each translation
    spared counts its TLB hit, as ``Machine.fetch_decode`` does)."""
    hook = m._hook_intercept
    first = m.fetch_decode(eip, pa)
    if first is None or first.id == 0 or (eip & 0xFFF) + first.size > 0x1000:
        return None
    paging = m.cpu.cr0 & CR0_PG or m.nested is not None
    if pa is None:
        pa0 = m.translate(eip, False, m.cpu.cpl == 3) if paging else eip
    else:
        pa0 = pa
        if paging:
            m.tlb_hits += 1
    insns = []
    a = eip
    insn = first
    while True:
        if hook is not None and hook(insn) is not None:
            break
        src = _source(insn)
        if src is None:
            break
        facts = _FACTS.get(src)
        if facts is None:
            facts = _facts(src)
        if insns and facts[0]:
            break   # it runs alone, without an exception for its exact clocks (Sync)
        insns.append((insn, src))
        a = insn.next
        if facts[1] or facts[2] != f"C.eip = {a:#x}":
            break   # a machine call, an early return or a jump ends the block
        if len(insns) >= MAX_INSNS or (a & 0xFFF) + 15 > 0x1000 or a >> 12 != eip >> 12:
            break
        insn = DECODER.decode(a, m.phys_read(pa0 + (a - eip), 15, "fetch"))
        if insn is None or insn.id == 0:
            break
    if len(insns) < 2:
        return None
    key = (eip, tuple(i.raw for i, _ in insns))
    made = _MADE.get(key)
    if made is None:
        if made_only:
            return None
        if len(_MADE) >= 4096:
            _MADE.clear()
            _MADE_AT.clear()
        made = _MADE[key] = _build(eip, [_Insn(i, k, src) for k, (i, src) in enumerate(insns)])
        _MADE_AT.add(eip)
    fcode, n, addrs, starts, source = made
    g = m.compile_globals
    fn = types.FunctionType(fcode, g, fcode.co_name, (g["R"], g["C"], g["M"], g["PARITY"]))
    return fn, n, addrs, starts, fcode, [i for i, _ in insns], source, pa0


def _data_segment_load(src: str) -> bool:
    """Is the instruction's only machine call a load of DS, ES, FS or GS? Such a load changes
    neither how the next instruction is fetched nor whether an interrupt is due, so the block
    goes on after it (as a monitor's callout in the middle of a block: EIP stored before it,
    registers not held in locals); SS (the interrupt shadow) and CS end the block. A kernel's
    entry and exit (``mov ds, ax; mov es, ax`` and what follows) are one block each instead
    of three."""
    calls = src.count("M.")
    return calls == 1 and any(f"M.load_seg({k}, " in src for k in (0, 3, 4, 5))


def _source(insn) -> str | None:
    """The instruction's Python source (``semantics.source_of``, remembered), or None when the
    kit has no semantics for it."""
    key = (insn.address, insn.raw)
    src = _SOURCES.get(key, 0)
    if src == 0:
        try:
            src = sem.source_of(insn)
        except sem.Unsupported:
            src = None
        if len(_SOURCES) >= 1 << 16:
            _SOURCES.clear()
        _SOURCES[key] = src
    return src


_SOURCES: dict = {}


def _facts(src: str) -> tuple:
    """What the block scan asks of an instruction's source, remembered per source: (it calls
    the machine for exact clocks, it ends a block whatever its next address, its last line).
    A block is scanned again each time a machine binds it (after every flush of the compiled
    code: a CR3 load, a world switch), and these string tests were 7 % of notebook 09."""
    facts = (bool(_EXACT_CALLS.intersection(src.replace("(", " ").split())),
             ("M." in src and not _data_segment_load(src)) or "Resched" in src
             or "return" in src or src.count("C.eip") > 1,
             src.rstrip().splitlines()[-1].strip())
    if len(_FACTS) >= 1 << 16:
        _FACTS.clear()
    _FACTS[src] = facts
    return facts


_FACTS: dict = {}

#: machine calls that need the exact clocks (they raise Sync inside a burst)
_EXACT_CALLS = frozenset(("M.soft_int", "M.iret", "M.far_ret", "M.port_in", "M.port_out",
                          "M.rdtsc"))

#: blocks made in this process: (address, instruction bytes) -> code and its line map; a
#: second machine running the same guest (a notebook's next cell, a test) only binds them
_MADE: dict = {}
#: the addresses of the blocks in ``_MADE``: where a new machine may bind a made block on its
#: first visit instead of counting to ``HOT`` (a notebook runs the same kernel under every
#: monitor, cell after cell)
_MADE_AT: set = set()


def build(eip: int, items: list, loop: bool = True, stale: str | None = None):
    """Compile the instructions ``items`` ((decoded instruction, its Python source as
    ``semantics.source_of`` gives it) pairs, or triples with a comment line for the source,
    straight-line code starting at linear ``eip``)
    into one block function, as :func:`translate` does for the machine's own blocks; for a
    monitor that chooses its blocks itself (binary translation's units, with its own code for
    sensitive instructions). ``loop=False``: a jump back to ``eip`` leaves the function
    instead of looping in it. ``stale``: an expression that is true once a store dropped
    translated code (the check after each store; default: the machine's SMC generation).
    An instruction that calls into the machine in the middle sees EIP on itself, and then no
    register is held in a local. -> ``(code, n, addresses, line_starts, source)``: the code
    takes ``(budget, R, C, M, PARITY)`` (bind them as :func:`translate` does) and returns the
    instructions retired. The same request twice in a process gets the same code (a monitor
    translating a unit again after a flush)."""
    key = (eip, tuple((it[0].address, it[0].next, it[1], it[2] if len(it) > 2 else None)
                      for it in items), loop, stale)
    made = _BUILT.get(key)
    if made is None:
        made = _build(eip, [_Insn(it[0], k, it[1], it[2] if len(it) > 2 else None)
                            for k, it in enumerate(items)], loop, stale)
        if len(_BUILT) >= 4096:
            _BUILT.clear()
        _BUILT[key] = made
    return made


#: what build() made in this process, by everything the code depends on: the instructions'
#: addresses and sources (with their comment lines), the loop and the staleness test
_BUILT: dict = {}


def _build(eip: int, insns: list, loop: bool = True, stale: str | None = None):
    n = len(insns)
    last = insns[-1]
    # a block whose last instruction jumps back to its start loops in the function
    tail = last.body[-1]
    loop_cond = None
    if (loop and isinstance(tail, ast.Assign) and _is_attr(tail.targets[0], "C", "eip")
            and not last.calls_machine):
        v = tail.value
        if (isinstance(v, ast.IfExp) and isinstance(v.body, ast.Constant) and v.body.value == eip
                and isinstance(v.orelse, ast.Constant)):
            loop_cond = (v.test, v.orelse.value)
        elif isinstance(v, ast.Constant) and v.value == eip:
            loop_cond = (None, None)
    for ins in insns:
        _rename(ins.body, f"_{ins.index}")
        ins.body = _fold_constant_ifs(ins.body)
        if ins is not last:       # EIP is stored once, by the last instruction (or on a fault)
            ins.body = ins.body[:-1]
    # flags: forward reads to the previous writer's values, then drop dead stores
    prev = None
    for ins in insns:
        if any(_flag_uses(s) for s in ins.body):
            _forward(ins, prev)
            _forget_flags(ins.body)
            prev = ins
            ins.lazy = None
            for s in ins.body:
                if any(_flag_uses(x) for x in [s]):
                    ins.lazy = _lazy_record(s)   # the last flag statement decides
    _drop_dead_stores(insns)
    done = "done + " if loop_cond is not None else ""
    for ins in insns:
        if ins is last and loop_cond is not None:
            ins.body = ins.body[:-1]       # the loop's own exits set EIP
        for st in ins.body:
            for rs in walk(st):
                if isinstance(rs, ast.Return):
                    rs.value = _expr(f"{done}{ins.index + 1}")
    # constants, dead locals, registers in locals (vmkit.machine.blockopt)
    tail = last if last.calls_machine else None   # it runs on R itself, after a write-back
    head = [i for i in insns if i is not tail]
    extra = [loop_cond[0]] if loop_cond is not None and loop_cond[0] is not None else []
    bodies = blockopt.simplify([i.body for i in head], extra)
    for i, b in zip(head, bodies):
        i.body = b
    if extra:
        loop_cond = (extra[0], loop_cond[1])
    # an instruction calling the machine in the middle (a monitor's block) reads R itself
    inner = any(i.calls_machine for i in head)
    regs = [] if inner else blockopt.cached_registers(bodies, loop_cond is not None)
    written = blockopt.localize(bodies, regs) if regs else set()
    back = "; ".join(f"R[{k}] = r{k}" for k in sorted(written))
    # source
    smc = any(ins.writes_mem for ins in insns[:-1])
    lines = ["def _blk(budget, R=R, C=C, M=M, PARITY=PARITY):"]
    if loop_cond is not None:
        lines.append("    done = 0")   # instructions retired in the passes before this one
    if smc and stale is None:
        lines.append("    smc = M.smc_gen")
    dropped = stale or "M.smc_gen != smc"
    ind = "    "
    if regs:
        lines.append(ind + "; ".join(f"r{k} = R[{k}]" for k in regs))
        lines.append(ind + "try:")
        ind += "    "
    if loop_cond is not None:
        lines.append(ind + "while True:")
        ind += "    "
    leave = (back + "; ") if back else ""
    starts = []
    for ins in insns:
        if ins is tail:
            break
        if ins.note:
            lines.append(ind + f"# {ins.note}")
        starts.append(len(lines) + 1)
        if ins.calls_machine and ins.index:
            lines.append(ind + f"C.eip = {ins.insn.address:#x}")   # as per instruction
        for st in ins.body:
            lines += [ind + t for t in ast.unparse(st).splitlines()]
        if ins is not last and ins.writes_mem:
            lines.append(ind + f"if {dropped}: {leave}C.eip = {ins.insn.next:#x}; "
                         f"return {done}{ins.index + 1}")
    if loop_cond is not None:
        test, fall = loop_cond
        if test is None:
            lines += [ind + f"done += {n}", ind + f"if done + {n} <= budget: continue",
                      ind + f"{leave}C.eip = {eip:#x}", ind + "return done"]
        else:
            lines += [ind + f"if {ast.unparse(test)}:", ind + f"    done += {n}",
                      ind + f"    if done + {n} <= budget: continue",
                      ind + f"    {leave}C.eip = {eip:#x}", ind + "    return done",
                      ind + f"{leave}C.eip = {fall:#x}", ind + f"return done + {n}"]
    if regs:
        if loop_cond is None:
            lines.append(ind + "pass")
        lines += ["    except BaseException:", f"        {back or 'pass'}", "        raise"]
        if back and loop_cond is None:
            lines.append("    " + back)
    if tail is not None:
        if tail.note:
            lines.append(f"    # {tail.note}")
        if tail.index:
            # the machine may read EIP (interrupt frames, events): as in per-instruction mode
            lines.append(f"    C.eip = {tail.insn.address:#x}")
        starts.append(len(lines) + 1)
        for st in tail.body:
            lines += ["    " + t for t in ast.unparse(st).splitlines()]
    if loop_cond is None:
        lines.append(f"    return {n}")
    src = "\n".join(lines) + "\n"
    code = compile(src, f"<block {eip:#010x}: {n} instructions>", "exec")
    fcode = next(k for k in code.co_consts if isinstance(k, types.CodeType))
    return fcode, n, tuple(i.insn.address for i in insns), tuple(starts), src


def _drop_dead_stores(insns: list) -> None:
    """Drop a flag store when the next instruction touching flags overwrites every status flag
    without reading them, and nothing in between (nor that instruction) can raise."""
    for k, ins in enumerate(insns):
        stores = [s for s in ins.body if _lazy_record(s) is not None or _status_merge_done(s)
                  or (isinstance(s, ast.Assign) and _is_attr(s.targets[0], "C", "ef")
                      and _status_merge_eager(s))]
        if not stores:
            continue
        if any(_flag_uses(s) for s in ins.body if s not in stores):
            continue
        for nxt in insns[k + 1:]:
            if nxt.may_raise or nxt.writes_mem:
                break
            if any(_flag_uses(s) for s in nxt.body):
                if _writes_all_status(nxt) and not _reads_flags(nxt):
                    ins.body = [s for s in ins.body if s not in stores]
                break


def _status_merge_eager(s) -> bool:
    """``C.ef = (C.ef & ~0x8D5) | X`` (a merge already rewritten by ``_forward``)."""
    v = s.value
    if not (isinstance(v, ast.BinOp) and isinstance(v.op, ast.BitOr)):
        return False
    left = v.left
    while isinstance(left, ast.BinOp) and isinstance(left.op, ast.BitOr):
        left = left.left
    return (isinstance(left, ast.BinOp) and isinstance(left.op, ast.BitAnd)
            and _is_attr(left.left, "C", "ef"))


def _reads_flags(ins: _Insn) -> bool:
    """Does ``ins`` read status flags (after forwarding)?"""
    for s in ins.body:
        if _lazy_record(s) is not None:
            if any(_is_attr(n, "C", "eflags") or _is_attr(n, "C", "ef")
                   for e in _lazy_record(s) for n in walk(e)):
                return True
            continue
        if _status_merge_done(s):
            continue
        if isinstance(s, ast.Assign) and _is_attr(s.targets[0], "C", "ef") \
                and _status_merge_eager(s):
            continue
        if _flag_uses(s):
            return True
    return False


def locate(block, tb) -> tuple[int, int] | None:
    """Where in ``block`` an exception with traceback ``tb`` came from: (instructions retired
    before the current pass, index of the instruction that raised), or None when the exception
    did not come from this block's function."""
    code = block[4]
    if code is None:
        return None
    while tb is not None:
        if tb.tb_frame.f_code is code:
            k = bisect.bisect_right(block[3], tb.tb_lineno) - 1
            done = tb.tb_frame.f_locals["done"] if "done" in code.co_varnames else 0
            return done, max(k, 0)
        tb = tb.tb_next
    return None
