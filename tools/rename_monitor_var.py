"""One-off migration: the variable that names a *monitor* in the notebooks is ``monitor``, not
``vm`` (``vm`` is a guest VM: ``monitor.vms[i]``, a handler's first argument).

    python tools/rename_monitor_var.py [--check] NOTEBOOK...

Only cell sources change (nbformat; outputs, metadata and ids are kept; re-execute the changed
notebooks afterwards). In code cells the name token ``vm`` becomes ``monitor`` (``mon`` in a
cell that already uses ``monitor`` for something else), and so does ``vm.`` inside strings
(f-strings, table headers that show the expression); ``x.vm`` attributes and ``vm=`` keyword
arguments stay. A code cell where ``vm`` is a guest VM (a handler ``def f(vm, insn)``, a loop
over ``mon.vms``) is left alone. In markdown, ``vm.``/``vm,`` inside backquoted code becomes
``monitor.`` except on a line about handlers (``handler``, ``insn``). Rerunnable: a notebook
already renamed does not change. ``--check`` prints what would change and writes nothing.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tokenize

import nbformat

from vmkit.nbtools.hygiene import write_notebook

#: a code cell where ``vm`` is a guest VM or a VM index, not a monitor
GUEST_VM_CELL = (re.compile(r"def \w+\(vm, insn\)"), re.compile(r"for vm in \w+\.vms\b"),
                 re.compile(r"def fingerprint\(vm\)"), re.compile(r"for vm, start, end in"))
#: a markdown line about handlers, whose ``vm`` is the guest VM the handler receives
HANDLER_LINE = re.compile(r"handler|insn")
_NAME = re.compile(r"vm\d*")          # vm, and vm2 for a second monitor
_IN_STRING = re.compile(r"(?<![\w.])vm(?=\.)")
_CODE_SPAN = re.compile(r"`[^`\n]*`")


def rename_code(src: str) -> str:
    if any(p.search(src) for p in GUEST_VM_CELL) or not re.search(r"\bvm\d*\b", src):
        return src
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(src).readline))
    except (tokenize.TokenError, SyntaxError):
        return src         # IPython magics or an unfinished cell: leave it to a person
    names = {t.string for t in toks if t.type == tokenize.NAME}
    new = "mon" if "monitor" in names else "monitor"
    if new == "mon":
        assert "mon" not in names, src
    lines = src.splitlines(keepends=True)
    edits = []       # (row, col, old length, text)
    depth = 0
    for i, t in enumerate(toks):
        if t.type == tokenize.OP and t.string in "([{":
            depth += 1
        elif t.type == tokenize.OP and t.string in ")]}":
            depth -= 1
        if t.type == tokenize.NAME and _NAME.fullmatch(t.string):
            prev = toks[i - 1].string if i else ""
            nxt = toks[i + 1].string if i + 1 < len(toks) else ""
            if prev == "." or (depth and nxt == "="):
                continue
            edits.append((t.start, t.end, new + t.string[2:]))
        elif t.type == tokenize.STRING and _IN_STRING.search(t.string):
            edits.append((t.start, t.end, _IN_STRING.sub(new, t.string)))
    comments = {t.start[0]: (t.start[1], t.string) for t in toks if t.type == tokenize.COMMENT}
    shifts = _continuation_shifts(toks, edits)
    for (r0, c0), (r1, c1), text in reversed(edits):
        if r0 == r1:
            ln = lines[r0 - 1]
            lines[r0 - 1] = ln[:c0] + text + ln[c1:]
        else:          # a string over several lines
            head, tail = lines[r0 - 1][:c0], lines[r1 - 1][c1:]
            lines[r0 - 1:r1] = [head + text + tail]
    out = "".join(lines).splitlines(keepends=True)
    for row, d in shifts.items():         # continuation lines aligned under the first line
        out[row - 1] = " " * d + out[row - 1]
    for row, (col, text) in comments.items():   # trailing comments back in their column
        ln = out[row - 1]
        at = ln.rfind(text)
        pad = len(ln[:at]) - len(ln[:at].rstrip(" "))
        cut = min(at - col, pad - 2)
        if at > col and cut > 0 and ln[:at].strip():
            out[row - 1] = ln[:at - cut] + ln[at:]
    return "".join(out)


def _continuation_shifts(toks, edits) -> dict:
    """row -> spaces to add: a continuation line of a bracketed expression indented past an
    edit of the logical line's first row moves right by what that row grew before its
    indentation (visual indent kept)."""
    starts = {}                                   # row -> column of the first token there
    for t in toks:
        if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT,
                          tokenize.DEDENT):
            starts.setdefault(t.start[0], t.start[1])
    growth: dict = {}                             # row -> [(column, growth)]
    for (r0, c0), (r1, c1), text in edits:
        if r0 == r1:
            growth.setdefault(r0, []).append((c0, len(text) - (c1 - c0)))
    shifts, first = {}, None
    for t in toks:
        if first is None and t.type not in (tokenize.NL, tokenize.COMMENT, tokenize.INDENT,
                                            tokenize.DEDENT):
            first = t.start[0]
        if t.type == tokenize.NEWLINE:
            anchors = {u.start[1] for u in toks if u.start[0] == first} | {
                u.end[1] for u in toks if u.start[0] == first and u.string in "([{"}
            for row in range(first + 1, t.start[0] + 1):
                if row in starts and starts[row] in anchors:     # a visual indent
                    d = sum(g for c, g in growth.get(first, ()) if c < starts[row])
                    if d:
                        shifts[row] = d
            first = None
    return shifts


def rename_markdown(src: str) -> str:
    out = []
    for line in src.splitlines(keepends=True):
        if not HANDLER_LINE.search(line):
            line = _CODE_SPAN.sub(lambda m: re.sub(r"(?<![\w.])vm(?=\.)", "monitor", m[0]),
                                  line)
        out.append(line)
    return "".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="+")
    ap.add_argument("--check", action="store_true", help="print the changes, write nothing")
    args = ap.parse_args(argv)
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        changed = 0
        for k, cell in enumerate(nb.cells):
            fn = rename_code if cell.cell_type == "code" else rename_markdown
            src = fn(cell.source)
            if src != cell.source:
                changed += 1
                if args.check:
                    old, new = cell.source.splitlines(), src.splitlines()
                    for a, b in zip(old, new):
                        if a != b:
                            print(f"{path} cell {k}:\n  - {a}\n  + {b}")
                cell.source = src
        if changed and not args.check:
            write_notebook(nb, path)
        print(f"{path}: {changed} cell(s) {'would change' if args.check else 'changed'}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
