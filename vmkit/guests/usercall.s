# usercall: a user program that tries to call the hypervisor directly (int 0x82, the
# paravirtual kernel's hypercall vector). The gate admits ring 1 only: #GP, and the kernel
# kills the process.
.include "abi.s"
.text
.global _start
_start:
    mov eax, 5                  # console_io
    int 0x82
1:  jmp 1b
