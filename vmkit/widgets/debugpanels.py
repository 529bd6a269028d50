"""The Stepper's debugger panels: watchpoints, event breaks and live tables.

An ipywidgets ``Accordion`` under the Stepper's main view, closed by default (one header row)
so that the Stepper does not grow; opened, the three panels are tabs. Each panel drives the Stepper's :class:`vmkit.Debugger`
(``stepper.debugger``):

- **Watchpoints**: watch a guest address or symbol (guest-linear or guest-physical, 1-8 bytes,
  on write, read or both), remove one; the hits Run stopped at, each with the old and the new
  value and who wrote (the guest and its instruction, the VMM, the MMU, a device); **Previous
  hit** is the debugger's ``reverse_continue``.
- **Event breaks**: a trace event kind (``vm_exit``, ``hypercall``, ``ring``, ``trap`` …) with
  a filter ``field=value, …`` (``reason=CR_ACCESS``, ``vector=0x80``), remove one.
- **Live tables**: :mod:`vmkit.viz.live`'s tables of the guest now: GDT, IDT, TSS (the guest's
  or the real ones), the page walk of an address, a hex view with the watched bytes
  highlighted, the VMCS (hw), the translated block at EIP (bt). Redrawn after every action
  while the panel is open.

Bad input never raises: the panel's message line says what was wrong. The panels hold no
debugger logic; they call the Debugger and draw with :mod:`vmkit.viz.live`.
"""

from __future__ import annotations

import html

import ipywidgets as W

from vmkit.debug.debugger import COUNTER_KINDS, GROUP_KINDS, EventBreak, Watchpoint
from vmkit.errors import VmkitError
from vmkit.trace import EVENT_KINDS
from vmkit.viz import live
from vmkit.viz.render import CSS_MUTED, CSS_TEXT

__all__ = ["DebugPanels", "TABLES", "parse_filter"]

#: the live tables panel's choices: (label, key)
TABLES = (("GDT (guest's)", "gdt"), ("GDT (real)", "gdt real"), ("IDT (guest's)", "idt"),
          ("IDT (real)", "idt real"), ("TSS (guest's)", "tss"), ("TSS (real)", "tss real"),
          ("page walk of the address", "walk"), ("memory at the address (hex)", "hex"),
          ("physical memory at the address (hex)", "hex physical"),
          ("VMCS (hw)", "vmcs"), ("translated block at EIP (bt)", "tc"))

_TITLES = ("Watchpoints", "Event breaks", "Live tables")
#: the closed accordion's one header row
TITLE = "Debugger: watchpoints, event breaks, live tables"


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def _line(text: str, error: bool = False) -> str:
    colour = "#D55E00" if error else CSS_TEXT
    return (f'<div class="vmkit-panel-message" style="font-family:sans-serif;font-size:12px;'
            f'color:{colour};padding:1px 0">{_esc(text)}</div>')


def parse_filter(text: str) -> dict:
    """``"reason=CR_ACCESS, vector=0x80"`` -> ``{"reason": "CR_ACCESS", "vector": 128}``
    (numbers as ints, ``True``/``False``/``None`` as such, the rest as text)."""
    out = {}
    for item in (text or "").replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key.isidentifier():
            raise VmkitError(f"a filter is field=value, got {item!r}")
        try:
            out[key] = int(value, 0)
        except ValueError:
            out[key] = {"True": True, "False": False, "None": None}.get(value, value)
    return out


def _points_html(points, what: str) -> str:
    if not points:
        return _line(f"no {what} set", False).replace(CSS_TEXT, CSS_MUTED)
    rows = "".join(f"<li>{_esc(p.describe())}" + (f" — hit {p.hits}×" if p.hits else "")
                   + "</li>" for p in points)
    return (f'<ul style="margin:2px 0;padding-left:1.4em;font-family:monospace;'
            f'font-size:12px;color:{CSS_TEXT}">{rows}</ul>')


class DebugPanels(W.Accordion):
    """The three panels of a :class:`~vmkit.widgets.Stepper` (``stepper.panels``)."""

    def __init__(self, stepper, **kwargs):
        self.stepper = stepper
        wide = dict(style={"description_width": "initial"})
        btn = dict(layout=W.Layout(width="auto"))
        wrap = W.Layout(flex_flow="row wrap", align_items="center")
        # ---- watchpoints ----
        self.watch_box = W.Text(placeholder="symbol or 0x…", description="watch",
                                layout=W.Layout(width="16em"), **wide)
        self.size_box = W.Dropdown(options=[1, 2, 4, 8], value=4, description="bytes",
                                   layout=W.Layout(width="8em"), **wide)
        self.on_box = W.Dropdown(options=["write", "read", "rw"], value="write",
                                 description="on", layout=W.Layout(width="8em"), **wide)
        self.physical_box = W.Checkbox(value=False, description="physical", indent=False,
                                       layout=W.Layout(width="auto"))
        self.watch_button = W.Button(description="Watch", icon="eye",
                                     tooltip="stop Run when these bytes are written (or read)",
                                     **btn)
        self.remove_watch = W.Dropdown(options=[], description="remove",
                                       layout=W.Layout(width="14em"), **wide)
        self.remove_watch_button = W.Button(description="Remove", icon="trash", **btn)
        self.previous_button = W.Button(description="Previous hit", icon="fast-backward",
                                        tooltip="reverse continue: back to the previous hit "
                                                "of a breakpoint, watchpoint or event break",
                                        **btn)
        self.watch_message = W.HTML()
        self.watch_list = W.HTML()
        self.hits_view = W.HTML()
        # hooks for tests/browser/test_browser.py
        self.watch_box.add_class("vmkit-watch-address")
        self.physical_box.add_class("vmkit-watch-physical")
        self.watch_button.add_class("vmkit-watch-button")
        self.hits_view.add_class("vmkit-watch-hits")
        self.watch_button.on_click(lambda _: self.add_watch())
        self.remove_watch_button.on_click(lambda _: self.remove(self.remove_watch.value))
        self.previous_button.on_click(lambda _: stepper.reverse_continue())
        watch = W.VBox([
            W.HBox([self.watch_box, self.size_box, self.on_box, self.physical_box,
                    self.watch_button], layout=wrap),
            W.HBox([self.remove_watch, self.remove_watch_button, self.previous_button],
                   layout=wrap),
            self.watch_message, self.watch_list, self.hits_view])
        # ---- event breaks ----
        kinds = sorted(set(EVENT_KINDS) | set(COUNTER_KINDS) | set(GROUP_KINDS)
                       - {"instruction", "stop", "memory"})
        self.kind_box = W.Dropdown(options=kinds, value="vm_exit", description="break on",
                                   layout=W.Layout(width="16em"), **wide)
        self.filter_box = W.Text(placeholder="field=value, … (e.g. reason=CR_ACCESS)",
                                 description="if", layout=W.Layout(width="22em"), **wide)
        self.event_button = W.Button(description="Add", icon="plus", **btn)
        self.remove_event = W.Dropdown(options=[], description="remove",
                                       layout=W.Layout(width="14em"), **wide)
        self.remove_event_button = W.Button(description="Remove", icon="trash", **btn)
        self.event_message = W.HTML()
        self.event_list = W.HTML()
        self.event_button.on_click(lambda _: self.add_event())
        self.remove_event_button.on_click(lambda _: self.remove(self.remove_event.value))
        events = W.VBox([
            W.HBox([self.kind_box, self.filter_box, self.event_button], layout=wrap),
            W.HBox([self.remove_event, self.remove_event_button], layout=wrap),
            self.event_message, self.event_list])
        # ---- live tables ----
        self.table_box = W.Dropdown(options=list(TABLES), value="gdt", description="show",
                                    layout=W.Layout(width="20em"), **wide)
        self.address_box = W.Text(placeholder="address or symbol (walk, hex)",
                                  description="at", continuous_update=False,
                                  layout=W.Layout(width="18em"), **wide)
        self.table_view = W.HTML(layout=W.Layout(max_height="22em", overflow="auto"))
        self.table_box.observe(lambda _: self.refresh(), names="value")
        self.address_box.observe(lambda _: self.refresh(), names="value")
        tables = W.VBox([W.HBox([self.table_box, self.address_box], layout=wrap),
                         self.table_view])
        # one closed header row under the Stepper; opened, the three panels as tabs
        self.tabs = W.Tab(children=[watch, events, tables], selected_index=0)
        for i, t in enumerate(_TITLES):
            self.tabs.set_title(i, t)
        super().__init__(children=[self.tabs], selected_index=None, **kwargs)
        self.set_title(0, TITLE)
        self.add_class("vmkit-stepper-panels")
        self.observe(lambda _: self.refresh(), names="selected_index")
        self.tabs.observe(lambda _: self.refresh(), names="selected_index")
        self.refresh()

    # ---- actions ----------------------------------------------------------------------------
    @property
    def debugger(self):
        return self.stepper.debugger

    def add_watch(self, where=None, size=None, on=None, physical=None):
        """Watch ``where`` (default: the watch box); returns the Watchpoint or None (the
        message line says why)."""
        where = self.watch_box.value if where is None else where
        try:
            if self.debugger is None:
                raise VmkitError("no debugger (the monitor cannot take snapshots)")
            if isinstance(where, str) and not where.strip():
                raise VmkitError("type an address or a symbol to watch")
            w = self.debugger.watch(where, size=self.size_box.value if size is None else size,
                                    on=self.on_box.value if on is None else on,
                                    physical=self.physical_box.value if physical is None
                                    else physical)
        except VmkitError as e:
            self.watch_message.value = _line(f"error: {e}", True)
            return None
        self.watch_message.value = _line(f"set {w.describe()}")
        self.stepper._refresh()
        return w

    def add_event(self, kind=None, filter_text=None):
        """Add an event break (default: the kind and filter boxes); returns it or None."""
        kind = self.kind_box.value if kind is None else kind
        text = self.filter_box.value if filter_text is None else filter_text
        try:
            if self.debugger is None:
                raise VmkitError("no debugger (the monitor cannot take snapshots)")
            e = self.debugger.break_on(kind, **parse_filter(text))
        except VmkitError as e:
            self.event_message.value = _line(f"error: {e}", True)
            return None
        self.event_message.value = _line(f"set {e.describe()}")
        self.stepper._refresh()
        return e

    def remove(self, pid) -> None:
        """Remove the watchpoint or event break with id ``pid``."""
        if pid is None or self.debugger is None:
            return
        try:
            self.debugger.delete(pid)
        except VmkitError as e:
            self.watch_message.value = _line(f"error: {e}", True)
        self.stepper._refresh()

    # ---- drawing ----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Redraw the lists (and the open panel's table)."""
        dbg = self.debugger
        points = list(dbg.points) if dbg is not None else []
        wps = [p for p in points if isinstance(p, Watchpoint)]
        evs = [p for p in points if isinstance(p, EventBreak)]
        for box, opts in ((self.remove_watch, [(f"#{p.id} {p.label or hex(p.address)}", p.id)
                                               for p in wps]),
                          (self.remove_event, [(f"#{p.id} {p.kind}", p.id) for p in evs])):
            if list(box.options) != opts:
                box.options = opts
                box.value = opts[-1][1] if opts else None     # the newest, ready to remove
        self.watch_list.value = _points_html(wps, "watchpoint")
        self.event_list.value = _points_html(evs, "event break")
        self.hits_view.value = live.hits_table(self.stepper.watch_hits).to_html()
        if self.tables_shown:
            self.table_view.value = self.table_html()

    @property
    def tables_shown(self) -> bool:
        """True when the Live tables panel is open (tables are drawn only then)."""
        return self.selected_index == 0 and self.tabs.selected_index == 2

    def show(self, panel: str) -> None:
        """Open the accordion on ``panel``: "Watchpoints", "Event breaks" or "Live tables"."""
        self.tabs.selected_index = _TITLES.index(panel)
        self.selected_index = 0

    def table(self) -> live.LiveTable:
        """The live table chosen in the panel, of the guest now."""
        monitor = self.stepper.monitor
        key = self.table_box.value
        name, _, real = key.partition(" ")
        if name in ("gdt", "idt"):
            return live.descriptor_table(monitor, name, real=bool(real))
        if name == "tss":
            return live.tss_table(monitor, real=bool(real))
        if name == "vmcs":
            return live.vmcs_table(monitor)
        if name == "tc":
            return live.tc_block_table(monitor)
        text = self.address_box.value.strip()
        if not text:
            raise VmkitError("type an address or a symbol into 'at'")
        if self.debugger is not None:
            addr, _ = self.debugger.resolve(text)
        else:
            try:
                addr = int(text, 0)
            except ValueError:
                raise VmkitError(f"not an address: {text!r}") from None
        if name == "walk":
            return live.walk_table(monitor, addr)
        watched = self.debugger.points if self.debugger is not None else ()
        return live.hex_view(monitor, addr, 128, physical=bool(real), watched=watched)

    def table_html(self) -> str:
        try:
            return self.table().to_html()
        except VmkitError as e:
            return _line(f"error: {e}", True)
        except Exception as e:   # drawing must never raise into the notebook
            return _line(f"error: {type(e).__name__}: {e}", True)

    def static_html(self) -> str:
        """The panels' state for the Stepper's static form: a closed <details> with the
        points set and the hits, so a saved notebook keeps them."""
        dbg = self.debugger
        points = list(dbg.points) if dbg is not None else []
        wps = [p for p in points if isinstance(p, Watchpoint)]
        evs = [p for p in points if isinstance(p, EventBreak)]
        if not wps and not evs and not self.stepper.watch_hits:
            return ""
        summary = (f"debugger: {len(wps)} watchpoint{'s' if len(wps) != 1 else ''}, "
                   f"{len(evs)} event break{'s' if len(evs) != 1 else ''}, "
                   f"{len(self.stepper.watch_hits)} hit"
                   f"{'s' if len(self.stepper.watch_hits) != 1 else ''}")
        return (f'<details style="font-family:sans-serif;font-size:13px;color:{CSS_TEXT}">'
                f'<summary>{_esc(summary)}</summary>{_points_html(wps, "watchpoint")}'
                f'{_points_html(evs, "event break")}'
                f'{live.hits_table(self.stepper.watch_hits).to_html()}</details>')

