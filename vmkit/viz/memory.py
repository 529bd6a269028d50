"""Pictures of memory virtualization, from real VMs.

* :func:`translation_walk` reads ONE translation out of a running or finished VM: guest virtual
  -> guest physical -> host physical, with the actual entries (guest PDE/PTE, shadow PDE/PTE,
  EPT entries) and the addresses they were read from, and the hardware walk's memory
  references numbered in the order the MMU makes them (``vmkit.machine.mmu``).
* :func:`translation_diagram` draws it: under shadow paging (te, bt, hw with ``ept=False``) the
  guest's tables next to the shadow table that maps the guest-virtual page straight to the host
  frame; under nested paging (hw with EPT) the two-dimensional walk, every reference numbered
  1..N -- for two guest levels over two EPT levels N = (2+1)(2+1) - 1 = 8 (Bhargava, Serebrin,
  Spadini & Manne, "Accelerating two-dimensional page walks for virtualized systems", ASPLOS
  2008, give (n+1)(m+1) - 1 for n guest and m nested levels: 24 for x86-64's 4 and 4).
  Natively (and for a monitor whose guest tables are the real ones) it is the plain 1-D walk.
* :func:`memory_comparison_figure` draws a :class:`vmkit.vmm.memory.MemoryComparison`.

Pure: nothing here runs or changes a monitor. Graphs are :class:`vmkit.viz.render.Diagram`
(deterministic SVG, DOT text when graphviz is missing, a title on every picture); colours are
Okabe–Ito.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from vmkit.machine.mmu import walk_tables
from vmkit.viz.render import GREY, OKABE_ITO, Diagram, new_figure

__all__ = ["WalkRef", "TranslationWalk", "translation_walk", "translation_diagram",
           "memory_comparison_figure", "BHARGAVA_2008"]

BHARGAVA_2008 = ("Bhargava et al., ASPLOS 2008, \"Accelerating two-dimensional page walks "
                 "for virtualized systems\"")

_P = 1
_CR0_PG = 1 << 31


@dataclass
class WalkRef:
    """One memory reference of the hardware page walk: ``n`` its place in the walk (1..N),
    ``table`` which structure ("guest PD", "guest PT", "EPT root", "EPT table", "shadow PD",
    "shadow PT", "PD", "PT"), ``hpa`` the host-physical address read, ``gpa`` its
    guest-physical address (guest structures only), ``value`` the entry, ``purpose`` what it
    translates."""
    n: int
    table: str
    hpa: int
    value: int
    gpa: int | None = None
    purpose: str = ""


@dataclass
class TranslationWalk:
    """One translation of a VM (see :func:`translation_walk`). ``kind`` is "shadow",
    "nested" or "direct"; ``refs`` the hardware walk's references in order (for "shadow": the
    walk of the shadow table); ``guest`` the guest's own entries as (table, gpa, hpa, value)
    (under shadow paging the VMM reads them on a hidden fault); ``gpa``/``hpa`` None when not
    mapped (``note`` says where it stopped)."""
    monitor: str
    kind: str
    gva: int
    guest_cr3: int
    real_cr3: int | None
    gpa: int | None
    hpa: int | None
    refs: list = field(default_factory=list)
    guest: list = field(default_factory=list)
    slice_base: int = 0
    note: str = ""
    guest_levels: int = 2
    nested_levels: int = 0
    ept_root: int | None = None
    #: direct paging (pv): the guest's tables are the real ones and hold machine (host-physical)
    #: addresses; ``refs`` and ``hpa`` are machine addresses, ``gpa`` = ``hpa`` - ``slice_base``
    machine_tables: bool = False

    @property
    def references(self) -> int:
        return len(self.refs)


def _target(vm, index):
    """(monitor, the VM object) of a monitor or of one of its VMs."""
    if hasattr(vm, "vms"):
        mon = vm
        i = index if index is not None else getattr(mon, "current", 0) or 0
        return mon, mon.vms[i]
    return getattr(vm, "monitor", None), vm


class _NotPresent(Exception):
    def __init__(self, refs: int):
        super().__init__(refs)
        self.refs = refs


def _not_present(lin: int, err: int, refs: int):
    raise _NotPresent(refs)


def _walk_guest(rd, gva: int, cr0: int, cr3: int, cr4: int):
    """The machine's one walk (:func:`vmkit.machine.mmu.walk_tables`) over the guest's tables,
    read-only: -> (entries [(address, value)], address or None, levels, note)."""
    entries: list = []

    def read(a: int, n: int) -> int:
        v = rd(a, n)
        entries.append((a, v))
        return v
    try:
        frame, _, _, refs = walk_tables(read, None, gva, False, False, cr0, cr3, cr4,
                                        _not_present, touch=False)
    except _NotPresent as x:
        what = f"PDE {gva >> 22}" if x.refs == 1 else f"PTE {(gva >> 12) & 0x3FF}"
        return entries, None, x.refs, f"the guest's {what} is not present: a guest page fault"
    return entries, frame | (gva & 0xFFF), refs, None


def translation_walk(vm, gva: int, *, index: int | None = None) -> TranslationWalk:
    """Read the translation of guest-virtual ``gva`` in ``vm`` (a monitor -- its current VM,
    or VM ``index`` -- or one VM object) as it stands now, from the VM's real tables: the
    guest's page directory and table (guest-physical), and the structure the real MMU walks
    (the shadow page table, or the EPT). Side-effect free."""
    mon, v = _target(vm, index)
    name = getattr(mon, "name", "?")
    gva &= 0xFFFFFFFF
    host = v.machine
    hrd = host._phys_rd
    # what the monitor's paging mode says the real MMU walks (vmkit.vmm.paging); a monitor
    # without one (native) walks the guest's tables in the machine's memory
    paging = getattr(mon, "paging", None)
    view = paging.view(v) if paging is not None else None
    if view is not None and view.kind == "direct":
        return _machine_walk(v, name, gva, hrd)
    ept = view.table if view is not None else None
    slice_base = getattr(v, "slice_base", 0)
    if hasattr(v, "phys_read_uint") and slice_base is not None and hasattr(v, "slice_base"):
        grd = v.phys_read_uint
        to_host = (lambda g: slice_base + g)
    else:   # the guest's physical memory is the machine's (native, direct paging)
        grd = hrd
        to_host = (lambda g: g)
    cpu = getattr(v, "vcpu", None) or host.cpu
    cr0, cr3, cr4 = cpu.cr0, cpu.cr3, cpu.cr4
    kind = view.kind if view is not None else "direct"
    w = TranslationWalk(name, kind, gva, cr3, host.cpu.cr3 if kind != "nested" else None,
                        None, None, slice_base=slice_base if kind != "direct" else 0,
                        nested_levels=ept.levels if ept is not None else 0)
    pdi, pti = gva >> 22, (gva >> 12) & 0x3FF

    # ---- the guest's own tables (guest-physical) ------------------------------------------
    gpa = None
    if not cr0 & _CR0_PG:
        w.guest_levels, gpa = 0, gva
    else:
        entries, gpa, levels, note = _walk_guest(grd, gva, cr0, cr3, cr4)
        w.guest += [("guest PD" if k == 0 else "guest PT", a, to_host(a), v)
                    for k, (a, v) in enumerate(entries)]
        if note:
            w.note = note
        elif levels == 1:
            w.guest_levels = 1
    w.gpa = gpa

    if kind == "direct":
        w.refs = [WalkRef(i + 1, t.split()[-1], hpa, val, g,
                          "page directory entry" if i == 0 else "page table entry")
                  for i, (t, g, hpa, val) in enumerate(w.guest)]
        w.hpa = gpa
        return w

    if kind == "shadow":
        mem_pd = view.root
        w.real_cr3 = mem_pd
        spde_a = mem_pd + (pdi << 2)
        spde = hrd(spde_a, 4)
        w.refs.append(WalkRef(1, "shadow PD", spde_a, spde, None,
                              f"shadow PDE {pdi} (host-physical)"))
        if spde & _P:
            spte_a = (spde & 0xFFFFF000) + (pti << 2)
            spte = hrd(spte_a, 4)
            w.refs.append(WalkRef(2, "shadow PT", spte_a, spte, None,
                                  f"shadow PTE {pti}: gva page -> host frame"))
            if spte & _P:
                w.hpa = (spte & 0xFFFFF000) | (gva & 0xFFF)
        if w.hpa is None:
            w.note = (w.note + "; " if w.note else "") + (
                "no shadow entry (not filled since the last flush): the next access takes a "
                "hidden page fault")
        return w

    # ---- nested: the two-dimensional walk, in the MMU's order (mmu._walk_nested) ----------
    root = ept.root
    w.ept_root = root
    n = 0

    def ept_walk(g: int, why: str):
        nonlocal n
        e1_a = root + ((g >> 20) & 0xFFC)
        e1 = hrd(e1_a, 4)
        n += 1
        w.refs.append(WalkRef(n, "EPT root", e1_a, e1, None, f"EPT root entry for gPA "
                                                              f"{g:#010x} ({why})"))
        if not e1 & 7:
            return None
        e2_a = (e1 & 0xFFFFF000) | ((g >> 10) & 0xFFC)
        e2 = hrd(e2_a, 4)
        n += 1
        w.refs.append(WalkRef(n, "EPT table", e2_a, e2, None, f"EPT entry for gPA {g:#010x} "
                                                              f"({why})"))
        if not e2 & 7:
            return None
        return (e2 & 0xFFFFF000) | (g & 0xFFF)

    if w.guest_levels == 0:
        w.hpa = ept_walk(gva, "the page")
    else:
        for table, g, _, val in w.guest:
            h = ept_walk(g, "the guest's PDE" if table == "guest PD" else "the guest's PTE")
            if h is None:
                w.note = f"EPT violation at gPA {g:#010x}"
                return w
            n += 1
            w.refs.append(WalkRef(n, table, h, val, g, f"the guest's "
                                  f"{'PDE' if table == 'guest PD' else 'PTE'} at gPA {g:#010x}"))
        if gpa is not None:
            w.hpa = ept_walk(gpa & 0xFFFFF000, "the data page")
            if w.hpa is not None:
                w.hpa |= gva & 0xFFF
            else:
                w.note = f"EPT violation at gPA {gpa:#010x}"
    return w


def _machine_walk(v, name: str, gva: int, hrd) -> TranslationWalk:
    """Direct paging (pv): the real MMU walks the guest's own tables from the real CR3, and
    every address in them is a machine (host-physical) address; the guest-physical address is
    the machine address minus the VM's slice base (a 1-D walk, as natively)."""
    cpu = v.real_cpu            # the real CR3 of this VM (saved while another VM runs)
    base, size = v.slice_base, v.memory_size
    gpa_of = (lambda m: m - base if 0 <= m - base < size else None)  # noqa: E731
    w = TranslationWalk(name, "direct", gva, v.vcpu.cr3, cpu.cr3, None, None, slice_base=base,
                        machine_tables=True)
    if not cpu.cr0 & _CR0_PG:
        w.guest_levels, w.hpa, w.gpa = 0, base + gva, gva
        return w
    entries, w.hpa, levels, note = _walk_guest(hrd, gva, cpu.cr0, cpu.cr3, cpu.cr4)
    for k, (a, v) in enumerate(entries):
        w.guest.append(("guest PD" if k == 0 else "guest PT", gpa_of(a), a, v))
        w.refs.append(WalkRef(k + 1, "PD" if k == 0 else "PT", a, v, gpa_of(a),
                              "page directory entry" if k == 0 else "page table entry"))
    if note:
        w.note = note
        return w
    if levels == 1:
        w.guest_levels = 1
    if w.hpa is not None:
        w.gpa = gpa_of(w.hpa)
    return w


# ---- pictures -----------------------------------------------------------------------------
_BLUE, _ORANGE = OKABE_ITO["blue"], OKABE_ITO["orange"]
_GREEN, _VERM = OKABE_ITO["bluish_green"], OKABE_ITO["vermillion"]
_TINT_BLUE, _TINT_ORANGE, _TINT_GREEN = "#CDE3F2", "#FBE3B3", "#CCEBDF"


#: characters per line of a diagram's caption
_CAPTION_WIDTH = 95


def _h(x) -> str:
    return "—" if x is None else f"{x:#010x}"


def translation_diagram(vm, gva: int, *, index: int | None = None,
                        title: str | None = None) -> Diagram:
    """Draw one translation of ``vm`` (a monitor or one of its VMs, or a
    :class:`TranslationWalk`): the shadow page table under shadow paging, the numbered
    two-dimensional walk under nested paging, the plain walk otherwise."""
    w = vm if isinstance(vm, TranslationWalk) else translation_walk(vm, gva, index=index)
    if w.kind == "nested":
        return _nested_diagram(w, title)
    if w.kind == "shadow":
        return _shadow_diagram(w, title)
    return _direct_diagram(w, title)


def _new(name: str, title: str, label: str) -> Diagram:
    # the caption's lines wrapped: one 200-character line made the picture twice as wide as
    # a notebook column, and so its text half as big once scaled to fit
    label = "\\n".join(line for part in label.split("\\n")
                        for line in textwrap.wrap(part, _CAPTION_WIDTH))
    g = Diagram(name, title=title, engine="dot")
    g.attr(rankdir="TB", label=label, labelloc="t", fontname="Helvetica", fontsize="13",
           nodesep="0.35", ranksep="0.45", newrank="true")
    g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10",
           fillcolor="white", color=OKABE_ITO["black"])
    g.attr("edge", fontname="Helvetica", fontsize="10")
    return g


def _gva_label(w: TranslationWalk) -> str:
    return (f"guest virtual {w.gva:#010x}\\nPD index {w.gva >> 22}, PT index "
            f"{(w.gva >> 12) & 0x3FF}, offset {w.gva & 0xFFF:#x}")


def _nested_diagram(w: TranslationWalk, title: str | None) -> Diagram:
    n, m = w.guest_levels, w.nested_levels
    formula = f"({n}+1)({m}+1)-1 = {(n + 1) * (m + 1) - 1}"
    head = (f"Nested paging under {w.monitor}: a two-dimensional walk of "
            f"{w.references} memory references for one TLB miss")
    tail = (f"gva {_h(w.gva)} -> gpa {_h(w.gpa)} -> hpa {_h(w.hpa)}; "
            f"{n} guest levels over {m} EPT levels: {formula} ({BHARGAVA_2008})")
    if w.note:
        tail += f"; {w.note}"
    title = title or f"{head}. {tail}"
    g = _new("nested_walk", title, f"{head}\\n{tail}")
    g.node("gva", _gva_label(w), fillcolor=_TINT_BLUE)
    g.node("gcr3", f"guest CR3 = gPA {_h(w.guest_cr3)}\\n(EPT pointer: root at hPA "
                   f"{_h(w.ept_root)})",
           shape="note", fillcolor=_TINT_GREEN)
    g.edge("gva", "gcr3", style="invis")
    prev = "gcr3"
    # one row per guest-physical address the walk translates: the EPT references, then the
    # guest entry (or, last, the data page)
    row, rows = [], []
    for r in w.refs:
        row.append(r)
        if r.table.startswith("guest"):
            rows.append(row)
            row = []
    if row:
        rows.append(row)
    for i, row in enumerate(rows):
        with g.subgraph() as s:
            s.attr(rank="same")
            for r in row:
                guest = r.table.startswith("guest")
                lab = (f"#{r.n}  {r.table}\\nread at hPA {r.hpa:#010x}"
                       + (f" (gPA {r.gpa:#010x})" if r.gpa is not None else "")
                       + f"\\nentry {r.value:#010x}")
                s.node(f"ref{r.n}", lab, fillcolor=_TINT_BLUE if guest else _TINT_ORANGE,
                       color=_BLUE if guest else _ORANGE, penwidth="1.5")
        for j, r in enumerate(row):
            colour = _BLUE if r.table.startswith("guest") else _ORANGE
            # rows stacked as a grid (the k-th reference of each row under the one above):
            # the step from one row's end to the next row's start does not pull the next
            # row to the right, which made a staircase three columns too wide
            g.edge(prev, f"ref{r.n}", label=f" {r.n} ", color=colour, fontcolor=colour,
                   penwidth="1.5", **({"constraint": "false"} if i and not j else {}))
            if i and j < len(rows[i - 1]):
                g.edge(f"ref{rows[i - 1][j].n}", f"ref{r.n}", style="invis", weight="10")
            prev = f"ref{r.n}"
    if w.hpa is not None:
        g.node("hpa", f"host physical {w.hpa:#010x}\\n(guest physical {_h(w.gpa)})",
               fillcolor="white", color=_VERM, penwidth="2")
        g.edge(prev, "hpa", color=_VERM, label=" data ", fontcolor=_VERM)
    g.node("legend", f"orange: EPT (gPA -> hPA), {m} levels; blue: the guest's tables "
                     f"(gva -> gPA), {n} levels.\\nEvery guest entry's address is "
                     f"guest-physical, so each needs an EPT walk\\nfirst: n*m + n + m = "
                     f"{n * m + n + m}", shape="plaintext", style="", fontcolor="#333333")
    return g


def _shadow_diagram(w: TranslationWalk, title: str | None) -> Diagram:
    head = f"Shadow paging under {w.monitor}: the MMU walks the shadow table, 2 references"
    tail = (f"gva {_h(w.gva)} -> gpa {_h(w.gpa)} (guest tables) -> hpa "
            f"{_h(None if w.gpa is None else w.slice_base + w.gpa)} (slice base "
            f"{w.slice_base:#x} + gpa); the shadow entry maps gva -> hpa {_h(w.hpa)} directly")
    if w.note:
        tail += f"; {w.note}"
    title = title or f"{head}. {tail}"
    g = _new("shadow_translation", title, f"{head}\\n{tail}")
    g.node("gva", _gva_label(w), fillcolor=_TINT_BLUE)
    with g.subgraph(name="cluster_guest") as s:
        s.attr(label="the guest's page tables (guest-physical;\\nthe VMM reads them on a "
                     "hidden page fault)", style="rounded", color=_BLUE, fontsize="10")
        s.node("gcr3", f"guest CR3 = gPA {w.guest_cr3:#010x}", shape="note",
               fillcolor=_TINT_GREEN)
        prev = "gcr3"
        for i, (table, gpa, hpa, val) in enumerate(w.guest):
            s.node(f"g{i}", f"{table} entry at gPA {gpa:#010x}\\n(hPA {hpa:#010x})\\n"
                            f"= {val:#010x}", fillcolor=_TINT_BLUE, color=_BLUE)
            s.edge(prev, f"g{i}", color=_BLUE, label=f" VMM {'ab'[i]} ", fontcolor=_BLUE)
            prev = f"g{i}"
        s.node("gpa", f"guest physical {_h(w.gpa)}", fillcolor="white", color=_BLUE)
        s.edge(prev, "gpa", color=_BLUE)
    with g.subgraph(name="cluster_shadow") as s:
        s.attr(label="the shadow page table (the real CR3:\\nwhat the MMU walks on a TLB miss)",
               style="rounded", color=_GREEN, fontsize="10")
        s.node("rcr3", f"real CR3 = hPA {_h(w.real_cr3)}", shape="note",
               fillcolor=_TINT_GREEN)
        prev = "rcr3"
        for r in w.refs:
            present = bool(r.value & _P)
            s.node(f"ref{r.n}", f"#{r.n}  {r.table} entry at hPA {r.hpa:#010x}\\n= "
                                f"{r.value:#010x}" + ("" if present else " (not present)"),
                   fillcolor=_TINT_GREEN if present else "white", color=_GREEN,
                   style="rounded,filled" if present else "rounded,dashed")
            s.edge(prev, f"ref{r.n}", label=f" {r.n} ", color=_GREEN, fontcolor=_GREEN,
                   penwidth="1.5")
            prev = f"ref{r.n}"
    g.edge("gva", "gcr3", color=GREY, style="dashed")
    g.edge("gva", "rcr3", color=GREY, style="dashed")
    host = None if w.gpa is None else w.slice_base + (w.gpa & 0xFFFFFFFF)
    g.node("hpa", f"host physical {_h(host)}", color=_VERM, penwidth="2")
    g.edge("gpa", "hpa", label=f" + slice base {w.slice_base:#x} ", color=_VERM,
           fontcolor=_VERM)
    if w.hpa is not None:
        g.edge(prev, "hpa", color=_GREEN, penwidth="2", label=" gva -> hpa directly ",
               fontcolor=_GREEN)
    if len(w.guest) == 2 and len(w.refs) == 2:
        g.edge("g1", "ref2", style="dotted", color=GREY, constraint="false",
               label=" the VMM derived it ", fontcolor="#333333")
    return g


def _direct_diagram(w: TranslationWalk, title: str | None) -> Diagram:
    head = (f"Page walk under {w.monitor}: the guest's tables are the real ones, "
            f"{w.references} references for one TLB miss")
    if w.machine_tables:    # pv: the entries hold machine addresses, not guest-physical ones
        tail = (f"gva {_h(w.gva)} -> machine (host physical) {_h(w.hpa)} (guest physical "
                f"{_h(w.gpa)} = machine - slice base {w.slice_base:#x}); the entries hold "
                "machine addresses")
    else:
        tail = f"gva {_h(w.gva)} -> physical {_h(w.hpa)}"
    tail += f"; {w.note}" if w.note else ""
    title = title or f"{head}. {tail}"
    g = _new("direct_walk", title, f"{head}\\n{tail}")
    g.node("gva", _gva_label(w), fillcolor=_TINT_BLUE)
    if w.machine_tables:
        g.node("cr3", f"real CR3 = machine {_h(w.real_cr3)}\\n(the guest's CR3 = gPA "
                      f"{_h(w.guest_cr3)})", shape="note", fillcolor=_TINT_GREEN)
    else:
        g.node("cr3", f"CR3 = {w.guest_cr3:#010x}", shape="note", fillcolor=_TINT_GREEN)
    g.edge("gva", "cr3", style="invis")
    prev = "cr3"
    where = "machine " if w.machine_tables else ""
    for r in w.refs:
        g.node(f"ref{r.n}", f"#{r.n}  {r.table} entry at {where}{r.hpa:#010x}\\n= "
                            f"{r.value:#010x}", fillcolor=_TINT_BLUE, color=_BLUE)
        g.edge(prev, f"ref{r.n}", label=f" {r.n} ", color=_BLUE, fontcolor=_BLUE)
        prev = f"ref{r.n}"
    if w.hpa is not None:
        g.node("hpa", f"machine {w.hpa:#010x}\\n(guest physical {_h(w.gpa)})"
               if w.machine_tables else f"physical {w.hpa:#010x}", color=_VERM, penwidth="2")
        g.edge(prev, "hpa", color=_VERM)
    return g


# ---- the comparison's figure ----------------------------------------------------------------
_COLOURS = [OKABE_ITO[k] for k in ("black", "blue", "orange", "bluish_green", "vermillion",
                                    "reddish_purple", "sky_blue", "yellow")]
_HATCHES = ["", "//", "..", "xx", "\\\\", "oo", "--", "++"]


def memory_comparison_figure(mc, *, keys=("hidden_page_faults", "pt_write_traps",
                                          "walk_references", "cycles_memory"),
                             title: str | None = None):
    """Grouped bars on a symmetric-log scale (0 shows as no bar, "—" as a hollow marker): a
    panel per counter, a group per guest, a bar per monitor (colour and hatch)."""
    from vmkit.vmm.memory import MEMORY_CATEGORIES, MemoryComparison
    t = mc.table
    keys = list(keys)
    fig = new_figure(figsize=(8.0, 1.0 + 2.2 * len(keys)))
    axes = fig.subplots(len(keys), 1, squeeze=False)[:, 0]
    mons, gs = list(mc.monitors), list(mc.guests)
    width = 0.8 / max(1, len(mons))
    for ax, key in zip(axes, keys):
        for j, m in enumerate(mons):
            xs, ys, missing = [], [], []
            for i, g in enumerate(gs):
                x = i + (j - (len(mons) - 1) / 2) * width
                if key == "cycles_memory":
                    v = sum(t[(g, m)][f"cycles_{c}"] for c in MEMORY_CATEGORIES)
                else:
                    v = t[(g, m)][key]
                if v is None:
                    missing.append(x)
                else:
                    xs.append(x)
                    ys.append(v)
            ax.bar(xs, ys, width=width, color=_COLOURS[j % len(_COLOURS)],
                   hatch=_HATCHES[j % len(_HATCHES)], edgecolor="white", linewidth=0.5,
                   label=m)
            if missing:
                ax.plot(missing, [0] * len(missing), linestyle="none", marker="o",
                        markerfacecolor="none", color=_COLOURS[j % len(_COLOURS)], markersize=4)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_xticks(range(len(gs)), gs)
        label = ("memory cycles (page_walk + shadow_update + hidden_fault)"
                 if key == "cycles_memory" else MemoryComparison.label(key))
        ax.set_title(label, loc="left", fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8,
               frameon=False)
    fig.suptitle(title or f"Memory virtualization compared (cycles under {mc.costs.name}; "
                          "hollow marker: no such mechanism)", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    return fig
