"""BinaryTranslation's translated kernel code in block mode (each translation unit one function
made by the machine's block translator, vmkit.machine.blocks.build) against per-instruction mode
(the same units run one compiled instruction at a time): is everything the kit shows the same?

Console, guest state, memory hash, steps, timer ticks, every counter (translation-cache hits and
misses, callouts, adaptations ...), event counts and cycles, at several timer periods, with
faults, interrupts, a step limit and self-modifying code inside a unit; and the translations
themselves (what ``vm.blocks()`` shows) do not depend on the mode. Block mode compiles a unit
once it has run ``blocks.HOT`` times; here mostly at once (``HOT = 1``), so that every unit runs
as a function."""

from __future__ import annotations

import pytest

from golden import _observe

from vmkit import guests
from vmkit.machine import blocks
from vmkit.vmm import Native
from vmkit.vmm.bt import BinaryTranslation, engine, tcache
from equivalence import build, guest_state

#: kernel-heavy guests: kernel loops, true and hidden page faults in the kernel, page-table
#: writes, context switches, a fault reflected from user code, self-modifying code
GUESTS = {"kcallret": {"iterations": 4, "depth": 8}, "kpgfault": {"iterations": 6},
          "kptemod": {"iterations": 6}, "ctxswitch": {"iterations": 4, "processes": 2},
          "selfmod": {"iterations": 30}, "syscall": {"iterations": 15},
          "divzero": {"iterations": 4}}
PERIODS = (173, 457)


def _observed(monkeypatch, on: bool, image, max_steps: int = 300_000, hot: int = 1, **kw):
    monkeypatch.setenv("VMKIT_BLOCKS", "1" if on else "0")
    monkeypatch.setattr(blocks, "HOT", hot)
    bt = BinaryTranslation(image, **kw)
    made = []
    bt.on("translate", lambda e: made.append((e.step, e.address, e.instructions, e.end)))
    r = bt.run(max_steps=max_steps)
    seen = _observe(bt, r)
    seen["cached"] = [(b.vm, b.eip, b.listing(), b.source) for b in bt.blocks()]
    seen["translations"] = made
    return bt, seen


@pytest.mark.parametrize("period", PERIODS)
def test_bt_block_mode_matches_per_instruction_mode(monkeypatch, period):
    """Every kernel-heavy guest, translated on first execution and with threshold=3 (units
    interpreted first): the same record in both modes?"""
    for name, params in GUESTS.items():
        image = build(name, timer_period=period, **params)
        for kw in ({}, {"threshold": 3}, {"hot": 5}):
            _, want = _observed(monkeypatch, False, image, **kw)
            _, got = _observed(monkeypatch, True, image, **kw)
            assert got == want, f"{name} under bt {kw}, timer period {period}"
            assert want["result"][0] == "poweroff"


def test_traced_shadow_paging_adapts_alike_in_both_modes(monkeypatch):
    """Under traced shadow paging, page-table stores that keep trapping are adapted into in-TC
    sequences at the same instructions in both modes?"""
    image = build("kptemod", timer_period=263, iterations=8)
    _, want = _observed(monkeypatch, False, image, shadow="traced", adapt_after=2)
    _, got = _observed(monkeypatch, True, image, shadow="traced", adapt_after=2)
    assert got == want
    assert want["stats"]["adaptations"] > 0


#: a bare-metal kernel (it runs at virtual CPL 0: all of it in the translator) whose main loop is
#: one 12-instruction unit with, in its middle, a divide that faults every fourth pass (its
#: handler skips it), a store into memory, and a store that patches the immediate of the next
#: instruction but one (self-modifying code inside the unit), under a timer of period %d
FAULTY = r"""
_start:
    lidt [idt_ptr]
    mov eax, offset on_de            # gate 0 (#DE): interrupt gate to 0x08:on_de
    mov word ptr [idt], ax
    mov word ptr [idt + 2], 0x08
    mov word ptr [idt + 4], 0x8E00
    shr eax, 16
    mov word ptr [idt + 6], ax
    mov eax, offset on_tick          # gate 32: the timer
    mov word ptr [idt + 32*8], ax
    mov word ptr [idt + 32*8 + 2], 0x08
    mov word ptr [idt + 32*8 + 4], 0x8E00
    shr eax, 16
    mov word ptr [idt + 32*8 + 6], ax
    mov al, 0xFE
    out 0x21, al
    mov eax, %d
    out 0x40, eax
    xor esi, esi
    xor edi, edi
    mov ebx, 120
    sti
1:  inc esi
    mov eax, esi
    xor edx, edx
    mov ecx, esi
    and ecx, 3                       # 0 every fourth pass
    add dword ptr [work], eax
    div ecx                          # #DE in the middle of the unit
    add edi, eax
    mov byte ptr [patch + 2], bl     # the low byte of the add's immediate (81 C7 imm32)
patch:
    add edi, 0x100
    dec ebx
    jnz 1b
    cli
    mov eax, edi
    add eax, [des]
    add eax, [work]
    out 0xF4, eax
on_de:
    inc dword ptr [des]
    add dword ptr [esp], 2           # past div ecx (F7 F1)
    iretd
on_tick:
    push eax
    inc dword ptr [ticks]
    mov al, 0x20
    out 0x20, al
    pop eax
    iretd
.data
.align 4096
idt_ptr: .word 256*8 - 1
         .long idt
ticks:   .long 0
work:    .long 0
des:     .long 0
.align 8
idt:     .space 256*8
"""


@pytest.mark.parametrize("period", (59, 97, 211))
def test_faults_ticks_and_patches_inside_a_unit(monkeypatch, period):
    """A #DE, a timer tick and a store into the unit's own code in the middle of a unit: the
    same in both modes, and as on the bare machine (the guest's answer, its state, its ticks)?"""
    image = guests.from_source(FAULTY % period, name="faulty")
    nat = Native(image)
    rn = nat.run(max_steps=100_000)
    assert rn.reason == "poweroff"
    bt0, want = _observed(monkeypatch, False, image, max_steps=100_000)
    bt1, got = _observed(monkeypatch, True, image, max_steps=100_000)
    assert got == want
    assert bt1.vms[0].devices.poweroff_code == nat.machine.dev.poweroff_code
    assert guest_state(bt1.vcpu) == guest_state(nat.machine.cpu)
    assert bt1.vms[0].steps == nat.machine.steps and bt1.vms[0].devices.ticks == nat.machine.dev.ticks
    st = bt1.stats
    assert st["tc_invalidations"] >= 100 and st["reflected"]["#DE"] == 30 and st["reflected"]["irq 0"] > 5
    patch = image.symbols["patch"]
    units = {(a, n) for _, a, n, end in got["translations"] if a < patch < end}
    # the loop is one 12-instruction unit (and units start inside it after an iretd)
    assert min(units)[1] == 12 and len(units) > 1


@pytest.mark.parametrize("limit", range(1000, 1013))
def test_a_step_limit_inside_a_unit_stops_at_that_instruction(monkeypatch, limit):
    """max_steps ending at each instruction of the loop's unit: the same state and counters in
    both modes (block mode runs the unit's head one instruction at a time when the budget does
    not cover it)?"""
    image = guests.from_source(FAULTY % 10_000, name="faulty")
    _, want = _observed(monkeypatch, False, image, max_steps=limit)
    _, got = _observed(monkeypatch, True, image, max_steps=limit)
    assert got == want and want["result"][:2] == ["max_steps", limit]


def test_block_mode_runs_each_unit_as_one_function(monkeypatch):
    """In block mode a hot kernel loop runs its units' functions (made by blocks.build), in
    per-instruction mode one instruction at a time: do the modes really differ in how they run,
    and not in what they count?"""
    image = guests.from_source(FAULTY % 10_000, name="faulty")
    singly = []
    real = engine.run_singly
    monkeypatch.setattr(engine, "run_singly", lambda bt, blk, left: singly.append(blk.eip)
                        or real(bt, blk, left))
    made = []
    monkeypatch.setattr(tcache, "_MADE", {})     # made afresh, not found made
    real_build = blocks.build
    monkeypatch.setattr(blocks, "build", lambda *a, **k: made.append(a[0]) or real_build(*a, **k))
    engine_counts = []
    for on in (False, True):
        singly.clear()
        bt, seen = _observed(monkeypatch, on, image, max_steps=100_000)
        engine_counts.append(len(singly))
        assert seen["result"][0] == "poweroff"
    per_instruction, block_mode = engine_counts
    assert per_instruction > 300 and block_mode < per_instruction / 10
    assert made, "units are compiled by the machine's block translator"


#: a bare-metal kernel loop that is one unit jumping back to its own start (FAULTY without the
#: store into its code): ESI steps by 4, so it divides by zero every fourth pass and walks eight
#: pages 32 bytes a pass (the first touch of each page is a hidden page fault of the shadow
#: tables, in a later pass); ticks of period %d land inside the passes
LOOPING = (FAULTY.replace("1:  inc esi\n", "1:  add esi, 4\n")
           .replace("and ecx, 3 ", "and ecx, 12")
           .replace("    mov byte ptr [patch + 2], bl", "    add edx, [buffer + esi*8]   ")
           .replace("    mov ebx, 120\n", "    mov ebx, 1000\n")
           .replace("des:     .long 0\n", "des:     .long 0\n.align 4096\nbuffer:  .space 9 * 4096\n"))


@pytest.mark.parametrize("period", (89, 1500))
def test_a_kernel_loop_runs_its_passes_in_its_loop_function(monkeypatch, period):
    """A unit chained to itself runs its passes in one call of its loop function: the same
    counters (chained exits included), state and ticks as per instruction and as natively, with
    hidden page faults and #DE in later passes?"""
    image = guests.from_source(LOOPING % period, name="looping")
    nat = Native(image)
    assert nat.run(max_steps=200_000).reason == "poweroff"
    _, want = _observed(monkeypatch, False, image, max_steps=200_000)
    bt, got = _observed(monkeypatch, True, image, max_steps=200_000)
    assert got == want
    assert guest_state(bt.vcpu) == guest_state(nat.machine.cpu)
    assert bt.vms[0].steps == nat.machine.steps
    st = bt.stats
    assert st["reflected"]["#DE"] == 250 and st["hidden_page_faults"] >= 8
    # the loop's head, chained to itself between two #DE (its load was adapted: see
    # adapt_after), ran those passes in its loop function
    head = [b for b in bt.blocks() if b.insns[0].text == "add esi, 4"]
    assert len(head) == 1 and head[0].loop_fn is not None and head[0].chained_in > 20
