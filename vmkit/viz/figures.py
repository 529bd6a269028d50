"""Textbook figures drawn from real runs.

:func:`trap_and_emulate_figure` draws the classic trap-and-emulate picture (the course notes'
"Fig. 7.3.1"; Popek & Goldberg, CACM 1974) from the events of an actual run: the guest's user
programs and its kernel on one side, the VMM on the other, and the steps of the method as
numbered arrows, each labelled with how often it happened:

1. a user program makes a system call (``int 0x80``); in ring 3 under a VMM it arrives at the
   VMM first,
2. which reflects it into the guest kernel through the guest's own IDT;
3. the guest kernel, deprivileged to ring 1, executes a privileged instruction, which traps;
4. the VMM emulates it on the virtual CPU (``monitor.vcpu``),
5. and returns to the guest kernel after the instruction;
6. the kernel's ``iretd`` takes it back to user mode (an outward return: no trap).

Page faults that the VMM handles on its own (shadow page tables) appear as a dotted arrow: the
guest never sees them.

The counts come from the events the trace still holds (a ``Trace`` keeps the most recent
``maxlen`` events); the title says so when older events were dropped. Pure: nothing here runs
or changes a monitor.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from vmkit.viz.render import GREY, OKABE_ITO, Diagram

__all__ = ["TrapEmulateCounts", "trap_and_emulate_counts", "trap_and_emulate_figure"]

_SOFT = ("int", "int3", "into")


@dataclass
class TrapEmulateCounts:
    """What the trap-and-emulate figure shows, counted from trace events.

    ``syscalls``: software interrupts raised in ring 3; ``reflected_syscalls``: those the VMM
    reflected into the guest kernel; ``privileged_traps``: #GP faults raised outside ring 3 (the
    deprivileged kernel's privileged instructions); ``emulated``: instructions the VMM emulated,
    by mnemonic; ``irets_to_user``: returns to ring 3; ``other_reflections``: every other
    reflection by name (``"irq 0"``, ``"#PF"``, ...); ``hidden_page_faults``: page faults that
    reached the VMM and were not reflected; ``dropped``: True when the trace had dropped older
    events, so the counts cover only the retained ones."""
    syscalls: int = 0
    reflected_syscalls: int = 0
    privileged_traps: int = 0
    emulated: Counter = field(default_factory=Counter)
    irets_to_user: int = 0
    other_reflections: Counter = field(default_factory=Counter)
    hidden_page_faults: int = 0
    dropped: bool = False

    @property
    def emulations(self) -> int:
        return sum(self.emulated.values())


def _events(target):
    """(events, monitor or None, dropped) from a monitor, a Trace or a list of events."""
    if hasattr(target, "trace") and hasattr(target, "vms"):
        trace = target.trace
        return list(trace), target, trace.total > len(trace)
    if hasattr(target, "events") and hasattr(target, "counts"):
        return list(target), None, target.total > len(target)
    return list(target), None, False


def trap_and_emulate_counts(target) -> TrapEmulateCounts:
    """Count the steps of trap-and-emulate in a monitor's trace, a ``Trace`` or a list of
    events (see :class:`TrapEmulateCounts`)."""
    events, _, dropped = _events(target)
    c = TrapEmulateCounts(dropped=dropped)
    pf_traps = reflected_pf = 0
    for e in events:
        k = getattr(e, "kind", "")
        if k == "interrupt":
            if e.source in _SOFT and e.from_ring == 3:
                c.syscalls += 1
            elif e.source == "exception" and e.vector == 13 and e.from_ring != 3:
                c.privileged_traps += 1
            elif e.source == "exception" and e.vector == 14 and e.to_ring == 0:
                pf_traps += 1
        elif k == "reflect":
            name = e.name or f"vector {e.vector}"
            if name.startswith("int") and e.from_ring == 3:
                c.reflected_syscalls += 1
            else:
                c.other_reflections[name] += 1
                if e.vector == 14:
                    reflected_pf += 1
        elif k == "emulate":
            c.emulated[e.mnemonic or (e.text or "?").split()[0]] += 1
        elif k == "iret" and e.to_ring == 3:
            c.irets_to_user += 1
    # only a VMM sees page faults it does not pass on; natively every #PF is the kernel's
    if c.emulations or c.reflected_syscalls or c.other_reflections:
        c.hidden_page_faults = max(0, pf_traps - reflected_pf)
    return c


def _times(n: int) -> str:
    return f"×{n:,}"


def _top(counter: Counter, k: int = 5, per_line: int = 3) -> str:
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    parts = [f"{name} ×{n:,}" for name, n in items[:k]]
    text = ",\\n".join(", ".join(parts[i:i + per_line]) for i in range(0, len(parts), per_line))
    return text + (", …" if len(items) > k else "")


def trap_and_emulate_figure(target, *, title: str | None = None) -> Diagram:
    """The trap-and-emulate figure with the counts of a real run.

    ``target`` is a monitor (its trace and guest name are used), a ``Trace`` or a list of
    events. Returns a :class:`vmkit.viz.render.Diagram` (a ``graphviz.Digraph`` that displays
    as deterministic SVG with ``title`` as its accessible name, or as DOT text with install
    instructions when graphviz's ``dot`` is missing). Colours are Okabe–Ito, and every arrow
    also differs in line style or head, so the figure reads in grey too."""
    _, mon, _ = _events(target)
    c = trap_and_emulate_counts(target)
    label = title
    if title is None:
        guest = ""
        if mon is not None:
            try:
                guest = f" of {mon.vms[getattr(mon, 'current', 0)].image.name}"
                guest += f" under {mon.name}"
            except Exception:
                guest = ""
        head = f"Trap and emulate, drawn from a run{guest}:"
        tail = (f"{c.syscalls:,} system calls, {c.emulations:,} privileged instructions "
                f"emulated" + (" (counts from the retained events)" if c.dropped else ""))
        title, label = f"{head} {tail}", f"{head}\\n{tail}"   # the picture breaks the line

    blue, orange = OKABE_ITO["blue"], OKABE_ITO["orange"]
    purple, green = OKABE_ITO["reddish_purple"], OKABE_ITO["bluish_green"]
    g = Diagram("trap_and_emulate", title=title, engine="dot")
    # As the textbook draws it: the guest (real user mode) on the left, the VMM (real kernel
    # mode) on the right; user programs above the guest kernel. The rows are dot ranks and
    # every arrow within a row points left to right (a return is drawn as a reversed edge), so
    # dot keeps this arrangement whatever the counts are.
    g.attr(rankdir="TB", label=label, labelloc="t", fontname="Helvetica", fontsize="14",
           nodesep="0.7", ranksep="0.7", forcelabels="true", newrank="true")
    g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="12",
           fillcolor="white", color=OKABE_ITO["black"], width="2.2")
    g.attr("edge", fontname="Helvetica", fontsize="11")

    with g.subgraph(name="cluster_guest") as s:
        s.attr(label="the guest: real user mode (rings 3 and 1)", labeljust="l",
               style="rounded", color=GREY, fontcolor="#333333", fontsize="12")
        s.node("user", "user programs\\nguest user mode\\n(ring 3)")
        s.node("kernel",
               "guest kernel\\nvirtual kernel mode\\n(believes ring 0,\\nruns in ring 1)",
               fillcolor="#CDE3F2")   # a tint of Okabe–Ito blue, as in ring_diagram
    with g.subgraph(name="cluster_vmm") as s:
        s.attr(label="the VMM: real kernel mode (ring 0)", labeljust="l", style="rounded",
               color=GREY, fontcolor="#333333", fontsize="12")
        s.node("reflect", "reflect through\\nthe guest's IDT", fillcolor="#FBE3B3")
        s.node("emulate", "emulate the instruction\\n(emulate[mnemonic])",
               fillcolor="#FBE3B3")   # a tint of Okabe–Ito orange
        s.node("vcpu", "virtual CPU (monitor.vcpu)\\nCR0 CR2 CR3 CR4\\nGDTR IDTR TR · IF IOPL",
               shape="note", style="filled", fillcolor="#CCEBDF")   # tint of bluish green
        s.node("shadow", "shadow page tables", style="rounded,dashed", color=GREY,
               fontcolor="#333333")
    for row in (("user", "reflect"), ("kernel", "emulate"), ("shadow", "vcpu")):
        with g.subgraph() as r:
            r.attr(rank="same")
            for n in row:
                r.node(n)
    g.edge("user", "kernel", style="invis", weight="10")     # keep the guest's column straight
    g.edge("reflect", "emulate", style="invis", weight="10")
    g.edge("emulate", "vcpu", style="invis", weight="10")

    def edge(a, b, label, n, colour, style="solid", head="normal", **kw):
        if n == 0:   # a step this run never took: still drawn, but faint
            colour, style = GREY, "dotted"
        if label:
            kw["label"] = label
        if kw.get("dir") == "back":
            kw["arrowtail"] = head
        else:
            kw["arrowhead"] = head
        g.edge(a, b, color=colour, fontcolor=colour, style=style,
               penwidth="2" if n else "1", **kw)

    edge("user", "reflect", f"① system call: int 0x80\\ntraps to the VMM {_times(c.syscalls)}",
         c.syscalls, blue)
    edge("reflect", "kernel", f"② reflected to the\\nguest kernel "
         f"{_times(c.reflected_syscalls)}", c.reflected_syscalls, purple, head="onormal")
    # always drawn (faint when there were none), so every run gets the same layout
    others = sum(c.other_reflections.values())
    edge("reflect", "kernel", "also reflected:\\n" + (_top(c.other_reflections, 3) if others
                                                      else "interrupts, guest faults ×0"),
         others, purple, style="dashed", head="onormal")
    edge("kernel", "emulate", f"③ privileged instruction:\\ntrap (#GP) "
         f"{_times(c.privileged_traps)}", c.privileged_traps, orange, head="vee")
    edge("kernel", "emulate", f"⑤ return to the guest kernel,\\nafter the instruction "
         f"{_times(c.emulations)}", c.emulations, GREY, style="dashed", head="empty",
         dir="back")
    what = _top(c.emulated) if c.emulated else "nothing emulated"
    edge("emulate", "vcpu", f"④ emulate on the vCPU {_times(c.emulations)}\\n({what})",
         c.emulations, green)
    edge("user", "kernel", f"⑥ iretd to user mode\\n(no trap) {_times(c.irets_to_user)}",
         c.irets_to_user, blue, style="dashed", head="empty", dir="back")
    edge("kernel", "shadow", f"page faults the guest\\nnever sees (hidden) "
         f"{_times(c.hidden_page_faults)}", c.hidden_page_faults, GREY, style="dotted",
         head="odot")
    return g
