"""The host memory layout the monitors share: the VMM's address window in every shadow
address space, the real GDT's reserved entries, and where the VMM area and each VM's part of
it lie in host-physical memory. Written once, for every monitor that keeps the real CPU's
tables (te, bt, pv, and hw with shadow paging)."""

from __future__ import annotations

__all__ = ["MiB", "VMM_WINDOW", "W_GDT", "W_IDT", "W_TSS", "W_STUB", "GDT_BYTES",
           "RESERVED_ENTRY", "VMM_CS", "VMM_DS", "VMM_TSS", "TSS_LIMIT", "IO_BITMAP",
           "H_IDT", "H_TSS", "H_STUB", "H_ONES", "V_GDT", "V_WINPT", "V_PD", "V_POOL"]

MiB = 1 << 20

# ---- the VMM's address window, mapped read-only supervisor into every shadow address space ----
VMM_WINDOW = 0xFFC00000        # page directory entry 1023; guests do not use it
W_GDT, W_IDT, W_TSS, W_STUB = 0x00000, 0x10000, 0x11000, 0x14000
GDT_BYTES = 0x10000            # the real GDT: 8192 descriptors (GDTR limit 0xFFFF)
#: the VMM's own descriptors take the last three GDT entries, above anything a guest uses (Xen
#: reserves the top of the GDT the same way: FIRST_RESERVED_GDT_ENTRY)
RESERVED_ENTRY = 8189
VMM_CS, VMM_DS, VMM_TSS = 0xFFE8, 0xFFF0, 0xFFF8
TSS_LIMIT = 104 + 8192         # the TSS, an I/O bitmap for 65536 ports, and its 0xFF end byte

# ---- host-physical layout --------------------------------------------------------------------
H_IDT, H_TSS, H_STUB, H_ONES = 0x10000, 0x11000, 0x14000, 0x15000   # shared VMM area
V_GDT, V_WINPT, V_PD, V_POOL = 0x00000, 0x10000, 0x11000, 0x12000   # per VM, at (1 + i) MiB
#: where the I/O permission bitmap of the VMM's TSS starts (host-physical)
IO_BITMAP = H_TSS + 104
