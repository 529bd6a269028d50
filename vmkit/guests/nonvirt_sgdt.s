# nonvirt-sgdt: the kernel reads back its descriptor-table registers with sgdt and sidt and
# compares them with the tables it loaded with lgdt and lidt.
#
# Natively GDTR and IDTR hold the kernel's own tables. Under a trap-and-emulate monitor the
# lgdt and lidt traps were emulated: the monitor keeps the guest's values in its virtual CPU
# and loads the real registers with its own tables (a shadow GDT whose descriptors let a
# deprivileged kernel run; an IDT that sends every interrupt to the monitor). sgdt and sidt
# do not trap, so they show the real registers: the monitor's tables, not the guest's. This
# is how the "Red Pill" detects a virtual machine (Rutkowska 2004, with sidt).
#
# Included by kernel.s (boot_hook.s) right before the first process starts.

    call nv_sgdt
    jmp nv_sgdt_done

nv_sgdt:
    sgdt [nv_sgdt_buf]
    mov esi, offset nv_sgdt_sgdt
    mov edi, offset nv_sgdt_gdt
    mov edx, offset gdt
    call nv_sgdt_report
    sidt [nv_sgdt_buf]
    mov esi, offset nv_sgdt_sidt
    mov edi, offset nv_sgdt_idt
    mov edx, offset idt
    call nv_sgdt_report
    ret

# report(esi = "sgdt"/"sidt", edi = "GDT"/"IDT", edx = where the kernel's own table is):
# compares it with the base the instruction just stored in nv_sgdt_buf
nv_sgdt_report:
    push esi
    mov esi, offset nv_sgdt_msg1
    call kputs
    pop esi
    call kputs
    mov eax, [nv_sgdt_buf + 2]      # the base (after the 16-bit limit)
    cmp eax, edx
    jne 1f
    mov esi, offset nv_sgdt_own
    call kputs
    mov esi, edi
    call kputs
    jmp 2f
1:  push edx
    mov esi, offset nv_sgdt_other
    call kputs
    mov eax, [nv_sgdt_buf + 2]
    call kputhex
    mov esi, offset nv_sgdt_not
    call kputs
    mov esi, edi
    call kputs
    mov esi, offset nv_sgdt_at
    call kputs
    pop eax
    call kputhex
2:  mov al, 10
    out CONSOLE, al
    ret

.data
.align 4
nv_sgdt_buf:   .space 8
nv_sgdt_sgdt:  .asciz "sgdt"
nv_sgdt_sidt:  .asciz "sidt"
nv_sgdt_gdt:   .asciz "GDT"
nv_sgdt_idt:   .asciz "IDT"
nv_sgdt_msg1:  .asciz "nonvirt-sgdt: "
nv_sgdt_own:   .asciz " shows the kernel's own "
nv_sgdt_other: .asciz " shows a table at "
nv_sgdt_not:   .asciz ", not the kernel's "
nv_sgdt_at:    .asciz " at "
.text
nv_sgdt_done:
