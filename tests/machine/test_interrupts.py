"""Exceptions and interrupts: vectors, error codes, pushed frames, gates, the TSS stack switch,
IRET across rings, and the double/triple-fault rules (SDM Vol. 3A ch. 6 and Table 6-5).

Frames are read where the CPU pushed them (``env.frame``): [error code,] EIP, CS, EFLAGS
and, after a privilege change, ESP and SS of the interrupted code.
"""

from __future__ import annotations

import struct

import pytest

from machine_util import (POWEROFF, CODE, FREE, IDT, KCODE, KDATA, P, R1CODE, R1DATA, STACK, STUBS,
                          TSS, TSS_SEL, U, UCODE, UDATA, W, Env, asm, gate_desc)

DE, DB, BP, OF, UD, DF, TS, NP, SS_, GP, PF = 0, 1, 3, 4, 6, 8, 10, 11, 12, 13, 14
TF, IF = 0x100, 0x200


def run_at(env: Env, ring: int, source: str, *, eflags: int = 0x2, steps: int = 10_000):
    env.code(CODE, source)
    env.enter(ring, CODE, eflags=eflags)
    return env.m.run(max_steps=steps)


def at(setup: str) -> int:
    """Address of the instruction following ``setup`` (both placed at CODE)."""
    return CODE + (len(asm(setup)) if setup.strip() else 0)


def stub(v: int) -> int:
    return STUBS + 32 * v


# ---------------------------------------------------------------------------------------------
# each exception: vector, error code, saved EIP (faults: the instruction; traps: the next one)
# ---------------------------------------------------------------------------------------------

def test_divide_by_zero_raises_de_with_eip_of_the_div():
    env = Env()
    setup = "mov eax, 7\nxor edx, edx\nxor ecx, ecx"
    r = run_at(env, 0, f"{setup}\ndiv ecx\nnop")
    assert r.reason == "poweroff" and env.vector == DE
    eip, cs, fl = env.frame(3)
    assert eip == at(setup) and cs == KCODE and fl & 2
    assert env.stub_esp == STACK[0] - 12         # no error code pushed
    assert env.eax == 7                           # the div changed nothing


def test_divide_overflow_raises_de():
    env = Env()
    setup = "mov edx, 5\nmov eax, 0\nmov ecx, 2"
    run_at(env, 3, f"{setup}\ndiv ecx")
    assert env.vector == DE and env.frame(2) == [at(setup), UCODE]


def test_single_step_trap_after_each_instruction_when_tf_set():
    env = Env()
    r = run_at(env, 0, "mov eax, 1\nmov ebx, 2", eflags=0x2 | TF)
    assert r.reason == "poweroff" and env.vector == DB
    eip, cs, fl = env.frame(3)
    assert eip == at("mov eax, 1") and fl & TF
    assert not env.m.cpu.eflags & TF               # the handler runs without TF
    assert env.m.cpu.ebx != 2


def test_single_step_starts_after_popfd_sets_tf():
    env = Env()
    setup = "pushfd\nor dword ptr [esp], 0x100\npopfd\nnop"
    r = run_at(env, 0, f"{setup}\nnop\nnop")
    assert r.reason == "poweroff" and env.vector == DB
    assert env.frame(1) == [at(setup)]           # trap after the instruction after popfd


def test_int3_raises_bp_with_eip_after_it():
    env = Env()
    env.gate(BP, stub(BP), dpl=3)
    run_at(env, 3, "nop\nint3\nnop")
    assert env.vector == BP
    assert env.frame(5) == [CODE + 2, UCODE, 0x2, STACK[3], UDATA]


def test_int3_through_a_dpl0_gate_at_ring3_raises_gp():
    env = Env()
    run_at(env, 3, "nop\nint3")
    assert env.vector == GP and env.frame(2) == [BP * 8 + 2, CODE + 1]


def test_into_with_of_set_raises_of_after_the_into():
    env = Env()
    setup = "mov al, 0x7f\nadd al, 1"
    run_at(env, 0, f"{setup}\ninto\nnop")
    assert env.vector == OF and env.frame(1) == [at(setup) + 1]


def test_into_without_of_does_nothing():
    env = Env()
    r = run_at(env, 0, "mov al, 1\nadd al, 1\ninto\nmov ebx, 5", steps=4)
    assert r.reason == "max_steps" and env.m.cpu.ebx == 5


def test_ud2_raises_ud_with_eip_of_the_ud2():
    env = Env()
    run_at(env, 3, "nop\nud2")
    assert env.vector == UD and env.frame(5) == [CODE + 1, UCODE, 0x2, STACK[3], UDATA]


def test_undefined_encoding_raises_ud():
    env = Env()
    env.m.write(CODE, bytes.fromhex("90ffff"))     # nop; (bad)
    env.enter(0, CODE)
    env.m.run(max_steps=100)
    assert env.vector == UD and env.frame(1) == [CODE + 1]


def test_gp_from_privileged_instruction_has_error_code_zero_and_full_frame():
    env = Env()
    run_at(env, 3, "nop\nhlt", eflags=0x2 | 0x8D5)
    assert env.vector == GP
    assert env.frame(6) == [0, CODE + 1, UCODE, 0x2 | 0x8D5, STACK[3], UDATA]


def test_int_n_through_gate_with_dpl_below_cpl_raises_gp_n8_plus_2():
    env = Env()
    run_at(env, 3, "nop\nint 0x80")
    assert env.vector == GP and env.frame(2) == [0x80 * 8 + 2, CODE + 1]


def test_int_n_through_a_dpl1_gate_from_ring1_works_but_from_ring3_faults():
    env = Env()
    env.gate(0x41, stub(0x41), dpl=1)
    run_at(env, 1, "int 0x41")
    assert env.vector == 0x41
    env = Env()
    env.gate(0x41, stub(0x41), dpl=1)
    run_at(env, 3, "int 0x41")
    assert env.vector == GP and env.frame(1) == [0x41 * 8 + 2]


def test_int_n_through_a_not_present_gate_raises_np():
    env = Env()
    env.gate(0x80, stub(0x80), dpl=3, present=False)
    run_at(env, 3, "nop\nint 0x80")
    assert env.vector == NP and env.frame(2) == [0x80 * 8 + 2, CODE + 1]


def test_exception_through_a_not_present_gate_raises_np_with_ext_bit():
    env = Env()
    env.gate(UD, stub(UD), present=False)
    run_at(env, 0, "nop\nud2")
    assert env.vector == NP and env.frame(2) == [UD * 8 + 2 + 1, CODE + 1]


def test_int_n_beyond_the_idt_limit_raises_gp():
    env = Env()
    env.m.cpu.idtr.limit = 0x40 * 8 - 1
    run_at(env, 0, "int 0x40")
    assert env.vector == GP and env.frame(2) == [0x40 * 8 + 2, CODE]


def test_int_n_through_a_gate_that_is_not_an_interrupt_or_trap_gate_raises_gp():
    env = Env()
    env.raw_gate(0x80, gate_desc(stub(0x80), dpl=3) & ~(0xF << 40) | (0x6 << 40))  # 16-bit gate
    run_at(env, 0, "int 0x80")
    assert env.vector == GP and env.frame(1) == [0x80 * 8 + 2]


def test_gate_to_a_non_code_segment_raises_gp_selector():
    env = Env()
    env.gate(0x80, stub(0x80), selector=KDATA, dpl=3)
    run_at(env, 0, "int 0x80")
    assert env.vector == GP and env.frame(1) == [KDATA]


def test_gate_to_an_outer_ring_code_segment_raises_gp_selector():
    env = Env()
    env.gate(0x80, stub(0x80), selector=UCODE, dpl=3)
    run_at(env, 0, "int 0x80")
    assert env.vector == GP and env.frame(1) == [UCODE & ~3]


def test_gate_to_a_not_present_code_segment_raises_np_selector():
    env = Env()
    sel = env.segment(FREE, code=True, present=False)
    env.gate(0x80, stub(0x80), selector=sel, dpl=3)
    run_at(env, 0, "int 0x80")
    assert env.vector == NP and env.frame(1) == [sel]


def test_gp_from_a_bad_segment_load_names_the_selector():
    env = Env()
    run_at(env, 3, f"mov eax, {KDATA}\nmov ds, ax")
    assert env.vector == GP and env.frame(2) == [KDATA, at(f"mov eax, {KDATA}")]


def test_np_from_loading_a_not_present_segment():
    env = Env()
    sel = env.segment(FREE, present=False, dpl=3)
    run_at(env, 3, f"mov eax, {sel | 3}\nmov es, ax")
    assert env.vector == NP and env.frame(1) == [sel]


def test_ss_fault_from_loading_a_not_present_stack_segment():
    env = Env()
    sel = env.segment(FREE, present=False)
    run_at(env, 0, f"mov eax, {sel}\nmov ss, ax")
    assert env.vector == SS_ and env.frame(2) == [sel, at(f"mov eax, {sel}")]


def test_ts_fault_when_tss_ss1_is_bad_for_a_ring1_handler():
    env = Env()
    env.gate(0x80, 0x3000, selector=R1CODE, dpl=3)
    env.tss_stack(1, UDATA, 0x60000)               # SS1 is a ring-3 segment
    run_at(env, 3, "nop\nint 0x80")
    assert env.vector == TS
    # delivered to the ring-0 #TS handler on SS0:ESP0, the frame of the ring-3 code
    assert env.frame(6) == [UDATA & ~3, CODE + 1, UCODE, 0x2, STACK[3], UDATA]
    assert env.stub_esp == STACK[0] - 24


@pytest.mark.parametrize("ss1,err", [(0, 0), (KDATA, KDATA), (R1CODE, R1CODE & ~3),
                                     (0x800 | 1, 0x800)])
def test_ts_fault_for_null_wrong_ring_code_or_out_of_gdt_ss1(ss1, err):
    env = Env()
    env.gate(0x80, 0x3000, selector=R1CODE, dpl=3)
    env.tss_stack(1, ss1, 0x60000)
    run_at(env, 3, "int 0x80")
    assert env.vector == TS and env.frame(1) == [err]


def test_ts_fault_from_an_exception_has_the_ext_bit():
    env = Env()
    env.gate(UD, 0x3000, selector=R1CODE)
    env.tss_stack(1, UDATA, 0x60000)
    run_at(env, 3, "ud2")
    # #UD (benign) then #TS: delivered serially, #TS carries EXT
    assert env.vector == TS and env.frame(2) == [(UDATA & ~3) | 1, CODE]


def test_ss_fault_when_tss_stack_segment_not_present():
    env = Env()
    sel = env.segment(FREE, dpl=1, present=False) | 1
    env.gate(0x80, 0x3000, selector=R1CODE, dpl=3)
    env.tss_stack(1, sel, 0x60000)
    run_at(env, 3, "int 0x80")
    assert env.vector == SS_ and env.frame(1) == [sel & ~3]


# ---------------------------------------------------------------------------------------------
# interrupt vs trap gates, the TSS stack switch, iretd back
# ---------------------------------------------------------------------------------------------

def test_interrupt_gate_clears_if():
    env = Env()
    run_at(env, 0, "int 0x80", eflags=0x2 | IF)
    assert env.vector == 0x80 and env.frame(3)[2] & IF
    assert not env.m.cpu.eflags & IF


def test_trap_gate_leaves_if_set():
    env = Env()
    env.gate(0x80, stub(0x80), trap=True)
    run_at(env, 0, "int 0x80", eflags=0x2 | IF)
    assert env.vector == 0x80 and env.m.cpu.eflags & IF


def test_int_0x80_from_ring3_switches_to_ss0_esp0_and_pushes_five_dwords():
    env = Env()
    env.gate(0x80, stub(0x80), dpl=3)
    r = run_at(env, 3, "mov esp, 0x4f00c\nint 0x80", eflags=0x2 | IF | 0x1)
    assert r.reason == "poweroff" and env.vector == 0x80
    assert env.stub_esp == STACK[0] - 20
    assert env.frame(5) == [at("mov esp, 0x4f00c") + 2, UCODE, 0x2 | IF | 0x1, 0x4F00C, UDATA]
    cpu = env.m.cpu
    assert cpu.cpl == 0 and cpu.cs == KCODE and cpu.ss == KDATA
    # data segment registers are not touched by the interrupt
    assert cpu.ds == UDATA and cpu.es == UDATA


def test_int_from_ring3_to_ring1_handler_uses_ss1_esp1():
    env = Env()
    env.gate(0x81, stub(0x81), selector=R1CODE, dpl=3)
    env.allow_ports(*POWEROFF)
    r = run_at(env, 3, "int 0x81")
    assert r.reason == "poweroff" and env.vector == 0x81
    assert env.stub_esp == STACK[1] - 20
    assert env.frame(5) == [CODE + 2, UCODE, 0x2, STACK[3], UDATA]
    assert env.m.cpu.cpl == 1 and env.m.cpu.ss == R1DATA and env.m.cpu.cs == R1CODE


def test_int_from_ring1_to_ring0_handler_uses_ss0_esp0():
    env = Env()
    env.gate(0x80, stub(0x80), dpl=1)
    run_at(env, 1, "int 0x80")
    assert env.stub_esp == STACK[0] - 20
    assert env.frame(5) == [CODE + 2, R1CODE, 0x2, STACK[1], R1DATA]


def test_fault_at_ring0_stays_on_the_same_stack():
    env = Env()
    run_at(env, 0, "mov esp, 0x6f000\nud2")
    assert env.stub_esp == 0x6F000 - 12 and env.frame(2) == [at("mov esp, 0x6f000"), KCODE]


def test_privilege_change_without_a_tss_raises_ts_and_crashes_cleanly():
    env = Env()
    env.gate(0x80, stub(0x80), dpl=3)
    env.m.cpu.tr.selector = env.m.cpu.tr.base = env.m.cpu.tr.limit = 0
    r = run_at(env, 3, "int 0x80")
    assert r.reason == "crash" and "triple fault" in r.detail


def test_iretd_from_ring0_handler_restores_ring3_and_its_stack():
    env = Env()
    env.code(0x3000, "iretd")
    env.gate(0x80, 0x3000, dpl=3)
    src = "mov esp, 0x4f000\nmov esi, esp\nint 0x80\nmov edi, esp\nud2"
    r = run_at(env, 3, src, eflags=0x2 | 0x1)
    assert r.reason == "poweroff" and env.vector == UD
    cpu = env.m.cpu
    assert cpu.esi == 0x4F000 and cpu.edi == 0x4F000
    assert env.frame(5) == [at(src.rsplit("\n", 1)[0]), UCODE, 0x3, 0x4F000, UDATA]


def test_iretd_to_ring3_nulls_data_segments_with_dpl_below_3():
    env = Env()
    handler = f"""
        mov eax, {KDATA}
        mov ds, ax
        mov es, ax
        mov eax, {UDATA}
        mov fs, ax
        xor eax, eax
        mov gs, ax
        iretd
    """
    env.code(0x3000, handler)
    env.gate(0x80, 0x3000, dpl=3)
    r = run_at(env, 3, "int 0x80\njmp $", steps=10)
    cpu = env.m.cpu
    assert r.reason == "max_steps" and cpu.cpl == 3 and cpu.eip == CODE + 2
    assert cpu.ds == 0 and cpu.es == 0 and cpu.fs == UDATA and cpu.gs == 0
    assert cpu.ss == UDATA and cpu.cs == UCODE


def test_iretd_to_ring3_keeps_a_conforming_code_selector_in_ds():
    env = Env()
    conf = env.segment(FREE, code=True, conforming=True, dpl=0)
    env.code(0x3000, f"mov eax, {conf}\nmov ds, ax\niretd")
    env.gate(0x80, 0x3000, dpl=3)
    run_at(env, 3, "int 0x80\njmp $", steps=5)
    assert env.m.cpu.cpl == 3 and env.m.cpu.ds == conf


def test_iretd_from_ring1_handler_back_to_ring3_cannot_restore_if():
    env = Env()
    env.code(0x3000, "iretd")
    env.gate(0x81, 0x3000, selector=R1CODE, dpl=3)
    r = run_at(env, 3, "int 0x81\njmp $", eflags=0x2 | IF, steps=5)
    cpu = env.m.cpu
    assert r.reason == "max_steps" and cpu.cpl == 3 and cpu.esp == STACK[3]
    assert cpu.ss == UDATA and cpu.ds == UDATA    # DPL-3 data stays loaded
    # the interrupt gate cleared IF; ring 1 with IOPL 0 cannot set it again with iretd, even
    # though the frame holds IF=1 (why a deprivileged kernel breaks Popek-Goldberg)
    assert not cpu.eflags & IF


def test_iretd_from_ring1_handler_with_iopl1_restores_if():
    env = Env()
    env.code(0x3000, "iretd")
    env.gate(0x81, 0x3000, selector=R1CODE, dpl=3)
    r = run_at(env, 3, "int 0x81\njmp $", eflags=0x2 | IF | 0x1000, steps=5)
    assert r.reason == "max_steps" and env.m.cpu.cpl == 3 and env.m.cpu.eflags & IF


def test_iretd_with_a_bad_outer_ss_raises_gp_and_changes_nothing():
    env = Env()
    src = f"push {KDATA}\npush 0x4f000\npush 2\npush {UCODE}\npush 0x3000\niretd"
    run_at(env, 0, src)
    assert env.vector == GP and env.frame(2) == [KDATA, at(src.rsplit("\n", 1)[0])]
    assert env.frame(3)[2] == KCODE


def test_interrupt_event_names_vector_rings_and_handler():
    env = Env()
    env.gate(0x80, stub(0x80), dpl=3)
    run_at(env, 3, "int 0x80")
    ev = [e for e in env.m.trace.of("interrupt")][0]
    assert (ev.vector, ev.from_ring, ev.to_ring, ev.eip, ev.handler, ev.source) == \
        (0x80, 3, 0, CODE, stub(0x80), "int")


# ---------------------------------------------------------------------------------------------
# double and triple faults (SDM Table 6-5)
# ---------------------------------------------------------------------------------------------

def test_contributory_during_contributory_becomes_double_fault():
    env = Env()
    env.gate(GP, stub(GP), present=False)           # #GP -> #NP while delivering it
    r = run_at(env, 0, f"mov eax, {TSS_SEL}\nmov ds, ax")
    assert r.reason == "poweroff" and env.vector == DF
    assert env.frame(3) == [0, at(f"mov eax, {TSS_SEL}"), KCODE]   # error code 0


def test_benign_then_contributory_is_handled_serially():
    env = Env()
    env.gate(UD, stub(UD), present=False)           # #UD -> #NP: the #NP is delivered
    run_at(env, 0, "ud2")
    assert env.vector == NP and env.frame(2) == [UD * 8 + 3, CODE]


def test_soft_int_then_contributory_is_handled_serially():
    env = Env()
    env.gate(BP, stub(BP), present=False)
    run_at(env, 0, "int3")
    assert env.vector == NP and env.frame(2) == [BP * 8 + 2, CODE]


def _idt_split(env: Env, base: int) -> None:
    """Move the IDT to ``base`` (the recording gates copied)."""
    cpu = env.m.cpu
    env.m.write(base, env.m.read(IDT, 256 * 8))
    cpu.idtr.base = base


def test_page_fault_during_page_fault_becomes_double_fault():
    env = Env(paging=True)
    # IDT entries 0-13 on page 0x2F000, 14 and up on page 0x30000, which is not present
    _idt_split(env, 0x30000 - 14 * 8)
    env.set_pte(0x30000, 0)
    env.set_pte(0x300000, 0)
    r = run_at(env, 0, "nop\nmov eax, [0x300000]")
    assert r.reason == "poweroff" and env.vector == DF
    assert env.frame(3) == [0, CODE + 1, KCODE]
    assert env.m.cpu.cr2 == 0x30000                # the second #PF: reading gate 14


def test_page_fault_during_contributory_is_handled_as_page_fault():
    env = Env(paging=True)
    # IDT entries 0-12 on page 0x2F000, 13 and up on 0x30000; page 0x2F000 not present
    _idt_split(env, 0x30000 - 13 * 8 - 8)          # entry 13 at 0x2FFF8 .. 0x2FFFF
    env.set_pte(0x2F000, 0)
    r = run_at(env, 0, f"mov eax, {KDATA | 3}\nmov ds, ax")
    assert r.reason == "poweroff" and env.vector == PF
    assert env.m.cpu.cr2 == 0x2FFF8
    assert env.frame(2) == [0, at(f"mov eax, {KDATA | 3}")]   # supervisor read, not present


def test_contributory_during_page_fault_becomes_double_fault():
    env = Env(paging=True)
    env.gate(PF, stub(PF), present=False)
    env.set_pte(0x300000, 0)
    r = run_at(env, 0, "mov eax, [0x300000]")
    assert r.reason == "poweroff" and env.vector == DF and env.frame(1) == [0]


def test_page_fault_pushing_the_frame_becomes_double_fault_on_a_good_stack():
    env = Env(paging=True)
    env.allow_ports(*POWEROFF)                      # the #DF stub runs at ring 3
    # ring-3 #PF: the ring-0 stack (ESP0) is on a not-present page; #DF goes to a ring-3
    # handler, which needs no stack switch
    env.tss_stack(0, KDATA, 0x3FF000)
    env.set_pte(0x3FE000, 0)
    env.gate(DF, stub(DF), selector=UCODE)
    env.set_pte(0x300000, 0)
    r = run_at(env, 3, "mov eax, [0x300000]")
    assert r.reason == "poweroff" and env.vector == DF
    assert env.frame(3) == [0, CODE, UCODE]
    assert env.m.cpu.cr2 == 0x3FEFFC


def test_double_fault_with_its_gate_missing_is_a_triple_fault_crash():
    env = Env()
    env.gate(GP, stub(GP), present=False)
    env.gate(DF, stub(DF), present=False)
    r = run_at(env, 0, f"nop\nmov eax, {TSS_SEL}\nmov ds, ax")
    assert r.reason == "crash"
    assert "triple fault" in r.detail and "#DF" in r.detail and "#GP" in r.detail
    assert r.steps == 2
    assert env.m.run().reason == "crash"           # stays stopped
    assert env.m.stopped is not None


@pytest.mark.parametrize("source", ["ud2", "int3", "int 0x80", "xor ecx, ecx\ndiv ecx",
                                    "hlt_at_ring3", "mov eax, [0x300000]"])
def test_empty_idt_and_any_fault_crashes(source):
    paging = "0x300000" in source
    env = Env(paging=paging)
    if paging:
        env.set_pte(0x300000, 0)
    env.clear_idt()
    ring = 3 if source == "hlt_at_ring3" else 0
    if source == "hlt_at_ring3":
        source = "hlt"
    r = run_at(env, ring, f"nop\n{source}")
    assert r.reason == "crash" and "triple fault" in r.detail
    assert r.eip == at("nop" + ("\nxor ecx, ecx" if "div" in source else ""))


def test_empty_idt_on_a_fresh_machine_crashes_on_a_fault():
    from vmkit.machine.machine import Machine
    m = Machine()
    m.write(0x1000, asm("nop\nud2"))
    m.cpu.eip = 0x1000
    r = m.run(max_steps=100)
    assert r.reason == "crash" and r.steps == 1 and "triple fault" in r.detail
    assert "#UD" in r.detail


def test_triple_fault_by_single_stepping_into_a_missing_idt():
    env = Env()
    env.clear_idt()
    r = run_at(env, 0, "nop\nnop", eflags=0x2 | TF)
    assert r.reason == "crash" and "#DF" in r.detail


_ = (P, U, W, TSS, KCODE)


def test_gate_to_a_conforming_handler_runs_at_the_callers_ring_on_its_stack():
    env = Env()
    env.allow_ports(*POWEROFF)
    conf = env.segment(FREE, code=True, conforming=True, dpl=0)
    env.gate(0x80, stub(0x80), selector=conf, dpl=3)
    run_at(env, 3, "int 0x80")
    assert env.vector == 0x80 and env.m.cpu.cpl == 3
    assert env.stub_esp == STACK[3] - 12
    assert env.frame(3) == [CODE + 2, UCODE, 0x2]


def test_irq_at_ring3_switches_to_the_ring0_stack():
    env = Env()
    env.m.dev.raise_irq(0)
    r = run_at(env, 3, "nop", eflags=0x2 | IF)
    assert r.reason == "poweroff" and env.vector == 32
    assert env.frame(5) == [CODE, UCODE, 0x2 | IF, STACK[3], UDATA]
    ev = env.m.trace.of("interrupt")[0]
    assert (ev.source, ev.from_ring, ev.to_ring) == ("irq", 3, 0)


def test_irq_through_a_not_present_gate_raises_np_with_ext():
    env = Env()
    env.gate(32, stub(32), present=False)
    env.m.dev.raise_irq(0)
    run_at(env, 0, "nop", eflags=0x2 | IF)
    assert env.vector == NP and env.frame(2) == [32 * 8 + 3, CODE]


def test_tss_too_small_for_the_ring0_stack_raises_ts_with_the_tss_selector():
    env = Env()
    env.gate(TS, stub(TS), selector=UCODE)          # #TS handled at ring 3: no stack switch
    env.gate(0x80, stub(0x80), dpl=3)
    env.m.cpu.tr.limit = 0x8                        # SS0 beyond the limit (and the I/O map:
    run_at(env, 3, "int 0x80", eflags=0x3002)       # IOPL 3 lets the ring-3 stub power off)
    assert env.vector == TS and env.frame(3) == [TSS_SEL, CODE, UCODE]
