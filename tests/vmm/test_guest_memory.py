"""A VM's memory under the machine's names (vmkit/vmm/vm.py): ``phys_read``/``phys_write`` are
bytes as on ``Machine``, ``lin_read``/``lin_write`` integers at a linear address as on
``Machine``, ``phys_read_uint`` the integer form; the old ``read``/``write`` warn."""

from __future__ import annotations

import pytest

from vmkit import guests
from vmkit.errors import VmkitError
from vmkit.vmm import HardwareAssisted, Native, TrapAndEmulate

STEPS = 8000      # syscall (iterations=20) is in its kernel with paging on


@pytest.fixture(scope="module")
def runs():
    img = guests.build("syscall", iterations=20)
    out = {"native": Native(img), "te": TrapAndEmulate(img), "hw": HardwareAssisted(img)}
    for mon in out.values():
        mon.run(max_steps=STEPS)
    return out


@pytest.mark.parametrize("name", ["te", "hw"])
def test_phys_read_is_bytes_as_on_the_machine(runs, name):
    """Does a VM's phys_read give the bytes Machine.read gives natively at the same address,
    and phys_read_uint the same as a little-endian integer?"""
    nat, vm = runs["native"].machine, runs[name].vms[0]
    for gpa in (0x1000, 0x1FFE, vm.memory_size - 2):
        assert vm.phys_read(gpa, 4) == nat.read(gpa, 4) == nat.phys_read(gpa, 4)
        assert vm.phys_read_uint(gpa, 4) == int.from_bytes(nat.read(gpa, 4), "little")
    assert vm.phys_read(vm.memory_size - 2, 4)[2:] == b"\xff\xff"   # beyond its end: all ones


@pytest.mark.parametrize("name", ["te", "hw"])
def test_lin_read_is_the_machines_lin_read(runs, name):
    """With paging on, does a VM's lin_read at a guest-linear address give what the native
    machine's lin_read gives there, across a page boundary too, and peek the same bytes?"""
    nat, vm = runs["native"].machine, runs[name].vms[0]
    assert vm.vcpu.paging
    esp = vm.vcpu.esp
    for lin in (esp, 0x1000, 0x1FFE):
        assert vm.lin_read(lin, 4) == nat.lin_read(lin, 4)
        assert vm.peek(lin, 4) == nat.peek(lin, 4)


def test_writes_round_trip_and_the_old_names_warn():
    """Do phys_write (bytes) and lin_write (an integer) land where phys_read and lin_read
    find them, and do the old names read/write still work while warning with the new name?"""
    mon = TrapAndEmulate(guests.build("hello"))
    mon.run(max_steps=100)
    vm = mon.vms[0]
    vm.phys_write(0x7000, b"\x01\x02\x03\x04")
    assert vm.phys_read_uint(0x7000, 4) == 0x04030201
    vm.phys_write_uint(0x7000, 2, 0xBEEF)
    assert vm.phys_read(0x7000, 4) == b"\xef\xbe\x03\x04"
    vm.lin_write(0x7004, 4, 0x11223344)           # paging off: linear = guest-physical
    assert vm.phys_read(0x7004, 4) == b"\x44\x33\x22\x11"
    vm.phys_write(vm.memory_size - 1, b"\xaa\xbb")     # the byte beyond the end is dropped
    assert vm.phys_read(vm.memory_size - 1, 1) == b"\xaa"
    with pytest.raises(VmkitError, match=r"takes bytes.*phys_write_uint\(gpa, n, value\)"):
        vm.phys_write(0x7000, 4, 0x1234)          # the old integer form: a clear error
    with pytest.warns(DeprecationWarning, match="use GuestVM.lin_read"):
        assert vm.read(0x7004, 4) == 0x11223344
    with pytest.warns(DeprecationWarning, match="use GuestVM.lin_write"):
        vm.write(0x7004, 1, 0x55)
    assert vm.lin_read(0x7004, 1) == 0x55
