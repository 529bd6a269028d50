# userpriv: a user program that tries a privileged instruction. In ring 3, "cli" raises a
# general-protection fault (#GP, vector 13): only ring 0 may turn interrupts off (SDM Vol. 3A,
# 5.9, and CLI: CPL must be <= IOPL). The kernel kills the process and says why.
.include "abi.s"
.text
.global _start
_start:
    mov esi, offset before
    call print
privileged:
    cli                         # privileged: #GP in ring 3
    mov esi, offset after       # never reached
    call print
    xor ebx, ebx
    call exit

.include "ulib.s"

.data
before: .asciz "user: about to execute cli in ring 3\n"
after:  .asciz "user: cli worked?!\n"
