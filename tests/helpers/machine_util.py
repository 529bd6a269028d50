"""A small protected-mode environment built in guest memory from Python, for machine tests.

``Env()`` makes a :class:`vmkit.machine.machine.Machine` and writes, with ``struct``:

* a GDT: null, ring-0 code/data, ring-1 code/data, ring-3 code/data (flat, 4 GiB), a 32-bit
  TSS descriptor, and free slots from index 8 (``env.set_gdt``/``env.segment``);
* an IDT of 256 interrupt gates, each to a *recording stub*: the stub stores ESP, EAX and the
  vector at ``REC`` and powers the machine off with the vector as exit code, so a test runs
  code, looks at ``env.vector``/``env.frame(n)`` and knows what was delivered and what frame
  the CPU pushed (``env.gate`` points a vector elsewhere, ``env.clear_idt`` empties it);
* a TSS with SS0:ESP0, SS1:ESP1, SS2:ESP2 and an I/O permission bitmap denying every port
  (``env.allow_ports``), loaded into TR;
* optionally (``paging=True``) a page directory and one page table identity-mapping the first
  4 MiB with 4 KiB pages (``env.pte``/``env.set_pte`` to change one).

Physical layout (linear = physical while paging is off or identity-mapped)::

    0x01000  test code (by convention; ``env.code(addr, source)`` puts code anywhere)
    0x08000  REC: [REC] = ESP at the stub, [REC+4] = vector, [REC+8] = EAX at the stub
    0x09000  256 recording stubs, 32 bytes each
    0x10000  GDT      0x11000  IDT      0x12000  TSS (+ I/O bitmap)
    0x20000  page directory, 0x21000 page table for 0-4 MiB
    stacks (tops): ring 0 0x70000, ring 1 0x60000, ring 2 0x58000, ring 3 0x50000

Code is assembled with GNU as (``tests/helpers/gas.py``), so it must not use absolute label addresses
(relative jumps to labels are fine); place data at explicit addresses.
"""

from __future__ import annotations

import functools
import struct

from gas import gas
from vmkit.machine.machine import Machine

KCODE, KDATA = 0x08, 0x10
R1CODE, R1DATA = 0x19, 0x21
UCODE, UDATA = 0x2B, 0x33
TSS_SEL = 0x38
FREE = 8                      # first free GDT index (selector 0x40)
CODE_SEL = {0: KCODE, 1: R1CODE, 3: UCODE}
DATA_SEL = {0: KDATA, 1: R1DATA, 3: UDATA}

REC = 0x8000
STUBS = 0x9000
GDT, IDT, TSS = 0x10000, 0x11000, 0x12000
GDT_ENTRIES = 32
TSS_SIZE = 0x68 + 8192 + 1    # header, bitmap for 65536 ports, the terminating 0xFF byte
PD, PT0 = 0x20000, 0x21000
STACK = {0: 0x70000, 1: 0x60000, 2: 0x58000, 3: 0x50000}
CODE = 0x1000

P, W, U, A, D, PS = 1, 2, 4, 0x20, 0x40, 0x80

EFLAGS_IF = 0x200
#: the power-off port as the stubs use it (``out 0xf4, eax`` touches 0xF4-0xF7): allow these
#: to let a stub run above ring 0 with IOPL 0
POWEROFF = (0xF4, 0xF5, 0xF6, 0xF7)


def seg_desc(base: int = 0, limit: int = 0xFFFFF, *, dpl: int = 0, code: bool = False,
             rw: bool = True, conforming: bool = False, present: bool = True,
             gran: bool = True, big: bool = True, system_type: int | None = None) -> int:
    """The 8-byte descriptor (as an int) of a code/data segment, or of a system segment when
    ``system_type`` is given (0x9 available TSS, 0x2 LDT ...)."""
    if system_type is not None:
        access = system_type
    else:
        access = 0x10 | (0x8 if code else 0) | (0x2 if rw else 0) | (0x4 if conforming else 0)
    access |= (dpl << 5) | (0x80 if present else 0)
    flags = (0x8 if gran else 0) | (0x4 if big else 0)
    lo = (limit & 0xFFFF) | ((base & 0xFFFF) << 16)
    hi = ((base >> 16) & 0xFF) | (access << 8) | (((limit >> 16) & 0xF) << 16) | \
        (flags << 20) | (base & 0xFF000000)
    return lo | (hi << 32)


def gate_desc(offset: int, selector: int = KCODE, *, dpl: int = 0, trap: bool = False,
              present: bool = True) -> int:
    """A 32-bit interrupt (or trap) gate descriptor."""
    access = (0x8F if trap else 0x8E) & (0xFF if present else 0x7F) | (dpl << 5)
    lo = (offset & 0xFFFF) | (selector << 16)
    hi = (access << 8) | (offset & 0xFFFF0000)
    return lo | (hi << 32)


@functools.lru_cache(maxsize=None)
def asm(source: str) -> bytes:
    """GNU as, cached (the same snippet is assembled once per test session)."""
    return gas(source)


def _stub(vector: int) -> bytes:
    """mov [REC], esp; mov [REC+8], eax; mov dword [REC+4], v; mov eax, v; out 0xf4, eax;
    jmp $"""
    return (b"\x89\x25" + struct.pack("<I", REC) + b"\xA3" + struct.pack("<I", REC + 8)
            + b"\xC7\x05" + struct.pack("<II", REC + 4, vector)
            + b"\xB8" + struct.pack("<I", vector) + b"\xE7\xF4" + b"\xEB\xFE")


class Env:
    """A machine with GDT, IDT, TSS (and page tables) set up; see the module docstring."""

    def __init__(self, *, memory_size: int = 4 << 20, paging: bool = False, input: bytes = b"",
                 machine: Machine | None = None, trace=None):
        self.m = machine or Machine(memory_size=memory_size, input=input, trace=trace)
        m, cpu = self.m, self.m.cpu
        # GDT
        self.gdt = [0] * GDT_ENTRIES
        self.gdt[1] = seg_desc(code=True)
        self.gdt[2] = seg_desc()
        self.gdt[3] = seg_desc(code=True, dpl=1)
        self.gdt[4] = seg_desc(dpl=1)
        self.gdt[5] = seg_desc(code=True, dpl=3)
        self.gdt[6] = seg_desc(dpl=3)
        self.gdt[7] = seg_desc(TSS, TSS_SIZE - 1, system_type=0x9, gran=False, big=False)
        for i, d in enumerate(self.gdt):
            self.set_gdt(i, d)
        cpu.gdtr.base, cpu.gdtr.limit = GDT, GDT_ENTRIES * 8 - 1
        # IDT of recording stubs
        for v in range(256):
            m.write(STUBS + 32 * v, _stub(v))
            self.gate(v, STUBS + 32 * v)
        cpu.idtr.base, cpu.idtr.limit = IDT, 256 * 8 - 1
        # TSS: stacks for rings 0-2, I/O bitmap right after the header, every port denied
        tss = bytearray(TSS_SIZE)
        struct.pack_into("<IIIIII", tss, 4, STACK[0], KDATA, STACK[1], R1DATA,
                         STACK[2], 0)
        struct.pack_into("<H", tss, 0x66, 0x68)
        tss[0x68:] = b"\xFF" * (TSS_SIZE - 0x68)
        m.write(TSS, bytes(tss))
        m.load_tr(TSS_SEL)
        m.write(REC, bytes(16))
        # segment registers: flat ring-0 selectors of this GDT
        self.enter(0, CODE)
        if paging:
            self.enable_paging()

    # ---- tables -----------------------------------------------------------------------------
    def set_gdt(self, index: int, raw: int) -> int:
        """Write GDT entry ``index``; returns its selector (RPL 0)."""
        self.gdt[index] = raw
        self.m.write(GDT + 8 * index, struct.pack("<Q", raw))
        return index * 8

    def segment(self, index: int = FREE, **kw) -> int:
        """Put ``seg_desc(**kw)`` in GDT slot ``index``; returns its selector with RPL 0."""
        return self.set_gdt(index, seg_desc(**kw))

    def gate(self, vector: int, handler: int, selector: int = KCODE, *, dpl: int = 0,
             trap: bool = False, present: bool = True) -> None:
        """Point IDT entry ``vector`` at ``selector:handler``."""
        self.m.write(IDT + 8 * vector,
                     struct.pack("<Q", gate_desc(handler, selector, dpl=dpl, trap=trap,
                                                 present=present)))

    def raw_gate(self, vector: int, raw: int) -> None:
        self.m.write(IDT + 8 * vector, struct.pack("<Q", raw))

    def clear_idt(self) -> None:
        """IDTR limit 0: no vector is reachable."""
        self.m.cpu.idtr.base, self.m.cpu.idtr.limit = 0, 0

    def tss_stack(self, ring: int, ss: int, esp: int) -> None:
        """Set SSn:ESPn in the TSS."""
        self.m.write(TSS + 4 + 8 * ring, struct.pack("<II", esp, ss))

    def allow_ports(self, *ports: int) -> None:
        """Clear the I/O bitmap bits of ``ports``."""
        for p in ports:
            a = TSS + 0x68 + p // 8
            self.m.write(a, bytes([self.m.read(a, 1)[0] & ~(1 << (p % 8)) & 0xFF]))

    # ---- code and privilege --------------------------------------------------------------------
    def code(self, addr: int, source: str) -> int:
        """Assemble ``source`` and write it at physical ``addr``; returns the end address."""
        b = asm(source)
        self.m.write(addr, b)
        return addr + len(b)

    def enter(self, ring: int, eip: int, esp: int | None = None,
              eflags: int | None = None) -> None:
        """Put the CPU at ``ring`` (CS, SS, DS, ES, FS, GS = that ring's flat selectors) with
        EIP, ESP (default the ring's stack top) and optionally EFLAGS, as if an iretd had
        taken it there."""
        m, cpu = self.m, self.m.cpu
        d = DATA_SEL[ring]
        dd = m.read_descriptor(d)
        for i in (0, 2, 3, 4, 5):
            m.load_segment_cache(i, d, dd)
        c = CODE_SEL[ring]
        m.set_cs(c, m.read_descriptor(c), ring, "test set-up")
        cpu.eip = eip
        cpu.regs[4] = STACK[ring] if esp is None else esp
        if eflags is not None:
            cpu.eflags = eflags

    def run_code(self, source: str, *, ring: int = 0, addr: int = CODE, eflags: int | None = None,
                 max_steps: int = 10_000):
        """Assemble ``source`` at ``addr``, enter ``ring`` there and run; returns RunResult."""
        self.code(addr, source)
        self.enter(ring, addr, eflags=eflags)
        return self.m.run(max_steps=max_steps)

    # ---- what the recording stub saw -------------------------------------------------------
    def rd32(self, addr: int) -> int:
        return struct.unpack("<I", self.m.read(addr, 4))[0]

    @property
    def vector(self) -> int | None:
        """The vector a recording stub ran for (None if none ran)."""
        if self.m.dev.poweroff_code is None or self.rd32(REC) == 0:
            return None
        return self.rd32(REC + 4)

    def frame(self, n: int) -> list[int]:
        """The n dwords the CPU pushed, read from the handler's ESP (error code first if any,
        then EIP, CS, EFLAGS[, ESP, SS])."""
        esp = self.rd32(REC)
        return list(struct.unpack(f"<{n}I", self.m.read(esp, 4 * n)))

    @property
    def eax(self) -> int:
        """EAX when the recording stub started (the stub itself overwrites EAX)."""
        return self.rd32(REC + 8)

    @property
    def stub_esp(self) -> int:
        return self.rd32(REC)

    # ---- paging ---------------------------------------------------------------------------------
    def enable_paging(self, *, pte_flags: int = P | W | U, pde_flags: int = P | W | U,
                      wp: bool = False) -> None:
        """Identity-map 0-4 MiB with 4 KiB pages (``pte_flags`` on every page) and turn on
        CR0.PG (and CR0.WP when asked)."""
        m = self.m
        m.write(PD, bytes(4096))
        m.write(PD, struct.pack("<I", PT0 | pde_flags))
        m.write(PT0, b"".join(struct.pack("<I", (i << 12) | pte_flags) for i in range(1024)))
        m.write_cr(3, PD)
        m.write_cr(0, m.cpu.cr0 | (1 << 31) | ((1 << 16) if wp else 0))

    def pte_addr(self, va: int) -> int:
        pde = self.rd32(PD + 4 * (va >> 22))
        return (pde & 0xFFFFF000) + 4 * ((va >> 12) & 0x3FF)

    def pte(self, va: int) -> int:
        return self.rd32(self.pte_addr(va))

    def set_pte(self, va: int, value: int) -> None:
        self.m.write(self.pte_addr(va), struct.pack("<I", value))

    def pde(self, va: int) -> int:
        return self.rd32(PD + 4 * (va >> 22))

    def set_pde(self, va: int, value: int) -> None:
        self.m.write(PD + 4 * (va >> 22), struct.pack("<I", value))
