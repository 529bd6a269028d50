"""The ``diskio`` guest: the guest kernel writes ``kb`` KB to the output disk
(:class:`vmkit.machine.devices.OutputDisk`), the same I/O done three ways
(:mod:`vmkit.vmm.iovirt`, docs/io-virtualization.md).

The kernel (``kernel.s``) runs a boot hook at the end of boot, before the first process, with
paging on (the kernel's identity map: virtual = guest-physical for kernel data) and interrupts
off. The hook fills a kernel buffer of ``kb`` KB with a pseudo-random pattern (an LCG, so Python
predicts every byte: :func:`diskio_data`), sends it to the disk, and prints::

    diskio: wrote 16 KB checksum 0x1a2b3c4d

then the kernel goes on to the ``hello`` process. There are two hooks, one per driver:

``PORT_BOOT_HOOK`` (the guest image ``guests.build("diskio")``)
    programmed I/O: one ``out`` of a dword to the data port ``0x300`` per 4 bytes and, after
    each 512-byte request ("sector"), a flush command to ``0x304``: 129 port writes per
    request, 258 per KB. Natively they just run; under trap-and-emulate each one traps to the
    VMM, which emulates it on the VM's virtual disk; under hardware assist each is an
    IO_INSTRUCTION VM exit; under binary translation each is a callout. With the disk assigned
    directly to the VM (``assign={0: ["disk"]}``) they reach the device with no trap or exit.

``PV_BOOT_HOOK`` (``GuestSpec.pv_kernel_files``: the paravirtual image)
    the frontend of a split driver (Xen's blkfront, virtio): it puts requests (guest-physical
    address, length) into a shared ring in its own memory and sends ONE event-channel
    notification per batch of ``batch`` requests: the hypercall ``int 0x82`` with eax = 32
    (event_channel_op), ebx = 4 (EVTCHNOP_send), ecx = 1 (the disk's event channel), edx = the
    ring's guest-physical address. The backend (:class:`vmkit.vmm.iovirt.SplitDriverBackend`)
    copies each request's bytes to the disk and advances the consumer index before the
    hypercall returns.

The ring (one page, little-endian 32-bit fields, see ``RING_*`` below and
docs/io-virtualization.md)::

    +0x00 req_prod   requests the frontend has produced (free-running; written by the guest)
    +0x04 req_cons   requests the backend has consumed (free-running; written by the backend)
    +0x08 nslots     number of slots (32), written by the guest at set-up
    +0x0C errors     requests the backend refused (free-running; written by the backend)
    +0x10 slot[i]    16 bytes each, request n in slot n mod nslots:
                     +0 addr (guest-physical), +4 len (bytes), +8 id (= n),
                     +12 status (guest writes STATUS_PENDING; the backend writes STATUS_OK,
                     STATUS_BAD_ADDRESS or STATUS_BAD_LENGTH)

Registered with :func:`vmkit.guests.register` when the guest list is first used.
"""

from __future__ import annotations

import dataclasses

from vmkit.guests import GuestSpec, register

__all__ = ["PORT_BOOT_HOOK", "PV_BOOT_HOOK", "REQUEST_BYTES", "RING_SLOTS", "SEED",
           "diskio_data", "diskio_checksum", "diskio_expected", "build_split_driver",
           "RING_PROD", "RING_CONS", "RING_NSLOTS", "RING_ERRORS", "RING_SLOT0", "SLOT_SIZE",
           "STATUS_OK", "STATUS_BAD_ADDRESS", "STATUS_BAD_LENGTH", "STATUS_PENDING"]

#: bytes per request (a 512-byte sector) in both drivers
REQUEST_BYTES = 512
#: slots in the split driver's ring (a power of two; a batch may not exceed it)
RING_SLOTS = 32
#: the LCG's seed (``DIO_SEED``)
SEED = 0x2F6B1D37

# ring layout (byte offsets); the backend in vmkit.vmm.iovirt uses the same numbers
RING_PROD, RING_CONS, RING_NSLOTS, RING_ERRORS, RING_SLOT0 = 0x0, 0x4, 0x8, 0xC, 0x10
SLOT_ADDR, SLOT_LEN, SLOT_ID, SLOT_STATUS, SLOT_SIZE = 0, 4, 8, 12, 16
STATUS_OK, STATUS_BAD_ADDRESS, STATUS_BAD_LENGTH = 0, 1, 2
STATUS_PENDING = 0xFFFFFFFF

# ---- shared by both hooks: the buffer, the pattern, the report --------------------------------
_HEAD = r""".include "params.s"             # DIO_KB, DIO_BATCH, DIO_SEED
.equ DIO_DWORDS, DIO_KB * 256   # dwords to send
.equ DIO_REQ, 512               # bytes per request (a sector)
.equ DIO_NREQ, DIO_KB * 2       # requests to send
"""

_COMMON = r"""

# dio_fill: fill dio_buf with DIO_DWORDS values of the LCG x = x * 1103515245 + 12345 (from
# DIO_SEED); ebx = checksum of them, c = rol(c, 1) + x for every dword in order
dio_fill:
    mov edi, offset dio_buf
    mov ecx, DIO_DWORDS
    mov eax, DIO_SEED
    xor ebx, ebx
    test ecx, ecx
    jz 2f
1:  mov edx, 1103515245
    mul edx                         # edx:eax = eax * 1103515245; the low half is kept
    add eax, 12345
    mov [edi], eax
    rol ebx, 1
    add ebx, eax
    add edi, 4
    dec ecx
    jnz 1b
2:  ret

# dio_report(ebx = checksum): "diskio: wrote KB KB checksum 0x........"
dio_report:
    mov esi, offset dio_msg1
    call kputs
    mov eax, DIO_KB
    call kputdec
    mov esi, offset dio_msg2
    call kputs
    mov eax, ebx
    call kputhex
    mov esi, offset dio_nl          # kputs, not `out`: the pv kernel has no console port
    call kputs
    ret

.data
dio_msg1:  .asciz "diskio: wrote "
dio_msg2:  .asciz " KB checksum "
dio_nl:    .asciz "\n"
dio_msg_refused: .asciz "diskio: the backend refused requests\n"
.bss
.align 4096
dio_ring:  .space 4096          # the split driver's shared ring (used by the pv hook only)
dio_buf:   .space DIO_KB * 1024
.text
"""

#: the boot hook of the programmed-I/O driver (``boot_hook.s`` of the diskio image)
PORT_BOOT_HOOK = r"""# diskio, programmed-I/O driver: one `out` per dword, a flush command per
# 512-byte request.
# Included by kernel.s (boot_hook.s) at the end of boot: kernel privilege, paging on, IF = 0.
""" + _HEAD + r"""
.equ DISK_DATA, 0x300           # write: 4 bytes appended to what the disk received
.equ DISK_CMD, 0x304            # write 1: flush (the request is complete)
.equ DISK_FLUSH, 1

    call dio_fill
    push ebx
    mov esi, offset dio_buf
    mov edi, DIO_NREQ               # requests left
    test edi, edi
    jz 3f
1:  mov ecx, DIO_REQ / 4            # dwords in one request
    mov dx, DISK_DATA
2:  mov eax, [esi]
    out dx, eax                     # one dword: a trap (te) or an exit (hw) unless assigned
    add esi, 4
    dec ecx
    jnz 2b
    mov dx, DISK_CMD
    mov eax, DISK_FLUSH
    out dx, eax                     # the doorbell: the request is complete
    dec edi
    jnz 1b
3:  pop ebx
    call dio_report
    jmp dio_done
""" + _COMMON + "dio_done:\n"

#: the boot hook of the split driver's frontend (``boot_hook.s`` of the paravirtual image)
PV_BOOT_HOOK = r"""# diskio, split-driver frontend (Xen blkfront / virtio style): requests go into a
# shared ring
# in guest memory, and one event-channel notification (hypercall) per batch tells the backend.
# Included by kernel.s (boot_hook.s) at the end of boot: in the paravirtual kernel this is
# ring 1 with the kernel's identity map (virtual = guest-physical for kernel data), events off.
""" + _HEAD + r"""
.equ HYPERCALL, 0x82            # int 0x82: eax = number, ebx, ecx, edx = arguments
.equ HC_EVENT_CHANNEL_OP, 32
.equ EVTCHNOP_SEND, 4
.equ DISK_EVTCHN, 1             # the disk's event-channel port
.equ RING_PROD, 0               # ring layout: see vmkit/guests/iodemo.py
.equ RING_CONS, 4
.equ RING_NSLOTS, 8
.equ RING_ERRORS, 12
.equ RING_SLOT0, 16
.equ SLOT_ADDR, 0
.equ SLOT_LEN, 4
.equ SLOT_ID, 8
.equ SLOT_STATUS, 12
.equ DIO_NSLOTS, 32
.equ STATUS_PENDING, 0xFFFFFFFF

    call dio_fill
    push ebx                        # the checksum, for the report
    mov edi, offset dio_ring
    mov dword ptr [edi + RING_PROD], 0
    mov dword ptr [edi + RING_CONS], 0
    mov dword ptr [edi + RING_NSLOTS], DIO_NSLOTS
    mov dword ptr [edi + RING_ERRORS], 0
    mov esi, offset dio_buf         # the next request's buffer
    xor ebp, ebp                    # requests produced so far (= the next request's id)
dio_batch:
    xor ecx, ecx                    # requests in this batch
dio_request:
    cmp ebp, DIO_NREQ
    jae dio_notify
    cmp ecx, DIO_BATCH
    jae dio_notify
    mov eax, ebp
    and eax, DIO_NSLOTS - 1
    shl eax, 4
    add eax, edi                    # eax = the slot of request ebp
    mov [eax + RING_SLOT0 + SLOT_ADDR], esi
    mov dword ptr [eax + RING_SLOT0 + SLOT_LEN], DIO_REQ
    mov [eax + RING_SLOT0 + SLOT_ID], ebp
    mov dword ptr [eax + RING_SLOT0 + SLOT_STATUS], STATUS_PENDING
    add esi, DIO_REQ
    inc ebp
    inc ecx
    jmp dio_request
dio_notify:
    test ecx, ecx
    jz dio_sent                     # nothing left
    mov [edi + RING_PROD], ebp      # publish the batch
    mov eax, HC_EVENT_CHANNEL_OP
    mov ebx, EVTCHNOP_SEND
    mov ecx, DISK_EVTCHN
    mov edx, edi                    # the ring's guest-physical address
    int HYPERCALL                   # ONE notification for the whole batch
    cmp [edi + RING_CONS], ebp      # the backend consumed everything before returning
    je dio_batch
    jmp dio_refused
dio_sent:
    cmp dword ptr [edi + RING_ERRORS], 0
    jne dio_refused
    pop ebx
    call dio_report
    jmp dio_done
dio_refused:
    pop ebx
    mov esi, offset dio_msg_refused
    call kputs
    jmp dio_done
""" + _COMMON + "dio_done:\n"


# ---- what Python predicts ---------------------------------------------------------------------
def diskio_data(kb: int, seed: int = SEED) -> bytes:
    """The bytes the guest sends: ``kb`` * 256 dwords of the LCG, little-endian."""
    x, out = seed & 0xFFFFFFFF, bytearray()
    for _ in range(kb * 256):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        out += x.to_bytes(4, "little")
    return bytes(out)


def diskio_checksum(kb: int, seed: int = SEED) -> int:
    """The checksum the guest prints: c = rol(c, 1) + x over the dwords, 32-bit."""
    x, c = seed & 0xFFFFFFFF, 0
    for _ in range(kb * 256):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        c = ((((c << 1) | (c >> 31)) & 0xFFFFFFFF) + x) & 0xFFFFFFFF
    return c


def diskio_expected(p: dict) -> str:
    return (f"diskio: wrote {p['kb']} KB checksum 0x{diskio_checksum(p['kb']):08x}\n"
            "Hello from user mode! pid 1\n")


DISKIO = GuestSpec(
    "diskio", "the kernel writes kb KB to the output disk (port I/O; the pv image uses a split "
              "driver with one notification per batch of requests)",
    lambda p: ["hello"], {"kb": 16, "batch": 8}, {"kb": (1, 512), "batch": (1, RING_SLOTS)},
    diskio_expected,
    lambda p: {"DIO_KB": p["kb"], "DIO_BATCH": p["batch"], "DIO_SEED": SEED},
    kernel_files=lambda p: {"boot_hook.s": PORT_BOOT_HOOK},
    pv_kernel_files={"boot_hook.s": PV_BOOT_HOOK})

register(DISKIO)


def build_split_driver(*, paravirtual: bool = True, timer_period: int | None = None, **params):
    """The diskio image with the split-driver frontend (``PV_BOOT_HOOK``) whatever the builder
    does with ``pv_kernel_files``. ``paravirtual=False`` gives a ring-0 kernel with the
    frontend, for a test harness that answers ``int 0x82`` itself (see
    :func:`vmkit.vmm.iovirt.run_split_driver_native`)."""
    from vmkit import guests
    from vmkit.guests import _SPECS
    s = guests.spec("diskio")
    swapped = dataclasses.replace(s, kernel_files=lambda p: dict(PV_BOOT_HOOK_FILES))
    _SPECS["diskio"] = swapped
    try:
        return guests.build("diskio", paravirtual=paravirtual, timer_period=timer_period,
                            **params)
    finally:
        _SPECS["diskio"] = s


PV_BOOT_HOOK_FILES = {"boot_hook.s": PV_BOOT_HOOK}
