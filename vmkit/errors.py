"""Errors the kit raises. Every one derives from :class:`VmkitError` and says what and where."""

from __future__ import annotations

__all__ = ["VmkitError", "AssemblyError", "UnsupportedInstruction", "GuestError"]


class VmkitError(Exception):
    """Base class of every error the kit raises."""


class AssemblyError(VmkitError):
    """Bad assembly source.

    Attributes: ``file`` (name of the source file or ``"<input>"``), ``line`` (1-based),
    ``column`` (1-based), ``text`` (the offending source line), ``message`` (what was wrong and
    what was expected), ``errors`` (every error found, this one first: more than one only when
    ``assemble(max_errors=N)`` went on after an error), ``truncated`` (whether it stopped at N).
    """

    def __init__(self, message: str, *, line: int = 0, column: int = 0, text: str = "",
                 file: str = "<input>"):
        self.message = message
        self.line = line
        self.column = column
        self.text = text
        self.file = file
        self.errors = [self]
        self.truncated = False
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        s = f"{where}: {self.message}"
        if self.text:
            s += f"\n    {self.text.rstrip()}"
            if self.column > 0:
                s += "\n    " + " " * (self.column - 1) + "^"
        return s


class UnsupportedInstruction(VmkitError):
    """The kit itself lacks semantics for an instruction (the guest gets no silent skip)."""

    def __init__(self, mnemonic: str, address: int, detail: str = ""):
        self.mnemonic = mnemonic
        self.address = address
        msg = f"instruction {mnemonic!r} at guest address {address:#010x} is not in the vmkit subset"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class GuestError(VmkitError):
    """Wrong use of the guest API (unknown guest, bad parameter, foreign snapshot ...)."""
