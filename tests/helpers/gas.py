"""GNU as as an outside oracle: assemble Intel-syntax source to raw bytes."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

AS = shutil.which("as")
OBJCOPY = shutil.which("objcopy")


def have_gas() -> bool:
    return AS is not None and OBJCOPY is not None


def gas(source: str, base: int = 0) -> bytes:
    """Bytes of the .text section GNU as makes of ``source`` (Intel syntax, 32-bit)."""
    with tempfile.TemporaryDirectory() as d:
        s = os.path.join(d, "t.s")
        o = os.path.join(d, "t.o")
        b = os.path.join(d, "t.bin")
        with open(s, "w") as fh:
            fh.write(".intel_syntax noprefix\n.code32\n.text\n" + source + "\n")
        subprocess.run([AS, "--32", "-o", o, s], check=True, capture_output=True)
        subprocess.run([OBJCOPY, "-O", "binary", "-j", ".text", o, b], check=True,
                       capture_output=True)
        with open(b, "rb") as fh:
            return fh.read()
