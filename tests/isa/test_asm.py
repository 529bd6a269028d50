"""The vmkit assembler: API, dialect, relaxation, round trip through capstone, errors.

Byte identity with GNU as is checked in test_asm_gnu_as.py; the fixtures here carry their
expected bytes so that the key encodings are checked even where binutils is missing.
"""

from __future__ import annotations

import re

import pytest

import vmkit
from asm_corpus import corpus
from asm_programs import kernel_sized_program
from vmkit.errors import AssemblyError, VmkitError
from vmkit.isa.asm import Program, assemble


def code(src: str, base: int = 0x1000) -> bytes:
    return assemble(src, base=base).code


def hexcode(src: str, base: int = 0x1000) -> str:
    return code(src, base).hex(" ")


def error(src: str, **kw) -> AssemblyError:
    with pytest.raises(AssemblyError) as info:
        assemble(src, **kw)
    return info.value


# --------------------------------------------------------------------------------------------
# API

def test_program_carries_code_symbols_constants_and_lines():
    """Does a Program hold the image, labels, constants, globals and a line map?"""
    prog = assemble("""
.global start
.equ COUNT, 3
start:  mov ecx, COUNT      ; three times
again:  loop again
        ret
""", base=0x2000)
    assert isinstance(prog, Program)
    assert prog.base == 0x2000
    assert prog.code == bytes.fromhex("b9 03 00 00 00 e2 fe c3")
    assert prog.symbols == {"start": 0x2000, "again": 0x2005}
    assert prog.constants == {"COUNT": 3}
    assert prog.globals == {"start"}
    assert prog.line_of(0x2000) == ("<input>", 4)
    assert prog.line_of(0x2004) == ("<input>", 4)
    assert prog.line_of(0x2006) == ("<input>", 5)
    assert prog.line_of(0x2007) == ("<input>", 6)
    assert prog.line_of(0x2008) is None and prog.line_of(0x1fff) is None
    sized = [(a, s, ln) for a, s, f, ln, t in prog.lines if s]
    assert sized == [(0x2000, 5, 4), (0x2005, 2, 5), (0x2007, 1, 6)]
    assert [a for a, *_ in prog.lines] == sorted(a for a, *_ in prog.lines)


def test_listing_shows_address_bytes_and_source():
    """Does listing() print address, bytes and source like `as -al`?"""
    prog = assemble("start: mov eax, 5\n.ascii \"0123456789\"\n", base=0x1000)
    text = prog.listing()
    assert "00001000  b8 05 00 00 00" in text and "start: mov eax, 5" in text
    assert "00001005  30 31 32 33 34 35 36 37" in text
    assert "0000100d  38 39" in text


def test_vmkit_assemble_is_the_assembler():
    """Is vmkit.assemble the same function, and AssemblyError a VmkitError?"""
    assert vmkit.assemble is assemble
    assert issubclass(AssemblyError, VmkitError)


def test_filename_is_reported_by_line_of():
    """Does line_of name the file given to assemble()?"""
    assert assemble("nop", filename="boot.s").line_of(0x1000) == ("boot.s", 1)


# --------------------------------------------------------------------------------------------
# encodings (GNU as's choices; the bytes come from `as --32`)

ENCODINGS = [
    ("mov eax, ebx", "89 d8"),                    # the store form 89 /r for reg, reg
    ("mov eax, [ebx]", "8b 03"),
    ("mov eax, [0x1000]", "a1 00 10 00 00"),      # moffs
    ("mov ebx, [0x1000]", "8b 1d 00 10 00 00"),
    ("mov eax, fs:[0x10]", "64 a1 10 00 00 00"),
    ("add eax, 5", "83 c0 05"),                   # sign-extended imm8
    ("add eax, 500", "05 f4 01 00 00"),           # accumulator form only for imm32
    ("add ebx, 0xffffffff", "83 c3 ff"),
    ("add al, 5", "04 05"),
    ("add ax, 0xff80", "66 83 c0 80"),
    ("test eax, ebx", "85 d8"),
    ("test eax, [ebx]", "85 03"),
    ("test ebx, 5", "f7 c3 05 00 00 00"),
    ("xchg eax, ebx", "93"),
    ("xchg ebx, eax", "93"),
    ("xchg ebx, ecx", "87 cb"),
    ("shl eax, 1", "d1 e0"),
    ("shl eax, cl", "d3 e0"),
    ("shl eax, 3", "c1 e0 03"),
    ("push 5", "6a 05"),
    ("push 500", "68 f4 01 00 00"),
    ("push [eax]", "ff 30"),                      # push defaults to dword
    ("imul eax, ebx", "0f af c3"),
    ("imul eax, 5", "6b c0 05"),
    ("imul eax, ebx, 500", "69 c3 f4 01 00 00"),
    ("lea eax, [ebx+8]", "8d 43 08"),
    ("lea eax, [ebx+0x80]", "8d 83 80 00 00 00"),
    ("mov eax, [esp]", "8b 04 24"),               # esp needs a SIB byte
    ("mov eax, [ebp]", "8b 45 00"),               # ebp needs a disp8 of 0
    ("mov eax, [ecx*4]", "8b 04 8d 00 00 00 00"),  # no base: disp32 with SIB
    ("mov eax, [eax+esp]", "8b 04 04"),           # esp cannot be the index: swapped
    ("mov eax, ss:[ebp+4]", "8b 45 04"),          # the default segment is dropped
    ("mov eax, ds:[ebp+4]", "3e 8b 45 04"),
    ("mov ax, fs:[eax]", "64 66 8b 00"),          # segment, then operand size
    ("rep movsw", "66 f3 a5"),
    ("lock add word ptr fs:[eax], 1", "64 66 f0 83 00 01"),
    ("int 3", "cc"),
    ("int 0x80", "cd 80"),
    ("ret 4", "c2 04 00"),
    ("mov ds, ax", "8e d8"),
    ("mov ax, ds", "66 8c d8"),
    ("mov cr3, eax", "0f 22 d8"),
    ("mov eax, cr0", "0f 20 c0"),
    ("lgdt [eax]", "0f 01 10"),
    ("sldt ax", "66 0f 00 c0"),
    ("ljmp 8, 0x1000", "ea 00 10 00 00 08 00"),
    ("in al, dx", "ec"),
    ("out 0x60, eax", "e7 60"),
    ("movzx eax, byte ptr [ebx]", "0f b6 03"),
    ("cmovne ax, [ebx]", "66 0f 45 03"),
    ("sete al", "0f 94 c0"),
    ("bt eax, 3", "0f ba e0 03"),
    ("pushad", "60"),
    ("iretd", "cf"),
]


@pytest.mark.parametrize("src,expected", ENCODINGS)
def test_encoding_matches_gnu_as(src, expected):
    """Does this form get the bytes GNU as gives it?"""
    assert hexcode(src) == expected


SAME = [
    ("pushal", "pushad"), ("pusha", "pushad"), ("popal", "popad"), ("popa", "popad"),
    ("pushf", "pushfd"), ("popf", "popfd"), ("iret", "iretd"), ("lret", "retf"),
    ("lret 4", "retf 4"), ("int 3", "int3"), ("sal eax, 1", "shl eax, 1"),
    ("shl eax", "shl eax, 1"), ("rcl byte ptr [eax]", "rcl byte ptr [eax], 1"),
    ("movsb", "movsb byte ptr es:[edi], byte ptr [esi]"),
    ("movsd", "movsd dword ptr es:[edi], dword ptr [esi]"),
    ("movsd", "movs dword ptr es:[edi], dword ptr [esi]"),
    ("rep stosd", "rep stosd dword ptr es:[edi], eax"),
    ("lodsb", "lodsb al, byte ptr [esi]"), ("scasb", "scasb al, byte ptr es:[edi]"),
    ("cmpsd", "cmpsd dword ptr [esi], dword ptr es:[edi]"),
    ("repz cmpsb", "repe cmpsb"), ("repnz scasb", "repne scasb"),
    ("ljmp 8, 0x1000", "ljmp 8:0x1000"), ("jmp 8:0x1000", "ljmp 8:0x1000"),
    ("lcall 8, 0x1000", "call 8:0x1000"), ("jmp far ptr 8:0x1000", "ljmp 8, 0x1000"),
    ("jmp fword ptr [eax]", "jmp ptr [eax]"), ("ljmp [eax]", "jmp ptr [eax]"),
    ("lcall [ebx]", "call ptr [ebx]"), ("mov ds, ax", "mov ds, eax"),
    ("lgdt fword ptr [eax]", "lgdt [eax]"), ("lar eax, bx", "lar eax, ebx"),
    ("MOV EAX, DWORD PTR [EBX]", "mov eax, dword ptr [ebx]"),
    ("mov eax, [8 + ecx*4 + ebx]", "mov eax, dword ptr [ebx + ecx*4 + 8]"),
    ("mov eax, [ebx][ecx*4+8]", "mov eax, dword ptr [ebx + ecx*4 + 8]"),
    ("mov eax, 8[ebx+ecx*4]", "mov eax, dword ptr [ebx + ecx*4 + 8]"),
    ("mov eax, [ebx - 8]", "mov eax, dword ptr [ebx + -8]"),
    ("jmp dword ptr [eax]", "jmp [eax]"), ("call dword ptr [ebx+4]", "call [ebx + 4]"),
    ("xchg eax, ebx", "xchg ebx, eax"), ("test [ebx], eax", "test eax, [ebx]"),
]


@pytest.mark.parametrize("a,b", SAME)
def test_spellings_mean_the_same_bytes(a, b):
    """Do the GNU and capstone spellings of one instruction give the same bytes?"""
    assert code(a) == code(b)


ALIASES = [("o",), ("no",), ("b", "c", "nae"), ("ae", "nb", "nc"), ("e", "z"), ("ne", "nz"),
           ("be", "na"), ("a", "nbe"), ("s",), ("ns",), ("p", "pe"), ("np", "po"),
           ("l", "nge"), ("ge", "nl"), ("le", "ng"), ("g", "nle")]


@pytest.mark.parametrize("cc", range(16))
def test_condition_code_aliases(cc):
    """Does every alias of a condition give its condition's opcode in jcc, setcc, cmovcc?"""
    for name in ALIASES[cc]:
        assert code(f"j{name} 0x1010") == bytes([0x70 + cc, 0x0E])
        rel32 = (0x2000 - 0x1006).to_bytes(4, "little")
        assert code(f"j{name} 0x2000") == bytes([0x0F, 0x80 + cc]) + rel32
        assert code(f"set{name} al") == bytes([0x0F, 0x90 + cc, 0xC0])
        assert code(f"cmov{name} eax, ebx") == bytes([0x0F, 0x40 + cc, 0xC3])


# --------------------------------------------------------------------------------------------
# round trip through capstone

# capstone's text loses what these encode: it prints 66 90 as "nop" and a lone index scaled by
# one as a base; its "pushf", "popf", "iret" mean the 16-bit forms, GNU as's and the kit's the
# 32-bit ones
KNOWN_LOSSY = {"xchg ax, ax": "nop", "pushfw": "pushf", "popfw": "popf", "iretw": "iret",
               "mov eax, [ecx*1]": "mov eax, dword ptr [ecx]",
               "lea ebx, [ebp*1+4]": "lea ebx, [ebp + 4]"}
_LABELS = re.compile(r"^\s*(?:[\w.$]+:\s*)*")


def test_capstone_text_reassembles_to_the_same_bytes():
    """Assembling the corpus, decoding each instruction with capstone and assembling
    capstone's text again at the same address: are the bytes the same?"""
    capstone = pytest.importorskip("capstone")
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    base = 0x1000
    prog = assemble("\n".join(corpus()), base=base)
    lossy = {}
    checked = 0
    for addr, size, file, line, text in prog.lines:
        body = _LABELS.sub("", text).strip()
        if not size or body.startswith("."):
            continue
        raw = prog.code[addr - base:addr - base + size]
        insns = list(md.disasm(raw, addr))
        assert len(insns) == 1 and insns[0].size == size, f"line {line}: {text!r} {raw.hex(' ')}"
        spelled = f"{insns[0].mnemonic} {insns[0].op_str}".strip()
        again = assemble(spelled, base=addr).code
        checked += 1
        if again != raw:
            lossy[body] = spelled
    assert checked > 3000
    assert lossy == KNOWN_LOSSY


def test_capstone_absolute_jump_targets_round_trip():
    """Do `jmp 0x100c` and `lcall 8, 0x1000` as capstone prints them reassemble in place?"""
    assert code("jmp 0x100c", base=0x1000) == bytes.fromhex("eb 0a")
    assert code("jmp 0x1000", base=0x1000) == bytes.fromhex("eb fe")
    assert code("jmp 0x1082", base=0x1000) == bytes.fromhex("e9 7d 00 00 00")
    assert code("call 0x1000", base=0x1000) == bytes.fromhex("e8 fb ff ff ff")
    assert code("loop 0x1000", base=0x1000) == bytes.fromhex("e2 fe")
    assert code("je 0x800", base=0x1000) == bytes.fromhex("0f 84 fa f7 ff ff")


# --------------------------------------------------------------------------------------------
# relaxation

@pytest.mark.parametrize("pad,expected", [(127, "eb 7f"), (128, "e9 80 00 00 00")])
def test_forward_jump_grows_past_127_bytes(pad, expected):
    """Does a forward jmp stay short up to 127 bytes and become rel32 at 128?"""
    assert hexcode(f"jmp L\n.fill {pad}, 1, 0x90\nL: nop").startswith(expected)


@pytest.mark.parametrize("pad,expected", [(126, "eb 80"), (127, "e9 7c ff ff ff")])
def test_backward_jump_grows_past_minus_128(pad, expected):
    """Does a backward jmp reach -128 short and need rel32 beyond?"""
    assert hexcode(f"L: .fill {pad}, 1, 0x90\njmp L").endswith(expected)


def test_conditional_jump_grows_to_0f_8x():
    """Does a jcc out of rel8 reach become 0F 8x rel32?"""
    assert hexcode("jne L\n.fill 200, 1, 0\nL:")[:17] == "0f 85 c8 00 00 00"


def test_relaxation_reaches_a_fixpoint():
    """When one jump growing pushes another out of range, do both end up long?"""
    src = "jmp A\njmp B\n.fill 124, 1, 0x90\nA: nop\n.fill 3, 1, 0x90\nB: nop"
    c = code(src)
    # short, A is 126 bytes away and B 128: jmp B grows, which puts A 129 bytes away
    assert c[0] == 0xE9 and c[5] == 0xE9
    assert code(src.replace("3, 1", "2, 1"))[:4] == bytes.fromhex("eb 7e eb 7f")


def test_call_is_always_rel32():
    """Is call to a near label still E8 rel32?"""
    assert hexcode("call L\nL: ret") == "e8 00 00 00 00 c3"


def test_jmp_short_stays_short_and_errors_when_too_far():
    """Is `jmp short` never grown, and an error when the target is out of rel8 reach?"""
    assert hexcode("jmp short L\nL:") == "eb 00"
    e = error("jmp short L\n.fill 128, 1, 0\nL:")
    assert (e.line, e.column) == (1, 11) and "-128..127" in e.message


def test_loop_out_of_range_is_an_error():
    """Does loop to a target beyond rel8 raise with the target's position?"""
    e = error("top: .fill 200, 1, 0x90\n    loop top")
    assert (e.line, e.column) == (2, 10)
    assert "-202 bytes away" in e.message and "rel8" in e.message


def test_jump_to_another_section_is_rel32_like_gnu_as():
    """Does a jump to a label in .data start (and stay) rel32, as GNU as does?"""
    assert hexcode("jmp D\n.data\nD: .byte 0")[:2] == "e9"


def test_local_labels_forward_and_backward():
    """Do 1b/1f and .L labels resolve to the nearest definitions?"""
    prog = assemble("1: nop\njmp 1b\njmp 1f\n1: nop\njmp 1b\n.Lx: jmp .Lx", base=0)
    assert prog.code == bytes.fromhex("90 eb fd eb 00 90 eb fd eb fe")
    assert ".Lx" in prog.symbols


def test_dot_is_the_current_instruction_and_data_item():
    """Is '.' the start of the instruction, and of each item in a data list?"""
    assert hexcode("nop\njmp .") == "90 eb fe"
    assert code(".long ., .", base=0x100) == bytes.fromhex("00 01 00 00 04 01 00 00")


# --------------------------------------------------------------------------------------------
# operands, numbers and expressions

def test_numbers_in_every_base_and_characters():
    """Are hex, binary, octal (0o and GNU's leading zero), decimal and chars read right?"""
    c = code(".byte 0x1F, 0b101, 0o17, 017, 10, 'A', '\\n', '\\\\', '\\'', '\\x41', '\\101'")
    assert c == bytes([0x1F, 5, 15, 15, 10, 65, 10, 92, 39, 0x41, 0x41])


def test_expressions_use_gnu_precedence_and_truncating_division():
    """Do expressions follow GNU as (and C where they agree), with division toward zero?"""
    c = code(".long 4 + (1 & 2), 1 << 4 | 1, (1 + 2) * 3, -7 / 2, -7 % 2, ~0, 2 * 3 + 1, "
             "0x10 >> 2")
    vals = [int.from_bytes(c[i:i + 4], "little", signed=True) for i in range(0, len(c), 4)]
    assert vals == [4, 17, 9, -3, -1, -1, 7, 4]


@pytest.mark.parametrize("expr", ["1 << 2 + 1", "4 + 1 & 2", "1 | 2 & 3", "2 * 1 << 3",
                                  "1 ^ 2 | 3"])
def test_expressions_that_gnu_and_c_read_differently_need_parentheses(expr):
    """Is an expression that GNU as and C would group differently refused?"""
    e = error(f".long {expr}")
    assert "parentheses" in e.message and e.line == 1


def test_label_arithmetic_and_constants():
    """Do label differences, .equ/.set/= constants and OFFSET give numbers?"""
    prog = assemble("""
.equ A, 2
B = A * 3
.set C, B + 1
.set C, C + 1
start: mov eax, offset msg
    mov ecx, offset len     ; defined below: a bare `len` would be refused
    push A
    push B
    push C
.data
msg: .ascii "hello"
.equ len, . - msg
""", base=0x1000)
    assert prog.constants == {"A": 2, "B": 6, "C": 8, "len": 5}
    c = prog.code
    assert c[:5] == b"\xb8" + prog.symbols["msg"].to_bytes(4, "little")
    assert c[5:10] == bytes.fromhex("b9 05 00 00 00")
    assert c[10:16] == bytes.fromhex("6a 02 6a 06 6a 08")


def test_label_valued_immediates_take_the_long_form():
    """Does an immediate known only after layout get imm32 even when small (GNU as)?"""
    assert hexcode("add eax, offset L\nL:", base=0) == "05 05 00 00 00"
    assert hexcode("push offset L\nL:", base=0) == "68 05 00 00 00"
    assert hexcode("mov eax, [ebx + L]\nL:", base=0) == "8b 83 06 00 00 00"


def test_bare_label_needs_offset_or_brackets():
    """Is `mov eax, msg` (memory in GNU Intel syntax!) refused with the two spellings?"""
    e = error("mov eax, msg\n.data\nmsg: .long 0\n")
    assert (e.line, e.column) == (1, 10)
    assert "offset msg" in e.message
    prog = assemble("msg: .long 7\nmov eax, offset msg\nmov eax, dword ptr [msg]\n"
                    "mov eax, dword ptr msg\nlea eax, msg", base=0)
    assert prog.code[4:] == bytes.fromhex("b8 00 00 00 00 a1 00 00 00 00 a1 00 00 00 00 "
                                          "8d 05 00 00 00 00")


def test_constant_used_before_definition_is_refused():
    """Is a bare constant used above its .equ refused (GNU as would read memory there)?"""
    e = error("mov eax, LATER\n.equ LATER, 5")
    assert (e.line, e.column) == (1, 10) and "defined above" in e.message
    assert hexcode("mov eax, [ebx + LATER]\n.equ LATER, 5") == "8b 83 05 00 00 00"


# --------------------------------------------------------------------------------------------
# directives and layout

def test_data_directives():
    """Do the data directives emit what they say, little-endian?"""
    c = code('.byte 1, -1\n.word 0x1234\n.short 2\n.long 0x12345678\n.int -2\n.dword 3\n'
             '.quad 0x1122334455667788\n.ascii "ab\\t"\n.asciz "c"\n.string "d", "e"')
    assert c == bytes.fromhex("01 ff 34 12 02 00 78 56 34 12 fe ff ff ff 03 00 00 00 "
                              "88 77 66 55 44 33 22 11 61 62 09 63 00 64 00 65 00")


def test_space_skip_zero_fill():
    """Do .space/.skip (with fill), .zero and .fill reserve the bytes?"""
    assert code(".space 2\n.space 2, 0xaa\n.skip 1, 7\n.zero 2\n.fill 2, 2, 0x1234") == \
        bytes.fromhex("00 00 aa aa 07 00 00 34 12 34 12")


def test_align_pads_text_with_nop_and_data_with_zero():
    """Does .align pad .text with 0x90 and .data with 0, and honour fill and max?"""
    prog = assemble("nop\n.align 4\nnop\n.balign 8, 0xcc\n.p2align 4,,1\nnop\n"
                    ".data\n.byte 1\n.align 4\n.byte 2", base=0x1000)
    assert prog.code[:9] == bytes.fromhex("90 90 90 90 90 cc cc cc 90")
    start, size = prog.sections["data"]
    assert start == 0x1010
    assert prog.code[start - 0x1000:] == bytes.fromhex("01 00 00 00 02")


def test_org_is_relative_to_the_section_or_an_address():
    """Is `.org N` an offset in the section and `.org label + N` an address?"""
    assert code("nop\n.org 4\nnop\nL: .org L + 3, 0xee\nnop", base=0x1000) == \
        bytes.fromhex("90 00 00 00 90 ee ee ee 90")
    e = error("nop\nnop\n.org 1")
    assert e.line == 3 and "backwards" in e.message


def test_sections_text_then_data_then_bss():
    """Are .text fragments first, .data on the next 16 bytes, then a zeroed .bss?"""
    prog = assemble("""
.data
d1: .byte 1
.text
t1: nop
.bss
b1: .space 4
.section .rodata
r1: .byte 2
.text
t2: ret
""", base=0x1000)
    s = prog.symbols
    assert (s["t1"], s["t2"]) == (0x1000, 0x1001)
    assert (s["d1"], s["r1"]) == (0x1010, 0x1011)
    assert s["b1"] == 0x1020
    assert prog.code == bytes.fromhex("90 c3") + bytes(14) + b"\x01\x02" + bytes(14) + bytes(4)
    assert prog.sections == {"text": (0x1000, 2), "data": (0x1010, 2), "bss": (0x1020, 4)}


def test_a_large_align_moves_the_section_start():
    """Does a section with .align 4096 inside start on a 4096 boundary, like a linker?"""
    prog = assemble("nop\n.data\n.align 4096\npd: .space 4096", base=0x1000)
    assert prog.symbols["pd"] == 0x2000


def test_bss_takes_only_reserved_space():
    """Is code or initialized data in .bss refused?"""
    e = error(".bss\nbuf: .space 4\n  mov eax, 1")
    assert (e.line, e.column) == (3, 3) and ".bss" in e.message
    assert error(".bss\n.byte 1").line == 2


def test_rept_repeats_and_end_stops():
    """Does .rept repeat its block and .end ignore the rest?"""
    prog = assemble(".rept 3\nnop\n.endr\n.rept 2\n.rept 2\n.byte 7\n.endr\n.endr\nret\n.end\nbad!")
    assert prog.code == bytes.fromhex("90 90 90 07 07 07 07 c3")
    assert prog.line_of(0x1001) == ("<input>", 2)


def test_gnu_boilerplate_is_accepted():
    """Are .intel_syntax noprefix, .code32, .type, .size and .extern accepted?"""
    assert code(".intel_syntax noprefix\n.code32\n.extern foo\n.type f, @function\nf: ret\n"
                ".size f, . - f") == b"\xc3"


def test_comments_with_semicolon_hash_and_slashes():
    """Do ';', '#' and '//' start comments, but not inside strings or characters?"""
    assert code('nop ; one\nnop # two\nnop // three\n.ascii "#;//"\n.byte \';\'') == \
        b"\x90\x90\x90#;//;"


# --------------------------------------------------------------------------------------------
# include

def test_include_from_files_and_line_of_names_the_included_file():
    """Does .include take sources from `files`, and does line_of report the included line?"""
    files = {"lib.s": "helper:\n    ret\n", "consts.s": ".equ N, 4\n"}
    prog = assemble('.include "consts.s"\nmov eax, N\ncall helper\n.include "lib.s"\nnop',
                    files=files, filename="main.s")
    assert prog.symbols["helper"] == 0x100A
    assert prog.line_of(0x100A) == ("lib.s", 2)
    assert prog.line_of(0x100B) == ("main.s", 5)
    assert prog.line_of(0x1000) == ("main.s", 2)


def test_include_path_and_relative_to_including_file(tmp_path):
    """Are include_path directories and the including file's directory searched?"""
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "a.s").write_text('.include "b.s"\nnop\n')
    (inc / "b.s").write_text("int3\n")
    prog = assemble('.include "a.s"\nret', include_path=[str(inc)])
    assert prog.code == bytes.fromhex("cc 90 c3")
    assert prog.line_of(0x1000) == (str(inc / "b.s"), 1)
    main = tmp_path / "main.s"
    prog = assemble('.include "inc/b.s"', filename=str(main))
    assert prog.code == b"\xcc"


def test_recursive_include_is_an_error():
    """Is a file that includes itself (through another) refused with the chain?"""
    files = {"a.s": '.include "b.s"\n', "b.s": 'nop\n.include "a.s"\n'}
    e = error('.include "a.s"', files=files, filename="main.s")
    assert (e.file, e.line, e.column) == ("b.s", 2, 10)
    assert "recursive" in e.message and "a.s -> b.s -> a.s" in e.message


def test_missing_include_is_an_error():
    """Is an include that cannot be found reported at the file name?"""
    e = error('nop\n.include "nope.s"', files={"x.s": ""})
    assert (e.line, e.column) == (2, 10) and "'nope.s' not found" in e.message


def test_errors_in_included_files_name_that_file():
    """Does an error inside an included file carry that file's name and line?"""
    e = error('.include "bad.s"', files={"bad.s": "nop\nmov al, ebx\n"})
    assert (e.file, e.line, e.column, e.text) == ("bad.s", 2, 9, "mov al, ebx")


# --------------------------------------------------------------------------------------------
# errors

ERRORS = [
    # source, line, column, words in the message
    ("mvo eax, ebx", 1, 1, ["unknown instruction 'mvo'", "did you mean", "'mov'"]),
    ("nop\n  mov eax", 2, 7, ["'mov' takes 2 operands, got 1"]),
    ("mov eax, ebx, ecx", 1, 15, ["takes 2 operands, got 3"]),
    ("  jmp", 1, 3, ["'jmp' takes 1 operand, got 0"]),
    ("lea eax, ebx", 1, 10, ["expected memory", "got 32-bit register ebx"]),
    ("inc 5", 1, 5, ["expected register or memory", "got immediate"]),
    ("shl eax, ebx", 1, 10, ["expected immediate or cl"]),
    ("out 0x60, bl", 1, 11, ["expected al, ax or eax"]),
    ("mov al, ebx", 1, 9, ["operand size mismatch", "al is 8-bit", "ebx is 32-bit"]),
    ("lgdt dword ptr [eax]", 1, 6, ["operand size mismatch", "fword ptr"]),
    ("inc [eax]", 1, 5, ["ambiguous operand size", "byte ptr, word ptr or dword ptr"]),
    ("mov [eax], 5", 1, 5, ["ambiguous operand size"]),
    ("movzx eax, [ebx]", 1, 12, ["ambiguous", "byte ptr or word ptr"]),
    ("mov eax, dword [ebx]", 1, 10, ["'dword ptr'"]),
    ("jmp nowhere", 1, 5, ["undefined symbol 'nowhere'"]),
    ("start: nop\njmp strat", 2, 5, ["undefined symbol 'strat'", "did you mean 'start'"]),
    ("mov eax, offset bar", 1, 17, ["undefined symbol 'bar'"]),
    ("jmp 3f", 1, 5, ["'3f'", "later '3:'"]),
    ("jmp 3b", 1, 5, ["'3b'", "earlier '3:'"]),
    ("a: nop\n a: nop", 2, 2, ["duplicate label 'a'", "<input>:1"]),
    ("eax: nop", 1, 1, ["'eax' is a reserved word"]),
    ("mov al, 300", 1, 9, ["300", "out of range for 8 bits"]),
    ("mov byte ptr [eax], -129", 1, 21, ["out of range for 8 bits"]),
    ("add ax, 0x10000", 1, 9, ["out of range for 16 bits"]),
    ("int 256", 1, 5, ["256", "out of range", "0..255"]),
    ("in al, 300", 1, 8, ["out of range"]),
    ("ret 0x10000", 1, 5, ["out of range for 16 bits"]),
    (".byte 256", 1, 7, ["value 256", "out of range"]),
    ("x: .fill 200, 1, 0x90\nloop x", 2, 6, ["-202 bytes away", "-128..127"]),
    ("jecxz y\n.fill 128, 1, 0\ny: nop", 1, 7, ["128 bytes away"]),
    (".foo 1", 1, 1, ["unknown directive '.foo'"]),
    (".bytes 1", 1, 1, ["unknown directive", "'.byte'"]),
    (".align 3", 1, 8, ["not a power of two"]),
    (".space n", 1, 8, ["must be a number known here"]),
    (".byte", 1, 6, ["expected at least one value"]),
    (".equ X", 1, 7, ["expected ','"]),
    (".section .foo", 1, 10, ["unknown section '.foo'"]),
    (".att_syntax", 1, 1, ["not supported"]),
    ('.ascii "abc', 1, 8, ["unterminated string"]),
    ("mov al, 'a", 1, 9, ["unterminated character constant"]),
    ("mov eax, [ebx", 1, 10, ["missing ']'"]),
    ("mov eax, [ebx+ecx+edx]", 1, 19, ["too many registers"]),
    ("mov eax, [esp*2]", 1, 11, ["esp cannot be an index"]),
    ("mov eax, [ebx*3]", 1, 15, ["scale must be 1, 2, 4 or 8"]),
    ("mov eax, [bx]", 1, 11, ["16-bit addressing"]),
    ("mov eax, ebx + 4", 1, 10, ["only inside [ ]"]),
    ("mov eax, 5 / 0", 1, 12, ["division by zero"]),
    ("lock mov eax, [ebx]", 1, 1, ["'lock' needs"]),
    ("rep add eax, 1", 1, 1, ["'rep' works only with string instructions"]),
    ("push dword ptr 5", 1, 6, ["size before a plain number"]),
    (".rept 2\nnop", 1, 1, [".rept without a matching .endr"]),
    (".endr", 1, 1, [".endr without .rept"]),
    ("add eax, 1 +", 1, 13, ["expected an expression"]),
    ("mov eax, (1 + 2", 1, 16, ["expected ')'"]),
]


@pytest.mark.parametrize("src,line,col,words", ERRORS)
def test_bad_input_raises_assembly_error_with_position(src, line, col, words):
    """Is each mistake reported at its line and column, saying what was expected?"""
    e = error(src)
    assert (e.line, e.column) == (line, col), e
    for w in words:
        assert w in e.message, e
    assert e.file == "<input>"
    assert e.text == src.splitlines()[line - 1]


def test_error_text_points_at_the_column():
    """Does str(AssemblyError) give file:line:column, the line and a caret under the token?"""
    e = error("nop\n    mov al, ebx", filename="k.s")
    assert str(e) == ("k.s:2:13: operand size mismatch for 'mov': al is 8-bit but ebx is "
                      "32-bit\n        mov al, ebx\n                ^")


# --------------------------------------------------------------------------------------------
# speed

def test_a_kernel_sized_program_assembles():
    """Does a 2000-line program with many labels and jumps assemble, every label kept? (Its
    time: benchmarks/bench_tools.py.)"""
    prog = assemble(kernel_sized_program())
    assert len(prog.symbols) == 250
    assert prog.symbols["f0"] < prog.symbols["f1"] < prog.symbols["f249"]
