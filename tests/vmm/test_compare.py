"""compare(), Comparison, presets, the `vmkit compare` command, the cost dashboard, and which
technique wins each of Adams & Agesen's nanobenchmarks."""

import pytest

from vmkit.errors import VmkitError
from vmkit.vmm import CostModel
from vmkit.vmm import presets
from vmkit.vmm.compare import (ADAMS_AGESEN_2006, FIG4_CYCLES, FIG4_KIT, FIG4_MISSES,
                               FIG4_MONITORS, Comparison, compare, fig4)


@pytest.fixture(scope="module")
def table():
    return compare(["syscall", ("ptemod", {"iterations": 50})], costs="p4-2006")


def test_lazy_export_is_callable():
    from vmkit.vmm import compare as c
    t = c(["hello"], monitors=["native", "bt"])
    assert isinstance(t, Comparison)


def test_presets_exist_and_cite():
    assert {"p4-2006", "modern-2020"} <= set(CostModel.presets())
    for name in CostModel.presets():
        m = CostModel.preset(name)
        assert m.source
        assert set(m.notes) == set(CostModel.CATEGORIES)
    assert CostModel.preset("modern-2020").vm_exit < CostModel.preset("p4-2006").vm_exit


def test_p4_preset_takes_the_papers_figures():
    """Is every figure of p4-2006 the one Adams & Agesen measured (Table 1, §3.3, §6.3, Fig. 4's
    native column), and does every note name its table or section or say "estimate"?"""
    p4, core2 = CostModel.preset("p4-2006"), CostModel.preset("core2-2006")
    t1 = presets.TABLE1
    assert (t1["vm_entry"], t1["pf_exit"]) == ((2409, 937), (1931, 1186))     # Table 1
    assert (t1["vmcb_read"], t1["vmcb_write"]) == ((178, 52), (171, 44))
    assert p4.vm_exit == 2409 + 1931 + 10 * 178                               # + §7.1
    assert core2.vm_exit == 937 + 1186 + 10 * 52
    native = {r: FIG4_CYCLES[r][0] for r in FIG4_CYCLES}
    assert p4.interrupt == native["syscall"] and p4.exception == native["divzero"]
    assert p4.port_io == native["in"]
    assert p4.trap + p4.emulate == 2030 and p4.callout == 1254 == 1254    # §3.3, rdtsc
    assert p4.tc_emulate == 216 == FIG4_CYCLES["in"][1]                   # §3.3; Fig. 4's BT in
    assert p4.translate == 2300                                           # §6.3
    assert p4.tc_lookup == FIG4_CYCLES["call/ret"][1] - FIG4_CYCLES["call/ret"][0]
    for m in (p4, core2):
        for cat, note in m.notes.items():
            assert ("§" in note or "Table" in note or "Fig." in note or "estimate" in note
                    or "assumption" in note), (m.name, cat, note)
    assert "Table 1" in p4.notes["vm_exit"] and "§6.3" in p4.notes["translate"]
    assert p4.notes["hypercall"].startswith("estimate")
    assert p4.notes["exit_handling"].startswith("estimate")
    # the shadow update is bounded by §6.3: BT's adapted PTE write (its instructions, a walk
    # and the update) takes 391 cycles in all
    from vmkit.vmm.bt.callouts import TRACE_SEQUENCE
    assert TRACE_SEQUENCE * p4.native + 2 * p4.page_walk + p4.shadow_update <= 391
    # Core 2: Table 1's second column, every other figure the P4's and said so
    assert {k: v for k, v in core2.as_dict().items() if k != "vm_exit"} == \
        {k: v for k, v in p4.as_dict().items() if k != "vm_exit"}
    assert core2.notes["translate"].startswith("P4 figure")


def test_unknown_preset_lists_them():
    with pytest.raises(VmkitError, match="p4-2006"):
        CostModel.preset("pentium-pro")
    with pytest.raises(VmkitError, match="modern-2020"):
        compare(["hello"], costs="nope")


def test_table_has_every_pair(table):
    assert table.monitors[:4] == ["native", "te", "bt", "hw"]
    assert table.guests == ["syscall", "ptemod(iterations=50)"]
    for g in table.guests:
        for m in table.monitors:
            assert table.cycles[(g, m)] == sum(table.breakdown[(g, m)].values()) > 0
            assert "instructions" in table.stats[(g, m)]
        assert table.relative[(g, "native")] == 1.0
    assert table.mismatches == []
    html = table.to_html()
    for g in table.guests:
        assert g.split("(")[0] in html
    assert "1.00&times;" in html
    assert f"{table.relative[('syscall', 'bt')]:.2f}&times;" in html
    text = table.to_text()
    assert "native" in text and "hw" in text and "x)" in text


def test_reprice_without_rerun(table, monkeypatch):
    import vmkit.vmm.base as base
    monkeypatch.setattr(base.Monitor, "run", lambda *a, **k: pytest.fail("rerun"))
    modern = table.reprice(CostModel.preset("modern-2020"))
    assert modern.costs.name == "modern-2020"
    assert modern.cycles[("syscall", "hw")] != table.cycles[("syscall", "hw")]
    assert modern.counts is table.counts
    cheap = table.reprice(table.costs.with_(vm_exit=1))
    assert cheap.cycles[("syscall", "native")] == table.cycles[("syscall", "native")]
    assert cheap.cycles[("syscall", "hw")] < table.cycles[("syscall", "hw")]


def test_a_run_asked_again_in_the_process_is_shared(monkeypatch):
    """Does a comparison that asks again for a run an earlier one made (same image, monitor,
    cost model, and a step limit the run did not reach) read its figures, as its own copies,
    and does anything else that decides a run (a limit it reaches, another cost model, a
    caller's factory) run?"""
    import importlib

    import vmkit.vmm.base as base
    import vmkit.vmm.world as world
    from vmkit.vmm.compare import monitor_factories
    monkeypatch.setattr(importlib.import_module("vmkit.vmm.compare"), "_RUNS", {})
    ran = []
    for cls in (base.Monitor, world.HostedMonitor):
        def counting_run(self, *a, _real=cls.run, **k):
            ran.append(self.name)
            return _real(self, *a, **k)
        monkeypatch.setattr(cls, "run", counting_run)
    first = compare([("hello", {})], monitors=["native", "bt"], max_steps=300_000)
    assert ran == ["native", "bt"]
    again = compare(["hello"], monitors=["bt", "native"], max_steps=300_000)
    assert ran == ["native", "bt"]                   # nothing ran again
    assert again.counts[("hello", "bt")] == first.counts[("hello", "bt")]
    assert again.stats[("hello", "bt")] == first.stats[("hello", "bt")]
    assert again.results[("hello", "bt")] == first.results[("hello", "bt")]
    assert again.consoles == first.consoles
    assert again.counts[("hello", "bt")] is not first.counts[("hello", "bt")]
    again.stats[("hello", "bt")]["instructions"] = -1     # a copy: the next reader is unharmed
    assert compare(["hello"], monitors=["bt"], max_steps=300_000).stats[
        ("hello", "bt")]["instructions"] == first.stats[("hello", "bt")]["instructions"]
    assert ran == ["native", "bt"]
    steps = first.results[("hello", "bt")].steps
    assert first.results[("hello", "bt")].reason == "poweroff" and steps < 300_000
    roomier = compare(["hello"], monitors=["bt"], max_steps=steps + 1)
    assert ran == ["native", "bt"]                   # a limit the run never reached: shared
    assert roomier.results == {k: v for k, v in first.results.items() if k in roomier.results}
    cut = compare(["hello"], monitors=["bt"], max_steps=steps - 1)
    assert ran == ["native", "bt"] * 2               # a limit it would reach: run
    assert cut.results[("hello", "bt")].reason == "max_steps"
    compare(["hello"], monitors=["bt"], max_steps=300_000, costs="modern-2020")
    assert ran == ["native", "bt"] * 3               # another cost model: run
    compare(["hello"], monitors=[("mine", monitor_factories()["bt"])], max_steps=300_000)
    assert ran == ["native", "bt"] * 3 + ["bt"]      # a caller's (label, factory): always run
    compare(["hello"], monitors=["bt"], max_steps=300_000, reuse=False)
    assert ran == ["native", "bt"] * 3 + ["bt", "native", "bt"]   # reuse=False: always run
    with pytest.raises(VmkitError, match="reuse"):
        compare(["hello"], reuse="no")


def test_console_mismatch_is_reported(table):
    import copy
    t = copy.copy(table)
    t.consoles = dict(table.consoles)
    t.consoles[("syscall", "bt")] = "something else\n"
    assert t.mismatches == [("syscall", "bt")]
    assert "console differs" in t.to_html()
    assert "CONSOLE DIFFERS" in t.to_text()


def test_bad_guest_and_monitor():
    with pytest.raises(VmkitError, match="unknown guest"):
        compare(["nosuch"])
    with pytest.raises(VmkitError, match="unknown monitor"):
        compare(["hello"], monitors=["vmware"])
    with pytest.raises(VmkitError):
        compare([("syscall", {"nosuchparam": 1})])


def test_plot(table):
    fig = table.plot()
    assert "p4-2006" in fig._suptitle.get_text()
    from vmkit.viz.render import figure_svg
    assert figure_svg(fig) == figure_svg(table.plot())


def test_cli(capsys):
    from vmkit.cli import main
    assert main(["compare", "syscall", "--preset", "p4-2006", "--monitor", "hw"]) == 0
    out = capsys.readouterr().out
    assert "native" in out and "hw" in out and "1.00x" in out
    assert main(["compare", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vmkit compare: unknown guest") and err.count("\n") == 1
    assert main(["compare", "syscall", "--preset", "x"]) == 1
    err = capsys.readouterr().err
    assert "p4-2006" in err and err.count("\n") == 1


def test_dashboard_reprices_without_kernel(table, monkeypatch):
    from vmkit.widgets import CostDashboard
    d = CostDashboard(table)
    for cat in ("trap", "vm_exit", "translate", "tc_lookup", "callout", "page_walk",
                "hidden_fault"):
        assert cat in d.sliders
    import vmkit.vmm.base as base
    monkeypatch.setattr(base.Monitor, "run", lambda *a, **k: pytest.fail("rerun"))
    before = d.comparison.cycles[("syscall", "hw")]
    old_table = d.table_view.value
    d.sliders["vm_exit"].value = 10
    assert d.costs.vm_exit == pytest.approx(10)
    assert d.comparison.cycles[("syscall", "hw")] < before
    assert d.table_view.value != old_table
    d.preset.value = "modern-2020"
    assert d.costs == CostModel.preset("modern-2020")
    assert d.sliders["vm_exit"].value == pytest.approx(CostModel.preset("modern-2020").vm_exit)
    bundle = d._repr_mimebundle_()
    assert "<table" in bundle["text/html"] and "<svg" in bundle["text/html"]
    assert bundle["image/svg+xml"].lstrip().startswith(("<svg", "<?xml"))


def test_dashboard_draws_its_plot_once_a_state(table, monkeypatch):
    """Does displaying the dashboard (live view, static HTML and SVG) draw its plot once, the
    same picture everywhere, and does a change of costs draw it again?"""
    from vmkit.viz import displays   # noqa: F401 - registers Comparison's plot
    from vmkit.viz import render
    from vmkit.widgets import CostDashboard
    drawn = []
    real = render.figure_svg

    def counting_svg(fig, title=None):
        drawn.append(title)
        return real(fig, title)
    monkeypatch.setattr(render, "figure_svg", counting_svg)
    d = CostDashboard(table)
    bundle = d._repr_mimebundle_()
    assert len(drawn) == 1
    d.sliders["vm_exit"].value = 10
    assert len(drawn) == 2
    again = d._repr_mimebundle_()
    assert len(drawn) == 2
    monkeypatch.undo()
    assert bundle["image/svg+xml"] == render.figure_svg(table.plot())
    assert render.figure_html(table.plot()) in bundle["text/html"]
    assert again["image/svg+xml"] == render.figure_svg(d.comparison.plot())
    assert d.plot_view.value == render.figure_html(d.comparison.plot())


# ---- which technique wins: Adams & Agesen 2006, Fig. 4, with the p4-2006 costs -------------
# first-generation VT-x had no nested paging: "hw-shadow" is the hardware VMM they measured
_KNOWN_DISAGREEMENTS: dict = {}   # none: call/ret runs in the guest kernel (kcallret), as A&A's did


def test_winner_matches_adams_agesen(fig4_rows):
    """Does the kit's software or hardware VMM win each Fig. 4 row, as in the paper?"""
    assert {r.guest for r in fig4_rows} == {g for g, _, _ in FIG4_KIT.values()}
    for r in fig4_rows:
        expected = ADAMS_AGESEN_2006[r.name][0]
        bt, hw = r.kit[1], r.kit[2]
        kit = "tie" if abs(bt - hw) <= 0.01 * max(bt, hw) else ("bt" if bt < hw else "hw")
        if r.guest in _KNOWN_DISAGREEMENTS:
            assert kit == _KNOWN_DISAGREEMENTS[r.guest] != expected
        else:
            assert kit == expected, (r.name, r.kit)
        assert r.kit[0] > 0


@pytest.fixture(scope="module")
def fig4_rows():
    return fig4("p4-2006")


def test_fig4_cells_within_a_factor_of_1_5(fig4_rows):
    """Is every cell of Fig. 4 within a factor of 1.5 of the paper's, except at most two named
    in FIG4_MISSES (and are those still misses, so the list stays honest)?"""
    assert [r.name for r in fig4_rows] == ["syscall", "in", "call/ret", "pgfault", "divzero",
                                           "ptemod"]
    for r in fig4_rows:
        for m, ok, q in zip(FIG4_MONITORS, r.within(1.5), r.ratio):
            assert ok == ((r.name, m) not in FIG4_MISSES), (r.name, m, q)
    assert len(FIG4_MISSES) <= 2


def test_fig4_every_rows_order_and_the_hw_bt_ratios(fig4_rows):
    """Does each row order native, bt and hw as the paper does, and is hw/bt on pgfault and
    on ptemod within a factor of 1.5 of the paper's 2.9 and 33?"""
    for r in fig4_rows:
        assert r.order == r.paper_order, (r.name, r.kit, r.paper)
    by = {r.name: r for r in fig4_rows}
    for name in ("pgfault", "ptemod"):
        r = by[name]
        paper, kit = r.paper[2] / r.paper[1], r.kit[2] / r.kit[1]
        assert 1 / 1.5 <= kit / paper <= 1.5, (name, kit, paper)


def test_cpu_bound_near_native():
    """Does a CPU-bound guest run within a few percent of native under bt and hw, once timer
    ticks come at a rate nearer a real timer's? (The kit's default tick, every 200,000 guest
    instructions, is about 200 times 100 Hz on a 3.8 GHz P4; each is two exits under hw.)"""
    small, large = ({"iterations": n, "timer_period": 2_000_000} for n in (50_000, 250_000))
    t = compare([("compute", small), ("compute", large)], monitors=["native", "bt", "hw"],
                costs="p4-2006")
    g1, g2 = t.guests
    extra = {m: t.cycles[(g2, m)] - t.cycles[(g1, m)]
             for m in t.monitors}
    for m in ("bt", "hw"):
        assert extra[m] / extra["native"] < 1.05, (m, extra)


def test_forkwait_under_both_2006_presets():
    """Does the copy-on-write forkwait cost more under BT than natively and more again under
    the hardware VMM (the paper's order, traced shadow page tables), do Table 1's cheaper Core 2
    exits lower the hardware VMM's ratio while leaving BT's alone (paper: 17.7 -> 14.8), is BT's
    ratio within a factor of 1.5 of the paper's on both machines, and is every cell outside it
    one that FORKWAIT_MISSES names (the hardware VMM's, above the paper's)? One run, priced
    twice."""
    from vmkit.vmm.compare import (FORKWAIT_MISS, FORKWAIT_MISSES, FORKWAIT_SECONDS, forkwait,
                                   per_operation)
    _, counts = per_operation("forkwait", FIG4_MONITORS, "p4-2006", param="iterations",
                              small=2, large=6)
    for preset, secs in FORKWAIT_SECONDS.items():
        model = CostModel.preset(preset)
        cyc = [sum(model.price(counts[m]).values()) for m in FIG4_MONITORS]
        kit = [c / cyc[0] for c in cyc]
        paper = [t / secs[0] for t in secs]
        assert 1 < kit[1] < kit[2], (preset, kit)
        for m, k, p in zip(FIG4_MONITORS[1:], kit[1:], paper[1:]):
            if (preset, m) in FORKWAIT_MISSES:
                assert k > 1.5 * p, (preset, m, k, p)
            else:
                assert p / 1.5 <= k <= 1.5 * p, (preset, m, k, p)
        if preset == "p4-2006":
            p4 = kit
    assert set(FORKWAIT_MISSES) <= {(p, "hw-traced") for p in FORKWAIT_SECONDS} and FORKWAIT_MISS
    assert kit[2] < p4[2] and kit[1] == pytest.approx(p4[1])   # the Core 2, then the P4
    with pytest.raises(VmkitError, match="p4-2006"):
        forkwait("modern-2020")
    with pytest.raises(VmkitError, match="vtlb"):
        forkwait("p4-2006", shadow="nested")
