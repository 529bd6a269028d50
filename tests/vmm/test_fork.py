"""The forkwait guest's copy-on-write fork (vmkit/guests/fork.s), under every monitor: the guest
checks that parent and child do not see each other's stores (its console says so otherwise);
these tests read the kernel's own bookkeeping at the end of the last wait."""

import struct

import pytest

from vmkit import Debugger, guests
from vmkit.vmm import (BinaryTranslation, HardwareAssisted, Native, Paravirtual,
                       TrapAndEmulate)

MONITORS = {"native": Native, "te": TrapAndEmulate, "bt": BinaryTranslation,
            "hw": HardwareAssisted, "hw-traced": lambda img: HardwareAssisted(img, shadow="traced"),
            "pv": Paravirtual}
RESULT = "children forked and reaped"


def _after_last_wait(mon: str, iterations: int, heap: int = 2):
    """Run forkwait until the parent has printed its result line (every child reaped, the
    parent not yet exited); return readers of its memory (``word``, ``table``)."""
    img = guests.build("forkwait", iterations=iterations, heap=heap, paravirtual=mon == "pv")
    vm = MONITORS[mon](img)
    dbg = Debugger(vm)
    dbg.break_at("fork_exit", ring=0)        # each child's exit, then the parent's
    for _ in range(iterations + 1):
        stop = dbg.cont(max_steps=1_000_000)
        assert "fork_exit" in str(stop), (stop, vm.console)
    assert vm.console == f"forkwait: {iterations} {RESULT}, pid sum " \
                         f"{iterations * (iterations + 5) // 2}\n"
    sym = img.programs["kernel"].symbols
    mem = bytes(vm.machine.mem) if mon == "native" else vm.vms[0].memory()

    def word(name, index=0):
        """A dword of guest-physical memory: at a kernel symbol (the kernel's virtual addresses
        are physical ones), or at an address."""
        return struct.unpack_from("<I", mem, sym.get(name, name) + 4 * index)[0]

    def table(name, n):
        return struct.unpack_from(f"<{n}I", mem, sym[name])
    return word, table


@pytest.mark.parametrize("mon", sorted(MONITORS))
def test_pages_are_copied_only_when_written_and_shares_return_to_zero(mon):
    """After three forks and waits: did exactly the written pages get copied (per iteration the
    parent's heap page 0 and its stack, written while the child still shares them; the child's
    stores find the last mapping and only get write permission back, and so does the parent's
    print_dec at the end, into its data page), did every share count return to zero, and did
    the kernel take no frame from its pool beyond what one fork took (exit frees, the free
    list recycles)?"""
    word, table = _after_last_wait(mon, 3)
    assert word("fork_copies") == 2 * 3
    assert word("fork_reuses") == 2 * 3 + 1
    assert table("fork_shares", 1024) == (0,) * 1024
    word1, _ = _after_last_wait(mon, 1)
    assert word("next_frame") == word1("next_frame")
    assert word("fork_copies") == 3 * word1("fork_copies")


def test_a_child_store_stays_in_the_child():
    """Does the parent's heap page still hold its own value after a child wrote its copy, and
    is a heap page neither process wrote still one frame (mapped, never copied)?"""
    word, _ = _after_last_wait("native", 2, heap=3)
    parent_pt2 = word("pcbs", 7)                      # the parent's PCB_PT2 (offset 28)
    e0, e1 = word(parent_pt2), word(parent_pt2 + 4)
    assert word(e0 & 0xFFFFF000) == 3                 # HEAP_PAGES, not the child's 4
    assert e1 & 0x200 and not e1 & 2                  # page 1: still marked, never copied
    assert word(e1 & 0xFFFFF000) == 2                 # and its value from before any fork
