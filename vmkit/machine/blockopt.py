"""Clean-ups of a translated block's code (vmkit.machine.blocks), on its Python syntax tree:

* **constants**: a local assigned once from a constant (an immediate operand, a shift count) is
  put where it is used and the expressions around it are folded (``imul eax, eax, K`` no
  longer converts K to signed at run time, ``shr edx, 16`` loses its ``if n:``);
* **dead locals**: an assignment of a value nobody reads, without side effects, goes (the
  overflow of an ``imul`` whose flags the next instruction overwrites, for instance);
* **registers in locals**: in a block that loops, or that uses a register three times or
  more, ``R[k]`` becomes a local ``rk``, loaded at entry and stored back at every exit and
  when anything raises (the state is then exactly what per-instruction mode leaves).

Measured on the ``compute`` guest (the LCG loop of ``benchmarks/bench_speed.py``, 700,000
instructions, Native, best of three, a busy two-core machine): block mode without these three
6.7 M instructions per CPU second, with them 8.1 M.
"""

from __future__ import annotations

import ast

__all__ = ["simplify", "cached_registers", "localize", "walk"]

_AST = ast.AST
#: fields that never hold a node a pass asks about: names and other scalars, and the
#: contexts and operators (Load, Store, Add, Eq ...), leaves that every Name, Attribute,
#: Subscript, BinOp and Compare carries
_LEAF_FIELDS = frozenset(("ctx", "op", "ops", "id", "attr", "kind", "type_comment", "name",
                          "arg", "level", "module", "is_async", "conversion", "simple"))
_CHILD_FIELDS: dict = {ast.Constant: ()}


def _child_fields(t) -> tuple:
    f = _CHILD_FIELDS[t] = tuple(x for x in t._fields if x not in _LEAF_FIELDS)
    return f


def walk(node) -> list:
    """The nodes of the tree under ``node`` as a list, in ``ast.walk``'s order (breadth
    first), without the contexts and operators (``Load``, ``Add``, ``Eq`` ...: no pass of
    the translator asks about them; a test holds this to ``ast.walk``). Walking trees is most
    of what building a block costs: with ``ast.walk`` (a generator over generators) and an
    ``ast.NodeTransformer`` for the folding, a block took 3.2-3.5 ms to build, with this loop
    and :class:`_Fold` 1.6-1.7 ms, the same code (the 424 blocks notebooks 04, 08 and 09
    build, two alternating runs on a busy two-core machine)."""
    out = [node]
    i = 0
    fields = _CHILD_FIELDS
    while i < len(out):
        n = out[i]
        i += 1
        t = type(n)
        fs = fields.get(t)
        if fs is None:
            fs = _child_fields(t)
        for f in fs:
            v = getattr(n, f, None)
            if type(v) is list:
                for x in v:
                    if isinstance(x, _AST):
                        out.append(x)
            elif isinstance(v, _AST):
                out.append(v)
    return out


_PURE = (ast.Name, ast.Constant, ast.BinOp, ast.UnaryOp, ast.Compare, ast.IfExp, ast.BoolOp,
         ast.Load, ast.operator, ast.unaryop, ast.cmpop, ast.boolop, ast.expr_context)


def _const(node):
    """The folded value of a constant expression (no names), or None."""
    if isinstance(node, ast.Constant):
        return node.value
    if any(isinstance(n, (ast.Name, ast.Call, ast.Attribute, ast.Subscript))
           for n in walk(node)):
        return None
    return _eval_const(node)


def _eval_const(node):
    """The value of an expression without names, if it is an int (or bool) of at most 70
    bits, else None."""
    try:
        v = eval(compile(ast.fix_missing_locations(ast.Expression(node)), "", "eval"),  # noqa: S307
                 {"__builtins__": {}})
    except Exception:   # noqa: BLE001 - not foldable: leave it
        return None
    if isinstance(v, bool) or (isinstance(v, int) and abs(v) < 1 << 70):
        return v
    return None


_FOLDABLE = (ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp)
_OPAQUE = (ast.Call, ast.Attribute, ast.Subscript)


class _Fold:
    """Replace constant names and fold what becomes constant, bottom up: what an
    ``ast.NodeTransformer`` with ``visit_Name`` and a folding ``generic_visit`` does (children
    replaced in place), in one recursive function that also tells whether a subtree holds a
    name, call, attribute or subscript (then it cannot fold, and ``_const`` need not walk it
    to find out): a third of a block's simplification went to the transformer's dispatch."""

    def __init__(self, consts: dict):
        self.consts = consts

    def visit(self, node):
        return self._fold(node)[0]

    def _fold(self, node):
        """-> (the node or its replacement, does the result hold a name/call/attribute/
        subscript)"""
        t = type(node)
        if t is ast.Name:
            if isinstance(node.ctx, ast.Load) and node.id in self.consts:
                return ast.copy_location(ast.Constant(self.consts[node.id]), node), False
            return node, True
        if t is ast.Constant:
            return node, False
        if t is ast.IfExp:
            test, test_opaque = self._fold(node.test)
            body, body_opaque = self._fold(node.body)
            orelse, else_opaque = self._fold(node.orelse)
            node.test, node.body, node.orelse = test, body, orelse
            if isinstance(test, ast.Constant):
                return (body, body_opaque) if test.value else (orelse, else_opaque)
            return node, test_opaque or body_opaque or else_opaque
        opaque = t in _OPAQUE
        fs = _CHILD_FIELDS.get(t)
        if fs is None:
            fs = _child_fields(t)
        for f in fs:
            old = getattr(node, f, None)
            if type(old) is list:
                new = []
                for v in old:
                    if isinstance(v, _AST):
                        v, o = self._fold(v)
                        opaque = opaque or o
                    new.append(v)
                old[:] = new
            elif isinstance(old, _AST):
                v, o = self._fold(old)
                opaque = opaque or o
                setattr(node, f, v)
        if not opaque and t in _FOLDABLE:
            v = _eval_const(node)
            if v is not None:
                return ast.copy_location(ast.Constant(v), node), False
        return node, opaque


def _fold_statements(body: list) -> list:
    out = []
    for s in body:
        if isinstance(s, ast.If) and isinstance(s.test, ast.Constant):
            out.extend(_fold_statements(s.body if s.test.value else s.orelse))
            continue
        if isinstance(s, ast.Pass):
            continue
        out.append(s)
    return out


def _names(trees, ctx) -> dict:
    counts: dict = {}
    for t in trees:
        for n in walk(t):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ctx):
                counts[n.id] = counts.get(n.id, 0) + 1
    return counts


def simplify(bodies: list, extra_uses: list) -> list:
    """Constant propagation, folding and dead locals over the instructions' statement lists
    (``bodies``, one list per instruction; returned rewritten). ``extra_uses`` are expressions
    the caller still emits (the loop test): their names stay alive."""
    everything = [s for b in bodies for s in b]
    stores = _names(everything, ast.Store)
    consts = {}
    for s in everything:
        if (isinstance(s, ast.Assign) and len(s.targets) == 1
                and isinstance(s.targets[0], ast.Name) and stores.get(s.targets[0].id) == 1):
            v = _const(_Fold(consts).visit(s.value))
            if v is not None:
                consts[s.targets[0].id] = v
    fold = _Fold(consts)
    bodies = [_fold_statements([fold.visit(s) for s in b]) for b in bodies]
    extra = [fold.visit(e) for e in extra_uses]
    # dead locals, sweep after sweep until nothing more goes; each sweep decides on the names
    # read before it, and what a removed statement read is taken off afterwards (the same as
    # counting the reads of what is left again, without walking it)
    loads = _names([s for b in bodies for s in b] + extra, ast.Load)
    while True:
        removed = []
        for b in bodies:
            for s in list(b):
                if (isinstance(s, ast.Assign) and len(s.targets) == 1
                        and isinstance(s.targets[0], ast.Name)
                        and s.targets[0].id not in loads and _pure(s.value)):
                    b.remove(s)
                    removed.append(s)
        if not removed:
            break
        for name, k in _names(removed, ast.Load).items():
            left = loads[name] - k
            if left:
                loads[name] = left
            else:
                del loads[name]
    extra_uses[:] = extra
    return bodies


def _pure(e) -> bool:
    for n in walk(e):
        if isinstance(n, ast.Subscript):
            if not (isinstance(n.value, ast.Name) and n.value.id in ("R", "PARITY")):
                return False
        elif not isinstance(n, _PURE + (ast.Subscript,)):
            return False
    return True


def cached_registers(bodies: list, loops: bool) -> list:
    """The registers worth holding in locals (empty when ``R`` is used other than as
    ``R[constant]``, e.g. handed to a helper)."""
    uses: dict = {}
    subs = total = 0
    for b in bodies:
        for s in b:
            for n in walk(s):
                if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) \
                        and n.value.id == "R":
                    if not isinstance(n.slice, ast.Constant):
                        return []
                    uses[n.slice.value] = uses.get(n.slice.value, 0) + 1
                    subs += 1
                elif isinstance(n, ast.Name) and n.id == "R":
                    total += 1
    if total != subs:
        return []
    return sorted(k for k, c in uses.items() if loops or c >= 3)


class _Localize(ast.NodeTransformer):
    def __init__(self, regs):
        self.regs = set(regs)
        self.written: set = set()

    def visit_Subscript(self, node):
        self.generic_visit(node)
        if (isinstance(node.value, ast.Name) and node.value.id == "R"
                and isinstance(node.slice, ast.Constant) and node.slice.value in self.regs):
            if isinstance(node.ctx, ast.Store):
                self.written.add(node.slice.value)
            return ast.copy_location(ast.Name(f"r{node.slice.value}", node.ctx), node)
        return node


def localize(bodies: list, regs: list) -> set:
    """Rewrite ``R[k]`` for ``k`` in ``regs`` as local ``rk`` (in place); -> registers
    written."""
    t = _Localize(regs)
    for b in bodies:
        for i, s in enumerate(b):
            b[i] = t.visit(s)
    return t.written
