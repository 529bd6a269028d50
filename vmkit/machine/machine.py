"""The bare machine: one x86-32 CPU, physical memory, MMU, devices, and the interpreter loop.

Speed comes from decoding and compiling each instruction once (see ``vmkit.isa.semantics``):
the instruction cache maps a linear EIP to a compiled function, so the inner loop is a dict
lookup and a call. Anything that changes how the next instruction must be fetched or whether
an interrupt is due (IF, CPL, paging, a device) ends the current burst by raising
``Resched`` after it completes; the loop then looks at the machine again. The loop itself
needs no per-instruction checks besides the budget, which stops exactly at the next timer
deadline so interrupts arrive at the same guest instruction whatever else happens.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from vmkit.errors import UnsupportedInstruction, VmkitError
from vmkit.isa.decode import DECODER, Insn
from vmkit.isa.faults import Fault, Resched
from vmkit.machine.blockrun import BlockRunMixin, blocks_default
from vmkit.machine.codecache import CodeCacheMixin
from vmkit.machine import devices as dev
from vmkit.machine.hooks import EVENT_POLICY, MachineHooks, overridden
from vmkit.machine.cpu import (CPU, LZ_ADC, LZ_ADD, LZ_DEC, LZ_INC, LZ_LOGIC, LZ_SBB, LZ_SUB,
                               PARITY, lazy_status)
from vmkit.machine.mmu import CR0_PG, MMUMixin, Sync
from vmkit.machine.rules import halt_outcome
from vmkit.machine.system import SystemMixin, TripleFault
from vmkit.trace import InstructionRetired, Interrupt, PortIO, Stop, Trace

__all__ = ["Machine", "RunResult", "Snapshot", "BOOT_GDT", "BOOT_GDT_BYTES", "DEFAULT_MEMORY",
           "PAGE_SIZE", "distinct_pages"]

DEFAULT_MEMORY = 4 << 20
#: where the machine places its flat boot GDT at power-on (null, ring-0 code 0x08, data 0x10)
BOOT_GDT = 0x800
#: the flat boot GDT the machine provides at power-on: null, ring-0 code, ring-0 data
BOOT_GDT_BYTES = bytes(8) + bytes.fromhex("ffff0000009acf00") + bytes.fromhex("ffff00000092cf00")
#: the granularity at which snapshots share memory (the x86 page)
PAGE_SIZE = 4096
_STOP_REASONS = ("halt", "poweroff", "max_steps", "breakpoint", "crash", "until", "vmm")
_machine_ids = itertools.count(1)


def machines_made() -> int:
    """How many machines this process has made (the id of the last one)."""
    return _last_id


_last_id = 0


@dataclass
class RunResult:
    """Why a run stopped and how many steps (instructions retired) it took.

    ``reason`` is one of "halt", "poweroff", "max_steps", "breakpoint", "crash", "until";
    ``detail`` says more for a crash (the fault, the address and instruction); ``eip`` is
    where the guest stopped."""
    reason: str
    steps: int
    detail: str = ""
    eip: int = 0
    instruction: str = ""

    def __str__(self) -> str:
        s = f"{self.reason} after {self.steps} steps"
        if self.detail:
            s += f": {self.detail}"
        return s


@dataclass
class Snapshot:
    """The whole state of a machine (see :meth:`Machine.snapshot`).

    Memory is kept as ``pages``: one immutable ``bytes`` object per 4 KiB page, shared (the
    same object) with the machine's previous snapshot wherever the page did not change, and
    with every other page of the same uniform content (untouched 0xAA memory, zeroed pages).
    ``memory`` joins them (a 4 MiB copy: for tests and tools, not for the run loop)."""
    machine_id: int
    memory_size: int
    cpu: tuple
    pages: tuple
    devices: dev.Devices
    clock: int
    extra: dict = field(default_factory=dict)

    @property
    def memory(self) -> bytes:
        """The whole physical memory as one bytes object."""
        return b"".join(self.pages)


def distinct_pages(snapshots) -> dict:
    """``id(page) -> page`` for every distinct page object the machine snapshots hold: what
    they cost in memory together is ``sum(map(len, distinct_pages(...).values()))``."""
    out: dict = {}
    for s in snapshots:
        for p in s.pages:
            out[id(p)] = p
    return out


# Uniform pages (every byte the same: memory untouched since power-on is all 0xAA, a zeroed
# page all 0x00) are one shared object per byte value, so a first snapshot costs only the pages
# a guest has written.
_UNIFORM: dict[int, bytes] = {}


def _share_uniform(page: bytes) -> bytes:
    u = _UNIFORM.get(page[0])
    if u is None:
        u = _UNIFORM[page[0]] = bytes([page[0]]) * PAGE_SIZE
    return u if page == u else page


class Machine(MMUMixin, SystemMixin, CodeCacheMixin, BlockRunMixin):
    """A bare IA-32 machine in protected mode (the kit's hardware).

    ``Machine(memory_size=4 << 20)`` powers on with memory filled with 0xAA, CS:EIP at the
    flat ring-0 boot code segment, paging off, and a flat boot GDT at ``BOOT_GDT``.

    A monitor extends it with ``attach(hooks)`` (vmkit.machine.hooks): notifications, the
    event policy another CPU mode changes (VMX non-root, vmkit.vmm.hw: ``deliverable_irq``,
    ``deliver_irq``, ``take_exception``, ``deliver``, ``soft_int``, ``page_fault``,
    ``descriptor_visible``) and port interception.
    """

    def __init__(self, memory_size: int = DEFAULT_MEMORY, *, input: bytes = b"",
                 trace: Trace | None = None, vm_index: int = 0, blocks: bool | None = None):
        if not isinstance(memory_size, int) or memory_size < 0x10000 or memory_size > 1 << 30 \
                or memory_size % 4096:
            raise VmkitError(f"memory_size must be a multiple of 4096 between 64 KiB and 1 GiB, "
                             f"got {memory_size!r}")
        if not isinstance(input, (bytes, bytearray, memoryview)):
            raise VmkitError(f"input must be bytes (what the guest reads from port 0x60), got "
                             f"{type(input).__name__}")
        global _last_id
        self.id = _last_id = next(_machine_ids)
        self.vm_index = vm_index
        self.trace = trace if trace is not None else Trace()
        self._init_memory(memory_size)
        self.cpu = CPU()
        self.cpu.regs[4] = memory_size  # a stack at the top of memory for bare programs
        self.dev = dev.Devices(input=bytes(input))
        self.clock = 0              # guest time: instructions retired (plus idle time in HLT)
        self.steps = 0              # instructions retired
        self.exceptions_delivered = 0   # Interrupt events of source "exception" (deliver)
        self.breakpoints: set[int] = set()
        self.stopped: RunResult | None = None
        self.irq_inhibit_until = -1    # STI/MOV SS shadow: no interrupt before this step
        # compiled instructions and blocks, live and kept (vmkit.machine.codecache); block
        # translation (vmkit.machine.blocks) unless switched off
        self._init_code_cache()
        self.blocks = blocks_default() if blocks is None else bool(blocks)
        # how often each cold address was reached (blockrun._translate): kept when the caches
        # are flushed, so code that runs once between two flushes still gets its block
        self._heat: dict[tuple[int, bool], list] = {}
        self.smc_gen = 0            # bumped whenever a write drops compiled code
        self.port_handlers: dict[int, object] = {}   # extra devices: port -> (read, write)
        # request_exit() (from a hook, vmkit.machine.hooks): run() returns (reason "vmm") at
        # the next instruction boundary; read it, set it through the methods
        self.exit_request = False
        self.attach(MachineHooks())
        # the namespace compiled instructions run in (a monitor compiling its own code uses it)
        self.compile_globals = self._make_globals()
        self._accessors: dict = {}
        self._checks: dict = {}     # remembered protection checks (vmkit.machine.checkcache)
        self._snap_pages: tuple | None = None   # the pages of the last snapshot taken or restored
        self._write_boot_gdt()
        self.mode_changed()

    # ---- set-up ----------------------------------------------------------------------------
    def attach(self, hooks: MachineHooks) -> None:
        """Install a monitor's extension of the machine (see vmkit.machine.hooks); it replaces
        the one attached before."""
        if not isinstance(hooks, MachineHooks):
            raise VmkitError(f"Machine.attach: expected a MachineHooks, got {type(hooks).__name__}")
        self.hooks = hooks
        hooks.host = self
        self.flush_icache()     # compiled code asked the hooks before (intercept)
        self._hook_exception = overridden(hooks, "on_exception")
        self._hook_ring = overridden(hooks, "on_ring_change")
        self._hook_intercept = overridden(hooks, "intercept")
        self._hook_port_read = overridden(hooks, "port_read")
        self._hook_port_write = overridden(hooks, "port_write")
        # the event policy: an overriding hook stands in for the machine's method (an instance
        # attribute, so the run loop calls it at no extra cost); the others are the machine's
        for name in EVENT_POLICY:
            hook = overridden(hooks, name)
            if hook is not None:
                setattr(self, name, hook)
            else:
                self.__dict__.pop(name, None)

    def request_exit(self) -> None:
        """Make ``run()`` return to the monitor (reason ``"vmm"``) at the next instruction
        boundary."""
        self.exit_request = True

    def cancel_exit(self) -> None:
        """Forget a requested exit (a monitor about to run its guest again)."""
        self.exit_request = False

    def _make_globals(self) -> dict:
        g = {"C": self.cpu, "R": self.cpu.regs, "M": self, "Fault": Fault, "Resched": Resched,
             "PARITY": PARITY, "lazy_status": lazy_status, "LZ_ADD": LZ_ADD, "LZ_ADC": LZ_ADC,
             "LZ_SUB": LZ_SUB, "LZ_SBB": LZ_SBB, "LZ_LOGIC": LZ_LOGIC, "LZ_INC": LZ_INC,
             "LZ_DEC": LZ_DEC, "__builtins__": __builtins__}
        return g

    def _write_boot_gdt(self) -> None:
        gdt = BOOT_GDT_BYTES
        self.phys_write(BOOT_GDT, gdt)
        self.cpu.gdtr.base, self.cpu.gdtr.limit = BOOT_GDT, len(gdt) - 1
        self.cpu.idtr.base, self.cpu.idtr.limit = 0, 0

    def mode_changed(self) -> None:
        """CPL or paging changed: rebind the memory accessors and the instruction cache."""
        cpu = self.cpu
        user = cpu.cpl == 3
        key = (cpu.cr0 & CR0_PG or self.nested is not None, user)
        mode = self._accessors.get(key)
        if mode is None:  # the closures keep references to mem, TLB dicts (cleared in place)
            mode = self._accessors[key] = (
                self._make_accessors(user), self._icache_usr if user else self._icache_sup,
                self._bcache_usr if user else self._bcache_sup)
        acc, self._icache, self._bcache = mode
        self.compile_globals.update(acc)

    def load(self, program, address: int | None = None) -> None:
        """Copy a Program (or bytes) into physical memory at its base (or ``address``) and point
        EIP at its ``_start`` symbol or its base."""
        code = getattr(program, "code", program)
        base = address if address is not None else getattr(program, "base", 0x1000)
        if base < 0 or base + len(code) > self.memory_size:
            raise VmkitError(f"program of {len(code)} bytes at {base:#x} does not fit in "
                             f"{self.memory_size:#x} bytes of memory")
        self.phys_write(base, bytes(code))
        syms = getattr(program, "symbols", {}) or {}
        self.cpu.eip = syms.get("_start", base)

    # ---- public conveniences ---------------------------------------------------------------
    def read(self, addr: int, n: int) -> bytes:
        """n bytes of physical memory."""
        return self.phys_read(addr, n)

    def write(self, addr: int, data: bytes) -> None:
        """Write physical memory."""
        self.phys_write(addr, bytes(data))

    @property
    def console(self) -> str:
        return self.dev.console_text()

    @property
    def icount(self) -> int:
        return self.steps

    def unsupported(self, what: str):
        raise UnsupportedInstruction(self.text_at(self.cpu.eip) or "?", self.cpu.eip, what)

    def insn_at(self, eip: int) -> Insn | None:
        """The instruction at linear ``eip`` decoded without side effects (None if its bytes
        are not mapped or not an instruction)."""
        window = b""
        for k in range(15):
            b = self.peek(eip + k, 1)
            if b is None:
                break
            window += b
        if not window:
            return None
        return DECODER.decode(eip, window)

    def text_at(self, eip: int) -> str:
        """Capstone text of the instruction at ``eip`` ("" if none), without side effects."""
        insn = self.insn_at(eip)
        return insn.text if insn is not None and insn.id else (insn.text if insn else "")

    # ---- devices ---------------------------------------------------------------------------
    def port_in(self, port: int, size: int) -> int:
        if self.in_burst:
            raise Sync()  # devices see the exact guest time (timer, clock port, events)
        if not self.io_permitted(port, size):
            raise Fault(13, 0, detail=f"in from port {port:#x} not permitted at CPL "
                        f"{self.cpu.cpl}")
        v = self.device_read(port, size)
        self.trace.add(PortIO(self.clock, port=port, size=size, value=v, direction="in",
                              vm=self.vm_index))
        return v

    def port_out(self, port: int, size: int, value: int) -> None:
        if self.in_burst:
            raise Sync()
        if not self.io_permitted(port, size):
            raise Fault(13, 0, detail=f"out to port {port:#x} not permitted at CPL "
                        f"{self.cpu.cpl}")
        self.trace.add(PortIO(self.clock, port=port, size=size, value=value, direction="out",
                              vm=self.vm_index))
        self.device_write(port, size, value)

    def device_read(self, port: int, size: int) -> int:
        """What a device answers on ``port`` (no permission check: monitors call this): the
        hooks' ``port_read``, then ``port_handlers``, then the machine's devices."""
        if self._hook_port_read is not None:
            v = self._hook_port_read(port, size)
            if v is not None:
                return v
        h = self.port_handlers.get(port)
        if h is not None:
            return h[0](size)
        return self.dev.read(port, size, self.clock)

    def device_write(self, port: int, size: int, value: int) -> None:
        if self._hook_port_write is not None and self._hook_port_write(port, size, value):
            return
        h = self.port_handlers.get(port)
        if h is not None:
            h[1](size, value)
            return
        self.dev.write(port, size, value, self.clock)

    def irq_shadow(self) -> None:
        """STI setting IF, called before the STI retires: interrupts are not recognised until
        the instruction after it has retired too (SDM STI)."""
        if self.in_burst:
            raise Sync()  # needs the exact instruction count
        self.irq_inhibit_until = self.steps + 2

    def halt(self) -> None:
        self.cpu.halted = True

    def cpuid(self) -> None:
        """CPUID: leaf 0 = vendor "VmkitTeachCPU", leaf 1 = family 6 with TSC and PSE; no
        VMX bit (the simulated CPU is what the monitors virtualize)."""
        r = self.cpu.regs
        leaf = r[0]
        if leaf == 0:
            v = b"VmkitTeachCP"
            r[0], r[3], r[2], r[1] = 1, int.from_bytes(v[0:4], "little"), \
                int.from_bytes(v[8:12], "little"), int.from_bytes(v[4:8], "little")
        elif leaf == 1:
            r[0], r[3], r[1], r[2] = 0x00000600, 0, 0, (1 << 4) | (1 << 3)
        else:
            r[0] = r[3] = r[1] = r[2] = 0

    def rdtsc(self) -> int:
        if self.in_burst:
            raise Sync()
        return self.clock

    # ---- running ---------------------------------------------------------------------------
    def deliverable_irq(self) -> int | None:
        """The interrupt line to deliver at this boundary, or None (IF, STI shadow, PIC)."""
        d = self.dev
        if not self.cpu.ef & 0x200 or self.steps < self.irq_inhibit_until:
            return None
        return d.pending_vector()

    def _tick(self) -> None:
        self.dev.tick(self.clock)

    def _crash(self, detail: str) -> RunResult:
        cpu = self.cpu
        r = RunResult("crash", 0, detail, cpu.eip, self._safe_text())
        self.stopped = r
        self.trace.add(Stop(self.clock, reason="crash", detail=detail, vm=self.vm_index))
        return r

    def _safe_text(self) -> str:
        return self.text_at(self.cpu.eip)

    def _stop(self, reason: str, detail: str = "") -> RunResult:
        r = RunResult(reason, 0, detail, self.cpu.eip, "")
        if reason in ("halt", "poweroff", "crash"):
            self.stopped = r
            self.trace.add(Stop(self.clock, reason=reason, detail=detail, vm=self.vm_index))
        return r

    def step(self):
        """Run one instruction (delivering a due interrupt first). Returns the list of events it
        produced."""
        total = self.trace.total
        self.last_result = self.run(max_steps=1, _single=True)
        return self.trace.since(total)

    def run(self, max_steps: int = 1_000_000, until=None, _single: bool = False) -> RunResult:
        """Run until the guest stops or ``max_steps`` instructions have retired.

        ``until`` is an optional predicate called with the machine after each instruction; the
        run stops (reason "until") when it returns true. Breakpoints (``machine.breakpoints``,
        guest-virtual addresses) stop the run before the instruction there executes (but not on
        the first instruction of a run, so a run can continue from a breakpoint)."""
        if not isinstance(max_steps, int) or max_steps < 0:
            raise VmkitError(f"max_steps must be a non-negative integer, got {max_steps!r}")
        if self.stopped is not None:
            r = self.stopped
            return RunResult(r.reason, 0, r.detail, r.eip, r.instruction)
        start = self.steps
        end = start + max_steps
        careful = bool(_single or until or self.breakpoints or self.trace.wants_instructions()
                       or self.cpu.ef & 0x100 or self.watched_pages)
        first = True
        cpu = self.cpu
        dv = self.dev
        try:
            if careful:     # every instruction alone: the loop of _careful
                res = self._careful(end, until, _single)
            else:
                while True:
                    if self.exit_request:
                        self.exit_request = False
                        res = RunResult("vmm", 0, "", cpu.eip)
                        break
                    if dv.poweroff_code is not None:
                        res = self._stop("poweroff", f"exit code {dv.poweroff_code}")
                        break
                    self._tick()
                    if self.steps >= end:
                        res = RunResult("max_steps", 0, "", cpu.eip)
                        break
                    line = self.deliverable_irq()
                    if line is not None:
                        if self.deliver_irq(line):
                            continue
                    if cpu.halted:
                        wake = halt_outcome(cpu.ef & 0x200, dv)
                        if wake.__class__ is str:   # nothing can wake it
                            res = self._stop("halt", wake)
                            break
                        if wake is not None:        # idle until the next timer tick
                            self.clock = max(self.clock, wake)
                        continue
                    # TF may be set by popfd/iretd during the run; in an STI shadow the next
                    # instruction must run alone so that a pending interrupt comes right after it
                    if careful or cpu.ef & 0x100 or self.steps < self.irq_inhibit_until:
                        if not first and cpu.eip in self.breakpoints:
                            res = RunResult("breakpoint", 0, "", cpu.eip)
                            break
                        first = False
                        self._run_one()
                        if _single:
                            res = RunResult("max_steps", 0, "", cpu.eip)
                            break
                        if until is not None and until(self):
                            res = RunResult("until", 0, "", cpu.eip)
                            break
                        continue
                    budget = end - self.steps
                    if dv.next_tick is not None:
                        budget = min(budget, dv.next_tick - self.clock)
                    if self.blocks:
                        self._burst_blocks(max(budget, 1))
                    else:
                        self._burst(max(budget, 1))
        except TripleFault as tf:
            res = self._crash(f"triple fault: {tf}")
        except UnsupportedInstruction as ui:
            res = self._crash(str(ui))
        except RecursionError:
            res = self._crash("guest recursion too deep for the simulator")
        except (KeyboardInterrupt, SystemExit, VmkitError):
            raise
        except Exception as ex:  # a bug in the kit itself: report it, keep the kernel alive
            res = self._crash(f"vmkit internal error ({type(ex).__name__}: {ex}); "
                              f"please report it with the guest and step count")
            res.exception = ex
        res.steps = self.steps - start
        if not res.instruction and res.reason not in ("max_steps", "vmm"):  # vmm: a monitor exit
            res.instruction = self._safe_text()
        return res

    def deliver_irq(self, line: int) -> bool:
        """Acknowledge ``line`` and deliver it (the ``on_exception`` hook first)."""
        self.dev.acknowledge(line)
        if self._hook_exception is not None and self._hook_exception(
                dev.IRQ_BASE + line, None, "irq", None):
            return True
        self.cpu.halted = False
        try:
            self.deliver(dev.IRQ_BASE + line, None, self.cpu.eip, "irq")
        except Fault as f:
            self.take_exception(f)
        return True

    def take_exception(self, f: Fault) -> None:
        """Raise exception ``f`` at the current instruction: the ``on_exception`` hook first,
        else delivery through the IDT."""
        hook = self._hook_exception
        if hook is not None and hook(f.vector, f, "exception", None):
            return
        self.deliver_exception(f)

    def _burst(self, budget: int) -> None:
        """Run up to ``budget`` instructions with nothing but the budget checked."""
        cpu = self.cpu
        n = 0
        sync = False
        self.in_burst = True
        try:
            get = self._icache.get
            compile_ = self._compile
            while n < budget:
                f = get(cpu.eip)
                if f is None:
                    f = compile_(cpu.eip)
                f()
                n += 1
        except Resched:
            n += 1
        except Sync:
            sync = True  # the instruction changed nothing yet: run it below, clocks exact
        except Fault as ex:
            self._retire(n)
            n = 0
            self.take_exception(ex)
        finally:
            self._retire(n)
        if sync:
            self._run_one()

    def _retire(self, n: int) -> None:
        """End a burst: ``n`` instructions retired (steps and clock), the machine out of it."""
        self.in_burst = False
        self.steps += n
        self.clock += n

    def _careful(self, end: int, until, single: bool) -> RunResult:
        """The loop of :meth:`run` when every instruction runs alone (instructions traced,
        single steps, breakpoints, ``until``, watched pages, TF): the same steps as ``run``'s
        loop with ``_tick``, ``deliverable_irq`` and ``_run_one`` written out in it, and the
        instruction event kept as a record (``Trace.record``) until the trace is read. A
        notebook's traced run of 400,000 instructions spends most of its time here."""
        cpu = self.cpu
        dv = self.dev
        own_irq = "deliverable_irq" not in self.__dict__    # no monitor's policy attached
        rec_cls = InstructionRetired
        # only the instructions traced: between the checks, instructions run as in a burst
        windows = not single and until is None
        alone = False   # the instruction that asked for exact clocks (Sync) runs alone
        first = True
        while True:
            if self.exit_request:
                self.exit_request = False
                return RunResult("vmm", 0, "", cpu.eip)
            if dv.poweroff_code is not None:
                return self._stop("poweroff", f"exit code {dv.poweroff_code}")
            d = self.dev
            nt = d.next_tick
            if nt is not None and self.clock >= nt:
                d.tick(self.clock)                          # _tick
            if self.steps >= end:
                return RunResult("max_steps", 0, "", cpu.eip)
            if own_irq:                                     # deliverable_irq
                if cpu.ef & 0x200 and self.steps >= self.irq_inhibit_until and (
                        d.__class__ is not dev.Devices or d.irr & ~d.imr & 0xFF):
                    line = d.pending_vector()
                    if line is not None and self.deliver_irq(line):
                        continue
            else:
                line = self.deliverable_irq()
                if line is not None and self.deliver_irq(line):
                    continue
            if cpu.halted:
                wake = halt_outcome(cpu.ef & 0x200, dv)
                if wake.__class__ is str:   # nothing can wake it
                    return self._stop("halt", wake)
                if wake is not None:        # idle until the next timer tick
                    self.clock = max(self.clock, wake)
                continue
            eip = cpu.eip
            if not first and eip in self.breakpoints:
                return RunResult("breakpoint", 0, "", eip)
            first = False
            if (windows and not alone and not self.breakpoints and not self.watched_pages
                    and not cpu.ef & 0x100 and self.steps >= self.irq_inhibit_until):
                tr = self.trace
                if tr.want_insns and "instruction" not in tr._eager:
                    budget = end - self.steps
                    nt = d.next_tick
                    if nt is not None:
                        budget = min(budget, nt - self.clock)
                    alone = self._traced_burst(budget)
                    continue
            alone = False
            # _run_one
            ring = cpu.cpl
            tf = cpu.ef & 0x100
            f = self._icache.get(eip)
            try:
                if f is None:
                    f = self._compile(eip)
                try:
                    f()
                except Resched:
                    pass
            except Fault as ex:
                self.take_exception(ex)
            else:
                self.steps += 1
                clock = self.clock = self.clock + 1
                tr = self.trace
                if tr.want_insns:       # Trace.record, written out
                    if "instruction" in tr._eager:
                        tr.add(rec_cls(clock, address=eip, text=f.__name__, ring=ring,
                                       vm=self.vm_index))
                    else:
                        tr.counts["instruction"] += 1
                        tr.total += 1
                        tr._ev.append((rec_cls, self.vm_index, clock, eip, f.__name__, ring))
                if tf:  # single-step trap (#DB) after the instruction
                    self.take_exception(Fault(1, detail="single-step trap (TF)"))
            if single:
                return RunResult("max_steps", 0, "", cpu.eip)
            if until is not None and until(self):
                return RunResult("until", 0, "", cpu.eip)

    def _traced_burst(self, budget: int) -> bool:
        """Up to ``budget`` instructions as :meth:`_burst` runs them (what ``run``'s loop
        checks between them cannot change without the instruction ending the burst: Resched,
        Sync, a fault), each one traced (its record, as ``_careful`` makes it) and counted at
        once, so steps and clock stay exact. True when an instruction asked for exact clocks
        (Sync) before it did anything: the caller runs it alone."""
        cpu = self.cpu
        tr = self.trace
        counts = tr.counts
        append = tr._ev.append
        vm = self.vm_index
        ring = cpu.cpl          # a ring change asks for exact clocks (Sync) in a burst
        rec_cls = InstructionRetired
        get = self._icache.get
        compile_ = self._compile
        n = 0
        self.in_burst = True
        try:
            while n < budget:
                if self.exit_request:
                    break
                eip = cpu.eip
                f = get(eip)
                if f is None:
                    f = compile_(eip)
                try:
                    f()
                except Resched:
                    n = budget      # retired: recorded below, then the loop looks again
                n += 1
                self.steps += 1
                clock = self.clock = self.clock + 1
                counts["instruction"] += 1
                tr.total += 1
                append((rec_cls, vm, clock, eip, f.__name__, ring))
        except Sync:
            return True
        except Fault as ex:
            self.in_burst = False
            self.take_exception(ex)
        finally:
            self.in_burst = False
        return False

    def _run_one(self) -> None:
        """One instruction with the careful bookkeeping (tracing, single-step trap)."""
        cpu = self.cpu
        eip, ring = cpu.eip, cpu.cpl
        tf = cpu.ef & 0x100
        f = self._icache.get(eip)
        try:
            if f is None:
                f = self._compile(eip)
            try:
                f()
            except Resched:
                pass
        except Fault as ex:
            self.take_exception(ex)
            return
        self.steps += 1
        self.clock += 1
        tr = self.trace
        if tr.want_insns:
            tr.add(InstructionRetired(self.clock, address=eip, text=f.__name__, ring=ring,
                                      vm=self.vm_index))
        if tf:  # single-step trap (#DB) after the instruction, through the exception rules
            self.take_exception(Fault(1, detail="single-step trap (TF)"))

    # ---- snapshots -------------------------------------------------------------------------
    def snapshot_pages(self) -> tuple:
        """Physical memory as a tuple of 4 KiB ``bytes`` pages, copy-on-write: a page equal to
        the one of the previous snapshot (or of the snapshot last restored) is that same
        object, so only the pages written since cost memory.

        Changes are found by comparing pages when the snapshot is taken, not by tracking
        writes: ``bytearray.startswith(page, offset)`` compares in place (memcmp, no copy), and
        the whole 4 MiB compare costs about what ``bytes(mem)`` did (0.8 ms for 6 MiB, against
        0.9 ms for the copy; benchmarks/bench_snapshots.py), while the run loop and every
        writer of memory (the accessors, the VMM's direct writes, DMA) do no extra work."""
        mem = self.mem
        prev = self._snap_pages
        same = mem.startswith
        P = PAGE_SIZE
        if prev is None:
            pages = tuple(_share_uniform(bytes(mem[o:o + P])) for o in range(0, len(mem), P))
        else:
            pages = tuple(p if same(p, o) else _share_uniform(bytes(mem[o:o + P]))
                          for p, o in zip(prev, range(0, len(mem), P)))
        self._snap_pages = pages
        return pages

    def snapshot(self) -> Snapshot:
        """The whole machine state: CPU, memory (pages shared with the previous snapshot, see
        :meth:`snapshot_pages`), devices, clocks."""
        return Snapshot(self.id, self.memory_size, self.cpu.state(), self.snapshot_pages(),
                        self.dev.copy(), self.clock,
                        {"steps": self.steps, "stopped": self.stopped,
                         "inhibit": self.irq_inhibit_until, "trace": self.trace.state(),
                         "tlb": self.tlb_state(),
                         "counters": (self.tlb_misses, self.walk_refs,
                                      self.exceptions_delivered)})

    def restore(self, snap: Snapshot) -> None:
        """Put the machine back exactly as it was when ``snap`` was taken."""
        if not isinstance(snap, Snapshot):
            raise VmkitError(f"restore() takes a Snapshot from this machine's snapshot(), got "
                             f"{type(snap).__name__}")
        if snap.machine_id != self.id:
            raise VmkitError(f"snapshot belongs to machine #{snap.machine_id}, not to this "
                             f"machine (#{self.id})")
        mem, P = self.mem, PAGE_SIZE
        same = mem.startswith
        code = self.code_pages
        for o, p in zip(range(0, len(mem), P), snap.pages):
            if not same(p, o):
                mem[o:o + P] = p
                if o // P in code:
                    self.drop_page_code(o // P)     # the compiled code of other bytes
        self._snap_pages = snap.pages   # memory is these pages again: the next snapshot shares
        self.cpu.set_state(snap.cpu)
        self.dev = snap.devices.copy()
        self.clock = snap.clock
        self.steps = snap.extra["steps"]
        self.stopped = snap.extra["stopped"]
        self.irq_inhibit_until = snap.extra["inhibit"]
        self.trace.set_state(snap.extra["trace"])
        self.set_tlb_state(snap.extra["tlb"])
        self.tlb_misses, self.walk_refs, self.exceptions_delivered = snap.extra["counters"]
        # the TLB is the snapshot's: no live code; the kept code of unchanged bytes stays
        self.drop_live_code()
        self.mode_changed()


# keep the stop reasons listed in one place for docs and tests
RunResult.REASONS = _STOP_REASONS
_ = Interrupt
