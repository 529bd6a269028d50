"""Robin & Irvine (USENIX Security 2000): their list of sensitive unprivileged instructions,
compared with the kit's classification."""

from __future__ import annotations

from dataclasses import dataclass

from vmkit.vmm.classify.forms import classify
from vmkit.vmm.classify.table import ClassificationTable, classify_all


# ---- Robin & Irvine (2000) -------------------------------------------------------------------
@dataclass(frozen=True)
class RobinIrvineEntry:
    """One instruction of Robin & Irvine's list: its name in the paper, the paper's group,
    the kit's forms of it, and (paraphrased) why the paper counts it sensitive."""
    name: str
    group: str
    forms: tuple
    why: str


REGISTER = "sensitive register instructions"
PROTECTION = "protection system references"

#: J. S. Robin and C. E. Irvine, "Analysis of the Intel Pentium's Ability to Support a Secure
#: Virtual Machine Monitor", Proc. 9th USENIX Security Symposium, Denver, August 2000. The paper
#: finds seventeen sensitive, unprivileged instructions in two groups: instructions that read
#: or change sensitive registers or memory locations (the descriptor-table registers, the
#: machine status word, EFLAGS), and instructions that reference the protection system (they
#: check or reveal CPL, RPL and descriptor privileges). As their list is usually reproduced it
#: names the eighteen mnemonics below. Reasons are paraphrased, not quoted.
_RI = (
    ("SGDT", REGISTER, ("sgdt [eax]",), "stores GDTR: a guest sees the monitor's GDT address"),
    ("SIDT", REGISTER, ("sidt [eax]",), "stores IDTR: a guest sees the monitor's IDT address"),
    ("SLDT", REGISTER, ("sldt ax",), "stores LDTR: a guest sees the real LDT selector"),
    ("SMSW", REGISTER, ("smsw eax", "smsw word ptr [eax]"),
     "stores the low bits of CR0 (PE, MP, TS ...): the real, not the virtual, values"),
    ("PUSHF", REGISTER, ("pushfd", "pushfw"), "pushes the real IF and IOPL"),
    ("POPF", REGISTER, ("popfd", "popfw"),
     "at CPL > IOPL does not change IF (and not IOPL above CPL 0), silently: a deprivileged "
     "kernel cannot enable or disable interrupts with it and the monitor is not told"),
    ("LAR", PROTECTION, ("lar eax, ebx",),
     "the descriptor is checked against CPL and RPL: the result depends on the ring"),
    ("LSL", PROTECTION, ("lsl eax, ebx",), "as LAR: the check uses the current ring"),
    ("VERR", PROTECTION, ("verr bx",), "as LAR: readability is judged at the current ring"),
    ("VERW", PROTECTION, ("verw bx",), "as LAR: writability is judged at the current ring"),
    ("POP", PROTECTION, ("pop ds", "pop ss"),
     "popping a segment register checks the selector against CPL"),
    ("PUSH", PROTECTION, ("push cs", "push ds", "push ss"),
     "pushing CS (or SS) reveals the ring in the selector's low bits"),
    ("CALL", PROTECTION, ("lcall [eax]",),
     "a far call checks privileges and pushes CS, whose RPL shows the ring"),
    ("JMP", PROTECTION, ("ljmp [eax]",), "a far jump checks privileges against CPL"),
    ("INT n", PROTECTION, ("int 0x80",),
     "the gate is checked against CPL, and the frame pushed (stack switch, CS) depends on "
     "the ring"),
    ("RET", PROTECTION, ("retf",),
     "a far return compares the popped CS's RPL with CPL: same-ring or outer-ring return"),
    ("STR", PROTECTION, ("str ax",), "stores TR: a guest sees the real task register"),
    ("MOV", PROTECTION, ("mov eax, cs", "mov eax, ds", "mov ds, ax", "mov ss, ax"),
     "moving from CS/SS reveals the ring; loads into segment registers are checked against "
     "CPL"),
)


def robin_irvine() -> list[RobinIrvineEntry]:
    """Robin & Irvine's (USENIX Security 2000) sensitive, unprivileged Pentium instructions,
    with their group in the paper and the kit's forms of each."""
    return [RobinIrvineEntry(*e) for e in _RI]


@dataclass(frozen=True)
class RobinIrvineCheck:
    entry: RobinIrvineEntry
    rows: tuple           # Classification of each kit form
    agrees: bool          # every form came out sensitive and not privileged


def compare_robin_irvine(table: ClassificationTable | None = None) -> list[RobinIrvineCheck]:
    """Each Robin & Irvine instruction with the experiments' verdict on the kit's forms."""
    table = table or classify_all()
    out = []
    for e in robin_irvine():
        rows = []
        for f in e.forms:
            try:
                rows.append(table[f])
            except KeyError:
                rows.append(classify(f))
        agrees = all(r.sensitive and not r.privileged for r in rows)
        out.append(RobinIrvineCheck(e, tuple(rows), agrees))
    return out
