"""Paravirtualization: the guest kernel is changed to call the hypervisor (after Xen: Barham et
al., "Xen and the Art of Virtualization", SOSP 2003).

The guest is built from the same kernel source with ``guests.build(name, paravirtual=True)``:
the kernel's privileged operations are macros (``vmkit/guests/pvops.s``, like Linux's pvops),
and the paravirtual set (``pvops_pv.s``) replaces each with a **hypercall**: ``int 0x82`` from
the ring-1 kernel, number in eax, arguments in ebx, ecx, edx, result in eax (0, a count, or a
negative error code). What the hypervisor does instead of trapping and emulating:

* **Trap table and kernel stack are registered** (``set_trap_table``, ``stack_switch``): the
  hypervisor bounces exceptions into the guest through that table onto that stack. System
  calls do not enter the hypervisor at all: when the guest's ``int 0x80`` entry is a DPL-3
  *trap* gate, the hypervisor copies it into the real IDT and puts the kernel stack into the
  real TSS (Xen's "fast trap", set_int80_direct_trap), so the hardware goes from ring 3 to the
  ring-1 kernel directly. (Per VM: the gate and the stack are reinstalled on a world switch.)
* **Direct, validated paging.** The guest's page tables are the real ones and hold machine
  addresses (the VM's memory is one contiguous machine range whose base the hypervisor tells
  the guest). A frame becomes a page table only after the hypervisor has validated it
  (``mmuext_op`` pin, or when it is loaded as CR3): every present entry must map the VM's own
  memory and no entry may map a page table writable; the hypervisor counts the writable
  mappings of every frame (Xen's page type counts) to keep that true. From then on the table is
  read-only to the guest, and changes are ``mmu_update`` hypercalls: a *batch* of (entry
  address, new value) pairs, each checked; an update that would map memory that is not the
  VM's or make a page table writable is refused with ``-EPERM`` and counted in
  ``stats["hypercall_refusals"]``; it never takes effect. No shadow tables, no hidden page
  faults, one-dimensional TLB walks: the cost moved into the hypercalls.
* **Events instead of interrupts.** The timer is an event channel (``set_timer_op``,
  ``event_channel_op`` bind). The guest's IF is replaced by a mask byte in ``vcpu_info``, a
  page shared with the hypervisor: delivering an event (an upcall through the trap table's
  vector 32) sets the mask, and the kernel clears it with a plain store before it returns to
  user mode, with no hypercall on that path. The hypervisor delivers an event when the mask is
  clear and the VM runs in user mode; like its native twin, whose interrupt gates keep
  interrupts off in the kernel, this kernel is never interrupted in kernel mode (a reentrant
  kernel like Linux takes events in kernel mode too, and Xen closes the race at its exit with a
  critical-section fixup). The faulting address of a page fault is written to ``vcpu_info``
  (the guest cannot read CR2).
* **I/O by hypercall**: ``console_io`` writes the whole buffer of a ``write`` system call in one
  hypercall (the native kernel executes one ``out`` per byte: one trap each under
  trap-and-emulate); ``sched_op`` yields or shuts the VM down; ``event_channel_op`` send
  notifies the split-driver backend (:mod:`vmkit.vmm.iovirt`).

``stats`` adds ``hypercalls`` (Counter by name), ``mmu_update_batches`` (Counter: batch size ->
calls), ``pt_updates`` (validated entries written), ``hypercall_refusals`` (Counter by reason),
``upcalls`` (events delivered), ``fast_syscalls`` and ``pinned_tables``. ``hidden_page_faults``
and shadow page table updates stay 0. A privileged instruction executed by a paravirtual kernel
is the guest's own #GP (reflected, as Xen does). ``Paravirtual`` runs only paravirtual images,
several at once like every other monitor (``Paravirtual(img_a, img_b, scheduler=...)``).

What is simplified, documented rather than hidden: hypercall arguments that Xen takes as machine
frame numbers (mmu_update's entry pointer) are guest-physical here, since the kit's kernel
identity-maps its memory; the trap table has the IDT's own format; ``mmu_update`` takes the page
to invalidate afterwards as its third argument (Xen's ``update_va_mapping`` flag); and the GDT
is shadowed as under trap-and-emulate (descriptors of DPL 0 run at DPL 1).

The package, one mechanism a module (after Xen's ``arch/x86/pv/``)
-----------------------------------------------------------------
``abi.py``         hypercall numbers, commands, errno values, ``vcpu_info``'s layout
``vm.py``          :class:`PVVM`: what a guest registered, its memory through the real tables
``hypercalls.py``  trap table, GDT, kernel stack, vcpu_info, timer, event channels, console,
                   scheduler
``monitor.py``     :class:`Paravirtual`: the policy on the ring-1 core
                   (:mod:`vmkit.vmm.deprivileged`): entries into the hypervisor, events, the
                   hypercall dispatch (``HANDLERS``)

(validated direct paging, ``mmu_update``, ``mmuext_op`` and the checks, is a paging mode:
:mod:`vmkit.vmm.paging.direct`)
"""

from __future__ import annotations

from vmkit.vmm.pv.abi import (CONSOLEIO_READ, CONSOLEIO_WRITE, EFAULT, EINVAL,  # noqa: F401
                              ENOSYS, EPERM, EVTCHNOP_BIND_VIRQ, EVTCHNOP_SEND, HYPERCALL_VECTOR,
                              HYPERCALLS, MAX_BATCH, MAX_CONSOLE, MMUEXT_INVLPG_LOCAL,
                              MMUEXT_NEW_BASEPTR, MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L2_TABLE,
                              SCHEDOP_BLOCK, SCHEDOP_SHUTDOWN, SCHEDOP_YIELD,
                              VCPUOP_REGISTER_VCPU_INFO, VI_CR2, VI_MACHINE_BASE, VI_MASK,
                              VI_PENDING)
from vmkit.vmm.pv.monitor import HANDLERS, Paravirtual  # noqa: F401
from vmkit.vmm.pv.vm import PVVM

__all__ = ["Paravirtual", "PVVM", "HYPERCALLS", "HYPERCALL_VECTOR", "EPERM", "EINVAL", "EFAULT",
           "ENOSYS"]
