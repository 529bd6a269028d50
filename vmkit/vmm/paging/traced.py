"""Traced shadow paging (``"traced"``): the shadow page tables are kept coherent with the guest's
by *tracing* them, as VMware's VMMs did in 2006 (Adams & Agesen, ASPLOS 2006, §2.3-2.4, §4.3):
every guest page table the shadow was built from is write-protected in the shadow, and a guest
store into it faults into the VMM (a trap under te, a VM exit under hw without EPT, an adapted
in-TC sequence under bt), which makes the store and brings the shadow entry up to date at once.

Against the virtual TLB (``"vtlb"``, :mod:`vmkit.vmm.paging.shadow`), the trade-off A&A call
"surprising both in its difficulty and its criticality" (§2.4), between trace costs, hidden
faults and context-switch costs:

* the shadow page tables are a **cache kept across address-space switches**: one shadow table
  per guest page table (and the rights of the directory entry that points to it), so a CR3 load
  only empties the shadow page directory, and the address space the guest comes back to finds
  its shadow tables filled (few hidden faults after a context switch);
* because they are kept, they must stay right: each guest page table with a shadow, and the
  guest page directory in use, is **traced**. Every guest PTE write costs a fault into the VMM
  (``pt_traps["traced write"]``); INVLPG has nothing left to do.

Used in practice: VMware Workstation and Player's software and first-generation hardware VMMs
(A&A §4.3, §7.2), Xen's shadow mode (``xen/arch/x86/mm/shadow/``, write access to guest page
tables removed and emulated) and KVM's shadow MMU (``arch/x86/kvm/mmu/``: guest page tables
write-protected, "unsync" pages as an exception). The virtual TLB, which drops everything on a
CR3 load and traces nothing, is VMware Workstation 2.0's other extreme (A&A §7.2: traces dropped
"aggressively"); nested paging (``"ept"``) removed the question from hardware VMMs.

State on each VM (besides the virtual TLB's ``shadow_pts``, now the shadow tables *installed* in
the shadow page directory, and ``sinks``): ``tr_cache`` (guest page table frame and directory
rights -> its shadow table), ``tr_rmap`` (guest frame -> shadow entries that map it, to take
their write permission away when the frame becomes traced), ``tr_pd`` (the traced guest page
directory, the one in CR3).
"""

from __future__ import annotations

import struct

from vmkit.machine.cpu import MASK32
from vmkit.machine.mmu import CR0_PG, CR0_WP, CR4_PSE, PTE_A, PTE_D, PTE_P, PTE_PS, PTE_U, PTE_W
from vmkit.vmm.layout import H_ONES
from vmkit.vmm.paging.mode import EMULATE, HIDDEN, register
from vmkit.vmm.paging.shadow import ShadowPaging

__all__ = ["TracedShadowPaging"]

_I = struct.Struct("<I")


@register
class TracedShadowPaging(ShadowPaging):
    """Shadow page tables kept coherent by traces (see the module text). Counts on its monitor,
    besides the virtual TLB's: ``pt_traps["traced write"]`` (guest stores into traced page
    tables) and ``events["shadow_update"]`` and ``events["page_walk"]`` for the work of each
    (the cost of the fault or exit itself is the monitor's)."""

    name = "traced"
    title = "shadow page tables kept coherent by tracing the guest's (write-protected) tables"
    traces = True
    vm_state = ShadowPaging.vm_state + ("tr_cache", "tr_frames", "tr_rmap", "tr_pd")

    def boot_vm(self, vm) -> None:
        super().boot_vm(vm)
        vm.tr_cache = {}            # (guest PT frame, PDE rights) -> shadow page table
        vm.tr_frames = set()        # the guest page-table frames of tr_cache
        vm.tr_rmap = {}             # guest frame -> {host address of a shadow entry mapping it}
        vm.tr_pd = None             # guest frame of the traced page directory

    @property
    def traced_writes(self) -> int:
        """Guest stores into traced page tables so far."""
        return self.monitor.pt_traps["traced write"]

    # ---- what is traced ----------------------------------------------------------------------
    @staticmethod
    def _traced(vm, gfn: int | None) -> bool:
        return gfn is not None and (gfn == vm.tr_pd or gfn in vm.tr_frames)

    @staticmethod
    def _gfn(vm, pte: int) -> int | None:
        """The guest frame a shadow entry maps (None: the all-ones page beyond memory)."""
        host = pte & 0xFFFFF000
        return None if host == H_ONES else (host - vm.slice_base) >> 12

    def _trace(self, vm, gfn: int) -> None:
        """Start tracing guest frame ``gfn``: every shadow entry that maps it loses its write
        permission (the guest's next store there faults)."""
        mem = self.monitor._host.mem
        host = vm.host_address(gfn << 12)
        changed = False
        for a in vm.tr_rmap.pop(gfn, ()):
            e = _I.unpack_from(mem, a)[0]
            if e & PTE_P and e & 0xFFFFF000 == host and e & PTE_W:
                _I.pack_into(mem, a, e & ~PTE_W)
                changed = True
        if changed:
            self.monitor._host.flush_tlb()

    # ---- the guest's control registers and TLB ---------------------------------------------
    def update_cr3(self, vm, value: int) -> None:
        """A new address space: empty the shadow page directory (the shadow tables stay, kept
        right by their traces) and trace the new guest page directory."""
        mon = self.monitor
        mon.pt_traps["mov cr3"] += 1
        mem = mon._host.mem
        for pdi in vm.shadow_pts:
            _I.pack_into(mem, vm.pd + 4 * pdi, 0)
        vm.shadow_pts.clear()
        vm.sinks.clear()
        vm.flush_tlb()
        vm.gdt_src = None
        mon.events["shadow_update"] += 1
        vm.tr_pd = None
        if vm.vcpu.cr0 & CR0_PG:
            vm.tr_pd = (value & MASK32) >> 12
            self._trace(vm, vm.tr_pd)
        if vm.current:
            mon._host.flush_tlb()

    def invlpg(self, vm, lin: int) -> None:
        """The shadow is coherent already (every guest PTE store was traced): nothing to drop
        but the VMM's own cached translation."""
        self.monitor.pt_traps["invlpg"] += 1
        vm.flush_tlb((lin & MASK32) >> 12)

    def flush(self, vm) -> None:
        """Drop every shadow table, cached ones too, and every trace."""
        super().flush(vm)
        installed = set(vm.pool)
        vm.pool.extend(pt for pt in vm.tr_cache.values() if pt not in installed)
        vm.tr_cache.clear()
        vm.tr_frames.clear()
        vm.tr_rmap.clear()
        vm.tr_pd = None
        if vm.vcpu.cr0 & CR0_PG:
            vm.tr_pd = vm.vcpu.cr3 >> 12
            self._trace(vm, vm.tr_pd)

    # ---- faults ----------------------------------------------------------------------------
    def page_fault(self, vm, lin: int, write: bool, user: bool) -> str:
        """As the virtual TLB, with the shadow table of the guest's page table taken from the
        cache (or made and traced), and no write permission for a traced frame: a store into
        one is emulated (:meth:`traced_write`)."""
        pte, ok = self.entry(vm, lin, write, user)
        if not ok or (write and self._traced(vm, self._gfn(vm, pte))):
            return EMULATE
        self.fill(vm, lin, pte)
        return HIDDEN

    def entry(self, vm, lin: int, write: bool, user: bool) -> tuple[int, bool]:
        """As the virtual TLB's, without write permission for a traced frame."""
        pte, ok = super().entry(vm, lin, write, user)
        if pte & PTE_W and self._traced(vm, self._gfn(vm, pte)):
            pte &= ~PTE_W
        return pte, ok

    def map(self, vm, lin: int, pte: int) -> None:
        """Write one shadow entry, in the shadow table of the guest page table that maps
        ``lin`` (from the cache, or made and traced)."""
        mon = self.monitor
        mem = mon._host.mem
        pdi, vpn = lin >> 22, lin >> 12
        pt = vm.shadow_pts.get(pdi)
        if pt is None:
            pt = self._install(vm, pdi)
        a = pt + 4 * (vpn & 0x3FF)
        old = _I.unpack_from(mem, a)[0]
        _I.pack_into(mem, a, pte | PTE_A | PTE_D)
        mon.events["shadow_update"] += 1
        gfn = self._gfn(vm, pte)
        if gfn is not None:
            vm.tr_rmap.setdefault(gfn, set()).add(a)
        if old & PTE_P:
            mon._host.flush_tlb(vpn)

    def _key(self, vm, pdi: int):
        """The cache key of the guest page table behind directory entry ``pdi``: (its frame,
        the entry's U/W rights), or None when there is none to trace (paging off, a large
        page)."""
        vc = vm.vcpu
        if not vc.cr0 & CR0_PG:
            return None
        pde = vm.phys_read_uint((vc.cr3 & 0xFFFFF000) + 4 * pdi, 4)
        if not pde & PTE_P or (pde & PTE_PS and vc.cr4 & CR4_PSE):
            return None
        return (pde >> 12, pde & (PTE_U | PTE_W))

    def _install(self, vm, pdi: int) -> int:
        """Put a shadow table in shadow directory entry ``pdi``: the cached one of the guest's
        page table, or a fresh one (traced from now on)."""
        mem = self.monitor._host.mem
        key = self._key(vm, pdi)
        pt = vm.tr_cache.get(key) if key is not None else None
        if pt is None:
            if not vm.pool:
                self.flush(vm)       # out of shadow tables: start over
            pt = vm.pool.pop()
            mem[pt:pt + 0x1000] = bytes(0x1000)
            if key is not None:
                vm.tr_cache[key] = pt
                vm.tr_frames.add(key[0])
                self._trace(vm, key[0])
        vm.shadow_pts[pdi] = pt
        _I.pack_into(mem, vm.pd + 4 * pdi, pt | PTE_P | PTE_W | PTE_U | PTE_A)
        return pt

    # ---- a store into a traced page --------------------------------------------------------
    def traced_write(self, vm, lin: int, n: int, value: int, user: bool) -> None:
        """The guest's store (checked and made through its tables), then, if it landed in a
        traced page table or page directory, the shadow brought up to date: each shadow entry
        made from a guest entry written is rewritten from it (A&A §4.3: "reflect this effect
        into the shadow page table"), or dropped when the new entry is not present or not yet
        accessed (the next access refills it)."""
        vm.lin_write(lin, n, value, user)
        k = 0
        while k < n:
            a = (lin + k) & MASK32
            take = min(n - k, 0x1000 - (a & 0xFFF))
            gpa = vm.walk(a, False, user, touch=False)[0]
            gfn = gpa >> 12
            if self._traced(vm, gfn):
                self._sync(vm, gfn, (gpa & 0xFFF) >> 2, ((gpa & 0xFFF) + take - 1) >> 2)
            k += take

    def _sync(self, vm, gfn: int, first: int, last: int) -> None:
        mon = self.monitor
        mem = mon._host.mem
        host = mon._host
        mon.pt_traps["traced write"] += 1
        mon.events["page_walk"] += 2             # the VMM finds the entry through the tables
        mon.events["shadow_update"] += 1
        vm.gdt_src = None                        # the guest's GDT may be mapped elsewhere now
        if gfn == vm.tr_pd:                      # a directory entry: its shadow table goes
            for pdi in range(first, last + 1):
                if vm.shadow_pts.pop(pdi, None) is not None:
                    _I.pack_into(mem, vm.pd + 4 * pdi, 0)
                    host.flush_tlb()
        for (tgfn, rights), pt in vm.tr_cache.items():
            if tgfn != gfn:
                continue
            where = [pdi for pdi, p in vm.shadow_pts.items() if p == pt]
            for i in range(first, last + 1):
                e = self._derive(vm, vm.phys_read_uint((gfn << 12) + 4 * i, 4), rights)
                _I.pack_into(mem, pt + 4 * i, e)
                if e:
                    vm.tr_rmap.setdefault(self._gfn(vm, e), set()).add(pt + 4 * i)
                for pdi in where:
                    host.flush_tlb((pdi << 10) | i)

    def _derive(self, vm, g: int, rights: int) -> int:
        """The shadow entry for guest PTE ``g`` under a directory entry with ``rights``, or 0
        when the guest's entry must be walked first (not present, or its accessed bit clear:
        the hardware would set it on the next access)."""
        if not g & PTE_P or not g & PTE_A:
            return 0
        gfn = g >> 12
        host = vm.host_address(gfn << 12)
        if host is None or host + 0x1000 > vm.slice_base + vm.memory_size:
            return 0
        vc = vm.vcpu
        u = bool(rights & PTE_U and g & PTE_U)
        w = (bool(rights & PTE_W and g & PTE_W) or (not vc.cr0 & CR0_WP and not u)) \
            and bool(g & PTE_D) and not self._traced(vm, gfn)
        return host | PTE_P | PTE_A | PTE_D | (PTE_W if w else 0) | (PTE_U if u else 0)
