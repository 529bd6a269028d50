# ptemod: ITERATIONS times, the kernel write-protects a heap page and makes it writable again
# (each a page-table-entry change followed by invlpg), and the program writes to the page.
# Adams & Agesen's "PTE modification" nanobenchmark: cheap natively, costly when page tables
# are shadowed.
.include "abi.s"
.include "params.s"             # ITERATIONS
.text
.global _start
_start:
    mov eax, SYS_MAP
    mov ebx, HEAP
    int 0x80
    mov ecx, ITERATIONS
    xor edi, edi
1:  push ecx
    mov eax, SYS_SETPTE         # read-only
    mov ebx, HEAP
    xor ecx, ecx
    int 0x80
    mov eax, SYS_SETPTE         # writable again
    mov ebx, HEAP
    mov ecx, 1
    int 0x80
    pop ecx
    inc edi
    mov [HEAP], edi             # the page is writable: this store must not fault
    dec ecx
    jnz 1b
    mov esi, offset label
    call print
    mov eax, [HEAP]
    call print_dec
    call newline
    xor ebx, ebx
    call exit

.include "ulib.s"

.data
label: .asciz "ptemod: PTE changes "
