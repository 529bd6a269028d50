# nonvirt-smsw: the kernel sets CR0.TS (task switched), as a kernel does after a context
# switch so that the next FPU instruction traps and the FPU state can be switched lazily,
# then checks it with smsw, which stores CR0 (all of it, into a 32-bit register), and clears
# it again with clts.
#
# Natively smsw shows the CR0 the kernel wrote: PG, WP, TS, ET and PE. Under a trap-and-emulate
# monitor the mov to CR0 trapped and was emulated on the virtual CPU's CR0; the real CR0 is the
# monitor's, which owns the real FPU and the real TS bit (and keeps paging and write protection
# on for its own reasons). smsw does not trap, so it shows the real CR0, not the one the guest
# wrote.
#
# Included by kernel.s (boot_hook.s) right before the first process starts.

.equ NV_CR0_TS, 8

    call nv_smsw
    jmp nv_smsw_done

nv_smsw:
    mov eax, cr0                    # privileged (a monitor emulates it)
    or eax, NV_CR0_TS
    mov cr0, eax                    # privileged: CR0.TS = 1
    smsw eax                        # unprivileged: what is in CR0?
    push eax
    mov esi, offset nv_smsw_msg1
    call kputs
    pop eax
    push eax
    call kputhex
    mov esi, offset nv_smsw_msg2
    call kputs
    pop eax
    test eax, NV_CR0_TS
    jz 1f
    mov esi, offset nv_smsw_set
    jmp 2f
1:  mov esi, offset nv_smsw_clear
2:  call kputs
    clts                            # privileged: TS = 0 again
    ret

.data
nv_smsw_msg1:  .asciz "nonvirt-smsw: after setting CR0.TS, smsw shows CR0 = "
nv_smsw_msg2:  .asciz " (TS "
nv_smsw_set:   .asciz "set)\n"
nv_smsw_clear: .asciz "clear)\n"
.text
nv_smsw_done:
