"""The guest's protection checks remembered, as the machine's (``vmkit.machine.checkcache``) on
the guest's tables: the fast path of a reflection and of an emulated IRETD.

A rule of :mod:`vmkit.machine.rules` (the gate checks of a reflection, the guest TSS's inner
stack and its SS, the code and stack segments of an IRETD) is a pure function of its arguments,
of the virtual CPU's table registers and of the guest memory it reads through the VM's
``lin_read`` (``read_descriptor`` reads through it too). :func:`checked` runs a rule the first
time through a recording view of the VM, remembering every read (guest-linear page, offset,
size, value) and the result, under a key of the arguments and the table registers. Later, with
the same key, it replays the reads in their order through the VMM's TLB (``TEVM.tlb``: a hit
reads host memory with no side effect, which is all ``TEVM.lin_read`` does on a hit), and when
every value is the same it returns the remembered result without calling the rule. Anything
else (a value changed, a miss in the VMM's TLB, a read across a page or beyond the VM's memory,
watched memory) runs the rule for real, so the guest's page walks, accessed bits, faults and
the watchpoints' events happen as without the cache, in the same order. A rule that raises is
not remembered. A VM whose reads do not go through the VMM's TLB (pv's, through the real MMU)
finds none of its reads there, so its checks always run for real. Measured on the ``syscall``
guest (block mode): a system call's reflection checks went from about 600 Python bytecodes to
about 100 (``benchmarks/bench_trap_bytecodes.py``).
"""

from __future__ import annotations

import operator

from vmkit.vmm.vm import GuestVM

__all__ = ["checked", "MAX_ENTRIES"]

#: remembered checks kept per VM at most (emptied beyond: a guest uses a handful)
MAX_ENTRIES = 1024


class _Recorder:
    """The view a rule runs against the first time: the VM's reads, remembered."""

    __slots__ = ("vm", "_vcpu", "reads", "plain")

    def __init__(self, vm):
        self.vm = vm
        self._vcpu = vm._vcpu       # GuestVM.descriptor reads the table registers here
        self.reads: list = []
        self.plain = True           # only supervisor reads on one page each (replayable)

    def lin_read(self, lin: int, n: int, user: bool = False) -> int:
        vm = self.vm
        v = vm.lin_read(lin, n, user)
        lin &= 0xFFFFFFFF
        # how to read it again: the page's frame in the VMM's TLB (which the read filled) and
        # the bytes at its host address
        frame = vm.tlb[False, False].get(lin >> 12)
        if user or frame is None or (lin & 0xFFF) + n > 0x1000 \
                or (frame | (lin & 0xFFF)) + n > vm.memory_size:
            self.plain = False
        else:
            a = vm.slice_base + (frame | (lin & 0xFFF))
            self.reads.append((lin >> 12, frame, a, a + n, bytes(vm.machine.mem[a:a + n])))
        return v

    def read_descriptor(self, selector: int, fault: int = 13):
        # the VM's own reader, reading through this view
        return GuestVM.descriptor(self, selector, fault)


def checked(vm, key: tuple, rule, *args):
    """``rule(view, *args)`` on ``vm``'s tables, remembered under ``key`` (what decides the
    result besides the memory read: the arguments and the table registers the rule looks at)
    as the module text says."""
    memo = vm.checks
    e = memo.get(key)
    if e is not None and not vm.machine.watched_pages:
        get = vm.tlb[False, False].get
        mem = vm.machine.mem
        # a page at a time: its frame in the VMM's TLB, then every read of it in one C call
        # (an itemgetter of slices; 12 bytecodes a page, against 26 a read one by one)
        for vpn, frame, slices, raw in e[0]:
            if get(vpn) != frame or slices(mem) != raw:
                break
        else:
            return e[1]
    rec = _Recorder(vm)
    result = rule(rec, *args)
    if rec.plain:
        if len(memo) >= MAX_ENTRIES:
            memo.clear()
        memo[key] = (_pages(rec.reads), result)
    return result


def _pages(reads: list) -> tuple:
    """The reads of a rule grouped by page: (page, its frame, an itemgetter of the host slices
    read there, the bytes they held, as that getter returns them)."""
    pages: dict = {}
    for vpn, frame, lo, hi, raw in reads:
        pages.setdefault((vpn, frame), []).append((slice(lo, hi), raw))
    out = []
    for (vpn, frame), rs in pages.items():
        getter = operator.itemgetter(*[sl for sl, _ in rs])
        out.append((vpn, frame, getter, rs[0][1] if len(rs) == 1 else tuple(r for _, r in rs)))
    return tuple(out)
