"""``vmkit.Debugger(monitor)``: a headless debugger over any monitor.

Breakpoints on guest addresses or symbols (guest-linear, or guest-physical), with a ring, a
VM and a condition; watchpoints on guest memory (write, read or both; guest-linear or
guest-physical); event breakpoints on the trace's event kinds with a filter (a VM exit by
reason, a reflection, a hypercall by name, a translation-cache miss or invalidation, a world
switch, a hidden page fault, a ring change, an interrupt vector); ``cont``, ``step``,
``reverse_step`` and ``reverse_continue``, built on the monitors' snapshots and deterministic
replay (:class:`~vmkit.debug.timeline.Timeline`).

**Time.** The debugger's ``position`` counts guest instructions retired (all VMs together)
since it was made, as ``vm.run(max_steps=...)`` counts them; a stop at ``position`` p is the
state ``vm.run(max_steps=p)`` reaches from the start (a breakpoint at the first instruction of
an exception handler is the one exception: the state right after the delivery, 0 instructions
later). A hit is reported at the first position whose state satisfies it: a breakpoint when EIP
is at its address (the instruction not yet run), a watchpoint or an event just after the
instruction that wrote, read or caused it.

**How it runs.** With only linear breakpoints set, ``cont`` is one ``vm.run`` with the
machine's breakpoints (full speed; a stop whose ring, VM or condition does not match goes on).
Event breaks and watchpoints run in growing chunks that a subscriber watches; a chunk with a
matching event is run again one instruction at a time (:meth:`Debugger._forward_events`).
Physical breakpoints and the step-sensitive event kinds (translation cache, hidden faults)
need a look after every instruction: ``cont`` then runs one instruction at a time
(``vm.run(max_steps=1)``, 13-70 us each: about 15,000-70,000 instructions a second).
Checkpoints are taken at every stop and after about 0.1 s of running (``Timeline.stride``,
at most ``checkpoint_every`` instructions apart), within ``budget`` bytes.

**Watchpoints** go through the machine (``Machine.watch_memory``): the guest-physical bytes
they cover (a guest-linear range through the guest's tables, page by page, looked up again
at every chunk and every single step) are watched on the host machine, which reports every
read and write of them as a ``MemoryAccess`` event: an instruction's explicit and implicit
operands (push/pop, string instructions, iretd's pops), the page walk's entry reads and
accessed/dirty bits, descriptor-table and TSS reads, interrupt frames, and the monitor's own
accesses to guest memory (emulation, hypercalls, the shadow pager, reflection). A write of
the value already there is a hit. A change of the watched value the machine did not report
(the range now maps elsewhere) is a hit too ("mapping"). Who wrote or read is the access's
source with the events of the same instruction (:func:`_attribute`, :func:`_reader`). A run
with watched memory goes an instruction at a time inside the machine (no bursts), not
through the debugger: see ``benchmarks/bench_debug.py``.
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

from vmkit.debug.memory import GuestView
from vmkit.debug.operands import accesses
from vmkit.debug.timeline import DEFAULT_BUDGET, Timeline
from vmkit.errors import VmkitError
from vmkit.trace import EVENT_KINDS

__all__ = ["Debugger", "DebugStop", "Breakpoint", "Watchpoint", "EventBreak", "EVENT_ALIASES",
           "COUNTER_KINDS", "GROUP_KINDS", "TRAP_KINDS"]

#: other names ``break_on`` accepts for the trace's event kinds
EVENT_ALIASES = {"ring_change": "ring", "reflection": "reflect", "exception": "interrupt",
                 "emulation": "emulate", "tc_invalidation": "tc_invalidate",
                 "translation": "translate", "exit": "vm_exit", "vmexit": "vm_exit"}
#: kinds that are counters of a monitor rather than trace events: kind -> attribute
COUNTER_KINDS = {"hidden_page_fault": "hidden_page_faults", "tc_miss": "tc_misses"}
#: the trace event kinds that count as "a trap or interrupt" (the Stepper's Run until a trap)
TRAP_KINDS = frozenset({"interrupt", "reflect", "emulate", "vm_exit", "hypercall"})
#: kinds that stand for several trace event kinds: ``break_on("trap")`` stops at the first
#: event of any of them (filters apply to the fields they have)
GROUP_KINDS = {"trap": TRAP_KINDS}
#: event kinds whose occurrence depends on how the monitor is driven (a binary translator
#: translates differently in single steps): always looked for one instruction at a time
_STEP_SENSITIVE = frozenset({"tc_miss", "tc_lookup", "translate", "tc_invalidate",
                             "hidden_page_fault"})
MASK32 = 0xFFFFFFFF


# ---- what can be set ------------------------------------------------------------------------
@dataclass(eq=False)
class Breakpoint:
    """A breakpoint: ``address`` guest-linear (or guest-physical with ``physical``)."""
    id: int
    address: int
    physical: bool = False
    ring: int | None = None
    vm: int | None = None
    condition: Callable | None = None
    label: str = ""
    hits: int = 0

    def describe(self) -> str:
        where = self.label or f"{self.address:#010x}"
        if self.label:
            where += f" ({self.address:#010x})"
        parts = [f"breakpoint {self.id} at {'physical ' if self.physical else ''}{where}"]
        if self.ring is not None:
            parts.append(f"ring {self.ring}")
        if self.vm is not None:
            parts.append(f"vm {self.vm}")
        if self.condition is not None:
            parts.append("if " + getattr(self.condition, "__name__", "condition"))
        return ", ".join(parts)


@dataclass(eq=False)
class Watchpoint:
    """A watchpoint on ``size`` bytes at ``address`` (guest-linear, or guest-physical)."""
    id: int
    address: int
    size: int = 4
    on: str = "write"
    physical: bool = False
    vm: int | None = None
    label: str = ""
    hits: int = 0

    def describe(self) -> str:
        where = self.label or f"{self.address:#010x}"
        return (f"watchpoint {self.id} ({self.on}) on {self.size} byte"
                f"{'s' if self.size != 1 else ''} at {'physical ' if self.physical else ''}"
                f"{where}")

    def overlaps(self, addr: int, size: int) -> bool:
        return addr < self.address + self.size and self.address < addr + size


@dataclass(eq=False)
class EventBreak:
    """A break on events of ``kind`` (a trace event kind or a counter kind) matching
    ``filter``."""
    id: int
    kind: str
    filter: dict = field(default_factory=dict)
    hits: int = 0

    def describe(self) -> str:
        f = ", ".join(f"{k}={v!r}" for k, v in self.filter.items())
        return f"event break {self.id} on {self.kind}" + (f" ({f})" if f else "")

    @property
    def kinds(self) -> frozenset:
        """The trace event kinds this break listens to (several for a group kind)."""
        return GROUP_KINDS.get(self.kind, frozenset((self.kind,)))

    def accepts(self, ev) -> bool:
        """True if the trace event ``ev`` is one this break stops at."""
        return ev.kind in self.kinds and self.matches(ev)

    def matches(self, ev) -> bool:
        for k, want in self.filter.items():
            have = getattr(ev, k, None)
            if callable(want):
                if not want(have):
                    return False
            elif isinstance(want, str) and isinstance(have, str):
                if want.lower() != have.lower():
                    return False
            elif k == "reason" and isinstance(want, str):      # a VM exit by its name
                if want.upper() != str(getattr(ev, "name", "")).upper():
                    return False
            elif have != want:
                return False
        return True


@dataclass
class DebugStop:
    """Why the debugger stopped: ``kind`` is "breakpoint", "watchpoint", "event", "step",
    "max_steps", "exited" (every VM stopped), "start" (reverse execution reached step 0) or
    "error"; ``step`` the position (guest instructions retired since the debugger was made);
    ``eip``/``text``/``ring``/``vm`` where the guest is; ``point`` what was hit. For a
    watchpoint ``old``/``new`` are the bytes before and after (None: not mapped), ``who`` is
    "guest", "vmm", "cpu", "mmu", "device", "mapping" (a guest-linear range became mapped or
    unmapped) or "unknown" and ``how`` says more (the instruction, the emulation,
    the hypercall); for an event, ``event`` is the trace event."""
    kind: str
    step: int
    eip: int = 0
    text: str = ""
    ring: int = 0
    vm: int = 0
    point: Any = None
    event: Any = None
    old: bytes | None = None
    new: bytes | None = None
    who: str = ""
    how: str = ""
    access: str = ""
    detail: str = ""

    @property
    def old_value(self) -> int | None:
        return None if self.old is None else int.from_bytes(self.old, "little")

    @property
    def new_value(self) -> int | None:
        return None if self.new is None else int.from_bytes(self.new, "little")

    def __str__(self) -> str:
        at = f"step {self.step}: eip {self.eip:#010x} {self.text}".rstrip()
        if self.kind == "breakpoint":
            return f"{self.point.describe()} hit at {at}"
        if self.kind == "watchpoint":
            w = self.point
            if self.access == "read":
                s = f"{w.describe()}: read at {at}"
            else:
                width = 2 * len(self.new or self.old or b"")

                def value(v):
                    return "(not mapped)" if v is None else f"{v:#0{width + 2}x}"
                s = f"{w.describe()}: {value(self.old_value)} -> {value(self.new_value)} at {at}"
            who = self.who + (f" ({self.how})" if self.how else "")
            return s + (f"; {'read' if self.access == 'read' else 'written'} by {who}"
                        if who else "")
        if self.kind == "event":
            from_ = f" [{_event_text(self.event)}]" if self.event is not None else ""
            return f"{self.point.describe()} hit{from_} at {at}"
        if self.kind == "exited":
            return f"the guest stopped ({self.detail}) at {at}"
        if self.kind == "start":
            return f"reached the start of the recorded history at {at}"
        if self.kind == "max_steps":
            return f"no hit within {self.detail} steps; at {at}"
        if self.kind == "step":
            return f"at {at}" + (f" ({self.detail})" if self.detail else "")
        return f"{self.kind} at {at}" + (f" ({self.detail})" if self.detail else "")


def _event_text(ev) -> str:
    fields = [f"{f.name}={getattr(ev, f.name)!r}" for f in dataclasses.fields(ev)
              if f.name not in ("step", "vm")]
    return f"{ev.kind} " + " ".join(fields)


def _did_you_mean(word: str, choices) -> str:
    m = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {m[0]!r}?" if m else ""


# ---- the debugger ---------------------------------------------------------------------------
class Debugger:
    """A headless debugger over ``monitor`` (any of vmkit.vmm's monitors).

    ``budget`` bounds the memory of the checkpoints (bytes, default 64 MiB; settable later as
    ``dbg.budget``); a long run leaves a checkpoint behind for going back after about 0.1 s of
    running (``timeline.checkpoint_seconds``) and at most every ``checkpoint_every`` guest
    instructions."""

    def __init__(self, monitor, *, budget: int = DEFAULT_BUDGET,
                 checkpoint_every: int = 50_000, max_steps: int = 10_000_000):
        if not all(hasattr(monitor, a) for a in ("run", "snapshot", "restore", "vms")):
            raise VmkitError(f"Debugger takes a monitor (e.g. Native(guests.build('hello'))), "
                             f"got {type(monitor).__name__}")
        self.monitor = monitor
        self.timeline = Timeline(monitor, budget=budget)
        self.checkpoint_every = checkpoint_every
        #: the first window (instructions) reverse_continue searches again, backwards
        self.search_window = 50_000
        self.max_steps = max_steps
        self.points: list = []
        self._next_id = 1
        self._hits: list[tuple[int, DebugStop]] = []     # (position, stop), ascending
        self._scanned: list[list[int]] = []               # [a, b] with every hit recorded
        self.last: DebugStop | None = None
        self._run_start = 0
        self._origin = (-1, 0, 0)
        self._checkpoint_at_end = True

    # ---- configuration --------------------------------------------------------------------
    @property
    def budget(self) -> int:
        return self.timeline.budget

    @budget.setter
    def budget(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise VmkitError(f"budget must be a positive number of bytes, got {value!r}")
        self.timeline.budget = value
        self.timeline._enforce_budget()

    @property
    def position(self) -> int:
        return self.timeline.position

    def _changed(self) -> None:
        """The set of points changed: what was known about past hits no longer holds."""
        self._hits.clear()
        self._scanned.clear()

    def _add(self, p):
        self.points.append(p)
        self._next_id += 1
        self._changed()
        return p

    def resolve(self, where, vm: int | None = None) -> tuple[int, str]:
        """(address, label) of ``where``: an int, "0x…", a symbol of the kernel or a user
        program ("sym", "program:sym", "sym+0x10")."""
        if isinstance(where, int) and not isinstance(where, bool):
            if not 0 <= where <= MASK32:
                raise VmkitError(f"address out of 32-bit range: {where:#x}")
            return where, ""
        if not isinstance(where, str) or not where.strip():
            raise VmkitError(f"break_at takes an address or a symbol, got {where!r}")
        s = where.strip()
        try:
            return int(s, 0) & MASK32, ""
        except ValueError:
            pass
        off = 0
        if "+" in s:
            s, _, o = s.partition("+")
            try:
                off = int(o.strip(), 0)
            except ValueError:
                raise VmkitError(f"bad offset in {where!r}") from None
            s = s.strip()
        i = vm if vm is not None else getattr(self.monitor, "current", 0)
        progs = self.monitor.vms[i].image.programs
        if ":" in s:
            name, sym = (x.strip() for x in s.split(":", 1))
            if name not in progs:
                raise VmkitError(f"no program {name!r} in the guest (it has "
                                 f"{', '.join(progs)}){_did_you_mean(name, progs)}")
            table = progs[name].symbols
            if sym not in table:
                raise VmkitError(f"no symbol {sym!r} in {name}{_did_you_mean(sym, table)}")
            return (table[sym] + off) & MASK32, where.strip()
        every = {}
        for prog in progs.values():          # the kernel's first
            for k, v in prog.symbols.items():
                every.setdefault(k, v)
        if s not in every:
            raise VmkitError(f"unknown symbol {s!r}{_did_you_mean(s, every)}")
        return (every[s] + off) & MASK32, where.strip()

    def break_at(self, where, *, physical: bool = False, ring: int | None = None,
                 vm: int | None = None, condition: Callable | None = None) -> Breakpoint:
        """Stop when EIP reaches ``where`` (an address or a guest symbol; guest-linear, or
        guest-physical with ``physical=True``), optionally only in ``ring`` (the ring the
        guest believes it is in), only in VM ``vm``, only when ``condition(vcpu)`` is true."""
        self._check_vm(vm)
        if ring is not None and ring not in (0, 1, 2, 3):
            raise VmkitError(f"ring must be 0, 1, 2 or 3, got {ring!r}")
        addr, label = self.resolve(where, vm)
        if condition is not None and not callable(condition):
            raise VmkitError(f"condition must be a callable taking the vCPU, got "
                             f"{type(condition).__name__}")
        return self._add(Breakpoint(self._next_id, addr, physical, ring, vm, condition, label))

    def watch(self, addr, size: int = 4, on: str = "write", *, physical: bool = False,
              vm: int | None = None) -> Watchpoint:
        """Stop when the ``size`` bytes at ``addr`` (guest-linear, or guest-physical) are
        written ("write": their value changes, whoever wrote), read ("read": by a guest
        instruction's operands) or either ("rw")."""
        self._check_vm(vm)
        a, label = self.resolve(addr, vm)
        if on not in ("write", "read", "rw"):
            raise VmkitError(f"on must be 'write', 'read' or 'rw', got {on!r}")
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 4096:
            raise VmkitError(f"size must be between 1 and 4096 bytes, got {size!r}")
        self._check_vm(vm)
        w = Watchpoint(self._next_id, a, size, on, physical, vm, label)
        self._add(w)
        return w

    def break_on(self, kind: str, **filter) -> EventBreak:
        """Stop after the instruction during which an event of ``kind`` happened, if its
        fields match ``filter`` (equal, case-insensitive for text, or a callable on the
        field): ``break_on("vm_exit", reason="CR_ACCESS")``, ``break_on("hypercall",
        name="mmu_update")``, ``break_on("interrupt", vector=0x80)``, ``break_on("ring",
        to_ring=3)``, ``break_on("hidden_page_fault")``, ``break_on("tc_miss")``, ``break_on("trap")``
        (any of :data:`TRAP_KINDS`)."""
        e = self.make_event_break(kind, **filter)
        e.id = self._next_id
        return self._add(e)

    def make_event_break(self, kind: str, **filter) -> EventBreak:
        """An event break checked as :meth:`break_on` checks it, but not set: for
        ``cont(until=...)`` (what the Stepper's "Run until the ring changes" uses)."""
        if not isinstance(kind, str):
            raise VmkitError(f"break_on takes an event kind, got {kind!r}")
        k = EVENT_ALIASES.get(kind, kind)
        if k == "memory":
            raise VmkitError("memory accesses are what watchpoints see: use watch(addr, size, "
                             "on='read'|'write'|'rw')")
        if k in COUNTER_KINDS:
            if filter:
                raise VmkitError(f"{k} is a counter: it takes no filter (got "
                                 f"{', '.join(filter)})")
            if not hasattr(self.monitor, COUNTER_KINDS[k]):
                raise VmkitError(f"the {getattr(self.monitor, 'name', '?')} monitor has no "
                                 f"{k.replace('_', ' ')}s")
        elif k in EVENT_KINDS or k in GROUP_KINDS:
            names = set().union(*({f.name for f in dataclasses.fields(EVENT_KINDS[x])}
                                  for x in GROUP_KINDS.get(k, (k,))))
            for key in filter:
                if key not in names:
                    raise VmkitError(f"{k} events have no field {key!r} (they have "
                                     f"{', '.join(sorted(names))}){_did_you_mean(key, names)}")
        else:
            every = sorted(set(EVENT_KINDS) | set(COUNTER_KINDS) | set(EVENT_ALIASES)
                           | set(GROUP_KINDS))
            raise VmkitError(f"unknown event kind {kind!r}{_did_you_mean(kind, every)} "
                             f"(kinds: {', '.join(every)})")
        return EventBreak(0, k, dict(filter))

    def delete(self, point=None) -> None:
        """Remove a point (the object or its id), or every point with no argument."""
        if point is None:
            self.points.clear()
        else:
            pid = point if isinstance(point, int) else getattr(point, "id", None)
            keep = [p for p in self.points if p.id != pid]
            if len(keep) == len(self.points):
                raise VmkitError(f"no breakpoint, watchpoint or event break {pid!r}")
            self.points = keep
        self._changed()

    def _check_vm(self, vm) -> None:
        if vm is not None and not (isinstance(vm, int) and 0 <= vm < len(self.monitor.vms)):
            raise VmkitError(f"vm must be a VM index between 0 and "
                             f"{len(self.monitor.vms) - 1}, got {vm!r}")

    # ---- the guest now ----------------------------------------------------------------------
    def view(self, vm: int | None = None) -> GuestView:
        return GuestView(self.monitor, vm)

    def read(self, addr: int, n: int, physical: bool = False,
             vm: int | None = None) -> bytes | None:
        """Guest memory (side-effect free): guest-linear, or guest-physical."""
        return self.view(vm).read(addr, n, physical)

    def _finished(self) -> bool:
        return all(getattr(v, "result", None) is not None for v in self.monitor.vms)

    def _where(self, kind: str, **kw) -> DebugStop:
        mon = self.monitor
        i = getattr(mon, "current", 0)
        cpu = mon.vms[i].vcpu
        gv = GuestView(mon, i)
        insn = gv.insn_at(cpu.eip)
        text = insn.text if insn is not None else ""
        stop = DebugStop(kind, self.position, cpu.eip, text, cpu.cpl, i, **kw)
        return stop

    # ---- running ------------------------------------------------------------------------------
    def _plan(self, extra=()):
        return self._split(self.points + list(extra))

    @staticmethod
    def _split(points):
        bps = [p for p in points if isinstance(p, Breakpoint)]
        wps = [p for p in points if isinstance(p, Watchpoint)]
        evs = [p for p in points if isinstance(p, EventBreak)]
        return bps, wps, evs

    def _bp_hit(self, bps, vs_linear_only: bool = False):
        """The first breakpoint satisfied by the state now, or None."""
        mon = self.monitor
        i = getattr(mon, "current", 0)
        cpu = mon.vms[i].vcpu
        eip = cpu.eip
        if (self.position, i, eip) == self._origin:
            return None
        phys = None
        for bp in bps:
            if bp.physical:
                if vs_linear_only:
                    continue
                if phys is None:
                    phys = GuestView(mon, i).to_physical(eip)
                if phys != bp.address:
                    continue
            elif bp.address != eip:
                continue
            if bp.vm is not None and bp.vm != i:
                continue
            if bp.ring is not None and cpu.cpl != bp.ring:
                continue
            if bp.condition is not None:
                try:
                    if not bp.condition(cpu):
                        continue
                except Exception as e:
                    raise VmkitError(f"the condition of breakpoint {bp.id} raised "
                                     f"{type(e).__name__}: {e}") from None
            return bp
        return None

    def cont(self, max_steps: int | None = None, *, until=(), resume: bool = True,
             checkpoint: bool = True) -> DebugStop:
        """Run until a breakpoint, watchpoint or event break hits, the guest stops, or
        ``max_steps`` instructions (default ``self.max_steps``) have retired.

        ``until``: more points for this run only (e.g. ``[dbg.make_event_break("ring")]``,
        what the Stepper's "Run until the ring changes" does); their hits are not kept for
        ``reverse_continue``. ``resume=False``: a breakpoint at the current position counts
        (a run carried on in slices); by default it is the one being continued from, as gdb's
        continue steps over it. ``checkpoint=False``: no checkpoint where the run ends
        without a hit (a run carried on in slices checkpoints as it likes; a hit always
        leaves one, for ``reverse_continue``)."""
        limit = self.max_steps if max_steps is None else max_steps
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise VmkitError(f"max_steps must be a positive integer, got {max_steps!r}")
        extra = list(until)
        for p in extra:
            if not isinstance(p, (Breakpoint, Watchpoint, EventBreak)):
                raise VmkitError(f"until takes breakpoints, watchpoints or event breaks, got "
                                 f"{type(p).__name__}")
        self._checkpoint_at_end = checkpoint
        try:
            stop = self._forward(self.position + limit, stop_at_hits=True, extra=extra,
                                 resume=resume)
        finally:
            self._checkpoint_at_end = True
        if extra:     # a hit of a point for this run only is no hit for reverse_continue
            self._hits = [(p, s) for p, s in self._hits if not any(s.point is x
                                                                   for x in extra)]
        return stop

    def _forward(self, end: int, stop_at_hits: bool, extra=(), resume: bool = True,
                 points=None) -> DebugStop:
        start = self._run_start = self.position
        mon = self.monitor
        # where the run starts: a breakpoint there is the one being continued from, also when
        # the monitor stops at it again before it ran (under a monitor the instruction may
        # first take a hidden page fault that the VMM serves: 0 instructions later)
        self._origin = (start, getattr(mon, "current", 0),
                        mon.vms[getattr(mon, "current", 0)].vcpu.eip) if resume else (-1, 0, 0)
        tl = self.timeline
        bps, wps, evs = self._plan(extra) if points is None else self._split(points)
        linear = {bp.address for bp in bps if not bp.physical}
        stop = None
        try:
            if self._finished():
                stop = self._where("exited", detail=self._result_text())
            elif not wps and not evs and not any(bp.physical for bp in bps):
                stop = self._forward_fast(end, bps, linear, stop_at_hits)
            elif not any(bp.physical for bp in bps) and \
                    not any(e.kind in _STEP_SENSITIVE for e in evs):
                stop = self._forward_events(end, bps, evs, linear, stop_at_hits, wps)
            else:
                stop = self._forward_checked(end, bps, wps, evs, linear, stop_at_hits)
        finally:
            self._disarm()
        if points is None:
            self._mark_scanned(start, self.position)
        if stop.kind != "max_steps" or self._checkpoint_at_end:
            tl.checkpoint()
        self.last = stop
        return stop

    def _result_text(self) -> str:
        parts = []
        for v in self.monitor.vms:
            r = v.result
            if r is not None:
                parts.append(r.reason + (f": {r.detail}" if r.detail else ""))
        return "; ".join(parts)

    def _record(self, stop: DebugStop) -> DebugStop:
        if stop.point is not None:
            stop.point.hits += 1
        k = bisect.bisect_left([p for p, _ in self._hits], stop.step)
        if not (k < len(self._hits) and self._hits[k][0] == stop.step):
            self._hits.insert(k, (stop.step, stop))
        return stop

    def _forward_fast(self, end, bps, linear, stop_at_hits) -> DebugStop:
        tl = self.timeline
        while self.position < end:
            stop = self._at_boundary(bps)
            if stop is not None:
                if stop_at_hits:
                    return stop
                tl.checkpoint()
            chunk = min(end - self.position, tl.stride(self.checkpoint_every))
            r = tl.run(chunk, linear or None)
            if r.reason == "breakpoint":
                bp = self._bp_hit(bps, vs_linear_only=True)
                if bp is not None:
                    stop = self._record(self._where("breakpoint", point=bp))
                    if stop_at_hits:
                        return stop
                    tl.checkpoint()
                continue
            if self._finished():
                return self._where("exited", detail=self._result_text())
            if (getattr(r, "steps", 0) or 0) == 0 and r.reason not in ("max_steps",):
                return self._where("error", detail=f"the monitor stopped: {r}")
            if self.position < end or self._checkpoint_at_end:
                tl.checkpoint()
        return self._where("max_steps", detail=f"{self.position - self._start_of_run(end)}")

    def _forward_events(self, end, bps, evs, linear, stop_at_hits, wps=()) -> DebugStop:
        """Event breaks and watchpoints at nearly full speed: run in growing chunks with a
        subscriber that only notes whether a matching event happened (for watchpoints: an
        access to the watched bytes, which the machine reports, see
        ``Machine.watch_memory``); a chunk that had one, or after which a watched guest-linear
        range maps elsewhere or holds another value (a write the machine did not see: a
        device), is run again from its start one instruction at a time
        (:meth:`_forward_checked`) to stop exactly."""
        tl = self.timeline
        trace = self.monitor.trace
        kinds = set().union(*(e.kinds for e in evs)) if evs else set()
        seen: list = []
        ranges: list = []
        if wps:
            kinds.add("memory")

        def note(ev):
            if seen:
                return
            if ev.kind == "memory":
                if any(_access_hits(w, ev, ranges) for w in wps):
                    seen.append(ev)
            elif any(e.accepts(ev) for e in evs):
                seen.append(ev)

        chunk, last_cp = 1024, self.position
        while self.position < end:
            stop = self._at_boundary(bps)
            if stop is not None:
                if stop_at_hits:
                    return stop
                tl.checkpoint()
            pos0 = self.position
            seen.clear()
            if wps:
                ranges[:] = self._arm(wps)
                values = [self._watched(w) for w in wps]
            for k in kinds:
                trace.subscribe(k, note)
            try:
                r = tl.run(min(end - pos0, chunk), linear or None)
            finally:
                for k in kinds:
                    trace.unsubscribe(k, note)
            if wps and not seen and (self._ranges(wps) != ranges or
                                     [self._watched(w) for w in wps] != values):
                seen.append(None)                 # mapped elsewhere, or written unseen
            if seen:                              # again, exactly, from the chunk's start
                self._disarm()
                tl.goto(pos0)
                stop = self._forward_checked(min(end, max(self.position + 1,
                                                          pos0 + (r.steps or 0) + 1)),
                                             bps, wps, evs, linear, stop_at_hits)
                if stop.kind in ("event", "breakpoint", "watchpoint", "exited", "error") and \
                        (stop_at_hits or stop.kind in ("exited", "error")):
                    return stop
                chunk = 1024
                continue
            if r.reason == "breakpoint":
                bp = self._bp_hit(bps, vs_linear_only=True)
                if bp is not None:
                    stop = self._record(self._where("breakpoint", point=bp))
                    if stop_at_hits:
                        return stop
                    tl.checkpoint()
                continue
            if self._finished():
                return self._where("exited", detail=self._result_text())
            if (getattr(r, "steps", 0) or 0) == 0 and r.reason != "max_steps":
                return self._where("error", detail=f"the monitor stopped: {r}")
            chunk = min(2 * chunk, self.checkpoint_every)
            if self.position - last_cp >= tl.stride(self.checkpoint_every):
                tl.checkpoint()
                last_cp = self.position
        return self._where("max_steps", detail=f"{self.position - self._start_of_run(end)}")

    def _at_boundary(self, bps) -> DebugStop | None:
        """A breakpoint at the EIP where a chunk of a run is about to start (a run does not
        look at its first instruction): the hit, recorded, or None."""
        resumed = self._origin[0] != -1      # cont(resume=False): a hit here is a hit
        if not bps or (self.position, getattr(self.monitor, "current", 0)) == \
                self._origin[:2] or (resumed and any(p == self.position
                                                     for p, _ in self._hits[-1:])):
            return None
        bp = self._bp_hit(bps, vs_linear_only=True)
        return None if bp is None else self._record(self._where("breakpoint", point=bp))

    def _start_of_run(self, end):
        return self._run_start

    def _forward_checked(self, end, bps, wps, evs, linear, stop_at_hits) -> DebugStop:
        tl = self.timeline
        mon = self.monitor
        trace = mon.trace
        got: list = []
        kinds = {k for e in evs for k in e.kinds if k in EVENT_KINDS}
        # every event of the step is wanted for attributing watchpoint writes
        listen = set(kinds)
        if wps:     # and which instruction retired: for who wrote
            listen |= {"emulate", "hypercall", "interrupt", "reflect", "io", "vm_exit",
                       "instruction", "memory"}
        cb = got.append
        for k in listen:
            trace.subscribe(k, cb)
        counters = {e.kind: COUNTER_KINDS[e.kind] for e in evs if e.kind in COUNTER_KINDS}
        last_cp = self.position
        linear = frozenset(linear) if linear else None
        ranges: list = []
        try:
            values = {w.id: self._watched(w) for w in wps}
            with tl.breakpoints(linear):
                while self.position < end:
                    i = getattr(mon, "current", 0)
                    cpu = mon.vms[i].vcpu
                    pre = (i, cpu.eip, tuple(cpu.regs)) if wps else None
                    if wps:
                        ranges = self._arm(wps)
                    acc = None
                    before = {k: getattr(mon, a, 0) for k, a in counters.items()}
                    got.clear()
                    r = tl.run(1, linear, preset=True)
                    stop = None
                    for e in evs:                       # events of this step
                        if e.kind in counters:
                            if getattr(mon, counters[e.kind], 0) != before[e.kind]:
                                stop = self._where("event", point=e)
                                break
                            continue
                        for ev in got:
                            if e.accepts(ev):
                                stop = self._where("event", point=e, event=ev)
                                break
                        if stop is not None:
                            break
                    if stop is None and wps:
                        stop = self._check_watch(wps, values, pre, acc, got, ranges)
                    if stop is None and bps:
                        bp = self._bp_hit(bps)
                        if bp is not None:
                            stop = self._where("breakpoint", point=bp)
                    if stop is not None:
                        self._record(stop)
                        if stop_at_hits:
                            return stop
                        tl.checkpoint()
                    if self._finished():
                        return self._where("exited", detail=self._result_text())
                    if (getattr(r, "steps", 0) or 0) == 0 and r.reason != "breakpoint":
                        return self._where("error", detail=f"the monitor stopped: {r}")
                    if self.position - last_cp >= self.checkpoint_every or tl.due():
                        tl.checkpoint()
                        last_cp = self.position
        finally:
            for k in listen:
                trace.unsubscribe(k, cb)
        return self._where("max_steps", detail=f"{self.position - self._start_of_run(end)}")

    def _accesses(self, pre):
        """(instruction, its memory accesses) of the instruction at the EIP of ``pre`` =
        (VM, EIP, registers) with those registers."""
        i, eip, regs = pre
        insn = GuestView(self.monitor, i).insn_at(eip)
        return insn, (accesses(insn, regs) if insn is not None else [])

    def _watched(self, w: Watchpoint) -> bytes | None:
        return self.view(w.vm).read(w.address, w.size, w.physical)

    def _check_watch(self, wps, values, pre, acc_pre, got, ranges) -> DebugStop | None:
        """The hit of one instruction's step, if any: a write of the watched bytes (reported by
        the machine, the same value included; or a change of their value the machine did not
        report: the range mapped elsewhere, a device), or a read of them."""
        mem = [e for e in got if e.kind == "memory"]
        news = {}
        changed = False
        for w in wps:
            news[w.id] = self._watched(w)
            changed = changed or news[w.id] != values[w.id]
        if not changed and not mem:
            return None
        insn, acc = acc_pre if acc_pre is not None else self._accesses(pre)
        retired = [e for e in got if e.kind == "instruction"]
        hit = None
        for w in wps:
            new = news[w.id]
            old = values[w.id]
            values[w.id] = new
            if hit is not None:
                continue
            mine = [e for e in mem if _access_hits(w, e, ranges, any_access=True)]
            writes = [e for e in mine if e.access == "write"]
            reads = [e for e in mine if e.access == "read"]
            if w.on in ("write", "rw") and (writes or new != old):
                who, how = _attribute(self, w, old, new, insn, acc, got, retired, writes)
                hit = self._where("watchpoint", point=w, old=old, new=new, who=who, how=how,
                                  access="write")
            elif w.on in ("read", "rw") and reads:
                who, how = _reader(self, reads[0], insn, got)
                hit = self._where("watchpoint", point=w, old=old, new=new, who=who, how=how,
                                  access="read")
        return hit

    # ---- watched memory through the machine ---------------------------------------------------
    def _ranges(self, wps) -> list:
        """[(watchpoint, host-physical start, end)] of the watched bytes now (a guest-linear
        range page by page, where mapped)."""
        out = []
        for w in wps:
            view = self.view(w.vm)
            base = getattr(view.vm, "slice_base", 0) if view.hosted else 0
            if w.physical:
                out.append((w, base + w.address, base + w.address + w.size))
                continue
            a, end = w.address, w.address + w.size
            while a < end:
                take = min(end - a, 0x1000 - (a & 0xFFF))
                gpa = view.to_physical(a)
                if gpa is not None:
                    out.append((w, base + gpa, base + gpa + take))
                a += take
        return out

    def _machines(self) -> list:
        seen = {}
        for v in self.monitor.vms:
            seen.setdefault(id(v.machine), v.machine)
        return list(seen.values())

    def _arm(self, wps) -> list:
        """Have the machine report accesses to the watched bytes (``watch_memory``)."""
        ranges = self._ranges(wps)
        for m in self._machines():
            m.watch_memory([(a, b - a) for _, a, b in ranges])
        return ranges

    def _disarm(self) -> None:
        for m in self._machines():
            if getattr(m, "watch_ranges", None):
                m.watch_memory([])

    # ---- stepping -----------------------------------------------------------------------------
    def step(self, n: int = 1) -> DebugStop:
        """Run ``n`` guest instructions; breakpoints and event breaks are not looked at (as
        gdb's stepi), watchpoints are: a hit on the way stops there."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise VmkitError(f"step takes a positive number of instructions, got {n!r}")
        if self._finished():
            self.last = self._where("exited", detail=self._result_text())
            return self.last
        start = self.position
        wps = [p for p in self.points if isinstance(p, Watchpoint)]
        if wps:           # a watchpoint stops a step, as it stops a run
            stop = self._forward(start + n, stop_at_hits=True, points=wps)
            if stop.kind == "watchpoint":
                self._record(stop)
                return stop
            self.last = self._where("exited" if self._finished() else "step",
                                    detail=self._result_text() if self._finished() else "")
            return self.last
        while self.position < start + n and not self._finished():
            r = self.timeline.run(min(start + n - self.position,
                                      self.timeline.stride(self.checkpoint_every)))
            if not getattr(r, "steps", 0):
                break
            if self.position < start + n:
                self.timeline.checkpoint()
        self.last = self._where("exited" if self._finished() else "step",
                                detail=self._result_text() if self._finished() else "")
        return self.last

    def reverse_step(self, n: int = 1) -> DebugStop:
        """Go back ``n`` guest instructions (not before step 0)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise VmkitError(f"reverse_step takes a positive number of instructions, got {n!r}")
        target = max(0, self.position - n)
        self.timeline.goto(target, zero_segments=False)
        self.last = self._where("start" if self.position == 0 else "step",
                                detail=self._diverged())
        return self.last

    def goto(self, position: int) -> DebugStop:
        """Go back to ``position`` (at most the current one)."""
        self.timeline.goto(position)
        self.last = self._where("step", detail=self._diverged())
        return self.last

    def _diverged(self) -> str:
        return ("the replay did not land exactly: is the monitor deterministic?"
                if self.timeline.diverged else "")

    def reverse_continue(self) -> DebugStop:
        """Go back to the previous hit of a breakpoint, watchpoint or event break (strictly
        before the current position), or to step 0 if there is none. Hits of the current
        points already seen going forward cost one restore (a checkpoint is kept at every
        stop) plus a replay; stretches run without looking (``step``, or before a point was
        set) are searched again as ``cont`` would have, backwards in growing windows
        (``search_window`` instructions, then twice as many ...), so the search costs about
        the distance to the previous hit."""
        tl = self.timeline
        cur = self.position
        future = [list(seg) for seg in tl.log]     # the runs that led here
        window = self.search_window       # unsearched stretches: the latest part first
        while True:
            cand = None
            for p, s in reversed(self._hits):
                if p < cur:
                    cand = (p, s)
                    break
            lo = cand[0] if cand else 0
            gap = self._last_gap(lo, cur)
            if gap is None:
                if cand is None:
                    tl.goto(0)
                    self.last = self._where("start", detail=self._diverged())
                    return self.last
                p, s = cand
                if p <= self.position:
                    tl.goto(p)
                else:                               # a search went back before it
                    tl.redo(future, p)
                self.last = dataclasses.replace(s, detail=self._diverged() or s.detail)
                if tl.diverged:
                    self.last = self._where(s.kind, point=s.point, detail=self._diverged())
                return self.last
            a, b = gap               # search the end of [a, b] again, recording every hit
            a = max(a, b - window)   # (the next round searches before it, twice as much)
            window *= 2
            if a > self.position:
                tl.redo(future, a)
            else:
                tl.goto(a)
            self._forward(b, stop_at_hits=False)

    def _mark_scanned(self, a: int, b: int) -> None:
        if b <= a:
            return
        iv = sorted(self._scanned + [[a, b]])
        out: list[list[int]] = []
        for s, e in iv:
            if out and s <= out[-1][1]:
                out[-1][1] = max(out[-1][1], e)
            else:
                out.append([s, e])
        self._scanned = out

    def _last_gap(self, lo: int, hi: int):
        """The last stretch of [lo, hi] not searched for hits, or None."""
        if hi <= lo:
            return None
        end = hi
        for s, e in reversed(self._scanned):
            if s >= end:
                continue
            if e < end:
                return (max(e, lo), end)
            end = s
            if end <= lo:
                return None
        return (lo, end) if end > lo else None

    # ---- introspection ------------------------------------------------------------------------
    @property
    def hits(self) -> list[DebugStop]:
        """The hits of the current points seen so far, oldest first."""
        return [s for _, s in self._hits]

    def info(self) -> str:
        lines = [p.describe() + (f" (hit {p.hits}×)" if p.hits else "") for p in self.points]
        return "\n".join(lines) if lines else "no breakpoints, watchpoints or event breaks"

    def __repr__(self) -> str:
        return (f"<Debugger {getattr(self.monitor, 'name', '?')} at step {self.position}, "
                f"{len(self.points)} points, {self.timeline}>")


# ---- who wrote ------------------------------------------------------------------------------
def _access_hits(w: Watchpoint, ev, ranges, any_access: bool = False) -> bool:
    """True if the machine's MemoryAccess ``ev`` touches ``w``'s bytes (``ranges`` from
    :meth:`Debugger._ranges`) with an access ``w`` watches (any access with ``any_access``)."""
    if not any_access and ev.access == "read" and w.on == "write":
        return False
    if not any_access and ev.access == "write" and w.on == "read":
        return False
    if w.vm is not None and ev.vm != w.vm:
        return False
    end = ev.address + ev.size
    return any(p is w and ev.address < b and a < end for p, a, b in ranges)


def _reader(dbg: Debugger, ev, insn, got):
    """(who, how) of a read of watched bytes, from the machine's report."""
    kinds = {e.kind for e in got}
    text = insn.text if insn is not None else ""
    if ev.source == "insn":
        return "guest", text
    if ev.source == "walk":
        return "mmu", "the page walk read the entry" + (f" (for {text})" if text else "")
    if ev.source == "vmm":
        em = [e for e in got if e.kind in ("emulate", "hypercall")]
        what = (f"emulated {em[0].text}" if em and em[0].kind == "emulate" else
                f"hypercall {em[0].name}" if em else "on the guest's behalf")
        return "vmm", what
    if "interrupt" in kinds or "reflect" in kinds:
        return "cpu", "the interrupt/exception delivery"
    return "cpu", "a descriptor-table or TSS read" + (f" (for {text})" if text else "")


def _attribute(dbg: Debugger, w: Watchpoint, old, new, insn, acc, got, retired, writes=()):
    """(who, how) of a change of watched bytes during one step. INTERIM: inferred from the
    instruction's operands and the step's events, in this order: a hypercall or an emulation by
    the VMM; a guest instruction whose write operand covers the bytes; only accessed/dirty bits
    changed (the MMU's page walk, or under shadow paging the VMM's software walk of the guest's
    tables); an interrupt delivery (the CPU, or the VMM reflecting it, pushes the frame); port
    I/O (a device); else unknown."""
    kinds = {e.kind for e in got}
    view = dbg.view(w.vm)
    src = {e.source for e in writes}
    if writes and old == new:             # the value already there: the machine says who
        if "insn" in src:
            return "guest", (insn.text if insn is not None else "") + " (the same value)"
        if "walk" in src:
            return "mmu", "the page walk rewrote the entry"
    if "insn" in src and not any(e.kind in ("emulate", "hypercall") for e in got) \
            and insn is not None and old is not None and new is not None:
        return "guest", insn.text
    if old is None or new is None:        # a guest-linear range mapped or unmapped
        what = "the page became mapped" if old is None else "the page is no longer mapped"
        return "mapping", what + (f" (after {insn.text})" if insn is not None else "")

    def covers(a, size):
        if w.physical:
            pa = view.to_physical(a)
            return pa is not None and w.overlaps(pa, size)
        return w.overlaps(a, size)

    for e in got:
        if e.kind == "hypercall":
            return "vmm", f"hypercall {e.name}"
    emulated = [e for e in got if e.kind == "emulate"]
    guest_writes = any(k == "w" and covers(a, s) for k, a, s in acc)
    if emulated and (guest_writes or not retired or
                     all(r.address == emulated[0].address for r in retired)):
        return "vmm", f"emulated {emulated[0].text}"
    if guest_writes and insn is not None:
        return "guest", insn.text
    if old is not None and new is not None and len(old) == len(new):
        diff = int.from_bytes(old, "little") ^ int.from_bytes(new, "little")
        mask = int.from_bytes(bytes([0x60, 0, 0, 0]) * (len(old) // 4 or 1), "little")
        if diff and not diff & ~mask:
            v = view.vm
            direct = getattr(dbg.monitor, "name", "") == "pv"   # the guest's tables are real
            if not direct and hasattr(v, "shadow_pts") and getattr(v, "ept", None) is None:
                # shadow paging: the real MMU walks the shadow table; the VMM's software walk
                # of the guest's table (on a hidden fault or an emulated access) sets the bits
                return "vmm", "the shadow pager set the guest PTE's accessed/dirty bits"
            return "mmu", "the page walk set the accessed/dirty bits"
    if "interrupt" in kinds or "reflect" in kinds:
        who = "vmm" if "reflect" in kinds else "cpu"
        return who, "the interrupt/exception delivery pushed its frame"
    if emulated:
        return "vmm", f"emulated {emulated[0].text}"
    if "io" in kinds:
        return "device", "during port I/O"
    return "unknown", ""
