# tlbwalk: a TLB-heavy walk over the heap. PASSES times, the program visits PAGES heap pages,
# touching one dword in each (a read-modify-write at the start of the page), so each visit
# needs another translation, then it yields. Several copies run as separate processes
# (PROCESSES, a parameter of the guest), each with its own address space: every yield loads
# another CR3, which flushes the TLB, so every pass misses the TLB on every page again.
#   natively  a miss is a 2-reference page walk;
#   shadow    a CR3 load drops the shadow page tables (a virtual TLB): each page of each pass
#             is a hidden page fault the VMM handles;
#   nested    a miss is a two-dimensional walk: (2+1)(2+1)-1 = 8 references, no exit.
# The first pass takes the demand-paging faults (the heap is mapped on first touch).
# value[i] += i + pass + 1 for every page i; the checksum sums the values written (mod 2^32).
# Each process prints the same line with a single write (so lines never interleave).
.include "abi.s"
.include "params.s"             # PAGES, PASSES
.text
.global _start
_start:
    xor edi, edi                # edi = checksum
    xor esi, esi                # esi = pass
1:  mov ebx, HEAP
    xor ecx, ecx                # ecx = page
2:  lea eax, [ecx + esi + 1]    # page + pass + 1
    add eax, [ebx]              # a TLB miss (first pass: a demand page fault; the page reads 0)
    mov [ebx], eax              # a write: the first one also sets the PTE's dirty bit
    add edi, eax
    add ebx, 4096               # next page: another translation
    inc ecx
    cmp ecx, PAGES
    jb 2b
    mov eax, SYS_YIELD          # let the other processes run: a CR3 load, the TLB is flushed
    int 0x80
    inc esi
    cmp esi, PASSES
    jb 1b
    # "tlbwalk: PAGES pages x PASSES passes, checksum C\n", built in a buffer, one write
    mov [checksum], edi
    mov edi, offset line
    mov esi, offset label1
    call append_str
    mov eax, PAGES
    call append_dec
    mov esi, offset label2
    call append_str
    mov eax, PASSES
    call append_dec
    mov esi, offset label3
    call append_str
    mov eax, [checksum]
    call append_dec
    mov byte ptr [edi], 10
    inc edi
    mov ecx, edi
    sub ecx, offset line
    mov ebx, offset line
    mov eax, SYS_WRITE
    int 0x80
    xor ebx, ebx
    call exit

# append_str(esi = NUL-terminated string, edi = buffer) -> edi past the copied bytes
append_str:
1:  mov al, [esi]
    test al, al
    jz 2f
    mov [edi], al
    inc esi
    inc edi
    jmp 1b
2:  ret

# append_dec(eax = unsigned number, edi = buffer) -> edi past its decimal digits
append_dec:
    push ebx
    push ecx
    push edx
    mov ebx, 10
    xor ecx, ecx
1:  xor edx, edx
    div ebx
    add dl, '0'
    push edx                    # digits come out lowest first: reverse them on the stack
    inc ecx
    test eax, eax
    jnz 1b
2:  pop eax
    mov [edi], al
    inc edi
    dec ecx
    jnz 2b
    pop edx
    pop ecx
    pop ebx
    ret

.include "ulib.s"

.data
label1:   .asciz "tlbwalk: "
label2:   .asciz " pages x "
label3:   .asciz " passes, checksum "
checksum: .long 0
line:     .space 64
