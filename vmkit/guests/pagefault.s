# pagefault: touches PAGES pages of the heap that are not mapped yet. Each first touch is a
# page fault; the kernel maps a fresh page and the store is restarted (demand paging).
.include "abi.s"
.include "params.s"             # PAGES
.text
.global _start
_start:
    xor ecx, ecx
    mov ebx, HEAP
1:  lea eax, [ecx + 1]          # store page number + 1 at the start of each page: a fault
    mov [ebx], eax
    add ebx, 4096
    inc ecx
    cmp ecx, PAGES
    jb 1b
    xor ecx, ecx                # read them back
    xor edi, edi
    mov ebx, HEAP
2:  add edi, [ebx]
    add ebx, 4096
    inc ecx
    cmp ecx, PAGES
    jb 2b
    mov esi, offset label
    call print
    mov eax, PAGES
    call print_dec
    mov esi, offset label2
    call print
    mov eax, edi
    call print_dec
    call newline
    xor ebx, ebx
    call exit

.include "ulib.s"

.data
label:  .asciz "pagefault: "
label2: .asciz " pages, sum "
