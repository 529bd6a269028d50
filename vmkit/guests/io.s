# io: port-I/O heavy. The program asks the kernel for BYTES bytes of input, CHUNK at a time;
# the kernel polls the input device's status port and reads its data port for every byte
# (two IN instructions a byte), like a driver without DMA. Prints how many bytes arrived and
# their sum.
.include "abi.s"
.include "params.s"             # BYTES, CHUNK
.text
.global _start
_start:
    xor edi, edi                # bytes so far
    xor ebp, ebp                # checksum
1:  cmp edi, BYTES
    jae 3f
    mov eax, SYS_READ
    mov ebx, offset buffer
    mov ecx, CHUNK
    int 0x80
    test eax, eax
    jz 3f                       # no more input
    add edi, eax
    mov ecx, eax
    mov esi, offset buffer
2:  movzx edx, byte ptr [esi]
    add ebp, edx
    inc esi
    dec ecx
    jnz 2b
    jmp 1b
3:  mov esi, offset label
    call print
    mov eax, edi
    call print_dec
    mov esi, offset label2
    call print
    mov eax, ebp
    call print_dec
    call newline
    xor ebx, ebx
    call exit

.include "ulib.s"

.data
label:  .asciz "io: read "
label2: .asciz " bytes, sum "
buffer: .space CHUNK
