# exit_hook.s: included by kernel.s at the start of sys_exit, in the exiting process's context.
# It is empty on purpose: every guest image but those whose kernel frees an address space at
# exit assembles exactly the same kernel with or without this line. The forkwait guest replaces
# it (through GuestSpec.kernel_files) with a call to fork.s's fork_exit, which takes the
# process's pages down and frees the frames no other process shares (Linux's exit_mmap).
