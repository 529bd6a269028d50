# fault_hook.s: included by kernel.s at the start of do_fault, where every exception the kernel
# does not serve itself arrives (a page fault on a present page among them). It is empty on
# purpose: every guest image but those that serve more faults assembles exactly the same kernel
# with or without this line. The forkwait guest replaces it (through GuestSpec.kernel_files)
# with a jump to fork.s's copy-on-write fault handler, which comes back to do_fault when the
# fault is not a write to a copy-on-write page.
