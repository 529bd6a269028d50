"""The engine (QEMU's cpu-exec): the guest kernel run in translated blocks, chained, with
callouts, the software MMU and the interpreter below the threshold."""

from __future__ import annotations

import types

from vmkit.errors import UnsupportedInstruction
from vmkit.isa import semantics as sem
from vmkit.isa.decode import Insn
from vmkit.isa.faults import Fault, Resched
from vmkit.machine import blocks
from vmkit.machine.machine import RunResult
from vmkit.machine.mmu import Sync
from vmkit.trace import Emulation, InstructionRetired, TcLookup
from vmkit.vmm.bt.static import static_miss
from vmkit.vmm.bt.tcache import Block, invalidate
from vmkit.vmm.bt.translator import (GO_ON, IN_TC, MAX_BLOCK, TF, classify, ends_unit, fetch,
                                     guest_text, inline_single, insn_fn, translate)
from vmkit.vmm.deprivileged.vcpu import TEVM
from vmkit.vmm.paging import softmmu
from vmkit.vmm.vm import CannotEmulate
from vmkit.vmm.world import VMStop as _VMStop


# ---- the engine --------------------------------------------------------------------------
def run_kernel(bt, vm: TEVM, budget: int, until, single: bool) -> RunResult:
    """Run the guest kernel in the translator until the VMM's run loop is needed: the
    budget or the guest-time deadline is reached, the guest leaves its kernel, halts, or
    something the loop must look at changed."""
    m = bt._host
    cpu, vc, tr = m.cpu, vm.vcpu, bt.trace
    deadline = m.dev.next_tick
    limit = budget if deadline is None else min(budget, deadline - m.clock)
    careful = bool(single or until or m.breakpoints or tr.wants_instructions()
                   or cpu.ef & TF)
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
    return RunResult(reason, vm.steps - g0, "", cpu.eip)


def step_kernel(bt, vm: TEVM, left: int) -> None:
    """One translation-cache lookup and what follows: a translated chain, or one unit
    interpreted (translated first if it has now run ``threshold`` times)."""
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
            finish_block(bt, vm, r[1], r[2], left)
            return
    bt.tc_lookups += 1
    bt.events["tc_lookup"] += 1
    tr = bt.trace
    watched = "tc_lookup" in tr._subs or "*" in tr._subs
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
            interpret(bt, vm, left)
            return
    else:
        bt.tc_hits += 1
        blk.hits += 1
        if watched:
            tr.add(_lookup_event(vm, eip, True, bt._host.clock))
        if not blk.static:
            bt.policy.used(key)
    if (link_from is not None and link_from.valid and link_from.vm == vm.index
            and (link_from.eip ^ eip) >> 12 == 0 and (link_from.gpa ^ gpa) >> 12 == 0
            and not blk.exact):
        link_from.links[eip] = blk     # the successor is in the same page: chain it
    run_chain(bt, vm, blk, left)


def retire_native(bt, vm: TEVM, n: int) -> None:
    m = bt._host
    m.steps += n
    m.clock += n
    vm.steps += n


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
    while i < blk.nbody:
        if left <= 0:
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
        if bt._stale[0]:
            bt._stale[0] = False
            if not blk.valid:
                return
        if m.exit_request:
            if i < blk.nbody or blk.tail is not None:
                resume_at(bt, vm, blk, i)
            return
    if blk.tail is not None:
        if left <= 0:
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


# ---- callouts: the VMM emulating an instruction without a trap ---------------------------
def callout(bt, vm: TEVM, insn: Insn, handler, interpreted: bool) -> bool:
    """Emulate ``insn`` on the virtual CPU with its handler (trap-and-emulate's convention:
    EIP is past the instruction during the call). Returns whether it retired; a Fault it
    raises is the guest's (reflected), CannotEmulate ends the VM."""
    m = bt._host
    eip = insn.address
    mn = insn.mnemonic
    if handler is None:
        raise CannotEmulate(f"cannot emulate {insn.text!r} at {eip:#010x}: no handler in "
                            f"emulate[{mn!r}]")
    bt._sync_gdt(vm)
    done = bt._call_handler(vm, handler, insn, eip)
    if done is None:
        # the handler declines: the instruction runs as translated code would
        return run_native_one(bt, vm, insn)
    if not done:
        return False
    m.clock += 1
    vm.steps += 1
    bt._engine_steps += 1
    bt.emulated[mn] += 1
    if interpreted:
        bt.interpreted += 1
        bt.events["emulate"] += 1
    else:
        bt.callouts += 1
        # priced as VMware's translator ran them: a short sequence inside the translation
        # cache (A&A 2006 §3.3, §6.3), not a call into the VMM
        bt.events["tc_emulate" if mn in IN_TC else "callout"] += 1
    bt.trace.add(_emulation_event(m.clock, insn, vm.index))
    return True


def run_native_one(bt, vm: TEVM, insn: Insn) -> bool:
    fn = sem.compile_insn(insn, bt._host.compile_globals)
    if isinstance(fn, str):
        raise UnsupportedInstruction(insn.mnemonic, insn.address, fn)
    try:
        fn()
    except Resched:
        pass
    except Fault as f:
        bt.on_exception(f.vector, f, "exception", None)
        return False
    retire_native(bt, vm, 1)
    return True


#: runs in a row of an adapted instruction that would not have trapped as IDENT code (no hidden
#: fault, no traced write: ``_probe``) before it goes back to its IDENT
#: translation (A&A 2006 §3.3: the callout "continues to monitor the behavior of the offending
#: instruction"; adaptation is aggressive towards the general form, "less aggressively towards a
#: more optimistic translation": hysteresis). If it traps again it is adapted again.
REVERT_AFTER = 64

#: instructions of the in-TC sequence an adapted write to a traced page table runs (A&A §6.3:
#: "a small program"): check the target against the traced pages, store, find the shadow entry
#: and rewrite it; an estimate. Its walk of the guest's tables and the shadow entry it writes
#: are priced as such (``page_walk``, ``shadow_update``), not as a callout.
TRACE_SEQUENCE = 12


def _traced_writes(bt) -> int:
    """Writes to traced guest page tables so far (0 unless the paging mode traces)."""
    return getattr(getattr(bt, "paging", None), "traced_writes", 0)


def soft_mmu(bt, vm: TEVM, insn: Insn, blk: Block | None = None) -> bool:
    """An adapted instruction: run it with the VMM's software MMU (the guest's page tables,
    accessed and dirty bits set as the hardware would), so it cannot take a hidden fault, and a
    write to a traced page table updates the shadow in the same sequence (A&A §3.3, §6.3)."""
    m = bt._host
    k = (vm.index, insn.address, insn.raw)
    fn = bt._soft.get(k)
    if fn is None:
        fn = softmmu.compile_through_guest(m, vm, insn, False, _probe(bt, vm))
        if isinstance(fn, str):
            raise UnsupportedInstruction(insn.mnemonic, insn.address, fn)
        bt._soft[k] = fn
    traced0 = _traced_writes(bt)
    bt._would_trap = False
    try:
        fn()
    except Resched:
        pass
    except Fault as f:          # the guest's own fault: delivered as any exception
        bt.on_exception(f.vector, f, "exception", None)
        return False
    m.clock += 1
    vm.steps += 1
    bt._engine_steps += 1
    bt.callouts += 1
    traced = _traced_writes(bt) - traced0
    if traced:
        # the in-TC sequence: its own instructions; the walk and the shadow update were
        # counted by the paging mode's traced write
        bt.events["native"] += TRACE_SEQUENCE * traced
    else:
        bt.events["callout"] += 1
    if blk is not None:
        ik = (vm.index, blk.gpa + (insn.address - blk.eip), insn.address)
        # innocent: a run that would not have trapped as IDENT code (no traced write, no
        # hidden fault); under a virtual TLB nothing is traced, the hidden faults are what
        # made the instruction adapted
        runs = 0 if traced or bt._would_trap else bt._innocent.get(ik, 0) + 1
        bt._innocent[ik] = runs
        if runs >= REVERT_AFTER:
            _retranslate(bt, vm, ik, insn, adapted=False)
    return True


def _probe(bt, vm: TEVM):
    """Called before each soft-MMU access of an adapted instruction: would it have trapped as
    IDENT code (``bt._would_trap``: the paging mode's real tables would fault there)? The mode
    fills the entry the trap would have filled."""
    paging = bt.paging

    def probe(a: int, n: int, write: bool) -> None:
        end = (a + n - 1) & 0xFFFFFFFF
        if paging.prefill(vm, a, write, False) | (
                (end ^ a) >> 12 != 0 and paging.prefill(vm, end, write, False)):
            bt._would_trap = True
    return probe


def _retranslate(bt, vm: TEVM, ik: tuple, insn: Insn, adapted: bool) -> None:
    """Adapt instruction ``ik`` (``adapted``: to a software-MMU sequence) or take it back to
    IDENT; every block holding it is retranslated on its next execution."""
    if adapted:
        if ik not in bt._adapted:
            bt._adapted.add(ik)
            bt.adaptations += 1
    else:
        bt._adapted.discard(ik)
        bt._traps.pop(ik, None)
    bt._innocent.pop(ik, None)
    h = vm.slice_base + ik[1]
    why = "keeps trapping" if adapted else f"innocent for {REVERT_AFTER} runs"
    for b in list(bt._code_bytes.get(h, ())):
        if b.valid:
            bt._counts[b.key] = bt.threshold
            invalidate(bt, b, f"adapt: {insn.text} {why}", count=False)


# ---- traps from translated code, and adaptation ------------------------------------------
def trap_in_tc(bt, vm: TEVM, f: Fault, blk: Block, i: int) -> str:
    """A fault raised by translated instruction ``i`` (not retired): a trap into the VMM,
    handled as under trap-and-emulate. -> "retry" (a hidden fault: run it again), "done"
    (the VMM emulated it) or "delivered" (reflected into the guest, or the VM stops)."""
    s0, h0, t0 = vm.steps, bt.hidden_page_faults, _traced_writes(bt)
    bt.on_exception(f.vector, f, "exception", None)
    if vm.steps != s0:
        if _traced_writes(bt) != t0:
            # a store into a traced page table, emulated by the VMM: it counts towards
            # adapting the store into an in-TC sequence (A&A §3.3)
            _count_trap(bt, vm, blk, i)
        return "done"
    if bt.hidden_page_faults == h0:
        return "delivered"
    _count_trap(bt, vm, blk, i)
    return "retry"


def _count_trap(bt, vm: TEVM, blk: Block, i: int) -> None:
    """Translated instruction ``i`` trapped (a hidden fault or a traced write): adapt it once
    it has trapped ``adapt_after`` times."""
    insn = blk.insns[i]
    ik = (vm.index, blk.gpa + (insn.address - blk.eip), insn.address)
    bt._traps[ik] += 1
    if blk.kinds[i] != "ident" or not bt.adapt_after or insn.rep:
        # a rep string instruction touches a fresh page per chunk: emulating each of its
        # iterations in software would cost more than the traps it takes
        return
    if ik in bt._adapted or bt._traps[ik] >= bt.adapt_after:
        _retranslate(bt, vm, ik, insn, adapted=True)    # (again, for a block that still
                                                        # holds it as IDENT)


# ---- the interpreter ------------------------------------------------------------------------
def interpret(bt, vm: TEVM, left: int) -> None:
    """Interpret one unit: fetch through the guest's page tables, decode and dispatch every
    instruction each time (no per-address state is kept), emulating sensitive ones on the
    virtual CPU."""
    m = bt._host
    cpu = m.cpu
    g = m.compile_globals
    start = cpu.eip
    count = 0
    while count < left:
        eip = cpu.eip
        try:
            insn = fetch(bt, vm, eip)
        except Fault as f:
            bt.on_exception(f.vector, f, "exception", None)
            return
        if insn is None or not insn.id:
            bt.on_exception(6, Fault(6, detail=f"undefined or unsupported encoding at "
                                                  f"{eip:#010x}"), "exception", None)
            return
        kind, handler = classify(bt, insn)
        if kind == "callout":
            if callout(bt, vm, insn, handler, interpreted=True) \
                    and insn.mnemonic not in GO_ON:
                m.request_exit()
            return
        if kind == "inline":
            fn = types.FunctionType(inline_single(bt, vm.index, insn), g, insn.text)
        else:
            fn = sem.compile_insn(insn, g)
            if isinstance(fn, str):
                raise UnsupportedInstruction(insn.mnemonic, eip, fn)
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
        if ends_unit(insn, kind) or count >= MAX_BLOCK:
            if insn.mnemonic in ("sti", "popfd", "popf"):
                m.request_exit()
            return
        if (cpu.eip ^ start) >> 12 or cpu.eip != insn.next:
            return


def _lookup_event(vm: TEVM, eip: int, hit: bool, clock: int) -> TcLookup:
    return TcLookup(clock, address=eip, hit=hit, vm=vm.index)


def _emulation_event(clock: int, insn: Insn, vm: int) -> Emulation:
    return Emulation(clock, address=insn.address, text=insn.text, mnemonic=insn.mnemonic, vm=vm)
