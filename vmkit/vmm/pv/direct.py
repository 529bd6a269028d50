"""Validated direct paging (Xen's page types, simplified): the guest's page tables are the real
ones; a frame becomes a table only once validated, and every change is an ``mmu_update`` or
``mmuext_op`` hypercall, each entry checked."""

from __future__ import annotations

import struct

from vmkit.machine.cpu import MASK32
from vmkit.machine.mmu import PTE_A, PTE_P, PTE_PS, PTE_W
from vmkit.vmm.layout import V_WINPT
from vmkit.vmm.pv.abi import (_I, EINVAL, EPERM, MAX_BATCH, MMUEXT_INVLPG_LOCAL,
                              MMUEXT_NEW_BASEPTR, MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L2_TABLE,
                              _Refused)
from vmkit.vmm.pv.vm import PVVM


def owns(pv, vm: PVVM, machine: int) -> bool:
    return vm.slice_base <= machine < vm.slice_base + vm.memory_size


def check_l1e(pv, vm: PVVM, val: int) -> None:
    if not val & PTE_P:
        return
    frame = val & 0xFFFFF000
    if not owns(pv, vm, frame):
        raise _Refused(EPERM, "maps memory that is not the VM's")
    if val & PTE_W and (frame in vm.l1 or frame in vm.l2):
        raise _Refused(EPERM, "would map a page table writable")


def drop_bootstrap_write(pv, vm: PVVM, frame: int) -> None:
    """A new page table is read-only in the start-of-day mappings too."""
    a = vm.bootstrap.get(frame - vm.slice_base)
    if a is not None:
        mem = pv._host.mem
        _I.pack_into(mem, a, _I.unpack_from(mem, a)[0] & ~PTE_W)
        if vm.current:
            pv._host.flush_tlb((frame - vm.slice_base) >> 12)


def new_table(pv, vm: PVVM, frame: int, pinned: set, other: set, what: str,
              other_what: str) -> bool:
    """The checks before ``frame`` becomes a table of kind ``what``: the VM's own, page
    aligned, not already the other kind, mapped writable nowhere. False if it already is
    one (nothing to do)."""
    if frame & 0xFFF or not owns(pv, vm, frame):
        raise _Refused(EPERM, f"{what} outside the VM's memory")
    if frame in pinned:
        return False
    if frame in other:
        raise _Refused(EINVAL, f"a {other_what} cannot be a {what}")
    if vm.writable[frame]:
        raise _Refused(EPERM, f"{what} is mapped writable")
    return True


def check_l2e(pv, vm: PVVM, e: int) -> None:
    """A present page directory entry must lead to a (validated) page table."""
    if e & PTE_P:
        if e & PTE_PS:
            raise _Refused(EINVAL, "large pages are not supported")
        pin_l1(pv, vm, e & 0xFFFFF000)


def pin_l1(pv, vm: PVVM, frame: int) -> None:
    if not new_table(pv, vm, frame, vm.l1, vm.l2, "page table", "page directory"):
        return
    mem = pv._host.mem
    entries = struct.unpack_from("<1024I", mem, frame)
    for e in entries:
        check_l1e(pv, vm, e)
        if e & PTE_P and e & 0xFFFFF000 == frame and e & PTE_W:
            raise _Refused(EPERM, "would map a page table writable")
    vm.l1.add(frame)
    for e in entries:
        if e & PTE_P and e & PTE_W:
            vm.writable[e & 0xFFFFF000] += 1
    drop_bootstrap_write(pv, vm, frame)


def pin_l2(pv, vm: PVVM, frame: int) -> None:
    if not new_table(pv, vm, frame, vm.l2, vm.l1, "page directory", "page table"):
        return
    mem = pv._host.mem
    for e in struct.unpack_from("<1023I", mem, frame):
        check_l2e(pv, vm, e)
    vm.l2.add(frame)
    # the hypervisor's own slot: the window with the real GDT, IDT and TSS
    _I.pack_into(mem, frame + 4 * 1023, (vm.vmm_base + V_WINPT) | PTE_P | PTE_W | PTE_A)
    drop_bootstrap_write(pv, vm, frame)


def update_entry(pv, vm: PVVM, ptr: int, val: int) -> None:
    """One validated page table update: ``ptr`` the guest-physical address of the entry."""
    val &= MASK32
    if ptr & 3 or not 0 <= ptr < vm.memory_size:
        raise _Refused(EINVAL, "entry address outside the VM's memory")
    a = vm.slice_base + ptr
    frame = a & 0xFFFFF000
    mem = pv._host.mem
    old = _I.unpack_from(mem, a)[0]
    if frame in vm.l1:
        check_l1e(pv, vm, val)
        if old & PTE_P and old & PTE_W:
            vm.writable[old & 0xFFFFF000] -= 1
        if val & PTE_P and val & PTE_W:
            vm.writable[val & 0xFFFFF000] += 1
    elif frame in vm.l2:
        if (a & 0xFFF) >> 2 == 1023:
            raise _Refused(EPERM, "the hypervisor's page directory slot")
        check_l2e(pv, vm, val)
    else:
        raise _Refused(EINVAL, "not a page table")
    pv._host.phys_write(a, val.to_bytes(4, "little"))
    pv.pt_updates += 1


def mmu_update(pv, vm: PVVM, reqs: int, count: int, va: int):
    if not 0 <= count <= MAX_BATCH:
        raise _Refused(EINVAL, "batch too large")
    pv.batches[count] += 1
    done = 0
    try:
        for k in range(count):
            ptr = vm.read(reqs + 8 * k, 4)
            val = vm.read(reqs + 8 * k + 4, 4)
            update_entry(pv, vm, ptr, val)
            done += 1
    except _Refused as ref:
        ref.batch = count
        pv._host.cpu.regs[2] = done           # edx: updates done before the refusal
        raise
    pv._host.cpu.regs[2] = done
    if va != MASK32:
        pv._host.flush_tlb((va & MASK32) >> 12)
    return 0, count


def mmuext_op(pv, vm: PVVM, cmd: int, arg: int, _c: int) -> int:
    m = pv._host
    if cmd == MMUEXT_PIN_L1_TABLE:
        pin_l1(pv, vm, arg)
    elif cmd == MMUEXT_PIN_L2_TABLE:
        pin_l2(pv, vm, arg)
    elif cmd == MMUEXT_NEW_BASEPTR:
        pin_l2(pv, vm, arg)
        m.cpu.cr3 = arg
        vm.vcpu.cr3 = arg - vm.slice_base
        m.flush_tlb()
    elif cmd == MMUEXT_INVLPG_LOCAL:
        m.flush_tlb((arg & MASK32) >> 12)
    else:
        raise _Refused(EINVAL, "unknown mmuext_op")
    return 0
