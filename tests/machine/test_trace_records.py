"""Trace.record (vmkit/trace.py): events kept as tuples while nobody subscribes to their kind,
made into objects when the trace is read. Does every reader, subscriber and snapshot see
exactly what it saw when every event was an object from the start?"""

from __future__ import annotations

from vmkit import guests
from vmkit.trace import Interrupt, IRet, RingTransition, Trace
from vmkit.vmm import Native

IMAGE = guests.build("syscall", iterations=30)


def _run(star: bool, mid_kind: str | None = None):
    """Run the syscall guest: with ``star``, subscribers to the kinds the machine records
    (every event is an object at once: the reference); ``mid_kind``: a subscriber to that kind added
    after 2,000 steps. -> (monitor, what the late subscriber got)"""
    vm = Native(IMAGE)
    if star:
        for kind in ("interrupt", "iret", "ring"):
            vm.on(kind, lambda ev: None)
    vm.run(max_steps=2_000)
    got = []
    if mid_kind:
        vm.on(mid_kind, got.append)
    vm.run(max_steps=100_000)
    return vm, got


def test_readers_see_the_same_events_as_with_objects_from_the_start():
    """list(trace), of(), since(), counts and total the same, lazy or not?"""
    ref, _ = _run(True)
    vm, _ = _run(False)
    assert vm.trace._ev and any(e.__class__ is tuple for e in vm.trace._ev)   # kept lazily
    assert vm.trace.counts == ref.trace.counts and vm.trace.total == ref.trace.total
    assert vm.trace.since(ref.trace.total - 50) == ref.trace.since(ref.trace.total - 50)
    assert list(vm.trace) == list(ref.trace)
    assert vm.trace.of("ring", "iret") == ref.trace.of("ring", "iret")
    assert vm.stats == ref.stats


def test_a_subscriber_added_mid_run_sees_the_same_events():
    """A subscriber to "ring" added after 2,000 steps: same events as with everything made at
    once, and the events before it still readable?"""
    ref, want = _run(True, "ring")
    vm, got = _run(False, "ring")
    assert got == want and len(got) > 20
    assert list(vm.trace) == list(ref.trace)


def test_recorded_fields_land_in_their_places():
    """Each record's fields in the class's order: an int 0x80 from ring 3 is vector 0x80,
    source "int", ring 3 -> 0, handler in the kernel; its iret goes 0 -> 3 back to user code."""
    vm, _ = _run(False)
    ints = [e for e in vm.trace.of("interrupt") if e.source == "int"]
    assert ints and all(isinstance(e, Interrupt) for e in ints)
    e = ints[-1]
    assert (e.vector, e.name, e.from_ring, e.to_ring, e.error_code) == (0x80, "int", 3, 0, None)
    assert e.handler < 0x400000 <= e.eip and e.step <= vm.vms[0].machine.clock
    irets = vm.trace.of("iret")
    assert irets and all(isinstance(r, IRet) for r in irets)
    assert (irets[-1].from_ring, irets[-1].to_ring) == (0, 3) and irets[-1].eip >= 0x400000
    rings = vm.trace.of("ring")
    assert all(isinstance(r, RingTransition) for r in rings)
    assert {(r.from_ring, r.to_ring, r.cause) for r in rings} >= {(3, 0, "interrupt"),
                                                                  (0, 3, "iret")}


def test_snapshot_and_restore_keep_recorded_events():
    """A snapshot taken while events are records restores to the same events."""
    vm = Native(IMAGE)
    vm.run(max_steps=3_000)
    snap = vm.snapshot()
    before = list(vm.trace)
    vm.run(max_steps=3_000)
    vm.restore(snap)
    assert list(vm.trace) == before


def test_instruction_events_follow_subscriptions():
    """want_insns: on with instructions=True or a subscriber to "instruction" or "*"."""
    t = Trace()
    assert not t.wants_instructions()
    cb = lambda ev: None    # noqa: E731
    t.subscribe("instruction", cb)
    assert t.want_insns
    t.unsubscribe("instruction", cb)
    assert not t.want_insns
    t.instructions = True
    assert t.want_insns and t.instructions


def _traced(monitor_cls, name: str, steps: int, alone: bool):
    """``name`` under ``monitor_cls`` with every instruction traced; ``alone``: with an
    ``until`` that never stops it, so each instruction takes the one-at-a-time path."""
    vm = monitor_cls(guests.build(name), trace=Trace(instructions=True, maxlen=400_000))
    r = vm.run(max_steps=steps, until=(lambda m: False) if alone else None)
    return vm, r


def test_traced_bursts_record_what_one_instruction_at_a_time_does():
    """A run that traces instructions and checks nothing else runs them in bursts
    (Machine._traced_burst): the same events (instructions, interrupts, faults, port I/O,
    emulations), counts and clocks as the one-instruction path, natively and under te."""
    from vmkit.vmm import TrapAndEmulate
    for monitor_cls, name, steps in ((Native, "syscall", 20_000), (Native, "pagefault", 20_000),
                                     (TrapAndEmulate, "io", 20_000),
                                     (TrapAndEmulate, "nonvirt-popf", 20_000)):
        fast, rf = _traced(monitor_cls, name, steps, False)
        slow, rs = _traced(monitor_cls, name, steps, True)
        assert (rf.reason, rf.steps) == (rs.reason, rs.steps), name
        assert fast.trace.counts == slow.trace.counts and fast.trace.total == slow.trace.total
        assert fast.trace.counts["instruction"] > 1_000, name
        assert list(fast.trace) == list(slow.trace), name
        kinds = set(fast.trace.counts)
        assert kinds & {"interrupt", "page_fault", "io", "emulate"}, (name, kinds)


def test_traced_bursts_keep_exact_clocks_for_subscribers():
    """An event made inside an instruction carries the clock (a subscriber's TLB miss): with
    a subscriber the traced burst keeps steps and clock exact at every instruction, so its
    events are those of the one-instruction path, step for step."""
    runs = []
    for alone in (False, True):
        vm = Native(guests.build("pagefault"), trace=Trace(instructions=True, maxlen=100_000))
        seen = []
        vm.on("tlb_miss", lambda ev: seen.append((ev.step, ev.address)))
        vm.run(max_steps=20_000, until=(lambda m: False) if alone else None)
        runs.append((seen, list(vm.trace)))
    assert runs[0][0] and runs[0] == runs[1]
