# syscalls_ext.s: included by kernel.s right after its table of system calls. It is empty on
# purpose: every guest image but those that add system calls assembles exactly the same kernel
# with or without this line. A guest that adds some (forkwait: fork and wait, see fork.s)
# replaces this file through GuestSpec.kernel_files and says how many in
# GuestSpec.extra_syscalls.
