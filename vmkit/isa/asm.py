"""The vmkit assembler: Intel-syntax x86-32 source to a loadable :class:`Program`.

::

    from vmkit.isa.asm import assemble
    prog = assemble(source, base=0x1000)
    prog.code            # bytes from prog.base: .text, then .data, then .bss
    prog.symbols         # label -> address
    prog.line_of(addr)   # (file, line) of the instruction or data at addr
    prog.call_site_of(addr)   # (file, line) of the macro invocation that made it, or None
    print(prog.listing())

Instructions
============
One instruction per line, in **Intel syntax exactly as capstone prints it** (so a disassembly
can be pasted back), which is also what GNU as accepts after ``.intel_syntax noprefix``::

    mov eax, dword ptr [ebx + ecx*4 + 8]
    rep movsb byte ptr es:[edi], byte ptr [esi]
    lcall 8, 0x1000          ljmp 8:0x1000          jmp 0x100c

The subset, with every 8/16/32-bit operand form x86 has (the table is ``FORMS`` in
:mod:`vmkit.isa.asm_encode`): ``mov movzx movsx lea xchg xadd cmpxchg bswap push pop pushad
popad pushfd popfd leave enter add adc sub sbb cmp inc dec neg and or xor not test shl sal shr
sar rol ror rcl rcr shld shrd mul imul div idiv bt bts btr btc bsf bsr cbw cwde cwd cdq
setcc cmovcc jmp jcc call ret retf loop loope loopne jecxz int int3 into iretd hlt nop pause
cli sti cld std clc stc cmc sahf lahf in out movs stos lods cmps scas`` (``b``/``w``/``d``),
``cpuid rdtsc rdmsr wrmsr ud2 invd wbinvd lgdt lidt sgdt sidt lldt sldt ltr str smsw lmsw lar
lsl verr verw invlpg clts``, ``mov`` to and from segment and control registers (``cr0 cr2 cr3
cr4``), ``push``/``pop`` of segment registers, far ``jmp``/``call`` (immediate and through
memory).

The usual GNU spellings work too: ``movsb`` without operands, ``pushf``/``popf`` (the 32-bit
``pushfd``/``popfd``), ``pushad``/``pushal``/``pusha``, ``iret`` (``iretd``), ``lret``
(``retf``), ``ljmp 0x8, label``, ``jmp 0x8:label`` and ``jmp far ptr 0x8:label``, ``jmp fword
ptr [eax]`` (capstone: ``jmp ptr [eax]``), ``shl eax`` (by one), ``int 3`` (assembled as
``int3``, as GNU as does), every condition-code alias (``jz``/``je``, ``jnae``/``jb``/``jc``,
``setnz``, ``cmovge``, ...), ``jmp short label``, and the prefixes ``rep``, ``repe``/``repz``,
``repne``/``repnz`` (string instructions only), ``lock`` (read-modify-write instructions on
memory only) and ``notrack`` (indirect ``jmp``/``call``; capstone prints it for a ``ds:``
override there).

Where capstone and GNU as disagree, the kit follows GNU as: capstone prints the 16-bit
``66 9C``, ``66 9D``, ``66 CF`` as ``pushf``, ``popf``, ``iret``, which here (as in GNU as) are
the 32-bit forms; write ``pushfw``, ``popfw``, ``iretw`` (and ``pushaw``, ``popaw``) for the
16-bit ones. Capstone's text is also lossy for ``66 90`` (``xchg ax, ax``, printed ``nop``) and
for an index scaled by one with no base (``[ecx*1]``, printed ``[ecx]``).

Operands:

* registers: ``eax``..``edi``, ``ax``..``di``, ``al``..``bh``, segment registers ``cs ds es fs gs
  ss``, control registers ``cr0 cr2 cr3 cr4``;
* memory: ``[base + index*scale + disp]`` in any order (``[8 + ecx*4 + ebx]``), ``label[ebx]``,
  ``[label + 4]``, ``[0x1000]``, with an optional segment (``es:[edi]``, ``fs:[0x10]``) and
  size (``byte ptr``, ``word ptr``, ``dword ptr``; ``fword ptr`` or no size for
  ``lgdt``/``lidt``/``sgdt``/``sidt`` and far indirect ``jmp``/``call``). The size may be left
  out when a register operand fixes it; ``inc [eax]`` is an error (which size?), except that
  ``push``/``pop``/``jmp``/``call`` default to dword as in GNU as. A segment that is the
  default one (``ds:``, or ``ss:`` with ``esp``/``ebp``) is dropped, as GNU as does;
* immediates: numbers and constant expressions (below);
* labels: a bare label is a branch target for ``jmp``/``call``/``jcc``/``loop``. Elsewhere GNU
  Intel syntax reads *memory* at a bare label (``mov eax, msg`` loads from ``msg``), which
  surprises everyone, so the kit refuses it: write ``offset msg`` for the address or
  ``dword ptr [msg]`` for the contents (instructions that only take memory, like ``lea eax,
  msg``, accept the bare label). A constant defined with ``.equ`` *before* the line is a plain
  number (``mov eax, SYS_WRITE``); used before its definition it is refused for the same
  reason (``offset NAME`` always means the value as an immediate). For the same reason a size
  before a plain number (``push dword ptr 5``: an immediate for GNU as) is refused, while
  ``dword ptr label`` is memory.

Encodings are byte-for-byte those of GNU as 2.40 (``as --32``), checked by
``tests/isa/test_asm_gnu_as.py``: the same opcode choices (``89 /r`` for ``mov reg, reg``,
sign-extended ``83 /0 ib`` when the immediate fits a byte, accumulator short forms, ``xchg eax,
r`` as ``90+r``, ``D1`` for shifts by 1, ``6A`` for small pushes, ``[esp]`` with a SIB byte,
``[ebp]`` with a zero disp8, ``[ecx*4]`` with a disp32, ...). As in GNU as, an immediate or
displacement takes its short form only when its value is known where it is written: numbers,
constants defined above, and differences of labels with no jump or alignment between them; a
label or a forward reference gets the 32-bit form.

**Jumps are relaxed** as GNU as does it: ``jmp``/``jcc`` to a label start short (rel8) and grow
to rel32 until no jump changes; ``jmp short label`` stays short (an error if too far);
``call`` is always rel32; ``loop``/``loope``/``loopne``/``jecxz`` have only rel8 and a target
out of reach is an error. A jump to a label in another section is rel32 from the start (GNU as).
*Kit dialect:* a jump to a number (``jmp 0x100c``, as capstone prints it) or to a constant is
relaxed like a label jump; GNU as, which emits relocatable objects, always uses rel32 there.

Comments, labels, numbers and expressions
=========================================
``;``, ``#`` and ``//`` start a comment. Labels are ``name:`` (several on a line, and an
instruction after them is fine); ``.L`` names work as in GNU as; numeric local labels ``1:`` are
referred to as ``1b`` (the nearest before) and ``1f`` (the nearest after). ``.`` is the address
of the current instruction or data item.

Numbers: ``42``, ``0x2A``, ``0b101010``, ``052`` (a leading zero means octal, as in GNU as),
``0o52`` (kit only; GNU as does not read it) and characters ``'A'``, ``'\\n'`` (C escapes);
there is no ``2Ah`` suffix form (GNU as has none either). Expressions use ``+ - * / % << >> & | ^
~`` and parentheses, with symbols and label arithmetic (``end - start``). Division truncates
toward zero. The precedence is GNU as's (``* / % << >>`` bind tighter than ``& | ^``, which bind
tighter than ``+ -``); where C would read an expression differently (``1 << 2 + 1``, ``a | b &
c``, ``x + y & 3``) the kit asks for parentheses instead of guessing.

Directives
==========
``.equ NAME, expr``, ``.set NAME, expr``, ``NAME = expr``
    constants (``.set`` and ``=`` may redefine); in ``Program.constants``, not ``symbols``.
``.byte`` ``.word``/``.short``/``.hword``/``.value`` ``.long``/``.int``/``.dword`` ``.quad``
    comma lists of expressions (1, 2, 4, 8 bytes; labels allowed); a value that does not fit is
    an error (GNU as only warns).
``.ascii``, ``.asciz``/``.string``
    comma lists of strings with C escapes; ``.asciz`` adds a zero byte after each.
``.space N[, fill]``, ``.skip N[, fill]``, ``.zero N``, ``.fill count[, size[, value]]``
    reserved bytes.
``.align N[, fill[, max]]``, ``.balign`` (same), ``.p2align P[, fill[, max]]``
    N is a byte count, a power of two, as GNU as has it on x86 ELF. *Kit dialect:* padding in
    ``.text`` is ``0x90`` (``nop``) bytes; GNU as pads code with multi-byte no-op
    instructions (``lea esi, [esi + eiz]``...), which would clutter traces. Elsewhere padding is
    zero; an explicit fill byte is always honoured.
``.org expr[, fill]``
    moves forward to an offset from the start of the current section (a number, as in GNU as)
    or to an address (an expression with labels of the current section or ``.``: ``.org start
    + 0x100``). Moving backwards is an error. Fill is zero unless given.
``.text``, ``.data``, ``.bss``, ``.section .text|.data|.rodata|.bss``
    *Kit dialect (layout):* every ``.text`` fragment goes first, at ``base``; then ``.data``
    (``.rodata`` joins it) at the next 16-byte boundary; then ``.bss`` at the next 16-byte
    boundary, zero-filled and included in ``Program.code``. As a linker would, a section with a
    larger ``.align`` inside starts on that boundary instead, so alignment within ``.data`` and
    ``.bss`` means the same as in GNU as (relative to the section) and as an address.
    (``.align`` in ``.text`` aligns the address; it is the same thing when ``base`` is aligned.)
    ``.bss`` takes only labels,
    ``.space``/``.skip``/``.zero`` with a zero fill, ``.align`` and ``.org``.
``.global``/``.globl NAME, ...``
    recorded in ``Program.globals``. ``.extern`` is accepted and ignored.
``.include "file.s"``
    looked up in the ``files`` mapping given to :func:`assemble` (also relative to the including
    file's directory), then in ``include_path``, then on disk next to the including file.
    Errors and ``line_of`` name the included file. Recursive inclusion is an error.
``.rept N`` ... ``.endr``
    repeats the lines between.
``.macro NAME [param[, param ...]]`` ... ``.endm``, ``.exitm``, ``.purgem NAME``
    macros, as in GNU as (see Macros below).
``.end``
    ignores the rest of the input.
``.intel_syntax noprefix``, ``.code32``, ``.type``, ``.size``, ``.file``, ``.ident``
    accepted and ignored, so a file can be given to GNU as too (``as --32``).

Macros
======
GNU as macros, with GNU as's expansion (``tests/isa/test_asm_gnu_as.py`` holds them to its
bytes)::

    .macro PTE_WRITE ptr, val=eax       # parameters: commas or blanks between them
        mov dword ptr \\ptr, \\val
    .endm
    x:  PTE_WRITE [edx + 4], ecx         # as a statement, after labels if any
        PTE_WRITE [edx]                  # val defaults to eax

* Parameters: ``name``, ``name=default``, ``name:req`` (an argument is required) and a last
  ``name:vararg`` (the rest of the line, commas included). In the body ``\\name`` is the
  argument (also inside strings: with a parameter ``n``, ``"\\n"`` is the argument, as in GNU
  as), ``\\@`` the number of macro expansions before this one, and ``\\()`` separates a
  parameter from text after it (``\\name\\()_end:``). A ``\\word`` outside strings and comments
  that is no parameter is an error at the definition (GNU as leaves it, and the line fails).
* Invocation: ``NAME args``. Arguments are separated by commas, or by blanks between two
  words (``m eax ebx``); brackets and parentheses keep an argument together (``[edx + 4]``,
  ``(1 + 2)``), quotes too and are removed (``"dword ptr [eax]"`` is one argument, without
  quotes). A missing or empty argument takes the default, or is empty; ``name=value``
  gives one by name. *Kit dialect:* any other blank between arguments is an error, because
  GNU as reads it erratically (``m 1 - 1`` is three arguments, ``m 1 + 1`` one, ``m [edx]
  ecx`` one: ``[edx]ecx``).
* Names are case-insensitive (``LOAD_CR3`` is ``load_cr3``), parameter names are not; a macro
  named like an instruction replaces it (GNU as) until ``.purgem``. Defining a name twice is
  an error.
* Macros may invoke macros (at most 100 levels deep, as in GNU as) and contain ``.rept``,
  numeric local labels (``1:``, ``jmp 1b``: fine in every expansion) and ``name\\@:`` labels;
  a plain label in a macro used twice is a duplicate. ``.exitm`` ends the expansion.
* Source mapping: ``Program.line_of`` gives the line *inside the macro* (file and line of the
  body, e.g. ``pvops.s:42``) that made an item; ``Program.call_site_of(addr)`` gives the
  invocation (the outermost one, in ordinary source, e.g. ``kernel.s:120``; None outside
  macros) and ``Program.macro_stack_of(addr)`` every level as ``(macro, file, line)``,
  outermost first. ``Program.lines`` carries the body line as written (with ``\\reg``); the
  listing shows the definition once and each expanded line, marked ``>``, with its body line
  number and bytes.
* Errors in an expanded line give the body's file and line, the expanded text (the column
  points into it) and the invocations: ``pvops.s:42:14: ... (in expansion of macro LOAD_CR3
  called at kernel.s:120)``.

Errors
======
Every mistake raises :class:`vmkit.errors.AssemblyError` with ``file``, ``line`` and ``column``
(1-based, pointing at the offending token), the source ``text`` and a message saying what was
found and what was expected; unknown mnemonics and symbols come with close matches.
"""

from __future__ import annotations

import bisect
import difflib
import os
from dataclasses import dataclass, field

from vmkit.errors import AssemblyError
from vmkit.isa import asm_macro
from vmkit.isa.asm_encode import (BRANCHES, LOCKABLE, MNEMONICS, REPE_OPS, STRING_OPS, TABLE,
                                  accepts, encode, select_form)
from vmkit.isa.asm_parse import (RESERVED, AsmImm, AsmMem, Bin, ExprParser, Far, LabelRef,
                                 LineError, Num, Sym, evaluate, linear, parse_operand,
                                 split_operands, symbols_in, tokenize)

__all__ = ["assemble", "Program"]

_SECTIONS = ("text", "data", "bss")
_PREFIXES = {"rep": 0xF3, "repe": 0xF3, "repz": 0xF3, "repne": 0xF2, "repnz": 0xF2, "lock": 0xF0,
             "notrack": 0x3E}
_DATA_WIDTH = {".byte": 1, ".word": 2, ".short": 2, ".hword": 2, ".value": 2, ".long": 4,
               ".int": 4, ".dword": 4, ".quad": 8}
_MAX_IMAGE = 256 << 20          # a guest image larger than this is surely a mistake
_IGNORED = {".intel_syntax", ".code32", ".type", ".size", ".file", ".ident", ".extern"}
_UNSUPPORTED = frozenset({".att_syntax", ".code16", ".code64"})   # refused with a reason


# --------------------------------------------------------------------------------------------
# the result

@dataclass
class Program:
    """An assembled program: ``code`` is the image loaded at ``base``."""
    code: bytes
    base: int
    symbols: dict[str, int]
    constants: dict[str, int]
    globals: set[str]
    lines: list[tuple[int, int, str, int, str]]   # (address, size, file, line, source text)
    sections: dict[str, tuple[int, int]] = field(default_factory=dict)   # name -> (start, size)
    _listing: list = field(default_factory=list, repr=False)   # (file, line, text, addr, end)
    _starts: list = field(default_factory=list, repr=False)
    _spans: list = field(default_factory=list, repr=False)
    #: start address of each item made by a macro expansion -> its invocations, outermost
    #: first, as ``(macro name, file, line)``
    _expansions: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        spans = [(a, s, f, ln) for a, s, f, ln, _ in self.lines if s > 0]
        spans.sort(key=lambda x: x[0])
        self._spans = spans
        self._starts = [a for a, *_ in spans]

    @property
    def end(self) -> int:
        """First address after the image."""
        return self.base + len(self.code)

    def line_of(self, addr: int) -> tuple[str, int] | None:
        """``(file, line)`` of the instruction or data item covering ``addr``, or None. For an
        item made by a macro expansion, the line of the macro body that made it (see
        :meth:`call_site_of` for the invocation)."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            a, s, f, ln = self._spans[i]
            if a <= addr < a + s:
                return f, ln
        return None

    def macro_stack_of(self, addr: int) -> list[tuple[str, str, int]]:
        """The macro invocations that made the item covering ``addr``, outermost first, as
        ``(macro name, file, line)`` of each invocation; ``[]`` when it does not come from a
        macro (or nothing covers ``addr``)."""
        if not self._expansions:
            return []
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            a, s, f, ln = self._spans[i]
            if a <= addr < a + s:
                return list(self._expansions.get(a, ()))
        return []

    def call_site_of(self, addr: int) -> tuple[str, int] | None:
        """``(file, line)`` of the macro invocation that made the item covering ``addr``: the
        outermost one, a line of ordinary source (the line in ``kernel.s`` that says
        ``LOAD_CR3 eax``, while :meth:`line_of` names the line in the macro's body); None when
        the item does not come from a macro. :meth:`macro_stack_of` has every level."""
        stack = self.macro_stack_of(addr)
        if stack:
            return stack[0][1], stack[0][2]
        return None

    def listing(self) -> str:
        """Address, bytes and source of every line, in source order (like ``as -al``)."""
        out = []
        last_file = None
        for file, line, text, addr, end in self._listing:
            data = self.code[addr - self.base:end - self.base] if addr is not None else b""
            if file != last_file:
                out.append(f"# {file}")
                last_file = file
            a = f"{addr:08x}" if addr is not None else " " * 8
            rows = [data[i:i + 8] for i in range(0, len(data), 8)] or [b""]
            shown = rows[:4]
            for k, row in enumerate(shown):
                hexs = " ".join(f"{b:02x}" for b in row)
                if k == 0:
                    out.append(f"{line:5d} {a}  {hexs:<24s} {text.rstrip()}".rstrip())
                else:
                    out.append(f"      {addr + 8 * k:08x}  {hexs}")
            if len(rows) > 4:
                out.append(f"      {'':8s}  ... ({len(data)} bytes)")
        return "\n".join(out) + "\n"

    def __len__(self) -> int:
        return len(self.code)


# --------------------------------------------------------------------------------------------
# internal records

class _Rec:
    """One source line and the items it produced. In a macro expansion ``site`` holds the
    invocations (outermost first, ``(macro, file, line)``), ``text`` the expanded line and
    ``src`` the body line as written."""
    __slots__ = ("file", "line", "text", "sec", "i0", "i1", "labels", "site", "src", "done")

    def __init__(self, file, line, text):
        self.file, self.line, self.text = file, line, text
        self.sec = None
        self.i0 = self.i1 = 0
        self.labels = False
        self.site = None
        self.src = text
        self.done = False          # i0/i1 already final (a labelled macro invocation)


class _Label:
    __slots__ = ("name", "sec", "index", "key", "off", "rec", "col")

    def __init__(self, name, sec, index, key, off, rec, col):
        self.name, self.sec, self.index, self.key, self.off = name, sec, index, key, off
        self.rec, self.col = rec, col


class _Chunk:
    """Fixed-size bytes: ``parts`` are bytes or fields ``(kind, expr, width, col)``
    (``("fill", byte, count, 0)`` for reserved space)."""
    __slots__ = ("size", "parts", "rec", "zero")

    def __init__(self, size, parts, rec, zero=False):
        self.size, self.parts, self.rec, self.zero = size, parts, rec, zero


class _Jump:
    """A relaxable jmp/jcc: short ``head`` + rel8, or ``long`` + rel32."""
    __slots__ = ("head", "long", "target", "col", "is_long", "rec", "sec", "index", "checked")

    def __init__(self, head, long, target, col, rec, sec, index):
        self.head, self.long, self.target, self.col = head, long, target, col
        self.is_long = False
        self.rec, self.sec, self.index = rec, sec, index
        self.checked = False

    @property
    def size(self):
        return len(self.long) + 4 if self.is_long else len(self.head) + 1


class _Align:
    __slots__ = ("n", "fill", "max", "rec")

    def __init__(self, n, fill, mx, rec):
        self.n, self.fill, self.max, self.rec = n, fill, mx, rec


class _Org:
    __slots__ = ("expr", "offset", "fill", "col", "rec")

    def __init__(self, expr, offset, fill, col, rec):
        self.expr, self.offset, self.fill, self.col, self.rec = expr, offset, fill, col, rec


class _Section:
    __slots__ = ("name", "items", "frag", "frag_off", "start", "addrs", "end", "align")

    def __init__(self, name):
        self.name = name
        self.align = 16            # the section starts at a multiple of this (not .text)
        self.items: list = []
        self.frag = 0
        self.frag_off = 0
        self.start = self.end = 0
        self.addrs: list[int] = [0]


class _Stop(Exception):
    """``.end``"""


class _ExitMacro(Exception):
    """``.exitm``"""


class _TooManyErrors(Exception):
    """More errors than ``assemble(max_errors=)`` allows: stop reading."""


#: instructions encoded in this process: line text -> [(lookups, encoding)] (see
#: _Assembler.instruction). Each entry holds only values and expression nodes that nothing
#: changes after parsing, so assemblies may share them.
_INSN_MEMO: dict[str, list] = {}
#: each line's tokens (nothing changes a token list once made)
_TOKENS: dict[str, list] = {}
_INSN_MEMO_MAX = 50_000         # distinct lines; the kit's guests have about 3,000
_INSN_VARIANTS = 16             # encodings kept per line (a jump to "1b" in many places)
_DEP_CONST, _DEP_LOCAL, _DEP_TERM = "const", "local", "term"


def _err(msg: str, rec: _Rec, col: int) -> AssemblyError:
    if rec.site:
        msg += _site_note(rec.site)
    return AssemblyError(msg, line=rec.line, column=col, text=rec.text, file=rec.file)


def _site_note(site) -> str:
    """The note " (in expansion of macro M called at kernel.s:120)", innermost level first."""
    levels = [f"in expansion of macro {name} called at {file}:{line}"
              for name, file, line in reversed(site)]
    if len(levels) > 4:
        levels = levels[:2] + [f"... {len(levels) - 3} more levels"] + levels[-1:]
    return " (" + ", ".join(levels) + ")"


def _range_for(width: int, kind: str) -> tuple[int, int]:
    bits = 8 * width
    if kind == "uimm":
        return 0, (1 << bits) - 1
    return -(1 << (bits - 1)), (1 << bits) - 1


# --------------------------------------------------------------------------------------------
# the assembler

class _Assembler:
    def __init__(self, base, files, include_path, max_errors=1):
        self.base = base
        # max_errors 1: the first error is raised where it is found. More: each error is
        # recorded (see report()) and the assembler goes on with the next line, or with the
        # next item when laying out and emitting.
        self.max_errors = max_errors
        self.errors: list[AssemblyError] = []
        self.truncated = False
        self.files = files or {}
        self.include_path = list(include_path or [])
        self.sections = {n: _Section(n) for n in _SECTIONS}
        self.cur = self.sections["text"]
        self.labels: dict[str, _Label] = {}
        self.consts: dict[str, int] = {}
        self.deferred: dict[str, tuple[object, _Rec]] = {}
        self.globals: set[str] = set()
        self.local_counts: dict[int, int] = {}
        self.records: list[_Rec] = []
        self.jumps: list[_Jump] = []
        self.rec: _Rec | None = None
        self.stmt_off = 0          # bytes already produced by the current statement (for '.')
        self._evaluating: set[str] = set()
        self.macros: dict[str, asm_macro.Macro] = {}     # by lower-case name (GNU as)
        self.site = None           # the macro invocations being expanded (see _Rec.site)
        self.body_src: dict = {}   # (file, line) -> body text as written, for expansions
        self.macro_count = 0       # GNU as's \@
        self.deps: list | None = None   # lookups made while encoding an instruction

    # ---- input ------------------------------------------------------------------------------

    def run_source(self, text: str, filename: str, stack: tuple):
        it = iter(enumerate(text.splitlines(), 1))
        for ln, line in it:
            self.line(filename, ln, line, it, stack)

    def line(self, file, ln, text, it, stack):
        rec = _Rec(file, ln, text)
        if self.site is not None:
            rec.site = self.site
            rec.src = self.body_src.get((file, ln), text)
        self.records.append(rec)
        self.rec = rec
        rec.sec = self.cur
        rec.i0 = rec.i1 = len(self.cur.items)
        try:
            toks = _TOKENS.get(text)
            if toks is None:
                toks = _tokens(text)
            if toks:
                self.statement(toks, rec, it, stack)
        except LineError as e:
            self.report(_err(e.message, rec, e.column))
        except AssemblyError as e:      # from a macro body; nested lines report their own
            self.report(e)
        if rec.sec is self.cur and not rec.done:
            rec.i1 = len(self.cur.items)

    def report(self, err: AssemblyError) -> None:
        """Raise ``err`` (``max_errors`` 1), or record it and go on; raises _TooManyErrors
        past ``max_errors``."""
        if self.max_errors <= 1:
            raise err
        key = (err.file, err.line, err.column, err.message)
        if any((e.file, e.line, e.column, e.message) == key for e in self.errors):
            return                      # the same error met again (relaxation passes)
        if len(self.errors) >= self.max_errors:
            self.truncated = True
            raise _TooManyErrors()
        self.errors.append(err)

    # ---- symbols ----------------------------------------------------------------------------

    def here(self, col):
        """A node for '.', the address of the current statement plus what it already emitted."""
        sec = self.cur
        lab = _Label(None, sec, len(sec.items), (sec.name, sec.frag), sec.frag_off, self.rec, col)
        node = LabelRef(lab, col)
        if self.stmt_off:
            return Bin("+", node, Num(self.stmt_off, col), col)
        return node

    def resolve(self, name, col):
        if name == ".":
            if self.deps is not None:
                self.deps.append(None)          # the current address: not remembered
            return self.here(col)
        v = self.consts.get(name)
        if v is not None and name not in self.deferred:
            if self.deps is not None:
                self.deps.append((_DEP_CONST, name, v))
            return Num(v, col)
        if self.deps is not None:
            self.deps.append((_DEP_CONST, name, None))
        return Sym(name, col)

    def resolve_local(self, n, d, col):
        k = self.local_counts.get(n, 0)
        if self.deps is not None:
            self.deps.append((_DEP_LOCAL, n, k))
        if d == "b":
            if k == 0:
                raise LineError(f"'{n}b' refers to an earlier '{n}:' but there is none", col)
            return Sym(f"{n}\x02{k}", col, f"{n}b")
        return Sym(f"{n}\x02{k + 1}", col, f"{n}f")

    def define_label(self, name, col, rec):
        if name.lower() in RESERVED:
            raise LineError(f"{name!r} is a reserved word and cannot be a label", col)
        old = self.labels.get(name)
        if old is not None:
            raise LineError(f"duplicate label {name!r} (first defined at {old.rec.file}:"
                            f"{old.rec.line})", col)
        if name in self.consts or name in self.deferred:
            raise LineError(f"{name!r} is already a constant (.equ)", col)
        sec = self.cur
        self.labels[name] = _Label(name, sec, len(sec.items), (sec.name, sec.frag), sec.frag_off,
                                   rec, col)
        rec.labels = True

    def term(self, node):
        """Linear form of a symbol before layout (see :func:`linear`)."""
        if self.deps is not None and type(node) is Sym:
            deps, self.deps = self.deps, None     # what the nested lookups give is in the result
            try:
                lin = self.term(node)
            finally:
                self.deps = deps
            deps.append((_DEP_TERM, node, lin))
            return lin
        if type(node) is LabelRef:
            lab = node.label
            return lab.off, {lab.key: 1}
        name = node.name
        lab = self.labels.get(name)
        if lab is not None:
            return lab.off, {lab.key: 1}
        if name in self.deferred:
            if name in self._evaluating:
                return None
            self._evaluating.add(name)
            try:
                return linear(self.deferred[name][0], self.term)
            finally:
                self._evaluating.discard(name)
        if name in self.consts:
            return self.consts[name], {}
        return 0, {("?", name): 1}

    def early(self, expr) -> int | None:
        """The value of ``expr`` if it is known now (GNU as's test for the short forms)."""
        lin = linear(expr, self.term)
        if lin is not None and not lin[1]:
            return lin[0]
        return None

    # ---- statements -------------------------------------------------------------------------

    def statement(self, toks, rec, it, stack):
        i = 0
        n = len(toks)
        while i + 1 < n and toks[i + 1].kind == "op" and toks[i + 1].value == ":":
            t = toks[i]
            if t.kind == "id" and t.value.lower() not in RESERVED:
                self.define_label(t.value, t.col, rec)
            elif t.kind == "id":
                raise LineError(f"{t.value!r} is a reserved word (register or keyword) and "
                                f"cannot be a label", t.col)
            elif t.kind == "num" and _text_is_decimal(rec.text, t):
                k = self.local_counts.get(t.value, 0) + 1
                self.local_counts[t.value] = k
                self.define_label(f"{t.value}\x02{k}", t.col, rec)
            else:
                break
            i += 2
        if i >= n:
            return
        t = toks[i]
        self.stmt_off = 0
        if t.kind == "id" and i + 1 < n and toks[i + 1].kind == "op" and toks[i + 1].value == "=":
            self.assign(t, toks, i + 2, rec, "=")
            return
        if t.kind != "id":
            raise LineError(f"expected a label, instruction or directive, found {str(t.value)!r}",
                            t.col)
        if self.macros:
            m = self.macros.get(t.value.lower())
            if m is not None and t.value.lower() not in _DIRECTIVE_SET:
                self.invoke(m, toks, i, rec, stack)
                return
        if t.value.startswith(".") and t.value != ".":
            self.directive(t.value.lower(), t, toks, i + 1, rec, it, stack)
        else:
            self.instruction(toks, i, rec)

    def assign(self, name_tok, toks, pos, rec, how):
        name = name_tok.value
        if name.lower() in RESERVED or name == ".":
            raise LineError(f"{name!r} cannot be a constant name", name_tok.col)
        if name in self.labels:
            raise LineError(f"{name!r} is already a label", name_tok.col)
        if how == ".equiv" and (name in self.consts or name in self.deferred):
            raise LineError(f"{name!r} is already defined", name_tok.col)
        expr = self.expr(toks, pos, len(toks))
        v = self.early(expr)
        if v is not None:
            self.consts[name] = v
            self.deferred.pop(name, None)
        else:
            self.deferred[name] = (expr, rec)
            self.consts.pop(name, None)

    def expr(self, toks, pos, end, what="an expression"):
        if pos >= end:
            col = toks[pos - 1].end if pos > 0 else 1
            raise LineError(f"expected {what}", col)
        p = ExprParser(toks, pos, end, self.resolve, self.resolve_local)
        e = p.parse()
        if p.pos < end:
            t = toks[p.pos]
            raise LineError(f"unexpected {str(t.value)!r} after the expression", t.col)
        return e

    def add(self, item, size_fixed: int | None):
        sec = self.cur
        if sec.name == "bss" and not self._bss_ok(item):
            raise LineError("'.bss' holds only reserved space: use .space/.zero/.skip, .align "
                            "or .org, and put code and initialized data in .text/.data",
                            self._stmt_col)
        sec.items.append(item)
        if size_fixed is None:
            sec.frag += 1
            sec.frag_off = 0
        else:
            sec.frag_off += size_fixed

    @staticmethod
    def _bss_ok(item):
        return type(item) in (_Align, _Org) or (type(item) is _Chunk and item.zero)

    # ---- instructions -----------------------------------------------------------------------

    def instruction(self, toks, i, rec):
        self._stmt_col = toks[i].col
        # An instruction's encoding depends on its text and on what its symbols meant when it
        # was read (constants, local label numbers, the linear form of labels): remembered once
        # a process with those lookups, and reused where they give the same answers (the guest
        # builds assemble the same kernel lines hundreds of times with other parameters).
        text = rec.text
        known = _INSN_MEMO.get(text)
        if known is not None:
            for deps, made in known:
                if not deps or self._deps_hold(deps):
                    self._place(made, rec)
                    return
        self.deps = deps = []
        try:
            made = self._encode_instruction(toks, i, rec)
        finally:
            self.deps = None
        if None not in deps:
            if known is None:
                if len(_INSN_MEMO) >= _INSN_MEMO_MAX:
                    _INSN_MEMO.clear()
                known = _INSN_MEMO[text] = []
            if len(known) < _INSN_VARIANTS:
                known.append((tuple(deps), made))
        self._place(made, rec)

    def _deps_hold(self, deps) -> bool:
        """Do the lookups an encoding was made with give the same answers now?"""
        consts, deferred, locals_ = self.consts, self.deferred, self.local_counts
        for kind, key, answer in deps:
            if kind is _DEP_CONST:
                v = consts.get(key)
                if v is not None and key in deferred:
                    v = None
                if v != answer:
                    return False
            elif kind is _DEP_LOCAL:
                if locals_.get(key, 0) != answer:
                    return False
            elif self.term(key) != answer:
                return False
        return True

    def _place(self, made, rec):
        """Add the item an encoding describes (see :meth:`_encode_instruction`)."""
        sec = self.cur
        if made[0] is _Jump:
            j = _Jump(made[1], made[2], made[3], made[4], rec, sec, len(sec.items))
            self.jumps.append(j)
            self.add(j, None)
        elif sec.name == "bss":
            self.add(_Chunk(made[1], list(made[2]), rec), made[1])    # refused there
        else:                       # add(), inline: most lines of a guest come here
            size = made[1]
            sec.items.append(_Chunk(size, list(made[2]), rec))
            sec.frag_off += size

    def _encode_instruction(self, toks, i, rec):
        """Parse and encode the instruction at ``toks[i:]`` -> ``(_Jump, head, long, target,
        col)`` or ``(_Chunk, size, parts)``; reads the assembler's state only through
        :meth:`resolve`, :meth:`resolve_local` and :meth:`term` (see :meth:`instruction`)."""
        t = toks[i]
        mn = t.value.lower()
        prefix = None
        if mn in _PREFIXES:
            prefix = (mn, t)
            i += 1
            if i >= len(toks) or toks[i].kind != "id":
                raise LineError(f"expected an instruction after '{mn}'",
                                toks[i].col if i < len(toks) else t.end)
            t = toks[i]
            mn = t.value.lower()
        if mn not in TABLE:
            close = difflib.get_close_matches(mn, MNEMONICS, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise LineError(f"unknown instruction {t.value!r}{hint}", t.col)
        ranges = split_operands(toks, i + 1)
        ops = [parse_operand(toks, a, b, self.resolve, self.resolve_local) for a, b in ranges]
        branch = mn in BRANCHES
        for k, op in enumerate(ops):
            ops[k] = self.settle(mn, op, k, len(ops), branch)
        try:
            form = select_form(mn, ops)
        except LineError as e:
            if not e.column:            # nothing better to point at: the mnemonic
                e.column = t.col
            raise
        pbyte = None
        if prefix is not None:
            pname, ptok = prefix
            if pname == "notrack":
                if mn not in ("jmp", "call", "ljmp", "lcall") or form.modrm not in (2, 3, 4, 5):
                    raise LineError("'notrack' goes only before an indirect jmp or call", ptok.col)
                seg = next((o.seg for o in ops if type(o) is AsmMem and o.seg is not None), None)
                if seg is not None and seg.name != "ds":
                    raise LineError(f"'notrack' is the ds prefix: it cannot go with {seg.name}:",
                                    seg.col)
            elif pname == "lock":
                if mn not in LOCKABLE or not ops or type(ops[0]) is not AsmMem:
                    raise LineError(f"'lock' needs a read-modify-write instruction with a memory "
                                    f"destination, not '{mn}'", ptok.col)
            elif mn not in STRING_OPS:
                raise LineError(f"'{pname}' works only with string instructions "
                                f"(movs, stos, lods, cmps, scas), not '{mn}'", ptok.col)
            elif pname in ("repne", "repnz") and mn not in REPE_OPS:
                raise LineError(f"'{pname}' works only with cmps and scas", ptok.col)
            pbyte = _PREFIXES[pname]
        enc = encode(form, ops, pbyte if pbyte != 0x3E else None)
        if pbyte == 0x3E and enc.head[:1] != b"\x3e":
            # notrack is a ds prefix; GNU as merges it with an explicit ds: override
            enc.head = b"\x3e" + enc.head
            enc.size += 1
        if enc.long is not None:
            return (_Jump, enc.head, enc.long, enc.target, ops[0].col)
        return (_Chunk, enc.size, tuple([enc.head] + enc.fields))

    def settle(self, mn, op, k, nops, branch):
        """Fill in what is known before layout and decide what a bare expression means."""
        t = type(op)
        if t is AsmMem:
            if op.disp is not None:
                op.dconst = self.early(op.disp)
            if op.bare and op.seg is None and op.dconst is not None:
                # GNU as reads "dword ptr 5" as the immediate 5 but "dword ptr label" as memory
                raise LineError("a size before a plain number is ambiguous: write [number] for "
                                "memory at that address, or leave the size out for an immediate",
                                op.size_col or op.col)
            return op
        if t is Far:
            op.sel.const = self.early(op.sel.expr)
            op.off.const = self.early(op.off.expr)
            return op
        if t is not AsmImm:
            return op
        lin = linear(op.expr, self.term)
        if lin is not None and not lin[1]:
            op.const = lin[0]
            return op
        if branch or op.offset or op.short or mn in ("ljmp", "lcall"):
            return op
        if lin is not None and sum(lin[1].values()) == 0:
            op.wide = True          # a difference of labels: a number, but only known later
            return op
        # GNU Intel syntax reads memory at a bare address; accept it only where no
        # immediate could be meant
        if not accepts(mn, nops, k, ("imm", "simm8", "one", "three")):
            return AsmMem(None, None, None, None, 1, op.expr, op.col, bare=True)
        syms = symbols_in(op.expr)
        name = syms[0].shown if syms and type(syms[0]) is Sym else "this address"
        if syms and type(syms[0]) is Sym and syms[0].name not in self.labels:
            raise LineError(
                f"{name!r} is not a register or a constant defined above: GNU Intel syntax would "
                f"read memory at it. Define constants before use, or write 'offset {name}' for "
                f"its value as an immediate", op.col)
        raise LineError(
            f"{name!r} is an address: write 'offset {name}' for the address itself or "
            f"'dword ptr [{name}]' for the value stored there", op.col)

    # ---- directives -------------------------------------------------------------------------
    # One handler per directive (or family), all called as handler(self, d, t, toks, pos, rec,
    # it, stack): d the directive in lower case, t its token, toks[pos:] its arguments, rec the
    # line, it the rest of the source (.rept and .macro read their block from it), stack the
    # include/macro stack. _DIRECTIVE_HANDLERS (below the class) maps each directive to one.

    def directive(self, d, t, toks, pos, rec, it, stack):
        self._stmt_col = t.col
        handler = _DIRECTIVE_HANDLERS.get(d)
        if handler is None:
            close = difflib.get_close_matches(d, _DIRECTIVES, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise LineError(f"unknown directive {t.value!r}{hint}", t.col)
        handler(self, d, t, toks, pos, rec, it, stack)

    def _d_data(self, d, t, toks, pos, rec, it, stack):
        self.data(_DATA_WIDTH[d], toks, pos, rec, t)

    def _d_strings(self, d, t, toks, pos, rec, it, stack):
        self.strings(d != ".ascii", toks, pos, t)

    def _d_switch(self, d, t, toks, pos, rec, it, stack):
        self.no_args(d, toks, pos)
        self.switch(d[1:])

    def _d_section(self, d, t, toks, pos, rec, it, stack):
        n = len(toks)
        if pos >= n or toks[pos].kind != "id":
            raise LineError("expected a section name (.text, .data, .rodata or .bss)",
                            toks[pos].col if pos < n else t.end)
        name = toks[pos].value
        sect = {".text": "text", ".data": "data", ".rodata": "data", ".bss": "bss"}.get(name)
        if sect is None:
            raise LineError(f"unknown section {name!r}: the kit has .text, .data "
                            f"(.rodata joins it) and .bss", toks[pos].col)
        self.switch(sect)

    def _d_global(self, d, t, toks, pos, rec, it, stack):
        names = self.names(toks, pos, t)
        if d != ".extern":
            self.globals.update(names)

    def _d_equ(self, d, t, toks, pos, rec, it, stack):
        n = len(toks)
        if pos >= n or toks[pos].kind != "id":
            raise LineError(f"expected a name after {d}", toks[pos].col if pos < n else t.end)
        if pos + 1 >= n or toks[pos + 1].kind != "op" or toks[pos + 1].value != ",":
            raise LineError(f"expected ',' after the name ({d} NAME, value)",
                            toks[pos + 1].col if pos + 1 < n else toks[pos].end)
        self.assign(toks[pos], toks, pos + 2, rec, d)

    def _d_space(self, d, t, toks, pos, rec, it, stack):
        args = self.args(toks, pos, t, 1, 1 if d == ".zero" else 2)
        count = self.const_arg(args[0], "the size")
        if not 0 <= count <= _MAX_IMAGE:
            raise LineError(f"the size must be 0..{_MAX_IMAGE:#x}", args[0][0].col)
        fill = self.byte_arg(args[1]) if len(args) > 1 else 0
        self.add(_Chunk(count, [("fill", fill, count, 0)], rec, zero=(fill == 0)), count)

    def _d_fill(self, d, t, toks, pos, rec, it, stack):
        args = self.args(toks, pos, t, 1, 3)
        count = self.const_arg(args[0], "the repeat count")
        size = self.const_arg(args[1], "the size") if len(args) > 1 else 1
        value = self.const_arg(args[2], "the value") if len(args) > 2 else 0
        if not 0 <= count * size <= _MAX_IMAGE or not 0 <= size <= 8 or count < 0:
            raise LineError(f".fill needs a count >= 0, a size of 0 to 8 bytes and at most "
                            f"{_MAX_IMAGE:#x} bytes in all", args[0][0].col)
        unit = (value & ((1 << (8 * min(size, 4))) - 1)).to_bytes(size, "little") if size \
            else b""
        self.add(_Chunk(count * size, [unit * count], rec, zero=not any(unit)), count * size)

    def _d_align(self, d, t, toks, pos, rec, it, stack):
        args = self.args(toks, pos, t, 1, 3, allow_empty=True)
        if args[0] is None:
            raise LineError("expected the alignment", t.end)
        v = self.const_arg(args[0], "the alignment")
        if d == ".p2align":
            if not 0 <= v <= 16:
                raise LineError("the .p2align power must be 0..16", args[0][0].col)
            v = 1 << v
        elif v <= 0 or v & (v - 1):
            raise LineError(f"alignment {v} is not a power of two", args[0][0].col)
        fill = self.byte_arg(args[1]) if len(args) > 1 and args[1] is not None else None
        mx = self.const_arg(args[2], "the maximum") if len(args) > 2 else None
        self.cur.align = max(self.cur.align, v)
        self.add(_Align(v, fill, mx, rec), None)

    def _d_org(self, d, t, toks, pos, rec, it, stack):
        args = self.args(toks, pos, t, 1, 2)
        expr, col = args[0][0], args[0][0].col
        lin = linear(expr, self.term)
        if lin is None:
            raise LineError(".org needs a number or an address in this section", col)
        if lin[1]:
            keys = list(lin[1])
            if len(keys) != 1 or lin[1][keys[0]] != 1 or keys[0][0] != self.cur.name:
                raise LineError(".org needs a number or an address (label, '.') of the "
                                "current section, defined above", col)
        fill = self.byte_arg(args[1]) if len(args) > 1 else 0
        self.add(_Org(expr, not lin[1], fill, col, rec), None)

    def _d_include(self, d, t, toks, pos, rec, it, stack):
        n = len(toks)
        if pos >= n or toks[pos].kind != "str":
            raise LineError('expected a file name in quotes: .include "file.s"',
                            toks[pos].col if pos < n else t.end)
        self.no_args(d, toks, pos + 1)
        self.include(toks[pos].value.decode("utf-8", "replace"), toks[pos].col, rec, stack)

    def _d_rept(self, d, t, toks, pos, rec, it, stack):
        args = self.args(toks, pos, t, 1, 1)
        count = self.const_arg(args[0], "the repeat count")
        if count < 0:
            raise LineError("the repeat count cannot be negative", args[0][0].col)
        block, _ = _nested_block(it, ".rept", ".endr", ".rept without a matching .endr", t.col)
        for _ in range(count):
            bit = iter(block)
            for ln, text in bit:
                self.line(rec.file, ln, text, bit, stack)
        self._after_nested(rec)

    def _d_unopened(self, d, t, toks, pos, rec, it, stack):
        opener = {".endr": ".rept", ".endm": ".macro"}[d]
        raise LineError(f"{d} without {opener}", t.col)

    def _d_macro(self, d, t, toks, pos, rec, it, stack):
        self.define_macro(t, toks, pos, rec, it)

    def _d_exitm(self, d, t, toks, pos, rec, it, stack):
        self.no_args(d, toks, pos)
        if self.site is None:
            raise LineError(".exitm outside a macro", t.col)
        raise _ExitMacro()

    def _d_purgem(self, d, t, toks, pos, rec, it, stack):
        n = len(toks)
        if pos >= n or toks[pos].kind != "id" or pos + 1 < n:
            raise LineError("expected a macro name: .purgem NAME",
                            toks[pos].col if pos < n else t.end)
        if self.macros.pop(toks[pos].value.lower(), None) is None:
            raise LineError(f"no macro named {toks[pos].value!r} to purge", toks[pos].col)

    def _d_end(self, d, t, toks, pos, rec, it, stack):
        raise _Stop()

    def _d_ignored(self, d, t, toks, pos, rec, it, stack):
        if d == ".code32" or d == ".intel_syntax":
            for tok in toks[pos:]:
                if tok.kind != "id" or tok.value.lower() not in ("noprefix",):
                    raise LineError(f"{d}: only '.intel_syntax noprefix' is supported",
                                    tok.col)

    def _d_unsupported(self, d, t, toks, pos, rec, it, stack):
        raise LineError(f"{d} is not supported: the kit assembles 32-bit Intel syntax", t.col)

    # ---- macros -----------------------------------------------------------------------------

    def define_macro(self, t, toks, pos, rec, it):
        n = len(toks)
        if pos >= n or toks[pos].kind != "id":
            raise LineError("expected a macro name: .macro NAME [param[=default], ...]",
                            toks[pos].col if pos < n else t.end)
        name_tok = toks[pos]
        key = name_tok.value.lower()
        if key in _DIRECTIVE_SET:
            raise LineError(f"{name_tok.value!r} is a directive and cannot be a macro name",
                            name_tok.col)
        old = self.macros.get(key)
        if old is not None:       # GNU as: names are case-insensitive
            raise LineError(f"macro {name_tok.value!r} is already defined (at {old.file}:"
                            f"{old.line}{'' if old.name == name_tok.value else ' as ' + old.name}"
                            f")", name_tok.col)
        body, end_line = _nested_block(it, ".macro", ".endm",
                                       f".macro {name_tok.value} without a matching .endm", t.col)
        # the parameters: raw text after the name, up to a comment
        end = toks[-1].end
        params = rec.text[name_tok.end - 1:end - 1] if end > name_tok.end else ""
        m = asm_macro.define(params, name_tok.end, name_tok, rec.file, rec.line, [])
        # compile the body, pointing errors at the body line (nested .macro blocks are theirs)
        m.body = body
        templates = []
        nested = 0
        for ln, text in body:
            first = _first_word(text)
            if first == ".macro":
                nested += 1
            elif first == ".endm":
                nested -= 1
            try:
                templates.append(asm_macro.compile_line(text, m.index, m.name, not nested))
            except LineError as e:
                bad = _Rec(rec.file, ln, text)
                bad.site = rec.site
                raise _err(e.message, bad, e.column) from None
        m.templates = templates
        for ln, text in body + [end_line]:
            self.body_src[(rec.file, ln)] = text
            shown = _Rec(rec.file, ln, text)     # listed, without address or bytes
            shown.site = rec.site
            self.records.append(shown)
        self.macros[key] = m

    def invoke(self, m, toks, i, rec, stack):
        t = toks[i]
        self._stmt_col = t.col
        site = rec.site or ()
        if len(site) >= asm_macro.MAX_DEPTH:
            raise LineError(f"macros nested too deeply (more than {asm_macro.MAX_DEPTH} levels): "
                            f"does {m.name} invoke itself without end?", t.col)
        raw = rec.text[t.end - 1:toks[-1].end - 1] if len(toks) > i + 1 else ""
        args = asm_macro.split_args(raw, t.end)
        values = m.bind(args, toks[-1].end)
        lines = m.expand(values, self.macro_count)
        self.macro_count += 1
        saved = self.site
        sec, start = self.cur, len(self.cur.items)
        self.site = site + ((m.name, rec.file, rec.line),)
        bit = iter(lines)
        try:
            for ln, text in bit:
                self.line(m.file, ln, text, bit, stack)
        except _ExitMacro:
            pass
        finally:
            self.site = saved
        self._after_nested(rec)
        if rec.labels and rec.sec is sec:       # its labels are where the expansion began
            rec.i0 = rec.i1 = start
            rec.done = True

    def switch(self, name):
        self.cur = self.sections[name]
        self.rec.sec = self.cur
        self.rec.i0 = self.rec.i1 = len(self.cur.items)

    def no_args(self, d, toks, pos):
        if pos < len(toks):
            raise LineError(f"unexpected {str(toks[pos].value)!r} after {d}", toks[pos].col)

    def names(self, toks, pos, t):
        out = []
        for a, b in split_operands(toks, pos) if pos < len(toks) else []:
            if b - a != 1 or toks[a].kind != "id":
                raise LineError("expected a symbol name", toks[a].col)
            out.append(toks[a].value)
        if not out:
            raise LineError("expected a symbol name", t.end)
        return out

    def args(self, toks, pos, t, lo, hi, allow_empty=False):
        """Comma-separated expressions as ``(expr, first token)`` pairs (None when empty)."""
        out = []
        if pos < len(toks):
            # split keeping empty fields for ".align 4,,15"
            start = pos
            depth = 0
            bounds = []
            for k in range(pos, len(toks) + 1):
                tk = toks[k] if k < len(toks) else None
                if tk is not None and tk.kind == "op" and tk.value in "([":
                    depth += 1
                elif tk is not None and tk.kind == "op" and tk.value in ")]":
                    depth -= 1
                if tk is None or (tk.kind == "op" and tk.value == "," and depth == 0):
                    bounds.append((start, k))
                    start = k + 1
            for a, b in bounds:
                if a == b:
                    if not allow_empty:
                        raise LineError("empty argument", toks[a].col if a < len(toks)
                                        else toks[-1].end)
                    out.append(None)
                else:
                    out.append((self.expr(toks, a, b), toks[a]))
        if len(out) < lo:
            raise LineError(f"expected {lo} argument{'s' if lo > 1 else ''}", t.end)
        if len(out) > hi:
            extra = out[hi]
            raise LineError(f"too many arguments (at most {hi})",
                            extra[1].col if extra else t.end)
        return out

    def const_arg(self, arg, what) -> int:
        expr, tok = arg
        v = self.early(expr)
        if v is None:
            raise LineError(f"{what} must be a number known here (a constant defined above)",
                            tok.col)
        return v

    def byte_arg(self, arg) -> int:
        v = self.const_arg(arg, "the fill byte")
        if not -128 <= v <= 255:
            raise LineError(f"the fill byte {v} does not fit in a byte", arg[1].col)
        return v & 0xFF

    def data(self, width, toks, pos, rec, t):
        parts = []
        if pos >= len(toks):
            raise LineError("expected at least one value", t.end)
        for a, b in split_operands(toks, pos):
            if toks[a].kind == "str":
                raise LineError("strings go in .ascii/.asciz, not in a numeric list", toks[a].col)
            self.stmt_off = len(parts) * width
            parts.append(("data", self.expr(toks, a, b), width, toks[a].col))
        size = width * len(parts)
        zero = all(type(p[1]) is Num and p[1].v == 0 for p in parts)
        self.add(_Chunk(size, parts, rec, zero=zero), size)

    def strings(self, nul, toks, pos, t):
        out = bytearray()
        if pos >= len(toks):
            raise LineError("expected a string in double quotes", t.end)
        for a, b in split_operands(toks, pos):
            if b - a != 1 or toks[a].kind != "str":
                raise LineError("expected a string in double quotes", toks[a].col)
            out += toks[a].value
            if nul:
                out.append(0)
        self.add(_Chunk(len(out), [bytes(out)], self.rec), len(out))

    def include(self, name, col, rec, stack):
        found = self.find_include(name, rec.file)
        if found is None:
            where = ["the files given to assemble()"] if self.files else []
            where += [repr(d) for d in self.include_path]
            where.append("the including file's directory")
            raise LineError(f"include file {name!r} not found (looked in {', '.join(where)})", col)
        key, text = found
        if key in stack:
            chain = " -> ".join(list(stack) + [key])
            raise LineError(f"recursive .include of {name!r} ({chain})", col)
        if len(stack) > 32:
            raise LineError(".include nested too deeply", col)
        self.run_source(text, key, stack + (key,))
        self._after_nested(rec)

    def _after_nested(self, rec):
        """The line of an .include/.rept/macro invocation owns none of the items its nested
        lines made."""
        self.rec = rec
        rec.sec = self.cur
        rec.i0 = len(self.cur.items)

    def find_include(self, name, current):
        if name in self.files:
            return name, self.files[name]
        cur_dir = os.path.dirname(current) if current and not current.startswith("<") else ""
        if cur_dir:
            rel = os.path.normpath(os.path.join(cur_dir, name))
            if rel in self.files:
                return rel, self.files[rel]
        for d in self.include_path:
            p = os.path.join(d, name)
            if os.path.isfile(p):
                return p, _read(p)
        p = os.path.join(cur_dir, name) if cur_dir else name
        if os.path.isfile(p) and (cur_dir or os.path.isabs(name) or not current.startswith("<")):
            return p, _read(p)
        return None

    # ---- layout -----------------------------------------------------------------------------

    def symbol_value(self, sym) -> int:
        name = sym.name
        lab = self.labels.get(name)
        if lab is not None:
            return self.label_addr(lab, sym.col)
        if name in self.deferred:
            expr, rec = self.deferred[name]
            if name in self._evaluating:
                raise LineError(f"{name!r} is defined in terms of itself", sym.col)
            self._evaluating.add(name)
            try:
                return self.value(expr, rec)
            finally:
                self._evaluating.discard(name)
        if name in self.consts:
            return self.consts[name]
        shown = sym.shown
        if "\x02" in name:
            n = name.split("\x02")[0]
            raise LineError(f"'{shown}' refers to a later '{n}:' but there is none", sym.col)
        pool = [k for k in list(self.labels) + list(self.consts) if "\x02" not in k]
        close = difflib.get_close_matches(name, pool, n=3, cutoff=0.7)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise LineError(f"undefined symbol {shown!r}{hint}", sym.col)

    def label_addr(self, lab, col=0) -> int:
        return lab.sec.addrs[lab.index]

    def value(self, expr, rec) -> int:
        try:
            return evaluate(expr, self.symbol_value, self.label_addr)
        except LineError as e:
            self.report(_err(e.message, rec, e.column))
            return 0                    # recorded: go on laying out with a stand-in value

    def layout(self):
        addr = self.base
        for name in _SECTIONS:
            sec = self.sections[name]
            if name != "text":
                addr = -(-addr // sec.align) * sec.align
            sec.start = addr
            items = sec.items
            addrs = sec.addrs = [0] * (len(items) + 1)
            for i, it in enumerate(items):
                addrs[i] = addr
                t = type(it)
                if t is _Chunk or t is _Jump:
                    addr += it.size
                elif t is _Align:
                    pad = -addr % it.n
                    if it.max is not None and pad > it.max:
                        pad = 0
                    addr += pad
                else:   # _Org
                    target = self.value(it.expr, it.rec)
                    if it.offset:
                        target += sec.start
                    if target < addr:
                        self.report(_err(f".org would move backwards (to {target:#x}, already "
                                         f"at {addr:#x})", it.rec, it.col))
                        target = addr
                    addr = target
                if addr - self.base > _MAX_IMAGE:
                    rec = it.rec
                    raise _err(f"the program would be more than {_MAX_IMAGE >> 20} MiB "
                               f"(at {addr:#x})", rec, 1)
            addrs[len(items)] = addr
            sec.end = addr

    def relax(self):
        for j in self.jumps:          # GNU as: a target in another section gets rel32 at once
            for s in symbols_in(j.target):
                lab = s.label if type(s) is LabelRef else self.labels.get(s.name)
                if lab is not None and lab.sec is not j.sec:
                    j.is_long = True
        pending = [j for j in self.jumps if not j.is_long]
        while True:
            self.layout()
            grown = False
            still = []
            for j in pending:
                target = self.value(j.target, j.rec)
                disp = target - (j.sec.addrs[j.index] + len(j.head) + 1)
                if -128 <= disp <= 127:
                    still.append(j)
                else:
                    j.is_long = True
                    grown = True
            pending = still
            if not grown:
                return

    # ---- output -----------------------------------------------------------------------------

    def emit(self) -> bytes:
        secs = [self.sections[n] for n in _SECTIONS]
        end = self.base
        for s in secs:
            if s.end > s.start:
                end = s.end
        image = bytearray(end - self.base)
        for sec in secs:
            items = sec.items
            fill_default = 0x90 if sec.name == "text" else 0
            for i, it in enumerate(items):
                a = sec.addrs[i]
                nxt = sec.addrs[i + 1]
                off = a - self.base
                t = type(it)
                if t is _Chunk:
                    out = self.chunk_bytes(it, a)
                elif t is _Jump:
                    out = self.jump_bytes(it, a)
                elif t is _Align:
                    fill = it.fill if it.fill is not None else fill_default
                    out = bytes([fill]) * (nxt - a)
                else:
                    out = bytes([it.fill]) * (nxt - a)
                image[off:off + len(out)] = out
        return bytes(image)

    def chunk_bytes(self, it, addr) -> bytes:
        out = bytearray()
        for p in it.parts:
            if type(p) is bytes:
                out += p
                continue
            kind, expr, width, col = p
            if kind == "fill":            # reserved space: made only now, once
                out += bytes([expr]) * width
                continue
            v = self.value(expr, it.rec)
            if kind == "rel":
                v -= addr + it.size
                if width == 1 and not -128 <= v <= 127:
                    self.report(_err(f"jump target is {v} bytes away; this instruction reaches "
                                     f"only -128..127 (rel8)", it.rec, col))
                v &= (1 << 8 * width) - 1
            elif kind == "disp":
                if width == 4 and not -(1 << 31) <= v < (1 << 32):
                    self.report(_err(f"address {v:#x} does not fit in 32 bits", it.rec, col))
            elif kind == "simm":
                pass
            else:
                lo, hi = _range_for(width, kind)
                if not lo <= v <= hi:
                    what = "value" if kind == "data" else "immediate"
                    self.report(_err(f"{what} {v} ({_hex(v)}) out of range for {8 * width} "
                                     f"bits ({lo}..{hi})", it.rec, col))
            out += (v & ((1 << 8 * width) - 1)).to_bytes(width, "little")
        return bytes(out)

    def jump_bytes(self, j, addr) -> bytes:
        target = self.value(j.target, j.rec)
        if j.is_long:
            v = target - (addr + len(j.long) + 4)
            return j.long + (v & 0xFFFFFFFF).to_bytes(4, "little")
        v = target - (addr + len(j.head) + 1)
        return j.head + (v & 0xFF).to_bytes(1, "little")

    def program(self) -> Program:
        self.relax()
        code = self.emit()
        symbols = {}
        for name, lab in self.labels.items():
            if "\x02" not in name:
                symbols[name] = lab.sec.addrs[lab.index]      # label_addr, inline
        constants = dict(self.consts)
        for name in self.deferred:
            constants[name] = self.symbol_value_checked(name)
        lines = []
        listing = []
        expansions = {}
        for rec in self.records:
            sec = rec.sec
            # an expanded line is listed as it was assembled, marked '>' (as in `as -al`)
            site = rec.site
            text = rec.text if site is None else ">" + rec.text
            if sec is not None and (rec.i1 > rec.i0 or rec.labels):
                addr = sec.addrs[rec.i0]
                end = sec.addrs[rec.i1]
                lines.append((addr, end - addr, rec.file, rec.line, rec.src))
                if site is not None and end > addr:
                    expansions[addr] = site
                listing.append((rec.file, rec.line, text, addr, end))
            else:
                listing.append((rec.file, rec.line, text, None, None))
        lines.sort(key=lambda x: x[0])
        sections = {n: (s.start, s.end - s.start) for n, s in self.sections.items()}
        return Program(code, self.base, symbols, constants, set(self.globals), lines, sections,
                       listing, _expansions=expansions)

    def symbol_value_checked(self, name) -> int:
        expr, rec = self.deferred[name]
        return self.value(expr, rec)


#: each directive's handler (see _Assembler.directive)
_DIRECTIVE_HANDLERS = {
    **dict.fromkeys(_DATA_WIDTH, _Assembler._d_data),
    **dict.fromkeys((".ascii", ".asciz", ".string"), _Assembler._d_strings),
    **dict.fromkeys((".text", ".data", ".bss"), _Assembler._d_switch),
    ".section": _Assembler._d_section,
    **dict.fromkeys((".global", ".globl", ".extern"), _Assembler._d_global),
    **dict.fromkeys((".equ", ".set", ".equiv"), _Assembler._d_equ),
    **dict.fromkeys((".space", ".skip", ".zero"), _Assembler._d_space),
    ".fill": _Assembler._d_fill,
    **dict.fromkeys((".align", ".balign", ".p2align"), _Assembler._d_align),
    ".org": _Assembler._d_org,
    ".include": _Assembler._d_include,
    ".rept": _Assembler._d_rept,
    ".macro": _Assembler._d_macro,
    **dict.fromkeys((".endr", ".endm"), _Assembler._d_unopened),
    ".exitm": _Assembler._d_exitm,
    ".purgem": _Assembler._d_purgem,
    ".end": _Assembler._d_end,
    **dict.fromkeys(_IGNORED - {".extern"}, _Assembler._d_ignored),
    **dict.fromkeys(_UNSUPPORTED, _Assembler._d_unsupported),
}
#: the directives the kit knows (refused ones aside): did-you-mean hints; no macro takes their names
_DIRECTIVES = sorted(set(_DIRECTIVE_HANDLERS) - _UNSUPPORTED)
_DIRECTIVE_SET = frozenset(_DIRECTIVES)


def _hex(v: int) -> str:
    return f"-{-v:#x}" if v < 0 else f"{v:#x}"


def _nested_block(it, opener: str, closer: str, missing: str, col: int):
    """The lines of ``it`` up to the ``closer`` that matches an ``opener`` already read (nested
    pairs kept inside): (the lines, the closing line). A missing closer is ``missing`` at ``col``."""
    block = []
    depth = 1
    for ln, text in it:
        first = _first_word(text)
        if first == opener:
            depth += 1
        elif first == closer:
            depth -= 1
            if depth == 0:
                return block, (ln, text)
        block.append((ln, text))
    raise LineError(missing, col)


def _tokens(text: str) -> list:
    """``tokenize(text)``, once a process per line text (nothing changes a token list)."""
    toks = _TOKENS.get(text)
    if toks is None:
        toks = tokenize(text)
        if len(_TOKENS) >= _INSN_MEMO_MAX:
            _TOKENS.clear()
        _TOKENS[text] = toks
    return toks


def _first_word(text: str) -> str | None:
    try:
        toks = _tokens(text)
    except LineError:
        return None
    i = 0
    while i + 1 < len(toks) and toks[i + 1].kind == "op" and toks[i + 1].value == ":":
        i += 2
    if i < len(toks) and toks[i].kind == "id":
        return toks[i].value.lower()
    return None


def _text_is_decimal(text: str, tok) -> bool:
    s = text[tok.col - 1:tok.end - 1]
    return s.isdigit()


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def assemble(source: str, base: int = 0x1000, *, filename: str = "<input>",
             include_path: list[str] | None = None,
             files: dict[str, str] | None = None, max_errors: int = 1) -> Program:
    """Assemble ``source`` for loading at ``base``; see the module docstring for the dialect.

    Args:
        source: the assembly text.
        base: address of the first byte of ``.text``.
        filename: name used in errors and ``line_of`` (also the directory for ``.include``).
        include_path: directories searched by ``.include``.
        files: in-memory sources for ``.include``, by name (searched first).
        max_errors: 1 (the default) stops at the first error; more goes on after an error
            with the next line (and the next item when laying out) and reports up to this
            many errors, as a compiler does.

    Returns:
        the :class:`Program`.

    Raises:
        AssemblyError: with file, line, column and the offending text: the first error, whose
            ``errors`` lists every error found (up to ``max_errors``, by file and line) and
            whose ``truncated`` says whether assembling stopped at that limit.
    """
    if not 0 <= base < (1 << 32):
        raise ValueError(f"base {base:#x} is not a 32-bit address")
    if not isinstance(max_errors, int) or max_errors < 1:
        raise ValueError(f"max_errors must be a positive integer, got {max_errors!r}")
    asm = _Assembler(base, files, include_path, max_errors)
    try:
        try:
            asm.run_source(source, filename, (filename,))
        except _Stop:
            pass
        prog = asm.program()
    except _TooManyErrors:
        prog = None
    except AssemblyError as e:         # an error that ends assembling (the image too large)
        if max_errors <= 1:
            raise
        asm.errors.append(e)
        prog = None
    if asm.errors:
        order: dict[str, int] = {}      # files in the order they were read
        for rec in asm.records:
            order.setdefault(rec.file, len(order))
        asm.errors.sort(key=lambda e: (order.get(e.file, len(order)), e.line, e.column))
        first = asm.errors[0]
        first.errors = list(asm.errors)
        first.truncated = asm.truncated
        raise first
    return prog
