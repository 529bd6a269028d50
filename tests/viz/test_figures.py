"""The textbook figures of vmkit.viz.figures: counted from real traces, pure, deterministic."""

from __future__ import annotations

import graphviz
import pytest

from vmkit import guests
from vmkit.trace import Emulation, Interrupt, IRet, Reflection, Trace
from vmkit.viz import OKABE_ITO, render
from vmkit.viz.figures import trap_and_emulate_counts, trap_and_emulate_figure
from vmkit.vmm import Native, TrapAndEmulate


@pytest.fixture(scope="module")
def te_hello():
    vm = TrapAndEmulate(guests.build("hello"))
    vm.run()
    return vm


@pytest.fixture(scope="module")
def te_pagefault():
    vm = TrapAndEmulate(guests.build("pagefault", pages=8))
    vm.run()
    return vm


def _synthetic():
    return [Interrupt(1, vector=13, name="#GP", source="exception", from_ring=1, to_ring=0),
            Emulation(1, address=0x1000, text="cli", mnemonic="cli"),
            Interrupt(2, vector=13, name="#GP", source="exception", from_ring=1, to_ring=0),
            Emulation(2, address=0x1002, text="out 0xe9, al", mnemonic="out"),
            Interrupt(3, vector=14, name="#PF", source="exception", error_code=2,
                      from_ring=1, to_ring=0),
            Interrupt(4, vector=0x80, name="int 0x80", source="int", from_ring=3, to_ring=0),
            Reflection(4, vector=0x80, name="int 0x80", from_ring=3),
            Interrupt(5, vector=14, name="#PF", source="exception", error_code=6,
                      from_ring=3, to_ring=0),
            Reflection(5, vector=14, name="#PF", from_ring=3),
            IRet(6, from_ring=1, to_ring=3),
            Interrupt(7, vector=13, name="#GP", source="exception", from_ring=3, to_ring=0)]


def test_counts_from_synthetic_events():
    """Are system calls, privileged traps, emulations, reflections, returns to user mode and
    hidden page faults each counted where the figure needs them (a user-mode #GP is no
    privileged trap, a reflected #PF no hidden fault)?"""
    c = trap_and_emulate_counts(_synthetic())
    assert (c.syscalls, c.reflected_syscalls, c.privileged_traps) == (1, 1, 2)
    assert dict(c.emulated) == {"cli": 1, "out": 1} and c.emulations == 2
    assert c.irets_to_user == 1
    assert dict(c.other_reflections) == {"#PF": 1}
    assert c.hidden_page_faults == 1 and not c.dropped


def test_counts_match_the_monitors_own_statistics(te_hello, te_pagefault):
    """Does the figure count what te's own counters say (emulated per mnemonic, reflected
    system calls, hidden page faults)?"""
    for vm in (te_hello, te_pagefault):
        c = trap_and_emulate_counts(vm)
        s = vm.stats
        assert c.emulated == s["emulated"]
        assert c.syscalls == c.reflected_syscalls == s["reflected"]["int 0x80"]
        assert c.hidden_page_faults == s["hidden_page_faults"]
        assert c.privileged_traps == sum(s["emulated"].values())
    assert trap_and_emulate_counts(te_pagefault).other_reflections["#PF"] == \
        te_pagefault.stats["reflected"]["#PF"] > 0


def test_native_trace_has_no_vmm_steps():
    """Natively, is there nothing for the VMM (no emulation, no reflection, no hidden fault)
    while the system calls and returns to user mode are still counted?"""
    vm = Native(guests.build("hello"))
    vm.run()
    c = trap_and_emulate_counts(vm)
    assert c.syscalls == 5 and c.irets_to_user == 5
    assert c.emulations == c.reflected_syscalls == c.hidden_page_faults == 0
    src = trap_and_emulate_figure(vm).source
    assert "×0" in src and "dotted" in src       # steps never taken are drawn faint


def test_figure_labels_steps_with_counts_and_okabe_ito_colours(te_hello):
    """Does the figure number the six steps of the method, each with its count, in Okabe–Ito
    colours, with a title naming the guest and the monitor?"""
    g = trap_and_emulate_figure(te_hello)
    src = g.source
    c = trap_and_emulate_counts(te_hello)
    for step, n in (("①", c.syscalls), ("②", c.reflected_syscalls),
                    ("③", c.privileged_traps), ("④", c.emulations), ("⑤", c.emulations),
                    ("⑥", c.irets_to_user)):
        line = next(ln for ln in src.splitlines() if step in ln)
        assert f"×{n}" in line, (step, line)
    assert f"hidden) ×{c.hidden_page_faults}" in src
    assert "out ×31" in src
    for colour in ("blue", "orange", "reddish_purple", "bluish_green"):
        assert OKABE_ITO[colour] in src
    assert g.title.startswith("Trap and emulate, drawn from a run of hello under te: 5 system "
                              "calls, 39 privileged instructions emulated")
    assert "\n" not in g.title


def test_figure_renders_deterministic_titled_svg(te_hello):
    """Does the figure render to the same SVG twice, with its title as the accessible name?"""
    render._SVG_CACHE.clear()
    a = trap_and_emulate_figure(te_hello)._repr_mimebundle_()
    render._SVG_CACHE.clear()
    b = trap_and_emulate_figure(te_hello)._repr_mimebundle_()
    assert a == b
    svg = a["image/svg+xml"]
    assert 'role="img"' in svg and "<title>Trap and emulate, drawn from a run of hello" in svg
    assert "Generated by graphviz" not in svg


def test_figure_reads_the_same_from_a_trace_or_its_events(te_hello):
    """Is a Trace or a plain list of its events as good as the monitor (same counts), and does
    a trace that dropped events say so in the title?"""
    from_events = trap_and_emulate_counts(list(te_hello.trace))
    assert from_events == trap_and_emulate_counts(te_hello.trace)
    assert from_events.emulated == trap_and_emulate_counts(te_hello).emulated
    small = Trace(maxlen=3)
    for e in _synthetic():
        small.add(e)
    c = trap_and_emulate_counts(small)
    assert c.dropped
    assert "retained events" in trap_and_emulate_figure(small).title


def test_figure_layout_does_not_depend_on_the_counts(te_hello, te_pagefault):
    """Are the same nodes and arrows drawn for every run (so dot lays every run out alike)?"""
    def shape(g):
        return [ln.split("[")[0].strip() for ln in g.source.splitlines() if "->" in ln]
    assert shape(trap_and_emulate_figure(te_hello)) == \
        shape(trap_and_emulate_figure(te_pagefault)) == \
        shape(trap_and_emulate_figure(_synthetic()))


def test_missing_dot_shows_dot_text(te_hello, monkeypatch, tmp_path):
    """Without graphviz's dot, does the figure show its DOT text and the install hint?"""
    monkeypatch.setenv("PATH", str(tmp_path))
    render._SVG_CACHE.clear()
    g = trap_and_emulate_figure(te_hello)
    with pytest.raises(graphviz.ExecutableNotFound):
        g.pipe(format="svg")
    html = g._repr_mimebundle_()["text/html"]
    assert "apt-get install graphviz" in html and "digraph trap_and_emulate" in html
    render._SVG_CACHE.clear()
