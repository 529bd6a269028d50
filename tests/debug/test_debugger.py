"""The headless debugger (``vmkit.Debugger``, DESIGN.md): breakpoints, watchpoints and event
breaks under every monitor where they apply, hitting the same guest instruction as under
Native; reverse execution landing exactly where a forward run lands; the checkpoints' memory
budget; the live tables; ``vmkit debug`` on a script and on bad commands."""

from __future__ import annotations

import hashlib

import pytest

import vmkit
from vmkit import guests
from vmkit.cli import main
from vmkit.debug import Debugger
from vmkit.debug.memory import GuestView
from vmkit.errors import VmkitError
from vmkit.vmm import (BinaryTranslation, HardwareAssisted, Native, Paravirtual,
                       TrapAndEmulate)

MONITORS = {"native": Native, "te": TrapAndEmulate, "bt": BinaryTranslation,
            "hw": HardwareAssisted}
ALL = list(MONITORS)


def make(name: str, guest: str = "hello", **params):
    if name == "pv":
        return Paravirtual(guests.build(guest, paravirtual=True, **params))
    return MONITORS[name](guests.build(guest, **params))


def state(vm) -> tuple:
    """The guest-visible state (DESIGN.md "Equivalence"): registers, EIP, EFLAGS, control
    registers as the guest reads them, a hash of guest-physical memory, the console."""
    c = vm.vcpu
    gv = GuestView(vm)
    mem = gv.physical(0, gv.memory_size)
    return (tuple(c.regs), c.eip, c.eflags & 0x3F7FD5, c.cr0, c.cr3, c.cr4,
            hashlib.sha256(mem).hexdigest(), vm.console)


def hits(dbg, n: int, kind: str) -> list:
    out = []
    for _ in range(n):
        s = dbg.cont()
        if s.kind != kind:
            break
        out.append(s)
    return out


_native_cache: dict = {}


def native_hits(key, setup, n, kind, guest="hello", **params):
    """The first ``n`` hits under Native (cached: every monitor is compared with them)."""
    if key not in _native_cache:
        d = Debugger(make("native", guest, **params))
        setup(d)
        _native_cache[key] = [(s.step, s.eip) for s in hits(d, n, kind)]
    return _native_cache[key]


# ---- breakpoints --------------------------------------------------------------------------------
@pytest.mark.parametrize("monitor", ALL)
def test_breakpoint_on_a_symbol_hits_where_native_does(monitor):
    """Does break_at("sys_write") stop at the same guest instruction (step and EIP) under
    every monitor as under Native, each time, before the instruction runs?"""
    def setup(d):
        d.break_at("sys_write")
    want = native_hits("sys_write", setup, 3, "breakpoint")
    assert len(want) == 3
    d = Debugger(make(monitor))
    setup(d)
    got = hits(d, 3, "breakpoint")
    assert [(s.step, s.eip) for s in got] == want
    sym = d.monitor.vms[0].image.symbols["sys_write"]
    assert all(s.eip == sym == d.monitor.vcpu.eip or s.eip == sym for s in got)
    assert "sys_write" in str(got[0]) and got[0].text


@pytest.mark.parametrize("monitor", ["native", "te", "hw"])
def test_breakpoint_ring_and_condition_filters(monitor):
    """Does ring= keep only hits in that ring (the ring the guest believes it is in), and a
    condition on the vCPU keep only the hits where it holds?"""
    d = Debugger(make(monitor))
    d.break_at("sys_write", ring=3)          # kernel code never runs in ring 3
    assert d.cont().kind == "exited"
    d = Debugger(make(monitor))
    seen = []

    def eax_is_write(cpu):
        seen.append(cpu.eip)
        return cpu.regs[0] == 2               # SYS_WRITE

    d.break_at("syscall_stub", ring=0, condition=eax_is_write)
    s = d.cont()
    assert s.kind == "breakpoint" and s.ring == 0 and d.monitor.vcpu.regs[0] == 2
    assert seen and all(e == d.monitor.vms[0].image.symbols["syscall_stub"] for e in seen)


@pytest.mark.parametrize("monitor", ["native", "te", "bt", "hw"])
def test_physical_breakpoint_hits_where_the_linear_one_does(monitor):
    """Is a breakpoint on the guest-physical address of sys_write hit at the same step as the
    guest-linear one (the kernel is identity-mapped)?"""
    d = Debugger(make(monitor))
    sym = d.monitor.vms[0].image.symbols["sys_write"]
    d.break_at(sym, physical=True)
    s = d.cont()
    assert s.kind == "breakpoint" and s.point.physical
    assert (s.step, s.eip) == native_hits("sys_write", lambda d: d.break_at("sys_write"), 3,
                                          "breakpoint")[0]


def test_bad_breakpoints_say_what_is_wrong():
    d = Debugger(make("native"))
    with pytest.raises(VmkitError, match="unknown symbol 'sys_wrte'; did you mean 'sys_write'"):
        d.break_at("sys_wrte")
    with pytest.raises(VmkitError, match="ring must be"):
        d.break_at("sys_write", ring=5)
    with pytest.raises(VmkitError, match="vm must be a VM index"):
        d.break_at("sys_write", vm=3)
    with pytest.raises(VmkitError, match="no program 'helo'"):
        d.break_at("helo:_start")


# ---- watchpoints --------------------------------------------------------------------------------
def _watch_current(d):
    d.watch("current")


@pytest.mark.parametrize("monitor", ALL)
def test_write_watchpoint_names_values_and_writer_as_native(monitor):
    """Does a write watchpoint on the kernel's `current` stop after the same instructions as
    under Native, with the old and new values, the writing instruction, and "guest"?"""
    want = native_hits("current", _watch_current, 3, "watchpoint", guest="ctxswitch")
    d = Debugger(make(monitor, "ctxswitch"))
    _watch_current(d)
    got = hits(d, 3, "watchpoint")
    assert [(s.step, s.eip) for s in got] == want
    assert got[0].old_value == 0 and got[0].new_value != 0
    assert got[1].old_value == got[0].new_value
    assert all(s.who == "guest" and "[0x20a4]" in s.how for s in got)
    assert d.read(d.monitor.vms[0].image.symbols["current"], 4) == got[-1].new


@pytest.mark.parametrize("monitor", ALL)
def test_page_table_entry_written_by_guest_then_mmu_or_vmm(monitor):
    """Watching a guest PTE (guest-physical): the kernel writes it (guest), then the accessed
    and dirty bits are set by the MMU's walk natively and under EPT, but by the VMM's shadow
    pager under shadow paging (te, bt): the same steps everywhere."""
    d = Debugger(make(monitor, "ptemod", iterations=2))
    d.watch(0x201000, physical=True)
    got = hits(d, 4, "watchpoint")
    assert [(s.old_value, s.new_value) for s in got] == [
        (0xAAAAAAAA, 0), (0, 0x100007), (0x100007, 0x100027), (0x100027, 0x100067)]
    assert [s.who for s in got[:2]] == ["guest", "guest"]
    shadow = monitor in ("te", "bt")
    assert {s.who for s in got[2:]} == {"vmm" if shadow else "mmu"}
    native = native_hits("pte", lambda d: d.watch(0x201000, physical=True), 4, "watchpoint",
                         guest="ptemod", iterations=2)
    assert [(s.step, s.eip) for s in got] == native


def test_pv_page_table_write_is_the_vmm_serving_a_hypercall():
    """Under pv the guest's page tables are the real ones and read-only to it: a PTE changes
    when the VMM serves mmu_update. Is the writer "vmm" and the hypercall named?"""
    from vmkit.viz.memory import translation_walk
    probe = Debugger(make("pv", "ptemod", iterations=2))
    probe.break_on("hypercall", name="mmu_update")
    assert probe.cont().kind == "event" and probe.cont().kind == "event"   # the heap mapped
    pte_gpa = translation_walk(probe.monitor, 0x00800000).guest[-1][1]
    d = Debugger(make("pv", "ptemod", iterations=2))
    d.watch(pte_gpa, physical=True)
    got = hits(d, 6, "watchpoint")
    by_hypercall = [s for s in got if s.who == "vmm"]
    assert by_hypercall and all("hypercall mmu_update" in s.how for s in by_hypercall)


@pytest.mark.parametrize("monitor", ["te", "hw"])
def test_read_watchpoint_stops_after_the_reading_instruction(monitor):
    """Does a read watchpoint stop after the instruction that read the bytes (named), at the
    same instruction as under Native; and does "rw" stop at the first of a read or a write?"""
    def setup(d):
        d.watch("current", on="read")
    want = native_hits("read-current", setup, 2, "watchpoint", guest="ctxswitch")
    d = Debugger(make(monitor, "ctxswitch"))
    setup(d)
    got = hits(d, 2, "watchpoint")
    assert [(s.step, s.eip) for s in got] == want
    assert all(s.access == "read" and "[0x20a4]" in s.how for s in got)
    writes = native_hits("current", _watch_current, 3, "watchpoint", guest="ctxswitch")
    d = Debugger(make(monitor, "ctxswitch"))
    d.watch("current", on="rw")
    assert d.cont().step == min(want[0][0], writes[0][0])


def test_watchpoint_arguments_are_checked():
    d = Debugger(make("native"))
    with pytest.raises(VmkitError, match="on must be 'write', 'read' or 'rw'"):
        d.watch("current", on="exec")
    with pytest.raises(VmkitError, match="size must be between 1 and 4096"):
        d.watch("current", size=0)


# ---- event breaks -------------------------------------------------------------------------------
#: (kind, filter, monitors where the event exists) -- Native has interrupts, ring changes, I/O
EVENT_CASES = [
    ("interrupt", {"vector": 0x80}, ALL),
    ("ring", {"to_ring": 3}, ALL),
    ("io", {"port": 0xE9}, ALL),
]


@pytest.mark.parametrize("kind, filt, monitors", EVENT_CASES, ids=[c[0] for c in EVENT_CASES])
def test_event_break_hits_where_native_does(kind, filt, monitors):
    """Does an event break on an event Native has too stop at the same guest instruction
    under every monitor?"""
    want = native_hits(f"ev-{kind}", lambda d: d.break_on(kind, **filt), 2, "event")
    assert len(want) == 2
    for monitor in monitors:
        d = Debugger(make(monitor))
        d.break_on(kind, **filt)
        got = hits(d, 2, "event")
        assert [(s.step, s.eip) for s in got] == want, monitor
        assert all(s.event.kind == kind for s in got)


@pytest.mark.parametrize("monitor, kind, filt, check", [
    ("te", "reflect", {"vector": 0x80}, lambda e: e.vector == 0x80),
    ("te", "emulate", {"mnemonic": "cli"}, lambda e: e.mnemonic == "cli"),
    ("te", "hidden_page_fault", {}, None),
    ("bt", "tc_miss", {}, None),
    ("bt", "translate", {}, lambda e: e.instructions > 0),
    ("hw", "vm_exit", {"reason": "CR_ACCESS"}, lambda e: e.name == "CR_ACCESS"),
    ("pv", "hypercall", {"name": "mmu_update"}, lambda e: e.name == "mmu_update"),
])
def test_monitor_event_breaks(monitor, kind, filt, check):
    """Does each monitor's own event stop the debugger, with the filter applied?"""
    params = {"iterations": 2} if monitor in ("te", "pv") else {}
    d = Debugger(make(monitor, "ptemod" if params else "hello", **params))
    d.break_on(kind, **filt)
    s = d.cont()
    assert s.kind == "event", s
    if check is not None:
        assert check(s.event)
    before = getattr(d.monitor, "hidden_page_faults", None)
    assert d.cont().step > s.step
    if kind == "hidden_page_fault":
        assert d.monitor.hidden_page_faults > before


def test_bt_invalidation_and_world_switch():
    """Self-modifying code invalidates a translation under bt; two VMs under te switch."""
    d = Debugger(make("bt", "selfmod"))
    d.break_on("tc_invalidate")
    s = d.cont()
    assert s.kind == "event" and s.event.kind == "tc_invalidate"
    two = TrapAndEmulate(guests.build("hello"), guests.build("hello"))
    d = Debugger(two)
    d.break_on("world_switch", to_vm=1)
    s = d.cont()
    assert s.kind == "event" and s.event.to_vm == 1 and two.current == 1
    d.delete()
    d.break_at("sys_write", vm=1)               # both VMs run the same kernel
    s = d.cont()
    assert s.kind == "breakpoint" and s.vm == 1 == two.current
    assert s.eip == two.vms[1].image.symbols["sys_write"]


def test_bad_event_breaks_say_what_is_wrong():
    d = Debugger(make("native"))
    with pytest.raises(VmkitError, match="unknown event kind 'vm_exti'.*did you mean 'vm_exit'"):
        d.break_on("vm_exti")
    with pytest.raises(VmkitError, match="vm_exit events have no field 'reasn'.*'reason'"):
        d.break_on("vm_exit", reasn="CR_ACCESS")
    with pytest.raises(VmkitError, match="has no hidden page faults"):
        d.break_on("hidden_page_fault")
    with pytest.raises(VmkitError, match="hole events have no field 'txt'.*'text'"):
        d.break_on("hole", txt="popfd")


# ---- reverse execution --------------------------------------------------------------------------
@pytest.mark.parametrize("monitor, setup", [
    ("native", lambda d: d.break_at("sys_write")),
    ("te", lambda d: d.break_at("sys_write")),
    ("hw", lambda d: d.break_on("interrupt", vector=0x80)),
    ("bt", lambda d: d.watch("current")),
    ("pv", lambda d: d.break_at("sys_write", ring=0)),
], ids=["native-break", "te-break", "hw-event", "bt-watch", "pv-break"])
def test_reverse_continue_lands_on_the_previous_hit_exactly(monitor, setup):
    """After three hits, does reverse_continue land on the second and then the first, in
    exactly the state a forward run to that step reaches (and at step 0 after that)?"""
    guest = "ctxswitch" if monitor == "bt" else "hello"
    d = Debugger(make(monitor, guest))
    setup(d)
    got = hits(d, 3, {"native": "breakpoint", "te": "breakpoint", "hw": "event",
                      "bt": "watchpoint", "pv": "breakpoint"}[monitor])
    assert len(got) == 3
    for want in (got[1], got[0]):
        back = d.reverse_continue()
        assert (back.kind, back.step, back.eip) == (want.kind, want.step, want.eip)
        fresh = make(monitor, guest)
        fresh.run(max_steps=want.step)
        assert state(d.monitor) == state(fresh)
    assert d.reverse_continue().kind == "start" and d.position == 0
    assert state(d.monitor) == state(make(monitor, guest))
    assert d.cont().step == got[0].step          # and forward again


def test_reverse_continue_searches_what_was_stepped_over():
    """Stretches run by step() (not searched) are searched again going back: the previous
    hit is found even when the point was set after passing it."""
    d = Debugger(make("te", "ctxswitch"))
    d.search_window = 5                          # windows of 5, 10, 20 ... instructions
    d.step(9000)
    d.watch("current")
    back = d.reverse_continue()
    fresh = make("te", "ctxswitch")
    fresh.run(max_steps=back.step)
    assert state(d.monitor) == state(fresh)
    ref = Debugger(make("te", "ctxswitch"))
    ref.watch("current")
    forward = []
    while True:
        s = ref.cont(max_steps=9000 - ref.position)
        if s.kind != "watchpoint":
            break
        forward.append(s.step)
    assert back.kind == "watchpoint" and back.step == forward[-1]


def test_reverse_step_and_budget():
    """Is reverse_step exact, and do checkpoints stay within a small budget while a long run
    still goes back exactly?"""
    assert Debugger(make("native")).budget == 64 << 20          # the default
    vm = make("native", "ctxswitch")
    d = Debugger(vm, budget=5 << 20, checkpoint_every=1000)
    d.step(20_000)
    assert d.timeline.used <= 5 << 20
    assert len(d.timeline.checkpoints) > 3          # pages shared: many fit in 5 MiB
    d.reverse_step(12_345)
    fresh = make("native", "ctxswitch")
    fresh.run(max_steps=20_000 - 12_345)
    assert d.position == 7655 and state(vm) == state(fresh)
    d.budget = 4 << 20 | 600 << 10
    assert d.timeline.used <= d.budget
    with pytest.raises(VmkitError, match="smaller than one snapshot"):
        Debugger(make("native"), budget=16 << 10)


def test_debugger_is_exported_from_vmkit():
    assert vmkit.Debugger is Debugger


# ---- live tables --------------------------------------------------------------------------------
def test_live_tables_show_the_guest_and_the_real_tables():
    """Under te the real GDT is the VMM's (kernel descriptors pushed to DPL 1), the guest's
    has DPL 0; the walk numbers the shadow walk's references; the hex view marks watched
    bytes; VMCS and translation block exist only under hw and bt."""
    from vmkit.viz import live
    from vmkit.viz.memory import translation_walk
    te = make("te", "ptemod", iterations=2)
    te.run(max_steps=9000)
    guest = live.descriptor_table(te, "gdt")
    real = live.descriptor_table(te, "gdt", real=True)
    assert [r[6] for r in guest.rows[:2]] == ["0", "0"]
    assert [r[6] for r in real.rows[:2]] == ["1", "1"]
    assert "sgdt" in real.note and "<table" in real.to_html() and "--jp-" in real.to_html()
    idt = live.descriptor_table(te, "idt")
    assert any(r[3] == "syscall_stub" for r in idt.rows)
    walk = live.walk_table(te, 0x400000)
    w = translation_walk(te, 0x400000)
    assert [r[0] for r in walk.rows[:len(w.refs)]] == [str(r.n) for r in w.refs]
    assert "shadow" in walk.title
    tss = live.tss_table(te)
    assert [r[0] for r in tss.rows][:3] == ["link", "esp0", "ss0"]
    hexv = live.hex_view(te, 0x20a0, 32, watched=[(0x20a4, 4)])
    assert {(0, 5), (0, 6), (0, 7), (0, 8)} <= hexv.marks and "^^" in hexv.to_text()
    with pytest.raises(VmkitError, match="only under hw"):
        live.vmcs_table(te)
    with pytest.raises(VmkitError, match="only under bt"):
        live.tc_block_table(te)
    hw = make("hw")
    hw.run(max_steps=8000)
    v = live.vmcs_table(hw)
    assert any(r[1] == "exit reason" and "CR_ACCESS" in r[2] or r[1] == "exit reason"
               for r in v.rows)
    bt = make("bt")
    bt.run(max_steps=8000)
    blk = bt.blocks()[0]
    inside = blk.insns[1].address
    tc = live.tc_block_table(bt, inside)
    assert [r[0] for r in tc.rows] == [f"{i.address:#010x}" for i in blk.insns]
    assert tc.marked == {1} and f"{blk.eip:#010x}" in tc.title
    assert "no translated block" in live.tc_block_table(bt, 0x1000).note


# ---- the command line ----------------------------------------------------------------------------
SCRIPT = """\
# who writes `current`, and when?
watch current
continue
continue
reverse-continue
info gdt real
info tab 0x400000
x current 8
info points
"""


def test_cli_runs_a_script(tmp_path, capsys):
    f = tmp_path / "session.dbg"
    f.write_text(SCRIPT)
    assert main(["debug", "ctxswitch", "--monitor", "te", "-x", str(f)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "watchpoint 1 (write) on 4 bytes at current"
    assert lines[1].startswith("watchpoint 1 (write) on 4 bytes at current: 0x00000000 -> ")
    assert lines[3] == lines[1]                 # reverse-continue: back on the first hit
    assert "real GDT at 0xffc00000" in out and "shadow walk of 0x00400000" in out
    assert "^^" in out and "(hit 2×)" in out


@pytest.mark.parametrize("script, message", [
    ("step 3\ncontineu\n", "s.dbg:2: unknown command 'contineu'; did you mean 'continue'?"),
    ("break sys_wrte\n", "s.dbg:1: unknown symbol 'sys_wrte'; did you mean 'sys_write'?"),
    ("watch current 4 sideways\n", "s.dbg:1: usage: watch WHERE"),
    ("info gdtt\n", "s.dbg:1: info takes gdt"),
    ("step -2\n", "s.dbg:1: N must be positive"),
    ("info vmcs\n", "s.dbg:1: there is no VMCS under the native monitor (only under hw)"),
    ("break-on vm_exit reasn=1\n", "s.dbg:1: vm_exit events have no field 'reasn'"),
])
def test_cli_bad_commands_give_one_line_naming_the_line(tmp_path, capsys, script, message):
    f = tmp_path / "s.dbg"
    f.write_text(script)
    assert main(["debug", "hello", "-x", str(f)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.strip().endswith(message) or message in err, err
    assert "Traceback" not in err


def test_cli_bad_guest_and_missing_script(tmp_path, capsys):
    assert main(["debug", "helo"]) == 1
    assert "did you mean" in capsys.readouterr().err
    assert main(["debug", "hello", "-x", str(tmp_path / "none.dbg")]) == 1
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("monitor", ["te", "native"])
def test_continue_from_a_breakpoint_whose_instruction_takes_a_hidden_fault(monitor):
    """Under te the first instruction of the user program takes a hidden page fault that the
    VMM serves before it runs (0 instructions later, the monitor stops at the breakpoint
    again): does continue go on from it rather than report it twice?"""
    d = Debugger(make(monitor))
    d.break_at("hello:_start")
    first = d.cont()
    assert first.kind == "breakpoint"
    assert d.cont().kind == "exited"
    assert d.reverse_continue().step == first.step


def test_cli_reads_commands_from_standard_input(monkeypatch, capsys):
    """Without -x the commands come from standard input (a pipe: no prompt); a bad one
    names its line and ends the session with exit code 1."""
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("break sys_write\ncontinue\ninfo registers\n"
                                                 "quit\n"))
    assert main(["debug", "hello", "--monitor", "hw"]) == 0
    out = capsys.readouterr().out
    assert "breakpoint 1 at sys_write" in out and "hit at step" in out and "eip=000013da" in out
    monkeypatch.setattr("sys.stdin", io.StringIO("step\nwatch\n"))
    assert main(["debug", "hello"]) == 1
    assert capsys.readouterr().err.strip() == "<stdin>:2: usage: watch WHERE [SIZE] " \
                                              "[write|read|rw] [physical]"


def test_a_breakpoint_where_a_chunk_of_the_run_ends_is_hit():
    """A run never looks at its first instruction: is a breakpoint reached exactly where
    one chunk of cont's run ends (and the next begins) still hit, with or without event
    breaks?"""
    ref = Debugger(make("native"))
    ref.break_at("sys_write")
    want = ref.cont().step
    for events in (False, True):
        d = Debugger(make("native"), checkpoint_every=want)    # the first chunk ends there
        d.break_at("sys_write")
        if events:
            d.break_on("io", port=0x1234)                      # never happens
        s = d.cont()
        assert (s.kind, s.step) == ("breakpoint", want)
        assert d.points[0].hits == 1


def test_a_linear_watchpoint_reports_its_page_being_mapped():
    """Watching a guest-linear address of the demand-paged heap: is the page becoming mapped
    (and unmapped when paging starts) reported as such, then the guest's store as a write?"""
    d = Debugger(make("te", "ptemod", iterations=2))
    d.watch(0x00800000)
    got = hits(d, 3, "watchpoint")
    assert [s.who for s in got] == ["mapping", "mapping", "guest"]
    assert got[1].old is None and got[1].new is not None and "became mapped" in got[1].how
    assert "(not mapped)" in str(got[1]) and got[2].new_value == 1


# ---- what the Stepper's Run goes through ---------------------------------------------------

def test_trap_group_stops_at_the_first_event_of_any_trap_kind():
    """Under trap-and-emulate, does break_on("trap") stop at the first interrupt, reflection,
    emulation, VM exit or hypercall: where a break on that event's own kind stops?"""
    d = Debugger(make("te"))
    d.break_on("trap")
    stop = d.cont()
    assert stop.kind == "event" and stop.event.kind in vmkit.debug.debugger.TRAP_KINDS
    alone = Debugger(make("te"))
    alone.break_on(stop.event.kind)
    assert alone.cont().step == stop.step
    with pytest.raises(VmkitError, match="no field 'vectr'"):
        d.break_on("trap", vectr=3)


def test_cont_until_points_are_for_one_run_and_resume_false_counts_the_breakpoint_here():
    """Does cont(until=[ring break]) stop at the ring change without leaving a hit for
    reverse_continue, and does resume=False stop at a breakpoint at the current position
    (a run carried on in slices) while a plain cont steps over it?"""
    d = Debugger(make("native"))
    stop = d.cont(until=[d.make_event_break("ring")])
    assert stop.kind == "event" and stop.event.kind == "ring" and stop.event.to_ring == 3
    assert not d.points and d.hits == []
    assert d.reverse_continue().kind == "start"
    d.break_at("print")
    first = d.cont()
    assert first.kind == "breakpoint"
    over = d.cont(1)                                  # continued from it: steps over it
    assert (over.kind, over.step) == ("max_steps", first.step + 1)
    d.goto(first.step)
    again = d.cont(10, resume=False, checkpoint=False)
    assert (again.kind, again.step) == ("breakpoint", first.step)
