"""The Stepper and RingView widgets, tested without a kernel (ipywidgets runs without a
frontend; one test records the comm messages a frontend would receive)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys

import comm
import pytest

from vmkit import guests
from vmkit.vmm import Native
from vmkit.widgets import RingView, StepHistory, Stepper


def hello():
    return Native(guests.build("hello"))


def full_state(vm):
    """Everything the guest could see: CPU state, all of memory, clocks, console."""
    m = vm.machine
    return (vm.cpu.state(), hashlib.sha256(m.read(0, m.memory_size)).hexdigest(), m.clock,
            m.steps, vm.console)


# ---- stepping -----------------------------------------------------------------------------

def test_step_button_advances_eip_and_updates_registers():
    """Does clicking Step run one instruction and show the new EIP, highlighted?"""
    vm = hello()
    s = Stepper(vm)
    eip0 = vm.cpu.eip
    s.step_button.click()
    assert s.position == 1
    assert vm.cpu.eip != eip0
    view = s.registers_view.value
    assert f"{vm.cpu.eip:08x}*" in view and f"was {eip0:08x}" in view
    assert "▶" in s.disassembly_view.value
    assert f"{vm.cpu.eip:08x}" in s.disassembly_view.value


def test_changed_registers_are_highlighted_and_unchanged_are_not():
    """After a step, are exactly the registers it changed highlighted?"""
    vm = hello()
    s = Stepper(vm)
    s.step(3)
    before = dict(s._previous)   # what the widget compares with: the values before the click
    s.step()
    from vmkit.viz import register_values
    after = register_values(vm.cpu)
    changed = [k for k in after if after[k] != before[k]]
    assert changed
    assert s.registers_view.value.count('class="vmkit-changed"') == len(changed)


def test_step_n_and_source_lines_in_disassembly():
    """Does Step ×N move N steps, and does the window show the guest source file and line?"""
    vm = hello()
    s = Stepper(vm)
    s.n_box.value = 25
    s.stepn_button.click()
    assert s.position == 25
    html = s.disassembly_view.value
    assert "kernel.s:" in html


def test_back_after_600_steps_is_exactly_step_350():
    """Does Back ×250 after 600 steps give exactly the state of step 350 (CPU and memory)?"""
    vm = Native(guests.build("ctxswitch"))
    s = Stepper(vm)
    s.step(350)
    at_350 = full_state(vm)
    s.step(250)
    assert s.position == 600 and full_state(vm) != at_350
    s.n_box.value = 250
    s.backn_button.click()
    assert s.position == 350
    assert full_state(vm) == at_350


def test_back_5000_steps_reaches_with_bounded_snapshots():
    """Does Back reach 5,000 steps back, through the Stepper's debugger, with its checkpoints
    within the debugger's memory budget?"""
    vm = Native(guests.build("ctxswitch"))
    s = Stepper(vm)
    s.step(1000)
    at_1000 = full_state(vm)
    s.step(5000)
    tl = s.debugger.timeline
    assert s.position == tl.position == 6000
    assert tl.used <= s.debugger.budget
    s.back(5000)
    assert s.position == 1000 and full_state(vm) == at_1000


def test_back_into_a_run_and_breakpoints_added_later_do_not_change_the_past():
    """Is a position inside a Run burst exact, even with a breakpoint set afterwards inside
    the replayed range?"""
    img = guests.build("ctxswitch")
    ref = Native(img)
    ref.run(max_steps=9000)
    expect = full_state(ref)
    vm = Native(img)
    s = Stepper(vm)
    s.run("stop", max_steps=12000)
    assert s.position == 12000
    s.set_breakpoints([vm.cpu.eip])   # a breakpoint the replay will pass
    s.back(3000)
    assert s.position == 9000 and full_state(vm) == expect


def test_reset_returns_to_step_0():
    """Does Reset give back exactly the state the widget started from?"""
    vm = hello()
    start = full_state(vm)
    s = Stepper(vm)
    s.step(300)
    s.run("stop", max_steps=2000)
    s.reset_button.click()
    assert s.position == 0 and full_state(vm) == start


def test_run_until_ring_change_stops_when_the_ring_changes():
    """Does Run until the ring changes stop right after the kernel's iret into ring 3?"""
    vm = hello()
    s = Stepper(vm)
    assert vm.cpu.cpl == 0
    s.run("ring")
    assert vm.cpu.cpl == 3
    assert "ring changed" in s.status and "0 → 3" in s.status
    s.back(1)
    assert vm.cpu.cpl == 0


def test_run_until_trap_stops_at_the_system_call():
    """Does Run until a trap or interrupt stop at the first int 0x80 from ring 3?"""
    vm = hello()
    s = Stepper(vm)
    s.run("ring")
    s.run("trap")
    assert vm.cpu.cpl == 0
    assert "int 0x80" in s.status
    last = [e for e in vm.trace if e.kind == "interrupt"][-1]
    assert last.vector == 0x80 and last.from_ring == 3


def test_run_until_breakpoint_on_a_symbol():
    """Does a breakpoint given by symbol stop Run there?"""
    vm = hello()
    s = Stepper(vm)
    s.breakpoint_box.value = "print"
    target = guests.build("hello").programs["hello"].symbols["print"]
    assert vm.breakpoints == {target}
    s.until_box.value = "breakpoint"
    s.run_button.click()
    assert vm.cpu.eip == target
    assert "breakpoint 00" in s.status and "ulib.s:" in s.status   # print is in ulib.s


@pytest.mark.parametrize("until", ["stop", "ring", "trap", "breakpoint"])
def test_run_stops_at_a_breakpoint_whatever_its_until_choice(until):
    """Like gdb's continue, does Run stop at a breakpoint whether it runs until the guest
    stops, the ring changes, a trap or a breakpoint (the kernel's sys_getpid, reached from a
    system call: after the ring change and the trap, so each condition would come first
    only without the breakpoint check)? And does Run go on from it afterwards?"""
    vm = hello()
    s = Stepper(vm, ring_view=False)
    s.run("ring")                                      # into user mode first
    s.run("trap")                                      # the first system call: in the kernel
    s.breakpoint_box.value = "sys_write"
    target = vm.vms[0].image.programs["kernel"].symbols["sys_write"]
    s.run(until)
    assert vm.cpu.eip == target, s.status
    assert s.status.startswith("stopped at breakpoint 00") and "kernel.s:" in s.status
    if until == "stop":
        at = s.position
        s.run("stop")                                  # continue: not stuck at the breakpoint
        assert s.position > at


@pytest.mark.parametrize("monitor", ["TrapAndEmulate", "HardwareAssisted",
                                     "BinaryTranslation"])
def test_run_to_a_breakpoint_keeps_the_history_exact_under_every_monitor(monitor):
    """Run now stops at breakpoints inside the monitor's own run: is the position it reports
    the instructions retired, so that Back one step and Step again land on the breakpoint?"""
    import vmkit.vmm
    vm = getattr(vmkit.vmm, monitor)(guests.build("hello"))
    s = Stepper(vm, ring_view=False)
    s.breakpoint_box.value = "sys_write"
    s.run("stop")
    at, eip = s.position, vm.cpu.eip
    assert at == vm.stats["instructions"] and s.status.startswith("stopped at breakpoint")
    s.back(1)
    s.step()
    assert (s.position, vm.cpu.eip) == (at, eip)


def test_run_does_not_pass_a_breakpoint_at_the_end_of_a_burst():
    """Run goes in bursts of vm.run, which never checks its first instruction: does a burst
    that ends exactly on a breakpoint still stop there?"""
    probe = hello()
    target = probe.vms[0].image.programs["hello"].symbols["_start"]
    steps = 0
    while probe.cpu.eip != target:
        probe.step()
        steps += 1
    vm = hello()
    s = Stepper(vm, ring_view=False)
    s.set_breakpoints([target])
    s.run_chunk = steps                                # the first burst ends on the breakpoint
    s.run("stop")
    assert s.position == steps and vm.cpu.eip == target
    assert s.status.startswith("stopped at breakpoint")


def test_run_until_breakpoint_without_breakpoints_says_so():
    s = Stepper(hello(), ring_view=False)
    s.run("breakpoint")
    assert s.position == 0 and "no breakpoints set" in s.status


def test_step_n_past_the_end_counts_the_same_steps_as_run():
    """Native notices the power-off one step after the OUT that asked for it: do Step ×N past
    the end, Step ×N in time slices and Run all end at the same step (8,204 for hello)?"""
    ran = Stepper(hello(), ring_view=False)
    ran.run()
    stepped = Stepper(hello(), ring_view=False)
    stepped.step(100_000)
    sliced = Stepper(hello(), ring_view=False)
    sliced.run("_steps", 100_000)
    assert ran.position == stepped.position == sliced.position == \
        ran.vm.stats["instructions"] == 8204
    assert stepped.status.startswith("finished: poweroff")
    stepped.back(1)
    assert stepped.position == 8203 and not stepped.finished


def test_n_box_is_wide_enough_for_eight_digits():
    """Is the N box (10,000,000 at most) wide enough for its whole value beside its label
    (the browser test measures it; this keeps the layout from shrinking back)?"""
    s = Stepper(hello(), ring_view=False)
    assert s.n_box.max == 10_000_000
    width = s.n_box.layout.width
    assert width.endswith("em") and float(width[:-2]) >= 9.5
    assert s.n_box.style.description_width == "initial"   # the label never eats the box


def test_dark_theme_readable_current_row_and_status():
    """Do the current instruction's row and the status line carry their own text colours
    (dark on the pale tint; the theme's text colour for the status), instead of inheriting
    white text from a dark theme?"""
    s = Stepper(hello(), ring_view=False)
    row = s.disassembly_view.value.split("<tr>")[1]     # the first row is EIP's
    assert "▶" in row and "background:#F7F1A0;color:#1a1a1a" in row
    assert "var(--jp-content-font-color2" not in row    # no light grey on the tint
    assert "color:var(--jp-content-font-color1, #000)" in s.header.value
    assert "ready" in s.header.value


def test_unknown_breakpoint_symbol_is_reported_not_raised():
    """Does a misspelt symbol give a message in the status line?"""
    s = Stepper(hello())
    s.set_breakpoints("no_such_symbol")
    assert "unknown symbol" in s.status


def test_breakpoint_in_a_named_program_is_marked_in_the_disassembly():
    """Does "hello:_start" pick the user program's _start (not the kernel's), and is a
    breakpoint under EIP marked in the window?"""
    vm = hello()
    s = Stepper(vm)
    user_start = vm.vms[0].image.programs["hello"].symbols["_start"]
    assert s.set_breakpoints("hello:_start") == {user_start}
    s.run("breakpoint")
    assert vm.cpu.eip == user_start and vm.cpu.cpl == 3
    assert "●" in s.disassembly_view.value


def test_run_to_the_end_says_finished_poweroff():
    """Does Run until it stops end with 'finished: poweroff' and the console text?"""
    vm = hello()
    s = Stepper(vm)
    s.run_button.click()
    assert "finished: poweroff" in s.status
    assert "Hello from user mode!" in s.console_view.value


def test_stepper_on_finished_vm_says_so_and_never_raises():
    """Is a VM that already finished shown as 'finished: poweroff', with Step doing nothing?"""
    vm = hello()
    vm.run()
    s = Stepper(vm)
    assert s.status.startswith("finished: poweroff")
    assert "finished: poweroff" in s.header.value
    s.step_button.click()
    s.run_button.click()
    s.back()
    assert s.position == 0 and "finished: poweroff" in s.status
    assert "finished: poweroff" in s._repr_mimebundle_()["text/html"]


def test_stepper_on_crashed_vm_says_crashed():
    """Is a crashed guest (triple fault) reported in the status line, not raised?"""
    vm = Native(guests.from_source("_start:\n    int3\n", name="crasher"))
    vm.run()
    s = Stepper(vm)
    assert s.status.startswith("crashed:") and "triple fault" in s.status
    s.step()
    assert s.status.startswith("crashed:")


# ---- live run on an event loop --------------------------------------------------------------

def test_run_on_event_loop_is_interruptible():
    """With a running event loop, does the Run button start a task at once, update the display
    while running, and stop when Stop is pressed?"""
    async def scenario():
        vm = Native(guests.build("compute", iterations=5_000_000))
        s = Stepper(vm)
        s.limit_box.value = 10**9       # it must still be running when Stop is pressed
        positions = []
        s.observe(lambda ch: positions.append(ch["new"]), names="position")
        s.run_button.click()
        task = s.task
        assert isinstance(task, asyncio.Task)
        await asyncio.sleep(0)
        assert s.running and not s.stop_button.disabled and s.step_button.disabled
        while len(positions) < 3:
            await asyncio.sleep(0.01)
        s.stop_button.click()
        await asyncio.wait_for(task, timeout=10)
        return s, positions

    s, positions = asyncio.run(scenario())
    assert s.status.startswith("stopped by you")
    assert not s.running and s.stop_button.disabled and not s.step_button.disabled
    assert s.status.startswith("stopped by you")
    assert positions == sorted(positions) and positions[-1] == s.position > 0
    assert not s.finished


# ---- virtual and real CPU side by side --------------------------------------------------------

class _SplitNative(Native):
    """Native with a separate object as the 'virtual CPU', to exercise the side-by-side view
    (the real TrapAndEmulate is written elsewhere)."""
    name = "split"

    @property
    def vcpu(self):
        from vmkit.machine.cpu import CPU
        v = CPU()
        v.set_state(self.cpu.state())
        v.cpl = 0    # the guest believes it is in ring 0
        return v


def test_run_from_code_is_synchronous_even_with_an_event_loop():
    """Called from code inside a running event loop (a notebook cell), does run() finish
    before returning, so the next line sees its result?"""
    async def scenario():
        vm = hello()
        s = Stepper(vm)
        status = s.run("ring")
        return vm, s, status

    vm, s, status = asyncio.run(scenario())
    assert vm.cpu.cpl == 3 and "ring changed" in status and not s.running


def test_virtual_and_real_cpu_shown_side_by_side():
    """When vm.vcpu is not vm.cpu, are both CPUs shown, with both rings in the header?"""
    vm = _SplitNative(guests.build("hello"))
    s = Stepper(vm)
    s.run("ring")   # natively into ring 3; the fake vCPU still says 0
    html = s.registers_view.value
    assert "virtual CPU (guest view)" in html and "real CPU" in html
    assert "guest believes ring <b>0</b>" in s.header.value
    assert "real CPU in ring <b>3</b>" in s.header.value


def test_trap_and_emulate_if_available():
    """Under TrapAndEmulate (when importable): does the stepper show both CPUs and go back
    exactly?"""
    try:
        from vmkit.vmm import TrapAndEmulate
    except (ImportError, AttributeError):
        pytest.skip("vmkit.vmm.te is not written yet")
    vm = TrapAndEmulate(guests.build("hello"))
    s = Stepper(vm, ring_view=True)
    s.step(400)
    at = full_state(vm)
    s.step(300)
    s.back(300)
    assert full_state(vm) == at
    if vm.vcpu is not vm.cpu:
        assert "virtual CPU" in s.registers_view.value
    s.run()
    assert s.status.startswith("finished")


# ---- ring view and static forms ---------------------------------------------------------------

def test_ring_view_follows_the_stepper():
    """Does an embedded RingView redraw as the stepper runs, showing the transitions?"""
    vm = hello()
    s = Stepper(vm, ring_view=True)
    assert "no transitions yet" in s.ring_view.diagram_view.value
    s.run()
    html = s.ring_view.diagram_view.value
    assert "int 0x80 (system call) ×5" in html and "<svg" in html
    s.reset()
    assert "no transitions yet" in s.ring_view.diagram_view.value


def test_browser_hooks_change_with_a_step():
    """Are the hooks the browser test clicks through there (a button reading exactly "Step",
    class vmkit-eip showing EIP in hex, class vmkit-rings holding an <svg>), and do the EIP
    text and the ring picture's HTML change with one step?"""
    import re
    s = Stepper(hello())
    assert s.step_button.description == "Step"
    assert "vmkit-rings" in s.ring_view.diagram_view._dom_classes

    def eip_text():
        return re.search(r'class="vmkit-eip">([^<]*)<', s.header.value).group(1)

    eip0, rings0 = eip_text(), s.ring_view.diagram_view.value
    assert re.search(r"[0-9a-f]{8}", eip0) and "<svg" in rings0
    s.step_button.click()
    assert eip_text() != eip0 and s.ring_view.diagram_view.value != rings0


def test_ring_view_redraws_after_the_click_under_an_event_loop():
    """Under a kernel's event loop, is the ring picture redrawn right after a Step returns (not
    inside it), only once for several moves, and a new picture drawn off the main thread
    (the kernel answers while dot runs)?"""
    import threading
    from vmkit.viz import render
    from vmkit.widgets import rings as rings_mod

    async def scenario():
        s = Stepper(hello())
        render._SVG_CACHE.clear()        # a picture another test drew is not drawn again
        calls, threads = [], []
        real = s.ring_view.diagram
        s.ring_view.diagram = lambda: (calls.append(1), real())[1]
        real_html = rings_mod.diagram_html
        rings_mod.diagram_html = lambda g, **kw: (threads.append(threading.current_thread()),
                                                  real_html(g, **kw))[1]
        try:
            s.run("ring")
            s.step()
            assert calls == []           # deferred: the click answered first
            await asyncio.sleep(0)
            assert calls == [1]          # one redraw for the two moves
            await s.ring_view.drawn()
        finally:
            rings_mod.diagram_html = real_html
        return s, calls, threads

    s, calls, threads = asyncio.run(scenario())
    assert calls == [1]
    assert threads and threading.main_thread() not in threads
    assert "trap" not in s.ring_view.diagram_view.value
    assert "iret ×1" in s.ring_view.diagram_view.value


def test_ring_view_drawn_late_never_overwrites_a_newer_picture():
    """Under an event loop, if the view is redrawn at once (refresh() from code) while a picture
    is drawn off the main thread, does the late picture stay unshown, and does a move while it
    is drawn get drawn after it?"""
    from vmkit.viz import render

    async def scenario():
        s = Stepper(hello())
        rv = s.ring_view
        render._SVG_CACHE.clear()
        s.run("ring")                    # a new transition: drawn off the main thread
        await asyncio.sleep(0)
        late = rv._drawing
        assert late is not None
        s.run("ring")                    # moves while it is drawn ...
        s.reset()                        # ... back to step 0: no transitions
        rv.refresh()                     # at once, newer than the drawing
        assert "no transitions yet" in rv.diagram_view.value
        await asyncio.wait([late])       # the late picture is ready: not shown
        assert "no transitions yet" in rv.diagram_view.value
        await rv.drawn()
        return rv

    rv = asyncio.run(scenario())
    assert "no transitions yet" in rv.diagram_view.value


def test_static_bundles_have_html_and_svg():
    """Do the widgets offer a static picture beside the widget view?"""
    vm = hello()
    s = Stepper(vm)
    s.step(50)
    b = s._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in b
    assert "vmkit-stepper" in b["text/html"] and "step <b>50</b>" in b["text/html"]
    vm.run()
    rv = RingView(vm)
    rb = rv._repr_mimebundle_()
    assert "<svg" in rb["image/svg+xml"] and "<svg" in rb["text/html"]
    assert "application/vnd.jupyter.widget-view+json" in rb


def test_ring_view_without_dot_shows_hint(monkeypatch, tmp_path):
    """Without dot, does RingView show the install hint instead of raising?"""
    from vmkit.viz import render
    monkeypatch.setenv("PATH", str(tmp_path))
    render._SVG_CACHE.clear()
    vm = hello()
    vm.run()
    rv = RingView(vm)
    assert "apt-get install graphviz" in rv.diagram_view.value
    b = rv._repr_mimebundle_()
    assert "image/svg+xml" not in b and "digraph rings" in b["text/html"]
    render._SVG_CACHE.clear()


def test_step_sends_register_updates_to_the_frontend(monkeypatch):
    """Would a frontend receive the new register table after a Step (recorded comm
    messages)?"""
    sent = []

    class RecordingComm(comm.DummyComm):
        def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
            sent.append((msg_type, data))

    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    vm = hello()
    s = Stepper(vm)
    sent.clear()
    s.step()
    updates = [d for t, d in sent if t == "comm_msg" and d and d.get("method") == "update"]
    texts = [str(d["state"].get("value", "")) for d in updates]
    assert any(f"{vm.cpu.eip:08x}*" in t for t in texts)


def test_a_step_sends_one_message_for_the_panes_and_none_for_unchanged_ones(monkeypatch):
    """Does a Step send the status line, code and CPUs in one widget message (not one a
    pane), the ring view's line in one more, and nothing for the console and events when
    they did not change (each message costs the kernel and the server, issue 19)?"""
    sent = []

    class RecordingComm(comm.DummyComm):
        def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
            if msg_type == "comm_msg" and data and data.get("method") == "update":
                sent.append(self.comm_id)

    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    vm = hello()
    s = Stepper(vm)
    s.step(2000)
    events, console = s.events_view.value, s.console_view.value
    for _ in range(5):
        sent.clear()
        s.step()
        if s.events_view.value == events and s.console_view.value == console:
            break
        events, console = s.events_view.value, s.console_view.value
    assert s.events_view.value == events and s.console_view.value == console
    assert sorted(sent) == sorted([s.main_view.model_id, s.ring_view.diagram_view.model_id])
    assert f"{vm.cpu.eip:08x}" in s.main_view.value and "vmkit-eip" in s.main_view.value


def test_history_alone_on_the_monitor_api():
    """Does StepHistory work with just the Monitor API, mixing steps and runs?"""
    vm = Native(guests.build("divzero"))
    h = StepHistory(vm, every=100, max_snapshots=5, reach=400)
    states = {}
    for _ in range(10):
        for _ in range(37):
            h.step()
        states[h.position] = full_state(vm)
        h.run(333)
        states[h.position] = full_state(vm)
    assert len(h.snapshots) <= 5
    # thinned where densest, not the oldest dropped: the early part of the run keeps one
    assert h.snapshots[0] <= h.position // 2, h.snapshots
    for pos in sorted(states, reverse=True):
        h.goto(pos)
        assert full_state(vm) == states[pos], pos


# ---- the debugger's panels ----------------------------------------------------------------

def test_watchpoint_panel_stops_run_names_the_writer_and_goes_back_to_the_previous_hit():
    """Under trap-and-emulate, does a watchpoint set in the Watchpoints panel on a guest
    page-table entry stop Run at each write (the same steps as the headless Debugger), list
    the hits with old/new value and who wrote (the guest's mov, then the VMM's A/D update),
    and does Previous hit go back to the guest's write with the state a forward run has?"""
    from vmkit import Debugger
    from vmkit.vmm import TrapAndEmulate
    img = guests.build("ptemod", iterations=2)
    ref = Debugger(TrapAndEmulate(img))
    ref.watch(0x201000, physical=True)
    expected = [ref.cont().step for _ in range(3)]
    vm = TrapAndEmulate(img)
    s = Stepper(vm, ring_view=False)
    p = s.panels
    assert p.selected_index is None                    # collapsed: the Stepper does not grow
    p.watch_box.value = "0x201000"
    p.physical_box.value = True
    p.watch_button.click()
    for _ in range(3):
        s.run_button.click()
    assert [h.step for h in s.watch_hits] == expected
    assert [h.who for h in s.watch_hits] == ["guest", "guest", "vmm"]
    hits = p.hits_view.value
    assert "0x00000000" in hits and "0x00100007" in hits and "0x00100027" in hits
    assert "guest: mov dword ptr [edi + eax*4], edx" in hits
    assert "written by vmm" in s.status
    p.previous_button.click()
    assert s.position == expected[1] and "back to step 7,565" in s.status
    fwd = TrapAndEmulate(img)
    fwd.run(max_steps=expected[1])
    assert full_state(vm) == full_state(fwd)
    assert "watchpoint" in s.static_html() and "0x00100007" in s.static_html()


def test_event_break_panel_stops_run_and_bad_input_says_so():
    """Does an event break added in the panel (int 0x80) stop Run just after the system call,
    and do a misspelt symbol, a bad filter and an unknown field each give a one-line message
    instead of raising?"""
    vm = hello()
    s = Stepper(vm, ring_view=False)
    p = s.panels
    p.kind_box.value = "interrupt"
    p.filter_box.value = "vector=0x80"
    p.event_button.click()
    assert "event break" in p.event_message.value and "vector=128" in p.event_list.value
    s.run("stop")
    last = [e for e in vm.trace if e.kind == "interrupt"][-1]
    assert last.vector == 0x80 and vm.cpu.cpl == 0 and "event break" in s.status
    p.remove(p.remove_event.value)
    assert not s.debugger.points
    p.watch_box.value = "no_such_symbol"
    p.watch_button.click()
    assert "unknown symbol &#x27;no_such_symbol&#x27;" in p.watch_message.value
    p.filter_box.value = "vector"
    p.event_button.click()
    assert "a filter is field=value" in p.event_message.value
    p.filter_box.value = "vectr=3"
    p.event_button.click()
    assert "did you mean &#x27;vector&#x27;" in p.event_message.value


def test_live_tables_panel_draws_the_tables_and_marks_watched_bytes():
    """Does the Live tables panel show the guest's GDT, the page walk and a hex view with the
    watched bytes marked, and say (not raise) that there is no VMCS under Native?"""
    vm = hello()
    s = Stepper(vm, ring_view=False)
    s.step(50)
    p = s.panels
    assert p.table_view.value == ""                    # closed: no table drawn
    p.show("Live tables")
    assert "GDT" in p.table_view.value
    s.watch(0x1000, size=2)
    p.address_box.value = "0x1000"
    p.table_box.value = "hex"
    assert p.table_view.value.count('class="vmkit-marked"') == 2
    p.table_box.value = "walk"
    assert "vmkit-table-walk" in p.table_view.value
    p.table_box.value = "vmcs"
    assert "error: there is no VMCS" in p.table_view.value


# ---- issue 17: holes, Step at a watchpoint, rings under te ---------------------------------

def test_hole_rows_are_flagged_under_te():
    """Does Step over push cs under te say it is a virtualization hole and flag its row (⚠,
    what the guest saw and what the bare machine shows), and leave Native's rows alone?"""
    from vmkit.vmm import TrapAndEmulate
    s = Stepper(TrapAndEmulate(guests.build("nonvirt-pushcs")))
    s.debugger.break_on("hole")
    s.run("breakpoint", max_steps=20_000)          # stops right after push cs
    assert s.vm.vcpu.cpl == 0 and "hole" in s.status
    s.back(1)
    s.step()
    assert s.status.startswith("⚠ virtualization hole: push cs did not trap")
    assert "[0x00009ff8]=0x9" in s.status and "=0x8" in s.status
    s.back(1)                                      # the row of push cs, now at EIP
    html = s.disassembly_view.value
    row = next(r for r in html.split("<tr>") if ">push cs<" in r)
    assert 'class="vmkit-hole"' in row and "the bare machine shows" in row
    native = Stepper(Native(guests.build("nonvirt-pushcs")))
    native.step(8000)
    assert not native.holes and 'class="vmkit-hole"' not in native.disassembly_view.value


def test_step_stops_at_a_watchpoint():
    """Does Step ×N stop at a watchpoint hit on the way and say so, as Run does?"""
    vm = Native(guests.build("ctxswitch"))
    s = Stepper(vm)
    s.debugger.watch("current")
    s.step(20_000)
    assert s.position == 7747 and s.status.startswith("stopped: watchpoint 1: 0x00000000 →")
    assert len(s.watch_hits) == 1
    s.step(3)
    assert s.position == 7750


def test_ring_change_under_te_names_ring_1():
    """Under te, does Run until the ring changes say that the guest believes ring 0 while the
    real CPU runs the kernel in ring 1?"""
    from vmkit.vmm import TrapAndEmulate
    s = Stepper(TrapAndEmulate(guests.build("hello")))
    s.run("ring")
    assert "guest believes ring 0 → 3; real CPU ring 1 → 3" in s.status
    s.run("ring")
    assert "guest believes ring 3 → 0; real CPU ring 3 → 1" in s.status
    assert "real CPU in ring <b>1</b>" in s.header.value


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own priority: Linux")
def test_pictures_are_drawn_at_a_lower_cpu_priority_that_dot_inherits():
    """Is a live view's picture drawn on a thread whose CPU priority is lower than the
    kernel's by background.NICE, and does a program it starts (dot) run at that priority?"""
    import subprocess
    from vmkit.widgets.background import NICE, draw

    async def scenario():
        return await draw(lambda: subprocess.run(["nice"], capture_output=True,
                                                 text=True).stdout.strip())

    before = os.getpriority(os.PRIO_PROCESS, 0)
    assert int(asyncio.run(scenario())) == min(19, before + NICE)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before      # the kernel's own is unchanged


def test_pipe_svg_gives_the_bytes_graph_pipe_gives():
    """Does the drawing thread's way of running dot (a session of its own, lower priority)
    give the same SVG as graphviz's graph.pipe, and the same errors?"""
    import graphviz
    from vmkit.viz.rings import ring_diagram
    from vmkit.widgets.background import pipe_svg
    vm = hello()
    vm.run(max_steps=3000)
    g = ring_diagram(vm, compact=True)
    assert pipe_svg(g) == g.pipe(format="svg", encoding="utf-8")
    bad = graphviz.Digraph(body=["a -> {"])
    with pytest.raises(subprocess.CalledProcessError):
        pipe_svg(bad)


@pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"), reason="Linux autogroups")
def test_pipe_svg_runs_dot_in_a_scheduling_group_of_its_own_with_a_raised_nice(
        tmp_path, monkeypatch):
    """Does pipe_svg start dot in a session of its own (its own autogroup) whose nice value
    is raised by background.NICE, so that a class's dots yield to the class's clicks?"""
    import graphviz
    from vmkit.widgets.background import NICE, pipe_svg
    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\ncat >/dev/null\nsleep 0.3\n"
                    "echo \"<svg>$(cat /proc/self/autogroup)|$(ps -o sid= -p $$)</svg>\"\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    out = pipe_svg(graphviz.Digraph(body=["a"]))
    group, sid = out.removeprefix("<svg>").split("</svg>")[0].split("|")
    assert group.split()[-2:] == ["nice", str(NICE)]
    # A process that never left init's session is in the root group, whose file reads empty
    # (the kernel prints only real autogroups); dot's group is then a different one already.
    ours = open("/proc/self/autogroup").read().split()
    assert group.split()[0].startswith("/autogroup-")
    assert not ours or group.split()[0] != ours[0]
    assert int(sid) != os.getsid(0)
