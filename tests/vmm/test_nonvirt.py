"""The nonvirt- guests: each works under Native and goes visibly wrong under trap-and-emulate,
because the sensitive instruction its kernel runs does not trap when the kernel is
deprivileged (vmkit/guests/nonvirt.py)."""

from __future__ import annotations

import importlib
import os
import re

import pytest

from vmkit import guests
from vmkit.guests import GUEST_DIR, nonvirt
from vmkit.vmm import Native

NAMES = sorted(s.name for s in nonvirt.NONVIRT)
MAX_STEPS = 3_000_000

#: what each guest prints under a trap-and-emulate monitor (the documented difference)
UNDER_TE = {
    "nonvirt-popf": re.compile(r"nonvirt-popf: ([0-2]) of 3 timer ticks arrived"),
    "nonvirt-pushcs": re.compile(r"the kernel runs in ring [123] \(push cs\), ring [123] "
                                 r"\(mov ax, cs\)"),
    "nonvirt-sgdt": re.compile(r"s[gi]dt shows a table at 0x[0-9a-f]{8}, not the kernel's "
                               r"[GI]DT at 0x[0-9a-f]{8}"),
    "nonvirt-lar": re.compile(r"data segment 0x10 (has DPL [123]|is not visible from this "
                              r"ring)"),
    "nonvirt-smsw": re.compile(r"smsw shows CR0 = 0x(?!80010019)[0-9a-f]{8}"),
}


def test_there_are_at_least_four_nonvirt_guests():
    assert len(NAMES) >= 4
    assert set(NAMES) <= set(guests.names())
    assert all(n.startswith("nonvirt-") for n in NAMES)
    assert set(UNDER_TE) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_nonvirt_guest_prints_its_expected_result_under_native(name):
    img = guests.build(name)
    vm = Native(img)
    r = vm.run(max_steps=MAX_STEPS)
    assert r.reason == "poweroff", r
    assert img.expected and vm.console == img.expected


@pytest.mark.parametrize("name", NAMES)
def test_nonvirt_kernel_runs_the_instruction_in_ring_0(name):
    """Is the sensitive instruction executed by the guest kernel (ring 0 under Native)?"""
    img = guests.build(name)
    src = img.programs["kernel"]
    hook = name.replace("-", "_") + ".s"
    rings = set()

    def watch(m):
        loc = src.line_of(m.cpu.eip) if m.cpu.cpl == 0 else None
        if loc and os.path.basename(loc[0]) == hook:
            rings.add(m.cpu.cpl)
        return False
    Native(img).run(max_steps=MAX_STEPS, until=watch)
    assert rings == {0}


@pytest.mark.parametrize("name", NAMES)
def test_nonvirt_source_says_what_goes_wrong_and_why_it_is_not_seen(name):
    with open(os.path.join(GUEST_DIR, name.replace("-", "_") + ".s"), encoding="utf-8") as f:
        text = f.read().lower()
    assert "trap-and-emulate" in text
    assert "trap" in text and ("does not trap" in text or "never trap" in text
                               or "no fault" in text or "do not trap" in text)


def test_the_boot_hook_adds_nothing_to_other_guests():
    """kernel.s includes boot_hook.s; the default one must assemble to no bytes at all."""
    assert guests.build_program("boot_hook", 0x1000, {}).code == b""
    kernel = guests.build("hello").programs["kernel"]
    assert not any(s.startswith("nv_") for s in kernel.symbols)


def _trap_and_emulate():
    try:
        return importlib.import_module("vmkit.vmm.te").TrapAndEmulate
    except ImportError as e:
        pytest.skip(f"vmkit.vmm.te (TrapAndEmulate) is not available yet ({e}); the Native "
                    f"half of these demonstrations is checked above")


@pytest.mark.parametrize("name", NAMES)
def test_nonvirt_guest_goes_wrong_under_trap_and_emulate(name):
    """Does the deprivileged kernel see what the module docstring says it sees?"""
    TrapAndEmulate = _trap_and_emulate()
    img = guests.build(name)
    vm = TrapAndEmulate(img)
    vm.run(max_steps=MAX_STEPS)
    assert vm.console != img.expected
    assert UNDER_TE[name].search(vm.console), vm.console
