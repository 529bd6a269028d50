# forkwait: ITERATIONS times, fork a child that exits at once and wait for it (Adams & Agesen
# 2006, §6.2: "for (i = 0; i < 40000; i++) { pid = fork(); ...; waitpid(pid); }"). Process
# creation and teardown: system calls, an address-space copy, page-table writes and
# address-space switches. Prints how many children it reaped and the sum of their pids.
# Before the loop the parent touches HEAP_PAGES pages of its heap (demand-paged in), so its
# address space, which every fork copies, is its program, its stack and that heap.
.include "abi.s"
.include "params.s"             # ITERATIONS, HEAP_PAGES
.text
.global _start
_start:
    mov ecx, HEAP_PAGES
    mov edx, HEAP
2:  test ecx, ecx
    jz 3f
    mov [edx], ecx              # a page fault: the kernel maps the page
    add edx, 4096
    dec ecx
    jmp 2b
3:  mov ecx, ITERATIONS
    xor edi, edi                # sum of the children's pids
1:  push ecx
    mov eax, SYS_FORK
    int 0x80
    test eax, eax
    jz child
    js failed
    mov ebx, eax
    mov eax, SYS_WAIT
    int 0x80
    add edi, eax
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
    add dword ptr [HEAP], 1     # the child's exit path touches its data (a C child's atexit
                                # handlers and stdio buffers do)
    xor ebx, ebx                # the child returns at once
    call exit
failed:
    mov esi, offset label3
    call print
    mov ebx, 1
    call exit

.include "ulib.s"

.data
label:  .asciz "forkwait: "
label2: .asciz " children forked and reaped, pid sum "
label3: .asciz "forkwait: fork failed\n"
