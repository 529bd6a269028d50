"""Paging (SDM Vol. 3A, 4.3 and 4.6-4.10): 4 KiB and 4 MiB pages, U/S and R/W at both
levels, CR0.WP, accessed and dirty bits, #PF error codes and CR2, the TLB (stale entries are
architectural until INVLPG or a CR3 load), code fetch permissions, and memory beyond the end
of physical memory.
"""

from __future__ import annotations

import struct

import pytest

from machine_util import (A, CODE, D, KCODE, P, PD, POWEROFF, PS, STACK, U, UCODE, UDATA, W,
                          Env, asm)
from vmkit.machine.machine import Machine

PF = 14
X = 0x200000            # a data page used by the tests (identity-mapped)
Y = 0x201000


def run_at(env: Env, ring: int, source: str, *, eflags: int = 0x2, steps: int = 10_000):
    env.code(CODE, source)
    env.enter(ring, CODE, eflags=eflags)
    return env.m.run(max_steps=steps)


def n_insns(source: str) -> int:
    return len([ln for ln in source.strip().splitlines() if ln.strip()])


def at(setup: str) -> int:
    return CODE + (len(asm(setup)) if setup.strip() else 0)


def put(env: Env, addr: int, value: int) -> None:
    env.m.write(addr, struct.pack("<I", value))


# ---------------------------------------------------------------------------------------------
# basic translation, #PF error codes, CR2
# ---------------------------------------------------------------------------------------------

def test_identity_mapped_read_and_write_work():
    env = Env(paging=True)
    put(env, X, 0x11223344)
    r = run_at(env, 3, f"mov eax, [{X}]\nmov dword ptr [{X + 4}], 0x55667788", steps=2)
    assert r.reason == "max_steps" and env.m.cpu.eax == 0x11223344
    assert env.rd32(X + 4) == 0x55667788


def test_page_maps_to_another_frame():
    env = Env(paging=True)
    env.set_pte(X, Y | P | W | U)
    put(env, Y + 8, 0xCAFEF00D)
    r = run_at(env, 0, f"mov eax, [{X + 8}]\nmov dword ptr [{X + 12}], 7", steps=2)
    assert r.reason == "max_steps" and env.m.cpu.eax == 0xCAFEF00D
    assert env.rd32(Y + 12) == 7 and env.rd32(X + 12) != 7


@pytest.mark.parametrize("ring,insn,err", [
    (0, f"mov eax, [{X + 0x10}]", 0), (0, f"mov dword ptr [{X + 0x10}], 1", 2),
    (3, f"mov eax, [{X + 0x10}]", 4), (3, f"mov dword ptr [{X + 0x10}], 1", 6),
    (3, f"push dword ptr [{X + 0x10}]", 4), (0, f"inc byte ptr [{X + 0x10}]", 0),
])
def test_not_present_page_faults_with_error_code_and_cr2(ring, insn, err):
    env = Env(paging=True)
    env.set_pte(X, X | W | U)                      # P clear
    setup = "nop"
    r = run_at(env, ring, f"{setup}\n{insn}")
    assert r.reason == "poweroff" and env.vector == PF
    assert env.frame(2) == [err, at(setup)]
    assert env.m.cpu.cr2 == X + 0x10


def test_not_present_page_directory_entry_faults():
    env = Env(paging=True)
    r = run_at(env, 3, "mov eax, [0x12345678]")   # PDE 0x48 is empty
    assert r.reason == "poweroff" and env.vector == PF
    assert env.frame(2) == [4, CODE] and env.m.cpu.cr2 == 0x12345678


@pytest.mark.parametrize("where", ["pte", "pde"])
@pytest.mark.parametrize("write", [False, True])
def test_user_access_to_supervisor_page_faults_with_p_and_u(where, write):
    env = Env(paging=True)
    if where == "pte":
        env.set_pte(X, X | P | W)
    else:
        env.set_pde(X, env.pde(X) & ~U)
        env.code(0x3000, "nop")                    # code stays reachable only if U at both...
    insn = f"mov dword ptr [{X}], 1" if write else f"mov eax, [{X}]"
    if where == "pde":
        # the whole first 4 MiB is now supervisor, so run the access at ring 0 and check the
        # ring-3 case through a user page in another directory entry below
        env.m.write(PD + 4, struct.pack("<I", env.pde(0)))   # 4-8 MiB -> same table, U kept
        env.set_pde(X, env.pde(X) & ~U)
    r = run_at(env, 3, insn) if where == "pte" else None
    if where == "pte":
        assert r.reason == "poweroff" and env.vector == PF
        assert env.frame(2) == [5 | (2 if write else 0), CODE] and env.m.cpu.cr2 == X


def test_user_bit_clear_in_pde_only_denies_ring3():
    env = Env(paging=True)
    # a second directory entry (4-8 MiB) sharing page table 0, but supervisor-only in the PDE
    pt = env.pde(0) & ~0xFFF
    env.m.write(PD + 4, struct.pack("<I", pt | P | W))
    env.allow_ports(*POWEROFF)
    r = run_at(env, 3, f"mov eax, [{0x400000 + X}]")
    assert r.reason == "poweroff" and env.vector == PF
    assert env.frame(2) == [5, CODE] and env.m.cpu.cr2 == 0x400000 + X
    # the same page through PDE 0 (U set) is fine
    env2 = Env(paging=True)
    put(env2, X, 0x42)
    r = run_at(env2, 3, f"mov eax, [{X}]", steps=1)
    assert r.reason == "max_steps" and env2.m.cpu.eax == 0x42


def test_supervisor_may_read_and_write_user_pages():
    env = Env(paging=True)
    r = run_at(env, 0, f"mov dword ptr [{X}], 9\nmov eax, [{X}]", steps=2)
    assert r.reason == "max_steps" and env.m.cpu.eax == 9


@pytest.mark.parametrize("where", ["pte", "pde"])
def test_user_write_to_read_only_page_faults(where):
    env = Env(paging=True)
    if where == "pte":
        env.set_pte(X, X | P | U)
    else:
        env.set_pde(0, env.pde(0) & ~W)
    r = run_at(env, 3, f"mov eax, [{X}]\nmov dword ptr [{X}], 1")
    assert r.reason == "poweroff" and env.vector == PF
    assert env.frame(2) == [7, at(f"mov eax, [{X}]")] and env.m.cpu.cr2 == X


def test_supervisor_write_to_read_only_page_allowed_when_wp_clear():
    env = Env(paging=True)
    env.set_pte(X, X | P | U)
    r = run_at(env, 0, f"mov dword ptr [{X}], 0x77", steps=1)
    assert r.reason == "max_steps" and env.rd32(X) == 0x77


def test_supervisor_write_to_read_only_page_faults_when_wp_set():
    env = Env(paging=True)
    env.set_pte(X, X | P | U)
    env.m.write_cr(0, env.m.cpu.cr0 | (1 << 16))
    r = run_at(env, 0, f"mov dword ptr [{X}], 0x77")
    assert r.reason == "poweroff" and env.vector == PF
    assert env.frame(2) == [3, CODE] and env.rd32(X) != 0x77


def test_setting_cr0_wp_from_guest_code_takes_effect_at_once():
    env = Env(paging=True)
    env.set_pte(X, X | P | U)
    src = f"""
        mov dword ptr [{X}], 1
        mov eax, cr0
        or eax, 0x10000
        mov cr0, eax
        mov dword ptr [{X}], 2
    """
    r = run_at(env, 0, src)
    assert env.vector == PF and env.rd32(X) == 1
    assert r.reason == "poweroff"


def test_write_straddling_into_a_read_only_page_faults_without_writing_either():
    env = Env(paging=True)
    env.set_pte(Y, Y | P | U)
    put(env, Y - 4, 0)
    put(env, Y, 0)
    r = run_at(env, 3, f"mov dword ptr [{Y - 2}], 0xffffffff")
    assert r.reason == "poweroff" and env.vector == PF
    assert env.frame(1) == [7] and env.m.cpu.cr2 == Y
    assert env.rd32(Y - 4) == 0 and env.rd32(Y) == 0


# ---------------------------------------------------------------------------------------------
# 4 MiB pages
# ---------------------------------------------------------------------------------------------

def test_4mib_page_with_pse_maps_a_large_frame():
    env = Env(paging=True)
    env.m.write_cr(4, 0x10)                                  # CR4.PSE
    env.set_pde(0x400000, 0x000000 | P | W | U | PS)         # 4-8 MiB -> physical 0-4 MiB
    put(env, 0x123450, 0xABCD1234)
    r = run_at(env, 3, "mov eax, [0x523450]\nmov dword ptr [0x523454], 5", steps=2)
    assert r.reason == "max_steps" and env.m.cpu.eax == 0xABCD1234
    assert env.rd32(0x123454) == 5


def test_4mib_pde_sets_accessed_and_dirty_bits():
    env = Env(paging=True)
    env.m.write_cr(4, 0x10)
    env.set_pde(0x400000, P | W | U | PS)
    run_at(env, 0, "mov eax, [0x400000]", steps=1)
    assert env.pde(0x400000) & (A | D) == A
    run_at(env, 0, "mov dword ptr [0x400000], 1", steps=1)
    assert env.pde(0x400000) & (A | D) == A | D


def test_ps_bit_is_ignored_without_cr4_pse():
    env = Env(paging=True)
    env.set_pde(0x400000, 0x3F0000 | P | W | U | PS)   # read as a page-table pointer
    env.m.write(0x3F0000, bytes(4096))                   # ... whose entries are all empty
    r = run_at(env, 0, "mov eax, [0x400000]")
    assert r.reason == "poweroff" and env.vector == PF and env.frame(1) == [0]


@pytest.mark.parametrize("flags,ring,write,err", [
    (P | W, 3, False, 5), (P | U, 3, True, 7), (P | U, 0, True, None), (P, 0, False, None),
])
def test_4mib_page_user_and_write_checks(flags, ring, write, err):
    env = Env(paging=True)
    env.m.write_cr(4, 0x10)
    env.set_pde(0x400000, flags | PS)
    insn = "mov dword ptr [0x400100], 3" if write else "mov eax, [0x400100]"
    r = run_at(env, ring, insn, steps=1 if err is None else 10_000)
    if err is None:
        assert r.reason == "max_steps"
    else:
        assert env.vector == PF and env.frame(1) == [err] and env.m.cpu.cr2 == 0x400100


# ---------------------------------------------------------------------------------------------
# accessed and dirty bits
# ---------------------------------------------------------------------------------------------

def test_read_sets_accessed_but_not_dirty():
    env = Env(paging=True)
    assert env.pte(X) & (A | D) == 0 and env.pde(X) & A == 0
    run_at(env, 3, f"mov eax, [{X}]", steps=1)
    assert env.pte(X) & (A | D) == A
    assert env.pde(X) & A


def test_write_sets_accessed_and_dirty():
    env = Env(paging=True)
    run_at(env, 3, f"mov dword ptr [{Y}], 1", steps=1)
    assert env.pte(Y) & (A | D) == A | D


def test_write_after_read_sets_dirty():
    env = Env(paging=True)
    run_at(env, 0, f"mov eax, [{X}]\nmov byte ptr [{X + 5}], 1", steps=2)
    assert env.pte(X) & (A | D) == A | D


def test_faulting_access_sets_no_accessed_bit_in_the_pte():
    env = Env(paging=True)
    env.set_pte(X, X | P | W)                              # supervisor only
    run_at(env, 3, f"mov eax, [{X}]")
    assert env.vector == PF and env.pte(X) & A == 0


# ---------------------------------------------------------------------------------------------
# the TLB: stale entries, INVLPG, CR3 loads, counters
# ---------------------------------------------------------------------------------------------

def _remap_test(env: Env, flush: str) -> tuple[int, int, int]:
    """Read X (frame X), remap X to frame Y in the PTE, read again, flush, read again."""
    put(env, X, 0x1111)
    put(env, Y, 0x2222)
    pte_x = env.pte_addr(X)
    src = f"""
        mov eax, [{X}]
        mov dword ptr [{pte_x}], {Y | P | W | U}
        mov ebx, [{X}]
        {flush}
        mov ecx, [{X}]
    """
    r = run_at(env, 0, src, steps=n_insns(src) + (1 if "\n" in flush else 0))
    assert r.reason == "max_steps"
    return env.m.cpu.eax, env.m.cpu.ebx, env.m.cpu.ecx


def test_pte_change_is_not_seen_until_invlpg():
    env = Env(paging=True)
    assert _remap_test(env, f"invlpg [{X}]") == (0x1111, 0x1111, 0x2222)


def test_pte_change_is_seen_after_cr3_reload():
    env = Env(paging=True)
    assert _remap_test(env, "mov edx, cr3\nmov cr3, edx") == (0x1111, 0x1111, 0x2222)


def test_pte_change_without_flush_stays_stale():
    env = Env(paging=True)
    assert _remap_test(env, "nop") == (0x1111, 0x1111, 0x1111)


def test_invlpg_drops_only_its_own_page():
    env = Env(paging=True)
    put(env, X, 0x1111)
    put(env, Y, 0x2222)
    put(env, 0x202000, 0x3333)
    src = f"""
        mov eax, [{X}]
        mov eax, [{Y}]
        mov dword ptr [{env.pte_addr(X)}], {0x202000 | P | W | U}
        mov dword ptr [{env.pte_addr(Y)}], {0x202000 | P | W | U}
        invlpg [{X + 0x123}]
        mov ebx, [{X}]
        mov ecx, [{Y}]
    """
    run_at(env, 0, src, steps=n_insns(src))
    assert env.m.cpu.ebx == 0x3333 and env.m.cpu.ecx == 0x2222


def test_cr3_load_drops_every_page():
    env = Env(paging=True)
    put(env, X, 0x1111)
    put(env, Y, 0x2222)
    put(env, 0x202000, 0x3333)
    src = f"""
        mov eax, [{X}]
        mov eax, [{Y}]
        mov dword ptr [{env.pte_addr(X)}], {0x202000 | P | W | U}
        mov dword ptr [{env.pte_addr(Y)}], {0x202000 | P | W | U}
        mov eax, cr3
        mov cr3, eax
        mov ebx, [{X}]
        mov ecx, [{Y}]
    """
    run_at(env, 0, src, steps=n_insns(src))
    assert env.m.cpu.ebx == 0x3333 and env.m.cpu.ecx == 0x3333


def test_stale_tlb_entry_keeps_a_page_readable_after_it_is_unmapped():
    env = Env(paging=True)
    put(env, X, 0x5555)
    src = f"""
        mov eax, [{X}]
        mov dword ptr [{env.pte_addr(X)}], 0
        mov ebx, [{X}]
        invlpg [{X}]
        mov ecx, [{X}]
    """
    r = run_at(env, 0, src)
    assert env.m.cpu.ebx == 0x5555
    assert r.reason == "poweroff" and env.vector == PF
    assert env.frame(2) == [0, at(src.rsplit("\n", 2)[0])]


def test_tlb_counters_hits_for_repeated_access_misses_after_invlpg():
    env = Env(paging=True)
    m = env.m
    loop = f"""
        mov ecx, 100
    1:  mov eax, [{X}]
        dec ecx
        jnz 1b
    """
    run_at(env, 0, loop, steps=1)                  # compile nothing yet: one instruction
    h0, m0 = m.tlb_hits, m.tlb_misses
    r = m.run(max_steps=300)
    assert r.reason == "max_steps" and m.cpu.ecx == 0
    assert m.tlb_hits - h0 >= 100
    assert m.tlb_misses - m0 <= 3                  # the data page (and code fetches) once

    env = Env(paging=True)
    m = env.m
    loop = f"""
        mov ecx, 100
    1:  invlpg [{X}]
        mov eax, [{X}]
        dec ecx
        jnz 1b
    """
    run_at(env, 0, loop, steps=1)
    m0 = m.tlb_misses
    r = m.run(max_steps=400)
    assert r.reason == "max_steps" and m.cpu.ecx == 0
    assert m.tlb_misses - m0 >= 100


def test_tlb_counters_move_by_exactly_one_on_a_miss_then_hit():
    env = Env(paging=True)
    m = env.m
    rd4 = m.compile_globals["rd4"]
    h0, m0 = m.tlb_hits, m.tlb_misses
    rd4(X)
    assert (m.tlb_hits - h0, m.tlb_misses - m0) == (0, 1)
    rd4(X + 8)
    assert (m.tlb_hits - h0, m.tlb_misses - m0) == (1, 1)
    m.invlpg(X)
    rd4(X + 8)
    assert (m.tlb_hits - h0, m.tlb_misses - m0) == (1, 2)


# ---------------------------------------------------------------------------------------------
# code fetch
# ---------------------------------------------------------------------------------------------

def test_code_fetch_from_user_page_at_ring3_works():
    env = Env(paging=True)
    r = run_at(env, 3, "mov eax, 1\nmov ebx, 2", steps=2)
    assert r.reason == "max_steps" and env.m.cpu.ebx == 2


def test_code_fetch_from_supervisor_page_at_ring3_faults():
    env = Env(paging=True)
    env.code(0x5000, "mov eax, 1")
    env.set_pte(0x5000, 0x5000 | P | W)
    r = run_at(env, 3, "mov ebx, 0x5000\njmp ebx")
    assert r.reason == "poweroff" and env.vector == PF
    assert env.frame(3) == [5, 0x5000, UCODE] and env.m.cpu.cr2 == 0x5000
    assert env.eax != 1


def test_code_fetch_from_supervisor_page_at_ring0_works():
    env = Env(paging=True)
    env.code(0x5000, "mov eax, 1")
    env.set_pte(0x5000, 0x5000 | P | W)
    r = run_at(env, 0, "mov ebx, 0x5000\njmp ebx", steps=3)
    assert r.reason == "max_steps" and env.m.cpu.eax == 1


def test_code_compiled_at_ring0_is_still_checked_when_ring3_runs_it():
    env = Env(paging=True)
    env.code(0x5000, "mov eax, 1\nret")
    env.set_pte(0x5000, 0x5000 | P | W)
    # ring 0 runs the supervisor code first (compiling it), then ring 3 jumps there
    r = run_at(env, 0, "mov ebx, 0x5000\ncall ebx", steps=4)
    assert r.reason == "max_steps" and env.m.cpu.eax == 1
    env.m.cpu.eax = 0
    env.code(0x6000, "mov ebx, 0x5000\njmp ebx")
    env.enter(3, 0x6000)
    r = env.m.run(max_steps=100)
    assert env.vector == PF and env.frame(2) == [5, 0x5000] and env.eax == 0


def test_instruction_straddling_into_a_not_present_page_faults_at_its_start():
    env = Env(paging=True)
    env.set_pte(0x6000, 0)
    start = 0x6000 - 3
    env.code(start, "mov eax, 0x12345678")          # 5 bytes: 3 on page 0x5000, 2 on 0x6000
    env.enter(3, start)
    r = env.m.run(max_steps=100)
    assert r.reason == "poweroff" and env.vector == PF
    assert env.frame(2) == [4, start] and env.m.cpu.cr2 == 0x6000


def test_unmapping_a_code_page_with_invlpg_stops_its_cached_code():
    env = Env(paging=True)
    env.code(0x5000, "inc eax\nret")
    src = f"""
        xor eax, eax
        mov ebx, 0x5000
        call ebx
        mov dword ptr [{env.pte_addr(0x5000)}], 0
        invlpg [0x5000]
        call ebx
    """
    r = run_at(env, 0, src)
    assert r.reason == "poweroff" and env.vector == PF
    assert env.frame(2) == [0, 0x5000] and env.eax == 1


# ---------------------------------------------------------------------------------------------
# beyond physical memory
# ---------------------------------------------------------------------------------------------

def test_reads_beyond_physical_memory_return_ones_and_writes_are_dropped():
    env = Env(memory_size=1 << 20)
    src = """
        mov dword ptr [0x180000], 0x12345678
        mov eax, [0x180000]
        mov bx, [0x180010]
        mov cl, [0x180020]
        mov edx, [0xffffc]
    """
    r = run_at(env, 0, src, steps=5)
    cpu = env.m.cpu
    assert r.reason == "max_steps"
    assert cpu.eax == 0xFFFFFFFF and cpu.bx == 0xFFFF and cpu.cl == 0xFF
    assert cpu.edx == 0xAAAAAAAA
    assert env.m.read(0xFFFFE, 4) == b"\xAA\xAA\xFF\xFF"
    assert len(env.m.mem) == 1 << 20


def test_access_straddling_the_end_of_memory_reads_ones_for_the_missing_bytes():
    env = Env(memory_size=1 << 20)
    env.m.write(0xFFFFE, b"\x11\x22")
    src = "mov eax, [0xffffe]\nmov dword ptr [0xffffe], 0x55667788"
    r = run_at(env, 0, src, steps=2)
    assert r.reason == "max_steps" and env.m.cpu.eax == 0xFFFF2211
    assert env.m.read(0xFFFFE, 2) == b"\x88\x77"


def test_page_mapped_beyond_physical_memory_reads_ones():
    env = Env(paging=True, memory_size=2 << 20)
    env.set_pte(X - 0x100000, 0x3000000 | P | W | U)   # frame at 48 MiB does not exist
    r = run_at(env, 3, f"mov dword ptr [{X - 0x100000}], 5\nmov eax, [{X - 0x100000}]\n"
               f"mov bl, [{X - 0x100000 + 7}]", steps=3)
    assert r.reason == "max_steps" and env.m.cpu.eax == 0xFFFFFFFF and env.m.cpu.bl == 0xFF


def test_public_read_beyond_memory_returns_ones():
    m = Machine(memory_size=1 << 16)
    assert m.read(0xFFFE, 4) == b"\xAA\xAA\xFF\xFF"
    m.write(0xFFFF, b"\x01\x02")
    assert m.read(0xFFFF, 1) == b"\x01"


_ = (KCODE, STACK, UDATA)


def test_guest_code_turns_paging_on_and_off_the_tlb_goes_with_cr3():
    env = Env()
    env.enable_paging()                            # builds the tables and turns PG on ...
    env.m.write_cr(0, env.m.cpu.cr0 & ~(1 << 31))  # ... off again: the guest does it below
    env.set_pte(X, Y | P | W | U)
    put(env, X, 0x1111)
    put(env, Y, 0x2222)
    src = f"""
        mov ebx, [{X}]
        mov eax, {PD}
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
        mov ecx, [{X}]
        mov edx, cr0
    """
    r = run_at(env, 0, src, steps=n_insns(src))
    cpu = env.m.cpu
    assert r.reason == "max_steps" and cpu.ebx == 0x1111 and cpu.ecx == 0x2222
    assert cpu.edx & 0x80000001 == 0x80000001


def test_setting_pg_without_pe_raises_gp():
    env = Env()
    env.code(CODE, "mov eax, 0x80000010\nmov cr0, eax")
    env.enter(0, CODE)
    env.m.run(max_steps=100)
    assert env.vector == 13 and env.frame(1) == [0]


def test_invlpg_anywhere_in_a_4mib_page_drops_the_whole_large_page():
    env = Env(paging=True, memory_size=8 << 20)
    env.m.write_cr(4, 0x10)
    env.set_pde(0x800000, 0x000000 | P | W | U | PS)      # 8-12 MiB -> physical 0-4 MiB
    put(env, 0x5000, 0x1111)
    put(env, 0x405000, 0x4444)
    # read through the large page, point it at physical 4-8 MiB, invlpg *another* 4 KiB
    # piece of it: the whole large page goes
    src = f"""
        mov eax, [0x805000]
        mov dword ptr [{PD + 8}], {0x400000 | P | W | U | PS}
        mov ebx, [0x805000]
        invlpg [0x802000]
        mov ecx, [0x805000]
    """
    r = run_at(env, 0, src, steps=n_insns(src))
    cpu = env.m.cpu
    assert r.reason == "max_steps"
    assert (cpu.eax, cpu.ebx, cpu.ecx) == (0x1111, 0x1111, 0x4444)


# ---------------------------------------------------------------------------------------------
# peek and insn_at: no side effects, page by page
# ---------------------------------------------------------------------------------------------

def test_peek_across_a_page_boundary_follows_each_page_and_leaves_no_trace():
    """Does peek read a range that crosses into a remapped page from that page's frame,
    return None when any page is unmapped, and set no accessed bit (no TLB fill)?"""
    env = Env(paging=True)
    env.m.write(X + 0xFFE, b"\x11\x22")
    env.m.write(Y + 0x2000, b"\x33\x44")
    env.set_pte(Y, (Y + 0x2000) | P | W | U)          # X's next page shows another frame
    env.enter(0, CODE)
    assert env.m.peek(X + 0xFFE, 4) == b"\x11\x22\x33\x44"
    assert env.pte(Y) & A == 0 and env.pte(X) & A == 0
    env.set_pte(Y, Y | W | U)                          # not present
    assert env.m.peek(X + 0xFFE, 4) is None
    assert env.m.peek(X + 0xFFE, 2) == b"\x11\x22"


def test_insn_at_decodes_an_instruction_cut_by_an_unmapped_page_as_far_as_mapped():
    """Does insn_at decode the bytes up to an unmapped page (a 5-byte mov whose last byte is
    on a not-present page decodes as nothing), and a whole instruction across mapped pages?"""
    env = Env(paging=True)
    mov = asm("mov eax, 0x12345678")                  # 5 bytes
    env.m.write(Y - 4, mov[:4])
    env.m.write(Y, mov[4:] + asm("nop"))
    env.enter(0, CODE)
    insn = env.m.insn_at(Y - 4)
    assert insn is not None and insn.text == "mov eax, 0x12345678" and insn.size == 5
    env.set_pte(Y, Y | W | U)                          # not present
    cut = env.m.insn_at(Y - 4)
    assert cut is None
    assert env.m.insn_at(Y) is None
