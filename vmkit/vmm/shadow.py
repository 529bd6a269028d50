"""Shadow paging: the real page tables as a virtual TLB of the guest's, filled on hidden page
faults and dropped exactly when the guest's TLB would be flushed. Written once for the
monitors that use it: ``TrapAndEmulate`` (and those built on it) and ``HardwareAssisted`` with
``ept=False``. (Nested paging is the machine's EPT, ``vmkit.machine.mmu``; validated direct
paging is ``Paravirtual``'s; docs/architecture.md.)

Each VM has a shadow page directory (``vm.pd``), a pool of shadow page tables
(``vm.pool``, in use: ``vm.shadow_pts``), the pages mapped to the all-ones page beyond its
memory (``vm.sinks``) and the VMM's own TLB of guest translations (``vm.flush_tlb``).
"""

from __future__ import annotations

import struct

from vmkit.machine.cpu import MASK32
from vmkit.machine.mmu import CR0_PG, CR0_WP, PTE_A, PTE_D, PTE_P, PTE_U, PTE_W
from vmkit.vmm.layout import H_ONES

__all__ = ["ShadowPaging"]

_I = struct.Struct("<I")


class ShadowPaging:
    """The virtual TLB, mixed into a :class:`~vmkit.vmm.world.HostedMonitor` (it uses
    ``self._host``, ``self.events``, ``self.pt_traps`` and ``self.hidden_page_faults``)."""

    def _shadow_entry(self, vm, lin: int, write: bool, user: bool) -> tuple[int, bool]:
        """Walk the guest's tables for an access that faulted on the shadow tables (setting
        the guest's accessed/dirty bits; the guest's own #PF raised if they deny it) ->
        (the shadow entry that maps the page, whether the access can go through it)."""
        gpa, flags, dirty = vm.walk(lin, write, user)
        vc = vm.vcpu
        if not vc.cr0 & CR0_PG:
            u = w = True                                # no paging: no page protection
        else:
            u = bool(flags & PTE_U)
            # writable for every ring this entry serves; read-only until the guest's D is set
            w = (bool(flags & PTE_W) or (not vc.cr0 & CR0_WP and not u)) and dirty
        host = vm.host_address(gpa & 0xFFFFF000)
        if host is None or host + 0x1000 > vm.slice_base + vm.memory_size:
            host, w = H_ONES, False                     # beyond the VM's memory: all ones
            vm.sinks.add(lin >> 12)
        # a write the guest allows but the entry cannot (beyond memory, or a supervisor write
        # to a user read-only page with CR0.WP clear) is emulated by the caller
        return host | PTE_P | (PTE_W if w else 0) | (PTE_U if u else 0), not write or w

    def _hidden_fault(self, vm, lin: int, pte: int) -> None:
        """Fill the shadow entry: the fault is hidden from the guest, which retries."""
        self._map(vm, lin, pte)
        self.hidden_page_faults += 1
        self.events["hidden_fault"] += 1

    def _map(self, vm, lin: int, pte: int) -> None:
        """Write one shadow page table entry (allocating the shadow table)."""
        mem = self._host.mem
        pdi, vpn = lin >> 22, lin >> 12
        pt = vm.shadow_pts.get(pdi)
        if pt is None:
            if not vm.pool:
                self.flush_shadow(vm)   # out of shadow tables: start over, as a TLB would
            pt = vm.pool.pop()
            mem[pt:pt + 0x1000] = bytes(0x1000)
            vm.shadow_pts[pdi] = pt
            _I.pack_into(mem, vm.pd + 4 * pdi, pt | PTE_P | PTE_W | PTE_U | PTE_A)
        a = pt + 4 * (vpn & 0x3FF)
        old = _I.unpack_from(mem, a)[0]
        _I.pack_into(mem, a, pte | PTE_A | PTE_D)
        self.events["shadow_update"] += 1
        if old & PTE_P:
            self._host.flush_tlb(vpn)

    def flush_shadow(self, vm) -> None:
        """Drop every shadow entry of the VM (the guest loaded CR3: its TLB would be empty)."""
        mem = self._host.mem
        for pdi, pt in vm.shadow_pts.items():
            _I.pack_into(mem, vm.pd + 4 * pdi, 0)
            vm.pool.append(pt)
        vm.shadow_pts.clear()
        vm.sinks.clear()
        vm.flush_tlb()
        vm.gdt_src = None
        self.events["shadow_update"] += 1
        if vm.current:
            self._host.flush_tlb()

    def _shadow_invlpg(self, vm, lin: int) -> None:
        """Drop one page's shadow entry (the guest's invlpg)."""
        self.pt_traps["invlpg"] += 1
        vpn = (lin & MASK32) >> 12
        pt = vm.shadow_pts.get(vpn >> 10)
        if pt is not None:
            _I.pack_into(self._host.mem, pt + 4 * (vpn & 0x3FF), 0)
        vm.sinks.discard(vpn)
        vm.flush_tlb(vpn)
        vm.gdt_src = None
        self.events["shadow_update"] += 1
        self._host.flush_tlb(vpn)
