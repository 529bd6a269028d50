"""Assembly programs shared by the tests and the benchmarks (bench_tools.py, bench_speed.py)."""

from __future__ import annotations

PVOPS = r""".macro LOAD_CR3 reg          # switch address space
    mov cr3, \reg
.endm
.macro PTE_WRITE ptr, val
    mov dword ptr \ptr, \val
.endm
.macro EVENTS_OFF
    cli
.endm
.macro EVENTS_ON
    sti
.endm
"""


def kernel_sized_program() -> str:
    """2,000 lines: 250 functions with labels, jumps and calls between them."""
    lines = []
    for i in range(250):
        lines += [f"f{i}: push ebp", "mov ebp, esp", f"mov eax, dword ptr [ebp + {8 + i % 4 * 4}]",
                  f"cmp eax, {i}", f"jne f{(i + 3) % 250}", f"call f{(i * 7) % 250}",
                  "pop ebp", "ret"]
    return "\n".join(lines)


def macro_heavy_program() -> str:
    """A thousand macro invocations (the paravirtual operations of PVOPS) under 250 labels."""
    lines = [PVOPS, ".macro SWITCH_MM reg\n    EVENTS_OFF\n    LOAD_CR3 \\reg\n    EVENTS_ON\n"
             ".endm"]
    for i in range(250):
        lines += [f"f{i}: SWITCH_MM eax", f"PTE_WRITE [edx + {i * 4}], eax", "EVENTS_ON",
                  f"jne f{(i + 3) % 250}"]
    return "\n".join(lines)


def lcg_loop(iterations: int) -> str:
    """The speed issue's compute loop: an LCG, 7 instructions an iteration, then hlt."""
    return f"""
_start:
    mov ecx, {iterations}
    mov eax, 1
    xor edi, edi
1:  imul eax, eax, 1103515245
    add eax, 12345
    mov edx, eax
    shr edx, 16
    add edi, edx
    dec ecx
    jnz 1b
    hlt
"""
