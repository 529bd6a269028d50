"""Trap-and-emulate's instruction handlers: the emulation registry (mnemonic -> handler(vm,
insn)) and the default handlers, each on the virtual CPU of the VM that trapped."""

from __future__ import annotations

from vmkit.isa.decode import Imm, Insn, Reg
from vmkit.isa.faults import Fault
from vmkit.machine import rules
from vmkit.machine.cpu import MASK32, TableReg
from vmkit.trace import IRet
from vmkit.vmm.deprivileged.vcpu import CR4_TSD, CR4_UMIP, NT, TEVM
from vmkit.vmm.vm import CannotEmulate, NotEmulated

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
    base, limit = vm.lin_read((a + 2) & MASK32, 4), vm.lin_read(a, 2)
    vm.load_gdt(base, limit)


@handles("lidt")
def emulate_lidt(vm: TEVM, insn: Insn) -> None:
    """LIDT (SDM Vol. 2A): the virtual IDTR; the VMM reads the guest's IDT when it reflects."""
    _privileged(vm)
    a = vm.address(insn.operands[0])
    base, limit = vm.lin_read((a + 2) & MASK32, 4), vm.lin_read(a, 2)
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
    vm.lin_write(vm.vcpu.gdtr.base + (sel & 0xFFF8) + 5, 1, d.access | 2)   # busy
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
    vm.load_ss(vm.lin_read(esp, size) & 0xFFFF)
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
    old = vc.eflags
    if old & NT:
        raise CannotEmulate("iretd with NT set (task return)")
    cpl = vc.cpl
    user = cpl == 3
    regs = vc.regs
    esp = regs[4]
    # the frame of an outward return too (ESP, SS after EIP, CS, EFLAGS) in one side-effect-free
    # load when all of it lies in one page the VMM's TLB maps; else read as needed
    frame = vm.dwords_hit(esp, 5, user)
    if frame is None:
        eip, cs, fl = vm.lin_read_dwords(esp, 3, user)
    else:
        eip, cs, fl = frame[:3]
    cs &= 0xFFFF
    rpl = cs & 3
    if rpl < cpl:
        raise Fault(13, cs & 0xFFFC, detail=f"iretd to ring {rpl} from ring {cpl}")
    d = vm.check_code(cs, rpl)
    if not d.access & 1:
        vm.set_accessed(cs, d)
    if rpl > cpl:
        new_esp, new_ss = (vm.lin_read_dwords((esp + 12) & MASK32, 2, user) if frame is None
                           else frame[3:])
        new_ss &= 0xFFFF
        vm.stack_descriptor(new_ss, rpl)
    mask = rules.iret_flags_mask(cpl, vc.iopl)
    vc.eflags = (old & ~mask) | (fl & mask)
    vc.eip = eip
    mon = vm.monitor
    if rpl > cpl:
        mon._load_real_segment(vm, 2, new_ss)
        regs[4] = new_esp & MASK32
    else:
        regs[4] = (esp + 12) & MASK32
    # the descriptor just checked, when its accessed bit was set already (else read again)
    mon._load_real_cs(vm, cs, rpl, "iret", d if d.access & 1 else None)
    mon.trace.record((IRet, vm.index, vm.clock, cpl, rpl, eip))


@handles("retf")
def emulate_retf(vm: TEVM, insn: Insn) -> None:
    """RETF (SDM Vol. 2B) at virtual CPL 0 to the kernel's own RPL-0 code selector (the real
    return would go inward, RPL 0 < CPL 1, and faults)."""
    vc = vm.vcpu
    extra = insn.operands[0].value if insn.operands else 0
    esp = vc.esp
    user = vc.cpl == 3
    eip = vm.lin_read(esp, 4, user)
    cs = vm.lin_read((esp + 4) & MASK32, 4, user) & 0xFFFF
    rpl, cpl = cs & 3, vc.cpl
    if rpl < cpl:
        raise Fault(13, cs & 0xFFFC, detail="retf to an inner ring")
    d = vm.check_code(cs, rpl)
    vm.set_accessed(cs, d)
    if rpl > cpl:
        base = (esp + 8 + extra) & MASK32
        new_esp = vm.lin_read(base, 4, user)
        new_ss = vm.lin_read((base + 4) & MASK32, 4, user) & 0xFFFF
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
    vm.lin_write(a, 2, t.limit, user)
    vm.lin_write((a + 2) & MASK32, 4, t.base, user)


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

