"""One paravirtual guest (:class:`PVVM`): what it registered with the hypervisor, and its memory
through the real page tables (which are its own)."""

from __future__ import annotations

from vmkit.errors import VmkitError
from vmkit.isa.faults import Fault
from vmkit.machine.cpu import MASK32
from vmkit.machine.mmu import PTE_P, PTE_W
from vmkit.vmm.deprivileged.vcpu import TEVM
from vmkit.vmm.pv.abi import _I
from vmkit.vmm.splitdriver import pv_backend
from vmkit.vmm.world import VMStop as _VMStop


class PVVM(TEVM):
    """One paravirtual guest: its memory slice, virtual CPU, devices, and what it registered
    with the hypervisor (``vcpu_info``, the kernel stack, the fast trap). The hypervisor's
    page-table bookkeeping on it (``l1``/``l2``: machine frames validated as page tables and
    directories, ``writable``: machine frame -> writable mappings in validated tables,
    ``bootstrap``) is the paging mode's (:mod:`vmkit.vmm.paging.direct`)."""

    #: what the guest registered, saved and restored with trap-and-emulate's per-VM state
    vm_state = ("vcpu_info", "kernel_ss", "kernel_esp", "fast_trap")

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.vcpu_info: int | None = None     # guest-physical address
        self.kernel_ss = 0
        self.kernel_esp = 0
        self.fast_trap: int | None = None     # the real IDT's gate 0x80 for this VM
        # the split driver's backend, on event channel port 1 (vmkit.vmm.splitdriver)
        self.io_backend = pv_backend

    # ---- guest memory through the real page tables (which are the guest's) ------------------
    def _mwalk(self, lin: int) -> int | None:
        """Machine address of ``lin`` in this VM's current address space, no side effects."""
        cr3 = self.real_cpu.cr3
        mem = self.machine.mem
        lin &= MASK32
        pde = _I.unpack_from(mem, (cr3 & 0xFFFFF000) | ((lin >> 20) & 0xFFC))[0]
        if not pde & PTE_P:
            return None
        a = (pde & 0xFFFFF000) | ((lin >> 10) & 0xFFC)
        if a + 4 > len(mem):
            return None
        pte = _I.unpack_from(mem, a)[0]
        if not pte & PTE_P:
            return None
        return (pte & 0xFFFFF000) | (lin & 0xFFF)

    def guest_physical(self, machine: int) -> int | None:
        g = machine - self.slice_base
        return g if 0 <= g < self.memory_size else None

    def walk(self, lin: int, write: bool = False, user: bool = False,
             touch: bool = True) -> tuple[int, int, bool]:
        m = self.machine
        if touch and self.current:
            pa = m.translate(lin & MASK32, write, user)
        else:
            pa = self._mwalk(lin)
            if pa is None:
                raise Fault(14, (2 if write else 0) | (4 if user else 0), lin & MASK32,
                            "page not present (guest tables)")
        g = self.guest_physical(pa)
        if g is None:
            raise _VMStop("crash", f"guest address {lin:#010x} maps machine address "
                          f"{pa:#010x}, outside the VM's memory")
        return g, PTE_W, True

    def translate(self, lin: int, write: bool = False, user: bool = False) -> int:
        return self.walk(lin, write, user)[0]

    def flush_tlb(self, vpn: int | None = None) -> None:
        pass                                  # the real TLB is the only one

    def lin_read(self, lin: int, n: int, user: bool = False) -> int:
        if self.current:
            return self.machine.lin_read(lin, n, user)
        data = self.peek(lin, n)
        if data is None:
            raise Fault(14, 4 if user else 0, lin & MASK32, "page not present (guest tables)")
        return int.from_bytes(data, "little")

    def lin_write(self, lin: int, n: int, v: int, user: bool = False) -> None:
        if not self.current:
            raise VmkitError("cannot write the memory of a VM that is not running")
        self.machine.lin_write(lin, n, v, user)

    def peek(self, lin: int, n: int) -> bytes | None:
        out, k = bytearray(), 0
        mem = self.machine.mem
        while k < n:
            a = (lin + k) & MASK32
            take = min(n - k, 0x1000 - (a & 0xFFF))
            pa = self._mwalk(a)
            if pa is None or self.guest_physical(pa) is None:
                return None
            out += mem[pa:pa + take]
            k += take
        return bytes(out)
