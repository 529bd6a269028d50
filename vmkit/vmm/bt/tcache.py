"""The translation cache (QEMU's tb-maint): blocks, their eviction policies, the watch on the
guest code they were made from, invalidation and flushes."""

from __future__ import annotations

import types
from collections import OrderedDict

from vmkit.machine import blocks
from vmkit.trace import TcInvalidation
from vmkit.vmm.deprivileged.vcpu import TEVM

DEFAULT_TC_SIZE = 1024
"""Translated blocks the cache holds (counted in blocks, as QEMU bounds its number of
translation blocks; a block is at most 12 instructions). The kit's whole kernel is about 200
translation units (``BinaryTranslation(img, static=True).stats["static_translations"]``) and a
guest runs 30 to 120 of them, so 1024 blocks hold the kernel of every guest with room for the
extra units that adaptation and several VMs create: no default workload evicts, as a real
translation cache is sized to hold the kernel's working set. The eviction tests set it tiny."""


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
    """One translation: ``fn(budget)`` runs its instructions before the tail (a function made
    by :func:`vmkit.machine.blocks.build`, bound to the host machine; None when the callout is
    all there is) and returns how many retired.

    ``insns`` are the decoded instructions, ``kinds`` how each was translated ("ident",
    "inline", "callout", "adapted"), ``source`` the Python source of ``fn`` (read it!),
    ``tail`` the callout at its end if any (run by the monitor after ``fn`` returns),
    ``links`` the chained successors by address, ``static`` whether it was made ahead of time,
    ``hits`` how often a cache lookup found it and ``chained_in`` how often a chained exit ran
    straight into it (for pictures of the cache: :func:`vmkit.viz.tcache.tc_diagram`)."""

    __slots__ = ("key", "vm", "eip", "gpa", "insns", "kinds", "n", "nbody", "fn", "_source",
                 "tail", "go_on", "resched", "links", "valid", "static", "fns", "exact",
                 "index", "hbytes", "end", "hits", "chained_in", "indirect", "code", "starts",
                 "items", "made_key", "globals", "runs", "loop_fn", "loop_code", "loop_starts",
                 "plain")

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
        self.fn = None          # None: not compiled yet, or no instruction before the tail
        self.code = None        # fn's code object and the first line of each instruction in
        self.starts = ()        # it (where a fault inside it came from: blocks.locate)
        self._source = ""
        self.items = None       # what blocks.build compiles, until it has (see compile)
        self.made_key = None
        self.globals = None
        self.runs = 0           # runs in block mode before it was compiled
        self.loop_fn = None     # a unit that jumps back to its start: a second function that
        self.loop_code = None   # runs its passes in itself, once it is chained to itself
        self.loop_starts = ()
        self.plain = False      # compiled, and nothing to do after fn but follow a chained exit
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

    @property
    def source(self) -> str:
        """The Python source of ``fn`` (made now if the block was not compiled yet)."""
        if self.items is not None:
            self.compile()
        return self._source

    def compile(self) -> None:
        """Make ``fn`` with the machine's block translator (:func:`vmkit.machine.blocks.build`),
        once; a unit another monitor of this process compiled already is only bound. The
        engine compiles a block when it has run ``blocks.HOT`` times in block mode, as the
        machine makes its own blocks (compiling one costs a few milliseconds, what running a
        few thousand instructions one at a time costs); until then, and in per-instruction
        mode, its instructions run one compiled function at a time, with the same counts."""
        items, self.items = self.items, None
        if not items:
            return
        made = _MADE.get(self.made_key)
        if made is None:
            if len(_MADE) >= 4096:
                _MADE.clear()
            # a jump back to the start leaves the function (each pass of a kernel loop is a
            # chained exit until the block is chained to itself: loop_fn); a store into
            # translated code sets _bt_stale
            made = _MADE[self.made_key] = blocks.build(self.eip, items, loop=False,
                                                       stale="_bt_stale[0]")
        self.code, _, _, self.starts, self._source = made
        g = self.globals
        bind = (g["R"], g["C"], g["M"], g["PARITY"])
        self.fn = types.FunctionType(self.code, g, f"tb_{self.eip:08x}", bind)
        if self.loops_back():
            key = self.made_key + ("loop",)
            made = _MADE.get(key)
            if made is None:
                made = _MADE[key] = blocks.build(self.eip, items, loop=True,
                                                 stale="_bt_stale[0]")
            if "done" in made[0].co_varnames:      # it does loop
                self.loop_code, self.loop_starts = made[0], made[3]
                self.loop_fn = types.FunctionType(self.loop_code, g, f"tb_{self.eip:08x}",
                                                  bind)
        # no callout at its end, no look by the run loop, no loop function: the engine's
        # tight loop runs it (engine.run_chain)
        self.plain = self.tail is None and not self.resched and self.loop_fn is None

    def loops_back(self) -> bool:
        """Does the unit end in a direct jump to its own start, with nothing the engine must do
        between two passes (a callout, a look by the run loop, guest time for sti)?"""
        last = self.insns[-1]
        ops = last.operands
        return (self.nbody == self.n and not self.resched and not self.exact
                and not self.indirect and last.mnemonic != "call" and len(ops) == 1
                and type(ops[0]).__name__ == "Imm" and ops[0].value == self.eip)

    def listing(self) -> str:
        """The guest instructions, with how each was translated."""
        return "\n".join(f"{i.address:#010x}  {i.text:<32} {k}"
                         for i, k in zip(self.insns, self.kinds))

    def __repr__(self) -> str:
        state = "" if self.valid else " invalid"
        return (f"<Block {self.eip:#010x} {self.n} instructions{' static' if self.static else ''}"
                f"{state}>")


#: block functions made in this process, by (address, VM, instruction bytes, kinds): another
#: monitor running the same kernel (a notebook's next cell, a test) only binds them
_MADE: dict = {}


# =================================================================================================
# The cache: capacity, self-modifying code
# =================================================================================================
# ---- the cache: capacity, bt-modifying code ----------------------------------------------
def make_room(bt) -> None:
    victims = bt.policy.victims()
    if victims is None:
        flush(bt, "cache full")
        return
    for key in victims:
        blk = bt._tc.get(key)
        if blk is None:
            bt.policy.removed(key)
            continue
        bt.tc_evictions += 1
        invalidate(bt, blk, f"evicted ({bt.policy.name})", count=False)


def watch(bt, vm: TEVM, blk: Block) -> None:
    """Watch every byte the block came from: a write there invalidates it."""
    m = bt._host
    base = vm.slice_base + blk.gpa - blk.eip
    for insn in blk.insns:
        for a in range(insn.address, insn.address + insn.size):
            h = base + a
            if not 0 <= h - vm.slice_base < vm.memory_size:
                continue
            bt._code_bytes.setdefault(h, []).append(blk)
            blk.hbytes.append(h)
            p = h >> 12
            if not bt._page_refs[p]:
                m.code_watch[p] = bt._on_code_write
                m.code_pages.setdefault(p, {})
            bt._page_refs[p] += 1


def unwatch(bt, blk: Block) -> None:
    m = bt._host
    for h in blk.hbytes:
        lst = bt._code_bytes.get(h)
        if lst is not None:
            try:
                lst.remove(blk)
            except ValueError:
                pass
            if not lst:
                del bt._code_bytes[h]
        p = h >> 12
        bt._page_refs[p] -= 1
        if bt._page_refs[p] <= 0:
            del bt._page_refs[p]
            m.code_watch.pop(p, None)
    blk.hbytes = []


def on_code_write(bt, pa: int, n: int) -> None:
    """Machine.code_watch: a store into a page holding translations."""
    hit = []
    for a in range(pa, pa + n):
        lst = bt._code_bytes.get(a)
        if lst:
            hit.extend(lst)
    for blk in hit:
        if blk.valid:
            bt._counts.pop(blk.key, None)     # new code: count it afresh
            invalidate(bt, blk, "write")


def invalidate(bt, blk: Block, reason: str, count: bool = True, event: bool = True) \
               -> None:
    if not blk.valid:
        return
    blk.valid = False
    if bt._tc.get(blk.key) is blk:
        del bt._tc[blk.key]
        if not blk.static:
            bt._dynamic -= 1
            bt.policy.removed(blk.key)
    unwatch(bt, blk)
    if reason == "write":
        bt._stale[0] = True   # a block running now may have written into itself
    if blk.static:
        why = "code written" if reason == "write" else (
            "adaptive retranslation" if reason.startswith("adapt") else reason)
        bt._static_dropped.setdefault(blk.vm, []).append((blk.eip, blk.end, why))
    if count:
        bt.tc_invalidations += 1
    if event:
        bt.trace.add(TcInvalidation(bt._host.clock, address=blk.eip, reason=reason,
                                      vm=blk.vm))


def flush(bt, reason: str = "flush") -> None:
    """Drop every dynamic translation (QEMU's tb_flush); static ones stay."""
    bt.tc_flushes += 1
    for blk in [b for b in bt._tc.values() if not b.static]:
        invalidate(bt, blk, reason, count=False, event=False)
    bt.policy.clear()
    bt.trace.add(TcInvalidation(bt._host.clock, address=0, reason=f"flush: {reason}",
                                  vm=bt.current))
