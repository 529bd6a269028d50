# pvops_pv.s: the PARAVIRTUAL set of the kernel's privileged operations (see pvops.s for the
# native set). guests.build(name, paravirtual=True) assembles kernel.s with this file: the same
# kernel source, each privileged operation replaced by a hypercall to the hypervisor
# (vmkit.vmm.pv.Paravirtual, after Xen: Barham et al., SOSP 2003). The guest kernel runs in
# ring 1 and knows it:
#
#   * hypercalls are "int 0x82" from ring 1 (Xen's 32-bit hypercall vector): number in eax,
#     arguments in ebx, ecx, edx, result in eax (0 or a negative error code);
#   * the trap table, the GDT and the kernel stack are registered with the hypervisor;
#   * page tables hold MACHINE addresses (the VM's memory is one contiguous machine range,
#     whose base the hypervisor writes into vcpu_info); they are read-only to the guest once
#     the hypervisor has validated them, and every later change is an mmu_update hypercall
#     that the hypervisor checks: a batch of (entry address, new value) pairs;
#   * interrupts are events: the hypervisor delivers the timer as an upcall through the trap
#     table and sets the event mask in vcpu_info (shared memory); the kernel clears the mask
#     with a plain store when it returns to user mode: no hypercall on that fast path;
#   * system calls (int 0x80) go from user mode straight to the kernel through a trap gate
#     the hypervisor installs in the real IDT (Xen's fast trap): no hypervisor on that path.

.equ SYSCALL_GATE, 0xEF         # int 0x80: a TRAP gate, DPL 3: the hypervisor installs it
                                # directly in the real IDT only then (as Xen does)

# hypercall numbers (vmkit.vmm.pv.HYPERCALLS)
.equ HYPERCALL_VECTOR, 0x82
.equ HC_SET_TRAP_TABLE, 0       # (table, entries)
.equ HC_MMU_UPDATE, 1           # (requests, count, va to invlpg after or -1)
.equ HC_SET_GDT, 2              # (gdt, entries)
.equ HC_STACK_SWITCH, 3         # (ss, esp)
.equ HC_SET_TIMER_OP, 15        # (period in guest instructions)
.equ HC_CONSOLE_IO, 18          # (command, count, buffer)
.equ HC_VCPU_OP, 24             # (command, argument)
.equ HC_MMUEXT_OP, 26           # (command, argument)
.equ HC_SCHED_OP, 29            # (command, argument)
.equ HC_EVENT_CHANNEL_OP, 32    # (command, port, argument)

.equ MMUEXT_PIN_L1_TABLE, 0
.equ MMUEXT_PIN_L2_TABLE, 1
.equ MMUEXT_NEW_BASEPTR, 5
.equ MMUEXT_INVLPG_LOCAL, 7
.equ CONSOLEIO_WRITE, 0
.equ CONSOLEIO_READ, 1
.equ SCHEDOP_YIELD, 0
.equ SCHEDOP_BLOCK, 1
.equ SCHEDOP_SHUTDOWN, 2
.equ EVTCHNOP_BIND_VIRQ, 1
.equ EVTCHNOP_SEND, 4
.equ VIRQ_TIMER, 0
.equ VCPUOP_REGISTER_VCPU_INFO, 10

# vcpu_info: shared with the hypervisor (Xen's struct vcpu_info, simplified)
.equ VI_PENDING, 0              # byte: an event is waiting
.equ VI_MASK, 1                 # byte: events masked (the paravirtual IF, inverted)
.equ VI_CR2, 8                  # the faulting address of the last page fault
.equ VI_MACHINE_BASE, 12        # machine address of guest-physical 0 (start info)

.equ MMU_BATCH_MAX, 128         # page table updates queued before a forced flush

.macro HYPERCALL nr
    mov eax, \nr
    int HYPERCALL_VECTOR
.endm

# ---- boot -------------------------------------------------------------------------------------
.macro BOOT_ENTRY               # tell the hypervisor where vcpu_info is; events start masked
    mov ebx, VCPUOP_REGISTER_VCPU_INFO
    mov ecx, offset vcpu_info
    HYPERCALL HC_VCPU_OP
.endm
.macro LOAD_GDT                 # the hypervisor validates the descriptors and installs them
    mov ebx, offset gdt
    mov ecx, gdt_end - gdt
    shr ecx, 3
    HYPERCALL HC_SET_GDT
.endm
.macro LOAD_KERNEL_SS           # the kernel's stack selector carries its real ring, 1
    or ax, 1
    mov ss, ax
.endm
.macro LOAD_IDT                 # the IDT, in the hardware's format, is the trap table
    mov ebx, offset idt
    mov ecx, 256
    HYPERCALL HC_SET_TRAP_TABLE
.endm
.macro LOAD_TR                  # the hypervisor owns the TSS (see SET_KERNEL_STACK)
.endm
.macro START_TIMER
    mov ebx, TIMER_PERIOD
    HYPERCALL HC_SET_TIMER_OP
    mov ebx, EVTCHNOP_BIND_VIRQ
    mov ecx, VIRQ_TIMER
    HYPERCALL HC_EVENT_CHANNEL_OP
.endm

# ---- paging -----------------------------------------------------------------------------------
.macro PHYS_TO_MACHINE reg
    add \reg, [vcpu_info + VI_MACHINE_BASE]
.endm
.macro MAKE_L1 reg
    push \reg
    call pv_make_l1
    add esp, 4
.endm
.macro MAKE_L2 reg
    push \reg
    call pv_make_l2
    add esp, 4
.endm
.macro KERNEL_PT_DONE           # kernel_pt maps itself read-only: it is a page table too
    call pv_kernel_pt_done
.endm
.macro SET_PTE ptr, val         # queue (entry address, value); no hypercall yet
    push \val
    push eax
    lea eax, \ptr
    xchg eax, [esp]
    call pv_queue_pte
    add esp, 8
.endm
.macro MMU_FLUSH                # one mmu_update hypercall for the whole queue
    push -1
    call pv_mmu_flush
    add esp, 4
.endm
.macro FLUSH_PAGE reg           # the queue, then invlpg reg, in the same hypercall
    push \reg
    call pv_mmu_flush
    add esp, 4
.endm
.macro LOAD_CR3 reg
    push \reg
    call pv_load_cr3
    add esp, 4
.endm
.macro READ_CR3 reg             # the kernel remembers what it loaded
    mov \reg, [pv_cr3]
.endm
.macro READ_CR2 reg             # the hypervisor saved it in vcpu_info
    mov \reg, [vcpu_info + VI_CR2]
.endm
.macro ENABLE_PAGING            # paging is always on under the hypervisor
.endm

# ---- interrupts and the kernel stack ----------------------------------------------------------
.macro SET_KERNEL_STACK reg
    push \reg
    call pv_stack_switch
    add esp, 4
.endm
.macro EVENTS_ON_RETURN         # unmask events: a plain store into shared memory
    mov byte ptr [vcpu_info + VI_MASK], 0
.endm
.macro ACK_TIMER                # the hypervisor cleared the event when it delivered it
.endm

# ---- devices ------------------------------------------------------------------------------------
.macro CONSOLE_WRITE            # the whole buffer in one hypercall
    push ebx
    push edx
    mov ebx, CONSOLEIO_WRITE
    mov edx, esi
    HYPERCALL HC_CONSOLE_IO
    pop edx
    pop ebx
.endm
.macro KPUTC
    push eax
    push ebx
    push ecx
    push edx
    lea edx, [esp + 12]
    mov ebx, CONSOLEIO_WRITE
    mov ecx, 1
    HYPERCALL HC_CONSOLE_IO
    pop edx
    pop ecx
    pop ebx
    pop eax
.endm
.macro INPUT_BYTE none          # one byte into [edi + edx]
    push ebx
    push ecx
    push edx
    lea edx, [edi + edx]
    mov ebx, CONSOLEIO_READ
    mov ecx, 1
    HYPERCALL HC_CONSOLE_IO
    pop edx
    pop ecx
    pop ebx
    test eax, eax
    jz \none
    mov al, [edi + edx]
.endm
.macro POWER_OFF
    mov ecx, eax
    mov ebx, SCHEDOP_SHUTDOWN
    HYPERCALL HC_SCHED_OP
1:  jmp 1b                      # never reached: the VM is gone
.endm
.macro VM_YIELD                 # let other VMs run too
    mov ebx, SCHEDOP_YIELD
    HYPERCALL HC_SCHED_OP
.endm
