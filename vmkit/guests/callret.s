# callret: ITERATIONS times, a recursive function of depth DEPTH (deep call/ret chains; BT
# systems must translate every return, Adams & Agesen's "call/ret" nanobenchmark).
.include "abi.s"
.include "params.s"             # ITERATIONS, DEPTH
.text
.global _start
_start:
    mov ecx, ITERATIONS
    xor edi, edi
1:  mov eax, DEPTH
    call sum_to                 # eax = DEPTH + (DEPTH-1) + ... + 1
    add edi, eax
    dec ecx
    jnz 1b
    mov esi, offset label
    call print
    mov eax, edi
    call print_dec
    call newline
    xor ebx, ebx
    call exit

# sum_to(eax = n) -> eax = n + sum_to(n - 1), sum_to(0) = 0
sum_to:
    test eax, eax
    jz 1f
    push eax
    dec eax
    call sum_to
    pop edx
    add eax, edx
1:  ret

.include "ulib.s"

.data
label: .asciz "callret: total "
