"""The core of the monitors that run the guest kernel deprivileged, in ring 1, under a ring-0
VMM on one host machine: trap-and-emulate (:mod:`vmkit.vmm.te`), binary translation
(:mod:`vmkit.vmm.bt`) and paravirtualization (:mod:`vmkit.vmm.pv`) are each a policy on it.

One mechanism a module:

``vcpu.py``      the virtual CPU (:class:`VirtualCPU`) and the per-VM object (:class:`TEVM`, a
                 :class:`~vmkit.vmm.vm.GuestVM` with the virtual CPU, the VMM's TLB and the
                 shadow GDT's bookkeeping)
``handlers.py``  the one instruction emulator: the registry (``handles``) and the handlers of
                 the privileged and sensitive instructions, on the virtual CPU
``boot.py``      the VMM area and a VM at power-on (ring 1, paging on the shadow tables)
``segments.py``  the shadow GDT and the real segment loads (ring compression)
``reflect.py``   exceptions and interrupts injected through the guest's IDT
``control.py``   the guest's CR0/CR3/CR4 writes
``softmmu.py``   one instruction emulated through the guest's page tables
``monitor.py``   :class:`Deprivileged`: traps into the VMM, and the run loop's policy
"""

from __future__ import annotations

from vmkit.vmm.deprivileged.monitor import Deprivileged
from vmkit.vmm.deprivileged.vcpu import TEVM, VirtualCPU

__all__ = ["Deprivileged", "TEVM", "VirtualCPU"]
