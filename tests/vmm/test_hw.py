"""HardwareAssisted: the guest kernel in VMX non-root ring 0 under a VT-x-like monitor
(vmkit/vmm/hw.py).

Equivalence with Native for every guest, the nonvirt- demonstrations included (non-root mode
runs them on the guest's own state), under nested paging, lazily filled EPT and shadow paging;
then the mechanisms one by one: exits with Intel's reason numbers and qualifications, the 2-D
walk, read shadows, event injection at the native instruction, controls, exits during event
delivery, several VMs, bad input."""

from __future__ import annotations

from collections import Counter

import pytest

import vmkit
from vmkit import guests
from vmkit.trace import Trace
from vmkit.vmm import MONITORS, HardwareAssisted, Native
from vmkit.vmm.hw import (EXIT_NUMBERS, EXIT_REASONS, INTR_VALID, REQUIRED_IO_EXITS,
                          VmcsControls)
from equivalence import MAX_STEPS, OWN_KERNEL, SMALL, build, digest, guest_state, run_native
from guest_programs import scribbler as make_scribbler
from guest_programs import triple_fault

MODES = {"ept": {}, "lazy-ept": {"lazy_ept": True}, "shadow": {"ept": False}}


def run_hw(*imgs, max_steps=MAX_STEPS, **kw):
    vm = HardwareAssisted(*imgs, **kw)
    return vm, vm.run(max_steps=max_steps * len(imgs))


def assert_equivalent(hw, nat, img=None):
    assert hw.console == nat.console
    if img is not None and img.expected is not None:
        assert hw.console == img.expected
    assert guest_state(hw.vcpu) == guest_state(nat.machine.cpu)
    assert digest(hw.vms[0].memory()) == digest(bytes(nat.machine.mem))
    assert hw.vms[0].steps == nat.machine.steps              # guest time: ticks land alike
    assert hw.vms[0].devices.ticks == nat.machine.dev.ticks


# ---- equivalence: every guest, the nonvirt- ones too ----------------------------------------
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", [n for n in guests.names()
                                  if not guests.spec(n).paravirtual_only])
def test_guest_under_hw_matches_native(name, mode):
    """Same console, guest-visible CPU state, guest memory and guest time as Native -- also
    for the nonvirt- guests, which non-root ring 0 runs on their own GDT, IDT, IF and CR0?"""
    img = build(name)
    nat, rn = run_native(img)
    hw, rh = run_hw(img, **MODES[mode])
    assert rn.reason == "poweroff", rn
    assert rh.reason == rn.reason, rh
    assert_equivalent(hw, nat, img)


def test_hw_is_registered_under_its_short_name():
    assert MONITORS["hw"] is HardwareAssisted and HardwareAssisted.name == "hw"


# ---- non-root ring 0 ------------------------------------------------------------------------
def test_kernel_runs_in_nonroot_ring0_on_its_own_tables():
    img = build("syscall")
    hw = HardwareAssisted(img)
    hw.breakpoints.add(img.symbols["do_syscall"])
    r = hw.run(max_steps=MAX_STEPS)
    assert r.reason == "breakpoint" and hw.cpu.eip == img.symbols["do_syscall"]
    assert hw.vmx_mode == "non-root"
    assert hw.cpu.cpl == 0 and hw.vcpu.cpl == 0 and hw.cpu.cs == 0x08   # ring 0, no RPL games
    assert hw.cpu.gdtr.base == img.symbols["gdt"]              # the guest's tables are real
    assert hw.cpu.idtr.base == img.symbols["idt"]
    assert not hw.cpu.eflags & 0x200                            # the real IF is the guest's
    # the real CR0/CR4 carry what VMX operation needs; the read shadows hide it
    assert hw.cpu.cr0 & 0x20 and not hw.vcpu.cr0 & 0x20         # CR0.NE
    assert hw.cpu.cr4 & (1 << 13) and hw.vcpu.cr4 == 0          # CR4.VMXE
    hw.breakpoints.clear()
    assert hw.run(max_steps=MAX_STEPS).reason == "poweroff"


def test_user_code_runs_in_nonroot_ring3():
    img = build("syscall")
    hw = HardwareAssisted(img)
    hw.breakpoints.add(img.programs["syscall"].symbols["_start"])
    assert hw.run(max_steps=MAX_STEPS).reason == "breakpoint"
    assert hw.cpu.cpl == 3 and hw.cpu.cs == 0x1B and hw.vcpu.IF == 1
    assert hw.vmx_mode == "non-root"


@pytest.mark.parametrize("name", [n for n in guests.names() if n.startswith("nonvirt-")])
def test_nonvirt_guest_shows_its_native_answer_without_any_exit_for_it(name):
    """pushfd/popfd, push cs, sgdt/sidt, lar and smsw do not exit at all, and still give the
    native answer: the CPU state they read is the guest's."""
    img = build(name)
    hw, r = run_hw(img)
    assert hw.console == img.expected
    assert set(hw.stats["vm_exits"]) <= {"CR_ACCESS", "IO_INSTRUCTION", "EXTERNAL_INTERRUPT",
                                         "INTERRUPT_WINDOW"}


# ---- exits: Intel's numbers, names, qualifications --------------------------------------------
def test_exit_reasons_have_intels_basic_numbers():
    expected = {"EXCEPTION_NMI": 0, "EXTERNAL_INTERRUPT": 1, "TRIPLE_FAULT": 2,
                "INTERRUPT_WINDOW": 7, "CPUID": 10, "HLT": 12, "INVLPG": 14, "RDTSC": 16,
                "CR_ACCESS": 28, "IO_INSTRUCTION": 30, "EPT_VIOLATION": 48,
                "PREEMPTION_TIMER": 52}
    for name, number in expected.items():
        assert EXIT_NUMBERS[name] == number and EXIT_REASONS[number] == name


def test_io_guest_exits_mostly_for_io_with_port_size_and_direction_in_the_qualification():
    img = build("io")
    nat, _ = run_native(img)
    hw = HardwareAssisted(img)
    quals = []
    hw.on("vm_exit", lambda e: quals.append(e.qualification) if e.reason == 30 else None)
    hw.run(max_steps=MAX_STEPS)
    exits = hw.stats["vm_exits"]
    assert exits.most_common(1)[0][0] == "IO_INSTRUCTION"
    assert exits["IO_INSTRUCTION"] == nat.stats["port_io"] > SMALL["io"]["bytes"]
    ports = Counter(q >> 16 for q in quals)
    assert set(ports) <= {0x20, 0x21, 0x40, 0x60, 0x64, 0xE9, 0xF4}
    assert all(q & 8 for q in quals if q >> 16 in (0x60, 0x64))        # IN
    assert all(not q & 8 for q in quals if q >> 16 == 0xE9)           # OUT
    assert all(q & 7 == 0 for q in quals if q >> 16 in (0x60, 0xE9))  # 1 byte
    assert any(q & 7 == 3 for q in quals if q >> 16 == 0x40)          # 4 bytes (out 0x40, eax)
    assert hw.cycles["vm_exit"] == exits.total() * hw.costs.vm_exit


CPUID = """
_start:
    xor eax, eax
    cpuid                   # always exits: the VMM answers
    mov [vendor], ebx
    mov [vendor + 4], edx
    mov [vendor + 8], ecx
    mov eax, 1
    cpuid
    out 0xF4, al
.data
vendor: .space 12
"""


def test_cpuid_always_exits_and_gives_the_native_answer():
    img = guests.from_source(CPUID, name="cpuid")
    nat, _ = run_native(img, 1000)
    hw, r = run_hw(img, max_steps=1000)
    assert r.reason == "poweroff"
    assert hw.stats["vm_exits"]["CPUID"] == 2
    assert guest_state(hw.vcpu) == guest_state(nat.machine.cpu)
    assert hw.vms[0].phys_read(img.symbols["vendor"], 4) == b"Vmki"
    hello, _ = run_hw(build("hello"))
    assert "CPUID" not in hello.stats["vm_exits"]             # only when the guest asks


def test_replacing_an_exit_handler_changes_only_that_monitor():
    img = guests.from_source(CPUID, name="cpuid")
    hw = HardwareAssisted(img)
    seen = []

    def my_cpuid(vm, vmcs):
        seen.append((vmcs.exit_reason, vmcs.exit_instruction_length))
        vm.vcpu.eax = vm.vcpu.ebx = vm.vcpu.ecx = vm.vcpu.edx = 0
    hw.handlers["CPUID"] = my_cpuid
    hw.run(max_steps=1000)
    assert seen == [(10, 2), (10, 2)]
    assert hw.vms[0].phys_read_uint(img.symbols["vendor"], 4) == 0
    assert HardwareAssisted.handlers["CPUID"] is not my_cpuid


def test_a_failing_exit_handler_ends_the_vm_not_the_program():
    def broken(vm, vmcs):
        raise ZeroDivisionError("student bug")
    hw = HardwareAssisted(build("hello"))
    hw.handlers["IO_INSTRUCTION"] = broken
    r = hw.run(max_steps=MAX_STEPS)
    assert r.reason == "crash" and "ZeroDivisionError" in r.detail
    assert r.instruction.startswith("out") and hw.cpu.eip == r.eip


INT3 = """
# int3 three times, with a #BP handler: with #BP in the exception bitmap each one exits, and the
# VMM reflects it as a software exception (the return address is after the int3)
_start:
    lidt [idt_ptr]
    mov eax, offset on_bp
    mov word ptr [idt + 3*8], ax
    mov word ptr [idt + 3*8 + 2], 0x08
    mov word ptr [idt + 3*8 + 4], 0xEE00
    shr eax, 16
    mov word ptr [idt + 3*8 + 6], ax
    int3
    int3
    int3
    mov eax, [hits]
    out 0xF4, eax
on_bp:
    inc dword ptr [hits]
    iretd
.data
.align 8
idt_ptr: .word 256*8 - 1
         .long idt
hits:    .long 0
.align 8
idt:     .space 256*8
"""


def test_int3_in_the_exception_bitmap_exits_and_is_reflected_as_a_software_exception():
    img = guests.from_source(INT3, name="int3")
    nat, _ = run_native(img, 1000)
    hw, r = run_hw(img, max_steps=1000, controls={"exception_bitmap": 1 << 3})
    assert r.reason == "poweroff" and nat.machine.cpu.eax == 3
    assert_equivalent(hw, nat)
    assert hw.stats["vm_exits"]["EXCEPTION_NMI"] == 3 and hw.stats["injections"] == 3
    plain, _ = run_hw(img, max_steps=1000)
    assert "EXCEPTION_NMI" not in plain.stats["vm_exits"]


# ---- EPT: the two-dimensional walk --------------------------------------------------------------
def test_ept_walk_costs_nm_plus_n_plus_m_references_and_no_cr3_exits():
    """With 2-level guest tables and a 2-level EPT every TLB miss is 8 references (2 while the
    guest's paging is off), counted and priced as page_walk; mov cr3 does not exit."""
    img = build("ctxswitch")
    hw = HardwareAssisted(img)
    refs = Counter()
    hw.on("tlb_miss", lambda e: refs.update([e.references]))
    hw.run(max_steps=MAX_STEPS)
    assert set(refs) == {2, 8} and refs[8] > refs[2]
    s = hw.stats
    assert s["walk_references"] == sum(k * n for k, n in refs.items())
    assert s["page_faults"] == 0                               # so no walk ended early
    assert hw.cycles["page_walk"] == s["walk_references"] * hw.costs.page_walk
    nat, _ = run_native(img)
    assert nat.machine.walk_refs == 2 * nat.machine.tlb_misses   # 1-D: n = 2 per miss
    cr_exits = [e for e in hw.trace.of("vm_exit") if e.reason == 28]
    assert cr_exits and all(e.qualification & 15 == 0 for e in cr_exits)   # CR0 only
    assert s["hidden_page_faults"] == 0


def test_shadow_paging_exits_on_cr3_and_takes_hidden_page_faults():
    img = build("ctxswitch")
    nat, _ = run_native(img)
    hw = HardwareAssisted(img, ept=False)
    cr3_loads = []
    hw.on("vm_exit", lambda e: cr3_loads.append(e) if e.reason == 28
          and e.qualification & 0x3F == 3 else None)      # CR3, access type 0 (MOV to CR)
    hw.run(max_steps=MAX_STEPS)
    assert_equivalent(hw, nat, img)
    assert len(cr3_loads) > 10
    s = hw.stats
    assert s["hidden_page_faults"] > 100 and s["vm_exits"]["EXCEPTION_NMI"] >= \
        s["hidden_page_faults"]
    assert hw.vcpu.cr3 != hw.cpu.cr3                            # the real CR3 is the shadow
    assert hw.cycles["hidden_fault"] > 0 and hw.cycles["shadow_update"] > 0


def test_shadow_paging_reflects_the_guests_own_page_faults():
    img = build("pagefault")
    nat, _ = run_native(img)
    hw, _ = run_hw(img, ept=False)
    assert hw.stats["page_faults"] == nat.stats["page_faults"] == SMALL["pagefault"]["pages"]
    assert hw.stats["injections"] >= hw.stats["page_faults"]
    assert hw.stats["vm_exits"]["INVLPG"] > 0


def test_lazy_ept_maps_each_page_on_its_first_touch():
    img = build("pagefault")
    hw, _ = run_hw(img, lazy_ept=True)
    s = hw.stats
    assert s["vm_exits"]["EPT_VIOLATION"] == s["ept_fills"] == len(hw.vms[0].ept.mappings())
    eager, _ = run_hw(img)
    assert "EPT_VIOLATION" not in eager.stats["vm_exits"]
    assert len(eager.vms[0].ept.mappings()) == img.memory_size // 4096


# ---- interrupts: injection at the native instruction -------------------------------------------
def irq_points(vm):
    return [(e.step, e.eip, e.handler) for e in vm.trace.of("interrupt") if e.source == "irq"]


@pytest.mark.parametrize("name", ["ctxswitch", "compute", "nonvirt-popf"])
def test_timer_interrupt_is_injected_at_the_native_instruction(name):
    img = build(name)
    nat, _ = run_native(img)
    hw = HardwareAssisted(img)
    entries = []
    hw.on("vm_entry", lambda e: entries.append(e.injected))
    hw.run(max_steps=MAX_STEPS)
    points = irq_points(nat)
    assert points and irq_points(hw) == points
    assert hw.stats["injections"] == len(points) == entries.count(32)
    assert hw.stats["vm_exits"]["EXTERNAL_INTERRUPT"] >= 1


@pytest.mark.parametrize("controls", [{}, {"hlt_exiting": False}, {"io_exiting": False}],
                         ids=["default", "no-hlt-exiting", "direct-io"])
def test_hlt_exiting_and_interrupt_windows_keep_native_timing(controls):
    """sti; hlt idles until the next tick, a tick held while IF is clear arrives through an
    interrupt-window exit right after sti's shadow: same state, memory and guest time?"""
    img = guests.from_source(OWN_KERNEL, name="own-kernel")
    nat, rn = run_native(img, 100_000)
    hw, rh = run_hw(img, max_steps=100_000, controls=controls)
    assert rn.reason == rh.reason == "poweroff"
    assert_equivalent(hw, nat)
    assert (hw.vms[0].steps, hw.vms[0].clock) == (nat.machine.steps, nat.machine.clock)
    assert irq_points(hw) == irq_points(nat)
    exits = hw.stats["vm_exits"]
    assert exits["INTERRUPT_WINDOW"] > 0
    if controls.get("hlt_exiting", True):
        traced = Native(img, trace=Trace(instructions=True))
        traced.run(max_steps=100_000)
        hlts = sum(1 for e in traced.trace.of("instruction") if e.text == "hlt")
        assert exits["HLT"] == hlts > 3                        # every hlt exits
    else:
        assert "HLT" not in exits                              # the CPU halted in non-root


def test_turning_off_io_exiting_assigns_the_devices_directly():
    """Fewer exits, same output: the console, input and clock ports reach the VM's devices
    with no exit; the interrupt controller, timer and power-off still exit."""
    img = build("io")
    nat, _ = run_native(img)
    full, _ = run_hw(img)
    direct, _ = run_hw(img, controls={"io_exiting": False})
    assert_equivalent(direct, nat, img)
    assert direct.controls.io_bitmap == REQUIRED_IO_EXITS
    assert direct.stats["vm_exits"]["IO_INSTRUCTION"] * 20 < \
        full.stats["vm_exits"]["IO_INSTRUCTION"]
    assert direct.stats["port_io"] == full.stats["port_io"] == nat.stats["port_io"]
    assert sum(direct.cycles.values()) < sum(full.cycles.values())


def test_turning_on_more_controls_adds_exits_but_changes_nothing_the_guest_sees():
    img = build("divzero")
    nat, _ = run_native(img)
    hw, _ = run_hw(img, controls={"exception_bitmap": 1 << 0, "cr3_load_exiting": True,
                                  "cr3_store_exiting": True, "rdtsc_exiting": True})
    assert_equivalent(hw, nat, img)
    exits = hw.stats["vm_exits"]
    assert exits["EXCEPTION_NMI"] == SMALL["divzero"]["iterations"]   # every #DE, reflected
    assert exits["CR_ACCESS"] > 1


def test_set_controls_between_runs_takes_effect_at_once():
    img = build("io")
    nat, _ = run_native(img)
    hw = HardwareAssisted(img)
    hw.run(max_steps=5000)
    before = hw.stats["vm_exits"]["IO_INSTRUCTION"]
    hw.set_controls(io_exiting=False)
    hw.run(max_steps=MAX_STEPS)
    assert_equivalent(hw, nat, img)
    assert hw.stats["vm_exits"]["IO_INSTRUCTION"] - before < nat.stats["port_io"] // 5


# ---- exits during event delivery (IDT-vectoring information) ------------------------------------
FRESH_STACKS = """
# Each event is delivered onto a stack page nothing has touched yet: under a lazily filled EPT
# (or shadow tables) the delivery itself exits, and the event must still arrive exactly once.
_start:
    lidt [idt_ptr]
    mov eax, offset on_int
    mov ecx, 0x30
    call set_gate
    mov eax, offset on_de
    xor ecx, ecx
    call set_gate
    mov eax, offset on_tick
    mov ecx, 32
    call set_gate
    mov esp, 0x200000               # int 0x30: a software interrupt
    int 0x30
    mov esp, 0x280000               # #DE: a hardware exception
    xor edx, edx
    xor eax, eax
    div eax
    mov esp, 0x300000               # the timer: an external interrupt
    mov al, 0xFE
    out 0x21, al
    mov eax, 50
    out 0x40, eax
    sti
1:  cmp dword ptr [ticks], 1
    jb 1b
    cli
    mov eax, [count]
    out 0xF4, eax
set_gate:
    mov word ptr [idt + ecx*8], ax
    mov word ptr [idt + ecx*8 + 2], 0x08
    mov word ptr [idt + ecx*8 + 4], 0x8E00
    shr eax, 16
    mov word ptr [idt + ecx*8 + 6], ax
    ret
on_int:
    add dword ptr [count], 1
    iretd
on_de:
    add dword ptr [count], 10
    add dword ptr [esp], 2          # past the 2-byte div
    iretd
on_tick:
    add dword ptr [count], 100
    inc dword ptr [ticks]
    push eax
    mov al, 0x20
    out 0x20, al
    pop eax
    iretd
.data
.align 8
idt_ptr: .word 256*8 - 1
         .long idt
count:   .long 0
ticks:   .long 0
.align 8
idt:     .space 256*8
"""


@pytest.mark.parametrize("mode", ["lazy-ept", "shadow"])
def test_exits_during_event_delivery_reinject_the_event(mode):
    img = guests.from_source(FRESH_STACKS, name="fresh-stacks")
    nat, rn = run_native(img, 10_000)
    hw = HardwareAssisted(img, **MODES[mode])
    vectoring = []

    def on_exit(e):
        info = hw.vms[e.vm].vmcs.idt_vectoring_info
        if info & INTR_VALID:
            vectoring.append((info >> 8) & 7)
    hw.on("vm_exit", on_exit)
    rh = hw.run(max_steps=10_000)
    assert rn.reason == rh.reason == "poweroff" and nat.machine.cpu.eax == 111
    assert_equivalent(hw, nat)
    assert set(vectoring) == {0, 3, 4}     # external interrupt, hardware exception, software int


# ---- EPT violations beyond memory, isolation, several VMs -------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_scribbler_cannot_reach_another_vm(mode):
    """Accesses beyond the VM's memory exit (EPT violation) and are emulated as on a PC bus:
    all ones, writes dropped; the VM next to it sees nothing."""
    scribbler = make_scribbler(dense=0x200000, far=False)
    other = build("syscall")
    solo, _ = run_hw(other, **MODES[mode])
    hw, r = run_hw(scribbler, other, slice=4000, **MODES[mode])
    s, o = hw.vms
    assert s.result.reason == "poweroff" and s.console == "0"
    assert o.console == solo.console and digest(o.memory()) == digest(solo.vms[0].memory())
    if mode != "shadow":
        assert hw.stats["vm_exits"]["EPT_VIOLATION"] >= 3 * 64      # 3 accesses per probe
    nat, _ = run_native(scribbler)
    assert digest(bytes(nat.machine.mem)) == digest(s.memory())


def test_several_vms_each_print_their_solo_output():
    names = ["ctxswitch", "syscall", "pagefault"]
    solo = {}
    for n in names:
        h, _ = run_hw(build(n))
        solo[n] = (h.console, digest(h.vms[0].memory()), h.vms[0].steps)
    hw, r = run_hw(*(build(n) for n in names), slice=3000)
    assert r.reason == "poweroff"
    assert hw.stats["world_switches"] > 0 and hw.stats["vm_exits"]["PREEMPTION_TIMER"] > 0
    for n, vm in zip(names, hw.vms):
        assert vm.result.reason == "poweroff"
        assert (vm.console, digest(vm.memory()), vm.steps) == solo[n], n
        assert vm.vmcs is not hw.vms[0].vmcs or vm.index == 0


def test_triple_fault_exits_and_ends_one_vm_while_the_other_finishes():
    crash = triple_fault()
    hello = build("hello")
    hw, r = run_hw(crash, hello, slice=500)
    assert hw.vms[0].result.reason == "crash" and "triple fault" in hw.vms[0].result.detail
    assert hw.stats["vm_exits"]["TRIPLE_FAULT"] == 1
    assert [e.vm for e in hw.trace.of("vm_exit") if e.reason == 2] == [0]
    assert hw.vms[1].result.reason == "poweroff" and hw.vms[1].console == hello.expected


# ---- the VMCS, stepping, snapshots, bad input ---------------------------------------------------
def test_vmcs_records_the_last_exit_and_step_shows_exits_and_entries():
    hw = HardwareAssisted(build("hello"))
    kinds = []
    while "vm_exit" not in kinds:
        kinds += [e.kind for e in hw.step()]
    assert "emulate" in kinds             # the step completed the instruction in the VMM
    vmcs = hw.vmcs                         # the kernel's first exit: mov cr0, eax (paging on)
    assert vmcs.exit_name == "CR_ACCESS" and vmcs.exit_reason == 28
    q = vmcs.exit_qualification
    assert (q & 15, (q >> 4) & 3, (q >> 8) & 15) == (0, 0, 0)    # CR0, MOV to CR, eax
    assert vmcs.exit_instruction.text == "mov cr0, eax" and vmcs.exit_instruction_length == 3
    assert hw.vcpu.cr0 == vmcs.cr0_read_shadow & ~0x8 | hw.cpu.cr0 & 0x8
    assert vmcs.guest.eip == hw.cpu.eip and vmcs.activity_state == "active"
    assert vmcs.host.cr4 & (1 << 13)
    kinds = [e.kind for e in hw.step()]
    assert kinds[0] == "vm_entry"


def test_snapshot_and_restore_replay_the_same_run():
    hw = HardwareAssisted(build("ctxswitch"), lazy_ept=True)
    hw.run(max_steps=5000)
    snap = hw.snapshot()
    hw.run(max_steps=MAX_STEPS)
    first = (hw.console, digest(hw.vms[0].memory()), hw.stats["vm_exits"])
    hw.restore(snap)
    hw.run(max_steps=MAX_STEPS)
    assert (hw.console, digest(hw.vms[0].memory()), hw.stats["vm_exits"]) == first


@pytest.mark.parametrize("kw, words", [
    ({"controls": {"bogus": 1}}, "unknown VMCS controls"),
    ({"controls": {"external_interrupt_exiting": False}}, "takes the CPU back"),
    ({"controls": {"io_bitmap": {0xE9}}}, "0x20"),
    ({"ept": False, "controls": {"cr3_load_exiting": False}}, "shadow paging"),
    ({"ept": False, "controls": {"exception_bitmap": 0}}, "#PF"),
    ({"ept": False, "lazy_ept": True}, "lazy_ept needs ept"),
    ({"ept": "yes"}, "ept must be"),
    ({"slice": 0}, "slice"),
    ({"controls": "fast"}, "dict or a VmcsControls"),
])
def test_bad_parameters_are_refused_with_a_reason(kw, words):
    with pytest.raises(vmkit.VmkitError, match=words):
        HardwareAssisted(build("hello"), **kw)


def test_controls_accept_a_dataclass_and_resolve_per_paging_mode():
    c = VmcsControls(hlt_exiting=False)
    hw = HardwareAssisted(build("hello"), controls=c)
    assert hw.controls.hlt_exiting is False and hw.controls.exception_bitmap == 0
    shadow = HardwareAssisted(build("hello"), ept=False)
    assert shadow.controls.cr3_load_exiting and shadow.controls.exception_bitmap == 1 << 14
