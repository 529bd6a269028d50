"""Instruction forms of the vmkit subset and their encodings (one table, GNU as's choices).

``FORMS`` below is the single source of truth: each line is ``mnemonic operands encoding``.
Forms are tried in table order and the first that fits wins, which is how the table reproduces
GNU as's choices (``mov eax, ebx`` is ``89 /r``, not ``8B /r``; ``add eax, 5`` is ``83 /0 ib``; the
accumulator short forms only for immediates that do not fit a sign-extended byte; ...). Every
choice was checked against ``as --32`` (binutils 2.40); ``tests/isa/test_asm_gnu_as.py`` keeps
checking it.

Operand patterns (``v`` stands for 16 and 32; a 16-bit expansion gets the 0x66 prefix):

=========================  =================================================================
``r8 r16 r32 rv``          general register of that size
``rm8 rm16 rm32 rmv``      general register or memory of that size (memory may omit the size
                           when the other operand fixes it)
``m8 m16 m32 mv m48 m``    memory (``m48``: fword ptr or no size; ``m``: any size)
``moffs8 moffsv``          memory given by an address alone (``[0x1000]``, ``[label]``)
``imm8 imm16 imm32 immv``  immediate (range checked when the value is known)
``simm8``                  immediate known before layout that fits a sign-extended byte
``one three``              the constant 1 (shift by one) / 3 (``int 3`` is ``int3``)
``al ax eax accv cl dx``   that register; ``cs ds es fs gs ss`` that segment register
``sreg cr``                any segment register / control register
``rel srel rel8 rel32``    branch target: relaxable / written ``short`` / rel8 only / rel32 only
``far``                    ``selector:offset``
``sdiN ssiN``              string operand ``es:[edi]`` / ``seg:[esi]``
``X@``                     this register operand goes in the r/m field of ModRM
=========================  =================================================================

Encodings: hex opcode bytes; ``/r`` or ``/0``..``/7`` (ModRM; ``/rr`` puts operand 1 in both
fields, for ``imul eax, 5``); ``+r`` (register added to the last opcode byte); ``ib iw id iv``
(immediate of 1/2/4/v bytes), ``is`` (sign-extended byte), ``ub`` (unsigned byte); ``cb cd``
(pc-relative rel8/rel32); ``p`` (far pointer: offset dword, selector word); ``mo`` (moffs
address); ``o16`` (0x66 prefix); ``X | Y`` (relaxable jump: short form X, long form Y). A ``:N``
suffix on an immediate names its operand (``ljmp sel, off`` stores the offset first).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vmkit.isa.asm_parse import AsmImm, AsmMem, AsmReg, Far, LineError, Num

__all__ = ["FORMS", "Form", "TABLE", "MNEMONICS", "STRING_OPS", "LOCKABLE", "BRANCHES",
           "Encoding", "select_form", "encode", "accepts", "CONDITIONS"]

# condition codes with every alias GNU as and capstone use
CONDITIONS = [
    (0x0, "o"), (0x1, "no"), (0x2, "b c nae"), (0x3, "ae nb nc"), (0x4, "e z"), (0x5, "ne nz"),
    (0x6, "be na"), (0x7, "a nbe"), (0x8, "s"), (0x9, "ns"), (0xA, "p pe"), (0xB, "np po"),
    (0xC, "l nge"), (0xD, "ge nl"), (0xE, "le ng"), (0xF, "g nle"),
]


def _generated() -> str:
    lines = []
    for n, mn in enumerate("add or adc sbb and sub xor cmp".split()):
        b = n * 8
        lines += [f"{mn} rm8,r8 {b:02X} /r", f"{mn} rmv,rv {b + 1:02X} /r",
                  f"{mn} r8,rm8 {b + 2:02X} /r", f"{mn} rv,rmv {b + 3:02X} /r",
                  f"{mn} al,imm8 {b + 4:02X} ib", f"{mn} rmv,simm8 83 /{n} is",
                  f"{mn} accv,immv {b + 5:02X} iv", f"{mn} rm8,imm8 80 /{n} ib",
                  f"{mn} rmv,immv 81 /{n} iv"]
    for mn, n in (("rol", 0), ("ror", 1), ("rcl", 2), ("rcr", 3), ("shl", 4), ("sal", 4),
                  ("shr", 5), ("sar", 7)):
        lines += [f"{mn} rm8,one D0 /{n}", f"{mn} rmv,one D1 /{n}", f"{mn} rm8 D0 /{n}",
                  f"{mn} rmv D1 /{n}", f"{mn} rm8,cl D2 /{n}",
                  f"{mn} rmv,cl D3 /{n}", f"{mn} rm8,imm8 C0 /{n} ib",
                  f"{mn} rmv,imm8 C1 /{n} ib"]
    for mn, n in (("not", 2), ("neg", 3), ("mul", 4), ("imul", 5), ("div", 6), ("idiv", 7)):
        lines += [f"{mn} rm8 F6 /{n}", f"{mn} rmv F7 /{n}"]
    for cc, names in CONDITIONS:
        for name in names.split():
            lines += [f"j{name} srel {0x70 + cc:02X} cb",
                      f"j{name} rel {0x70 + cc:02X} cb | 0F {0x80 + cc:02X} cd",
                      f"set{name} rm8 0F {0x90 + cc:02X} /0",
                      f"cmov{name} rv,rmv 0F {0x40 + cc:02X} /r"]
    for mn, reg, imm in (("bt", "A3", 4), ("bts", "AB", 5), ("btr", "B3", 6), ("btc", "BB", 7)):
        lines += [f"{mn} rmv,rv 0F {reg} /r", f"{mn} rmv,imm8 0F BA /{imm} ib"]
    return "\n".join(lines)


FORMS = """
# data movement
mov al,moffs8 A0 mo
mov accv,moffsv A1 mo
mov moffs8,al A2 mo
mov moffsv,accv A3 mo
mov rm8,r8 88 /r
mov rmv,rv 89 /r
mov r8,rm8 8A /r
mov rv,rmv 8B /r
mov r32@,sreg 8C /r
mov r16@,sreg o16 8C /r
mov m16,sreg 8C /r
mov sreg,r32@ 8E /r
mov sreg,r16@ 8E /r
mov sreg,m16 8E /r
mov r32@,cr 0F 20 /r
mov cr,r32@ 0F 22 /r
mov r8,imm8 B0 +r ib
mov rv,immv B8 +r iv
mov rm8,imm8 C6 /0 ib
mov rmv,immv C7 /0 iv
movzx rv,rm8 0F B6 /r
movzx r32,rm16 0F B7 /r
movsx rv,rm8 0F BE /r
movsx r32,rm16 0F BF /r
lea rv,m 8D /r
xchg accv,rv 90 +r
xchg rv,accv 90 +r
xchg rm8,r8 86 /r
xchg r8,m8 86 /r
xchg rmv,rv 87 /r
xchg rv,mv 87 /r
xadd rm8,r8 0F C0 /r
xadd rmv,rv 0F C1 /r
cmpxchg rm8,r8 0F B0 /r
cmpxchg rmv,rv 0F B1 /r
bswap r32 0F C8 +r
cbw o16 98
cwde 98
cwd o16 99
cdq 99

# stack
push rv 50 +r
push simm8 6A is
push imm32 68 id
push m32 FF /6
push m16 o16 FF /6
push es 06
push cs 0E
push ss 16
push ds 1E
push fs 0F A0
push gs 0F A8
pop rv 58 +r
pop m32 8F /0
pop m16 o16 8F /0
pop es 07
pop ss 17
pop ds 1F
pop fs 0F A1
pop gs 0F A9
pushad 60
pushal 60
pusha 60
pushaw o16 60
popad 61
popal 61
popa 61
popaw o16 61
pushfd 9C
pushf 9C
pushfw o16 9C
popfd 9D
popf 9D
popfw o16 9D
leave C9
enter imm16,imm8 C8 iw ub

# arithmetic and logic not generated above
inc rv 40 +r
inc rm8 FE /0
inc rmv FF /0
dec rv 48 +r
dec rm8 FE /1
dec rmv FF /1
test rm8,r8 84 /r
test rmv,rv 85 /r
test r8,m8 84 /r
test rv,mv 85 /r
test al,imm8 A8 ib
test accv,immv A9 iv
test rm8,imm8 F6 /0 ib
test rmv,immv F7 /0 iv
imul rv,rmv 0F AF /r
imul rv,rmv,simm8 6B /r is
imul rv,rmv,immv 69 /r iv
imul rv,simm8 6B /rr is
imul rv,immv 69 /rr iv
bsf rv,rmv 0F BC /r
bsr rv,rmv 0F BD /r
shld rmv,rv,imm8 0F A4 /r ib
shld rmv,rv,cl 0F A5 /r
shrd rmv,rv,imm8 0F AC /r ib
shrd rmv,rv,cl 0F AD /r

# control transfer
jmp srel EB cb
jmp rel EB cb | E9 cd
jmp rm32 FF /4
jmp rm16 o16 FF /4
jmp far EA p
jmp m48 FF /5
ljmp far EA p
ljmp imm16,imm32 EA id:1 iw:0
ljmp m48 FF /5
call rel32 E8 cd
call rm32 FF /2
call rm16 o16 FF /2
call far 9A p
call m48 FF /3
lcall far 9A p
lcall imm16,imm32 9A id:1 iw:0
lcall m48 FF /3
jecxz rel8 E3 cb
loop rel8 E2 cb
loope rel8 E1 cb
loopz rel8 E1 cb
loopne rel8 E0 cb
loopnz rel8 E0 cb
ret C3
ret imm16 C2 iw
retf CB
retf imm16 CA iw
lret CB
lret imm16 CA iw
int three CC
int imm8 CD ub
int3 CC
into CE
iretd CF
iret CF
iretw o16 CF

# flags
clc F8
stc F9
cmc F5
cli FA
sti FB
cld FC
std FD
sahf 9E
lahf 9F

# ports
in al,imm8 E4 ub
in accv,imm8 E5 ub
in al,dx EC
in accv,dx ED
out imm8,al E6 ub
out imm8,accv E7 ub
out dx,al EE
out dx,accv EF

# strings (no operands, or the operands capstone prints)
movsb A4
movsb sdi8,ssi8 A4
movsw o16 A5
movsw sdi16,ssi16 o16 A5
movsd A5
movsd sdi32,ssi32 A5
movs sdi8,ssi8 A4
movs sdiv,ssiv A5
stosb AA
stosb sdi8,al AA
stosw o16 AB
stosw sdi16,ax o16 AB
stosd AB
stosd sdi32,eax AB
stos sdi8,al AA
stos sdiv,accv AB
lodsb AC
lodsb al,ssi8 AC
lodsw o16 AD
lodsw ax,ssi16 o16 AD
lodsd AD
lodsd eax,ssi32 AD
lods al,ssi8 AC
lods accv,ssiv AD
cmpsb A6
cmpsb ssi8,sdi8 A6
cmpsw o16 A7
cmpsw ssi16,sdi16 o16 A7
cmpsd A7
cmpsd ssi32,sdi32 A7
cmps ssi8,sdi8 A6
cmps ssiv,sdiv A7
scasb AE
scasb al,sdi8 AE
scasw o16 AF
scasw ax,sdi16 o16 AF
scasd AF
scasd eax,sdi32 AF
scas al,sdi8 AE
scas accv,sdiv AF

# system
hlt F4
nop 90
pause F3 90
ud2 0F 0B
cpuid 0F A2
rdtsc 0F 31
rdmsr 0F 32
wrmsr 0F 30
clts 0F 06
invd 0F 08
wbinvd 0F 09
lgdt m48 0F 01 /2
sgdt m48 0F 01 /0
lidt m48 0F 01 /3
sidt m48 0F 01 /1
smsw r32 0F 01 /4
smsw r16 o16 0F 01 /4
smsw m16 0F 01 /4
lmsw rm16 0F 01 /6
invlpg m 0F 01 /7
sldt r32 0F 00 /0
sldt r16 o16 0F 00 /0
sldt m16 0F 00 /0
str r32 0F 00 /1
str r16 o16 0F 00 /1
str m16 0F 00 /1
lldt rm16 0F 00 /2
ltr rm16 0F 00 /3
verr rm16 0F 00 /4
verw rm16 0F 00 /5
lar rv,r32@ 0F 02 /r
lar rv,r16@ 0F 02 /r
lar rv,m16 0F 02 /r
lsl rv,r32@ 0F 03 /r
lsl rv,r16@ 0F 03 /r
lsl rv,m16 0F 03 /r
""" + _generated()

STRING_OPS = {m + s for m in ("movs", "stos", "lods", "cmps", "scas") for s in ("", "b", "w", "d")}
REPE_OPS = {m for m in STRING_OPS if m.startswith(("cmps", "scas"))}
LOCKABLE = {"add", "adc", "and", "btc", "btr", "bts", "cmpxchg", "dec", "inc", "neg", "not",
            "or", "sbb", "sub", "xadd", "xchg", "xor"}
# a bare expression operand of these is a branch target
BRANCHES = {"jmp", "call", "ljmp", "lcall", "jecxz", "loop", "loope", "loopz", "loopne",
            "loopnz"} | {f"j{n}" for _, names in CONDITIONS for n in names.split()}
# an operand without a size means dword for these (as in GNU as)
DEFAULT_DWORD = {"push", "pop", "jmp", "call"}


# --------------------------------------------------------------------------------------------
# the table, parsed

@dataclass(frozen=True, slots=True)
class Pat:
    kind: str                 # r rm m moffs imm simm8 one three reg sreg cr rel srel rel8 rel32
    size: int | None = None   # far sdi ssi
    name: str | None = None   # for kind == "reg"
    in_rm: bool = False       # "@": register goes in the r/m field

    def __str__(self):
        return self.name or f"{self.kind}{self.size or ''}"


@dataclass(slots=True)
class Form:
    mnemonic: str
    pats: tuple[Pat, ...]
    o16: bool
    opcode: bytes
    modrm: object = None      # None, "r", "rr" or a digit 0..7
    plusr: bool = False
    imms: list = field(default_factory=list)   # (kind, operand index)
    long: bytes | None = None  # relaxable: long opcode (short one is `opcode`)
    text: str = ""

    @property
    def mem_size(self) -> int | None:
        for p in self.pats:
            if p.kind in ("rm", "m", "moffs", "sdi", "ssi"):
                return p.size
        return None


def _pat(tok: str, v: int | None) -> Pat:
    in_rm = tok.endswith("@")
    tok = tok.rstrip("@")
    if v is not None and tok.endswith("v"):
        tok = tok[:-1] + str(v)
    if tok == "accv" or tok in ("acc16", "acc32"):
        tok = {16: "ax", 32: "eax"}[v]
    if tok in ("al", "ax", "eax", "cl", "dx", "cs", "ds", "es", "fs", "gs", "ss"):
        return Pat("reg", name=tok)
    if tok == "simm8":
        return Pat("simm8", v or 32)
    if tok in ("one", "three", "sreg", "cr", "rel", "srel", "rel8", "rel32", "far", "m"):
        return Pat(tok)
    for kind in ("moffs", "imm", "sdi", "ssi", "rm", "r", "m"):
        if tok.startswith(kind) and tok[len(kind):].isdigit():
            return Pat(kind, int(tok[len(kind):]), in_rm=in_rm)
    raise ValueError(f"bad pattern {tok!r}")


def _form(mn: str, ops: str, enc: list[str], v: int | None, text: str) -> Form:
    pats = tuple(_pat(t, v) for t in ops.split(",")) if ops else ()
    o16 = v == 16
    opcode = bytearray()
    long = None
    modrm = None
    plusr = False
    imms = []
    imm_slots = [i for i, p in enumerate(pats)
                 if p.kind in ("imm", "simm8", "rel", "srel", "rel8", "rel32", "far", "moffs")]
    k = 0
    target = opcode
    for tok in enc:
        if tok == "o16":
            o16 = True
        elif tok == "|":
            long = bytearray()
            target = long
        elif len(tok) == 2 and all(c in "0123456789ABCDEF" for c in tok):
            target.append(int(tok, 16))
        elif tok.startswith("/"):
            modrm = tok[1:] if tok[1] == "r" else int(tok[1:])
        elif tok == "+r":
            plusr = True
        else:
            name, _, idx = tok.partition(":")
            if name == "iv":
                name = {16: "iw", 32: "id"}[v]
            if name not in ("ib", "iw", "id", "is", "ub", "cb", "cd", "p", "mo"):
                raise ValueError(f"bad encoding token {tok!r} in {text!r}")
            if target is long:
                continue          # the long form's displacement is the same operand
            if idx:
                slot = int(idx)
            else:
                slot = imm_slots[k]
                k += 1
            imms.append((name, slot))
    return Form(mn, pats, o16, bytes(opcode), modrm, plusr, imms,
                bytes(long) if long is not None else None, text)


def _build(text: str) -> dict[str, list[Form]]:
    table: dict[str, list[Form]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        mn = parts[0]
        if len(parts) > 1 and not all(c in "0123456789ABCDEF" for c in parts[1]) \
                and parts[1] != "o16":
            ops, enc = parts[1], parts[2:]
        else:
            ops, enc = "", parts[1:]
        has_v = "iv" in enc or any(t.rstrip("@").endswith("v") for t in ops.split(",") if t)
        for v in ((16, 32) if has_v else (None,)):
            table.setdefault(mn, []).append(_form(mn, ops, enc, v, line))
    return table


TABLE: dict[str, list[Form]] = _build(FORMS)
MNEMONICS = sorted(TABLE)


# --------------------------------------------------------------------------------------------
# matching

def _imm_ok(op) -> bool:
    return type(op) is AsmImm and not op.short


def _fits(p: Pat, op) -> bool:
    k = p.kind
    t = type(op)
    if k == "r":
        return t is AsmReg and op.kind == "gpr" and op.size == p.size
    if k == "rm":
        if t is AsmReg:
            return op.kind == "gpr" and op.size == p.size
        return t is AsmMem and not op.far and (op.size is None or op.size == p.size)
    if k == "m":
        if t is not AsmMem:
            return False
        if p.size is None:
            return not op.far
        if p.size == 48:
            return op.far or op.size in (None, 48)
        return not op.far and op.size in (None, p.size)
    if k == "moffs":
        return t is AsmMem and not op.far and op.base is None and op.index is None and \
            op.size in (None, p.size)
    if k == "reg":
        return t is AsmReg and op.name == p.name
    if k == "imm":
        return _imm_ok(op)
    if k == "simm8":
        if not _imm_ok(op) or op.const is None or op.wide:
            return False
        mask = (1 << p.size) - 1
        v = op.const & mask
        sx = ((v & 0xFF) ^ 0x80) - 0x80
        return (sx & mask) == v and -(1 << (p.size - 1)) <= op.const < (1 << p.size)
    if k == "one":
        return _imm_ok(op) and op.const == 1 and not op.wide
    if k == "three":
        return _imm_ok(op) and op.const == 3 and not op.wide
    if k == "sreg":
        return t is AsmReg and op.kind == "sreg"
    if k == "cr":
        return t is AsmReg and op.kind == "cr"
    if k in ("rel", "rel32"):
        return _imm_ok(op)
    if k == "srel":
        return t is AsmImm and op.short
    if k == "rel8":
        return t is AsmImm
    if k == "far":
        return t is Far
    if k in ("sdi", "ssi"):
        if t is not AsmMem or op.far or op.index is not None or op.disp is not None:
            return False
        if op.size not in (None, p.size) or op.base is None:
            return False
        if k == "sdi":
            return op.base.name == "edi" and (op.seg is None or op.seg.name == "es")
        return op.base.name == "esi"
    raise AssertionError(k)


_KIND_WORDS = {"r": "register", "rm": "register or memory", "m": "memory",
               "moffs": "memory", "imm": "immediate", "simm8": "immediate", "one": "immediate",
               "three": "immediate", "sreg": "segment register", "cr": "control register",
               "rel": "label or address", "srel": "label or address",
               "rel8": "label or address", "rel32": "label or address",
               "far": "selector:offset", "sdi": "es:[edi]", "ssi": "[esi]"}


def _describe_pats(pats: list[Pat]) -> str:
    words: list[str] = []
    for p in pats:
        if p.kind == "reg":
            w = p.name
        elif p.kind == "m" and p.size == 48:
            w = "memory (fword ptr or no size)"
        elif p.kind in ("r", "rm") and len({q.size for q in pats if q.kind in ("r", "rm")}) == 1:
            w = f"{p.size}-bit " + _KIND_WORDS[p.kind]
        else:
            w = _KIND_WORDS[p.kind]
        for part in w.split(" or "):
            if part not in words:
                words.append(part)
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def describe_operand(op) -> str:
    if type(op) is AsmReg:
        return {"gpr": f"{op.size}-bit register", "sreg": "segment register",
                "cr": "control register"}[op.kind] + f" {op.name}"
    if type(op) is AsmMem:
        return "memory" if op.size is None else f"{_SIZE_NAMES.get(op.size, '')} ptr memory"
    if type(op) is Far:
        return "far pointer"
    return "immediate"


_SIZE_NAMES = {8: "byte", 16: "word", 32: "dword", 48: "fword"}


def accepts(mnemonic: str, nops: int, index: int, kinds: tuple[str, ...]) -> bool:
    """Does some form of ``mnemonic`` with ``nops`` operands take one of ``kinds`` at ``index``?"""
    return any(len(f.pats) == nops and f.pats[index].kind in kinds
               for f in TABLE.get(mnemonic, ()))


def _op_size(op) -> int | None:
    if type(op) is AsmReg and op.kind == "gpr":
        return op.size
    if type(op) is AsmMem:
        return op.size
    return None


def select_form(mn: str, ops: list) -> Form:
    """The form GNU as would pick for these operands, or a :class:`LineError` saying why none."""
    forms = TABLE[mn]
    cands = [f for f in forms if len(f.pats) == len(ops)]
    if not cands:
        counts = sorted({len(f.pats) for f in forms})
        want = " or ".join(str(c) for c in counts)
        col = ops[counts[-1]].col if len(ops) > counts[-1] else (ops[0].col if ops else 0)
        raise LineError(f"'{mn}' takes {want} operand{'s' if counts != [1] else ''}, "
                        f"got {len(ops)}", col)
    unsized = next((o for o in ops if type(o) is AsmMem and o.size is None and not o.far), None)
    matches = []
    for f in cands:
        if all(_fits(p, o) for p, o in zip(f.pats, ops)):
            if unsized is None:
                return f
            matches.append(f)
    if matches:
        sizes = {f.mem_size for f in matches}
        if len(sizes) == 1:
            return matches[0]
        if mn in DEFAULT_DWORD:
            for f in matches:
                if f.mem_size == 32:
                    return f
        names = [f"{_SIZE_NAMES[s]} ptr" for s in sorted(s for s in sizes if s in _SIZE_NAMES)]
        raise LineError(f"ambiguous operand size for '{mn}': write "
                        + ", ".join(names[:-1]) + " or " + names[-1] + " before the memory operand",
                        unsized.col)
    # explain the failure
    for i, op in enumerate(ops):
        if not any(_fits(f.pats[i], op) for f in cands):
            want = _describe_pats([f.pats[i] for f in cands])
            if type(op) is AsmMem and op.size is not None and \
                    any(f.pats[i].kind in ("rm", "m", "moffs") for f in cands):
                sizes = sorted({f.pats[i].size for f in cands
                                if f.pats[i].kind in ("rm", "m", "moffs") and f.pats[i].size})
                names = [f"{_SIZE_NAMES.get(s, s)} ptr" for s in sizes]
                raise LineError(f"operand size mismatch for '{mn}': {_SIZE_NAMES.get(op.size)} "
                                f"ptr memory where {' or '.join(names) or 'no size'} is expected",
                                op.col)
            raise LineError(f"expected {want} as operand {i + 1} of '{mn}', got "
                            f"{describe_operand(op)}", op.col)
    sized = [(o, _op_size(o)) for o in ops if _op_size(o) is not None]
    for o, s in sized[1:]:
        if s != sized[0][1]:
            first = sized[0][0]
            raise LineError(f"operand size mismatch for '{mn}': {_show(first)} is "
                            f"{sized[0][1]}-bit but {_show(o)} is {s}-bit", o.col)
    raise LineError(f"invalid combination of operands for '{mn}'", ops[0].col)


def _show(op) -> str:
    return op.name if type(op) is AsmReg else f"{_SIZE_NAMES.get(op.size, '')} ptr memory"


# --------------------------------------------------------------------------------------------
# encoding

_SEG_PREFIX = {"es": 0x26, "cs": 0x2E, "ss": 0x36, "ds": 0x3E, "fs": 0x64, "gs": 0x65}
_SCALE_BITS = {1: 0, 2: 1, 4: 2, 8: 3}


@dataclass(slots=True)
class Encoding:
    """Bytes known now plus fields filled after layout.

    ``fields`` items are ``(kind, expr, width, col)`` with kind ``imm`` (range by width),
    ``simm`` (sign-extended byte), ``uimm`` (unsigned), ``disp``, ``rel`` (pc-relative, from the
    end of the instruction). For a relaxable jump ``long`` is the long opcode.
    """
    head: bytes
    fields: list
    size: int
    long: bytes | None = None
    target: object = None


def _modrm_mem(m: AsmMem, reg: int, fields: list) -> bytes:
    base, index = m.base, m.index
    d = m.dconst
    if m.disp is None:
        dsize = 0
    elif d is None:
        dsize = 4
    else:
        d32 = d & 0xFFFFFFFF
        ds = d32 - (1 << 32) if d32 & 0x80000000 else d32
        dsize = 0 if ds == 0 else 1 if -128 <= ds <= 127 else 4
    if base is None and index is None:
        fields.append(("disp", m.disp, 4, m.col))
        return bytes([0x05 | reg << 3])
    if base is not None and base.num == 5 and dsize == 0:   # [ebp] needs a disp8 of 0
        dsize = 1
    mod = {0: 0, 1: 1, 4: 2}[dsize]
    if index is None and base.num != 4:
        out = bytes([mod << 6 | reg << 3 | base.num])
    elif base is None:
        out = bytes([0x04 | reg << 3, _SCALE_BITS[m.scale] << 6 | index.num << 3 | 5])
        dsize = 4
    else:
        idx = 4 if index is None else index.num
        ss = 0 if index is None else _SCALE_BITS[m.scale]
        out = bytes([mod << 6 | reg << 3 | 4, ss << 6 | idx << 3 | base.num])
    if dsize:
        fields.append(("disp", m.disp if m.disp is not None else _ZERO, dsize, m.col))
    return out


_ZERO = Num(0, 0)


def _default_seg(m: AsmMem) -> str:
    return "ss" if m.base is not None and m.base.num in (4, 5) else "ds"


def encode(form: Form, ops: list, prefix: int | None = None) -> Encoding:
    """Encode ``ops`` with ``form``; ``prefix`` is a LOCK/REP byte to place after 0x66."""
    head = bytearray()
    for p, mem in zip(form.pats, ops):
        if type(mem) is AsmMem and mem.seg is not None:
            default = "es" if p.kind == "sdi" else _default_seg(mem)
            if mem.seg.name != default:
                head.append(_SEG_PREFIX[mem.seg.name])
    if form.o16:
        head.append(0x66)
    if prefix is not None:
        head.append(prefix)
    opcode = bytearray(form.opcode)
    long = bytearray(form.long) if form.long is not None else None
    if form.plusr:
        r = next(o for p, o in zip(form.pats, ops) if p.kind == "r")
        opcode[-1] += r.num
    fields: list = []
    if form.modrm is not None:
        if form.modrm == "rr":
            r = ops[0]
            opcode.append(0xC0 | r.num << 3 | r.num)
        else:
            rm_op = reg_op = None
            for p, o in zip(form.pats, ops):
                if p.kind in ("rm", "m") or p.in_rm:
                    rm_op = o
                elif p.kind in ("r", "sreg", "cr"):
                    reg_op = o
            if rm_op is None:          # /digit with a register operand: it goes in r/m
                rm_op, reg_op = reg_op, None
            regf = reg_op.num if form.modrm == "r" else form.modrm
            if type(rm_op) is AsmReg:
                opcode.append(0xC0 | regf << 3 | rm_op.num)
            else:
                opcode += _modrm_mem(rm_op, regf, fields)
    for kind, slot in form.imms:
        op = ops[slot]
        if kind == "mo":
            fields.append(("disp", op.disp, 4, op.col))
        elif kind == "p":
            fields.append(("imm", op.off.expr, 4, op.off.col))
            fields.append(("uimm", op.sel.expr, 2, op.sel.col))
        elif kind == "cb":
            fields.append(("rel", op.expr, 1, op.col))
        elif kind == "cd":
            fields.append(("rel", op.expr, 4, op.col))
        else:
            width = {"ib": 1, "iw": 2, "id": 4, "is": 1, "ub": 1}[kind]
            fkind = "simm" if kind == "is" else "uimm" if kind == "ub" else "imm"
            fields.append((fkind, op.expr, width, op.col))
    size = len(head) + len(opcode) + sum(f[2] for f in fields)
    if long is not None:
        return Encoding(bytes(head) + bytes(opcode), fields, size,
                        bytes(head) + bytes(long), ops[0].expr)
    return Encoding(bytes(head) + bytes(opcode), fields, size)
