"""The split driver's backend (Xen's blkback, a virtio device model): the hypervisor half
of the paravirtual way to do I/O in :mod:`vmkit.vmm.iovirt`.

The split driver's hook into the paravirtual monitor: its ``event_channel_op`` hypercall
(``int 0x82``, eax = 32) with ebx = EVTCHNOP_send (4) and ecx = 1 calls ``vm.io_backend(monitor,
vm, edx)``; :func:`pv_backend` is that function (:func:`attach_pv_backends` installs it on every
VM), keeping one :class:`SplitDriverBackend` per VM (:func:`backend_of`). A monitor with
another calling convention can use :func:`event_channel_op`::

    eax = splitdriver.event_channel_op(vm, ebx, ecx, edx, read_phys, write_phys)
"""

from __future__ import annotations

import struct

from vmkit.errors import VmkitError
from vmkit.machine.devices import OutputDisk

__all__ = ["SplitDriverBackend", "event_channel_op", "backend_of", "pv_backend",
           "attach_pv_backends", "HC_EVENT_CHANNEL_OP", "EVTCHNOP_SEND", "DISK_EVTCHN",
           "MAX_REQUEST", "MAX_SLOTS", "EINVAL", "EFAULT", "ENOSYS"]

HC_EVENT_CHANNEL_OP = 32     # hypercall number (eax): Xen's __HYPERVISOR_event_channel_op
EVTCHNOP_SEND = 4            # ebx: the event-channel operation "send"
DISK_EVTCHN = 1              # ecx: the split-driver disk's event-channel port
MAX_REQUEST = 64 * 1024      # the longest request the backend accepts (bytes)
MAX_SLOTS = (4096 - 16) // 16   # a ring fits in one page
EINVAL, EFAULT, ENOSYS = 22, 14, 38

_I = struct.Struct("<I")


class SplitDriverBackend:
    """The hypervisor half of a split driver (Xen's blkback, a virtio device model): on each
    notification it consumes the requests the frontend put in the shared ring, copies their
    bytes from guest-physical memory to ``device`` (:meth:`OutputDisk.dma_write`), writes each
    slot's status and advances the consumer index.

    ``memory_size`` bounds the VM's guest-physical memory: a request whose buffer is not wholly
    inside it is refused (status ``STATUS_BAD_ADDRESS`` in its slot, counted in ``refused`` and
    in the ring's ``errors`` field), as is a request of length 0 or over ``MAX_REQUEST``
    (``STATUS_BAD_LENGTH``). A ring that is itself outside memory, has an impossible slot count
    or claims more outstanding requests than slots is not touched (``bad_notifications``).

    Accounting: ``notifications`` (one per hypercall the frontend made), ``requests`` and
    ``bytes`` delivered, ``refused`` requests, ``bad_notifications``. The ring layout is in
    :mod:`vmkit.guests.iodemo` and docs/io-virtualization.md."""

    def __init__(self, device: OutputDisk, memory_size: int):
        if not isinstance(device, OutputDisk):
            raise VmkitError(f"SplitDriverBackend drives an OutputDisk, got "
                             f"{type(device).__name__}")
        if not isinstance(memory_size, int) or memory_size <= 0:
            raise VmkitError(f"memory_size must be a positive number of bytes, got "
                             f"{memory_size!r}")
        self.device = device
        self.memory_size = memory_size
        self.notifications = 0
        self.requests = 0
        self.bytes = 0
        self.refused = 0
        self.bad_notifications = 0
        self.last_error = ""
        self.batches: list[int] = []      # requests consumed per notification

    def stats(self) -> dict:
        return {"notifications": self.notifications, "requests": self.requests,
                "bytes": self.bytes, "refused": self.refused,
                "bad_notifications": self.bad_notifications}

    def _inside(self, gpa: int, n: int) -> bool:
        return 0 <= gpa and gpa + n <= self.memory_size

    def notify(self, read_phys, write_phys, ring_gpa: int) -> tuple[int, int]:
        """One notification: consume every request between the consumer and the producer
        index. ``read_phys(gpa, n) -> bytes`` and ``write_phys(gpa, data)`` access the VM's
        guest-physical memory. Returns (requests consumed, bytes delivered); a ring the backend
        cannot use returns (-1, 0) with the reason in ``last_error``."""
        from vmkit.guests.iodemo import (RING_CONS, RING_ERRORS, RING_SLOT0, SLOT_ADDR,
                                         SLOT_SIZE, SLOT_STATUS, STATUS_BAD_ADDRESS,
                                         STATUS_BAD_LENGTH, STATUS_OK)
        self.notifications += 1
        ring_gpa &= 0xFFFFFFFF

        def bad(why: str) -> tuple[int, int]:
            self.bad_notifications += 1
            self.last_error = why
            self.batches.append(0)
            return -1, 0

        if not self._inside(ring_gpa, RING_SLOT0):
            return bad(f"ring at {ring_gpa:#x} is outside the VM's {self.memory_size:#x} bytes")
        head = bytes(read_phys(ring_gpa, RING_SLOT0))
        # the header: req_prod, req_cons, nslots, errors (RING_PROD ... RING_ERRORS)
        prod, cons, nslots, errors = struct.unpack_from("<4I", head)
        if not 1 <= nslots <= MAX_SLOTS:
            return bad(f"ring at {ring_gpa:#x} has {nslots} slots (1 to {MAX_SLOTS})")
        if not self._inside(ring_gpa, RING_SLOT0 + nslots * SLOT_SIZE):
            return bad(f"ring at {ring_gpa:#x} with {nslots} slots ends outside the VM's memory")
        pending = (prod - cons) & 0xFFFFFFFF
        if pending > nslots:
            return bad(f"ring at {ring_gpa:#x}: {pending} requests outstanding in {nslots} "
                       f"slots (producer {prod}, consumer {cons})")
        done = delivered = 0
        for k in range(pending):
            slot = ring_gpa + RING_SLOT0 + ((cons + k) % nslots) * SLOT_SIZE
            # addr, len (SLOT_ADDR, SLOT_LEN)
            addr, length = struct.unpack("<2I", bytes(read_phys(slot + SLOT_ADDR, 8)))
            if not 0 < length <= MAX_REQUEST:
                status = STATUS_BAD_LENGTH
            elif not self._inside(addr, length):
                status = STATUS_BAD_ADDRESS
            else:
                data = bytes(read_phys(addr, length))
                self.device.dma_write(data)
                delivered += length
                status = STATUS_OK
            if status != STATUS_OK:
                self.refused += 1
                errors = (errors + 1) & 0xFFFFFFFF
            write_phys(slot + SLOT_STATUS, _I.pack(status))
            done += 1
        write_phys(ring_gpa + RING_ERRORS, _I.pack(errors))
        write_phys(ring_gpa + RING_CONS, _I.pack(prod))
        self.requests += done
        self.bytes += delivered
        self.batches.append(done)
        return done, delivered


def backend_of(vm) -> SplitDriverBackend:
    """The split-driver backend of ``vm`` (made on first use: the VM's own disk,
    ``vm.devices.disk``, bounded by its guest-physical memory)."""
    b = getattr(vm, "split_backend", None)
    if b is None:
        devices = getattr(vm, "devices", None)
        if devices is None:
            devices = vm.machine.dev
        size = getattr(vm, "memory_size", None) or vm.image.memory_size
        b = SplitDriverBackend(devices.disk, size)
        vm.split_backend = b
    return b


def event_channel_op(vm, cmd: int, port: int, arg: int, read_phys, write_phys) -> int:
    """The ``event_channel_op`` hypercall (number 32, Xen's) for ``vm``: ``cmd`` (ebx) =
    EVTCHNOP_send (4), ``port`` (ecx) = 1 (the disk), ``arg`` (edx) = the ring's
    guest-physical address. Returns the value for eax: the number of requests consumed, or a
    negative errno (-EINVAL: unknown port, -ENOSYS: unknown operation, -EFAULT: a ring the
    backend cannot use)."""
    if cmd != EVTCHNOP_SEND:
        return -ENOSYS & 0xFFFFFFFF
    if port != DISK_EVTCHN:
        return -EINVAL & 0xFFFFFFFF
    n, _ = backend_of(vm).notify(read_phys, write_phys, arg)
    return n if n >= 0 else -EFAULT & 0xFFFFFFFF


def pv_backend(monitor, vm, ring_gpa: int) -> int:
    """The split-driver backend as the paravirtual monitor calls it (``vm.io_backend(monitor,
    vm, edx)`` for ``event_channel_op`` EVTCHNOP_send to port 1): consume the ring of ``vm`` (a
    VM with a memory slice: ``slice_base``, ``memory_size``, ``devices``). Returns eax: the
    requests consumed, or -EFAULT for a ring the backend cannot use."""
    mem, base = vm.machine.mem, vm.slice_base

    def read(gpa: int, n: int) -> bytes:      # the backend checked gpa + n <= memory_size
        return bytes(mem[base + gpa:base + gpa + n])

    def write(gpa: int, data: bytes) -> None:
        vm.machine.phys_write(base + gpa, data)
    n, _ = backend_of(vm).notify(read, write, ring_gpa)
    return n if n >= 0 else -EFAULT


def attach_pv_backends(monitor) -> None:
    """Give every VM of a paravirtual monitor the split-driver backend (``vm.io_backend``),
    unless it has one already."""
    for vm in monitor.vms:
        if getattr(vm, "io_backend", None) is None:
            vm.io_backend = pv_backend
