"""Lines the assembler encoded before in this process are reused only where they mean the same
(vmkit.isa.asm remembers each instruction line with the lookups it made)."""

from __future__ import annotations

import pytest

from vmkit.errors import AssemblyError
from vmkit.isa.asm import assemble


def test_a_constant_with_another_value_gives_another_encoding():
    """Is ``add eax, N`` encoded afresh when N changes from a byte to a dword?"""
    small = assemble(".equ N, 5\nadd eax, N\n")
    large = assemble(".equ N, 300\nadd eax, N\n")
    again = assemble(".equ N, 5\nadd eax, N\n")
    assert small.code == bytes.fromhex("83c005")
    assert large.code == bytes.fromhex("052c010000")
    assert again.code == small.code


def test_a_name_that_is_a_label_in_one_program_and_a_constant_in_another():
    """Does the same line read a label's address in one program and a constant in another?"""
    as_label = assemble("mov eax, offset N\nN: nop\n", base=0x1000)
    as_const = assemble(".equ N, 7\nmov eax, offset N\n", base=0x1000)
    assert as_label.code == bytes.fromhex("b805100000") + b"\x90"
    assert as_const.code == bytes.fromhex("b807000000")


def test_local_labels_resolve_where_the_line_stands():
    """Does ``jmp 1b`` jump to the nearest ``1:`` before it in each program?"""
    near = assemble("1: nop\njmp 1b\n")
    far = assemble("1: nop\n1: nop\nnop\njmp 1b\n")
    assert near.code == bytes.fromhex("90ebfd")
    assert far.code == bytes.fromhex("909090ebfc")


def test_a_label_difference_known_early_or_only_after_layout():
    """Is ``mov eax, end - start`` a short-form immediate only where the difference is known?"""
    known = assemble("start: nop\nend:\npush end - start\n")
    late = assemble("start: jmp x\nx:\nend:\npush end - start\n")
    assert known.code == bytes.fromhex("90") + bytes.fromhex("6a01")
    assert late.code[-5:] == bytes.fromhex("6802000000")


def test_an_error_is_reported_again_with_its_place():
    """Is a line that failed once refused again, with the file and line of the new program?"""
    assemble(".equ N, 5\nmov eax, N\n")
    with pytest.raises(AssemblyError) as e:
        assemble("nop\nmov eax, N\n", filename="b.s")
    assert (e.value.file, e.value.line) == ("b.s", 2)
    assert "not a register or a constant defined above" in str(e.value)
