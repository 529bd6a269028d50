# fork.s: fork and wait for the kit's kernel, copy-on-write as Linux 2.6's (the forkwait guest,
# Adams & Agesen's "forkwait").
#
# Included by kernel.s through syscalls_ext.s, right after the kernel's system-call table, so it
# starts with the two new table entries: SYS_FORK (12) and SYS_WAIT (13) in abi.s. The guest's
# kernel_files also fill two hooks of kernel.s: exit_hook.s (call fork_exit at the start of
# sys_exit) and fault_hook.s (jmp fork_fault at the start of do_fault, back at fork_not_cow).
#
# The kernel has a fixed number of process slots (NPROC, one per program of the guest image,
# each with its page directory, page tables and kernel stack made at boot). fork_init, run from
# boot_hook.s, frees every slot but the first and takes its user pages down.
#
#   fork() -> the child's pid in the parent, 0 in the child, -1 when no slot is free.
#     Copy-on-write, as Linux 2.6's fork (copy_page_range): the PAGE TABLES are copied, not the
#     pages. Every present entry of the parent's program, stack and heap is copied into the
#     child slot's page tables; a writable one loses its write permission and gets the COW mark
#     (PG_COW, an available bit of the entry) in the parent's table first; each shared frame's
#     share count goes up by one (fork_shares, per physical frame: how many mappings beyond
#     the first). Then the parent's TLB is flushed (a CR3 reload, Linux's flush_tlb_mm). Under
#     traced shadow paging every entry written in a traced table is a trace fault or VM exit
#     (A&A §4.3). The child returns from the same int 0x80 with the parent's registers and
#     eax = 0.
#   A write to a COW page (fork_fault, Linux's do_wp_page): a page fault on a present page. If
#     the frame is still shared, the faulting process gets a frame (the free list, else
#     alloc_frame), copies the page into it with a load/store loop and maps it writable; the
#     frame's share count goes down. If it is the last mapping, the entry just becomes writable
#     again, no copy. Either way the stale TLB entry goes (invlpg).
#   exit (fork_exit): the exiting process's program, stack and heap entries are cleared; a
#     frame still shared loses one share, a frame mapped by this process alone goes on the free
#     list (Linux's exit_mmap; the kernel's alloc_frame never frees, fork.s recycles).
#   wait(pid) -> pid once that child has exited (-1: no such process, or oneself). While it
#     still runs, the parent yields and the int 0x80 runs again when it is scheduled next (EIP
#     moved back onto it). Reaping frees the child's slot (its pid goes back to 0).
#
# Every process of a guest that forks runs the same program: the program's page count is the
# first slot's (proc_table).
#
# A page copy is a loop of loads and stores, a dword at a time, not one rep movsd: the kit
# prices an instruction, not the bytes it moves (a rep movsd of a page is one step of guest
# time), so a rep copy would cost a few cycles. The loop's 6 instructions a dword make a page
# copy about 6,100 cycles natively, the order of what a 3.8 GHz Pentium 4 takes to copy 4 KiB
# from memory at a few GB/s (an estimate; A&A give no figure).

    .long sys_fork, sys_wait

.equ PG_COW, 0x200                          # bit 9, available to software: copy on write

# fork_init: at the end of boot, before the first process runs
fork_init:
    mov ebx, offset pcbs + PCB_SIZE
1:  cmp ebx, offset pcbs + PCB_SIZE * NPROC
    jae 2f
    mov dword ptr [ebx + PCB_STATE], 0      # free: no process runs here yet
    mov dword ptr [ebx + PCB_PID], 0
    call fork_release_space                 # its frames go on the free list
    add ebx, PCB_SIZE
    jmp 1b
2:  mov dword ptr [fork_next_pid], NPROC + 1
    ret

# fork_npages() -> ecx = pages of the program (the first slot's; every process runs it)
fork_npages:
    mov ecx, [proc_table + 4]
    add ecx, PAGE - 1
    shr ecx, 12
    ret

# fork_pfn(eax = a page table entry) -> eax = the physical frame number it maps
fork_pfn:
    push ecx
    xor ecx, ecx
    PHYS_TO_MACHINE ecx                     # machine address of physical 0 (0 natively)
    and eax, 0xFFFFF000
    sub eax, ecx
    shr eax, 12
    pop ecx
    ret

# fork_alloc() -> eax = physical address of a frame: the free list's first, else a fresh one
# (alloc_frame: clobbers edx)
fork_alloc:
    mov eax, [fork_free_list]
    test eax, eax
    jz alloc_frame
    mov edx, [eax]                          # the next free frame, kept in the frame itself
    mov [fork_free_list], edx
    ret

# fork_free(eax = physical frame number): onto the free list
fork_free:
    shl eax, 12                             # its address (the kernel maps physical 1:1)
    push edx
    mov edx, [fork_free_list]
    mov [eax], edx
    mov [fork_free_list], eax
    pop edx
    ret

# fork_share_range(esi = the parent's page table, edi = the child's, ecx = first entry,
# edx = end): copy the present entries, write-protecting and marking the writable ones
fork_share_range:
1:  cmp ecx, edx
    jae 4f
    mov eax, [esi + ecx*4]
    test eax, PG_P
    jz 3f
    test eax, PG_W
    jz 2f
    and eax, ~PG_W
    or eax, PG_COW
    SET_PTE [esi + ecx*4], eax              # the parent's entry: read-only, copy on write
2:  SET_PTE [edi + ecx*4], eax              # the child's: the same
    push eax
    call fork_pfn
    inc dword ptr [fork_shares + eax*4]     # one more mapping of the frame
    pop eax
3:  inc ecx
    jmp 1b
4:  ret

# fork_release_range(edi = a page table, ecx = first entry, edx = end): clear the present
# entries; a shared frame loses a share, an unshared one is freed
fork_release_range:
1:  cmp ecx, edx
    jae 4f
    mov eax, [edi + ecx*4]
    test eax, PG_P
    jz 3f
    SET_PTE [edi + ecx*4], 0
    call fork_pfn
    cmp dword ptr [fork_shares + eax*4], 0
    je 2f
    dec dword ptr [fork_shares + eax*4]     # another process still maps it
    jmp 3f
2:  call fork_free                          # the last mapping: the frame is free
3:  inc ecx
    jmp 1b
4:  ret

# fork_release_space(ebx = PCB): take its program, stack and heap pages down
fork_release_space:
    push esi
    push edi
    call fork_npages
    mov edx, ecx
    xor ecx, ecx
    mov edi, [ebx + PCB_PT1]
    call fork_release_range                 # the program
    mov ecx, 1023
    mov edx, 1024
    call fork_release_range                 # the stack page
    mov edi, [ebx + PCB_PT2]
    xor ecx, ecx
    mov edx, 1024
    call fork_release_range                 # the heap
    MMU_FLUSH
    pop edi
    pop esi
    ret

# fork_exit: from sys_exit (exit_hook.s), in the exiting process's address space. The switch
# away that follows loads another CR3, which drops the stale TLB entries.
fork_exit:
    mov ebx, [current]
    jmp fork_release_space

# fork_pte(eax = a user address) -> edx = the address of its entry in the current process's
# page tables; CF set when the address is not a user one (clobbers ecx)
fork_pte:
    cmp eax, USER_BASE
    jb 2f
    cmp eax, HEAP_END
    jae 2f
    mov edx, eax
    shr edx, 12
    and edx, 0x3FF
    mov ecx, [current]
    mov ecx, [ecx + PCB_PT1]                # program and stack
    cmp eax, HEAP_BASE
    jb 1f
    mov ecx, [current]
    mov ecx, [ecx + PCB_PT2]                # heap
1:  lea edx, [ecx + edx*4]
    clc
    ret
2:  stc
    ret

# fork_fault: from do_fault (fault_hook.s). A write to a present copy-on-write page is served
# here (the instruction restarts); anything else goes back to do_fault at fork_not_cow.
fork_fault:
    cmp dword ptr [ebp + F_VEC], 14
    jne fork_not_cow
    mov eax, [ebp + F_ERR]
    and eax, 3
    cmp eax, 3                              # present, and a write
    jne fork_not_cow
    READ_CR2 eax
    call fork_pte
    jc fork_not_cow
    mov ecx, [edx]
    test ecx, PG_COW
    jz fork_not_cow
    and eax, 0xFFFFF000
    mov ebx, eax                            # the page
    mov eax, ecx
    call fork_pfn
    cmp dword ptr [fork_shares + eax*4], 0
    je 2f
    dec dword ptr [fork_shares + eax*4]     # still shared: this process gets its own copy
    push edx
    call fork_alloc
    mov esi, ebx
    mov edi, eax
    mov ecx, PAGE / 4
1:  mov edx, [esi]
    mov [edi], edx
    add esi, 4
    add edi, 4
    dec ecx
    jnz 1b
    pop edx
    PHYS_TO_MACHINE eax
    or eax, PG_P | PG_W | PG_U
    inc dword ptr [fork_copies]
    jmp 3f
2:  mov eax, ecx                            # the last mapping: writable again, no copy
    and eax, ~PG_COW
    or eax, PG_W
    inc dword ptr [fork_reuses]
3:  SET_PTE [edx], eax
    FLUSH_PAGE ebx
    pop ebp
    ret

sys_fork:
    mov ebx, offset pcbs
1:  cmp ebx, offset pcbs + PCB_SIZE * NPROC
    jae sys_bad                             # no free slot: -1
    cmp dword ptr [ebx + PCB_STATE], 0
    jne 2f
    cmp dword ptr [ebx + PCB_PID], 0        # an exited child keeps its slot until reaped
    je 3f
2:  add ebx, PCB_SIZE
    jmp 1b
3:  # the page tables: program, stack page, heap
    mov eax, [current]
    mov esi, [eax + PCB_PT1]
    mov edi, [ebx + PCB_PT1]
    call fork_npages
    mov edx, ecx
    xor ecx, ecx
    call fork_share_range
    mov ecx, 1023
    mov edx, 1024
    call fork_share_range
    mov eax, [current]
    mov esi, [eax + PCB_PT2]
    mov edi, [ebx + PCB_PT2]
    xor ecx, ecx
    mov edx, 1024
    call fork_share_range
    # the parent's entries lost their write permission: its whole TLB goes (a CR3 reload)
    MMU_FLUSH
    mov eax, [current]
    mov eax, [eax + PCB_CR3]
    LOAD_CR3 eax
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
3:  mov [ebp + F_EAX], eax                  # it has exited (its pages freed): reap it
    mov dword ptr [ebx + PCB_PID], 0
    pop ebp
    ret

.data
.align 4
fork_shares:    .space 4 * 1024             # per physical frame: its mappings beyond the first
fork_free_list: .long 0                     # physical address of the first free frame (0: none)
fork_copies:    .long 0                     # copy-on-write faults that copied a page
fork_reuses:    .long 0                     # ... that found the last mapping (no copy)
fork_next_pid:  .long 0
.text
