"""Paging modes behind one interface (vmkit.vmm.paging): does every monitor hold the mode it
was asked for, refuse one it cannot use in one line, and run a new mode registered from
outside exactly as the interface promises?"""

from __future__ import annotations

import pytest

from vmkit import assemble, guests
from vmkit.errors import VmkitError
from vmkit.isa.decode import DECODER
from vmkit.vmm import BinaryTranslation, HardwareAssisted, Paravirtual, TrapAndEmulate
from vmkit.vmm.paging import MODES, PagingMode, ShadowPaging, register, softmmu


@pytest.fixture(scope="module")
def img():
    return guests.build("ptemod", iterations=8)


def test_each_monitor_holds_the_mode_of_its_kind(img):
    """Does each monitor default to its mode, and does hw's ept=False mean the virtual TLB?"""
    assert TrapAndEmulate(img).paging.name == "vtlb"
    assert BinaryTranslation(img).paging.name == "vtlb"
    assert HardwareAssisted(img).paging.name == "ept"
    hw = HardwareAssisted(img, ept=False)
    assert hw.paging.name == "vtlb" and hw.ept is False
    hw = HardwareAssisted(img, paging="vtlb")
    assert hw.ept is False and not hasattr(hw.vms[0], "ept")
    pv = Paravirtual(guests.build("ptemod", paravirtual=True, iterations=8))
    assert pv.paging.name == "direct" and pv.paging.kind == "direct"
    assert {"vtlb", "ept", "direct"} <= set(MODES)


@pytest.mark.parametrize("make, message", [
    (lambda i: TrapAndEmulate(i, paging="vtbl"), "unknown paging mode 'vtbl': te takes 'vtlb', "
                                                 "'traced'; did you mean 'vtlb'?"),
    (lambda i: BinaryTranslation(i, paging="ept"), "bt cannot use paging mode 'ept'"),
    (lambda i: HardwareAssisted(i, paging="direct"), "hw cannot use paging mode 'direct'"),
    (lambda i: HardwareAssisted(i, ept=True, paging="vtlb"), "ept=True contradicts "
                                                            "paging='vtlb'"),
    (lambda i: HardwareAssisted(i, paging="vtlb", lazy_ept=True), "lazy_ept needs ept=True"),
])
def test_a_mode_the_monitor_cannot_use_is_a_one_line_error(img, make, message):
    """Is a wrong paging= a VmkitError of one line that says what was wrong?"""
    with pytest.raises(VmkitError) as e:
        make(img)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_paging_vtlb_under_hw_is_the_same_run_as_ept_false(img):
    """Does HardwareAssisted(paging="vtlb") run exactly as HardwareAssisted(ept=False)?"""
    a = HardwareAssisted(img, ept=False)
    b = HardwareAssisted(img, paging="vtlb")
    a.run(200_000)
    b.run(200_000)
    assert a.stats == b.stats and a.console == b.console and a.stats["hidden_page_faults"] > 0


class _CountingShadow(ShadowPaging):
    """A shadow mode from outside the package: the virtual TLB, counting what it is asked."""

    name = "test-counting"
    traces = True

    def __init__(self, monitor, **kw):
        super().__init__(monitor, **kw)
        self.asked = {"update_cr3": 0, "invlpg": 0, "page_fault": 0, "traced_write": []}

    def update_cr3(self, vm, value):
        self.asked["update_cr3"] += 1
        super().update_cr3(vm, value)

    def invlpg(self, vm, lin):
        self.asked["invlpg"] += 1
        super().invlpg(vm, lin)

    def page_fault(self, vm, lin, write, user):
        self.asked["page_fault"] += 1
        return super().page_fault(vm, lin, write, user)

    def traced_write(self, vm, lin, n, value, user):
        self.asked["traced_write"].append((lin, n, value))
        super().traced_write(vm, lin, n, value, user)


@pytest.fixture
def counting():
    register(_CountingShadow)
    yield _CountingShadow.name
    del MODES[_CountingShadow.name]


@pytest.mark.parametrize("make", [
    lambda i, p: TrapAndEmulate(i, paging=p),
    lambda i, p: BinaryTranslation(i, paging=p),
    lambda i, p: HardwareAssisted(i, paging=p),
], ids=["te", "bt", "hw-shadow"])
def test_a_registered_shadow_mode_is_taken_by_te_bt_and_hw(img, counting, make):
    """Does a shadow mode registered from outside run under te, bt and hw without EPT, asked
    for every CR3 load, INVLPG and real page fault the monitor sees, with the same result as
    the virtual TLB it extends?"""
    mon = make(img, counting)
    ref = make(img, "vtlb")
    mon.run(300_000)
    ref.run(300_000)
    asked = mon.paging.asked
    s = mon.stats
    assert s == ref.stats and mon.console == ref.console
    assert asked["update_cr3"] == s["pt_traps"]["mov cr3"] > 0
    assert asked["invlpg"] == s["pt_traps"]["invlpg"] > 0
    assert asked["page_fault"] >= s["hidden_page_faults"] > 0


def test_the_software_mmu_writes_through_a_tracing_mode(counting):
    """Does an instruction run by the software MMU under a mode that ``traces`` pass each
    write to the mode's traced_write (and still store it in guest memory)?"""
    te = TrapAndEmulate(guests.build("hello"), paging=counting)
    vm = te.vms[0]
    vm.vcpu.eax = 0x12345678                  # at power-on the guest's paging is off
    insn = DECODER.decode(0x1000, assemble("mov dword ptr [0x3000], eax").code)
    fn = softmmu.compile_through_guest(te.machine, vm, insn, False)
    te.machine.cpu.regs[0] = 0x12345678
    softmmu.run(fn)
    assert te.paging.asked["traced_write"] == [(0x3000, 4, 0x12345678)]
    assert vm.lin_read(0x3000, 4) == 0x12345678


def test_a_mode_needs_a_name_and_a_kind():
    """Is a mode class without a known kind refused when registered?"""
    class Nameless(PagingMode):
        name = "x"
        kind = "sideways"
    with pytest.raises(VmkitError, match="needs a name and a kind"):
        register(Nameless)
