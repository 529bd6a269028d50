"""Every guest runs under Native with the result computed in Python; the guest API rejects bad
input with a clear VmkitError."""

from __future__ import annotations

import pytest

from vmkit import guests
from vmkit.errors import GuestError, VmkitError
from vmkit.vmm import Native

SMALL = {  # small parameters keep the suite fast; defaults are exercised by the benchmarks
    "compute": {"iterations": 5000},
    "syscall": {"iterations": 200},
    "io": {"bytes": 300},
    "ctxswitch": {"iterations": 30},
    "pagefault": {"pages": 20},
    "ptemod": {"iterations": 40},
    "divzero": {"iterations": 25},
    "callret": {"iterations": 10, "depth": 30},
    "selfmod": {"iterations": 400},
    "tlbwalk": {"pages": 16, "passes": 2},
}
CORE = ["hello", "compute", "syscall", "io", "ctxswitch", "pagefault", "ptemod", "divzero",
        "callret", "selfmod", "tlbwalk"]


def run_native(name, **params):
    vm = Native(guests.build(name, **params))
    r = vm.run(max_steps=3_000_000)
    return vm, r


@pytest.mark.parametrize("name", [n for n in CORE if n != "ctxswitch"])
def test_guest_prints_its_checked_result_under_native(name):
    vm, r = run_native(name, **SMALL.get(name, {}))
    assert r.reason == "poweroff", r
    assert vm.console == vm.vms[0].image.expected


def test_core_guests_are_all_listed():
    assert set(CORE) <= set(guests.names())


def test_ctxswitch_every_process_finishes_its_yields():
    vm, r = run_native("ctxswitch", iterations=30, processes=3)
    assert r.reason == "poweroff"
    lines = sorted(vm.console.splitlines())
    assert lines == [f"ctxswitch: pid {p} yielded 30" for p in (1, 2, 3)]


def test_ctxswitch_is_preempted_by_the_timer():
    """Processes that never yield still share the CPU: the timer preempts them."""
    img = guests.build("ctxswitch", iterations=30, processes=2, timer_period=500)
    vm = Native(img)
    vm.run(max_steps=2_000_000)
    assert vm.machine.dev.ticks > 5
    assert sorted(vm.console.splitlines()) == [f"ctxswitch: pid {p} yielded 30" for p in (1, 2)]


def test_kernel_runs_in_ring0_and_user_code_in_ring3():
    img = guests.build("hello")
    vm = Native(img)
    rings = set()
    vm.run(max_steps=100_000, until=lambda m: rings.add(m.cpu.cpl) and False)
    assert rings == {0, 3}


def test_timer_interrupts_arrive_at_the_same_instruction_every_run():
    def ticks():
        vm = Native(guests.build("compute", iterations=20000, timer_period=3000))
        seen = []
        vm.on("interrupt", lambda e: seen.append((e.step, e.vector, e.eip)) if e.vector == 32 else None)
        vm.run(max_steps=1_000_000)
        return seen
    a, b = ticks(), ticks()
    assert len(a) > 10
    assert a == b
    # one tick every 3000 guest instructions
    steps = [s for s, _, _ in a]
    assert all(y - x == 3000 for x, y in zip(steps, steps[1:]))


def test_demand_paging_maps_each_heap_page_once():
    vm, r = run_native("pagefault", pages=17)
    pf = [e for e in vm.trace.of("interrupt") if e.vector == 14]
    assert len(pf) == 17
    assert all(e.from_ring == 3 for e in pf)


def test_divide_errors_reach_the_kernel_as_de():
    vm, r = run_native("divzero", iterations=9)
    de = [e for e in vm.trace.of("interrupt") if e.vector == 0]
    assert len(de) == 9


def test_selfmod_runs_the_patched_code():
    vm, r = run_native("selfmod", iterations=100)
    assert vm.console == "selfmod: sum 150\n"   # 50 * 1 + 50 * 2: the patch took effect


def test_snapshot_restore_is_byte_identical_and_replays_the_same():
    vm = Native(guests.build("ctxswitch", iterations=20))
    vm.run(max_steps=3000)
    snap = vm.snapshot()
    mem0, cpu0 = bytes(vm.machine.mem), vm.machine.cpu.state()
    vm.run(max_steps=4000)
    after = (bytes(vm.machine.mem), vm.machine.cpu.state(), vm.console)
    vm.restore(snap)
    assert bytes(vm.machine.mem) == mem0
    assert vm.machine.cpu.state() == cpu0
    vm.run(max_steps=4000)
    assert (bytes(vm.machine.mem), vm.machine.cpu.state(), vm.console) == after


def test_unknown_guest_says_what_exists():
    with pytest.raises(GuestError, match="unknown guest 'helo'.*did you mean hello"):
        guests.build("helo")


def test_bad_parameters_are_rejected_with_the_range():
    with pytest.raises(GuestError, match="between 1 and"):
        guests.build("compute", iterations=0)
    with pytest.raises(GuestError, match="has no parameter 'pages'"):
        guests.build("compute", pages=3)
    with pytest.raises(GuestError, match="must be an integer"):
        guests.build("compute", iterations="many")


def test_native_runs_one_guest_only():
    with pytest.raises(VmkitError, match="multiplexing several VMs is a monitor's job"):
        Native(guests.build("hello"), guests.build("hello"))


def test_monitor_rejects_a_foreign_snapshot():
    a = Native(guests.build("hello"))
    b = Native(guests.build("hello"))
    with pytest.raises(VmkitError, match="snapshot"):
        b.restore(a.snapshot())


def test_a_finished_guest_stays_finished():
    vm, r = run_native("hello")
    again = vm.run(max_steps=100)
    assert again.reason == "poweroff" and again.steps == 0


def test_a_crashing_bare_program_reports_the_fault_not_a_traceback():
    img = guests.from_source("mov eax, 1\nud2\n")
    vm = Native(img)
    r = vm.run(max_steps=100)
    assert r.reason == "crash"
    assert "triple fault" in r.detail and "#UD" in r.detail
    assert r.eip == 0x1005 and r.instruction == "ud2"


def test_an_endless_loop_stops_at_max_steps():
    vm = Native(guests.from_source("1: jmp 1b\n"))
    r = vm.run(max_steps=5000)
    assert r.reason == "max_steps" and r.steps == 5000


def test_a_privileged_instruction_in_ring3_gets_the_process_killed_by_gp():
    img = guests.build("userpriv")
    vm = Native(img)
    r = vm.run(max_steps=100_000)
    addr = img.programs["userpriv"].symbols["privileged"]
    assert r.reason == "poweroff"
    assert vm.console == ("user: about to execute cli in ring 3\n"
                          f"kernel: process 1 killed by exception 13 at {addr:#010x}\n")
    gp = [e for e in vm.trace.of("interrupt") if e.vector == 13]
    assert len(gp) == 1 and gp[0].from_ring == 3 and gp[0].eip == addr


def test_a_second_identical_build_is_a_copy_of_the_first_assembly():
    """Does building the same guest twice give the same bytes, with containers of its own,
    and does another parameter value assemble anew?"""
    from vmkit.isa.asm import assemble

    a = guests.build("syscall", iterations=7)
    b = guests.build("syscall", iterations=7)
    c = guests.build("syscall", iterations=8)
    assert a.loads == b.loads and a.loads != c.loads
    ka, kb = a.programs["kernel"], b.programs["kernel"]
    assert ka is not kb and ka.symbols == kb.symbols and ka.symbols is not kb.symbols
    kb.symbols["_start"] = 0                    # a caller changing its copy ...
    assert guests.build("syscall", iterations=7).programs["kernel"].symbols == ka.symbols
    # ... and the cached program is what assembling the sources gives today
    fresh = assemble(guests._source("syscall"), base=guests.USER_BASE, filename="syscall.s",
                     include_path=[guests.GUEST_DIR],
                     files={"params.s": guests._const_lines(
                         guests.spec("syscall").constants({**guests.spec("syscall").params,
                                                           "iterations": 7}))})
    assert fresh.code == a.programs["syscall"].code
