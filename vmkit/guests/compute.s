# compute: CPU-bound work with no system call and no privileged instruction, so every monitor
# should run it at (nearly) native speed. A linear congruential generator (the constants of the
# C standard's example rand()) is stepped ITERATIONS times; the top halves are summed.
.include "abi.s"
.include "params.s"             # ITERATIONS, SEED
.text
.global _start
_start:
    mov ecx, ITERATIONS
    mov eax, SEED
    xor edi, edi                # edi = checksum
1:  imul eax, eax, 1103515245   # x = x * 1103515245 + 12345 (mod 2^32)
    add eax, 12345
    mov edx, eax
    shr edx, 16
    add edi, edx                # checksum += x >> 16
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
label: .asciz "compute: checksum "
