"""Per-student variants: a seed from the student id picks each assignment's guest parameters.

The student id is ``$VMKIT_STUDENT_ID`` (the grader sets it for every submission), else
``$JUPYTERHUB_USER`` (a student on the course's JupyterHub), else the login name. The seed is a
SHA-256 of ``assignment:student`` so that the variant is the same in the student's kernel, in
the grader's kernel and in :mod:`vmkit.homework.checks`' fresh processes.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import random

__all__ = ["student_id", "seed", "student_params", "VARIANTS"]

#: classify pool of hw03 (each form assembles and classifies in a few ms)
_CLASSIFY_POOL = ["cli", "sti", "hlt", "popfd", "pushfd", "sgdt [eax]", "sidt [eax]",
                  "lgdt [eax]", "lidt [eax]", "smsw eax", "str eax", "push cs",
                  "lar eax, ebx", "mov eax, cr0", "mov cr3, eax", "in al, dx", "out dx, al",
                  "invlpg [eax]", "add eax, ebx", "mov eax, ebx", "nop", "xor eax, eax"]


def _hw01(r: random.Random) -> dict:
    guest = r.choice(["syscall", "divzero"])
    return {"guest": guest, "iterations": r.randint(2, 9)}


def _hw02(r: random.Random) -> dict:
    # the checksum engine (vmkit.vmm.devices): its ports, its rule, the driver's bytes
    return {"port": 0x310 + 0x10 * r.randint(0, 12), "seed": r.randrange(1 << 32),
            "mult": 2 * r.randint(1, 127) + 1,
            "data": [r.randrange(256) for _ in range(r.randint(12, 24))]}


def _hw03(r: random.Random) -> dict:
    pool = list(_CLASSIFY_POOL)
    r.shuffle(pool)
    return {"predict": sorted(pool[:5]), "candidates": sorted(pool[5:13])}


def _hw04(r: random.Random) -> dict:
    # caches smaller than each workload's translated blocks, so that the cache fills and the
    # policies give different hit rates for every threshold (tests/homework/test_homework.py checks it)
    guest = r.choice(["syscall", "ptemod"])
    return {"guest": guest, "params": {"iterations": r.randint(10, 30)},
            "threshold": r.randint(1, 4), "tc_size": r.choice([8, 16]),
            "thresholds": sorted(r.sample(range(1, 11), 4))}


def _hw05(r: random.Random) -> dict:
    guest = r.choice(["pagefault", "ptemod", "syscall"])
    param = {"pagefault": "pages", "ptemod": "iterations", "syscall": "iterations"}[guest]
    levels = [[r.randint(1, 5), r.randint(1, 5)] for _ in range(3)]
    return {"guest": guest, "params": {param: r.randint(4, 16)}, "levels": levels}


def _hw06(r: random.Random) -> dict:
    return {"guest": r.choice(["syscall", "io", "pagefault", "ptemod", "divzero"])}


#: assignment id -> function of a seeded Random giving that assignment's parameters
VARIANTS = {"hw01-rings-and-traps": _hw01, "hw02-trap-and-emulate": _hw02,
            "hw03-popek-goldberg": _hw03, "hw04-translation-cache": _hw04,
            "hw05-shadow-vs-nested": _hw05, "hw06-cost-analysis": _hw06}


def student_id() -> str:
    for var in ("VMKIT_STUDENT_ID", "JUPYTERHUB_USER"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers)
        return "student"


def seed(assignment: str, student: str | None = None) -> int:
    student = student_id() if student is None else student
    digest = hashlib.sha256(f"{assignment}:{student}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def student_params(assignment: str, student: str | None = None) -> dict:
    """This student's parameters for ``assignment`` (same id, same parameters, everywhere)."""
    return VARIANTS[assignment](random.Random(seed(assignment, student)))
