"""``VmExitView(image)``: turn VMCS controls on and off, rerun the guest, and price its VM exits.

>>> from vmkit import guests
>>> from vmkit.widgets import VmExitView
>>> VmExitView(guests.build("ctxswitch"), ept=False)     # doctest: +SKIP

* The **control panel** holds VM-execution controls of the VMCS (HLT exiting, CR3-load exiting,
  I/O exiting, INVLPG exiting, the exception bitmap's #PF bit, RDTSC exiting, interrupt-window
  exiting) and the EPT toggle. Changing one **reruns** the guest under a new
  :class:`~vmkit.vmm.hw.HardwareAssisted`. A control the VMM refuses (shadow paging without
  CR3-load exiting, say) is not an exception: the widget shows the VMM's reason and puts the
  box back. A control it accepts says what changed (the exits by reason and the cycles,
  before → after) or why nothing did (the guest never executes HLT, say). Toggling EPT gives
  the paging-dependent controls back to the VMM's choice.
* The **exit cost** (a log slider and a box to type into) sets the cycles of one VM exit +
  VM entry round trip and re-prices the same run (``CostModel.price``), without rerunning:
  the counts stay, the cycles move. A value outside :data:`EXIT_COST_RANGE` is refused with a
  message, never clamped.
* The view shows exits by reason (Intel's numbers) as a table and a bar chart, and the cycles.

Hooks for tests/browser/test_browser.py: each control's checkbox has the class ``vmkit-ctl-<name>``
(``vmkit-ctl-ept`` for EPT), the exit-cost box ``vmkit-exit-cost``, the table
``vmkit-exits-view``, the one-line summary ``vmkit-exits-total`` and messages
``vmkit-exits-message`` (with ``vmkit-exits-info``, ``-note`` or ``-refused``).
"""

from __future__ import annotations

import html
import math
from collections import Counter

import ipywidgets as W

from vmkit.errors import VmkitError
from vmkit.viz.exits import exit_cycles, exits_figure, exits_table_html
from vmkit.viz.render import CSS_TEXT, figure_svg_html
from vmkit.widgets.static import StaticMixin

__all__ = ["VmExitView", "CONTROLS", "EXIT_COST_RANGE"]

#: the checkboxes: (name, label, tooltip). "exception_bitmap_pf" is bit 14 of the exception
#: bitmap; "interrupt_window_exiting" is set by the VMM at run time, not by the student
CONTROLS = (
    ("hlt_exiting", "HLT exiting", "HLT exits to the VMM (else the CPU idles in non-root mode)"),
    ("cr3_load_exiting", "CR3-load exiting",
     "MOV to CR3 exits (needed by shadow paging; pointless with EPT)"),
    ("io_exiting", "I/O exiting",
     "every IN/OUT exits; off: I/O bitmaps, only the interrupt controller, timer and "
     "power-off ports exit, the console is assigned directly"),
    ("invlpg_exiting", "INVLPG exiting", "INVLPG exits (needed by shadow paging)"),
    ("exception_bitmap_pf", "exception bitmap: #PF",
     "bit 14 of the exception bitmap: page faults exit instead of going to the guest's IDT"),
    ("rdtsc_exiting", "RDTSC exiting", "RDTSC exits; the VMM answers with the guest time"),
    ("interrupt_window_exiting", "interrupt-window exiting",
     "exit when the guest's IF becomes 1 while an interrupt waits (the VMM sets it itself)"),
)
_PF = 1 << 14
#: cycles per VM exit round trip the cost box takes: from a tenth of a recent processor's ~500
#: (preset "modern-2020") to past the ~15,800 cycles VMware's first hardware VMM took for an exit
#: on an `in` (Adams & Agesen 2006, Fig. 4; preset "p4-2006": 6,120 from Table 1); outside it a
#: value is refused
EXIT_COST_RANGE = (50, 20_000)
#: the instruction each of these controls makes exit, for "no change" explanations
_CATCHES = {"hlt_exiting": "hlt", "invlpg_exiting": "invlpg", "rdtsc_exiting": "rdtsc"}
#: which of the kit's guests execute the instruction (tests/viz/test_exits_view.py checks it)
_GUEST_HINT = {
    "hlt_exiting": "none of the kit's guests idles with HLT (each powers off when it is done), "
                   "so this control changes nothing for any of them",
    "invlpg_exiting": "pagefault, ptemod and tlbwalk do",
    "rdtsc_exiting": "none of the kit's guests reads the time stamp counter, so this control "
                     "changes nothing for any of them"}
#: guests that take page faults under EPT (tests/viz/test_exits_view.py checks it)
_PF_GUESTS = "pagefault and tlbwalk do"
_WINDOW_NOTE = ("interrupt-window exiting is not yours to set: the VMM turns it on by itself "
                "when an interrupt waits and the guest has IF = 0, and off again at the exit "
                "(SDM Vol. 3C, 25.6.2); without it the timer interrupt could not be injected "
                "at the right instruction")


class VmExitView(StaticMixin, W.VBox):
    """VMCS controls, the EPT toggle and an exit-cost slider over one guest under hardware
    assist, with its exits by reason and its cycles.

    ``VmExitView(image, ept=True, controls=None, costs=None, max_steps=5_000_000)``: ``image``
    is a GuestImage (or a guest name); ``controls`` the first VMCS controls (a dict, as for
    ``HardwareAssisted``); ``costs`` a CostModel (default ``p4-2006``) whose ``vm_exit`` the
    slider starts at."""

    def __init__(self, image, ept: bool = True, *, controls=None, costs=None,
                 max_steps: int = 5_000_000, chart: bool = True, **kwargs):
        from vmkit import guests
        from vmkit.vmm import CostModel
        if isinstance(image, str):
            image = guests.build(image)
        self.image = image
        self.max_steps = max_steps
        self.costs = costs if costs is not None else CostModel.preset("p4-2006")
        self.show_chart = chart
        self.message = ""
        self.message_kind = "info"     # info (what changed), note, refused
        self._executed_cache: dict = {}
        self.hw = None
        self._updating = False
        self._controls = dict(controls or {})
        self._run(bool(ept), self._controls)          # raises on a bad first configuration
        ctl = self.hw.controls

        self.boxes = {}
        for name, label, tip in CONTROLS:
            box = W.Checkbox(value=self._value(ctl, name), description=label,
                             tooltip=tip, indent=False, layout=W.Layout(width="auto"))
            box.add_class(f"vmkit-ctl-{name}")
            box.observe(self._control_changed, names="value")
            self.boxes[name] = box
        self.ept_box = W.Checkbox(value=bool(ept), description="EPT (nested paging)",
                                  tooltip="off: shadow paging", indent=False,
                                  layout=W.Layout(width="auto"))
        self.ept_box.add_class("vmkit-ctl-ept")
        self.ept_box.observe(self._ept_changed, names="value")
        # the exit cost: a log slider to drag and a box to type an exact value; a value out
        # of EXIT_COST_RANGE is refused with a message (never clamped in silence)
        lo, hi = EXIT_COST_RANGE
        self.slider = W.FloatLogSlider(value=self._in_range(self.costs.vm_exit), base=10,
                                       min=math.log10(lo), max=math.log10(hi), step=0.01,
                                       description="cycles per exit", readout=False,
                                       continuous_update=False,
                                       style={"description_width": "initial"},
                                       layout=W.Layout(width="20em"))
        self.cost_box = W.IntText(value=int(round(self.costs.vm_exit)),
                                  tooltip=f"cycles per VM exit round trip, {lo:,} to {hi:,}",
                                  layout=W.Layout(width="6.5em"))
        self.cost_box.add_class("vmkit-exit-cost")
        self._syncing_cost = False
        self.slider.observe(self._cost_changed, names="value")
        self.cost_box.observe(self._cost_typed, names="value")

        self.message_view = W.HTML()
        self.message_view.add_class("vmkit-exits-message")
        self.summary_view = W.HTML()
        self.summary_view.add_class("vmkit-exits-total")
        self.table_view = W.HTML()
        self.table_view.add_class("vmkit-exits-view")
        self.chart_view = W.HTML()
        panel = W.HBox([
            W.VBox([W.HTML("<b>VM-execution controls</b>"), self.ept_box,
                    *self.boxes.values()], layout=W.Layout(flex="0 0 15em")),
            W.VBox([W.HBox([self.slider, self.cost_box], layout=W.Layout(align_items="center")),
                    self.message_view, self.summary_view, self.table_view],
                   layout=W.Layout(flex="1 1 24em", min_width="0")),
        ], layout=W.Layout(flex_flow="row wrap", grid_gap="0 12px"))
        children = [W.HTML(f"<b>{html.escape(self._guest_name())} under hardware assist</b>"),
                    panel] + ([self.chart_view] if chart else [])
        super().__init__(children, **kwargs)
        self.redraw()

    # ---- the model ---------------------------------------------------------------------------
    @staticmethod
    def _value(ctl, name: str) -> bool:
        if name == "exception_bitmap_pf":
            return bool(ctl.exception_bitmap & _PF)
        if name == "interrupt_window_exiting":
            return True                    # the VMM uses it whenever it must: always available
        return bool(getattr(ctl, name))

    def _guest_name(self) -> str:
        return getattr(self.image, "name", "guest")

    def _run(self, ept: bool, controls: dict) -> None:
        """A new monitor with these controls, run to the end (VmkitError if the VMM refuses)."""
        from vmkit.vmm import HardwareAssisted
        hw = HardwareAssisted(self.image, ept=ept, controls=controls or None, costs=self.costs)
        hw.run(max_steps=self.max_steps)
        self.hw = hw
        self.ept = ept
        self._controls = dict(controls)

    def set_control(self, name: str, value: bool) -> bool:
        """Set one control (a name of :data:`CONTROLS`) and rerun; False (and
        :attr:`message` says why) when the VMM refuses it. Otherwise :attr:`message` says
        what changed: the exits by reason and the cycles before and after, or "no change"
        and why (the guest never executes the instruction the control catches, say)."""
        if name == "interrupt_window_exiting":
            self.message, self.message_kind = _WINDOW_NOTE, "note"
            return False
        changes = dict(self._controls)
        if name == "exception_bitmap_pf":
            bitmap = self.hw.controls.exception_bitmap
            changes["exception_bitmap"] = (bitmap | _PF) if value else (bitmap & ~_PF)
        else:
            changes[name] = bool(value)
        label = dict((n, lab) for n, lab, _ in CONTROLS)[name]
        return self._try(self.ept, changes, f"{label} {'on' if value else 'off'}", name)

    def set_ept(self, ept: bool) -> bool:
        """Switch between EPT and shadow paging and rerun. The controls that depend on the
        paging mode (CR3 load/store and INVLPG exiting, the exception bitmap) go back to the
        VMM's choice for the new mode."""
        changes = {k: v for k, v in self._controls.items()
                   if k not in ("cr3_load_exiting", "cr3_store_exiting", "invlpg_exiting",
                                "exception_bitmap")}
        what = "EPT on (nested paging)" if ept else "EPT off (shadow paging)"
        return self._try(bool(ept), changes, what, "ept")

    def _try(self, ept: bool, changes: dict, what: str, control: str | None = None) -> bool:
        before = (Counter(self.exits), self.total_cycles)
        old = self.hw
        try:
            self._run(ept, changes)
        except VmkitError as e:
            self.message, self.message_kind = f"The VMM refuses {what}: {e}", "refused"
            return False
        res = self.hw.result
        if res is not None and res.reason != "poweroff":
            self.message = f"The guest stopped with {res.reason}: {getattr(res, 'detail', '')}"
            self.message_kind = "refused"
            return True
        self.message = f"{what}: " + self._difference(before, control, old)
        self.message_kind = "info"
        return True

    def _difference(self, before, control, old) -> str:
        """What a rerun changed, in words (the exits by reason and the cycles), or why it
        changed nothing."""
        exits0, cycles0 = before
        exits1, cycles1 = Counter(self.exits), self.total_cycles
        if exits0 == exits1 and cycles0 == cycles1:
            return "no change. " + self._why_no_change(control, old)
        n0, n1 = sum(exits0.values()), sum(exits1.values())
        moved = [f"{name} {exits1[name] - exits0[name]:+,}"
                 for name in sorted(set(exits0) | set(exits1))
                 if exits1[name] != exits0[name]]
        return (f"VM exits {n0:,} → {n1:,}" + (f" ({', '.join(moved)})" if moved else "")
                + f"; cycles {cycles0:,.0f} → {cycles1:,.0f}")

    def _why_no_change(self, control, old) -> str:
        guest = self._guest_name()
        if control in _CATCHES:
            mnemonic = _CATCHES[control]
            n = self._executed(mnemonic)
            if n == 0:
                return (f"{guest} never executes {mnemonic.upper()}, so there is nothing for "
                        f"this control to catch; {_GUEST_HINT[control]}.")
            return (f"{guest} executes {mnemonic.upper()} {n:,} times, but the VMM handles "
                    f"it the same way either way.")
        if control == "exception_bitmap_pf":
            n = self.hw.stats.get("page_faults", 0)
            if n == 0:
                return (f"{guest} takes no page fault under "
                        f"{'EPT' if self.ept else 'shadow paging'}, so the #PF bit has nothing "
                        f"to catch; {_PF_GUESTS}.")
            return f"{guest} takes {n:,} page faults; they cost the same either way."
        return "The exits by reason and the cycles are the same as before."

    def _executed(self, mnemonic: str) -> int:
        """How many times the guest executes ``mnemonic`` in this configuration (one more
        run, with an instruction hook; remembered)."""
        key = (self.ept, tuple(sorted(self._controls.items())), mnemonic)
        if key not in self._executed_cache:
            from vmkit.vmm import HardwareAssisted
            hw = HardwareAssisted(self.image, ept=self.ept, controls=self._controls or None,
                                  costs=self.costs)
            count = [0]

            def seen(e, m=mnemonic):
                if e.text.split(" ", 1)[0] == m:
                    count[0] += 1
            hw.on("instruction", seen)
            hw.run(max_steps=self.max_steps)
            self._executed_cache[key] = count[0]
        return self._executed_cache[key]

    def set_exit_cost(self, cycles: float) -> None:
        """Cycles per VM exit round trip; re-prices the same run (no rerun). A value outside
        :data:`EXIT_COST_RANGE` raises VmkitError (the widget shows it as a message)."""
        lo, hi = EXIT_COST_RANGE
        try:
            value = float(cycles)
        except (TypeError, ValueError):
            raise VmkitError(f"cycles per exit must be a number, got {cycles!r}") from None
        if not lo <= value <= hi:
            raise VmkitError(
                f"cycles per exit must be between {lo:,} and {hi:,}, got {value:,.0f}: a VM "
                f"exit and entry took about 2,400 cycles on the first VT-x processors "
                f"(Adams & Agesen 2006) and about 500 on recent ones")
        self.costs = self.costs.with_(vm_exit=value)
        self.hw.costs = self.costs

    @staticmethod
    def _in_range(value: float) -> float:
        lo, hi = EXIT_COST_RANGE
        return min(max(float(value), lo), hi)

    @property
    def exits(self):
        """Exits by reason name of the current run (a Counter)."""
        return self.hw.stats["vm_exits"]

    @property
    def total_cycles(self) -> float:
        return sum(self.hw.cycles.values())

    # ---- widget events -----------------------------------------------------------------------
    def _sync_boxes(self) -> None:
        self._updating = True
        try:
            ctl = self.hw.controls
            for name, box in self.boxes.items():
                box.value = self._value(ctl, name)
            self.ept_box.value = self.ept
        finally:
            self._updating = False

    def _control_changed(self, change) -> None:
        if self._updating:
            return
        name = next(n for n, b in self.boxes.items() if b is change["owner"])
        self.set_control(name, change["new"])
        self._sync_boxes()
        self.redraw()

    def _ept_changed(self, change) -> None:
        if self._updating:
            return
        self.set_ept(change["new"])
        self._sync_boxes()
        self.redraw()

    def _cost_changed(self, change) -> None:
        """The slider moved: re-price, and show the value in the box."""
        if self._syncing_cost:
            return
        self._set_cost(int(round(change["new"])))

    def _cost_typed(self, change) -> None:
        """A value typed into the box: re-price, or refuse it with a message and put the
        current value back."""
        if self._syncing_cost:
            return
        self._set_cost(change["new"])

    def _set_cost(self, value) -> None:
        try:
            self.set_exit_cost(value)
        except VmkitError as e:
            self.message, self.message_kind = f"Refused: {e}", "refused"
        else:
            self.message, self.message_kind = "", "info"
        self._syncing_cost = True
        try:
            self.cost_box.value = int(round(self.costs.vm_exit))
            self.slider.value = self._in_range(self.costs.vm_exit)
        finally:
            self._syncing_cost = False
        self.redraw()

    # ---- drawing -----------------------------------------------------------------------------
    def summary_html(self) -> str:
        c = exit_cycles(self.hw)
        ins = self.hw.stats["instructions"]
        paging = "EPT" if self.ept else "shadow paging"
        return (f'<div class="vmkit-exits-total" style="font-family:sans-serif;font-size:13px;'
                f'line-height:1.4">'
                f'{html.escape(self._guest_name())}, {paging}: <b>{c["exits"]:,} VM exits</b> in '
                f'{ins:,} guest instructions; at {c["per_exit"]:,.0f} cycles per exit they '
                f'cost {c["exit_cycles"]:,.0f} of <b>{c["total"]:,.0f} cycles</b> '
                f'({c["share"]:.0%})</div>')

    def message_html(self) -> str:
        if not self.message:
            return ""
        colour = {"info": "#0072B2", "note": "#009E73"}.get(self.message_kind, "#D55E00")
        return (f'<div class="vmkit-exits-message vmkit-exits-{self.message_kind}" '
                f'style="font-family:sans-serif;font-size:12px;border-left:4px solid {colour};'
                f'padding:2px 6px;margin:2px 0;line-height:1.4;color:{CSS_TEXT}">'
                f'{html.escape(self.message)}</div>')

    def chart_html(self) -> str:
        """The exits chart as HTML, drawn once for a state of the run (the live view and the
        static form show the same picture; each drawing cost most of a second)."""
        hw = self.hw
        key = (hw, hw.costs, hw.trace.total, hw.stats["instructions"])
        drawn = getattr(self, "_drawn", None)
        if drawn is None or drawn[0] != key:
            drawn = self._drawn = (key, figure_svg_html(exits_figure(hw, log=True,
                                                                     width=6.5))[1])
        return drawn[1]

    def redraw(self) -> None:
        try:
            self.summary_view.value = self.summary_html()
            self.table_view.value = exits_table_html(self.hw, title=None)
            self.message_view.value = self.message_html()
            if self.show_chart:
                self.chart_view.value = self.chart_html()
        except Exception as e:   # a picture must never break the notebook
            self.message_view.value = f"<pre>exit view: could not draw: {html.escape(str(e))}</pre>"

    # ---- static form -------------------------------------------------------------------------
    def static_html(self) -> str:
        ctl = self.hw.controls
        marks = [f'{"☑" if self.ept else "☐"} EPT (nested paging)'] + [
            f'{"☑" if self._value(ctl, n) else "☐"} {html.escape(label)}'
            for n, label, _ in CONTROLS]
        panel = ("<div style=\"font-family:sans-serif;font-size:12px;min-width:220px\">"
                 "<b>VM-execution controls</b><br>" + "<br>".join(marks) +
                 f"<br><br>cycles per exit: {self.costs.vm_exit:,.0f}</div>")
        right = self.summary_html() + exits_table_html(self.hw, title=None) + self.message_html()
        chart = self.chart_html() if self.show_chart else ""
        return (f'<div class="vmkit-exit-view-static"><b>{html.escape(self._guest_name())} under '
                f'hardware assist</b><div style="display:flex;gap:16px">{panel}<div>{right}'
                f'</div></div>{chart}</div>')
