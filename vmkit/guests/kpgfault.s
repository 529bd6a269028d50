# kpgfault: true page faults taken by the *kernel*, as Adams & Agesen's pgfault nanobenchmark
# (ASPLOS 2006, §6.3: "This test targets the overheads for true page faults"; native 1093 cycles):
# a load from a page that no page table maps faults, and the fault handler resumes after the
# load. Nothing is mapped, so no page-table entry changes: what is measured is the fault itself
# and, under a monitor, the software MMU finding it true (the guest's own) and handing it to
# the guest (reflected by te and bt, injected by the hardware VMM after a #PF exit).
#
# Included by kernel.s (boot_hook.s) before the first process starts: ring 0, interrupts off.
# The #PF gate points at kpf_handler for the test; the kernel's own handler is put back after.
.include "params.s"             # ITERATIONS
.equ KPF_ADDRESS, 0x00C00000    # page directory entry 3: no page table, a true fault

    mov eax, [idt + 14*8]       # the kernel's #PF gate, kept
    mov edx, [idt + 14*8 + 4]
    push edx
    push eax
    mov ecx, 14
    mov edx, offset kpf_handler
    mov al, 0x8E                # present, DPL 0, 32-bit interrupt gate
    call set_gate
    LOAD_IDT                    # (the paravirtual kernel registers its trap table again)
    mov ecx, ITERATIONS
    xor edi, edi
1:  mov eax, [KPF_ADDRESS]      # faults: the handler resumes at kpf_resume
kpf_resume:
    inc edi
    dec ecx
    jnz 1b
    pop eax
    pop edx
    mov [idt + 14*8], eax       # the kernel's gate again
    mov [idt + 14*8 + 4], edx
    LOAD_IDT
    mov esi, offset kpf_msg
    call kputs
    mov eax, edi
    call kputdec
    mov al, 10
    KPUTC
    jmp kpf_done

# the test's #PF handler: skip the faulting load (error code on the stack, then EIP)
kpf_handler:
    mov dword ptr [esp + 4], offset kpf_resume
    add esp, 4
    or dword ptr [esp + 4], PARAVIRTUAL     # the paravirtual kernel returns to its ring, 1
    iretd

.data
kpf_msg: .asciz "kpgfault: page faults handled "
.text
kpf_done:
