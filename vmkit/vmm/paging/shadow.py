"""Shadow paging as a virtual TLB (``"vtlb"``): the real page tables are the VMM's copy of the
guest's, filled on hidden page faults and dropped exactly when the guest's TLB would be flushed
(a CR3 load, INVLPG, a change of CR0.PG/WP or CR4.PSE). The guest's page tables are not
write-protected: like a TLB, the shadow may be stale until the guest flushes, as the
architecture allows. Used by te, bt and hw without EPT.

Each VM has a shadow page directory (``vm.pd``, in its VMM area), a pool of free pages for shadow
page tables (``vm.pool``), the shadow tables in use (``vm.shadow_pts``), the pages mapped to the
all-ones page beyond its memory (``vm.sinks``) and the VMM's own TLB of guest translations
(``vm.flush_tlb``).
"""

from __future__ import annotations

import struct

from vmkit.isa.faults import Fault
from vmkit.machine.cpu import MASK32
from vmkit.machine.mmu import CR0_PG, CR0_WP, CR4_PSE, PTE_A, PTE_D, PTE_P, PTE_U, PTE_W
from vmkit.vmm.layout import H_ONES
from vmkit.vmm.paging.mode import EMULATE, HIDDEN, PagingMode, PagingView, register

__all__ = ["ShadowPaging"]

_I = struct.Struct("<I")


@register
class ShadowPaging(PagingMode):
    """The virtual TLB (see the module text). Counts on its monitor: ``hidden_page_faults``,
    ``pt_traps`` (the traps through which it learns of guest page-table changes, by kind) and
    ``events["hidden_fault"]``, ``events["shadow_update"]`` (priced by the cost model)."""

    name = "vtlb"
    kind = "shadow"
    title = "shadow page tables as a virtual TLB (filled on hidden faults, dropped on flushes)"
    vm_state = ("shadow_pts", "sinks")
    cr0_forced = CR0_PG | CR0_WP       # the real MMU always walks the shadow, writes checked
    cr4_cleared = CR4_PSE              # the shadow maps 4 KiB pages only

    def boot_vm(self, vm) -> None:
        vm.shadow_pts = {}          # page directory index -> shadow page table
        vm.sinks = set()            # pages mapped to the all-ones page

    # ---- the guest's control registers and TLB ---------------------------------------------
    def update_cr3(self, vm, value: int) -> None:
        self.monitor.pt_traps["mov cr3"] += 1
        self.flush(vm)

    def update_paging(self, vm, n: int, old: int, new: int) -> None:
        if (old ^ new) & (CR4_PSE if n == 4 else CR0_PG | CR0_WP):
            self.flush(vm)

    def invlpg(self, vm, lin: int) -> None:
        """Drop one page's shadow entry."""
        mon = self.monitor
        mon.pt_traps["invlpg"] += 1
        vpn = (lin & MASK32) >> 12
        pt = vm.shadow_pts.get(vpn >> 10)
        if pt is not None:
            _I.pack_into(mon._host.mem, pt + 4 * (vpn & 0x3FF), 0)
        vm.sinks.discard(vpn)
        vm.flush_tlb(vpn)
        vm.gdt_src = None
        mon.events["shadow_update"] += 1
        mon._host.flush_tlb(vpn)

    def flush(self, vm) -> None:
        """Drop every shadow entry of the VM (the guest's TLB would be empty)."""
        mon = self.monitor
        mem = mon._host.mem
        for pdi, pt in vm.shadow_pts.items():
            _I.pack_into(mem, vm.pd + 4 * pdi, 0)
            vm.pool.append(pt)
        vm.shadow_pts.clear()
        vm.sinks.clear()
        vm.flush_tlb()
        vm.gdt_src = None
        mon.events["shadow_update"] += 1
        if vm.current:
            mon._host.flush_tlb()

    # ---- faults ----------------------------------------------------------------------------
    def page_fault(self, vm, lin: int, write: bool, user: bool) -> str:
        """Walk the guest's tables (setting its accessed/dirty bits; its own #PF raised if
        they deny the access); if the shadow entry can allow the access, fill it: a hidden
        page fault."""
        pte, ok = self.entry(vm, lin, write, user)
        if not ok:
            return EMULATE
        self.fill(vm, lin, pte)
        return HIDDEN

    def prefill(self, vm, lin: int, write: bool, user: bool) -> bool:
        """Would the access fault on the shadow (no entry yet, or one without the right)? If
        the guest's tables allow it, the entry is filled now, as the hidden fault would have
        filled it (priced as a shadow update, not as a fault)."""
        pt = vm.shadow_pts.get((lin & MASK32) >> 22)
        if pt is not None:
            e = _I.unpack_from(self.monitor._host.mem, pt + 4 * ((lin >> 12) & 0x3FF))[0]
            if e & PTE_P and (not write or e & PTE_W) and (not user or e & PTE_U):
                return False
        try:
            pte, ok = self.entry(vm, lin, write, user)
        except Fault:
            return True             # the guest's own fault: the access raises it
        if ok and (not write or pte & PTE_W):     # (a traced page stays read-only)
            self.map(vm, lin, pte)
        return True

    def entry(self, vm, lin: int, write: bool, user: bool) -> tuple[int, bool]:
        """The shadow entry for an access that faulted on the shadow tables -> (the entry that
        maps the page, whether the access can go through it)."""
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

    def fill(self, vm, lin: int, pte: int) -> None:
        """Fill the shadow entry: the fault is hidden from the guest, which retries."""
        self.map(vm, lin, pte)
        mon = self.monitor
        mon.hidden_page_faults += 1
        mon.events["hidden_fault"] += 1

    def map(self, vm, lin: int, pte: int) -> None:
        """Write one shadow page table entry (allocating the shadow table)."""
        mon = self.monitor
        mem = mon._host.mem
        pdi, vpn = lin >> 22, lin >> 12
        pt = vm.shadow_pts.get(pdi)
        if pt is None:
            if not vm.pool:
                self.flush(vm)   # out of shadow tables: start over, as a TLB would
            pt = vm.pool.pop()
            mem[pt:pt + 0x1000] = bytes(0x1000)
            vm.shadow_pts[pdi] = pt
            _I.pack_into(mem, vm.pd + 4 * pdi, pt | PTE_P | PTE_W | PTE_U | PTE_A)
        a = pt + 4 * (vpn & 0x3FF)
        old = _I.unpack_from(mem, a)[0]
        _I.pack_into(mem, a, pte | PTE_A | PTE_D)
        mon.events["shadow_update"] += 1
        if old & PTE_P:
            mon._host.flush_tlb(vpn)

    def view(self, vm) -> PagingView:
        return PagingView(self.kind, vm.pd)
