"""Traced shadow paging (``shadow="traced"``, vmkit.vmm.paging.traced) beside the virtual TLB,
under te, bt and hardware assist without EPT; BT's adaptive translation of a traced PTE write
(Adams & Agesen 2006, §3.3, §6.3)."""

import pytest

from helpers.equivalence import build, digest, guest_state, run_native
from vmkit.errors import VmkitError
from vmkit.vmm import BinaryTranslation, HardwareAssisted, TrapAndEmulate
from vmkit.vmm.compare import per_operation

MONITORS = {"te": TrapAndEmulate, "bt": BinaryTranslation, "hw": HardwareAssisted}
GUESTS = ("kptemod", "ptemod", "pagefault", "ctxswitch", "forkwait", "tlbwalk", "kpgfault")


@pytest.mark.parametrize("guest", GUESTS)
@pytest.mark.parametrize("mon", sorted(MONITORS))
def test_traced_shadow_keeps_equivalence(mon, guest):
    """Does every monitor with traced shadow page tables end in the state native ends in?"""
    img = build(guest)
    nat, _ = run_native(img)
    vm = MONITORS[mon](img, shadow="traced")
    r = vm.run(max_steps=3_000_000)
    assert r.reason == "poweroff"
    assert vm.console == nat.console
    assert guest_state(vm.vcpu) == guest_state(nat.machine.cpu)
    assert digest(vm.vms[0].memory()) == digest(bytes(nat.machine.mem))


@pytest.mark.parametrize("mon", sorted(MONITORS))
def test_each_guest_pte_store_is_a_traced_write(mon):
    """Is each of kptemod's PTE stores seen by the VMM under traced shadows, and none under
    the virtual TLB (which leaves the guest's tables writable)?"""
    img = build("kptemod", iterations=10)
    traced = MONITORS[mon](img, shadow="traced")
    traced.run(max_steps=1_000_000)
    vtlb = MONITORS[mon](img, shadow="vtlb")
    vtlb.run(max_steps=1_000_000)
    assert traced.stats["pt_traps"]["traced write"] == 80
    assert vtlb.stats["pt_traps"]["traced write"] == 0
    assert traced.paging.name == "traced" and vtlb.paging.name == "vtlb"


def test_traced_shadows_survive_an_address_space_switch():
    """Does a CR3 load keep the traced shadow tables (fewer hidden faults than the virtual
    TLB, which starts over at every switch: after a switch only the shadow directory is
    refilled, one entry per page table in use)?"""
    img = build("ctxswitch")
    counts, loads = {}, {}
    for shadow in ("vtlb", "traced"):
        vm = TrapAndEmulate(img, shadow=shadow)
        vm.run(max_steps=3_000_000)
        counts[shadow] = vm.stats["hidden_page_faults"]
        loads[shadow] = vm.stats["pt_traps"]["mov cr3"]
    assert loads["vtlb"] == loads["traced"] > 50
    assert counts["traced"] < 0.6 * counts["vtlb"], counts
    assert counts["traced"] < 3 * loads["traced"]


def test_bt_adapts_a_traced_pte_store_into_an_in_tc_sequence():
    """Is kptemod's store adapted, and then priced from its own work (A&A: 391 cycles), not
    as a callout or a trap?"""
    po, counts = per_operation("kptemod", ("native", "bt-traced", "te-traced"), "p4-2006")
    per_store = {m: v / 8 for m, v in po.items()}
    c = counts["bt-traced"]
    assert c.get("callout", 0) == 0 and c.get("trap", 0) == 0
    assert c["shadow_update"] == pytest.approx(8) and c["page_walk"] == pytest.approx(16)
    assert 391 / 1.5 <= per_store["bt-traced"] <= 391 * 1.5
    assert per_store["te-traced"] > 4 * per_store["bt-traced"]     # a trap per store


def test_shadow_keyword_errors():
    """Is a wrong shadow mode, or shadow= with EPT, a one-line error naming the choices?"""
    img = build("hello")
    with pytest.raises(VmkitError, match="traced"):
        TrapAndEmulate(img, shadow="tracd")
    with pytest.raises(VmkitError, match="ept"):
        HardwareAssisted(img, shadow="traced", ept=True)


def test_snapshot_and_restore_roll_the_traces_back():
    """Does a restore put the traced shadows back, so a run from the snapshot ends as the
    first run did?"""
    img = build("forkwait", iterations=3, heap=2)
    vm = HardwareAssisted(img, shadow="traced")
    vm.run(max_steps=30_000)
    snap = vm.snapshot()
    state = (dict(vm.vms[0].tr_cache), set(vm.vms[0].tr_frames), vm.vms[0].tr_pd)
    vm.run(max_steps=3_000_000)
    first = (vm.console, digest(vm.vms[0].memory()), vm.stats["pt_traps"]["traced write"])
    vm.restore(snap)
    assert (dict(vm.vms[0].tr_cache), set(vm.vms[0].tr_frames), vm.vms[0].tr_pd) == state
    vm.run(max_steps=3_000_000)
    assert (vm.console, digest(vm.vms[0].memory()),
            vm.stats["pt_traps"]["traced write"]) == first
