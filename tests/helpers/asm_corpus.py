"""A corpus of every instruction form of the vmkit subset, in the spelling GNU as and vmkit share.

``corpus()`` returns source lines (no header) that assemble at base 0 to the same bytes under
vmkit and ``as --32`` after ``.intel_syntax noprefix``: registers of every size, immediates of
every width and edge, every addressing mode, segment overrides, prefixes, the string and system
instructions, data directives, and jumps forward and backward at distances around the rel8
limit so that relaxation is exercised. It is generated, so that adding a form to the table and
a line here is enough to have it checked.
"""

from __future__ import annotations

R8 = "al cl dl bl ah ch dh bh".split()
R16 = "ax cx dx bx sp bp si di".split()
R32 = "eax ecx edx ebx esp ebp esi edi".split()
REGS = {8: R8, 16: R16, 32: R32}
PTR = {8: "byte ptr", 16: "word ptr", 32: "dword ptr"}

# every addressing mode: base, base+disp8/32, SIB, no base, esp/ebp specials, labels, segments
MEMS = [
    "[eax]", "[ebx+4]", "[ecx-4]", "[edx+0x7f]", "[esi-0x80]", "[edi+0x80]", "[eax-0x81]",
    "[ebp]", "[ebp+8]", "[ebp-0x100]", "[esp]", "[esp+4]", "[esp+0x400]", "[esp+eax]",
    "[eax+esp]", "[ecx*4]", "[edx*8+0x10]", "[ebx*2-4]", "[ebx+ecx*4+8]", "[8+ecx*4+ebx]",
    "[esi+edi*2-0x80]", "[ebp+esi*8+0x7f]", "[ebp+ecx]", "[ecx+ebp]", "[eax+eax*1]",
    "[edi+ebp*1]", "[0x1000]", "[0x12345678]", "[-4]", "[ebx+0]", "[ebx+0xffffffff]",
    "[edx+0x12345678]", "[ebx+(2*3+1)]", "[ebx+K8]", "[ebx+K300]", "[K300]",
    "[table]", "[table+4]", "[ebx+table]", "[table+ecx*4]", "table[ebx]", "[ebx][ecx*2]",
    "fs:[eax]", "gs:[ebx+4]", "es:[ecx*4+0x10]", "cs:[0x20]", "ss:[ebx]", "ds:[ebp]",
    "ds:[esp+4]", "ss:[ebp+8]", "ds:[eax]", "fs:[0x30]", "gs:[table]",
]

IMMS = {
    8: ["0", "1", "5", "0x7f", "0x80", "0xff", "-1", "-128", "'A'", "K8", "(1+2)*3",
        "~0x10 & 0xff"],
    16: ["0", "1", "0x7f", "0x80", "-128", "-129", "0xff", "0x100", "0x7fff", "0x8000",
         "0xffff", "-1", "-32768", "K8", "K300", "0xff80"],
    32: ["0", "1", "0x7f", "0x80", "-128", "-129", "0xff", "0x100", "0x7fff", "0x10000",
         "0x12345678", "0x7fffffff", "0x80000000", "0xffffffff", "0xffffff80", "-1",
         "-0x80000000", "K8", "K300", "offset table", "offset table + 8", "e1 - s1",
         "(1 << 4) | 3", "'Z'"],
}

ALU = "add or adc sbb and sub xor cmp".split()
SHIFTS = "rol ror rcl rcr shl sal shr sar".split()
UNARY = "not neg mul imul div idiv".split()
CC = ("o no b c nae ae nb nc e z ne nz be na a nbe s ns p pe np po l nge ge nl le ng g "
      "nle").split()


def _reg_pairs(size):
    regs = REGS[size]
    return [(regs[i], regs[j]) for i, j in ((0, 0), (0, 3), (3, 0), (1, 7), (5, 4), (4, 6),
                                            (7, 2), (6, 5))]


def _some_mems(step=1):
    return MEMS[::step]


def alu_lines():
    out = []
    for mn in ALU:
        for size in (8, 16, 32):
            for a, b in _reg_pairs(size):
                out.append(f"{mn} {a}, {b}")
            r = REGS[size]
            for k, m in enumerate(_some_mems(3)):
                out.append(f"{mn} {r[k % 8]}, {m}")
                out.append(f"{mn} {m}, {r[(k + 3) % 8]}")
            for imm in IMMS[size]:
                out.append(f"{mn} {r[0]}, {imm}")
                out.append(f"{mn} {r[3]}, {imm}")
            for k, m in enumerate(_some_mems(5)):
                out.append(f"{mn} {PTR[size]} {m}, {IMMS[size][k % len(IMMS[size])]}")
    return out


def shift_lines():
    out = []
    for mn in SHIFTS:
        for size in (8, 16, 32):
            r = REGS[size]
            for reg in (r[0], r[3], r[7]):
                out += [f"{mn} {reg}, 1", f"{mn} {reg}, cl", f"{mn} {reg}, 4", f"{mn} {reg}, 0",
                        f"{mn} {reg}, 31", f"{mn} {reg}, K8"]
            for m in ("[eax]", "[ebx+ecx*4+8]", "fs:[0x10]"):
                out += [f"{mn} {PTR[size]} {m}, 1", f"{mn} {PTR[size]} {m}, cl",
                        f"{mn} {PTR[size]} {m}, 7"]
    return out


def unary_lines():
    out = []
    for mn in UNARY + ["inc", "dec"]:
        for size in (8, 16, 32):
            for reg in REGS[size]:
                out.append(f"{mn} {reg}")
            for m in _some_mems(4):
                out.append(f"{mn} {PTR[size]} {m}")
    return out


def mov_lines():
    out = []
    for size in (8, 16, 32):
        r = REGS[size]
        for a, b in _reg_pairs(size):
            out.append(f"mov {a}, {b}")
        for k, m in enumerate(MEMS):
            out.append(f"mov {r[k % 8]}, {m}")
            out.append(f"mov {m}, {r[(k + 5) % 8]}")
            out.append(f"mov {PTR[size]} {m}, {IMMS[size][k % len(IMMS[size])]}")
        for imm in IMMS[size]:
            for reg in (r[0], r[2], r[7]):
                out.append(f"mov {reg}, {imm}")
        # moffs forms with and without segment
        acc = r[0]
        for m in ("[0x1000]", "[table]", "[table+4]", "fs:[0x10]", "es:[K300]"):
            out.append(f"mov {acc}, {m}")
            out.append(f"mov {m}, {acc}")
            out.append(f"mov {acc}, {PTR[size]} {m}")
    for s in "es cs ss ds fs gs".split():
        out += [f"mov eax, {s}", f"mov ax, {s}", f"mov edi, {s}", f"mov {s}, eax" if s != "cs"
                else "nop", f"mov [ebx+4], {s}", f"mov word ptr [eax], {s}"]
        if s != "cs":
            out += [f"mov {s}, ax", f"mov {s}, dx", f"mov {s}, [eax]", f"mov {s}, word ptr [ebx+8]"]
    for c in ("cr0", "cr2", "cr3", "cr4"):
        for reg in ("eax", "ebx", "edi"):
            out += [f"mov {reg}, {c}", f"mov {c}, {reg}"]
    return out


def ext_lines():
    out = []
    for mn in ("movzx", "movsx"):
        for dst in ("eax", "ebx", "edi", "ax", "si"):
            for src in ("al", "bh", "dl"):
                out.append(f"{mn} {dst}, {src}")
            out.append(f"{mn} {dst}, byte ptr [ebx+4]")
        for dst in ("eax", "ecx", "esi"):
            out += [f"{mn} {dst}, ax", f"{mn} {dst}, di", f"{mn} {dst}, word ptr [esp+2]"]
    for dst in ("eax", "ebp", "ax", "di"):
        for m in _some_mems(2):
            if "fs:" in m or "gs:" in m or "es:" in m or "cs:" in m or "ss:" in m or "ds:" in m:
                continue
            out.append(f"lea {dst}, {m}")
    return out


def xchg_test_lines():
    out = []
    for size in (8, 16, 32):
        r = REGS[size]
        for a, b in _reg_pairs(size) + [(r[0], r[1]), (r[2], r[0]), (r[0], r[0])]:
            out += [f"xchg {a}, {b}", f"test {a}, {b}"]
        for m in _some_mems(6):
            out += [f"xchg {m}, {r[1]}", f"xchg {r[2]}, {m}", f"test {m}, {r[3]}",
                    f"test {r[4]}, {m}", f"test {PTR[size]} {m}, 5"]
        for imm in IMMS[size]:
            out += [f"test {r[0]}, {imm}", f"test {r[5]}, {imm}"]
    for mn in ("xadd", "cmpxchg"):
        for size in (8, 16, 32):
            r = REGS[size]
            out += [f"{mn} {r[0]}, {r[1]}", f"{mn} {r[3]}, {r[6]}", f"{mn} [eax], {r[2]}",
                    f"{mn} {PTR[size]} [ebx+ecx*4+8], {r[7]}"]
    out += [f"bswap {r}" for r in R32]
    return out


def stack_lines():
    out = []
    for reg in R32 + R16:
        out += [f"push {reg}", f"pop {reg}"]
    for imm in IMMS[32]:
        out.append(f"push {imm}")
    for m in _some_mems(3):
        out += [f"push dword ptr {m}", f"pop dword ptr {m}", f"push word ptr {m}",
                f"pop word ptr {m}", f"push {m}", f"pop {m}"]
    for s in "es cs ss ds fs gs".split():
        out.append(f"push {s}")
        if s != "cs":
            out.append(f"pop {s}")
    out += ["pushad", "popad", "pusha", "popa", "pushaw", "popaw", "pushfd", "popfd", "pushf",
            "popf", "pushfw", "popfw", "leave", "enter 16, 0", "enter 0x1000, 3"]
    return out


def imul_lines():
    out = []
    for size in (16, 32):
        r = REGS[size]
        for a, b in _reg_pairs(size):
            out.append(f"imul {a}, {b}")
            out.append(f"imul {a}, {b}, 5")
            out.append(f"imul {a}, {b}, 1000")
            out.append(f"imul {a}, {b}, -128")
        for m in _some_mems(5):
            out += [f"imul {r[1]}, {m}", f"imul {r[2]}, {m}, 7", f"imul {r[3]}, {m}, 0x1234"]
        for imm in ("3", "-1", "0x80", "300", "K8", "K300"):
            out.append(f"imul {r[0]}, {imm}")
            out.append(f"imul {r[6]}, {imm}")
    return out


def bit_lines():
    out = []
    for mn in ("bt", "bts", "btr", "btc"):
        for size in (16, 32):
            r = REGS[size]
            out += [f"{mn} {r[0]}, {r[1]}", f"{mn} {r[5]}, {r[7]}", f"{mn} {r[2]}, 3",
                    f"{mn} {r[3]}, 31", f"{mn} {PTR[size]} [eax], 5",
                    f"{mn} [ebx+ecx*4], {r[6]}"]
    for mn in ("bsf", "bsr"):
        out += [f"{mn} eax, ebx", f"{mn} cx, dx", f"{mn} esi, [edi+4]"]
    for mn in ("shld", "shrd"):
        out += [f"{mn} eax, ebx, 3", f"{mn} eax, ebx, cl", f"{mn} [eax], ecx, 31",
                f"{mn} dx, si, cl", f"{mn} word ptr [ebx], di, 4"]
    return out


def setcc_lines():
    out = []
    for cc in CC:
        out += [f"set{cc} al", f"set{cc} bh", f"set{cc} byte ptr [ebx+4]",
                f"cmov{cc} eax, ebx", f"cmov{cc} si, di", f"cmov{cc} ecx, [esp+8]"]
    return out


def misc_lines():
    out = ["nop", "hlt", "cli", "sti", "cld", "std", "clc", "stc", "cmc", "sahf", "lahf",
           "cdq", "cwde", "cbw", "cwd", "int3", "int 3", "into", "int 0", "int 0x80", "int 255",
           "int K8", "iret", "iretd", "iretw", "ret", "ret 4", "ret 0", "ret 0xffff", "retf",
           "retf 8", "lret", "lret 12", "ud2", "cpuid", "rdtsc", "rdmsr", "wrmsr", "clts",
           "invd", "wbinvd", "pause",
           # an index scaled by 1 without a base: SIB with disp32 (capstone prints "[ecx]")
           "mov eax, [ecx*1]", "lea ebx, [ebp*1+4]"]
    for port in ("0", "0x60", "0xff", "K8"):
        out += [f"in al, {port}", f"in ax, {port}", f"in eax, {port}", f"out {port}, al",
                f"out {port}, ax", f"out {port}, eax"]
    out += ["in al, dx", "in ax, dx", "in eax, dx", "out dx, al", "out dx, ax", "out dx, eax"]
    return out


def string_lines():
    out = []
    for op in ("movs", "stos", "lods", "cmps", "scas"):
        for s in "bwd":
            out.append(f"{op}{s}")
    for pfx in ("rep", "repe", "repz", "repne", "repnz"):
        for op in ("cmps", "scas"):
            for s in "bwd":
                out.append(f"{pfx} {op}{s}")
    for op in ("movs", "stos", "lods"):
        for s in "bwd":
            out.append(f"rep {op}{s}")
    out += [
        "movsb byte ptr es:[edi], byte ptr [esi]", "movsw word ptr es:[edi], word ptr [esi]",
        "movsd dword ptr es:[edi], dword ptr [esi]", "movs dword ptr es:[edi], dword ptr [esi]",
        "movsb byte ptr es:[edi], byte ptr fs:[esi]",
        "movsd dword ptr es:[edi], dword ptr gs:[esi]",
        "rep movsb byte ptr es:[edi], byte ptr [esi]",
        "rep movsd dword ptr es:[edi], dword ptr [esi]", "stosb byte ptr es:[edi], al",
        "stosw word ptr es:[edi], ax", "stosd dword ptr es:[edi], eax",
        "rep stosd dword ptr es:[edi], eax", "lodsb al, byte ptr [esi]",
        "lodsw ax, word ptr [esi]", "lodsd eax, dword ptr [esi]", "lodsb al, byte ptr es:[esi]",
        "lodsd eax, dword ptr cs:[esi]", "cmpsb byte ptr [esi], byte ptr es:[edi]",
        "cmpsd dword ptr [esi], dword ptr es:[edi]",
        "repe cmpsb byte ptr [esi], byte ptr es:[edi]", "repne scasb al, byte ptr es:[edi]",
        "scasd eax, dword ptr es:[edi]", "scasw ax, word ptr es:[edi]",
        "lock add dword ptr [eax], 1", "lock xadd [ebx], ecx", "lock cmpxchg [esi], edx",
        "lock inc dword ptr [eax]", "lock dec byte ptr fs:[ebx]", "lock xchg [eax], ebx",
        "lock or word ptr [ecx+4], 0x100", "lock bts dword ptr [eax], 3",
        "lock add word ptr fs:[eax], 1", "lock neg byte ptr [edi]", "lock not dword ptr [esi]",
    ]
    return out


def system_lines():
    out = []
    for mn in ("lgdt", "sgdt", "lidt", "sidt"):
        out += [f"{mn} [eax]", f"{mn} [table]", f"{mn} fword ptr [ebx+8]", f"{mn} [0x500]",
                f"{mn} fs:[esi]"]
    for mn in ("sldt", "str", "smsw"):
        out += [f"{mn} eax", f"{mn} ax", f"{mn} [eax]", f"{mn} word ptr [ebx+4]", f"{mn} di"]
    for mn in ("lldt", "ltr", "verr", "verw", "lmsw"):
        out += [f"{mn} ax", f"{mn} bx", f"{mn} [eax]", f"{mn} word ptr [esp+2]"]
    for mn in ("lar", "lsl"):
        out += [f"{mn} eax, ebx", f"{mn} eax, bx", f"{mn} ax, bx", f"{mn} ecx, [eax]",
                f"{mn} edx, word ptr [ebx+4]"]
    out += ["invlpg [eax]", "invlpg [ebx+0x1000]", "invlpg byte ptr [ecx]", "invlpg [table]"]
    return out


def control_lines():
    """Indirect and far transfers (the relative ones are in :func:`jump_lines`)."""
    out = []
    for reg in R32:
        out += [f"jmp {reg}", f"call {reg}"]
    out += ["jmp ax", "call bx"]
    for m in _some_mems(3):
        out += [f"jmp dword ptr {m}", f"call dword ptr {m}", f"jmp {m}", f"call {m}",
                f"jmp word ptr {m}", f"call word ptr {m}", f"jmp fword ptr {m}",
                f"call fword ptr {m}", f"ljmp {m}", f"lcall {m}"]
    for sel, off in (("8", "0x1000"), ("0x10", "0"), ("0x1b", "table"), ("K8", "0xffffffff"),
                     ("0xffff", "K300")):
        out += [f"ljmp {sel}, {off}", f"lcall {sel}, {off}", f"jmp {sel}:{off}",
                f"call {sel}:{off}"]
    return out


def jump_lines():
    """Relative jumps at distances around the rel8 limit, forward and backward."""
    out = []
    jcc = ["jmp"] + [f"j{c}" for c in CC]
    k = 0
    for pad in (0, 1, 100, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130, 200, 1000):
        for mn in (jcc[k % len(jcc)], "jmp", "je"):
            k += 1
            out.append(f"{mn} .Lf{k}")
            if pad:
                out.append(f".fill {pad}, 1, 0x90")
            out.append(f".Lf{k}:")
            out.append(f".Lb{k}:")
            if pad:
                out.append(f".fill {pad}, 1, 0x90")
            out.append(f"{jcc[(k * 7) % len(jcc)]} .Lb{k}")
    # a cascade: jumps whose reach depends on the size of the other jumps
    for i in range(40):
        out.append(f"jne .Lc{i + 20 if i < 20 else 0}")
        out.append("add eax, 0x12345678")
        out.append("mov dword ptr [ebx+ecx*4+0x100], 0x1234")
        out.append(f".Lc{i}:")
    out += ["1: jmp 1b", "jmp 1f", "1: loop 1b", "jecxz 1b", "loope 1b", "loopne 1f",
            "loopz 1b", "loopnz 1f", "1: call 1b", "call 1f", "1: nop",
            "jmp short 1b", "jmp short 1f", "1:", "jmp .", "je . + 2", "call .",
            "jmp table", "jmp far_label", "call far_label", "jne far_label",
            "jmp short .Lnear", ".Lnear: jecxz .Lnear"]
    for cc in CC:
        out.append(f"j{cc} 1b")
    return out


def data_lines():
    return [
        ".byte 0, 1, 0x7f, 0x80, 0xff, -1, -128, 'a', '\\n', '\\\\', '\\''",
        ".word 0, 0x7fff, 0xffff, -32768, K300", ".short 1, 2", ".hword 3", ".value 4",
        ".long 0, 0xffffffff, -1, table, table + 4, e1 - s1, .", ".int 5", ".quad -1, 0x123456789",
        '.ascii "abc", "d\\te\\x41\\101\\\\\\""', '.asciz "xyz"', '.string "s1", "s2"',
        ".space 3", ".space 2, 0xaa", ".skip 4", ".skip 1, 7", ".zero 5", ".fill 3, 2, 0x1234",
        ".fill 2, 4, -2", ".balign 8, 0xcc", ".balign 16, 0", ".p2align 5, 0xf4",
        ".long 4 + 1 - 2 * 3", ".long (4 + 1) & 2", ".long 1 << 4 | 1", ".long 7 / 2, -7 / 2",
        ".long -7 % 2, 0x10 >> 2, ~0", ".byte 017, 0b101",
    ]


def prologue():
    return [
        ".equ K1, 1", ".equ K8, 8", ".set K300, 300", "KX = K300 + 1",
        "s1: nop", "e1:",
        "table: .long 1, 2, 3, 4",
    ]


def epilogue():
    return [".fill 300, 1, 0x90", "far_label: ret"]


def corpus() -> list[str]:
    lines = prologue()
    for part in (alu_lines, shift_lines, unary_lines, mov_lines, ext_lines, xchg_test_lines,
                 stack_lines, imul_lines, bit_lines, setcc_lines, misc_lines, string_lines,
                 system_lines, control_lines, jump_lines, data_lines):
        lines.append(f"# --- {part.__name__}")
        lines += part()
    lines += epilogue()
    return lines


if __name__ == "__main__":
    print("\n".join(corpus()))
