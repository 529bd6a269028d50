"""The VM-exit pictures (vmkit.viz.exits) and the VmExitView widget, without a kernel."""

from __future__ import annotations

from collections import Counter

import pytest
from matplotlib.colors import to_hex

from vmkit import guests
from vmkit.errors import VmkitError
from vmkit.viz.exits import (exit_cycles, exit_rows, exits_figure, exits_table_html,
                             qualification_text)
from vmkit.viz.render import OKABE_ITO, figure_svg
from vmkit.vmm import CostModel, HardwareAssisted
from vmkit.widgets import VmExitView
from vmkit.widgets.exits import CONTROLS

# p4-2006's exit round trip: A&A 2006 Table 1 (page-fault exit 1931, entry 2409) + §7.1's ten
# VMCB reads of 178
P4_EXIT = 1931 + 10 * 178 + 2409


@pytest.fixture(scope="module")
def io_hw():
    hw = HardwareAssisted(guests.build("io"))
    hw.run(max_steps=5_000_000)
    return hw


@pytest.fixture(scope="module")
def shadow_hw():
    hw = HardwareAssisted(guests.build("pagefault"), ept=False)
    hw.run(max_steps=5_000_000)
    return hw


# ---- viz --------------------------------------------------------------------------------------

def test_rows_carry_intel_numbers_and_counts(shadow_hw):
    rows = exit_rows(shadow_hw)
    by_name = {r["name"]: r for r in rows}
    assert by_name["EXCEPTION_NMI"]["number"] == 0
    assert by_name["INVLPG"]["number"] == 14
    assert by_name["CR_ACCESS"]["number"] == 28
    assert by_name["IO_INSTRUCTION"]["number"] == 30
    assert [r["number"] for r in rows] == sorted(r["number"] for r in rows)
    assert sum(r["count"] for r in rows) == sum(shadow_hw.stats["vm_exits"].values())
    per = shadow_hw.costs.vm_exit
    assert all(r["cycles"] == r["count"] * per for r in rows)


def test_rows_from_a_counter_have_no_cycles():
    rows = exit_rows(Counter({"HLT": 3, "CPUID": 1}))
    assert [(r["number"], r["count"], r["cycles"]) for r in rows] == [(10, 1, None), (12, 3, None)]


def test_figure_labels_numbers_title_and_palette(shadow_hw):
    fig = exits_figure(shadow_hw)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert "0 EXCEPTION_NMI" in labels and "30 IO_INSTRUCTION" in labels
    assert ax.get_title().startswith("VM exits by reason: pagefault under hw (shadow paging)")
    colours = {to_hex(p.get_facecolor()).upper() for p in ax.patches}
    assert colours and colours <= set(OKABE_ITO.values())
    # counts are written on the bars: colour never carries the meaning alone
    texts = {t.get_text() for t in ax.texts}
    assert f"{shadow_hw.stats['vm_exits']['IO_INSTRUCTION']:,}" in texts


def test_figure_is_deterministic_svg(shadow_hw):
    a = figure_svg(exits_figure(shadow_hw, log=True))
    b = figure_svg(exits_figure(shadow_hw, log=True))
    assert a == b and "<title>VM exits by reason" in a


def test_figure_without_exits():
    fig = exits_figure(Counter(), title="none")
    assert fig.axes[0].texts[0].get_text() == "no VM exits"


def test_table_html_has_rows_totals_and_reprices(io_hw):
    html = exits_table_html(io_hw)
    assert "IO_INSTRUCTION" in html and ">30<" in html and "vmkit-exits-total-row" in html
    cheap = exits_table_html(io_hw, CostModel.preset("modern-2020"))
    assert cheap != html and "modern-2020" in cheap
    c_old = exit_cycles(io_hw)
    c_new = exit_cycles(io_hw, CostModel.preset("modern-2020"))
    assert c_old["exits"] == c_new["exits"]
    assert c_new["exit_cycles"] == c_new["exits"] * 500
    assert c_old["exit_cycles"] > c_new["exit_cycles"]


def test_qualification_decoding():
    # mov cr0, eax: CR0, MOV to CR, register 0 (SDM Vol. 3C, Table 28-3)
    cr = qualification_text("CR_ACCESS", 0)
    assert "CR0" in cr[0] and "MOV to CR" in cr[1] and "eax" in cr[2]
    # mov cr3, ebx
    assert "CR3" in qualification_text(28, 3 | (3 << 8))[0]
    assert "ebx" in qualification_text(28, 3 | (3 << 8))[2]
    # out 0x21, al: size 1, OUT, immediate, port 0x21 (Table 28-5)
    io = qualification_text("IO_INSTRUCTION", (0x21 << 16) | 0x40)
    assert "1 byte" in io[0] and "OUT" in io[1] and "immediate" in io[4] and "0x0021" in io[5]
    assert "IN" in qualification_text("IO_INSTRUCTION", (0x60 << 16) | 8 | 0x40)[1]


# ---- the widget -------------------------------------------------------------------------------

@pytest.fixture
def view():
    return VmExitView(guests.build("pagefault"), ept=True)


def test_widget_shows_exits_and_cycles(view):
    assert set(view.boxes) == {n for n, _, _ in CONTROLS}
    assert view.ept_box.value is True
    assert "VM exits" in view.summary_view.value and "cycles" in view.summary_view.value
    assert "IO_INSTRUCTION" in view.table_view.value
    assert "<svg" in view.chart_view.value
    assert view.message_view.value == ""
    # EPT: the VMM's choice is no CR3-load, no INVLPG exiting, no #PF in the bitmap
    assert not view.boxes["cr3_load_exiting"].value
    assert not view.boxes["invlpg_exiting"].value
    assert not view.boxes["exception_bitmap_pf"].value


def test_control_reruns_the_guest(view):
    before = Counter(view.exits)
    console = view.hw.console
    view.boxes["invlpg_exiting"].value = True
    assert view.exits["INVLPG"] > 0 and before["INVLPG"] == 0
    assert view.hw.console == console              # more exits, same output
    assert "INVLPG" in view.table_view.value
    view.boxes["exception_bitmap_pf"].value = True
    assert view.exits["EXCEPTION_NMI"] > 0
    assert view.hw.controls.exception_bitmap & (1 << 14)
    view.boxes["io_exiting"].value = False
    assert view.exits["IO_INSTRUCTION"] < before["IO_INSTRUCTION"]
    assert view.hw.console == console


def test_slider_reprices_without_rerunning(view):
    hw = view.hw
    exits = Counter(view.exits)
    total = view.total_cycles
    text = view.summary_view.value
    view.slider.value = 500
    assert view.hw is hw and view.exits == exits
    assert view.total_cycles == total - sum(exits.values()) * (P4_EXIT - 500)
    assert view.summary_view.value != text and "at 500 cycles per exit" in view.summary_view.value


def test_refused_control_is_a_message_not_an_exception():
    v = VmExitView(guests.build("pagefault"), ept=False)
    assert v.boxes["cr3_load_exiting"].value and v.boxes["exception_bitmap_pf"].value
    hw = v.hw
    v.boxes["cr3_load_exiting"].value = False          # shadow paging cannot do without it
    assert v.hw is hw
    assert v.boxes["cr3_load_exiting"].value is True   # put back
    assert "refuses" in v.message and "shadow paging" in v.message
    assert "refuses" in v.message_view.value
    v.boxes["interrupt_window_exiting"].value = False  # the VMM's, not the student's
    assert v.boxes["interrupt_window_exiting"].value is True
    assert "interrupt-window" in v.message_view.value


def test_ept_toggle_gives_paging_controls_back_to_the_vmm():
    v = VmExitView(guests.build("ctxswitch"), ept=True)
    ept_exits = sum(v.exits.values())
    v.ept_box.value = False
    assert v.hw.ept is False and v.message.startswith("EPT off (shadow paging): VM exits")
    assert v.boxes["cr3_load_exiting"].value and v.boxes["invlpg_exiting"].value
    assert sum(v.exits.values()) > 10 * ept_exits     # shadow paging: every CR3 load exits
    v.ept_box.value = True
    assert sum(v.exits.values()) == ept_exits


def test_static_form_and_guest_name():
    v = VmExitView("hello", chart=False)
    bundle = v._repr_mimebundle_()
    html = bundle["text/html"]
    assert "hello under" in html and "☑ EPT" in html and "IO_INSTRUCTION" in html
    assert f"cycles per exit: {P4_EXIT:,}" in html
    assert "could not draw" not in html


def test_exported_from_the_packages():
    import vmkit.viz
    import vmkit.widgets
    for name in ("exits_figure", "exits_table_html", "exit_rows", "exit_cycles",
                 "qualification_text"):
        assert name in vmkit.viz.__all__ and callable(getattr(vmkit.viz, name))
    assert "VmExitView" in vmkit.widgets.__all__ and vmkit.widgets.VmExitView is VmExitView


def test_each_control_says_what_it_changed_or_why_nothing(view):
    """Does every control give visible feedback: the exits and cycles before and after, or
    "no change" and why (the guest never executes the instruction the control catches)?"""
    n0 = sum(view.exits.values())
    view.boxes["invlpg_exiting"].value = True          # pagefault executes INVLPG
    n1 = sum(view.exits.values())
    assert view.message_kind == "info" and "INVLPG exiting on: " in view.message
    assert f"VM exits {n0:,} → {n1:,} (INVLPG +{n1 - n0:,})" in view.message
    assert "cycles " in view.message and view.message in view.message_view.value
    view.boxes["rdtsc_exiting"].value = True           # pagefault never reads the TSC
    assert view.message.startswith("RDTSC exiting on: no change. pagefault never executes "
                                   "RDTSC")
    view.boxes["hlt_exiting"].value = False
    assert "HLT exiting off: " in view.message and view.message_view.value
    view.boxes["exception_bitmap_pf"].value = True
    assert "exception bitmap: #PF on: " in view.message


def test_pf_bit_without_page_faults_says_so():
    """With EPT, ctxswitch takes no page fault: does the #PF bit say why it changed nothing?"""
    v = VmExitView(guests.build("ctxswitch"), ept=True, chart=False)
    v.boxes["exception_bitmap_pf"].value = True
    assert "no change" in v.message and "takes no page fault" in v.message


def test_exit_cost_out_of_range_is_refused_with_a_message_not_clamped(view):
    """Is 99999 cycles per exit refused with a message (the cost stays), never clamped to
    the slider's end in silence; and is a value inside the range taken exactly?"""
    total = view.total_cycles
    view.cost_box.value = 99999
    assert view.costs.vm_exit == P4_EXIT and view.total_cycles == total
    assert view.message_kind == "refused" and "between 50 and 20,000" in view.message
    assert "99,999" in view.message_view.value
    assert view.cost_box.value == P4_EXIT                 # the box shows the cost in force
    view.cost_box.value = 12000                         # beyond the old slider's 5000
    assert view.costs.vm_exit == 12000.0 and view.message == ""
    assert abs(view.slider.value - 12000) < 1
    assert "at 12,000 cycles per exit" in view.summary_view.value
    with pytest.raises(VmkitError, match="between 50 and 20,000"):
        view.set_exit_cost(-1)


def test_cost_model_name_is_modified_once():
    """Does the cost model's name say "(modified)" once, however many times it changes?"""
    v = VmExitView("hello", chart=False)
    for cycles in (500, 600, 700):
        v.cost_box.value = cycles
    assert v.costs.name == "p4-2006 (modified)"


#: each guest built small for the sweep below (one run with an instruction hook is ~20 times
#: slower than a plain run): a few iterations and a short timer period, so that every guest
#: also takes timer interrupts. Each small build executes every instruction address its default
#: build does (compared when these sizes were chosen; forkwait's default run does not even end
#: within the sweep's 2,000,000 steps). A guest not listed runs with its default parameters.
SMALL_GUESTS = {
    "callret": dict(iterations=2, depth=2), "compute": dict(iterations=300),
    "ctxswitch": dict(iterations=2), "diskio": dict(kb=1), "divzero": dict(iterations=2),
    "forkwait": dict(iterations=5, heap=1), "io": dict(bytes=128),
    "kcallret": dict(iterations=2, depth=2), "kpgfault": dict(iterations=2),
    "kptemod": dict(iterations=2), "pagefault": dict(pages=2), "ptemod": dict(iterations=2),
    "selfmod": dict(iterations=2), "syscall": dict(iterations=2),
    "tlbwalk": dict(pages=2, passes=1)}
SMALL_TIMER_PERIOD = 1000


def test_the_no_change_hints_name_guests_that_do_execute_the_instruction():
    """Are the "try a guest that does" hints true: the guests named for INVLPG execute it and
    take page faults under EPT, and no guest of the kit executes HLT or RDTSC (as the hints
    for those say) in a run to its power-off?"""
    from functools import cache

    from vmkit.widgets import exits as ex

    @cache
    def executed(name, small=False):
        image = (guests.build(name, timer_period=SMALL_TIMER_PERIOD, **SMALL_GUESTS.get(name, {}))
                 if small else guests.build(name))
        hw = HardwareAssisted(image, ept=True)
        seen = Counter()
        hw.on("instruction", lambda e: seen.update([e.text.split(" ", 1)[0]]))
        result = hw.run(max_steps=2_000_000)
        return seen, hw.stats["page_faults"], result.reason

    for name in ("pagefault", "ptemod", "tlbwalk"):
        assert name in ex._GUEST_HINT["invlpg_exiting"]
        assert executed(name)[0]["invlpg"] > 0
    for name in ("pagefault", "tlbwalk"):
        assert name in ex._PF_GUESTS and executed(name)[1] > 0
    assert "none of the kit's guests" in ex._GUEST_HINT["hlt_exiting"]
    assert "none of the kit's guests" in ex._GUEST_HINT["rdtsc_exiting"]
    for name in guests.names():
        try:
            seen, _, reason = executed(name, small=True)
        except VmkitError:          # a paravirtual-only guest: not run under hardware assist
            continue
        assert reason == "poweroff", (name, reason, "a smaller build for SMALL_GUESTS?")
        assert seen["hlt"] == 0 and seen["rdtsc"] == 0, name
