"""The guest's memory as the guest sees it, under any monitor: guest-linear and guest-physical
reads without side effects (no TLB fill, no accessed/dirty bits).

Natively the guest's memory is the machine's. Under a hosted monitor (te, bt, hw, pv) each VM
is a slice of the host machine's memory and its VM object (``vmkit.vmm.te.TEVM`` and
subclasses) walks the guest's own tables without touching them (``walk(touch=False)``,
``peek``); this module only chooses between the two, reading public attributes.
"""

from __future__ import annotations

from vmkit.isa.faults import Fault

__all__ = ["GuestView", "guest_view", "machine_linear"]

MASK32 = 0xFFFFFFFF


def machine_linear(m, lin: int, n: int) -> bytes | None:
    """``n`` bytes at linear ``lin`` of machine ``m`` through its own paging, page by page and
    without side effects (None if any page is not mapped)."""
    out = bytearray()
    k = 0
    while k < n:
        a = (lin + k) & MASK32
        take = min(n - k, 0x1000 - (a & 0xFFF))
        pa = m.peek_translate(a)
        if pa is None or pa + take > m.memory_size:
            return None
        out += m.mem[pa:pa + take]
        k += take
    return bytes(out)


class GuestView:
    """Side-effect-free access to VM ``index``'s memory (default: the current VM)."""

    def __init__(self, monitor, index: int | None = None):
        self.monitor = monitor
        i = getattr(monitor, "current", 0) if index is None else index
        self.vm = monitor.vms[i]
        self.index = i
        self.hosted = hasattr(self.vm, "slice_base") and hasattr(self.vm, "walk")

    @property
    def memory_size(self) -> int:
        v = self.vm
        return v.memory_size if self.hosted else v.machine.memory_size

    @property
    def cpu(self):
        """The CPU as the guest believes it is."""
        return self.vm.vcpu

    def physical(self, gpa: int, n: int) -> bytes | None:
        """``n`` bytes of guest-physical memory (None beyond its end)."""
        if gpa < 0 or gpa + n > self.memory_size:
            return None
        if self.hosted:
            a = self.vm.slice_base + gpa
            return bytes(self.vm.machine.mem[a:a + n])
        return bytes(self.vm.machine.mem[gpa:gpa + n])

    def to_physical(self, lin: int) -> int | None:
        """The guest-physical address guest-linear ``lin`` maps to now (None: not mapped)."""
        lin &= MASK32
        if self.hosted:
            try:
                return self.vm.walk(lin, touch=False)[0]
            except Fault:
                return None
            except Exception:      # e.g. pv: a machine address outside the VM
                return None
        return self.vm.machine.peek_translate(lin)

    def linear(self, lin: int, n: int) -> bytes | None:
        """``n`` bytes at guest-linear ``lin`` (None if any page is not mapped)."""
        lin &= MASK32
        if self.hosted:
            try:
                return self.vm.peek(lin, n)
            except Exception:
                return None
        return machine_linear(self.vm.machine, lin, n)

    def read(self, addr: int, n: int, physical: bool = False) -> bytes | None:
        return self.physical(addr, n) if physical else self.linear(addr, n)

    def insn_at(self, lin: int):
        """The instruction at guest-linear ``lin`` (the kit's decoded form) or None."""
        from vmkit.isa.decode import DECODER
        window = None
        for n in (15, 8, 4, 1):           # near the end of a mapped page: fewer bytes
            window = self.linear(lin, n)
            if window is not None:
                break
        if not window:
            return None
        return DECODER.decode(lin & MASK32, window)


def guest_view(monitor, index: int | None = None) -> GuestView:
    return GuestView(monitor, index)
