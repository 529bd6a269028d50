"""Memory virtualization compared: the TLB-heavy guest, the counters of shadow and nested paging,
the comparison API and the picture of one translation (docs/memory-virtualization.md)."""

from __future__ import annotations

import re

import pytest

from vmkit import guests
from vmkit.vmm import BinaryTranslation, HardwareAssisted, Native, TrapAndEmulate
from vmkit.vmm.memory import MEMORY_CATEGORIES, memory_comparison

HEAP = 0x00800000
WALK = {"pages": 24, "passes": 3}
MONITORS = {"native": (Native, {}), "te": (TrapAndEmulate, {}), "bt": (BinaryTranslation, {}),
            "hw-ept": (HardwareAssisted, {}), "hw-shadow": (HardwareAssisted, {"ept": False})}


def run(label, img, **extra):
    cls, kw = MONITORS[label]
    vm = cls(img, **kw, **extra)
    r = vm.run(max_steps=3_000_000)
    assert r.reason == "poweroff", r
    return vm


# ---- the guest ------------------------------------------------------------------------------
def test_tlbwalk_checksum_is_computed_by_hand():
    img = guests.build("tlbwalk", pages=2, passes=2, processes=1)
    # pass 0: values 1, 2 (sum 3); pass 1: values 1+2=3, 2+3=5 (sum 8): 11
    assert img.expected == "tlbwalk: 2 pages x 2 passes, checksum 11\n"
    vm = run("native", img)
    assert vm.console == img.expected


@pytest.mark.parametrize("params", [{}, {"pages": 120, "passes": 2, "processes": 4},
                                    {"pages": 7, "passes": 5, "processes": 1}])
def test_tlbwalk_prints_the_python_checksum(params):
    img = guests.build("tlbwalk", **params)
    vm = run("native", img)
    assert vm.console == img.expected
    n = img.params["processes"]
    assert vm.console.count("\n") == n


def test_tlbwalk_rejects_more_pages_than_the_kernel_has_frames_for():
    from vmkit.errors import GuestError
    with pytest.raises(GuestError):
        guests.build("tlbwalk", pages=121)


@pytest.mark.parametrize("label", ["te", "bt", "hw-ept", "hw-shadow"])
def test_tlbwalk_runs_identically_under_every_monitor(label):
    img = guests.build("tlbwalk", timer_period=900, **WALK)
    nat = run("native", img)
    vm = run(label, img)
    assert vm.console == nat.console == img.expected
    assert vm.stats["instructions"] == nat.stats["instructions"]
    assert vm.stats["page_faults"] == nat.stats["page_faults"] == 2 * WALK["pages"]


def test_every_pass_misses_the_tlb_on_every_page():
    """Each yield loads the other process's CR3: natively every heap page of every pass is a
    TLB miss again (a read and a write miss: the TLB keeps them apart), walked in 2 references."""
    img = guests.build("tlbwalk", **WALK)
    vm = Native(img)
    heap = []
    vm.on("tlb_miss", lambda e: heap.append(e) if HEAP <= e.address < HEAP + 0x400000 else None)
    vm.run(max_steps=3_000_000)
    per_page = len(heap) / (WALK["pages"] * WALK["passes"] * 2)
    assert per_page >= 2
    assert {e.references for e in heap} == {2}


def test_nested_walk_references_per_miss_is_the_2d_formula():
    """With EPT every heap miss is the full two-dimensional walk: (2+1)(2+1)-1 = 8 references
    (no paging-structure caches, so the EPT misses too); natively the same misses take 2."""
    img = guests.build("tlbwalk", **WALK)
    vm = HardwareAssisted(img)
    refs = []
    vm.on("tlb_miss", lambda e: refs.append(e.references) if HEAP <= e.address < HEAP + 0x400000
          else None)
    vm.run(max_steps=3_000_000)
    assert vm.console == img.expected
    assert len(refs) >= WALK["pages"] * WALK["passes"] * 2
    assert set(refs) == {(2 + 1) * (2 + 1) - 1}
    # over the whole run: between the paging-off walks (2) and the full 2-D walk (8)
    st = vm.stats
    assert 6 < st["walk_references"] / st["tlb_misses"] <= 8


# ---- the counters -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mc():
    return memory_comparison(["compute", ("tlbwalk", WALK), ("ptemod", {"iterations": 40}),
                              ("pagefault", {"pages": 16})], costs="p4-2006")


def test_comparison_has_every_monitor_and_no_console_differs(mc):
    assert mc.monitors[:5] == ["native", "te", "bt", "hw-shadow", "hw-ept"]
    assert mc.mismatches == []


def test_nested_paging_has_no_hidden_faults_and_pays_in_walk_references(mc):
    for g in mc.guests:
        assert mc.value(g, "hw-ept", "hidden_page_faults") == 0
        assert mc.value(g, "hw-ept", "pt_write_traps") == 0
        assert mc.value(g, "hw-ept", "cycles_hidden_fault") == 0
        assert mc.value(g, "hw-ept", "walk_references") > 0
    tw = "tlbwalk(pages=24, passes=3)"
    assert mc.value(tw, "hw-ept", "walk_references") > 2 * mc.value(tw, "te", "walk_references")
    assert mc.value(tw, "hw-ept", "refs_per_miss") > 6
    assert mc.value(tw, "native", "refs_per_miss") == 2


@pytest.mark.parametrize("mon", ["te", "bt", "hw-shadow"])
def test_shadow_paging_takes_hidden_faults_on_every_page_after_a_cr3_load(mc, mon):
    tw = "tlbwalk(pages=24, passes=3)"
    hidden = mc.value(tw, mon, "hidden_page_faults")
    # every heap page of every pass of both processes, after the CR3 load of a yield
    assert hidden >= WALK["pages"] * WALK["passes"] * 2
    assert hidden > 3 * mc.value("compute", mon, "hidden_page_faults") > 0
    assert mc.value(tw, mon, "cycles_hidden_fault") > 0
    # the memory's cycles (walks, shadow updates, hidden faults): the whole run's also hold the
    # console's exits, which p4-2006 prices at Table 1's 6,120 cycles each under hw-ept, plus
    # 5,000 of the VMM's own software (exit_handling)
    mem = {m: sum(mc.value(tw, m, f"cycles_{c}") for c in MEMORY_CATEGORIES)
           for m in (mon, "hw-ept")}
    assert mem[mon] > 3 * mem["hw-ept"]
    assert mc.value(tw, mon, "cycles") > 1.3 * mc.value(tw, "hw-ept", "cycles")
    # the VMM learns of page-table changes at the guest's invlpg and CR3 loads
    pt = mc.value("ptemod(iterations=40)", mon, "pt_write_traps")
    assert pt >= 2 * 40
    assert mc.comparison.stats[("ptemod(iterations=40)", mon)]["pt_traps"]["invlpg"] >= 80
    assert mc.value(tw, mon, "pt_write_traps") >= WALK["passes"] * 2


def test_native_shows_dashes_for_mechanisms_it_does_not_have(mc):
    assert mc.value("compute", "native", "hidden_page_faults") is None
    assert mc.value("compute", "native", "pt_write_traps") is None
    html = mc.to_html()
    assert "—" in html and "hidden_page_faults" in html and "tlbwalk" in html
    rows = mc.rows
    assert {r["row"] for r in rows} >= {"hidden_page_faults", "walk_references", "cycles",
                                        "cycles_page_walk", "pt_write_traps"}
    r = next(r for r in rows if r["row"] == "page_faults" and r["guest"].startswith("pagefault"))
    assert all(r[m] == 16 for m in mc.monitors)   # the guest's own faults: the same everywhere


def test_cycles_rows_add_up_and_reprice(mc):
    for (g, m), row in mc.table.items():
        b = mc.comparison.breakdown[(g, m)]
        assert row["cycles"] == pytest.approx(sum(b.values()))
        mem = sum(row[f"cycles_{c}"] for c in MEMORY_CATEGORIES)
        assert row["memory_share"] == pytest.approx(mem / row["cycles"])
    from vmkit.vmm import CostModel
    modern = mc.reprice(CostModel.preset("modern-2020"))
    tw = "tlbwalk(pages=24, passes=3)"
    assert modern.value(tw, "te", "cycles") < mc.value(tw, "te", "cycles")


def test_comparison_plot_is_deterministic_svg(mc):
    from vmkit.viz.render import figure_svg
    a, b = figure_svg(mc.plot()), figure_svg(mc.plot())
    assert a == b and "<title>" in a


# ---- the picture ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished():
    img = guests.build("pagefault", pages=8)
    out = {}
    for label in ("native", "te", "hw-ept", "hw-shadow"):
        out[label] = run(label, img)
    return out


GVA = HEAP + 0x3000 + 0x10     # the 4th heap page, which pagefault wrote and read back


def test_nested_walk_picture_numbers_eight_references_with_real_addresses(finished):
    from vmkit.viz import translation_diagram, translation_walk
    vm = finished["hw-ept"]
    w = translation_walk(vm, GVA)
    v = vm.vms[0]
    gpa = v.walk(GVA, touch=False)[0]
    assert w.gpa == gpa
    assert w.hpa == v.ept.translate(gpa, 1) == v.slice_base + gpa
    assert [r.n for r in w.refs] == list(range(1, 9))
    assert [r.table for r in w.refs] == ["EPT root", "EPT table", "guest PD",
                                         "EPT root", "EPT table", "guest PT",
                                         "EPT root", "EPT table"]
    # the guest's entries are read at the host-physical address the EPT gave
    pde_gpa = (v.vcpu.cr3 & 0xFFFFF000) | ((GVA >> 22) << 2)
    assert w.refs[2].gpa == pde_gpa and w.refs[2].hpa == v.slice_base + pde_gpa
    assert w.refs[2].value == v.phys_read_uint(pde_gpa, 4)
    d = translation_diagram(vm, GVA)
    src = d.source
    for n in range(1, 9):
        assert f"#{n} " in src and f"ref{n} [" in src
    assert "#9" not in src
    for a in (w.gpa, w.hpa, w.refs[2].value, w.refs[5].value, w.refs[7].hpa, w.ept_root):
        assert f"{a:#010x}" in src
    assert "(2+1)(2+1)-1 = 8" in d.title and "Bhargava" in d.title and "ASPLOS 2008" in d.title
    assert translation_diagram(vm, GVA).source == src          # deterministic


@pytest.mark.parametrize("label", ["te", "hw-shadow"])
def test_shadow_picture_shows_the_guest_entries_and_the_shadow_entry(finished, label):
    from vmkit.viz import translation_diagram, translation_walk
    vm = finished[label]
    v = vm.vms[0]
    w = translation_walk(vm, GVA)
    gpa = v.walk(GVA, touch=False)[0]
    assert w.kind == "shadow" and w.gpa == gpa
    assert [r.table for r in w.refs] == ["shadow PD", "shadow PT"]
    spte = w.refs[1].value
    assert spte & 1 and spte & 0xFFFFF000 == (v.slice_base + gpa) & 0xFFFFF000
    assert w.hpa == v.slice_base + gpa
    src = translation_diagram(vm, GVA).source
    for a in (w.gpa, w.hpa, spte, w.guest[0][3], w.guest[1][3], w.real_cr3):
        assert f"{a:#010x}" in src


def test_native_picture_is_the_plain_two_reference_walk(finished):
    from vmkit.viz import translation_diagram, translation_walk
    w = translation_walk(finished["native"], GVA)
    assert w.kind == "direct" and w.references == 2 and w.hpa == w.gpa
    d = translation_diagram(finished["native"], GVA)
    assert "2 references" in d.title


def test_unmapped_address_says_so(finished):
    from vmkit.viz import translation_diagram, translation_walk
    w = translation_walk(finished["hw-ept"], HEAP + 0x100000)   # a heap page never touched
    assert w.gpa is None and "not present" in w.note
    assert re.search("not present", translation_diagram(finished["hw-ept"], HEAP + 0x100000).title)


def test_pv_picture_walks_the_real_tables_which_hold_machine_addresses(finished):
    """Under direct paging (pv) are the guest's entries read at machine addresses and taken as
    machine addresses (not as guest-physical ones, which would be a shadow walk of nothing)?"""
    from vmkit.viz import translation_diagram, translation_walk
    from vmkit.vmm import Paravirtual
    vm = Paravirtual(guests.build("pagefault", pages=8, paravirtual=True))
    assert vm.run(max_steps=3_000_000).reason == "poweroff"
    v = vm.vms[0]
    w = translation_walk(vm, GVA)
    assert w.kind == "direct" and w.machine_tables and w.references == 2
    assert [r.table for r in w.refs] == ["PD", "PT"]
    assert w.real_cr3 == v.real_cpu.cr3 != w.guest_cr3
    assert w.refs[0].hpa == (v.real_cpu.cr3 & 0xFFFFF000) | ((GVA >> 22) << 2)
    assert w.refs[1].hpa == (w.refs[0].value & 0xFFFFF000) | (((GVA >> 12) & 0x3FF) << 2)
    assert w.hpa == v._mwalk(GVA) and w.gpa == w.hpa - v.slice_base == v.walk(GVA, touch=False)[0]
    # the same guest-physical page as natively: the pv kernel maps what the native one maps
    assert w.gpa == translation_walk(finished["native"], GVA).gpa
    d = translation_diagram(vm, GVA)
    assert "machine" in d.title and "2 references" in d.title
    for a in (w.hpa, w.gpa, w.real_cr3, w.refs[0].value, w.refs[1].value):
        assert f"{a:#010x}" in d.source
    assert "not present" in translation_walk(vm, HEAP + 0x100000).note
