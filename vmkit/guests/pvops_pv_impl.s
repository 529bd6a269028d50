# pvops_pv_impl.s: the routines and data behind the paravirtual macros (pvops_pv.s). Every
# routine keeps all registers.

# pv_make_l1(frame): a fresh frame becomes a page table: kernel_pt maps it read-only (the
# hypervisor refuses to validate a page table that some table maps writable), then it is
# pinned as a page table. Only while the kernel builds its tables at boot.
pv_make_l1:
    pushad
    mov eax, [esp + 36]
    shr eax, 12
    and dword ptr [kernel_pt + eax*4], ~PG_W
    mov ecx, [esp + 36]
    add ecx, [vcpu_info + VI_MACHINE_BASE]
    mov ebx, MMUEXT_PIN_L1_TABLE
    HYPERCALL HC_MMUEXT_OP
    test eax, eax
    jnz pv_refused
    popad
    ret

# pv_make_l2(frame): a page directory: read-only in kernel_pt; the hypervisor validates and
# pins it when it is first loaded (pv_load_cr3)
pv_make_l2:
    push eax
    mov eax, [esp + 8]
    shr eax, 12
    and dword ptr [kernel_pt + eax*4], ~PG_W
    pop eax
    ret

pv_kernel_pt_done:
    push eax
    mov eax, offset kernel_pt
    shr eax, 12
    and dword ptr [kernel_pt + eax*4], ~PG_W
    pop eax
    ret

# pv_queue_pte(entry address, value): add one update to the batch (flushing a full one)
pv_queue_pte:
    push eax
    push ecx
    mov ecx, [mmu_count]
    cmp ecx, MMU_BATCH_MAX
    jb 1f
    push -1
    call pv_mmu_flush
    add esp, 4
    xor ecx, ecx
1:  mov eax, [esp + 12]
    mov [mmu_batch + ecx*8], eax
    mov eax, [esp + 16]
    mov [mmu_batch + ecx*8 + 4], eax
    inc ecx
    mov [mmu_count], ecx
    pop ecx
    pop eax
    ret

# pv_mmu_flush(va): one mmu_update hypercall for the queued updates, then invlpg va (-1: none)
pv_mmu_flush:
    pushad
    mov ebx, offset mmu_batch
    mov ecx, [mmu_count]
    mov edx, [esp + 36]
    HYPERCALL HC_MMU_UPDATE
    mov dword ptr [mmu_count], 0
    test eax, eax
    jnz pv_refused
    popad
    ret

# pv_load_cr3(physical address of a page directory)
pv_load_cr3:
    pushad
    mov ecx, [esp + 36]
    mov [pv_cr3], ecx
    add ecx, [vcpu_info + VI_MACHINE_BASE]
    mov ebx, MMUEXT_NEW_BASEPTR
    HYPERCALL HC_MMUEXT_OP
    test eax, eax
    jnz pv_refused
    popad
    ret

# pv_stack_switch(esp): the kernel stack for the next trap from user mode
pv_stack_switch:
    pushad
    mov ebx, KDATA | 1
    mov ecx, [esp + 36]
    HYPERCALL HC_STACK_SWITCH
    popad
    ret

# the hypervisor refused an operation the kernel needs: say so and stop
pv_refused:
    push eax
    mov esi, offset msg_pv_refused
    call kputs
    pop eax
    neg eax
    call kputdec
    mov al, 10
    KPUTC
    mov eax, 1
    jmp power_off_code

.data
.align 64
vcpu_info:    .space 64                 # shared with the hypervisor (VI_* offsets)
pv_cr3:       .long 0                   # the page directory the kernel loaded (physical)
mmu_count:    .long 0
.align 8
mmu_batch:    .space MMU_BATCH_MAX * 8  # queued (entry address, value) pairs
msg_pv_refused: .asciz "kernel: the hypervisor refused a page table operation, error -"
.text
