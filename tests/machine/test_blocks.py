"""Block translation (vmkit/machine/blocks.py) against per-instruction mode: is everything the
kit shows the same, instruction for instruction?

The golden file (tests/golden) holds per-instruction mode's record of every guest under every
monitor at one timer period, and block mode, the default, must reproduce it. Here: the same
comparison at other timer periods (interrupts land elsewhere inside blocks), with blocks made at
first sight (``blocks.HOT = 1``, so that every path runs translated), and bare-machine cases for
what a block must get exactly right: a fault, a port access or a self-modifying write in the
middle of a block, a step limit in the middle of a looping block, flags read across blocks.
"""

from __future__ import annotations

import pytest

from golden import _observe

import vmkit
from asm_programs import lcg_loop
from equivalence import build
from vmkit.machine import blocks
from vmkit.machine.machine import Machine, blocks_default
from vmkit.vmm import MONITORS

#: guests whose interrupts, faults, page faults, context switches and self-modifying code land
#: inside blocks, with parameters small enough for two runs per monitor and period
GUESTS = {"syscall": {"iterations": 20}, "ctxswitch": {"iterations": 4, "processes": 2},
          "pagefault": {"pages": 4}, "selfmod": {"iterations": 20}, "divzero": {"iterations": 4},
          "compute": {"iterations": 200}, "ptemod": {"iterations": 6}}
PERIODS = (151, 263)   # the kernel's timer handler must fit in a period, or a guest makes no progress


def _run(monkeypatch, on: bool, monitor: str, image, max_steps: int = 200_000):
    monkeypatch.setenv("VMKIT_BLOCKS", "1" if on else "0")
    cls = MONITORS["hw"] if monitor == "hw-shadow" else MONITORS[monitor]
    mon = cls(image, ept=False) if monitor == "hw-shadow" else cls(image)
    return _observe(mon, mon.run(max_steps=max_steps))


@pytest.mark.parametrize("period", PERIODS)
@pytest.mark.parametrize("monitor", ["native", "te", "bt", "hw", "hw-shadow", "pv"])
def test_block_mode_matches_per_instruction_mode(monkeypatch, monitor, period):
    """Same console, state, memory hash, steps, ticks, events, stats and cycles, per guest?"""
    monkeypatch.setattr(blocks, "HOT", 1)
    for name, params in GUESTS.items():
        if monitor == "pv" and name not in ("syscall", "compute", "ctxswitch"):
            continue
        image = build(name, timer_period=period, paravirtual=monitor == "pv", **params)
        want = _run(monkeypatch, False, monitor, image)
        got = _run(monkeypatch, True, monitor, image)
        assert got == want, f"{name} under {monitor}, timer period {period}"


# ---- bare machine ----------------------------------------------------------------------------

def _machine(src: str, on: bool, **kw) -> Machine:
    m = Machine(blocks=on, **kw)
    m.load(vmkit.assemble(src, base=0x1000))
    return m


def _both(src: str, max_steps: int = 100_000, hot: int = 1, **kw):
    """Run ``src`` in both modes; -> (per-instruction machine, block machine, results)."""
    out = []
    old = blocks.HOT
    blocks.HOT = hot
    try:
        for on in (False, True):
            m = _machine(src, on, **kw)
            r = m.run(max_steps=max_steps)
            out.append((m, r))
    finally:
        blocks.HOT = old
    (m0, r0), (m1, r1) = out
    assert (r1.reason, r1.steps, r1.detail, r1.eip) == (r0.reason, r0.steps, r0.detail, r0.eip)
    assert m1.cpu.state() == m0.cpu.state()
    assert (m1.steps, m1.clock) == (m0.steps, m0.clock)
    assert bytes(m1.mem) == bytes(m0.mem)
    assert m1.console == m0.console
    assert dict(m1.trace.counts) == dict(m0.trace.counts)
    return m0, m1, r1


LOOP = lcg_loop(50)


def test_a_loop_runs_in_one_block_function():
    """Does the LCG loop become one block that loops inside its function?"""
    m0, m1, r = _both(LOOP)
    loops = [b for b in m1._bcache_sup.values() if b[1] > 0 and "while True" in b[6]]
    assert loops and loops[0][1] == 7
    assert r.reason == "halt" and r.steps == 3 + 7 * 50 + 1


@pytest.mark.parametrize("limit", [1, 5, 9, 10, 11, 17, 100, 353])
def test_a_step_limit_inside_a_looping_block_stops_at_that_instruction(limit):
    """max_steps in the middle of a block: single instructions finish the budget exactly."""
    m0, m1, r = _both(LOOP, max_steps=limit)
    assert r.steps == limit and m1.steps == limit


def test_a_fault_in_the_middle_of_a_block_is_precise():
    """#DE at the third instruction of a block: EIP at the div, registers as before it,
    only the two instructions before it counted."""
    src = """
_start:
    mov ecx, 3
1:  add eax, 7
    mov ebx, ecx
    sub ebx, 1
    xor edx, edx
    div ebx
    dec ecx
    jnz 1b
    hlt
"""
    m0, m1, r = _both(src)
    assert r.reason == "crash" and "#DE" in r.detail
    assert m1.text_at(m1.cpu.eip).startswith("div")


def test_a_page_fault_in_the_middle_of_a_block_is_precise():
    """A store to an unmapped page inside a block, with paging on: same #PF, CR2, steps."""
    src = """
_start:
    mov edi, 0x21000
    mov eax, 0x7
    mov ecx, 256
fill:
    mov dword ptr [edi], eax
    add eax, 0x1000
    add edi, 4
    dec ecx
    jnz fill
    mov dword ptr [0x20000], 0x21007
    mov eax, 0x20000
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    mov ebx, 0x00300000
    mov esi, 0x8000
2:  add dword ptr [esi], 1
    add esi, 0x1000
    mov dword ptr [esi], ebx
    jmp 2b
"""
    m0, m1, r = _both(src)
    assert r.reason == "crash" and "#PF" in r.detail
    assert m1.cpu.cr2 == m0.cpu.cr2 and m1.steps > 1000


def test_self_modifying_code_inside_a_block():
    """A block that rewrites an immediate of its own later instruction: the new value is
    used in the same pass, as in per-instruction mode."""
    src = """
_start:
    mov ecx, 20
    xor edi, edi
1:  mov byte ptr [2f + 1], cl
    nop
2:  mov eax, 0x99
    add edi, eax
    dec ecx
    jnz 1b
    hlt
"""
    m0, m1, r = _both(src)
    assert m1.cpu.edi == sum(range(1, 21)) and m1.smc_gen > 0


def test_port_io_inside_a_block_sees_exact_time():
    """rdtsc and out inside a block: they see the exact clock (Sync) in both modes."""
    src = """
_start:
    mov ecx, 30
1:  add ebx, ecx
    rdtsc
    out 0xe9, al
    add edi, eax
    dec ecx
    jnz 1b
    hlt
"""
    m0, m1, r = _both(src)
    assert m1.console == m0.console and len(m1.console) == 30


@pytest.mark.parametrize("cc", ["jl", "jg", "jle", "jge", "jb", "ja", "jbe", "jae", "js", "jo",
                                "jns", "jno", "jp", "je", "jne"])
def test_conditions_read_across_forwarded_flags(cc):
    """Every condition after cmp, add, sub, inc, dec, and, adc and sbb in one block gives the
    same branches as per-instruction mode (flags forwarded from the writer's values)."""
    body = []
    for k, op in enumerate(["cmp eax, ebx", "add eax, ebx", "sub eax, ebx", "inc eax",
                            "dec eax", "and eax, ebx", "adc eax, ebx", "sbb eax, ebx",
                            "imul eax, eax, 3", "shr eax, 3"]):
        body.append(f"    {op}\n    {cc} 3f\n    add edi, {k + 1}\n3:  rol edi, 1\n")
    src = ("_start:\n    mov ecx, 40\n    mov eax, 0x7ffffff0\n    mov ebx, 0x13\n1:\n"
           + "".join(body) + "    add ebx, 0x10000011\n    dec ecx\n    jnz 1b\n    hlt\n")
    _both(src)


def test_the_switch():
    """blocks= and VMKIT_BLOCKS select the mode; a bad value says what was wrong."""
    assert Machine(blocks=False).blocks is False and Machine(blocks=True).blocks is True
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("VMKIT_BLOCKS", "0")
        assert not blocks_default() and Machine().blocks is False
        mp.setenv("VMKIT_BLOCKS", "1")
        assert blocks_default()
        mp.setenv("VMKIT_BLOCKS", "maybe")
        with pytest.raises(vmkit.VmkitError, match="VMKIT_BLOCKS must be 1 or 0"):
            blocks_default()
    finally:
        mp.undo()


def test_single_step_and_breakpoints_use_the_per_instruction_path():
    """With a breakpoint set, no block runs (the breakpoint stops at its instruction)."""
    m = _machine(LOOP, True)
    target = 0x1000 + 5 + 5 + 2 + 6      # the add after imul
    m.breakpoints.add(target)
    m.run(max_steps=5)
    r = m.run(max_steps=1000)
    assert r.reason == "breakpoint" and m.cpu.eip == target
    assert not any(b[1] > 0 for b in m._bcache_sup.values())


def test_the_hot_count_survives_a_flush_of_the_compiled_code(monkeypatch):
    """Does a loop that runs one pass between two flushes of the compiled code (a CR3 load, a
    world switch) still get its block once it has run ``HOT`` passes in all?"""
    monkeypatch.setattr(blocks, "_MADE", {})        # nothing made before by other tests
    monkeypatch.setattr(blocks, "_MADE_AT", set())
    src = """
        mov ecx, 0
    top:
        add eax, 0x1234
        add ebx, 0x4321
        inc ecx
        cmp ecx, 1000
        jne top
        hlt
    """
    m0, m1 = _machine(src, False), _machine(src, True)
    made_at = None
    for k in range(2 * blocks.HOT):
        for m in (m0, m1):
            m.run(max_steps=1 if k == 0 else 5)     # then one pass of the loop a run
        if made_at is None and any(b is not None and b[1] > 0
                                   for b in m1._bcache_sup.values()):
            made_at = k
        for m in (m0, m1):
            m.flush_icache()
    assert made_at is not None and made_at <= blocks.HOT + 1
    assert m1.cpu.state() == m0.cpu.state() and m1.steps == m0.steps


# ---- compiled code kept across CR3 loads (vmkit/machine/codecache.py) ------------------------

_PD_A, _PD_B = 0x10000, 0x12000        # two address spaces, each identity-mapping the low 4 MiB
_F_A, _F_B, _G, _NEW = 0x20000, 0x21000, 0x22000, 0x23000      # physical code frames


def _fn(src: str, base: int = 0x400000) -> bytes:
    return vmkit.assemble(src, base=base).code


def _spaces_program(rewrite_at: int, passes: int = 30) -> str:
    """Each pass: address space A (0x400000 -> f_A, 0x401000 -> g), then B (0x400000 -> f_B,
    0x401000 -> the same g, and 0x402000 -> f_A's frame, writable); at pass ``rewrite_at`` B
    rewrites f_A's bytes through 0x402000 while A's mapping is not loaded."""
    new = _fn("add ebx, 1000\nadd ebx, 1000\nret\n")
    new += b"\x90" * (-len(new) % 4)
    stores = "\n".join(f"    mov dword ptr [{0x402000 + k:#x}], "
                       f"{int.from_bytes(new[k:k + 4], 'little'):#x}"
                       for k in range(0, len(new), 4))
    return f"""
_start:
    mov eax, {_PD_A:#x}
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    mov ecx, {passes}
top:
    mov eax, {_PD_A:#x}
    mov cr3, eax
    mov eax, 0x400000
    call eax
    mov eax, 0x401000
    call eax
    mov eax, {_PD_B:#x}
    mov cr3, eax
    mov eax, 0x400000
    call eax
    mov eax, 0x401000
    call eax
    cmp ecx, {rewrite_at}
    jne skip
{stores}
skip:
    dec ecx
    jnz top
    hlt
"""


def _spaces_machine(on: bool, rewrite_at: int) -> Machine:
    m = _machine(_spaces_program(rewrite_at), on)
    for pd, pt0, pt1, f in ((_PD_A, 0x11000, 0x14000, _F_A), (_PD_B, 0x13000, 0x15000, _F_B)):
        m.write(pd, (pt0 | 3).to_bytes(4, "little") + (pt1 | 3).to_bytes(4, "little"))
        m.write(pt0, b"".join(((i << 12) | 3).to_bytes(4, "little") for i in range(1024)))
        ptes = [(f | 3), (_G | 3)] + ([_F_A | 3] if pd == _PD_B else [])
        m.write(pt1, b"".join(p.to_bytes(4, "little") for p in ptes))
    m.write(_F_A, _fn("add ebx, 1\nadd ebx, 2\nadd ebx, 3\nret\n"))
    m.write(_F_B, _fn("add ebx, 100\nadd ebx, 200\nret\n"))
    m.write(_G, _fn("add esi, 7\nadd esi, 7\nret\n", 0x401000))
    return m


def _observed(m: Machine, r) -> tuple:
    return (r.reason, r.steps, m.cpu.state(), bytes(m.mem), m.steps, m.clock,
            dict(m.trace.counts), m.tlb_misses, m.walk_refs)


@pytest.mark.parametrize("on", [False, True])
def test_code_kept_across_cr3_loads_changes_nothing_observable(monkeypatch, on):
    """Two address spaces, a CR3 load before every call: the same linear address remapped
    (f_A / f_B), code shared by both (g), and f_A's bytes rewritten through B's mapping while
    A's is not loaded. With the code kept by physical address, is every result, the memory
    (accessed and dirty bits included), the TLB-miss and walk counts, the same as when every
    CR3 load dropped all compiled code? And is the rewritten f_A what runs afterwards?"""
    from vmkit.machine.codecache import CodeCacheMixin
    monkeypatch.setattr(blocks, "HOT", 1)
    real = CodeCacheMixin.fetch_decode
    compiled = []       # instructions fetched and decoded (to compile them or make a block)

    def counting(self, eip, *pa):
        compiled.append(eip)
        return real(self, eip, *pa)
    monkeypatch.setattr(CodeCacheMixin, "fetch_decode", counting)
    m = _spaces_machine(on, rewrite_at=15)
    kept = _observed(m, m.run(max_steps=100_000))
    n_kept, kept_g = len(compiled), compiled.count(0x401000)
    # dropping every compiled instruction at each CR3 load, as before: nothing is kept
    monkeypatch.setattr(CodeCacheMixin, "code_address", lambda self, eip: None)
    monkeypatch.setattr(type(m), "drop_live_code", CodeCacheMixin.flush_icache)
    del compiled[:]
    m2 = _spaces_machine(on, rewrite_at=15)
    dropped = _observed(m2, m2.run(max_steps=100_000))
    assert kept == dropped
    assert kept[0] == "halt"
    # f_A adds 6 in the 16 passes up to the rewrite (ECX 30 down to 15), then 2000 (its new
    # code); f_B adds 300 every pass; g 14, twice a pass
    assert m.cpu.ebx == 16 * 6 + 14 * 2000 + 30 * 300 and m.cpu.esi == 30 * 28
    # kept: g fetched once for both spaces (twice in block mode: as an instruction, then as
    # a block's start), not after every CR3 load
    assert compiled.count(0x401000) >= 60
    assert n_kept < len(compiled) / 5 and 0 < kept_g <= 2


def test_a_write_to_kept_code_drops_only_that_address_space_s_code():
    """f_A rewritten while B is loaded: is f_B (same linear address, other frame) still kept,
    and f_A's kept code gone?"""
    m = _spaces_machine(False, rewrite_at=0)   # never rewritten by the guest
    m.run(max_steps=200)
    kept = {k for k in m._istore_sup if k[0] == 0x400003}    # the second instructions
    assert kept == {(0x400003, _F_A + 3), (0x400003, _F_B + 3)}
    m.write(_F_A + 4, b"\x90")                  # a write into f_A's second instruction
    assert {k for k in m._istore_sup if k[0] == 0x400003} == {(0x400003, _F_B + 3)}
    assert (0x400000, _F_A) in m._istore_sup    # and only into it


@pytest.mark.parametrize("on", [False, True])
def test_a_restore_drops_the_code_of_the_bytes_it_replaces_and_keeps_the_rest(monkeypatch, on):
    """Code compiled from patched bytes, then a snapshot from before the patch restored: does
    the original instruction run again? And is code whose bytes the restore left alone kept
    (not fetched and compiled again)?"""
    from vmkit.machine.codecache import CodeCacheMixin
    monkeypatch.setattr(blocks, "HOT", 1)
    src = "_start:\n    mov eax, 1\n    add eax, 2\n    add eax, 4\n    hlt\n"
    m = _machine(src, on)
    before = m.snapshot()
    m.write(0x1000 + 5 + 2, b"\x05")      # add eax, 2 -> add eax, 5
    m.run(max_steps=100)
    assert m.cpu.eax == 10
    m.restore(before)
    m.run(max_steps=100)
    assert m.cpu.eax == 7
    fetched = []
    real = CodeCacheMixin.fetch_decode
    monkeypatch.setattr(CodeCacheMixin, "fetch_decode",
                        lambda self, eip, *pa: fetched.append(eip) or real(self, eip, *pa))
    m.restore(before)
    m.run(max_steps=100)
    assert m.cpu.eax == 7 and fetched == []
