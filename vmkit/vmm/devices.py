"""A virtual device modelled by two functions on a state dict (homework 2's checksum engine).

A student writes the device model as two functions (the *handlers*)::

    dev_out(dev, offset, size, value)   # the guest wrote `value` (size bytes) to base + offset
    dev_in(dev, offset, size) -> int    # the guest reads size bytes from base + offset

``dev`` is the device's state, a dict of ints that the handlers change in place. The VMM
(:class:`vmkit.vmm.TrapAndEmulate`) calls them when the guest's ``in``/``out`` to the device's
ports trap: :func:`attach` registers them in the VM's ``port_handlers`` (port -> (read,
write)), the kit's extension point for virtual devices.

The guest is a small bare-metal driver (:func:`driver_source`) that resets the engine, feeds it
bytes with ``out`` of every size, reads the checksum and the byte count back with ``in`` of
every size, and prints what it read on the console.

Nothing here knows the right answers: the engine's rules are in the assignment's text, its
reference model only with the instructor's solutions.
"""

from __future__ import annotations

__all__ = ["NPORTS", "STATE_KEYS", "driver_source", "driver_image", "attach", "run",
           "explain", "check_value", "check_state", "no_reads"]

#: ports of the engine: base + 0 .. base + NPORTS - 1 (the driver also probes an unused one)
NPORTS = 4
#: the keys of the device's state
STATE_KEYS = ("sum", "count")

_PRINT_HEX = """
# print eax as 8 hex digits on the console
print_hex:
    mov ebx, eax
    mov ecx, 8
1:  rol ebx, 4
    mov eax, ebx
    and eax, 15
    mov al, [hexchars + eax]
    out CONSOLE, al
    dec ecx
    jnz 1b
    ret
# print the zero-terminated string at esi
print:
2:  mov al, [esi]
    test al, al
    jz 3f
    out CONSOLE, al
    inc esi
    jmp 2b
3:  ret
"""


def driver_source(base: int, data: list[int]) -> str:
    """Assembly of the driver for an engine at ports ``base``.. fed with the bytes ``data``
    (its first half one byte at a time, the rest in words and dwords, of which the engine
    keeps the low byte), with a reset between the two reads."""
    half = len(data) // 2
    out = [".include \"abi.s\"", "_start:", "    mov esp, 0x80000",
           f"    mov dx, {base + 1:#x}", "    mov eax, 1", "    out dx, al      # reset",
           f"    mov dx, {base:#x}"]
    for i, b in enumerate(data):
        if i == half:
            out += ["    call report", f"    mov dx, {base + 1:#x}", "    mov eax, 2",
                    "    out dx, eax     # not a command: ignored", "    mov eax, 1",
                    "    out dx, ax      # reset", f"    mov dx, {base:#x}"]
        if i < half:
            out += [f"    mov al, {b:#x}", "    out dx, al"]
        elif i % 2:
            out += [f"    mov ax, {(b | 0x5A00):#x}", "    out dx, ax"]
        else:
            out += [f"    mov eax, {(b | 0xA5C3_0000):#x}", "    out dx, eax"]
    out += ["    call report", "    mov al, 0", "    out POWEROFF, al", "",
            "report:",
            "    mov esi, offset s_sum", "    call print",
            f"    mov dx, {base:#x}", "    in eax, dx", "    call print_hex",
            "    mov esi, offset s_low", "    call print",
            f"    mov dx, {base:#x}", "    xor eax, eax", "    in al, dx", "    call print_hex",
            "    mov esi, offset s_count", "    call print",
            f"    mov dx, {base + 1:#x}", "    xor eax, eax", "    in ax, dx",
            "    call print_hex",
            "    mov esi, offset s_other", "    call print",
            f"    mov dx, {base + 3:#x}", "    xor eax, eax", "    in al, dx",
            "    call print_hex",
            "    mov al, 10", "    out CONSOLE, al", "    ret",
            _PRINT_HEX,
            's_sum: .asciz "sum "', 's_low: .asciz " low "', 's_count: .asciz " count "',
            's_other: .asciz " unused "', 'hexchars: .ascii "0123456789abcdef"']
    return "\n".join(out) + "\n"


def driver_image(base: int, data: list[int]):
    """The driver as a bare-metal guest image."""
    from vmkit import guests
    return guests.from_source(driver_source(base, data), name="checksum-driver")


def check_value(value, size: int, where: str) -> int:
    """``value`` if it is an int that fits ``size`` bytes, else a ValueError naming ``where``."""
    if not isinstance(value, int) or isinstance(value, bool) or \
            not 0 <= value < 1 << (8 * size):
        raise ValueError(f"{where} returned {value!r:.60}: not an int of {size} byte(s)")
    return value


def check_state(dev, where: str) -> dict:
    """``dev`` if it holds exactly the keys of :data:`STATE_KEYS` with 32-bit ints."""
    if not isinstance(dev, dict) or set(dev) != set(STATE_KEYS) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 32
            for v in dev.values()):
        raise ValueError(f"after {where} the state is {dev!r:.80}: it must be a dict with the "
                         f"keys {', '.join(STATE_KEYS)}, each an int of 32 bits")
    return dev


def attach(te, base: int, dev_in, dev_out, dev: dict | None = None, vm: int = 0) -> dict:
    """Register the handlers for ports ``base``..``base + NPORTS - 1`` of VM ``vm`` of the
    monitor ``te`` (``vm.port_handlers``); returns the device's state (``dev`` or a new one,
    ``{"sum": 0, "count": 0}``). A handler that raises, or returns what the ports cannot hold,
    ends the guest with the VMM's reason (``te.vms[vm].result``)."""
    dev = {"sum": 0, "count": 0} if dev is None else dev
    target = te.vms[vm]
    for off in range(NPORTS):
        def read(size, off=off):
            v = check_value(dev_in(dev, off, size), size, f"dev_in(dev, {off}, {size})")
            check_state(dev, f"dev_in(dev, {off}, {size})")
            return v

        def write(size, value, off=off):
            dev_out(dev, off, size, value)
            check_state(dev, f"dev_out(dev, {off}, {size}, {value:#x})")
        target.port_handlers[base + off] = (read, write)
    return dev


def run(P: dict, dev_in, dev_out, data: list[int] | None = None, max_steps: int = 200_000):
    """Run the driver for the variant ``P`` (``P["port"]``, ``P["data"]``) under
    TrapAndEmulate with the handlers: -> (monitor, device state)."""
    from vmkit.vmm.te import TrapAndEmulate

    te = TrapAndEmulate(driver_image(P["port"], P["data"] if data is None else data))
    dev = attach(te, P["port"], dev_in, dev_out)
    te.run(max_steps=max_steps)
    return te, dev


def explain(te) -> str:
    """Why the run did not end as the driver does (powered off), in the VMM's words; a
    handler still raising NotImplementedError is named as such."""
    res = te.vms[0].result
    if res is None:
        return "the guest did not finish"
    text = str(res)
    if "NotImplementedError" in text:
        return "a handler is still the stub (it raises NotImplementedError): write it"
    return text


def no_reads(dev, offset, size) -> int:
    """A stand-in ``dev_in`` that reads 0 everywhere (to try ``dev_out`` alone)."""
    return 0
