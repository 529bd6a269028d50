"""Nested paging (``"ept"``): the guest's page tables are walked by the real MMU as they are, and a
second table per VM, the extended page table (Intel EPT, SDM Vol. 3C 29.3; AMD's NPT), maps
guest-physical to host-physical. The guest changes its mappings and loads CR3 with no exit; the
price is the two-dimensional walk of every TLB miss (``vmkit.machine.mmu``). Used by hw.

The EPT maps the VM's memory when the VM is made, or page by page on the first touch
(``lazy=True``: an EPT violation the mode fills, counted in the monitor's ``ept_fills``).
"""

from __future__ import annotations

import struct

from vmkit.errors import VmkitError
from vmkit.machine.machine import Machine
from vmkit.machine.mmu import NESTED_R, NESTED_W, NESTED_X
from vmkit.vmm import state
from vmkit.vmm.layout import MiB
from vmkit.vmm.paging.mode import PagingMode, PagingView, register

__all__ = ["EPT", "NestedPaging"]

_I = struct.Struct("<I")


class EPT:
    """One VM's extended page table: guest-physical -> host-physical (SDM Vol. 3C, 29.3).

    **Two levels** of 4-byte entries cover the 32-bit guest-physical space (10 + 10 + 12 bits):
    a root table at ``root`` (VT-x: the EPT pointer in the VMCS) and one table per 4 MiB. Bits
    0-2 of an entry are read, write, execute (as in VT-x); bits 12-31 the next table or the
    frame; an access needs its right at both levels. (Real VT-x: four levels of 8-byte entries,
    48-bit guest-physical.) ``levels`` is the m of the walk formula. ``exit(qualification,
    linear, physical)`` raises the monitor's exit for an access the table denies."""

    levels = 2
    RWX = NESTED_R | NESTED_W | NESTED_X

    #: what a snapshot keeps (vmkit.vmm.state); the tables' contents are in host memory
    state_fields = ("tables", "pool")

    def __init__(self, machine: Machine, root: int, pool: list[int], exit=None):
        self.mem = machine.mem
        self.machine = machine
        self.root = root
        self.pool = pool              # free host pages for EPT tables
        self.exit = exit
        self.tables: dict[int, int] = {}
        self.mem[root:root + 0x1000] = bytes(0x1000)

    def state(self) -> dict:
        return state.save(self, "state_fields")

    def set_state(self, st: dict) -> None:
        state.load(self, st)

    def translate(self, gpa: int, access: int) -> int | None:
        """Host-physical address of ``gpa`` for an access needing ``access`` (NESTED_R/W/X),
        or None (a violation). Side-effect free: the walk's references are counted by the MMU."""
        mem = self.mem
        e = _I.unpack_from(mem, self.root + ((gpa >> 20) & 0xFFC))[0]
        if not e & access:
            return None
        e = _I.unpack_from(mem, (e & 0xFFFFF000) | ((gpa >> 10) & 0xFFC))[0]
        if not e & access:
            return None
        return (e & 0xFFFFF000) | (gpa & 0xFFF)

    def rights(self, gpa: int) -> int:
        """The R/W/X rights both levels grant ``gpa`` (0 when not mapped)."""
        mem = self.mem
        e = _I.unpack_from(mem, self.root + ((gpa >> 20) & 0xFFC))[0]
        if not e & 7:
            return 0
        return e & _I.unpack_from(mem, (e & 0xFFFFF000) | ((gpa >> 10) & 0xFFC))[0] & 7

    def map(self, gpa: int, hpa: int, rights: int = RWX) -> None:
        """Map the guest-physical page of ``gpa`` to the host page of ``hpa``."""
        mem = self.mem
        pdi = (gpa >> 22) & 0x3FF
        table = self.tables.get(pdi)
        if table is None:
            if not self.pool:
                raise VmkitError("out of EPT tables in the VM's VMM area")
            table = self.pool.pop(0)
            mem[table:table + 0x1000] = bytes(0x1000)
            self.tables[pdi] = table
            _I.pack_into(mem, self.root + 4 * pdi, table | self.RWX)
        _I.pack_into(mem, table + 4 * ((gpa >> 12) & 0x3FF), (hpa & 0xFFFFF000) | rights)

    def map_range(self, gpa: int, hpa: int, size: int, rights: int = RWX) -> None:
        """Map the guest-physical pages of ``size`` bytes from ``gpa`` (page-aligned) to the
        host pages from ``hpa``: what ``map`` does page by page, in the same order (the same
        tables taken from the pool), a table's entries written at once."""
        mem = self.mem
        end = gpa + size
        while gpa < end:
            pdi = (gpa >> 22) & 0x3FF
            first = (gpa >> 12) & 0x3FF
            n = min(1024 - first, (end - gpa + 0xFFF) >> 12)
            self.map(gpa, hpa, rights)      # the table, if new, and the first entry
            table = self.tables[pdi]
            if n > 1:
                mem[table + 4 * first + 4:table + 4 * (first + n)] = struct.pack(
                    f"<{n - 1}I", *[((hpa + (k << 12)) & 0xFFFFF000) | rights
                                   for k in range(1, n)])
            gpa += n << 12
            hpa += n << 12

    def violation(self, lin: int, gpa: int, access: int, final: bool) -> None:
        """Raise the EPT_VIOLATION exit, with the qualification of SDM Vol. 3C, Table 28-7:
        bits 0-2 the access (read, write, fetch), 3-5 the rights the entries grant, bit 7 a
        guest-linear address is valid, bit 8 the access was to the final translation (0: to
        a guest paging-structure entry)."""
        q = (access & 7) | (self.rights(gpa) << 3) | 0x80 | (0x100 if final else 0)
        self.exit(q, lin, gpa)

    def mappings(self) -> list[tuple[int, int, int]]:
        """(guest-physical page, host-physical page, rights) of every mapped page."""
        out = []
        for pdi, table in sorted(self.tables.items()):
            for k in range(1024):
                e = _I.unpack_from(self.mem, table + 4 * k)[0]
                if e & 7:
                    out.append(((pdi << 22) | (k << 12), e & 0xFFFFF000, e & 7))
        return out


@register
class NestedPaging(PagingMode):
    """Nested paging (see the module text): ``NestedPaging(monitor, lazy=False, exit=...)``,
    ``exit(qualification, linear, physical)`` raising the monitor's EPT-violation exit."""

    name = "ept"
    kind = "nested"
    title = "nested paging (EPT: guest-physical -> host-physical, a 2-D walk per TLB miss)"
    vm_state = ("ept",)

    def __init__(self, monitor, lazy: bool = False, exit=None):
        super().__init__(monitor)
        self.lazy = lazy
        self.exit = exit

    def boot_vm(self, vm) -> None:
        vm.ept = EPT(self.monitor._host, vm.vmm_base,
                     [vm.vmm_base + a for a in range(0x1000, MiB, 0x1000)], self.exit)
        if not self.lazy:
            vm.ept.map_range(0, vm.slice_base, vm.memory_size)

    def root(self, vm) -> int:
        return 0            # the guest's own CR3: an unrestricted guest starts with paging off

    def update_cr3(self, vm, value: int) -> None:
        self.monitor._host.write_cr(3, value)   # the guest's CR3 is the real one

    def switched_in(self, vm) -> None:
        self.monitor._host.nested = vm.ept

    def nested_fault(self, vm, gpa: int) -> bool:
        """Map the page of ``gpa`` if it is the VM's memory and not mapped yet (lazy EPT)."""
        if gpa < vm.memory_size and vm.ept.rights(gpa) == 0:
            page = gpa & 0xFFFFF000
            vm.ept.map(page, vm.slice_base + page)
            self.monitor.ept_fills += 1
            self.monitor.events["shadow_update"] += 1
            return True
        return False

    def view(self, vm) -> PagingView:
        return PagingView(self.kind, vm.ept.root, vm.ept.levels, vm.ept)
