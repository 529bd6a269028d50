"""The one virtual-CPU interface (vmkit/vmm/vcpu.py): te's, bt's and pv's ``VirtualCPU``, hw's
``GuestCPU`` and Native's machine CPU have the members ``VCPU`` declares, and on the same guest
at the same guest instruction they read the same values."""

from __future__ import annotations

import pytest

from vmkit import guests
from vmkit.errors import VmkitError
from vmkit.machine.cpu import CPU
from vmkit.vmm import BinaryTranslation, HardwareAssisted, Native, Paravirtual, TrapAndEmulate
from vmkit.vmm.deprivileged.vcpu import VirtualCPU
from vmkit.vmm.hw.vcpu import GuestCPU
from vmkit.vmm.vcpu import VCPU, VCPU_MEMBERS

MONITORS = {"te": TrapAndEmulate, "bt": BinaryTranslation, "hw": HardwareAssisted,
            "hw-shadow": lambda img: HardwareAssisted(img, ept=False)}

#: guest instructions retired -> what the guest is doing then (syscall, iterations=20):
#: booting with paging off, in its user program (ring 3, IF 1), in its kernel with paging on
POINTS = {6000: (0, 0, False), 7750: (3, 1, True), 8000: (0, 0, True)}


def members(cpu) -> dict:
    """Every member of VCPU, as comparable values."""
    out = {}
    for name in VCPU_MEMBERS:
        v = getattr(cpu, name)
        if hasattr(v, "limit"):                 # a table register
            out[name] = (v.base, v.limit, v.selector)
        else:
            out[name] = list(v) if name == "regs" else int(v)
    return out


def test_the_declared_members_are_the_protocols():
    """Does VCPU_MEMBERS list exactly what VCPU declares (so a member cannot be added to one
    and forgotten in the other)?"""
    declared = set(VCPU.__annotations__) | {n for n, v in vars(VCPU).items()
                                            if isinstance(v, property)}
    assert declared == set(VCPU_MEMBERS)
    for name in VCPU_MEMBERS:
        assert name in VCPU.__annotations__ or vars(VCPU)[name].__doc__ or name in (
            "es", "fs", "gs"), f"{name} is not documented"


@pytest.mark.parametrize("name", ["native", "te", "bt", "hw", "hw-shadow", "pv"])
def test_every_monitors_vcpu_has_the_interface(name):
    """Is every monitor's vcpu a VCPU, of the class that implements it there?"""
    if name == "pv":
        mon = Paravirtual(guests.build("hello", paravirtual=True))
    elif name == "native":
        mon = Native(guests.build("hello"))
    else:
        mon = MONITORS[name](guests.build("hello"))
    mon.run(max_steps=200)
    expected = {"native": CPU, "hw": GuestCPU, "hw-shadow": GuestCPU}.get(name, VirtualCPU)
    assert isinstance(mon.vcpu, expected)
    assert isinstance(mon.vcpu, VCPU)
    for member in VCPU_MEMBERS:
        getattr(mon.vcpu, member)


def test_vcpus_read_alike_at_the_same_guest_instruction():
    """On one guest, stopped at the same guest instruction (booting, in ring 3 with IF set, in
    the kernel with paging on), does every member read the same under te, bt, hw (nested and
    shadow paging) as the machine's own CPU under Native?"""
    img = guests.build("syscall", iterations=20)
    mons = {"native": Native(img), **{k: make(img) for k, make in MONITORS.items()}}
    for n, (cpl, if_, paging) in POINTS.items():
        seen = {}
        for key, mon in mons.items():
            done = mon.machine.steps if key == "native" else sum(v.steps for v in mon.vms)
            mon.run(max_steps=n - done)
            seen[key] = members(mon.vcpu)
        ref = seen.pop("native")
        assert (ref["cpl"], ref["IF"], ref["paging"]) == (cpl, if_, paging), n
        for key, got in seen.items():
            diff = {m: (ref[m], got[m]) for m in ref if got[m] != ref[m]}
            assert not diff, f"{key} at guest instruction {n}: {diff}"


def test_writes_reach_the_guest_alike():
    """Does setting IF, a register and EIP through the interface change what the guest sees
    the same way under te and hw, and is CR3 the monitor's to set under hw?"""
    img = guests.build("hello")
    for mon in (TrapAndEmulate(img), HardwareAssisted(img)):
        mon.run(max_steps=200)
        vc = mon.vcpu
        vc.IF = 1
        vc.ebx = 0x1_0000_0007                  # masked to 32 bits
        vc.eip = vc.eip
        assert vc.IF == 1 and vc.eflags & 0x200 and vc.flags.IF
        assert vc.ebx == 7 and vc.regs[3] == 7
        vc.IF = 0
        assert not vc.eflags & 0x200
    with pytest.raises(VmkitError, match=r"monitor.write_cr\(vm, 3, value\)"):
        mon.vcpu.cr3 = 0
