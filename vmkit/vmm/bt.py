"""Binary translation: the guest kernel never runs on the real CPU as written (VMware's design,
Adams & Agesen, ASPLOS 2006; translation blocks after QEMU, Bellard, USENIX ATC 2005).

Everything :class:`~vmkit.vmm.te.TrapAndEmulate` builds is reused: the host machine with one
memory slice per VM, the virtual CPU, the shadow GDT, the shadow page tables (a virtual TLB),
reflection through the guest's IDT, the virtual devices, several VMs with world switches. Only
the *policy* for guest kernel code changes:

* **User code (virtual CPL 3) runs directly** on the host machine's interpreter, as under
  trap-and-emulate: it is innocuous by construction (anything sensitive traps at CPL 3).
* **Kernel code (virtual CPL 0) is run by the monitor**, deprivileged (the real CPU stays in
  ring 1, on the shadow tables), one *translation unit* at a time: a straight run of at most
  :data:`MAX_BLOCK` instructions that ends at the first control transfer, callout or page end.

A unit is first **interpreted** (every instruction fetched through the guest's page tables,
decoded and dispatched through the semantics registry, each time; sensitive ones emulated on the
virtual CPU with the trap-and-emulate handlers), and its executions are counted. When a unit
has run ``threshold`` times it is **translated**: the per-instruction Python bodies that the
machine itself compiles (``semantics.source_of``, the identical translation of innocuous
instructions, "IDENT" in A&A) are concatenated, with inline emulation for the cheap sensitive
ones and a **callout** for the rest, into **one Python function per block**, so a block runs
with one call and no per-instruction dispatch. Translations live in a bounded **translation
cache** keyed by (VM, guest-physical address of the block start, its linear address, virtual
CPL), with an eviction policy (:class:`FlushWhenFull` as QEMU, :class:`LRU`, :class:`FIFO`).
A block's exits to a successor in the same page are **chained**: the successor's translation
is stored in the block and run without a cache lookup (for an indirect exit, ``ret`` or
``jmp reg``, the last target seen, as an inline indirect-branch cache).

How each kind of instruction is translated
------------------------------------------
=====================================  =================================================
innocuous (add, mov, jcc, push ...)    IDENT: the machine's own compiled body
``cli``                                inline: ``vcpu.IF = 0``
``sti``                                inline: ``vcpu.IF = 1`` (+ the STI shadow); ends the unit
``pushfd``                             inline: push the *virtual* EFLAGS (virtual IF and IOPL)
``popfd``                              inline: pop into the virtual EFLAGS as ring 0 would; ends
``push cs/ss``, ``mov r, cs/ss``       inline: the selector the guest believes (RPL 0)
``mov r, crN``                         inline: the virtual control register
``in out hlt lgdt lidt lldt ltr``      callout: the trap-and-emulate handler, without the trap
``lmsw clts invlpg``, ``mov crN, r``   callout
``iretd retf lcall int int3 into``     callout (reflection through the guest IDT for int)
``mov ss``, ``pop ss``, ``rdtsc``      callout
``sgdt sidt sldt str smsw``            callout: the *virtual* GDTR/IDTR/LDTR/TR/CR0
``lar lsl verr verw``                  callout: the guest's own descriptors, virtual CPL
=====================================  =================================================

So the ``nonvirt-*`` guests, which go wrong under trap-and-emulate on purpose, print what they
print natively: the binary translator sees every sensitive instruction before it runs.

Callouts sit at the end of their unit: the block function returns, the monitor brings guest time
up to date and calls the handler (the handler registry is :attr:`BinaryTranslation.emulate`, the
trap-and-emulate table plus the translator's own entries), then continues with the next block.

Guest time and interrupts
-------------------------
Instructions retired inside translated blocks are host instructions (``native`` cycles: A&A,
translated code runs at near native speed); interpreted instructions cost ``interpret`` each,
callouts ``callout``, and each translated instruction ``translate`` once. Guest time advances by
one per guest instruction whichever way it ran, and each block function takes the remaining
guest-time budget and leaves early when it runs out (QEMU's ``-icount``), so the timer interrupt arrives at the same guest instruction as under
:class:`~vmkit.vmm.base.Native`. An exit in the middle of a block is resumed instruction by
instruction from the block's own per-instruction code, so no half-block translations are made.

Self-modifying code
-------------------
Every byte a translation came from is watched (``Machine.code_watch``): a store into it, by the
guest or by the VMM, invalidates the translation (``tc_invalidations``, a
:class:`~vmkit.trace.TcInvalidation` event) and resets its execution count. A block that writes
into itself stops right after the store.

Adaptive translation
--------------------
The shadow page tables are a virtual TLB (see ``te.py``): after every guest CR3 load the first
access to each page is a hidden page fault, a trap into the VMM. An instruction of translated
code that keeps trapping this way (``adapt_after`` hidden faults; ``popad`` on the kernel stack
of the process just switched to is the classic case in ``ctxswitch``) is **retranslated into a
callout** that runs it with the VMM's software MMU (the guest's page tables, accessed and dirty
bits set as natively), without the trap (``adaptations``; A&A §3.3 adapt page-table writes the
same way).

Static translation, the contrast
--------------------------------
``BinaryTranslation(image, static=True)`` also translates the kernel image *ahead of time* by a
linear sweep of its text section from its first byte (as ``objdump -d`` disassembles), cutting
blocks at the control transfers and at the direct branch targets it finds. It breaks where the
sweep cannot know what it sees: the kernel keeps ``syscall_table`` (data) in ``.text``, so the
sweep decodes the table as instructions, and the instructions after it are decoded out of
alignment; the entries are only reached through ``jmp [syscall_table + eax*4]``, a computed
jump the sweep cannot follow; and ``selfmod`` rewrites code after it was translated. The monitor
does not stop there: every lookup that finds no static translation falls back to dynamic
translation and counts ``static_misses`` (``static_miss_log`` says where and why), so the guest
still runs right, and the counters show what a purely static translator would have got wrong.
"""

from __future__ import annotations

import copy
import re
import types
from collections import Counter, OrderedDict

from vmkit.errors import UnsupportedInstruction, VmkitError
from vmkit.isa import semantics as sem
from vmkit.isa.decode import DECODER, Imm, Insn, Mem, Reg
from vmkit.isa.faults import Fault, Resched
from vmkit.isa.ops_control import far_indirect
from vmkit.isa.ops_logic import CC
from vmkit.isa.ops_stack import POPF_CPL0, push
from vmkit.machine import rules
from vmkit.machine.cpu import MASK32
from vmkit.machine.mmu import Sync
from vmkit.machine.machine import RunResult
from vmkit.trace import Emulation, InstructionRetired, TcInvalidation, TcLookup, Translation
from vmkit.vmm.base import MonitorSnapshot
from vmkit.vmm.te import _DEFAULT_HANDLERS, TEVM, CannotEmulate, TrapAndEmulate, _VMStop

__all__ = ["BinaryTranslation", "Block", "EvictionPolicy", "FlushWhenFull", "LRU", "FIFO",
           "DEFAULT_THRESHOLD", "DEFAULT_TC_SIZE", "MAX_BLOCK"]

DEFAULT_THRESHOLD = 3
"""Executions of a unit before it is translated (``threshold=1`` translates on first execution,
as VMware's translator and QEMU do; Dynamo (Bala et al., PLDI 2000) waited for 50 executions,
and Transmeta's CMS also interprets first, because their translators optimize and are expensive).
3 was the break-even of the kit's earlier estimate of 150 cycles per instruction translated
(150 / (50 - 1) = 3 executions, interpreting at 50); with the figure Adams & Agesen measured,
2300 cycles per instruction (ASPLOS 2006 §6.3, preset "p4-2006"), the break-even is
2300 / 49 = about 47 executions. Interpreting until the break-even and translating after is the
ski-rental rule (never worse than twice the best choice made with hindsight): the contrast to
VMware's translate-on-first-execution, which does not interpret at all (A&A §3.2). The default
stays 3 for now (the guests' golden records use it)."""

DEFAULT_TC_SIZE = 1024
"""Translated blocks the cache holds (counted in blocks, as QEMU bounds its number of
translation blocks; a block is at most 12 instructions). The kit's whole kernel is about 200
translation units (``BinaryTranslation(img, static=True).stats["static_translations"]``) and a
guest runs 30 to 120 of them, so 1024 blocks hold the kernel of every guest with room for the
extra units that adaptation and several VMs create: no default workload evicts, as a real
translation cache is sized to hold the kernel's working set. The eviction tests set it tiny."""

MAX_BLOCK = 12
"""Longest translation unit: A&A's units end at a control transfer or after at most 12
instructions (their TU limit)."""

IF, IOPL, TF = 0x200, 0x3000, 0x100

#: mnemonics that transfer control: a unit ends after each
CONTROL = frozenset({"jmp", "call", "ret", "loop", "loope", "loopne", "jecxz", "jcxz", "ljmp",
                     "lcall", "retf", "int", "int3", "into", "iretd", "iret", "hlt"}
                    | {f"j{cc}" for cc in CC})
STRING = frozenset({f"{op}{s}" for op in ("movs", "stos", "lods", "cmps", "scas")
                    for s in "bwd"})
#: sensitive instructions emulated inline in translated code (and by the interpreter)
INLINE = frozenset({"cli", "sti", "pushfd", "pushf", "popfd", "popf"})
#: sensitive instructions that become callouts (handlers in BinaryTranslation.emulate)
CALLOUTS = frozenset({"hlt", "in", "out", "lgdt", "lidt", "lldt", "ltr", "lmsw", "clts",
                      "invlpg", "iretd", "iret", "retf", "rdtsc", "sgdt", "sidt", "sldt", "str",
                      "smsw", "int", "int3", "into", "lar", "lsl", "verr", "verw", "lcall"})
#: callouts the cost model prices as an in-TC sequence (``tc_emulate``): A&A 2006 §6.3, BT
#: "translates the in into a short sequence of instructions that interacts with the virtual
#: chipset model" (216 cycles); §3.3 emulates rdtsc in the translation cache the same way
IN_TC = frozenset({"in", "out", "rdtsc"})
#: callouts after which translated code goes straight on: they change nothing the monitor's
#: run loop looks at (virtual IF, CPL, devices' interrupt lines, timer, halt). Every other
#: callout returns to the run loop, as a trap would.
GO_ON = frozenset({"in", "sgdt", "sidt", "sldt", "str", "smsw", "lar", "lsl", "verr", "verw",
                   "rdtsc", "invlpg", "lidt", "ltr", "lldt"})
#: direct control transfers (the static sweep follows their targets)
_DIRECT = frozenset({"jmp", "call", "loop", "loope", "loopne", "jecxz", "jcxz"})

_BARE_RETURN = re.compile(r"\breturn$")


# =================================================================================================
# Eviction policies
# =================================================================================================
class EvictionPolicy:
    """What the translation cache tells its eviction policy and asks it.

    The cache calls ``inserted(key)`` for every new translation, ``used(key)`` for every lookup
    that hits (chained executions skip the lookup, so they are not seen, as a hardware cache
    would not see them either), ``removed(key)`` when a translation is invalidated, and, when it
    is full, ``victims()``: the keys to evict, oldest first, or ``None`` to flush the whole
    cache. ``clear()`` forgets everything. Each monitor works on its own copy of the policy
    object it is given (``vm.policy``)."""

    name = "policy"

    def inserted(self, key) -> None:
        pass

    def used(self, key) -> None:
        pass

    def removed(self, key) -> None:
        pass

    def victims(self) -> list | None:
        return None

    def clear(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FlushWhenFull(EvictionPolicy):
    """Flush the whole cache when it is full (QEMU's ``tb_flush``): no bookkeeping at all, and
    the working set is retranslated at once. The default."""

    name = "flush"


class _Ordered(EvictionPolicy):
    def __init__(self):
        self._order: OrderedDict = OrderedDict()

    def inserted(self, key) -> None:
        self._order[key] = None

    def removed(self, key) -> None:
        self._order.pop(key, None)

    def victims(self) -> list | None:
        return [next(iter(self._order))] if self._order else None

    def clear(self) -> None:
        self._order.clear()


class FIFO(_Ordered):
    """Evict the oldest translation (insertion order; a hit changes nothing)."""

    name = "fifo"


class LRU(_Ordered):
    """Evict the translation whose last lookup hit is the oldest."""

    name = "lru"

    def used(self, key) -> None:
        self._order.move_to_end(key)


# =================================================================================================
# Translated blocks
# =================================================================================================
class Block:
    """One translation: ``fn(budget)`` runs it and returns how many instructions retired.

    ``insns`` are the decoded instructions, ``kinds`` how each was translated ("ident",
    "inline", "callout", "adapted"), ``source`` the Python source of ``fn`` (read it!),
    ``tail`` the callout at its end if any (run by the monitor after ``fn`` returns),
    ``links`` the chained successors by address, ``static`` whether it was made ahead of time,
    ``hits`` how often a cache lookup found it and ``chained_in`` how often a chained exit ran
    straight into it (for pictures of the cache: :func:`vmkit.viz.tcache.tc_diagram`)."""

    __slots__ = ("key", "vm", "eip", "gpa", "insns", "kinds", "n", "nbody", "fn", "source",
                 "tail", "go_on", "resched", "links", "valid", "static", "fns", "exact",
                 "index", "hbytes", "end", "hits", "chained_in", "indirect")

    def __init__(self, key, vm, eip, gpa, insns, kinds):
        self.key, self.vm, self.eip, self.gpa = key, vm, eip, gpa
        self.insns, self.kinds = insns, kinds
        self.n = len(insns)
        self.index = {i.address: k for k, i in enumerate(insns)}
        self.links: dict = {}
        self.valid = True
        self.static = False
        self.fns: list = [None] * self.n
        self.tail = None
        self.go_on = True
        self.exact = False      # reads guest time (sti): entered only after a lookup
        self.resched = False
        self.nbody = self.n
        self.fn = None
        self.source = ""
        self.hbytes: list = []
        self.end = insns[-1].next
        self.hits = 0
        self.chained_in = 0
        # ends with an indirect transfer (ret, jmp/call through a register or memory): its
        # target is only known at run time
        last = insns[-1]
        self.indirect = last.mnemonic == "ret" or (
            last.mnemonic in ("jmp", "call") and last.operands
            and type(last.operands[0]).__name__ != "Imm")

    @property
    def address(self) -> int:
        return self.eip

    def listing(self) -> str:
        """The guest instructions, with how each was translated."""
        return "\n".join(f"{i.address:#010x}  {i.text:<32} {k}"
                         for i, k in zip(self.insns, self.kinds))

    def __repr__(self) -> str:
        state = "" if self.valid else " invalid"
        return (f"<Block {self.eip:#010x} {self.n} instructions{' static' if self.static else ''}"
                f"{state}>")


# =================================================================================================
# Handlers the translator adds to the trap-and-emulate table
# =================================================================================================
_BT_HANDLERS: dict = {}


def _bt_handles(*mnemonics: str):
    def deco(fn):
        for m in mnemonics:
            _BT_HANDLERS[m] = fn
        return fn
    return deco


@_bt_handles("int", "int3", "into")
def emulate_int(vm: TEVM, insn: Insn) -> None:
    """INT n / INT3 / INTO (SDM Vol. 2A) in the kernel: delivered through the guest's IDT by
    the VMM, as the hardware would (gate DPL against the virtual CPL, the frame with the
    virtual IF and the believed CS)."""
    mn = insn.mnemonic
    if mn == "into":
        if not vm.vcpu.eflags & 0x800:
            return
        vector = 4
    else:
        vector = 3 if mn == "int3" else insn.operands[0].value
    vm.monitor._reflect(vm, vector, None, insn.next, "int" if mn == "int" else mn)


def _visible(vm: TEVM, selector: int):
    """The guest's descriptor if visible at max(virtual CPL, RPL) (SDM LAR), else None."""
    return rules.visible_descriptor(vm, vm.vcpu.cpl, selector)


_QUERIES = rules.DESCRIPTOR_QUERIES


@_bt_handles("lar", "lsl", "verr", "verw")
def emulate_descriptor_query(vm: TEVM, insn: Insn) -> None:
    """LAR/LSL/VERR/VERW (SDM Vol. 2A/2B) on the guest's own descriptors at the virtual CPL:
    the kernel's data segment shows DPL 0, as natively (the shadow GDT has DPL 1)."""
    ops = insn.operands
    dst, src = ops if len(ops) == 2 else (None, ops[0])
    v = _QUERIES[insn.mnemonic](_visible(vm, vm.value(src, 2) & 0xFFFF))
    cpu = vm.real_cpu
    flags = cpu.eflags
    if v is None:
        cpu.ef = flags & ~0x40
        return
    cpu.ef = flags | 0x40
    if dst is not None:
        vm.store(dst, v & (0xFFFF if dst.size == 2 else MASK32))


@_bt_handles("lcall")
def emulate_lcall(vm: TEVM, insn: Insn) -> None:
    """CALL ptr16:32 / CALL m16:32 (SDM Vol. 2A) to a code segment of the same privilege: the
    pushed CS is the one the guest believes (RPL 0), not the real ring-1 selector."""
    vc = vm.vcpu
    ops = insn.operands
    if len(ops) == 2:
        sel, off = ops[0].value, ops[1].value
    else:
        a = vm.address(ops[0])
        off = vm.read(a, 4)
        sel = vm.read((a + 4) & MASK32, 2)
    d = vm.descriptor(sel)
    if d.system:
        raise Fault(13, sel & 0xFFFC, detail="far call through a gate is not in the subset")
    if not d.conforming and (sel & 3) > vc.cpl:
        raise Fault(13, sel & 0xFFFC, detail="far call with RPL > CPL")
    d = vm.check_code(sel, vc.cpl)
    vm.set_accessed(sel, d)
    esp = vc.esp
    vm.write((esp - 4) & MASK32, 4, vc.cs)
    vm.write((esp - 8) & MASK32, 4, insn.next)
    vc.esp = esp - 8
    vm.monitor._load_real_cs(vm, sel, vc.cpl, "far call", d)
    vc.eip = off


# =================================================================================================
# The monitor
# =================================================================================================
class BinaryTranslation(TrapAndEmulate):
    """Binary translation of the guest kernel; user code runs directly (see the module text).

    ``BinaryTranslation(img, ..., threshold=DEFAULT_THRESHOLD, tc_size=DEFAULT_TC_SIZE,
    policy=FlushWhenFull(), static=False, adapt_after=4, slice=..., costs=...)``:

    * ``threshold``: executions of a unit before it is translated (1 = on first execution;
      a huge number = interpret only);
    * ``tc_size``: translated blocks the cache holds; ``policy`` decides what goes when it is
      full (an :class:`EvictionPolicy`: :class:`FlushWhenFull`, :class:`LRU`, :class:`FIFO`);
    * ``static``: also translate the kernel's text ahead of time by a linear sweep (a contrast:
      see the module text and ``static_miss_log``);
    * ``adapt_after``: hidden page faults of one translated instruction before it is
      retranslated as a callout (0 turns adaptation off).
    * ``scheduler``, ``weights``, ``quantum``, ``machine_timer``: several VMs scheduled on
      machine time, as for ``TrapAndEmulate`` (:mod:`vmkit.vmm.sched`).

    ``emulate`` is the handler table for callouts and for sensitive instructions met by the
    interpreter (trap-and-emulate's, plus ``int``, ``lar`` ``lsl`` ``verr`` ``verw`` and
    ``lcall``); replacing an entry changes only this monitor. ``stats`` adds ``tc_lookups``,
    ``tc_hits``, ``tc_misses``, ``translations``, ``translated_instructions``,
    ``tc_invalidations``, ``tc_evictions``, ``tc_flushes``, ``tc_blocks``, ``interpreted``,
    ``chained``, ``callouts``, ``adaptations``, ``static_translations``, ``static_misses``.
    """

    name = "bt"
    title = "binary translation (kernel translated, user code direct)"
    emulate: dict = {**_DEFAULT_HANDLERS, **_BT_HANDLERS}
    adapt_after = 4

    def __init__(self, *images, costs=None, trace=None, slice: int | None = None,
                 threshold: int = DEFAULT_THRESHOLD, tc_size: int = DEFAULT_TC_SIZE,
                 policy: EvictionPolicy | None = None, static: bool = False,
                 adapt_after: int | None = None, scheduler=None, weights=None, quantum=None,
                 machine_timer: bool = False):
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
            raise VmkitError(f"threshold must be a positive number of executions, got "
                             f"{threshold!r}")
        if not isinstance(tc_size, int) or isinstance(tc_size, bool) or tc_size < 1:
            raise VmkitError(f"tc_size must be a positive number of blocks, got {tc_size!r}")
        if policy is None:
            policy = FlushWhenFull()
        elif isinstance(policy, type) and issubclass(policy, EvictionPolicy):
            policy = policy()
        if not isinstance(policy, EvictionPolicy):
            raise VmkitError(f"policy must be an EvictionPolicy (FlushWhenFull(), LRU(), "
                             f"FIFO()), got {type(policy).__name__}")
        policy = copy.deepcopy(policy)      # its own state: one object may serve many monitors
        if adapt_after is not None:
            if not isinstance(adapt_after, int) or isinstance(adapt_after, bool) \
                    or adapt_after < 0:
                raise VmkitError(f"adapt_after must be a non-negative number of traps, got "
                                 f"{adapt_after!r}")
            self.adapt_after = adapt_after
        self.threshold = threshold
        self.tc_size = tc_size
        self.policy = policy
        policy.clear()
        self.static = bool(static)
        self._reset_tc_state()
        self._zero_counters()
        kw = {} if slice is None else {"slice": slice}
        kw.update(scheduler=scheduler, weights=weights, quantum=quantum,
                  machine_timer=machine_timer)
        super().__init__(*images, costs=costs, trace=trace, **kw)

    def _reset_tc_state(self) -> None:
        self._tc: dict = {}               # key -> Block
        self._dynamic = 0                 # blocks subject to the cache size (not static)
        self._counts: dict = {}           # key -> executions seen by the interpreter
        self._code_bytes: dict = {}       # host-physical byte -> [Block]
        self._page_refs: Counter = Counter()   # host-physical page -> watched bytes
        self._traps: Counter = Counter()  # instruction key -> hidden faults from translated code
        self._adapted: set = set()        # instruction keys translated as MMU callouts
        self._soft: dict = {}             # adapted instruction -> its software-MMU function
        self._inline_code: dict = {}
        self._stale = [False]
        self._resume = None
        self._link_from: Block | None = None

    def _zero_counters(self) -> None:
        self.tc_lookups = self.tc_hits = self.tc_misses = 0
        self.translations = self.translated_instructions = 0
        self.tc_invalidations = self.tc_evictions = self.tc_flushes = 0
        self.interpreted = self.chained = self.callouts = self.adaptations = 0
        self.indirect_lookups = 0
        self.static_translations = self.static_misses = 0
        self._engine_steps = 0            # guest instructions the VMM ran (interpreted, callouts)
        self.static_miss_log: Counter = Counter()
        self.static_sweep: list = []       # per VM: what the linear sweep decoded
        self._text_ranges: dict = {}
        self._sweep_starts: dict = {}
        self._static_dropped: dict = {}     # VM -> [(start, end, why)] of dropped static blocks

    def _setup(self) -> None:
        super()._setup()
        g = self._host._g
        g["_bt_stale"] = self._stale
        for vm in self.vms:
            g[f"_bt_vc{vm.index}"] = vm.vcpu
            g[f"_bt_vm{vm.index}"] = vm
        if self.static:
            for vm in self.vms:
                self._static_translate(vm)

    # ---- the policy: who runs the guest ----------------------------------------------------
    def _run_guest(self, vm: TEVM, budget: int, until, single: bool) -> RunResult:
        """User code runs directly, as under trap-and-emulate; kernel code (virtual CPL 0)
        runs in the translator."""
        if vm.vcpu.cpl != 0:
            return super()._run_guest(vm, budget, until, single)
        return self._run_kernel(vm, budget, until, single)

    def _slice_clock(self) -> int:
        """Slices count host instructions plus the guest instructions the VMM ran itself."""
        return self._host.steps + self._engine_steps

    def _load_real_cs(self, vm: TEVM, selector: int, vring: int, cause: str, d=None) -> None:
        """As trap-and-emulate, and when the guest enters its kernel (a reflected interrupt,
        exception or system call) the real CPU stops running guest code directly: the
        translator takes over."""
        was = vm.vcpu.cpl
        super()._load_real_cs(vm, selector, vring, cause, d)
        if vring == 0 and was != 0:
            self._host.exit_request = True

    def _fetch_insn(self, vm: TEVM, eip: int) -> Insn | None:
        """Kernel code is never fetched by the real CPU under BT: read it through the guest's
        page tables."""
        if vm.vcpu.cpl == 0:
            return self._fetch(vm, eip)
        return super()._fetch_insn(vm, eip)

    def _text_at_eip(self, vm: TEVM | None = None) -> str:
        if vm is None or vm.current:
            v = vm or self.vms[self.current]
            if v.vcpu.cpl == 0:
                return self._guest_text(v, self._host.cpu.eip)
        return super()._text_at_eip(vm)

    def _guest_text(self, vm: TEVM, eip: int) -> str:
        for n in (15, 8, 4, 2, 1):
            raw = vm.peek(eip, n)
            if raw is not None:
                insn = DECODER.decode(eip, raw)
                return insn.text if insn is not None else ""
        return ""

    # ---- fetching kernel code through the guest's page tables --------------------------------
    def _gbytes(self, vm: TEVM, gpa: int, n: int) -> bytes:
        if gpa + n <= vm.memory_size:
            a = vm.slice_base + gpa
            return bytes(self._host.mem[a:a + n])
        keep = max(0, vm.memory_size - gpa)
        a = vm.slice_base + gpa
        return bytes(self._host.mem[a:a + keep]) + b"\xFF" * (n - keep)

    def _fetch(self, vm: TEVM, eip: int) -> Insn | None:
        """Decode the instruction at guest-linear ``eip`` (the guest's #PF if its page is not
        mapped; a second page is needed only if the instruction reaches into it)."""
        gpa = vm.translate(eip)
        avail = 0x1000 - (eip & 0xFFF)
        window = self._gbytes(vm, gpa, min(15, avail))
        fault = None
        if avail < 15:
            try:
                window += self._gbytes(vm, vm.translate((eip + avail) & MASK32), 15 - avail)
            except Fault as f:
                fault = f
        insn = DECODER.decode(eip, window)
        if fault is not None and (insn is None or insn.size > avail):
            raise fault
        return insn

    # ---- classification: how an instruction is translated -------------------------------------
    def _classify(self, insn: Insn):
        """-> (kind, handler): "ident" (innocuous), "inline" (sensitive, emulated in the
        translated code) or "callout" (sensitive, a call into the VMM's handler)."""
        mn = insn.mnemonic
        if mn in INLINE:
            return "inline", None
        ops = insn.operands
        if mn == "mov":
            d, s = ops
            if _is(s, "cr") and _is(d, "gpr") and s.index in (0, 2, 3, 4):
                return "inline", None       # a read of the virtual control register
            if _is(d, "cr") or _is(s, "cr") or (_is(d, "seg") and d.index == 2):
                return "callout", self.emulate.get("mov")
            if _is(s, "seg") and s.index in (1, 2):
                return "inline", None
            return "ident", None
        if mn == "push":
            if _is(ops[0], "seg") and ops[0].index in (1, 2):
                return "inline", None
            return "ident", None
        if mn == "pop":
            if _is(ops[0], "seg") and ops[0].index == 2:
                return "callout", self.emulate.get("pop")
            return "ident", None
        if mn == "call" and far_indirect(insn):
            return "callout", self.emulate.get("lcall")
        if mn in CALLOUTS:
            return "callout", self.emulate.get(mn)
        return "ident", None

    @staticmethod
    def _ends_unit(insn: Insn, kind: str) -> bool:
        """A unit ends after a control transfer, a callout, ``sti``/``popfd`` (interrupts may
        come right after) or a ``rep`` string instruction (it re-executes itself)."""
        mn = insn.mnemonic
        return (kind == "callout" or mn in CONTROL or mn in ("sti", "popfd", "popf")
                or bool(insn.rep and mn.split()[-1] in STRING))

    # ---- the engine --------------------------------------------------------------------------
    def _run_kernel(self, vm: TEVM, budget: int, until, single: bool) -> RunResult:
        """Run the guest kernel in the translator until the VMM's run loop is needed: the
        budget or the guest-time deadline is reached, the guest leaves its kernel, halts, or
        something the loop must look at changed."""
        m = self._host
        cpu, vc, tr = m.cpu, vm.vcpu, self.trace
        deadline = m.dev.next_tick
        limit = budget if deadline is None else min(budget, deadline - m.clock)
        careful = bool(single or until or m.breakpoints or tr.wants_instructions()
                       or cpu.ef & TF)
        g0 = vm.steps
        reason = "vmm"
        first = True
        stuck = 0
        try:
            while True:
                done = vm.steps - g0
                if done >= limit:
                    reason = "max_steps"
                    break
                if m.exit_request:
                    m.exit_request = False
                    break
                if (vc.cpl != 0 or vc.halted or vm.pending is not None
                        or vm.devices.poweroff_code is not None):
                    break
                before = vm.steps
                if careful:
                    eip = cpu.eip
                    if not first and eip in m.breakpoints:
                        reason = "breakpoint"
                        break
                    first = False
                    tf = cpu.ef & TF
                    text = self._guest_text(vm, eip) if tr.wants_instructions() else ""
                    self._step(vm, 1)
                    if vm.steps > before:
                        if text:
                            tr.add(InstructionRetired(m.clock, address=eip, text=text,
                                                      ring=cpu.cpl, vm=vm.index))
                        if tf and vc.cpl == 0 and not m.exit_request:
                            self._on_exception(1, Fault(1, detail="single-step trap (TF)"),
                                               "exception", None)
                    if until is not None and until(m):
                        reason = "until"
                        break
                else:
                    self._step(vm, limit - done)
                if vm.steps == before:
                    stuck += 1
                    if stuck > 1000:
                        raise _VMStop("crash", f"the translator made no progress at "
                                               f"{cpu.eip:#010x}")
                else:
                    stuck = 0
        except _VMStop as s:
            self._stop_soon(vm, s.reason, s.detail)
            m.exit_request = False
        except UnsupportedInstruction as ui:
            return RunResult("crash", vm.steps - g0, str(ui), cpu.eip)
        finally:
            m._in_burst = False
        return RunResult(reason, vm.steps - g0, "", cpu.eip)

    def _step(self, vm: TEVM, left: int) -> None:
        """One translation-cache lookup and what follows: a translated chain, or one unit
        interpreted (translated first if it has now run ``threshold`` times)."""
        cpu = self._host.cpu
        eip = cpu.eip
        link_from, self._link_from = self._link_from, None
        try:
            gpa = vm.translate(eip)
        except Fault as f:          # the guest's own #PF on an instruction fetch
            self._on_exception(f.vector, f, "exception", None)
            return
        key = (vm.index, gpa, eip, 0)
        r = self._resume
        if r is not None:
            self._resume = None
            if r[0] == key and r[1].valid:
                self._finish(vm, r[1], r[2], left)
                return
        self.tc_lookups += 1
        self.events["tc_lookup"] += 1
        tr = self.trace
        watched = "tc_lookup" in tr._subs or "*" in tr._subs
        if not watched:
            tr.counts["tc_lookup"] += 1   # the event object only for someone watching (as TLB
        blk = self._tc.get(key)           # misses): a lookup is too frequent to record always
        if blk is None:
            self.tc_misses += 1
            if watched:
                tr.add(_lookup_event(vm, eip, False, self._host.clock))
            if self.static:
                self._static_miss(vm, eip)
            n = self._counts.get(key, 0) + 1
            self._counts[key] = n
            if n >= self.threshold:
                blk = self._translate(vm, eip, gpa, key)
            if blk is None:
                self._interpret(vm, left)
                return
        else:
            self.tc_hits += 1
            blk.hits += 1
            if watched:
                tr.add(_lookup_event(vm, eip, True, self._host.clock))
            if not blk.static:
                self.policy.used(key)
        if (link_from is not None and link_from.valid and link_from.vm == vm.index
                and (link_from.eip ^ eip) >> 12 == 0 and (link_from.gpa ^ gpa) >> 12 == 0
                and not blk.exact):
            link_from.links[eip] = blk     # the successor is in the same page: chain it
        self._run_chain(vm, blk, left)

    def _retire_native(self, vm: TEVM, n: int) -> None:
        m = self._host
        m.steps += n
        m.clock += n
        vm.steps += n

    def _run_chain(self, vm: TEVM, blk: Block, left: int) -> None:
        """Run translated blocks, following chained exits, until the budget is spent or an
        exit needs a lookup or the run loop. Guest time is brought up to date before anything
        that can look at it (a callout, a trap, leaving)."""
        m = self._host
        cpu = m.cpu
        stale = self._stale
        # instructions retired in translated code, counted into guest time when the chain stops
        # or something looks at the time (4-5% faster than per block on bench_bt's hot loop)
        n = 0
        chained = indirect = 0
        m._in_burst = True          # page faults ask for an exact retry (Sync), as in a burst
        try:
            while True:
                try:
                    k = blk.fn(left)
                except (Sync, Fault) as ex:
                    m._in_burst = False
                    i = blk.index[cpu.eip]
                    self._retire_native(vm, n + i)
                    n = 0
                    if isinstance(ex, Sync) or self._trap_tc(vm, ex, blk, i) == "retry":
                        self._finish(vm, blk, i, left - i)
                    return
                n += k
                left -= k
                if k < blk.nbody or stale[0]:
                    # the budget ran out inside the block, or it wrote into translated code
                    # (perhaps its own: then it is gone, and the rest of it is stale)
                    if stale[0]:
                        stale[0] = False
                        if not blk.valid:
                            return
                    if k < blk.nbody:
                        self._resume_at(vm, blk, k)
                    return
                if blk.tail is not None:
                    m._in_burst = False
                    self._retire_native(vm, n)
                    n = 0
                    if left <= 0:
                        self._resume_at(vm, blk, k)
                        return
                    if not self._tail(vm, blk):
                        return
                    left -= 1
                    m._in_burst = True
                if blk.resched:     # IF, CPL or a segment changed: the run loop looks again
                    m.exit_request = True
                    return
                if left <= 0:
                    return
                nxt = blk.links.get(cpu.eip)
                if nxt is None or not nxt.valid:
                    self._link_from = blk
                    return
                if blk.indirect:
                    # Python follows the last target seen for free, but translated code has to
                    # look an indirect target up in the translation cache every time (Adams &
                    # Agesen 2006, §3: indirect control flow, ret included, needs a lookup):
                    # priced as one tc_lookup
                    indirect += 1
                chained += 1
                nxt.chained_in += 1
                blk = nxt
        finally:
            m._in_burst = False
            if n:
                self._retire_native(vm, n)
            self.chained += chained
            if indirect:
                self.indirect_lookups += indirect
                self.events["tc_lookup"] += indirect

    def _resume_at(self, vm: TEVM, blk: Block, i: int) -> None:
        a = blk.insns[i].address
        self._resume = ((vm.index, blk.gpa + (a - blk.eip), a, 0), blk, i)

    def _finish(self, vm: TEVM, blk: Block, i: int, left: int) -> None:
        """Run the rest of a block from instruction ``i``, one instruction at a time (after an
        exit in its middle): the block's own code, not a new translation."""
        m = self._host
        cpu = m.cpu
        retries = 0
        while i < blk.nbody:
            if left <= 0:
                self._resume_at(vm, blk, i)
                return
            fn = self._insn_fn(blk, i)
            try:
                fn()
            except Resched:
                self._retire_native(vm, 1)
                m.exit_request = True
                return
            except Fault as f:
                r = self._trap_tc(vm, f, blk, i)
                retries += 1
                if (r == "retry" and retries < 8 and not m.exit_request
                        and cpu.eip == blk.insns[i].address):
                    continue
                return
            self._retire_native(vm, 1)
            i += 1
            left -= 1
            if self._stale[0]:
                self._stale[0] = False
                if not blk.valid:
                    return
            if m.exit_request:
                if i < blk.nbody or blk.tail is not None:
                    self._resume_at(vm, blk, i)
                return
        if blk.tail is not None:
            if left <= 0:
                self._resume_at(vm, blk, i)
                return
            self._tail(vm, blk)
        elif blk.resched:
            m.exit_request = True

    def _tail(self, vm: TEVM, blk: Block) -> bool:
        """The callout that ends a block; True when translated code may go straight on."""
        insn, kind, handler = blk.tail
        if kind == "adapted":
            ok = self._soft_mmu(vm, insn)
        else:
            ok = self._callout(vm, insn, handler, interpreted=False)
        if not ok:
            return False
        if not blk.go_on:
            self._host.exit_request = True
            return False
        return not self._host.exit_request

    # ---- callouts: the VMM emulating an instruction without a trap ---------------------------
    def _callout(self, vm: TEVM, insn: Insn, handler, interpreted: bool) -> bool:
        """Emulate ``insn`` on the virtual CPU with its handler (trap-and-emulate's convention:
        EIP is past the instruction during the call). Returns whether it retired; a Fault it
        raises is the guest's (reflected), CannotEmulate ends the VM."""
        m = self._host
        eip = insn.address
        mn = insn.mnemonic
        if handler is None:
            raise CannotEmulate(f"cannot emulate {insn.text!r} at {eip:#010x}: no handler in "
                                f"emulate[{mn!r}]")
        self._sync_gdt(vm)
        done = self._call_handler(vm, handler, insn, eip)
        if done is None:
            # the handler declines: the instruction runs as translated code would
            return self._run_native_one(vm, insn)
        if not done:
            return False
        m.clock += 1
        vm.steps += 1
        self._engine_steps += 1
        self.emulated[mn] += 1
        if interpreted:
            self.interpreted += 1
            self.events["emulate"] += 1
        else:
            self.callouts += 1
            # priced as VMware's translator ran them: a short sequence inside the translation
            # cache (A&A 2006 §3.3, §6.3), not a call into the VMM
            self.events["tc_emulate" if mn in IN_TC else "callout"] += 1
        self.trace.add(_emulation_event(m.clock, insn, vm.index))
        return True

    def _run_native_one(self, vm: TEVM, insn: Insn) -> bool:
        fn = sem.compile_insn(insn, self._host._g)
        if isinstance(fn, str):
            raise UnsupportedInstruction(insn.mnemonic, insn.address, fn)
        try:
            fn()
        except Resched:
            pass
        except Fault as f:
            self._on_exception(f.vector, f, "exception", None)
            return False
        self._retire_native(vm, 1)
        return True

    def _soft_mmu(self, vm: TEVM, insn: Insn) -> bool:
        """An adapted instruction: run it with the VMM's software MMU (the guest's page tables,
        accessed and dirty bits set as the hardware would), so it cannot take a hidden fault."""
        m = self._host
        k = (vm.index, insn.address, insn.raw)
        fn = self._soft.get(k)
        if fn is None:
            g = dict(m._g)
            for n in (1, 2, 4):
                g[f"rd{n}"] = lambda a, n=n: vm.read(a, n, False)
                g[f"wr{n}"] = lambda a, v, n=n: vm.write(a, n, v, False)
            fn = sem.compile_insn(insn, g)
            if isinstance(fn, str):
                raise UnsupportedInstruction(insn.mnemonic, insn.address, fn)
            self._soft[k] = fn
        try:
            fn()
        except Resched:
            pass
        except Fault as f:          # the guest's own fault: delivered as any exception
            self._on_exception(f.vector, f, "exception", None)
            return False
        m.clock += 1
        vm.steps += 1
        self._engine_steps += 1
        self.callouts += 1
        self.events["callout"] += 1
        return True

    # ---- traps from translated code, and adaptation ------------------------------------------
    def _trap_tc(self, vm: TEVM, f: Fault, blk: Block, i: int) -> str:
        """A fault raised by translated instruction ``i`` (not retired): a trap into the VMM,
        handled as under trap-and-emulate. -> "retry" (a hidden fault: run it again), "done"
        (the VMM emulated it) or "delivered" (reflected into the guest, or the VM stops)."""
        s0, h0 = vm.steps, self.hidden_page_faults
        self._on_exception(f.vector, f, "exception", None)
        if vm.steps != s0:
            return "done"
        if self.hidden_page_faults == h0:
            return "delivered"
        insn = blk.insns[i]
        ik = (vm.index, blk.gpa + (insn.address - blk.eip), insn.address)
        self._traps[ik] += 1
        if blk.kinds[i] != "ident" or not self.adapt_after or insn.rep:
            # a rep string instruction touches a fresh page per chunk: emulating each of its
            # iterations in software would cost more than the traps it takes
            return "retry"
        if ik not in self._adapted and self._traps[ik] >= self.adapt_after:
            self._adapted.add(ik)
            self.adaptations += 1
        if ik in self._adapted:
            # retranslate every block holding it, on their next execution
            h = vm.slice_base + ik[1]
            for b in list(self._code_bytes.get(h, ())):
                if b.valid:
                    self._counts[b.key] = self.threshold
                    self._invalidate(b, f"adapt: {insn.text} keeps trapping", count=False)
        return "retry"

    # ---- the interpreter ------------------------------------------------------------------------
    def _interpret(self, vm: TEVM, left: int) -> None:
        """Interpret one unit: fetch through the guest's page tables, decode and dispatch every
        instruction each time (no per-address state is kept), emulating sensitive ones on the
        virtual CPU."""
        m = self._host
        cpu = m.cpu
        g = m._g
        start = cpu.eip
        count = 0
        while count < left:
            eip = cpu.eip
            try:
                insn = self._fetch(vm, eip)
            except Fault as f:
                self._on_exception(f.vector, f, "exception", None)
                return
            if insn is None or not insn.id:
                self._on_exception(6, Fault(6, detail=f"undefined or unsupported encoding at "
                                                      f"{eip:#010x}"), "exception", None)
                return
            kind, handler = self._classify(insn)
            if kind == "callout":
                if self._callout(vm, insn, handler, interpreted=True) \
                        and insn.mnemonic not in GO_ON:
                    m.exit_request = True
                return
            if kind == "inline":
                fn = types.FunctionType(self._inline_single(vm.index, insn), g, insn.text)
            else:
                fn = sem.compile_insn(insn, g)
                if isinstance(fn, str):
                    raise UnsupportedInstruction(insn.mnemonic, eip, fn)
            try:
                fn()
            except Resched:     # CS, IF or a segment changed: the run loop looks again
                m.exit_request = True
            except Fault as f:
                self._on_exception(f.vector, f, "exception", None)
                return
            m.clock += 1
            vm.steps += 1
            self._engine_steps += 1
            self.interpreted += 1
            self.events["interpret"] += 1
            count += 1
            if self._ends_unit(insn, kind) or count >= MAX_BLOCK:
                if insn.mnemonic in ("sti", "popfd", "popf"):
                    m.exit_request = True
                return
            if (cpu.eip ^ start) >> 12 or cpu.eip != insn.next:
                return

    # ---- the translator -----------------------------------------------------------------------
    def _translate(self, vm: TEVM, eip: int, gpa: int, key, insns: list | None = None,
                   static: bool = False) -> Block | None:
        """Translate the unit at ``eip`` into a block (None when its first instruction cannot
        be translated: it is interpreted then, and gets its #UD or #PF there)."""
        if insns is None:
            insns = []
            a = eip
            while len(insns) < MAX_BLOCK:
                try:
                    insn = self._fetch(vm, a)
                except Fault:
                    break
                if insn is None or not insn.id or (a + insn.size - 1) >> 12 != eip >> 12:
                    break
                insns.append(insn)
                kind = self._kind_at(vm, insn, gpa + (a - eip))
                if self._ends_unit(insn, kind) or kind == "adapted":
                    break
                a = insn.next
                if a >> 12 != eip >> 12:
                    break
        blk = self._build(vm, eip, gpa, key, insns)
        if blk is None:
            return None
        blk.static = static
        if not static:
            if self._dynamic >= self.tc_size:
                self._make_room()
            self._dynamic += 1
            self.policy.inserted(key)
            self.translations += 1
            self.translated_instructions += blk.n
            self.events["translate"] += blk.n
            self.trace.add(Translation(self._host.clock, address=eip, instructions=blk.n,
                                       end=blk.end, vm=vm.index))
        else:
            self.static_translations += 1
        old = self._tc.get(key)
        if old is not None:
            self._invalidate(old, "replaced", count=False)
        self._tc[key] = blk
        self._watch(vm, blk)
        return blk

    def _kind_at(self, vm: TEVM, insn: Insn, gpa: int) -> str:
        if (vm.index, gpa, insn.address) in self._adapted:
            return "adapted"
        return self._classify(insn)[0]

    def _build(self, vm: TEVM, eip: int, gpa: int, key, insns: list) -> Block | None:
        """Generate and compile the block function for ``insns``: the instructions' bodies one
        after the other, each ending with its EIP update as the machine's own code does (so a
        fault leaves EIP on the faulting instruction). Between two instructions: leave when the
        guest-time budget is spent (``if budget <= k: return k``), and after a store, when it
        wrote into translated code. (Storing EIP only where a fault or an exit can see it, as
        QEMU does, saved nothing measurable: an attribute store costs about 10 ns next to
        300 ns for an instruction's semantics.)"""
        vmi = vm.index
        src: list[str] = []
        kinds: list[str] = []
        tail = None
        resched = False
        kept: list[Insn] = []
        for insn in insns:
            kind, handler = self._classify(insn)
            if (vmi, gpa + (insn.address - eip), insn.address) in self._adapted \
                    and kind == "ident":
                kind = "adapted"
            if kind in ("callout", "adapted"):
                kept.append(insn)
                kinds.append(kind)
                tail = (insn, kind, handler)
                break
            try:
                lines, term, rs = self._body(vmi, insn, kind, len(kept))
            except sem.Unsupported:
                break
            text = "\n".join(lines)
            if "Resched" in text:
                break           # cannot run inside a block: interpreted there
            k = len(kept)
            if k:
                src.append(f"    if budget <= {k}: return {k}")
            src.append(f"    # {insn.address:#010x}: {insn.text}  [{kind}]")
            ret = any(_BARE_RETURN.search(ln) for ln in lines)
            if ret:
                lines = [_BARE_RETURN.sub(f"return {k + 1}", ln) for ln in lines]
            src.extend(lines)
            kept.append(insn)
            kinds.append(kind)
            resched = rs
            if term or ret:
                break
            if any(t in text for t in ("wr1(", "wr2(", "wr4(")):
                src.append(f"    if _bt_stale[0]: return {k + 1}")
        if not kept:
            return None
        nbody = len(kept) - (1 if tail else 0)
        blk = Block(key, vmi, eip, gpa, kept, kinds)
        blk.nbody = nbody
        blk.tail = tail
        blk.go_on = tail is None or tail[1] == "adapted" or tail[0].mnemonic in GO_ON
        blk.resched = resched
        # the STI shadow counts from the VM's guest time, which a chain of blocks brings up to
        # date only when it stops: such a block is never chained into
        blk.exact = any(i.mnemonic == "sti" for i in kept)
        # one budget check between two instructions costs about 10 ns next to 300 ns for an
        # instruction: a second copy of the body without them bought nothing measurable
        body = "\n".join(src) if nbody else ""
        blk.source = f"def _tb(budget):\n{body}\n    return {nbody}\n"
        code = compile(blk.source, f"<bt {eip:#010x}>", "exec")
        fcode = next(c for c in code.co_consts if isinstance(c, types.CodeType))
        blk.fn = types.FunctionType(fcode, self._host._g, f"tb_{eip:08x}")
        return blk

    def _body(self, vmi: int, insn: Insn, kind: str, index: int):
        """The statements of one instruction inside a block -> (lines, ends the unit,
        asks the run loop to look again)."""
        if kind == "inline":
            src = self._inline_source(vmi, insn, index)
        else:
            src = sem.source_of(insn)     # IDENT: the machine's own code for the instruction
        lines = src.splitlines()[1:]
        resched = bool(lines) and lines[-1].strip() == "raise Resched()"
        if resched:
            lines = lines[:-1]
        jumps = not lines or lines[-1].strip() != f"C.eip = {insn.next:#x}"
        term = self._ends_unit(insn, kind) or jumps or resched
        if insn.mnemonic in ("sti", "popfd", "popf"):
            resched = True
        return lines, term, resched

    def _inline_source(self, vmi: int, insn: Insn, index: int) -> str:
        """Source of a sensitive instruction emulated inline on the virtual CPU ``_bt_vc{i}``:
        what it does natively in ring 0, on the state the guest believes in. ``index`` is its
        position in its block (the STI shadow counts from the instructions before it)."""
        vc, vmv = f"_bt_vc{vmi}", f"_bt_vm{vmi}"
        e = sem.Emit(insn)
        mn = insn.mnemonic
        iopl = (f"if {vc}.cpl > {vc}.iopl: raise Fault(13, 0, detail='CPL %d > IOPL %d' % "
                f"({vc}.cpl, {vc}.iopl))")
        if mn == "cli":
            e.line(iopl)
            e.line(f"{vc}.IF = 0")
        elif mn == "sti":
            e.line(iopl)
            e.line(f"if not {vc}.IF:")
            with e.indent():
                e.line(f"{vmv}.inhibit_until = {vmv}.steps + {index + 2}")
                e.line(f"{vc}.IF = 1")
        elif mn in ("pushfd", "pushf"):
            size = 2 if mn == "pushf" else 4
            push(e, f"{vc}.eflags & {0xFCFFFF if size == 4 else 0xFFFF:#x}", size)
        elif mn in ("popfd", "popf"):
            size = 2 if mn == "popf" else 4
            e.line(f"v = rd{size}(R[4])")
            e.line(f"R[4] = (R[4] + {size}) & 0xFFFFFFFF")
            e.line(f"F = {vc}.eflags")
            e.line(f"cpl = {vc}.cpl")
            e.line(f"mask = {POPF_CPL0:#x} if cpl == 0 else ({POPF_CPL0 & ~IOPL:#x} if "
                   f"cpl <= {vc}.iopl else {POPF_CPL0 & ~IOPL & ~IF:#x})")
            if size == 2:
                e.line("mask &= 0xFFFF")
            e.line(f"{vc}.eflags = (F & ~mask) | (v & mask)")
        elif mn == "push":
            size = 2 if insn.opsize else 4
            e.line(f"v = {vc}.{'cs' if insn.operands[0].index == 1 else 'ss'}")
            push(e, "v", size)
        elif mn == "mov" and _is(insn.operands[1], "cr"):
            d, s = insn.operands
            e.line(f"if {vc}.cpl: raise Fault(13, 0, detail='privileged instruction at CPL %d' "
                   f"% {vc}.cpl)")
            e.write(d, f"{vc}.cr{s.index}")
        elif mn == "mov":
            d, s = insn.operands
            v = f"{vc}.{'cs' if s.index == 1 else 'ss'}"
            if isinstance(d, Mem):
                e.line(f"wr2({e.addr(d)}, {v})")
            else:
                e.write(d, v)
        else:
            raise AssertionError(f"no inline translation for {insn.text}")
        return e.source()

    def _inline_single(self, vmi: int, insn: Insn):
        """Code object of an inline emulation run on its own (interpreter, block remainders)."""
        k = (vmi, insn.address, insn.raw)
        c = self._inline_code.get(k)
        if c is None:
            src = self._inline_source(vmi, insn, 0)
            mod = compile(src, f"<bt inline {insn.address:#010x}: {insn.text}>", "exec")
            c = next(x for x in mod.co_consts if isinstance(x, types.CodeType))
            self._inline_code[k] = c
        return c

    def _insn_fn(self, blk: Block, i: int):
        fn = blk.fns[i]
        if fn is None:
            insn = blk.insns[i]
            g = self._host._g
            if blk.kinds[i] == "inline":
                fn = types.FunctionType(self._inline_single(blk.vm, insn), g, insn.text)
            else:
                fn = sem.compile_insn(insn, g)
                if isinstance(fn, str):
                    raise UnsupportedInstruction(insn.mnemonic, insn.address, fn)
            blk.fns[i] = fn
        return fn

    # ---- the cache: capacity, self-modifying code ----------------------------------------------
    def _make_room(self) -> None:
        victims = self.policy.victims()
        if victims is None:
            self.flush_tc("cache full")
            return
        for key in victims:
            blk = self._tc.get(key)
            if blk is None:
                self.policy.removed(key)
                continue
            self.tc_evictions += 1
            self._invalidate(blk, f"evicted ({self.policy.name})", count=False)

    def flush_tc(self, reason: str = "flush") -> None:
        """Drop every dynamic translation (QEMU's tb_flush); static ones stay."""
        self.tc_flushes += 1
        for blk in [b for b in self._tc.values() if not b.static]:
            self._invalidate(blk, reason, count=False, event=False)
        self.policy.clear()
        self.trace.add(TcInvalidation(self._host.clock, address=0, reason=f"flush: {reason}",
                                      vm=self.current))

    def _watch(self, vm: TEVM, blk: Block) -> None:
        """Watch every byte the block came from: a write there invalidates it."""
        m = self._host
        base = vm.slice_base + blk.gpa - blk.eip
        for insn in blk.insns:
            for a in range(insn.address, insn.address + insn.size):
                h = base + a
                if not 0 <= h - vm.slice_base < vm.memory_size:
                    continue
                self._code_bytes.setdefault(h, []).append(blk)
                blk.hbytes.append(h)
                p = h >> 12
                if not self._page_refs[p]:
                    m.code_watch[p] = self._on_code_write
                    m.code_pages.setdefault(p, {})
                self._page_refs[p] += 1

    def _unwatch(self, blk: Block) -> None:
        m = self._host
        for h in blk.hbytes:
            lst = self._code_bytes.get(h)
            if lst is not None:
                try:
                    lst.remove(blk)
                except ValueError:
                    pass
                if not lst:
                    del self._code_bytes[h]
            p = h >> 12
            self._page_refs[p] -= 1
            if self._page_refs[p] <= 0:
                del self._page_refs[p]
                m.code_watch.pop(p, None)
        blk.hbytes = []

    def _on_code_write(self, pa: int, n: int) -> None:
        """Machine.code_watch: a store into a page holding translations."""
        hit = []
        for a in range(pa, pa + n):
            lst = self._code_bytes.get(a)
            if lst:
                hit.extend(lst)
        for blk in hit:
            if blk.valid:
                self._counts.pop(blk.key, None)     # new code: count it afresh
                self._invalidate(blk, "write")

    def _invalidate(self, blk: Block, reason: str, count: bool = True, event: bool = True) \
            -> None:
        if not blk.valid:
            return
        blk.valid = False
        if self._tc.get(blk.key) is blk:
            del self._tc[blk.key]
            if not blk.static:
                self._dynamic -= 1
                self.policy.removed(blk.key)
        self._unwatch(blk)
        if reason == "write":
            self._stale[0] = True   # a block running now may have written into itself
        if blk.static:
            why = "code written" if reason == "write" else (
                "adaptive retranslation" if reason.startswith("adapt") else reason)
            self._static_dropped.setdefault(blk.vm, []).append((blk.eip, blk.end, why))
        if count:
            self.tc_invalidations += 1
        if event:
            self.trace.add(TcInvalidation(self._host.clock, address=blk.eip, reason=reason,
                                          vm=blk.vm))

    def blocks(self) -> list[Block]:
        """The translations in the cache now (each with ``source`` and ``listing()``)."""
        return sorted(self._tc.values(), key=lambda b: (b.vm, b.eip))

    def block_at(self, address: int, vm: int = 0) -> Block | None:
        """The translation starting at guest-linear ``address``, if one is cached."""
        for b in self._tc.values():
            if b.eip == address and b.vm == vm:
                return b
        return None

    # ---- static translation ---------------------------------------------------------------------
    def _static_translate(self, vm: TEVM) -> None:
        """Translate the kernel's text ahead of time: a linear sweep from its first byte,
        blocks cut at control transfers, callouts, page ends and the direct branch targets the
        sweep found. Keys assume the kernel runs where it is loaded (identity-mapped)."""
        prog = next(iter(vm.image.programs.values()))
        start, size = prog.sections.get("text", (prog.base, len(prog.code)))
        code, base = prog.code, prog.base
        sweep: list = []
        a = start
        while a < start + size:
            off = a - base
            insn = DECODER.decode(a, bytes(code[off:off + 15]))
            ok = insn is not None and insn.id and a + insn.size <= start + size
            if ok:
                try:
                    sem.source_of(insn)
                except sem.Unsupported:
                    ok = False
            if not ok:
                sweep.append((a, 1, "(bad)", None))
                a += 1
                continue
            sweep.append((a, insn.size, insn.text, insn))
            a += insn.size
        self.static_sweep.append([(a, n, t) for a, n, t, _ in sweep])
        self._sweep_starts[vm.index] = {a for a, _, _, insn in sweep if insn is not None}
        targets = set()
        for a, n, t, insn in sweep:
            if insn is not None and (insn.mnemonic in _DIRECT or insn.mnemonic.startswith("j")
                                     or insn.mnemonic == "call") \
                    and insn.operands and isinstance(insn.operands[0], Imm):
                targets.add(insn.operands[0].value)
        group: list = []

        def flush():
            if group:
                eip = group[0].address
                self._translate(vm, eip, eip, (vm.index, eip, eip, 0), list(group), static=True)
                group.clear()

        for a, n, t, insn in sweep:
            if insn is None:
                flush()
                continue
            if group and (a in targets or (a >> 12) != (group[0].address >> 12)
                          or (a + n - 1) >> 12 != a >> 12):
                flush()
            if (a + n - 1) >> 12 != a >> 12:
                continue                       # straddles a page: left to the dynamic path
            group.append(insn)
            kind = self._classify(insn)[0]
            if self._ends_unit(insn, kind) or len(group) >= MAX_BLOCK:
                flush()
        flush()
        self._text_ranges[vm.index] = (start, start + size)

    def _static_miss(self, vm: TEVM, eip: int) -> None:
        """A lookup in static mode found no static translation: note why (``static_miss_log``),
        then the dynamic translator takes over."""
        self.static_misses += 1
        lo, hi = self._text_ranges.get(vm.index, (0, 0))
        dropped = [r for a, e, r in self._static_dropped.get(vm.index, ()) if a <= eip < e]
        if not lo <= eip < hi:
            why = "outside the text section"
        elif dropped:
            why = f"static translation dropped at run time ({dropped[-1]})"
        elif eip not in self._sweep_starts[vm.index]:
            why = ("not an instruction boundary of the sweep: it decoded data before it as "
                   "code and lost alignment")
        elif any(b.static and b.eip < eip < b.end and b.vm == vm.index
                 for b in self._tc.values()):
            why = ("inside a static block: an entry point the sweep did not see (reached by a "
                   "computed jump)")
        else:
            why = "not translated ahead of time"
        self.static_miss_log[(eip, why)] += 1

    # ---- statistics, cycles, snapshots ---------------------------------------------------------
    @property
    def stats(self) -> dict:
        s = super().stats
        s.update({
            "tc_lookups": self.tc_lookups,
            "tc_hits": self.tc_hits,
            "tc_misses": self.tc_misses,
            "translations": self.translations,
            "translated_instructions": self.translated_instructions,
            "tc_invalidations": self.tc_invalidations,
            "tc_evictions": self.tc_evictions,
            "tc_flushes": self.tc_flushes,
            "tc_blocks": len(self._tc),
            "interpreted": self.interpreted,
            "chained": self.chained,
            "indirect_lookups": self.indirect_lookups,
            "callouts": self.callouts,
            "adaptations": self.adaptations,
            "static_translations": self.static_translations,
            "static_misses": self.static_misses,
        })
        return s

    # the translator's counters, saved and restored with the monitor's state (world.py)
    monitor_state = _COUNTERS = (
        "tc_lookups", "tc_hits", "tc_misses", "translations", "translated_instructions",
        "tc_invalidations", "tc_evictions", "tc_flushes", "interpreted", "chained",
        "indirect_lookups", "callouts", "adaptations", "static_translations", "static_misses",
        "_engine_steps")

    def restore(self, snap: MonitorSnapshot) -> None:
        """Put every VM back; the translation cache is emptied (memory may differ now) and
        refilled as the guest runs again."""
        super().restore(snap)
        m = self._host
        for p in list(m.code_watch):
            m.code_watch.pop(p, None)
        for blk in list(self._tc.values()):
            blk.valid = False
        self.policy.clear()
        self._reset_tc_state()
        g = m._g
        g["_bt_stale"] = self._stale
        if self.static:
            for vm in self.vms:
                self._static_translate(vm)
        # after refilling: the counters are those of the snapshot, not of this refill
        declared = snap.state["declared"]
        self._restore_declared({k: declared[k] for k in self._COUNTERS})


def _is(op, kind: str) -> bool:
    return isinstance(op, Reg) and op.kind == kind


def _lookup_event(vm: TEVM, eip: int, hit: bool, clock: int) -> TcLookup:
    return TcLookup(clock, address=eip, hit=hit, vm=vm.index)


def _emulation_event(clock: int, insn: Insn, vm: int) -> Emulation:
    return Emulation(clock, address=insn.address, text=insn.text, mnemonic=insn.mnemonic, vm=vm)
