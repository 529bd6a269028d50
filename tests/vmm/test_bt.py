"""BinaryTranslation: the guest kernel interpreted, then translated into Python blocks, user code
run directly (vmkit/vmm/bt.py).

Equivalence with Native for every guest, the nonvirt- demonstrations included (the translator
sees every sensitive instruction before it runs), in every mode (interpret only, translate on
first execution, tiny caches under each eviction policy, ahead-of-time translation); then the
mechanisms one by one: the threshold, the cache and its policies, chaining, callouts, inline
emulation, self-modifying code, adaptation, exact interrupt timing, the static translator's
documented failure, several VMs, bad input."""

from __future__ import annotations

from collections import Counter

import pytest

import vmkit
from vmkit import guests
from vmkit.trace import Trace
from vmkit.vmm import MONITORS, CostModel, Native, TrapAndEmulate
from vmkit.vmm.bt import (DEFAULT_THRESHOLD, FIFO, LRU, MAX_BLOCK, BinaryTranslation,
                          FlushWhenFull)
from equivalence import MAX_STEPS, OWN_KERNEL, SMALL, build, digest, guest_state

ALL = [n for n in guests.names() if not guests.spec(n).paravirtual_only]
NONVIRT = [n for n in ALL if n.startswith("nonvirt-")]
MODES = {"default": {}, "interpret-only": {"threshold": 10**9}, "first-execution": {"threshold": 1},
         "tiny-lru": {"tc_size": 3, "policy": LRU()}, "static": {"static": True}}


_NATIVE: dict = {}


def run_native(img):
    key = (img.name, img.digest(), tuple(sorted(img.params.items())))
    if key not in _NATIVE:
        vm = Native(img)
        r = vm.run(max_steps=MAX_STEPS)
        _NATIVE[key] = (vm, r)
    return _NATIVE[key]


def run_bt(*imgs, **kw):
    vm = BinaryTranslation(*imgs, **kw)
    r = vm.run(max_steps=MAX_STEPS * len(imgs))
    return vm, r


def assert_equivalent(bt, rb, nat, rn):
    assert rn.reason == "poweroff", rn
    assert rb.reason == rn.reason, rb
    assert bt.console == nat.console
    assert guest_state(bt.vcpu) == guest_state(nat.machine.cpu)
    assert digest(bt.vms[0].memory()) == digest(bytes(nat.machine.mem))
    assert bt.vms[0].steps == nat.machine.steps      # guest time: timer ticks land alike
    assert bt.vms[0].devices.ticks == nat.machine.dev.ticks


# ---- equivalence (Popek & Goldberg), the nonvirt- guests included --------------------------
@pytest.mark.parametrize("name", ALL)
def test_guest_under_bt_matches_native(name):
    """Same console, CPU state as the guest sees it, guest memory and instruction count?"""
    img = build(name)
    nat, rn = run_native(img)
    bt, rb = run_bt(img)
    assert_equivalent(bt, rb, nat, rn)
    if img.expected is not None:
        assert bt.console == img.expected


@pytest.mark.parametrize("mode", [m for m in MODES if m != "default"])
@pytest.mark.parametrize("name", ["syscall", "ctxswitch", "selfmod", "pagefault",
                                  "nonvirt-popf", "nonvirt-sgdt"])
def test_every_mode_matches_native(name, mode):
    """Interpreting only, translating at once, a tiny cache, ahead-of-time translation: the
    same guest-visible result each time?"""
    img = build(name)
    nat, rn = run_native(img)
    bt, rb = run_bt(img, **MODES[mode])
    assert_equivalent(bt, rb, nat, rn)


@pytest.mark.parametrize("name", NONVIRT)
def test_nonvirt_guests_print_their_native_answer_under_bt_but_not_under_te(name):
    """The demonstrations that defeat trap-and-emulate: does binary translation fix them?"""
    img = build(name)
    bt, _ = run_bt(img)
    te = TrapAndEmulate(img)
    te.run(max_steps=MAX_STEPS)
    assert bt.console == img.expected
    assert te.console != img.expected


def test_bt_is_registered_under_its_short_name():
    assert MONITORS["bt"] is BinaryTranslation and BinaryTranslation.name == "bt"


# ---- who runs what --------------------------------------------------------------------------
def test_kernel_runs_deprivileged_and_never_on_the_real_cpu_directly():
    """At a kernel breakpoint: real ring 1, believed ring 0, and no kernel instruction was ever
    compiled by the host machine's own interpreter (only user code runs directly)."""
    img = build("syscall")
    bt = BinaryTranslation(img)
    bt.breakpoints.add(img.symbols["do_syscall"])
    r = bt.run(max_steps=MAX_STEPS)
    assert r.reason == "breakpoint" and bt.vcpu.eip == img.symbols["do_syscall"]
    assert bt.cpu.cpl == 1 and bt.vcpu.cpl == 0
    assert bt.cpu.cs == 0x09 and bt.vcpu.cs == 0x08
    host = bt.machine
    assert not host._icache_sup                       # the kernel is never run directly
    assert host._icache_usr                           # user code is
    bt.breakpoints.clear()
    assert bt.run(max_steps=MAX_STEPS).reason == "poweroff"


def test_instruction_trace_equals_natives_address_for_address():
    """With an instruction trace on (one instruction at a time), the same instructions in the
    same order as on the bare machine?"""
    img = build("syscall", iterations=20)
    seen = {}
    for monitor in (Native, BinaryTranslation):
        ev = []
        vm = monitor(img, trace=Trace(maxlen=10))
        vm.on("instruction", lambda e: ev.append((e.address, e.text)))
        assert vm.run(max_steps=MAX_STEPS).reason == "poweroff"
        seen[monitor.name] = ev
    assert seen["bt"] == seen["native"]


def test_single_steps_reach_the_same_end():
    img = build("hello")
    bt = BinaryTranslation(img)
    n = 0
    while bt.result is None and n < 100_000:
        bt.step()
        n += 1
    assert bt.result.reason == "poweroff" and bt.console == img.expected
    assert bt.vms[0].steps == run_native(img)[0].machine.steps


# ---- interpretation, the threshold, translation ----------------------------------------------
def test_syscall_path_is_translated_and_the_cache_hits():
    """The system-call path runs hundreds of times: translated, found in the cache far more
    often than missed, chained, with callouts for its sensitive instructions."""
    bt, _ = run_bt(build("syscall"))
    st = bt.stats
    assert st["translations"] > 0 and st["translated_instructions"] >= st["translations"]
    assert st["tc_hits"] > st["tc_misses"] > 0
    assert st["tc_lookups"] == st["tc_hits"] + st["tc_misses"]
    assert st["chained"] > st["tc_lookups"]
    assert st["callouts"] > SMALL["syscall"]["iterations"]     # the iretd of every call
    assert st["interpreted"] == 0          # the default translates on first execution (VMware)
    cyc = bt.cycles
    for cat in ("translate", "tc_lookup", "callout", "native"):
        assert cyc[cat] > 0, cat
    assert bt.trace.counts["translate"] == st["translations"]


def test_threshold_one_translates_on_first_execution():
    img = build("syscall")
    nat, rn = run_native(img)
    bt, rb = run_bt(img, threshold=1)
    assert bt.stats["interpreted"] == 0 and bt.stats["translations"] > 0
    assert bt.stats["tc_misses"] == bt.stats["translations"]
    assert_equivalent(bt, rb, nat, rn)


def test_huge_threshold_interprets_everything_and_translates_nothing():
    img = build("syscall")
    nat, rn = run_native(img)
    bt, rb = run_bt(img, threshold=10**9)
    st = bt.stats
    assert st["translations"] == 0 and st["tc_hits"] == 0 and st["chained"] == 0
    assert st["callouts"] == 0                     # sensitive ones are emulated by the interpreter
    # every kernel instruction was interpreted: all but the user's ran in the VMM
    assert st["interpreted"] == st["instructions"] - st["host_instructions"]
    assert bt.cycles["translate"] == 0 and bt.cycles["interpret"] > 0
    assert_equivalent(bt, rb, nat, rn)


def test_a_unit_is_translated_on_its_threshold_th_execution():
    """A kernel loop body: interpreted threshold - 1 times, translated when it runs again."""
    img = guests.from_source("""
_start:
    mov ecx, 10
1:  add eax, ecx
    dec ecx
    jnz 1b
    out 0xF4, al
""", name="loop")
    for threshold in (1, 2, 5):
        bt, r = run_bt(img, threshold=threshold)
        assert r.reason == "poweroff" and bt.vcpu.eax == 55
        body = bt.block_at(img.symbols["_start"] + 5)      # add, dec, jnz: run 9 times
        assert body is not None and body.n == 3
        # the units that run once (mov ... jnz, and out) are translated only at threshold 1;
        # the loop body is interpreted threshold - 1 times, then translated
        once = 0 if threshold == 1 else 4 + 1
        assert bt.stats["interpreted"] == once + 3 * (threshold - 1)
    assert 1 <= DEFAULT_THRESHOLD <= 50


def test_units_end_at_control_flow_or_after_twelve_instructions():
    img = guests.from_source("_start:\n" + "    inc eax\n" * 30 + "    out 0xF4, al\n",
                             name="straight")
    bt, _ = run_bt(img, threshold=1)
    sizes = [b.n for b in bt.blocks()]
    assert max(sizes) == MAX_BLOCK == 12
    assert sum(sizes) == 31            # 30 increments and the out (a callout ends its unit)
    for b in bt.blocks():
        assert all(i.mnemonic != "jmp" for i in b.insns[:-1])


def test_a_block_is_one_python_function_of_the_instructions_own_code():
    """Innocuous instructions are translated identically (the machine's own source), cli
    becomes inline emulation on the virtual CPU, out a callout at the end of the block."""
    img = guests.from_source("""
_start:
    cli
    mov eax, 7
    add eax, 5
    out 0xE9, al
    out 0xF4, al
""", name="ident")
    bt, r = run_bt(img, threshold=1)
    assert r.reason == "poweroff" and bt.vcpu.eax == 12
    b = bt.block_at(img.symbols["_start"])
    assert [k for k in b.kinds] == ["inline", "ident", "ident", "callout"]
    # one function made by the machine's block translator (vmkit.machine.blocks.build)
    assert b.source.startswith("def _blk(budget") and b.source.count("def ") == 1
    assert b.fn.__code__ is b.code and b.code.co_filename.startswith("<block 0x00001000")
    assert "_bt_vc0.IF = 0" in b.source
    assert "LZ_ADD" in b.source and "+ 5" in b.source       # the add's own code
    assert "port_out" not in b.source and "out" in b.listing()
    assert b.tail is not None and b.tail[0].mnemonic == "out"


# ---- the cache: size, policies, chaining ------------------------------------------------------
@pytest.mark.parametrize("policy", [FlushWhenFull, LRU, FIFO])
def test_tiny_cache_evicts_and_the_guest_does_not_notice(policy):
    img = build("syscall")
    nat, rn = run_native(img)
    bt, rb = run_bt(img, tc_size=3, policy=policy())
    st = bt.stats
    assert st["tc_blocks"] <= 3
    if policy is FlushWhenFull:
        assert st["tc_flushes"] > 0 and st["tc_evictions"] == 0
    else:
        assert st["tc_evictions"] > 0 and st["tc_flushes"] == 0
    assert st["translations"] > bt.stats["tc_blocks"] + 10      # retranslated again and again
    assert_equivalent(bt, rb, nat, rn)


def test_lookups_are_counted_in_the_trace_and_recorded_for_a_watcher():
    """Lookups are too frequent to record always: counted in the trace, made into TcLookup
    events only while someone watches (as the machine's TLB misses)."""
    img = build("syscall")
    quiet, _ = run_bt(img)
    assert quiet.trace.counts["tc_lookup"] == quiet.stats["tc_lookups"]
    assert not quiet.trace.of("tc_lookup")
    seen = []
    watched = BinaryTranslation(img)
    watched.on("tc_lookup", seen.append)
    watched.run(max_steps=MAX_STEPS)
    assert len(seen) == watched.stats["tc_lookups"] == watched.trace.counts["tc_lookup"]
    assert sum(e.hit for e in seen) == watched.stats["tc_hits"]


def test_each_monitor_works_on_its_own_copy_of_the_policy():
    policy = LRU()
    a, b = BinaryTranslation(build("hello"), policy=policy), \
        BinaryTranslation(build("hello"), policy=policy)
    assert a.policy is not b.policy and a.policy is not policy
    assert isinstance(a.policy, LRU)


def test_lru_and_fifo_choose_different_victims():
    lru, fifo = LRU(), FIFO()
    for p in (lru, fifo):
        for k in "abc":
            p.inserted(k)
        p.used("a")
    assert lru.victims() == ["b"] and fifo.victims() == ["a"]
    assert FlushWhenFull().victims() is None
    lru.removed("b")
    assert lru.victims() == ["c"]


def test_chained_blocks_skip_the_cache_lookup():
    """A hot kernel loop whose blocks are chained to each other: one lookup each, then they
    run straight into each other."""
    img = guests.from_source("""
_start:
    mov ecx, 1000
1:  add eax, ecx
    call f
    dec ecx
    jnz 1b
    out 0xF4, al
f:  inc ebx
    ret
""", name="chain")
    bt, r = run_bt(img)
    assert r.reason == "poweroff" and bt.vcpu.ebx == 1000
    st = bt.stats
    assert st["chained"] > 2500 and st["tc_lookups"] < 50


# ---- self-modifying code ---------------------------------------------------------------------
def test_selfmod_invalidates_translations_and_prints_the_right_sum():
    img = build("selfmod")
    seen = []
    bt = BinaryTranslation(img)
    bt.on("tc_invalidate", seen.append)
    assert bt.run(max_steps=MAX_STEPS).reason == "poweroff"
    assert bt.console == img.expected
    assert bt.stats["tc_invalidations"] > 0
    alt = img.symbols["alt_value"]
    assert any(e.address == alt and e.reason == "write" for e in seen)


def test_a_block_that_patches_its_own_next_instruction_runs_the_new_one():
    """The store and the patched instruction are in the same block: the rest of the block is
    stale at once (x86 keeps self-modifying code coherent)."""
    img = guests.from_source("""
_start:
    mov ecx, 5
    xor eax, eax
1:  mov byte ptr [patch + 1], 7     # the low byte of the add's immediate, right after
patch:
    add eax, 0x100                  # 05 00 01 00 00: becomes add eax, 0x107
    dec ecx
    jnz 1b
    out 0xF4, al
""", name="patch")
    nat = Native(img)
    nat.run(max_steps=1000)
    assert nat.machine.cpu.eax == 5 * 0x107
    for threshold in (1, 3):
        bt, r = run_bt(img, threshold=threshold)
        assert r.reason == "poweroff" and bt.vcpu.eax == 5 * 0x107
        assert bt.stats["tc_invalidations"] > 0


# ---- adaptation ------------------------------------------------------------------------------
def test_an_instruction_that_keeps_trapping_is_retranslated_as_a_callout():
    """ctxswitch reloads CR3 on every switch, so the kernel's first touch of each page after it
    is a hidden page fault, every time: those instructions are adapted, and trap no more."""
    img = build("ctxswitch")
    nat, rn = run_native(img)
    adaptive, ra = run_bt(img)
    plain, rp = run_bt(img, adapt_after=0)
    assert adaptive.stats["adaptations"] > 0 and plain.stats["adaptations"] == 0
    assert adaptive.stats["traps"] < plain.stats["traps"]
    assert adaptive.stats["hidden_page_faults"] < plain.stats["hidden_page_faults"]
    # an adapted instruction keeps faulting as IDENT code would (the first touch of the new
    # kernel stack after a switch), so it stays adapted: no instruction is adapted twice; its
    # soft-MMU access fills the shadow, so the instructions after it do not fault there
    # either, and with A&A's prices (callout 1,254; trap 1,630 + hidden fault) it pays
    assert adaptive.stats["adaptations"] == len(adaptive._adapted) <= 4
    p4 = CostModel.preset("p4-2006")
    assert sum(p4.price(adaptive.event_counts()).values()) \
        < sum(p4.price(plain.event_counts()).values())
    assert any("adapted" in b.kinds for b in adaptive.blocks())
    assert_equivalent(adaptive, ra, nat, rn)
    assert_equivalent(plain, rp, nat, rn)


# ---- interrupts at the native instruction ----------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_ticks_arrive_at_the_native_instruction(mode):
    """Timer ticks inside translated blocks, held while IF is clear, released by sti's shadow:
    every one reaches the kernel at the same guest instruction as on the bare machine?"""
    img = guests.from_source(OWN_KERNEL, name="own")
    nat = Native(img)
    native_ticks = []
    nat.on("interrupt", lambda e: native_ticks.append((e.step, e.eip)) if e.source == "irq"
           else None)
    rn = nat.run(max_steps=100_000)
    bt = BinaryTranslation(img, **MODES[mode])
    bt_ticks = []
    bt.on("reflect", lambda e: bt_ticks.append(e.step) if e.name == "irq 0" else None)
    rb = bt.run(max_steps=100_000)
    assert rn.reason == rb.reason == "poweroff"
    assert bt_ticks == [s for s, _ in native_ticks] and len(bt_ticks) > 20
    assert guest_state(bt.vcpu) == guest_state(nat.machine.cpu)
    assert digest(bt.vms[0].memory()) == digest(bytes(nat.machine.mem))
    assert (bt.vms[0].steps, bt.vms[0].clock) == (nat.machine.steps, nat.machine.clock)


# ---- static translation: the documented failure ----------------------------------------------
def test_static_sweep_decodes_the_syscall_table_as_code_and_loses_alignment():
    """The kernel keeps syscall_table (data) in .text. The linear sweep decodes it as
    instructions, so the handler after it, sys_exit, is no instruction boundary of the sweep,
    and sys_write, reached only through jmp [syscall_table + eax*4], lies inside a static block.
    The monitor falls back to dynamic translation there and counts it."""
    img = build("syscall")
    nat, rn = run_native(img)
    bt, rb = run_bt(img, static=True)
    assert_equivalent(bt, rb, nat, rn)                     # the fallback keeps it right
    sym = img.symbols
    table = sym["syscall_table"]
    starts = {a for a, _, _ in bt.static_sweep[0]}
    assert table in starts                                 # data decoded as an instruction
    assert sym["sys_exit"] not in starts                   # misaligned after the table
    st = bt.stats
    assert st["static_translations"] > 100 and st["static_misses"] > 0
    log = Counter()
    for (eip, why), n in bt.static_miss_log.items():
        log[eip] = why
    assert "computed jump" in log[sym["sys_write"]]
    # every later getpid call finds the dynamic translation: misses stay few
    assert st["static_misses"] < 10 and st["tc_hits"] > 10 * st["tc_misses"]


def test_static_translation_of_selfmod_is_dropped_when_the_code_is_written():
    img = build("selfmod")
    bt, r = run_bt(img, static=True)
    assert r.reason == "poweroff" and bt.console == img.expected
    why = {eip: w for (eip, w) in bt.static_miss_log}
    assert "code written" in why[img.symbols["alt_value"]]


# ---- several VMs -----------------------------------------------------------------------------
def test_several_vms_under_bt_each_print_their_solo_output():
    names = ["ctxswitch", "syscall", "selfmod", "nonvirt-pushcs"]
    solo = {}
    for n in names:
        b, _ = run_bt(build(n))
        solo[n] = (b.console, digest(b.vms[0].memory()), b.vms[0].steps)
    bt, r = run_bt(*(build(n) for n in names), slice=3000, tc_size=40)
    assert r.reason == "poweroff"
    assert bt.stats["world_switches"] > 0
    for n, vm in zip(names, bt.vms):
        assert vm.result.reason == "poweroff"
        assert (vm.console, digest(vm.memory()), vm.steps) == solo[n], n


# ---- cycles ----------------------------------------------------------------------------------
HOT = """
_start:
    mov ecx, %d
1:  imul eax, eax, 1103515245
    add eax, 12345
    mov [cell], eax
    call mix
    add edi, edx
    dec ecx
    jnz 1b
    out 0xF4, al
mix:
    mov edx, [cell]
    shr edx, 16
    ret
.data
cell: .long 0
"""


def test_translated_kernel_code_costs_native_cycles():
    """Each further iteration of a hot kernel loop costs under bt what it costs on the bare
    machine plus one translation-cache lookup for its ``ret`` (an indirect transfer: A&A):
    translated code runs at native speed and chaining spares the lookups of direct jumps; only
    the first executions (interpreted, translated) cost more."""
    cycles = {}
    for n in (500, 3000):
        img = guests.from_source(HOT % n, name="hot")
        nat = Native(img)
        nat.run(max_steps=MAX_STEPS)
        bt, _ = run_bt(img)
        assert bt.vcpu.edi == nat.machine.cpu.edi
        cycles[n] = (sum(nat.cycles.values()), sum(bt.cycles.values()))
    native_more = cycles[3000][0] - cycles[500][0]
    bt_more = cycles[3000][1] - cycles[500][1]
    assert bt_more == native_more + (3000 - 500) * bt.costs.tc_lookup   # one ret an iteration
    assert cycles[500][1] > cycles[500][0]              # the start-up is not free


def test_compute_costs_less_under_bt_than_under_te_but_for_translating():
    """bt traps less than te; what it adds is translating the kernel code it runs, at A&A's
    2,300 cycles an instruction (§6.3), paid once per block."""
    img = build("compute")
    nat, _ = run_native(img)
    bt, _ = run_bt(img)
    te = TrapAndEmulate(img)
    te.run(max_steps=MAX_STEPS)
    total = {m.name: sum(m.cycles.values()) for m in (nat, bt, te)}
    assert total["native"] < total["bt"] and total["native"] < total["te"]
    assert bt.cycles["translate"] == 2300 * bt.stats["translated_instructions"]
    assert total["bt"] - bt.cycles["translate"] < total["te"]
    assert bt.cycles["native"] >= 0.98 * nat.cycles["native"]


# ---- the handler table, failures -------------------------------------------------------------
def test_replacing_a_handler_changes_only_that_monitor():
    img = build("hello")
    bt = BinaryTranslation(img)
    seen = []

    def loud_lidt(vm, insn):
        seen.append(insn.address)
        BinaryTranslation.emulate["lidt"](vm, insn)
    bt.emulate["lidt"] = loud_lidt
    bt.run(max_steps=MAX_STEPS)
    assert len(seen) == 1 and bt.console == img.expected
    assert BinaryTranslation.emulate["lidt"] is not loud_lidt
    assert TrapAndEmulate.emulate["lidt"] is BinaryTranslation.emulate["lidt"]


def test_missing_handler_ends_the_vm_with_the_instruction_and_address():
    img = build("hello")
    bt = BinaryTranslation(img)
    del bt.emulate["lidt"]
    r = bt.run(max_steps=MAX_STEPS)
    assert r.reason == "crash"
    assert "lidt" in r.detail and f"{bt.vcpu.eip:#010x}" in r.detail
    assert r.instruction.startswith("lidt")


def test_snapshot_and_restore_replay_the_same_run():
    bt = BinaryTranslation(build("ctxswitch"))
    bt.run(max_steps=5000)
    snap = bt.snapshot()
    bt.run(max_steps=MAX_STEPS)
    first = (bt.console, digest(bt.vms[0].memory()), bt.vms[0].steps)
    bt.restore(snap)
    assert bt.stats["tc_blocks"] == 0                  # the cache starts over
    bt.run(max_steps=MAX_STEPS)
    assert (bt.console, digest(bt.vms[0].memory()), bt.vms[0].steps) == first


@pytest.mark.parametrize("kw", [{"threshold": 0}, {"threshold": 1.5}, {"tc_size": 0},
                                {"policy": "lru"}, {"adapt_after": -1}])
def test_bad_parameters_are_refused(kw):
    with pytest.raises(vmkit.VmkitError):
        BinaryTranslation(build("hello"), **kw)


def _bp_run(img, bp: int, stepwise: bool, **kw):
    """``img`` under bt with a breakpoint at ``bp``, run on (up to 4 stops) after each hit;
    ``stepwise``: with an ``until`` that never stops it, so every kernel instruction is a step
    of its own."""
    m = BinaryTranslation(img, **kw)
    m.breakpoints.add(bp)
    stops = []
    for _ in range(4):
        r = m.run(max_steps=60_000, until=(lambda mach: False) if stepwise else None)
        stops.append((r.reason, r.steps, r.eip))
        if r.reason != "breakpoint":
            break
    return stops, m.stats, m.cycles, m.trace.counts, list(m.trace), m.console


@pytest.mark.parametrize("name,kw", [("syscall", {}), ("ctxswitch", {}),
                                     ("kptemod", {"paging": "traced"})])
def test_breakpoint_runs_block_by_block_count_as_step_by_step(name, kw):
    """A kernel run careful only for breakpoints runs a translated block up to the next
    breakpoint in it (engine.run_kernel): the stops, statistics (TC lookups, hits, chains,
    adaptations), cycles and events are those of the run that takes every instruction as a
    step of its own, with a breakpoint inside a block and one at its start."""
    img = guests.build(name)
    m = BinaryTranslation(img, **kw)
    m.run(max_steps=20_000)
    longest = max(m.blocks(), key=lambda b: (b.n, b.eip))
    assert longest.n >= 3
    hits = 0
    for bp in (img.programs["kernel"].symbols["syscall_stub"], longest.insns[1].address,
               longest.insns[-1].address):
        fast, slow = _bp_run(img, bp, False, **kw), _bp_run(img, bp, True, **kw)
        assert fast == slow, (name, hex(bp))
        hits += sum(s[0] == "breakpoint" for s in fast[0])
    assert hits >= 4, (name, hits)
