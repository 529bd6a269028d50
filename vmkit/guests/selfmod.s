# selfmod: asks the kernel to run a routine ITERATIONS times in a hot loop, patching the
# routine's own code halfway (as Linux patches itself with "alternatives"). A simulator or
# translator that caches decoded code must notice the write.
.include "abi.s"
.include "params.s"             # ITERATIONS
.text
.global _start
_start:
    mov eax, SYS_SELFMOD
    mov ebx, ITERATIONS
    int 0x80
    mov esi, offset label
    call print
    call print_dec
    call newline
    xor ebx, ebx
    call exit

.include "ulib.s"

.data
label: .asciz "selfmod: sum "
