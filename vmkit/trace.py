"""Trace events and the :class:`Trace` container.

Every event is a small frozen dataclass with a ``step`` (guest time: instructions retired when
it happened), a ``kind`` (a short string, the key for ``vm.on(kind, cb)``) and ``vm`` (the VM
index, 0 for a single guest). The trace keeps exact counts of every kind forever and the most
recent events in a bounded buffer, so a long run keeps memory flat.

Instruction-retired events are the exception to "always recorded": building an object per
instruction would double the cost of running a guest, so they are made only while someone
asked for them (``Trace(instructions=True)``, ``vmkit run --trace``, or a subscriber to
``"instruction"``).
"""

from __future__ import annotations

import gc
import itertools
import marshal
import operator
import sys
import zlib
from collections import Counter, deque
from dataclasses import MISSING as _MISSING, dataclass, field, fields
from typing import Callable, Iterator

__all__ = ["Event", "InstructionRetired", "Interrupt", "IRet", "RingTransition", "PortIO",
           "PageFault", "TlbMiss", "Emulation", "Reflection", "VmExit", "VmEntry", "TcLookup",
           "Translation", "TcInvalidation", "Hypercall", "WorldSwitch", "Stop", "Hole",
           "MemoryAccess", "Trace", "EVENT_KINDS", "PIECE", "PIECE_BYTES"]


@dataclass(frozen=True, slots=True)
class Event:
    step: int
    vm: int = field(default=0, kw_only=True)
    kind = "event"


# an event from its record (Trace.record) when _fast_init left a class its own __init__
Event._from_record = staticmethod(lambda e: e[0](*e[2:], vm=e[1]))


def _kind(name: str):
    def deco(cls):
        cls.kind = name
        _fast_init(cls)
        return cls
    return deco


def _fast_init(cls) -> None:
    """Give frozen event class ``cls`` an ``__init__`` of the same signature that stores each
    field through its slot descriptor. The dataclass's own calls ``object.__setattr__`` once a
    field (what a frozen class must do): an Interrupt took 4.5 us to make, now about half,
    and a system call makes four events natively, more under a monitor."""
    old = cls.__init__
    code = old.__code__
    names = [f.name for f in fields(cls)]
    params = code.co_varnames[1:code.co_argcount + code.co_kwonlyargcount]
    if sorted(params) != sorted(names) or any(f.default_factory is not _MISSING
                                              for f in fields(cls)):
        return      # a field kind this does not know: the dataclass's __init__ stays
    pos, kw = params[:code.co_argcount - 1], params[code.co_argcount - 1:]
    args = ", ".join(("self",) + pos + (("*",) + kw if kw else ()))
    body = "".join(f"    _set_{n}(self, {n})\n" for n in names)
    env = {f"_set_{n}": getattr(cls, n).__set__ for n in names}
    exec(f"def __init__({args}):\n{body}", env)     # noqa: S102 - names are field names
    fn = env["__init__"]
    fn.__defaults__, fn.__kwdefaults__ = old.__defaults__, old.__kwdefaults__
    fn.__qualname__, fn.__doc__ = old.__qualname__, old.__doc__
    cls.__init__ = fn
    # the event of a record ``(cls, vm, step, *fields)`` (Trace.record) without a call of
    # __init__: a traced run makes one an instruction when the trace is read
    order = ["vm"] + [f.name for f in fields(cls) if not f.kw_only]
    body = "".join(f"    _set_{n}(o, e[{i}])\n" for i, n in enumerate(order, start=1))
    env.update(_new=object.__new__, _cls=cls)
    exec(f"def _from_record(e):\n    o = _new(_cls)\n{body}    return o\n", env)  # noqa: S102
    cls._from_record = staticmethod(env["_from_record"])


@_kind("instruction")
@dataclass(frozen=True, slots=True)
class InstructionRetired(Event):
    """An instruction completed: its guest-virtual address, capstone text, the ring it ran in."""
    address: int = 0
    text: str = ""
    ring: int = 0


@_kind("interrupt")
@dataclass(frozen=True, slots=True)
class Interrupt(Event):
    """An exception, hardware interrupt or software interrupt delivered through the IDT.

    ``source`` is "exception", "irq" or "int" (int n / int3 / into); ``eip`` where it was
    raised; ``handler`` the address of the handler reached."""
    vector: int = 0
    name: str = ""
    source: str = "exception"
    error_code: int | None = None
    from_ring: int = 0
    to_ring: int = 0
    eip: int = 0
    handler: int = 0


@_kind("iret")
@dataclass(frozen=True, slots=True)
class IRet(Event):
    """An iretd (or far return) back from a handler."""
    from_ring: int = 0
    to_ring: int = 0
    eip: int = 0


@_kind("ring")
@dataclass(frozen=True, slots=True)
class RingTransition(Event):
    """The CPL changed; ``cause`` says how (interrupt, iret, far call ...)."""
    from_ring: int = 0
    to_ring: int = 0
    cause: str = ""


@_kind("io")
@dataclass(frozen=True, slots=True)
class PortIO(Event):
    port: int = 0
    size: int = 1
    value: int = 0
    direction: str = "out"


@_kind("page_fault")
@dataclass(frozen=True, slots=True)
class PageFault(Event):
    address: int = 0
    error_code: int = 0
    eip: int = 0


@_kind("tlb_miss")
@dataclass(frozen=True, slots=True)
class TlbMiss(Event):
    address: int = 0
    references: int = 2


@_kind("emulate")
@dataclass(frozen=True, slots=True)
class Emulation(Event):
    """The VMM emulated a guest instruction on the virtual CPU."""
    address: int = 0
    text: str = ""
    mnemonic: str = ""


@_kind("reflect")
@dataclass(frozen=True, slots=True)
class Reflection(Event):
    """The VMM reflected an exception or interrupt into the guest kernel."""
    vector: int = 0
    name: str = ""
    from_ring: int = 0


@_kind("vm_exit")
@dataclass(frozen=True, slots=True)
class VmExit(Event):
    reason: int = 0
    name: str = ""
    qualification: int = 0
    address: int = 0


@_kind("vm_entry")
@dataclass(frozen=True, slots=True)
class VmEntry(Event):
    injected: int | None = None


@_kind("tc_lookup")
@dataclass(frozen=True, slots=True)
class TcLookup(Event):
    address: int = 0
    hit: bool = False


@_kind("translate")
@dataclass(frozen=True, slots=True)
class Translation(Event):
    address: int = 0
    instructions: int = 0
    end: int = 0


@_kind("tc_invalidate")
@dataclass(frozen=True, slots=True)
class TcInvalidation(Event):
    address: int = 0
    reason: str = ""


@_kind("hypercall")
@dataclass(frozen=True, slots=True)
class Hypercall(Event):
    name: str = ""
    batch: int = 1
    result: int = 0


@_kind("world_switch")
@dataclass(frozen=True, slots=True)
class WorldSwitch(Event):
    """The CPU switched from one VM to another; ``machine_time`` is the machine's cycle count
    (the cost model, all VMs) when the switch began."""
    from_vm: int = 0
    to_vm: int = 0
    machine_time: float = 0.0


@_kind("stop")
@dataclass(frozen=True, slots=True)
class Stop(Event):
    """The guest stopped: ``reason`` is a RunResult reason, ``detail`` says why."""
    reason: str = ""
    detail: str = ""


@_kind("hole")
@dataclass(frozen=True, slots=True)
class Hole(Event):
    """A virtualization hole: the guest ran a sensitive but unprivileged instruction (as
    ``vmkit.classify`` finds it) that did not trap, and saw something else than it would have
    on the bare machine. ``saw`` and ``bare`` name what differed (``"IF=0"`` / ``"IF=1"``);
    ``ring`` is the ring the guest believes it is in."""
    address: int = 0
    text: str = ""
    mnemonic: str = ""
    saw: str = ""
    bare: str = ""
    ring: int = 0


@_kind("memory")
@dataclass(frozen=True, slots=True)
class MemoryAccess(Event):
    """A read or write of watched physical memory (``Machine.watch_memory``): ``address``
    host-physical, ``old`` and ``new`` the bytes before and after (equal for a read, and for a
    write of the value already there); ``eip`` where the CPU was; ``source`` who made it:
    "insn" (an instruction's operand, explicit or implicit), "walk" (the page walk: entries
    read, accessed/dirty bits written), "system" (descriptor tables, TSS, interrupt frames),
    "vmm" (a monitor reading or writing guest memory on the guest's behalf)."""
    address: int = 0
    size: int = 0
    access: str = "read"
    old: bytes = b""
    new: bytes = b""
    eip: int = 0
    source: str = "insn"


EVENT_KINDS = {c.kind: c for c in (InstructionRetired, Interrupt, IRet, RingTransition, PortIO,
                                   PageFault, TlbMiss, Emulation, Reflection, VmExit, VmEntry,
                                   TcLookup, Translation, TcInvalidation, Hypercall, WorldSwitch,
                                   Stop, Hole, MemoryAccess)}


class Trace:
    """Exact counts by kind, the last ``maxlen`` events, and subscribers.

    ``trace.counts["interrupt"]`` counts every interrupt ever; ``list(trace)`` gives the
    retained events oldest first; ``trace.of("interrupt")`` filters them.
    """

    def __init__(self, maxlen: int = 20_000, instructions: bool = False):
        self._ev: deque = deque(maxlen=maxlen)
        self.counts: Counter = Counter()
        self._subs: dict[str, list[Callable]] = {}
        self._instructions = instructions
        #: wants_instructions(), kept up to date (the run loops read it after each instruction)
        self.want_insns = bool(instructions)
        self.total = 0          # events ever added (kept or not)
        self._pieces: dict = {}  # piece number -> _Piece shared with snapshots (see state())
        # ``total`` when the records kept by record() were last made into events (only the
        # entries added since may be records)
        self._made = 0
        # the kinds somebody subscribed to (every kind for "*"): record() makes these at once
        self._eager: frozenset = frozenset()

    @property
    def maxlen(self) -> int:
        return self._ev.maxlen

    @property
    def events(self) -> deque:
        """The retained events, oldest first (a ``deque`` of at most ``maxlen``)."""
        if self.total != self._made:
            self._make_events()
        return self._ev

    @property
    def instructions(self) -> bool:
        """Record an InstructionRetired event for every instruction (module text)."""
        return self._instructions

    @instructions.setter
    def instructions(self, on: bool) -> None:
        self._instructions = on
        self._wants()

    def _wants(self) -> None:
        subs = self._subs
        self.want_insns = bool(self._instructions or "instruction" in subs or "*" in subs)
        self._eager = frozenset(EVENT_KINDS if "*" in subs else subs)

    def wants_instructions(self) -> bool:
        return self.want_insns

    def add(self, ev: Event) -> None:
        k = ev.kind
        self.counts[k] += 1
        self.total += 1
        self._ev.append(ev)
        subs = self._subs
        if subs:
            for cb in subs.get(k, ()):
                cb(ev)
            for cb in subs.get("*", ()):
                cb(ev)

    def record(self, rec: tuple) -> None:
        """Add the event ``rec`` describes: ``(EventClass, vm, step, *fields)``, the fields
        after ``step`` in the class's order (as :class:`_Piece` packs them). With nobody
        subscribed to its kind the record itself is kept and counted, and the event object is made only
        when the trace is read (``events``, iteration, ``of``, ``since``, a snapshot): the
        hot paths (an interrupt, an iret, a ring change: four events a system call) build a
        tuple instead of a frozen dataclass (benchmarks/bench_trap_bytecodes.py: about 330
        bytecodes of a native system call's 5,450). Whoever reads the trace or subscribes to
        it sees the same events as with :meth:`add`."""
        k = rec[0].kind
        if k in self._eager:
            self.add(rec[0](*rec[2:], vm=rec[1]))
            return
        self.counts[k] += 1
        self.total += 1
        self._ev.append(rec)

    def _make_events(self) -> None:
        """Records kept by :meth:`record` become events, in place (only the entries added
        since the last time are looked at)."""
        ev = self._ev
        n = min(self.total - self._made, len(ev))
        if n == len(ev):
            tail = list(ev)
            ev.clear()
        else:
            tail = [ev.pop() for _ in range(n)]
            tail.reverse()
        # hundreds of thousands of new objects at once (a traced run's instructions): the
        # cyclic garbage collector would walk the growing heap again and again meanwhile (it
        # doubled the time); none of them can be garbage yet
        collect = gc.isenabled()
        gc.disable()
        try:
            ev.extend(e if e.__class__ is not tuple else e[0]._from_record(e) for e in tail)
        finally:
            if collect:
                gc.enable()
        self._made = self.total

    def subscribe(self, kind: str, callback: Callable) -> None:
        if kind != "*" and kind not in EVENT_KINDS:
            from vmkit.errors import VmkitError
            raise VmkitError(f"unknown event kind {kind!r}; expected one of "
                             f"{', '.join(sorted(EVENT_KINDS))} or '*'")
        self._subs.setdefault(kind, []).append(callback)
        self._wants()

    def unsubscribe(self, kind: str, callback: Callable) -> None:
        lst = self._subs.get(kind, [])
        if callback in lst:
            lst.remove(callback)
        if not lst:
            self._subs.pop(kind, None)
        self._wants()

    def since(self, total: int) -> list[Event]:
        """The retained events added after the trace's ``total`` was ``total``."""
        n = min(self.total - total, len(self._ev))
        if n <= 0:
            return []
        return list(itertools.islice(reversed(self.events), n))[::-1]

    def of(self, *kinds: str) -> list[Event]:
        return [e for e in self.events if e.kind in kinds]

    def clear(self) -> None:
        self._ev.clear()
        self._made = self.total
        self.counts.clear()
        self._pieces = {}

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self._ev)

    def __getitem__(self, i):
        return self.events[i]

    def state(self) -> tuple:
        """The retained events, counts and total, for a snapshot. The events are kept as
        pieces of :data:`PIECE` consecutive events shared with every other snapshot that
        retains them (so a snapshot costs a few pointers, not a copy of 20,000), plus the
        partial pieces at both ends as tuples. See :class:`_Piece`."""
        C = PIECE
        total, first = self.total, self.total - len(self.events)
        lo = -(-first // C)                 # the first piece wholly retained
        hi = total // C                     # pieces below this one are complete
        cache = self._pieces
        if lo > hi:                         # the window lies inside one piece
            return (first, tuple(self.events), (), (), Counter(self.counts), total)
        missing = [k for k in range(lo, hi) if k not in cache]
        if missing:
            evs = list(self.events)
            for k in missing:
                cache[k] = _Piece(evs[k * C - first:(k + 1) * C - first])
        for k in [k for k in cache if k < lo]:
            piece = cache.pop(k)
            if sys.getrefcount(piece) > 2:  # a snapshot still holds it: keep it small
                piece.pack()
        head = tuple(itertools.islice(self.events, 0, lo * C - first))
        tail = tuple(itertools.islice(self.events, hi * C - first, None))
        return (first, head, tuple(cache[k] for k in range(lo, hi)), tail,
                Counter(self.counts), total)

    def set_state(self, st: tuple) -> None:
        first, head, pieces, tail, counts, self.total = st
        ev = self._ev
        ev.clear()
        ev.extend(head)
        lo = (first + len(head)) // PIECE
        self._pieces = {}
        for k, piece in enumerate(pieces, start=lo):
            ev.extend(piece.items())
            self._pieces[k] = piece
        ev.extend(tail)
        self.counts = Counter(counts)
        self._made = self.total     # a state holds events only

    @staticmethod
    def state_parts(st: tuple) -> tuple:
        """What a :meth:`state` holds: (bytes of its own, the shared pieces). A piece costs
        about :data:`PIECE_BYTES` once packed; while the live trace retains its events they
        cost nothing more."""
        _, head, pieces, tail, _, _ = st
        return 8 * (len(head) + len(tail)) + 64, pieces

    def __repr__(self) -> str:
        return f"<Trace {len(self._ev)} events kept, counts {dict(self.counts)}>"


#: events in a piece of a trace snapshot (Trace.state): 1,024 keeps a snapshot of the default
#: 20,000 retained events at about 20 shared pieces and two short tuples
PIECE = 1024
#: about what a packed piece costs (4 bytes an event and the object)
PIECE_BYTES = 4 * PIECE + 100


class _Piece:
    """``PIECE`` consecutive events of a trace (numbers ``k * PIECE`` to ``(k + 1) * PIECE -
    1``), shared by the snapshots that retain them. Once the live trace has dropped them and
    only snapshots hold them, :meth:`pack` keeps them as marshal + zlib bytes (about 4 bytes
    an event instead of about 110 for the objects; measured on the syscall guest's events:
    0.7 us an event to pack, 1.8 us to unpack at a restore)."""
    __slots__ = ("events", "packed")

    def __init__(self, events):
        self.events = tuple(events)
        self.packed = None

    def pack(self) -> None:
        if self.packed is None:
            try:
                self.packed = zlib.compress(marshal.dumps(
                    [(_CLASS_INDEX[e.__class__],) + _GET[e.__class__](e) for e in self.events]),
                    1)
            except (KeyError, ValueError):  # an event class or field value marshal cannot keep
                return
            self.events = None

    def items(self) -> tuple:
        """The events (rebuilt from the packed bytes when packed)."""
        if self.events is not None:
            return self.events
        return tuple(_CLASSES[t[0]]._from_record(t)
                     for t in marshal.loads(zlib.decompress(self.packed)))


_CLASSES = [c for c in (globals()[n] for n in __all__)
            if isinstance(c, type) and issubclass(c, Event)]
_CLASS_INDEX = {c: i for i, c in enumerate(_CLASSES)}
# every field but the keyword-only ``vm``, in __init__'s order, after ``vm``
_GET = {c: operator.attrgetter("vm", *[f.name for f in fields(c) if not f.kw_only])
        for c in _CLASSES}
