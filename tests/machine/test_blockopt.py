"""The block translator's tree passes (vmkit.machine.blockopt) against the ast module's own."""

from __future__ import annotations

import ast

from vmkit.isa import semantics as sem
from vmkit.isa.asm import assemble
from vmkit.isa.decode import DECODER
from vmkit.machine.blockopt import walk

_LEAVES = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)


def _sources():
    """The Python source of a spread of instructions (flags, memory, shifts, strings, jumps)."""
    prog = assemble("""
        add eax, ebx
        adc ecx, dword ptr [esi + 8]
        imul edx, eax, 7
        shr edx, 16
        rol byte ptr [edi], cl
        rep movsd dword ptr es:[edi], dword ptr [esi]
        cmp eax, 0x1234
        jne 0x1000
        setg al
        pushad
        div ecx
    """, base=0x1000)
    a, out = 0x1000, []
    while a < prog.end:
        insn = DECODER.decode(a, prog.code[a - 0x1000:a - 0x1000 + 15])
        out.append(sem.source_of(insn))
        a = insn.next
    return out


def test_walk_visits_what_ast_walk_does_but_contexts_and_operators():
    """Does blockopt.walk give ast.walk's nodes, in its order, leaving out only the contexts
    and operators (the leaves no pass asks about)?"""
    for src in _sources() + ["x = (a if b else -c) < d.e[f] and not g(*h, k=1)"]:
        tree = ast.parse(src)
        expected = [n for n in ast.walk(tree) if not isinstance(n, _LEAVES)]
        got = walk(tree)
        assert len(got) == len(expected)
        assert all(g is e for g, e in zip(got, expected)), src
