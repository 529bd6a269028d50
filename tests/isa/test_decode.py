"""The decode cache: an instruction seen at one address is reused at another (the same bytes
at a shifted address: another guest's kernel, another parameter), with other bytes after it,
and a relative branch with its target moved, always as capstone decodes it there; and so is
the code compiled for it."""

from __future__ import annotations

import random

from vmkit import guests
from vmkit.isa.decode import Decoder, decode_one


def _windows(code: bytes, base: int):
    """(address, 15-byte window) of each instruction of a linear sweep of ``code``."""
    off = 0
    while off < len(code):
        w = bytes(code[off:off + 15])
        insn = decode_one(w, base + off)
        yield base + off, w
        off += insn.size if insn is not None else 1


def test_moved_instructions_decode_as_capstone_does_at_the_new_address():
    dec = Decoder()
    rng = random.Random(5)
    seen = 0
    moved = 0
    base, code = guests.build("pagefault").loads[0]        # the kernel
    for a, w in _windows(code[:6000], base):
        first = dec.decode(a, w)
        for shift in (-0x3, 0x123457, -a - 2):
            b = (a + shift) & 0xFFFFFFFF
            if first is not None:   # the same instruction, other bytes after it
                w = first.raw + bytes(rng.randrange(256) for _ in range(15 - first.size))
            misses = dec.misses
            got = dec.decode(b, w)
            moved += dec.misses == misses
            assert got == decode_one(w, b), (hex(a), hex(b), w.hex())
        seen += first is not None
    assert seen > 500
    assert moved > 2 * 500      # most instructions were copied, not decoded again


def test_relative_branches_move_with_their_targets_and_odd_bytes_decode_afresh():
    dec = Decoder()
    rng = random.Random(7)
    windows = [bytes.fromhex(h) + bytes(10) for h in
               ("e800000000", "e9fbffffff", "ebfe", "eb80", "7402", "0f8500010000", "e2fe",
                "e300", "66e91000", "3e7402", "f2e910000000", "ffd0", "ea001000000800",
                "9a001000000800", "0f0b", "d9c0", "6766890e0010")]
    windows += [bytes(rng.randrange(256) for _ in range(15)) for _ in range(400)]
    for w in windows:
        for a in (0x1000, 0x1005, 0x0, 0x3, 0x7FFFFFF0, 0xFFFFFFF8, 0xFFFFFFFE, 0x10):
            assert dec.decode(a, w) == decode_one(w, a), (hex(a), w.hex())
    assert dec.decode(0x2000, windows[0]).operands[0].value == 0x2005
    assert dec.decode(0x2000, windows[0]).op_str == "0x2005"


def test_compiled_instructions_move_only_where_the_code_is_what_compile_makes(monkeypatch):
    import types

    from vmkit.isa import semantics as sem
    monkeypatch.setattr(sem, "_CODE_CACHE", {})
    monkeypatch.setattr(sem, "_MOVES", {})
    compiled = []
    real = compile
    monkeypatch.setattr(sem, "compile", lambda *a: compiled.append(1) or real(*a),
                        raising=False)
    dec = Decoder()
    base, code = guests.build("pagefault").loads[0]
    insns = [i for i in (dec.decode(a, w) for a, w in _windows(code[:3000], base))
             if i is not None and isinstance(sem.code_of(i), types.CodeType)]
    assert len(insns) > 250
    # a literal equal to the address or the next one (push, mov): it must not move along
    odd = [dec.decode(0x1000, bytes.fromhex("6805100000") + bytes(10)),      # push 0x1005
           dec.decode(0x1000, bytes.fromhex("b800100000") + bytes(10))]      # mov eax, 0x1000
    for i in odd:
        sem.code_of(i)
    moved = branches = 0
    for shift in (0x40, 0x123457, 0x2000, -0x10, 0x400000, 0x400100):
        for i in insns + odd:
            b = (i.address + shift) & 0xFFFFFFFF
            w = i.raw + bytes(15 - i.size)
            at_b = dec.decode(b, w)
            n = len(compiled)
            got = sem.code_of(at_b)
            moved += len(compiled) == n
            branches += len(compiled) == n and at_b.mnemonic in ("call", "jmp", "je", "jne")
            mod = real(sem.source_of(at_b), f"<{b:#010x}: {at_b.text}>", "exec")
            want = next(k for k in mod.co_consts if isinstance(k, types.CodeType))
            assert got == want and got.co_filename == want.co_filename, (hex(b), at_b.text)
            # the same constants and column table (code equality compares them too)
            assert (got.co_consts, got.co_linetable) == (want.co_consts, want.co_linetable)
    assert moved > 3 * len(insns)       # from the third address of a width on, most moved
    assert branches > 3 * 40            # relative branches too, their targets with them


def test_code_whose_constants_fold_the_address_is_compiled_at_every_address(monkeypatch):
    """A constant expression of the address (folded by ``compile``) cannot be moved: the
    second address shows it, and the third is compiled again."""
    from vmkit.isa import semantics as sem
    monkeypatch.setattr(sem, "_CODE_CACHE", {})
    monkeypatch.setattr(sem, "_MOVES", {})
    monkeypatch.setattr(sem, "source_of",
                        lambda i: f"def _insn():\n    C.eip = ({i.next:#x} & 0xff) | 0x100\n")
    dec = Decoder()
    w = bytes.fromhex("90") + bytes(14)
    for a in (0x1000, 0x1040, 0x1080):
        assert sem.code_of(dec.decode(a, w)).co_consts[-1] == ((a + 1) & 0xFF) | 0x100
