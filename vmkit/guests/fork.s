# fork.s: fork and wait for the kit's kernel (the forkwait guest, Adams & Agesen's "forkwait").
#
# Included by kernel.s through syscalls_ext.s, right after the kernel's system-call table, so it
# starts with the two new table entries: SYS_FORK (12) and SYS_WAIT (13) in abi.s.
#
# The kernel has a fixed number of process slots (NPROC, one per program of the guest image,
# each with its page directory, page tables, kernel stack and frames made at boot). fork_init,
# run from boot_hook.s, frees every slot but the first and takes its user pages down; a slot's
# frames stay reserved for the children that will use it (the kernel never frees a frame).
#
#   fork() -> the child's pid in the parent, 0 in the child, -1 when no slot is free.
#     The whole address space is COPIED eagerly, no copy-on-write: each page of the parent's
#     program (text and data), its stack page and every present page of its heap is copied into
#     the child's frames, and the child's page table entries are written (a page-table write per
#     page: under traced shadow paging each is a trace fault or VM exit, A&A §4.3). Linux 2.6
#     copied the page tables and shared the pages copy-on-write; the kit copies the pages
#     themselves, so the guest does a real fork's worth of work natively (see fork_copy) and the
#     monitors add what virtualizing its page-table writes and address-space switches costs.
#     The child's heap frames are taken from the frame pool the first time its slot needs them
#     and kept for the slot's later children. The child returns from the same int 0x80 with the
#     parent's registers and eax = 0.
#   wait(pid) -> pid once that child has exited (-1: no such process, or oneself). While it
#     still runs, the parent yields and the int 0x80 runs again when it is scheduled next
#     (EIP moved back onto it). Reaping takes the child's pages down (more page-table writes:
#     program, stack and heap entries, as Linux's exit_mmap zaps the child's page tables).
#
# Every process of a guest that forks runs the same program: a child's frames are the slot's
# program frames (proc_table), the same number of pages as the parent's.

    .long sys_fork, sys_wait

# fork_init: at the end of boot, before the first process runs
fork_init:
    mov ebx, offset pcbs + PCB_SIZE
1:  cmp ebx, offset pcbs + PCB_SIZE * NPROC
    jae 2f
    mov dword ptr [ebx + PCB_STATE], 0      # free: no process runs here yet
    mov dword ptr [ebx + PCB_PID], 0
    mov edi, [ebx + PCB_PT1]
    mov eax, [edi + 1023*4]                 # the stack frame create_processes gave the slot
    and eax, 0xFFFFF000
    xor ecx, ecx
    PHYS_TO_MACHINE ecx                     # machine address of physical 0 (0 natively)
    sub eax, ecx                            # back to a physical address
    mov edx, ebx
    sub edx, offset pcbs
    mov [fork_stack + edx], eax
    call fork_unmap
    add ebx, PCB_SIZE
    jmp 1b
2:  mov dword ptr [fork_next_pid], NPROC + 1
    MMU_FLUSH
    ret

# fork_pages(ebx = a slot's PCB) -> ecx = pages of its program, edx = their physical address
fork_pages:
    mov eax, ebx
    sub eax, offset pcbs
    shr eax, 5                              # slot index (PCB_SIZE = 32)
    imul eax, eax, 12
    mov edx, [proc_table + eax]
    mov ecx, [proc_table + eax + 4]
    add ecx, PAGE - 1
    shr ecx, 12
    ret

# fork_unmap(ebx = PCB): clear the page table entries of its program pages, its stack page
# and its present heap pages
fork_unmap:
    push edi
    call fork_pages
    mov edi, [ebx + PCB_PT1]
1:  dec ecx
    js 2f
    SET_PTE [edi + ecx*4], 0
    jmp 1b
2:  SET_PTE [edi + 1023*4], 0
    mov edi, [ebx + PCB_PT2]
    mov ecx, 1024
3:  dec ecx
    js 4f
    test dword ptr [edi + ecx*4], PG_P
    jz 3b
    SET_PTE [edi + ecx*4], 0
    jmp 3b
4:  pop edi
    ret

# fork_copy(esi = the parent's page, virtual; edi = the child's frame, physical; edx = the
# child's page table entry): copy the page and map the frame there.
# The copy is a loop of loads and stores, a dword at a time, not one rep movsd: the kit prices
# an instruction, not the bytes it moves (a rep movsd of a page is one step of guest time), so a
# rep copy would cost a few cycles. The loop's 6 instructions a dword make a page copy about
# 6,100 cycles natively, the order of what a 3.8 GHz Pentium 4 takes to copy 4 KiB from memory
# at a few GB/s (an estimate; A&A give no figure).
fork_copy:
    push ecx
    push edi
    mov ecx, PAGE / 4
1:  mov eax, [esi]
    mov [edi], eax
    add esi, 4
    add edi, 4
    dec ecx
    jnz 1b
    pop eax
    PHYS_TO_MACHINE eax
    or eax, PG_P | PG_W | PG_U
    SET_PTE [edx], eax
    pop ecx
    ret

sys_fork:
    mov ebx, offset pcbs
1:  cmp ebx, offset pcbs + PCB_SIZE * NPROC
    jae sys_bad                             # no free slot: -1
    cmp dword ptr [ebx + PCB_STATE], 0
    je 2f
    add ebx, PCB_SIZE
    jmp 1b
2:  # the address space: the program's pages, then the stack page
    call fork_pages
    xor eax, eax
3:  cmp eax, ecx
    jae 4f
    push eax
    push ecx
    push edx
    mov edi, eax
    shl edi, 12
    lea esi, [edi + USER_BASE]              # the parent's page (its address space is loaded)
    add edi, edx                            # the child's frame
    mov edx, [ebx + PCB_PT1]
    lea edx, [edx + eax*4]
    call fork_copy
    pop edx
    pop ecx
    pop eax
    inc eax
    jmp 3b
4:  mov esi, USER_STACK_TOP - PAGE
    mov edi, ebx
    sub edi, offset pcbs
    mov edi, [fork_stack + edi]
    mov edx, [ebx + PCB_PT1]
    add edx, 1023*4
    call fork_copy
    # the heap: every present page of the parent's, into the slot's heap frames
    mov ecx, [current]
    mov ecx, [ecx + PCB_PT2]
    xor eax, eax
5:  cmp eax, 1024
    jae 7f
    test dword ptr [ecx + eax*4], PG_P
    jz 6f
    push eax
    push ecx
    mov edi, ebx
    sub edi, offset pcbs
    shl edi, 7                              # slot offset * 128 = slot * 4096 (PCB_SIZE = 32)
    lea edi, [fork_heap + edi + eax*4]      # the slot's frame for this heap page
    cmp dword ptr [edi], 0
    jne 8f
    push eax
    call alloc_frame                        # the first child of this slot to need it
    mov [edi], eax
    pop eax
8:  mov edi, [edi]
    mov esi, eax
    shl esi, 12
    add esi, HEAP_BASE                      # the parent's heap page
    mov edx, [ebx + PCB_PT2]
    lea edx, [edx + eax*4]
    call fork_copy
    pop ecx
    pop eax
6:  inc eax
    jmp 5b
7:  MMU_FLUSH
    # the child's kernel stack: a copy of the parent's trap frame, returning 0
    mov edi, [ebx + PCB_KSTACK]
    sub edi, FRAME_SIZE
    mov [ebx + PCB_KESP], edi
    mov esi, ebp
    mov ecx, FRAME_SIZE / 4
    rep movsd
    mov dword ptr [edi - FRAME_SIZE + F_EAX], 0
    mov ecx, [current]
    mov eax, [ecx + PCB_ONFAULT]
    mov [ebx + PCB_ONFAULT], eax
    mov eax, [fork_next_pid]
    inc dword ptr [fork_next_pid]
    mov [ebx + PCB_PID], eax
    mov dword ptr [ebx + PCB_STATE], 1      # runnable: the scheduler may pick it
    mov [ebp + F_EAX], eax                  # the parent gets the child's pid
    pop ebp
    ret

sys_wait:
    mov eax, [ebp + F_EBX]
    test eax, eax
    jle sys_bad
    mov ebx, offset pcbs
1:  cmp ebx, offset pcbs + PCB_SIZE * NPROC
    jae sys_bad                             # no such process
    cmp [ebx + PCB_PID], eax
    je 2f
    add ebx, PCB_SIZE
    jmp 1b
2:  cmp ebx, [current]
    je sys_bad                              # waiting for oneself
    cmp dword ptr [ebx + PCB_STATE], 0
    je 3f
    sub dword ptr [ebp + F_EIP], 2          # still running: back onto the int 0x80 ...
    mov byte ptr [need_switch], 1           # ... and let it run
    pop ebp
    ret
3:  mov [ebp + F_EAX], eax                  # it has exited: reap it
    mov dword ptr [ebx + PCB_PID], 0
    call fork_unmap
    MMU_FLUSH
    pop ebp
    ret

.data
.align 4
fork_stack:     .space PCB_SIZE * MAX_PROCS # per slot (at its PCB's offset): its stack frame
fork_heap:      .space 4096 * MAX_PROCS     # per slot, per heap page: its frame (0: none yet)
fork_next_pid:  .long 0
.text
