"""Trap-and-emulate: the classic virtual machine monitor (Popek & Goldberg, CACM 1974) on x86.

The VMM is the only ring-0 software. It owns the real IDT, GDT, TSS and page tables; the guest
kernel runs in **ring 1** and its user programs in ring 3, on the same guest bytes as under
``Native``. Three mechanisms do all the work:

**Trap and emulate.** Every privileged instruction the ring-1 kernel executes (lgdt lidt lldt
ltr lmsw clts invlpg hlt, mov to/from CRn) faults with #GP(0), and so do cli/sti/in/out,
because the real IOPL is 0 and the VMM's TSS has an I/O bitmap that denies every port. The
VMM decodes the instruction and runs a handler from :attr:`TrapAndEmulate.emulate` on the
*virtual* CPU (``vm.vcpu``: the guest's CR0/CR2/CR3/CR4, GDTR/IDTR/LDTR/TR, its IF and IOPL,
virtual CPL 0) and on the VM's own devices, then resumes the guest after the instruction.

**Reflection.** Exceptions, ``int 0x80`` and device interrupts reach the VMM first (through
the ``on_exception`` hook, which stands for the real IDT's gates into the VMM). The VMM
delivers them into the guest kernel through the guest's own IDT, building exactly the frame
the guest expects (EFLAGS with the *virtual* IF and IOPL, CS as the guest believes it: 0x08,
not the real 0x09). Virtual interrupts wait while the virtual IF is clear.

**Shadow structures.** The real GDT is a shadow of the guest's: code and data descriptors
with DPL 0 become DPL 1, so the ring-1 kernel can use its own selectors. The real page tables
are a shadow of the guest's (guest-virtual -> host-physical), filled on *hidden* page faults
that the guest never sees. Guest-physical memory is the VM's slice of host memory.

How the virtual IF stays right
------------------------------
The virtual IF changes when the guest runs cli/sti (they trap: emulated), when an interrupt
gate is reflected (the VMM clears it), and when the guest's kernel returns with iretd. An
iretd that stays in the kernel (to a frame with CS RPL 0) faults at ring 1 (RPL < CPL) and is
emulated, loading IF and IOPL from the popped image. The kernel's iretd *to ring 3*, however,
is a legal outward return: it does not trap, and at CPL 1 > IOPL 0 the CPU silently keeps the
real IF (= 1). The VMM learns of that ring change through ``MachineHooks.on_ring_change`` and then
**peeks at the EFLAGS image the iretd just popped**, still in guest memory at
``machine.iret_frame + 8``, and loads the virtual IF and IOPL from it as a ring-0 iretd would
have. That is exact: the guest's memory and the frame are unchanged by the pop. (Real hardware
gives a ring-1 VMM no such notification; VMware avoided the problem with binary translation,
Xen by making the return a hypercall. A real trap-and-emulate VMM would assume "user mode
always runs with interrupts on", which is what this kernel does, but not every guest.)
``popfd`` in ring 1 is the case the VMM cannot see at all: it changes the real flags it may
and drops IF silently, without a trap, so the virtual IF goes stale: the reason x86 is not
classically virtualizable (the ``nonvirt-popf`` demonstration).

Shadow page tables: a virtual TLB
---------------------------------
The shadow page tables act as a software TLB that the VMM fills on demand and drops exactly
when the guest's hardware TLB would be flushed. CR3 loads and invlpg are privileged, so they
trap: a CR3 load (or a change of CR0.PG/WP or CR4.PSE) drops all of the VM's shadow entries and
invlpg drops one. Nothing else needs tracking, because the guest must flush after changing a
mapping on native hardware too. A real #PF on a missing shadow entry makes the VMM walk the
*guest's* page tables with the guest's rights (user = virtual CPL 3, CR0.WP as the guest set
it). If the guest mapping allows the access, the fault is hidden: the VMM sets the guest's
accessed bit (and its dirty bit for a write) exactly as the native page walk would, fills the
shadow entry, and retries the instruction. A page whose guest dirty bit is still clear is
mapped read-only, so the first write faults again and sets it. If the guest mapping denies the
access, the guest's own #PF (error code, CR2) is reflected. Guest memory, accessed and dirty
bits included, therefore ends up as under Native. Guest frames beyond the VM's memory map to a
VMM page of all ones; writes there are emulated and dropped, as on a PC bus.

Host layout
-----------
One host :class:`~vmkit.machine.machine.Machine` holds everything. Its physical memory is a
VMM area (1 MiB for the real IDT, the VMM's TSS, a page of all ones, plus 1 MiB per VM for
its shadow GDT, shadow page directory and a pool of shadow page tables), followed by one slice
per VM: guest-physical address g of VM i is host-physical ``slice_base[i] + g``. In every
shadow address space the VMM maps its tables read-only, supervisor-only, at the top 4 MiB
(``VMM_WINDOW`` = 0xFFC00000, where VMware's monitor also lived), so the real GDTR, IDTR and TR
point there, and a guest ``sgdt`` shows the VMM's table (the ``nonvirt-sgdt`` demonstration).
The real CPU runs one VM at a time; a world switch saves and restores it and loads the other
VM's shadow page directory. The VMM's own timer (a one-shot on the host machine's timer,
delivered as IRQ 0 into the VMM) stops the guest exactly when its virtual timer is due, when
the ``max_steps`` budget runs out, and, with several VMs, at the end of each time slice.

Guest time is counted per VM: host instructions retired while it ran plus the instructions the
VMM emulated for it (plus idle time in hlt), so its timer raises IRQ 0 at the same guest
instruction as under Native.

Known limits (documented, not hidden): guest rings 1 and 2 share real ring 1 with the guest
kernel (ring compression); the guest's LDT is not shadowed (a non-null ``lldt`` ends the VM);
guest linear addresses 0xFFC00000 and above belong to the VMM (a guest that maps memory there
is stopped with that reason); a hidden page fault in the middle of a ``rep`` string instruction
longer than one chunk can shift guest time by one step; pushfd, popfd, sgdt, sidt, sldt, str,
smsw, lar, lsl, verr, verw, ``push cs`` and ``mov r, ss`` run unmodified and show the real
machine (they are the non-virtualizable instructions; with CR4.UMIP set by the guest the
store-descriptor-table ones trap and are emulated). The monitor notices afterwards: each time
one shows the guest something the bare machine would not have, it records a virtualization
hole (``stats["holes"]``, a ``Hole`` trace event: :mod:`vmkit.vmm.te.holes`).

Where the code is
-----------------
Trap-and-emulate's policy is this package (``monitor.py``: :class:`TrapAndEmulate`, whose
``emulate`` table is the default instruction handlers). The mechanisms are the core it shares
with binary translation and paravirtualization, :mod:`vmkit.vmm.deprivileged`, one a module:
``vcpu.py`` (:class:`VirtualCPU`, :class:`TEVM`), ``handlers.py`` (the emulation registry and
the ``emulate_*`` handlers), ``boot.py``, ``segments.py`` (the shadow GDT), ``reflect.py``
(injection through the guest's IDT), ``control.py``, ``softmmu.py``, ``monitor.py``
(:class:`~vmkit.vmm.deprivileged.Deprivileged`: traps, the run loop's policy).
"""

from __future__ import annotations

from vmkit.vmm.deprivileged.handlers import (_DEFAULT_HANDLERS, DEPRIVILEGED,  # noqa: F401
                                             emulate_cli, emulate_clts, emulate_hlt, emulate_in,
                                             emulate_invlpg, emulate_iretd, emulate_lgdt,
                                             emulate_lidt, emulate_lldt, emulate_lmsw, emulate_ltr,
                                             emulate_mov, emulate_out, emulate_pop, emulate_rdtsc,
                                             emulate_retf, emulate_sgdt, emulate_sti,
                                             emulate_store_system, handles)
from vmkit.vmm.deprivileged.monitor import Deprivileged, _error_text  # noqa: F401
from vmkit.vmm.deprivileged.vcpu import TEVM, VirtualCPU
from vmkit.vmm.layout import (GDT_BYTES, H_IDT, H_ONES, H_STUB, H_TSS,  # noqa: F401
                              RESERVED_ENTRY, TSS_LIMIT, V_GDT, V_PD, V_POOL, V_WINPT, VMM_CS,
                              VMM_DS, VMM_TSS, VMM_WINDOW, W_GDT, W_IDT, W_STUB, W_TSS, MiB)
from vmkit.vmm.te.monitor import TrapAndEmulate
from vmkit.vmm.vm import CannotEmulate, NotEmulated, event_name  # noqa: F401
from vmkit.vmm.world import DEFAULT_SLICE  # noqa: F401
from vmkit.vmm.world import VMStop as _VMStop  # noqa: F401

__all__ = ["TrapAndEmulate", "TEVM", "VirtualCPU", "NotEmulated", "CannotEmulate",
           "DEFAULT_SLICE", "VMM_WINDOW", "handles"]
