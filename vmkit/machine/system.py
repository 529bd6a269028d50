"""Protected-mode system mechanics: descriptors, segment loads, interrupt and exception
delivery through IDT gates with the TSS stack switch, IRET, far transfers, control registers,
port-permission checks.

Each rule cites the SDM (Intel 64 and IA-32 Architectures Software Developer's Manual, Vol. 3A)
section it follows.
"""

from __future__ import annotations

from vmkit.isa.faults import VECTOR_NAMES, Fault, Resched
from vmkit.machine import rules
from vmkit.machine.checkcache import checked, checked_segment, push_frame, read_dwords
from vmkit.machine.cpu import CPU
from vmkit.machine.mmu import CR0_PG, CR0_WP, CR4_PSE, Sync
from vmkit.machine.rules import _PARSED, BENIGN, CONTRIBUTORY, PAGE_FAULT, Descriptor
from vmkit.trace import Interrupt, IRet, RingTransition

# Descriptor and the exception classes live with the rules (vmkit.machine.rules); they are
# re-exported here, where they were first defined
__all__ = ["Descriptor", "SystemMixin", "TripleFault", "BENIGN", "CONTRIBUTORY", "PAGE_FAULT"]

EFLAGS_IF, EFLAGS_TF, EFLAGS_NT, EFLAGS_RF, EFLAGS_VM = 0x200, 0x100, 0x4000, 0x10000, 0x20000


class TripleFault(Exception):
    """A fault while delivering #DF: the processor shuts down (reported as a crash)."""


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
        raw = self.lin_read(table.base + off, 8)
        d = _PARSED.get(raw)       # Descriptor.parse's cache, without the call
        return d if d is not None else Descriptor.parse(raw)

    def _set_accessed(self, selector: int, d: Descriptor) -> None:
        """Set the descriptor's accessed bit in memory, as the processor does on a load."""
        if not d.system and not d.access & 1:
            table = self.cpu.ldtr if selector & 4 else self.cpu.gdtr
            a = table.base + (selector & 0xFFF8) + 5
            self.lin_write(a, 1, d.access | 1)

    def load_segment_cache(self, index: int, selector: int, d: Descriptor | None) -> None:
        """Load segment register ``index``'s selector and hidden part from ``d`` (no checks)."""
        s = self.cpu.seg[index]
        s.selector = selector
        if d is None:  # null selector in a data segment register
            s.base, s.limit, s.access, s.flags = 0, 0, 0, 0
            return
        h = d.hidden    # (base, limit, access | accessed, flags) of a flat descriptor
        if h is None:
            self.unsupported(f"segment {selector:#x} has base {d.base:#x} and limit "
                             f"{d.limit:#x}; vmkit runs flat segments only (base 0, limit 4 GiB)")
        s.base, s.limit, s.access, s.flags = h

    def load_seg(self, index: int, selector: int) -> None:
        """MOV/POP to a data segment register or SS, with the checks of SDM Vol. 2B (MOV)
        (``rules.data_segment``, remembered: vmkit.machine.checkcache)."""
        cpl = self.cpu.cpl
        d = checked_segment(self, ("seg", index, selector, cpl), selector, rules.data_segment,
                            index, selector, cpl)
        if d is None:   # a null selector in a data segment register
            self.load_segment_cache(index, selector, None)
            return
        if not d.access & 1:    # else already accessed: nothing to write
            self._set_accessed(selector, d)
        self.load_segment_cache(index, selector, d)

    def _check_code(self, selector: int, new_cpl: int, fault: int = 13) -> Descriptor:
        return checked_segment(self, ("cs", selector, new_cpl, fault), selector,
                               rules.code_segment, selector, new_cpl, fault)

    def set_cs(self, selector: int, d: Descriptor, new_cpl: int, cause: str) -> None:
        """Load CS (checked by the caller) and change CPL; a ring change tells the
        ``on_ring_change`` hook and the trace."""
        cpu = self.cpu
        old = cpu.cpl
        if not d.access & 1:
            self._set_accessed(selector, d)
        self.load_segment_cache(1, (selector & 0xFFFC) | new_cpl, d)
        if new_cpl != old:
            cpu.cpl = new_cpl
            self.mode_changed()
            if self._hook_ring is not None:
                self._hook_ring(old, new_cpl, cause)
            # (RingTransition, vm, step, from_ring, to_ring, cause): Trace.record
            self.trace.record((RingTransition, self.vm_index, self.clock, old, new_cpl, cause))

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
        d = rules.tss_segment(self, selector)
        self.lin_write(cpu.gdtr.base + (selector & 0xFFF8) + 5, 1, d.access | 2)  # busy
        cpu.tr.selector, cpu.tr.base, cpu.tr.limit = selector, d.base, d.limit

    # ---- descriptor queries (LAR, LSL, VERR, VERW) ---------------------------------------
    def descriptor_visible(self, selector: int) -> Descriptor | None:
        """The descriptor LAR/LSL/VERR/VERW may see at the current CPL, or None."""
        return rules.visible_descriptor(self, self.cpu.cpl, selector)

    def lar(self, selector: int):
        """Access rights (SDM LAR), or None; valid system types: TSS, LDT, call/task gates."""
        return rules.DESCRIPTOR_QUERIES["lar"](self.descriptor_visible(selector))

    def lsl(self, selector: int):
        return rules.DESCRIPTOR_QUERIES["lsl"](self.descriptor_visible(selector))

    def verr(self, selector: int):
        return rules.DESCRIPTOR_QUERIES["verr"](self.descriptor_visible(selector))

    def verw(self, selector: int):
        return rules.DESCRIPTOR_QUERIES["verw"](self.descriptor_visible(selector))

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
                self.flush_icache()
                self.mode_changed()
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
        return rules.io_denied(self, cpu.cpl, (cpu.ef >> 12) & 3, cpu.tr, port, size) is None

    # ---- interrupt and exception delivery -------------------------------------------------
    def soft_int(self, vector: int, next_eip: int, source: str) -> None:
        """INT n / INT3 / INTO: a trap delivered with the return address after the
        instruction; the gate's DPL is checked against CPL (SDM 6.12.1.1). A monitor's
        ``on_exception`` hook sees it first."""
        if self.in_burst:
            raise Sync()  # the hook and the Interrupt event get the exact guest time
        hook = self._hook_exception
        if hook is not None and hook(vector, None, source, next_eip):
            return
        self.deliver(vector, None, next_eip, source)

    def deliver(self, vector: int, error_code: int | None, return_eip: int, source: str) -> None:
        """Deliver one interrupt or exception through the IDT (SDM 6.12.1): gate checks, a
        stack switch through the TSS on a privilege change, the frame, IF/TF cleared."""
        cpu = self.cpu
        at_eip = cpu.eip
        old_cpl = cpu.cpl
        gate, cd, new_cpl, ext, inner = checked(
            self, ("int", vector, source, old_cpl), rules.delivery, cpu.idtr, cpu.tr, old_cpl,
            vector, source)
        flags = cpu.eflags
        seg = cpu.seg
        if inner is not None:
            # stack switch: SSn:ESPn from the TSS (SDM 6.12.1, 7.2.1)
            frame = (seg[2].selector, cpu.regs[4], flags, seg[1].selector, return_eip)
            esp, new_ss, sd = inner
        else:
            frame = (flags, seg[1].selector, return_eip)
            esp, new_ss, sd = cpu.regs[4], None, None
        if error_code is not None:
            frame += (error_code,)
        # push the frame (supervisor accesses); a fault here leaves the registers untouched
        esp = push_frame(self, esp, frame)
        # commit
        if new_ss is not None:
            self.load_segment_cache(2, new_ss, sd)
        cpu.regs[4] = esp
        cpu.ef = (flags & ~(EFLAGS_TF | EFLAGS_NT | EFLAGS_RF | EFLAGS_VM)) & (
            ~EFLAGS_IF if gate.type == 0xE else 0xFFFFFFFF)
        cpu.lz = None
        cpu.halted = False
        self.set_cs(gate.gate_selector, cd, new_cpl, "interrupt")
        cpu.eip = gate.gate_offset
        soft = source in ("int", "int3", "into")
        # (Interrupt, vm, step, vector, name, source, error_code, from_ring, to_ring, eip,
        # handler): Trace.record
        self.trace.record((Interrupt, self.vm_index, self.clock, vector,
                           VECTOR_NAMES.get(vector, "int" if soft else "irq"), source,
                           error_code, old_cpl, new_cpl, at_eip, cpu.eip))
        if source == "exception":   # the Interrupt events of exceptions, counted (Native)
            self.exceptions_delivered += 1

    def deliver_exception(self, f: Fault) -> None:
        """Deliver an exception with the double-fault rules of SDM Table 6-5: a contributory
        fault or #PF raised while delivering a contributory fault or #PF becomes #DF (benign
        ones are delivered serially); a fault while delivering #DF is a triple fault, whose
        message tells the whole chain from the first exception."""
        rules.deliver_exception(lambda v, c: self.deliver(v, c, self.cpu.eip, "exception"), f,
                                TripleFault)

    # ---- returns and far transfers --------------------------------------------------------
    def iret(self) -> None:
        """IRETD in protected mode, same or outer privilege (SDM Vol. 2A, IRET)."""
        if self.in_burst:
            raise Sync()  # the IRet and RingTransition events get the exact guest time
        cpu = self.cpu
        if cpu.ef & EFLAGS_NT:
            self.unsupported("iretd with NT set (task return)")
        esp = cpu.regs[4]
        # where the popped frame lies: a monitor's on_ring_change reads the EFLAGS image there
        # (a ring-1 kernel's iretd to ring 3 loads neither IF nor IOPL, so the monitor must)
        self.iret_frame = esp
        cpl = cpu.cpl
        top = read_dwords(self, esp, 3, cpl == 3)    # one read when the frame allows
        rd = None
        if top is not None:
            eip, cs, fl = top
            cs &= 0xFFFF
        else:
            rd = self.compile_globals["rd4"]
            eip = rd(esp)
            cs = rd((esp + 4) & 0xFFFFFFFF) & 0xFFFF
            fl = rd((esp + 8) & 0xFFFFFFFF)
        rpl = cs & 3
        if rpl < cpl:
            raise Fault(13, cs & 0xFFFC, detail=f"iretd to ring {rpl} from ring {cpl}")
        d = self._check_code(cs, rpl)
        if not d.access & 1:   # before any state changes: a fault here leaves none
            self._set_accessed(cs, d)
        if rpl > cpl:
            outer = read_dwords(self, (esp + 12) & 0xFFFFFFFF, 2, cpl == 3)
            if outer is not None:
                new_esp, new_ss = outer
                new_ss &= 0xFFFF
            else:
                rd = rd or self.compile_globals["rd4"]
                new_esp = rd((esp + 12) & 0xFFFFFFFF)
                new_ss = rd((esp + 16) & 0xFFFFFFFF) & 0xFFFF
            sd = checked_segment(self, ("ss", new_ss, rpl), new_ss, rules.stack_segment,
                                 new_ss, rpl, 13, 0, "iretd: outer SS")
        # which flags may change is decided at the *current* CPL, as for POPF; every mask
        # loads the six status flags from the image, so the lazy ones need not be computed
        old = cpu.ef
        mask = rules.IRET_FLAGS_MASKS[cpl][(old >> 12) & 3]   # rules.iret_flags_mask
        cpu.eflags = (old & ~mask) | (fl & mask)
        cpu.eip = eip
        if rpl > cpl:
            self.load_segment_cache(2, new_ss, sd)
            cpu.regs[4] = new_esp
        else:
            cpu.regs[4] = (esp + 12) & 0xFFFFFFFF
        self.set_cs(cs, d, rpl, "iret")
        if rpl > cpl:
            self.null_outer_segments(rpl)
        self.trace.record((IRet, self.vm_index, self.clock, cpl, rpl, eip))   # Trace.record

    def null_outer_segments(self, new_cpl: int) -> None:
        """On a return to an outer ring, data segment registers that the outer ring may not use
        are loaded with null (SDM IRET / RET: "for each of ES, FS, GS, DS")."""
        seg = self.cpu.seg
        for i in (0, 3, 4, 5):
            s = seg[i]
            a = s.access
            # a null selector stays; else DPL < new CPL and not conforming code
            if s.selector & 0xFFFC and (a >> 5) & 3 < new_cpl and (a & 0x1C) != 0x1C:
                self.load_segment_cache(i, 0, None)

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
        self.set_cs(selector, d, cpl, "far jump")
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
        wr = self.compile_globals["wr4"]
        esp = cpu.regs[4]
        wr((esp - 4) & 0xFFFFFFFF, cpu.cs)
        wr((esp - 8) & 0xFFFFFFFF, next_eip)
        cpu.regs[4] = (esp - 8) & 0xFFFFFFFF
        cpu.eip = offset & 0xFFFFFFFF
        self.set_cs(selector, d, cpu.cpl, "far call")

    def far_ret(self, extra: int) -> None:
        """RETF [n]: same privilege, or to an outer ring (then pop esp and ss too)."""
        if self.in_burst:
            raise Sync()  # a ring change: the RingTransition event gets the exact guest time
        cpu = self.cpu
        rd = self.compile_globals["rd4"]
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
            sd = rules.stack_segment(self, new_ss, rpl, what="retf: outer SS")
            self.load_segment_cache(2, new_ss, sd)
            cpu.regs[4] = (new_esp + extra) & 0xFFFFFFFF
        else:
            cpu.regs[4] = (esp + 8 + extra) & 0xFFFFFFFF
        cpu.eip = eip
        self.set_cs(cs, d, rpl, "far return")
        if rpl > cpl:
            self.null_outer_segments(rpl)

    _ = Resched
