"""Remembered protection checks (vmkit/machine/checkcache.py): a check replayed from memory
must decide exactly as the rule would, whatever changed in the tables since, and count the
same TLB hits; interrupt frames pushed as one store must equal the pushes one by one.
"""

from __future__ import annotations

import struct

import pytest

from machine_util import KDATA, STACK, STUBS, UDATA, Env
from vmkit.isa.faults import Fault

NP, GP = 11, 13


@pytest.mark.parametrize("paging", [False, True])
def test_a_remembered_segment_check_sees_the_descriptor_change(paging):
    """Is a data segment load checked again after its descriptor changed in memory?"""
    env = Env(paging=paging)
    m = env.m
    sel = env.segment(dpl=0)
    m.load_seg(3, sel)
    m.load_seg(3, sel)                       # remembered
    assert m.cpu.ds == sel
    env.segment(dpl=0, present=False)        # the same selector, now not present
    with pytest.raises(Fault) as e:
        m.load_seg(3, sel)
    assert (e.value.vector, e.value.error_code) == (NP, sel)
    env.segment(dpl=0, code=True, rw=False)  # execute-only code: not loadable in DS
    with pytest.raises(Fault) as e:
        m.load_seg(3, sel)
    assert (e.value.vector, e.value.error_code) == (GP, sel)
    env.segment(dpl=0)
    m.load_seg(3, 0)
    m.load_seg(3, sel)
    assert m.cpu.ds == sel


def test_a_remembered_segment_check_sees_gdtr_change():
    """The same descriptor bytes beyond a shortened GDT limit: #GP, not the remembered load."""
    env = Env()
    m = env.m
    sel = env.segment(dpl=0)
    m.load_seg(3, sel)
    limit = m.cpu.gdtr.limit
    m.cpu.gdtr.limit = sel - 1
    with pytest.raises(Fault) as e:
        m.load_seg(3, sel)
    assert (e.value.vector, e.value.error_code) == (GP, sel)
    m.cpu.gdtr.limit = limit
    m.load_seg(3, sel)


@pytest.mark.parametrize("paging", [False, True])
def test_a_remembered_delivery_sees_gate_and_tss_changes(paging):
    """INT n from ring 3, again after the gate's DPL and the TSS's ESP0 changed: the second
    and third deliveries follow the new tables."""
    env = Env(paging=paging)
    m = env.m
    env.gate(0x40, STUBS, dpl=3)
    for esp0 in (STACK[0], STACK[0] - 0x100):
        env.tss_stack(0, KDATA, esp0)
        env.enter(3, 0x1000)
        m.deliver(0x40, None, 0x1002, "int")
        assert (m.cpu.cpl, m.cpu.eip, m.cpu.regs[4]) == (0, STUBS, esp0 - 20)
        assert struct.unpack("<5I", m.read(esp0 - 20, 20))[:2] == (0x1002, 0x2B)
    env.gate(0x40, STUBS, dpl=0)
    env.enter(3, 0x1000)
    with pytest.raises(Fault) as e:
        m.deliver(0x40, None, 0x1002, "int")
    assert (e.value.vector, e.value.error_code) == (GP, (0x40 << 3) | 2)
    assert m.cpu.cpl == 3                    # nothing changed


def test_a_replayed_check_counts_the_tlb_hits_of_a_real_one():
    """Do a remembered delivery and IRET count the TLB hits the rules' own reads count?"""
    env = Env(paging=True)
    m = env.m
    env.gate(0x40, STUBS, dpl=3)

    def round_trip():
        env.enter(3, 0x1000)
        h = m.tlb_hits
        m.deliver(0x40, None, 0x1002, "int")
        m.iret()
        assert (m.cpu.cpl, m.cpu.eip) == (3, 0x1002)
        return m.tlb_hits - h
    round_trip()                             # TLB warm
    replayed = round_trip()
    m._checks.clear()
    real = round_trip()
    assert replayed == real > 0


@pytest.mark.parametrize("paging", [False, True])
def test_a_frame_across_a_page_boundary_is_pushed_as_one_by_one(paging):
    """An interrupt frame that straddles a page (one push at a time) and one inside a page
    (one store) hold the same values."""
    frames = []
    for esp0 in (0x6F008, 0x6E800):          # 20 bytes across 0x6F000, then inside a page
        env = Env(paging=paging)
        env.gate(0x40, STUBS, dpl=3)
        env.tss_stack(0, KDATA, esp0)
        env.enter(3, 0x1000, esp=0x4FF00)
        env.m.cpu.eflags = 0x202
        env.m.deliver(0x40, None, 0x1002, "int")
        frames.append(struct.unpack("<5I", env.m.read(esp0 - 20, 20)))
    assert frames[0] == frames[1] == (0x1002, 0x2B, 0x202, 0x4FF00, UDATA)
