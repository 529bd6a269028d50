# ctxswitch: several copies of this program run as separate processes and hand the CPU to each
# other with yield ITERATIONS times (the timer preempts them too). Each prints when it is done.
.include "abi.s"
.include "params.s"             # ITERATIONS
.text
.global _start
_start:
    mov ecx, ITERATIONS
    xor edi, edi
1:  mov eax, SYS_YIELD
    int 0x80
    inc edi
    dec ecx
    jnz 1b
    mov esi, offset label
    call print
    mov eax, SYS_GETPID
    int 0x80
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
label:  .asciz "ctxswitch: pid "
label2: .asciz " yielded "
