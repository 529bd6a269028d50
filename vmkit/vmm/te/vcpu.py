"""Trap-and-emulate's virtual CPU and per-VM object (:class:`TEVM`): the guest's CPU as it
believes it is, its memory through its own page tables, its descriptors and ports."""

from __future__ import annotations

import struct

from vmkit.isa.decode import GPR_NAMES, Imm, Mem, Reg
from vmkit.isa.faults import Fault
from vmkit.machine import rules
from vmkit.machine.cpu import CPU, EFLAGS, MASK32, TableReg
from vmkit.machine.devices import Devices
from vmkit.machine.machine import BOOT_GDT, Machine
from vmkit.machine.mmu import CR0_PG, CR0_WP, CR4_PSE, PTE_A, PTE_D, PTE_P, PTE_PS, PTE_U, PTE_W
from vmkit.machine.rules import Descriptor
from vmkit.trace import PortIO
from vmkit.vmm.base import VM
from vmkit.vmm.layout import V_GDT, V_PD, V_POOL, MiB
from vmkit.vmm.world import HostedMonitor
from vmkit.vmm.world import VMStop as _VMStop

IF, IOPL, TF, NT, RF, VM_FLAG = 0x200, 0x3000, 0x100, 0x4000, 0x10000, 0x20000
CR4_TSD, CR4_UMIP = 1 << 2, 1 << 11
REAL_CR0 = 0x80010011      # PG | WP | ET | PE: the VMM always pages, and respects read-only
#: guest CR4 bits the real CR4 copies: with them the unprivileged instructions they guard trap
REAL_CR4_FROM_GUEST = CR4_TSD | CR4_UMIP

DEFAULT_SLICE = 20_000
"""Host instructions a VM runs before the VMM's timer switches to the next one (several VMs).
Two timer periods of the default guest timer: long enough that a world switch (thousands of
cycles, see the cost model) stays a small share of the time, short enough that two guests of the
kit's default sizes are interleaved many times."""

_Q = struct.Struct("<Q")
_I = struct.Struct("<I")


class NotEmulated(Exception):
    """Raised by a handler: this fault was not caused by deprivileging (the guest erred, as it
    would natively); the VMM reflects the original fault into the guest."""


class CannotEmulate(_VMStop):
    """Raised by a handler: the VMM cannot virtualize this; the VM ends (reason "crash")."""

    def __init__(self, detail: str):
        super().__init__("crash", detail)


# =================================================================================================
# The virtual CPU
# =================================================================================================
def _gpr(i: int):
    def get(self):
        return self._real.regs[i]

    def set_(self, v):
        self._real.regs[i] = v & MASK32
    return property(get, set_, doc=f"{GPR_NAMES[i]}: the real register (guest code runs on it)")


class VirtualCPU:
    """The CPU as the guest believes it is.

    General registers and EIP are the real CPU's while the VM runs (the guest's code runs on
    them directly) or the saved copy while another VM has the CPU. Everything the guest may not
    touch directly is virtual: ``cr0 cr2 cr3 cr4``, ``gdtr idtr ldtr tr``, ``IF`` and ``iopl``
    (the real IF is always 1 and the real IOPL 0 while a guest runs), ``cpl`` (0 while the real
    CPL is 1) and ``halted``. ``eflags`` combines the real flags with the virtual IF and IOPL;
    ``cs`` and ``ss`` show the selectors the guest loaded (real RPL 1 shown as 0).

    Attribute names match :class:`vmkit.machine.cpu.CPU` for what widgets and tests read.
    """

    def __init__(self, vm: "TEVM"):
        self._vm = vm
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

    @property
    def _real(self) -> CPU:
        return self._vm.real_cpu

    @property
    def regs(self) -> list:
        return self._real.regs

    @property
    def eip(self) -> int:
        return self._real.eip

    @eip.setter
    def eip(self, v: int) -> None:
        self._real.eip = v & MASK32

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

    @property
    def flags(self) -> EFLAGS:
        return EFLAGS(self.eflags)

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

    @property
    def ds(self) -> int:
        return self._real.seg[3].selector

    @property
    def es(self) -> int:
        return self._real.seg[0].selector

    @property
    def fs(self) -> int:
        return self._real.seg[4].selector

    @property
    def gs(self) -> int:
        return self._real.seg[5].selector

    @property
    def paging(self) -> bool:
        return bool(self.cr0 & CR0_PG)

    def __repr__(self) -> str:
        r = " ".join(f"{n}={v:08x}" for n, v in zip(GPR_NAMES, self.regs))
        return (f"<VirtualCPU vm{self._vm.index} {r} eip={self.eip:08x} "
                f"eflags={self.eflags:08x} cpl={self.cpl} (real cpl {self._real.cpl})>")


for _i, _n in enumerate(GPR_NAMES):
    setattr(VirtualCPU, _n, _gpr(_i))
del _i, _n


# =================================================================================================
# One VM: its slice of memory, virtual CPU, devices, shadow tables
# =================================================================================================
class TEVM(VM):
    """One guest under trap-and-emulate. Handlers (``emulate[...]``) receive this object:

    * ``vm.vcpu`` the virtual CPU, ``vm.devices`` its own :class:`Devices` (console, interrupt
      controller, timer, input, power-off), ``vm.monitor`` the VMM, ``vm.clock`` its guest time;
    * ``vm.read(lin, n)`` / ``vm.write(lin, n, value)``: guest-linear memory with the guest's
      paging, as the CPU would access it (accessed/dirty bits set, #PF raised as a ``Fault``);
    * ``vm.value(operand)`` / ``vm.store(operand, value)`` / ``vm.address(mem_operand)``:
      operands of the decoded instruction;
    * ``vm.port_in/port_out``, ``vm.io_check``, ``vm.set_cr/read_cr``, ``vm.load_gdt``,
      ``vm.load_ss``, ``vm.descriptor``, ``vm.invlpg``: what the default handlers use.
    """

    def __init__(self, index: int, image, machine: Machine, monitor: HostedMonitor,
                 slice_base: int, vmm_base: int):
        super().__init__(index, image, machine)
        self.monitor = monitor
        self.slice_base = slice_base
        self.memory_size = image.memory_size
        self.vmm_base = vmm_base                  # this VM's part of the VMM area
        self.gdt_base = vmm_base + V_GDT          # its shadow GDT (host-physical)
        self.pd = vmm_base + V_PD                 # its shadow page directory
        self.devices = Devices(input=bytes(image.input))
        self.port_handlers: dict = {}             # extra virtual devices: port -> (read, write)
        self._vcpu = VirtualCPU(self)
        self.saved = CPU()                        # the real CPU state while another VM runs
        self._clock = 0
        self.tick_steps: list[int] = []   # its instruction count at each timer tick delivered
        self.steps = 0                            # guest instructions retired (emulated too)
        self.inhibit_until = -1                   # virtual STI shadow, in ``steps``
        self.pending: tuple | None = None         # (reason, detail): stop at the next chance
        # shadow paging bookkeeping
        self.pool = [vmm_base + a for a in range(V_POOL, MiB, 0x1000)]
        self.shadow_pts: dict[int, int] = {}      # page directory index -> shadow page table
        # the VMM's own TLB for its accesses to guest memory (frames, gates, the TSS), by
        # access class as the hardware's; flushed with the shadow tables
        self.tlb = {(w, u): {} for w in (False, True) for u in (False, True)}
        self.sinks: set[int] = set()              # pages mapped to the all-ones page
        # shadow GDT bookkeeping: the guest table's bytes when shadowed, and where they are
        self.gdt_copy = b""
        self.gdt_shadowed = 0                     # bytes of real GDT written from the guest's
        self.gdt_src: list | None = None          # [(host address, length)] of the guest table

    # ---- identity -------------------------------------------------------------------------
    @property
    def vcpu(self) -> VirtualCPU:
        return self._vcpu

    @property
    def console(self) -> str:
        return self.devices.console_text()

    @property
    def stopped(self) -> bool:
        return self.result is not None

    @property
    def current(self) -> bool:
        return self.monitor.current == self.index

    @property
    def real_cpu(self) -> CPU:
        """The real CPU if this VM has it, else its saved state."""
        return self.machine.cpu if self.current else self.saved

    @property
    def clock(self) -> int:
        """Guest time: instructions this VM retired (emulated ones too) plus idle time."""
        return self.machine.clock if self.current else self._clock

    # ---- guest-physical memory ------------------------------------------------------------
    def host_address(self, gpa: int) -> int | None:
        """Host-physical address of guest-physical ``gpa`` (None beyond the VM's memory)."""
        return self.slice_base + gpa if 0 <= gpa < self.memory_size else None

    def phys_read(self, gpa: int, n: int) -> int:
        """n bytes of guest-physical memory, little-endian (all ones beyond its end)."""
        if gpa + n <= self.memory_size:
            a = self.slice_base + gpa
            return int.from_bytes(self.machine.mem[a:a + n], "little")
        return int.from_bytes(bytes(self.machine.mem[self.slice_base + gpa + k]
                                    if gpa + k < self.memory_size else 0xFF
                                    for k in range(n)), "little")

    def phys_write(self, gpa: int, n: int, v: int) -> None:
        """Write guest-physical memory (bytes beyond its end are dropped)."""
        data = (v & ((1 << (8 * n)) - 1)).to_bytes(n, "little")
        keep = max(0, min(n, self.memory_size - gpa))
        if keep:
            self.machine.phys_write(self.slice_base + gpa, data[:keep])

    def memory(self) -> bytes:
        """The VM's whole guest-physical memory."""
        return bytes(self.machine.mem[self.slice_base:self.slice_base + self.memory_size])

    # ---- the guest's paging ---------------------------------------------------------------
    def walk(self, lin: int, write: bool = False, user: bool = False,
             touch: bool = True) -> tuple[int, int, bool]:
        """Walk the guest's page tables for an access (SDM Vol. 3A, 4.3), exactly as the
        hardware's page walk: -> (guest-physical address, effective U/W flags, dirty).

        With ``touch`` the accessed bits (and the dirty bit for a write) are set as the
        hardware sets them, and a denied access raises the guest's #PF (CR2 set); without it
        the walk is a side-effect-free peek (a denied access still raises)."""
        vc = self._vcpu
        lin &= MASK32
        if not vc.cr0 & CR0_PG:
            return lin, PTE_U | PTE_W, True
        err = (2 if write else 0) | (4 if user else 0)
        pde_a = (vc.cr3 & 0xFFFFF000) | ((lin >> 20) & 0xFFC)
        pde = self.phys_read(pde_a, 4)
        if not pde & PTE_P:
            self._pf(lin, err, touch)
        if pde & PTE_PS and vc.cr4 & CR4_PSE:
            pte_a = pte = None
            flags = pde
            frame = (pde & 0xFFC00000) | (lin & 0x3FF000)
        else:
            pte_a = (pde & 0xFFFFF000) | ((lin >> 10) & 0xFFC)
            pte = self.phys_read(pte_a, 4)
            if not pte & PTE_P:
                self._pf(lin, err, touch)
            flags = pde & pte
            frame = pte & 0xFFFFF000
        if user and not flags & PTE_U:
            self._pf(lin, err | 1, touch)
        if write and not flags & PTE_W and (user or vc.cr0 & CR0_WP):
            self._pf(lin, err | 1, touch)
        if touch:  # exactly the writes of MMUMixin._walk
            if not pde & PTE_A or (pte is None and write and not pde & PTE_D):
                pde |= PTE_A | (PTE_D if pte is None and write else 0)
                self.phys_write(pde_a, 4, pde)
            if pte is not None and (not pte & PTE_A or (write and not pte & PTE_D)):
                pte |= PTE_A | (PTE_D if write else 0)
                self.phys_write(pte_a, 4, pte)
        dirty = bool((pde if pte is None else pte) & PTE_D)
        return frame | (lin & 0xFFF), flags & (PTE_U | PTE_W), dirty

    def _pf(self, lin: int, err: int, touch: bool):
        if touch:
            self._vcpu.cr2 = lin   # the hardware sets CR2 when the walk fails
        raise Fault(14, err, lin, ("protection violation" if err & 1 else "page not present")
                    + (" on write" if err & 2 else " on read") + (" from user mode" if err & 4
                                                                   else "") + " (guest tables)")

    # ---- guest-linear memory, as the CPU accesses it ---------------------------------------
    def translate(self, lin: int, write: bool = False, user: bool = False) -> int:
        """Guest-linear -> guest-physical for an access, through the VMM's TLB: a miss walks
        the guest's tables (accessed/dirty bits, #PF), as the hardware's TLB miss does."""
        t = self.tlb[write, user]
        frame = t.get(lin >> 12)
        if frame is None:
            frame = self.walk(lin, write, user)[0] & 0xFFFFF000
            t[lin >> 12] = frame
        return frame | (lin & 0xFFF)

    def flush_tlb(self, vpn: int | None = None) -> None:
        for t in self.tlb.values():
            if vpn is None:
                t.clear()
            else:
                t.pop(vpn, None)

    def read(self, lin: int, n: int, user: bool = False) -> int:
        """n bytes at guest-linear ``lin`` (supervisor access unless ``user``), little-endian."""
        out, k = 0, 0
        while k < n:
            a = (lin + k) & MASK32
            take = min(n - k, 0x1000 - (a & 0xFFF))
            out |= self.phys_read(self.translate(a, False, user), take) << (8 * k)
            k += take
        return out

    def write(self, lin: int, n: int, v: int, user: bool = False) -> None:
        """Write n bytes at guest-linear ``lin``; every page is checked before any is written."""
        parts, k = [], 0
        while k < n:
            a = (lin + k) & MASK32
            take = min(n - k, 0x1000 - (a & 0xFFF))
            parts.append((self.translate(a, True, user), take, k))
            k += take
        for gpa, take, k in parts:
            self.phys_write(gpa, take, v >> (8 * k))

    def peek(self, lin: int, n: int) -> bytes | None:
        """Guest-linear bytes without side effects (None if unmapped)."""
        out, k = bytearray(), 0
        try:
            while k < n:
                a = (lin + k) & MASK32
                take = min(n - k, 0x1000 - (a & 0xFFF))
                gpa = self.walk(a, touch=False)[0]
                out += self.phys_read(gpa, take).to_bytes(take, "little")
                k += take
        except Fault:
            return None
        return bytes(out)

    # ---- operands of the decoded instruction ----------------------------------------------
    def address(self, m: Mem) -> int:
        """Linear address of a memory operand (flat segments: base 0)."""
        r = self._vcpu.regs
        a = m.disp
        if m.base is not None:
            a += r[m.base]
        if m.index is not None:
            a += r[m.index] * m.scale
        return a & MASK32

    def value(self, op, size: int | None = None) -> int:
        """The value of an operand: immediate, general register or guest memory."""
        if isinstance(op, Imm):
            return op.value
        if isinstance(op, Reg) and op.kind == "gpr":
            v = self._vcpu.regs[op.index]
            if op.size == 4:
                return v
            if op.size == 2:
                return v & 0xFFFF
            return (v >> 8) & 0xFF if op.high else v & 0xFF
        if isinstance(op, Mem):
            return self.read(self.address(op), size or op.size, user=self._vcpu.cpl == 3)
        raise NotEmulated(f"operand {op!r}")

    def store(self, op, v: int) -> None:
        """Write an operand: general register (8/16/32 bits) or guest memory."""
        if isinstance(op, Reg) and op.kind == "gpr":
            r, i = self._vcpu.regs, op.index
            if op.size == 4:
                r[i] = v & MASK32
            elif op.size == 2:
                r[i] = (r[i] & 0xFFFF0000) | (v & 0xFFFF)
            elif op.high:
                r[i] = (r[i] & 0xFFFF00FF) | ((v & 0xFF) << 8)
            else:
                r[i] = (r[i] & 0xFFFFFF00) | (v & 0xFF)
        elif isinstance(op, Mem):
            self.write(self.address(op), op.size, v, user=self._vcpu.cpl == 3)
        else:
            raise NotEmulated(f"operand {op!r}")

    # ---- virtual devices ------------------------------------------------------------------
    def io_check(self, port: int, size: int) -> None:
        """#GP(0) unless the *guest* allows this port: virtual CPL <= virtual IOPL, or the
        guest TSS's I/O bitmap clears every bit (SDM Vol. 1, 19.5)."""
        vc = self._vcpu
        why = rules.io_denied(self, vc.cpl, vc.iopl, vc.tr, port, size)
        if why is not None:
            raise Fault(13, 0, detail=f"{why} (the guest's)")

    def port_in(self, port: int, size: int) -> int:
        h = self.port_handlers.get(port)
        v = h[0](size) if h else self.devices.read(port, size, self.clock)
        self.monitor.trace.add(PortIO(self.clock, port=port, size=size, value=v,
                                      direction="in", vm=self.index))
        return v

    def port_out(self, port: int, size: int, value: int) -> None:
        self.monitor.trace.add(PortIO(self.clock, port=port, size=size, value=value,
                                      direction="out", vm=self.index))
        h = self.port_handlers.get(port)
        if h:
            h[1](size, value)
        else:
            self.devices.write(port, size, value, self.clock)

    def irq_shadow(self) -> None:
        """STI: interrupts wait until the instruction after it has retired too (called before
        the STI itself is counted, as ``Machine.irq_shadow``)."""
        self.inhibit_until = self.steps + 2

    # ---- descriptors as the guest sees them ------------------------------------------------
    def descriptor(self, selector: int, fault: int = 13) -> Descriptor:
        """The guest's own descriptor for ``selector`` (from its GDT or LDT in guest memory)."""
        vc = self._vcpu
        table = vc.ldtr if selector & 4 else vc.gdtr
        off = selector & 0xFFF8
        if (selector & 4 and not vc.ldtr.selector) or off + 7 > table.limit:
            raise Fault(fault, selector & 0xFFFC, detail=f"selector {selector:#x} beyond the "
                        f"guest's {'LDT' if selector & 4 else 'GDT'} limit")
        return Descriptor.parse(self.read(table.base + off, 8))

    def set_accessed(self, selector: int, d: Descriptor) -> None:
        """Set the accessed bit in the guest's descriptor, as the CPU does on a load."""
        if not d.system and not d.access & 1:
            vc = self._vcpu
            table = vc.ldtr if selector & 4 else vc.gdtr
            self.write(table.base + (selector & 0xFFF8) + 5, 1, d.access | 1)
            self.monitor._sync_gdt(self)

    def check_code(self, selector: int, new_cpl: int, fault: int = 13) -> Descriptor:
        """The checks of a code-segment load at virtual CPL ``new_cpl`` (guest descriptors)."""
        return rules.code_segment(self, selector, new_cpl, fault)

    def stack_descriptor(self, selector: int, ring: int, fault: int = 13) -> Descriptor:
        """The checks of an SS load for virtual ring ``ring`` (guest descriptors)."""
        return rules.stack_segment(self, selector, ring, fault)

    # ---- the interface of vmkit.machine.rules, on the guest's tables -----------------------
    def read_descriptor(self, selector: int, fault: int = 13) -> Descriptor:
        return self.descriptor(selector, fault)

    def lin_read(self, lin: int, n: int) -> int:
        return self.read(lin, n)

    # ---- what the default handlers delegate to the VMM -----------------------------------
    def read_cr(self, n: int) -> int:
        if n not in (0, 2, 3, 4):
            raise Fault(6, detail=f"cr{n} does not exist")
        return getattr(self._vcpu, f"cr{n}")

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

    def __repr__(self) -> str:
        r = self.result.reason if self.result else "running"
        return f"<TEVM {self.index} {self.image.name} {r}>"
