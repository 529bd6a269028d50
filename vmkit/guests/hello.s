# hello: the smallest user program. Prints a greeting with its process id, then exits.
.include "abi.s"
.text
.global _start
_start:
    mov esi, offset greeting
    call print
    mov eax, SYS_GETPID         # a system call: int 0x80 traps into the kernel (ring 3 -> 0)
    int 0x80
    call print_dec
    call newline
    xor ebx, ebx
    call exit

.include "ulib.s"

.data
greeting: .asciz "Hello from user mode! pid "
