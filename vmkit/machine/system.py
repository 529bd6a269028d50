"""Protected-mode system mechanics: descriptors, segment loads, interrupt and exception
delivery through IDT gates with the TSS stack switch, IRET, far transfers, control registers,
port-permission checks.

Each rule cites the SDM (Intel 64 and IA-32 Architectures Software Developer's Manual, Vol. 3A)
section it follows.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmkit.isa.faults import HAS_ERROR_CODE, VECTOR_NAMES, Fault, Resched
from vmkit.machine.cpu import CPU
from vmkit.machine.mmu import CR0_PG, CR0_WP, CR4_PSE, Sync
from vmkit.trace import Interrupt, IRet, RingTransition

__all__ = ["Descriptor", "SystemMixin", "TripleFault", "BENIGN", "CONTRIBUTORY"]

#: SDM Vol. 3A, Table 6-4: exception classes for the double-fault rule
CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})
PAGE_FAULT = 14
BENIGN = frozenset(range(32)) - CONTRIBUTORY - {PAGE_FAULT, 8}

EFLAGS_IF, EFLAGS_TF, EFLAGS_NT, EFLAGS_RF, EFLAGS_VM = 0x200, 0x100, 0x4000, 0x10000, 0x20000


def _chain(history: tuple) -> str:
    """'#UD, then #GP(0x32) delivering it, ...' for a triple-fault report."""
    first, rest = history[0], history[1:]
    return first + "".join(f", then {h} delivering it" for h in rest)


class TripleFault(Exception):
    """A fault while delivering #DF: the processor shuts down (reported as a crash)."""


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A parsed 8-byte segment or gate descriptor (SDM 3.4.5, 6.11)."""
    raw: int
    base: int
    limit: int        # byte-granular limit (G applied)
    access: int       # byte 5: P DPL S type
    flags: int        # high nibble of byte 6: G D/B L AVL

    @classmethod
    def parse(cls, raw: int) -> "Descriptor":
        lo, hi = raw & 0xFFFFFFFF, raw >> 32
        base = ((lo >> 16) & 0xFFFF) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)
        limit = (lo & 0xFFFF) | (hi & 0xF0000)
        flags = (hi >> 20) & 0xF
        if flags & 0x8:
            limit = (limit << 12) | 0xFFF
        return cls(raw, base, limit, (hi >> 8) & 0xFF, flags)

    @property
    def present(self) -> bool:
        return bool(self.access & 0x80)

    @property
    def dpl(self) -> int:
        return (self.access >> 5) & 3

    @property
    def system(self) -> bool:
        """A system descriptor (TSS, LDT, gate) rather than code or data."""
        return not self.access & 0x10

    @property
    def type(self) -> int:
        return self.access & 0xF

    @property
    def code(self) -> bool:
        return not self.system and bool(self.access & 0x8)

    @property
    def conforming(self) -> bool:
        return self.code and bool(self.access & 0x4)

    @property
    def readable(self) -> bool:
        return not self.system and (not self.code or bool(self.access & 0x2))

    @property
    def writable(self) -> bool:
        return not self.system and not self.code and bool(self.access & 0x2)

    # gate fields
    @property
    def gate_selector(self) -> int:
        return (self.raw >> 16) & 0xFFFF

    @property
    def gate_offset(self) -> int:
        return (self.raw & 0xFFFF) | ((self.raw >> 32) & 0xFFFF0000)


class SystemMixin:
    """Descriptor tables, privilege, interrupts (mixed into Machine)."""

    cpu: CPU

    # ---- descriptor tables ------------------------------------------------------------------
    def read_descriptor(self, selector: int, fault: int = 13) -> Descriptor:
        """The descriptor a selector names (GDT or LDT); #GP/#TS(selector) beyond the limit."""
        cpu = self.cpu
        table = cpu.ldtr if selector & 4 else cpu.gdtr
        off = selector & 0xFFF8
        if (selector & 4 and not cpu.ldtr.selector) or off + 7 > table.limit:
            raise Fault(fault, selector & 0xFFFC,
                        detail=f"selector {selector:#x} beyond the {'LDT' if selector & 4 else 'GDT'} limit")
        return Descriptor.parse(self.lin_read(table.base + off, 8))

    def _set_accessed(self, selector: int, d: Descriptor) -> None:
        """Set the descriptor's accessed bit in memory, as the processor does on a load."""
        if not d.system and not d.access & 1:
            table = self.cpu.ldtr if selector & 4 else self.cpu.gdtr
            a = table.base + (selector & 0xFFF8) + 5
            self.lin_write(a, 1, d.access | 1)

    def _load_cache(self, index: int, selector: int, d: Descriptor | None) -> None:
        s = self.cpu.seg[index]
        s.selector = selector
        if d is None:  # null selector in a data segment register
            s.base, s.limit, s.access, s.flags = 0, 0, 0, 0
            return
        if d.base != 0 or d.limit != 0xFFFFFFFF:
            self.unsupported(f"segment {selector:#x} has base {d.base:#x} and limit "
                             f"{d.limit:#x}; vmkit runs flat segments only (base 0, limit 4 GiB)")
        s.base, s.limit, s.access, s.flags = d.base, d.limit, d.access | 1, d.flags

    def load_seg(self, index: int, selector: int) -> None:
        """MOV/POP to a data segment register or SS, with the checks of SDM Vol. 2B (MOV)."""
        cpu = self.cpu
        cpl, rpl = cpu.cpl, selector & 3
        if index == 2:  # SS
            if selector & 0xFFFC == 0:
                raise Fault(13, 0, detail="null selector loaded into SS")
            d = self.read_descriptor(selector)
            if rpl != cpl or d.dpl != cpl or not d.writable:
                raise Fault(13, selector & 0xFFFC, detail=f"SS selector {selector:#x} not a "
                            f"writable data segment at ring {cpl}")
            if not d.present:
                raise Fault(12, selector & 0xFFFC, detail="stack segment not present")
        else:
            if selector & 0xFFFC == 0:
                self._load_cache(index, selector, None)
                return
            d = self.read_descriptor(selector)
            if not d.readable or ((not d.code or not d.conforming) and (d.dpl < cpl or d.dpl < rpl)):
                raise Fault(13, selector & 0xFFFC, detail=f"selector {selector:#x} not loadable "
                            f"at CPL {cpl} (DPL {d.dpl}, RPL {rpl})")
            if not d.present:
                raise Fault(11, selector & 0xFFFC, detail="segment not present")
        self._set_accessed(selector, d)
        self._load_cache(index, selector, d)

    def _check_code(self, selector: int, new_cpl: int, fault: int = 13) -> Descriptor:
        if selector & 0xFFFC == 0:
            raise Fault(fault, 0, detail="null code selector")
        d = self.read_descriptor(selector, fault)
        if not d.code:
            raise Fault(fault, selector & 0xFFFC, detail=f"selector {selector:#x} is not code")
        if (d.conforming and d.dpl > new_cpl) or (not d.conforming and d.dpl != new_cpl):
            raise Fault(fault, selector & 0xFFFC,
                        detail=f"code segment DPL {d.dpl} cannot run at ring {new_cpl}")
        if not d.present:
            raise Fault(11, selector & 0xFFFC, detail="code segment not present")
        return d

    def _set_cs(self, selector: int, d: Descriptor, new_cpl: int, cause: str) -> None:
        cpu = self.cpu
        old = cpu.cpl
        self._set_accessed(selector, d)
        self._load_cache(1, (selector & 0xFFFC) | new_cpl, d)
        if new_cpl != old:
            cpu.cpl = new_cpl
            self._mode_changed()
            if self.ring_hook is not None:
                self.ring_hook(old, new_cpl, cause)
            self.trace.add(RingTransition(self.clock, from_ring=old, to_ring=new_cpl,
                                          cause=cause, vm=self.vm_index))

    def load_table(self, which: str, base: int, limit: int) -> None:
        """LGDT/LIDT."""
        reg = getattr(self.cpu, which)
        reg.base, reg.limit = base & 0xFFFFFFFF, limit & 0xFFFF

    def load_ldtr(self, selector: int) -> None:
        """LLDT (SDM Vol. 2A): a null selector disables the LDT."""
        cpu = self.cpu
        if selector & 0xFFFC == 0:
            cpu.ldtr.selector, cpu.ldtr.base, cpu.ldtr.limit = 0, 0, 0
            return
        if selector & 4:
            raise Fault(13, selector & 0xFFFC, detail="LDT selector must be in the GDT")
        d = self.read_descriptor(selector)
        if not d.system or d.type != 2:
            raise Fault(13, selector & 0xFFFC, detail=f"selector {selector:#x} is not an LDT")
        if not d.present:
            raise Fault(11, selector & 0xFFFC, detail="LDT not present")
        cpu.ldtr.selector, cpu.ldtr.base, cpu.ldtr.limit = selector, d.base, d.limit

    def load_tr(self, selector: int) -> None:
        """LTR (SDM Vol. 2A): an available 32-bit TSS, marked busy."""
        cpu = self.cpu
        if selector & 0xFFFC == 0 or selector & 4:
            raise Fault(13, selector & 0xFFFC, detail="TR needs a GDT selector")
        d = self.read_descriptor(selector)
        if not d.system or d.type != 9:
            raise Fault(13, selector & 0xFFFC,
                        detail=f"selector {selector:#x} is not an available 32-bit TSS")
        if not d.present:
            raise Fault(11, selector & 0xFFFC, detail="TSS not present")
        self.lin_write(cpu.gdtr.base + (selector & 0xFFF8) + 5, 1, d.access | 2)  # busy
        cpu.tr.selector, cpu.tr.base, cpu.tr.limit = selector, d.base, d.limit

    # ---- descriptor queries (LAR, LSL, VERR, VERW) ---------------------------------------
    def _visible(self, selector: int) -> Descriptor | None:
        if selector & 0xFFFC == 0:
            return None
        try:
            d = self.read_descriptor(selector)
        except Fault:
            return None
        cpl, rpl = self.cpu.cpl, selector & 3
        if not d.conforming and (d.dpl < cpl or d.dpl < rpl):
            return None
        return d

    def lar(self, selector: int):
        """Access rights (SDM LAR), or None; valid system types: TSS, LDT, call/task gates."""
        d = self._visible(selector)
        if d is None or (d.system and d.type not in (1, 2, 3, 4, 5, 9, 0xB, 0xC)):
            return None
        return (d.raw >> 32) & 0x00F0FF00

    def lsl(self, selector: int):
        d = self._visible(selector)
        if d is None or (d.system and d.type not in (1, 2, 3, 9, 0xB)):
            return None
        return d.limit

    def verr(self, selector: int):
        d = self._visible(selector)
        return None if d is None or not d.readable else 1

    def verw(self, selector: int):
        d = self._visible(selector)
        return None if d is None or not d.writable else 1

    # ---- control registers ----------------------------------------------------------------
    def read_cr(self, n: int) -> int:
        if n not in (0, 2, 3, 4):
            raise Fault(6, detail=f"cr{n} does not exist")
        return getattr(self.cpu, f"cr{n}")

    def write_cr(self, n: int, v: int) -> None:
        """MOV to CRn: CR3 flushes the TLB; PG/WP/PSE changes flush and rebind."""
        cpu = self.cpu
        v &= 0xFFFFFFFF
        if n == 0:
            if v & CR0_PG and not v & 1:
                raise Fault(13, 0, detail="CR0.PG without CR0.PE")
            if not v & 1:
                self.unsupported("clearing CR0.PE (real mode is not in the subset)")
            old = cpu.cr0
            cpu.cr0 = v | 0x10  # ET is hardwired to 1
            if (old ^ v) & (CR0_PG | CR0_WP):
                self.flush_tlb()
                self._flush_icache()
                self._mode_changed()
        elif n == 2:
            cpu.cr2 = v
        elif n == 3:
            cpu.cr3 = v
            self.flush_tlb()
        elif n == 4:
            old = cpu.cr4
            cpu.cr4 = v
            if (old ^ v) & CR4_PSE:
                self.flush_tlb()
        else:
            raise Fault(6, detail=f"cr{n} does not exist")

    def invlpg(self, lin: int) -> None:
        self.flush_tlb(lin >> 12)

    # ---- ports ---------------------------------------------------------------------------
    def io_permitted(self, port: int, size: int) -> bool:
        """CPL <= IOPL, or the TSS I/O permission bitmap clears every bit (SDM Vol. 1, 19.5)."""
        cpu = self.cpu
        if cpu.cpl <= (cpu.ef >> 12) & 3:
            return True
        tr = cpu.tr
        if not tr.selector or tr.limit < 0x67:
            return False
        iomap = self.lin_read(tr.base + 0x66, 2)
        first = iomap + port // 8
        last = iomap + (port + size - 1) // 8
        if last > tr.limit:
            return False
        bits = self.lin_read(tr.base + first, last - first + 1)
        mask = ((1 << size) - 1) << (port % 8)
        return not bits & mask

    # ---- interrupt and exception delivery -------------------------------------------------
    def soft_int(self, vector: int, next_eip: int, source: str) -> None:
        """INT n / INT3 / INTO: a trap delivered with the return address after the
        instruction; the gate's DPL is checked against CPL (SDM 6.12.1.1). A monitor's
        ``exception_hook`` sees it first."""
        if self._in_burst:
            raise Sync()  # the hook and the Interrupt event get the exact guest time
        hook = self.exception_hook
        if hook is not None and hook(vector, None, source, next_eip):
            return
        self.deliver(vector, None, next_eip, source)

    def deliver(self, vector: int, error_code: int | None, return_eip: int, source: str) -> None:
        """Deliver one interrupt or exception through the IDT (SDM 6.12.1): gate checks, a
        stack switch through the TSS on a privilege change, the frame, IF/TF cleared."""
        cpu = self.cpu
        at_eip = cpu.eip
        # EXT (bit 0 of an error code): the fault arose while delivering an event external to
        # the program, a hardware interrupt or an earlier exception (SDM 6.13)
        ext = 1 if source in ("irq", "exception") else 0
        soft = source in ("int", "int3", "into")
        idt_err = (vector << 3) | 2 | ext
        if vector * 8 + 7 > cpu.idtr.limit:
            raise Fault(13, idt_err, detail=f"vector {vector} beyond the IDT limit")
        gate = Descriptor.parse(self.lin_read(cpu.idtr.base + vector * 8, 8))
        if not gate.system or gate.type not in (0xE, 0xF):
            raise Fault(13, idt_err, detail=f"IDT entry {vector} is not a 32-bit interrupt "
                        f"or trap gate (type {gate.type:#x})")
        if soft and gate.dpl < cpu.cpl:
            raise Fault(13, idt_err, detail=f"int {vector} from ring {cpu.cpl}: gate DPL "
                        f"{gate.dpl}")
        if not gate.present:
            raise Fault(11, idt_err, detail=f"IDT entry {vector} not present")
        sel = gate.gate_selector
        if sel & 0xFFFC == 0:
            raise Fault(13, ext, detail="interrupt gate with a null selector")
        cd = self.read_descriptor(sel)
        if not cd.code or cd.dpl > cpu.cpl:
            raise Fault(13, (sel & 0xFFFC) | ext,
                        detail=f"gate {vector} leads to selector {sel:#x} (DPL {cd.dpl}) from "
                        f"ring {cpu.cpl}")
        if not cd.present:
            raise Fault(11, (sel & 0xFFFC) | ext, detail="handler code segment not present")
        old_cpl = cpu.cpl
        new_cpl = old_cpl if cd.conforming else cd.dpl
        flags = cpu.eflags
        frame = [flags, cpu.cs, return_eip]
        if new_cpl < old_cpl:
            # stack switch: SSn:ESPn from the TSS (SDM 6.12.1, 7.2.1)
            tr = cpu.tr
            if not tr.selector:
                raise Fault(10, ext, detail="privilege change with no TSS loaded")
            off = 4 + 8 * new_cpl
            if off + 5 > tr.limit:
                raise Fault(10, (tr.selector & 0xFFFC) | ext, detail="TSS too small")
            new_esp = self.lin_read(tr.base + off, 4)
            new_ss = self.lin_read(tr.base + off + 4, 2)
            if new_ss & 0xFFFC == 0 or new_ss & 3 != new_cpl:
                raise Fault(10, (new_ss & 0xFFFC) | ext, detail=f"TSS SS{new_cpl} {new_ss:#x} bad")
            sd = self.read_descriptor(new_ss, 10)
            if sd.dpl != new_cpl or not sd.writable:
                raise Fault(10, (new_ss & 0xFFFC) | ext, detail=f"TSS SS{new_cpl} not a "
                            f"ring-{new_cpl} writable data segment")
            if not sd.present:
                raise Fault(12, (new_ss & 0xFFFC) | ext, detail="TSS stack not present")
            frame = [cpu.ss, cpu.regs[4]] + frame
            esp = new_esp
        else:
            esp = cpu.regs[4]
            new_ss, sd = None, None
        if error_code is not None:
            frame.append(error_code)
        # push the frame (supervisor accesses); a fault here leaves state untouched
        addrs = []
        for v in frame:
            esp = (esp - 4) & 0xFFFFFFFF
            addrs.append((esp, v))
        for a, v in addrs:
            self.lin_write(a, 4, v & 0xFFFFFFFF)
        # commit
        if new_ss is not None:
            self._load_cache(2, new_ss, sd)
        cpu.regs[4] = esp
        cpu.ef = (flags & ~(EFLAGS_TF | EFLAGS_NT | EFLAGS_RF | EFLAGS_VM)) & (
            ~EFLAGS_IF if gate.type == 0xE else 0xFFFFFFFF)
        cpu.lz = None
        cpu.halted = False
        self._set_cs(sel, cd, new_cpl, "interrupt")
        cpu.eip = gate.gate_offset
        self.trace.add(Interrupt(self.clock, vector=vector,
                                 name=VECTOR_NAMES.get(vector, "int" if soft else "irq"),
                                 source=source, error_code=error_code, from_ring=old_cpl,
                                 to_ring=new_cpl, eip=at_eip, handler=cpu.eip,
                                 vm=self.vm_index))

    def deliver_exception(self, f: Fault, _history: tuple = ()) -> None:
        """Deliver an exception with the double-fault rules of SDM Table 6-5: a contributory
        fault or #PF raised while delivering a contributory fault or #PF becomes #DF (benign
        ones are delivered serially); a fault while delivering #DF is a triple fault, whose
        message tells the whole chain from the first exception."""
        history = _history + (str(f),)
        vector, code = f.vector, f.error_code
        if vector in HAS_ERROR_CODE and code is None:
            code = 0
        try:
            self.deliver(vector, code, self.cpu.eip, "exception")
            return
        except Fault as second:
            if vector == 8:
                raise TripleFault(_chain(history + (str(second),))) from None
            bad = (second.vector in CONTRIBUTORY or second.vector == PAGE_FAULT) and (
                vector in CONTRIBUTORY or vector == PAGE_FAULT) and not (
                vector in CONTRIBUTORY and second.vector == PAGE_FAULT)
            if not bad:
                self.deliver_exception(second, history)  # serial: handle the second one
                return
            history += (str(second),)
        try:
            self.deliver(8, 0, self.cpu.eip, "exception")
        except Fault as third:
            raise TripleFault(_chain(history + ("#DF", str(third)))) from None

    # ---- returns and far transfers --------------------------------------------------------
    def iret(self) -> None:
        """IRETD in protected mode, same or outer privilege (SDM Vol. 2A, IRET)."""
        if self._in_burst:
            raise Sync()  # the IRet and RingTransition events get the exact guest time
        cpu = self.cpu
        if cpu.ef & EFLAGS_NT:
            self.unsupported("iretd with NT set (task return)")
        esp = cpu.regs[4]
        # where the popped frame lies: a monitor's ring_hook reads the EFLAGS image there
        # (a ring-1 kernel's iretd to ring 3 loads neither IF nor IOPL, so the monitor must)
        self.iret_frame = esp
        rd = self._g["rd4"]
        eip = rd(esp)
        cs = rd((esp + 4) & 0xFFFFFFFF) & 0xFFFF
        fl = rd((esp + 8) & 0xFFFFFFFF)
        rpl, cpl = cs & 3, cpu.cpl
        if rpl < cpl:
            raise Fault(13, cs & 0xFFFC, detail=f"iretd to ring {rpl} from ring {cpl}")
        d = self._check_code(cs, rpl)
        self._set_accessed(cs, d)  # before any state changes: a fault here leaves none
        if rpl > cpl:
            new_esp = rd((esp + 12) & 0xFFFFFFFF)
            new_ss = rd((esp + 16) & 0xFFFFFFFF) & 0xFFFF
            if new_ss & 0xFFFC == 0 or new_ss & 3 != rpl:
                raise Fault(13, new_ss & 0xFFFC, detail=f"iretd: bad outer SS {new_ss:#x}")
            sd = self.read_descriptor(new_ss)
            if sd.dpl != rpl or not sd.writable:
                raise Fault(13, new_ss & 0xFFFC, detail=f"iretd: SS {new_ss:#x} not a "
                            f"ring-{rpl} writable data segment")
            if not sd.present:
                raise Fault(12, new_ss & 0xFFFC, detail="iretd: stack not present")
        old = cpu.eflags
        # which flags may change is decided at the *current* CPL, as for POPF
        if cpl == 0:
            mask = 0x257FD5
        elif cpl <= (old >> 12) & 3:
            mask = 0x257FD5 & ~0x3000
        else:
            mask = 0x257FD5 & ~0x3000 & ~EFLAGS_IF
        cpu.eflags = (old & ~mask) | (fl & mask)
        cpu.eip = eip
        if rpl > cpl:
            self._load_cache(2, new_ss, sd)
            cpu.regs[4] = new_esp
        else:
            cpu.regs[4] = (esp + 12) & 0xFFFFFFFF
        self._set_cs(cs, d, rpl, "iret")
        if rpl > cpl:
            self._null_outer_segments(rpl)
        self.trace.add(IRet(self.clock, from_ring=cpl, to_ring=rpl, eip=eip, vm=self.vm_index))

    def _null_outer_segments(self, new_cpl: int) -> None:
        """On a return to an outer ring, data segment registers that the outer ring may not use
        are loaded with null (SDM IRET / RET: "for each of ES, FS, GS, DS")."""
        for i in (0, 3, 4, 5):
            s = self.cpu.seg[i]
            code_conf = (s.access & 0x1C) == 0x1C
            if s.selector & 0xFFFC and s.dpl < new_cpl and not code_conf:
                self._load_cache(i, 0, None)

    def far_jump(self, selector: int, offset: int) -> None:
        """JMP ptr16:32 to a code segment at the same privilege (call gates are not in the
        subset: #GP)."""
        d = self.read_descriptor(selector)
        if d.system:
            raise Fault(13, selector & 0xFFFC, detail="far jump through a gate/TSS is not in "
                        "the subset")
        cpl = self.cpu.cpl
        if not d.conforming and (selector & 3) > cpl:
            raise Fault(13, selector & 0xFFFC, detail="far jump with RPL > CPL")
        d = self._check_code(selector, cpl)
        self._set_cs(selector, d, cpl, "far jump")
        self.cpu.eip = offset & 0xFFFFFFFF  # after the load: a fault there leaves EIP as it was

    def far_call(self, selector: int, offset: int, next_eip: int) -> None:
        """CALL ptr16:32 to a code segment at the same privilege: push cs, eip."""
        cpu = self.cpu
        d = self.read_descriptor(selector)
        if d.system:
            raise Fault(13, selector & 0xFFFC, detail="far call through a gate is not in "
                        "the subset")
        if not d.conforming and (selector & 3) > cpu.cpl:
            raise Fault(13, selector & 0xFFFC, detail="far call with RPL > CPL")
        d = self._check_code(selector, cpu.cpl)
        self._set_accessed(selector, d)  # before the pushes: a fault here leaves no state
        wr = self._g["wr4"]
        esp = cpu.regs[4]
        wr((esp - 4) & 0xFFFFFFFF, cpu.cs)
        wr((esp - 8) & 0xFFFFFFFF, next_eip)
        cpu.regs[4] = (esp - 8) & 0xFFFFFFFF
        cpu.eip = offset & 0xFFFFFFFF
        self._set_cs(selector, d, cpu.cpl, "far call")

    def far_ret(self, extra: int) -> None:
        """RETF [n]: same privilege, or to an outer ring (then pop esp and ss too)."""
        if self._in_burst:
            raise Sync()  # a ring change: the RingTransition event gets the exact guest time
        cpu = self.cpu
        rd = self._g["rd4"]
        esp = cpu.regs[4]
        eip = rd(esp)
        cs = rd((esp + 4) & 0xFFFFFFFF) & 0xFFFF
        rpl, cpl = cs & 3, cpu.cpl
        if rpl < cpl:
            raise Fault(13, cs & 0xFFFC, detail="retf to an inner ring")
        d = self._check_code(cs, rpl)
        self._set_accessed(cs, d)  # before any state changes: a fault here leaves none
        if rpl > cpl:
            base = (esp + 8 + extra) & 0xFFFFFFFF
            new_esp = rd(base)
            new_ss = rd((base + 4) & 0xFFFFFFFF) & 0xFFFF
            if new_ss & 0xFFFC == 0:
                raise Fault(13, 0, detail="retf: null outer SS")
            sd = self.read_descriptor(new_ss)
            if new_ss & 3 != rpl or sd.dpl != rpl or not sd.writable:
                raise Fault(13, new_ss & 0xFFFC, detail="retf: bad outer SS")
            if not sd.present:
                raise Fault(12, new_ss & 0xFFFC, detail="retf: stack segment not present")
            self._load_cache(2, new_ss, sd)
            cpu.regs[4] = (new_esp + extra) & 0xFFFFFFFF
        else:
            cpu.regs[4] = (esp + 8 + extra) & 0xFFFFFFFF
        cpu.eip = eip
        self._set_cs(cs, d, rpl, "far return")
        if rpl > cpl:
            self._null_outer_segments(rpl)

    _ = Resched
