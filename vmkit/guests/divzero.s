# divzero: divides by zero ITERATIONS times. Each divide error (#DE) traps into the kernel,
# which resumes the program at the handler it registered with onfault (like a signal handler).
.include "abi.s"
.include "params.s"             # ITERATIONS
.text
.global _start
_start:
    mov eax, SYS_ONFAULT
    mov ebx, offset recovered
    int 0x80
    mov ecx, ITERATIONS
    xor edi, edi
1:  xor edx, edx
    mov eax, 1
    xor ebx, ebx
    div ebx                     # 1 / 0: #DE
recovered:
    inc edi
    dec ecx
    jnz 1b
    mov esi, offset label
    call print
    mov eax, edi
    call print_dec
    call newline
    xor ebx, ebx
    call exit

.include "ulib.s"

.data
label: .asciz "divzero: divide errors handled "
