"""The pictures and tables of vmkit.viz: pure, deterministic, and never failing to display."""

from __future__ import annotations

import re

import graphviz
import pytest
from matplotlib.figure import Figure

from vmkit import guests
from vmkit.trace import (Emulation, Interrupt, IRet, Reflection, RingTransition, Trace,
                         VmExit)
from vmkit.viz import (Diagram, DisasmRow, disassembly_html, disassembly_rows, events_html,
                       flag_values, flags_html, register_values, registers_html, ring_diagram,
                       ring_layout, transition_counts)
from vmkit.viz import render
from vmkit.viz.timeline import ring_series, ring_timeline, timeline_svg
from vmkit.vmm import Native


@pytest.fixture(scope="module")
def hello_done():
    vm = Native(guests.build("hello"))
    vm.run()
    return vm


@pytest.fixture
def no_dot(monkeypatch, tmp_path):
    """PATH without graphviz's dot (and an empty SVG cache, so nothing is served from it)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    render._SVG_CACHE.clear()
    yield
    render._SVG_CACHE.clear()


# ---- HTML helpers -----------------------------------------------------------------------------

def test_registers_html_marks_only_changed_registers():
    """Are exactly the registers that changed highlighted, with their old value?"""
    vm = Native(guests.build("hello"))
    before = register_values(vm.cpu)
    vm.step()   # the kernel's first instruction
    after = register_values(vm.cpu)
    changed = {k for k in after if after[k] != before.get(k)}
    html = registers_html(vm.cpu, before)
    assert "eip" in changed
    assert html.count('class="vmkit-changed"') == len(changed)
    assert f"was {before['eip']:08x}" in html
    assert f"{after['eip']:08x}*" in html


def test_registers_html_without_previous_highlights_nothing():
    """Does a register table with nothing to compare with highlight nothing?"""
    vm = Native(guests.build("hello"))
    html = registers_html(vm.cpu)
    assert "vmkit-changed" not in html
    assert "<caption" in html and "eax" in html and "cr3" in html and "cpl" in html


def test_flags_html_names_every_bit():
    """Are EFLAGS shown as named bits with their values, IOPL as a number?"""
    v = 0x3246   # IOPL 3, IF, ZF, PF, reserved bit 1
    f = flag_values(v)
    assert f["ZF"] == f["IF"] == f["PF"] == 1 and f["CF"] == 0 and f["IOPL"] == 3
    html = flags_html(v)
    for s in ("ZF=1", "IF=1", "PF=1", "CF=0", "OF=0", "IOPL=3", "00003246"):
        assert s in html
    assert flags_html(v, 0x3247).count("*") == 1   # CF changed


def test_disassembly_shows_source_and_changes_nothing():
    """Does the disassembly window give file:line and the source text, without touching the
    machine (no TLB fill, no accessed bits, no counters)?"""
    vm = Native(guests.build("hello"))
    vm.run(max_steps=8000)   # into user mode, paging on
    m = vm.machine
    state = (vm.cpu.state(), bytes(m.read(0, m.memory_size)), m.tlb_misses, m.steps)
    rows = disassembly_rows(vm, count=8, before=[vm.cpu.eip - 1])
    html = disassembly_html(vm, count=8)
    after = (vm.cpu.state(), bytes(m.read(0, m.memory_size)), m.tlb_misses, m.steps)
    assert state == after
    cur = [r for r in rows if r.current]
    assert len(cur) == 1 and cur[0].address == vm.cpu.eip and cur[0].text
    assert cur[0].file and cur[0].line and cur[0].source
    assert f"{cur[0].file}:{cur[0].line}" in html and "▶" in html
    assert len([r for r in rows if not r.executed]) == 8


def test_disassembly_of_unmapped_memory_says_so():
    """Is an address with no mapping shown as such instead of raising?"""
    vm = Native(guests.build("hello"))
    vm.run(max_steps=8000)
    html = disassembly_html(vm, 0x7FFFF000, count=3)
    assert "not mapped" in html


def test_events_html_describes_events():
    """Does the events table say what happened in words?"""
    evs = [Interrupt(5, vector=0x80, name="int", source="int", from_ring=3, to_ring=0),
           IRet(9, from_ring=0, to_ring=3, eip=0x400010)]
    html = events_html(evs)
    assert "int 0x80" in html and "ring 3 → 0" in html and "iret" in html
    assert "no events yet" in events_html([])


# ---- ring diagram ---------------------------------------------------------------------------

def test_ring_diagram_of_hello_has_syscall_and_iret_edges_with_counts(hello_done):
    """After running hello natively, are int 0x80 and iret drawn between user programs and the
    guest kernel, with their counts?"""
    g = ring_diagram(hello_done)
    assert isinstance(g, graphviz.Digraph)
    src = g.source
    n_int = sum(1 for e in hello_done.trace if e.kind == "interrupt" and e.vector == 0x80)
    n_iret = sum(1 for e in hello_done.trace if e.kind == "iret")
    assert n_int and n_iret
    assert re.search(rf'n_user_programs -> n_guest_kernel \[label="int 0x80 \(system call\) '
                     rf'×{n_int}"', src)
    assert re.search(rf'n_guest_kernel -> n_user_programs \[label="iret ×{n_iret}"', src)
    assert "ring 0 (most privileged)" in src and "(hello)" in src
    assert "label=" in src and "Rings: hello under native" in src   # a title


def test_ring_layouts_put_the_guest_kernel_where_each_monitor_runs_it():
    """Is the guest kernel in ring 0 natively, ring 1 under te/bt/pv, and the VMM in VMX root
    mode under hw?"""
    assert ring_layout("native").components["guest kernel"] == 0
    te = ring_layout("te")
    assert te.components["guest kernel"] == 1 and te.components["VMM"] == 0
    assert ring_layout("pv").components["hypervisor"] == 0
    hw = ring_layout("hw")
    assert hw.root_mode and hw.components["VMM"] is None and hw.components["guest kernel"] == 0


def test_trap_and_emulate_transitions_from_synthetic_trace():
    """Under trap-and-emulate (events as vmkit.vmm.te records them: every trap is an interrupt
    into ring 0, then an emulation or a reflection), are traps drawn into the VMM, and
    emulations and reflections as the VMM's ways back into the ring-1 kernel?"""
    evs = [Interrupt(1, vector=13, name="#GP", source="exception", from_ring=1, to_ring=0),
           Emulation(2, address=0x1000, text="cli", mnemonic="cli"),
           Interrupt(3, vector=13, name="#GP", source="exception", from_ring=1, to_ring=0),
           Emulation(4, address=0x1002, text="out 0xe9, al", mnemonic="out"),
           Interrupt(5, vector=13, name="#GP", source="exception", from_ring=1, to_ring=0),
           Emulation(6, address=0x1002, text="out 0xe9, al", mnemonic="out"),
           Interrupt(7, vector=0x80, name="int 0x80", source="int", from_ring=3, to_ring=0),
           Reflection(7, vector=0x80, name="int 0x80", from_ring=3),
           IRet(9, from_ring=1, to_ring=3),
           RingTransition(9, from_ring=1, to_ring=3, cause="iret")]
    c = {(t.src, t.dst, t.label): n for t, n in transition_counts(evs, ring_layout("te")).items()}
    assert c == {
        ("guest kernel", "VMM", "trap to VMM: #GP exception"): 3,
        ("VMM", "guest kernel", "resume after emulating (out 2, cli 1)"): 3,
        ("user programs", "VMM", "trap to VMM: int 0x80 (system call)"): 1,
        ("VMM", "guest kernel", "reflect int 0x80"): 1,
        ("guest kernel", "user programs", "iret"): 1,
    }
    src = ring_diagram(evs).source     # layout guessed from the events
    flat = src.replace("\\n", " ")     # long labels are wrapped
    assert "resume after emulating (out 2, cli 1) ×3" in flat and "n_VMM" in src


def test_transitions_of_one_kind_share_one_wrapped_arrow():
    """Are several transitions of one kind between the same two components one arrow (its
    label: the kind, the total and each transition's count, in lines of ~34 characters)
    rather than one arrow each (which made the picture 1,600 px wide)?"""
    evs = [Interrupt(1, vector=13, name="#GP", source="exception", from_ring=1, to_ring=0),
           Interrupt(2, vector=14, name="#PF", source="exception", from_ring=1, to_ring=0),
           Interrupt(3, vector=13, name="#GP", source="exception", from_ring=1, to_ring=0)]
    src = ring_diagram(evs, monitor="te").source
    edges = [line for line in src.splitlines() if "n_guest_kernel -> n_VMM [label" in line]
    assert len(edges) == 1
    assert 'label="traps to the VMM ×3:\\n#GP exception 2, #PF exception 1"' in edges[0]
    labels = [line.split('label="')[1].split('"')[0] for line in src.splitlines()
              if "->" in line and 'label="' in line]
    long_label = max(len(part) for label in labels for part in label.split("\\n"))
    assert long_label <= 40


def test_compact_ring_diagram_keys_its_arrows_and_explains_them_underneath():
    """In the Stepper's narrow panel, are the arrows labelled with a letter and a count, the
    letters explained in a legend under the rings?"""
    evs = [Interrupt(7, vector=0x80, name="int 0x80", source="int", from_ring=3, to_ring=0),
           Reflection(7, vector=0x80, name="int 0x80", from_ring=3),
           IRet(9, from_ring=1, to_ring=3)]
    g = ring_diagram(evs, monitor="te", compact=True, current_ring=1)
    src = g.source
    assert 'label="A ×1"' in src and 'label="C ×1"' in src
    assert "legend" in src and "reflect int 0x80 ×1" in src and "where the CPU runs now" in src
    assert "ring 2 (unused)" in src
    svg = render.diagram_svg(g)
    width = float(re.search(r'<svg width="([\d.]+)pt', svg).group(1))
    assert width < 400      # points: the full form with these labels is wider


def test_hw_diagram_draws_root_mode_and_vm_exits():
    """Under hardware assist, is the VMM drawn below the rings with VM exits into it?"""
    evs = [VmExit(3, reason=30, name="io"), VmExit(4, reason=30, name="io")]
    src = ring_diagram(evs, monitor="hw").source
    assert "cluster_root" in src and "VM exit: io ×2" in src


def test_ring_diagram_bundle_is_svg_and_deterministic(hello_done):
    """Does a diagram display as SVG (and HTML with inline SVG), byte-identical across two
    renders, without graphviz's version comment?"""
    render._SVG_CACHE.clear()
    a = ring_diagram(hello_done)._repr_mimebundle_()
    render._SVG_CACHE.clear()
    b = ring_diagram(hello_done)._repr_mimebundle_()
    assert a["image/svg+xml"] == b["image/svg+xml"]
    assert a["text/html"] == b["text/html"]
    svg = a["image/svg+xml"]
    assert "<svg" in svg and "Generated by graphviz" not in svg
    assert "<title>Rings: hello under native" in svg and 'role="img"' in svg
    assert "<svg" in a["text/html"] and "<?xml" not in a["text/html"]


def test_missing_dot_shows_dot_text_and_install_hint(hello_done, no_dot):
    """Without dot, does the picture show the install hint and the DOT text instead of
    raising?"""
    g = ring_diagram(hello_done)
    with pytest.raises(graphviz.ExecutableNotFound):
        g.pipe(format="svg")          # the situation is real
    bundle = g._repr_mimebundle_()
    assert "image/svg+xml" not in bundle
    html = bundle["text/html"]
    assert "apt-get install graphviz" in html and "conda install graphviz" in html
    assert "digraph rings" in html and "int 0x80 (system call)" in html
    assert "digraph rings" in bundle["text/plain"]
    assert "apt-get install graphviz" in render.diagram_html(g)
    assert "<svg" in g._repr_image_svg_xml()       # even the SVG hook answers


def test_diagram_copy_keeps_title():
    """Does a copied Diagram keep its title (graphviz copies by constructor keywords)?"""
    g = Diagram("x", title="a title")
    assert g.copy().title == "a title"


# ---- timeline -------------------------------------------------------------------------------

def test_ring_series_from_transitions():
    """Is the ring a step function through the ring transitions?"""
    evs = [RingTransition(10, from_ring=0, to_ring=3, cause="iret"),
           RingTransition(20, from_ring=3, to_ring=0, cause="interrupt")]
    xs, ys = ring_series(evs, start=0, end=30)
    assert xs == [0, 10, 20, 30] and ys == [0, 3, 0, 0]
    assert ring_series([]) == ([], [])


def test_ring_timeline_is_a_titled_figure_with_deterministic_svg(hello_done):
    """Is the timeline a matplotlib Figure with a title, marks for the interrupts, and SVG
    that is byte-identical across two renders and carries no date?"""
    fig = ring_timeline(hello_done)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert "hello" in ax.get_title()
    labels = ax.get_legend_handles_labels()[1]
    assert any(lab.startswith("software interrupt") for lab in labels)
    a, b = timeline_svg(hello_done), timeline_svg(hello_done)
    assert a == b
    assert "<dc:date>" not in a and "<title>Ring over time" in a


def test_ring_timeline_displays_as_svg_without_pyplot(hello_done):
    """Does the figure display as SVG by itself (no pyplot inline backend needed)?"""
    bundle = ring_timeline(hello_done)._repr_mimebundle_()
    assert "<svg" in bundle["image/svg+xml"] and "<title>Ring over time" in bundle["image/svg+xml"]


def test_timeline_without_ring_events_says_so():
    """Does an empty trace give a figure that says there is nothing yet (not an error)?"""
    fig = ring_timeline(Trace())
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("no ring transitions" in t for t in texts)


def test_figure_html_and_with_title():
    """Do figures become HTML with inline SVG and an accessible name?"""
    fig = ring_timeline([RingTransition(1, from_ring=0, to_ring=3)], title="T")
    html = render.figure_html(fig)
    assert html.startswith("<figure") and "<svg" in html and 'aria-label="T"' in html
    assert render.with_title("<svg a='1'><g/></svg>", "x<y") == \
        "<svg a='1' role=\"img\" aria-label=\"x&lt;y\"><title>x&lt;y</title><g/></svg>"


def test_tight_layout_figure_svg_is_drawn_once_and_is_matplotlibs_own(monkeypatch):
    """A figure laid out by tight_layout() keeps a do-nothing layout engine that makes savefig
    draw it twice: does figure_svg draw it once, give the very SVG savefig gives with the
    engine in place, and leave the engine as it was?"""
    import io

    import matplotlib

    def make():
        fig = render.new_figure(figsize=(4, 2))
        ax = fig.subplots()
        ax.barh([0, 1], [3, 5], hatch="//", label="x")
        ax.set_title("a title")
        fig.legend(loc="lower center")
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        return fig

    ref = make()
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "vmkit", "svg.fonttype": "path"}):
        ref.savefig(buf, format="svg", metadata={"Date": None})
    fig = make()
    engine = fig.get_layout_engine()
    assert engine is not None
    draws = []
    real_draw = type(fig).draw
    monkeypatch.setattr(type(fig), "draw",
                        lambda self, r: (draws.append(1), real_draw(self, r))[1])
    svg = render.figure_svg(fig)
    assert len(draws) == 1
    assert svg == render.with_title(buf.getvalue(), "a title")
    assert fig.get_layout_engine() is engine


def test_narrow_disassembly_leaves_out_bytes_and_comments_but_keeps_them_as_tooltips():
    """For the Stepper's narrow column: are the bytes and the source lines' comments left
    out of the cells (the whole line still in the tooltip), and a '#' in quotes kept?"""
    rows = [DisasmRow(0x1000, "popfd", b"\x9d", "guest.s", 28,
                      "popfd                 # interrupts on -- or not", current=True),
            DisasmRow(0x1001, "nop", b"\x90", "guest.s", 29, "    .ascii \"#1\"  # a hash")]
    html = disassembly_html(rows, raw_bytes=False, comments=False)
    assert ">popfd</td>" in html and 'title="popfd                 # interrupts on' in html
    assert "# interrupts on -- or not</td>" not in html
    assert '.ascii &quot;#1&quot;</td>' in html
    assert "9d" not in html
    full = disassembly_html(rows)
    assert "9d" in full and "# interrupts on -- or not</td>" in full


_DISPLAY_SCRIPT = r'''
import matplotlib
matplotlib.use("agg")
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
import vmkit.nbtools
vmkit.nbtools.notebook_setup()
import matplotlib.figure
from vmkit.viz import render
draws = []
real = matplotlib.figure.Figure.draw
matplotlib.figure.Figure.draw = lambda self, r: (draws.append(1), real(self, r))[1]

def make(cls):
    fig = cls(figsize=(4, 2))
    ax = fig.subplots()
    ax.barh([0, 1], [3, 5], label="x")
    ax.set_title("a title")
    fig.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))   # outside: only a crop keeps it
    return fig

kit, _ = shell.display_formatter.format(make(render.new_figure))
print("kit", len(draws), "<title>a title</title>" in kit["image/svg+xml"], kit["text/plain"])
draws.clear()
data, _ = shell.display_formatter.format(make(matplotlib.figure.Figure))
print("plain", len(draws), "<svg" in data["image/svg+xml"], "<title>a title" in data["image/svg+xml"])
print("same", kit["image/svg+xml"] == render.figure_svg(make(render.new_figure), tight=True),
      render.with_title(data["image/svg+xml"], "a title") == kit["image/svg+xml"])
'''


def test_a_kit_figure_in_a_set_up_kernel_is_drawn_once_with_its_title():
    """In a kernel set up by notebook_setup, the inline backend registers an SVG printer for
    every matplotlib Figure, and IPython prefers it to the figure's own bundle: the kit's
    figures were drawn three times (their bundle once, the printer twice: the tight crop
    measures first) and shown without their title. Is a kit figure now drawn as one tight
    SVG (one measuring pass, one drawing) that keeps its title, and a plain Figure still shown
    by the inline backend?"""
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-c", _DISPLAY_SCRIPT], capture_output=True,
                         text=True)
    out = run.stdout.splitlines() + [run.stderr[-2000:]]
    assert out[0] == "kit 2 True <figure: a title>", out
    assert out[1] == "plain 2 True False", out
    assert out[2] == "same True True", out      # the crop the inline backend makes, + title
