"""Trap-and-emulate's virtual CPU and per-VM object (:class:`TEVM`): the guest's CPU as it
believes it is, its memory through its own page tables, its descriptors and ports."""

from __future__ import annotations

import struct

from vmkit.machine.cpu import MASK32, TableReg
from vmkit.machine.machine import BOOT_GDT, Machine
from vmkit.machine.rules import Descriptor, code_segment, stack_segment
from vmkit.vmm import state
from vmkit.vmm.deprivileged.checks import checked
from vmkit.vmm.layout import V_GDT
from vmkit.vmm.vcpu import RealBackedCPU
from vmkit.vmm.vm import GuestVM

IF, IOPL, TF, NT, RF, VM_FLAG = 0x200, 0x3000, 0x100, 0x4000, 0x10000, 0x20000
CR4_TSD, CR4_UMIP = 1 << 2, 1 << 11
REAL_CR0 = 0x80010011      # PG | WP | ET | PE: the VMM always pages, and respects read-only
#: guest CR4 bits the real CR4 copies: with them the unprivileged instructions they guard trap
REAL_CR4_FROM_GUEST = CR4_TSD | CR4_UMIP

_Q = struct.Struct("<Q")
_I = struct.Struct("<I")
_DWORDS = {n: struct.Struct(f"<{n}I") for n in range(1, 7)}


# =================================================================================================
# The virtual CPU
# =================================================================================================
class VirtualCPU(RealBackedCPU):
    """The CPU as the guest believes it is (the interface :class:`vmkit.vmm.vcpu.VCPU`).

    General registers and EIP are the real CPU's while the VM runs (the guest's code runs on
    them directly) or the saved copy while another VM has the CPU. Everything the guest may not
    touch directly is virtual: ``cr0 cr2 cr3 cr4``, ``gdtr idtr ldtr tr``, ``IF`` and ``iopl``
    (the real IF is always 1 and the real IOPL 0 while a guest runs), ``cpl`` (0 while the real
    CPL is 1) and ``halted``. ``eflags`` combines the real flags with the virtual IF and IOPL;
    ``cs`` and ``ss`` show the selectors the guest loaded (real RPL 1 shown as 0).
    """

    #: what a snapshot keeps of the virtual CPU (vmkit.vmm.state); the general registers and
    #: EIP are the real CPU's, saved with it
    state_fields = ("cr0", "cr2", "cr3", "cr4", "gdtr", "idtr", "ldtr", "tr", "IF", "iopl", "cpl",
                    "halted")

    def __init__(self, vm: "TEVM"):
        super().__init__(vm)
        self.cr0 = 0x00000011      # as the machine powers on: PE, ET; paging off
        self.cr2 = 0
        self.cr3 = 0
        self.cr4 = 0
        self.gdtr = TableReg(BOOT_GDT, 23)
        self.idtr = TableReg(0, 0)
        self.ldtr = TableReg()
        self.tr = TableReg()
        self.IF = 0
        self.iopl = 0
        self.cpl = 0
        self.halted = False

    def state(self) -> dict:
        return state.save(self, "state_fields")

    def set_state(self, st: dict) -> None:
        state.load(self, st)

    @property
    def eflags(self) -> int:
        """The real EFLAGS with the virtual IF and IOPL in place of the real ones."""
        return (self._real.eflags & ~(IF | IOPL)) | (self.IF << 9) | (self.iopl << 12)

    @eflags.setter
    def eflags(self, v: int) -> None:
        """Set the guest's EFLAGS: IF and IOPL go to the virtual CPU, the rest to the real one
        (whose IF stays 1 and IOPL 0, so the VMM keeps the interrupts and the ports)."""
        self.IF = (v >> 9) & 1
        self.iopl = (v >> 12) & 3
        self._real.eflags = (v & ~IOPL) | IF

    def _believed(self, index: int) -> int:
        s = self._real.seg[index].selector
        # the kernel's CS and SS carry RPL 1 in the real CPU; natively they carry its CPL, 0
        return s & ~3 if self.cpl == 0 and s & 3 == 1 else s

    @property
    def cs(self) -> int:
        return self._believed(1)

    @property
    def ss(self) -> int:
        return self._believed(2)


# =================================================================================================
# One VM: the core's (vmkit.vmm.vm), with the virtual CPU, the VMM's TLB, the shadow GDT
# =================================================================================================
class TEVM(GuestVM):
    """One guest under trap-and-emulate. Handlers (``emulate[...]``) receive this object:

    * ``vm.vcpu`` the virtual CPU, ``vm.devices`` its own :class:`Devices` (console, interrupt
      controller, timer, input, power-off), ``vm.monitor`` the VMM, ``vm.clock`` its guest time;
    * ``vm.lin_read(lin, n)`` / ``vm.lin_write(lin, n, value)``: guest-linear memory with the
      guest's paging, as the CPU would access it (accessed/dirty bits set, #PF raised as a
      ``Fault``), as ``Machine.lin_read``/``lin_write`` (``vm.read``/``vm.write``: old names);
    * ``vm.value(operand)`` / ``vm.store(operand, value)`` / ``vm.address(mem_operand)``:
      operands of the decoded instruction;
    * ``vm.port_in/port_out``, ``vm.io_check``, ``vm.set_cr/read_cr``, ``vm.load_gdt``,
      ``vm.load_ss``, ``vm.descriptor``, ``vm.invlpg``: what the default handlers use.
    """

    #: trap-and-emulate's own per-VM state, saved and restored with the core's (vmkit.vmm.vm)
    vm_state = ("_vcpu", "inhibit_until", "tlb", "gdt_copy", "gdt_shadowed")

    def __init__(self, index: int, image, machine: Machine, monitor, slice_base: int,
                 vmm_base: int):
        super().__init__(index, image, machine, monitor, slice_base, vmm_base)
        self._vcpu = VirtualCPU(self)
        self.gdt_base = vmm_base + V_GDT          # its shadow GDT (host-physical)
        self.inhibit_until = -1                   # virtual STI shadow, in ``steps``
        # the VMM's own TLB for its accesses to guest memory (frames, gates, the TSS), by
        # access class as the hardware's; flushed with the shadow tables
        self.tlb = {(w, u): {} for w in (False, True) for u in (False, True)}
        # shadow GDT bookkeeping: the guest table's bytes when shadowed, and where they are
        self.gdt_copy = b""
        self.gdt_shadowed = 0                     # bytes of real GDT written from the guest's
        self.gdt_src: list | None = None          # [(host address, length)] of the guest table
        # the guest's protection checks remembered with the reads they made (checks.py)
        self.checks: dict = {}

    def load_state(self, saved: dict) -> None:
        super().load_state(saved)
        self.gdt_src = None           # where the guest's table lies: found again when needed

    # ---- guest-linear memory through the VMM's TLB ------------------------------------------
    def translate(self, lin: int, write: bool = False, user: bool = False) -> int:
        """Guest-linear -> guest-physical for an access, through the VMM's TLB: a miss walks
        the guest's tables (accessed/dirty bits, #PF), as the hardware's TLB miss does."""
        t = self.tlb[write, user]
        frame = t.get(lin >> 12)
        if frame is None:
            frame = self.walk(lin, write, user)[0] & 0xFFFFF000
            t[lin >> 12] = frame
        return frame | (lin & 0xFFF)

    def lin_read(self, lin: int, n: int, user: bool = False) -> int:
        """``GuestVM.lin_read``; a hit in the VMM's TLB on one page reads the host memory at
        once (the gate, the descriptors, the TSS and the frame of every reflection read so)."""
        if (lin & 0xFFF) + n <= 0x1000:
            frame = self.tlb[False, user].get(lin >> 12)
            if frame is not None:
                gpa = frame | (lin & 0xFFF)
                m = self.machine
                if gpa + n <= self.memory_size and not m.watched_pages:
                    a = self.slice_base + gpa
                    return int.from_bytes(m.mem[a:a + n], "little")
        return super().lin_read(lin, n, user)

    def lin_write(self, lin: int, n: int, v: int, user: bool = False) -> None:
        """``GuestVM.lin_write``; a hit in the VMM's TLB on one page writes the host memory at
        once (through ``Machine.phys_write`` where compiled code lies, for its invalidation)."""
        if (lin & 0xFFF) + n <= 0x1000:
            frame = self.tlb[True, user].get(lin >> 12)
            if frame is not None:
                gpa = frame | (lin & 0xFFF)
                m = self.machine
                if gpa + n <= self.memory_size and not m.watched_pages:
                    a = self.slice_base + gpa
                    data = (v & ((1 << (8 * n)) - 1)).to_bytes(n, "little")
                    if a >> 12 in m.code_pages:
                        m.phys_write(a, data, "vmm")
                    else:
                        m.mem[a:a + n] = data
                    return
        super().lin_write(lin, n, v, user)

    def lin_read_dwords(self, lin: int, count: int, user: bool = False) -> tuple:
        """``count`` dwords from guest-linear ``lin`` up, as ``lin_read(lin + 4 * i, 4)`` one
        after the other; on one page that the VMM's TLB maps, in one load (a popped frame)."""
        got = self.dwords_hit(lin, count, user)
        if got is not None:
            return got
        return tuple(self.lin_read((lin + 4 * i) & MASK32, 4, user) for i in range(count))

    def dwords_hit(self, lin: int, count: int, user: bool = False) -> tuple | None:
        """``lin_read_dwords`` when its one load serves (one page that the VMM's TLB maps, no
        watched memory): a read with no side effect at all; else None."""
        n = 4 * count
        if (lin & 0xFFF) + n <= 0x1000 and count in _DWORDS:
            frame = self.tlb[False, user].get(lin >> 12)
            if frame is not None:
                gpa = frame | (lin & 0xFFF)
                m = self.machine
                if gpa + n <= self.memory_size and not m.watched_pages:
                    return _DWORDS[count].unpack_from(m.mem, self.slice_base + gpa)
        return None

    def push_frame(self, esp: int, values: list) -> int:
        """Push ``values`` (first the highest) onto the guest stack below ``esp`` as supervisor
        writes, as ``lin_write`` one by one; -> the new ESP. On one page that the VMM's TLB
        maps for writing they go in one store (a reflection's frame)."""
        n = 4 * len(values)
        low = (esp - n) & MASK32
        if (low & 0xFFF) + n <= 0x1000 and len(values) in _DWORDS:
            frame = self.tlb[True, False].get(low >> 12)
            if frame is not None:
                gpa = frame | (low & 0xFFF)
                m = self.machine
                if gpa + n <= self.memory_size and not m.watched_pages:
                    a = self.slice_base + gpa
                    pack = _DWORDS[len(values)].pack
                    try:        # the values are 32-bit already (masking each: 40 bytecodes)
                        data = pack(*values[::-1])
                    except struct.error:
                        data = pack(*[v & MASK32 for v in reversed(values)])
                    if a >> 12 in m.code_pages:
                        m.phys_write(a, data, "vmm")
                    else:
                        m.mem[a:a + n] = data
                    return low
        for v in values:
            esp = (esp - 4) & MASK32
            self.lin_write(esp, 4, v & MASK32)
        return esp

    # ---- the guest's checks, remembered (vmkit.vmm.deprivileged.checks) ----------------------
    def check_code(self, selector: int, new_cpl: int, fault: int = 13) -> Descriptor:
        """``GuestVM.check_code``, remembered with the descriptor it read."""
        g, l = self._vcpu.gdtr, self._vcpu.ldtr
        return checked(self, (code_segment, selector, new_cpl, fault, g.base, g.limit,
                              l.selector, l.base, l.limit), code_segment, selector, new_cpl,
                       fault)

    def stack_descriptor(self, selector: int, ring: int, fault: int = 13) -> Descriptor:
        """``GuestVM.stack_descriptor``, remembered with the descriptor it read."""
        g, l = self._vcpu.gdtr, self._vcpu.ldtr
        return checked(self, (stack_segment, selector, ring, fault, g.base, g.limit,
                              l.selector, l.base, l.limit), stack_segment, selector, ring,
                       fault)

    def flush_tlb(self, vpn: int | None = None) -> None:
        for t in self.tlb.values():
            if vpn is None:
                t.clear()
            else:
                t.pop(vpn, None)

    def irq_shadow(self) -> None:
        """STI: interrupts wait until the instruction after it has retired too (called before
        the STI itself is counted, as ``Machine.irq_shadow``)."""
        self.inhibit_until = self.steps + 2

    def set_accessed(self, selector: int, d: Descriptor) -> None:
        """Set the accessed bit in the guest's descriptor, as the CPU does on a load."""
        if not d.system and not d.access & 1:
            vc = self._vcpu
            table = vc.ldtr if selector & 4 else vc.gdtr
            self.lin_write(table.base + (selector & 0xFFF8) + 5, 1, d.access | 1)
            self.monitor._sync_gdt(self)

    def set_cr(self, n: int, v: int) -> None:
        self.monitor.write_cr(self, n, v)

    def load_gdt(self, base: int, limit: int) -> None:
        self._vcpu.gdtr = TableReg(base & MASK32, limit & 0xFFFF)
        self.monitor.shadow_gdt(self)

    def load_ss(self, selector: int) -> None:
        """MOV/POP SS at virtual CPL 0: the guest's checks, then the real SS gets the ring-1
        form of its selector (RPL 1), whose shadow descriptor has DPL 1."""
        d = self.stack_descriptor(selector, self._vcpu.cpl)
        self.set_accessed(selector, d)
        self.monitor._load_real_segment(self, 2, selector)

    def invlpg(self, lin: int) -> None:
        self.monitor.invlpg(self, lin)

