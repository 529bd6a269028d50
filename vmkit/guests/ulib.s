# ulib: the user-mode library every program includes (ring 3; only system calls, no I/O)

# print(esi = NUL-terminated string)
print:
    push eax
    push ebx
    push ecx
    push edx
    mov ebx, esi
    xor ecx, ecx
1:  cmp byte ptr [esi + ecx], 0
    je 2f
    inc ecx
    jmp 1b
2:  mov eax, SYS_WRITE
    int 0x80
    pop edx
    pop ecx
    pop ebx
    pop eax
    ret

# print_dec(eax = unsigned number)
print_dec:
    push eax
    push ebx
    push ecx
    push edx
    push esi
    mov esi, offset numbuf + 11
    mov byte ptr [esi], 0
    mov ebx, 10
1:  xor edx, edx
    div ebx
    add dl, '0'
    dec esi
    mov [esi], dl
    test eax, eax
    jnz 1b
    call print
    pop esi
    pop edx
    pop ecx
    pop ebx
    pop eax
    ret

# print_hex(eax = number): 0x%08x
print_hex:
    push eax
    push ecx
    push edx
    push esi
    mov esi, offset numbuf
    mov byte ptr [esi], '0'
    mov byte ptr [esi + 1], 'x'
    add esi, 2
    mov ecx, 8
1:  rol eax, 4
    mov edx, eax
    and edx, 0xF
    mov dl, [hexchars + edx]
    mov [esi], dl
    inc esi
    dec ecx
    jnz 1b
    mov byte ptr [esi], 0
    mov esi, offset numbuf
    call print
    pop esi
    pop edx
    pop ecx
    pop eax
    ret

# newline()
newline:
    push esi
    mov esi, offset nl
    call print
    pop esi
    ret

# exit(ebx = code): does not return
exit:
    mov eax, SYS_EXIT
    int 0x80
1:  jmp 1b

.data
numbuf:   .space 12
hexchars: .ascii "0123456789abcdef"
nl:       .asciz "\n"
.text
