"""Watchpoints through the machine's memory-access reports (``Machine.watch_memory``): every
read and write of the watched bytes, a write of the value already there and the implicit
accesses (interrupt frames, iretd's pops, descriptor-table reads) included, at the same guest
instruction under every monitor; watching changes nothing else; Step stops at a hit."""

from __future__ import annotations

import hashlib

import pytest

from vmkit import guests
from vmkit.debug import Debugger
from vmkit.debug.memory import GuestView
from vmkit.vmm import BinaryTranslation, HardwareAssisted, Native, TrapAndEmulate

MONITORS = {"native": Native, "te": TrapAndEmulate, "bt": BinaryTranslation,
            "hw": HardwareAssisted}
#: who pushes the interrupt frame: the CPU, or the VMM reflecting the interrupt
PUSHER = {"native": "cpu", "te": "vmm", "bt": "vmm", "hw": "cpu"}


def _at_first_syscall(name):
    """A debugger stopped right after the first int 0x80's delivery, and the linear address
    of the CS slot of the frame it pushed (the same slot, same value, every system call)."""
    d = Debugger(MONITORS[name](guests.build("syscall", iterations=20)))
    e = d.break_on("interrupt", vector=0x80)
    assert d.cont().step == 7638
    d.delete(e)
    return d, d.monitor.vcpu.regs[4] + 4


@pytest.mark.parametrize("name", sorted(MONITORS))
def test_a_write_of_the_same_value_is_a_hit(name):
    """Does each system call's frame push of CS (0x1b over 0x1b) stop the watchpoint, at the
    same steps under every monitor, naming the pusher?"""
    d, slot = _at_first_syscall(name)
    d.watch(slot, size=4)
    got = [d.cont() for _ in range(2)]
    assert [(s.kind, s.step) for s in got] == [("watchpoint", 7676), ("watchpoint", 7714)]
    for s in got:
        assert s.old_value == s.new_value == 0x1B
        assert s.who == PUSHER[name] and "pushed its frame" in s.how


@pytest.mark.parametrize("name", sorted(MONITORS))
def test_implicit_reads_are_hits(name):
    """Does iretd's pop of the frame count as a read of the watched slot, and the interrupt
    delivery's read of the guest's GDT as a read of the descriptor?"""
    d, slot = _at_first_syscall(name)
    w = d.watch(slot, size=4, on="read")
    s = d.cont()
    assert (s.kind, s.access, s.step) == ("watchpoint", "read", 7671)
    assert "iretd" in s.how          # bt: the translator's callout emulates it
    d.delete(w)
    d.watch(d.monitor.vcpu.gdtr.base + 0x10, size=8, on="read")
    s = d.cont()
    assert (s.kind, s.access, s.step) == ("watchpoint", "read", 7676)
    assert s.who == ("vmm" if name in ("te", "bt") else "cpu")


@pytest.mark.parametrize("name", ["native", "te", "hw"])
def test_watching_changes_nothing_else(name):
    """Is a run with watched memory the same run: registers, memory, statistics, cycles?"""
    def run(watch):
        vm = MONITORS[name](guests.build("ptemod", iterations=20))
        m = vm.vms[0].machine
        seen = []
        if watch:
            base = getattr(vm.vms[0], "slice_base", 0)
            m.watch_memory([(base + 0x201000, 0x1000)])
            vm.trace.subscribe("memory", seen.append)
        vm.run(max_steps=20_000)
        gv = GuestView(vm)
        mem = hashlib.sha256(gv.physical(0, gv.memory_size)).hexdigest()
        return (tuple(vm.vcpu.regs), vm.vcpu.eip, mem, dict(vm.stats), dict(vm.cycles)), seen
    plain, _ = run(False)
    watched, seen = run(True)
    assert watched == plain
    # the page walk reads the table natively and under EPT; the shadow pager under te
    assert {e.source for e in seen} >= {"insn", "vmm" if name == "te" else "walk"}


def test_watched_page_and_nothing_watched():
    """Does watched_page answer for the pages holding watched bytes only, and does an empty
    watch leave the TLB's fast path as it was?"""
    vm = Native(guests.build("hello"))
    m = vm.vms[0].machine
    m.watch_memory([(0x2ffe, 4)])
    assert m.watched_page(0x2000) and m.watched_page(0x3001) and not m.watched_page(0x4000)
    m.watch_memory([])
    assert not m.watched_pages and not any(m.tlb_watched.values())


@pytest.mark.parametrize("name", ["native", "te"])
def test_step_stops_at_a_watchpoint(name):
    """Does step(N) stop at the first watchpoint hit on the way, where cont stops?"""
    d = Debugger(MONITORS[name](guests.build("ctxswitch")))
    d.watch("current")
    want = d.cont()
    d.reverse_step(want.step)
    s = d.step(100_000)
    assert (s.kind, s.step, s.new) == ("watchpoint", want.step, want.new)
    assert d.step(1).kind == "step"


def test_break_on_memory_points_to_watch():
    """break_on("memory") would never fire (nothing is watched): does it say what to use?"""
    from vmkit.errors import VmkitError
    d = Debugger(Native(guests.build("hello")))
    with pytest.raises(VmkitError, match="use watch"):
        d.break_on("memory")
