"""Virtualization holes under trap-and-emulate: the guest runs a sensitive but unprivileged
instruction, it does not trap, and the guest sees the real machine instead of the virtual one.

**Which instructions.** Those :func:`vmkit.classify` finds sensitive and unprivileged (Popek &
Goldberg's Theorem 1 violators): an instruction compiled while the guest runs is looked up
by its *form* (mnemonic and operand kinds: ``mov r, seg`` for ``mov ax, cs``) among the
canonical forms of its mnemonic, and the matching forms are classified (by experiment, once
per process). Nothing here lists sensitive instructions. The answer is decided when the
machine compiles the instruction (``MachineHooks.intercept``): an instruction that is no
hole runs its compiled semantics as before, at full speed; only the compiled hole
instructions pay a check when they run.

**What the bare machine would have shown.** The instruction's own semantics (the same
compiled code the machine runs, from ``vmkit.isa``) are run a second time on a copy of the
*virtual* CPU, the CPU as the guest believes it is (virtual CPL, IF and IOPL, CR0, GDTR,
IDTR, LDTR, TR, the CS and SS selectors the guest loaded), reading guest memory without side
effects and keeping its writes aside. Then the two results are compared: general registers,
the flags (virtual IF and IOPL on the guest's side), and the bytes the bare run wrote. A
difference is a hole: a :class:`~vmkit.trace.Hole` event (what the guest saw, what it would
have seen) and ``stats["holes"]`` (by mnemonic). An instruction whose semantics need more of
the machine than that (a segment load, a far transfer, a software interrupt: those reach the
VMM through a trap, the real IDT or its ring-change hook) is not compared, then or later;
where its semantics call the machine so on every run (``int``, ``iretd``, ``mov ds, ax``:
:func:`never_compared`), it is not even intercepted and runs as compiled (inside blocks, and
``int``/``iretd`` without the retry a check in a burst costs: the syscall guest's system
calls a few per cent faster under te).
"""

from __future__ import annotations

import ast

from vmkit.isa import semantics as sem
from vmkit.isa.decode import Mem, Reg
from vmkit.isa.faults import Fault, Resched
from vmkit.machine import rules
from vmkit.machine.cpu import CPU, MASK32
from vmkit.machine.mmu import Sync
from vmkit.machine.rules import Descriptor
from vmkit.trace import Hole

__all__ = ["form_of", "is_hole_form", "never_compared", "HoleCheck"]

#: EFLAGS bits compared (status, TF, IF, DF, OF, IOPL, NT)
_FLAGS = 0x7FD5
_GPR = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
_FORMS: dict = {}


def form_of(insn) -> tuple:
    """An instruction's form: its mnemonic and the kinds of its operands ("gpr", "seg", "cr",
    "mem", "imm"), e.g. ``("mov", ("gpr", "seg"))`` for ``mov ax, cs``."""
    kinds = []
    for o in insn.operands:
        kinds.append(o.kind if isinstance(o, Reg) else "mem" if isinstance(o, Mem) else "imm")
    return insn.mnemonic, tuple(kinds)


def is_hole_form(insn) -> bool:
    """True when ``vmkit.classify`` finds a form of the instruction sensitive and unprivileged
    (cached per form for the process)."""
    key = form_of(insn)
    hit = _FORMS.get(key)
    if hit is None:
        from vmkit.vmm.classify import canonical_forms, classify
        from vmkit.vmm.classify.forms import _form
        hit = False
        for line in canonical_forms(insn.mnemonic):
            try:
                f = _form(line)
            except Exception:       # a form the kit cannot assemble: not classified
                continue
            if form_of(f.insn) == key and classify(line).violates_theorem1:
                hit = True
                break
        _FORMS[key] = hit
    return hit


#: the machine calls a bare run can answer (:class:`_BareMachine`'s); any other one ends it
_BARE_CALLS = frozenset(("read_descriptor", "lar", "lsl", "verr", "verw"))


def never_compared(insn) -> bool:
    """True when every run of ``insn``'s semantics calls the machine for more than a bare run
    can model (a segment load, a far transfer, a software interrupt, iretd: a top-level
    ``M.<call>`` that nothing before it can skip). Its bare run would always stop there, so it
    can show no hole: it runs as compiled, with no check (and in blocks: a ``mov ds, ax`` of
    the syscall path no longer ends one, ``int``/``iretd`` run alone without a ``Sync``)."""
    try:
        fn = ast.parse(sem.source_of(insn)).body[0]
    except (sem.Unsupported, SyntaxError, IndexError):
        return False
    for stmt in fn.body:
        if not isinstance(stmt, (ast.Assign, ast.AugAssign, ast.Expr)):
            return False        # a branch, a return or a raise may skip what follows
        call = stmt.value
        if isinstance(stmt, ast.Expr) and isinstance(call, ast.Call) \
                and isinstance(call.func, ast.Attribute) \
                and isinstance(call.func.value, ast.Name) and call.func.value.id == "M" \
                and call.func.attr not in _BARE_CALLS:
            return True
    return False


class _Abort(Exception):
    """The bare run cannot be made this time (guest memory it reads is not mapped)."""


class _NeedsMachine(Exception):
    """The bare run needs more of the machine than a copy of the virtual CPU (a segment load,
    a far transfer, a software interrupt): the instruction is not compared, now or later."""


class _BareMachine:
    """The machine as the guest believes it is, for one instruction's bare run: descriptor
    queries against the guest's own tables at the virtual CPL; anything else aborts."""

    def __init__(self, vm, cpu: CPU):
        self.vm, self.cpu = vm, cpu
        self.in_burst = False

    def read_descriptor(self, selector: int, fault: int = 13) -> Descriptor:
        vc = self.vm.vcpu
        table = vc.ldtr if selector & 4 else vc.gdtr
        off = selector & 0xFFF8
        if (selector & 4 and not vc.ldtr.selector) or off + 7 > table.limit:
            raise Fault(fault, selector & 0xFFFC)
        raw = self.vm.peek(table.base + off, 8)
        if raw is None:
            raise _Abort()
        return Descriptor.parse(int.from_bytes(raw, "little"))

    def _query(self, what: str, selector: int):
        d = rules.visible_descriptor(self, self.cpu.cpl, selector)
        return rules.DESCRIPTOR_QUERIES[what](d)

    def lar(self, s):
        return self._query("lar", s)

    def lsl(self, s):
        return self._query("lsl", s)

    def verr(self, s):
        return self._query("verr", s)

    def verw(self, s):
        return self._query("verw", s)

    def __getattr__(self, name):
        raise _NeedsMachine(name)


class HoleCheck:
    """The compiled form of one hole instruction for trap-and-emulate: runs the real
    semantics (``real``), and while the guest runs it, compares with the bare run."""

    def __init__(self, te, insn, real):
        self.te, self.insn, self.real = te, insn, real
        self.__name__ = getattr(real, "__name__", insn.text)
        self.cpu = CPU()
        self.writes: dict[int, tuple[int, int]] = {}
        self.vm = None
        g = dict(te._host.compile_globals)
        g.update(C=self.cpu, R=self.cpu.regs, M=_BareMachine(None, self.cpu))
        self.bare_machine = g["M"]
        for n in (1, 2, 4):
            g[f"rd{n}"] = lambda a, n=n: self._read(a, n)
            g[f"wr{n}"] = lambda a, v, n=n: self.writes.__setitem__(a & MASK32, (n, v))
        self.bare = sem.compile_insn(insn, g)
        self.comparable = callable(self.bare)

    def _read(self, a: int, n: int) -> int:
        raw = self.vm.peek(a & MASK32, n)
        if raw is None:
            raise _Abort()
        return int.from_bytes(raw, "little")

    def __call__(self):
        te = self.te
        m = te._host
        if not self.comparable or m.cpu.cpl == 0:     # the VMM's own code
            return self.real()
        if m.in_burst:
            raise Sync()        # the Hole event needs the exact guest time: run it alone
        vm = te.vms[te.current]
        vc = vm.vcpu
        self._load(vc)
        bare = self._bare_run(vm)
        try:
            self.real()
        except Resched:
            if bare is not None:
                self._compare(vm, vc, bare)
            raise
        # (a fault leaves the instruction to run again: compared then)
        if bare is not None:
            self._compare(vm, vc, bare)

    def _load(self, vc) -> None:
        """The twin CPU as the guest believes its CPU is, before the instruction."""
        c, real = self.cpu, self.te._host.cpu
        c.regs[:] = real.regs
        c.eip = real.eip
        c.eflags = vc.eflags
        for i, s in enumerate(real.seg):
            t = c.seg[i]
            t.selector, t.base, t.limit, t.access, t.flags = s.selector, s.base, s.limit, \
                s.access, s.flags
        c.seg[1].selector, c.seg[2].selector = vc.cs, vc.ss
        c.cr0, c.cr2, c.cr3, c.cr4 = vc.cr0, vc.cr2, vc.cr3, vc.cr4
        for n in ("gdtr", "idtr", "ldtr", "tr"):
            src, dst = getattr(vc, n), getattr(c, n)
            dst.base, dst.limit, dst.selector = src.base, src.limit, src.selector
        c.cpl = vc.cpl
        c.halted = False

    def _bare_run(self, vm):
        self.vm = vm
        self.bare_machine.vm = vm
        self.writes.clear()
        try:
            self.bare()
        except Resched:
            pass
        except (_Abort, Fault):
            return None
        except Exception:       # _NeedsMachine, or anything else the bare run cannot model
            self.comparable = False
            return None
        return (list(self.cpu.regs), self.cpu.eflags, dict(self.writes))

    def _compare(self, vm, vc, bare) -> None:
        regs, flags, writes = bare
        saw, want = [], []
        real = self.te._host.cpu
        for i, (a, b) in enumerate(zip(real.regs, regs)):
            if a != b:
                saw.append(f"{_GPR[i]}={a:#x}")
                want.append(f"{_GPR[i]}={b:#x}")
        vf = vc.eflags
        d = (vf ^ flags) & _FLAGS
        if d & 0x200:
            saw.append(f"IF={(vf >> 9) & 1}")
            want.append(f"IF={(flags >> 9) & 1}")
        if d & 0x3000:
            saw.append(f"IOPL={(vf >> 12) & 3}")
            want.append(f"IOPL={(flags >> 12) & 3}")
        if d & ~0x3200:
            saw.append(f"flags={vf & _FLAGS:#x}")
            want.append(f"flags={flags & _FLAGS:#x}")
        for a, (n, v) in sorted(writes.items()):
            raw = vm.peek(a, n)
            got = None if raw is None else int.from_bytes(raw, "little")
            v &= (1 << (8 * n)) - 1
            if got != v:
                saw.append(f"[{a:#010x}]={'?' if got is None else hex(got)}")
                want.append(f"[{a:#010x}]={v:#x}")
        if not saw:
            return
        te = self.te
        insn = self.insn
        te.holes[insn.mnemonic] += 1
        te.trace.add(Hole(te._host.clock, address=insn.address, text=insn.text,
                          mnemonic=insn.mnemonic, saw=", ".join(saw), bare=", ".join(want),
                          ring=vc.cpl, vm=vm.index))

