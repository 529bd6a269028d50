# nonvirt_user: the process the nonvirt- demonstrations boot into. The demonstration itself
# runs in the kernel (see nonvirt_*.s); this program only ends the run.
.include "abi.s"
.text
.global _start
_start:
    mov eax, SYS_EXIT
    xor ebx, ebx
    int 0x80
1:  jmp 1b
