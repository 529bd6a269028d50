"""Named cost-model presets. Every figure names its source.

These are *per-event* costs taken from published measurements, never values fitted to make a
technique win. Where a paper gives no figure for a category, the value is an order-of-magnitude
estimate and says so. Figures marked "to verify" are recalled from the paper and have not yet
been checked against its text; the comparison notebook (issue "binary translation, hardware
assist and the cost model") checks them before it relies on them.
"""

from __future__ import annotations


def _make():
    from vmkit.vmm.costs import CostModel
    p4 = CostModel(
        name="p4-2006",
        source="Adams & Agesen, A Comparison of Software and Hardware Techniques for x86 "
               "Virtualization, ASPLOS 2006 (Pentium 4 672 'Prescott', 3.8 GHz, first VT-x)",
        native=1.0,        # one instruction ~ one cycle (CPI ~1 assumed for the teaching subset)
        interrupt=242.0,   # native syscall round trip (int 0x80 + iret), A&A Fig. 4 (to verify)
        trap=2000.0,       # trap to the VMM and back; estimate: same order as a VMX round trip
        emulate=400.0,     # decode + emulate one privileged instruction in the VMM; estimate
        vm_exit=2409.0,    # VM exit + VM entry round trip, A&A §4 (to verify)
        translate=150.0,   # BT translation cost per instruction; estimate (A&A §3: translation
                           # is cheap next to the traps it removes)
        tc_lookup=20.0,    # translation-cache hash lookup for an indirect branch; estimate
        callout=250.0,     # BT callout into the VMM; estimate (A&A Fig. 4: in/out via callout)
        interpret=50.0,    # one instruction interpreted; estimate (~30-100x direct execution)
        page_walk=30.0,    # one page-walk memory reference hitting the cache; estimate
        shadow_update=800.0,   # shadow PTE update in the VMM; estimate
        hidden_fault=2000.0,   # hidden page fault handled by the VMM; estimate
        hypercall=1000.0,  # hypercall round trip; Barham et al. SOSP 2003 report Xen's as a
                           # little more than a syscall; estimate
        world_switch=5000.0,   # full VM context switch; estimate
    )
    modern = CostModel(
        name="modern-2020",
        source="VM exit round trip on a recent Intel core (Skylake/Cascade Lake class): "
               "~500 cycles for a null exit (e.g. CPUID), as measured by KVM unit tests "
               "(vmexit_cpuid) and reported by Agesen et al. and others; estimates marked",
        native=1.0,
        interrupt=100.0,   # syscall round trip on a modern core; estimate
        trap=700.0,        # estimate
        emulate=200.0,     # estimate
        vm_exit=500.0,     # null VM exit round trip (vmexit_cpuid), recent Intel; see source
        translate=150.0,
        tc_lookup=15.0,
        callout=150.0,
        interpret=40.0,
        page_walk=20.0,
        shadow_update=400.0,
        hidden_fault=1000.0,
        hypercall=500.0,   # about one VM exit round trip
        world_switch=2000.0,
    )
    return [p4, modern]


PRESETS = []


def __getattr__(name):
    raise AttributeError(name)
