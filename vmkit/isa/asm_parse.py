"""Lexer, expressions and operands of the vmkit assembler (the dialect: :mod:`vmkit.isa.asm`).

Three layers, bottom up:

* :func:`tokenize` turns one source line into tokens that carry their 1-based column;
* :class:`ExprParser` builds expression trees (``Num``, ``Sym``, ``Unary``, ``Bin``, ``RegRef``)
  with GNU as precedence, and refuses expressions that GNU as and C would group differently;
* :func:`parse_operand` turns the tokens of one operand into a :class:`AsmReg`, :class:`AsmMem`,
  :class:`AsmImm` or :class:`Far`: operands *as written* (with columns and expressions), named
  apart from the decoder's ``Reg``/``Mem``/``Imm`` (:mod:`vmkit.isa.decode`), operands *as
  decoded*, which the machine and the monitors use.

Nothing here knows about labels' addresses: identifiers are handed to a *resolver* callback that
the assembler supplies (it binds constants and local labels), and :func:`evaluate` /
:func:`linear` compute values once the assembler knows what the symbols mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = [
    "Token", "tokenize", "LineError",
    "Num", "Sym", "Unary", "Bin", "RegRef", "LabelRef",
    "ExprParser", "evaluate", "linear", "symbols_in",
    "AsmReg", "AsmMem", "AsmImm", "Far", "parse_operand", "split_operands",
    "REGISTERS", "SIZE_KEYWORDS", "RESERVED",
]


class LineError(Exception):
    """An error inside one line; the assembler adds file, line and text."""

    def __init__(self, message: str, column: int):
        super().__init__(message)
        self.message = message
        self.column = column


# --------------------------------------------------------------------------------------------
# registers and keywords

@dataclass(frozen=True)
class AsmReg:
    """A register operand. ``kind`` is ``gpr``, ``sreg`` or ``cr``; ``size`` in bits."""
    name: str
    kind: str
    size: int
    num: int
    col: int = 0

    def at(self, col: int) -> "AsmReg":
        return AsmReg(self.name, self.kind, self.size, self.num, col)


def _regs() -> dict[str, AsmReg]:
    table: dict[str, AsmReg] = {}
    for size, names in ((32, "eax ecx edx ebx esp ebp esi edi"), (16, "ax cx dx bx sp bp si di"),
                        (8, "al cl dl bl ah ch dh bh")):
        for num, name in enumerate(names.split()):
            table[name] = AsmReg(name, "gpr", size, num)
    for num, name in enumerate("es cs ss ds fs gs".split()):
        table[name] = AsmReg(name, "sreg", 16, num)
    for num in (0, 2, 3, 4):
        table[f"cr{num}"] = AsmReg(f"cr{num}", "cr", 32, num)
    return table


REGISTERS: dict[str, AsmReg] = _regs()
SIZE_KEYWORDS = {"byte": 8, "word": 16, "dword": 32, "fword": 48, "qword": 64, "tbyte": 80}
RESERVED = set(REGISTERS) | set(SIZE_KEYWORDS) | {"ptr", "offset", "short", "far", "near"}


# --------------------------------------------------------------------------------------------
# tokens

@dataclass(slots=True)
class Token:
    kind: str      # num, id, local, str, char, op, other
    value: object  # int, str, (n, 'f'|'b'), bytes
    col: int       # 1-based column of the first character
    end: int       # 1-based column just after the last character


_ESCAPES = {"n": 10, "t": 9, "r": 13, "0": 0, "a": 7, "b": 8, "f": 12, "v": 11, "e": 27,
            "\\": 92, "'": 39, '"': 34}
_OPS2 = ("<<", ">>")
_OPS1 = set("+-*/%&|^~()[],:=!")
_ID_START = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_.$")
_ID_CHARS = _ID_START | set("0123456789")
_WORD_CHARS = _ID_CHARS


def _escape(s: str, i: int, col0: int) -> tuple[int, int]:
    """Decode the escape after the backslash at s[i-1]; return (byte value, next index)."""
    if i >= len(s):
        raise LineError("unfinished escape sequence", col0 + i)
    c = s[i]
    if c in "01234567":
        j = i
        while j < len(s) and j < i + 3 and s[j] in "01234567":
            j += 1
        v = int(s[i:j], 8)
        if v > 255:
            raise LineError(f"octal escape \\{s[i:j]} is more than a byte", col0 + i - 1)
        return v, j
    if c == "x":
        j = i + 1
        while j < len(s) and s[j] in "0123456789abcdefABCDEF":
            j += 1
        if j == i + 1:
            raise LineError("\\x needs hex digits", col0 + i - 1)
        return int(s[i + 1:j], 16) & 0xFF, j
    if c in _ESCAPES:
        return _ESCAPES[c], i + 1
    raise LineError(f"unknown escape sequence \\{c}", col0 + i - 1)


def _number(word: str, col: int) -> Token:
    w = word.lower()
    try:
        if w.startswith("0x"):
            return Token("num", int(w[2:], 16), col, col + len(word))
        if w.startswith("0b") and len(w) > 2:
            return Token("num", int(w[2:], 2), col, col + len(word))
        if w.startswith("0o"):
            return Token("num", int(w[2:], 8), col, col + len(word))
        if w[-1] in "bf" and w[:-1].isdigit():
            return Token("local", (int(w[:-1]), w[-1]), col, col + len(word))
        if w.isdigit():
            if len(w) > 1 and w[0] == "0":     # GNU as: a leading zero means octal
                return Token("num", int(w, 8), col, col + len(word))
            return Token("num", int(w), col, col + len(word))
    except ValueError:
        pass
    raise LineError(f"bad number {word!r} (write 0x1F, 0b101, 0o17, 017 or decimal)", col)


def tokenize(line: str) -> list[Token]:
    """Split one source line into tokens; a comment (``;``, ``#`` or ``//``) ends the line."""
    toks: list[Token] = []
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c in " \t\r\f\v":
            i += 1
            continue
        col = i + 1
        if c == ";" or c == "#" or (c == "/" and line.startswith("//", i)):
            break
        if c.isdigit():
            j = i
            while j < n and line[j] in _WORD_CHARS and line[j] != "$":
                j += 1
            toks.append(_number(line[i:j], col))
            i = j
        elif c in _ID_START:
            j = i + 1
            while j < n and line[j] in _ID_CHARS:
                j += 1
            toks.append(Token("id", line[i:j], col, j + 1))
            i = j
        elif c == '"':
            out = bytearray()
            j = i + 1
            while True:
                if j >= n:
                    raise LineError("unterminated string (missing closing \")", col)
                ch = line[j]
                if ch == '"':
                    j += 1
                    break
                if ch == "\\":
                    v, j = _escape(line, j + 1, 1)
                    out.append(v)
                else:
                    out.extend(ch.encode("utf-8"))
                    j += 1
            toks.append(Token("str", bytes(out), col, j + 1))
            i = j
        elif c == "'":
            j = i + 1
            if j >= n:
                raise LineError("unterminated character constant (missing closing ')", col)
            if line[j] == "\\":
                v, j = _escape(line, j + 1, 1)
            else:
                v = ord(line[j])
                if v > 255:
                    raise LineError("character constant is not a single byte", col)
                j += 1
            if j >= n or line[j] != "'":
                if "'" in line[j:]:
                    raise LineError("a character constant holds one character (use .ascii "
                                    "\"...\" for a string)", col)
                raise LineError("unterminated character constant (missing closing ')", col)
            toks.append(Token("char", v, col, j + 2))
            i = j + 1
        elif line.startswith(_OPS2, i):
            toks.append(Token("op", line[i:i + 2], col, col + 2))
            i += 2
        elif c in _OPS1:
            toks.append(Token("op", c, col, col + 1))
            i += 1
        else:
            toks.append(Token("other", c, col, col + 1))
            i += 1
    return toks


# --------------------------------------------------------------------------------------------
# expressions

class Num:
    __slots__ = ("v", "col", "paren")

    def __init__(self, v: int, col: int):
        self.v, self.col, self.paren = v, col, False


class Sym:
    """A symbol resolved when the assembler knows its value. ``shown`` is the source spelling."""
    __slots__ = ("name", "col", "paren", "shown")

    def __init__(self, name: str, col: int, shown: str | None = None):
        self.name, self.col, self.paren, self.shown = name, col, False, shown or name


class LabelRef:
    """A direct reference to a label object (used for ``.``, the current address)."""
    __slots__ = ("label", "col", "paren")

    def __init__(self, label, col: int):
        self.label, self.col, self.paren = label, col, False


class RegRef:
    """A register inside ``[ ]``."""
    __slots__ = ("reg", "col", "paren")

    def __init__(self, reg: AsmReg, col: int):
        self.reg, self.col, self.paren = reg, col, False


class Unary:
    __slots__ = ("op", "a", "col", "paren")

    def __init__(self, op: str, a, col: int):
        self.op, self.a, self.col, self.paren = op, a, col, False


class Bin:
    __slots__ = ("op", "a", "b", "col", "paren")

    def __init__(self, op: str, a, b, col: int):
        self.op, self.a, self.b, self.col, self.paren = op, a, b, col, False


# GNU as ranks: * / % << >> bind tightest, then | & ^, then + -.
_RANK = {"*": 3, "/": 3, "%": 3, "<<": 3, ">>": 3, "&": 2, "|": 2, "^": 2, "+": 1, "-": 1}
_CLASS = {"*": "mul", "/": "mul", "%": "mul", "<<": "shift", ">>": "shift", "&": "and",
          "|": "or", "^": "xor", "+": "add", "-": "add"}
# Pairs of operator classes that GNU as and C group differently when mixed without parentheses.
_CONFLICT = {frozenset(p) for p in (("add", "shift"), ("add", "and"), ("add", "or"),
                                    ("add", "xor"), ("shift", "mul"), ("and", "or"),
                                    ("and", "xor"), ("or", "xor"))}

Resolver = Callable[[str, int], object]


class ExprParser:
    """Precedence-climbing parser over ``toks[pos:end]``.

    ``resolve(name, col)`` turns an identifier into a node (the assembler binds constants and
    labels); ``allow_regs`` admits registers (inside ``[ ]``).
    """

    def __init__(self, toks: list[Token], pos: int, end: int, resolve: Resolver,
                 resolve_local: Callable[[int, str, int], object], allow_regs: bool = False):
        self.toks, self.pos, self.end = toks, pos, end
        self.resolve, self.resolve_local, self.allow_regs = resolve, resolve_local, allow_regs

    def peek(self) -> Token | None:
        return self.toks[self.pos] if self.pos < self.end else None

    def _end_col(self) -> int:
        if self.pos < len(self.toks):
            return self.toks[self.pos].col
        return self.toks[self.end - 1].end if self.end > 0 else 1

    def parse(self):
        node = self.binary(1)
        return node

    def binary(self, min_rank: int):
        left = self.unary()
        while True:
            t = self.peek()
            if t is None or t.kind != "op" or t.value not in _RANK:
                return left
            rank = _RANK[t.value]
            if rank < min_rank:
                return left
            self.pos += 1
            right = self.binary(rank + 1)
            for child in (left, right):
                if isinstance(child, Bin) and not child.paren and \
                        frozenset((_CLASS[child.op], _CLASS[t.value])) in _CONFLICT:
                    raise LineError(
                        f"add parentheses: GNU as and C read {child.op!r} mixed with "
                        f"{t.value!r} differently", t.col)
            left = Bin(t.value, left, right, t.col)

    def unary(self):
        t = self.peek()
        if t is None:
            raise LineError("expected an expression", self._end_col())
        if t.kind == "op" and t.value in ("-", "~", "+", "!"):
            self.pos += 1
            return Unary(t.value, self.unary(), t.col)
        return self.primary()

    def primary(self):
        t = self.peek()
        if t is None:
            raise LineError("expected an expression", self._end_col())
        self.pos += 1
        if t.kind in ("num", "char"):
            return Num(t.value, t.col)
        if t.kind == "local":
            n, d = t.value
            return self.resolve_local(n, d, t.col)
        if t.kind == "id":
            low = t.value.lower()
            if low in REGISTERS:
                if not self.allow_regs:
                    raise LineError(f"register {t.value!r} is allowed here only inside [ ]", t.col)
                return RegRef(REGISTERS[low].at(t.col), t.col)
            if low in RESERVED:
                raise LineError(f"{t.value!r} cannot be used in an expression", t.col)
            return self.resolve(t.value, t.col)
        if t.kind == "op" and t.value == "(":
            node = self.binary(1)
            c = self.peek()
            if c is None or c.kind != "op" or c.value != ")":
                raise LineError("expected ')'", self._end_col() if c is None else c.col)
            self.pos += 1
            node.paren = True
            return node
        if t.kind == "str":
            raise LineError("a string is not allowed here", t.col)
        raise LineError(f"expected an expression, found {str(t.value)!r}", t.col)


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _binop(op: str, a: int, b: int, col: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op in ("/", "%"):
        if b == 0:
            raise LineError("division by zero", col)
        q = _trunc_div(a, b)
        return q if op == "/" else a - q * b
    if op == "<<":
        if b < 0 or b > 64:
            raise LineError(f"shift count {b} out of range", col)
        return a << b
    if op == ">>":
        if b < 0 or b > 64:
            raise LineError(f"shift count {b} out of range", col)
        return a >> b
    if op == "&":
        return a & b
    if op == "|":
        return a | b
    if op == "^":
        return a ^ b
    raise AssertionError(op)


def evaluate(node, lookup: Callable[[Sym], int], label_addr: Callable[[object, int], int]) -> int:
    """The value of an expression once every symbol is known.

    ``lookup(sym)`` gives a symbol's value (or raises); ``label_addr(label, col)`` a label's.
    """
    t = type(node)
    if t is Num:
        return node.v
    if t is Sym:
        return lookup(node)
    if t is LabelRef:
        return label_addr(node.label, node.col)
    if t is Bin:
        return _binop(node.op, evaluate(node.a, lookup, label_addr),
                      evaluate(node.b, lookup, label_addr), node.col)
    if t is Unary:
        v = evaluate(node.a, lookup, label_addr)
        if node.op == "-":
            return -v
        if node.op == "~":
            return ~v
        return int(not v) if node.op == "!" else v
    if t is RegRef:
        raise LineError(f"register {node.reg.name!r} is not allowed here", node.col)
    raise AssertionError(t)


def linear(node, term: Callable[[object], tuple[int, dict] | None]):
    """Evaluate as ``const + sum(coef * term)``; ``None`` when that is impossible.

    ``term(node)`` maps a ``Sym``/``LabelRef`` to its own linear form (``(c, {key: coef})``) or
    ``None``. Used to decide before layout whether an operand is a plain number (label differences
    inside one fragment cancel, as in GNU as).
    """
    t = type(node)
    if t is Num:
        return node.v, {}
    if t is Sym or t is LabelRef:
        return term(node)
    if t is Unary:
        a = linear(node.a, term)
        if a is None:
            return None
        if node.op == "-":
            return -a[0], {k: -v for k, v in a[1].items()}
        if node.op == "+":
            return a
        if a[1]:
            return None
        return (~a[0] if node.op == "~" else int(not a[0])), {}
    if t is Bin:
        a = linear(node.a, term)
        if a is None:
            return None
        b = linear(node.b, term)
        if b is None:
            return None
        if node.op in ("+", "-"):
            s = 1 if node.op == "+" else -1
            terms = dict(a[1])
            for k, v in b[1].items():
                terms[k] = terms.get(k, 0) + s * v
                if terms[k] == 0:
                    del terms[k]
            return a[0] + s * b[0], terms
        if node.op == "*" and not (a[1] and b[1]):
            if not a[1]:
                a, b = b, a
            return a[0] * b[0], {k: v * b[0] for k, v in a[1].items() if v * b[0]}
        if a[1] or b[1]:
            return None
        return _binop(node.op, a[0], b[0], node.col), {}
    return None


def symbols_in(node) -> list:
    """Every ``Sym`` and ``LabelRef`` in an expression, left to right."""
    out = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, (Sym, LabelRef)):
            out.append(n)
        elif isinstance(n, Bin):
            stack.append(n.b)
            stack.append(n.a)
        elif isinstance(n, Unary):
            stack.append(n.a)
    return out


# --------------------------------------------------------------------------------------------
# operands

@dataclass(slots=True)
class AsmMem:
    """A memory operand ``size ptr seg:[base + index*scale + disp]``."""
    size: int | None          # bits; None when not written
    seg: AsmReg | None
    base: AsmReg | None
    index: AsmReg | None
    scale: int
    disp: object | None       # expression tree or None
    col: int
    far: bool = False         # capstone's "ptr [m]" (far pointer in memory)
    dconst: int | None = None  # displacement value when known before layout (set by assembler)
    bare: bool = False        # written without brackets (``dword ptr label``)
    size_col: int = 0


@dataclass(slots=True)
class AsmImm:
    """An immediate or a branch target; ``const`` is set by the assembler when known early."""
    expr: object
    col: int
    offset: bool = False      # written with OFFSET
    short: bool = False       # written with SHORT (jumps)
    bare: bool = True
    const: int | None = None
    wide: bool = False        # an address-like value: GNU as keeps the full-width form


@dataclass(slots=True)
class Far:
    """``selector:offset`` immediate far pointer (``jmp 0x8:label``)."""
    sel: AsmImm
    off: AsmImm
    col: int


def split_operands(toks: list[Token], pos: int) -> list[tuple[int, int]]:
    """Ranges ``(start, end)`` of the comma-separated operands in ``toks[pos:]``."""
    out = []
    depth = 0
    start = pos
    for i in range(pos, len(toks)):
        t = toks[i]
        if t.kind == "op":
            if t.value in "([":
                depth += 1
            elif t.value in ")]":
                depth -= 1
            elif t.value == "," and depth == 0:
                if i == start:
                    raise LineError("empty operand", t.col)
                out.append((start, i))
                start = i + 1
    if start < len(toks):
        out.append((start, len(toks)))
    elif out:
        raise LineError("operand missing after ','", toks[-1].end)
    return out


def _flatten(node, sign: int, regs: list, rest: list):
    """Split a bracket expression into register terms and the displacement."""
    t = type(node)
    if t is RegRef:
        if sign < 0:
            raise LineError(f"a register cannot be subtracted ({node.reg.name})", node.col)
        regs.append((node.reg, 1, False, node.col))
        return
    if t is Bin and node.op in ("+", "-"):
        _flatten(node.a, sign, regs, rest)
        _flatten(node.b, sign if node.op == "+" else -sign, regs, rest)
        return
    if t is Bin and node.op == "*":
        for r, k in ((node.a, node.b), (node.b, node.a)):
            if type(r) is RegRef:
                if sign < 0:
                    raise LineError(f"a register cannot be subtracted ({r.reg.name})", r.col)
                if _has_reg(k):
                    break
                try:
                    scale = evaluate(k, _no_syms, _no_labels)
                except LineError:
                    raise LineError("the scale must be a number: 1, 2, 4 or 8", k.col) from None
                if scale not in (1, 2, 4, 8):
                    raise LineError(f"scale must be 1, 2, 4 or 8, not {scale}", k.col)
                regs.append((r.reg, scale, True, r.col))
                return
    if _has_reg(node):
        raise LineError("bad memory operand: expected [base + index*scale + displacement]",
                        node.col)
    rest.append((sign, node))


def _no_syms(sym):
    raise LineError(f"{sym.shown!r} is not a number", sym.col)


def _no_labels(label, col):
    raise LineError("a number is needed here", col)


def _has_reg(node) -> bool:
    t = type(node)
    if t is RegRef:
        return True
    if t is Bin:
        return _has_reg(node.a) or _has_reg(node.b)
    if t is Unary:
        return _has_reg(node.a)
    return False


def _build_mem(parts: list, size, seg, col, far) -> AsmMem:
    regs: list = []
    rest: list = []
    for node in parts:
        _flatten(node, 1, regs, rest)
    base = index = None
    scale = 1
    plain = [r for r in regs if not r[2]]
    scaled = [r for r in regs if r[2]]
    if len(regs) > 2:
        raise LineError("too many registers: at most a base and a scaled index", regs[2][3])
    if len(scaled) > 1:
        raise LineError("only one register can be scaled", scaled[1][3])
    for reg, _, _, rcol in regs:
        if reg.kind != "gpr" or reg.size != 32:
            what = "16-bit addressing is" if reg.kind == "gpr" and reg.size == 16 else \
                f"{reg.name!r} is"
            raise LineError(f"{what} not supported in addresses; use 32-bit registers", rcol)
    if scaled:
        index, scale = scaled[0][0], scaled[0][1]
        if plain:
            base = plain[0][0]
    elif len(plain) == 2:
        base, index = plain[0][0], plain[1][0]
        if index.name == "esp":       # esp cannot be an index: swap, as GNU as does
            base, index = index, base
    elif plain:
        base = plain[0][0]
    if index is not None and index.name == "esp":
        col_e = next(r[3] for r in regs if r[0] is index or r[0].name == "esp")
        raise LineError("esp cannot be an index register", col_e)
    disp = None
    for sign, node in rest:
        if disp is None:
            disp = node if sign > 0 else Unary("-", node, node.col)
        else:
            disp = Bin("+" if sign > 0 else "-", disp, node, node.col)
    return AsmMem(size, seg, base, index, scale, disp, col, far)


def parse_operand(toks: list[Token], start: int, end: int, resolve: Resolver,
                  resolve_local) -> AsmReg | AsmMem | AsmImm | Far:
    """Parse ``toks[start:end]`` as one operand."""
    first = toks[start]
    col = first.col
    i = start
    size = None
    far = False
    size_col = 0

    def word(k):
        return toks[k].value.lower() if k < end and toks[k].kind == "id" else None

    w = word(i)
    if w in SIZE_KEYWORDS:
        if word(i + 1) != "ptr":
            raise LineError(f"write '{w} ptr' (GNU Intel syntax needs 'ptr' after a size)",
                            toks[i].col)
        size = SIZE_KEYWORDS[w]
        size_col = toks[i].col
        if size not in (8, 16, 32, 48):
            raise LineError(f"'{w} ptr' operands are not in the vmkit subset", toks[i].col)
        i += 2
    elif w == "ptr":                          # capstone's spelling of a far pointer in memory
        far = True
        i += 1
    elif w == "far":
        if word(i + 1) != "ptr":
            raise LineError("write 'far ptr'", toks[i].col)
        i += 2
        far = True
    if i >= end:
        raise LineError("operand missing after the size", toks[end - 1].end)
    w = word(i)
    if w in ("offset", "short"):
        if size is not None or far:
            raise LineError(f"'{w}' cannot follow a size", toks[i].col)
        p = ExprParser(toks, i + 1, end, resolve, resolve_local)
        if i + 1 >= end:
            raise LineError(f"expected an expression after '{w}'", toks[i].end)
        e = p.parse()
        if p.pos < end:
            raise LineError(f"unexpected {str(toks[p.pos].value)!r}", toks[p.pos].col)
        return AsmImm(e, toks[i + 1].col, offset=(w == "offset"), short=(w == "short"), bare=False)
    seg = None
    if w in REGISTERS and i + 1 < end and toks[i + 1].kind == "op" and toks[i + 1].value == ":":
        reg = REGISTERS[w]
        if reg.kind != "sreg":
            raise LineError(f"{toks[i].value!r} is not a segment register", toks[i].col)
        seg = reg.at(toks[i].col)
        i += 2
        if i >= end:
            raise LineError("expected [address] after the segment", toks[i - 1].end)
    # a lone register
    if i + 1 == end and w in REGISTERS and seg is None and toks[i].kind == "id":
        if size is not None:
            raise LineError(f"no size keyword before register {toks[i].value!r}", size_col)
        return REGISTERS[w].at(toks[i].col)
    has_bracket = any(toks[k].kind == "op" and toks[k].value == "[" for k in range(i, end))
    if has_bracket:
        parts = []
        k = i
        # displacement written before the brackets: label[ebx]
        if not (toks[k].kind == "op" and toks[k].value == "["):
            p = ExprParser(toks, k, end, resolve, resolve_local)
            parts.append(p.parse())
            k = p.pos
        while k < end:
            t = toks[k]
            if t.kind == "op" and t.value == "[":
                close = k + 1
                depth = 1
                while close < end:
                    tv = toks[close]
                    if tv.kind == "op" and tv.value == "[":
                        depth += 1
                    elif tv.kind == "op" and tv.value == "]":
                        depth -= 1
                        if depth == 0:
                            break
                    close += 1
                if close >= end:
                    raise LineError("missing ']'", t.col)
                if close == k + 1:
                    raise LineError("empty [ ]", t.col)
                p = ExprParser(toks, k + 1, close, resolve, resolve_local, allow_regs=True)
                parts.append(p.parse())
                if p.pos < close:
                    raise LineError(f"unexpected {str(toks[p.pos].value)!r} in [ ]",
                                    toks[p.pos].col)
                k = close + 1
            else:
                raise LineError(f"unexpected {str(t.value)!r} after ]", t.col)
        m = _build_mem(parts, size, seg, col, far)
        m.size_col = size_col
        return m
    p = ExprParser(toks, i, end, resolve, resolve_local)
    e = p.parse()
    if p.pos < end:
        t = toks[p.pos]
        if t.kind == "op" and t.value == ":" and seg is None and size is None:
            q = ExprParser(toks, p.pos + 1, end, resolve, resolve_local)
            if p.pos + 1 >= end:
                raise LineError("expected the offset after ':'", t.end)
            off = q.parse()
            if q.pos < end:
                raise LineError(f"unexpected {str(toks[q.pos].value)!r}", toks[q.pos].col)
            return Far(AsmImm(e, toks[i].col, bare=False),
                       AsmImm(off, toks[p.pos + 1].col, bare=False),
                       col)
        raise LineError(f"unexpected {str(t.value)!r}", t.col)
    if seg is not None or size is not None or far:
        m = AsmMem(size, seg, None, None, 1, e, col, far, bare=True)
        m.size_col = size_col
        return m
    return AsmImm(e, toks[i].col)
