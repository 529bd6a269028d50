"""The engine (QEMU's cpu-exec): the guest kernel run in translated blocks, chained, with
callouts (``callouts.py``: the software MMU, traps from translated code) and the interpreter
below the threshold."""

from __future__ import annotations

import types

from vmkit.errors import UnsupportedInstruction
from vmkit.isa import semantics as sem
from vmkit.isa.decode import DECODER
from vmkit.isa.faults import Fault, Resched
from vmkit.machine import blocks
from vmkit.machine.machine import RunResult
from vmkit.machine.mmu import Sync
from vmkit.trace import InstructionRetired, TcLookup
from vmkit.vmm.bt.callouts import callout, retire_native, soft_mmu, trap_in_tc
from vmkit.vmm.bt.static import static_miss
from vmkit.vmm.bt.tcache import Block
from vmkit.vmm.bt.translator import (GO_ON, MAX_BLOCK, TF, classify, ends_unit, fetch,
                                     guest_bytes, guest_text, inline_single, insn_fn,
                                     translate)
from vmkit.vmm.deprivileged.vcpu import TEVM
from vmkit.vmm.world import VMStop as _VMStop


# ---- the engine --------------------------------------------------------------------------
def run_kernel(bt, vm: TEVM, budget: int, until, single: bool) -> RunResult:
    """Run the guest kernel in the translator until the VMM's run loop is needed: the
    budget or the guest-time deadline is reached, the guest leaves its kernel, halts, or
    something the loop must look at changed."""
    m = bt._host
    cpu, vc, tr = m.cpu, vm._vcpu, bt.trace
    deadline = m.dev.next_tick
    limit = budget if deadline is None else min(budget, deadline - m.clock)
    careful = single or until or m.breakpoints or tr.want_insns or cpu.ef & TF  # (truth)
    bps = None
    if careful and not (single or until):
        # careful only for breakpoints: a translated block runs up to the next one in it, not
        # an instruction at a time (what runs between two looks cannot pass a breakpoint)
        bps = m.breakpoints
        bt._stepwise = True
    g0 = vm.steps
    reason = "vmm"
    first = True
    stuck = 0
    try:
        while True:
            done = vm.steps - g0
            if done >= limit:
                reason = "max_steps"
                break
            if m.exit_request:
                m.cancel_exit()
                break
            if (vc.cpl != 0 or vc.halted or vm.pending is not None
                    or vm.devices.poweroff_code is not None):
                break
            before = vm.steps
            if careful:
                eip = cpu.eip
                if not first and eip in m.breakpoints:
                    reason = "breakpoint"
                    break
                first = False
                tf = cpu.ef & TF
                if bps is not None and not tf and not tr.want_insns:
                    step_kernel(bt, vm, limit - done, bps)     # (until is None here)
                else:
                    text = guest_text(bt, vm, eip) if tr.wants_instructions() else ""
                    step_kernel(bt, vm, 1)
                    if vm.steps > before:
                        if text:
                            tr.add(InstructionRetired(m.clock, address=eip, text=text,
                                                      ring=cpu.cpl, vm=vm.index))
                        if tf and vc.cpl == 0 and not m.exit_request:
                            bt.on_exception(1, Fault(1, detail="single-step trap (TF)"),
                                               "exception", None)
                    if until is not None and until(m):
                        reason = "until"
                        break
            else:
                step_kernel(bt, vm, limit - done)
            if vm.steps == before:
                stuck += 1
                if stuck > 1000:
                    raise _VMStop("crash", f"the translator made no progress at "
                                           f"{cpu.eip:#010x}")
            else:
                stuck = 0
    except _VMStop as s:
        bt._stop_soon(vm, s.reason, s.detail)
        m.cancel_exit()
    except UnsupportedInstruction as ui:
        return RunResult("crash", vm.steps - g0, str(ui), cpu.eip)
    finally:
        m.in_burst = False
        if bps is not None:
            bt._stepwise = False
    return RunResult(reason, vm.steps - g0, "", cpu.eip)


def step_kernel(bt, vm: TEVM, left: int, bps=None) -> None:
    """One translation-cache lookup and what follows: a translated chain, or one unit
    interpreted (translated first if it has now run ``threshold`` times). With breakpoints
    ``bps`` (a set of addresses): one block, up to the first breakpoint after its first
    instruction (``_upto``), or one instruction interpreted."""
    cpu = bt._host.cpu
    eip = cpu.eip
    link_from, bt._link_from = bt._link_from, None
    try:
        gpa = vm.translate(eip)
    except Fault as f:          # the guest's own #PF on an instruction fetch
        bt.on_exception(f.vector, f, "exception", None)
        return
    key = (vm.index, gpa, eip, 0)
    r = bt._resume
    if r is not None:
        bt._resume = None
        if r[0] == key and r[1].valid:
            finish_block(bt, vm, r[1], r[2], left if bps is None else _upto(r[1], r[2], left, bps))
            return
    bt.tc_lookups += 1
    bt.events["tc_lookup"] += 1
    tr = bt.trace
    watched = "tc_lookup" in tr._eager     # (a subscriber to it or to "*")
    if not watched:
        tr.counts["tc_lookup"] += 1   # the event object only for someone watching (as TLB
    blk = bt._tc.get(key)           # misses): a lookup is too frequent to record always
    if blk is None:
        bt.tc_misses += 1
        if watched:
            tr.add(_lookup_event(vm, eip, False, bt._host.clock))
        if bt.static:
            static_miss(bt, vm, eip)
        n = bt._counts.get(key, 0) + 1
        bt._counts[key] = n
        if n >= bt.threshold:
            blk = translate(bt, vm, eip, gpa, key)
        if blk is None:
            interpret(bt, vm, left if bps is None else 1)
            return
    else:
        bt.tc_hits += 1
        blk.hits += 1
        if watched:
            tr.add(_lookup_event(vm, eip, True, bt._host.clock))
        if not blk.static and bt._policy_used is not None:
            bt._policy_used(key)
    if (link_from is not None and link_from.valid and link_from.vm == vm.index
            and (link_from.eip ^ eip) >> 12 == 0 and (link_from.gpa ^ gpa) >> 12 == 0
            and not blk.exact):
        link_from.links[eip] = blk     # the successor is in the same page: chain it
    run_chain(bt, vm, blk, left if bps is None else _upto(blk, 0, left, bps))


def _upto(blk: Block, i: int, left: int, bps) -> int:
    """The budget that runs ``blk`` from its instruction ``i`` to the first breakpoint after
    it, or to its end (tail included), and no further: it ends there and the chain with it."""
    stop = blk.n - i
    index = blk.index       # address -> position in the block
    for a in bps:
        j = index.get(a)
        if j is not None and i < j < i + stop:
            stop = j - i
    return min(left, stop)


def run_chain(bt, vm: TEVM, blk: Block, left: int) -> None:
    """Run translated blocks, following chained exits, until the budget is spent or an
    exit needs a lookup or the run loop. Guest time is brought up to date before anything
    that can look at it (a callout, a trap, leaving)."""
    m = bt._host
    cpu = m.cpu
    stale = bt._stale
    # instructions retired in translated code are counted into guest time when the chain
    # stops or something looks at the time (4-5% faster than per block on bench_bt's hot
    # loop): those since ``mark``, the budget left when they were last counted
    mark = left
    chained = indirect = 0
    whole = m.blocks           # block mode: a block's function runs it whole
    m.in_burst = True          # page faults ask for an exact retry (Sync), as in a burst
    try:
        while True:
            try:
                if whole:
                    # compiled blocks with nothing to do between them but a chained exit,
                    # in a loop of their own (the general one below does the same for
                    # them): a system call's kernel path under bt took 720 Python bytecodes
                    # here before, 9 blocks
                    while blk.plain and left >= blk.nbody:
                        k = blk.fn(left)
                        left -= k
                        if k < blk.nbody or stale[0]:
                            if stale[0]:
                                stale[0] = False
                                if not blk.valid:
                                    return
                            if k < blk.nbody:
                                resume_at(bt, vm, blk, k)
                            return
                        if left <= 0:
                            return
                        nxt = blk.links.get(cpu.eip)
                        if nxt is None or not nxt.valid:
                            bt._link_from = blk
                            return
                        if blk.indirect:
                            indirect += 1
                        chained += 1
                        nxt.chained_in += 1
                        blk = nxt
                fn = blk.fn
                if fn is None and whole and blk.items is not None:
                    blk.runs += 1       # compiled once it is hot (Block.compile)
                    if blk.runs >= blocks.HOT:
                        blk.compile()
                        fn = blk.fn
                if whole and fn is not None and left >= blk.nbody:
                    if blk.loop_fn is not None and blk.links.get(blk.eip) is blk:
                        # a unit chained to itself runs its passes in its loop function;
                        # each pass after the first is a chained exit, counted as one
                        k = blk.loop_fn(left)
                        extra = (k - 1) // blk.nbody
                        if extra:
                            chained += extra
                            blk.chained_in += extra
                            left -= extra * blk.nbody
                            k -= extra * blk.nbody
                    else:
                        k = fn(left)
                else:
                    k = run_singly(bt, blk, left)
            except (Sync, Fault) as ex:
                m.in_burst = False
                i, passes = stopped_at(blk, ex, cpu)
                if passes:
                    chained += passes
                    blk.chained_in += passes
                    left -= passes * blk.nbody
                retire_native(bt, vm, mark - left + i)
                mark = left
                if isinstance(ex, Sync) or trap_in_tc(bt, vm, ex, blk, i) == "retry":
                    finish_block(bt, vm, blk, i, left - i)
                return
            except BaseException as ex:     # the VM stops: EIP on the instruction, as ever
                i, passes = stopped_at(blk, ex, cpu)
                left -= passes * blk.nbody + i
                raise
            left -= k
            if k < blk.nbody or stale[0]:
                # the budget ran out inside the block, or it wrote into translated code
                # (perhaps its own: then it is gone, and the rest of it is stale)
                if stale[0]:
                    stale[0] = False
                    if not blk.valid:
                        return
                if k < blk.nbody:
                    resume_at(bt, vm, blk, k)
                return
            if blk.tail is not None:
                m.in_burst = False
                retire_native(bt, vm, mark - left)
                mark = left
                if left <= 0:
                    resume_at(bt, vm, blk, k)
                    return
                if not run_tail(bt, vm, blk):
                    return
                left -= 1           # the callout counted itself
                mark = left
                m.in_burst = True
            if blk.resched:     # IF, CPL or a segment changed: the run loop looks again
                m.request_exit()
                return
            if left <= 0:
                return
            nxt = blk.links.get(cpu.eip)
            if nxt is None or not nxt.valid:
                bt._link_from = blk
                return
            if blk.indirect:
                # Python follows the last target seen for free, but translated code has to
                # look an indirect target up in the translation cache every time (Adams &
                # Agesen 2006, §3: indirect control flow, ret included, needs a lookup):
                # priced as one tc_lookup
                indirect += 1
            chained += 1
            nxt.chained_in += 1
            blk = nxt
    finally:
        m.in_burst = False
        if mark != left:
            retire_native(bt, vm, mark - left)
        bt.chained += chained
        if indirect:
            bt.indirect_lookups += indirect
            bt.events["tc_lookup"] += indirect


def run_singly(bt, blk: Block, left: int) -> int:
    """Run the instructions of ``blk`` before its tail one compiled function at a time
    (per-instruction mode, or too little budget left for the whole block): as the block's
    function would, -> instructions retired, stopping early when the budget is spent or a
    store dropped translated code; a fault leaves EIP on the instruction that raised."""
    stale = bt._stale
    fns = blk.fns
    n = min(blk.nbody, left)
    k = 0
    while k < n:
        f = fns[k]
        if f is None:
            f = insn_fn(bt, blk, k)
        try:
            f()
        except Resched:     # the block's last instruction (the engine asks the loop to look)
            pass
        k += 1
        if stale[0]:
            break
    return k


def stopped_at(blk: Block, ex: BaseException, cpu) -> tuple[int, int]:
    """(index of the instruction of ``blk`` that raised ``ex``, not retired; whole passes run
    before, in its loop function) with EIP put on that instruction: located from the traceback
    in the block's function (``blocks.locate``), which stores EIP only at its end; the
    per-instruction path left EIP there already."""
    for code, starts in ((blk.code, blk.starts), (blk.loop_code, blk.loop_starts)):
        if code is not None:
            at = blocks.locate((None, None, None, starts, code), ex.__traceback__)
            if at is not None:
                cpu.eip = blk.insns[at[1]].address
                return at[1], at[0] // blk.nbody
    return blk.index.get(cpu.eip, 0), 0


def resume_at(bt, vm: TEVM, blk: Block, i: int) -> None:
    a = blk.insns[i].address
    bt._resume = ((vm.index, blk.gpa + (a - blk.eip), a, 0), blk, i)


def finish_block(bt, vm: TEVM, blk: Block, i: int, left: int) -> None:
    """Run the rest of a block from instruction ``i``, one instruction at a time (after an
    exit in its middle): the block's own code, not a new translation."""
    m = bt._host
    cpu = m.cpu
    retries = 0
    # a run for breakpoints (run_kernel): as an instruction at a time, a block dropped while it
    # ran (an instruction adapted after its trap) is left after the instruction that retired
    i0 = i if bt._stepwise else -1
    while i < blk.nbody:
        if left <= 0 or (i0 >= 0 and i != i0 and not blk.valid):
            resume_at(bt, vm, blk, i)
            return
        fn = insn_fn(bt, blk, i)
        try:
            fn()
        except Resched:
            retire_native(bt, vm, 1)
            m.request_exit()
            return
        except Fault as f:
            r = trap_in_tc(bt, vm, f, blk, i)
            retries += 1
            if (r == "retry" and retries < 8 and not m.exit_request
                    and cpu.eip == blk.insns[i].address):
                continue
            return
        retire_native(bt, vm, 1)
        i += 1
        left -= 1
        if i0 >= 0:
            retries = 0     # (counted per instruction, as each had its own call)
        if bt._stale[0]:
            bt._stale[0] = False
            if not blk.valid:
                return
        if m.exit_request:
            if i < blk.nbody or blk.tail is not None:
                resume_at(bt, vm, blk, i)
            return
    if blk.tail is not None:
        if left <= 0 or (i0 >= 0 and i != i0 and not blk.valid):
            resume_at(bt, vm, blk, i)
            return
        run_tail(bt, vm, blk)
    elif blk.resched:
        m.request_exit()


def run_tail(bt, vm: TEVM, blk: Block) -> bool:
    """The callout that ends a block; True when translated code may go straight on."""
    insn, kind, handler = blk.tail
    if kind == "adapted":
        ok = soft_mmu(bt, vm, insn, blk)
    else:
        ok = callout(bt, vm, insn, handler, interpreted=False)
    if not ok:
        return False
    if not blk.go_on:
        bt._host.request_exit()
        return False
    return not bt._host.exit_request


# ---- the interpreter ------------------------------------------------------------------------
def interpret(bt, vm: TEVM, left: int) -> None:
    """Interpret one unit: fetch through the guest's page tables, decode and dispatch every
    instruction each time (the model keeps no per-address state: every run is priced as
    interpretation), emulating sensitive ones on the virtual CPU. The simulator remembers, for
    each decoded instruction (the decoder's own object for these address and bytes), how it
    dispatches: its kind, its function, whether it ends the unit (``_dispatch``)."""
    m = bt._host
    cpu = m.cpu
    memo = bt._interp
    vmi = vm.index
    mem = m.mem
    decode = DECODER.decode
    base, size = vm.slice_base, vm.memory_size
    start = cpu.eip
    count = 0
    while count < left:
        eip = cpu.eip
        try:
            if eip & 0xFFF <= 0xFF1:    # the 15-byte window in one page: fetch, written out
                gpa = vm.translate(eip)
                if gpa + 15 <= size:
                    insn = decode(eip, bytes(mem[base + gpa:base + gpa + 15]))
                else:
                    insn = decode(eip, guest_bytes(bt, vm, gpa, 15))
            else:
                insn = fetch(bt, vm, eip)
        except Fault as f:
            bt.on_exception(f.vector, f, "exception", None)
            return
        d = memo.get(id(insn))
        if d is None or d[0] is not insn or d[1] != vmi:
            if insn is None or not insn.id:
                bt.on_exception(6, Fault(6, detail=f"undefined or unsupported encoding at "
                                                      f"{eip:#010x}"), "exception", None)
                return
            d = _dispatch(bt, vmi, insn)
        fn = d[2]
        if fn is None:      # a callout (its handler looked up now: emulate may change)
            if callout(bt, vm, insn, classify(bt, insn)[1], interpreted=True) \
                    and insn.mnemonic not in GO_ON:
                m.request_exit()
            return
        try:
            fn()
        except Resched:     # CS, IF or a segment changed: the run loop looks again
            m.request_exit()
        except Fault as f:
            bt.on_exception(f.vector, f, "exception", None)
            return
        m.clock += 1
        vm.steps += 1
        bt._engine_steps += 1
        bt.interpreted += 1
        bt.events["interpret"] += 1
        count += 1
        if d[3] or count >= MAX_BLOCK:
            if d[4]:
                m.request_exit()
            return
        if (cpu.eip ^ start) >> 12 or cpu.eip != d[5]:
            return


def _dispatch(bt, vmi: int, insn) -> tuple:
    """How the interpreter runs ``insn`` in VM ``vmi``, remembered in ``bt._interp`` under the
    decoded instruction's identity (the entry holds it, so the identity cannot be reused):
    ``(insn, vmi, function or None for a callout, ends the unit, the run loop must look
    after it (sti, popfd), next address)``."""
    kind, _ = classify(bt, insn)
    if kind == "callout":
        fn = None
    elif kind == "inline":
        fn = types.FunctionType(inline_single(bt, vmi, insn), bt._host.compile_globals,
                                insn.text)
    else:
        fn = sem.compile_insn(insn, bt._host.compile_globals)
        if isinstance(fn, str):
            raise UnsupportedInstruction(insn.mnemonic, insn.address, fn)
    d = (insn, vmi, fn, ends_unit(insn, kind), insn.mnemonic in ("sti", "popfd", "popf"),
         insn.next)
    memo = bt._interp
    if len(memo) >= 1 << 14:
        memo.clear()
    memo[id(insn)] = d
    return d


def _lookup_event(vm: TEVM, eip: int, hit: bool, clock: int) -> TcLookup:
    return TcLookup(clock, address=eip, hit=hit, vm=vm.index)
