"""Exceptions raised *inside the guest* by instruction semantics.

These are Python exceptions used as control flow between compiled instructions and the machine
that delivers them through the IDT; they never reach the user (the machine catches them).
"""

from __future__ import annotations

__all__ = ["Fault", "VECTOR_NAMES", "DE", "DB", "NMI", "BP", "OF", "BR", "UD", "NM", "DF", "TS",
           "NP", "SS", "GP", "PF", "Resched"]

DE, DB, NMI, BP, OF, BR, UD, NM, DF = 0, 1, 2, 3, 4, 5, 6, 7, 8
TS, NP, SS, GP, PF = 10, 11, 12, 13, 14

#: mnemonic of each exception vector (SDM Vol. 3A, Table 6-1)
VECTOR_NAMES = {0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM",
                8: "#DF", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF",
                17: "#AC", 18: "#MC", 19: "#XM"}

#: exceptions that push an error code (SDM Vol. 3A, Table 6-1)
HAS_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17})


class Fault(Exception):
    """A guest exception: ``vector``, ``error_code`` (None when the vector has none),
    ``address`` (CR2 for #PF), ``detail`` (a human explanation for traces and crash reports)."""

    __slots__ = ("vector", "error_code", "address", "detail")

    def __init__(self, vector: int, error_code: int | None = None, address: int | None = None,
                 detail: str = ""):
        self.vector = vector
        self.error_code = error_code
        self.address = address
        self.detail = detail
        super().__init__(vector)

    @property
    def name(self) -> str:
        return VECTOR_NAMES.get(self.vector, f"vector {self.vector}")

    def __str__(self) -> str:
        s = self.name
        if self.error_code is not None:
            s += f"({self.error_code:#x})"
        if self.address is not None:
            s += f" at {self.address:#010x}"
        if self.detail:
            s += f": {self.detail}"
        return s


class Resched(Exception):
    """Raised *after* an instruction completed (EIP already advanced) to end the current burst:
    the instruction changed something the run loop must look at (IF, the interrupt controller,
    power-off, paging mode, CPL ...)."""
