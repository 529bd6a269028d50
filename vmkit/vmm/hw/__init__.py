"""Hardware-assisted virtualization: a VT-x-like monitor (Intel SDM Vol. 3C, chapters 24-29).

Section numbers are those of the Intel SDM's combined Volumes 3A-3D of September 2023 (order
number 325384-081US) throughout; editions before the VMX chapters moved number chapters 25-29
one lower (VM exits were chapter 27 there, chapter 28 here).

Root and non-root mode
----------------------
VT-x adds a second dimension to the CPU's privilege: *VMX root* operation, where the VMM runs,
and *VMX non-root* operation, where guests run. It is orthogonal to the rings: the guest kernel
runs in **non-root ring 0** and its user programs in non-root ring 3, so ``push cs`` shows ring 0
and ``popfd``, ``sgdt``, ``smsw``, ``lar`` see and change the guest's own state. (The course
notes' "a new root mode privilege level under level 0" is imprecise: there is no ring -1; root
mode has its own rings 0-3 too, and non-root ring 0 is a real ring 0 whose *sensitive* operations
the VMM chooses to make exit.) What makes it work is the **VMCS**, one per VM: on VM entry the
CPU loads the guest's registers (GDTR, IDTR, CR0, CR3, CR4, segment registers, EFLAGS ...) from
its guest-state area, and on a **VM exit** it saves them there and loads the VMM's from the
host-state area, recording why (exit reason, qualification). The **VM-execution controls** say
which events exit: this module models HLT exiting, CR3-load/store exiting, the CR0/CR4
guest/host masks with read shadows, unconditional I/O exiting or I/O bitmaps, the exception
bitmap, external-interrupt exiting, interrupt-window exiting, INVLPG and RDTSC exiting; CPUID
always exits. Exit reasons carry Intel's basic numbers and Linux's names (``EXIT_REASONS``).

How non-root mode is modelled
-----------------------------
One host :class:`~vmkit.machine.machine.Machine` (a :class:`_NonRootMachine`) holds every VM
(the host layout of ``TrapAndEmulate``: a VMM area, 1 MiB per VM for its EPT or shadow tables,
then one memory slice per VM). While a VM runs, **the real CPU state is the guest state**: its
CPL is the guest's (0 in the kernel), GDTR/IDTR/TR are the guest's, EFLAGS.IF is the guest's,
and CR0/CR4 are the guest's values plus the bits VMX operation requires (CR0.NE, CR4.VMXE; with
shadow paging also CR0.PG and CR0.WP), which the read shadows hide. The instructions the
controls make exit are intercepted when the machine compiles them (``MachineHooks.intercept``): it
gets a stub that makes the checks with priority over a VM exit (CPL for privileged instructions,
IOPL and the TSS I/O bitmap for IN/OUT, SDM 26.1.1) and then raises :class:`NonRootExit`;
conditional exits (I/O bitmaps, CR0/CR4 writes that change an owned bit) decide at run time and
run the instruction natively otherwise. The icache is flushed whenever the controls change.
Exceptions in the exception bitmap exit through the ``on_exception`` hook, also when they
happen *during* event delivery (the event is then saved as IDT-vectoring information and
re-injected). The VMM's own timer is an external interrupt that exits whatever the guest's IF
(external-interrupt exiting); interrupt-window exiting exits at the first instruction boundary
where the guest's IF is 1 and no STI shadow blocks. A VM exit unwinds like a fault (the
instruction has changed nothing), ends the machine's run, and the VMM (Python, "root mode")
handles it from the VMCS's exit fields, then resumes the guest (VM entry).

Nested paging (``ept=True``, the default)
-----------------------------------------
The guest's page tables map linear to guest-physical addresses, and the VMM's **EPT** maps
guest-physical to host-physical. The hardware walks both (``MMUMixin._walk_nested``): every
guest-physical address of the guest's walk (each page-table entry, then the final frame) is
itself translated through the EPT, so a TLB miss costs ``n*m + n + m`` memory references for
n guest and m EPT levels -- 8 here, where the EPT has **two levels** of 4-byte entries (a 32-bit
guest-physical address: 10 + 10 + 12 bits; R/W/X in bits 0-2 as in VT-x). Real VT-x uses four
levels of 8-byte entries (48-bit guest-physical), 24 references for a 4-level guest. They are
counted in ``stats["walk_references"]`` and priced as ``page_walk``. The guest loads CR3 and
runs INVLPG without exits (CR3-load exiting off), and its page faults go straight to its own
handler. The EPT maps the VM's memory when the VM is created (``lazy_ept=True`` maps each page
on its first touch instead, an EPT_VIOLATION exit per page, as KVM does); guest-physical
addresses beyond the VM's memory are never mapped, so touching one is an EPT violation that the
VMM emulates (reads give all ones, writes are dropped, as on a PC bus).

Shadow paging (``ept=False``)
-----------------------------
Without EPT the real CR3 holds a shadow page directory (guest-linear -> host-physical) that the
VMM builds as a virtual TLB, with the logic of ``TrapAndEmulate``: CR3-load and CR3-store
exiting (the guest's CR3 is virtualized), INVLPG exiting, #PF in the exception bitmap (a #PF that
exits leaves CR2 alone, SDM 28.1), and CR0.PG/WP and CR4.PSE owned by the VMM through the masks.
A #PF exit either fills the shadow entry (a hidden page fault) or injects the guest's own #PF.

Event injection
---------------
Virtual devices (console, interrupt controller, timer, input, power-off) belong to the VMM, one
set per VM, as in ``TrapAndEmulate``. When the virtual interrupt controller has a line to
deliver, the VMM writes the **VM-entry interruption-information field** (vector, type, error
code; ``vmcs.inject``) if the guest can take it (IF = 1, no STI blocking), else it turns on
interrupt-window exiting and injects at that exit. On VM entry the CPU delivers the event
through the guest's IDT, with the guest's own gate checks, stack switch and frame: it is the
machine's own ``deliver()`` in non-root mode. The timer interrupt therefore reaches the guest at
the same guest instruction as under ``Native``.

I/O exiting and direct assignment
---------------------------------
By default every IN/OUT exits (unconditional I/O exiting), and the VMM emulates it from the exit
qualification alone (port, size, direction: no decoding). With ``controls={"io_exiting": False}``
the VMM switches to I/O bitmaps that still exit on the ports it must virtualize to keep control
(interrupt controller 0x20/0x21, timer 0x40, power-off 0xF4: ``REQUIRED_IO_EXITS``) and gives
the VM the other devices directly (console, input, clock): *direct assignment*, the guest's
IN/OUT reach the VM's device with no exit. ``io_bitmap=`` names the exiting ports explicitly;
it must include ``REQUIRED_IO_EXITS``.

Several VMs
-----------
``HardwareAssisted(img_a, img_b, slice=...)``: each VM has its own VMCS, EPT (or shadow tables),
devices and memory slice; the VMX-preemption timer ends a slice (exit 52) and the VMM switches
worlds (the TLB and the icache go: no VPID is modelled).

Cycles: ``vm_exit`` per exit round trip and ``exit_handling`` for the VMM's own software on
each exit, ``emulate`` per instruction the VMM completes,
``page_walk`` per 2-D reference, ``shadow_update`` per EPT or shadow entry written,
``hidden_fault`` per hidden page fault, ``interrupt`` per event the CPU delivers through the
guest's IDT, ``world_switch``; everything else the guest runs directly counts as ``native``.

Limits: a guest-physical access beyond memory during event delivery (a guest IDT or stack placed
beyond its memory) ends the VM; software interrupts whose delivery exits are executed again
rather than re-injected (same effect); no VPID, no CR3-target list, no MSRs, no descriptor-table
exiting, no posted interrupts or APIC virtualization; CPUID shows the host's leaves without the
"hypervisor present" bit (so that guests see exactly what they see natively).

The package, one mechanism a module
-----------------------------------
``vmcs.py``     exit reasons, interruption information, the controls (:class:`VmcsControls`),
                the host-state area, the :class:`VMCS`, the exit the non-root machine raises
``vcpu.py``     the guest's view of the CPU (:class:`GuestCPU`) and one VM (:class:`HWVM`)
``nonroot.py``  non-root mode as the machine's hooks (:class:`NonRootMode`) and the stubs of
                the instructions that exit
``exits.py``    the exit handlers (``exit_handler``: reason name -> handler(vm, vmcs))
``monitor.py``  :class:`HardwareAssisted`: VM entry and exit, injection, the run loop's policy

The extended page tables (:class:`EPT`) and shadow paging are paging modes
(:mod:`vmkit.vmm.paging`: ``"ept"``, ``"vtlb"``); ``guestmmu.py`` is what the exits ask of them.
"""

from __future__ import annotations

from vmkit.vmm.hw.exits import (exit_handler, handle_cpuid, handle_cr,  # noqa: F401
                                handle_ept_violation, handle_exception, handle_hlt,
                                handle_interrupt_window, handle_invlpg, handle_io, handle_rdtsc,
                                handle_timer)
from vmkit.vmm.hw.monitor import HardwareAssisted
from vmkit.vmm.hw.nonroot import NonRootMode  # noqa: F401
from vmkit.vmm.hw.vcpu import HWVM, GuestCPU
from vmkit.vmm.hw.vmcs import (CPUID, CR0_ET, CR0_NE, CR0_PE, CR0_TS, CR4_TSD,  # noqa: F401
                               CR4_UMIP, CR4_VMXE, CR_ACCESS, DEVICE_PORTS, EPT_VIOLATION,
                               EXCEPTION_NMI, EXIT_NUMBERS, EXIT_REASONS, EXTERNAL_INTERRUPT, HLT,
                               INSTRUCTION_EXITS, INTERRUPT_WINDOW, INTR_ERROR_VALID,
                               INTR_EXTERNAL, INTR_HW_EXCEPTION, INTR_NMI, INTR_PRIV_SW_EXCEPTION,
                               INTR_SW_EXCEPTION, INTR_SW_INTERRUPT, INTR_TYPE_NAMES, INTR_VALID,
                               INVLPG, IO_INSTRUCTION, PREEMPTION_TIMER, RDTSC, REQUIRED_IO_EXITS,
                               TRIPLE_FAULT, VMCS, HostState, NonRootExit, VmcsControls,
                               interruption_info)
from vmkit.vmm.paging.nested import EPT

__all__ = ["HardwareAssisted", "VmcsControls", "VMCS", "HostState", "EPT", "GuestCPU", "HWVM",
           "NonRootExit", "EXIT_REASONS", "EXIT_NUMBERS", "REQUIRED_IO_EXITS",
           "interruption_info", "exit_handler"]
