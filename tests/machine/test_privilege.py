"""Privilege rules of the simulated IA-32 (SDM Vol. 3A ch. 5, Vol. 1 ch. 19, Vol. 2 entries).

Each test builds the protected-mode environment of ``machine_util.Env`` (GDT with ring 0/1/3
code and data, IDT of recording stubs, TSS with an I/O bitmap), runs a few instructions at some
CPL and checks what the CPU did: which exception was delivered with which error code and frame,
or which registers and flags changed.
"""

from __future__ import annotations

import struct

import pytest

from machine_util import (CODE, FREE, GDT, KCODE, KDATA, R1CODE, R1DATA, REC, STACK, TSS,
                          TSS_SEL, TSS_SIZE, UCODE, UDATA, Env, asm, seg_desc)

GP, NP, SS_, TS = 13, 11, 12, 10
TF, IF, IOPL = 0x100, 0x200, 0x3000
ZF = 0x40
DONE = 0x1234        # exit code of "ran to the end without a fault"
FINISH = "\nmov eax, 0x1234\nout 0xf4, eax"   # only at CPL 0 (or with port 0xF4 allowed)


def run_at(env: Env, ring: int, source: str, *, eflags: int = 0x2, steps: int = 10_000):
    env.code(CODE, source)
    env.enter(ring, CODE, eflags=eflags)
    return env.m.run(max_steps=steps)


def n_insns(source: str) -> int:
    return len([ln for ln in source.strip().splitlines() if ln.strip()])


def addr_after(setup: str) -> int:
    """Address of the instruction that follows ``setup`` when both are placed at CODE."""
    return CODE + (len(asm(setup)) if setup.strip() else 0)


# ---------------------------------------------------------------------------------------------
# privileged instructions: #GP(0) at CPL 1 and 3, work at CPL 0
# ---------------------------------------------------------------------------------------------

def _gdtr_image(env: Env) -> None:
    cpu = env.m.cpu
    env.m.write(0x8100, struct.pack("<HI", cpu.gdtr.limit, cpu.gdtr.base))
    env.m.write(0x8110, struct.pack("<HI", cpu.idtr.limit, cpu.idtr.base))


# (name, set-up that is legal at any CPL, the privileged instruction)
PRIVILEGED = [
    ("lgdt", "", "lgdt [0x8100]"),
    ("lidt", "", "lidt [0x8110]"),
    ("lldt", "xor eax, eax", "lldt ax"),
    ("ltr", f"mov eax, {(FREE + 1) * 8}", "ltr ax"),
    ("lmsw", "mov eax, 0x11", "lmsw ax"),
    ("clts", "", "clts"),
    ("invlpg", "", "invlpg [0x1000]"),
    ("hlt", "", "hlt"),
    ("mov_from_cr0", "", "mov eax, cr0"),
    ("mov_to_cr0", "mov eax, 0x11", "mov cr0, eax"),
    ("mov_from_cr2", "", "mov eax, cr2"),
    ("mov_to_cr2", "", "mov cr2, eax"),
    ("mov_from_cr3", "", "mov eax, cr3"),
    ("mov_to_cr3", "xor eax, eax", "mov cr3, eax"),
    ("mov_from_cr4", "", "mov eax, cr4"),
    ("mov_to_cr4", "xor eax, eax", "mov cr4, eax"),
]


def _priv_env() -> Env:
    env = Env()
    _gdtr_image(env)
    # a second, available TSS for ltr to load
    env.set_gdt(FREE + 1, seg_desc(TSS, TSS_SIZE - 1, system_type=0x9, gran=False, big=False))
    return env


@pytest.mark.parametrize("ring", [3, 1])
@pytest.mark.parametrize("name,setup,insn", PRIVILEGED, ids=[p[0] for p in PRIVILEGED])
def test_privileged_instruction_raises_gp0_above_ring0(name, setup, insn, ring):
    env = _priv_env()
    before = env.m.cpu.state()
    r = run_at(env, ring, f"{setup}\n{insn}\nud2")
    assert r.reason == "poweroff"
    assert env.vector == GP
    err, eip, cs, _fl, _esp, ss = env.frame(6)
    assert err == 0
    assert eip == addr_after(setup)            # a fault: EIP of the faulting instruction
    assert cs == (UCODE if ring == 3 else R1CODE)
    assert ss == (UDATA if ring == 3 else R1DATA)
    cpu = env.m.cpu
    # nothing the instruction would have changed did change
    assert (cpu.gdtr.base, cpu.gdtr.limit) == before[8]
    assert (cpu.idtr.base, cpu.idtr.limit) == before[9]
    assert cpu.tr.selector == TSS_SEL and cpu.cr0 == 0x11 and cpu.cr3 == 0 and cpu.cr4 == 0


@pytest.mark.parametrize("name,setup,insn", [p for p in PRIVILEGED if p[0] != "hlt"],
                         ids=[p[0] for p in PRIVILEGED if p[0] != "hlt"])
def test_privileged_instruction_works_at_ring0(name, setup, insn):
    env = _priv_env()
    r = run_at(env, 0, f"{setup}\n{insn}{FINISH}")
    assert r.reason == "poweroff" and env.m.dev.poweroff_code == DONE, env.vector


def test_privileged_instructions_have_their_effect_at_ring0():
    env = _priv_env()
    env.m.write(0x8120, struct.pack("<HI", 0x7F, 0x123000))
    src = f"""
        mov eax, {(FREE + 1) * 8}
        ltr ax
        lidt [0x8120]
        mov eax, 0x10
        mov cr4, eax
        mov eax, 0x1234000
        mov cr3, eax
        mov cr2, eax
        mov eax, cr0
        or eax, 8
        mov cr0, eax
        clts
        mov ebx, cr0
    """
    r = run_at(env, 0, src, steps=n_insns(src))
    assert r.reason == "max_steps"
    cpu = env.m.cpu
    assert cpu.tr.selector == (FREE + 1) * 8 and cpu.tr.base == TSS
    assert (cpu.idtr.base, cpu.idtr.limit) == (0x123000, 0x7F)
    assert cpu.cr4 == 0x10 and cpu.cr3 == 0x1234000 and cpu.cr2 == 0x1234000
    assert cpu.ebx & 8 == 0 and cpu.cr0 & 8 == 0
    # ltr marks the new TSS busy (type 0xB)
    assert env.m.read(GDT + (FREE + 1) * 8 + 5, 1)[0] & 0xF == 0xB


def test_ltr_of_a_busy_tss_raises_gp_selector():
    env = Env()
    r = run_at(env, 0, f"mov eax, {TSS_SEL}\nltr ax")
    assert env.vector == GP and env.frame(1) == [TSS_SEL]
    assert r.reason == "poweroff"


def test_hlt_at_ring0_with_interrupts_off_stops_with_halt():
    env = Env()
    r = run_at(env, 0, "nop\nhlt\nnop")
    assert r.reason == "halt" and r.steps == 2
    assert env.m.cpu.eip == CODE + 2


def test_lmsw_cannot_clear_pe():
    env = Env()
    r = run_at(env, 0, "xor eax, eax\nlmsw ax", steps=2)
    assert r.reason == "max_steps" and env.m.cpu.cr0 & 1


def test_mov_to_cr1_raises_ud():
    env = Env()
    env.code(CODE, "nop")
    env.m.write(CODE, bytes.fromhex("0f20c8"))      # mov eax, cr1
    env.enter(0, CODE)
    env.m.run(max_steps=100)
    assert env.vector == 6


# ---------------------------------------------------------------------------------------------
# cli / sti / in / out: IOPL and the TSS I/O permission bitmap
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("insn", ["cli", "sti"])
@pytest.mark.parametrize("ring,iopl", [(3, 0), (3, 2), (1, 0)])
def test_cli_sti_fault_when_cpl_above_iopl(insn, ring, iopl):
    env = Env()
    r = run_at(env, ring, insn, eflags=0x2 | IF | (iopl << 12))
    assert r.reason == "poweroff" and env.vector == GP
    assert env.frame(2) == [0, CODE]
    assert env.frame(4)[3] & IF                   # IF unchanged in the pushed EFLAGS


@pytest.mark.parametrize("ring,iopl", [(0, 0), (1, 1), (3, 3), (1, 3)])
def test_cli_sti_work_when_cpl_at_most_iopl(ring, iopl):
    env = Env()
    r = run_at(env, ring, "cli", eflags=0x2 | IF | (iopl << 12), steps=1)
    assert r.reason == "max_steps" and not env.m.cpu.eflags & IF
    env = Env()
    r = run_at(env, ring, "sti", eflags=0x2 | (iopl << 12), steps=1)
    assert r.reason == "max_steps" and env.m.cpu.eflags & IF


@pytest.mark.parametrize("insn", ["out 0xe9, al", "in al, 0x60", "out dx, al", "in eax, dx"])
def test_port_io_at_ring3_iopl0_denied_by_bitmap_raises_gp0(insn):
    env = Env()
    r = run_at(env, 3, f"mov edx, 0xe9\nmov al, 0x41\n{insn}")
    assert r.reason == "poweroff" and env.vector == GP
    assert env.frame(2) == [0, addr_after("mov edx, 0xe9\nmov al, 0x41")]
    assert env.m.console == ""


def test_port_allowed_by_bitmap_works_at_ring3_with_iopl0():
    env = Env()
    env.allow_ports(0xE9)
    r = run_at(env, 3, "mov al, 0x41\nout 0xe9, al\nmov edx, 0xe9\nmov al, 0x42\nout dx, al",
               steps=5)
    assert r.reason == "max_steps"
    assert env.m.console == "AB"


def test_port_allowed_by_bitmap_works_at_ring1_with_iopl0():
    env = Env()
    env.allow_ports(0xE9)
    r = run_at(env, 1, "mov al, 0x41\nout 0xe9, al", steps=2)
    assert r.reason == "max_steps" and env.m.console == "A"


def test_bitmap_is_checked_for_every_byte_of_a_wide_access():
    env = Env()
    env.allow_ports(0x60)                          # 0x61 stays denied
    r = run_at(env, 3, "in al, 0x60\nin ax, 0x60")
    assert env.vector == GP and env.frame(2) == [0, CODE + 2]
    assert r.reason == "poweroff"


def test_bitmap_check_spans_a_byte_boundary_of_the_map():
    env = Env()
    env.allow_ports(0x3E, 0x3F, 0x40)              # 0x41 (next bitmap byte) stays denied
    r = run_at(env, 3, "mov edx, 0x3e\nin ax, dx\nmov edx, 0x3f\nin ax, dx\nin eax, dx")
    assert env.vector == GP and env.frame(2) == [0, addr_after(
        "mov edx, 0x3e\nin ax, dx\nmov edx, 0x3f\nin ax, dx")]
    assert r.reason == "poweroff"


def test_iopl3_allows_ports_at_ring3_whatever_the_bitmap():
    env = Env()
    r = run_at(env, 3, "mov al, 0x41\nout 0xe9, al", eflags=0x2 | IOPL, steps=2)
    assert r.reason == "max_steps" and env.m.console == "A"


def test_io_bitmap_beyond_the_tss_limit_denies():
    env = Env()
    env.allow_ports(0xE9)
    env.m.write(TSS + 0x66, struct.pack("<H", 0xFFF0))   # bitmap base past the TSS limit
    r = run_at(env, 3, "mov al, 0x41\nout 0xe9, al")
    assert env.vector == GP and r.reason == "poweroff" and env.m.console == ""


def test_ports_at_ring0_ignore_iopl_and_bitmap():
    env = Env()
    r = run_at(env, 0, "mov al, 0x41\nout 0xe9, al\nin al, 0x64", steps=3)
    assert r.reason == "max_steps" and env.m.console == "A"


# ---------------------------------------------------------------------------------------------
# popfd and iretd: IF and IOPL silently unchanged when not permitted
# ---------------------------------------------------------------------------------------------

POPF = "push {value}\npopfd"
ALL_ON = 0x2 | IF | IOPL | 0x8D5 | 0x400       # IF, IOPL 3, every status flag, DF


def test_popfd_at_ring0_changes_if_and_iopl():
    env = Env()
    r = run_at(env, 0, POPF.format(value=ALL_ON), eflags=0x2, steps=2)
    assert r.reason == "max_steps"
    assert env.m.cpu.eflags == ALL_ON


def test_popfd_at_ring3_leaves_if_and_iopl_unchanged():
    env = Env()
    r = run_at(env, 3, POPF.format(value=0x2 | 0x8D5), eflags=0x2 | IF, steps=2)
    assert r.reason == "max_steps"            # no fault
    fl = env.m.cpu.eflags
    assert fl & IF and fl & IOPL == 0 and fl & 0x8D5 == 0x8D5
    env = Env()
    r = run_at(env, 3, POPF.format(value=ALL_ON), eflags=0x2, steps=2)
    fl = env.m.cpu.eflags
    assert not fl & IF and fl & IOPL == 0 and fl & 0x8D5 == 0x8D5 and fl & 0x400


def test_popfd_at_ring1_leaves_if_set_with_iopl0():
    env = Env()
    r = run_at(env, 1, POPF.format(value=0x2), eflags=0x2 | IF, steps=2)
    assert r.reason == "max_steps" and env.m.cpu.eflags & IF


def test_popfd_with_cpl_at_most_iopl_changes_if_but_not_iopl():
    env = Env()
    r = run_at(env, 3, POPF.format(value=0x2 | IF), eflags=0x2 | IOPL, steps=2)
    fl = env.m.cpu.eflags
    assert r.reason == "max_steps" and fl & IF and fl & IOPL == IOPL
    env = Env()
    r = run_at(env, 1, POPF.format(value=0x2 | IF), eflags=0x2 | (1 << 12), steps=2)
    fl = env.m.cpu.eflags
    assert fl & IF and (fl >> 12) & 3 == 1
    env = Env()
    r = run_at(env, 1, POPF.format(value=0x2 | IOPL), eflags=0x2 | IF | (1 << 12), steps=2)
    fl = env.m.cpu.eflags
    assert not fl & IF and (fl >> 12) & 3 == 1          # IF cleared, IOPL kept


def test_popfd_never_sets_vm_and_pushfd_hides_vm_and_rf():
    env = Env()
    r = run_at(env, 0, "push 0x30202\npopfd\npushfd\npop eax", steps=4)
    assert r.reason == "max_steps"
    assert not env.m.cpu.eflags & 0x20000
    assert env.m.cpu.eax & 0x30000 == 0


def _iret_frame(eip: int, cs: int, eflags: int, esp: int | None = None, ss: int | None = None) -> str:
    lines = []
    if ss is not None:
        lines += [f"push {ss}", f"push {esp:#x}"]
    lines += [f"push {eflags:#x}", f"push {cs}", f"push {eip:#x}", "iretd"]
    return "\n".join(lines)


def test_iretd_from_ring1_to_ring3_with_iopl0_does_not_load_if():
    env = Env()
    env.code(0x3000, "jmp $")
    src = _iret_frame(0x3000, UCODE, 0x2 | IF, 0x4F000, UDATA)
    r = run_at(env, 1, src, eflags=0x2, steps=n_insns(src))
    cpu = env.m.cpu
    assert r.reason == "max_steps"
    assert cpu.cpl == 3 and cpu.cs == UCODE and cpu.eip == 0x3000 and cpu.esp == 0x4F000
    assert not cpu.eflags & IF


def test_iretd_from_ring1_keeps_if_set_when_frame_clears_it():
    env = Env()
    env.code(0x3000, "jmp $")
    src = _iret_frame(0x3000, UCODE, 0x2 | 0x8D5, 0x4F000, UDATA)
    run_at(env, 1, src, eflags=0x2 | IF, steps=n_insns(src))
    fl = env.m.cpu.eflags
    assert fl & IF and fl & 0x8D5 == 0x8D5


def test_iretd_from_ring0_to_ring3_loads_if_and_iopl():
    env = Env()
    env.code(0x3000, "jmp $")
    src = _iret_frame(0x3000, UCODE, 0x2 | IF | IOPL, 0x4F000, UDATA)
    r = run_at(env, 0, src, steps=n_insns(src))
    cpu = env.m.cpu
    assert r.reason == "max_steps" and cpu.cpl == 3 and cpu.ss == UDATA
    assert cpu.eflags & IF and cpu.iopl == 3


def test_iretd_at_ring3_same_ring_leaves_if_and_iopl():
    env = Env()
    env.code(0x3000, "jmp $")
    src = _iret_frame(0x3000, UCODE, 0x2 | IF | IOPL)
    r = run_at(env, 3, src, steps=n_insns(src))
    cpu = env.m.cpu
    assert r.reason == "max_steps" and cpu.cpl == 3 and cpu.eip == 0x3000
    assert cpu.esp == STACK[3]
    assert not cpu.eflags & IF and cpu.iopl == 0


def test_iretd_to_an_inner_ring_raises_gp():
    env = Env()
    src = _iret_frame(0x3000, KCODE, 0x2)
    run_at(env, 3, src)
    assert env.vector == GP and env.frame(1) == [KCODE]


# ---------------------------------------------------------------------------------------------
# sgdt / sidt / sldt / str / smsw: unprivileged unless CR4.UMIP
# ---------------------------------------------------------------------------------------------

def test_sgdt_sidt_work_at_ring3_and_reveal_the_real_tables():
    env = Env()
    r = run_at(env, 3, "sgdt [0x8200]\nsidt [0x8210]", steps=2)
    assert r.reason == "max_steps"
    cpu = env.m.cpu
    assert struct.unpack("<HI", env.m.read(0x8200, 6)) == (cpu.gdtr.limit, cpu.gdtr.base)
    assert struct.unpack("<HI", env.m.read(0x8210, 6)) == (cpu.idtr.limit, cpu.idtr.base)


def test_sldt_str_smsw_work_at_ring3():
    env = Env()
    env.m.cpu.cr0 |= 8                         # TS, to see it through smsw
    src = "mov eax, -1\nmov ebx, -1\nmov ecx, -1\nsldt eax\nstr ebx\nsmsw ecx\nsmsw word ptr [0x8220]"
    r = run_at(env, 3, src, steps=n_insns(src))
    cpu = env.m.cpu
    assert r.reason == "max_steps"
    assert cpu.eax == 0 and cpu.ebx == TSS_SEL and cpu.ecx == 0x19
    assert env.m.read(0x8220, 2) == b"\x19\x00"


@pytest.mark.parametrize("insn", ["sgdt [0x8200]", "sidt [0x8200]", "sldt eax", "str eax",
                                  "smsw eax"])
@pytest.mark.parametrize("ring", [3, 1])
def test_store_table_instructions_fault_with_umip(insn, ring):
    env = Env()
    env.m.cpu.cr4 |= 1 << 11
    run_at(env, ring, insn)
    assert env.vector == GP and env.frame(2) == [0, CODE]


@pytest.mark.parametrize("insn", ["sgdt [0x8200]", "sidt [0x8200]", "sldt eax", "str eax",
                                  "smsw eax"])
def test_store_table_instructions_work_at_ring0_with_umip(insn):
    env = Env()
    env.m.cpu.cr4 |= 1 << 11
    r = run_at(env, 0, insn, steps=1)
    assert r.reason == "max_steps"


# ---------------------------------------------------------------------------------------------
# push cs / mov r, cs reveal the ring
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ring,cs", [(0, KCODE), (1, R1CODE), (3, UCODE)])
def test_push_cs_and_mov_from_cs_reveal_the_ring(ring, cs):
    env = Env()
    src = "push cs\npop eax\nmov ebx, -1\nmov bx, cs\nmov ecx, cs\nmov edx, ss"
    r = run_at(env, ring, src, steps=n_insns(src))
    cpu = env.m.cpu
    assert r.reason == "max_steps"
    assert cpu.eax == cs and cpu.ebx == 0xFFFF0000 | cs and cpu.ecx == cs
    assert cpu.edx & 3 == ring and cpu.cpl == ring


# ---------------------------------------------------------------------------------------------
# lar / lsl / verr / verw
# ---------------------------------------------------------------------------------------------

def _query_env() -> tuple[Env, dict]:
    env = Env()
    sels = {
        "kcode": KCODE, "kdata": KDATA, "ucode": UCODE, "udata": UDATA, "tss": TSS_SEL,
        "conf0": env.segment(FREE, code=True, conforming=True, dpl=0),
        "exec_only3": env.segment(FREE + 1, code=True, rw=False, dpl=3),
        "ro_data3": env.segment(FREE + 2, rw=False, dpl=3),
        "ldt3": env.set_gdt(FREE + 3, seg_desc(0x30000, 0xFF, system_type=0x2, dpl=3,
                                               gran=False, big=False)) | 3,
        "intgate3": env.set_gdt(FREE + 4, (0xEE00 << 32)) | 3,   # an interrupt gate: not for LAR
        "small3": env.segment(FREE + 5, limit=0xFFF, gran=False, dpl=3) | 3,
        "null": 0, "beyond": 0x400 | 3,
    }
    return env, sels


def _query(env: Env, ring: int, insn: str, sel: int):
    src = f"mov ecx, {sel}\nmov eax, 0xdeadbeef\n{insn}"
    # ZF set beforehand (cmp eax, eax) so a query that fails must clear it
    src = f"mov ecx, {sel}\nmov eax, 0xdeadbeef\ncmp eax, eax\n{insn}"
    r = run_at(env, ring, src, steps=4)
    assert r.reason == "max_steps", env.vector
    return bool(env.m.cpu.eflags & ZF), env.m.cpu.eax


def _desc_hi(env: Env, sel: int) -> int:
    return struct.unpack("<I", env.m.read(GDT + (sel & ~7) + 4, 4))[0]


@pytest.mark.parametrize("ring,name,ok", [
    (0, "kcode", True), (0, "kdata", True), (0, "tss", True), (0, "udata", True),
    (0, "ldt3", True), (0, "intgate3", False), (0, "null", False), (0, "beyond", False),
    (3, "kcode", False), (3, "kdata", False), (3, "tss", False), (3, "ucode", True),
    (3, "udata", True), (3, "conf0", True), (3, "ldt3", True), (3, "exec_only3", True),
])
def test_lar_reports_access_rights_when_visible(ring, name, ok):
    env, sels = _query_env()
    zf, eax = _query(env, ring, "lar eax, ecx", sels[name])
    assert zf == ok
    assert eax == ((_desc_hi(env, sels[name]) & 0x00F0FF00) if ok else 0xDEADBEEF)


@pytest.mark.parametrize("ring,name,limit", [
    (0, "kdata", 0xFFFFFFFF), (0, "tss", TSS_SIZE - 1), (0, "small3", 0xFFF),
    (3, "small3", 0xFFF), (3, "kdata", None), (3, "tss", None), (0, "ldt3", 0xFF),
    (0, "intgate3", None), (3, "null", None),
])
def test_lsl_reports_the_byte_limit_when_visible(ring, name, limit):
    env, sels = _query_env()
    zf, eax = _query(env, ring, "lsl eax, ecx", sels[name])
    assert zf == (limit is not None)
    assert eax == (limit if limit is not None else 0xDEADBEEF)


@pytest.mark.parametrize("ring,name,readable,writable", [
    (0, "kcode", True, False), (0, "kdata", True, True), (0, "udata", True, True),
    (0, "exec_only3", False, False), (0, "ro_data3", True, False), (0, "tss", False, False),
    (3, "kdata", False, False), (3, "kcode", False, False), (3, "udata", True, True),
    (3, "ucode", True, False), (3, "conf0", True, False), (3, "ro_data3", True, False),
    (3, "null", False, False), (3, "beyond", False, False),
])
def test_verr_verw_against_gdt_entries(ring, name, readable, writable):
    env, sels = _query_env()
    assert _query(env, ring, "verr cx", sels[name])[0] == readable
    env, sels = _query_env()
    assert _query(env, ring, "verw cx", sels[name])[0] == writable


def test_lar_with_rpl3_selector_to_dpl0_segment_fails_at_ring0():
    env, _ = _query_env()
    assert _query(env, 0, "lar eax, ecx", KDATA | 3) == (False, 0xDEADBEEF)
    env, _ = _query_env()
    assert _query(env, 0, "verr cx", KDATA | 3)[0] is False


# ---------------------------------------------------------------------------------------------
# segment register loads
# ---------------------------------------------------------------------------------------------

def _load(env: Env, ring: int, insn: str, sel: int, steps: int = 10_000):
    setup = f"mov eax, {sel:#x}"
    r = run_at(env, ring, f"{setup}\n{insn}", steps=steps)
    return r, addr_after(setup)


@pytest.mark.parametrize("insn", ["mov ds, ax", "mov es, ax", "mov fs, ax", "mov gs, ax"])
def test_loading_a_dpl0_data_segment_at_ring3_raises_gp_selector(insn):
    env = Env()
    r, at = _load(env, 3, insn, KDATA)
    assert env.vector == GP and env.frame(2) == [KDATA, at]
    assert env.m.cpu.ds == UDATA


def test_loading_data_segment_with_rpl_above_dpl_raises_gp_selector():
    env = Env()
    _load(env, 0, "mov ds, ax", KDATA | 3)
    assert env.vector == GP and env.frame(1) == [KDATA]


def test_loading_a_dpl3_data_segment_at_ring3_with_rpl0_works():
    env = Env()
    r, _ = _load(env, 3, "mov ds, ax", UDATA & ~3, steps=2)
    assert r.reason == "max_steps" and env.m.cpu.ds == UDATA & ~3


def test_loading_dpl3_data_at_ring0_works_and_sets_accessed_bit():
    env = Env()
    sel = env.segment(FREE, dpl=3)
    assert env.m.read(GDT + sel + 5, 1)[0] & 1 == 0
    r, _ = _load(env, 0, "mov ds, ax", sel | 3, steps=2)
    assert r.reason == "max_steps" and env.m.cpu.ds == sel | 3
    assert env.m.read(GDT + sel + 5, 1)[0] & 1 == 1


def test_loading_null_into_ds_works_at_ring3():
    env = Env()
    r, _ = _load(env, 3, "mov ds, ax", 3, steps=2)
    assert r.reason == "max_steps" and env.m.cpu.ds == 3


def test_loading_a_not_present_data_segment_raises_np_selector():
    env = Env()
    sel = env.segment(FREE, present=False)
    _, at = _load(env, 0, "mov ds, ax", sel)
    assert env.vector == NP and env.frame(2) == [sel, at]


@pytest.mark.parametrize("what", ["tss", "exec_only", "beyond_gdt", "ldt_without_ldtr"])
def test_loading_a_non_data_selector_into_ds_raises_gp_selector(what):
    env = Env()
    sel = {"tss": TSS_SEL, "exec_only": env.segment(FREE, code=True, rw=False),
           "beyond_gdt": 0x800, "ldt_without_ldtr": 0x0C}[what]
    _load(env, 0, "mov ds, ax", sel)
    assert env.vector == GP and env.frame(1) == [sel & ~3]


def test_loading_a_readable_code_segment_into_ds_works():
    env = Env()
    r, _ = _load(env, 0, "mov ds, ax", KCODE, steps=2)
    assert r.reason == "max_steps" and env.m.cpu.ds == KCODE


def test_loading_a_conforming_code_segment_into_ds_works_at_ring3():
    env = Env()
    sel = env.segment(FREE, code=True, conforming=True, dpl=0)
    r, _ = _load(env, 3, "mov ds, ax", sel | 3, steps=2)
    assert r.reason == "max_steps" and env.m.cpu.ds == sel | 3


def test_mov_ss_null_raises_gp0():
    env = Env()
    _load(env, 0, "mov ss, ax", 0)
    assert env.vector == GP and env.frame(1) == [0]


@pytest.mark.parametrize("ring,sel_name", [(0, "udata"), (3, "kdata"), (0, "kdata_rpl3"),
                                           (0, "kcode"), (0, "ro_data"), (1, "udata")])
def test_mov_ss_violations_raise_gp_selector(ring, sel_name):
    env = Env()
    sel = {"udata": UDATA, "kdata": KDATA, "kdata_rpl3": KDATA | 3, "kcode": KCODE,
           "ro_data": env.segment(FREE, rw=False)}[sel_name]
    _load(env, ring, "mov ss, ax", sel)
    assert env.vector == GP and env.frame(1) == [sel & ~3]


def test_mov_ss_not_present_raises_ss_selector():
    env = Env()
    sel = env.segment(FREE, present=False)
    _, at = _load(env, 0, "mov ss, ax", sel)
    assert env.vector == SS_ and env.frame(2) == [sel, at]


def test_mov_ss_same_ring_writable_works():
    env = Env()
    sel = env.segment(FREE, dpl=3)
    r, _ = _load(env, 3, "mov ss, ax", sel | 3, steps=2)
    assert r.reason == "max_steps" and env.m.cpu.ss == sel | 3


def test_pop_ds_with_bad_selector_faults_and_leaves_esp():
    env = Env()
    setup = f"push {KDATA}"
    run_at(env, 3, f"{setup}\npop ds")
    err, eip, cs, _fl, esp, ss = env.frame(6)
    assert env.vector == GP and err == KDATA and eip == addr_after(setup)
    assert esp == STACK[3] - 4                 # the pop did not happen
    assert env.m.cpu.ds == UDATA


def test_pop_ds_with_good_selector_works():
    env = Env()
    r = run_at(env, 3, "push 0\npop ds\npush 0x33\npop es", steps=4)
    assert r.reason == "max_steps"
    assert env.m.cpu.ds == 0 and env.m.cpu.es == UDATA and env.m.cpu.esp == STACK[3]


def test_mov_cs_is_undefined():
    env = Env()
    env.m.write(CODE, bytes.fromhex("8ec8"))       # mov cs, ax
    env.enter(0, CODE)
    r = env.m.run(max_steps=100)
    assert r.reason in ("poweroff", "crash")
    if r.reason == "poweroff":
        assert env.vector == 6


_ = (REC, KCODE)


def test_port_denied_by_bitmap_at_ring1_with_iopl0():
    env = Env()
    run_at(env, 1, "mov al, 0x41\nout 0xe9, al")
    assert env.vector == GP and env.frame(2) == [0, CODE + 2] and env.m.console == ""


# ---------------------------------------------------------------------------------------------
# the LDT
# ---------------------------------------------------------------------------------------------

LDT = 0x30000


def _ldt_env() -> tuple[Env, int]:
    env = Env()
    env.m.write(LDT, bytes(8) + struct.pack("<Q", seg_desc(dpl=3))
                + struct.pack("<Q", seg_desc(dpl=0)))
    sel = env.set_gdt(FREE, seg_desc(LDT, 3 * 8 - 1, system_type=0x2, gran=False, big=False))
    return env, sel


def test_lldt_then_ldt_selectors_load_with_the_usual_checks():
    env, ldt_sel = _ldt_env()
    r = run_at(env, 0, f"mov eax, {ldt_sel}\nlldt ax", steps=2)
    assert r.reason == "max_steps" and env.m.cpu.ldtr.selector == ldt_sel
    assert env.m.cpu.ldtr.base == LDT and env.m.cpu.ldtr.limit == 23
    r = run_at(env, 3, "mov eax, 0x0f\nmov ds, ax", steps=2)   # LDT entry 1, DPL 3
    assert r.reason == "max_steps" and env.m.cpu.ds == 0x0F
    run_at(env, 3, "mov eax, 0x17\nmov ds, ax")                 # LDT entry 2, DPL 0
    assert env.vector == GP and env.frame(1) == [0x14]


def test_ldt_selector_beyond_the_ldt_limit_raises_gp():
    env, ldt_sel = _ldt_env()
    env.m.load_ldtr(ldt_sel)
    run_at(env, 0, "mov eax, 0x1c\nmov ds, ax")
    assert env.vector == GP and env.frame(1) == [0x1C]


@pytest.mark.parametrize("what,vector,err", [("tss", GP, TSS_SEL), ("ldt_ti", GP, 0x0C),
                                             ("not_present", NP, (FREE + 1) * 8)])
def test_lldt_rejects_what_is_not_a_present_gdt_ldt(what, vector, err):
    env, _ = _ldt_env()
    env.set_gdt(FREE + 1, seg_desc(LDT, 23, system_type=0x2, gran=False, big=False,
                                   present=False))
    sel = {"tss": TSS_SEL, "ldt_ti": 0x0C, "not_present": (FREE + 1) * 8}[what]
    run_at(env, 0, f"mov eax, {sel}\nlldt ax")
    assert env.vector == vector and env.frame(1) == [err]


def test_ltr_of_a_data_segment_raises_gp_selector():
    env = Env()
    run_at(env, 0, f"mov eax, {KDATA}\nltr ax")
    assert env.vector == GP and env.frame(1) == [KDATA]


# ---------------------------------------------------------------------------------------------
# far jmp / call / retf
# ---------------------------------------------------------------------------------------------

def test_far_jump_to_same_ring_code_reloads_cs():
    env = Env()
    sel = env.segment(FREE, code=True)
    env.code(0x3000, "mov ebx, 1\njmp $")
    r = run_at(env, 0, f"jmp {sel}:0x3000", steps=2)
    assert r.reason == "max_steps" and env.m.cpu.cs == sel and env.m.cpu.ebx == 1


def test_far_jump_to_another_rings_code_raises_gp_selector():
    env = Env()
    run_at(env, 0, f"jmp {UCODE}:0x3000")
    assert env.vector == GP and env.frame(2) == [UCODE & ~3, CODE]
    env = Env()
    run_at(env, 3, f"jmp {KCODE}:0x3000")
    assert env.vector == GP and env.frame(1) == [KCODE]


def test_far_jump_to_conforming_code_keeps_the_cpl():
    env = Env()
    sel = env.segment(FREE, code=True, conforming=True, dpl=0)
    env.code(0x3000, "mov ebx, cs\njmp $")
    r = run_at(env, 3, f"jmp {sel}:0x3000", steps=2)
    assert r.reason == "max_steps" and env.m.cpu.cpl == 3 and env.m.cpu.ebx == sel | 3


def test_far_call_pushes_cs_and_eip_and_retf_returns():
    env = Env()
    sel = env.segment(FREE, code=True)
    env.code(0x3000, "mov ebx, [esp + 4]\nretf")
    src = f"call {sel}:0x3000\nmov ecx, cs"
    r = run_at(env, 0, src, steps=4)
    cpu = env.m.cpu
    assert r.reason == "max_steps" and cpu.ebx == KCODE and cpu.ecx == KCODE
    assert cpu.esp == STACK[0]


def test_far_call_with_rpl_above_cpl_raises_gp_selector():
    env = Env()
    sel = env.segment(FREE, code=True)
    run_at(env, 0, f"call {sel | 3}:0x3000")
    assert env.vector == GP and env.frame(1) == [sel]


def test_retf_to_ring3_pops_ss_esp_and_nulls_kernel_data_segments():
    env = Env()
    env.code(0x3000, "jmp $")
    src = f"push {UDATA}\npush 0x4f000\npush {UCODE}\npush 0x3000\nretf"
    r = run_at(env, 0, src, steps=6)
    cpu = env.m.cpu
    assert r.reason == "max_steps" and cpu.cpl == 3 and cpu.eip == 0x3000
    assert cpu.esp == 0x4F000 and cpu.ss == UDATA and cpu.ds == 0 and cpu.es == 0


def test_retf_with_imm_to_ring3_releases_parameters_on_both_stacks():
    env = Env()
    env.code(0x3000, "jmp $")
    src = f"push {UDATA}\npush 0x4f000\npush 1\npush 2\npush {UCODE}\npush 0x3000\nretf 8"
    r = run_at(env, 0, src, steps=8)
    assert r.reason == "max_steps" and env.m.cpu.esp == 0x4F008


def test_retf_to_ring3_with_a_not_present_stack_raises_ss():
    env = Env()
    sel = env.segment(FREE, dpl=3, present=False) | 3
    src = f"push {sel}\npush 0x4f000\npush {UCODE}\npush 0x3000\nretf"
    run_at(env, 0, src)
    assert env.vector == SS_ and env.frame(1) == [sel & ~3]
    assert env.frame(3)[2] == KCODE


def test_retf_to_an_inner_ring_raises_gp():
    env = Env()
    run_at(env, 3, f"push {KCODE}\npush 0x3000\nretf")
    assert env.vector == GP and env.frame(1) == [KCODE]


def test_far_jump_to_a_tss_is_not_in_the_subset_and_raises_gp():
    env = Env()
    run_at(env, 0, f"jmp {TSS_SEL}:0")
    assert env.vector == GP and env.frame(1) == [TSS_SEL]


def test_indirect_far_jump_through_memory_loads_cs():
    env = Env()
    sel = env.segment(FREE, code=True)
    env.m.write(0x8100, struct.pack("<IH", 0x3000, sel))
    env.code(0x3000, "mov ebx, 1\njmp $")
    r = run_at(env, 0, "jmp fword ptr [0x8100]", steps=2)
    assert r.reason == "max_steps" and env.m.cpu.cs == sel and env.m.cpu.ebx == 1


def test_indirect_far_call_through_memory_pushes_cs():
    env = Env()
    sel = env.segment(FREE, code=True)
    env.m.write(0x8100, struct.pack("<IH", 0x3000, sel))
    env.code(0x3000, "mov ebx, [esp + 4]\njmp $")
    r = run_at(env, 0, "call fword ptr [0x8100]", steps=2)
    assert r.reason == "max_steps" and env.m.cpu.cs == sel and env.m.cpu.ebx == KCODE
