"""Port-I/O devices, all deterministic (time is guest time: retired instructions).

=========  =====  ==========================================================================
port       size   device
=========  =====  ==========================================================================
0xE9       byte   console: each byte written is appended to the console text (the Bochs and
                  QEMU "debugcon" port)
0x20       byte   interrupt controller command: write 0x20 = end of interrupt (EOI), as the
                  8259A's OCW2; read = in-service register
0x21       byte   interrupt controller mask (bit n masks IRQ n; 1 = masked); read back
0x40       dword  timer period in guest instructions (0 = off); the timer raises IRQ 0 each
                  time that many more instructions have retired. Read: the period
0x41       dword  read: guest time (instructions retired) low 32 bits
0x60       byte   input device data: the next input byte (0 when empty); polled, no IRQ
0x64       byte   input device status: bit 0 = a byte is waiting
0xF4       any    power off; the value written is the exit code (QEMU's isa-debug-exit port)
0x300      any    output disk data: each write appends its 1, 2 or 4 bytes (little-endian) to
                  what the disk received (:class:`OutputDisk`)
0x304      dword  output disk command (doorbell): write 1 = flush (ends a request); read:
                  status, 0 = ready
0x308      dword  output disk: read = bytes received (low 32 bits)
0x30C      dword  output disk: read = requests (flushes and DMA requests) so far
=========  =====  ==========================================================================

IRQ n is delivered as vector ``IRQ_BASE + n`` (32 + n, where Linux remaps the 8259). A line is
delivered when it is pending, not masked, no line of equal or higher priority (lower number) is
in service, and EFLAGS.IF = 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Devices", "IRQ_BASE", "PORT_CONSOLE", "PORT_PIC_CMD", "PORT_PIC_MASK", "PORT_TIMER",
           "PORT_CLOCK", "PORT_INPUT", "PORT_INPUT_STATUS", "PORT_POWEROFF", "EOI",
           "OutputDisk", "PORT_DISK_DATA", "PORT_DISK_CMD", "PORT_DISK_COUNT", "PORT_DISK_REQS",
           "DISK_PORTS", "DISK_CMD_FLUSH", "ASSIGNABLE"]

IRQ_BASE = 32
PORT_CONSOLE = 0xE9
PORT_PIC_CMD, PORT_PIC_MASK = 0x20, 0x21
PORT_TIMER, PORT_CLOCK = 0x40, 0x41
PORT_INPUT, PORT_INPUT_STATUS = 0x60, 0x64
PORT_POWEROFF = 0xF4
EOI = 0x20

# ---- the output disk (vmkit.vmm.iovirt: I/O virtualization three ways) -------------------------
PORT_DISK_DATA, PORT_DISK_CMD, PORT_DISK_COUNT, PORT_DISK_REQS = 0x300, 0x304, 0x308, 0x30C
DISK_PORTS = range(0x300, 0x310)        # the disk decodes these 16 ports
DISK_CMD_FLUSH = 1


@dataclass
class OutputDisk:
    """A write-only block/network-like output device: whatever reaches it is recorded in
    ``data``, so a test can compare it with what the guest meant to write.

    Programmed I/O: each ``out`` to ``PORT_DISK_DATA`` appends the 1, 2 or 4 bytes written
    (little-endian); an ``out`` of ``DISK_CMD_FLUSH`` to ``PORT_DISK_CMD`` ends a request (the
    doorbell). DMA: :meth:`dma_write` appends a whole buffer as one request (what the split
    driver's backend does, :mod:`vmkit.vmm.iovirt`). Counters: ``port_writes``/``port_reads``
    (port accesses that reached the device), ``direct`` (of those, how many came straight from a
    guest that owns the device by direct assignment, with no VMM in between), ``requests``
    (flushes plus DMA requests), ``dma_requests``."""
    data: bytearray = field(default_factory=bytearray)
    requests: int = 0
    dma_requests: int = 0
    port_writes: int = 0
    port_reads: int = 0
    direct: int = 0

    def copy(self) -> "OutputDisk":
        return OutputDisk(bytearray(self.data), self.requests, self.dma_requests,
                          self.port_writes, self.port_reads, self.direct)

    def read(self, port: int, size: int) -> int:
        self.port_reads += 1
        mask = (1 << (8 * size)) - 1
        if port == PORT_DISK_CMD:
            return 0                                    # status: ready
        if port == PORT_DISK_COUNT:
            return len(self.data) & mask
        if port == PORT_DISK_REQS:
            return self.requests & mask
        return mask                                     # undecoded: all ones

    def write(self, port: int, size: int, value: int) -> None:
        self.port_writes += 1
        if port == PORT_DISK_DATA:
            self.data += (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        elif port == PORT_DISK_CMD and value == DISK_CMD_FLUSH:
            self.requests += 1

    def dma_write(self, data: bytes) -> None:
        """One request carried out by DMA (no port access): ``data`` is appended."""
        self.data += data
        self.requests += 1
        self.dma_requests += 1


#: devices a monitor can assign directly to one VM (``assign={vm: [name]}``): name -> ports
ASSIGNABLE = {"disk": DISK_PORTS}


@dataclass
class Devices:
    """State of every device of one machine (copied whole by snapshots)."""
    console: list = field(default_factory=list)     # bytes written, as ints
    irr: int = 0        # interrupt request register (pending lines)
    isr: int = 0        # in-service register
    imr: int = 0        # mask register
    timer_period: int = 0
    next_tick: int | None = None
    input: bytes = b""
    input_pos: int = 0
    poweroff_code: int | None = None
    ticks: int = 0
    disk: OutputDisk = field(default_factory=OutputDisk)

    def copy(self) -> "Devices":
        d = Devices(**{k: getattr(self, k) for k in self.__dataclass_fields__})
        d.console = list(self.console)
        d.disk = self.disk.copy()
        return d

    # ---- interrupt controller ----------------------------------------------------------
    def raise_irq(self, line: int) -> None:
        self.irr |= 1 << line

    def pending_vector(self) -> int | None:
        """The IRQ line that would be delivered now (ignoring IF), or None."""
        ready = self.irr & ~self.imr & 0xFF
        if not ready:
            return None
        line = (ready & -ready).bit_length() - 1
        if self.isr and (self.isr & -self.isr).bit_length() - 1 <= line:
            return None  # a line of equal or higher priority is in service
        return line

    def can_deliver(self, line: int) -> bool:
        """Whether a request on ``line`` could be delivered (ignoring IF): not masked, and no
        line of equal or higher priority in service."""
        if self.imr >> line & 1:
            return False
        return not self.isr or (self.isr & -self.isr).bit_length() - 1 > line

    def acknowledge(self, line: int) -> None:
        self.irr &= ~(1 << line)
        self.isr |= 1 << line

    def eoi(self) -> None:
        if self.isr:
            self.isr &= self.isr - 1  # clear the highest-priority in-service bit

    # ---- port access ---------------------------------------------------------------------
    def read(self, port: int, size: int, clock: int) -> int:
        """The value a read of ``port`` returns at guest time ``clock`` (may consume input)."""
        if port == PORT_PIC_CMD:
            return self.isr
        if port == PORT_PIC_MASK:
            return self.imr
        if port == PORT_TIMER:
            return self.timer_period
        if port == PORT_CLOCK:
            return clock & 0xFFFFFFFF
        if port == PORT_INPUT:
            if self.input_pos < len(self.input):
                v = self.input[self.input_pos]
                self.input_pos += 1
                return v
            return 0
        if port == PORT_INPUT_STATUS:
            return 1 if self.input_waiting else 0
        if 0x300 <= port < 0x310:
            return self.disk.read(port, size)
        return (1 << (8 * size)) - 1  # nothing there: the bus floats high

    def write(self, port: int, size: int, value: int, clock: int) -> None:
        """A write of ``value`` to ``port`` at guest time ``clock``."""
        if port == PORT_CONSOLE:
            self.console.append(value & 0xFF)
        elif port == PORT_PIC_CMD:
            if value & 0xFF == EOI:
                self.eoi()
        elif port == PORT_PIC_MASK:
            self.imr = value & 0xFF
        elif port == PORT_TIMER:
            self.timer_period = value & 0xFFFFFFFF
            self.next_tick = clock + self.timer_period if self.timer_period else None
        elif port == PORT_POWEROFF:
            self.poweroff_code = value
        elif 0x300 <= port < 0x310:
            self.disk.write(port, size, value)
        # other ports: writes are ignored, as on an empty ISA bus

    def tick(self, clock: int) -> None:
        """Raise IRQ 0 for every timer deadline reached by guest time ``clock``."""
        while self.next_tick is not None and clock >= self.next_tick:
            self.raise_irq(0)
            self.ticks += 1
            self.next_tick += self.timer_period

    @property
    def input_waiting(self) -> bool:
        return self.input_pos < len(self.input)

    def console_text(self) -> str:
        return bytes(self.console).decode("latin-1")
