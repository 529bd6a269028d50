"""Descriptor tables as students read them: the GDT, the IDT and the TSS decoded into rows, and
rendered as HTML tables.

Pure functions of memory contents: they read through ``machine.peek`` (no page-table side
effects), so looking never changes the run. Pass ``base``/``limit`` to read a table the CPU is
not using (e.g. the guest's own IDT under a monitor, from ``monitor.vcpu.idtr``).
"""

from __future__ import annotations

import html
import struct

from vmkit.machine.system import Descriptor

__all__ = ["gdt_rows", "idt_rows", "tss_fields", "rows_html", "SYSTEM_TYPES"]

#: system descriptor types (SDM Vol. 3A, Table 3-2)
SYSTEM_TYPES = {0x1: "16-bit TSS (available)", 0x2: "LDT", 0x3: "16-bit TSS (busy)",
                0x4: "16-bit call gate", 0x5: "task gate", 0x6: "16-bit interrupt gate",
                0x7: "16-bit trap gate", 0x9: "32-bit TSS (available)",
                0xB: "32-bit TSS (busy)", 0xC: "32-bit call gate",
                0xE: "32-bit interrupt gate", 0xF: "32-bit trap gate"}


def _read(machine, lin: int, n: int) -> bytes | None:
    return machine.peek(lin, n)


def _kind(d: Descriptor) -> str:
    if d.raw == 0:
        return "null"
    if d.system:
        return SYSTEM_TYPES.get(d.type, f"reserved type {d.type:#x}")
    if d.code:
        return "code" + (", conforming" if d.conforming else "") + (
            ", readable" if d.access & 2 else "")
    return "data" + (", writable" if d.access & 2 else ", read-only")


def gdt_rows(machine, base: int | None = None, limit: int | None = None) -> list[dict]:
    """One row per GDT entry: selector, kind, DPL, base, limit, present, accessed."""
    cpu = machine.cpu
    base = cpu.gdtr.base if base is None else base
    limit = cpu.gdtr.limit if limit is None else limit
    rows = []
    for off in range(0, limit + 1, 8):
        raw = _read(machine, base + off, 8)
        if raw is None:
            rows.append({"selector": off, "kind": "(not mapped)"})
            continue
        d = Descriptor.parse(int.from_bytes(raw, "little"))
        rows.append({"selector": off, "kind": _kind(d), "dpl": d.dpl, "base": d.base,
                     "limit": d.limit, "present": d.present,
                     "accessed": (not d.system and bool(d.access & 1)) or None})
    return rows


def idt_rows(machine, vectors=None, base: int | None = None, limit: int | None = None,
             symbols: dict | None = None) -> list[dict]:
    """One row per IDT gate (only present ones unless ``vectors`` names them): vector, kind,
    DPL (who may ``int n`` it), selector, handler address and symbol."""
    cpu = machine.cpu
    base = cpu.idtr.base if base is None else base
    limit = cpu.idtr.limit if limit is None else limit
    by_addr = {v: k for k, v in (symbols or {}).items()}
    rows = []
    count = (limit + 1) // 8
    wanted = range(count) if vectors is None else [v for v in vectors if v < count]
    for v in wanted:
        raw = _read(machine, base + v * 8, 8)
        if raw is None:
            continue
        d = Descriptor.parse(int.from_bytes(raw, "little"))
        if vectors is None and not d.present:
            continue
        rows.append({"vector": v, "kind": _kind(d), "dpl": d.dpl, "selector": d.gate_selector,
                     "handler": d.gate_offset, "symbol": by_addr.get(d.gate_offset, ""),
                     "present": d.present})
    return rows


def tss_fields(machine, base: int | None = None) -> dict:
    """The TSS fields the kit's machine uses: the ring 0-2 stacks and the I/O bitmap offset."""
    base = machine.cpu.tr.base if base is None else base
    raw = _read(machine, base, 104)
    if raw is None:
        return {}
    f = struct.unpack_from("<7I", raw, 0)
    return {"esp0": f[1], "ss0": f[2] & 0xFFFF, "esp1": f[3], "ss1": f[4] & 0xFFFF,
            "esp2": f[5], "ss2": f[6] & 0xFFFF,
            "iomap_base": struct.unpack_from("<H", raw, 0x66)[0]}


def _fmt(key: str, v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) and key in ("base", "limit", "handler", "esp0", "esp1", "esp2"):
        return f"{v:#010x}"
    if isinstance(v, int) and key in ("selector", "ss0", "ss1", "ss2"):
        return f"{v:#06x}"
    return html.escape(str(v))


def rows_html(rows: list[dict], title: str = "", columns: list[str] | None = None) -> str:
    """An HTML table (with a caption) of rows from the functions above."""
    if isinstance(rows, dict):
        rows = [rows]
    if not rows:
        return f"<p><em>{html.escape(title)}: empty</em></p>"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    # Jupyter's stylesheet right-aligns table cells; text reads better left-aligned
    left = 'style="text-align: left"'
    head = "".join(f"<th {left}>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td {left}>{_fmt(c, r.get(c))}</td>" for c in columns)
                   + "</tr>" for r in rows)
    cap = f"<caption>{html.escape(title)}</caption>" if title else ""
    return (f'<table class="vmkit-table" style="font-family: monospace">{cap}'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
