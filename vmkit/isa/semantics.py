"""The semantics registry: one table drives the interpreter, the listing, ``classify``, the
translator and the reference card (STYLE.md, after py65's opcode table).

Each entry maps capstone instruction ids to a *compile function* ``f(e: Emit, insn)`` that
emits Python source for that one instruction. The machine compiles each decoded instruction
once into a small specialised Python function (decode once, dispatch through the table,
never re-parse operands), so running an instruction costs one dict lookup and one call.

Three layers, as in STYLE.md:

* operand and effective-address helpers (:class:`Emit`: ``read``, ``write``, ``addr``);
* one compile function per instruction family (``ops_*.py``);
* thin per-form registrations (``@semantics("add", "sub", ...)``).

Generated code runs with these globals (set up by the machine, see ``Machine._globals``):
``C`` the CPU, ``R`` its register list, ``M`` the machine, ``rd1 rd2 rd4 wr1 wr2 wr4`` memory
accessors for linear addresses in the current mode (the machine's own carry ``fill`` and
``x8``: REP STOS and POPAD/PUSHAD in one slice where the page allows), ``Fault``, ``Resched``,
``PARITY``, ``lazy_status`` and the lazy kinds ``LZ_*``.
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass, field

from capstone import x86_const as X

from vmkit.isa.decode import Imm, Insn, Mem, Reg

__all__ = ["semantics", "REGISTRY", "Semantics", "Emit", "compile_insn", "lookup",
           "MASKS", "SIGNS"]

MASKS = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}
SIGNS = {1: 0x80, 2: 0x8000, 4: 0x80000000}


@dataclass
class Semantics:
    """One registry entry (one instruction family's forms)."""
    mnemonics: tuple[str, ...]
    compile: object
    sdm: str                      # the Intel SDM entry
    flags: str = ""               # flags written (defined)
    undefined: str = ""           # flags left undefined
    category: str = "native"      # cost category: native, system, io, control, string
    doc: str = ""
    privileged_doc: bool = False  # for the reference card only; classify() experiments
    sensitive_doc: bool = False
    ids: tuple[int, ...] = field(default_factory=tuple)


REGISTRY: dict[int, Semantics] = {}
BY_MNEMONIC: dict[str, Semantics] = {}


def _cs_id(mnemonic: str) -> int:
    name = "X86_INS_" + mnemonic.upper()
    try:
        return getattr(X, name)
    except AttributeError:
        raise ValueError(f"capstone has no instruction {mnemonic!r}") from None


def semantics(*mnemonics: str, sdm: str, flags: str = "", undefined: str = "",
              category: str = "native", privileged: bool = False, sensitive: bool = False):
    """Register a compile function for the capstone mnemonics given (decorator)."""
    def deco(fn):
        ids = tuple(_cs_id(m) for m in mnemonics)
        entry = Semantics(tuple(mnemonics), fn, sdm, flags, undefined, category,
                          (fn.__doc__ or "").strip(), privileged, sensitive, ids)
        for i, m in zip(ids, mnemonics):
            if i in REGISTRY:
                raise ValueError(f"{m} registered twice")
            REGISTRY[i] = entry
            BY_MNEMONIC[m] = entry
        return fn
    return deco


def lookup(insn_id: int) -> Semantics | None:
    _load()
    return REGISTRY.get(insn_id)


_loaded = False


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from vmkit.isa import (ops_arith, ops_control, ops_logic, ops_move,  # noqa: F401
                               ops_stack, ops_string, ops_system)


class Unsupported(Exception):
    """A form the kit has no semantics for (becomes UnsupportedInstruction)."""


class Emit:
    """Builds the Python source of one compiled instruction.

    ``line(s)`` appends a statement; ``read(op)`` returns an expression for an operand's value
    (masked to its size); ``write(op, expr)`` appends the store; ``addr(op)`` the linear address
    of a memory operand (computed once, in local ``ea``). Compile functions set ``e.jumps`` when
    they assign ``C.eip`` themselves, and ``e.resched`` when the run loop must look at the
    machine again once the instruction has completed (IF, CPL, paging or devices changed).
    """

    def __init__(self, insn: Insn):
        self.insn = insn
        self.lines: list[str] = []
        self.jumps = False
        self.resched = False
        self._ea: dict[int, str] = {}
        self._indent = 0

    # --- statements -----------------------------------------------------------------------
    def line(self, s: str) -> None:
        self.lines.append("    " * self._indent + s)

    def indent(self) -> "_Indent":
        return _Indent(self)

    # --- operands ---------------------------------------------------------------------------
    def addr(self, m: Mem) -> str:
        """Local variable holding the linear address of memory operand ``m`` (flat segments:
        every segment base is 0, see docs/architecture.md)."""
        key = id(m)
        if key in self._ea:
            return self._ea[key]
        name = f"ea{len(self._ea) or ''}"
        parts = []
        if m.base is not None:
            parts.append(f"R[{m.base}]")
        if m.index is not None:
            parts.append(f"R[{m.index}]" if m.scale == 1 else f"R[{m.index}] * {m.scale}")
        if m.disp or not parts:
            parts.append(hex(m.disp))
        expr = " + ".join(parts)
        if len(parts) > 1 or m.disp > 0xFFFFFFFF or (m.index is not None and m.scale > 1):
            expr = f"({expr}) & 0xFFFFFFFF"
        self.line(f"{name} = {expr}")
        self._ea[key] = name
        return name

    def read(self, op, size: int | None = None) -> str:
        """Expression for the (unsigned) value of ``op``."""
        if isinstance(op, Imm):
            return hex(op.value)
        if isinstance(op, Reg):
            if op.kind == "gpr":
                if op.size == 4:
                    return f"R[{op.index}]"
                if op.size == 2:
                    return f"(R[{op.index}] & 0xFFFF)"
                if op.high:
                    return f"((R[{op.index}] >> 8) & 0xFF)"
                return f"(R[{op.index}] & 0xFF)"
            if op.kind == "seg":
                return f"C.seg[{op.index}].selector"
            raise Unsupported(f"register {op.name} as a plain operand")
        if isinstance(op, Mem):
            a = self.addr(op)
            return f"rd{size or op.size}({a})"
        raise Unsupported(repr(op))

    def write(self, op, expr: str) -> None:
        """Store ``expr`` (already masked to the operand size) into ``op``."""
        if isinstance(op, Reg) and op.kind == "gpr":
            i = op.index
            # ``expr`` is parenthesized: it may be ``a ^ m``, and ``<<`` binds tighter than ``^``
            if op.size == 4:
                self.line(f"R[{i}] = {expr}")
            elif op.size == 2:
                self.line(f"R[{i}] = (R[{i}] & 0xFFFF0000) | ({expr})")
            elif op.high:
                self.line(f"R[{i}] = (R[{i}] & 0xFFFF00FF) | (({expr}) << 8)")
            else:
                self.line(f"R[{i}] = (R[{i}] & 0xFFFFFF00) | ({expr})")
        elif isinstance(op, Mem):
            a = self.addr(op)
            self.line(f"wr{op.size}({a}, {expr})")
        else:
            raise Unsupported(f"cannot write {op!r}")

    # --- frequent pieces --------------------------------------------------------------------
    def privileged(self) -> None:
        """#GP(0) unless CPL is 0 (SDM Vol. 3A, 5.9)."""
        self.line("if C.cpl: raise Fault(13, 0, detail='privileged instruction at CPL %d' % C.cpl)")

    def set_eip(self, expr: str) -> None:
        self.line(f"C.eip = {expr}")
        self.jumps = True

    def source(self) -> str:
        body = list(self.lines)
        if not self.jumps:
            body.append(f"C.eip = {self.insn.next:#x}")
        if self.resched:
            body.append("raise Resched()")
        return "def _insn():\n" + "\n".join("    " + b for b in body) + "\n"


class _Indent:
    def __init__(self, e: Emit):
        self.e = e

    def __enter__(self):
        self.e._indent += 1

    def __exit__(self, *a):
        self.e._indent -= 1


_CODE_CACHE: dict[tuple[int, bytes], types.CodeType | str] = {}
#: bound on the code cache (cleared when full, like the decode cache): without one, a long
#: run of ever-new instructions (the differential oracle compiles ~20 fresh ones per case)
#: grows it by about 25 KB per case, a gigabyte per 50,000 cases.
_CODE_CACHE_MAX = 1 << 16


def source_of(insn: Insn) -> str:
    """The Python source that the kit runs for ``insn`` (for the curious and for tests)."""
    _load()
    entry = REGISTRY.get(insn.id)
    if entry is None or insn.adsize or insn.lock and insn.id not in _LOCKABLE:
        raise Unsupported(insn.mnemonic)
    e = Emit(insn)
    entry.compile(e, insn)
    return e.source()


def code_of(insn: Insn) -> types.CodeType | str:
    """Code object for ``insn`` (process-wide cache keyed by address and bytes), or the reason
    the kit cannot run it (a string). The same bytes at another address are moved rather
    than compiled again where that is exact (:func:`_moved`)."""
    key = (insn.address, insn.raw)
    c = _CODE_CACHE.get(key)
    if c is None:
        try:
            src = source_of(insn)
        except Unsupported as ex:
            c = str(ex) or insn.mnemonic
        else:
            filename = f"<{insn.address:#010x}: {insn.text}>"
            c = _moved(insn, src, filename)
            if c is None:
                mod = compile(src, filename, "exec")
                c = next(k for k in mod.co_consts if isinstance(k, types.CodeType))
                _learn_move(insn, src, c)
        if len(_CODE_CACHE) >= _CODE_CACHE_MAX:
            _CODE_CACHE.clear()
            _MOVES.clear()
        _CODE_CACHE[key] = c
    return c


# Moving compiled instructions. Guests whose kernels differ a little (another guest, another
# parameter) run the same instruction bytes at shifted addresses: notebook 08 compiled 3,938
# instructions holding 938 distinct byte strings, about 0.1 ms of ``compile`` each. An
# instruction's source depends on its address only through literals of its own address and
# the next ones (``C.eip = next``, a REP loop's restart) and of a relative branch's target:
# the code at address B is the code at A with those constants (A + k, k < 16 or the
# target's distance) moved to B + k.
# That is used only where it is exact, down to the column table of tracebacks: between
# addresses whose literals have the same lengths (the key holds the address's), the first two
# addresses a byte string is compiled at are compiled both, and it moves from then on only if
# the code of the second was the first one's moved (no folded expression or merged constant
# involves the address), and at each new address only if the source there is the first
# one's with those literals moved, each as long as before.
_MOVES: dict[tuple, tuple | None] = {}
_HEX = re.compile(r"0x[0-9a-f]+")


def _offsets(insn: Insn) -> frozenset:
    """The distances from ``insn``'s address of the values its source may hold because of
    its address: the next 16 bytes, and a relative branch's target (modulo 2**32)."""
    ops = insn.operands
    name = insn.mnemonic.split()[-1]
    if (len(ops) == 1 and isinstance(ops[0], Imm) and ops[0].size == 4
            and (name[0] == "j" or name in ("call", "loop", "loope", "loopne"))):
        return _NEAR | {(ops[0].value - insn.address) & 0xFFFFFFFF}
    return _NEAR


_NEAR = frozenset(range(16))


def _literal_pieces(src: str, base: int, offsets: frozenset) -> list:
    """``src`` split at the hexadecimal literals of ``base + k`` for k in ``offsets``
    (modulo 2**32): text, and k for such a literal."""
    out: list = []
    at = 0
    for m in _HEX.finditer(src):
        k = (int(m.group(0), 16) - base) & 0xFFFFFFFF
        if k in offsets:
            out.append(src[at:m.start()])
            out.append(k)
            at = m.end()
    out.append(src[at:])
    return out


def _moved_source(pieces: list, base: int, b: int) -> str | None:
    """The source split by :func:`_literal_pieces` with ``base + k`` moved to ``b + k``, or
    None when a moved literal is longer or shorter (the code's column table would differ)."""
    out = []
    for p in pieces:
        if p.__class__ is not str:
            t = f"{(b + p) & 0xFFFFFFFF:#x}"
            if len(t) != len(f"{(base + p) & 0xFFFFFFFF:#x}"):
                return None
            p = t
        out.append(p)
    return "".join(out)


def _moved_code(code: types.CodeType, old: int, new: int, offsets: frozenset,
                filename: str) -> types.CodeType:
    """``code`` with every integer constant ``old + k`` (k in ``offsets``, modulo 2**32)
    replaced by ``new + k``, in nested code too, named ``filename``."""
    consts = tuple(
        (new + c - old) & 0xFFFFFFFF
        if type(c) is int and 0 <= c < 1 << 32 and (c - old) & 0xFFFFFFFF in offsets
        else _moved_code(c, old, new, offsets, filename) if isinstance(c, types.CodeType)
        else c
        for c in code.co_consts)
    return code.replace(co_consts=consts, co_filename=filename)


def _moved(insn: Insn, src: str, filename: str) -> types.CodeType | None:
    """The code of ``insn`` moved from the address its bytes were first compiled at, when that
    is known to be exact (see above) and its source here is that one's moved; else None."""
    seen = _MOVES.get((insn.raw, len(f"{insn.address:#x}")))
    if seen is None or not seen[0]:
        return None
    _, base, pieces, code, offsets = seen
    if _moved_source(pieces, base, insn.address) != src:
        return None
    return _moved_code(code, base, insn.address, offsets, filename)


def _learn_move(insn: Insn, src: str, code: types.CodeType) -> None:
    """After compiling ``insn``: remember the first address of its bytes; at the second,
    whether moving the first one's code gives exactly what was compiled."""
    key = (insn.raw, len(f"{insn.address:#x}"))
    seen = _MOVES.get(key, 0)
    if seen == 0:
        offsets = _offsets(insn)
        _MOVES[key] = (False, insn.address, _literal_pieces(src, insn.address, offsets), code,
                       offsets)
    elif seen is not None and not seen[0] and seen[1] != insn.address:
        _, base, pieces, first, offsets = seen
        ok = (_moved_source(pieces, base, insn.address) == src
              and _moved_code(first, base, insn.address, offsets, "") == code)
        _MOVES[key] = (True, base, pieces, first, offsets) if ok else None


def compile_insn(insn: Insn, globals_: dict):
    """A zero-argument function that runs ``insn`` on the machine whose globals are given,
    or a string saying why the kit cannot."""
    c = code_of(insn)
    if isinstance(c, str):
        return c
    return types.FunctionType(c, globals_, insn.text)


_LOCKABLE = frozenset(_cs_id(m) for m in ("add", "adc", "sub", "sbb", "and", "or", "xor",
                                          "inc", "dec", "neg", "not", "xchg", "cmpxchg"))
