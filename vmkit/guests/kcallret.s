# kcallret: deep call/ret chains run by the *kernel* (ring 0), as Adams & Agesen's call/ret
# nanobenchmark ran in the guest kernel. Under binary translation kernel code is translated,
# and every ret is an indirect jump the translator must look up; under hardware assist it runs
# natively. (The user-mode `callret` guest runs directly under every monitor.)
#
# Included by kernel.s (boot_hook.s) before the first process starts: ring 0, interrupts off.
.include "params.s"             # ITERATIONS, DEPTH

    mov ecx, ITERATIONS
    xor edi, edi
1:  mov eax, DEPTH
    call kc_sum_to              # eax = DEPTH + ... + 1, through DEPTH nested calls
    add edi, eax
    dec ecx
    jnz 1b
    mov esi, offset kc_msg
    call kputs
    mov eax, edi
    call kputdec
    mov al, 10
    KPUTC                       # out CONSOLE, al (a hypercall in the paravirtual kernel)
    jmp kc_done

# kc_sum_to(eax = n) -> eax = n + kc_sum_to(n - 1), kc_sum_to(0) = 0
kc_sum_to:
    test eax, eax
    jz 2f
    push eax
    dec eax
    call kc_sum_to
    pop edx
    add eax, edx
2:  ret

.data
kc_msg: .asciz "kcallret: total "
.text
kc_done:
