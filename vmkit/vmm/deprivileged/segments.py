"""Trap-and-emulate's shadow GDT: the real GDT a copy of the guest's with ring-0 descriptors
compressed to ring 1, the real segment registers loaded from it, and its resynchronization when
the guest changes its table."""

from __future__ import annotations

from vmkit.isa.faults import Fault
from vmkit.machine.cpu import MASK32
from vmkit.machine.rules import Descriptor
from vmkit.trace import RingTransition
from vmkit.vmm.deprivileged.vcpu import _Q, TEVM
from vmkit.vmm.layout import RESERVED_ENTRY


def shadow_descriptor(te, vm: TEVM, selector: int) -> Descriptor:
    return Descriptor.parse(_Q.unpack_from(te._host.mem,
                                           vm.gdt_base + (selector & 0xFFF8))[0])


def load_real_segment(te, vm: TEVM, index: int, selector: int) -> None:
    """Load a real data or stack segment register from the shadow GDT; the kernel's
    stack selector gets RPL 1 (the real CPL)."""
    real = selector | 1 if index == 2 and selector & 3 == 0 else selector
    m = te._host
    m.load_segment_cache(index, real,       # shadow_descriptor, inline
                         Descriptor.parse(_Q.unpack_from(m.mem, vm.gdt_base
                                                         + (selector & 0xFFF8))[0]))


def load_real_cs(te, vm: TEVM, selector: int, vring: int, cause: str,
                 d: Descriptor | None = None) -> None:
    """CS := the guest's code selector for virtual ring ``vring``, in the real ring that
    stands for it (0 -> 1); the guest descriptor's accessed bit is set as natively."""
    m = te._host
    cpu, vc = m.cpu, vm._vcpu
    if d is None:
        d = vm.descriptor(selector)
    if not d.access & 1:
        vm.set_accessed(selector, d)
    ring = 1 if vring == 0 else vring
    m.load_segment_cache(1, (selector & 0xFFFC) | ring,     # shadow_descriptor, inline
                         Descriptor.parse(_Q.unpack_from(m.mem, vm.gdt_base
                                                         + (selector & 0xFFF8))[0]))
    old = cpu.cpl
    vc.cpl = vring
    if ring != old:
        cpu.cpl = ring
        m.mode_changed()
        te.trace.record((RingTransition, vm.index, m.clock, old, ring, cause))
        if ring > old:
            m.null_outer_segments(ring)


def shadow_gdt(te, vm: TEVM) -> None:
    """Rebuild the real GDT from the guest's: code and data descriptors of DPL 0 get DPL 1
    (accessed bits kept: a clear one makes the CPU's write fault into the VMM, which sets
    it in the guest's table too); the VMM's own entries stay at the top."""
    gdtr = vm.vcpu.gdtr
    n = min(gdtr.limit + 1, RESERVED_ENTRY * 8)
    raw = vm.peek(gdtr.base, n) or b""
    out = bytearray(raw + bytes(-len(raw) % 8))
    for off in range(0, len(out), 8):
        d = _Q.unpack_from(out, off)[0]
        access = (d >> 40) & 0xFF
        if access & 0x10 and not access & 0x60:    # code or data with DPL 0
            d |= 1 << 45                           # DPL 1: the kernel's new ring
        _Q.pack_into(out, off, d)
    mem = te._host.mem
    clear = max(vm.gdt_shadowed, len(out))
    mem[vm.gdt_base:vm.gdt_base + clear] = bytes(out) + bytes(clear - len(out))
    vm.gdt_shadowed = len(out)
    vm.gdt_copy = raw
    vm.gdt_src = None
    te.events["shadow_update"] += 1


def sync_gdt(te, vm: TEVM) -> None:
    """On every entry into the VMM: re-shadow if the guest changed its GDT in memory since
    (a plain store, which does not trap). A byte comparison at the table's host address."""
    if vm.gdt_src is None:
        gdtr = vm.vcpu.gdtr
        n = len(vm.gdt_copy)
        src, k = [], 0
        try:
            while k < n:
                a = (gdtr.base + k) & MASK32
                take = min(n - k, 0x1000 - (a & 0xFFF))
                h = vm.host_address(vm.walk(a, touch=False)[0])
                if h is None or h + take > vm.slice_base + vm.memory_size:
                    return
                src.append((h, take))
                k += take
        except Fault:
            return
        vm.gdt_src = src
    mem = te._host.mem
    src = vm.gdt_src
    if len(src) == 1:      # the table in one page: one comparison, no copy
        h, t = src[0]
        same = mem[h:h + t] == vm.gdt_copy
    else:
        same = b"".join(bytes(mem[h:h + t]) for h, t in src) == vm.gdt_copy
    if not same:
        te.shadow_gdt(vm)
