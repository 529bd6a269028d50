# syscall: ITERATIONS getpid system calls (Adams & Agesen's "syscall" nanobenchmark). Each one
# is a round trip user -> kernel -> user; under a monitor it may also cost a trip to the VMM.
.include "abi.s"
.include "params.s"             # ITERATIONS
.text
.global _start
_start:
    mov ecx, ITERATIONS
    xor edi, edi                # sum of the pids returned
1:  mov eax, SYS_GETPID
    int 0x80
    add edi, eax
    dec ecx
    jnz 1b
    mov esi, offset label
    call print
    mov eax, ITERATIONS
    call print_dec
    mov esi, offset label2
    call print
    mov eax, edi
    call print_dec
    call newline
    xor ebx, ebx
    call exit

.include "ulib.s"

.data
label:  .asciz "syscall: "
label2: .asciz " getpid calls, pid sum "
