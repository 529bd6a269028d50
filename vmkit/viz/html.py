"""HTML tables for CPUs, EFLAGS, disassembly, events and console text.

Pure functions: they read a CPU, a machine or a list of events and return an HTML string; they
change nothing that the guest can see (disassembly uses :meth:`Machine.insn_at`, which decodes
without fetch side effects). Styles are inline so the HTML looks the same in a notebook, in an
``ipywidgets.HTML``, in exported HTML and on a feedback page. Highlighting never relies on colour
alone: changed registers are also bold and marked, set flags also read ``=1``.

>>> from vmkit.viz import registers_html, flags_html
>>> html = registers_html(monitor.vcpu, previous=before)      # doctest: +SKIP
"""

from __future__ import annotations

import html as _html
import os
from dataclasses import dataclass
from typing import Iterable

from vmkit.viz.render import (CSS_BORDER, CSS_HIGHLIGHT, CSS_MUTED, CSS_PANEL, CSS_TEXT,
                               OKABE_ITO)

__all__ = ["register_values", "registers_html", "flags_html", "flag_values", "DisasmRow",
           "disassembly_rows", "disassembly_html", "describe_event", "events_html",
           "console_html", "source_line", "REGISTER_ORDER"]

#: the registers a register table shows, in display order, with the width of their hex form
REGISTER_ORDER = (("eax", 8), ("ebx", 8), ("ecx", 8), ("edx", 8), ("esi", 8), ("edi", 8),
                  ("ebp", 8), ("esp", 8), ("eip", 8), ("eflags", 8),
                  ("cs", 4), ("ss", 4), ("ds", 4), ("es", 4), ("fs", 4), ("gs", 4),
                  ("cr0", 8), ("cr2", 8), ("cr3", 8), ("cr4", 8), ("cpl", 1))

#: EFLAGS bits shown by name (SDM Vol. 1, 3.4.3), low to high; IOPL is shown as a number
FLAG_BITS = (("CF", 0), ("PF", 2), ("AF", 4), ("ZF", 6), ("SF", 7), ("TF", 8), ("IF", 9),
             ("DF", 10), ("OF", 11), ("NT", 14), ("RF", 16), ("VM", 17), ("AC", 18), ("ID", 21))
FLAG_HELP = {"CF": "carry", "PF": "parity", "AF": "adjust (BCD carry)", "ZF": "zero",
             "SF": "sign", "TF": "trap (single-step)", "IF": "interrupts enabled",
             "DF": "direction", "OF": "overflow", "NT": "nested task", "RF": "resume",
             "VM": "virtual-8086 mode", "AC": "alignment check", "ID": "CPUID available",
             "IOPL": "I/O privilege level"}

_TABLE = ('style="border-collapse:collapse;font-family:monospace;font-size:12px;'
          'line-height:1.25"')
# explicit alignment and wrapping: notebook and nbconvert stylesheets right-align table cells
_CELL = f"padding:1px 6px;border:1px solid {CSS_BORDER};text-align:left;white-space:nowrap;"
_CHANGED = f"{CSS_HIGHLIGHT}font-weight:bold;"
# a cell whose text may wrap (a long event description) instead of widening its column
_WRAP = "white-space:normal;overflow-wrap:anywhere;"


def _esc(s) -> str:
    return _html.escape(str(s), quote=True)


def _caption(title: str | None) -> str:
    return (f'<caption style="text-align:left;font-weight:bold;font-family:sans-serif;'
            f'font-size:12px;padding:2px 0">{_esc(title)}</caption>' if title else "")


# ---- registers --------------------------------------------------------------------------------

def register_values(cpu) -> dict:
    """The registers of ``cpu`` as a plain dict (name -> int), for comparing later. Registers the
    CPU object does not have are left out (a virtual CPU may lack some)."""
    out = {}
    for name, _w in REGISTER_ORDER:
        try:
            v = getattr(cpu, name)
        except Exception:   # a partial virtual CPU: show what there is
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            continue
        out[name] = int(v)
    return out


def _values(x) -> dict:
    if x is None:
        return {}
    if isinstance(x, dict):
        return x
    return register_values(x)


def registers_html(cpu, previous=None, *, title: str | None = "registers",
                   columns: int = 2) -> str:
    """A table of ``cpu``'s registers (general, EIP, EFLAGS, segment selectors, CR0-CR4, CPL).

    ``previous`` (a CPU or a dict from :func:`register_values`) marks the registers whose value
    differs: highlighted, bold, and flagged with a ``*`` and a tooltip giving the old value.
    ``cpu`` may also be a dict from :func:`register_values`."""
    now = _values(cpu)
    before = _values(previous)
    cells = []
    for name, width in REGISTER_ORDER:
        if name not in now:
            continue
        v = now[name]
        text = str(v) if name == "cpl" else f"{v:0{width}x}"
        old = before.get(name)
        changed = previous is not None and old is not None and old != v
        if changed:
            olds = str(old) if name == "cpl" else f"{old:0{width}x}"
            cells.append(f'<td style="{_CELL}color:{CSS_MUTED}">{name}</td>'
                         f'<td style="{_CELL}{_CHANGED}" class="vmkit-changed" '
                         f'title="changed (was {olds})">{text}*</td>')
        else:
            cells.append(f'<td style="{_CELL}color:{CSS_MUTED}">{name}</td>'
                         f'<td style="{_CELL}">{text}&nbsp;</td>')
    rows = []
    for i in range(0, len(cells), columns):
        rows.append("<tr>" + "".join(cells[i:i + columns]) + "</tr>")
    return f'<table class="vmkit-registers" {_TABLE}>{_caption(title)}{"".join(rows)}</table>'


# ---- EFLAGS -----------------------------------------------------------------------------------

def flag_values(eflags) -> dict:
    """EFLAGS as named bits: name -> 0/1, plus "IOPL" -> 0..3. Accepts an int, an ``EFLAGS``
    IntFlag or a CPU (its ``eflags``)."""
    if not isinstance(eflags, int):
        eflags = eflags.eflags
    v = int(eflags)
    out = {name: (v >> bit) & 1 for name, bit in FLAG_BITS}
    out["IOPL"] = (v >> 12) & 3
    return out


def flags_html(eflags, previous=None, *, title: str | None = "EFLAGS",
               per_row: int | None = None) -> str:
    """EFLAGS as named bits: one cell per flag reading ``ZF=1`` or ``ZF=0`` (set ones in bold on
    a tint), IOPL as a number, and the hex value; the status flags on one row, the system flags
    on the next. ``previous`` marks flags that changed. ``per_row`` (a narrow panel) puts that
    many flags on each row instead, the hex value in the caption."""
    f = flag_values(eflags)
    old = flag_values(previous) if previous is not None else {}
    v = int(eflags if isinstance(eflags, int) else eflags.eflags)

    def cell(name):
        val = f[name]
        style = _CELL + "text-align:center;"
        if name != "IOPL" and val:
            style += f"{CSS_HIGHLIGHT}font-weight:bold;"
        elif name != "IOPL":
            style += f"color:{CSS_MUTED};"
        mark = ""
        if name in old and old[name] != val:
            style += f"outline:2px solid {OKABE_ITO['vermillion']};outline-offset:-2px;"
            mark = "*"
        tip = FLAG_HELP.get(name, name) + (" (changed)" if mark else "")
        return f'<td style="{style}" title="{_esc(tip)}">{name}={val}{mark}</td>'

    status = ("CF", "PF", "AF", "ZF", "SF", "OF")
    system = ("TF", "IF", "DF", "IOPL", "NT", "RF", "VM", "AC", "ID")
    if per_row:
        names = status + system
        rows = "".join(f'<tr>{"".join(cell(n) for n in names[i:i + per_row])}</tr>'
                       for i in range(0, len(names), per_row))
        cap = f"{title} {v:08x}" if title else None
        return f'<table class="vmkit-flags" {_TABLE}>{_caption(cap)}{rows}</table>'
    head = (f'<td style="{_CELL}color:{CSS_MUTED}" rowspan="2" title="EFLAGS as a number">'
            f'{v:08x}</td>')
    return (f'<table class="vmkit-flags" {_TABLE}>{_caption(title)}'
            f'<tr>{head}{"".join(cell(n) for n in status)}</tr>'
            f'<tr>{"".join(cell(n) for n in system)}</tr></table>')


# ---- disassembly ------------------------------------------------------------------------------

@dataclass(frozen=True)
class DisasmRow:
    """One line of a disassembly window."""
    address: int
    text: str             # capstone text ("" when the bytes are not mapped)
    raw: bytes
    file: str | None      # guest source file and line, when known
    line: int | None
    source: str           # the source line's text ("" when unknown)
    current: bool = False  # the instruction at EIP (next to execute)
    executed: bool = False  # already executed (from the stepper's history)
    breakpoint: bool = False


_LINE_CACHE: dict[int, tuple[object, dict]] = {}


def _line_texts(program) -> dict:
    """(file, line) -> source text for a Program (built once per Program object)."""
    hit = _LINE_CACHE.get(id(program))
    if hit is not None and hit[0] is program:
        return hit[1]
    texts = {}
    for entry in getattr(program, "lines", ()) or ():
        try:
            _a, _s, f, ln, text = entry
        except (TypeError, ValueError):
            continue
        texts.setdefault((f, ln), text)
    if len(_LINE_CACHE) > 64:
        _LINE_CACHE.clear()
    _LINE_CACHE[id(program)] = (program, texts)
    return texts


def display_path(path: str) -> str:
    """A source path as shown to students: relative to the kit for the kit's own guest files
    (the same in every checkout, so stored notebook outputs do not depend on where the kit
    lives), the file name otherwise."""
    norm = os.path.normpath(path)
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../vmkit
    if norm.startswith(pkg + os.sep):
        return "vmkit/" + os.path.relpath(norm, pkg).replace(os.sep, "/")
    return os.path.basename(norm)


def source_line(image, address: int) -> tuple[str | None, int | None, str]:
    """``(file, line, text)`` of the guest source line that produced ``address`` (Nones and ""
    when the image does not know it)."""
    if image is None:
        return None, None, ""
    try:
        loc = image.line_of(address)
    except Exception:
        loc = None
    if not loc:
        return None, None, ""
    f, ln = loc
    text = ""
    try:
        prog = image.program_for(address)
        text = _line_texts(prog).get((f, ln), "")
        if not text:  # the address may belong to another process's program
            for p in getattr(image, "programs", {}).values():
                text = _line_texts(p).get((f, ln), "")
                if text:
                    break
    except Exception:
        pass
    return f, ln, text.strip()


def _unpack_target(target, eip, image, breakpoints):
    """Accept a monitor (anything with ``machine`` and ``vms``) or a bare machine."""
    machine = target
    if hasattr(target, "vms") and hasattr(target, "machine"):
        machine = target.machine
        if image is None:
            cur = getattr(target, "current", 0)
            image = target.vms[cur].image
        if breakpoints is None:
            breakpoints = getattr(target, "breakpoints", None)
    if eip is None:
        eip = machine.cpu.eip
    if breakpoints is None:
        breakpoints = getattr(machine, "breakpoints", ()) or ()
    return machine, eip, image, breakpoints


def disassembly_rows(target, eip: int | None = None, *, image=None, count: int = 8,
                     before: Iterable[int] = (), breakpoints=None) -> list[DisasmRow]:
    """The instructions at ``eip`` and after it (``count`` in all), preceded by the addresses in
    ``before`` (recently executed instructions, oldest first), each with its source location.

    ``target`` is a monitor (its machine, current image and breakpoints are used) or a machine.
    Decoding uses ``machine.insn_at``, which has no side effects (no TLB fill, no A/D bits)."""
    machine, eip, image, bps = _unpack_target(target, eip, image, breakpoints)
    rows = []

    def row(addr, current=False, executed=False):
        try:
            insn = machine.insn_at(addr)
        except Exception:
            insn = None
        f, ln, src = source_line(image, addr)
        text = insn.text if insn is not None else ""
        raw = bytes(insn.raw) if insn is not None and getattr(insn, "raw", None) else b""
        size = insn.size if insn is not None and insn.size else 0
        rows.append(DisasmRow(addr, text, raw, f, ln, src, current, executed, addr in bps))
        return size

    for a in list(before):
        if a != eip:
            row(a, executed=True)
    a = eip
    for k in range(max(count, 1)):
        size = row(a, current=(k == 0))
        if not size:
            break
        a = (a + size) & 0xFFFFFFFF
    return rows


def disassembly_html(target, eip: int | None = None, *, image=None, count: int = 8,
                     before: Iterable[int] = (), breakpoints=None,
                     title: str | None = "disassembly", raw_bytes: bool = True,
                     comments: bool = True, holes=None) -> str:
    """A disassembly window: recently executed instructions (greyed), the instruction at EIP
    (marked ``▶`` and highlighted), the next ones, each with its bytes and the guest source file,
    line and text beside it. Breakpoints are marked ``●``; ``holes`` (address -> a
    :class:`~vmkit.trace.Hole` event) flags the virtualization holes ``⚠``, the row tinted
    and the pointer's tooltip saying what the guest saw and what the bare machine shows, as
    CPUlator flags suspicious instructions. Arguments as
    :func:`disassembly_rows`; ``target`` may also be a list of :class:`DisasmRow`.
    ``raw_bytes=False`` leaves the bytes out and ``comments=False`` the source lines’
    comments (shown when the pointer rests on the line), for a narrow panel; a long source
    line wraps."""
    if isinstance(target, list):
        rows = target
    else:
        rows = disassembly_rows(target, eip, image=image, count=count, before=before,
                                breakpoints=breakpoints)
    out = []
    for r in rows:
        style = _CELL
        mark = "▶" if r.current else ""
        if r.current:
            style += f"{CSS_HIGHLIGHT}font-weight:bold;"
        elif r.executed:
            style += f"color:{CSS_MUTED};"
        # secondary text: muted, but dark on the highlighted row (the theme's muted colour is
        # light in a dark theme, unreadable on the pale tint)
        muted = "color:#4d4d4d;" if r.current else f"color:{CSS_MUTED};"
        bp = (f'<span style="color:{OKABE_ITO["vermillion"]}" title="breakpoint">●</span>'
              if r.breakpoint else "")
        hole = (holes or {}).get(r.address)
        if hole is not None:
            tip = (f"virtualization hole: {hole.text} did not trap; the guest saw "
                   f"{hole.saw}, the bare machine shows {hole.bare}")
            style += "background:rgba(230,159,0,0.28);"    # Okabe-Ito orange, both themes
            bp += (f'<span class="vmkit-hole" style="color:{OKABE_ITO["orange"]};'
                   f'font-weight:bold" title="{_esc(tip)}">⚠</span>')
        text = _esc(r.text) if r.text else f'<i style="color:{CSS_MUTED}">(not mapped)</i>'
        raw = " ".join(f"{b:02x}" for b in r.raw[:8]) + (" …" if len(r.raw) > 8 else "")
        loc = (f'<span title="{_esc(display_path(r.file))}">'
               f'{_esc(os.path.basename(r.file))}:{r.line}</span>'
               if r.file else "")
        raw_cell = f'<td style="{style}{muted}">{raw}</td>' if raw_bytes else ""
        out.append(f'<tr><td style="{style}">{bp}{mark}</td>'
                   f'<td style="{style}">{r.address:08x}</td>{raw_cell}'
                   f'<td style="{style}">{text}</td>'
                   f'<td style="{style}{muted}">{loc}</td>'
                   f'{_source_cell(r.source, style, comments)}</tr>')
    return (f'<table class="vmkit-disassembly" {_TABLE}>{_caption(title)}'
            f'{"".join(out)}</table>')


def _code_part(line: str) -> str:
    """A source line without its ``#`` comment, runs of blanks made one (a ``#`` inside
    quotes is kept)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            line = line[:i]
            break
    return " ".join(line.split())


def _source_cell(source: str, style: str, comments: bool) -> str:
    if comments or not source:
        return f'<td style="{style}white-space:pre-wrap">{_esc(source)}</td>'
    code = _code_part(source)
    tip = f' title="{_esc(source)}"' if code != source else ""
    return f'<td style="{style}white-space:normal"{tip}>{_esc(code)}</td>'


# ---- events -----------------------------------------------------------------------------------

def _vec(v: int) -> str:
    return f"{v:#04x}"


def describe_event(e) -> str:
    """A one-line description of a trace event."""
    k = getattr(e, "kind", "event")
    g = lambda name, default=None: getattr(e, name, default)  # noqa: E731
    if k == "instruction":
        return f"ring {g('ring')}: {g('address', 0):08x}  {g('text', '')}"
    if k == "interrupt":
        src = g("source", "")
        what = {"int": "software interrupt", "irq": "hardware interrupt",
                "exception": "exception"}.get(src, src)
        name = g("name", "")
        label = f"int {_vec(g('vector', 0))}" if src == "int" else \
            f"{name} (vector {_vec(g('vector', 0))})" if name and name not in ("irq", "int") \
            else f"vector {_vec(g('vector', 0))}"
        ec = g("error_code")
        ecs = f", error code {ec:#x}" if ec is not None else ""
        return (f"{what} {label}{ecs}: ring {g('from_ring')} → {g('to_ring')} "
                f"(from {g('eip', 0):08x})")
    if k == "iret":
        return f"iret: ring {g('from_ring')} → {g('to_ring')} (to {g('eip', 0):08x})"
    if k == "ring":
        return f"ring {g('from_ring')} → {g('to_ring')} ({g('cause', '')})"
    if k == "io":
        d, port, val = g("direction", "out"), g("port", 0), g("value", 0)
        ch = ""
        if g("size", 1) == 1 and 32 <= val < 127:
            ch = f" {chr(val)!r}"
        arrow = "←" if d == "out" else "→"
        return f"{d} port {port:#x} {arrow} {val:#x}{ch}"
    if k == "page_fault":
        return f"page fault at {g('address', 0):08x} (error {g('error_code', 0):#x}, " \
               f"eip {g('eip', 0):08x})"
    if k == "tlb_miss":
        return f"TLB miss {g('address', 0):08x}"
    if k == "emulate":
        return f"VMM emulated {g('text', '') or g('mnemonic', '')} at {g('address', 0):08x}"
    if k == "reflect":
        return f"VMM reflected {g('name', '') or _vec(g('vector', 0))} into the guest " \
               f"(from ring {g('from_ring')})"
    if k == "vm_exit":
        return f"VM exit: {g('name', '') or g('reason')}"
    if k == "vm_entry":
        inj = g("injected")
        return "VM entry" + (f" (injecting vector {inj})" if inj is not None else "")
    if k == "tc_lookup":
        return f"translation cache {'hit' if g('hit') else 'miss'} at {g('address', 0):08x}"
    if k == "translate":
        return f"translated {g('instructions', 0)} instructions at {g('address', 0):08x}"
    if k == "tc_invalidate":
        return f"translation invalidated at {g('address', 0):08x} ({g('reason', '')})"
    if k == "hypercall":
        return f"hypercall {g('name', '')}"
    if k == "world_switch":
        return f"world switch VM {g('from_vm')} → VM {g('to_vm')}"
    if k == "stop":
        d = g("detail", "")
        return f"stopped: {g('reason', '')}" + (f" ({d})" if d else "")
    if k == "hole":
        return (f"⚠ virtualization hole: {g('text', '')} at {g('address', 0):08x} did not "
                f"trap; the guest saw {g('saw', '')}, the bare machine shows {g('bare', '')}")
    if k == "memory":
        return (f"{g('access', '')} of {g('size', 0)} byte(s) at physical "
                f"{g('address', 0):08x} ({g('source', '')}, eip {g('eip', 0):08x})")
    return repr(e)


_KIND_COLOUR = {"interrupt": OKABE_ITO["vermillion"], "iret": OKABE_ITO["blue"],
                "ring": OKABE_ITO["blue"], "emulate": OKABE_ITO["orange"],
                "reflect": OKABE_ITO["reddish_purple"], "vm_exit": OKABE_ITO["orange"],
                "stop": CSS_TEXT, "io": OKABE_ITO["bluish_green"],
                "hole": OKABE_ITO["orange"]}


def events_html(events, *, limit: int = 12, title: str | None = "events") -> str:
    """The last ``limit`` events (oldest first): guest time, kind and a description."""
    evs = list(events)[-limit:] if limit else list(events)
    rows = []
    for e in evs:
        k = getattr(e, "kind", "event")
        c = _KIND_COLOUR.get(k, CSS_TEXT)
        vm = getattr(e, "vm", 0)
        vms = f" vm{vm}" if vm else ""
        rows.append(f'<tr><td style="{_CELL}color:{CSS_MUTED};text-align:right">'
                    f'{getattr(e, "step", "")}</td>'
                    f'<td style="{_CELL}color:{c};font-weight:bold">{_esc(k)}{vms}</td>'
                    f'<td style="{_CELL}{_WRAP}">{_esc(describe_event(e))}</td></tr>')
    if not rows:
        rows.append(f'<tr><td style="{_CELL}color:{CSS_MUTED}">(no events yet)</td></tr>')
    return f'<table class="vmkit-events" {_TABLE}>{_caption(title)}{"".join(rows)}</table>'


def console_html(text: str, *, lines: int = 20, title: str | None = "console") -> str:
    """The last ``lines`` lines of a guest's console output in a ``<pre>``."""
    tail = text.splitlines()[-lines:] if text else []
    body = (_esc("\n".join(tail)) if tail else
            f'<i style="color:{CSS_MUTED}">(no output yet)</i>')
    cap = (f'<div style="font-weight:bold;font-family:sans-serif;font-size:12px">'
           f'{_esc(title)}</div>' if title else "")
    return (f'<div class="vmkit-console">{cap}<pre style="margin:0;padding:4px;'
            f'background:{CSS_PANEL};color:{CSS_TEXT};border:1px solid {CSS_BORDER};'
            f'font-size:12px;white-space:pre-wrap;max-height:16em;overflow:auto">{body}</pre>'
            f'</div>')
