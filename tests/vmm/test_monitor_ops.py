"""The monitor protocol as one declared table (vmkit.vmm.ops.MonitorOps): does every hosted
monitor fill it, does the run loop go through it, and has no old-style hook method crept back
(one the run loop would silently ignore)?"""

from __future__ import annotations

import dataclasses

import pytest

from vmkit import guests
from vmkit.vmm import MONITORS, TrapAndEmulate
from vmkit.vmm.ops import MonitorOps
from vmkit.vmm.world import HostedMonitor

HOSTED = [cls for cls in MONITORS.values() if issubclass(cls, HostedMonitor)]
#: the methods the run loop used to call before the table: none may be defined again
OLD_HOOKS = {f"_{f.name}" for f in dataclasses.fields(MonitorOps)} - {"_make_vm", "_setup"}


@pytest.mark.parametrize("cls", HOSTED, ids=lambda c: c.name)
def test_each_hosted_monitor_fills_the_table_with_functions_of_vmm(cls):
    """Is ``cls.ops`` a MonitorOps whose operations are plain functions of vmkit.vmm (not
    bound methods), and does no class along its MRO define an old-style hook method?"""
    ops = cls.ops
    assert isinstance(ops, MonitorOps)
    for f in dataclasses.fields(MonitorOps):
        v = getattr(ops, f.name)
        if f.type == "Callable":
            assert callable(v) and not hasattr(v, "__self__"), f.name
            assert v.__module__.startswith("vmkit.vmm."), (f.name, v.__module__)
    for klass in cls.__mro__:
        assert not OLD_HOOKS & set(vars(klass)), (klass.__name__, OLD_HOOKS & set(vars(klass)))
    assert {"te": ("shadow",), "bt": ("shadow",), "hw": ("nested", "shadow"),
            "pv": ("direct",)}[cls.name] == ops.paging_kinds


def test_the_run_loop_goes_through_the_table():
    """Does a monitor that replaces one operation of trap-and-emulate's table see it called at
    every entry into the guest, with the same run as trap-and-emulate's?"""
    entries = []
    base = TrapAndEmulate.ops

    def enter(mon, vm, deadline):
        entries.append(deadline)
        base.enter(mon, vm, deadline)

    class Counting(TrapAndEmulate):
        ops = dataclasses.replace(base, enter=enter)

    img = guests.build("syscall", iterations=30)
    a, b = Counting(img), TrapAndEmulate(img)
    ra, rb = a.run(200_000), b.run(200_000)
    assert (ra.reason, ra.steps, a.console, a.stats) == (rb.reason, rb.steps, b.console, b.stats)
    assert len(entries) > 10
