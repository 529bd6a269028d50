"""Macros in the vmkit assembler (``.macro`` ... ``.endm``, GNU as semantics): expansion,
arguments, nesting, ``\\@``, local labels, source mapping (``line_of``, ``call_site_of``,
``macro_stack_of``, the listing) and errors. Byte identity with GNU as for macro sources is
checked in test_asm_gnu_as.py.
"""

from __future__ import annotations

import pytest

from asm_programs import PVOPS, macro_heavy_program
from vmkit.errors import AssemblyError
from vmkit.isa.asm import assemble


def code(src: str, **kw) -> bytes:
    return assemble(src, **kw).code


def error(src: str, **kw) -> AssemblyError:
    with pytest.raises(AssemblyError) as info:
        assemble(src, **kw)
    return info.value


# --------------------------------------------------------------------------------------------
# expansion

def test_expansion_is_byte_identical_to_the_body_written_inline():
    """Do macro invocations give exactly the bytes, symbols and constants of the inline
    instructions (including relaxed jumps and labels around them)?"""
    with_macros = PVOPS + """
start:  EVENTS_OFF
        mov eax, offset pd
        LOAD_CR3 eax
        PTE_WRITE [edx + 4], eax
again:  PTE_WRITE [edx+ecx*4+8], 0x1003
        EVENTS_ON
        jmp again
        .fill 200, 1, 0x90
        jne start
pd:     .long 0
"""
    inline = """
start:  cli
        mov eax, offset pd
        mov cr3, eax
        mov dword ptr [edx + 4], eax
again:  mov dword ptr [edx+ecx*4+8], 0x1003
        sti
        jmp again
        .fill 200, 1, 0x90
        jne start
pd:     .long 0
"""
    a, b = assemble(with_macros), assemble(inline)
    assert a.code == b.code
    assert a.code.startswith(bytes.fromhex("fa b8"))
    assert a.symbols == b.symbols and a.constants == b.constants


def test_a_program_without_macro_invocations_is_unchanged_by_definitions():
    """Do macro definitions that are never invoked produce nothing?"""
    assert code(PVOPS + "nop\n") == b"\x90"


def test_bracketed_arguments_keep_their_blanks_and_commas_separate():
    """Is '[edx + 4]' one argument, and do commas (or blanks between words) separate?"""
    src = PVOPS + """
PTE_WRITE [edx + 4], eax
PTE_WRITE [edx + ecx*4 + 8] , ebx
PTE_WRITE [esi], ((1 + 2) * 4)
.macro two a b
    mov \\a, \\b
.endm
two eax ebx
two eax,ecx
two "dword ptr [eax]", 5
"""
    assert code(src) == bytes.fromhex("89 42 04  89 5c 8a 08  c7 06 0c 00 00 00  89 d8  89 c8"
                                      "  c7 00 05 00 00 00")


def test_defaults_keywords_required_and_vararg_parameters():
    """Do defaults fill missing (or empty) arguments, keywords bind by name, and :vararg
    take the rest of the line?"""
    src = r"""
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
v 9, 8
v 1, 2, 3,4
"""
    assert code(src) == bytes([1, 2, 3, 1, 7, 3, 4, 7, 5, 1, 2, 3, 9, 8, 1, 2, 3, 4])


def test_macro_names_are_case_insensitive_and_parameter_names_are_not():
    """As in GNU as: LOAD_CR3, load_cr3 and Load_Cr3 are one macro; \\Reg is not \\reg."""
    assert code(PVOPS + "LOAD_CR3 eax\nload_cr3 ebx\nLoad_Cr3 ecx") == \
        bytes.fromhex("0f 22 d8 0f 22 db 0f 22 d9")
    e = error(".macro m Reg\n    mov eax, \\reg\n.endm")
    assert (e.line, e.column) == (2, 14) and "'\\reg' is not a parameter of macro m" in e.message


def test_a_macro_may_replace_an_instruction_and_be_purged():
    """Does a macro named like an instruction win over it (GNU as), until .purgem?"""
    src = ".macro nop\n.byte 0xcc\n.endm\nnop\nNOP\n.purgem nop\nnop"
    assert code(src) == bytes.fromhex("cc cc 90")


def test_nested_macros_expand_recursively():
    """Can a macro invoke another one, passing its own arguments on?"""
    src = PVOPS + """
.macro SWITCH_MM reg
    EVENTS_OFF
    LOAD_CR3 \\reg
    EVENTS_ON
.endm
SWITCH_MM ecx
"""
    assert code(src) == bytes.fromhex("fa 0f 22 d9 fb")


def test_counter_and_concatenation():
    """Is \\@ the number of expansions before this one (GNU as), and \\() a separator?"""
    src = r"""
.macro c
    .byte \@
.endm
.macro d name
    c
\name\()_\@: .byte \@
    c
.endm
c
d foo
c
"""
    prog = assemble(src, base=0)
    assert prog.code == bytes([0, 2, 1, 3, 4])
    assert prog.symbols == {"foo_1": 2}


def test_local_labels_in_a_macro_used_twice():
    """Do numeric local labels in a body work in every expansion (1b, 1f)?"""
    src = r"""
.macro DELAY n
    mov ecx, \n
1:  dec ecx
    jnz 1b
    jmp 1f
    nop
1:
.endm
DELAY 3
DELAY 5
"""
    one = bytes.fromhex("49 75 fd eb 01 90")
    assert code(src) == bytes.fromhex("b9 03 00 00 00") + one + bytes.fromhex("b9 05 00 00 00") \
        + one


def test_exitm_ends_the_expansion():
    """Does .exitm stop the expansion where it stands?"""
    assert code(".macro m\n.byte 1\n.exitm\n.byte 2\n.endm\nm\nm") == b"\x01\x01"


def test_rept_inside_a_macro_and_strings_with_parameters():
    """Are parameters substituted in strings and in .rept blocks of a body? (As in GNU as,
    even a string escape: with a parameter n, "\\n" is the argument, not a newline.)"""
    src = r"""
.macro s text, count
.rept \count
    .ascii "<\text>\n"
.endr
.endm
s hi, 2
.macro t n
    .ascii "\n"
.endm
t 2
"""
    assert code(src) == b"<hi>\n<hi>\n2"


def test_macros_from_an_included_file():
    """Can the kernel take its macros from an included pvops.s (as the pvops kernel does)?"""
    prog = assemble('.include "pvops.s"\nstart: LOAD_CR3 eax\n', files={"pvops.s": PVOPS},
                    filename="kernel.s")
    assert prog.code == bytes.fromhex("0f 22 d8") and prog.symbols == {"start": 0x1000}


# --------------------------------------------------------------------------------------------
# source mapping

def test_line_of_points_into_the_macro_body_and_call_site_of_at_the_invocation():
    """Does line_of name the body line (file and line of pvops.s) and call_site_of the line
    of kernel.s that invoked the macro? Do plain lines keep None / []?"""
    kernel = """.include "pvops.s"
start:  nop
        LOAD_CR3 eax
        PTE_WRITE [edx], ebx
"""
    prog = assemble(kernel, files={"pvops.s": PVOPS}, filename="kernel.s")
    assert prog.code == bytes.fromhex("90 0f 22 d8 89 1a")
    assert prog.line_of(0x1000) == ("kernel.s", 2)
    assert prog.call_site_of(0x1000) is None and prog.macro_stack_of(0x1000) == []
    for addr in (0x1001, 0x1003):
        assert prog.line_of(addr) == ("pvops.s", 2)
        assert prog.call_site_of(addr) == ("kernel.s", 3)
        assert prog.macro_stack_of(addr) == [("LOAD_CR3", "kernel.s", 3)]
    assert prog.line_of(0x1004) == ("pvops.s", 5)
    assert prog.call_site_of(0x1005) == ("kernel.s", 4)
    assert prog.call_site_of(0x1006) is None and prog.line_of(0x1006) is None
    # Program.lines keeps its shape; the text of a body line is the line as written
    entry = next(x for x in prog.lines if x[0] == 0x1001)
    assert entry == (0x1001, 3, "pvops.s", 2, "    mov cr3, \\reg")


def test_nested_expansions_have_a_stack_of_call_sites():
    """Does macro_stack_of list every invocation, outermost first, and call_site_of the
    outermost one (the line of ordinary source)?"""
    src = PVOPS + ".macro SWITCH_MM reg\n    LOAD_CR3 \\reg\n.endm\nnop\nSWITCH_MM ecx\n"
    prog = assemble(src, filename="k.s")
    assert prog.line_of(0x1001) == ("k.s", 2)
    assert prog.macro_stack_of(0x1001) == [("SWITCH_MM", "k.s", 17), ("LOAD_CR3", "k.s", 14)]
    assert prog.call_site_of(0x1001) == ("k.s", 17)


def test_a_labelled_invocation_puts_its_label_at_the_expansion():
    """Is a label before an invocation at the first byte of the expansion (symbols, lines)?"""
    prog = assemble(PVOPS + "nop\nx: LOAD_CR3 eax\nret", filename="k.s")
    assert prog.symbols["x"] == 0x1001
    assert (0x1001, 0, "k.s", 14, "x: LOAD_CR3 eax") in prog.lines


def test_listing_shows_definitions_and_marks_expanded_lines():
    """Does the listing show the definition once and each expanded line, marked '>', with its
    body line number, address and bytes?"""
    prog = assemble(PVOPS + "start: LOAD_CR3 eax\nLOAD_CR3 ebx\n", filename="k.s")
    text = prog.listing()
    assert "    2                                        mov cr3, \\reg" in text
    assert "   13 00001000                           start: LOAD_CR3 eax" in text
    assert "    2 00001000  0f 22 d8                 >    mov cr3, eax" in text
    assert "    2 00001003  0f 22 db                 >    mov cr3, ebx" in text


# --------------------------------------------------------------------------------------------
# errors

MACRO_ERRORS = [
    # source, line, column, words in the message
    (".macro m\nnop", 1, 1, [".macro m without a matching .endm"]),
    ("nop\n  .endm", 2, 3, [".endm without .macro"]),
    (".exitm", 1, 1, [".exitm outside a macro"]),
    (".macro", 1, 7, ["expected a macro name"]),
    (".macro .byte\n.endm", 1, 8, ["'.byte' is a directive"]),
    (".macro m\n.endm\n.macro M\n.endm", 3, 8, ["macro 'M' is already defined", "<input>:1",
                                                "as m"]),
    (".macro m a, a\n.endm", 1, 13, ["duplicate parameter 'a'"]),
    (".macro m (a)\n.endm", 1, 10, ["bad macro parameter '(a)'"]),
    (".macro m a:opt\n.endm", 1, 10, ["unknown parameter qualifier ':opt'"]),
    (".macro m a:vararg, b\n.endm", 1, 20, [":vararg must be the last"]),
    (".macro m a\n    mov eax, \\b\n.endm", 2, 14, ["'\\b' is not a parameter of macro m",
                                                  "\\a"]),
    (".macro m a:req\n.byte \\a\n.endm\nm", 4, 2, ["needs a value for its parameter 'a'"]),
    (".macro m a:req\n.byte \\a\n.endm\nm a=", 4, 5, ["needs a value"]),
    (".macro m a\n.byte \\a\n.endm\nm 1, 2", 4, 6, ["too many arguments for macro m",
                                                     "it takes 1: a"]),
    (".macro m a, b\n.byte \\a\n.endm\nm eax ebx ecx", 4, 11, ["too many arguments",
                                                                "needs quotes"]),
    (".macro m a\n.byte \\a\n.endm\nm dword ptr [eax]", 4, 12, ["ambiguous blank",
                                                                 "quotes"]),
    (".macro m a\n.byte \\a\n.endm\nm c=1", 4, 3, ["no parameter named 'c'"]),
    (".macro m a, b\n.byte \\a\n.endm\nm b=1, 2", 4, 8, ["cannot follow keyword"]),
    (".macro m a\n.byte \\a\n.endm\nm 1 - 1", 4, 4, ["ambiguous blank"]),
    (".macro m a, b\n.byte \\a\n.endm\nm [eax] ebx", 4, 8, ["ambiguous blank"]),
    (".macro m\n    m\n.endm\nm", 2, 5, ["macros nested too deeply", "100",
                                      "called at <input>:4"]),
    (".purgem nothing", 1, 9, ["no macro named 'nothing'"]),
]


@pytest.mark.parametrize("src,line,col,words", MACRO_ERRORS)
def test_macro_mistakes_raise_assembly_error_with_position(src, line, col, words):
    """Is each macro mistake reported at its line and column, saying what was expected?"""
    e = error(src)
    assert (e.line, e.column) == (line, col), e
    for w in words:
        assert w in e.message, e
    assert e.text == src.splitlines()[line - 1]


def test_an_error_in_an_expansion_names_the_body_line_and_the_call_site():
    """Does an error in an expanded line point into the macro (file, line, column of the
    expanded text) and say which invocation it came from?"""
    files = {"pvops.s": PVOPS}
    e = error('.include "pvops.s"\nnop\n\n  LOAD_CR3 bl\n', files=files, filename="kernel.s")
    assert (e.file, e.line, e.column) == ("pvops.s", 2, 9)
    assert "invalid combination of operands for 'mov'" in e.message
    assert e.text == "    mov cr3, bl"
    assert "in expansion of macro LOAD_CR3 called at kernel.s:4" in e.message
    assert str(e).startswith("pvops.s:2:9: ")


def test_an_error_found_at_layout_also_names_the_call_site():
    """Is a jump out of range or an undefined symbol in an expansion (found only after
    layout) reported with the invocation too, innermost first when nested?"""
    src = ".macro far\n    loop there\n.endm\n.macro outer\n    far\n.endm\nouter\n" \
          ".fill 200, 1, 0\nthere: ret"
    e = error(src, filename="k.s")
    assert (e.line, e.column) == (2, 10) and "bytes away" in e.message
    assert e.message.endswith("(in expansion of macro far called at k.s:5, in expansion of "
                              "macro outer called at k.s:7)")
    e = error(".macro j\n    jmp nowhere\n.endm\nj", filename="k.s")
    assert "undefined symbol 'nowhere'" in e.message and "called at k.s:4" in e.message


def test_a_plain_label_in_a_macro_used_twice_is_a_duplicate():
    """Is a non-local label in a body used twice a duplicate (use 1: or name\\@:), reported
    with the second call site?"""
    e = error(".macro m\nhere: nop\n.endm\nm\nm")
    assert (e.line, e.column) == (2, 1) and "duplicate label 'here'" in e.message
    assert "called at <input>:5" in e.message
    assert code(".macro m\nhere\\@: nop\n.endm\nm\nm") == b"\x90\x90"


def test_unknown_backslash_names_in_comments_and_string_escapes_are_fine():
    """Are comments left alone and string escapes that are no parameter kept?"""
    assert code(".macro m a\n.ascii \"\\a\\n\\t\" # \\nothing\n.endm\nm x") == b"x\n\t"


# --------------------------------------------------------------------------------------------
# speed

def test_a_kernel_with_many_invocations_assembles():
    """Does a program with a thousand macro invocations assemble, every label kept? (Its time:
    benchmarks/bench_tools.py.)"""
    prog = assemble(macro_heavy_program())
    assert len(prog.symbols) == 250
    assert prog.symbols["f0"] < prog.symbols["f1"] < prog.symbols["f249"]
