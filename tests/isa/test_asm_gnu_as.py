"""Byte identity with GNU as: does vmkit encode every form exactly as ``as --32`` does?

The corpus (tests/helpers/asm_corpus.py) is assembled by both at base 0 and the ``.text`` bytes are
compared; a difference is reported with the first source line whose bytes differ. Skipped, with
a message, when binutils is not installed (``make sysdeps`` installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from asm_corpus import corpus
from vmkit.isa.asm import assemble

AS = shutil.which("as")
OBJCOPY = shutil.which("objcopy")
LD = shutil.which("ld")

pytestmark = pytest.mark.skipif(
    AS is None or OBJCOPY is None,
    reason="GNU as/objcopy (binutils) not installed: run `make sysdeps` to compare with GNU as")

HEADER = ".intel_syntax noprefix\n.code32\n.text\n"


def gnu_object(source: str, d: str, files: dict[str, str] | None = None) -> str:
    for name, text in (files or {}).items():
        with open(os.path.join(d, name), "w") as fh:
            fh.write(text)
    src = os.path.join(d, "t.s")
    obj = os.path.join(d, "t.o")
    with open(src, "w") as fh:
        fh.write(HEADER + source + "\n")
    r = subprocess.run([AS, "--32", "-I", d, "-o", obj, src], capture_output=True, text=True)
    assert r.returncode == 0, f"GNU as rejected the source:\n{r.stderr[:3000]}"
    return obj


def section_bytes(path: str, section: str, d: str) -> bytes:
    out = os.path.join(d, section.strip(".") + ".bin")
    subprocess.run([OBJCOPY, "-O", "binary", "-j", section, path, out], check=True,
                   capture_output=True)
    with open(out, "rb") as fh:
        return fh.read()


def gnu_text(source: str) -> bytes:
    """The .text bytes GNU as makes of ``source``."""
    with tempfile.TemporaryDirectory() as d:
        return section_bytes(gnu_object(source, d), ".text", d)


def first_difference(prog, ours: bytes, theirs: bytes) -> str:
    """Describe the first source line whose bytes differ (addresses agree up to there)."""
    for addr, size, file, line, text in prog.lines:
        off = addr - prog.base
        if size and ours[off:off + size] != theirs[off:off + size]:
            return (f"{file}:{line}: {text.strip()!r}\n    vmkit:  {ours[off:off + size].hex(' ')}"
                    f"\n    GNU as: {theirs[off:off + size].hex(' ')}")
    return f"lengths differ: vmkit {len(ours)} bytes, GNU as {len(theirs)} bytes"


def assert_same_as_gnu(source: str):
    prog = assemble(source, base=0)
    theirs = gnu_text(source)
    if prog.code != theirs:
        pytest.fail("vmkit and GNU as disagree at " + first_difference(prog, prog.code, theirs))
    return prog


def test_corpus_is_byte_identical_to_gnu_as():
    """Does every line of the corpus (every form, operand size, addressing mode, immediate
    width, prefix and jump distance) assemble to GNU as's bytes?"""
    lines = corpus()
    assert len(lines) > 3000
    prog = assert_same_as_gnu("\n".join(lines))
    instructions = sum(1 for _, size, *_ in prog.lines if size)
    assert instructions > 3000


def test_label_differences_follow_gnu_fragments():
    """Are label differences short immediates only where GNU as knows them when it reads the
    line (no relaxable jump or alignment in between, not a forward reference)?"""
    assert_same_as_gnu("""
s2: nop
jmp e2
e2:
add eax, e2 - s2
push e2 - s2
add eax, e3 - s3
push e3 - s3
mov eax, e3 - s3
.equ LEN, e3 - s3
.equ LEN2, e2 - s2
add eax, LEN
push LEN2
imul eax, ebx, e3 - s3
s3: nop
e3:
add eax, e3 - s3
push e3 - s3
.balign 4, 0xcc
s4: nop
.balign 4, 0xcc
e4: push e4 - s4
.org . + 5, 0xab
.org e4 + 20
mov eax, 5
.org 0x60
int3
""")


def test_relaxation_cascade_matches_gnu_as():
    """Do chains of jumps whose sizes depend on one another settle where GNU as's do?"""
    lines = []
    for i in range(60):
        lines.append(f"j{'ne' if i % 2 else 'mp'} L{(i * 7) % 60}")
        lines.append(".fill %d, 1, 0x90" % (i % 9 * 7))
        lines.append(f"L{i}:")
    assert_same_as_gnu("\n".join(lines))


def test_capstone_spellings_that_gnu_as_also_accepts():
    """Do capstone's spellings that GNU as shares give GNU as's bytes?"""
    assert_same_as_gnu("""
mov eax, dword ptr [ebx + ecx*4 + 8]
movsd dword ptr es:[edi], dword ptr [esi]
rep movsb byte ptr es:[edi], byte ptr [esi]
lcall 8, 0x1000
ljmp 8:0x1000
lock add dword ptr [ebx], eax
notrack jmp dword ptr ds:[esp + 4]
notrack call eax
rcl byte ptr [eax]
shl dword ptr [ebx]
lgdt [eax]
invlpg byte ptr [eax]
mov ds, eax
lar eax, ebx
""")


@pytest.mark.skipif(LD is None, reason="GNU ld not installed")
def test_sections_are_laid_out_like_gnu_as_and_ld():
    """Linked by ld at vmkit's section addresses, does a program with .text, .data (with a
    large .align), .rodata and .bss come out byte for byte the same?"""
    source = """
.text
.global _start
_start:
    mov esi, offset msg
    mov ecx, dword ptr [count]
    mov dword ptr [buf + 4], ecx
    lea edi, [table + ecx*4]
    call fn
    hlt
fn: ret
.data
count: .long 3
msg: .asciz "hi"
.align 4096
table: .long msg, buf, fn
.section .rodata
ro: .byte 1, 2, 3
.bss
.align 32
buf: .space 64
end:
"""
    prog = assemble(source, base=0x1000)
    text, tsize = prog.sections["text"]
    data, dsize = prog.sections["data"]
    bss, bsize = prog.sections["bss"]
    assert data % 4096 == 0 and bss % 32 == 0
    with tempfile.TemporaryDirectory() as d:
        src = source.replace(".section .rodata", ".data")   # vmkit puts .rodata into .data
        obj = gnu_object(src, d)
        elf = os.path.join(d, "t.elf")
        r = subprocess.run([LD, "-m", "elf_i386", f"-Ttext=0x{text:x}", f"-Tdata=0x{data:x}",
                            f"-Tbss=0x{bss:x}", "-e", "_start", "-z", "noexecstack", "-o", elf,
                            obj], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert section_bytes(elf, ".text", d) == prog.code[:tsize]
        off = data - prog.base
        assert section_bytes(elf, ".data", d) == prog.code[off:off + dsize]
    assert prog.code[bss - prog.base:] == bytes(bsize)


def test_gnu_as_pads_code_with_nops_where_vmkit_uses_0x90():
    """Is the one documented difference in code padding really the only one? (.align in
    .text: GNU as uses multi-byte no-ops, vmkit 0x90; with an explicit fill both agree.)"""
    ours = assemble("nop\n.balign 16\nnop", base=0).code
    theirs = gnu_text("nop\n.balign 16\nnop")
    assert ours == b"\x90" * 17
    assert len(theirs) == 17 and theirs != ours
    assert assemble("nop\n.balign 16, 0xcc\nnop", base=0).code == \
        gnu_text("nop\n.balign 16, 0xcc\nnop")


# --------------------------------------------------------------------------------------------
# macros: GNU as expands them, vmkit must make the same bytes

MACRO_SOURCES = {
    "pvops": r"""
.macro LOAD_CR3 reg
    mov cr3, \reg
.endm
.macro PTE_WRITE dst, src
    mov dword ptr \dst, \src
.endm
.macro EVENTS_OFF
    cli
.endm
.macro EVENTS_ON
    sti
.endm
start:
    LOAD_CR3 eax
    load_cr3 ebx
    PTE_WRITE [edx + 4], eax
    PTE_WRITE [edx+ecx*4+8], ecx
    PTE_WRITE [edx], esi
    PTE_WRITE dword_at, 5
x:  EVENTS_OFF
    EVENTS_ON
    jmp x
dword_at: .long 0
""",
    "defaults_keywords_vararg": r"""
.macro m a, b=7, c:req
    .byte \a, \b, \c
.endm
.macro v first, rest:vararg
    .byte \first
    .byte \rest
.endm
    m 1, 2, 3
    m 1,, 3
    m c=5, a=4
    m 1 2 3
    m (1 + 2), (3 - 1), 0x10|1
    m 1 2, 3
    v 9, 8
    v 1, 2, 3,4
""",
    "nested_counter_locals": r"""
.macro inner x
    .byte \@, \x
.endm
.macro outer y
    inner \y
1:  inc eax
    .byte \@
    inner \y+1
    dec ecx
    jnz 1b
    jmp 1f
    nop
1:
lbl\@:
    jmp lbl\@
.endm
    outer 5
    outer 6
    inner 0
""",
    "exitm_concat_strings": r"""
.macro s name, n
\name\()_\n: .ascii "\name-\n\n"
    .exitm
    .byte 0xff
.endm
    s foo, 1
    s "bar", 2
    jmp foo_1
    S baz 3
    s "q" "r"
""",
    "override_and_rept": r"""
.macro pause
    .byte 0xf3, 0x90, 0xcc
.endm
.macro spin n
.rept \n
    pause
.endr
.endm
    pause
    PAUSE
    spin 3
.purgem pause
    pause
.macro m
    nop
.endm
""",
}


@pytest.mark.parametrize("name", sorted(MACRO_SOURCES))
def test_macro_sources_are_byte_identical_to_gnu_as(name):
    """Do macro definitions and invocations (arguments with brackets, blanks and quotes,
    defaults, keywords, :req, :vararg, nesting, \\@, \\(), local labels, .exitm, .rept in a
    body, a macro replacing an instruction, .purgem, case-insensitive names) expand as in
    GNU as?"""
    assert_same_as_gnu(MACRO_SOURCES[name])


def test_macros_from_an_included_file_match_gnu_as():
    """Does a kernel taking its pvops macros from an included file assemble like GNU as?"""
    files = {"pvops.s": MACRO_SOURCES["pvops"].split("start:")[0]}
    source = '.include "pvops.s"\nstart: LOAD_CR3 eax\n  PTE_WRITE [ebx + 8], ecx\n' \
             '  EVENTS_OFF\n  jmp start\n'
    prog = assemble(source, base=0, files=files, filename="kernel.s")
    with tempfile.TemporaryDirectory() as d:
        theirs = section_bytes(gnu_object(source, d, files), ".text", d)
    assert prog.code == theirs == bytes.fromhex("0f 22 d8 89 4b 08 fa eb f7")
    assert prog.line_of(3) == ("pvops.s", 6) and prog.call_site_of(3) == ("kernel.s", 3)
