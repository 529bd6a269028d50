"""The one interface of a virtual CPU: what the monitors, the debugger, viz and the widgets may
ask of the CPU as the guest believes it is (``monitor.vcpu``, ``vm.vcpu``), after KVM's
``struct x86_emulate_ops``, through which its one emulator reaches any vCPU.

:class:`VCPU` declares the members (a ``typing.Protocol``: ``isinstance(x, VCPU)`` checks
that they are all there). Three classes have them, with the same names for the same things:

* :class:`~vmkit.vmm.deprivileged.vcpu.VirtualCPU` (te, bt, pv): the general registers, EIP
  and the status flags are the real CPU's (the guest runs on it in ring 1); CR0-CR4, the table
  registers, IF, IOPL, CPL and ``halted`` are kept by the VMM;
* :class:`~vmkit.vmm.hw.vcpu.GuestCPU` (hw): in non-root mode nearly everything is the real
  CPU, except CR0/CR4 bits the VMM owns (read shadows) and CR3 under shadow paging;
* :class:`vmkit.machine.cpu.CPU`: ``Native``'s guest runs on the machine's own CPU.

:class:`RealBackedCPU` writes once what both monitors' vCPUs take from the real CPU of their
VM (``vm.real_cpu``: the machine's CPU while the VM runs, its saved copy while another VM has
the CPU): the general registers, EIP, DS/ES/FS/GS, the named flags, ``paging``.

Writing: the general registers, EIP, EFLAGS, IF, the table registers, CPL and ``halted`` may
be set by the VMM's code (an emulated instruction's effect). CR0, CR3 and CR4 change only
through the monitor, ``monitor.write_cr(vm, n, value)``, which also tells the paging mode
(hw refuses a plain assignment; te's emulator assigns them inside ``write_cr``). Snapshots do
not go through this interface: a vCPU that keeps state of its own declares it
(``state_fields``, :mod:`vmkit.vmm.state`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from vmkit.isa.decode import GPR_NAMES
from vmkit.machine.cpu import CPU, EFLAGS, MASK32, TableReg
from vmkit.machine.mmu import CR0_PG

__all__ = ["VCPU", "VCPU_MEMBERS", "RealBackedCPU"]

#: the members of :class:`VCPU`, in the order a register table shows them
VCPU_MEMBERS = (*GPR_NAMES, "regs", "eip", "eflags", "flags", "IF", "iopl",
                "cs", "ss", "ds", "es", "fs", "gs", "cpl",
                "cr0", "cr2", "cr3", "cr4", "paging", "gdtr", "idtr", "ldtr", "tr", "halted")


@runtime_checkable
class VCPU(Protocol):
    """The CPU as the guest believes it is (see the module text). Every member reads what the
    guest would read natively at the same instruction: the equivalence tests compare them."""

    eax: int  #: general registers by name (32 bits), the same as ``regs[i]``
    ecx: int
    edx: int
    ebx: int
    esp: int
    ebp: int
    esi: int
    edi: int

    @property
    def regs(self) -> list:
        """The eight general registers in encoding order (eax, ecx, edx, ebx, esp, ebp, esi,
        edi), a list that may be written in place."""

    eip: int  #: the guest's instruction pointer

    @property
    def eflags(self) -> int:
        """EFLAGS as the guest reads it (PUSHFD): IF and IOPL are the guest's own."""

    @property
    def flags(self) -> EFLAGS:
        """``eflags`` as named bits."""

    IF: int  #: EFLAGS.IF as the guest believes it (1: maskable interrupts enabled)

    @property
    def iopl(self) -> int:
        """EFLAGS.IOPL as the guest believes it."""

    @property
    def cs(self) -> int:
        """The code segment selector as the guest would read it (its RPL is the guest's CPL,
        even where the kernel really runs in ring 1)."""

    @property
    def ss(self) -> int:
        """The stack segment selector, as ``cs``."""

    @property
    def ds(self) -> int:
        """Data segment selectors (``ds``, ``es``, ``fs``, ``gs``) as loaded."""

    @property
    def es(self) -> int: ...

    @property
    def fs(self) -> int: ...

    @property
    def gs(self) -> int: ...

    cpl: int  #: the privilege level the guest believes it runs at (0 in its kernel)

    @property
    def cr0(self) -> int:
        """CR0 as MOV from CR0 gives it to the guest (set: ``monitor.write_cr``)."""

    cr2: int  #: CR2: the linear address of the guest's last page fault

    @property
    def cr3(self) -> int:
        """CR3 as the guest loaded it (the root of the guest's page tables, guest-physical)."""

    @property
    def cr4(self) -> int:
        """CR4 as MOV from CR4 gives it to the guest."""

    @property
    def paging(self) -> bool:
        """Whether the guest has paging on (CR0.PG)."""

    gdtr: TableReg  #: the guest's GDTR (base, limit: guest-linear)
    idtr: TableReg  #: the guest's IDTR
    ldtr: TableReg  #: the guest's LDTR (selector, cached base and limit)
    tr: TableReg    #: the guest's task register (selector, cached base and limit)
    halted: bool    #: the guest executed HLT and waits for an interrupt


def _gpr(i: int):
    def get(self):
        return self._real.regs[i]

    def set_(self, v):
        self._real.regs[i] = v & MASK32
    return property(get, set_, doc=f"{GPR_NAMES[i]}: the real register (guest code runs on it)")


class RealBackedCPU:
    """What a monitor's vCPU takes from its VM's real CPU (see the module text). A subclass
    adds what the monitor keeps apart: EFLAGS, IF, IOPL, CS/SS, CPL, the control and table
    registers, ``halted``."""

    def __init__(self, vm):
        self._vm = vm

    @property
    def _real(self) -> CPU:
        vm = self._vm     # vm.real_cpu, without its property call (every register access)
        return vm.machine.cpu if vm.monitor.current == vm.index else vm.saved

    @property
    def regs(self) -> list:
        vm = self._vm
        return (vm.machine.cpu if vm.monitor.current == vm.index else vm.saved).regs

    @property
    def eip(self) -> int:
        vm = self._vm
        return (vm.machine.cpu if vm.monitor.current == vm.index else vm.saved).eip

    @eip.setter
    def eip(self, v: int) -> None:
        self._real.eip = v & MASK32

    @property
    def flags(self) -> EFLAGS:
        return EFLAGS(self.eflags)

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
        return (f"<{type(self).__name__} vm{self._vm.index} {r} eip={self.eip:08x} "
                f"eflags={self.eflags:08x} cpl={self.cpl} (real cpl {self._real.cpl}) "
                f"cr0={self.cr0:08x} cr3={self.cr3:08x} cr4={self.cr4:08x}>")


for _i, _n in enumerate(GPR_NAMES):
    setattr(RealBackedCPU, _n, _gpr(_i))
del _i, _n
