"""Instruction forms and parsing: the canonical forms of the subset, and ``classify(line)``."""

from __future__ import annotations

from dataclasses import dataclass

from vmkit.errors import AssemblyError, VmkitError
from vmkit.isa import semantics as sem
from vmkit.isa.decode import Insn, decode_one
from vmkit.vmm.classify.analysis import Classification, _analyse
from vmkit.vmm.classify.lab import _lab
from vmkit.vmm.classify.worlds import CODE, KCODE, KDATA, SCRATCH, TARGET, UCODE, UDATA, setups_for

# ---- forms and parsing ----------------------------------------------------------------------
_HARNESS = (f".equ TARGET, {TARGET:#x}\n.equ SCRATCH, {SCRATCH:#x}\n.equ KCODE, {KCODE:#x}\n"
            f".equ KDATA, {KDATA:#x}\n.equ UCODE, {UCODE:#x}\n.equ UDATA, {UDATA:#x}\n")

_BINARY = {"add", "adc", "sub", "sbb", "cmp", "and", "or", "xor", "test"}
_SHIFTS = {"shl", "sal", "shr", "sar", "rol", "ror"}
_SPECIAL = {
    "mov": ["mov eax, ebx", "mov eax, dword ptr [eax]", "mov eax, cr0", "mov cr0, eax",
            "mov eax, cr2", "mov cr2, eax", "mov eax, cr3", "mov cr3, eax", "mov eax, cr4",
            "mov cr4, eax", "mov eax, cs", "mov eax, ds", "mov eax, ss", "mov ds, ax",
            "mov es, ax", "mov ss, ax"],
    "push": ["push eax", "push cs", "push ds", "push ss"],
    "pop": ["pop eax", "pop ds", "pop ss"],
    "in": ["in al, dx", "in al, 0x21"],
    "out": ["out dx, al", "out 0x21, al"],
    "smsw": ["smsw eax", "smsw word ptr [eax]"],
    "sldt": ["sldt ax"], "str": ["str ax"], "lldt": ["lldt ax"], "ltr": ["ltr ax"],
    "lmsw": ["lmsw ax"], "lgdt": ["lgdt [eax]"], "lidt": ["lidt [eax]"],
    "sgdt": ["sgdt [eax]"], "sidt": ["sidt [eax]"], "invlpg": ["invlpg [eax]"],
    "lar": ["lar eax, ebx"], "lsl": ["lsl eax, ebx"], "verr": ["verr bx"], "verw": ["verw bx"],
    "ljmp": ["ljmp [eax]"], "lcall": ["lcall [eax]"], "retf": ["retf"], "int": ["int 0x80"],
    "iret": ["iretw"], "pushf": ["pushfw"], "popf": ["popfw"],
    "jmp": ["jmp 0x2000", "jmp eax"], "call": ["call 0x2000"], "ret": ["ret"],
    "jecxz": ["jecxz 0x1010"], "loop": ["loop 0x1010"], "loope": ["loope 0x1010"],
    "loopne": ["loopne 0x1010"], "xchg": ["xchg eax, ebx"], "cmpxchg": ["cmpxchg [eax], ebx"],
    "bswap": ["bswap eax"], "movzx": ["movzx eax, bl"], "movsx": ["movsx eax, bl"],
    "lea": ["lea eax, [ebx + 4]"], "imul": ["imul eax, ebx"], "mul": ["mul ebx"],
    "div": ["div ebx"], "idiv": ["idiv ebx"], "inc": ["inc eax"], "dec": ["dec eax"],
    "neg": ["neg eax"], "not": ["not eax"],
}
#: mnemonics whose only encodings the kit does not run (capstone knows them; the subset not)
_NOT_RUNNABLE = {"jcxz": "needs a 0x67 address-size prefix (16-bit addressing is not in the "
                         "subset)"}


def canonical_forms(mnemonic: str | None = None) -> list[str]:
    """Instruction forms to classify, derived from the semantics registry: one canonical form
    per registered mnemonic, several where the operands matter (mov to and from control and
    segment registers, push/pop of segment registers, in/out with an immediate port and with
    dx, smsw to a register and to memory, ...). With ``mnemonic``, that mnemonic's forms."""
    sem._load()
    names = [mnemonic] if mnemonic else sorted(sem.BY_MNEMONIC)
    out = []
    for m in names:
        if m in _NOT_RUNNABLE:
            continue
        if m in _SPECIAL:
            out += _SPECIAL[m]
        elif m in _BINARY:
            out.append(f"{m} eax, ebx")
        elif m in _SHIFTS:
            out.append(f"{m} eax, 3")
        elif m.startswith("set"):
            out.append(f"{m} al")
        elif m.startswith("cmov"):
            out.append(f"{m} eax, ebx")
        elif m.startswith("j"):
            out.append(f"{m} 0x2000")
        else:
            out.append(m)
    return out


@dataclass(frozen=True)
class _Form:
    line: str
    code: bytes
    insn: Insn
    text: str


_FORM_CACHE: dict[str, _Form] = {}


def _form(line: str) -> _Form:
    f = _FORM_CACHE.get(line)
    if f is not None:
        return f
    from vmkit.isa.asm import assemble
    if "\n" in line or ";" in line.split("#")[0]:
        raise VmkitError(f"classify takes one instruction, got {line!r}")
    try:
        prog = assemble(_HARNESS + line + "\n", base=CODE)
    except AssemblyError as e:
        raise VmkitError(f"cannot assemble {line!r}: {e.message}") from None
    code = prog.code
    if not code:
        raise VmkitError(f"{line!r} is not an instruction")
    insn = decode_one(code + bytes(15), CODE)
    if insn is None or insn.size != len(code):
        raise VmkitError(f"{line!r} must be exactly one instruction")
    sem._load()
    if insn.id == 0 or insn.id not in sem.REGISTRY:
        raise VmkitError(f"{insn.text!r} is not in the kit's instruction subset")
    if insn.adsize:
        raise VmkitError(f"{insn.text!r}: 16-bit addressing (0x67 prefix) is not in the subset")
    f = _Form(line, code, insn, _display(insn, line))
    _FORM_CACHE[line] = f
    return f


def _display(insn: Insn, line: str) -> str:
    """Capstone's spelling, unless it does not assemble back to the same bytes (capstone prints
    ``lcall [eax]`` as ``call ptr [eax]``): then the line as written. Where capstone spells
    the line as written, it was just assembled to these bytes (the harness around it only
    names symbols, which capstone's lower-case spelling never uses)."""
    written = " ".join(line.split())
    if insn.text == written:
        return written
    from vmkit.isa.asm import assemble
    try:
        if assemble(insn.text + "\n", base=CODE).code == insn.raw:
            return insn.text
    except AssemblyError:
        pass
    return " ".join(line.split())


def _resolve(asm_line: str) -> str:
    """A bare mnemonic becomes its canonical form; anything else is kept."""
    s = " ".join(str(asm_line).split())
    if not s:
        raise VmkitError("classify needs an instruction, e.g. 'popfd' or 'mov eax, cr0'")
    if " " not in s:
        sem._load()
        low = s.lower()
        if low in sem.BY_MNEMONIC or low in _SPECIAL:
            forms = canonical_forms(low)
            if forms:
                return forms[0]
    return s


_CACHE: dict[str, Classification] = {}


def classify(asm_line: str) -> Classification:
    """Classify one instruction by experiment (see the module docstring).

    ``asm_line`` is an instruction in the kit's Intel syntax (``"mov eax, cr0"``, ``"lgdt
    [eax]"``, ``"out dx, al"``) or a bare mnemonic (then its canonical form, e.g. ``"lgdt"`` is
    ``lgdt [eax]``). The symbols TARGET and SCRATCH name the landing code and the scratch
    area (``"ljmp KCODE, TARGET"``). Raises VmkitError for text that is not exactly one
    instruction of the subset."""
    line = _resolve(asm_line)
    hit = _CACHE.get(line)
    if hit is not None:
        return hit
    f = _form(line)
    lab = _lab()
    outs = []
    for setup in setups_for(f.insn):
        for world, cpl, m, snap in lab.states:
            outs.append(lab.run(f.code, setup, world, cpl, m, snap))
    c = _analyse(f.text, f.insn.mnemonic, outs)
    _CACHE[line] = c
    return c
