# forkwait: ITERATIONS times, fork a child that exits at once and wait for it (Adams & Agesen
# 2006, §6.2: "for (i = 0; i < 40000; i++) { pid = fork(); ...; waitpid(pid); }"). Process
# creation and teardown: system calls, page tables shared copy-on-write (fork.s), copy-on-write
# faults, page-table writes and address-space switches. Prints how many children it reaped and
# the sum of their pids.
# Before the loop the parent touches HEAP_PAGES pages of its heap (demand-paged in; at least
# one), so its address space, which every fork shares copy-on-write, is its program, its stack
# and that heap. As the C program's, fork and wait are called (a call writes the stack), the
# parent stores after fork (the C parent stores the pid) and the child's exit path touches its
# data (a C child's atexit handlers and stdio buffers do).
# The two processes check that copy-on-write keeps them apart: the child must not see the
# parent's store made after the fork, the parent must not see the child's; either prints a
# line saying which it saw (never, when the kernel is right).
.include "abi.s"
.include "params.s"             # ITERATIONS, HEAP_PAGES
.text
.global _start
_start:
    mov ecx, HEAP_PAGES
    mov edx, HEAP
2:  test ecx, ecx
    jz 3f
    mov [edx], ecx              # a page fault: the kernel maps the page; page 0 holds HEAP_PAGES
    add edx, 4096
    dec ecx
    jmp 2b
3:  mov dword ptr [HEAP + 4], 1 # the parent's marker before each fork
    mov ecx, ITERATIONS
    xor edi, edi                # sum of the children's pids
1:  push ecx
    call fork
    test eax, eax
    jz child
    js failed
    mov dword ptr [HEAP + 4], 2 # a store after the fork: the parent gets its own copy
    mov ebx, eax
    call wait
    add edi, eax
    cmp dword ptr [HEAP], HEAP_PAGES
    jne parent_saw
    mov dword ptr [HEAP + 4], 1
    pop ecx
    dec ecx
    jnz 1b
    mov esi, offset label
    call print
    mov eax, ITERATIONS
    call print_dec
    mov esi, offset label2
    call print
    mov eax, edi
    call print_dec
    call newline
    xor ebx, ebx
    call exit
child:
    cmp dword ptr [HEAP + 4], 1 # the heap as it was at the fork
    jne child_saw
    add dword ptr [HEAP], 1     # the child's own copy (the parent checks it still has its own)
    xor ebx, ebx                # the child returns at once
    call exit
child_saw:
    mov esi, offset label4
    call print
    xor ebx, ebx
    call exit
parent_saw:
    mov esi, offset label5
    call print
    mov ebx, 1
    call exit
failed:
    mov esi, offset label3
    call print
    mov ebx, 1
    call exit

# fork() -> eax: the child's pid, 0 in the child, -1
fork:
    mov eax, SYS_FORK
    int 0x80
    ret

# wait(pid in ebx) -> eax = pid
wait:
    mov eax, SYS_WAIT
    int 0x80
    ret

.include "ulib.s"

.data
label:  .asciz "forkwait: "
label2: .asciz " children forked and reaped, pid sum "
label3: .asciz "forkwait: fork failed\n"
label4: .asciz "forkwait: the child saw the parent's store made after the fork\n"
label5: .asciz "forkwait: the parent saw the child's store\n"
