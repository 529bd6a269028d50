# pvops.s: the privileged operations of the kit's kernel, one macro each (after Linux's pvops).
#
# kernel.s never executes a privileged instruction directly: it uses these macros. This file
# is the NATIVE set: each macro expands to exactly the instructions a kernel on bare hardware
# runs, so the native kernel is byte-for-byte what it would be without macros, and every
# monitor but the paravirtual one runs it unchanged. guests.build(name, paravirtual=True)
# assembles the same kernel.s with pvops_pv.s instead, whose macros make hypercalls to the
# hypervisor (vmkit.vmm.pv, docs/paravirtualization.md).

.equ SYSCALL_GATE, 0xEE         # int 0x80: an interrupt gate, DPL 3

# ---- boot -------------------------------------------------------------------------------------
.macro BOOT_ENTRY               # first instruction: interrupts off
    cli
.endm
.macro LOAD_GDT                 # the kernel's own GDT (gdt_ptr)
    lgdt [gdt_ptr]
.endm
.macro LOAD_KERNEL_SS           # ss := ax (= KDATA)
    mov ss, ax
.endm
.macro LOAD_IDT                 # the interrupt table (idt_ptr)
    lidt [idt_ptr]
.endm
.macro LOAD_TR                  # task register := ax
    ltr ax
.endm
.macro START_TIMER              # unmask IRQ 0 and program the timer
    mov al, 0xFE
    out PIC_MASK, al
    mov eax, TIMER_PERIOD
    out TIMER_PORT, eax
.endm

# ---- paging -----------------------------------------------------------------------------------
.macro PHYS_TO_MACHINE reg      # a physical frame address as it goes into a page table entry
.endm
.macro MAKE_L1 reg              # the fresh frame at reg becomes a page table
.endm
.macro MAKE_L2 reg              # the fresh frame at reg becomes a page directory
.endm
.macro KERNEL_PT_DONE           # kernel_pt is built
.endm
.macro SET_PTE ptr, val         # write a page table entry
    mov dword ptr \ptr, \val
.endm
.macro MMU_FLUSH                # page table writes so far take effect
.endm
.macro FLUSH_PAGE reg           # ... and the TLB entry of the page at reg goes
    invlpg [\reg]
.endm
.macro LOAD_CR3 reg             # switch address space
    mov cr3, \reg
.endm
.macro READ_CR3 reg
    mov \reg, cr3
.endm
.macro READ_CR2 reg             # the faulting address in the page fault handler
    mov \reg, cr2
.endm
.macro ENABLE_PAGING
    mov eax, cr0
    or eax, 0x80010000
    mov cr0, eax
.endm

# ---- interrupts and the kernel stack ----------------------------------------------------------
.macro SET_KERNEL_STACK reg     # the stack the next trap from user mode uses (TSS ESP0)
    mov [tss + 4], \reg
.endm
.macro EVENTS_ON_RETURN         # just before iretd to user mode (iretd itself loads IF here)
.endm
.macro ACK_TIMER                # end of interrupt
    mov al, 0x20
    out PIC_CMD, al
.endm

# ---- devices ------------------------------------------------------------------------------------
.macro CONSOLE_WRITE            # ecx bytes at esi to the console (clobbers al, esi, ecx)
    jecxz 2f
1:  mov al, [esi]
    out CONSOLE, al
    inc esi
    dec ecx
    jnz 1b
2:
.endm
.macro KPUTC                    # the byte in al to the console
    out CONSOLE, al
.endm
.macro INPUT_BYTE none          # al := the next input byte, or jump to none when there is none
    in al, INPUT_STATUS
    test al, 1
    jz \none
    in al, INPUT_DATA
.endm
.macro POWER_OFF                # power off with exit code eax
    out POWEROFF, eax
    cli
    hlt
.endm
.macro VM_YIELD                 # a process yielded: nothing to tell the hardware
.endm
