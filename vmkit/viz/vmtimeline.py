"""Several VMs on one CPU: which VM ran when over machine time, and what sharing costs a VM.

:func:`vm_timeline` draws one lane per VM over *machine time* (the cost model's cycles, all VMs
together; DESIGN.md "Two clocks"): a bar wherever that VM held the CPU, a dark band for every
world switch between VMs. It reads the monitor's ``switch_log`` (every world switch, with the
machine time it began) or, failing that, the ``WorldSwitch`` events in its trace.

:func:`sharing_figure` draws the rows of :func:`vmkit.vmm.sharing.sharing_experiment`: a VM's
progress per million machine cycles and the spread of its own instructions between timer ticks
(the timer on machine time), for 1, 2, 4, 8 VMs.

Colours come from the Okabe–Ito palette and lanes are labelled, so nothing depends on colour
alone; every figure is titled and displays as deterministic SVG.
"""

from __future__ import annotations

from vmkit.viz.render import GREY, OKABE_ITO, new_figure

__all__ = ["vm_intervals", "vm_timeline", "sharing_figure"]

_LANE_COLOURS = [OKABE_ITO[k] for k in ("blue", "orange", "bluish_green", "vermillion",
                                        "sky_blue", "reddish_purple", "yellow", "black")]


def _switches(monitor) -> list[tuple[float, int, int]]:
    log = getattr(monitor, "switch_log", None)
    if log:
        return list(log)
    return [(float(getattr(e, "machine_time", 0.0)), e.from_vm, e.to_vm)
            for e in monitor.trace.of("world_switch")]


def vm_intervals(monitor) -> tuple[list[tuple[int, float, float]], list[tuple[float, float]]]:
    """(runs, switches): ``runs`` are (vm, start, end) in machine cycles while that VM held the
    CPU; ``switches`` are (start, end) of every world switch."""
    cost = monitor.costs.world_switch
    end = sum(monitor.cycles.values())
    runs, switches = [], []
    cur, start = 0, 0.0
    for t, frm, to in _switches(monitor):
        runs.append((frm, start, t))
        switches.append((t, t + cost))
        cur, start = to, t + cost
    runs.append((cur, start, max(start, end)))
    return [r for r in runs if r[2] > r[1]], switches


def vm_timeline(monitor, *, title: str | None = None):
    """Which VM ran when over machine time: one lane per VM, world switches marked
    (a ``matplotlib.figure.Figure``)."""
    n = len(monitor.vms)
    runs, switches = vm_intervals(monitor)
    fig = new_figure(figsize=(9, 1.2 + 0.5 * n), layout="constrained")
    ax = fig.add_subplot()
    for k in range(n):
        bars = [(s, e - s) for v, s, e in runs if v == k]
        ax.broken_barh(bars, (k - 0.35, 0.7), facecolors=_LANE_COLOURS[k % len(_LANE_COLOURS)],
                       edgecolor="none", label=None)
    if switches:
        ax.broken_barh([(s, e - s) for s, e in switches], (-0.5, n), facecolors=GREY,
                       alpha=0.35, edgecolor="none")
        ax.plot([s for s, _ in switches], [n - 0.45] * len(switches), "v", color="black",
                markersize=4, label=f"world switch ({len(switches)})")
        ax.legend(loc="upper right", fontsize="small", frameon=False,
                  bbox_to_anchor=(1.0, 1.18))
    ax.set_yticks(range(n))
    ax.set_yticklabels([f"VM {vm.index}: {vm.image.name}" for vm in monitor.vms])
    ax.set_ylim(-0.6, n - 0.3)
    ax.invert_yaxis()
    ax.set_xlabel("machine time (cost-model cycles, all VMs)")
    sched = getattr(monitor, "scheduler", None)
    how = sched.name if sched is not None else f"round robin every {monitor.slice} instructions"
    ax.set_title(title or f"{n} VMs under {monitor.name}: who ran when ({how})")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def sharing_figure(rows, *, title: str | None = None):
    """Slowdown and jitter as VMs are added (rows of ``sharing_experiment``): progress of one
    VM per million machine cycles (left) and its instructions between timer ticks, mean with
    min-max range (right)."""
    ns = [r["vms"] for r in rows]
    fig = new_figure(figsize=(9, 3.4), layout="constrained")
    a, b = fig.subplots(1, 2)
    a.plot(ns, [r["progress_per_mcycle"] for r in rows], "o-", color=OKABE_ITO["blue"])
    a.set_xlabel("VMs sharing the CPU")
    a.set_ylabel("VM 0 instructions per 10⁶ machine cycles")
    a.set_xticks(ns)
    a.set_ylim(bottom=0)
    a.set_title("progress slows")
    means = [r["tick_mean"] for r in rows]
    lo = [r["tick_mean"] - r["tick_min"] for r in rows]
    hi = [r["tick_max"] - r["tick_mean"] for r in rows]
    b.errorbar(ns, means, yerr=[lo, hi], fmt="s-", color=OKABE_ITO["vermillion"], capsize=4,
               label="mean, min to max")
    b.plot(ns, [r["tick_stdev"] for r in rows], "^--", color=OKABE_ITO["bluish_green"],
           label="standard deviation")
    b.set_xlabel("VMs sharing the CPU")
    b.set_ylabel("VM 0 instructions between ticks")
    b.set_xticks(ns)
    b.set_ylim(bottom=0)
    b.legend(fontsize="small", frameon=False)
    b.set_title("its timer jitters")
    for ax in (a, b):
        ax.spines[["top", "right"]].set_visible(False)
    mon = rows[0].get("monitor", "") if rows else ""
    fig.suptitle(title or f"Sharing the CPU ({mon}, timer on machine time): slowdown and "
                 f"jitter")
    return fig
