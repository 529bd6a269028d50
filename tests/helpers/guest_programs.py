"""Guest programs the monitors' tests share (tests/vmm/test_te.py, test_hw.py, ...): each
written once, with what it checks in its comment."""

from __future__ import annotations

import vmkit
from vmkit import guests

__all__ = ["SCRIBBLER", "TRIPLE_FAULT", "scribbler", "triple_fault"]

SCRIBBLER = """
# Writes every byte of its memory outside its own code, then probes past the end of its
# memory (where another VM's slice lies in host memory): every read there must give all ones,
# before and after a write: densely over the next DENSE bytes, then (ALL_THE_WAY) sparsely
# up to the VMM's window, and writes into the window at 0xFFC00000 (both set by scribbler()).
.equ MEM, 0x100000
.text
_start:
    mov esp, offset stack_top
    cld
    mov eax, 0x5A5A5A5A
    xor edi, edi
    mov ecx, 0x1000 / 4
    rep stosd
    mov edi, offset fill_start
    mov ecx, MEM
    sub ecx, edi
    shr ecx, 2
    rep stosd
    xor ebp, ebp                    # leaks found
    mov ebx, MEM
1:  call probe                      # densely over the next DENSE bytes
    add ebx, 0x8000
    cmp ebx, MEM + DENSE
    jb 1b
    cmp dword ptr [all_the_way], 0
    je 4f
2:  call probe                      # sparsely up to the VMM's window
    add ebx, 0x1000000
    cmp ebx, 0xFF000000             # (one more step would wrap around 4 GiB)
    jb 2b
    mov ebx, 0xFFC00000
3:  mov dword ptr [ebx], 0
    add ebx, 0x400
    cmp ebx, 0xFFC20000
    jb 3b
4:  mov al, '0'
    add eax, ebp
    out 0xE9, al
    out 0xF4, al
    hlt
probe:
    cmp dword ptr [ebx], 0xFFFFFFFF
    jne 1f
    mov dword ptr [ebx], 0x12345678
    cmp dword ptr [ebx], 0xFFFFFFFF
    jne 1f
    ret
1:  inc ebp
    ret
.data
.align 4
all_the_way: .long ALL_THE_WAY
    .space 252
stack_top:
.align 4096
fill_start:
"""

TRIPLE_FAULT = """
_start:
    xor eax, eax
    div eax             # #DE with an empty IDT: #GP, then #DF, then a triple fault
"""


def scribbler(dense: int = 0x1000000, far: bool = True):
    """The SCRIBBLER as a 1 MiB guest image, probing ``dense`` bytes past its memory densely
    and, with ``far``, the rest of the address space sparsely and the VMM's window."""
    source = f".equ DENSE, {dense:#x}\n.equ ALL_THE_WAY, {int(far)}\n" + SCRIBBLER
    prog = vmkit.assemble(source, base=0x1000)
    return guests.from_program(prog, "scribbler", memory_size=1 << 20)


def triple_fault():
    """A guest that ends in a triple fault at its first instruction's #DE."""
    return guests.from_source(TRIPLE_FAULT, name="triple")
