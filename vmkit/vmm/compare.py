"""Run guests under several monitors and compare what they cost.

>>> from vmkit.vmm import compare, CostModel
>>> table = compare(["syscall", "compute"], costs=CostModel.preset("p4-2006"))  # doctest: +SKIP
>>> table.cycles[("syscall", "hw")]                                              # doctest: +SKIP
>>> table.reprice(CostModel.preset("modern-2020"))     # same runs, other hardware  # doctest: +SKIP

A run is done once: the comparison keeps every monitor's *event counts*
(:meth:`Monitor.event_counts`), and cycles are always ``costs.price(counts)``. So
:meth:`Comparison.reprice` (and the cost sliders of :class:`vmkit.widgets.CostDashboard`) change
the hardware without rerunning a guest.

Every monitor's console is checked against ``native``'s (Popek & Goldberg's equivalence); a
difference is reported in the table, never hidden.

:func:`per_operation` gives the cycles of one operation of a nanobenchmark guest by differencing
two runs with different iteration counts (boot, set-up and the final report cancel out).
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass, field

from vmkit.errors import VmkitError
from vmkit.vmm import display
from vmkit.vmm.costs import CostModel

__all__ = ["compare", "Comparison", "per_operation", "NANOBENCHMARKS", "ADAMS_AGESEN_2006",
           "DEFAULT_MONITORS", "monitor_factories"]

#: monitors of ``compare(monitors=None)``, in the order of the table ("pv" is added when the
#: paravirtual monitor exists)
DEFAULT_MONITORS = ("native", "te", "bt", "hw")

_DEFAULT_MAX_STEPS = 5_000_000


def monitor_factories() -> dict:
    """Monitor names ``compare`` accepts -> ``factory(image, costs=...)``. Besides the monitors'
    own short names there is ``"hw-shadow"``: hardware assist with shadow paging instead of EPT,
    i.e. first-generation VT-x as Adams & Agesen measured it in 2006 (no nested paging)."""
    from vmkit.vmm.registry import MONITORS, VARIANTS
    out = dict(MONITORS)
    out["hw-shadow"] = VARIANTS["hw-shadow"]
    return out


def _default_monitors() -> list[str]:
    ms = list(DEFAULT_MONITORS)
    if "pv" in monitor_factories():
        ms.append("pv")
    return ms


def _guest_label(name: str, params: dict) -> str:
    if not params:
        return name
    return f"{name}({', '.join(f'{k}={v}' for k, v in params.items())})"


def _unknown(kind: str, name: str, choices) -> VmkitError:
    """"unknown guest 'sycall' (did you mean syscall?); expected one of ..." """
    close = difflib.get_close_matches(name, list(choices), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return VmkitError(f"unknown {kind} {name!r}{hint}; expected one of {', '.join(choices)}")


def _resolve_guest(g):
    """-> (label, build(paravirtual: bool) -> GuestImage)."""
    from vmkit import guests
    from vmkit.guests import GuestImage
    if isinstance(g, GuestImage):
        label = _guest_label(g.name, dict(getattr(g, "params", {}) or {}))
        return label, (lambda pv=False, g=g: g)
    if isinstance(g, str):
        name, params = g, {}
    elif (isinstance(g, tuple) and len(g) == 2 and isinstance(g[0], str)
          and isinstance(g[1], dict)):
        name, params = g[0], dict(g[1])
    else:
        raise VmkitError(f"a guest is a name, a (name, {{params}}) pair or a GuestImage, "
                         f"got {g!r}")
    if name not in guests.names():
        raise _unknown("guest", name, guests.names())
    guests.build(name, **params)  # fail early on bad parameters (GuestError is a VmkitError)
    return _guest_label(name, params), (
        lambda pv=False, n=name, p=params: guests.build(n, paravirtual=pv, **p))


def _resolve_monitor(m, factories):
    """-> (label, factory)."""
    if isinstance(m, str):
        if m not in factories:
            raise _unknown("monitor", m, list(factories))
        return m, factories[m]
    if isinstance(m, tuple) and len(m) == 2 and isinstance(m[0], str) and callable(m[1]):
        return m
    raise VmkitError(f"a monitor is a name ({', '.join(factories)}) or a (label, "
                     f"factory) pair, got {m!r}")


@dataclass
class Comparison:
    """Event counts of each (guest, monitor) run, priced by ``costs``.

    ``cycles[(g, m)]`` total cycles; ``breakdown[(g, m)]`` a Counter of cycles by cost category;
    ``stats[(g, m)]`` the monitor's counters; ``counts[(g, m)]`` the event counts;
    ``consoles[(g, m)]`` the console text; ``mismatches`` the pairs whose console differs from
    native's; ``relative[(g, m)]`` cycles relative to native."""
    guests: list
    monitors: list
    counts: dict
    stats: dict
    consoles: dict
    results: dict
    costs: CostModel = field(default_factory=CostModel)

    # ---- prices ----------------------------------------------------------------------------
    @property
    def breakdown(self) -> dict:
        return {k: self.costs.price(c) for k, c in self.counts.items()}

    @property
    def cycles(self) -> dict:
        return {k: sum(b.values()) for k, b in self.breakdown.items()}

    @property
    def relative(self) -> dict:
        cyc = self.cycles
        out = {}
        for (g, m), c in cyc.items():
            base = cyc.get((g, "native"))
            out[(g, m)] = c / base if base else float("nan")
        return out

    @property
    def mismatches(self) -> list:
        out = []
        for (g, m), text in self.consoles.items():
            ref = self.consoles.get((g, "native"))
            if m != "native" and ref is not None and text != ref:
                out.append((g, m))
        return out

    def reprice(self, costs: CostModel) -> "Comparison":
        """The same runs priced with ``costs`` (nothing is rerun)."""
        if not isinstance(costs, CostModel):
            raise VmkitError(f"reprice() takes a CostModel, got {costs!r}")
        return Comparison(self.guests, self.monitors, self.counts, self.stats, self.consoles,
                          self.results, costs)

    def categories(self) -> list[str]:
        """Cost categories with cycles somewhere in the table, in CostModel order."""
        used = set()
        for b in self.breakdown.values():
            used.update(k for k, v in b.items() if v)
        return [c for c in CostModel.CATEGORIES if c in used]

    # ---- tables ----------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        """One dict per (guest, monitor): guest, monitor, cycles, relative, breakdown, ok."""
        cyc, rel, br, bad = self.cycles, self.relative, self.breakdown, set(self.mismatches)
        return [dict(guest=g, monitor=m, cycles=cyc[(g, m)], relative=rel[(g, m)],
                     breakdown=br[(g, m)], ok=(g, m) not in bad)
                for g in self.guests for m in self.monitors]

    def to_text(self) -> str:
        """The table as plain text (what ``vmkit compare`` prints)."""
        head = ["guest"] + list(self.monitors)
        lines = []
        cyc, rel, bad = self.cycles, self.relative, set(self.mismatches)
        body = []
        for g in self.guests:
            row = [g]
            for m in self.monitors:
                cell = f"{cyc[(g, m)]:,.0f} ({rel[(g, m)]:.2f}x)"
                if (g, m) in bad:
                    cell += " CONSOLE DIFFERS"
                row.append(cell)
            body.append(row)
        widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
        fmt = lambda r: "  ".join(s.ljust(w) if i == 0 else s.rjust(w)  # noqa: E731
                                  for i, (s, w) in enumerate(zip(r, widths)))
        lines.append(f"cycles under {self.costs.name} (relative to native)")
        lines.append(fmt(head))
        lines.extend(fmt(r) for r in body)
        for g, m in self.mismatches:
            lines.append(f"warning: {g} under {m} printed a different console than native")
        return "\n".join(lines)

    def to_html(self) -> str:
        """A table: cycles per guest x monitor, relative to native, and the breakdown by
        category (largest first); a console that differs from native's is flagged (built by
        :func:`vmkit.viz.results.comparison_html`)."""
        return display.draw(self, "html")

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return (f"<Comparison {len(self.guests)} guests x {len(self.monitors)} monitors, "
                f"costs {self.costs.name!r}>")

    def plot(self, **kwargs):
        """Stacked bars of cycles by category (one panel per guest); see
        :func:`vmkit.viz.costs.comparison_figure`."""
        return display.draw(self, "plot", **kwargs)   # drawing lives in vmkit.viz


def compare(guests, monitors=None, costs: CostModel | str | None = None,
            max_steps: int = _DEFAULT_MAX_STEPS) -> Comparison:
    """Run every guest under every monitor (``None``: native, te, bt, hw, and pv when it
    exists) and return a :class:`Comparison` priced with ``costs`` (a CostModel or a preset
    name; default :meth:`CostModel.default`, the model every monitor uses by default).

    A guest is a name (built with its default parameters), a ``(name, {params})`` pair or a
    GuestImage. A monitor is a name (see :func:`monitor_factories`) or a ``(label, factory)``
    pair; ``native`` is always run, as the reference."""
    if isinstance(costs, str):
        costs = CostModel.preset(costs)
    elif costs is None:
        costs = CostModel.default()
    elif not isinstance(costs, CostModel):
        raise VmkitError(f"costs must be a CostModel or a preset name, got {costs!r}")
    if isinstance(guests, (str, tuple)) or not hasattr(guests, "__iter__"):
        guests = [guests]
    if not isinstance(max_steps, int) or max_steps < 1:
        raise VmkitError(f"max_steps must be a positive integer, got {max_steps!r}")
    factories = monitor_factories()
    mons = [_resolve_monitor(m, factories)
            for m in (_default_monitors() if monitors is None else monitors)]
    if "native" not in [m for m, _ in mons]:
        mons.insert(0, ("native", factories["native"]))
    gs = [_resolve_guest(g) for g in guests]
    if len({g for g, _ in gs}) != len(gs) or len({m for m, _ in mons}) != len(mons):
        raise VmkitError("each guest and each monitor may appear only once")
    counts, stats, consoles, results = {}, {}, {}, {}
    for g, build in gs:
        for m, factory in mons:
            image = build(m == "pv") if m == "pv" else build()
            vm = factory(image, costs=costs)
            r = vm.run(max_steps=max_steps)
            counts[(g, m)] = Counter(vm.event_counts())
            stats[(g, m)] = vm.stats
            consoles[(g, m)] = vm.console
            results[(g, m)] = r
    return Comparison([g for g, _ in gs], [m for m, _ in mons], counts, stats, consoles,
                      results, costs)


# ---- nanobenchmarks -----------------------------------------------------------------------
#: kit guest -> (parameter counted, small n, large n, what one operation is, A&A 2006 name).
#: The two counts give consoles of the same length (the final report's digits cancel out).
NANOBENCHMARKS = {
    "syscall": ("iterations", 100, 300, "one getpid system call (int 0x80 + iret)", "syscall"),
    "io": ("bytes", 100, 300, "one byte read by polling the input port (in/out)", "in"),
    "pagefault": ("pages", 20, 60, "one demand page fault handled by the guest kernel",
                  "pgfault"),
    "divzero": ("iterations", 100, 300, "one #DE handled by the guest kernel", "divzero"),
    "ptemod": ("iterations", 100, 300, "one PTE change + invlpg by the guest kernel",
               "ptemod"),
    "kcallret": ("iterations", 20, 60, "one chain of 50 calls and 50 rets in the guest kernel",
                 "call/ret"),
}

#: Which technique won each nanobenchmark in Adams & Agesen, ASPLOS 2006, Fig. 4 (software VMM
#: = binary translation, hardware VMM = first-generation VT-x without nested paging, on a
#: Pentium 4). Only the winner is recorded, as we recall the figure: neither the cycle counts nor
#: the winners could be checked against the paper's text when this was written (its abstract
#: confirms the direction: the hardware VMM "often suffers lower performance"), and unverified
#: numbers are not copied. Check them against Fig. 4 before relying on them.
ADAMS_AGESEN_2006 = {
    "syscall": ("hw", "no exit: int 0x80 and iret run natively in non-root mode; the BT VMM "
                      "must intercept the system call"),
    "in": ("bt", "a callout from translated code is far cheaper than a VM exit"),
    "cr8wr": ("bt", "translated into a cheap write of the virtual TPR; VT-x exits"),
    "call/ret": ("hw", "native; BT pays a translation-cache lookup for every ret"),
    "pgfault": ("bt", "the hardware VMM takes an exit for every guest page fault (shadow "
                      "paging) and exits are expensive"),
    "divzero": ("hw", "the exception goes straight to the guest's IDT"),
    "ptemod": ("bt", "the headline: BT batches/emulates PTE writes cheaply; the hardware VMM "
                     "exits on every traced page-table write"),
}


def per_operation(guest: str, monitors=("native", "te", "bt", "hw-shadow", "hw"),
                  costs: CostModel | str | None = None, *, small: int | None = None,
                  large: int | None = None, param: str | None = None):
    """Cycles of one operation of ``guest`` under each monitor: (cycles(large) -
    cycles(small)) / (large - small), from two runs. Returns ``(per_op, counts)``:
    ``per_op[monitor]`` cycles and ``counts[monitor]`` the per-operation event counts (so a
    caller can reprice)."""
    spec = NANOBENCHMARKS.get(guest)
    if spec is None and param is None:
        raise VmkitError(f"no nanobenchmark parameters for {guest!r}; give param=, small=, "
                         f"large= (known: {', '.join(NANOBENCHMARKS)})")
    p = param or spec[0]
    a = small if small is not None else spec[1]
    b = large if large is not None else spec[2]
    if not b > a:
        raise VmkitError(f"large ({b}) must exceed small ({a})")
    t1 = compare([(guest, {p: a}), (guest, {p: b})], monitors=list(monitors), costs=costs)
    g1, g2 = t1.guests
    per_op, counts = {}, {}
    for m in t1.monitors:
        d = Counter({k: (t1.counts[(g2, m)][k] - t1.counts[(g1, m)][k]) / (b - a)
                     for k in set(t1.counts[(g1, m)]) | set(t1.counts[(g2, m)])})
        counts[m] = d
        per_op[m] = sum(t1.costs.price({k: v for k, v in d.items() if v}).values())
    return per_op, counts
