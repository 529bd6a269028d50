"""Who runs in which ring, and how control moved between them: a graphviz picture.

:func:`ring_diagram` draws rings 3 (top) to 0 (bottom) as stacked boxes. Each box holds the
software that runs there — natively the guest kernel in ring 0; under trap-and-emulate, binary
translation or paravirtualization the VMM in ring 0 and the deprivileged guest kernel in ring 1;
with hardware assist the guest keeps its rings (VMX non-root) and the VMM sits below them in VMX
root mode — and arrows for the transitions seen in the trace, each labelled with its count:
system calls (``int 0x80``), exceptions, hardware interrupts, traps to the VMM (the monitor's
interrupt events: every trap reaches ring 0 first), reflections back into the guest kernel,
returns after emulating privileged instructions, VM exits, hypercalls and ``iret``.

Counts come from the events the trace still holds (a ``Trace`` keeps the most recent
``maxlen`` events); the title says so when older events have been dropped.
"""

from __future__ import annotations

import html
import math
import textwrap
from collections import Counter
from dataclasses import dataclass, field

from vmkit.viz.render import GREY, OKABE_ITO, Diagram

__all__ = ["RingLayout", "ring_layout", "transition_counts", "group_transitions",
           "ring_diagram", "Transition", "CATEGORY_STYLE"]


@dataclass(frozen=True)
class RingLayout:
    """What runs where: ``components`` maps a component's name to its ring (``None`` for VMX
    root mode, below ring 0); ``kernel`` and ``user`` name the guest's kernel and user
    components, ``vmm`` the monitor (None natively)."""
    monitor: str
    components: dict = field(default_factory=dict)
    kernel: str = "guest kernel"
    user: str = "user programs"
    vmm: str | None = None
    root_mode: bool = False      # the VMM runs in VMX root mode (hardware assist)

    def ring_of(self, component: str):
        return self.components.get(component)

    def owner(self, ring: int) -> str:
        """The component that runs in ``ring`` (as the real CPU sees it)."""
        for name, r in self.components.items():
            if r == ring:
                return name
        return f"ring {ring}"


_TITLES = {"native": "native: no monitor", "te": "trap-and-emulate",
           "bt": "binary translation", "hw": "hardware assist (VT-x)",
           "pv": "paravirtualization"}


def ring_layout(monitor: str | object = "native") -> RingLayout:
    """The layout for a monitor (an object with ``.name`` or a short name: native, te, bt, hw,
    pv). Unknown monitors get the classic deprivileging layout (VMM 0, guest kernel 1)."""
    name = getattr(monitor, "name", monitor) or "native"
    user = "user programs"
    if name == "native":
        return RingLayout("native", {user: 3, "guest kernel": 0})
    if name == "hw":
        return RingLayout("hw", {user: 3, "guest kernel": 0, "VMM": None}, vmm="VMM",
                          root_mode=True)
    if name == "pv":
        return RingLayout("pv", {user: 3, "guest kernel (paravirtual)": 1, "hypervisor": 0},
                          kernel="guest kernel (paravirtual)", vmm="hypervisor")
    if name == "bt":
        return RingLayout("bt", {user: 3, "guest kernel (translated)": 1, "VMM": 0},
                          kernel="guest kernel (translated)", vmm="VMM")
    return RingLayout(str(name), {user: 3, "guest kernel": 1, "VMM": 0}, vmm="VMM")


def _infer_monitor(events) -> str:
    kinds = {getattr(e, "kind", "") for e in events}
    if "vm_exit" in kinds:
        return "hw"
    if "hypercall" in kinds:
        return "pv"
    if "translate" in kinds or "tc_lookup" in kinds:
        return "bt"
    if "emulate" in kinds or "reflect" in kinds:
        return "te"
    return "native"


@dataclass(frozen=True, order=True)
class Transition:
    """One kind of arrow: from a component to a component, its label and category."""
    src: str
    dst: str
    label: str
    category: str   # syscall, exception, interrupt, trap, reflect, return, vm_exit,
    #                 hypercall, other


#: colour (Okabe–Ito), line style and arrowhead of each category; styles differ as well as
#: colours so the picture reads in grey too
CATEGORY_STYLE = {
    "syscall": (OKABE_ITO["blue"], "solid", "normal"),
    "exception": (OKABE_ITO["vermillion"], "solid", "normal"),
    "interrupt": (OKABE_ITO["bluish_green"], "bold", "normal"),
    "trap": (OKABE_ITO["orange"], "solid", "vee"),
    "vm_exit": (OKABE_ITO["orange"], "solid", "vee"),
    "hypercall": (OKABE_ITO["sky_blue"], "solid", "vee"),
    "reflect": (OKABE_ITO["reddish_purple"], "solid", "onormal"),
    "return": (GREY, "dashed", "empty"),
    "other": (OKABE_ITO["black"], "dotted", "normal"),
}


def _interrupt_label(e) -> tuple[str, str]:
    src = getattr(e, "source", "exception")
    vec = getattr(e, "vector", 0)
    name = getattr(e, "name", "")
    if src in ("int", "int3", "into"):
        if vec == 0x80:
            return "int 0x80 (system call)", "syscall"
        return f"int {vec:#x}", "syscall"
    if src == "irq":
        irq = vec - 0x20
        return ("IRQ 0 (timer)" if irq == 0 else f"IRQ {irq}"), "interrupt"
    return f"{name or f'vector {vec}'} exception", "exception"


def _raw_key(e):
    """The fields of an event that decide its arrow (None for events that draw none). Counting
    these small tuples first and labelling the few distinct ones afterwards keeps a 20,000-event
    trace at a few milliseconds (making a Transition per event took ~3 µs each)."""
    k = e.kind
    if k == "interrupt":
        return (k, e.source, e.vector, e.name, e.from_ring, e.to_ring)
    if k == "iret":
        return (k, e.from_ring, e.to_ring)
    if k == "ring":
        return None if e.cause in ("interrupt", "iret", "exception", "irq", "int") else \
            (k, e.from_ring, e.to_ring, e.cause)
    if k == "emulate":
        return (k, getattr(e, "mnemonic", "") or (getattr(e, "text", "") or "?").split()[0])
    if k == "reflect":
        return (k, getattr(e, "name", "") or f"vector {getattr(e, 'vector', 0)}",
                getattr(e, "from_ring", None))
    if k == "vm_exit":
        return (k, getattr(e, "name", "") or str(getattr(e, "reason", "")))
    if k in ("vm_entry", "hypercall"):
        return (k, getattr(e, "name", ""))
    return None


class _Irq:   # what _interrupt_label reads, for a raw key
    __slots__ = ("source", "vector", "name")

    def __init__(self, source, vector, name):
        self.source, self.vector, self.name = source, vector, name


def transition_counts(events, layout: RingLayout) -> Counter:
    """Count the transitions in ``events``: ``Counter`` of :class:`Transition` -> count."""
    raw = Counter(map(_raw_key, events))
    raw.pop(None, None)
    c: Counter = Counter()
    emulated: Counter = Counter()
    own = layout.owner
    kern = layout.kernel
    vmm = layout.vmm
    for key, n in raw.items():
        k = key[0]
        if k == "interrupt":
            _, source, vector, name, fr, to = key
            label, cat = _interrupt_label(_Irq(source, vector, name))
            src, dst = own(fr), own(to)
            if vmm is not None and dst == vmm:
                label, cat = f"trap to VMM: {label}", "trap"
            c[Transition(src, dst, label, cat)] += n
        elif k == "iret":
            c[Transition(own(key[1]), own(key[2]), "iret", "return")] += n
        elif k == "ring":
            c[Transition(own(key[1]), own(key[2]), key[3] or "ring change", "other")] += n
        elif vmm is None:
            continue
        elif k == "emulate":
            emulated[key[1]] += n
        elif k == "reflect":
            c[Transition(vmm, kern, f"reflect {key[1]}", "reflect")] += n
        elif k == "vm_exit":
            c[Transition(kern, vmm, f"VM exit: {key[1]}", "vm_exit")] += n
        elif k == "vm_entry":
            c[Transition(vmm, kern, "VM entry", "return")] += n
        elif k == "hypercall":
            c[Transition(kern, vmm, f"hypercall {key[1]}".strip(), "hypercall")] += n
    if emulated:
        # one arrow back to the kernel, the emulated instructions listed on it (the trap that
        # led there is the VMM's #GP interrupt event, already drawn)
        top = sorted(emulated.items(), key=lambda kv: (-kv[1], kv[0]))
        what = ", ".join(f"{m} {k}" for m, k in top[:6]) + (", …" if len(top) > 6 else "")
        c[Transition(vmm, kern, f"resume after emulating ({what})", "return")] += \
            sum(emulated.values())
    return c


#: what an arrow that carries several transitions of one kind is called
_GROUP_TITLE = {"syscall": "software interrupts", "exception": "exceptions",
                "interrupt": "hardware interrupts", "trap": "traps to the VMM",
                "vm_exit": "VM exits", "hypercall": "hypercalls",
                "reflect": "reflected into the guest kernel", "return": "returns",
                "other": "ring changes"}
#: the part of a transition's label that its group's title already says
_PREFIXES = ("trap to VMM: ", "VM exit: ", "hypercall ", "reflect ")
_KEYS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_WRAP = 34      # characters per line of an arrow's label


def group_transitions(counts: Counter) -> list:
    """The transitions grouped by (source, destination, category): a sorted list of
    ``((src, dst, category), [(label, count), ...])``, the labels most frequent first."""
    groups: dict = {}
    for t, n in counts.items():
        groups.setdefault((t.src, t.dst, t.category), []).append((t.label, n))
    return [(k, sorted(v, key=lambda x: (-x[1], x[0])))
            for k, v in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1]))]


def _group_text(category: str, items: list, wrap: int = _WRAP) -> list[str]:
    """An arrow's label as lines of at most ~_WRAP characters: "label ×n" for one transition,
    else the group's title with its total, then the transitions and their counts."""
    if len(items) == 1:
        label, n = items[0]
        return textwrap.wrap(f"{label} ×{n}", wrap) or [f"×{n}"]
    total = sum(n for _, n in items)
    short = []
    for label, n in items:
        for p in _PREFIXES:
            if label.startswith(p):
                label = label[len(p):]
                break
        short.append(f"{label} {n}")
    return [f"{_GROUP_TITLE.get(category, category)} ×{total}:"] + \
        textwrap.wrap(", ".join(short), wrap)


def _hesc(text: str) -> str:
    """Text for a graphviz HTML-like label."""
    return html.escape(text, quote=False)


def _node_id(name: str) -> str:
    return "n_" + "".join(ch if ch.isalnum() else "_" for ch in name)


def _split_target(target):
    """(events, monitor-or-None, trace-or-None) from a monitor, a Trace or a list of events."""
    if hasattr(target, "trace") and hasattr(target, "vms"):
        return list(target.trace), target, target.trace
    if hasattr(target, "events") and hasattr(target, "counts"):
        return list(target), None, target
    return list(target), None, None


def ring_diagram(monitor_or_trace, *, monitor: str | None = None, title: str | None = None,
                 programs: list[str] | None = None, current_ring: int | None = None,
                 compact: bool = False) -> Diagram:
    """Rings 0–3 as stacked boxes showing what runs where, with arrows for the transitions seen
    (labelled with their counts).

    ``monitor_or_trace`` is a monitor (its trace, layout, guest programs and current ring are
    used), a ``Trace`` or a list of events. ``monitor`` (a short name: native, te, bt, hw, pv)
    overrides the layout, which is otherwise the monitor's or guessed from the events.
    ``current_ring`` marks where the CPU is now. Transitions between the same two components of
    the same kind share one arrow, its label listing them (wrapped, so the picture stays
    narrow). ``compact`` (the Stepper's side panel) labels each arrow with a letter and its
    count and lists what the letters stand for under the rings. Returns a
    :class:`vmkit.viz.render.Diagram` (a ``graphviz.Digraph`` that displays as deterministic SVG, or as DOT text with install
    instructions when ``dot`` is missing)."""
    events, mon, trace = _split_target(monitor_or_trace)
    if monitor is None:
        monitor = getattr(mon, "name", None) or _infer_monitor(events)
    layout = ring_layout(monitor)
    if programs is None and mon is not None:
        try:
            img = mon.vms[getattr(mon, "current", 0)].image
            progs = list(getattr(img, "programs", {}) or {})
            programs = progs[1:] if getattr(img, "kernel", True) else progs
        except Exception:
            programs = None
    real_ring = virt_ring = None
    if mon is not None and current_ring is None:
        try:
            real_ring = mon.cpu.cpl
            virt_ring = mon.vcpu.cpl
        except Exception:
            pass
    elif current_ring is not None:
        real_ring = current_ring
    counts = transition_counts(events, layout)
    total = sum(counts.values())
    if title is None:
        guest = ""
        if mon is not None:
            try:
                guest = f"{mon.vms[getattr(mon, 'current', 0)].image.name} under "
            except Exception:
                guest = ""
        title = f"Rings: {guest}{_TITLES.get(layout.monitor, layout.monitor)}"
        dropped = (trace is not None and getattr(trace, "total", 0) > len(events))
        title += (f" ({total} transition{'' if total == 1 else 's'}"
                  + (" in the retained events)" if dropped else ")"))

    g = Diagram("rings", title=title, engine="dot")
    # compact: no caption (the Stepper's status line names the guest and the monitor; the
    # title stays the picture's accessible name), the count heads the legend instead
    g.attr(rankdir="TB", label="" if compact else "\\n".join(textwrap.wrap(title, 90)),
           labelloc="t", fontname="Helvetica", fontsize="14",
           newrank="true", nodesep="0.25" if compact else "0.4",
           ranksep="0.15" if compact else "0.3")
    g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica",
           fontsize="11" if compact else "12", fillcolor="white", color=OKABE_ITO["black"],
           **({"margin": "0.08,0.03", "height": "0.3"} if compact else {}))
    g.attr("edge", fontname="Helvetica", fontsize="10")

    ring_names = {3: "ring 3 (least privileged)", 2: "ring 2", 1: "ring 1",
                  0: "ring 0 (most privileged)"}
    if layout.root_mode:
        ring_names = {r: f"VMX non-root {n}" for r, n in ring_names.items()}
    running = None
    if real_ring is not None:
        running = layout.owner(real_ring) if not layout.root_mode else \
            layout.owner(virt_ring if virt_ring is not None else real_ring)
    anchors = []
    levels = [3, 2, 1, 0] + ([None] if layout.root_mode else [])
    for ring in levels:
        cname = "cluster_root" if ring is None else f"cluster_ring{ring}"
        with g.subgraph(name=cname) as c:
            c.attr(label="VMX root mode (below the guest's rings)" if ring is None
                   else ring_names[ring], labeljust="l", style="rounded",
                   color=GREY, fontcolor="#333333", fontsize="11")
            comps = sorted(n for n, r in layout.components.items() if r == ring)
            if compact:
                c.attr(margin="5")
            if not comps:
                nid = f"unused{ring}"
                if compact:   # the ring's name says it; a point keeps the rings in order
                    c.attr(label=f"{ring_names[ring]} (unused)")
                    c.node(nid, "", shape="point", style="invis", width="0.01",
                           height="0.01")
                else:
                    c.node(nid, "(unused)", shape="plaintext", style="", fontcolor=GREY,
                           fontsize="10", height="0.2")
                anchors.append(nid)
                continue
            for comp in comps:
                label = comp
                if comp == layout.user and programs:
                    label += "\\n" + "\\n".join(textwrap.wrap("(" + ", ".join(programs) + ")",
                                                            32))
                elif comp == layout.kernel and layout.monitor != "native":
                    label += "\\n(believes it is in ring 0)" if ring != 0 else \
                        "\\n(guest ring 0)"
                elif comp == layout.vmm and not compact:
                    label += f"\\n({_TITLES.get(layout.monitor, layout.monitor)})"
                attrs = {}
                if comp == layout.vmm:
                    attrs["fillcolor"] = "#FBE3B3"   # tint of Okabe–Ito orange
                elif comp == layout.kernel:
                    attrs["fillcolor"] = "#CDE3F2"   # tint of Okabe–Ito blue
                if comp == running:
                    label = f"▶ {label}" if compact else label + "\\n▶ running now"
                    attrs["penwidth"] = "3"
                c.node(_node_id(comp), label, **attrs)
            anchors.append(_node_id(comps[0]))
    for a, b in zip(anchors, anchors[1:]):
        g.edge(a, b, style="invis")

    groups = group_transitions(counts)
    legend = []
    for i, ((src_name, dst_name, cat), items) in enumerate(groups):
        n = sum(k for _, k in items)
        colour, style, head = CATEGORY_STYLE.get(cat, CATEGORY_STYLE["other"])
        src = _node_id(src_name) if src_name in layout.components else _ensure(g, src_name)
        dst = _node_id(dst_name) if dst_name in layout.components else _ensure(g, dst_name)
        width = f"{1 + min(3.0, math.log10(n)):.2f}"
        text = _group_text(cat, items, 40 if compact else _WRAP)
        if compact:
            key = _KEYS[i] if i < len(_KEYS) else str(i + 1)
            label = f"{key} ×{n}"
            legend.append((key, colour, text))
        else:
            label = "\\n".join(text)
        g.edge(src, dst, label=label, color=colour, fontcolor=colour, style=style,
               arrowhead=head, penwidth=width, constraint="false")
    if legend:
        if running is not None:
            legend.append(("▶", OKABE_ITO["black"], ["where the CPU runs now"]))
        rows = (f'<tr><td align="left" colspan="2"><b>{total} transition'
                f'{"" if total == 1 else "s"}</b></td></tr>')
        rows += "".join(
            f'<tr><td align="left" valign="top"><font color="{c}"><b>{k}</b></font></td>'
            f'<td align="left" balign="left">{"<br/>".join(_hesc(x) for x in lines)}</td></tr>'
            for k, c, lines in legend)
        g.node("legend", f'<<table border="0" cellborder="0" cellspacing="0" '
                         f'cellpadding="1">{rows}</table>>',
               shape="plaintext", style="", fontsize="10")
        g.edge(anchors[-1], "legend", style="invis")
    if not counts:
        g.node("none", "no transitions yet", shape="plaintext", style="", fontcolor=GREY)
    return g


def _ensure(g, name: str) -> str:
    nid = _node_id(name)
    g.node(nid, name, shape="box", style="dashed", color=GREY)
    return nid
