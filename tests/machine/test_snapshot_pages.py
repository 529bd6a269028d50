"""Snapshots that cost pages, not megabytes (issue 18): memory shared copy-on-write at 4 KiB
pages with the previous snapshot, the trace's retained events shared in pieces, and restore
exact all the same."""

from __future__ import annotations

import hashlib

import pytest

from vmkit import guests
from vmkit.machine.machine import PAGE_SIZE, Machine, distinct_pages
from vmkit.trace import PIECE, Trace
from vmkit.vmm import MONITORS

MiB = 1 << 20


def _machines(vm):
    return list({id(v.machine): v.machine for v in vm.vms}.values())


def _state(vm):
    """What a restore must bring back: registers, memory, console, clocks, the trace."""
    return [(m.cpu.state(), hashlib.sha256(m.mem).hexdigest(), m.console, m.clock, m.steps,
             list(m.trace), dict(m.trace.counts), m.trace.total) for m in _machines(vm)]


@pytest.mark.parametrize("monitor", ["native", "te"])
def test_twenty_snapshots_of_a_long_run_share_pages_and_restore_exactly(monitor):
    """Do 20 snapshots of a run hold far less than one full copy, and does each restore to
    exactly the state it was taken in (and run on to the same end)?"""
    vm = MONITORS[monitor](guests.build("syscall", iterations=2500))
    snaps, states = [], []
    for _ in range(20):
        snaps.append(vm.snapshot())
        states.append(_state(vm))
        vm.run(max_steps=2_000)
    machine_snaps = [m for s in snaps for m in s.machines]
    pages = distinct_pages(machine_snaps)
    held = sum(map(len, pages.values()))
    memory = sum(m.memory_size for m in _machines(vm))
    # the goal: under 10 MiB beyond the guest's memory; in fact far less than one copy
    assert held < memory + 10 * MiB
    assert held < memory // 4, f"{len(pages)} distinct pages for 20 snapshots"
    # consecutive snapshots share the pages that did not change (the same objects)
    a, b = snaps[-2].machines[0], snaps[-1].machines[0]
    shared = sum(p is q for p, q in zip(a.pages, b.pages))
    assert shared > 0.9 * len(a.pages)
    end = (vm.run(max_steps=10_000_000).reason, _state(vm))
    for k in (13, 0, 19, 5):
        vm.restore(snaps[k])
        assert _state(vm) == states[k], k
    vm.restore(snaps[7])
    assert (vm.run(max_steps=10_000_000).reason, _state(vm)) == end


def test_a_page_written_back_to_its_old_bytes_is_still_restored_exactly():
    """Is a page changed after a snapshot and changed back before the next one compared by
    content (not assumed clean), and is every uniform page one shared object?"""
    m = Machine(memory_size=1 << 20)
    s0 = m.snapshot()
    assert len({id(p) for p in s0.pages}) <= 2        # 0xAA everywhere but the boot GDT page
    m.write(0x5000, b"\x01\x02")
    s1 = m.snapshot()
    m.write(0x5000, b"\xAA\xAA")
    m.write(0x9ffe, b"\x00" * 4)                     # straddles two pages
    s2 = m.snapshot()
    assert s2.pages[5] is s0.pages[5] or s2.pages[5] == s0.pages[5]
    assert s1.pages[5] is not s0.pages[5] and s1.pages[6] is s0.pages[6]
    for snap in (s1, s0, s2, s1):
        m.restore(snap)
        assert bytes(m.mem) == snap.memory
    assert len(s0.memory) == m.memory_size and len(s0.pages) == m.memory_size // PAGE_SIZE


def test_trace_events_in_packed_pieces_come_back_exactly():
    """Do the retained events of an old snapshot, packed once the live trace dropped them,
    come back equal (same classes, same fields) at a restore?"""
    trace = Trace(maxlen=3 * PIECE + 100)
    vm = MONITORS["native"](guests.build("syscall", iterations=4000), trace=trace)
    assert vm.vms[0].machine.trace is trace
    first = vm.snapshot()
    vm.run(max_steps=30_000)
    early = vm.snapshot()
    early_events = list(trace)
    vm.run(max_steps=30_000)                         # thousands of events later
    later = vm.snapshot()                            # drops the early pieces: packed
    _, pieces = Trace.state_parts(early.machines[0].extra["trace"])
    assert pieces and any(p.packed is not None for p in pieces), "nothing was packed"
    assert trace.total > len(early_events) + 2 * PIECE
    vm.restore(early)
    assert list(trace) == early_events
    assert [type(e) for e in trace] == [type(e) for e in early_events]
    vm.restore(first)
    vm.restore(later)
    vm.restore(early)
    assert list(trace) == early_events
