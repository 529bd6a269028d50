"""Macros of the vmkit assembler (``.macro`` ... ``.endm``, GNU as semantics; the dialect is
documented in :mod:`vmkit.isa.asm`).

Everything here is text: a macro body is kept as source lines, each compiled once into a
*template* (literal text and parameter slots), and an invocation's arguments are split from the
raw text after the macro name the way GNU as splits them (commas, or blanks between two words;
brackets, parentheses and quotes keep an argument together). :class:`Macro.expand` gives the
body lines with the arguments substituted; the assembler then reads those lines as usual.
"""

from __future__ import annotations

import re

from vmkit.isa.asm_parse import LineError

__all__ = ["Macro", "define", "split_args", "compile_line", "MAX_DEPTH"]

MAX_DEPTH = 100          # GNU as: "macros nested too deeply" past 100 levels
_WORD = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.$")
_NAME_START = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_.$")
_PARAM = re.compile(r"([A-Za-z_.$][A-Za-z0-9_.$]*)\s*(?::\s*([A-Za-z]+))?\s*(?:=(.*))?$", re.S)
_KEYWORD = re.compile(r"([A-Za-z_.$][A-Za-z0-9_.$]*)\s*=(.*)$", re.S)


class Param:
    __slots__ = ("name", "default", "req", "vararg")

    def __init__(self, name, default, req, vararg):
        self.name, self.default, self.req, self.vararg = name, default, req, vararg


class Macro:
    """A macro definition: ``name`` as written, ``params``, and the body as ``(line, text)``
    pairs of ``file`` with their compiled templates (one :func:`compile_line` each)."""

    def __init__(self, name, params, file, line, body):
        self.name = name
        self.params: list[Param] = params
        self.file = file
        self.line = line                         # the .macro line
        self.body = body                         # [(line number, source text)]
        self.index = {p.name: k for k, p in enumerate(params)}
        self.templates = [compile_line(text, self.index, name) for _, text in body]

    def bind(self, args, end_col) -> list[str]:
        """Parameter values from :func:`split_args` output; ``end_col`` is where a missing
        argument would go (for errors)."""
        params = self.params
        values: list[str | None] = [None] * len(params)
        pos = 0
        keyword_seen = False
        for text, col, rest, blank in args:
            if pos < len(params) and params[pos].vararg and not keyword_seen:
                values[pos] = rest
                pos = len(params)
                break
            m = _KEYWORD.match(text)
            if m:
                name = m.group(1)
                k = self.index.get(name)
                if k is None:
                    raise LineError(f"macro {self.name} has no parameter named {name!r} "
                                    f"(parameters: {self._names()})", col)
                values[k] = _unquote(m.group(2).strip())
                keyword_seen = True
                continue
            if keyword_seen:
                raise LineError("positional arguments cannot follow keyword arguments "
                                "(name=value)", col)
            if pos >= len(params):
                hint = ""
                if any(a[3] for a in args):
                    hint = ("; arguments are separated by commas or blanks, so an argument "
                            "with a blank in it needs quotes (\"dword ptr [eax]\")")
                raise LineError(f"too many arguments for macro {self.name} (it takes "
                                f"{len(params)}: {self._names()}){hint}", col)
            values[pos] = text
            pos += 1
        out = []
        for p, v in zip(params, values):
            if v is None or v == "":
                if p.req:
                    raise LineError(f"macro {self.name} needs a value for its parameter "
                                    f"{p.name!r} (:req)", end_col)
                v = p.default if p.default is not None else ""
            out.append(v)
        return out

    def expand(self, values: list[str], counter: int) -> list[tuple[int, str]]:
        """The body with ``values`` substituted and ``\\@`` replaced by ``counter``."""
        at = str(counter)
        out = []
        for (ln, _), parts in zip(self.body, self.templates):
            if type(parts) is str:
                out.append((ln, parts))
            else:
                out.append((ln, "".join(p if type(p) is str else (at if p < 0 else values[p])
                                        for p in parts)))
        return out

    def _names(self) -> str:
        return ", ".join(p.name for p in self.params) or "none"


def define(rest: str, col: int, name_tok, file: str, line: int, body) -> Macro:
    """A :class:`Macro` named by ``name_tok`` whose parameters are ``rest`` (the text after the
    name, starting at column ``col``, without its comment)."""
    name = name_tok.value
    s = rest.lstrip()
    if s.startswith(","):              # GNU as accepts ".macro NAME, a, b"
        col += len(rest) - len(s) + 1
        rest = s[1:]
    params = []
    seen = set()
    for ptext, pcol, _, _ in split_args(rest, col, keep_quotes=True):
        m = _PARAM.match(ptext)
        if not m:
            raise LineError(f"bad macro parameter {ptext!r} (write name, name=default or "
                            f"name:req)", pcol)
        pname, qual, default = m.groups()
        if pname in seen:
            raise LineError(f"duplicate parameter {pname!r} in macro {name}", pcol)
        if qual is not None and qual not in ("req", "vararg"):
            raise LineError(f"unknown parameter qualifier ':{qual}' (GNU as has :req and "
                            f":vararg)", pcol)
        if params and params[-1].vararg:
            raise LineError(":vararg must be the last parameter", pcol)
        seen.add(pname)
        params.append(Param(pname, _unquote(default.strip()) if default is not None else None,
                            qual == "req", qual == "vararg"))
    return Macro(name, params, file, line, body)


def split_args(s: str, col0: int, keep_quotes: bool = False) -> list[tuple]:
    """Arguments in ``s`` (text that starts at column ``col0``, comments already cut off) as
    ``(text, column, rest of the line from there, True if it follows a blank, not a comma)``.
    As in GNU as, commas separate arguments, and so do blanks between two words (``m eax
    ebx``, ``m dword ptr`` is two arguments); brackets, parentheses and quotes keep an argument
    together (``[edx + 4]``, ``(1 + 2)``, ``"dword ptr [eax]"``), and a quoted argument loses
    its quotes. Any other blank outside them is an error, because GNU as's reading of it is
    erratic (``1 - 1`` is three arguments, ``1 + 1`` one, ``[edx] esi`` one). With
    ``keep_quotes`` (a parameter list), quotes stay and such blanks are dropped."""
    out = []
    n = len(s)
    i = 0
    while i < n and s[i] in " \t":
        i += 1
    if i >= n:
        return out
    blank = False
    while True:
        start = i
        buf = []
        depth = 0
        while i < n:
            c = s[i]
            if c == '"' or c == "'":
                j = _skip_quoted(s, i)
                buf.append(s[i:j])
                i = j
                continue
            if c in "([":
                depth += 1
            elif c in ")]":
                depth -= 1
            elif c == "," and depth <= 0:
                break
            elif c in " \t":
                j = i
                while j < n and s[j] in " \t":
                    j += 1
                if j >= n or s[j] == ",":
                    i = j
                    continue
                before = s[i - 1]
                after = s[j]
                if depth > 0:
                    if before in _WORD and after in _WORD:
                        buf.append(" ")
                    i = j
                    continue
                if (before in _WORD or before == '"') and (after in _WORD or after == '"'):
                    break                       # blanks between two words: next argument
                if not keep_quotes:
                    # GNU as splits "1 - 1" in three, "1 -1" in two, and glues "1 + 1",
                    # "[edx] esi" and "(1) 2" into one argument: refuse what it reads
                    # in its own way
                    raise LineError("ambiguous blank in macro arguments (GNU as splits or "
                                    "joins arguments at blanks in its own ways): separate "
                                    "arguments with commas, and put an expression in "
                                    "parentheses and other text with blanks in quotes "
                                    "(\"dword ptr [eax]\")", col0 + i)
                i = j                           # in parameter lists: "a = 7" is "a=7"
                continue
            buf.append(c)
            i += 1
        text = "".join(buf)
        if not keep_quotes:
            text = _unquote(text)
        out.append((text, col0 + start, s[start:].strip(), blank))
        if i >= n:
            break
        blank = s[i] != ","
        if not blank:
            i += 1
        while i < n and s[i] in " \t":
            i += 1
        if i >= n:                              # "m 1," : an empty last argument
            out.append(("", col0 + i, "", False))
            break
    return out


def _skip_quoted(s: str, i: int) -> int:
    q = s[i]
    j = i + 1
    while j < len(s):
        if s[j] == "\\":
            j += 2
            continue
        if s[j] == q:
            return j + 1
        j += 1
    return len(s)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"' and _skip_quoted(text, 0) == \
            len(text):
        return text[1:-1]
    return text


def compile_line(text: str, index: dict, mname: str, strict: bool = True):
    """Literal text and slots (parameter index, -1 for ``\\@``) of one body line; the text
    itself when it has no backslash. Raises LineError for ``\\name`` that is no parameter
    (unless not ``strict``: in a macro defined inside this one)."""
    if "\\" not in text:
        return text
    parts: list = []
    lit = []
    i, n = 0, len(text)
    quote = None
    while i < n:
        c = text[i]
        if quote is None:
            if c == ";" or c == "#" or (c == "/" and text.startswith("//", i)):
                lit.append(text[i:])
                break
            if c == '"' or c == "'":
                quote = c
        elif c == quote:
            quote = None
        if c != "\\":
            lit.append(c)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < n else ""
        if nxt == "@":
            parts.append("".join(lit))
            lit = []
            parts.append(-1)
            i += 2
            continue
        if nxt == "(" and text.startswith("()", i + 1):
            i += 3                              # "\()" separates a parameter from text
            continue
        if nxt in _NAME_START:
            j = i + 1
            while j < n and text[j] in _WORD:
                j += 1
            k = index.get(text[i + 1:j])
            if k is not None:
                parts.append("".join(lit))
                lit = []
                parts.append(k)
                i = j
                continue
            if quote is None and strict:
                names = ", ".join("\\" + p for p in index) or "none"
                raise LineError(f"'\\{text[i + 1:j]}' is not a parameter of macro {mname} "
                                f"(its parameters: {names})", i + 1)
        # an escape in a string ("\n"), or a backslash the line will complain about
        lit.append(c)
        if nxt and quote is not None:
            lit.append(nxt)
            i += 2
        else:
            i += 1
    parts.append("".join(lit))
    return parts
