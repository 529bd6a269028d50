"""Live tables of a running guest, for the debugger (``vmkit debug``) and notebooks: the
guest's and the real GDT, IDT and TSS; the page-table walk of one linear address (guest tables,
shadow table or EPT, references numbered as in notebook 06); memory as hex with watched bytes
highlighted; the VMCS under hw; the translation-cache block at EIP under bt.

Each function is pure (it reads the monitor without side effects: no TLB fill, no
accessed/dirty bits) and returns a :class:`LiveTable`: the data (``columns``, ``rows``), a
title and a note, with ``to_html()`` (inline styles on JupyterLab's ``--jp-`` theme variables,
so light and dark themes both read; at most ~1,000 px wide, within 1,366 px) and ``to_text()``
for a terminal. A notebook shows it as HTML when it is the last line of a cell.

>>> from vmkit.viz.live import descriptor_table, walk_table
>>> descriptor_table(vm, "gdt")                  # doctest: +SKIP
>>> walk_table(vm, 0x00400000).to_text()         # doctest: +SKIP
"""

from __future__ import annotations

import html as _html
from dataclasses import dataclass, field

from vmkit.debug.memory import GuestView, machine_linear
from vmkit.errors import VmkitError
from vmkit.viz.render import CSS_BORDER, CSS_HIGHLIGHT, CSS_MUTED, CSS_PANEL

__all__ = ["LiveTable", "descriptor_table", "tss_table", "walk_table", "hex_view",
           "vmcs_table", "tc_block_table", "TSS_FIELDS", "MAX_ROWS"]

#: rows a table shows at most (the real GDT of a monitor may have 8,192 entries)
MAX_ROWS = 64

_TABLE = ('style="border-collapse:collapse;font-family:monospace;font-size:12px;'
          'line-height:1.25;max-width:100%"')
_CELL = f"padding:1px 6px;border:1px solid {CSS_BORDER};text-align:left;white-space:nowrap;"
_HEAD = f"{_CELL}background:{CSS_PANEL};color:{CSS_MUTED};font-weight:normal;"
_MARK = f"{CSS_HIGHLIGHT}font-weight:bold;"


def _esc(s) -> str:
    return _html.escape(str(s), quote=True)


@dataclass
class LiveTable:
    """A table: ``columns`` names, ``rows`` of strings, ``marked`` row indices (highlighted),
    ``marks`` {(row, column)} cells highlighted, ``note`` a line under it."""
    title: str
    columns: list
    rows: list = field(default_factory=list)
    note: str = ""
    marked: set = field(default_factory=set)
    marks: set = field(default_factory=set)
    kind: str = ""

    def to_html(self) -> str:
        head = "".join(f'<th style="{_HEAD}">{_esc(c)}</th>' for c in self.columns)
        body = []
        for i, row in enumerate(self.rows):
            cells = []
            for j, v in enumerate(row):
                style = _CELL + (_MARK if i in self.marked or (i, j) in self.marks else "")
                cls = ' class="vmkit-marked"' if (i, j) in self.marks else ""
                cells.append(f'<td style="{style}"{cls}>{_esc(v)}</td>')
            body.append("<tr>" + "".join(cells) + "</tr>")
        cap = (f'<caption style="text-align:left;font-weight:bold;font-family:sans-serif;'
               f'font-size:12px;padding:2px 0">{_esc(self.title)}</caption>')
        note = (f'<div style="font-family:sans-serif;font-size:11px;color:{CSS_MUTED};'
                f'max-width:60em">{_esc(self.note)}</div>' if self.note else "")
        return (f'<div class="vmkit-live vmkit-live-{_esc(self.kind)}" style="overflow-x:auto;'
                f'max-width:100%"><table {_TABLE}>{cap}<thead><tr>{head}</tr></thead><tbody>'
                f'{"".join(body)}</tbody></table>{note}</div>')

    def _repr_html_(self) -> str:
        return self.to_html()

    def to_text(self) -> str:
        cols = [str(c) for c in self.columns]
        rows = [[str(v) for v in r] for r in self.rows]
        widths = [max([len(c)] + [len(r[j]) for r in rows if j < len(r)])
                  for j, c in enumerate(cols)]
        gutter = bool(self.marked)          # "* " before a highlighted row
        out = [self.title]
        head = "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()
        out.append(("  " if gutter else "") + head)
        for i, r in enumerate(rows):
            line = "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()
            out.append(("* " if i in self.marked else "  ") + line if gutter else line)
            if any((i, j) in self.marks for j in range(len(r))):
                marker = [_underline(v, w, self, i, j)
                          for j, (v, w) in enumerate(zip(r, widths))]
                out.append(("  " if gutter else "") + "  ".join(marker).rstrip())
        if self.note:
            out.append(self.note)
        return "\n".join(out)

    def __str__(self) -> str:
        return self.to_text()


def _underline(v: str, w: int, t: LiveTable, i: int, j: int) -> str:
    return ("^" * len(v)).ljust(w) if (i, j) in t.marks else " " * w


# ---- descriptor tables --------------------------------------------------------------------------
_SYS_TYPES = {0x1: "16-bit TSS (available)", 0x2: "LDT", 0x3: "16-bit TSS (busy)",
              0x4: "16-bit call gate", 0x5: "task gate", 0x6: "16-bit interrupt gate",
              0x7: "16-bit trap gate", 0x9: "TSS (available)", 0xB: "TSS (busy)",
              0xC: "call gate", 0xE: "interrupt gate", 0xF: "trap gate"}


def _seg_type(access: int) -> str:
    if not access & 0x10:
        return _SYS_TYPES.get(access & 0xF, f"system type {access & 0xF}")
    if access & 0x8:
        return "code " + ("RX" if access & 2 else "X") + (" conforming" if access & 4 else "")
    return "data " + ("RW" if access & 2 else "R") + (" down" if access & 4 else "")


def _table_reg(cpu, which: str):
    reg = getattr(cpu, which + "r", None) if which in ("gdt", "idt") else None
    if reg is None:
        raise VmkitError(f"unknown table {which!r}: expected 'gdt' or 'idt'")
    return reg.base, reg.limit


def _reader(monitor, real: bool, vm: int | None):
    """(cpu, read(lin, n)) of the guest's view, or of the real CPU underneath."""
    if real:
        m = monitor.machine
        return monitor.cpu, (lambda a, n: machine_linear(m, a, n))
    gv = GuestView(monitor, vm)
    return gv.cpu, gv.linear


def _symbols(monitor, vm: int | None = None) -> dict:
    """address -> name of the kernel's symbols (the first name wins)."""
    i = getattr(monitor, "current", 0) if vm is None else vm
    out: dict = {}
    try:
        prog = next(iter(monitor.vms[i].image.programs.values()))
        for k, v in sorted(prog.symbols.items()):
            out.setdefault(v, k)
    except Exception:
        pass
    return out


def descriptor_table(monitor, which: str = "gdt", *, real: bool = False,
                     vm: int | None = None) -> LiveTable:
    """The GDT or IDT (``which``) as the guest set it up (guest-linear, from the vCPU's
    GDTR/IDTR), or with ``real=True`` the one the real CPU uses (under trap-and-emulate the
    VMM's shadow table, the guest's descriptors with DPL 0 pushed to 1). Empty entries are
    left out; at most :data:`MAX_ROWS` rows."""
    which = which.lower()
    cpu, read = _reader(monitor, real, vm)
    base, limit = _table_reg(cpu, which)
    who = "real" if real else "guest's"
    name = which.upper()
    t = LiveTable(f"{who} {name} at {base:#010x} (limit {limit:#x})", [], kind=which)
    data = read(base, limit + 1) if limit >= 0 else b""
    if data is None:
        t.note = f"the {name} at {base:#010x} is not mapped"
        return t
    syms = _symbols(monitor, vm)
    split = getattr(monitor, "vcpu", None) is not getattr(monitor, "cpu", None)
    shown = skipped = 0
    if which == "gdt":
        t.columns = ["index", "selector", "raw", "base", "limit", "type", "DPL", "P", "D/B G"]
        for i in range(0, len(data) // 8):
            raw = int.from_bytes(data[8 * i:8 * i + 8], "little")
            if raw == 0:
                continue
            if shown >= MAX_ROWS:
                skipped += 1
                continue
            lo, hi = raw & 0xFFFFFFFF, raw >> 32
            b = ((lo >> 16) & 0xFFFF) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)
            lim = (lo & 0xFFFF) | (hi & 0xF0000)
            acc, flags = (hi >> 8) & 0xFF, (hi >> 20) & 0xF
            if flags & 0x8:
                lim = (lim << 12) | 0xFFF
            t.rows.append([str(i), f"{8 * i:#06x}", f"{raw:016x}", f"{b:#010x}", f"{lim:#x}",
                           _seg_type(acc), str((acc >> 5) & 3), "1" if acc & 0x80 else "0",
                           ("32" if flags & 4 else "16") + (" 4K" if flags & 8 else " 1B")])
            shown += 1
        if cpu is not None:
            sel = getattr(getattr(cpu, "tr", None), "selector", None)
            for k, row in enumerate(t.rows):
                if sel and int(row[1], 16) == sel & 0xFFF8:
                    t.marked.add(k)
    else:
        t.columns = ["vector", "selector", "offset", "handler", "type", "DPL", "P"]
        for v in range(0, len(data) // 8):
            raw = int.from_bytes(data[8 * v:8 * v + 8], "little")
            if raw == 0:
                continue
            if shown >= MAX_ROWS:
                skipped += 1
                continue
            lo, hi = raw & 0xFFFFFFFF, raw >> 32
            off = (lo & 0xFFFF) | (hi & 0xFFFF0000)
            acc = (hi >> 8) & 0xFF
            handler = syms.get(off, "")
            if real and split and not handler:   # the VMM's own entry point
                handler = "(VMM)"
            t.rows.append([f"{v:#04x}", f"{(lo >> 16) & 0xFFFF:#06x}", f"{off:#010x}",
                           handler, _seg_type(acc), str((acc >> 5) & 3),
                           "1" if acc & 0x80 else "0"])
            shown += 1
    notes = []
    if skipped:
        notes.append(f"{skipped} more non-empty entries not shown")
    if which == "gdt" and t.marked:
        notes.append("highlighted: the TSS descriptor TR selects")
    if real and getattr(monitor, "vcpu", None) is not getattr(monitor, "cpu", None):
        gb, _ = _table_reg(GuestView(monitor, vm).cpu, which)
        if gb != base:
            notes.append(f"the guest believes its {name} is at {gb:#010x}; the real CPU "
                         f"uses the VMM's at {base:#010x} (sgdt/sidt would reveal it)")
    t.note = "; ".join(notes)
    return t


#: the 32-bit TSS fields shown (SDM Vol. 3A, 8.2.1, Figure 8-2): name, offset, size
TSS_FIELDS = (("link", 0, 2), ("esp0", 4, 4), ("ss0", 8, 2), ("esp1", 12, 4), ("ss1", 16, 2),
              ("esp2", 20, 4), ("ss2", 24, 2), ("cr3", 28, 4), ("eip", 32, 4),
              ("eflags", 36, 4), ("esp", 56, 4), ("ldt", 96, 2), ("iomap base", 102, 2))


def tss_table(monitor, *, real: bool = False, vm: int | None = None) -> LiveTable:
    """The TSS that TR selects (the guest's, or the real one): the ring stacks (SS0:ESP0,
    SS1:ESP1, SS2:ESP2) an interrupt switches to, CR3, the I/O bitmap's offset."""
    cpu, read = _reader(monitor, real, vm)
    tr = cpu.tr
    t = LiveTable(f"{'real' if real else 'guest'} TSS at {tr.base:#010x} (TR {tr.selector:#06x}"
                  f", limit {tr.limit:#x})", ["field", "offset", "value"], kind="tss")
    if not tr.selector and not tr.base:
        t.note = "no TSS loaded (TR is 0)"
        return t
    data = read(tr.base, 104)
    if data is None:
        t.note = f"the TSS at {tr.base:#010x} is not mapped"
        return t
    for name, off, size in TSS_FIELDS:
        v = int.from_bytes(data[off:off + size], "little")
        t.rows.append([name, f"{off:#04x}", f"{v:#0{2 + 2 * size}x}"])
        if name in ("esp0", "ss0"):
            t.marked.add(len(t.rows) - 1)
    t.note = "highlighted: the ring-0 stack an interrupt from user mode switches to"
    return t


# ---- the page walk ------------------------------------------------------------------------------
def walk_table(monitor, gva: int, *, vm: int | None = None) -> LiveTable:
    """The translation of guest-linear ``gva`` now: the hardware walk's memory references
    numbered 1..N in the order the MMU makes them (guest tables natively; the shadow table
    under shadow paging, with the guest's own entries the VMM reads listed after it; the
    two-dimensional guest x EPT walk under nested paging), as notebook 06 numbers them
    (:func:`vmkit.viz.memory.translation_walk`)."""
    from vmkit.viz.memory import translation_walk
    if not isinstance(gva, int) or not 0 <= gva <= 0xFFFFFFFF:
        raise VmkitError(f"not a 32-bit address: {gva!r}")
    w = translation_walk(monitor, gva, index=vm)

    def h(x):
        return "—" if x is None else f"{x:#010x}"

    t = LiveTable(f"{w.monitor}: {w.kind} walk of {gva:#010x} -> gPA {h(w.gpa)} -> hPA "
                  f"{h(w.hpa)} ({w.references} references)",
                  ["#", "structure", "host-physical", "guest-physical", "entry", "what"],
                  kind="walk")
    for r in w.refs:
        t.rows.append([str(r.n), r.table, h(r.hpa), h(r.gpa), f"{r.value:#010x}",
                       r.purpose])
    if w.kind == "shadow":
        for table, gpa, hpa, val in w.guest:
            t.rows.append(["—", table, h(hpa), h(gpa), f"{val:#010x}",
                           "the guest's own entry"])
    notes = []
    if w.kind == "shadow" and w.guest:
        notes.append("—: the guest's entries are not walked by the MMU; the VMM reads them "
                     "on a hidden page fault to fill the shadow entry")
    if w.kind == "nested":
        notes.append(f"two-dimensional walk: ({w.guest_levels}+1)({w.nested_levels}+1)-1 = "
                     f"{(w.guest_levels + 1) * (w.nested_levels + 1) - 1} references at most")
    if w.note:
        notes.append(w.note)
    t.note = "; ".join(notes)
    return t


# ---- memory --------------------------------------------------------------------------------------
def hex_view(monitor, address: int, size: int = 128, *, physical: bool = False,
             watched=(), vm: int | None = None) -> LiveTable:
    """``size`` bytes of guest memory from ``address`` (guest-linear, or guest-physical) as
    hex and ASCII, 16 a row, the bytes of ``watched`` ranges highlighted. ``watched`` holds
    ``(address, size)`` pairs or objects with ``address``/``size``/``physical`` (a
    debugger's watchpoints: ``dbg.points``)."""
    if not isinstance(address, int) or not 0 <= address <= 0xFFFFFFFF:
        raise VmkitError(f"not a 32-bit address: {address!r}")
    if not isinstance(size, int) or not 1 <= size <= 4096:
        raise VmkitError(f"size must be between 1 and 4096 bytes, got {size!r}")
    gv = GuestView(monitor, vm)
    ranges = []
    for w in watched:
        if isinstance(w, tuple):
            ranges.append((w[0], w[1]))
        elif hasattr(w, "size") and hasattr(w, "address"):
            if bool(getattr(w, "physical", False)) == physical:
                ranges.append((w.address, w.size))
    start = address & ~0xF
    end = address + size
    t = LiveTable(f"{'physical' if physical else 'linear'} memory {address:#010x}.."
                  f"{end - 1:#010x}", ["address"] + [f"{k:x}" for k in range(16)] + ["ascii"],
                  kind="hex")
    for row_a in range(start, end, 16):
        data = gv.read(row_a, 16, physical)
        cells = [f"{row_a:08x}"]
        text = ""
        for k in range(16):
            a = row_a + k
            if a < address or a >= end:
                cells.append("")
                continue
            if data is None:
                cells.append("??")
                text += " "
                continue
            b = data[k]
            cells.append(f"{b:02x}")
            text += chr(b) if 32 <= b < 127 else "."
            if any(lo <= a < lo + n for lo, n in ranges):
                t.marks.add((len(t.rows), k + 1))
        cells.append(text)
        t.rows.append(cells)
    if ranges:
        t.note = "highlighted: watched bytes"
    if any("??" in r for r in t.rows):
        t.note = (t.note + "; " if t.note else "") + "??: not mapped"
    return t


# ---- hw: the VMCS ------------------------------------------------------------------------------
def vmcs_table(monitor, *, vm: int | None = None) -> LiveTable:
    """The VMCS of the current VM (or ``vm``) under hardware assistance: the guest state, the
    execution controls and the last exit's information (SDM Vol. 3C, chapter 25)."""
    i = getattr(monitor, "current", 0) if vm is None else vm
    v = monitor.vms[i]
    vmcs = getattr(v, "vmcs", None)
    if vmcs is None:
        raise VmkitError(f"there is no VMCS under the {getattr(monitor, 'name', '?')} monitor "
                         f"(only under hw)")
    t = LiveTable(f"VMCS of VM {i}", ["area", "field", "value"], kind="vmcs")

    def fmt(x):
        if isinstance(x, bool) or x is None:
            return str(x)
        if isinstance(x, int):
            return f"{x:#010x}"
        return str(x)

    g = vmcs.guest
    for name in ("eip", "esp", "eflags", "cr0", "cr3", "cr4"):
        t.rows.append(["guest state", name, fmt(getattr(g, name, None))])
    t.rows.append(["guest state", "cs", fmt(getattr(g, "cs", None))])
    t.rows.append(["guest state", "activity", vmcs.activity_state])
    t.rows.append(["guest state", "interruptibility", str(vmcs.interruptibility)])
    for name in ("cr0", "cr3", "cr4", "gdtr_base", "idtr_base", "rsp", "rip"):
        t.rows.append(["host state", name, fmt(getattr(vmcs.host, name))])
    controls = vmcs.controls.as_dict() if hasattr(vmcs.controls, "as_dict") else {}
    for k, val in controls.items():
        t.rows.append(["controls", k, fmt(val)])
    for name in ("cr0_read_shadow", "cr4_read_shadow", "ept_pointer",
                 "interrupt_window_exiting"):
        t.rows.append(["controls", name, fmt(getattr(vmcs, name))])
    t.rows.append(["exit info", "exit reason", f"{vmcs.exit_reason} ({vmcs.exit_name})"
                   if vmcs.exit_reason is not None else "none yet"])
    for name in ("exit_qualification", "guest_linear_address", "guest_physical_address",
                 "exit_instruction_length", "idt_vectoring_info"):
        t.rows.append(["exit info", name, fmt(getattr(vmcs, name))])
    ins = getattr(vmcs, "exit_instruction", None)
    t.rows.append(["exit info", "exit instruction", getattr(ins, "text", "") if ins else ""])
    t.rows.append(["entry", "interruption info", fmt(vmcs.entry_interruption_info)])
    for k, row in enumerate(t.rows):
        if row[0] == "exit info" and row[1] == "exit reason":
            t.marked.add(k)
    return t


# ---- bt: the translation at EIP ----------------------------------------------------------------
def tc_block_table(monitor, eip: int | None = None, *, vm: int | None = None) -> LiveTable:
    """The translated block holding ``eip`` (default: the guest's EIP) in a binary
    translator's cache: its guest instructions and how each was translated (ident, inline,
    callout, adapted); the instruction at EIP highlighted."""
    blocks = getattr(monitor, "blocks", None)
    if blocks is None:
        raise VmkitError(f"there is no translation cache under the "
                         f"{getattr(monitor, 'name', '?')} monitor (only under bt)")
    i = getattr(monitor, "current", 0) if vm is None else vm
    if eip is None:
        eip = monitor.vms[i].vcpu.eip
    found = None
    for b in blocks():
        if b.vm == i and b.valid and b.eip <= eip < b.end and eip in b.index:
            found = b
            break
    t = LiveTable(f"translation cache at {eip:#010x}", ["address", "instruction",
                                                        "translated as"], kind="tc")
    if found is None:
        t.note = ("no translated block holds this address (not translated yet: run on, or "
                  "the guest is in user mode, which runs directly)")
        return t
    t.title = (f"translated block {found.eip:#010x}..{found.end:#010x}: {found.n} "
               f"instructions, {found.hits} cache hits, {found.chained_in} chained entries")
    for k, (ins, kind) in enumerate(zip(found.insns, found.kinds)):
        t.rows.append([f"{ins.address:#010x}", ins.text, kind])
        if ins.address == eip:
            t.marked.add(k)
    links = ", ".join(f"{a:#010x}" for a in getattr(found, "links", {}))
    t.note = "highlighted: EIP" + (f"; chained to {links}" if links else "")
    return t
