"""Paravirtual-only demonstrations: guests that show the hypervisor's interface itself and have
no native twin (``GuestSpec.paravirtual_only``). Registered when the guest list is first used.

``pv-refusal``: the paravirtual kernel asks the hypervisor to map a frame that is not the VM's
and to make one of its page tables writable; both mmu_update calls are refused with -EPERM and
counted in ``stats["hypercall_refusals"]`` (see vmkit/guests/pv_refusal.s)."""

from vmkit.guests import GuestSpec, register

register(GuestSpec(
    "pv-refusal", "paravirtual only: the kernel asks for two page table updates that would "
    "break isolation; the hypervisor refuses both", lambda p: ["hello"], {}, {},
    lambda p: ("pv-refusal: map a foreign frame -> error -1; make a page table writable -> "
               "error -1\nHello from user mode! pid 1\n"),
    kernel_files=lambda p: {"boot_hook.s": '.include "pv_refusal.s"\n'},
    paravirtual_only=True))
