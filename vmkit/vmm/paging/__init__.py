"""Paging modes: how a monitor virtualizes the guest's page tables, behind one interface
(after Xen's ``struct paging_mode``, dispatched by xen/arch/x86/mm/paging.c to mm/shadow and
mm/hap over one guest walker).

==================  =======================================================================
``mode.py``         :class:`PagingMode`, the interface every mode implements (guest CR3 load,
                    CR0/CR4 changes, INVLPG, a host page fault hidden or the guest's, a fault
                    of the second dimension, a write to a traced page, world switch, declared
                    per-VM state, what viz draws), and the registry (``MODES``, ``register``,
                    ``select``)
``shadow.py``       ``"vtlb"``: shadow page tables as a virtual TLB (te, bt, hw without EPT)
``traced.py``       ``"traced"``: shadow page tables kept across address-space switches and
                    kept coherent by tracing (write-protecting) the guest's page tables
``nested.py``       ``"ept"``: nested paging, the EPT (hw)
``direct.py``       ``"direct"``: validated direct paging, ``mmu_update`` and ``mmuext_op`` (pv)
``softmmu.py``      the software MMU: one instruction through the guest's tables, for the
                    accesses a mode's real tables cannot express
==================  =======================================================================

Every mode walks the guest's tables with the one page walk, ``vmkit.machine.mmu.walk_tables``
(through ``GuestVM.walk``). A monitor selects its mode by name: ``TrapAndEmulate(img,
paging="vtlb")``, ``BinaryTranslation(img, paging="vtlb")``, ``HardwareAssisted(img,
paging="ept" | "vtlb")`` (``ept=False`` is ``paging="vtlb"``); ``Paravirtual`` uses
``"direct"``. A monitor takes every registered mode of the kinds it supports (te, bt: shadow
modes; hw: shadow and nested; pv: direct), so a new shadow mode is a new module here and one
``@register``. See docs/architecture.md, "Adding a paging mode". ``shadow="vtlb" | "traced"``
is the same choice for te, bt and hw without EPT (``HardwareAssisted(img, shadow="traced")``
implies ``ept=False``).
"""

from __future__ import annotations

from vmkit.vmm.paging.mode import (EMULATE, GUEST, HIDDEN, MODES, PagingMode,  # noqa: F401
                                   PagingView, mode_class, register, select, shadow_choice)
from vmkit.vmm.paging.shadow import ShadowPaging  # noqa: F401  (registers "vtlb")
from vmkit.vmm.paging.nested import EPT, NestedPaging  # noqa: F401  (registers "ept")
from vmkit.vmm.paging.direct import DirectPaging  # noqa: F401  (registers "direct")
from vmkit.vmm.paging.traced import TracedShadowPaging  # noqa: F401  (registers "traced")

__all__ = ["PagingMode", "PagingView", "MODES", "register", "select", "mode_class", "HIDDEN",
           "EMULATE", "GUEST", "ShadowPaging", "TracedShadowPaging", "NestedPaging",
           "DirectPaging", "EPT", "shadow_choice"]
