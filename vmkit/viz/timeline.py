"""The ring the CPU ran in over guest time, with traps and interrupts marked (matplotlib).

:func:`ring_timeline` reads instruction-retired events when the trace has them (the exact ring
of every instruction) and otherwise the ring-transition events (the ring changes only there).
Markers show where exceptions, hardware interrupts, software interrupts, VMM emulations,
reflections and VM exits happened; marker shapes differ as well as colours (Okabe–Ito).

The figure is a ``matplotlib.figure.Figure`` made without pyplot (no global state, nothing shown
by itself) that displays as deterministic SVG (:func:`vmkit.viz.render.figure_svg`) even in a
kernel where pyplot's inline backend was never set up.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from vmkit.viz.render import GREY, OKABE_ITO, new_figure

__all__ = ["ring_series", "ring_timeline", "timeline_svg"]

_MARKS = (  # kind/source -> (label, marker, colour)
    (("interrupt", "exception"), "exception", "X", OKABE_ITO["vermillion"]),
    (("interrupt", "irq"), "hardware interrupt", "o", OKABE_ITO["bluish_green"]),
    (("interrupt", "int"), "software interrupt (int n)", "^", OKABE_ITO["blue"]),
    (("emulate", None), "VMM emulation", "s", OKABE_ITO["orange"]),
    (("reflect", None), "reflection into the guest", "D", OKABE_ITO["reddish_purple"]),
    (("vm_exit", None), "VM exit", "v", OKABE_ITO["orange"]),
    (("hypercall", None), "hypercall", "P", OKABE_ITO["sky_blue"]),
)


def _events(target) -> tuple[list, object, bool]:
    """(events, monitor or None, complete: the events go back to guest time 0)."""
    if hasattr(target, "trace") and hasattr(target, "vms"):
        tr = target.trace
        return list(tr), target, getattr(tr, "total", 0) <= len(tr)
    if hasattr(target, "events") and hasattr(target, "total"):
        return list(target), None, target.total <= len(target)
    return list(target), None, False


def ring_series(events, *, end: int | None = None, start: int | None = None
                ) -> tuple[list[int], list[int]]:
    """(steps, rings) of a step function giving the ring over guest time: from instruction
    events when present, else from ring-transition events (starting at ``start``, by default
    the first event's time). Empty lists when the events say nothing about rings."""
    insns = [e for e in events if getattr(e, "kind", "") == "instruction"]
    if insns:
        xs = [e.step for e in insns]
        ys = [e.ring for e in insns]
        return xs, ys
    trans = [e for e in events if getattr(e, "kind", "") == "ring"]
    if not trans:
        return [], []
    first = start if start is not None else (events[0].step if events else trans[0].step)
    xs, ys = [min(first, trans[0].step)], [trans[0].from_ring]
    for t in trans:
        xs.append(t.step)
        ys.append(t.to_ring)
    last = end if end is not None else max(getattr(events[-1], "step", xs[-1]), xs[-1])
    xs.append(max(last, xs[-1]))
    ys.append(ys[-1])
    return xs, ys


def ring_timeline(trace, *, title: str | None = None, width: float = 8.0,
                  height: float = 2.8, end: int | None = None) -> Figure:
    """A figure of the ring over guest time (instructions retired) with traps and interrupts
    marked. ``trace`` is a ``Trace``, a list of events or a monitor (then ``end`` defaults to
    its guest time so the line reaches "now")."""
    events, mon, complete = _events(trace)
    if mon is not None and end is None:
        try:
            end = mon.machine.clock
        except Exception:
            end = None
        if title is None:
            try:
                title = (f"Ring over time: {mon.vms[getattr(mon, 'current', 0)].image.name} "
                         f"under {mon.name}")
            except Exception:
                title = None
    if title is None:
        title = "Ring over time"
    fig = new_figure(figsize=(width, height), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    xs, ys = ring_series(events, end=end, start=0 if complete else None)
    if xs:
        # one lane per ring, a bar wherever the CPU was in it: dense switching stays readable
        # (a plain step line turns into a solid block after a few hundred transitions)
        lanes: dict[int, list] = {}
        for x0, x1, r in zip(xs, xs[1:], ys):
            if x1 > x0:
                lanes.setdefault(r, []).append((x0, x1 - x0))
        for r, segs in sorted(lanes.items()):
            ax.broken_barh(segs, (r - 0.22, 0.44), facecolors=_LANE.get(r, GREY),
                           edgecolor="none", label=f"in ring {r}")
        if len(xs) <= 200:
            ax.step(xs, ys, where="post", color=OKABE_ITO["black"], linewidth=0.8)
    else:
        ax.text(0.5, 0.5, "no ring transitions recorded yet", transform=ax.transAxes,
                ha="center", va="center", color=GREY)
    # the ring at a step, for placing markers on the line
    for (kind, source), label, marker, colour in _MARKS:
        pts = [e for e in events if getattr(e, "kind", "") == kind
               and (source is None or getattr(e, "source", None) == source
                    or (source == "int" and getattr(e, "source", None) in ("int3", "into")))]
        if not pts:
            continue
        px = [e.step for e in pts]
        py = [getattr(e, "from_ring", None) if getattr(e, "from_ring", None) is not None
              else _ring_at(xs, ys, e.step) for e in pts]
        # markers sit just above the lane of the ring they left, so the lane stays visible
        py = [(1.5 if v is None else v) + 0.34 for v in py]
        dense = len(pts) > 60
        ax.scatter(px, py, marker=marker, s=14 if dense else 36, color=colour,
                   edgecolors=OKABE_ITO["black"], linewidths=0.2 if dense else 0.4,
                   alpha=0.7 if dense else 1.0, zorder=3, label=f"{label} ({len(pts)})")
    ax.set_ylim(-0.5, 3.5)
    ax.set_yticks([0, 1, 2, 3], ["ring 0", "ring 1", "ring 2", "ring 3"])
    ax.set_xlabel("guest time (instructions retired)")
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                  frameon=False)
    return fig


_LANE = {0: "#9CC7E6", 1: "#F2C76B", 2: "#BBBBBB", 3: "#7FCBB5"}  # Okabe–Ito tints


def _ring_at(xs, ys, step):
    if not xs:
        return None
    r = ys[0]
    for x, y in zip(xs, ys):
        if x > step:
            break
        r = y
    return r


def timeline_svg(trace, **kwargs) -> str:
    """:func:`ring_timeline` as deterministic SVG."""
    from vmkit.viz.render import figure_svg
    fig = ring_timeline(trace, **kwargs)
    return figure_svg(fig)
