"""The host machine in VMX non-root mode: what non-root mode changes, as the machine's hooks
(:class:`NonRootMode`), and the stubs of the instructions the controls make exit (compiled once
per instruction, see the ``intercept`` hook)."""

from __future__ import annotations

from vmkit.isa import semantics as sem
from vmkit.isa.decode import Imm, Mem, Reg
from vmkit.isa.faults import Fault, Resched
from vmkit.machine import rules
from vmkit.machine.cpu import MASK32
from vmkit.machine.devices import IRQ_BASE
from vmkit.machine.hooks import MachineHooks
from vmkit.machine.mmu import Sync
from vmkit.vmm.hw.vmexit import on_exception as _exit_or_deliver
from vmkit.vmm.hw.vmcs import (_WINDOW, CPUID, CR0_TS, CR4_TSD, CR4_UMIP, CR_ACCESS,
                               DEVICE_PORTS, EXTERNAL_INTERRUPT, HLT, IF, INTERRUPT_WINDOW,
                               INTR_EXTERNAL, INVLPG, IO_INSTRUCTION, RDTSC, NonRootExit,
                               _DuringDelivery, interruption_info)
from vmkit.vmm.vm import event_name


# =================================================================================================
# Non-root mode: the machine's hooks while it runs guests
# =================================================================================================
class NonRootMode(MachineHooks):
    """What VMX non-root mode changes in the host machine, as its hooks (vmkit.machine.hooks),
    attached while ``hw`` runs guests:

    * every exception and interrupt goes to the VMM's exit logic first (``on_exception``), and
      the instructions the controls make exit are replaced by stubs (``intercept``);
    * interrupts of the machine's device (the VMM's timer) exit whatever the guest's IF
      (external-interrupt exiting); with interrupt-window exiting on (``window_exiting``), the
      first boundary where the guest's IF is 1 and no STI shadow blocks exits;
    * a fault during event delivery that the VMCS makes exit (exception bitmap, EPT violation)
      exits with the event saved as IDT-vectoring information instead of becoming a nested
      exception;
    * a #PF that exits (``pf_exits``: #PF in the exception bitmap) leaves CR2 unchanged (SDM
      Vol. 3C, 28.1);
    * LAR/LSL/VERR/VERW let an exit (or a hidden page fault) on the descriptor read through;
    * the ports of the VM's devices that do not exit (direct assignment) reach the running VM's
      own device, at its guest time.
    """

    def __init__(self, hw):
        self.hw = hw
        self.window_exiting = False
        self.pf_exits = False

    # ---- notifications ---------------------------------------------------------------------
    def on_exception(self, vector, fault, source, next_eip) -> bool:
        """Exits raised by the CPU, and the exception bitmap; anything that does not exit is
        delivered by the CPU through the guest's IDT (False)."""
        return _exit_or_deliver(self.hw, vector, fault, source, next_eip)

    def intercept(self, insn):
        """The stub that replaces an instruction the controls make exit (or that reads a read
        shadow), or None to run the instruction's own semantics."""
        build = _STUBS.get(insn.mnemonic)
        return build(self.hw, insn) if build is not None else None

    # ---- event policy ------------------------------------------------------------------------
    def deliverable_irq(self):
        m = self.host
        line = m.dev.pending_vector()
        if line is not None:
            return line
        if self.window_exiting and m.cpu.ef & IF and m.steps >= m.irq_inhibit_until:
            return _WINDOW
        return None

    def deliver_irq(self, line) -> bool:
        if line == _WINDOW:
            x = NonRootExit(INTERRUPT_WINDOW)
        else:
            self.host.dev.acknowledge(line)   # "acknowledge interrupt on exit"
            x = NonRootExit(EXTERNAL_INTERRUPT,
                            interruption=interruption_info(IRQ_BASE + line, INTR_EXTERNAL))
        self.hw._record(x)
        return True

    def deliver(self, vector, error_code, return_eip, source):
        try:
            super().deliver(vector, error_code, return_eip, source)
        except Fault as f:
            x = self.hw._exit_during_delivery(f, vector, error_code, source)
            if x is None:
                raise
            raise _DuringDelivery(x) from None
        self.hw.delivered[event_name(vector, source)] += 1

    def soft_int(self, vector, next_eip, source):
        try:
            super().soft_int(vector, next_eip, source)
        except _DuringDelivery as d:
            raise d.exit from None   # unwinds the INT like a fault; it runs again after the exit

    def take_exception(self, f):
        try:
            super().take_exception(f)
        except _DuringDelivery as d:
            self.hw._record(d.exit)

    def page_fault(self, lin, err, refs):
        if not self.pf_exits:
            return super().page_fault(lin, err, refs)
        cpu = self.host.cpu
        cr2 = cpu.cr2
        try:
            super().page_fault(lin, err, refs)
        finally:
            cpu.cr2 = cr2

    def descriptor_visible(self, selector):
        # an exit or a hidden page fault on the table read goes through, not "invisible"
        m = self.host
        return rules.visible_descriptor(m, m.cpu.cpl, selector, only_gp_hides=True)

    # ---- ports -------------------------------------------------------------------------------
    def port_read(self, port, size):
        if port in DEVICE_PORTS:
            hw = self.hw
            return hw.vms[hw.current].devices.read(port, size, self.host.clock)
        return None

    def port_write(self, port, size, value) -> bool:
        if port in DEVICE_PORTS:
            hw = self.hw
            hw.vms[hw.current].devices.write(port, size, value, self.host.clock)
            return True
        return False


# =================================================================================================
# Stubs: instructions in non-root mode (compiled once per instruction, see MachineHooks.intercept)
# =================================================================================================
def _named(fn, insn):
    fn.__name__ = insn.text            # what an InstructionRetired event shows
    return fn


def _address(regs: list, m: Mem):
    """A function computing the linear address of memory operand ``m`` (flat segments)."""
    disp, base, index, scale = m.disp, m.base, m.index, m.scale

    def ea():
        a = disp
        if base is not None:
            a += regs[base]
        if index is not None:
            a += regs[index] * scale
        return a & MASK32
    return ea


def _gp(cpu) -> Fault:
    return Fault(13, 0, detail=f"privileged instruction at CPL {cpu.cpl}")


def _exiting(hw, insn, reason: int, qualification: int = 0, *, privileged: bool = True,
             check=None, address=None):
    """The stub of an instruction that exits whenever it runs, with the one prologue every
    such exit has (SDM Vol. 3C, 25.1.1: the CPU's own checks come before the exit): #GP at
    CPL > 0 for a ``privileged`` instruction, then ``check()`` (another fault of the CPU's),
    then the exact clock (out of a burst), then the exit with ``qualification`` (or, with
    ``address``, the linear address ``address()`` computes, as INVLPG reports it)."""
    m = hw._host
    C = m.cpu

    def stub():
        if privileged and C.cpl:
            raise _gp(C)
        if check is not None:
            check()
        if m.in_burst:
            raise Sync()
        if address is not None:
            a = address()
            raise NonRootExit(reason, a, insn=insn, linear=a)
        raise NonRootExit(reason, qualification, insn=insn)
    return _named(stub, insn)


def _stub_hlt(hw, insn):
    return _exiting(hw, insn, HLT) if hw.controls.hlt_exiting else None


def _stub_cpuid(hw, insn):
    return _exiting(hw, insn, CPUID, privileged=False)


def _stub_rdtsc(hw, insn):
    if not hw.controls.rdtsc_exiting:
        return None
    C = hw._host.cpu

    def tsd():
        if C.cpl and C.cr4 & CR4_TSD:
            raise Fault(13, 0, detail="CR4.TSD")
    return _exiting(hw, insn, RDTSC, privileged=False, check=tsd)


def _stub_io(hw, insn):
    """IN/OUT: the CPU's IOPL and TSS-bitmap check first (it has priority over the exit), then
    the exit decision for this port (unconditional I/O exiting or the I/O bitmap), else the
    access goes to the device directly (direct assignment)."""
    m = hw._host
    C = m.cpu
    R = C.regs
    is_in = insn.mnemonic == "in"
    a, b = insn.operands
    port_op, data = (b, a) if is_in else (a, b)
    size = data.size
    fixed = port_op.value if isinstance(port_op, Imm) else None
    normal = sem.compile_insn(insn, m.compile_globals)
    if isinstance(normal, str):
        return None
    base_q = (size - 1) | (8 if is_in else 0) | (0x40 if fixed is not None else 0)

    def io():
        if m.in_burst:
            raise Sync()
        port = fixed if fixed is not None else R[2] & 0xFFFF
        if not m.io_permitted(port, size):
            raise Fault(13, 0, detail=f"port {port:#x} not permitted at CPL {C.cpl}")
        if hw._io_exits(port, size):
            raise NonRootExit(IO_INSTRUCTION, base_q | (port << 16), insn=insn)
        normal()
    return _named(io, insn)


def _stub_mov(hw, insn):
    """MOV to/from CR0, CR3, CR4 (SDM Vol. 3C, 26.1.3 and 26.3): writes that change a bit the
    VMM owns exit, reads of owned bits show the read shadow; CR3 by its load/store controls."""
    d, s = insn.operands
    m = hw._host
    C = m.cpu
    R = C.regs
    nxt = insn.next
    c = hw.controls

    def vmcs():
        return hw.vms[hw.current].vmcs

    if isinstance(d, Reg) and d.kind == "cr" and d.index in (0, 3, 4):
        n, gpr = d.index, s.index
        q = n | (gpr << 8)                        # access type 0: MOV to CR
        if n == 3:
            return _exiting(hw, insn, CR_ACCESS, q) if c.cr3_load_exiting else None

        def mov_to_cr():
            if C.cpl:
                raise _gp(C)
            if m.in_burst:
                raise Sync()
            v = R[gpr]
            mask, shadow, real = _owned(vmcs(), n, C)
            if (v ^ shadow) & mask:
                raise NonRootExit(CR_ACCESS, q, insn=insn)
            m.write_cr(n, (v & ~mask) | (real & mask))   # owned bits keep their real values
            C.eip = nxt
            raise Resched()
        return _named(mov_to_cr, insn)

    if isinstance(s, Reg) and s.kind == "cr" and s.index in (0, 3, 4):
        n, gpr = s.index, d.index
        if n == 3:
            q = 3 | (1 << 4) | (gpr << 8)             # access type 1: MOV from CR
            return _exiting(hw, insn, CR_ACCESS, q) if c.cr3_store_exiting else None

        def mov_from_cr():
            if C.cpl:
                raise _gp(C)
            mask, shadow, real = _owned(vmcs(), n, C)
            R[gpr] = (real & ~mask) | (shadow & mask)
            C.eip = nxt
        return _named(mov_from_cr, insn)
    return None


def _owned(x, n: int, C) -> tuple[int, int, int]:
    """(the guest/host mask, the read shadow, the real value) of CR``n`` (0 or 4) in VMCS
    ``x``: the bits the VMM owns, what the guest believes they are, what they are."""
    if n == 0:
        return x.controls.cr0_guest_host_mask, x.cr0_read_shadow, C.cr0
    return x.controls.cr4_guest_host_mask, x.cr4_read_shadow, C.cr4


def _guest_cr0(hw) -> int:
    x = hw.vms[hw.current].vmcs
    mask = x.controls.cr0_guest_host_mask
    return (hw._host.cpu.cr0 & ~mask) | (x.cr0_read_shadow & mask)


def _stub_smsw(hw, insn):
    """SMSW in non-root mode: owned CR0 bits come from the read shadow (SDM Vol. 3C, 26.3)."""
    (d,) = insn.operands
    m = hw._host
    C = m.cpu
    R = C.regs
    g = m.compile_globals
    nxt = insn.next
    ea = _address(R, d) if isinstance(d, Mem) else None

    def smsw():
        if C.cpl and C.cr4 & CR4_UMIP:
            raise Fault(13, 0, detail="UMIP")
        v = _guest_cr0(hw)
        if ea is not None:
            g["wr2"](ea(), v & 0xFFFF)
        elif d.size == 4:
            R[d.index] = v
        else:
            R[d.index] = (R[d.index] & 0xFFFF0000) | (v & 0xFFFF)
        C.eip = nxt
    return _named(smsw, insn)


def _stub_lmsw(hw, insn):
    """LMSW (SDM Vol. 3C, 26.1.3): exits if it would set an owned PE the shadow has clear or
    change an owned MP/EM/TS; else it changes only the bits the guest owns (PE never cleared)."""
    (src,) = insn.operands
    m = hw._host
    C = m.cpu
    R = C.regs
    g = m.compile_globals
    nxt = insn.next
    ea = _address(R, src) if isinstance(src, Mem) else None

    def lmsw():
        if C.cpl:
            raise _gp(C)
        if m.in_burst:
            raise Sync()
        v = (g["rd2"](ea()) if ea is not None else R[src.index]) & 0xF
        x = hw.vms[hw.current].vmcs
        mask, shadow = x.controls.cr0_guest_host_mask, x.cr0_read_shadow
        if (mask & 1 and v & 1 and not shadow & 1) or (v ^ shadow) & mask & 0xE:
            raise NonRootExit(CR_ACCESS, (3 << 4) | (0x40 if ea is not None else 0) | (v << 16),
                              insn=insn)
        own = 0xE & ~mask
        new = (C.cr0 & ~own) | (v & own) | (v & 1 & ~mask)
        m.write_cr(0, new)
        C.eip = nxt
        raise Resched()
    return _named(lmsw, insn)


def _stub_clts(hw, insn):
    """CLTS (SDM Vol. 3C, 26.1.3): exits if TS is owned and set in the read shadow; if owned
    and clear there, CR0.TS is left alone; else cleared."""
    m = hw._host
    C = m.cpu
    nxt = insn.next

    def clts():
        if C.cpl:
            raise _gp(C)
        x = hw.vms[hw.current].vmcs
        mask, shadow = x.controls.cr0_guest_host_mask, x.cr0_read_shadow
        if mask & CR0_TS and shadow & CR0_TS:
            if m.in_burst:
                raise Sync()
            raise NonRootExit(CR_ACCESS, 2 << 4, insn=insn)
        if not mask & CR0_TS:
            m.write_cr(0, C.cr0 & ~CR0_TS)
        C.eip = nxt
    return _named(clts, insn)


def _stub_invlpg(hw, insn):
    if not hw.controls.invlpg_exiting:
        return None
    return _exiting(hw, insn, INVLPG, address=_address(hw._host.cpu.regs, insn.operands[0]))


_STUBS = {"hlt": _stub_hlt, "cpuid": _stub_cpuid, "rdtsc": _stub_rdtsc, "in": _stub_io,
          "out": _stub_io, "mov": _stub_mov, "smsw": _stub_smsw, "lmsw": _stub_lmsw,
          "clts": _stub_clts, "invlpg": _stub_invlpg}
