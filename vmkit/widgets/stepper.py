"""``Stepper(monitor)``: single-step any monitor in a notebook.

Buttons: **Step**, **Step ×N**, **Run** until it stops / a breakpoint / the ring changes / a trap
or interrupt (at most N steps; whatever the choice, a breakpoint stops it, as gdb's continue
does), **Stop**, **Back**, **Back ×N** and **Reset**. Panes: a disassembly window around EIP
with the guest source file, line and code beside each instruction (the comment in a tooltip);
the registers with those that the last action changed highlighted; EFLAGS as named bits; the
current ring; the console; the last events. Under a monitor whose guest sees a virtual CPU
(``monitor.vcpu is not monitor.cpu``, e.g. trap-and-emulate) the virtual CPU and the real CPU are shown
side by side: the guest kernel believes it is in ring 0 while the real CPU runs it in ring 1.

The layout is compact, for a laptop's ~650 px of notebook or a slide: controls, status, code
and CPUs in a left column beside the ring picture (the keyed form of
:func:`~vmkit.viz.ring_diagram`), so the buttons and the picture are on screen together; the
console and the last events under them. Colours come from JupyterLab's theme variables, so the
light and the dark theme both read.

The Stepper is a view of a :class:`vmkit.Debugger` (``stepper.debugger``): Step, Step ×N,
Back, Back ×N and Reset are the debugger's ``step``, ``reverse_step`` and ``goto(0)``; Run is
its ``cont`` in time slices, stopped by the breakpoints of the "break at" box (break_at
points), by the watchpoints and event breaks set on the debugger (from code or the panels
under the view), and by "the ring changes" / "a trap or interrupt" (event breaks on ``ring``
and ``trap`` for that run only). Going back restores the debugger's checkpoints (within its
memory budget, ``budget=``) and replays deterministically. The Run button works in time
slices on the kernel's event loop (an asyncio task), so Stop and the display stay responsive
while a long guest runs; ``stepper.run(...)`` called from code, or with no running event loop
(scripts, tests), runs to the end before returning.

The widget holds no simulation logic: it calls the Debugger (which uses the Monitor API)
and draws with :mod:`vmkit.viz`. It never raises on a finished or
crashed VM: the status line says what happened.

>>> from vmkit import guests
>>> from vmkit.vmm import Native
>>> from vmkit.widgets import Stepper
>>> Stepper(Native(guests.build("hello")))      # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import html
import os
import time
from collections import deque

import ipywidgets as W
import traitlets

from vmkit.viz.html import (console_html, describe_event, disassembly_html, events_html,
                            flags_html, register_values, registers_html, source_line)
from vmkit.viz.render import CSS_TEXT
from vmkit.debug import Debugger
from vmkit.debug.debugger import TRAP_KINDS
from vmkit.widgets.history import vm_stopped
from vmkit.widgets.static import StaticMixin

__all__ = ["Stepper", "UNTIL", "TRAP_KINDS"]

#: Run's stop conditions: (what the dropdown says, value)
UNTIL = (("it stops", "stop"), ("a breakpoint", "breakpoint"),
         ("the ring changes", "ring"), ("a trap or interrupt", "trap"))


#: Step ×N above this many steps runs in time slices like Run (the kernel stays responsive)
STEP_SLICE_ABOVE = 20_000


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def _flags(cpu, previous, title) -> str:
    eflags = getattr(cpu, "eflags", None)
    # five flags a row: two CPUs' tables side by side fit the Stepper's left column
    return flags_html(eflags, previous, title=title, per_row=5) if isinstance(eflags, int) \
        else ""


def _as_monitor(monitor):
    """A monitor as is; a GuestImage or a guest name runs under Native."""
    if all(hasattr(monitor, a) for a in ("step", "run", "snapshot", "restore", "cpu", "trace")):
        return monitor
    from vmkit.guests import GuestImage
    if isinstance(monitor, (str, GuestImage)):
        from vmkit.vmm import Native
        return Native(monitor)
    from vmkit.errors import VmkitError
    raise VmkitError(f"Stepper takes a monitor (e.g. Native(guests.build('hello'))), a guest "
                     f"image or a guest name, got {type(monitor).__name__}")


class _Pane:
    """One pane of the Stepper's view (the status line, the code, the CPUs, the console, the
    last events) as HTML text in ``value``. Panes are not widgets of their own: the Stepper
    sends them together (:meth:`Stepper._show`)."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = ""

    def __repr__(self) -> str:
        return f"<pane: {len(self.value)} characters of HTML>"


#: the default bound on a Stepper's checkpoints. Copy-on-write checkpoints cost a few KiB
#: each (the pages a guest wrote, the trace's pieces), so 16 MiB holds thousands of them; a
#: Stepper that runs long thins them where densest rather than growing.
STEPPER_BUDGET = 16 << 20


class Stepper(StaticMixin, W.VBox):
    """Step, run, go back and reset a monitor, watching its CPU(s), code, console and events.

    ``budget`` bounds the debugger's checkpoints (bytes; default :data:`STEPPER_BUDGET`,
    16 MiB: a lecture notebook's kernel keeps every Stepper it made, issue 19);
    ``window`` is the number of instructions shown from EIP on; ``ring_view`` (default True)
    embeds a :class:`~vmkit.widgets.RingView` that follows the stepper; ``panels`` (default
    True) adds the debugger's panels under the view (watchpoints, event breaks, live tables:
    :class:`~vmkit.widgets.debugpanels.DebugPanels`, collapsed)."""

    #: steps since the widget was made (Back and Reset move it back); observers may watch it
    position = traitlets.Int(0)
    #: the status line's text (what happened last, or why the VM stopped)
    status = traitlets.Unicode("")
    #: True while Run is running
    running = traitlets.Bool(False)

    @property
    def vm(self):
        """The monitor (the attribute's name before it was ``monitor``; kept so that notebooks
        reading ``.vm`` keep working)."""
        return self.monitor

    def __init__(self, monitor, *, budget: int | None = None, window: int = 8, recent: int = 3,
                 events: int = 8, ring_view: bool = True, time_slice: float = 0.05,
                 panels: bool = True, **kwargs):
        monitor = _as_monitor(monitor)
        self.monitor = monitor
        self.window = window
        self.n_events = events
        self.run_chunk = 5_000   # steps per debugger.cont slice; adapts to the time slice
        self.checkpoint_steps = 1000  # Step: a checkpoint every this many steps (Back is quick)
        self.time_slice = time_slice
        self._recent: deque = deque(maxlen=max(recent, 0) or 1)
        self._show_recent = recent > 0
        self._previous: dict | None = None        # register values before the last action
        self._previous_real: dict | None = None
        self._previous_flags: int | None = None
        self._message = ""
        self._stop_requested = False
        self._task = None
        self.debugger = None
        self._box_points: list = []      # the debugger's breakpoints from the "break at" box
        self.watch_hits: list = []       # the watchpoint hits Run stopped at, oldest first
        # the virtualization holes seen (te: vmkit.vmm.te.holes), address -> the Hole event:
        # their rows are flagged in the disassembly, and the status names the last one
        self.holes: dict = {}
        self._last_hole = None
        monitor.trace.subscribe("hole", self._on_hole)
        try:
            self.debugger = Debugger(monitor, budget=budget or STEPPER_BUDGET)
        except Exception as e:   # e.g. a monitor that cannot snapshot: no Back, but no raise
            self._message = f"error: cannot take snapshots ({e}); Back and Reset are off"

        # ---- controls ----
        btn = dict(layout=W.Layout(width="auto"))
        self.step_button = W.Button(description="Step", tooltip="run one instruction",
                                    icon="step-forward", **btn)
        self.stepn_button = W.Button(description="Step ×N", tooltip="run N instructions",
                                     **btn)
        # wide enough for 10,000,000 (8 digits) beside its label and the browser's spin arrows
        self.n_box = W.BoundedIntText(value=10, min=1, max=10_000_000, description="N",
                                      style={"description_width": "initial"},
                                      layout=W.Layout(width="10em"))
        self.n_box.add_class("vmkit-stepper-n")
        self.back_button = W.Button(description="Back", tooltip="go back one step",
                                    icon="step-backward", **btn)
        self.backn_button = W.Button(description="Back ×N", tooltip="go back N steps", **btn)
        self.reset_button = W.Button(description="Reset", tooltip="back to step 0",
                                     icon="undo", **btn)
        self.run_button = W.Button(description="Run", tooltip="run until the condition (or a "
                                   "breakpoint)", icon="play", button_style="success", **btn)
        self.until_box = W.Dropdown(options=list(UNTIL), value="stop", description="until",
                                    style={"description_width": "initial"},
                                    layout=W.Layout(width="14em"))
        self.limit_box = W.BoundedIntText(value=1_000_000, min=1, max=10**9,
                                          description="at most",
                                          style={"description_width": "initial"},
                                          layout=W.Layout(width="13em"))
        self.stop_button = W.Button(description="Stop", tooltip="stop a running Run",
                                    icon="stop", button_style="warning", disabled=True, **btn)
        self.breakpoint_box = W.Text(placeholder="symbol or 0x… , …",
                                     description="break at", continuous_update=False,
                                     style={"description_width": "initial"},
                                     layout=W.Layout(width="24em"))
        self.step_button.on_click(lambda _: self.step())
        self.stepn_button.on_click(lambda _: self.step(self.n_box.value, background=True))
        self.back_button.on_click(lambda _: self.back())
        self.backn_button.on_click(lambda _: self.back(self.n_box.value))
        self.reset_button.on_click(lambda _: self.reset())
        self.run_button.on_click(lambda _: self.run(self.until_box.value,
                                                    self.limit_box.value, background=True))
        self.stop_button.on_click(lambda _: self.stop())
        self.breakpoint_box.observe(lambda ch: self.set_breakpoints(ch["new"]), names="value")

        # ---- panes ----
        # The compact layout (a laptop's ~650 px of notebook, or a slide): the controls, the
        # status line, the code and the CPUs on the left, the ring picture on the right, so
        # the buttons and the picture are on screen together; the console and the last events
        # side by side below. On a narrow page the picture wraps below the left column.
        # The panes are parts of two HTML widgets, not a widget each: a Step sends one message
        # for them (and the ring view one for the line under its picture), where it sent
        # three to five. Every message costs the kernel and the server a thread hand-off and
        # a few hundred microseconds; with 20 kernels clicking at once on two busy cores
        # (load ~15), each one more put about 35 ms on the median click (issue 19; the Step's
        # own drawing is under 1 ms of CPU).
        self.header = _Pane()                 # status line: guest, monitor, step, EIP, ring
        self.disassembly_view = _Pane()
        self.registers_view = _Pane()
        self.console_view = _Pane()
        self.events_view = _Pane()
        self.main_view = W.HTML()             # header, code and CPUs
        self.main_view.add_class("vmkit-stepper-main")
        self.bottom_view = W.HTML()           # console and last events
        self.ring_view = None
        wrap = W.Layout(flex_flow="row wrap", align_items="center")
        self.controls = W.VBox([
            W.HBox([self.step_button, self.stepn_button, self.n_box, self.back_button,
                    self.backn_button, self.reset_button], layout=wrap),
            W.HBox([self.run_button, self.until_box, self.limit_box, self.stop_button],
                   layout=wrap),
            W.HBox([self.breakpoint_box], layout=wrap)])
        self.controls.add_class("vmkit-stepper-controls")  # hook for tests/browser/test_browser_fit.py
        left = W.VBox([self.controls, self.main_view],
                      layout=W.Layout(flex="1 1 30em", min_width="0"))
        top = [left]
        if ring_view:
            from vmkit.widgets.rings import RingView
            self.ring_view = RingView(monitor, compact=True,
                                      layout=W.Layout(flex="0 1 27em", min_width="18em"))
            top.append(self.ring_view)
        rows = [W.HBox(top, layout=W.Layout(flex_flow="row wrap", align_items="flex-start",
                                             grid_gap="0 12px")),
                self.bottom_view]
        self.panels = None
        if panels and self.debugger is not None:
            from vmkit.widgets.debugpanels import DebugPanels
            self.panels = DebugPanels(self)     # collapsed: the Stepper does not grow
            rows.append(self.panels)
        super().__init__(rows, **kwargs)
        self.add_class("vmkit-stepper-live")
        if self.ring_view is not None:
            self.ring_view.follow(self)
        self._refresh()

    # ---- state helpers ----------------------------------------------------------------------
    @property
    def split(self) -> bool:
        """True when the guest sees a virtual CPU distinct from the real one."""
        try:
            return self.monitor.vcpu is not self.monitor.cpu
        except Exception:
            return False

    @property
    def finished(self) -> bool:
        try:
            return vm_stopped(self.monitor)
        except Exception:
            return False

    def _result_text(self) -> str:
        """'finished: poweroff (exit code 0)' / 'crashed: ...' for stopped VMs, else ''."""
        vms = list(getattr(self.monitor, "vms", []) or [])
        parts = []
        for v in vms:
            r = getattr(v, "result", None)
            if r is None:
                m = getattr(v, "machine", None)
                r = getattr(m, "stopped", None)
            if r is None:
                continue
            reason = getattr(r, "reason", str(r))
            detail = getattr(r, "detail", "")
            word = "crashed" if reason == "crash" else "finished"
            text = f"{word}: {reason}" if word == "finished" else f"crashed: {detail or reason}"
            if word == "finished" and detail:
                text += f" ({detail})"
            parts.append((f"VM {v.index} " if len(vms) > 1 else "") + text)
        return "; ".join(parts)

    def _snapshot_registers(self) -> None:
        self._previous = register_values(self.monitor.vcpu)
        self._previous_real = register_values(self.monitor.cpu) if self.split else None
        self._previous_flags = self._previous.get("eflags")

    def _busy(self) -> bool:
        if self.running:
            self._message = "Run is running: press Stop first"
            self._refresh(header_only=True)
            return True
        return False

    def _sync_position(self) -> None:
        if self.debugger is not None:
            self.position = self.debugger.position

    # ---- actions ----------------------------------------------------------------------------
    def step(self, n: int = 1, *, background: bool = False) -> list:
        """Run ``n`` steps (one instruction each, or one exception delivery); returns the
        events of the last step. Does nothing but say so on a stopped VM. With ``background``
        (the Step ×N button) more than 20,000 steps run in time slices like :meth:`run`."""
        if self._busy():
            return []
        if background and n > STEP_SLICE_ABOVE and self.debugger is not None:
            self.run("_steps", n, background=True)   # same steps, Stop stays responsive
            return []
        events = []
        self._message = ""
        self._last_hole = None
        try:
            self._snapshot_registers()
            n = max(0, int(n))
            if self.finished:
                self._message = "nothing to step"
            elif self.debugger is None:
                for _ in range(n):
                    self._recent.append(self.monitor.cpu.eip)
                    events = self.monitor.step()
                    if self.finished:
                        break
            else:
                # the steps before the last few in one go; the last ones one at a time, for
                # the window's "just ran" rows and the last step's events
                # A watchpoint hit stops the steps there (Debugger.step), as it stops Run.
                single = min(n, self._recent.maxlen)
                bulk = n - single
                hit = None
                while bulk > 0 and not self.finished:   # with a checkpoint now and then
                    k = min(bulk, self.checkpoint_steps)
                    stop = self.debugger.step(k)
                    if stop.kind == "watchpoint":
                        hit = stop
                        break
                    bulk -= k
                    self._checkpoint_now_and_then()
                trace = self.monitor.trace
                for _ in range(single if hit is None else 0):
                    if self.finished:
                        break
                    self._recent.append(self.monitor.cpu.eip)
                    total = trace.total
                    stop = self.debugger.step(1)
                    events = trace.since(total)
                    if stop.kind == "watchpoint":
                        hit = stop
                        break
                if hit is not None:
                    self._note_hit(hit)
                    self._message = "stopped: " + self._stop_text(hit)
            self._checkpoint_now_and_then()
        except Exception as e:
            self._message = f"error: {type(e).__name__}: {e}"
        h = self._last_hole
        if h is not None and not self._message:
            self._message = (f"⚠ virtualization hole: {h.text} did not trap; the guest saw "
                             f"{h.saw}, the bare machine shows {h.bare}")
        self._sync_position()
        self._refresh()
        return events

    def _checkpoint_now_and_then(self) -> None:
        """A debugger checkpoint every ``checkpoint_steps`` steps of clicking Step, so that
        Back replays at most that many instructions (the debugger itself checkpoints at its
        stops and every 50,000 instructions of a long run)."""
        dbg = self.debugger
        if dbg is not None and not self.finished:
            tl = dbg.timeline
            if dbg.position - max(p for p in tl.checkpoints if p <= dbg.position) \
                    >= self.checkpoint_steps:
                tl.checkpoint()

    def back(self, n: int = 1) -> int:
        """Go back ``n`` steps (through snapshots and replay); returns the new position."""
        if self._busy() or self.debugger is None:
            return self.position
        self._message = ""
        try:
            self._snapshot_registers()
            old = self.debugger.position
            if n >= 1 and old > 0:
                self.debugger.reverse_step(int(n))
            moved = old - self.debugger.position
            self._message = f"went back {moved} step{'s' if moved != 1 else ''}"
            if self.debugger.timeline.diverged:
                self._message += " (the replay did not land exactly: is the monitor " \
                                 "deterministic?)"
        except Exception as e:
            self._message = f"error: {type(e).__name__}: {e}"
        self._recent.clear()
        self._sync_position()
        self._refresh()
        return self.position

    def reset(self) -> None:
        """Back to step 0 (the monitor's state when the widget was made)."""
        if self._busy() or self.debugger is None:
            return
        try:
            self._snapshot_registers()
            self.debugger.goto(0)
            self._message = "reset to step 0"
        except Exception as e:
            self._message = f"error: {type(e).__name__}: {e}"
        self._recent.clear()
        self._sync_position()
        self._refresh()

    def reverse_continue(self):
        """Back to the previous hit of a breakpoint, watchpoint or event break (the
        debugger's ``reverse_continue``; step 0 if there is none); returns the DebugStop."""
        if self._busy() or self.debugger is None:
            return None
        stop = None
        try:
            self._snapshot_registers()
            stop = self.debugger.reverse_continue()
            self._message = ("back at step 0: no earlier hit" if stop.kind == "start"
                             else f"back to step {stop.step:,}: " + self._stop_text(stop))
        except Exception as e:
            self._message = f"error: {type(e).__name__}: {e}"
        self._recent.clear()
        self._sync_position()
        self._refresh()
        return stop

    def watch(self, where, size: int = 4, on: str = "write", *, physical: bool = False):
        """Watch guest memory (the debugger's ``watch``; the Watchpoints panel does this):
        Run stops after the instruction that writes (or reads) it."""
        w = self.debugger.watch(where, size, on, physical=physical)
        self._refresh()
        return w

    def set_breakpoints(self, spec) -> set:
        """Set the breakpoints from "sym, hello:_start, 0x401000, ..." (or an iterable of
        addresses and symbols). A bare symbol is looked up in the kernel first, then the user
        programs; "program:symbol" picks the program. Returns the addresses."""
        items = spec.replace(";", ",").split(",") if isinstance(spec, str) else list(spec)
        addrs, bad = set(), []
        for it in items:
            if isinstance(it, int):
                addrs.add(it)
                continue
            s = str(it).strip()
            if not s:
                continue
            a = self._resolve(s)
            if a is None:
                bad.append(s)
            else:
                addrs.add(a)
        try:
            bps = self.monitor.breakpoints
            bps.clear()
            bps.update(addrs)
            if self.debugger is not None:   # Run stops at them through the debugger
                for p in self._box_points:
                    if p in self.debugger.points:
                        self.debugger.delete(p)
                self._box_points = [self.debugger.break_at(a) for a in sorted(addrs)]
        except Exception as e:
            self._message = f"error: cannot set breakpoints: {e}"
        else:
            self._message = (f"unknown symbol{'s' if len(bad) > 1 else ''}: {', '.join(bad)}"
                             if bad else f"{len(addrs)} breakpoint{'s' if len(addrs) != 1 else ''}")
        self._refresh()   # the disassembly marks breakpoints
        return addrs

    def _resolve(self, s: str) -> int | None:
        try:
            return int(s, 0)
        except ValueError:
            pass
        try:
            img = self.monitor.vms[getattr(self.monitor, "current", 0)].image
            progs = img.programs
            if ":" in s:   # "hello:_start": a symbol of one program (names repeat)
                name, sym = s.split(":", 1)
                return progs[name.strip()].symbols.get(sym.strip()) if name.strip() in progs \
                    else None
            for prog in progs.values():   # the kernel's first
                if s in prog.symbols:
                    return prog.symbols[s]
        except Exception:
            pass
        return None

    @property
    def task(self):
        """The asyncio task of the current (or last) background run, or None."""
        return self._task

    def stop(self) -> None:
        """Ask a running Run to stop after its current time slice."""
        self._stop_requested = True

    def run(self, until: str = "stop", max_steps: int | None = None, *,
            background: bool = False):
        """Run until ``until`` happens: "stop" (the guest stops), "breakpoint", "ring" (the
        ring changes, real or virtual) or "trap" (a trap, exception or interrupt), or until
        ``max_steps`` steps (default: the "at most" box). Whatever ``until`` says, a
        breakpoint stops the run, as gdb's continue does ("breakpoint" alone only says
        that nothing else should); the first instruction is not checked, so Run goes on from
        the breakpoint it stopped at.

        Called from code it runs to the end and returns the status text, so the next line sees
        the result. With ``background=True`` (what the Run button does) and a running event
        loop (a Jupyter kernel) it starts an asyncio task and returns it: the display updates
        between time slices and Stop ends it. Without an event loop it runs synchronously."""
        if self._busy():
            return None
        if until not in dict((v, k) for k, v in UNTIL) and until != "_steps":
            self._message = (f"error: until must be one of "
                             f"{', '.join(v for _, v in UNTIL)}, got {until!r}")
            self._refresh(header_only=True)
            return None
        limit = self.limit_box.value if max_steps is None else int(max_steps)
        self._message = ""
        self._stop_requested = False
        self._snapshot_registers()
        self._recent.clear()
        gen = self._chunks(until, limit)
        loop = None
        if background:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        if loop is None:
            self.running = True
            try:
                while True:
                    next(gen)
            except StopIteration as s:
                self._message = s.value or ""
            except Exception as e:
                self._message = f"error: {type(e).__name__}: {e}"
            finally:
                self.running = False
            self._sync_position()
            self._refresh()
            return self.status
        self.running = True     # at once: a second click must not start a second run
        self._task = loop.create_task(self._run_async(gen))
        return self._task

    async def _run_async(self, gen) -> str:
        self.stop_button.disabled = False
        for b in (self.run_button, self.step_button, self.stepn_button, self.back_button,
                  self.backn_button, self.reset_button):
            b.disabled = True
        try:
            while True:
                try:
                    next(gen)
                except StopIteration as s:
                    self._message = s.value or ""
                    break
                self._sync_position()
                self._message = "running…"
                self._refresh()
                await asyncio.sleep(0)   # let the kernel handle Stop and other messages
                if self._stop_requested:
                    self._message = f"stopped by you at step {self.debugger.position}"
                    break
        except Exception as e:
            self._message = f"error: {type(e).__name__}: {e}"
        finally:
            gen.close()
            self.running = False
            self.stop_button.disabled = True
            for b in (self.run_button, self.step_button, self.stepn_button, self.back_button,
                      self.backn_button, self.reset_button):
                b.disabled = False
            self._sync_position()
            self._refresh()
        return self.status

    def _chunks(self, until: str, limit: int):
        """A generator that runs in time slices (yielding between them) and returns the
        message saying why it stopped. Every slice is a :meth:`Debugger.cont` (or ``step``
        for Step ×N): the breakpoints, watchpoints and event breaks set on the debugger stop
        it, and "the ring changes" / "a trap or interrupt" are event breaks for this run."""
        dbg = self.debugger
        if dbg is None:
            return "error: Run needs snapshots (see the status above)"
        start = dbg.position
        end = start + limit
        if until == "breakpoint" and not self.monitor.breakpoints and not dbg.points:
            return "no breakpoints set: type a symbol or an address into \"break at\""
        extra = {"ring": [dbg.make_event_break("ring")],
                 "trap": [dbg.make_event_break("trap")]}.get(until, [])
        rings = self._rings()
        first = True
        last_cp = start
        idle = 0
        while True:
            if self.finished:
                return ""
            if dbg.position >= end:
                return f"ran {limit:,} steps"
            before = dbg.position
            n = min(self.run_chunk, end - before)
            t0 = time.perf_counter()
            if until == "_steps":
                stop = dbg.step(n)
            else:
                stop = dbg.cont(n, until=extra, resume=first, checkpoint=False)
            dt = time.perf_counter() - t0
            first = False
            ran = dbg.position - before
            if ran >= n // 2 and dt > 0:
                # aim at a slice of ~time_slice: Stop answers quickly whatever the speed
                rate = ran / dt
                self.run_chunk = int(min(max(rate * self.time_slice, 1_000), 200_000))
            # a checkpoint every other slice (~0.1 s of running), so Back after a Run
            # replays at most that long (a copy-on-write checkpoint costs about 1 ms); the
            # debugger adds one at every hit
            if dbg.position - last_cp >= 2 * self.run_chunk and not self.finished:
                dbg.timeline.checkpoint()
                last_cp = dbg.position
            if stop.kind == "exited" or self.finished:
                return ""
            if stop.kind == "breakpoint":
                return "stopped at breakpoint " + self._where(self.monitor.cpu.eip)
            if stop.kind == "watchpoint":
                self._note_hit(stop)
                return "stopped: " + self._stop_text(stop)
            if stop.kind == "event":
                if stop.point in extra and until == "ring":
                    # the rings at the start of the run are those just before the change
                    return "stopped: ring changed " + self._ring_change(rings, self._rings())
                if stop.point in extra and stop.event is not None:
                    return f"stopped: {describe_event(stop.event)}"
                return f"stopped: {stop}"
            if stop.kind == "error":
                return f"the monitor stopped the run: {stop.detail}"
            if ran == 0:
                idle += 1
                if idle >= 3:
                    return f"the monitor stopped the run: {stop}"
            else:
                idle = 0
            yield

    def _on_hole(self, ev) -> None:
        self.holes[ev.address] = ev
        self._last_hole = ev

    def _note_hit(self, stop) -> None:
        key = (stop.step, getattr(stop.point, "id", None), stop.old, stop.new)
        if not any((h.step, getattr(h.point, "id", None), h.old, h.new) == key
                   for h in self.watch_hits):
            self.watch_hits.append(stop)

    def _stop_text(self, stop) -> str:
        """A stop in a line for the status: shorter than ``str(stop)``."""
        if stop.kind == "watchpoint":
            w = stop.point
            width = 2 * len(stop.new or stop.old or b"")

            def value(v):
                return "(not mapped)" if v is None else f"{v:#0{width + 2}x}"
            who = stop.who + (f" ({stop.how})" if stop.how else "")
            if stop.access == "read":
                return f"watchpoint {w.id} read by {who}"
            return (f"watchpoint {w.id}: {value(stop.old_value)} → {value(stop.new_value)}, "
                    f"written by {who}")
        if stop.kind == "breakpoint":
            return "breakpoint " + self._where(stop.eip)
        return str(stop)

    def _rings(self):
        try:
            return (self.monitor.cpu.cpl, self.monitor.vcpu.cpl)
        except Exception:
            return (0, 0)

    def _ring_change(self, old, new) -> str:
        if self.split:
            return (f"(guest believes ring {old[1]} → {new[1]}; real CPU ring {old[0]} → "
                    f"{new[0]})")
        return f"(ring {old[0]} → {new[0]})"

    def _where(self, eip: int) -> str:
        try:
            img = self.monitor.vms[getattr(self.monitor, "current", 0)].image
        except Exception:
            img = None
        f, ln, _ = source_line(img, eip)
        return f"{eip:08x}" + (f" ({os.path.basename(f)}:{ln})" if f else "")

    # ---- drawing ----------------------------------------------------------------------------
    def _header_html(self) -> str:
        monitor = self.monitor
        try:
            guest = monitor.vms[getattr(monitor, "current", 0)].image.name
        except Exception:
            guest = "guest"
        mon = getattr(monitor, "title", None) or getattr(monitor, "name", type(monitor).__name__)
        try:
            if self.split:
                ring = (f"guest believes ring <b>{monitor.vcpu.cpl}</b> · real CPU in ring "
                        f"<b>{monitor.cpu.cpl}</b>")
            else:
                ring = f"ring <b>{monitor.cpu.cpl}</b>"
        except Exception:
            ring = "ring ?"
        try:
            clock = monitor.machine.clock
            gtime = f" · guest time {clock:,}"
        except Exception:
            gtime = ""
        try:   # class vmkit-eip: the hook tests/browser/test_browser.py reads
            eip = f' · <span class="vmkit-eip">EIP {monitor.cpu.eip:08x}</span>'
        except Exception:
            eip = ""
        status = self.status
        colour = "#D55E00" if status.startswith(("crashed", "error")) else CSS_TEXT
        return (f'<div style="font-family:sans-serif;font-size:13px;line-height:1.4;'
                f'padding:2px 0;color:{CSS_TEXT}">'
                f'<b>{_esc(guest)}</b> under <b>{_esc(mon)}</b> · step <b>{self.position:,}'
                f'</b>{gtime}{eip} · {ring} · <span class="vmkit-status" style="color:{colour}">'
                f'{_esc(status)}</span></div>')

    def _status_text(self) -> str:
        result = self._result_text()
        msg = self._message
        if result and msg.startswith("error"):
            return f"{msg}; {result}"
        if result:
            return result
        return msg or ("running…" if self.running else "ready")

    def _registers_html(self) -> str:
        """The CPU(s): under a monitor with a virtual CPU, the virtual one (what the guest
        believes) and the real one side by side, each with its EFLAGS under it."""
        monitor = self.monitor
        row = '<div style="display:flex;gap:12px;flex-wrap:wrap;align-items:flex-start">'
        if self.split:
            real_prev = self._previous_real
            virt = (registers_html(monitor.vcpu, self._previous,
                                   title="virtual CPU (guest view)")
                    + _flags(monitor.vcpu, self._previous_flags, "virtual EFLAGS"))
            real = (registers_html(monitor.cpu, real_prev, title="real CPU")
                    + _flags(monitor.cpu, real_prev.get("eflags") if real_prev else None,
                             "real EFLAGS"))
            return f'{row}<div>{virt}</div><div>{real}</div></div>'
        return (f'{row}<div>{registers_html(monitor.cpu, self._previous)}</div>'
                f'<div>{_flags(monitor.cpu, self._previous_flags, "EFLAGS")}</div></div>')

    def _disassembly_html(self) -> str:
        before = list(self._recent) if self._show_recent else []
        return disassembly_html(self.monitor, before=before, count=self.window, raw_bytes=False,
                                comments=False, holes=self.holes)

    def _events_html(self) -> str:
        tr = self.monitor.trace
        return events_html(tr.since(tr.total - self.n_events), limit=self.n_events,
                           title="last events")

    def _refresh(self, header_only: bool = False) -> None:
        """Redraw the panes (``header_only``: just the status line)."""
        try:
            self.status = self._status_text()
            self.header.value = self._header_html()
            if not header_only:
                self.disassembly_view.value = self._disassembly_html()
                self.registers_view.value = self._registers_html()
                self.console_view.value = console_html(self.monitor.console)
                self.events_view.value = self._events_html()
                if getattr(self, "panels", None) is not None:
                    self.panels.refresh()
        except Exception as e:  # drawing must never raise into the notebook
            self.header.value = (f'<div style="color:#D55E00">could not draw the stepper: '
                                 f'{_esc(type(e).__name__)}: {_esc(e)}</div>')
        self._show()

    def _show(self) -> None:
        """Send the panes to the browser: the two HTML widgets, each only if it changed. The
        parts sit in boxes spaced as widgets of their own were (2 px around each)."""
        box = '<div style="margin:2px">'
        self.main_view.value = (f'<div style="display:flex;flex-direction:column">'
                                f'{box}{self.header.value}</div>'
                                f'{box}{self.disassembly_view.value}</div>'
                                f'{box}{self.registers_view.value}</div></div>')
        self.bottom_view.value = (
            f'<div style="display:flex;flex-wrap:wrap;gap:0 12px">'
            f'<div style="flex:1 1 0;min-width:16em;margin:2px">{self.console_view.value}</div>'
            f'<div style="flex:1.6 1 0;min-width:20em;margin:2px">{self.events_view.value}'
            f'</div></div>')

    # ---- static form ------------------------------------------------------------------------
    def static_html(self) -> str:
        """The Stepper's current state as HTML, laid out as the live widget (code and CPUs
        beside the ring picture, the console and the last events under them)."""
        self.status = self._status_text()
        left = (f'<div style="flex:1 1 30em;min-width:0">{self._header_html()}'
                f'{self._disassembly_html()}{self._registers_html()}</div>')
        right = ""
        if self.ring_view is not None:
            right = (f'<div style="flex:0 1 27em;min-width:18em">'
                     f'{self.ring_view.static_html()}</div>')
        bottom = (f'<div style="display:flex;gap:0 12px;flex-wrap:wrap">'
                  f'<div style="flex:1 1 16em">{console_html(self.monitor.console)}</div>'
                  f'<div style="flex:1.6 1 20em">{self._events_html()}</div></div>')
        panels = self.panels.static_html() if self.panels is not None else ""
        return (f'<div class="vmkit-stepper" role="region" aria-label="vmkit stepper '
                f'(static snapshot)"><div style="display:flex;gap:0 12px;flex-wrap:wrap;'
                f'align-items:flex-start">{left}{right}</div>{bottom}{panels}</div>')
