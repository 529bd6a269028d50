"""I/O virtualization three ways (vmkit.vmm.iovirt, docs/io-virtualization.md): an emulated
port-I/O disk, a paravirtual split driver, and direct assignment."""

from __future__ import annotations

import struct

import pytest

from vmkit import guests
from vmkit.errors import VmkitError
from vmkit.guests import iodemo
from vmkit.guests.iodemo import (RING_CONS, RING_ERRORS, RING_PROD, RING_SLOT0,
                                 SLOT_SIZE, SLOT_STATUS, STATUS_BAD_ADDRESS,
                                 STATUS_BAD_LENGTH, STATUS_OK, STATUS_PENDING, diskio_data)
from vmkit.machine.devices import DISK_PORTS, Devices, OutputDisk
from vmkit.vmm import BinaryTranslation, HardwareAssisted, Native, TrapAndEmulate
from vmkit.vmm import iovirt
from vmkit.vmm.iovirt import (EFAULT, EINVAL, ENOSYS, SplitDriverBackend, event_channel_op,
                              io_comparison, run_split_driver_native)

KB = 4
PER_KB = 258           # port writes per KB: 2 requests of 128 dwords + 1 flush each
MAX = 5_000_000


def _image(kb=KB):
    return guests.build("diskio", kb=kb)


def _disk(mon, i=0):
    vm = mon.vms[i]
    return vm.devices.disk if hasattr(vm, "devices") else vm.machine.dev.disk


WAYS = {
    "native": lambda img: Native(img),
    "emulated-te": lambda img: TrapAndEmulate(img),
    "emulated-bt": lambda img: BinaryTranslation(img),
    "emulated-hw": lambda img: HardwareAssisted(img),
    "emulated-hw-shadow": lambda img: HardwareAssisted(img, ept=False),
    "direct-te": lambda img: TrapAndEmulate(img, assign={0: ["disk"]}),
    "direct-hw": lambda img: HardwareAssisted(img, assign={0: ["disk"]}),
    "direct-hw-shadow": lambda img: HardwareAssisted(img, ept=False, assign={0: "disk"}),
}


# ---- the device and the guest ------------------------------------------------------------------
def test_device_records_port_writes_and_dma():
    d = Devices()
    d.write(0x300, 4, 0x44332211, 0)
    d.write(0x300, 1, 0x55, 0)
    d.write(0x304, 4, 1, 0)
    assert bytes(d.disk.data) == b"\x11\x22\x33\x44\x55"
    assert d.read(0x308, 4, 0) == 5 and d.read(0x30C, 4, 0) == 1 and d.read(0x304, 4, 0) == 0
    d.disk.dma_write(b"abc")
    assert d.disk.requests == 2 and d.disk.dma_requests == 1
    c = d.copy()
    c.disk.data += b"!"
    assert bytes(d.disk.data).endswith(b"abc")      # snapshots copy the disk


def test_guest_is_registered_with_a_pv_hook():
    assert "diskio" in guests.names()
    s = guests.spec("diskio")
    assert s.pv_kernel_files == {"boot_hook.s": iodemo.PV_BOOT_HOOK}
    img = _image()
    assert img.expected.startswith(f"diskio: wrote {KB} KB checksum 0x")
    assert img.expected.endswith("Hello from user mode! pid 1\n")
    with pytest.raises(VmkitError, match="kb"):
        guests.build("diskio", kb=0)


@pytest.mark.parametrize("way", list(WAYS))
def test_device_receives_exactly_the_bytes_written(way):
    img = _image()
    mon = WAYS[way](img)
    r = mon.run(max_steps=MAX)
    assert r.reason == "poweroff"
    assert mon.console == img.expected
    disk = _disk(mon)
    assert bytes(disk.data) == diskio_data(KB)
    assert disk.requests == 2 * KB
    assert disk.port_writes == PER_KB * KB
    if way.startswith("direct"):
        assert disk.direct == disk.port_writes       # no VMM in between


# ---- emulated: one trap (exit) per out ---------------------------------------------------------
def _counts(factory, kb):
    mon = factory(_image(kb))
    mon.run(max_steps=MAX)
    return mon


def test_emulated_te_traps_once_per_out():
    a, b = _counts(TrapAndEmulate, KB), _counts(TrapAndEmulate, 2 * KB)
    n = PER_KB * KB                 # the extra outs of the larger run
    hidden = b.stats["hidden_page_faults"] - a.stats["hidden_page_faults"]
    assert hidden == 1              # the larger buffer's extra page, shadowed on first touch
    assert b.stats["traps"] - a.stats["traps"] == n + hidden
    assert b.stats["emulated"]["out"] - a.stats["emulated"]["out"] == n
    disk = _disk(a)
    assert disk.direct == 0 and disk.port_writes == n
    disk_io = [e for e in a.trace if e.kind == "io" and e.port in DISK_PORTS]
    assert len(disk_io) == n


def test_emulated_hw_exits_once_per_out():
    a, b = _counts(HardwareAssisted, KB), _counts(HardwareAssisted, 2 * KB)
    n = PER_KB * KB
    ea, eb = a.stats["vm_exits"], b.stats["vm_exits"]
    assert eb["IO_INSTRUCTION"] - ea["IO_INSTRUCTION"] == n
    assert sum(eb.values()) - sum(ea.values()) == n


# ---- direct assignment --------------------------------------------------------------------------
@pytest.mark.parametrize("monitor", [TrapAndEmulate, HardwareAssisted])
def test_direct_assignment_removes_every_device_trap(monitor):
    emu = _counts(monitor, KB)
    direct = _counts(lambda img: monitor(img, assign={0: ["disk"]}), KB)
    n = PER_KB * KB
    assert emu.stats["traps"] - direct.stats["traps"] == n
    if monitor is HardwareAssisted:
        assert (emu.stats["vm_exits"]["IO_INSTRUCTION"]
                - direct.stats["vm_exits"]["IO_INSTRUCTION"] == n)
    else:
        assert emu.stats["emulated"]["out"] - direct.stats["emulated"]["out"] == n
    d = _disk(direct)
    assert bytes(d.data) == diskio_data(KB) and d.direct == d.port_writes == n
    assert direct.console == emu.console
    assert sum(direct.refused_io.values()) == 0


@pytest.mark.parametrize("monitor", [TrapAndEmulate, HardwareAssisted])
def test_another_vm_cannot_use_an_assigned_device(monitor):
    """VM 1's accesses to VM 0's disk trap (exit) and see an empty bus: writes dropped, reads
    all ones, counted in refused_io; VM 0's disk gets exactly its own bytes."""
    img = _image()
    mon = monitor(img, img, assign={0: ["disk"]}, slice=3000)
    mon.run(max_steps=2 * MAX)
    assert mon.stats["world_switches"] > 2           # they did take turns
    for vm in mon.vms:
        assert vm.result.reason == "poweroff" and vm.console == img.expected
    assert bytes(mon.vms[0].devices.disk.data) == diskio_data(KB)
    assert mon.vms[0].devices.disk.direct == PER_KB * KB
    assert bytes(mon.vms[1].devices.disk.data) == b""
    assert mon.vms[1].devices.disk.port_writes == 0
    assert mon.refused_io == {1: PER_KB * KB}
    # the host's own device never saw anything
    assert bytes(mon.machine.dev.disk.data) == b""


def test_refused_reads_see_all_ones():
    img = _image()
    mon = TrapAndEmulate(img, img, assign={1: ["disk"]})
    vm0 = mon.vms[0]
    assert vm0.port_in(0x308, 4) == 0xFFFFFFFF
    vm0.port_out(0x300, 4, 0x12345678)
    assert mon.refused_io[0] == 2 and bytes(mon.vms[1].devices.disk.data) == b""


def test_te_io_bitmap_follows_the_owner():
    from vmkit.vmm.te import H_TSS
    img = _image()
    mon = TrapAndEmulate(img, img, assign={1: ["disk"]})
    mem = mon.machine.mem
    byte = H_TSS + 104 + 0x300 // 8
    assert mon.current == 0 and mem[byte] == 0xFF and mem[byte + 1] == 0xFF
    mon._world_switch(1)
    assert mem[byte] == 0 and mem[byte + 1] == 0
    assert mem[byte - 1] == 0xFF and mem[byte + 2] == 0xFF    # only the disk's 16 ports
    mon._world_switch(0)
    assert mem[byte] == 0xFF


def test_snapshot_restore_with_assignment():
    img = _image()
    mon = TrapAndEmulate(img, assign={0: ["disk"]})
    mon.run(max_steps=20_000)
    snap = mon.snapshot()
    mon.run(max_steps=MAX)
    done = bytes(mon.vms[0].devices.disk.data)
    mon.restore(snap)
    mon.run(max_steps=MAX)
    assert bytes(mon.vms[0].devices.disk.data) == done == diskio_data(KB)


@pytest.mark.parametrize("assign, match", [
    ({0: ["nic"]}, "unknown device 'nic'.*assignable devices: disk"),
    ({2: ["disk"]}, "VM 2 does not exist"),
    ({"0": ["disk"]}, "VM '0' does not exist"),
    ([0], "assign must be a dict"),
    ({0: 5}, "needs a list of device names"),
    ({0: ["disk"], 1: ["disk"]}, "exactly one owner"),
])
@pytest.mark.parametrize("monitor", [TrapAndEmulate, HardwareAssisted])
def test_bad_assign_values_are_clear_errors(monitor, assign, match):
    img = _image(1)
    with pytest.raises(VmkitError, match=match):
        monitor(img, img, assign=assign)


@pytest.mark.parametrize("name, why", [("native", "no monitor"), ("bt", "callout"),
                                       ("pv", "split driver")])
def test_monitors_that_cannot_assign_say_why(name, why):
    with pytest.raises(VmkitError, match=f"not possible under '{name}'.*{why}"):
        iovirt.resolve_assignment({0: ["disk"]}, 1, name)
    assert iovirt.resolve_assignment(None, 1, name) == {}
    # BinaryTranslation (a TrapAndEmulate) takes no assign keyword
    with pytest.raises(TypeError):
        BinaryTranslation(_image(1), assign={0: ["disk"]})


# ---- the split driver's backend on a ring built by hand ---------------------------------------
class _Mem:
    def __init__(self, size=64 * 1024):
        self.b = bytearray(size)

    def read(self, a, n):
        assert 0 <= a and a + n <= len(self.b), "backend read outside memory"
        return bytes(self.b[a:a + n])

    def write(self, a, data):
        assert 0 <= a and a + len(data) <= len(self.b), "backend wrote outside memory"
        self.b[a:a + len(data)] = data

    def u32(self, a):
        return struct.unpack_from("<I", self.b, a)[0]


def _ring(mem, ring, reqs, nslots=8, prod=None, cons=0):
    for k, (addr, length) in enumerate(reqs):
        slot = ring + RING_SLOT0 + ((cons + k) % nslots) * SLOT_SIZE
        struct.pack_into("<4I", mem.b, slot, addr, length, cons + k, STATUS_PENDING)
    prod = cons + len(reqs) if prod is None else prod
    struct.pack_into("<4I", mem.b, ring, prod, cons, nslots, 0)


def test_backend_parses_a_ring_and_refuses_bad_entries():
    mem = _Mem()
    ring, buf = 0x1000, 0x2000
    mem.b[buf:buf + 1024] = bytes(range(256)) * 4
    disk = OutputDisk()
    be = SplitDriverBackend(disk, len(mem.b))
    _ring(mem, ring, [(buf, 512), (len(mem.b) - 100, 512), (buf + 512, 512), (buf, 0),
                      (0xFFFFFF00, 0x200), (buf, iovirt.MAX_REQUEST + 1)])
    n, nbytes = be.notify(mem.read, mem.write, ring)
    assert (n, nbytes) == (6, 1024)
    assert bytes(disk.data) == bytes(mem.b[buf:buf + 1024])
    assert disk.dma_requests == 2
    status = [mem.u32(ring + RING_SLOT0 + k * SLOT_SIZE + SLOT_STATUS) for k in range(6)]
    assert status == [STATUS_OK, STATUS_BAD_ADDRESS, STATUS_OK, STATUS_BAD_LENGTH,
                      STATUS_BAD_ADDRESS, STATUS_BAD_LENGTH]
    assert mem.u32(ring + RING_CONS) == mem.u32(ring + RING_PROD) == 6
    assert mem.u32(ring + RING_ERRORS) == 4
    assert be.stats() == {"notifications": 1, "requests": 6, "bytes": 1024, "refused": 4,
                          "bad_notifications": 0}


def test_backend_wraps_around_the_ring_and_consumes_only_new_requests():
    mem = _Mem()
    ring, buf = 0x1000, 0x3000
    mem.b[buf:buf + 4096] = bytes(range(256)) * 16
    disk = OutputDisk()
    be = SplitDriverBackend(disk, len(mem.b))
    # requests 6..9 in a ring of 4 slots: slots 2, 3, 0, 1
    _ring(mem, ring, [(buf + 100 * k, 100) for k in range(4)], nslots=4, cons=6)
    assert be.notify(mem.read, mem.write, ring) == (4, 400)
    assert mem.u32(ring + RING_CONS) == 10
    assert be.notify(mem.read, mem.write, ring) == (0, 0)     # nothing new
    assert bytes(disk.data) == bytes(mem.b[buf:buf + 400])
    assert be.batches == [4, 0]


@pytest.mark.parametrize("setup, why", [
    (lambda m: 0x10000 - 8, "outside"),
    (lambda m: (struct.pack_into("<4I", m.b, 0x1000, 1, 0, 0, 0), 0x1000)[1], "0 slots"),
    (lambda m: (struct.pack_into("<4I", m.b, 0x1000, 9, 0, 8, 0), 0x1000)[1], "outstanding"),
    (lambda m: (struct.pack_into("<4I", m.b, 0xF100, 1, 0, 255, 0), 0xF100)[1], "ends outside"),
])
def test_backend_leaves_an_unusable_ring_alone(setup, why):
    mem = _Mem()
    be = SplitDriverBackend(OutputDisk(), len(mem.b))
    ring = setup(mem)
    before = bytes(mem.b)
    assert be.notify(mem.read, mem.write, ring) == (-1, 0)
    assert why in be.last_error and be.bad_notifications == 1
    assert bytes(mem.b) == before


def test_event_channel_op_results():
    class VM:
        pass
    vm = VM()
    vm.devices, vm.memory_size = Devices(), 0x10000
    mem = _Mem()
    _ring(mem, 0x1000, [(0x2000, 16)])
    send = 4                  # Xen's EVTCHNOP_send (xen/include/public/event_channel.h)
    assert event_channel_op(vm, 2, 1, 0x1000, mem.read, mem.write) == -ENOSYS & 0xFFFFFFFF
    assert event_channel_op(vm, send, 7, 0x1000, mem.read, mem.write) == -EINVAL & 0xFFFFFFFF
    assert event_channel_op(vm, send, 1, 0x1000, mem.read, mem.write) == 1
    assert event_channel_op(vm, send, 1, 0xFFF0, mem.read, mem.write) == -EFAULT & 0xFFFFFFFF
    assert vm.split_backend.notifications == 2 and len(vm.devices.disk.data) == 16
    with pytest.raises(VmkitError, match="OutputDisk"):
        SplitDriverBackend(object(), 10)


# ---- the split driver end to end (frontend in the guest kernel, a Python int 0x82) ------------
@pytest.mark.parametrize("kb, batch, notes", [(16, 8, 4), (4, 3, 3), (2, 32, 1), (1, 1, 2)])
def test_split_driver_one_notification_per_batch(kb, batch, notes):
    mon, be = run_split_driver_native(kb, batch)
    assert mon.console == guests.build("diskio", kb=kb).expected
    assert be.notifications == notes == mon.events["hypercall"]
    assert be.requests == 2 * kb and be.refused == 0
    assert bytes(mon.machine.dev.disk.data) == diskio_data(kb)
    assert mon.machine.dev.disk.port_writes == 0          # no port I/O at all


def test_split_driver_frontend_reports_refusals():
    img = iodemo.build_split_driver(paravirtual=False, kb=1, batch=2)
    mon, be = run_split_driver_native(image=img, run=False)
    ring, buf = img.symbols["dio_ring"], img.symbols["dio_buf"]
    assert buf == ring + 4096
    be.memory_size = buf                      # the ring is inside, the buffer "outside"
    mon.run(max_steps=MAX)
    assert "diskio: the backend refused requests" in mon.console
    assert be.refused == 2 and be.bytes == 0


def test_pv_monitor_split_driver():
    Paravirtual = pytest.importorskip("vmkit.vmm.pv").Paravirtual
    img = iodemo.build_split_driver(paravirtual=True, kb=KB, batch=8)
    mon = Paravirtual(img)
    iovirt.attach_pv_backends(mon)
    mon.run(max_steps=MAX)
    assert mon.console == img.expected
    be = mon.vms[0].split_backend
    assert be.notifications == KB * 2 // 8 and be.bytes == KB * 1024
    assert bytes(mon.vms[0].devices.disk.data) == diskio_data(KB)
    assert mon.stats["hypercalls"]["event_channel_op"] >= be.notifications
    assert mon.vms[0].devices.disk.port_writes == 0


# ---- the experiment ------------------------------------------------------------------------
def test_io_comparison_table_and_plot():
    from vmkit.viz.render import figure_svg
    ways = ["native", "emulated-te", "emulated-hw", "split-shim", "direct-te", "direct-hw"]
    c = io_comparison(2, ways=ways)
    assert c.ways == ways
    for r in c.table():
        assert r["correct"] and r["bytes"] == 2048
    te, hw = c.row("emulated-te"), c.row("emulated-hw")
    assert te["device_entries"] == hw["device_entries"] == 2 * PER_KB
    assert te["entries_per_kb"] == hw["entries_per_kb"] == PER_KB
    assert c.row("direct-te")["device_entries"] == c.row("direct-hw")["device_entries"] == 0
    shim = c.row("split-shim")
    assert shim["notifications"] == shim["hypercalls"] == 1 and shim["device_entries"] == 0
    assert c.row("direct-hw")["cycles_per_kb"] < hw["cycles_per_kb"] / 10
    html = c.to_html()
    assert "emulated-te" in html and "cycles per KB" in html
    assert "direct-hw" in c.to_text()
    assert figure_svg(c.plot()) == figure_svg(c.plot())
    cheap = c.reprice(c.costs.with_(vm_exit=0.0))
    assert cheap.row("emulated-hw")["cycles"] < hw["cycles"]


def test_io_comparison_bad_arguments():
    with pytest.raises(VmkitError, match="unknown way"):
        io_comparison(1, ways=["teleport"])
    with pytest.raises(VmkitError, match="kb must be"):
        io_comparison(0)
    with pytest.raises(VmkitError, match="costs"):
        io_comparison(1, costs=3)
