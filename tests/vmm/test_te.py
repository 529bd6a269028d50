"""TrapAndEmulate: the guest kernel in ring 1 under a ring-0 VMM (vmkit/vmm/te.py).

Equivalence with Native for every guest but the nonvirt- demonstrations, the mechanisms one by
one (ring 1, emulation, reflection, hidden page faults, the virtual IF), several VMs with
isolation, and what happens on bad input."""

from __future__ import annotations


import pytest

import vmkit
from vmkit import guests
from vmkit.vmm import MONITORS, Native, TrapAndEmulate
from vmkit.vmm.te import VMM_WINDOW
from equivalence import MAX_STEPS, OWN_KERNEL, SMALL, build, digest, guest_state, run_native
from guest_programs import scribbler as make_scribbler
from guest_programs import triple_fault

EQUIVALENT = [n for n in guests.names()
              if not n.startswith("nonvirt-") and not guests.spec(n).paravirtual_only]


def run_te(*imgs, **kw):
    vm = TrapAndEmulate(*imgs, **kw)
    r = vm.run(max_steps=MAX_STEPS * len(imgs))
    return vm, r


# ---- equivalence (Popek & Goldberg) ---------------------------------------------------------
@pytest.mark.parametrize("name", EQUIVALENT)
def test_guest_under_te_matches_native(name):
    """Same console, CPU state as the guest sees it, guest memory and instruction count?"""
    img = build(name)
    nat, rn = run_native(img)
    te, rt = run_te(img)
    assert rn.reason == "poweroff", rn
    assert rt.reason == rn.reason, rt
    assert te.console == nat.console
    if img.expected is not None:
        assert te.console == img.expected
    assert guest_state(te.vcpu) == guest_state(nat.machine.cpu)
    assert digest(te.vms[0].memory()) == digest(bytes(nat.machine.mem))
    assert te.vms[0].steps == nat.machine.steps      # guest time: timer ticks land alike
    assert te.vms[0].devices.ticks == nat.machine.dev.ticks


def test_te_is_registered_under_its_short_name():
    assert MONITORS["te"] is TrapAndEmulate and TrapAndEmulate.name == "te"


# ---- the mechanisms --------------------------------------------------------------------------
def test_kernel_runs_in_ring_1_while_the_guest_believes_ring_0():
    img = build("syscall")
    te = TrapAndEmulate(img)
    te.breakpoints.add(img.symbols["do_syscall"])
    r = te.run(max_steps=MAX_STEPS)
    assert r.reason == "breakpoint" and te.vcpu.eip == img.symbols["do_syscall"]
    assert te.cpu.cpl == 1 and te.vcpu.cpl == 0
    assert te.cpu.cs == 0x09 and te.vcpu.cs == 0x08          # real RPL 1, believed 0
    assert te.cpu.ss == 0x11 and te.vcpu.ss == 0x10
    assert te.cpu.eflags & 0x200 and not te.vcpu.IF          # real IF on, virtual IF off
    assert te.cpu.gdtr.base == VMM_WINDOW                     # the VMM's tables are the real ones
    assert te.vcpu.gdtr.base == img.symbols["gdt"]
    te.breakpoints.clear()
    assert te.run(max_steps=MAX_STEPS).reason == "poweroff"


def test_user_mode_runs_in_ring_3_with_virtual_interrupts_on():
    """After the kernel's iretd to ring 3 (which does not trap), is the virtual IF the one the
    iretd popped?"""
    img = build("syscall")
    te = TrapAndEmulate(img)
    te.breakpoints.add(img.programs["syscall"].symbols["_start"])
    assert te.run(max_steps=MAX_STEPS).reason == "breakpoint"
    assert te.cpu.cpl == 3 and te.vcpu.cpl == 3
    assert te.vcpu.IF == 1 and te.vcpu.cs == 0x1B


def test_privileged_instructions_of_the_syscall_guest_are_emulated():
    img = build("syscall")
    nat, _ = run_native(img)
    te, _ = run_te(img)
    em = te.stats["emulated"]
    assert {"cli", "lgdt", "lidt", "ltr", "mov", "out"} <= set(em)
    assert em["out"] + em["in"] == nat.stats["port_io"]        # every port access trapped
    assert te.stats["traps"] >= sum(em.values()) + te.stats["reflected"]["int 0x80"]
    native_syscalls = sum(1 for e in nat.trace.of("interrupt") if e.vector == 0x80)
    assert te.stats["reflected"]["int 0x80"] == native_syscalls > SMALL["syscall"]["iterations"]
    assert len(te.trace.of("emulate")) and len(te.trace.of("reflect"))
    cycles = te.cycles
    assert cycles["trap"] > 0 and cycles["emulate"] > 0 and cycles["native"] > 0
    assert sum(cycles.values()) > sum(nat.cycles.values())


def test_hidden_page_faults_are_invisible_to_the_guest():
    """Does the guest's own page-fault handler run exactly as often as under Native?"""
    img = build("pagefault")
    nat, _ = run_native(img)
    te, _ = run_te(img)
    assert te.stats["hidden_page_faults"] > 0
    addr = img.symbols["demand_faults"]
    assert te.vms[0].phys_read(addr, 4) == nat.machine.read(addr, 4)   # same name, same bytes
    assert te.vms[0].phys_read_uint(addr, 4) == SMALL["pagefault"]["pages"]
    assert te.stats["reflected"]["#PF"] == nat.stats["page_faults"]


POPF = """
_start:
    sti                     # virtual IF := 1 (sti traps and is emulated)
    pushfd
    pop eax
    and eax, ~0x200
    push eax
popf_here:
    popfd                   # natively IF := 0; at CPL 1 > IOPL 0 IF stays, and nothing traps
    pushfd
    pop ebx
    out 0xF4, al
"""


def test_popfd_in_ring1_leaves_if_set():
    """Does the deprivileged kernel's popfd drop IF silently, with no trap to tell the VMM?"""
    img = guests.from_source(POPF, name="popf")
    te = TrapAndEmulate(img)
    te.breakpoints.add(img.symbols["popf_here"])
    assert te.run(max_steps=100).reason == "breakpoint"
    before = dict(te.stats)
    te.step()                                          # the popfd
    assert te.vcpu.eip == img.symbols["popf_here"] + 1
    assert te.stats["traps"] == before["traps"]        # no trap: the VMM never knew
    assert te.cpu.eflags & 0x200                       # the real IF is still set
    assert te.vcpu.IF == 1                             # and so the virtual one stays stale
    te.breakpoints.clear()
    te.run(max_steps=100)
    nat = Native(img)
    nat.run(max_steps=100)
    assert nat.machine.cpu.ebx & 0x200 == 0            # natively pushfd shows IF cleared
    assert te.vcpu.ebx & 0x200                         # under te it does not


def test_replacing_a_handler_changes_only_that_monitor():
    img = build("hello")
    te = TrapAndEmulate(img)
    seen = []

    def loud_cli(vm, insn):
        seen.append(insn.address)
        vm.vcpu.IF = 0
        vm.devices.write(0xE9, 1, ord("!"), vm.clock)
    te.emulate["cli"] = loud_cli
    te.run(max_steps=MAX_STEPS)
    assert seen == [img.entry]
    assert te.console == "!" + img.expected
    assert TrapAndEmulate.emulate["cli"] is not loud_cli
    other = TrapAndEmulate(img)
    other.run(max_steps=MAX_STEPS)
    assert other.console == img.expected


def test_missing_handler_ends_the_vm_with_the_instruction_and_address():
    img = build("hello")
    te = TrapAndEmulate(img)
    del te.emulate["lidt"]
    r = te.run(max_steps=MAX_STEPS)
    assert r.reason == "crash"
    assert "lidt" in r.detail and f"{te.vcpu.eip:#010x}" in r.detail
    assert r.instruction.startswith("lidt")


def test_a_failing_handler_ends_the_vm_not_the_program():
    def broken(vm, insn):
        raise ZeroDivisionError("student bug")
    te = TrapAndEmulate(build("hello"))
    te.emulate["cli"] = broken
    r = te.run(max_steps=MAX_STEPS)
    assert r.reason == "crash" and "ZeroDivisionError" in r.detail


def test_step_reports_traps_emulations_and_reflections():
    te = TrapAndEmulate(build("hello"))
    kinds = [e.kind for _ in range(3) for e in te.step()]
    assert "emulate" in kinds and "interrupt" in kinds
    assert te.stats["instructions"] == 3


def test_snapshot_and_restore_replay_the_same_run():
    te = TrapAndEmulate(build("ctxswitch"))
    te.run(max_steps=5000)
    snap = te.snapshot()
    te.run(max_steps=MAX_STEPS)
    first = (te.console, digest(te.vms[0].memory()), te.stats["traps"])
    te.restore(snap)
    te.run(max_steps=MAX_STEPS)
    assert (te.console, digest(te.vms[0].memory()), te.stats["traps"]) == first


SEGMENTS = """
# Loads the boot GDT's selectors, whose accessed bits are clear: the CPU sets them in the guest's
# table (under te through the VMM: the shadow GDT is read-only). mov ss and retf to RPL 0 trap.
_start:
    mov ax, 0x10
    mov ds, ax
    push 0x10
    pop es
    ljmp 0x08, next
next:
    lcall 0x08, sub
    mov ss, ax
    push 0x08
    push offset done
    retf
done:
    mov eax, [0x80D]
    out 0xF4, al
sub:
    retf
"""


@pytest.mark.parametrize("source", [OWN_KERNEL, SEGMENTS], ids=["own-kernel", "segments"])
def test_bare_metal_kernel_under_te_matches_native(source):
    """sti/hlt/cli, ticks held while IF is clear, an iretd to ring 0, segment loads that set
    accessed bits: same state, memory and guest time as Native?"""
    img = guests.from_source(source, name="bare")
    nat = Native(img)
    rn = nat.run(max_steps=100_000)
    te = TrapAndEmulate(img)
    rt = te.run(max_steps=100_000)
    assert rn.reason == rt.reason == "poweroff"
    assert guest_state(te.vcpu) == guest_state(nat.machine.cpu)
    assert digest(te.vms[0].memory()) == digest(bytes(nat.machine.mem))
    assert (te.vms[0].steps, te.vms[0].clock) == (nat.machine.steps, nat.machine.clock)


# ---- several VMs ---------------------------------------------------------------------------
def test_several_vms_each_print_their_solo_output():
    names = ["ctxswitch", "syscall", "pagefault"]
    solo = {}
    for n in names:
        t, _ = run_te(build(n))
        solo[n] = (t.console, digest(t.vms[0].memory()), t.vms[0].steps)
    te, r = run_te(*(build(n) for n in names), slice=3000)
    assert r.reason == "poweroff"
    assert te.stats["world_switches"] > 0 and te.trace.counts["world_switch"] > 0
    for n, vm in zip(names, te.vms):
        assert vm.result.reason == "poweroff"
        assert (vm.console, digest(vm.memory()), vm.steps) == solo[n], n


def test_triple_fault_ends_one_vm_while_the_other_finishes():
    crash = triple_fault()
    hello = build("hello")
    te, r = run_te(crash, hello, slice=500)
    assert te.vms[0].result.reason == "crash"
    assert "triple fault" in te.vms[0].result.detail
    assert te.vms[1].result.reason == "poweroff" and te.vms[1].console == hello.expected


def test_scribbler_cannot_reach_another_vm():
    """A guest that writes all its memory and probes beyond it: does the other VM notice?"""
    scribbler = make_scribbler()
    other = build("syscall")
    solo, _ = run_te(other)
    for order in ((scribbler, other), (other, scribbler)):
        te, r = run_te(*order, slice=4000)
        s, o = (te.vms[0], te.vms[1]) if order[0] is scribbler else (te.vms[1], te.vms[0])
        assert s.result.reason == "poweroff" and s.console == "0"    # no leaks seen
        assert o.result.reason == "poweroff"
        assert o.console == solo.console
        assert digest(o.memory()) == digest(solo.vms[0].memory())
        assert te.stats["world_switches"] > 0
    mem = s.memory()
    assert mem[0x800:0x1000] == b"\x5A" * 0x800 and mem[-4:] == b"\x5A" * 4
    nat = Native(scribbler)
    nat.run(max_steps=MAX_STEPS)
    assert nat.console == "0"
    assert digest(bytes(nat.machine.mem)) == digest(mem)


def test_hidden_faults_inside_rep_do_not_change_guest_time():
    """The scribbler's 1 MiB rep stosd takes hidden page faults under te: is its guest time
    still Native's, instruction for instruction?"""
    scribbler = make_scribbler()
    nat, te = Native(scribbler), TrapAndEmulate(scribbler)
    rn, rt = nat.run(max_steps=MAX_STEPS), te.run(max_steps=MAX_STEPS)
    assert te.stats["hidden_page_faults"] > 100
    assert rn.steps == rt.steps and nat.stats["instructions"] == te.stats["instructions"]


# ---- bad input ----------------------------------------------------------------------------
def test_bad_slice_is_refused():
    with pytest.raises(vmkit.VmkitError):
        TrapAndEmulate(build("hello"), slice=0)


def test_unsupported_lldt_ends_the_vm_with_a_reason():
    img = guests.from_source("""
_start:
    mov ax, 0x10
    lldt ax
    out 0xF4, al
""", name="lldt")
    te, r = run_te(img)
    assert r.reason == "crash" and "lldt" in r.detail and "0x" in r.detail
