"""Virtualization holes (issue 17): under trap-and-emulate each ``nonvirt-`` guest runs a
sensitive, unprivileged instruction that shows it the real machine; the monitor records it
(``stats["holes"]``, a ``Hole`` event with what the guest saw and what the bare machine would
have shown) and ``break_on("hole")`` stops there. Under binary translation and hardware
assistance the same guest shows none (and prints what it prints natively)."""

from __future__ import annotations

from collections import Counter

import pytest

from vmkit import guests
from vmkit.debug import Debugger
from vmkit.guests.nonvirt import NONVIRT
from vmkit.vmm import BinaryTranslation, HardwareAssisted, Native, TrapAndEmulate

#: guest -> the holes trap-and-emulate records (mnemonic -> count) and one (saw, bare) pair
EXPECTED = {
    "nonvirt-popf": ({"pushfd": 1, "popfd": 1}, ("IF=0", "IF=1")),
    "nonvirt-pushcs": ({"push": 1, "mov": 1}, ("eax=0x9", "eax=0x8")),
    "nonvirt-sgdt": ({"sgdt": 1, "sidt": 1}, ("[0x0000200e]=0xffc10000",
                                              "[0x0000200e]=0x3000")),
    "nonvirt-lar": ({"lar": 1}, ("eax=0xc0b300", "eax=0xc09300")),
    "nonvirt-smsw": ({"smsw": 1}, ("eax=0x80010011", "eax=0x80010019")),
}
STEPS = 20_000      # every hole comes before step 8,200; popf under te would spin on


def test_every_nonvirt_guest_is_covered():
    """Does the table above name every nonvirt- guest the kit registers?"""
    assert sorted(EXPECTED) == sorted(s.name for s in NONVIRT)


@pytest.mark.parametrize("guest", sorted(EXPECTED))
def test_holes_recorded_under_te(guest):
    """Does te record each hole once, with what the guest saw and what it would have seen?"""
    counts, (saw, bare) = EXPECTED[guest]
    vm = TrapAndEmulate(guests.build(guest))
    vm.run(max_steps=STEPS)
    assert vm.stats["holes"] == Counter(counts)
    events = vm.trace.of("hole")
    assert len(events) == sum(counts.values())
    assert any(e.saw == saw and e.bare == bare for e in events), events
    for e in events:
        assert e.ring == 0 and e.text.split()[0] == e.mnemonic
        assert e.saw != e.bare
    assert vm.console != guests.build(guest).expected


@pytest.mark.parametrize("monitor", [BinaryTranslation, HardwareAssisted, Native])
@pytest.mark.parametrize("guest", sorted(EXPECTED))
def test_no_holes_under_bt_hw_native(guest, monitor):
    """Does the same guest fall into no hole under bt, hw (and natively), printing what it
    prints on the bare machine?"""
    vm = monitor(guests.build(guest))
    vm.run(max_steps=200_000)           # to the end (nonvirt-popf waits for 3 timer ticks)
    assert not vm.stats.get("holes")
    assert vm.trace.counts["hole"] == 0
    assert vm.console == guests.build(guest).expected


def test_no_holes_in_ordinary_guests_under_te():
    """Does an ordinary guest (segment loads, int 0x80, iretd: sensitive forms that reach the
    VMM) fall into no hole?"""
    vm = TrapAndEmulate(guests.build("syscall", iterations=50))
    vm.run(max_steps=STEPS)
    assert vm.stats["holes"] == Counter()


def test_break_on_hole_stops_at_the_instruction():
    """Does break_on("hole") stop right after the hole instruction, and reverse_continue
    come back to it?"""
    dbg = Debugger(TrapAndEmulate(guests.build("nonvirt-pushcs")))
    dbg.break_on("hole")
    first = dbg.cont()
    assert first.kind == "event" and first.event.text == "push cs"
    assert first.event.saw == "[0x00009ff8]=0x9"
    second = dbg.cont()
    assert second.kind == "event" and second.event.text == "mov ax, cs"
    assert second.step > first.step
    dbg.cont()                                  # to the end
    back = dbg.reverse_continue()
    assert (back.step, back.event.text) == (second.step, "mov ax, cs")


def test_break_on_hole_never_hits_under_bt():
    """Under bt the same break runs to the end of the guest."""
    dbg = Debugger(BinaryTranslation(guests.build("nonvirt-pushcs")))
    dbg.break_on("hole")
    assert dbg.cont().kind == "exited"


def test_cli_breaks_on_holes(tmp_path, capsys):
    """Does `vmkit debug ... -x` stop at each hole, printing what the guest saw?"""
    from vmkit.cli import main
    f = tmp_path / "holes.dbg"
    f.write_text("break-on hole\ncontinue\ncontinue\n")
    assert main(["debug", "nonvirt-pushcs", "--monitor", "te", "-x", str(f)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "event break 1 on hole"
    assert "text='push cs'" in lines[1] and "saw='[0x00009ff8]=0x9'" in lines[1]
    assert "text='mov ax, cs'" in lines[2] and "bare='eax=0x8'" in lines[2]
