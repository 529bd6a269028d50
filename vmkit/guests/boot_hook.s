# boot_hook.s: included by kernel.s at the end of boot, just before the first process starts.
# It is empty on purpose: every guest image but the nonvirt- demonstrations assembles exactly
# the same kernel with or without this line. The nonvirt- guests replace this file (through
# GuestSpec.kernel_files) with a short demonstration that the kernel runs in ring 0 with its
# GDT, IDT, TSS, paging and timer set up and interrupts still off.
