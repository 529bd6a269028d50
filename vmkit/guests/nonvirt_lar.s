# nonvirt-lar: the kernel asks the processor about its own data segment with lar, which
# returns a descriptor's access rights (with its DPL) if the descriptor is visible from the
# current ring, and clears ZF if it is not.
#
# Natively the kernel, in ring 0, sees its data segment (selector 0x10) with DPL 0. Under a
# trap-and-emulate monitor the kernel runs in ring 1 on the monitor's shadow GDT: either the
# monitor gave the kernel's segments DPL 1 so that ring 1 can use them (and lar reports DPL 1),
# or they kept DPL 0 and lar from ring 1 finds the segment invisible. lar never traps: the
# protection checks it runs against the current ring make it behaviour-sensitive (Robin &
# Irvine 2000 list LAR, LSL, VERR and VERW for this reason).
#
# Included by kernel.s (boot_hook.s) right before the first process starts.

    call nv_lar
    jmp nv_lar_done

nv_lar:
    mov esi, offset nv_lar_msg1
    call kputs
    mov ecx, KDATA
    lar eax, ecx                    # ZF = 1 and the access rights, if visible
    jnz 1f
    shr eax, 13
    and eax, 3                      # the DPL
    push eax
    mov esi, offset nv_lar_dpl
    call kputs
    pop eax
    call kputdec
    mov al, 10
    out CONSOLE, al
    ret
1:  mov esi, offset nv_lar_hidden
    call kputs
    ret

.data
nv_lar_msg1:   .asciz "nonvirt-lar: lar says the kernel's data segment 0x10 "
nv_lar_dpl:    .asciz "has DPL "
nv_lar_hidden: .asciz "is not visible from this ring\n"
.text
nv_lar_done:
