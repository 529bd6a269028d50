"""The software MMU: one guest instruction run by the VMM with every memory access made through
the guest's own page tables (``vm.lin_read``/``lin_write``: the guest's accessed and dirty bits
set as the hardware sets them, its #PF raised, all ones beyond its memory and writes there
dropped).
For the accesses the real tables of a paging mode cannot express (:data:`~vmkit.vmm.paging.mode.
EMULATE`), and for instructions a binary translator adapts so that they cannot take a hidden
fault. Written once for every monitor: te and pv (ring-1 core), bt (adapted instructions) and
hw (after an exit); each states what a fault and a retired instruction mean to it.

Under a mode that ``traces`` guest pages, every write goes through the mode's
:meth:`~vmkit.vmm.paging.mode.PagingMode.traced_write`.
"""

from __future__ import annotations

from vmkit.isa import semantics as sem
from vmkit.isa.decode import DECODER, Insn
from vmkit.isa.faults import Fault, Resched
from vmkit.machine.cpu import MASK32

__all__ = ["compile_through_guest", "run", "fetch"]


def compile_through_guest(machine, vm, insn: Insn, user: bool, probe=None):
    """``insn`` compiled to run on ``machine``'s CPU with its memory accesses through ``vm``'s
    page tables at the privilege of ``user`` -> a function, or a string saying why the kit
    cannot compile it. ``probe(address, size, write)``, if given, is called before each
    access (a binary translator watching what an adapted instruction touches)."""
    g = dict(machine.compile_globals)
    paging = vm.monitor.paging
    for n in (1, 2, 4):
        if paging.traces:
            def wr(a, v, n=n):
                paging.traced_write(vm, a, n, v, user)
        else:
            def wr(a, v, n=n):
                vm.lin_write(a, n, v, user)

        def rd(a, n=n):
            return vm.lin_read(a, n, user)
        if probe is not None:
            def rd(a, n=n, rd=rd):
                probe(a, n, False)
                return rd(a)

            def wr(a, v, n=n, wr=wr):
                probe(a, n, True)
                wr(a, v)
        g[f"rd{n}"], g[f"wr{n}"] = rd, wr
    return sem.compile_insn(insn, g)


def run(fn) -> None:
    """Run a compiled instruction (a ``Resched`` it asks for is the caller's run loop's
    business: the VMM looks at the VM again after every emulated instruction). A ``Fault``
    is the guest's, for the caller to deliver."""
    try:
        fn()
    except Resched:
        pass


def fetch(vm, eip: int, user: bool) -> tuple[Insn | None, Fault | None]:
    """Decode the instruction at guest-linear ``eip`` through the guest's tables -> (the
    instruction or None, the fault that cut the fetch short or None)."""
    window = bytearray()
    fault = None
    while len(window) < 15:
        a = (eip + len(window)) & MASK32
        take = min(15 - len(window), 0x1000 - (a & 0xFFF))
        try:
            window += vm.lin_read(a, take, user).to_bytes(take, "little")
        except Fault as f:
            fault = f
            break
    insn = DECODER.decode(eip, bytes(window))
    if insn is None or not insn.id or insn.size > len(window):
        return None, fault
    return insn, fault
