"""The ring-1 monitors' trap paths take shortcuts (vmkit/vmm/deprivileged/vcpu.py,
vmkit/vmm/te/holes.py, vmkit/vmm/deprivileged/checks.py, bt's run_guest): the VMM's
guest-memory accesses that hit its TLB read and write host memory at once, a reflection pushes
its frame in one store, an emulated iretd reads its frame in one load, instructions whose bare
run can never be made are not hole-checked, the guest's protection checks are remembered with
the memory they read, and bt goes between user code and its kernel without the run loop when
the loop has nothing to do. Each shortcut must give what the long way gives."""

from __future__ import annotations

import pytest

import vmkit
from vmkit import guests
from vmkit.isa.decode import DECODER
from vmkit.isa.faults import Fault
from vmkit.vmm import TrapAndEmulate
from vmkit.vmm.te.holes import HoleCheck, never_compared
from vmkit.vmm.vm import GuestVM

STEPS = 8000      # syscall (iterations=20) is in its kernel with paging on


@pytest.fixture()
def te():
    mon = TrapAndEmulate(guests.build("syscall", iterations=20))
    mon.run(max_steps=STEPS)
    assert mon.vms[0].vcpu.paging
    return mon


def _insn(line: str):
    return DECODER.decode(0x1000, vmkit.assemble(line, base=0x1000).code)


@pytest.mark.parametrize("line", ["int 0x80", "iretd", "mov ds, eax", "mov ss, eax", "pop ds",
                                  "retf", "call ptr [eax]"])
def test_instructions_that_always_need_the_machine_are_never_compared(line):
    """Is an instruction whose semantics always call the machine (a segment load, a far
    transfer, int, iretd) known never to be compared, so te runs it unchecked?"""
    assert never_compared(_insn(line))


@pytest.mark.parametrize("line", ["mov eax, cs", "push ds", "popfd", "pushfd", "lar eax, ebx",
                                  "smsw eax", "sgdt [eax]", "verr bx"])
def test_comparable_holes_stay_checked(line, te):
    """Does a hole instruction that a bare run can model keep its check (a HoleCheck)?"""
    insn = _insn(line)
    assert not never_compared(insn)
    assert isinstance(te.intercept(insn), HoleCheck)


def test_segment_load_and_iretd_are_not_intercepted(te):
    """Does te leave mov ds / iretd / int 0x80 to the machine's own compiled code?"""
    for line in ("mov ds, eax", "iretd", "int 0x80"):
        assert te.intercept(_insn(line)) is None


def test_tlb_hits_read_and_write_as_the_long_way(te):
    """Do lin_read, lin_read_dwords and lin_write on a page the VMM's TLB maps give what the
    core's GuestVM.lin_read gives, and land where it reads?"""
    vm = te.vms[0]
    esp = vm.vcpu.esp & ~3
    vm.lin_read(esp, 4)                       # the page is in the VMM's TLB now
    assert vm.tlb[False, False].get(esp >> 12) is not None
    for lin in (esp, esp - 8, (esp & ~0xFFF) + 0xFFE):
        assert vm.lin_read(lin, 4) == GuestVM.lin_read(vm, lin, 4)
    words = vm.lin_read_dwords(esp - 12, 3)
    assert words == tuple(GuestVM.lin_read(vm, esp - 12 + 4 * i, 4) for i in range(3))
    vm.lin_write(esp - 4, 4, 0x1234_5678)
    vm.lin_write(esp - 4, 2, 0xBEEF)
    assert GuestVM.lin_read(vm, esp - 4, 4) == 0x1234_BEEF


@pytest.mark.parametrize("where", ["inside a page", "across a page boundary"])
def test_push_frame_writes_what_pushes_one_by_one_write(te, where):
    """Does push_frame leave the same bytes and ESP as five lin_writes from the top down,
    in one store inside a page and one by one across a page boundary?"""
    vm = te.vms[0]
    top = (vm.vcpu.esp & ~0xFFF) + (0x800 if where == "inside a page" else 0x8)
    vm.lin_read(top - 0x1000, 4)              # both pages in the VMM's TLB
    vm.lin_read(top, 4)
    values = [0x23, 0x1FFFFC, 0x1_0000_0202, 0x1B, 0x40000C]   # one beyond 32 bits: masked
    before = vm.peek(top - 0x20, 0x20)
    low = vm.push_frame(top, values)
    assert low == top - 20
    got = [GuestVM.lin_read(vm, top - 4 * (i + 1), 4) for i in range(5)]
    assert got == [v & 0xFFFFFFFF for v in values]
    assert vm.peek(top - 0x20, 12) == before[:12]          # nothing below the frame


def test_a_push_onto_compiled_code_drops_it(te):
    """Does a frame pushed onto bytes of compiled code drop that code, as any write through
    Machine.phys_write does (self-modifying code)?"""
    m = te.machine
    vm = te.vms[0]
    lin = next(a - vm.slice_base for p in sorted(m.code_pages) for a in sorted(m.code_pages[p])
               if vm.slice_base <= a < vm.slice_base + vm.memory_size
               and vm.peek(a - vm.slice_base, 4) is not None
               and vm.slice_base + vm.walk(a - vm.slice_base, touch=False)[0] == a)
    vm.translate(lin, True)                   # the page in the VMM's TLB, for writing
    old = vm.lin_read(lin, 4)
    gen = m.smc_gen
    vm.push_frame(lin + 4, [old])             # the same bytes: the code is dropped anyway
    assert m.smc_gen > gen
    assert (vm.slice_base + lin) not in m.code_pages.get((vm.slice_base + lin) >> 12, {})


def test_a_rewritten_gate_is_seen_by_the_next_reflection(te):
    """The checks of a reflection are remembered with the guest memory they read
    (vmkit/vmm/deprivileged/checks.py): does a system call after the guest rewrote its gate
    still go where the new gate says?"""
    vm = te.vms[0]
    assert any(k[0] == "delivery" for k in vm.checks)      # a system call's checks, kept
    gate = vm.vcpu.idtr.base + 0x80 * 8
    raw = vm.lin_read(gate, 8)
    old = (raw & 0xFFFF) | ((raw >> 32) & 0xFFFF0000)
    assert old & 0xFFFF < 0xFFF0
    vm.lin_write(gate, 2, (old + 2) & 0xFFFF)               # a plain store: no trap
    went = []
    te.on("reflect", lambda ev: ev.name == "int 0x80" and went.append(te.machine.cpu.eip))
    te.run(max_steps=4000)
    assert went and went[0] == old + 2


def test_a_changed_descriptor_fails_the_remembered_check(te):
    """Does an emulated IRETD's code-segment check, remembered once, fail as soon as the
    guest's descriptor stops being code (and pass again when it is put back)?"""
    vm = te.vms[0]
    sel = vm.vcpu.cs & ~3
    d = vm.check_code(sel, 0)
    assert vm.check_code(sel, 0) is d                      # the remembered result
    at = vm.vcpu.gdtr.base + sel + 5
    access = vm.lin_read(at, 1)
    vm.lin_write(at, 1, access & ~0x08)                    # a data segment now
    with pytest.raises(Fault) as e:
        vm.check_code(sel, 0)
    assert e.value.vector == 13
    vm.lin_write(at, 1, access)
    assert vm.check_code(sel, 0) == d


def _run_in_pieces(mon, piece: int) -> None:
    while mon.result is None:
        mon.run(max_steps=piece)


def test_bt_goes_from_user_code_to_its_kernel_without_the_loop_unseen(monkeypatch):
    """bt's run_guest goes on from the user program to the translated kernel and back when the
    run loop would only start the guest again (Deprivileged._go_on): does that change anything
    a monitor reports, the timer's interrupts and runs cut into pieces included?"""
    from vmkit.vmm import BinaryTranslation
    from vmkit.vmm.deprivileged.monitor import Deprivileged
    img = guests.build("syscall", iterations=300, timer_period=997)
    real = Deprivileged._go_on
    went_on = []
    monkeypatch.setattr(Deprivileged, "_go_on",
                        lambda self, vm, left: went_on.append(1) or real(self, vm, left))
    fused = [BinaryTranslation(img) for _ in range(2)]
    fused[0].run(max_steps=10**6)
    _run_in_pieces(fused[1], 777)
    assert len(went_on) > 500 and fused[0].stats["reflected"]["irq 0"] > 0
    monkeypatch.setattr(Deprivileged, "_go_on", lambda self, vm, left: False)
    loop = [BinaryTranslation(img) for _ in range(2)]
    loop[0].run(max_steps=10**6)
    _run_in_pieces(loop[1], 777)
    for a, b in zip(fused, loop):
        assert a.console == b.console and a.result.reason == b.result.reason
        assert a.stats == b.stats
        assert a.cycles == b.cycles
        assert a.trace.counts == b.trace.counts
        assert a.vms[0].vcpu.regs == b.vms[0].vcpu.regs and a.machine.clock == b.machine.clock
        assert [(e.kind, e.step) for e in a.trace] == [(e.kind, e.step) for e in b.trace]
