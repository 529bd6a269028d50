"""Trap-and-emulate: the classic virtual machine monitor (Popek & Goldberg, CACM 1974) on x86.

The VMM is the only ring-0 software. It owns the real IDT, GDT, TSS and page tables; the guest
kernel runs in **ring 1** and its user programs in ring 3, on the same guest bytes as under
``Native``. Three mechanisms do all the work:

**Trap and emulate.** Every privileged instruction the ring-1 kernel executes (lgdt lidt lldt
ltr lmsw clts invlpg hlt, mov to/from CRn) faults with #GP(0), and so do cli/sti/in/out,
because the real IOPL is 0 and the VMM's TSS has an I/O bitmap that denies every port. The
VMM decodes the instruction and runs a handler from :attr:`TrapAndEmulate.emulate` on the
*virtual* CPU (``vm.vcpu``: the guest's CR0/CR2/CR3/CR4, GDTR/IDTR/LDTR/TR, its IF and IOPL,
virtual CPL 0) and on the VM's own devices, then resumes the guest after the instruction.

**Reflection.** Exceptions, ``int 0x80`` and device interrupts reach the VMM first (through
``Machine.exception_hook``, which stands for the real IDT's gates into the VMM). The VMM
delivers them into the guest kernel through the guest's own IDT, building exactly the frame
the guest expects (EFLAGS with the *virtual* IF and IOPL, CS as the guest believes it: 0x08,
not the real 0x09). Virtual interrupts wait while the virtual IF is clear.

**Shadow structures.** The real GDT is a shadow of the guest's: code and data descriptors
with DPL 0 become DPL 1, so the ring-1 kernel can use its own selectors. The real page tables
are a shadow of the guest's (guest-virtual -> host-physical), filled on *hidden* page faults
that the guest never sees. Guest-physical memory is the VM's slice of host memory.

How the virtual IF stays right
------------------------------
The virtual IF changes when the guest runs cli/sti (they trap: emulated), when an interrupt
gate is reflected (the VMM clears it), and when the guest's kernel returns with iretd. An
iretd that stays in the kernel (to a frame with CS RPL 0) faults at ring 1 (RPL < CPL) and is
emulated, loading IF and IOPL from the popped image. The kernel's iretd *to ring 3*, however,
is a legal outward return: it does not trap, and at CPL 1 > IOPL 0 the CPU silently keeps the
real IF (= 1). The VMM learns of that ring change through ``Machine.ring_hook`` and then
**peeks at the EFLAGS image the iretd just popped**, still in guest memory at
``machine.iret_frame + 8``, and loads the virtual IF and IOPL from it as a ring-0 iretd would
have. That is exact: the guest's memory and the frame are unchanged by the pop. (Real hardware
gives a ring-1 VMM no such notification; VMware avoided the problem with binary translation,
Xen by making the return a hypercall. A real trap-and-emulate VMM would assume "user mode
always runs with interrupts on", which is what this kernel does, but not every guest.)
``popfd`` in ring 1 is the case the VMM cannot see at all: it changes the real flags it may
and drops IF silently, without a trap, so the virtual IF goes stale: the reason x86 is not
classically virtualizable (the ``nonvirt-popf`` demonstration).

Shadow page tables: a virtual TLB
---------------------------------
The shadow page tables act as a software TLB that the VMM fills on demand and drops exactly
when the guest's hardware TLB would be flushed. CR3 loads and invlpg are privileged, so they
trap: a CR3 load (or a change of CR0.PG/WP or CR4.PSE) drops all of the VM's shadow entries and
invlpg drops one. Nothing else needs tracking, because the guest must flush after changing a
mapping on native hardware too. A real #PF on a missing shadow entry makes the VMM walk the
*guest's* page tables with the guest's rights (user = virtual CPL 3, CR0.WP as the guest set
it). If the guest mapping allows the access, the fault is hidden: the VMM sets the guest's
accessed bit (and its dirty bit for a write) exactly as the native page walk would, fills the
shadow entry, and retries the instruction. A page whose guest dirty bit is still clear is
mapped read-only, so the first write faults again and sets it. If the guest mapping denies the
access, the guest's own #PF (error code, CR2) is reflected. Guest memory, accessed and dirty
bits included, therefore ends up as under Native. Guest frames beyond the VM's memory map to a
VMM page of all ones; writes there are emulated and dropped, as on a PC bus.

Host layout
-----------
One host :class:`~vmkit.machine.machine.Machine` holds everything. Its physical memory is a
VMM area (1 MiB for the real IDT, the VMM's TSS, a page of all ones, plus 1 MiB per VM for
its shadow GDT, shadow page directory and a pool of shadow page tables), followed by one slice
per VM: guest-physical address g of VM i is host-physical ``slice_base[i] + g``. In every
shadow address space the VMM maps its tables read-only, supervisor-only, at the top 4 MiB
(``VMM_WINDOW`` = 0xFFC00000, where VMware's monitor also lived), so the real GDTR, IDTR and TR
point there, and a guest ``sgdt`` shows the VMM's table (the ``nonvirt-sgdt`` demonstration).
The real CPU runs one VM at a time; a world switch saves and restores it and loads the other
VM's shadow page directory. The VMM's own timer (a one-shot on the host machine's timer,
delivered as IRQ 0 into the VMM) stops the guest exactly when its virtual timer is due, when
the ``max_steps`` budget runs out, and, with several VMs, at the end of each time slice.

Guest time is counted per VM: host instructions retired while it ran plus the instructions the
VMM emulated for it (plus idle time in hlt), so its timer raises IRQ 0 at the same guest
instruction as under Native.

Known limits (documented, not hidden): guest rings 1 and 2 share real ring 1 with the guest
kernel (ring compression); the guest's LDT is not shadowed (a non-null ``lldt`` ends the VM);
guest linear addresses 0xFFC00000 and above belong to the VMM (a guest that maps memory there
is stopped with that reason); a hidden page fault in the middle of a ``rep`` string instruction
longer than one chunk can shift guest time by one step; pushfd, popfd, sgdt, sidt, sldt, str,
smsw, lar, lsl, verr, verw, ``push cs`` and ``mov r, ss`` run unmodified and show the real
machine (they are the non-virtualizable instructions; with CR4.UMIP set by the guest the
store-descriptor-table ones trap and are emulated).
"""

from __future__ import annotations

import struct
from collections import Counter

from vmkit.errors import VmkitError
from vmkit.isa import semantics as sem
from vmkit.isa.decode import GPR_NAMES, Imm, Insn, Mem, Reg
from vmkit.isa.faults import VECTOR_NAMES, Fault, Resched
from vmkit.machine import rules
from vmkit.machine.cpu import CPU, EFLAGS, MASK32, TableReg
from vmkit.machine.devices import IRQ_BASE, Devices
from vmkit.machine.machine import BOOT_GDT, Machine, RunResult
from vmkit.machine.mmu import CR0_PG, CR0_WP, CR4_PSE, PTE_A, PTE_D, PTE_P, PTE_PS, PTE_U, PTE_W
from vmkit.machine.rules import Descriptor
from vmkit.trace import (Emulation, InstructionRetired, Interrupt, IRet, PortIO, Reflection,
                         RingTransition)
from vmkit.vmm import passthrough
from vmkit.vmm.base import VM, MonitorSnapshot
from vmkit.vmm.layout import (GDT_BYTES, H_IDT, H_ONES, H_STUB, H_TSS,  # noqa: F401
                              RESERVED_ENTRY, TSS_LIMIT, V_GDT, V_PD, V_POOL, V_WINPT, VMM_CS,
                              VMM_DS, VMM_TSS, VMM_WINDOW, W_GDT, W_IDT, W_STUB, W_TSS, MiB)
from vmkit.vmm.sched import _init_scheduling, _sched_state, _set_sched_state, machine_time
from vmkit.vmm.shadow import ShadowPaging
from vmkit.vmm.world import HostedMonitor
from vmkit.vmm.world import VMStop as _VMStop

__all__ = ["TrapAndEmulate", "TEVM", "VirtualCPU", "NotEmulated", "CannotEmulate",
           "DEFAULT_SLICE", "VMM_WINDOW", "handles"]

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

    def __init__(self, index: int, image, machine: Machine, monitor: "TrapAndEmulate",
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


# =================================================================================================
# The emulation registry: mnemonic -> handler(vm, insn)
# =================================================================================================
_DEFAULT_HANDLERS: dict = {}


def handles(*mnemonics: str):
    """Register a default handler for the capstone mnemonics given (decorator)."""
    def deco(fn):
        for m in mnemonics:
            _DEFAULT_HANDLERS[m] = fn
        return fn
    return deco


def _privileged(vm: TEVM) -> None:
    """#GP(0) unless the virtual CPL is 0 (SDM Vol. 3A, 5.9): what the guest would get."""
    if vm.vcpu.cpl:
        raise Fault(13, 0, detail=f"privileged instruction at CPL {vm.vcpu.cpl}")


def _iopl_check(vm: TEVM) -> None:
    if vm.vcpu.cpl > vm.vcpu.iopl:
        raise Fault(13, 0, detail=f"CPL {vm.vcpu.cpl} > IOPL {vm.vcpu.iopl}")


def _is(op, kind: str) -> bool:
    return isinstance(op, Reg) and op.kind == kind


@handles("cli")
def emulate_cli(vm: TEVM, insn: Insn) -> None:
    """CLI (SDM Vol. 2A): the *virtual* IF := 0; the real IF stays 1 (the VMM keeps the CPU)."""
    _iopl_check(vm)
    vm.vcpu.IF = 0


@handles("sti")
def emulate_sti(vm: TEVM, insn: Insn) -> None:
    """STI (SDM Vol. 2B): virtual IF := 1; a held virtual interrupt comes after the next
    instruction (the STI shadow)."""
    _iopl_check(vm)
    if not vm.vcpu.IF:
        vm.irq_shadow()
        vm.vcpu.IF = 1


@handles("hlt")
def emulate_hlt(vm: TEVM, insn: Insn) -> None:
    """HLT (SDM Vol. 2A): the virtual CPU waits for a virtual interrupt; the VMM's run loop
    moves the VM's guest time to its next timer tick, as the machine does natively."""
    _privileged(vm)
    vm.vcpu.halted = True


def _port(vm: TEVM, op) -> int:
    return op.value if isinstance(op, Imm) else vm.vcpu.regs[2] & 0xFFFF


@handles("in")
def emulate_in(vm: TEVM, insn: Insn) -> None:
    """IN (SDM Vol. 2A) from the VM's own devices, if the guest's IOPL or I/O bitmap allows."""
    dst, port = insn.operands
    p = _port(vm, port)
    vm.io_check(p, dst.size)
    vm.store(dst, vm.port_in(p, dst.size))


@handles("out")
def emulate_out(vm: TEVM, insn: Insn) -> None:
    """OUT (SDM Vol. 2B) to the VM's own devices: console, interrupt controller, timer,
    power-off, if the guest's IOPL or I/O bitmap allows."""
    port, src = insn.operands
    p = _port(vm, port)
    vm.io_check(p, src.size)
    vm.port_out(p, src.size, vm.value(src))


@handles("lgdt")
def emulate_lgdt(vm: TEVM, insn: Insn) -> None:
    """LGDT (SDM Vol. 2A): the virtual GDTR; the VMM rebuilds the real (shadow) GDT."""
    _privileged(vm)
    a = vm.address(insn.operands[0])
    base, limit = vm.read((a + 2) & MASK32, 4), vm.read(a, 2)
    vm.load_gdt(base, limit)


@handles("lidt")
def emulate_lidt(vm: TEVM, insn: Insn) -> None:
    """LIDT (SDM Vol. 2A): the virtual IDTR; the VMM reads the guest's IDT when it reflects."""
    _privileged(vm)
    a = vm.address(insn.operands[0])
    base, limit = vm.read((a + 2) & MASK32, 4), vm.read(a, 2)
    vm.vcpu.idtr = TableReg(base, limit)


@handles("lldt")
def emulate_lldt(vm: TEVM, insn: Insn) -> None:
    """LLDT (SDM Vol. 2A): only the null selector (no LDT) is virtualized."""
    _privileged(vm)
    sel = vm.value(insn.operands[0], 2) & 0xFFFF
    if sel & 0xFFFC == 0:
        vm.vcpu.ldtr = TableReg()
        return
    raise CannotEmulate("this VMM does not shadow local descriptor tables (lldt with a "
                        f"non-null selector {sel:#x})")


@handles("ltr")
def emulate_ltr(vm: TEVM, insn: Insn) -> None:
    """LTR (SDM Vol. 2A): the virtual TR names the guest's TSS (the VMM reads SS0:ESP0 there
    when it reflects from ring 3); the descriptor is marked busy in the guest's GDT, as the
    hardware does. The real TR stays the VMM's TSS."""
    _privileged(vm)
    sel = vm.value(insn.operands[0], 2) & 0xFFFF
    d = rules.tss_segment(vm, sel)
    vm.write(vm.vcpu.gdtr.base + (sel & 0xFFF8) + 5, 1, d.access | 2)   # busy
    vm.vcpu.tr = TableReg(d.base, d.limit, sel)
    vm.monitor._sync_gdt(vm)


@handles("mov")
def emulate_mov(vm: TEVM, insn: Insn) -> None:
    """MOV to/from CRn (privileged; SDM Vol. 2B, MOV—Move to/from Control Registers) on the
    virtual control registers. MOV SS with the kernel's RPL-0 selector faults in ring 1
    (RPL != CPL): load the ring-1 form instead. Any other MOV that faulted is the guest's own
    error and is reflected."""
    dst, src = insn.operands
    if _is(dst, "cr"):
        _privileged(vm)
        vm.set_cr(dst.index, vm.value(src))
    elif _is(src, "cr"):
        _privileged(vm)
        vm.store(dst, vm.read_cr(src.index))
    elif _is(dst, "seg") and dst.index == 2 and vm.vcpu.cpl == 0:
        vm.load_ss(vm.value(src, 2) & 0xFFFF)
    else:
        raise NotEmulated()


@handles("pop")
def emulate_pop(vm: TEVM, insn: Insn) -> None:
    """POP SS at virtual CPL 0 (as MOV SS); any other POP that faulted is the guest's error."""
    (dst,) = insn.operands
    if not (_is(dst, "seg") and dst.index == 2 and vm.vcpu.cpl == 0):
        raise NotEmulated()
    size = 2 if insn.opsize else 4
    esp = vm.vcpu.esp
    vm.load_ss(vm.read(esp, size) & 0xFFFF)
    vm.vcpu.esp = esp + size


@handles("lmsw")
def emulate_lmsw(vm: TEVM, insn: Insn) -> None:
    """LMSW (SDM Vol. 2A): CR0[3:0] := src[3:0]; PE cannot be cleared this way."""
    _privileged(vm)
    v = vm.value(insn.operands[0], 2) & 0xF
    cr0 = vm.vcpu.cr0
    vm.set_cr(0, (cr0 & ~0xE) | v | (cr0 & 1))


@handles("clts")
def emulate_clts(vm: TEVM, insn: Insn) -> None:
    """CLTS (SDM Vol. 2A): virtual CR0.TS := 0."""
    _privileged(vm)
    vm.set_cr(0, vm.vcpu.cr0 & ~8)


@handles("invlpg")
def emulate_invlpg(vm: TEVM, insn: Insn) -> None:
    """INVLPG (SDM Vol. 2A): drop the page's shadow entry (the virtual TLB entry)."""
    _privileged(vm)
    vm.invlpg(vm.address(insn.operands[0]))


@handles("iretd")
def emulate_iretd(vm: TEVM, insn: Insn) -> None:
    """IRETD (SDM Vol. 2A) at virtual CPL 0. It traps when the kernel returns to itself (the
    popped CS has RPL 0 < real CPL 1); IF and IOPL are loaded into the virtual CPU from the
    popped image, as a ring-0 iretd does."""
    vc = vm.vcpu
    if vc.eflags & NT:
        raise CannotEmulate("iretd with NT set (task return)")
    user = vc.cpl == 3
    esp = vc.esp
    eip = vm.read(esp, 4, user)
    cs = vm.read((esp + 4) & MASK32, 4, user) & 0xFFFF
    fl = vm.read((esp + 8) & MASK32, 4, user)
    rpl, cpl = cs & 3, vc.cpl
    if rpl < cpl:
        raise Fault(13, cs & 0xFFFC, detail=f"iretd to ring {rpl} from ring {cpl}")
    d = vm.check_code(cs, rpl)
    vm.set_accessed(cs, d)
    if rpl > cpl:
        new_esp = vm.read((esp + 12) & MASK32, 4, user)
        new_ss = vm.read((esp + 16) & MASK32, 4, user) & 0xFFFF
        vm.stack_descriptor(new_ss, rpl)
    old = vc.eflags
    mask = rules.iret_flags_mask(cpl, vc.iopl)
    vc.eflags = (old & ~mask) | (fl & mask)
    vc.eip = eip
    if rpl > cpl:
        vm.monitor._load_real_segment(vm, 2, new_ss)
        vc.esp = new_esp
    else:
        vc.esp = esp + 12
    vm.monitor._load_real_cs(vm, cs, rpl, "iret")
    vm.monitor.trace.add(IRet(vm.clock, from_ring=cpl, to_ring=rpl, eip=eip, vm=vm.index))


@handles("retf")
def emulate_retf(vm: TEVM, insn: Insn) -> None:
    """RETF (SDM Vol. 2B) at virtual CPL 0 to the kernel's own RPL-0 code selector (the real
    return would go inward, RPL 0 < CPL 1, and faults)."""
    vc = vm.vcpu
    extra = insn.operands[0].value if insn.operands else 0
    esp = vc.esp
    user = vc.cpl == 3
    eip = vm.read(esp, 4, user)
    cs = vm.read((esp + 4) & MASK32, 4, user) & 0xFFFF
    rpl, cpl = cs & 3, vc.cpl
    if rpl < cpl:
        raise Fault(13, cs & 0xFFFC, detail="retf to an inner ring")
    d = vm.check_code(cs, rpl)
    vm.set_accessed(cs, d)
    if rpl > cpl:
        base = (esp + 8 + extra) & MASK32
        new_esp = vm.read(base, 4, user)
        new_ss = vm.read((base + 4) & MASK32, 4, user) & 0xFFFF
        vm.stack_descriptor(new_ss, rpl)
        vm.monitor._load_real_segment(vm, 2, new_ss)
        vc.esp = new_esp + extra
    else:
        vc.esp = esp + 8 + extra
    vc.eip = eip
    vm.monitor._load_real_cs(vm, cs, rpl, "far return")


@handles("rdtsc")
def emulate_rdtsc(vm: TEVM, insn: Insn) -> None:
    """RDTSC (SDM Vol. 2B); traps only while the guest sets CR4.TSD: edx:eax := guest time."""
    if vm.vcpu.cpl and vm.vcpu.cr4 & CR4_TSD:
        raise Fault(13, 0, detail="CR4.TSD")
    t = vm.clock
    vm.vcpu.eax, vm.vcpu.edx = t & MASK32, (t >> 32) & MASK32


def _umip(vm: TEVM) -> None:
    if vm.vcpu.cpl and vm.vcpu.cr4 & CR4_UMIP:
        raise Fault(13, 0, detail="UMIP")


@handles("sgdt", "sidt")
def emulate_sgdt(vm: TEVM, insn: Insn) -> None:
    """SGDT/SIDT (SDM Vol. 2B); they trap only while the guest sets CR4.UMIP, and then store
    the *virtual* table register (without UMIP they run unmodified and show the VMM's)."""
    _umip(vm)
    t = vm.vcpu.gdtr if insn.mnemonic == "sgdt" else vm.vcpu.idtr
    a = vm.address(insn.operands[0])
    user = vm.vcpu.cpl == 3
    vm.write(a, 2, t.limit, user)
    vm.write((a + 2) & MASK32, 4, t.base, user)


@handles("sldt", "str", "smsw")
def emulate_store_system(vm: TEVM, insn: Insn) -> None:
    """SLDT/STR/SMSW (SDM Vol. 2B) under the guest's CR4.UMIP: the virtual LDTR, TR or CR0."""
    _umip(vm)
    vc = vm.vcpu
    (dst,) = insn.operands
    if insn.mnemonic == "smsw":   # a 32-bit register gets all of CR0, as P6 and later store it
        v = vc.cr0 if isinstance(dst, Reg) and dst.size == 4 else vc.cr0 & 0xFFFF
    else:
        v = vc.ldtr.selector if insn.mnemonic == "sldt" else vc.tr.selector
    vm.store(dst, v)


# the instructions that fault only because the kernel runs in ring 1: without a handler for one
# of them the VMM cannot go on (other faulting instructions are the guest's own errors)
DEPRIVILEGED = frozenset(_DEFAULT_HANDLERS) - {"rdtsc", "sgdt", "sidt", "sldt", "str", "smsw"}


# =================================================================================================
# The monitor
# =================================================================================================
class TrapAndEmulate(ShadowPaging, HostedMonitor):
    """Trap-and-emulate: the guest kernel in ring 1 under a ring-0 VMM (see the module text).

    ``TrapAndEmulate(img_a, img_b, ..., slice=DEFAULT_SLICE, costs=CostModel)`` runs each guest
    in its own VM (``vm.vms[i]``: memory slice, virtual CPU, devices, console), switched round
    robin by the VMM's timer every ``slice`` host instructions.

    Scheduling on machine time (:mod:`vmkit.vmm.sched`): ``scheduler="round-robin"``,
    ``scheduler="credit", weights=[...]`` (after Xen's credit scheduler) or a ``Scheduler``
    object, with ``quantum=`` machine cycles per slice (default ``DEFAULT_QUANTUM``); ``slice``
    is then unused. Every world switch is priced (``world_switch``), counted in
    ``world_switches`` and logged in ``switch_log`` (machine time, from VM, to VM).
    ``machine_timer=True`` runs every VM's timer on machine time (its period counts machine
    cycles, descheduled time included): slowdown and jitter show, and equivalence is not
    expected (see :mod:`vmkit.vmm.sharing`).

    ``emulate`` is the extension point: a dict mnemonic -> ``handler(vm, insn)``, where ``vm``
    is the :class:`TEVM` that trapped and ``insn`` the decoded instruction (``insn.mnemonic``,
    ``insn.operands``, ``insn.address``, ``insn.text``). The VMM moves EIP past the
    instruction *before* calling the handler (a handler that transfers control sets
    ``vm.vcpu.eip`` itself), counts it, and resumes the guest. A handler may raise a ``Fault``
    (the guest gets that exception, EIP back on the instruction: check before you change
    anything), ``NotEmulated`` (the fault was the guest's own: reflect it) or
    ``CannotEmulate`` (the VM ends with that reason). ``TrapAndEmulate.emulate`` is the default
    table; each monitor copies it, so replacing a handler on one monitor leaves the others
    alone::

        te = TrapAndEmulate(guests.build("syscall"))
        def my_cli(vm, insn):
            vm.vcpu.IF = 0
            print("cli at", hex(insn.address))
        te.emulate["cli"] = my_cli

    ``assign={0: ["disk"]}`` assigns a device directly to one VM: its ports are allowed in the
    TSS I/O bitmap while that VM runs (no trap); other VMs' accesses are refused
    (``refused_io``). See :mod:`vmkit.vmm.iovirt` and docs/io-virtualization.md.

    ``stats`` adds ``traps``, ``emulated`` (Counter by mnemonic), ``reflected`` (Counter by
    vector name), ``hidden_page_faults``, ``shadow_updates`` and ``world_switches``.
    """

    name = "te"
    title = "trap-and-emulate (kernel in ring 1, shadow page tables)"
    monitor_state = ("traps", "emulated", "reflected")
    #: the default handlers (mnemonic -> handler); every instance works on its own copy
    emulate: dict = dict(_DEFAULT_HANDLERS)

    def __init__(self, *images, costs=None, trace=None, slice: int = DEFAULT_SLICE,
                 scheduler=None, weights=None, quantum=None, machine_timer: bool = False,
                 assign=None):
        if not isinstance(slice, int) or isinstance(slice, bool) or slice < 1:
            raise VmkitError(f"slice must be a positive number of host instructions, got "
                             f"{slice!r}")
        self.slice = slice
        _init_scheduling(self, images, scheduler, weights, quantum, machine_timer)
        # ---- direct assignment (vmkit.vmm.passthrough): assign={vm index: ["disk"]} -> {port: vm}
        self.assigned = passthrough.resolve_assignment(assign, len(images), self.name)
        # ---- end direct assignment
        self.current = 0
        self._host: Machine | None = None
        self.emulate = dict(type(self).emulate)   # instance copy: replace handlers freely
        self.traps = 0
        self.hidden_page_faults = 0
        self.world_switches = 0
        self.emulated: Counter = Counter()
        self.reflected: Counter = Counter()
        # traps through which the VMM learns of guest page-table changes, by kind ("invlpg",
        # "mov cr3"): stats["pt_write_traps"] (docs/memory-virtualization.md)
        self.pt_traps: Counter = Counter()
        super().__init__(*images, costs=costs, trace=trace)
        passthrough.install_te(self)   # direct assignment: host port handlers, the TSS I/O bitmap

    # ---- construction ------------------------------------------------------------------------
    def _make_machine(self, index: int, image) -> Machine:
        """One host machine for every VM: the VMM area, then one memory slice per VM."""
        if self._host is None:
            self._host = Machine(self._plan_slices(), trace=self.trace)
            self._build_vmm_area()
        return self._host

    def _make_vm(self, index: int, image, machine: Machine) -> TEVM:
        vm = TEVM(index, image, machine, self, self._slice_bases[index], (1 + index) * MiB)
        self._boot_vm(vm)
        return vm

    def _build_vmm_area(self) -> None:
        """The real IDT, the VMM's TSS (an I/O bitmap denying every port) and the all-ones
        page, shared by every VM."""
        m = self._host
        mem = m.mem
        stub = VMM_WINDOW + W_STUB
        # the real IDT: every vector leads into the VMM. The simulator's VMM runs in Python, so
        # these gates are never taken (Machine.exception_hook intercepts first); they are what
        # the real IDT holds, and what a guest's sidt points at.
        gate = (stub & 0xFFFF) | (VMM_CS << 16) | (0x8E << 40) | ((stub >> 16) << 48)
        for v in range(256):
            _Q.pack_into(mem, H_IDT + 8 * v, gate)
        mem[H_IDT + 2048:H_IDT + 4096] = bytes(2048)
        tss = bytearray(3 * 4096)
        _I.pack_into(tss, 4, stub + 0x1000)        # ESP0: the VMM's (unused) stack
        _I.pack_into(tss, 8, VMM_DS)               # SS0
        struct.pack_into("<H", tss, 0x66, 104)     # I/O bitmap right after the TSS
        tss[104:104 + 8193] = b"\xFF" * 8193       # every port denied, and the end byte
        mem[H_TSS:H_TSS + len(tss)] = tss
        mem[H_STUB:H_STUB + 4096] = b"\xF4" * 4096  # hlt: never reached
        mem[H_ONES:H_ONES + 4096] = b"\xFF" * 4096  # guest frames beyond a VM's memory

    def _boot_vm(self, vm: TEVM) -> None:
        """The VM's slice as the machine powers on (0xAA everywhere, the boot GDT, the image),
        its VMM structures, and the real CPU state that runs it: ring 1, paging on the shadow."""
        m = self._host
        mem = m.mem
        self._power_on_slice(vm)
        # the VMM's own descriptors at the top of this VM's real GDT
        tss_base = VMM_WINDOW + W_TSS
        tss_desc = ((TSS_LIMIT & 0xFFFF) | ((tss_base & 0xFFFFFF) << 16) | (0x8B << 40)
                    | (((TSS_LIMIT >> 16) & 0xF) << 48) | ((tss_base >> 24) << 56))
        for sel, raw in ((VMM_CS, 0x00CF9B000000FFFF), (VMM_DS, 0x00CF93000000FFFF),
                         (VMM_TSS, tss_desc)):
            _Q.pack_into(mem, vm.gdt_base + sel, raw)
        # the window: the real GDT, IDT and TSS, read-only and supervisor-only
        frames = [vm.gdt_base + 0x1000 * k for k in range(GDT_BYTES // 0x1000)]
        frames += [H_IDT, H_TSS, H_TSS + 0x1000, H_TSS + 0x2000, H_STUB]
        winpt = vm.vmm_base + V_WINPT
        for k, f in enumerate(frames):
            _I.pack_into(mem, winpt + 4 * k, f | PTE_P | PTE_A | PTE_D)
        _I.pack_into(mem, vm.pd + 4 * 1023, winpt | PTE_P | PTE_W | PTE_A)
        self.shadow_gdt(vm)
        # the real CPU for this VM
        cpu = vm.saved
        cpu.regs[:] = [0] * 8
        cpu.regs[4] = vm.memory_size            # as Machine: a stack at the top of memory
        cpu.eip = vm.image.entry
        cpu.eflags = IF                          # real IF on, IOPL 0; the virtual IF is 0
        for i, sel in enumerate((0x10, 0x08, 0x10, 0x10, 0x10, 0x10)):
            d = self._shadow_descriptor(vm, sel)
            real = sel | 1 if i in (1, 2) else sel
            s = cpu.seg[i]
            s.selector, s.base, s.limit, s.access, s.flags = real, d.base, d.limit, \
                d.access | 1, d.flags
        cpu.cr0, cpu.cr2, cpu.cr3, cpu.cr4 = REAL_CR0, 0, vm.pd, 0
        cpu.gdtr.base, cpu.gdtr.limit = VMM_WINDOW + W_GDT, GDT_BYTES - 1
        cpu.idtr.base, cpu.idtr.limit = VMM_WINDOW + W_IDT, 256 * 8 - 1
        cpu.ldtr.selector, cpu.ldtr.base, cpu.ldtr.limit = 0, 0, 0
        cpu.tr.selector, cpu.tr.base, cpu.tr.limit = VMM_TSS, VMM_WINDOW + W_TSS, TSS_LIMIT
        cpu.cpl = 1
        vm.vcpu.cpl = 0

    def _setup(self) -> None:
        m = self._host
        m.exception_hook = self._on_exception
        m.ring_hook = self._on_ring
        # the VMM's timer: a one-shot, armed before every run of a guest (see _arm)
        m.dev = Devices(timer_period=1 << 62)
        m.cpu.set_state(self.vms[0].saved.state())
        m.clock = 0
        m.vm_index = 0
        m.flush_tlb()
        m._mode_changed()
        self._slice_end = self.slice

    # ---- the run loop's policy (vmkit.vmm.world) -----------------------------------------------
    def _deliver_pending(self, vm: TEVM) -> bool:
        line = self._deliverable(vm)
        if line is None:
            return False
        self._guarded(vm, self._inject_irq, vm, line)
        return True

    def _halted(self, vm: TEVM) -> bool:
        return vm.vcpu.halted        # HLT is emulated: the virtual CPU waits

    def _enter(self, vm: TEVM, deadline: int) -> None:
        m = self._host
        if vm.steps < vm.inhibit_until:        # STI shadow: stop right after one instruction
            deadline = min(deadline, m.clock + vm.inhibit_until - vm.steps)
        self._arm(deadline)
        m.exit_request = False

    def _guest_stopped(self, vm: TEVM, r: RunResult) -> None:
        # a crash of the guest's code (unsupported instruction ...); the real CPU never halts
        # or powers off itself: those are emulated
        self._host.stopped = None
        self._end(vm, "crash", r.detail, event=r.reason != "crash")

    def _count_preemption(self, vm: TEVM) -> None:
        """The VMM's timer ended ``vm``'s slice: a trap into the VMM."""
        self.traps += 1
        self.events["trap"] += 1

    def _deliverable(self, vm: TEVM) -> int | None:
        """The virtual IRQ line to deliver now: virtual IF set, outside an STI shadow, a line
        pending, unmasked and not blocked by one in service."""
        if not vm.vcpu.IF or vm.steps < vm.inhibit_until:
            return None
        return vm.devices.pending_vector()

    def _guest_if(self, vm: TEVM) -> bool:
        return vm.vcpu.IF     # the virtual IF: the real one stays 1 while the guest runs

    def _switched_in(self, vm: TEVM) -> None:
        if self.assigned:   # direct assignment: the I/O bitmap lets only the owner through
            passthrough.te_switched(self)

    # ---- traps into the VMM ----------------------------------------------------------------
    def _on_exception(self, vector: int, fault: Fault | None, source: str, next_eip) -> bool:
        """The real IDT's gates, all leading here (Machine.exception_hook): every exception,
        software interrupt and device interrupt arrives at the VMM first."""
        m = self._host
        vm = self.vms[self.current]
        self.traps += 1
        self.events["trap"] += 1
        if self.scheduler is not None and len(self.vms) > 1 \
                and machine_time(self) >= self._slice_end:
            m.exit_request = True   # the slice (machine cycles) is spent: back to the run loop
        self.trace.add(Interrupt(m.clock, vector=vector, name=_name(vector, source),
                                 source=source, error_code=fault.error_code if fault else None,
                                 from_ring=m.cpu.cpl, to_ring=0, eip=m.cpu.eip, handler=0,
                                 vm=vm.index))
        if source == "irq":
            # the VMM's own timer: a virtual tick is due, the budget or the slice is spent
            m.exit_request = True
            return True
        if source != "exception":
            # int n / int3 / into: reflect through the guest's gate. A fault doing so leaves
            # this hook, so the instruction does not retire (as natively); the VMM gets it next.
            try:
                self._sync_gdt(vm)
                self._reflect(vm, vector, None, next_eip, source)
            except Fault:
                raise
            except _VMStop as s:
                self._stop_soon(vm, s.reason, s.detail)
            except Exception as ex:
                self._stop_soon(vm, "crash", _error_text(ex))
            return True
        self._guarded(vm, self._handle_exception, vm, fault)
        return True

    def _handle_exception(self, vm: TEVM, fault: Fault) -> None:
        self._sync_gdt(vm)
        try:
            if fault.vector == 14:
                self._page_fault(vm, fault)
            elif fault.vector == 13:
                self._general_protection(vm, fault)
            else:
                self._reflect_exception(vm, fault)
        except Fault as f:   # the guest's own fault, found while handling: deliver it
            self._reflect_exception(vm, f)

    def _general_protection(self, vm: TEVM, fault: Fault) -> None:
        """#GP: a privileged or I/O instruction of the deprivileged kernel (decode, emulate,
        resume after it), or the guest's own #GP (reflect)."""
        m = self._host
        vc = vm.vcpu
        eip = m.cpu.eip
        try:
            insn = self._fetch_insn(vm, eip)
        except Fault:
            insn = None
        if insn is None or not insn.id:
            self._reflect_exception(vm, fault)
            return
        handler = self.emulate.get(insn.mnemonic)
        if handler is None:
            if vc.cpl == 0 and insn.mnemonic in DEPRIVILEGED:
                raise CannotEmulate(f"cannot emulate {insn.text!r} at {eip:#010x}: no "
                                    f"handler in emulate[{insn.mnemonic!r}]")
            self._reflect_exception(vm, fault)
            return
        done = self._call_handler(vm, handler, insn, eip)
        if done is None:
            self._reflect_exception(vm, fault)   # the handler declines: the guest's own #GP
        elif done:
            self._retired(vm, insn)

    def _call_handler(self, vm: TEVM, handler, insn: Insn, eip: int) -> bool | None:
        """Run an emulation handler as the VMM always does: EIP past the instruction during
        the call (as the CPU's would be). -> True: it retired; False: it raised a Fault, the
        guest's, now reflected; None: it declined (NotEmulated). EIP is back at ``eip``
        unless it retired; CannotEmulate ends the VM, naming the instruction."""
        vc = vm.vcpu
        vc.eip = insn.next
        try:
            handler(vm, insn)
        except NotEmulated:
            vc.eip = eip
            return None
        except CannotEmulate as ce:
            vc.eip = eip
            raise CannotEmulate(f"cannot emulate {insn.text!r} at {eip:#010x}: {ce.detail}") \
                from None
        except Fault as f:
            vc.eip = eip
            self._reflect_exception(vm, f)
            return False
        return True

    def _fetch_insn(self, vm: TEVM, eip: int) -> Insn | None:
        """The guest instruction at ``eip`` for the VMM to emulate, fetched as the real CPU
        fetched it (through the shadow page tables)."""
        return self._host.fetch_decode(eip)

    def _retired(self, vm: TEVM, insn: Insn) -> None:
        """Count an emulated instruction: it retired in guest time (it never did on the real
        CPU, so the cost model counts it as "emulate", not "native")."""
        m = self._host
        if self.trace.wants_instructions():
            self.trace.add(InstructionRetired(m.clock, address=insn.address, text=insn.text,
                                              ring=vm.vcpu.cpl, vm=vm.index))
        m.clock += 1
        vm.steps += 1
        self.emulated[insn.mnemonic] += 1
        self.events["emulate"] += 1
        self.trace.add(Emulation(m.clock, address=insn.address, text=insn.text,
                                 mnemonic=insn.mnemonic, vm=vm.index))
        # the VMM's run loop looks at virtual interrupts, devices and halts before going on
        m.exit_request = True

    def _on_ring(self, old: int, new: int, cause: str) -> None:
        """The real CPU changed rings on its own (Machine.ring_hook): an outward iretd or retf
        of the ring-1 kernel to user mode, which does not trap."""
        vm = self.vms[self.current]
        vc = vm.vcpu
        vc.cpl = new
        if cause == "iret" and old == 1:
            # a ring-0 iretd loads IF and IOPL from the image; the ring-1 one loaded neither.
            # The image is still in guest memory where the iretd popped it.
            image = vm.peek((self._host.iret_frame + 8) & MASK32, 4)
            if image is not None:
                fl = int.from_bytes(image, "little")
                vc.IF, vc.iopl = (fl >> 9) & 1, (fl >> 12) & 3
        if self._deliverable(vm) is not None:
            self._host.exit_request = True

    # ---- reflection: the VMM delivers into the guest ------------------------------------------
    def _reflect(self, vm: TEVM, vector: int, error_code: int | None, return_eip: int,
                 source: str) -> None:
        """Deliver vector into the guest kernel through the guest's IDT (SDM 6.12.1, as
        ``Machine.deliver`` with the guest's tables and the virtual CPU): gate checks against
        the virtual CPL, the stack switch to the guest TSS's SS0:ESP0, the frame the guest
        expects (virtual IF and IOPL, CS as the guest believes it), virtual IF cleared for an
        interrupt gate. Raises the guest's Fault if delivery fails (state unchanged)."""
        m = self._host
        cpu, vc = m.cpu, vm.vcpu
        gate, cd, new, ext = rules.interrupt_gate(vm, vc.idtr, vc.cpl, vector, source,
                                                  "guest's IDT")
        sel = gate.gate_selector
        old = vc.cpl
        flags = vc.eflags
        frame = [flags, vc.cs, return_eip]
        new_ss = None
        if new < old:
            esp, new_ss = self._inner_stack(vm, new, ext)
            rules.inner_stack_segment(vm, new_ss, new, ext)
            frame = [vc.ss, cpu.regs[4]] + frame
        else:
            esp = cpu.regs[4]
        if error_code is not None:
            frame.append(error_code)
        pushes = []
        for v in frame:
            esp = (esp - 4) & MASK32
            pushes.append((esp, v))
        for a, v in pushes:
            vm.write(a, 4, v & MASK32)
        # commit, on the real CPU and the virtual one
        if new_ss is not None:
            self._load_real_segment(vm, 2, new_ss)
        cpu.regs[4] = esp
        cpu.eflags = cpu.eflags & ~(TF | NT | RF | VM_FLAG)
        if gate.type == 0xE:
            vc.IF = 0
        vc.halted = False
        self._load_real_cs(vm, sel, new, "interrupt", cd)
        cpu.eip = gate.gate_offset
        name = _name(vector, source)
        self.reflected[name] += 1
        self.trace.add(Reflection(m.clock, vector=vector, name=name, from_ring=old,
                                  vm=vm.index))

    def _inner_stack(self, vm: TEVM, new: int, ext: int) -> tuple[int, int]:
        """(ESP, SS) for a reflection into virtual ring ``new``: the guest TSS's, read now
        (the kernel stores ESP0 freely)."""
        return rules.tss_stack(vm, vm.vcpu.tr, new, ext)

    def _reflect_exception(self, vm: TEVM, f: Fault) -> None:
        """Reflect an exception with the double-fault rules of SDM Table 6-5, as
        ``Machine.deliver_exception`` does natively; a fault while reflecting #DF is a triple
        fault and ends the VM (reason "crash", the chain of faults in the detail)."""
        eip = self._host.cpu.eip
        rules.deliver_exception(lambda v, c: self._reflect(vm, v, c, eip, "exception"), f,
                                lambda chain: _VMStop("crash", "triple fault: " + chain))

    def _inject_irq(self, vm: TEVM, line: int) -> None:
        """A virtual device interrupt, now deliverable: acknowledge it on the VM's interrupt
        controller and reflect it (as Machine._deliver_irq does)."""
        vm.devices.acknowledge(line)
        vm.vcpu.halted = False
        if self.machine_timer and line == 0:
            vm.tick_steps.append(vm.steps)
        try:
            self._reflect(vm, IRQ_BASE + line, None, self._host.cpu.eip, "irq")
        except Fault as f:
            self._reflect_exception(vm, f)

    # ---- the real CPU's segment registers ----------------------------------------------------
    def _shadow_descriptor(self, vm: TEVM, selector: int) -> Descriptor:
        return Descriptor.parse(_Q.unpack_from(self._host.mem,
                                               vm.gdt_base + (selector & 0xFFF8))[0])

    def _load_real_segment(self, vm: TEVM, index: int, selector: int) -> None:
        """Load a real data or stack segment register from the shadow GDT; the kernel's
        stack selector gets RPL 1 (the real CPL)."""
        real = selector | 1 if index == 2 and selector & 3 == 0 else selector
        self._host._load_cache(index, real, self._shadow_descriptor(vm, selector))

    def _load_real_cs(self, vm: TEVM, selector: int, vring: int, cause: str,
                      d: Descriptor | None = None) -> None:
        """CS := the guest's code selector for virtual ring ``vring``, in the real ring that
        stands for it (0 -> 1); the guest descriptor's accessed bit is set as natively."""
        m = self._host
        cpu, vc = m.cpu, vm.vcpu
        vm.set_accessed(selector, d if d is not None else vm.descriptor(selector))
        ring = 1 if vring == 0 else vring
        m._load_cache(1, (selector & 0xFFFC) | ring, self._shadow_descriptor(vm, selector))
        old = cpu.cpl
        vc.cpl = vring
        if ring != old:
            cpu.cpl = ring
            m._mode_changed()
            self.trace.add(RingTransition(m.clock, from_ring=old, to_ring=ring, cause=cause,
                                          vm=vm.index))
            if ring > old:
                m._null_outer_segments(ring)

    # ---- the shadow GDT ----------------------------------------------------------------------
    def shadow_gdt(self, vm: TEVM) -> None:
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
        mem = self._host.mem
        clear = max(vm.gdt_shadowed, len(out))
        mem[vm.gdt_base:vm.gdt_base + clear] = bytes(out) + bytes(clear - len(out))
        vm.gdt_shadowed = len(out)
        vm.gdt_copy = raw
        vm.gdt_src = None
        self.events["shadow_update"] += 1

    def _sync_gdt(self, vm: TEVM) -> None:
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
        mem = self._host.mem
        if b"".join(bytes(mem[h:h + t]) for h, t in vm.gdt_src) != vm.gdt_copy:
            self.shadow_gdt(vm)

    # ---- control registers -------------------------------------------------------------------
    def write_cr(self, vm: TEVM, n: int, v: int) -> None:
        """MOV to CRn on the virtual CPU. The real CR0 keeps paging on; a change of the guest's
        paging (CR3, CR0.PG/WP, CR4.PSE) drops the VM's shadow page tables, as the hardware
        flushes its TLB."""
        vc = vm.vcpu
        v &= MASK32
        if n == 0:
            if v & CR0_PG and not v & 1:
                raise Fault(13, 0, detail="CR0.PG without CR0.PE")
            if not v & 1:
                raise CannotEmulate("clearing CR0.PE (real mode is not in the subset)")
            old = vc.cr0
            vc.cr0 = v | 0x10
            if (old ^ v) & (CR0_PG | CR0_WP):
                self.flush_shadow(vm)
        elif n == 2:
            vc.cr2 = v
        elif n == 3:
            vc.cr3 = v
            self.pt_traps["mov cr3"] += 1
            self.flush_shadow(vm)
        elif n == 4:
            old = vc.cr4
            vc.cr4 = v
            self._host.cpu.cr4 = v & REAL_CR4_FROM_GUEST
            if (old ^ v) & CR4_PSE:
                self.flush_shadow(vm)
        else:
            raise Fault(6, detail=f"cr{n} does not exist")

    # ---- shadow page tables: a virtual TLB ---------------------------------------------------
    def invlpg(self, vm: TEVM, lin: int) -> None:
        """Drop one page's shadow entry (the guest's invlpg)."""
        self._shadow_invlpg(vm, lin)

    def _page_fault(self, vm: TEVM, fault: Fault) -> None:
        """A real #PF while the guest ran: hidden (fill the shadow entry, retry) when the
        guest's own tables allow the access, else the guest's #PF, reflected."""
        lin, err = fault.address, fault.error_code
        write, user = bool(err & 2), bool(err & 4)
        if lin >= VMM_WINDOW:
            self._window_fault(vm, lin, write, user)
            return
        pte, ok = self._shadow_entry(vm, lin, write, user)   # the guest's #PF: reflected
        if not ok:
            self._emulate_one(vm)
            return
        self._hidden_fault(vm, lin, pte)

    def _window_fault(self, vm: TEVM, lin: int, write: bool, user: bool) -> None:
        """A fault in the VMM's window: the CPU setting a descriptor's accessed bit in the
        (read-only) shadow GDT, or the guest touching addresses it believes are its own."""
        m = self._host
        off = lin - VMM_WINDOW
        if write and not user and off < GDT_BYTES and off & 7 == 5:
            idx = off >> 3
            shadow = m.mem[vm.gdt_base + off]
            if shadow & 0x10 and not shadow & 1 and idx * 8 + 7 <= vm.vcpu.gdtr.limit:
                # set it where the guest's hardware would have: in the guest's own table
                sel = idx * 8
                vm.set_accessed(sel, vm.descriptor(sel))
                m.mem[vm.gdt_base + off] = shadow | 1
                return
        gpa, _, _ = vm.walk(lin, write, user)
        if vm.host_address(gpa) is not None:
            raise _VMStop("crash", f"the guest maps linear address {lin:#010x}, inside the "
                          f"VMM's reserved window {VMM_WINDOW:#010x}-0xffffffff")
        self._emulate_one(vm)   # beyond the guest's memory: all ones, writes dropped

    def _emulate_one(self, vm: TEVM) -> None:
        """Run the faulting instruction with the VMM's software MMU: every memory access goes
        through the guest's page tables (all ones beyond memory, writes there dropped). For
        the few accesses a shadow entry cannot express."""
        m = self._host
        insn = self._fetch_insn(vm, m.cpu.eip)
        if insn is None or not insn.id:
            raise _VMStop("crash", f"cannot decode the instruction at {m.cpu.eip:#010x}")
        user = vm.vcpu.cpl == 3
        g = dict(m._g)
        for n in (1, 2, 4):
            g[f"rd{n}"] = lambda a, n=n: vm.read(a, n, user)
            g[f"wr{n}"] = lambda a, v, n=n: vm.write(a, n, v, user)
        fn = sem.compile_insn(insn, g)
        if isinstance(fn, str):
            raise _VMStop("crash", f"cannot emulate {insn.text!r} at {insn.address:#010x}: "
                          f"{fn}")
        try:
            fn()
        except Resched:
            pass
        self._retired(vm, insn)

    # ---- statistics and cycles ---------------------------------------------------------------
    @property
    def stats(self) -> dict:
        c = self.trace.counts
        return {
            "instructions": self._total_steps(),
            "host_instructions": self._host.steps,
            "interrupts": sum(self.reflected.values()),
            "ring_transitions": c["ring"],
            "page_faults": self.reflected["#PF"],
            "real_page_faults": c["page_fault"],
            "tlb_misses": self._host.tlb_misses,
            "port_io": c["io"],
            "traps": self.traps,
            "emulated": Counter(self.emulated),
            "reflected": Counter(self.reflected),
            "hidden_page_faults": self.hidden_page_faults,
            "shadow_updates": self.events["shadow_update"],
            "world_switches": self.world_switches,
            "walk_references": self._host.walk_refs,
            "pt_write_traps": sum(self.pt_traps.values()),
            "pt_traps": Counter(self.pt_traps),
        }

    def event_counts(self) -> Counter:
        """Events by cost category. ``native`` is what the real CPU retired: an emulated
        instruction never retired there, so it is counted once, as ``emulate``; the delivery
        of every trap is in ``trap`` (reflections are the VMM's work after a trap)."""
        counts = Counter(self.events)
        counts["native"] += self._host.steps
        counts["page_walk"] += self._host.walk_refs
        return counts

    # ---- snapshots ---------------------------------------------------------------------------
    def snapshot(self) -> MonitorSnapshot:
        vms = []
        for vm in self.vms:
            vc = vm.vcpu
            vms.append(dict(
                vcpu=(vc.cr0, vc.cr2, vc.cr3, vc.cr4, vc.gdtr.copy(), vc.idtr.copy(),
                      vc.ldtr.copy(), vc.tr.copy(), vc.IF, vc.iopl, vc.cpl, vc.halted),
                devices=vm.devices.copy(), saved=vm.saved.state(), clock=vm._clock,
                steps=vm.steps, inhibit=vm.inhibit_until, pending=vm.pending, result=vm.result,
                pool=list(vm.pool), pts=dict(vm.shadow_pts), sinks=set(vm.sinks),
                tlb={k: dict(t) for k, t in vm.tlb.items()},
                gdt=(vm.gdt_copy, vm.gdt_shadowed), ticks=list(vm.tick_steps)))
        state = dict(vms=vms, sched=_sched_state(self), declared=self._save_declared())
        return MonitorSnapshot(id(self), [self._host.snapshot()], state)

    def restore(self, snap: MonitorSnapshot) -> None:
        if not isinstance(snap, MonitorSnapshot) or snap.owner != id(self):
            raise VmkitError("restore() takes a snapshot made by this monitor's snapshot()")
        st = snap.state
        self._host.restore(snap.machines[0])
        for vm, s in zip(self.vms, st["vms"]):
            vc = vm.vcpu
            (vc.cr0, vc.cr2, vc.cr3, vc.cr4, g, i, l, t, vc.IF, vc.iopl, vc.cpl,
             vc.halted) = s["vcpu"]
            vc.gdtr, vc.idtr, vc.ldtr, vc.tr = g.copy(), i.copy(), l.copy(), t.copy()
            vm.devices = s["devices"].copy()
            vm.saved.set_state(s["saved"])
            vm._clock, vm.steps, vm.inhibit_until = s["clock"], s["steps"], s["inhibit"]
            vm.pending, vm.result = s["pending"], s["result"]
            vm.pool, vm.shadow_pts, vm.sinks = list(s["pool"]), dict(s["pts"]), set(s["sinks"])
            vm.tlb = {k: dict(t) for k, t in s["tlb"].items()}
            vm.gdt_copy, vm.gdt_shadowed = s["gdt"]
            vm.gdt_src = None
            vm.tick_steps = list(s["ticks"])
        self._restore_declared(st["declared"])
        self._host.vm_index = self.current
        _set_sched_state(self, st["sched"])


def _name(vector: int, source: str) -> str:
    """How stats and traces name an event: "#PF", "int 0x80", "irq 0"."""
    if source == "irq":
        return f"irq {vector - IRQ_BASE}"
    if source == "int":
        return f"int {vector:#x}"
    return VECTOR_NAMES.get(vector, f"vector {vector}")


def _error_text(ex: Exception) -> str:
    if isinstance(ex, VmkitError):
        return str(ex)
    return f"VMM error ({type(ex).__name__}: {ex})"
