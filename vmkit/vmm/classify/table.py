"""The whole subset: ``classify_all()``, its table, and the theorems' violators."""

from __future__ import annotations

from typing import Iterable

from vmkit.errors import VmkitError
from vmkit.vmm import display
from vmkit.vmm.classify.analysis import Classification
from vmkit.vmm.classify.forms import _NOT_RUNNABLE, _form, _resolve, canonical_forms, classify


# ---- the whole subset ------------------------------------------------------------------------
class Violators(list):
    """The instructions that break a theorem's condition (a list of Classification); ``holds``
    is True when there are none."""

    def __init__(self, rows: Iterable[Classification], theorem: str, condition: str):
        super().__init__(rows)
        self.theorem = theorem
        self.condition = condition

    @property
    def holds(self) -> bool:
        return not self

    @property
    def instructions(self) -> list[str]:
        return [r.instruction for r in self]

    def __repr__(self) -> str:
        if not self:
            return f"<{self.theorem}: {self.condition} holds>"
        return (f"<{self.theorem}: {self.condition} fails for {len(self)} instruction(s): "
                f"{', '.join(self.instructions)}>")


class ClassificationTable:
    """The classification of every instruction form of the subset (``classify_all()``)."""

    def __init__(self, rows: list[Classification], skipped: dict[str, str]):
        self.rows = rows
        self.skipped = skipped   # mnemonic or form -> why it was not classified

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, key):
        """A row by index or by instruction text (capstone spelling or the form written)."""
        if isinstance(key, int):
            return self.rows[key]
        k = " ".join(str(key).split()).lower()
        for r in self.rows:
            if r.instruction.lower() == k:
                return r
        try:
            text = _form(_resolve(key)).text
        except VmkitError:
            text = None
        for r in self.rows:
            if r.instruction == text:
                return r
        raise KeyError(key)

    def __contains__(self, key) -> bool:
        try:
            self[key]
            return True
        except KeyError:
            return False

    def violators(self) -> Violators:
        """Sensitive but unprivileged instructions (Theorem 1's violators)."""
        return theorem1(self)

    def counts(self) -> dict:
        rows = self.rows
        return {"forms": len(rows),
                "privileged": sum(r.privileged for r in rows),
                "sensitive": sum(r.sensitive for r in rows),
                "control_sensitive": sum(r.control_sensitive for r in rows),
                "behavior_sensitive": sum(r.behavior_sensitive for r in rows),
                "innocuous": sum(r.innocuous for r in rows),
                "user_sensitive": sum(r.user_sensitive for r in rows),
                "theorem1_violators": sum(r.violates_theorem1 for r in rows),
                "theorem3_violators": sum(r.violates_theorem3 for r in rows)}

    def __repr__(self) -> str:
        head = ("instruction", "priv", "control", "behaviour", "sensitive", "user-sens",
                "class")
        w = max(len(head[0]), *(len(r.instruction) for r in self.rows)) if self.rows else 12
        lines = [f"{head[0]:<{w}}  {'priv':4}  {'ctrl':4}  {'behv':4}  {'sens':4}  {'user':4}  "
                 "class"]
        yes = {True: "yes", False: "-"}
        for r in self.rows:
            cls = "innocuous" if r.innocuous else ("privileged" if r.privileged
                                                   else "SENSITIVE, UNPRIVILEGED")
            lines.append(f"{r.instruction:<{w}}  {yes[r.privileged]:4}  "
                         f"{yes[r.control_sensitive]:4}  {yes[r.behavior_sensitive]:4}  "
                         f"{yes[r.sensitive]:4}  {yes[r.user_sensitive]:4}  {cls}")
        c = self.counts()
        lines.append(f"{c['forms']} forms: {c['privileged']} privileged, {c['sensitive']} "
                     f"sensitive, {c['innocuous']} innocuous; Theorem 1 violators: "
                     f"{c['theorem1_violators']}, Theorem 3 violators: "
                     f"{c['theorem3_violators']}")
        return "\n".join(lines)

    def to_html(self) -> str:
        """An HTML table (Jupyter shows it through ``_repr_html_``), built by
        :func:`vmkit.viz.results.classification_html`."""
        return display.draw(self, "html")

    def _repr_html_(self) -> str:
        return self.to_html()


_ALL: ClassificationTable | None = None


def classify_all() -> ClassificationTable:
    """Classify every instruction form of the subset (cached for the process)."""
    global _ALL
    if _ALL is not None:
        return _ALL
    rows, seen, skipped = [], {}, dict(_NOT_RUNNABLE)
    for line in canonical_forms():
        try:
            f = _form(line)
        except VmkitError as e:
            skipped[line] = str(e)
            continue
        if f.code in seen:      # an alias (sal is shl): one row
            continue
        seen[f.code] = line
        c = classify(line)
        if c.crashed == c.runs:
            skipped[line] = c.evidence[1]
            continue
        rows.append(c)
    _ALL = ClassificationTable(rows, skipped)
    return _ALL


def theorem1(table: ClassificationTable | None = None) -> Violators:
    """Popek & Goldberg's Theorem 1: a virtual machine monitor may be constructed if the set
    of sensitive instructions is a subset of the privileged ones. Returns the violators
    (sensitive, not privileged); empty means the condition holds."""
    table = table or classify_all()
    return Violators([r for r in table.rows if r.violates_theorem1], "Theorem 1",
                     "sensitive ⊆ privileged")


def theorem3(table: ClassificationTable | None = None) -> Violators:
    """Popek & Goldberg's Theorem 3: a hybrid virtual machine monitor (one that interprets
    every instruction of the virtual supervisor and runs only virtual user mode directly)
    may be constructed if the set of user-sensitive instructions is a subset of the privileged
    ones. Returns the violators (user-sensitive, not privileged)."""
    table = table or classify_all()
    return Violators([r for r in table.rows if r.violates_theorem3], "Theorem 3",
                     "user-sensitive ⊆ privileged")
