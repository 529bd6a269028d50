"""The per-VM object every hosted monitor shares: one guest's slice of host memory, devices,
clocks, pending stop and result, the real CPU state it had when switched out, and guest memory
reached through the guest's own page tables (one walk, as the hardware's: accessed and dirty
bits, the guest's #PF), its ports and its descriptors as the guest sees them.

Each monitor's VM adds its virtual CPU and its mechanism: :class:`~vmkit.vmm.te.TEVM` (the
virtual CPU trap-and-emulate keeps, a TLB of the VMM's own, the shadow GDT),
:class:`~vmkit.vmm.hw.HWVM` (the VMCS, EPT), :class:`~vmkit.vmm.pv.PVVM` (what the guest
registered by hypercall). The vCPU a subclass puts in ``self._vcpu`` has the members of the
one virtual-CPU interface, :class:`vmkit.vmm.vcpu.VCPU`.

What a snapshot saves of a VM is declared in ``vm_state`` (:mod:`vmkit.vmm.state`), each class
adding its own names, and the monitor's paging mode adding the structures it keeps on the VM
(``PagingMode.vm_state``: shadow tables, the EPT, validated tables)."""

from __future__ import annotations

import warnings

from vmkit.errors import VmkitError
from vmkit.isa.decode import Imm, Mem, Reg
from vmkit.isa.faults import VECTOR_NAMES, Fault
from vmkit.machine import rules
from vmkit.machine.cpu import CPU, MASK32
from vmkit.machine.devices import IRQ_BASE, Devices
from vmkit.machine.machine import Machine
from vmkit.machine.mmu import CR0_PG, PTE_U, PTE_W, walk_tables
from vmkit.machine.rules import Descriptor
from vmkit.trace import PortIO
from vmkit.vmm import state
from vmkit.vmm.base import VM
from vmkit.vmm.layout import V_PD, V_POOL, MiB
from vmkit.vmm.world import VMStop

__all__ = ["GuestVM", "NotEmulated", "CannotEmulate", "event_name"]


class NotEmulated(Exception):
    """Raised by a handler: this fault was not caused by deprivileging (the guest erred, as it
    would natively); the VMM reflects the original fault into the guest."""


class CannotEmulate(VMStop):
    """Raised by a handler: the VMM cannot virtualize this; the VM ends (reason "crash")."""

    def __init__(self, detail: str):
        super().__init__("crash", detail)


def _renamed(old: str, new: str) -> None:
    warnings.warn(f"GuestVM.{old} is deprecated, use GuestVM.{new} (the machine's name for the "
                  f"same access); {old} goes away in the next release", DeprecationWarning,
                  stacklevel=3)


def event_name(vector: int, source: str) -> str:
    """How stats and traces name an event: "#PF", "int 0x80", "irq 0" (named once per
    vector and source: every trap into a ring-1 monitor asks twice)."""
    name = _EVENT_NAMES.get((vector, source))
    if name is None:
        if source == "irq":
            name = f"irq {vector - IRQ_BASE}"
        elif source == "int":
            name = f"int {vector:#x}"
        else:
            name = VECTOR_NAMES.get(vector, f"vector {vector}")
        _EVENT_NAMES[vector, source] = name
    return name


_EVENT_NAMES: dict = {}


class GuestVM(VM):
    """One guest of a hosted monitor (see the module text): ``vm.devices`` its own
    :class:`Devices`, ``vm.monitor`` the VMM, ``vm.clock`` its guest time,
    ``vm.port_in``/``vm.port_out``, and its memory with the machine's names for the same
    accesses (``Machine`` reads physical memory, this the VM's guest-physical memory):

    * ``vm.lin_read(lin, n)`` -> int / ``vm.lin_write(lin, n, value)``: guest-linear memory
      through the guest's paging (accessed/dirty bits, the guest's #PF), as
      ``Machine.lin_read``/``lin_write``;
    * ``vm.peek(lin, n)`` -> bytes or None: guest-linear, no side effects, as ``Machine.peek``;
    * ``vm.phys_read(gpa, n)`` -> bytes / ``vm.phys_write(gpa, data)``: guest-physical, as
      ``Machine.phys_read``/``phys_write``; ``vm.phys_read_uint(gpa, n)`` -> int /
      ``vm.phys_write_uint(gpa, n, value)`` the same as little-endian integers.

    ``vm.read``/``vm.write`` are the old names of ``lin_read``/``lin_write`` (deprecated:
    they warn); until this release ``phys_read`` returned an int (now ``phys_read_uint``)."""

    #: what snapshot() saves and restore() rolls back (vmkit.vmm.state), subclasses add theirs
    vm_state = ("devices", "saved", "_clock", "tick_steps", "steps", "pending", "result", "pool")

    def __init__(self, index: int, image, machine: Machine, monitor, slice_base: int,
                 vmm_base: int):
        super().__init__(index, image, machine)
        self.monitor = monitor
        self.slice_base = slice_base
        self.memory_size = image.memory_size
        self.vmm_base = vmm_base                  # this VM's part of the VMM area
        self.pd = vmm_base + V_PD                 # its VMM-made page directory (vmkit.vmm.paging)
        self.devices = Devices(input=bytes(image.input))
        self.port_handlers: dict = {}             # extra virtual devices: port -> (read, write)
        self._vcpu = None                         # the subclass's virtual CPU
        self.saved = CPU()                        # the real CPU state while another VM runs
        self._clock = 0
        self.tick_steps: list[int] = []   # its instruction count at each timer tick delivered
        self.steps = 0                            # guest instructions retired (emulated too)
        self.pending: tuple | None = None         # (reason, detail): stop at the next chance
        # free pages of its VMM area for page tables the VMM makes (vmkit.vmm.paging)
        self.pool = [vmm_base + a for a in range(V_POOL, MiB, 0x1000)]

    # ---- declared state ---------------------------------------------------------------------
    def declared_state(self) -> tuple:
        """The names a snapshot keeps: ``vm_state`` along the classes, then the paging mode's."""
        names = state.declared(type(self), "vm_state")
        return names + tuple(n for n in self.monitor.paging.vm_state if n not in names)

    def save_state(self) -> dict:
        """What a snapshot keeps of this VM: every name of :meth:`declared_state`."""
        return {n: state.kept(getattr(self, n)) for n in self.declared_state()}

    def load_state(self, saved: dict) -> None:
        """Put back what :meth:`save_state` returned."""
        state.load(self, saved)

    # ---- identity -------------------------------------------------------------------------
    @property
    def vcpu(self):
        """The CPU as the guest believes it is (the monitor's virtual CPU)."""
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
        return self.machine.cpu if self.monitor.current == self.index else self.saved

    @property
    def clock(self) -> int:
        """Guest time: instructions this VM retired (emulated ones too) plus idle time."""
        return self.machine.clock if self.monitor.current == self.index else self._clock

    # ---- guest-physical memory ------------------------------------------------------------
    def host_address(self, gpa: int) -> int | None:
        """Host-physical address of guest-physical ``gpa`` (None beyond the VM's memory)."""
        return self.slice_base + gpa if 0 <= gpa < self.memory_size else None

    def phys_read(self, gpa: int, n: int, source: str = "vmm") -> bytes:
        """n bytes of guest-physical memory (all ones beyond its end), as
        ``Machine.phys_read`` reads physical memory. Where the machine watches memory (a
        debugger's watchpoint) the read goes through it, as ``source`` ("vmm": the VMM on the
        guest's behalf; "peek": unseen)."""
        if gpa + n <= self.memory_size:
            a = self.slice_base + gpa
            m = self.machine
            if m.watched_pages and source != "peek":
                return m.phys_read(a, n, source)
            return bytes(m.mem[a:a + n])
        return bytes(self.machine.mem[self.slice_base + gpa + k]
                     if gpa + k < self.memory_size else 0xFF for k in range(n))

    def phys_write(self, gpa: int, data: bytes, source: str = "vmm") -> None:
        """Write guest-physical memory (bytes beyond its end are dropped), as
        ``Machine.phys_write`` writes physical memory."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise VmkitError(f"GuestVM.phys_write takes bytes, as Machine.phys_write does, got "
                             f"{type(data).__name__}; for an integer use "
                             f"phys_write_uint(gpa, n, value)")
        keep = max(0, min(len(data), self.memory_size - gpa))
        if keep:
            self.machine.phys_write(self.slice_base + gpa, bytes(data[:keep]), source)

    def phys_read_uint(self, gpa: int, n: int, source: str = "vmm") -> int:
        """The n bytes of :meth:`phys_read` as a little-endian unsigned integer (a page-table
        entry, a field of a shared page)."""
        if gpa + n <= self.memory_size:
            a = self.slice_base + gpa
            m = self.machine
            if m.watched_pages and source != "peek":
                return int.from_bytes(m.phys_read(a, n, source), "little")
            return int.from_bytes(m.mem[a:a + n], "little")
        return int.from_bytes(self.phys_read(gpa, n, source), "little")

    def phys_write_uint(self, gpa: int, n: int, v: int) -> None:
        """Write ``v`` as n little-endian bytes of guest-physical memory (:meth:`phys_write`)."""
        self.phys_write(gpa, (v & ((1 << (8 * n)) - 1)).to_bytes(n, "little"))

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
        fault = self._pf if touch else self._peek_pf
        rd = self.phys_read_uint if touch else self._peek_read
        frame, flags, dirty, _ = walk_tables(rd, self.phys_write_uint, lin, write, user,
                                             vc.cr0, vc.cr3, vc.cr4, fault, touch)
        return frame | (lin & 0xFFF), flags, dirty

    def _peek_read(self, gpa: int, n: int) -> int:
        return self.phys_read_uint(gpa, n, "peek")

    def _peek_pf(self, lin: int, err: int, refs: int):
        self._pf(lin, err, refs, touch=False)

    def _pf(self, lin: int, err: int, refs: int = 0, touch: bool = True):
        if touch:
            self._vcpu.cr2 = lin   # the hardware sets CR2 when the walk fails
        raise Fault(14, err, lin, ("protection violation" if err & 1 else "page not present")
                    + (" on write" if err & 2 else " on read") + (" from user mode" if err & 4
                                                                   else "") + " (guest tables)")

    def lin_read(self, lin: int, n: int, user: bool = False) -> int:
        """n bytes at guest-linear ``lin`` as a little-endian unsigned integer (supervisor
        access unless ``user``), as ``Machine.lin_read`` reads a linear address: through the
        guest's paging, accessed bits set, a denied access the guest's #PF."""
        if (lin & 0xFFF) + n <= 0x1000:     # one page (a descriptor, a frame slot): one step
            return self.phys_read_uint(self.translate(lin & MASK32, False, user), n)
        out, k = 0, 0
        while k < n:
            a = (lin + k) & MASK32
            take = min(n - k, 0x1000 - (a & 0xFFF))
            out |= self.phys_read_uint(self.translate(a, False, user), take) << (8 * k)
            k += take
        return out

    def lin_write(self, lin: int, n: int, v: int, user: bool = False) -> None:
        """Write ``v`` as n bytes at guest-linear ``lin``, as ``Machine.lin_write``; every page
        is checked before any is written."""
        if (lin & 0xFFF) + n <= 0x1000:     # one page: one translation, then the write
            self.phys_write_uint(self.translate(lin & MASK32, True, user), n, v)
            return
        parts, k = [], 0
        while k < n:
            a = (lin + k) & MASK32
            take = min(n - k, 0x1000 - (a & 0xFFF))
            parts.append((self.translate(a, True, user), take, k))
            k += take
        for gpa, take, k in parts:
            self.phys_write_uint(gpa, take, v >> (8 * k))

    def read(self, lin: int, n: int, user: bool = False) -> int:
        """Deprecated name of :meth:`lin_read` (``read`` on the machine means physical bytes);
        kept for one release."""
        _renamed("read", "lin_read")
        return self.lin_read(lin, n, user)

    def write(self, lin: int, n: int, v: int, user: bool = False) -> None:
        """Deprecated name of :meth:`lin_write`; kept for one release."""
        _renamed("write", "lin_write")
        self.lin_write(lin, n, v, user)

    def peek(self, lin: int, n: int) -> bytes | None:
        """Guest-linear bytes without side effects (None if unmapped)."""
        out, k = bytearray(), 0
        try:
            while k < n:
                a = (lin + k) & MASK32
                take = min(n - k, 0x1000 - (a & 0xFFF))
                gpa = self.walk(a, touch=False)[0]
                out += self.phys_read(gpa, take, "peek")
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
            return self.lin_read(self.address(op), size or op.size, user=self._vcpu.cpl == 3)
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
            self.lin_write(self.address(op), op.size, v, user=self._vcpu.cpl == 3)
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

    def acknowledge_irq(self, line: int) -> int:
        """Take interrupt ``line`` from the VM's interrupt controller for delivery (in
        service from now on), logging a timer tick when its timer runs on machine time
        (``tick_steps``); -> the vector it is delivered at. Every monitor's injection of a
        virtual interrupt starts here."""
        self.devices.acknowledge(line)
        if line == 0 and self.monitor.machine_timer:
            self.tick_steps.append(self.steps)
        return IRQ_BASE + line

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

    # ---- descriptors as the guest sees them ------------------------------------------------
    def descriptor(self, selector: int, fault: int = 13) -> Descriptor:
        """The guest's own descriptor for ``selector`` (from its GDT or LDT in guest memory)."""
        vc = self._vcpu
        table = vc.ldtr if selector & 4 else vc.gdtr
        off = selector & 0xFFF8
        if (selector & 4 and not vc.ldtr.selector) or off + 7 > table.limit:
            raise Fault(fault, selector & 0xFFFC, detail=f"selector {selector:#x} beyond the "
                        f"guest's {'LDT' if selector & 4 else 'GDT'} limit")
        return Descriptor.parse(self.lin_read(table.base + off, 8))

    def check_code(self, selector: int, new_cpl: int, fault: int = 13) -> Descriptor:
        """The checks of a code-segment load at virtual CPL ``new_cpl`` (guest descriptors)."""
        return rules.code_segment(self, selector, new_cpl, fault)

    def stack_descriptor(self, selector: int, ring: int, fault: int = 13) -> Descriptor:
        """The checks of an SS load for virtual ring ``ring`` (guest descriptors)."""
        return rules.stack_segment(self, selector, ring, fault)

    # ---- the interface of vmkit.machine.rules, on the guest's tables (and lin_read) ---------
    def read_descriptor(self, selector: int, fault: int = 13) -> Descriptor:
        return self.descriptor(selector, fault)

    # ---- what the default handlers delegate to the VMM -----------------------------------
    def read_cr(self, n: int) -> int:
        if n not in (0, 2, 3, 4):
            raise Fault(6, detail=f"cr{n} does not exist")
        return getattr(self._vcpu, f"cr{n}")

    # ---- the VMM's view of guest translations -----------------------------------------------
    def translate(self, lin: int, write: bool = False, user: bool = False) -> int:
        """Guest-linear -> guest-physical for an access: a walk of the guest's tables."""
        return self.walk(lin, write, user)[0]

    def flush_tlb(self, vpn: int | None = None) -> None:
        """Drop the VMM's cached translations of guest addresses (none here: every access
        walks)."""

    def __repr__(self) -> str:
        r = self.result.reason if self.result else "running"
        return f"<{type(self).__name__} {self.index} {self.image.name} {r}>"
