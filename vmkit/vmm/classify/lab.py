"""Running one experiment: an instruction from one set-up, in one world, at one CPL, and what it
did (:class:`Outcome`)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from vmkit.isa.decode import GPR_NAMES, SEG_NAMES
from vmkit.trace import Interrupt
from vmkit.vmm.classify.worlds import (CODE, CR0_ET, CR0_PE, CR0_PG, GDT_A, GDT_LIMIT, IDT_A,
                                       IDT_LIMIT, KSTACK, MEMORY, REC, SCRATCH, STACK, STACK2,
                                       STANDARD_REGS, STEP_BUDGET, SYSTEM, SYSTEM_FLAGS, TARGET,
                                       TSS_A, TSS_A_SEL, TSS_SIZE, USER_FLAGS, WORLDS, Setup,
                                       World, _enter, _memory)


# ---- running one experiment ----------------------------------------------------------------
@dataclass
class Outcome:
    """What one run did."""
    world: str
    cpl: int
    setup: str
    trap: int | None = None           # vector of the exception the instruction raised
    recorded: int | None = None       # the vector the IDT handler recorded
    crash: str = ""                   # the kit could not run it
    gate_to_ring0: bool = False       # a software interrupt took user mode into ring 0
    n_before: tuple = ()
    n_after: tuple = ()
    v_before: dict = field(default_factory=dict)
    v_after: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)   # system memory written (address -> byte)
    tlb_lost: frozenset = frozenset()

    @property
    def trapped(self) -> bool:
        return self.trap is not None

    @property
    def ran(self) -> bool:
        """Completed without a trap and without a crash."""
        return self.trap is None and not self.crash

    @property
    def where(self) -> str:
        return f"CPL {self.cpl} [{self.world}]"

    def changes(self) -> dict:
        """Virtualized-state fields this run changed: name -> (before, after). Worked out
        once (the analysis asks for every pair of runs it compares); do not modify it."""
        out = self.__dict__.get("_changes")
        if out is not None:
            return out
        vb, va = self.v_before, self.v_after
        out = {} if vb == va else {k: (b, va[k]) for k, b in vb.items() if b != va[k]}
        if self.tables:
            out["system tables"] = ("", _describe_bytes(self.tables))
        if self.tlb_lost:
            out["TLB"] = (f"{len(self.tlb_lost)} entries", "dropped")
        self.__dict__["_changes"] = out
        return out


def _describe_bytes(d: dict) -> str:
    a = min(d)
    return f"{len(d)} byte(s) written at {a:#x}"


_FLAG_FIELDS = tuple((name, sh, mask) for name, (sh, mask) in SYSTEM_FLAGS.items())
_SEG_KEYS = tuple(n.upper() for n in SEG_NAMES)


def _vstate(m) -> dict:
    c = m.cpu
    ef = c.eflags
    v = {"GDTR": (c.gdtr.base, c.gdtr.limit), "IDTR": (c.idtr.base, c.idtr.limit),
         "LDTR": c.ldtr.selector, "TR": c.tr.selector, "CR0": c.cr0, "CR2": c.cr2,
         "CR3": c.cr3, "CR4": c.cr4, "CPL": c.cpl, "halted": c.halted}
    for name, sh, mask in _FLAG_FIELDS:
        v[name] = (ef >> sh) & mask
    for name, s in zip(_SEG_KEYS, c.seg):
        v[name] = s.selector
    d = m.dev
    v["devices"] = (d.imr, d.isr, d.irr, d.timer_period, len(d.console), d.poweroff_code)
    return v


_NO_ENTRIES: frozenset = frozenset()
#: the register file of a set-up that names no registers, in GPR order
_STANDARD_FILE = [STANDARD_REGS[r] & 0xFFFFFFFF for r in GPR_NAMES]


def _tlb(m) -> frozenset:
    t = m.tlb
    if not (t["rs"] or t["ws"] or t["ru"] or t["wu"]):
        return _NO_ENTRIES
    return frozenset((k, vpn) for k, t in t.items() for vpn in t)


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:#x}"
    if isinstance(v, tuple) and all(isinstance(x, int) for x in v):
        return "(" + ", ".join(f"{x:#x}" for x in v) + ")"
    return str(v)


class Lab:
    """Template machines, one per (state, CPL), each put back before a run.

    A run changes little of its machine, and the lab knows what (classifying the subset is
    4,200 runs, te's first use in a kernel about 1,000), so it undoes and observes only that:

    * the lab watches every page of its machines for writes (``Machine.code_watch``, which
      every store to memory passes: the accessors, the page walker, the machine's and the
      lab's writes) and puts a machine back (:meth:`_put_back`, its ``Machine.restore``) by
      copying back the pages written since, where ``restore`` compares them all; the memory
      a run changed is looked for only on the pages it wrote;
    * devices, trace and TLB are loaded again only when they differ from the template's;
    * the template's TLB is warm already (each run's warming only hits), and the virtualized
      state before a run is worked out once per template and EFLAGS (all a set-up changes
      besides registers and memory).

    ``Lab(shortcuts=False)`` runs the same experiments the plain way (``Machine.restore``,
    ``Machine.write``, every byte of memory compared, the TLB warmed by every run):
    ``tests/vmm/test_classify.py`` checks that both find the same outcomes and that a machine
    put back is its template again."""

    def __init__(self, shortcuts: bool = True):
        from vmkit.machine.machine import Machine
        self.shortcuts = shortcuts
        self.image = _memory()
        self.states: list[tuple[World, int, object, object]] = []
        #: machine id -> the physical pages written since the machine was last put back
        self._written: dict[int, list] = {}
        self._v_before: dict[tuple, dict] = {}
        for w in WORLDS:
            for cpl in ((0, 3) if w.user else (0,)):
                m = Machine(MEMORY)
                m.write(0, self.image)
                c = m.cpu
                c.gdtr.base, c.gdtr.limit = GDT_A, GDT_LIMIT
                c.idtr.base, c.idtr.limit = IDT_A, IDT_LIMIT
                c.tr.selector, c.tr.base, c.tr.limit = TSS_A_SEL, TSS_A, TSS_SIZE - 1
                c.cr0 = CR0_PE | CR0_ET
                c.eflags = 0x2
                m.dev.imr = 0xFF
                _enter(m, 0)
                w.apply(m)
                _enter(m, cpl)
                c.eip = CODE
                if shortcuts:
                    _warm_tlb(m, cpl)   # warm already: each run's warming then only hits
                snap = m.snapshot()
                if shortcuts:
                    self._watch(m)
                self.states.append((w, cpl, m, snap))

    def _watch(self, m) -> None:
        """Note every page written from now on (a page in ``code_pages`` makes every store
        there call ``_smc``, which calls the page's ``code_watch``)."""
        written = self._written[m.id] = []
        note = written.append

        def on_write(pa: int, n: int) -> None:
            note(pa >> 12)
            note((pa + n - 1) >> 12)
        for p in range(m.memory_size >> 12):
            m.code_watch[p] = on_write
            m.code_pages.setdefault(p, {})

    def _put_back(self, m, snap) -> None:
        """``m.restore(snap)`` for a lab machine: only the pages written since are compared
        and copied back (with their compiled code dropped when they changed, as restore
        does); everything else as restore loads it."""
        written = self._written[m.id]
        if written:
            mem, pages, code = m.mem, snap.pages, m.code_pages
            same = mem.startswith
            for p in set(written):
                o = p << 12
                if not same(pages[p], o):
                    mem[o:o + 4096] = pages[p]
                    if code.get(p):
                        m.drop_page_code(p)
            written.clear()
        m._snap_pages = snap.pages
        m.cpu.set_state(snap.cpu)
        # devices, trace and TLB are loaded again only when the run changed them (most runs
        # change none): equal devices are the same state, and a trace with the snapshot's
        # total and counts has had nothing added
        if m.dev != snap.devices:
            m.dev = snap.devices.copy()
        m.clock = snap.clock
        x = snap.extra
        m.steps = x["steps"]
        m.stopped = x["stopped"]
        m.irq_inhibit_until = x["inhibit"]
        tr, ts = m.trace, x["trace"]
        if tr.total != ts[5] or not dict.__eq__(tr.counts, ts[4]):
            tr.set_state(ts)
        tlb, ss = m.tlb, x["tlb"]
        if tlb["rs"] != ss["rs"] or tlb["ws"] != ss["ws"] or tlb["ru"] != ss["ru"] \
                or tlb["wu"] != ss["wu"] or m.tlb_large != ss["large"] \
                or any(m.tlb_watched.values()):
            m.set_tlb_state(ss)
        m.tlb_misses, m.walk_refs, m.exceptions_delivered = x["counters"]
        m.drop_live_code()
        m.mode_changed()

    def run(self, code: bytes, setup: Setup, world: World, cpl: int, m, snap) -> Outcome:
        fast = self.shortcuts
        if fast:
            self._put_back(m, snap)
            written = self._written[m.id]
            poke = _poke
        else:
            m.restore(snap)
            written = []
            poke = _write
        c = m.cpu
        if setup.regs:
            regs = dict(STANDARD_REGS)
            for r, v in setup.regs:
                regs[r] = v(c) if callable(v) else v
            c.regs[:] = [regs[r] & 0xFFFFFFFF for r in GPR_NAMES]
            given = tuple((r, regs[r]) for r, _ in setup.regs)
        else:
            c.regs[:] = _STANDARD_FILE
            given = ()
        if setup.stack:
            poke(m, c.regs[4], struct.pack(f"<{len(setup.stack)}I", *setup.stack), written)
        for a, b in setup.mem:
            poke(m, a, b, written)
        if setup.flags:
            c.eflags = c.eflags | setup.flags
        poke(m, CODE, code, written)
        _warm_tlb(m, cpl)
        # memory before the run: the template's pages, and copies of those written since
        mem = m.mem
        if fast:
            before = {p: bytes(mem[p << 12:(p + 1) << 12]) for p in set(written)}
            mark = len(written)
        else:
            whole = bytes(mem)
        out = Outcome(world.name, cpl, setup.name)
        out.n_before = (tuple(c.regs), c.eip, c.eflags & USER_FLAGS, given, setup.stack,
                        setup.mem)
        # the virtualized state before: a function of the template (CPU and devices as
        # the snapshot holds them) and of EFLAGS (a set-up may set status flags), which is
        # all a set-up changes besides registers and memory
        if fast:
            key = (m.id, c.eflags)
            vb = self._v_before.get(key)
            if vb is None:
                vb = self._v_before[key] = _vstate(m)
        else:
            vb = _vstate(m)
        out.v_before = vb
        tlb0 = _tlb(m)
        events = m.step()
        res = m.last_result
        if res.reason == "crash":
            out.crash = res.detail
            return out
        for e in events:
            if isinstance(e, Interrupt):
                if e.source == "exception" and out.trap is None:
                    out.trap = e.vector
                elif e.source in ("int", "int3", "into") and e.from_ring == 3 and e.to_ring == 0:
                    out.gate_to_ring0 = True
        # non-trapping result: the bytes changed on the pages the run wrote
        diff: dict[int, int] = {}
        if fast:
            pages = snap.pages
            for p in sorted(set(written[mark:])):
                _page_diff(before.get(p) or pages[p], mem, p << 12, diff)
        else:
            diff = _mem_diff(whole, mem)
        if diff:
            lo, hi = SYSTEM
            ordinary = frozenset((a, v) for a, v in diff.items() if not lo <= a < hi)
            out.tables = {a: v for a, v in diff.items() if lo <= a < hi}
        else:
            ordinary = _NO_ENTRIES
        out.n_after = (tuple(c.regs), c.eip, c.eflags & USER_FLAGS, ordinary)
        out.v_after = _vstate(m)
        out.tlb_lost = tlb0 - _tlb(m) if tlb0 else _NO_ENTRIES
        if out.trap is not None:
            # let the IDT handler run: it records the vector and halts
            m.run(max_steps=STEP_BUDGET)
            out.recorded = struct.unpack("<I", m.read(REC, 4))[0]
        return out


def _write(m, a: int, data: bytes, written: list) -> None:
    m.write(a, data)


def _poke(m, a: int, data: bytes, written: list) -> None:
    """``m.write(a, data)`` for the lab's set-up: where no compiled code lies on the pages
    (``_smc`` would only tell the lab's watch) and no memory is watched, a slice store and a
    note of the pages, as the watch would take it."""
    end = a + len(data)
    code = m.code_pages
    if end > m.memory_size or m.watched_pages or code.get(a >> 12) or code.get((end - 1) >> 12):
        m.write(a, data)
        return
    m.mem[a:end] = data
    written.append(a >> 12)
    written.append((end - 1) >> 12)


def _warm_tlb(m, cpl: int) -> None:
    """Fill the TLB with the run's addresses (with paging on), so that dropping entries can
    be seen."""
    if m.cpu.cr0 & CR0_PG:
        translate = m.translate
        for a in (CODE, TARGET, SCRATCH, SCRATCH + 0x1000, STACK, STACK2, KSTACK - 4):
            for user in ((False, True) if cpl == 3 else (False,)):
                translate(a, False, user)
                translate(a, True, user)


def _page_diff(before: bytes, after: bytearray, at: int, out: dict) -> None:
    """Add address -> new byte to ``out`` for every byte of the page at ``at`` that differs
    from ``before`` (the page's old contents), in address order. An equal page, then equal
    512-byte blocks, then equal 64-byte lines are skipped by one comparison each."""
    if after.startswith(before, at):
        return
    view = memoryview(before)
    for b in range(0, len(before), 512):
        if after.startswith(view[b:b + 512], at + b):
            continue
        for k in range(b, b + 512, 64):
            if after.startswith(view[k:k + 64], at + k):
                continue
            for i in range(k, k + 64):
                if before[i] != after[at + i]:
                    out[at + i] = after[at + i]


def _mem_diff(before: bytes, after: bytearray) -> dict[int, int]:
    """Address -> new byte for every byte of memory that differs (``Lab(shortcuts=False)``).
    Equal pages, then equal 64-byte lines of a changed page, are skipped by one comparison
    each."""
    out = {}
    n = len(before)
    if after == before:
        return out
    view = memoryview(before)
    for a in range(0, n, 4096):
        if after.startswith(view[a:a + 4096], a):
            continue
        for line in range(a, min(a + 4096, n), 64):
            if after.startswith(view[line:line + 64], line):
                continue
            for i in range(line, min(line + 64, n)):
                if before[i] != after[i]:
                    out[i] = after[i]
    return out


_LAB: Lab | None = None


def _lab() -> Lab:
    global _LAB
    if _LAB is None:
        _LAB = Lab()
    return _LAB
