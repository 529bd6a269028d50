"""From outcomes to Popek & Goldberg classes (:class:`Classification`), with the evidence."""

from __future__ import annotations

from dataclasses import dataclass

from vmkit.isa.decode import GPR_NAMES
from vmkit.isa.faults import VECTOR_NAMES
from vmkit.vmm.classify.lab import Outcome, _fmt
from vmkit.vmm.classify.worlds import _RESOURCE, WORLDS


# ---- the classification --------------------------------------------------------------------
@dataclass(frozen=True)
class Classification:
    """Popek & Goldberg classes of one instruction form, with the evidence that decided them.

    ``instruction`` is the form as classified (capstone's spelling); ``evidence`` short
    sentences naming the experiments that showed each class."""
    instruction: str
    privileged: bool
    sensitive: bool
    control_sensitive: bool
    behavior_sensitive: bool
    innocuous: bool
    evidence: tuple = ()
    user_sensitive: bool = False
    mnemonic: str = ""
    runs: int = 0
    crashed: int = 0

    @property
    def classes(self) -> str:
        """A short summary: "privileged, control-sensitive" ..."""
        parts = ["privileged" if self.privileged else "unprivileged"]
        if self.sensitive:
            kinds = [k for k, f in (("control", self.control_sensitive),
                                    ("behaviour", self.behavior_sensitive)) if f]
            parts.append(f"sensitive ({', '.join(kinds)})")
        else:
            parts.append("innocuous")
        return ", ".join(parts)

    @property
    def violates_theorem1(self) -> bool:
        return self.sensitive and not self.privileged

    @property
    def violates_theorem3(self) -> bool:
        return self.user_sensitive and not self.privileged

    def __str__(self) -> str:
        s = f"{self.instruction}: {self.classes}"
        if self.violates_theorem1:
            s += " -- sensitive but not privileged"
        return s


def _analyse(text: str, mnemonic: str, outs: list[Outcome]) -> Classification:
    ev: list[str] = []
    user_worlds = [w.name for w in WORLDS if w.user]
    setups = sorted({o.setup for o in outs}, key=[o.setup for o in outs].index)
    ev.append(f"ran {len(outs)} times: {len(WORLDS)} states at CPL 0 "
              f"({', '.join(w.name for w in WORLDS)}) and {len(user_worlds)} at CPL 3 (IOPL 0), "
              f"{len(setups)} operand set-up(s): {'; '.join(setups)}")
    crashes = [o for o in outs if o.crash]
    if crashes:
        ev.append(f"the kit cannot run it in {len(crashes)} run(s), e.g. {crashes[0].where}: "
                  f"{crashes[0].crash}")
    idx = {(o.world, o.cpl, o.setup): o for o in outs}

    # privileged: every CPL-3 run traps, and at CPL 0 it runs (in some state)
    free0 = [o for o in outs if o.cpl == 0 and o.ran]
    user = [o for o in outs if o.cpl == 3 and not o.crash]
    traps3 = [o for o in user if o.trapped]
    runs3 = [o for o in user if o.ran]
    privileged = bool(free0) and bool(user) and not runs3
    if privileged:
        names = sorted({_vname(o.trap) for o in traps3})
        rec = sorted({o.recorded for o in traps3 if o.recorded is not None})
        ev.append(f"privileged: traps at CPL 3 in all {len(traps3)} user-mode runs "
                  f"({', '.join(names)}; the IDT handler recorded vector "
                  f"{', '.join(map(str, rec))}), runs at CPL 0 in {len(free0)}")
    elif not free0:
        t0 = [o for o in outs if o.cpl == 0 and o.trapped]
        if t0:
            ev.append(f"not privileged: it traps at CPL 0 too ({_vname(t0[0].trap)} at "
                      f"{t0[0].where}, {t0[0].setup})")
    elif runs3:
        o = runs3[0]
        ev.append(f"not privileged: runs without trapping at {o.where} ({o.setup})")

    # control-sensitive: a non-trapping run that changes the virtualized state
    control = None
    user_control = None
    for o in outs:
        if not o.ran:
            continue
        ch = o.changes()
        if ch and control is None:
            control = (o, ch)
        if ch and o.cpl == 3 and not o.gate_to_ring0 and user_control is None:
            user_control = (o, ch)
    if control:
        o, ch = control
        ev.append(f"control-sensitive: at {o.where} ({o.setup}) it changes "
                  + ", ".join(f"{k} {_fmt(a)} -> {_fmt(b)}" if k not in ("system tables", "TLB")
                              else f"{k}: {b}" for k, (a, b) in list(ch.items())[:4])
                  + " without trapping")

    # behaviour-sensitive: runs from the same registers, flags and memory, in states that
    # differ only in the mode or only in one virtualized resource, that end differently
    mode_dep = None
    state_dep = None
    user_dep = None
    for s in setups:
        for w in WORLDS:
            a, b = idx.get((w.name, 0, s)), idx.get((w.name, 3, s))
            if mode_dep is None and a and b:
                d = _differs(a, b)
                if d:
                    mode_dep = (a, b, d, "the mode")
            if w.name == "base":
                continue
            for cpl in (0, 3):
                a, b = idx.get(("base", cpl, s)), idx.get((w.name, cpl, s))
                if not (a and b):
                    continue
                d = _differs(a, b)
                if d and state_dep is None:
                    state_dep = (a, b, d, f"{_RESOURCE[w.name]} (state {w.name})")
                if d and cpl == 3 and user_dep is None \
                        and not (a.gate_to_ring0 or b.gate_to_ring0):
                    user_dep = (a, b, d, f"{_RESOURCE[w.name]} (state {w.name})")
    for dep in (mode_dep, state_dep):
        if dep:
            a, b, d, what = dep
            ev.append(f"behaviour-sensitive: depends on {what}: {d} ({a.where} vs {b.where}, "
                      f"{a.setup})")
    behaviour = mode_dep or state_dep
    user_behaviour = user_dep
    control_s = control is not None
    behaviour_s = behaviour is not None
    sensitive = control_s or behaviour_s
    user_s = user_control is not None or user_behaviour is not None
    if sensitive and not user_s:
        ev.append("not user-sensitive: run at CPL 3 it neither changes the virtualized state "
                  "nor shows it" + (" (its gate enters ring 0: the trap sequence)"
                                    if any(o.gate_to_ring0 for o in outs) else ""))
    elif user_s:
        if user_control:
            o, ch = user_control
            ev.append(f"user-sensitive: at {o.where} it changes {', '.join(list(ch)[:3])}")
        else:
            a, b, d, what = user_behaviour
            ev.append(f"user-sensitive: at CPL 3 it depends on {what}: {d}")
    if not sensitive:
        ok = [o for o in outs if o.ran]
        if ok:
            ev.append(f"innocuous: {len(ok)} runs without a trap changed no virtualized state, "
                      "and runs from states differing in it or in the mode ended alike")
        else:
            vs = sorted({_vname(o.trap) for o in outs if o.trapped})
            ev.append(f"innocuous: it traps ({', '.join(vs)}) in every state, at both CPLs, "
                      "so it can neither change nor show the virtualized state")
    return Classification(text, privileged, sensitive, control_s, behaviour_s, not sensitive,
                          tuple(ev), user_s, mnemonic, len(outs), len(crashes))


def _vname(v: int | None) -> str:
    return VECTOR_NAMES.get(v, f"vector {v}") if v is not None else "none"


def _differs(a: Outcome, b: Outcome) -> str | None:
    """How two non-trapping runs from comparable states ended differently (None if alike)."""
    if not (a.ran and b.ran) or a.n_before != b.n_before:
        return None
    ra, rb = a.n_after, b.n_after
    if ra[0] != rb[0]:
        for i, (x, y) in enumerate(zip(ra[0], rb[0])):
            if x != y:
                return f"{GPR_NAMES[i]} = {x:#x} vs {y:#x}"
    if ra[1] != rb[1]:
        return f"EIP = {ra[1]:#x} vs {rb[1]:#x}"
    if ra[2] != rb[2]:
        return f"flags = {ra[2]:#x} vs {rb[2]:#x}"
    if ra[3] != rb[3]:
        ma, mb = dict(ra[3]), dict(rb[3])
        addrs = sorted(set(ma) | set(mb))
        diff = [x for x in addrs if ma.get(x) != mb.get(x)]
        at = diff[0] & ~3
        return (f"memory at {at:#x} written {_dword(ma, at)} vs {_dword(mb, at)}"
                if diff else "memory differs")
    # the virtualized state it writes: compare final values of what either run changed
    # Fields that started equal are compared. The resource two states differ in is not (lmsw
    # keeps CR0.PG as it was), except between the modes when both runs write it: the segment
    # registers start different there by construction, and where a far jump leaves CS is a
    # result. Which table a descriptor write lands in and the TLB's contents are not results.
    ca, cb = a.changes(), b.changes()
    for k in list(ca) + [k for k in cb if k not in ca]:
        if k in ("TLB", "system tables"):
            continue
        if a.v_before[k] != b.v_before[k] and not (a.cpl != b.cpl and k in ca and k in cb):
            continue
        if a.v_after[k] != b.v_after[k]:
            return f"{k} ends {_fmt(a.v_after[k])} vs {_fmt(b.v_after[k])}"
    return None


def _dword(m: dict, at: int) -> str:
    if not any(at + k in m for k in range(4)):
        return "nothing"
    return "0x" + "".join(f"{m[at + k]:02x}" if at + k in m else "__" for k in (3, 2, 1, 0))
