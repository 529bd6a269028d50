# nonvirt-pushcs: the kernel asks which ring it runs in. The low two bits of the CS selector
# are the current privilege level, and nothing stops a program from reading CS: push cs and
# mov ax, cs are unprivileged and never trap.
#
# Natively the kernel reports ring 0. Under a trap-and-emulate monitor the kernel runs
# deprivileged and reports the real ring (1) -- the monitor cannot hide it, since neither
# instruction traps: they are behaviour-sensitive (their result depends on the mode) but not
# privileged. A kernel that branched on this would take the other branch.
#
# Included by kernel.s (boot_hook.s) right before the first process starts.

    call nv_pushcs
    jmp nv_pushcs_done

nv_pushcs:
    mov esi, offset nv_pushcs_msg1
    call kputs
    push cs                         # the selector, zero-extended, RPL = CPL
    pop eax
    and eax, 3
    call kputdec
    mov esi, offset nv_pushcs_msg2
    call kputs
    xor eax, eax
    mov ax, cs                      # the same, by a move from the segment register
    and eax, 3
    call kputdec
    mov esi, offset nv_pushcs_msg3
    call kputs
    ret

.data
nv_pushcs_msg1: .asciz "nonvirt-pushcs: the kernel runs in ring "
nv_pushcs_msg2: .asciz " (push cs), ring "
nv_pushcs_msg3: .asciz " (mov ax, cs)\n"
.text
nv_pushcs_done:
