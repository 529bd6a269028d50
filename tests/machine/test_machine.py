"""The machine as a whole: devices (console, timer, interrupt controller, power-off, input),
guest time (rdtsc, exact and reproducible interrupt delivery), HLT, snapshots, and the checks
on bad API input.
"""

from __future__ import annotations

import hashlib
import struct

import pytest

from machine_util import CODE, KCODE, POWEROFF, STUBS, UCODE, Env, asm
from vmkit.errors import VmkitError
from vmkit.isa.faults import Fault
from vmkit.machine.machine import Machine, RunResult
from vmkit.trace import Trace

IF = 0x200
TIMER_VEC = 32
TICKS = 0x8300          # the counting handler increments this dword

# IRQ handler: count, EOI, return
COUNTING_HANDLER = f"""
    inc dword ptr [{TICKS:#x}]
    push eax
    mov al, 0x20
    out 0x20, al
    pop eax
    iretd
"""
# the same without the EOI
NO_EOI_HANDLER = f"""
    inc dword ptr [{TICKS:#x}]
    iretd
"""


def run_at(env: Env, ring: int, source: str, *, eflags: int = 0x2, steps: int = 10_000):
    env.code(CODE, source)
    env.enter(ring, CODE, eflags=eflags)
    return env.m.run(max_steps=steps)


def timer_env(handler: str = COUNTING_HANDLER, **kw) -> Env:
    env = Env(**kw)
    env.code(0x3000, handler)
    env.gate(TIMER_VEC, 0x3000)
    env.m.write(TICKS, bytes(4))
    return env


def ticks(env: Env) -> int:
    return env.rd32(TICKS)


def irq_events(m: Machine) -> list:
    return [(e.step, e.vector, e.eip) for e in m.trace.of("interrupt")]


# ---------------------------------------------------------------------------------------------
# console and power-off
# ---------------------------------------------------------------------------------------------

def test_console_port_collects_text():
    env = Env()
    src = "mov al, 0x68\nout 0xe9, al\nmov edx, 0xe9\nmov al, 0x69\nout dx, al\n" \
          "mov eax, 0\nout 0xf4, eax"
    r = run_at(env, 0, src)
    assert r.reason == "poweroff" and env.m.console == "hi"


def test_power_off_port_stops_with_its_exit_code():
    env = Env()
    r = run_at(env, 0, "mov eax, 3\nout 0xf4, eax\nmov ebx, 1")
    assert r.reason == "poweroff" and "3" in r.detail and r.steps == 2
    assert env.m.dev.poweroff_code == 3 and env.m.cpu.ebx != 1
    r2 = env.m.run()
    assert r2.reason == "poweroff" and r2.steps == 0


def test_unassigned_port_reads_all_ones():
    env = Env()
    run_at(env, 0, "mov edx, 0x300\nin al, dx\nmov ebx, eax\nin eax, dx", steps=4)
    assert env.m.cpu.bl == 0xFF and env.m.cpu.eax == 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# the timer and guest time
# ---------------------------------------------------------------------------------------------

TIMER_PROGRAM = "\n".join(["nop"] * 50) + """
    mov eax, 100
    out 0x40, eax
    sti
1:  inc ecx
    jmp 1b
"""


def test_timer_irq0_arrives_every_n_guest_instructions_from_the_out():
    env = timer_env()
    env.m.run  # noqa: B018
    run_at(env, 0, TIMER_PROGRAM, steps=1000)
    evs = irq_events(env.m)
    # the out is the 52nd instruction: 51 had retired when it wrote the period
    assert [s for s, v, _ in evs] == [151, 251, 351, 451, 551, 651, 751, 851, 951]
    assert all(v == TIMER_VEC for _, v, _ in evs)
    assert ticks(env) == 9


def test_timer_interrupts_are_reproducible_run_to_run():
    def once():
        env = timer_env()
        run_at(env, 0, TIMER_PROGRAM, steps=5000)
        return irq_events(env.m), env.m.cpu.state(), env.m.clock
    assert once() == once()


def test_timer_interrupts_land_on_the_same_instruction_with_and_without_tracing():
    def once(trace):
        env = timer_env(trace=trace)
        run_at(env, 0, TIMER_PROGRAM, steps=3000)
        return irq_events(env.m), env.m.cpu.state()
    assert once(Trace()) == once(Trace(instructions=True))


def test_timer_interrupts_land_on_the_same_instruction_when_stepping():
    env = timer_env()
    env.code(CODE, TIMER_PROGRAM)
    env.enter(0, CODE)
    for _ in range(700):
        env.m.step()
    stepped = irq_events(env.m)
    env2 = timer_env()
    run_at(env2, 0, TIMER_PROGRAM, steps=700)
    assert stepped == irq_events(env2.m) and env.m.cpu.state() == env2.m.cpu.state()


def test_timer_reprogrammed_mid_burst_counts_from_the_write():
    env = timer_env()
    src = "\n".join(["nop"] * 30) + """
        mov eax, 1000
        out 0x40, eax
    """ + "\n".join(["nop"] * 20) + """
        mov eax, 10
        out 0x40, eax
        sti
    1:  jmp 1b
    """
    run_at(env, 0, src, steps=100)
    # the second out is instruction 54: 53 had retired
    assert [s for s, _, _ in irq_events(env.m)][:2] == [63, 73]


def test_reading_the_timer_period_and_guest_clock_ports():
    env = Env()
    src = "\n".join(["nop"] * 20) + """
        mov eax, 5000
        out 0x40, eax
        in eax, 0x40
        mov ebx, eax
        in eax, 0x41
    """
    run_at(env, 0, src, steps=25)
    assert env.m.cpu.ebx == 5000
    assert env.m.cpu.eax == 24                    # 24 instructions retired before the in


def test_rdtsc_reads_guest_time():
    env = Env()
    src = "\n".join(["nop"] * 10) + "\nrdtsc\nmov ebx, eax\nnop\nrdtsc"
    r = run_at(env, 0, src, steps=14)
    assert r.reason == "max_steps"
    assert env.m.cpu.ebx == 10 and env.m.cpu.eax == 13 and env.m.cpu.edx == 0
    assert env.m.clock == 14


def test_rdtsc_is_the_same_with_and_without_tracing():
    def once(trace):
        env = Env(trace=trace)
        run_at(env, 0, "\n".join(["nop"] * 37) + "\nrdtsc", steps=38)
        return env.m.cpu.eax
    assert once(Trace()) == once(Trace(instructions=True)) == 37


def test_rdtsc_at_ring3_faults_with_cr4_tsd():
    env = Env()
    env.m.cpu.cr4 |= 4
    run_at(env, 3, "rdtsc")
    assert env.vector == 13 and env.frame(2) == [0, CODE]


def test_pic_mask_holds_irq0_until_unmasked():
    env = timer_env()
    src = """
        mov al, 1
        out 0x21, al
        mov eax, 20
        out 0x40, eax
        sti
        mov ecx, 100
    1:  dec ecx
        jnz 1b
        in al, 0x21
        mov bl, al
        xor eax, eax
        out 0x21, al
        nop
        cli
        hlt
    """
    r = run_at(env, 0, src)
    assert r.reason == "halt"
    assert env.m.cpu.bl == 1
    assert ticks(env) == 1                          # one latched request, delivered on unmask
    ev = irq_events(env.m)
    unmask_out = CODE + len(asm(src.split("out 0x21, al\n        nop")[0] + "out 0x21, al"))
    assert ev[0][2] == unmask_out                   # right after the unmasking out


def test_without_eoi_no_second_timer_interrupt():
    env = timer_env(NO_EOI_HANDLER)
    src = """
        mov eax, 10
        out 0x40, eax
        sti
        mov ecx, 200
    1:  dec ecx
        jnz 1b
        in al, 0x20
    """
    r = run_at(env, 0, src, steps=410)
    assert r.reason == "max_steps"
    assert ticks(env) == 1 and env.m.cpu.al == 1     # IRQ 0 still in service


def test_with_eoi_timer_keeps_interrupting():
    env = timer_env()
    src = """
        mov eax, 10
        out 0x40, eax
        sti
        mov ecx, 200
    1:  dec ecx
        jnz 1b
        in al, 0x20
        cli
        hlt
    """
    r = run_at(env, 0, src)
    assert r.reason == "halt"
    assert ticks(env) > 30 and env.m.cpu.al == 0


def test_sti_hlt_wakes_on_the_timer_and_returns_after_the_hlt():
    env = timer_env()
    src = """
        mov eax, 100
        out 0x40, eax
        sti
        hlt
        mov ebx, 1
        cli
        hlt
    """
    r = run_at(env, 0, src)
    assert r.reason == "halt" and env.m.cpu.ebx == 1 and ticks(env) == 1
    ev = irq_events(env.m)
    assert len(ev) == 1 and ev[0][0] == 101       # guest time jumped to the tick
    assert ev[0][2] == CODE + len(asm("mov eax, 100\nout 0x40, eax\nsti\nhlt"))
    assert env.m.clock >= 101


@pytest.mark.parametrize("traced", [False, True])
def test_sti_shadow_delays_a_pending_interrupt_by_one_instruction(traced):
    env = Env(trace=Trace(instructions=traced))
    env.m.dev.raise_irq(0)
    r = run_at(env, 0, "nop\nsti\nmov ebx, 1\nmov ecx, 2\nmov edx, 3")
    assert r.reason == "poweroff" and env.vector == TIMER_VEC
    assert env.frame(1) == [CODE + 2 + 5]          # after the instruction following sti
    assert env.m.cpu.ebx == 1 and env.m.cpu.ecx != 2


def test_popfd_enabling_interrupts_delivers_a_pending_irq_right_after():
    env = Env()
    env.m.dev.raise_irq(0)
    r = run_at(env, 0, "push 0x202\npopfd\nmov ebx, 1")
    assert r.reason == "poweroff" and env.vector == TIMER_VEC
    assert env.frame(1) == [CODE + len(asm("push 0x202\npopfd"))] and env.m.cpu.ebx != 1


def test_hlt_with_interrupts_off_stops_with_halt():
    env = timer_env()
    r = run_at(env, 0, "mov eax, 10\nout 0x40, eax\nhlt")
    assert r.reason == "halt" and r.steps == 3 and "interrupt" in r.detail


def test_hlt_with_interrupts_on_but_nothing_armed_stops_with_halt():
    env = Env()
    r = run_at(env, 0, "sti\nhlt")
    assert r.reason == "halt"


def test_hlt_waiting_for_a_masked_timer_stops_instead_of_hanging():
    env = timer_env()
    r = run_at(env, 0, "mov al, 1\nout 0x21, al\nmov eax, 10\nout 0x40, eax\nsti\nhlt",
               steps=1000)
    assert r.reason == "halt"


def test_hlt_waiting_for_a_timer_blocked_by_its_own_missing_eoi_stops():
    # the handler never sends EOI and returns to a loop of hlt: IRQ 0 stays in service
    env = timer_env(NO_EOI_HANDLER)
    r = run_at(env, 0, "mov eax, 10\nout 0x40, eax\nsti\n1: hlt\njmp 1b", steps=1000)
    assert r.reason == "halt" and ticks(env) == 1


def test_interrupt_from_ring3_idle_loop_goes_to_ring0_and_back():
    env = timer_env()
    env.gate(0x80, 0x3100, dpl=3)
    env.code(0x3100, "mov eax, 50\nout 0x40, eax\niretd")
    r = run_at(env, 3, "int 0x80\n1: inc ebx\njmp 1b", eflags=0x2 | IF, steps=300)
    assert r.reason == "max_steps" and ticks(env) >= 4 and env.m.cpu.cpl == 3
    evs = env.m.trace.of("interrupt")
    assert all(e.from_ring == 3 and e.to_ring == 0 for e in evs)


def test_attached_hooks_see_ring_changes_and_can_take_a_software_interrupt():
    from vmkit.machine.hooks import MachineHooks

    class Hooks(MachineHooks):
        def __init__(self):
            self.rings, self.taken = [], []

        def on_ring_change(self, old, new, cause):
            self.rings.append((old, new, cause))

        def on_exception(self, vector, fault, source, next_eip):
            if vector != 0x81:
                return False
            self.taken.append((source, next_eip))
            env.m.cpu.regs[2] = 7            # edx: the "monitor" answered
            env.m.cpu.eip = next_eip
            return True

    env = timer_env()
    env.gate(0x80, 0x3100, dpl=3)
    env.gate(0x81, 0x3200, dpl=3)
    env.code(0x3100, "iretd")
    hooks = Hooks()
    env.m.attach(hooks)
    r = run_at(env, 3, "int 0x80\nint 0x81\n1: jmp 1b", steps=50)
    assert r.reason == "max_steps" and env.m.cpu.regs[2] == 7
    assert hooks.rings == [(0, 3, "test set-up"), (3, 0, "interrupt"), (0, 3, "iret")]
    assert hooks.taken == [("int", CODE + 4)]          # two bytes per int n
    assert env.m.hooks is hooks


def test_attach_rejects_what_is_not_machine_hooks():
    with pytest.raises(VmkitError, match="expected a MachineHooks, got function"):
        Machine().attach(lambda *a: True)


def test_an_event_policy_hook_replaces_the_machines_rule_until_detached():
    """Does a hook's page_fault stand in for the machine's (here: CR2 kept, as a #PF that
    exits in VMX non-root mode), with super() the machine's own, and go away with another
    attach?"""
    from vmkit.machine.hooks import MachineHooks

    class KeepCR2(MachineHooks):
        def __init__(self):
            self.seen = []

        def page_fault(self, lin, err, refs):
            self.seen.append((lin, err))
            cr2 = self.host.cpu.cr2
            try:
                super().page_fault(lin, err, refs)
            finally:
                self.host.cpu.cr2 = cr2

    env = Env()
    env.enable_paging()                        # 0-4 MiB identity-mapped
    env.m.cpu.cr2 = 0x1234
    hooks = KeepCR2()
    env.m.attach(hooks)
    assert hooks.host is env.m
    with pytest.raises(Fault):
        env.m.lin_read(0x00C00000, 4)          # not mapped
    assert hooks.seen == [(0x00C00000, 0)] and env.m.cpu.cr2 == 0x1234
    assert env.m.page_fault == hooks.page_fault
    env.m.attach(MachineHooks())
    with pytest.raises(Fault):
        env.m.lin_read(0x00C00000, 4)
    assert env.m.cpu.cr2 == 0x00C00000 and len(hooks.seen) == 1
    assert "page_fault" not in vars(env.m)


def test_port_hooks_answer_before_the_devices_and_request_exit_ends_the_run():
    """Do port_read/port_write take the ports they answer for (the others reach the devices),
    and does request_exit() from a hook make run() come back with reason "vmm"?"""
    from vmkit.machine.hooks import MachineHooks

    class Ports(MachineHooks):
        def __init__(self):
            self.written = []

        def port_read(self, port, size):
            return 0x2A if port == 0x99 else None

        def port_write(self, port, size, value):
            if port != 0x99:
                return False
            self.written.append(value)
            self.host.request_exit()
            return True

    env = Env()
    hooks = Ports()
    env.m.attach(hooks)
    r = run_at(env, 0, "in al, 0x99\nout 0x99, al\nout 0xe9, al\n1: jmp 1b", steps=50)
    assert r.reason == "vmm" and hooks.written == [0x2A] and env.m.console == ""
    r = env.m.run(max_steps=5)
    assert r.reason == "max_steps" and env.m.console == "*"


# ---------------------------------------------------------------------------------------------
# the input device
# ---------------------------------------------------------------------------------------------

def test_input_device_polled_through_status_and_data_ports():
    env = Env(input=b"hi!")
    src = """
    1:  in al, 0x64
        test al, 1
        jz 2f
        in al, 0x60
        out 0xe9, al
        jmp 1b
    2:  in al, 0x60
        mov ebx, eax
        xor eax, eax
        out 0xf4, eax
    """
    r = run_at(env, 0, src)
    assert r.reason == "poweroff" and env.m.console == "hi!" and env.m.cpu.bl == 0


def test_input_device_is_polled_and_raises_no_interrupt():
    env = Env(input=b"ok")
    r = run_at(env, 0, "sti\n1: hlt\njmp 1b")
    assert r.reason == "halt" and not irq_events(env.m)
    assert env.m.dev.input_waiting


def test_input_bytes_are_kept_in_snapshots():
    env = Env(input=b"abc")
    m = env.m
    run_at(env, 0, "in al, 0x60\nin al, 0x60\nmov bl, al\nin al, 0x60", steps=1)
    snap = m.snapshot()
    m.run(max_steps=3)
    assert (m.cpu.bl, m.cpu.al) == (ord("b"), ord("c"))
    m.restore(snap)
    m.run(max_steps=3)
    assert (m.cpu.bl, m.cpu.al) == (ord("b"), ord("c"))


# ---------------------------------------------------------------------------------------------
# snapshots
# ---------------------------------------------------------------------------------------------

SNAP_PROGRAM = """
    mov eax, 37
    out 0x40, eax
    sti
    xor ecx, ecx
1:  inc ecx
    mov eax, ecx
    and eax, 0x1f
    add eax, 0x40
    out 0xe9, al
    mov [0x9f000 + ecx * 4], ecx
    rdtsc
    mov [0x8400], eax
    cmp ecx, 3000
    jne 1b
    mov eax, 0
    out 0xf4, eax
"""


def _state(m: Machine):
    return (m.cpu.state(), hashlib.sha256(m.mem).hexdigest(), m.console, m.clock, m.steps,
            m.dev)


def test_snapshot_restore_round_trip_is_identical():
    env = timer_env()
    m = env.m
    run_at(env, 0, SNAP_PROGRAM, steps=777)
    snap = m.snapshot()
    m.run(max_steps=1234)
    m.restore(snap)
    again = m.snapshot()
    assert again.memory == snap.memory
    assert again.cpu == snap.cpu
    assert again.devices == snap.devices
    assert again.clock == snap.clock
    assert again.extra["steps"] == snap.extra["steps"]


def test_continuing_after_restore_gives_the_same_result():
    env = timer_env()
    m = env.m
    run_at(env, 0, SNAP_PROGRAM, steps=999)
    snap = m.snapshot()
    r1 = m.run(max_steps=50_000)
    first = _state(m), irq_events(m)
    m.restore(snap)
    r2 = m.run(max_steps=50_000)
    assert (r1.reason, r1.steps) == (r2.reason, r2.steps) == ("poweroff", r1.steps)
    assert (_state(m), irq_events(m)) == first


def test_restoring_twice_from_one_snapshot_gives_the_same_result():
    env = timer_env()
    m = env.m
    run_at(env, 0, SNAP_PROGRAM, steps=300)
    snap = m.snapshot()
    m.run(max_steps=2000)
    a = _state(m)
    m.restore(snap)
    m.run(max_steps=2000)
    m.restore(snap)
    m.run(max_steps=2000)
    assert _state(m) == a


def test_snapshot_keeps_a_stale_tlb_entry_stale():
    env = Env(paging=True)
    m = env.m
    m.write(0x200000, struct.pack("<I", 0x1111))
    m.write(0x201000, struct.pack("<I", 0x2222))
    src = f"""
        mov eax, [0x200000]
        mov dword ptr [{env.pte_addr(0x200000)}], {0x201000 | 7}
        mov ebx, [0x200000]
    """
    run_at(env, 0, src, steps=2)
    snap = m.snapshot()
    m.run(max_steps=1)
    assert m.cpu.ebx == 0x1111                      # stale TLB: architectural
    m.restore(snap)
    m.run(max_steps=1)
    assert m.cpu.ebx == 0x1111


def test_snapshot_of_a_halted_machine_waiting_for_the_timer():
    env = timer_env()
    m = env.m
    run_at(env, 0, "mov eax, 100\nout 0x40, eax\nsti\n1: hlt\njmp 1b", steps=4)
    assert m.cpu.halted
    snap = m.snapshot()
    m.run(max_steps=20)
    a = _state(m)
    m.restore(snap)
    assert m.cpu.halted
    m.run(max_steps=20)
    assert _state(m) == a


def test_restore_of_another_machines_snapshot_raises():
    a, b = Machine(), Machine()
    with pytest.raises(VmkitError, match="snapshot"):
        b.restore(a.snapshot())


def test_restore_of_something_else_raises():
    with pytest.raises(VmkitError):
        Machine().restore({"cpu": ()})


# ---------------------------------------------------------------------------------------------
# bad API input and run() bookkeeping
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [123, 0, -4096, 4097, 3 << 30, "4M", 4.0 * (1 << 20), None])
def test_bad_memory_size_raises_vmkit_error(size):
    with pytest.raises(VmkitError, match="memory_size"):
        Machine(memory_size=size)


@pytest.mark.parametrize("steps", [-1, "10", 1.5, None])
def test_bad_max_steps_raises_vmkit_error(steps):
    m = Machine()
    with pytest.raises(VmkitError, match="max_steps"):
        m.run(max_steps=steps)


def test_run_with_zero_steps_does_nothing():
    env = Env()
    r = run_at(env, 0, "nop", steps=0)
    assert r.reason == "max_steps" and r.steps == 0 and env.m.cpu.eip == CODE


def test_load_beyond_memory_raises_vmkit_error():
    m = Machine(memory_size=1 << 16)
    with pytest.raises(VmkitError):
        m.load(b"\x90" * 16, address=0xFFF8)


def test_step_runs_one_instruction_and_returns_its_events():
    env = Env()
    env.code(CODE, "mov al, 0x41\nout 0xe9, al")
    env.enter(0, CODE)
    assert env.m.step() == [] and env.m.cpu.eip == CODE + 2
    evs = env.m.step()
    assert [e.kind for e in evs] == ["io"] and evs[0].port == 0xE9
    assert env.m.steps == 2 and env.m.clock == 2


def test_run_result_reasons_are_the_documented_ones():
    assert set(RunResult.REASONS) >= {"halt", "poweroff", "max_steps", "breakpoint", "crash"}


def test_breakpoint_stops_before_the_instruction():
    env = Env()
    env.code(CODE, "nop\nnop\nmov ebx, 1\nnop")
    env.enter(0, CODE)
    env.m.breakpoints.add(CODE + 2)
    r = env.m.run(max_steps=100)
    assert r.reason == "breakpoint" and r.eip == CODE + 2 and env.m.cpu.ebx != 1
    r = env.m.run(max_steps=1)
    assert env.m.cpu.ebx == 1


def test_a_crash_is_a_run_result_not_an_exception():
    m = Machine()
    m.write(0x1000, asm("xor ecx, ecx\ndiv ecx"))
    m.cpu.eip = 0x1000
    r = m.run(max_steps=10)
    assert r.reason == "crash" and "#DE" in r.detail and r.eip == 0x1002


_ = (KCODE, UCODE, STUBS, POWEROFF)


def test_trace_events_carry_the_same_guest_time_with_and_without_instruction_tracing():
    """int/iretd, port I/O, ring changes and page faults in the middle of long runs of plain
    instructions are stamped with the exact guest time whether or not every instruction is
    traced (the fast path brings its clocks up to date only at the end of a burst)."""
    def once(trace):
        env = timer_env(trace=trace, paging=True)
        env.set_pte(0x300000, 0)
        skip = len(asm("mov dword ptr [0x300000], 0"))
        env.code(0x3100, f"add esp, 4\nadd dword ptr [esp], {skip}\niretd")
        env.gate(14, 0x3100)                          # #PF handler: skip the faulting mov
        env.code(0x3200, "inc edi\niretd")
        env.gate(0x80, 0x3200, dpl=3)
        env.allow_ports(0xE9)
        src = """
            mov ecx, 40
        1:  add eax, ecx
            xor ebx, eax
            mov esi, [0x8320]
            int 0x80
            rdtsc
            out 0xe9, al
            add eax, ecx
            xor ebx, eax
            mov dword ptr [0x300000], 0
            dec ecx
            jnz 1b
            jmp $
        """
        r = run_at(env, 3, src, steps=1200)
        assert r.reason == "max_steps" and env.m.cpu.ecx == 0
        return ([(e.kind, e.step) for e in env.m.trace if e.kind != "instruction"],
                env.m.cpu.state(), env.m.tlb_misses, env.m.walk_refs, env.m.console)
    fast, traced = once(Trace()), once(Trace(instructions=True))
    assert {k for k, _ in fast[0]} >= {"interrupt", "iret", "io", "ring", "page_fault"}
    assert fast == traced


@pytest.mark.parametrize("data", ["text", 5, [1, 2]])
def test_input_that_is_not_bytes_raises_vmkit_error(data):
    with pytest.raises(VmkitError, match="input"):
        Machine(input=data)


def test_rdtsc_after_hlt_includes_the_idle_time():
    env = timer_env()
    src = """
        mov eax, 1000
        out 0x40, eax
        sti
        hlt
        rdtsc
        cli
        hlt
    """
    r = run_at(env, 0, src)
    assert r.reason == "halt"
    # woke at guest time 1001, the handler ran 6 instructions, then rdtsc
    assert env.m.cpu.eax == 1001 + 6


def test_every_event_class_is_made_as_its_dataclass_would_make_it():
    """Do the trace events' fast constructors take the dataclass's arguments (same names,
    defaults, keyword-only ``vm``), give equal, frozen events, and refuse what it refuses?"""
    import dataclasses
    import inspect

    import vmkit.trace as tr

    classes = [c for c in vars(tr).values()
               if isinstance(c, type) and issubclass(c, tr.Event) and c is not tr.Event]
    assert len(classes) == len(tr.EVENT_KINDS)
    for cls in classes:
        sig = inspect.signature(cls.__init__)
        assert [p.name for p in sig.parameters.values()][1:] == \
            [f.name for f in dataclasses.fields(cls) if not f.kw_only] + ["vm"]
        e = cls(7, vm=2)
        for f in dataclasses.fields(cls):
            want = 7 if f.name == "step" else 2 if f.name == "vm" else f.default
            assert getattr(e, f.name) == want, (cls.__name__, f.name)
        assert e == cls(7, vm=2) and e != cls(8, vm=2) and e.kind == cls.kind
        with pytest.raises(dataclasses.FrozenInstanceError):
            e.step = 1
        with pytest.raises(TypeError):
            cls(7, *range(len(sig.parameters)))      # one positional argument too many


def test_a_gone_machine_s_memory_serves_the_next_one_as_if_new_unless_still_referred_to(
        monkeypatch):
    """Memory of a collected machine is reused (filled with 0xAA again), never while anything
    else still refers to it (a memoryview, a name); no more than _SPARE_BYTES are kept."""
    import gc

    from vmkit.machine import mmu
    gc.collect()
    monkeypatch.setattr(mmu, "_SPARE", {})
    monkeypatch.setattr(mmu, "_spare_total", 0)
    size = 5 << 20      # a size no other test's machines have
    fresh = bytes(Machine(size).mem)
    gc.collect()
    old = [Machine(size) for _ in range(3)]
    for m in old:
        m.mem[:] = b"\x5C" * size       # a guest wrote everywhere
    kept = memoryview(old[0].mem)       # still looked at
    held = old[1].mem                   # still named
    reused = id(old[2].mem)             # (a name would keep it from being reused)
    ids = {id(m.mem) for m in old}
    del old, m
    gc.collect()
    assert reused in {id(x) for x in mmu._SPARE[size]}
    new = [Machine(size) for _ in range(3)]
    assert reused in {id(m.mem) for m in new} and reused not in map(id, mmu._SPARE[size])
    assert not any(m.mem is held or m.mem is kept.obj for m in new)
    assert all(bytes(m.mem) == fresh for m in new)
    assert held == b"\x5C" * size and kept[0] == 0x5C and len(ids) == 3
    del new
    gc.collect()
    assert 0 < mmu._spare_total <= mmu._SPARE_BYTES
    assert mmu._spare_total == sum(map(len, mmu._SPARE[size]))
