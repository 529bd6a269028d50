"""Which guest memory an instruction reads and writes, from its decoding (capstone's operand
access flags) and the registers before it runs.

The watchpoints' hits come from the machine (``Machine.watch_memory``); this decoding only
helps say *who* wrote (:func:`vmkit.debug.debugger._attribute`: did the guest instruction's
own write operand cover the bytes?): explicit memory operands (capstone's ``access`` flags)
and the implicit ones of the stack and string instructions listed in ``_IMPLICIT``. Flat
segments are assumed (the kit's guests use base-0 segments).
"""

from __future__ import annotations

import capstone
from capstone import x86_const as X

__all__ = ["accesses"]

MASK32 = 0xFFFFFFFF
_GPR = {getattr(X, f"X86_REG_{n.upper()}"): i
        for i, n in enumerate(("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"))}

_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
_CS.detail = True
_cache: dict = {}

#: implicit memory accesses: mnemonic -> [(kind, base register, offset, size)] where kind is
#: "r" or "w"; base "esp" means the stack pointer before the instruction
_IMPLICIT = {
    "push": [("w", "esp", -4, 4)], "pushfd": [("w", "esp", -4, 4)],
    "pushal": [("w", "esp", -32, 32)], "pushad": [("w", "esp", -32, 32)],
    "call": [("w", "esp", -4, 4)],
    "pop": [("r", "esp", 0, 4)], "popfd": [("r", "esp", 0, 4)],
    "popal": [("r", "esp", 0, 32)], "popad": [("r", "esp", 0, 32)],
    "ret": [("r", "esp", 0, 4)], "iretd": [("r", "esp", 0, 12)], "iret": [("r", "esp", 0, 12)],
    "leave": [("r", "ebp", 0, 4)],
}
_STRING = {"movs": ("esi", "edi"), "lods": ("esi", None), "stos": (None, "edi"),
           "cmps": ("esi+edi", None), "scas": ("edi", None)}
_REGIDX = {"esp": 4, "ebp": 5, "esi": 6, "edi": 7}


def _decode(address: int, raw: bytes):
    key = (address, raw)
    ci = _cache.get(key)
    if ci is None:
        ci = next(iter(_CS.disasm(raw, address, 1)), None)
        if len(_cache) > 1 << 14:
            _cache.clear()
        _cache[key] = ci
    return ci


def accesses(insn, regs) -> list[tuple[str, int, int]]:
    """``[(kind, linear address, size)]`` with kind "r" or "w": the guest memory ``insn`` (the
    kit's decoded instruction) accesses when it runs with general registers ``regs`` (a
    sequence of 8, in encoding order). Best effort (see the module text)."""
    out: list[tuple[str, int, int]] = []
    if insn is None or not insn.raw:
        return out
    ci = _decode(insn.address, bytes(insn.raw))
    mn = insn.mnemonic.split()[-1]                # "rep stosd" -> "stosd"
    stem = mn[:4]
    string = stem in _STRING and mn[4:] in ("b", "w", "d", "sb", "sw", "sd", "")
    if ci is not None and not string:             # string operands: below, with the count
        for o in ci.operands:
            if o.type != X.X86_OP_MEM:
                continue
            if mn == "lea":
                continue
            m = o.mem
            a = m.disp
            if m.base:
                if m.base not in _GPR:
                    continue
                a += regs[_GPR[m.base]]
            if m.index:
                if m.index not in _GPR:
                    continue
                a += regs[_GPR[m.index]] * m.scale
            a &= MASK32
            acc = o.access or capstone.CS_AC_READ
            if acc & capstone.CS_AC_READ:
                out.append(("r", a, o.size))
            if acc & capstone.CS_AC_WRITE:
                out.append(("w", a, o.size))
    for kind, base, off, size in _IMPLICIT.get(mn, ()):
        out.append((kind, (regs[_REGIDX[base]] + off) & MASK32, size))
    if string:
        size = {"b": 1, "w": 2}.get(mn[-1], 4)
        count = regs[1] if insn.rep else 1        # rep: ECX iterations, DF = 0 assumed
        span = max(1, count) * size
        src, dst = _STRING[stem]
        for reg in (src or "").split("+"):
            if reg:
                out.append(("r", regs[_REGIDX[reg]], span))
        if dst:
            out.append(("w", regs[_REGIDX[dst]], span))
    return out
