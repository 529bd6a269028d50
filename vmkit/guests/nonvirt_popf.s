# nonvirt-popf: the kernel turns interrupts on by popping a saved EFLAGS with IF = 1 (as
# Linux's local_irq_restore does), waits for NV_TICKS timer ticks, then reports how many came.
#
# Natively, in ring 0, popfd loads IF and the ticks arrive.
#
# Under a trap-and-emulate monitor the kernel runs deprivileged (ring 1, IOPL 0). There POPFD
# leaves IF alone, silently: no fault, so the monitor never learns that the guest meant to
# enable interrupts. Its virtual IF stays 0 (the kernel booted with cli, which did trap), so
# no timer interrupt is delivered and the kernel reports 0 ticks after its wait runs out.
# POPF is sensitive but not privileged: the textbook reason x86 fails Popek & Goldberg.
#
# Included by kernel.s (boot_hook.s) right before the first process starts: ring 0, paging
# on, the timer programmed, interrupts off.

.equ NV_TICKS, 3                # ticks to wait for
.equ NV_BUDGET, 100000          # loop iterations before giving up (~30 periods of 10,000)

    call nv_popf
    jmp nv_popf_done

nv_popf:
    # A tick in the kernel runs the scheduler, which saves the interrupted stack in the
    # current PCB: keep the first process's saved stack pointer and restore it afterwards.
    mov ebx, [current]
    push dword ptr [ebx + PCB_KESP]
    pushfd
    or dword ptr [esp], 0x200       # the saved EFLAGS, with IF = 1
    popfd                           # interrupts on -- or, deprivileged, silently not
    mov ecx, NV_BUDGET
1:  cmp dword ptr [ticks], NV_TICKS
    jae 2f
    dec ecx
    jnz 1b
2:  cli                             # (privileged: a monitor sees this one)
    mov ebx, [current]
    pop dword ptr [ebx + PCB_KESP]
    mov byte ptr [need_switch], 0
    mov ax, KDATA                   # the return path of an interrupt loads the user data
    mov ds, ax                      # segment; the kernel wants its own back
    mov es, ax
    mov esi, offset nv_popf_msg1
    call kputs
    mov eax, [ticks]
    call kputdec
    mov esi, offset nv_popf_msg2
    call kputs
    mov eax, NV_TICKS
    call kputdec
    mov esi, offset nv_popf_msg3
    call kputs
    ret

.data
nv_popf_msg1: .asciz "nonvirt-popf: "
nv_popf_msg2: .asciz " of "
nv_popf_msg3: .asciz " timer ticks arrived after popfd turned interrupts on\n"
.text
nv_popf_done:
