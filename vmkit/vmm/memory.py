"""Memory virtualization compared: shadow paging, nested paging and direct (paravirtual) paging
on the same guests, counter by counter.

>>> from vmkit.vmm.memory import memory_comparison
>>> mc = memory_comparison(("pagefault", "ptemod", "tlbwalk"))        # doctest: +SKIP
>>> mc.value("tlbwalk", "hw-ept", "walk_references")                  # doctest: +SKIP
>>> mc.to_html(); mc.plot(); mc.rows                                  # doctest: +SKIP

Each guest runs under ``native`` (the reference), ``te`` and ``bt`` (shadow page tables used as
a virtual TLB), ``hw-shadow`` (VT-x without EPT, the same shadow code), ``hw-ept`` (nested
paging: the two-dimensional walk) and ``pv`` when :class:`vmkit.vmm.Paravirtual` exists (direct
paging: the guest's own tables are the real ones, changed through validated hypercalls; its
guests are built with ``paravirtual=True``). The runs are made once by
:func:`vmkit.vmm.compare.compare` (so the consoles are checked against native's) and the rows
below are read from each monitor's ``stats`` and event counts. A row shows ``None`` ("—" in
the tables) when the monitor has no such counter -- the mechanism does not exist there (a
hidden page fault natively) -- and ``0`` when the mechanism exists but never happened (hidden
page faults under EPT). See docs/memory-virtualization.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmkit.errors import VmkitError
from vmkit.vmm import display
from vmkit.vmm.costs import CostModel

__all__ = ["memory_comparison", "MemoryComparison", "MEMORY_ROWS", "MEMORY_CATEGORIES",
           "MEMORY_MONITORS", "memory_monitors"]

#: the cost categories that are memory virtualization's (cycles rows of the table)
MEMORY_CATEGORIES = ("page_walk", "shadow_update", "hidden_fault")

#: monitors of ``memory_comparison(monitors=None)``, in table order ("pv" only when it exists)
MEMORY_MONITORS = ("native", "te", "bt", "hw-shadow", "hw-ept", "pv")

_DEFAULT_MAX_STEPS = 5_000_000


def _stat(name):
    def get(stats, counts, monitor):
        v = stats.get(name)
        return None if v is None else int(v)
    return get


def _walk_refs(stats, counts, monitor):
    v = stats.get("walk_references")
    return int(v) if v is not None else int(counts.get("page_walk", 0))


def _refs_per_miss(stats, counts, monitor):
    misses = stats.get("tlb_misses") or 0
    return _walk_refs(stats, counts, monitor) / misses if misses else None


def _pt_traps(stats, counts, monitor):
    v = stats.get("pt_write_traps")
    if v is not None:
        return int(v)
    hc = stats.get("hypercalls")   # a paravirtual monitor without the counter: its MMU calls
    if hc and monitor == "pv":
        return int(sum(n for k, n in hc.items() if "mmu" in str(k) or "pt" in str(k)
                       or "invlpg" in str(k) or "cr3" in str(k) or "baseptr" in str(k)))
    return None


#: (key, label, getter(stats, counts, monitor) -> number or None): the counter rows
MEMORY_ROWS = (
    ("page_faults", "guest page faults (the guest kernel's own #PF)", _stat("page_faults")),
    ("hidden_page_faults", "hidden page faults (handled by the VMM alone)",
     _stat("hidden_page_faults")),
    ("shadow_updates", "shadow / EPT entries written or dropped by the VMM",
     _stat("shadow_updates")),
    ("pt_write_traps", "page-table write traps (invlpg, CR3 loads, mmu_update)", _pt_traps),
    ("tlb_misses", "TLB misses (real MMU)", _stat("tlb_misses")),
    ("walk_references", "page-walk memory references (2-D with EPT)", _walk_refs),
    ("refs_per_miss", "references per TLB miss", _refs_per_miss),
)

_ROW_LABELS = {k: lab for k, lab, _ in MEMORY_ROWS}
_CYCLE_ROWS = (("cycles", "cycles, total"),) + tuple(
    (f"cycles_{c}", f"cycles: {c}") for c in MEMORY_CATEGORIES) + (
    ("memory_share", "memory cycles / total"),)


def memory_monitors() -> dict:
    """Monitor label -> ``factory(image, costs=...)`` for the memory comparison, from the
    one registry of monitors (:mod:`vmkit.vmm.registry`)."""
    from vmkit.vmm.registry import MONITORS, VARIANTS
    return {name: MONITORS.get(name) or VARIANTS[name] for name in MEMORY_MONITORS}


@dataclass
class MemoryComparison:
    """The memory counters of each (guest, monitor) run (see the module text).

    ``comparison`` is the underlying :class:`vmkit.vmm.compare.Comparison` (event counts,
    stats, consoles); ``table[(guest, monitor)]`` a dict row key -> value (counters and cycles;
    ``None`` where the monitor has no such counter); ``rows`` one dict per (guest, row) with a
    column per monitor; ``value(guest, monitor, key)`` one cell."""
    comparison: object

    @property
    def guests(self) -> list:
        return self.comparison.guests

    @property
    def monitors(self) -> list:
        return self.comparison.monitors

    @property
    def costs(self) -> CostModel:
        return self.comparison.costs

    @property
    def mismatches(self) -> list:
        return self.comparison.mismatches

    @staticmethod
    def row_keys() -> list[str]:
        return [k for k, _, _ in MEMORY_ROWS] + [k for k, _ in _CYCLE_ROWS]

    @staticmethod
    def label(key: str) -> str:
        return _ROW_LABELS.get(key) or dict(_CYCLE_ROWS)[key]

    @property
    def table(self) -> dict:
        c = self.comparison
        br = c.breakdown
        out = {}
        for g in c.guests:
            for m in c.monitors:
                st, cnt = c.stats[(g, m)], c.counts[(g, m)]
                row = {k: get(st, cnt, m) for k, _, get in MEMORY_ROWS}
                b = br[(g, m)]
                total = float(sum(b.values()))
                row["cycles"] = total
                mem = 0.0
                for cat in MEMORY_CATEGORIES:
                    row[f"cycles_{cat}"] = float(b.get(cat, 0))
                    mem += b.get(cat, 0)
                row["memory_share"] = mem / total if total else 0.0
                out[(g, m)] = row
        return out

    def value(self, guest: str, monitor: str, key: str):
        try:
            return self.table[(guest, monitor)][key]
        except KeyError:
            raise VmkitError(f"no cell ({guest!r}, {monitor!r}, {key!r}); guests "
                             f"{self.guests}, monitors {self.monitors}, rows "
                             f"{self.row_keys()}") from None

    @property
    def rows(self) -> list[dict]:
        t = self.table
        out = []
        for g in self.guests:
            for k in self.row_keys():
                r = {"guest": g, "row": k, "label": self.label(k)}
                r.update({m: t[(g, m)][k] for m in self.monitors})
                out.append(r)
        return out

    def reprice(self, costs: CostModel) -> "MemoryComparison":
        """The same runs priced with other costs (nothing is rerun)."""
        return MemoryComparison(self.comparison.reprice(costs))

    # ---- text and HTML ---------------------------------------------------------------------
    @staticmethod
    def cell(key: str, v) -> str:
        """How the tables show value ``v`` of counter ``key``."""
        if v is None:
            return "—"
        if key == "memory_share":
            return f"{100 * v:.1f}%"
        if key == "refs_per_miss":
            return f"{v:.2f}"
        return f"{v:,.0f}"

    def to_text(self) -> str:
        t = self.table
        head = ["guest", "row"] + list(self.monitors)
        body = [[g, k] + [self.cell(k, t[(g, m)][k]) for m in self.monitors]
                for g in self.guests for k in self.row_keys()]
        widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
        fmt = lambda r: "  ".join(s.ljust(w) if i < 2 else s.rjust(w)  # noqa: E731
                                  for i, (s, w) in enumerate(zip(r, widths)))
        lines = [f"memory virtualization, cycles under {self.costs.name}", fmt(head)]
        lines += [fmt(r) for r in body]
        for g, m in self.mismatches:
            lines.append(f"warning: {g} under {m} printed a different console than native")
        return "\n".join(lines)

    def to_html(self) -> str:
        """One table per guest: a row per counter, a column per monitor; "—" where the monitor
        has no such mechanism; a console that differs from native's is flagged (built by
        :func:`vmkit.viz.results.memory_comparison_html`)."""
        return display.draw(self, "html")

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return (f"<MemoryComparison {len(self.guests)} guests x {len(self.monitors)} monitors, "
                f"costs {self.costs.name!r}>")

    def plot(self, keys=("hidden_page_faults", "pt_write_traps", "walk_references",
                         "cycles_memory"), *, title: str | None = None):
        """Grouped bars (symmetric-log scale, so 0 shows): one panel per counter, a group per
        guest, a bar per monitor; "cycles_memory" is the sum of the memory categories. A bar
        missing from a group is a monitor without that mechanism ("—")."""
        return display.draw(self, "plot", keys=keys, title=title)   # drawn by vmkit.viz


def memory_comparison(guests=("pagefault", "ptemod", "tlbwalk"), monitors=None,
                      costs: CostModel | str | None = None,
                      max_steps: int = _DEFAULT_MAX_STEPS) -> MemoryComparison:
    """Run each guest (a name, a ``(name, {params})`` pair or a GuestImage) under each monitor
    (labels of :func:`memory_monitors`, or ``(label, factory)`` pairs; ``None``: every one of
    ``MEMORY_MONITORS`` that exists) and compare their memory virtualization. ``costs`` is a
    CostModel or a preset name (default :meth:`CostModel.default`). ``native`` is always run as the
    reference."""
    from vmkit.vmm.compare import compare
    if isinstance(guests, str) or (isinstance(guests, tuple) and len(guests) == 2
                                   and isinstance(guests[0], str)
                                   and isinstance(guests[1], dict)):
        guests = [guests]
    elif hasattr(guests, "__iter__") and not hasattr(guests, "loads"):
        guests = list(guests)
    factories = memory_monitors()
    if monitors is None:
        monitors = [m for m in MEMORY_MONITORS if m in factories]
    elif isinstance(monitors, str):
        monitors = [monitors]
    mons = []
    for m in monitors:
        if isinstance(m, str):
            if m == "hw":
                m = "hw-ept"
            if m not in factories:
                raise VmkitError(f"unknown monitor {m!r}; expected one of "
                                 f"{', '.join(factories)}")
            mons.append((m, factories[m]) if m != "native" else "native")
        else:
            mons.append(m)
    return MemoryComparison(compare(guests, monitors=mons, costs=costs, max_steps=max_steps))
