"""Callouts (A&A 2006 §3.3): the VMM emulating a guest kernel instruction from translated code
without a trap, the software-MMU sequence of an adapted instruction, and traps taken by
translated code with the adaptation they lead to."""

from __future__ import annotations

from vmkit.errors import UnsupportedInstruction
from vmkit.isa import semantics as sem
from vmkit.isa.decode import Insn
from vmkit.isa.faults import Fault, Resched
from vmkit.trace import Emulation
from vmkit.vmm.bt.tcache import Block, invalidate
from vmkit.vmm.bt.translator import IN_TC
from vmkit.vmm.deprivileged.vcpu import TEVM
from vmkit.vmm.paging import softmmu
from vmkit.vmm.vm import CannotEmulate


def retire_native(bt, vm: TEVM, n: int) -> None:
    m = bt._host
    m.steps += n
    m.clock += n
    vm.steps += n


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
    bt.trace.record((Emulation, vm.index, m.clock, eip, insn.text, mn))
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
