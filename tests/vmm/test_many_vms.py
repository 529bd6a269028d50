"""Many VMs on one CPU: schedulers on machine time (round robin, credit), priced world switches,
the timeline picture, slowdown and jitter with a timer on machine time, and isolation."""

from __future__ import annotations

import pytest

import vmkit
from vmkit import guests
from vmkit.errors import VmkitError
from vmkit.vmm import MONITORS, CostModel, TrapAndEmulate
from vmkit.vmm.sched import CreditScheduler, RoundRobin, machine_time
from vmkit.vmm.sharing import sharing_experiment
from vmkit.viz.render import figure_svg
from vmkit.viz.vmtimeline import sharing_figure, vm_intervals, vm_timeline
from equivalence import MAX_STEPS, build, digest

MULTI = ("te", "bt", "hw")
NAMES = ("ctxswitch", "syscall", "compute")


def run(monitor, *imgs, **kw):
    mon = MONITORS[monitor](*imgs, **kw)
    r = mon.run(max_steps=MAX_STEPS * len(imgs))
    return mon, r


_SOLO: dict = {}


def solo(monitor, name):
    """A guest's console, memory and guest time when it runs alone under ``monitor``."""
    if (monitor, name) not in _SOLO:
        mon, r = run(monitor, build(name))
        assert r.reason == "poweroff"
        vm = mon.vms[0]
        _SOLO[monitor, name] = (vm.console, digest(vm.memory()), vm.steps)
    return _SOLO[monitor, name]


# ---- schedulers keep equivalence (the guest-time timer) -------------------------------------
@pytest.mark.parametrize("monitor", MULTI)
@pytest.mark.parametrize("sched", [dict(scheduler="round-robin", quantum=20_000),
                                   dict(scheduler="credit", weights=[3, 1, 2], quantum=20_000),
                                   dict(scheduler=CreditScheduler(weights=[1, 2, 1],
                                                                  quantum=15_000))],
                         ids=["round-robin", "credit", "credit-object"])
def test_each_vm_prints_its_solo_output(monitor, sched):
    mon, r = run(monitor, *(build(n) for n in NAMES), **sched)
    assert r.reason == "poweroff"
    assert mon.world_switches > 3
    for n, vm in zip(NAMES, mon.vms):
        assert vm.result.reason == "poweroff", (n, vm.result)
        assert (vm.console, digest(vm.memory()), vm.steps) == solo(monitor, n), n


def test_default_is_the_old_instruction_slice_round_robin():
    te = TrapAndEmulate(build("hello"), build("hello"))
    assert te.scheduler is None and te.slice > 0
    te2 = TrapAndEmulate(build("hello"), build("hello"), scheduler="round-robin")
    assert isinstance(te2.scheduler, RoundRobin)
    te3 = TrapAndEmulate(build("hello"), build("hello"), weights=[2, 1])
    assert isinstance(te3.scheduler, CreditScheduler) and te3.scheduler.weights == [2, 1]


def test_bad_scheduler_arguments():
    img = build("hello")
    with pytest.raises(VmkitError):
        TrapAndEmulate(img, img, scheduler="lottery")
    with pytest.raises(VmkitError):
        TrapAndEmulate(img, img, scheduler="credit", weights=[1, 2, 3])
    with pytest.raises(VmkitError):
        TrapAndEmulate(img, img, scheduler="credit", weights=[1, 0])
    with pytest.raises(VmkitError):
        TrapAndEmulate(img, img, scheduler="round-robin", quantum=0)
    with pytest.raises(VmkitError):
        TrapAndEmulate(img, img, scheduler="round-robin", weights=[1, 1])


def test_a_scheduler_object_is_copied():
    s = CreditScheduler(weights=[1, 1])
    a = TrapAndEmulate(build("hello"), build("hello"), scheduler=s)
    a.run(max_steps=MAX_STEPS)
    assert s.credits == [] and a.scheduler is not s


# ---- credit: proportional share -------------------------------------------------------------
@pytest.mark.parametrize("monitor", MULTI)
def test_credit_3_to_1_gives_the_heavy_vm_three_times_the_machine_time(monitor):
    # long enough that the boot's exits (6,120 cycles each with p4-2006, A&A Table 1, and 5,000
    # of the VMM's own software) and, under bt, translating the boot code on first execution
    # (2,300 cycles an instruction, §6.3) weigh little next to the shares the scheduler gives
    n = 60_000 if monitor == "te" else 150_000
    imgs = [guests.build("compute", iterations=n, timer_period=0) for _ in range(2)]
    mon = MONITORS[monitor](*imgs, scheduler="credit", weights=[3, 1], quantum=10_000)
    first_stop = []
    mon.on("stop", lambda ev: first_stop or first_stop.append(machine_time(mon)))
    mon.run(max_steps=MAX_STEPS)
    assert [vm.result.reason for vm in mon.vms] == ["poweroff", "poweroff"]
    cut = first_stop[0]
    runs, _ = vm_intervals(mon)
    share = [sum(max(0.0, min(e, cut) - s) for v, s, e in runs if v == k) for k in (0, 1)]
    assert 2.5 < share[0] / share[1] < 3.5, share


def test_round_robin_shares_equally():
    imgs = [guests.build("compute", iterations=20_000, timer_period=0) for _ in range(2)]
    mon = TrapAndEmulate(*imgs, scheduler="round-robin", quantum=10_000)
    first_stop = []
    mon.on("stop", lambda ev: first_stop or first_stop.append(machine_time(mon)))
    mon.run(max_steps=MAX_STEPS)
    runs, _ = vm_intervals(mon)
    share = [sum(max(0.0, min(e, first_stop[0]) - s) for v, s, e in runs if v == k)
             for k in (0, 1)]
    assert 0.8 < share[0] / share[1] < 1.25, share


# ---- world switches are priced --------------------------------------------------------------
@pytest.mark.parametrize("monitor", MULTI)
def test_world_switches_are_priced_and_counted(monitor):
    imgs = [build("compute"), build("syscall")]
    mon, _ = run(monitor, *imgs, scheduler="round-robin", quantum=20_000)
    n = mon.world_switches
    assert n > 0
    assert mon.stats["world_switches"] == n == mon.trace.counts["world_switch"]
    assert mon.cycles["world_switch"] == n * mon.costs.world_switch
    assert len(mon.switch_log) == n
    times = [t for t, _, _ in mon.switch_log]
    assert times == sorted(times) and times[-1] < sum(mon.cycles.values())
    dear = MONITORS[monitor](*imgs, scheduler="round-robin", quantum=20_000,
                             costs=CostModel().with_(world_switch=50_000))
    dear.run(max_steps=MAX_STEPS * 2)
    assert dear.cycles["world_switch"] == dear.world_switches * 50_000


def test_world_switch_events_carry_machine_time():
    mon, _ = run("te", build("compute"), build("compute"), scheduler="round-robin",
                 quantum=20_000)
    evs = mon.trace.of("world_switch")
    assert evs and all(e.machine_time > 0 for e in evs)
    assert [e.machine_time for e in evs] == [t for t, _, _ in mon.switch_log][-len(evs):]


# ---- the timeline ---------------------------------------------------------------------------
def test_timeline_has_one_lane_per_vm():
    mon, _ = run("te", *(build(n) for n in NAMES), scheduler="round-robin", quantum=20_000)
    fig = vm_timeline(mon)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 3 and all(f"VM {k}" in labels[k] for k in range(3))
    assert ax.get_title()
    runs, switches = vm_intervals(mon)
    assert {v for v, _, _ in runs} == {0, 1, 2}
    assert len(switches) == mon.world_switches
    svg = figure_svg(fig)
    assert svg == figure_svg(vm_timeline(mon)) and "<title>" in svg
    # legacy instruction slices: drawn from the same log
    old, _ = run("hw", build("compute"), build("syscall"), slice=3000)
    assert len(vm_timeline(old).axes[0].get_yticklabels()) == 2


# ---- slowdown and jitter with the timer on machine time -------------------------------------
@pytest.mark.parametrize("monitor", ["te", "hw"])
def test_sharing_slows_a_vm_and_makes_its_timer_jitter(monitor):
    rows = sharing_experiment("compute", counts=(1, 2, 4, 8), monitor=monitor,
                              iterations=10_000, timer_period=50_000)
    assert [r["vms"] for r in rows] == [1, 2, 4, 8]
    prog = [r["progress_per_mcycle"] for r in rows]
    assert all(a > b for a, b in zip(prog, prog[1:])), prog
    assert prog[0] > 4 * prog[-1]
    assert all(r["results"] == ["poweroff"] * r["vms"] for r in rows)
    assert all(r["tick_stdev"] > 0 for r in rows[1:])
    assert max(r["tick_max"] - r["tick_min"] for r in rows[1:]) > 0
    # descheduled, a VM's timer expires again and again, but one IRQ 0 stays pending: ticks lost
    assert all(r["expiries"] == r["ticks"] + r["lost_ticks"] for r in rows)
    assert rows[-1]["lost_ticks"] > rows[-1]["ticks"]
    fig = sharing_figure(rows)
    assert fig._suptitle.get_text() and len(fig.axes) == 2


def test_machine_timer_without_sharing_keeps_running():
    img = build("ctxswitch", timer_period=20_000)
    mon = TrapAndEmulate(img, machine_timer=True)
    r = mon.run(max_steps=MAX_STEPS)
    assert r.reason == "poweroff" and mon.vms[0].tick_steps


# ---- the guest's side: guests.build(..., timer_clock="machine") -----------------------------
def test_timer_clock_is_guest_or_machine():
    """Does build() take only the two clocks, and default to guest time?"""
    assert guests.build("hello").timer_clock == "guest"
    assert guests.build("hello", timer_clock="machine").timer_clock == "machine"
    for bad in ("wall", "Machine", None, 1):
        with pytest.raises(VmkitError, match="'guest', 'machine'"):
            guests.build("hello", timer_clock=bad)
    img = build("hello")
    img.timer_clock = "host"                       # an image edited by hand: the monitor says
    with pytest.raises(VmkitError, match="VM 1: timer_clock"):
        TrapAndEmulate(build("hello"), img)


def _ticking(clock="guest"):
    return guests.build("compute", iterations=10_000, timer_period=20_000, timer_clock=clock)


@pytest.mark.parametrize("monitor", MULTI)
def test_timer_clock_machine_is_machine_timer_for_that_vm_only(monitor):
    """Does an image built with timer_clock="machine" get the machine-time timer of
    machine_timer=True, while the VM beside it keeps its guest-time timer (and so its solo
    run)?"""
    sched = dict(scheduler="round-robin", quantum=20_000)
    mixed, _ = run(monitor, _ticking("machine"), _ticking(), **sched)
    assert mixed.timer_clocks == ["machine", "guest"] and mixed.machine_timer
    both, _ = run(monitor, _ticking(), _ticking(), machine_timer=True, **sched)
    assert both.timer_clocks == ["machine", "machine"]
    alone, _ = run(monitor, _ticking())
    m, g = mixed.vms
    assert m.result.reason == g.result.reason == "poweroff"
    # the guest-time VM: a tick every 20 000 of its instructions, and the same run as alone
    assert len(g.tick_steps) >= 2
    assert {b - a for a, b in zip(g.tick_steps, g.tick_steps[1:])} == {20_000}
    assert (g.console, digest(g.memory()), g.steps) == (
        alone.vms[0].console, digest(alone.vms[0].memory()), alone.vms[0].steps)
    # the machine-time VM: ticks come faster than every 20 000 of its own instructions,
    # and irregularly (it was descheduled between some of them)
    gaps = [b - a for a, b in zip(m.tick_steps, m.tick_steps[1:])]
    assert len(m.tick_steps) > len(g.tick_steps) and min(gaps) < 20_000
    assert len(set(gaps)) > 1
    # the monitor-wide switch still works, and wins over an image's "guest"
    assert all(len(vm.tick_steps) > len(g.tick_steps) for vm in both.vms)
    plain, _ = run(monitor, _ticking(), _ticking(), **sched)
    assert plain.timer_clocks == ["guest", "guest"] and not plain.machine_timer


def test_native_ignores_timer_clock():
    """Under Native (one VM, no VMM, no sharing) is a machine-clock timer the guest clock?"""
    from vmkit.vmm import Native
    runs = []
    for clock in ("guest", "machine"):
        n = Native(_ticking(clock))
        r = n.run(max_steps=MAX_STEPS)
        assert r.reason == "poweroff"
        runs.append((n.console, n.stats["instructions"], digest(n.vms[0].machine.read(0, 4 << 20))))
    assert runs[0] == runs[1]


# ---- isolation ------------------------------------------------------------------------------
VANDAL = """
# Prints one character, reprograms its timer and interrupt controller, writes 0x5A over all
# of its memory outside its code and far beyond its end, then triple-faults.
.equ MEM, 0x100000
.text
_start:
    mov al, 'X'
    out 0xE9, al
    mov eax, 1
    out 0x40, eax                   # timer period 1
    mov al, 0
    out 0x21, al                    # unmask every line
    mov al, 0x20
    out 0x20, al                    # a stray EOI
    cld
    mov eax, 0x5A5A5A5A
    xor edi, edi
    mov ecx, 0x1000 / 4
    rep stosd
    mov edi, offset code_end
    mov ecx, MEM
    sub ecx, edi
    shr ecx, 2
    rep stosd
    mov ebx, MEM
1:  mov dword ptr [ebx], eax        # past the end: another VM's slice in host memory
    add ebx, 0x8000
    cmp ebx, MEM + 0x1000000
    jb 1b
    lidt [null_idt]
    xor edx, edx
    xor ecx, ecx
    div ecx                         # #DE, #GP, #DF through an empty IDT: a triple fault
null_idt:
    .word 0
    .long 0
.align 4096
code_end:
"""


@pytest.mark.parametrize("monitor", MULTI)
def test_a_vandal_cannot_touch_another_vm(monitor):
    vandal = guests.from_program(vmkit.assemble(VANDAL, base=0x1000), "vandal",
                                 memory_size=1 << 20)
    for sched in (dict(slice=3000), dict(scheduler="round-robin", quantum=10_000)):
        for order in ("vo", "ov"):
            other = build("syscall")
            imgs = [vandal, other] if order == "vo" else [other, vandal]
            mon, _ = run(monitor, *imgs, **sched)
            v, o = (mon.vms[0], mon.vms[1]) if order == "vo" else (mon.vms[1], mon.vms[0])
            assert v.result.reason == "crash" and "triple fault" in v.result.detail
            assert v.console == "X"
            assert o.result.reason == "poweroff"
            assert (o.console, digest(o.memory()), o.steps) == solo(monitor, "syscall")
            assert mon.world_switches > 0


# ---- snapshots ------------------------------------------------------------------------------
@pytest.mark.parametrize("monitor", MULTI)
def test_snapshot_restores_the_scheduler(monitor):
    mon = MONITORS[monitor](build("compute"), build("syscall"), scheduler="credit",
                            weights=[2, 1], quantum=20_000)
    mon.run(max_steps=40_000)
    snap = mon.snapshot()
    state = (mon.scheduler.state(), len(mon.switch_log), mon.world_switches)
    mon.run(max_steps=MAX_STEPS)
    first = [(vm.console, digest(vm.memory()), vm.result.reason) for vm in mon.vms]
    mon.restore(snap)
    assert (mon.scheduler.state(), len(mon.switch_log), mon.world_switches) == state
    mon.run(max_steps=MAX_STEPS)
    assert [(vm.console, digest(vm.memory()), vm.result.reason) for vm in mon.vms] == first


# ---- the scheduler's arithmetic, done cheaply, stays exact -------------------------------------
def _priced(mon):
    """Machine time as the cost model prices the counts, product by product, in their order."""
    return sum(mon.costs.price(mon.event_counts()).values())


@pytest.mark.parametrize("costs", [CostModel.default(), CostModel.preset("modern-2020"),
                                   CostModel.default().with_(native=0.3, page_walk=7.25,
                                                             trap=1e-3, world_switch=0.0),
                                   CostModel.default().with_(native=1, trap=999)],
                         ids=["default", "modern", "fractions", "ints"])
def test_machine_time_is_the_priced_sum_at_every_switch(costs):
    """machine_time (a price table per model, zero counts summed in) is the float the cost
    model's pricing gives, at the start (nothing counted: the int 0) and at every world switch,
    whatever the costs' type; a cost that is not finite is priced as the model does."""
    mon = TrapAndEmulate(build("syscall"), build("compute"), scheduler="round-robin",
                         quantum=8_000, costs=costs)
    first = machine_time(mon)
    assert first == _priced(mon) and type(first) is type(_priced(mon))
    seen = []
    mon.on("world_switch", lambda ev: seen.append((machine_time(mon), _priced(mon))))
    mon.run(max_steps=60_000)
    assert len(seen) > 3
    for got, want in seen:
        assert got == want and type(got) is type(want)
    inf = TrapAndEmulate(build("hello"), costs=CostModel.default().with_(hypercall=float("inf")))
    inf.run(max_steps=5_000)
    assert machine_time(inf) == _priced(inf)


@pytest.mark.parametrize("monitor", MULTI)
def test_the_slice_budget_uses_the_machine_time_schedule_read(monitor, monkeypatch):
    """The run loop hands the machine time _schedule read to the slice budget of the same
    trip: on every trip it is what machine_time says then (nothing was counted between)."""
    from vmkit.vmm.world import HostedMonitor
    original = HostedMonitor._slice_budget
    checked = []

    def checking(self, now=None):
        if now is not None:
            assert now == machine_time(self)
            checked.append(now)
        return original(self, now)
    monkeypatch.setattr(HostedMonitor, "_slice_budget", checking)
    ticking = guests.build("compute", iterations=2_000, timer_period=20_000,
                           timer_clock="machine")
    mon = MONITORS[monitor](build("syscall"), ticking, build("ctxswitch"), scheduler="credit",
                            weights=[2, 1, 1], quantum=6_000)
    mon.run(max_steps=150_000)
    assert len(checked) > 20 and mon.world_switches > 5


def test_ept_map_range_is_map_page_by_page():
    from vmkit.machine.machine import Machine
    from vmkit.vmm.paging.nested import EPT
    for size, gpa, hpa in ((4 << 20, 0, 5 << 20), ((4 << 20) + 0x1800, 0x3000, 0x7000),
                           (0x1000, 0x3FF000, 0x9000), (9 << 20, 0x2000, 0x123000)):
        made = []
        for bulk in (False, True):
            m = Machine(24 << 20)
            ept = EPT(m, 0x100000, [0x100000 + a for a in range(0x1000, 0x100000, 0x1000)])
            if bulk:
                ept.map_range(gpa, hpa, size)
            else:
                for g in range(0, size, 0x1000):
                    ept.map(gpa + g, hpa + g)
            made.append((bytes(m.mem[0x100000:0x200000]), dict(ept.tables), list(ept.pool)))
        assert made[0] == made[1], hex(size)
