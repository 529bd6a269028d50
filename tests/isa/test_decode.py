"""The decode cache: an instruction seen at one address is reused at another (the same bytes
at a shifted address: another guest's kernel, another parameter) only where capstone would
decode it the same way there, which a relative branch never does."""

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
    seen = 0
    moved = 0
    base, code = guests.build("pagefault").loads[0]        # the kernel
    for a, w in _windows(code[:6000], base):
        first = dec.decode(a, w)
        for shift in (-0x3, 0x123457):
            b = (a + shift) & 0xFFFFFFFF
            misses = dec.misses
            got = dec.decode(b, w)
            moved += dec.misses == misses
            assert got == decode_one(w, b), (hex(a), hex(b), w.hex())
        seen += first is not None
    assert seen > 500
    assert moved > 2 * 400      # most instructions were copied, not decoded again


def test_relative_branches_and_odd_bytes_are_decoded_afresh():
    dec = Decoder()
    rng = random.Random(7)
    windows = [bytes.fromhex(h) + bytes(10) for h in
               ("e800000000", "e9fbffffff", "ebfe", "7402", "0f8500010000", "e2fe", "e300",
                "ffd0", "ea001000000800", "9a001000000800", "0f0b", "d9c0", "6766890e0010")]
    windows += [bytes(rng.randrange(256) for _ in range(15)) for _ in range(400)]
    for w in windows:
        for a in (0x1000, 0x1005, 0x7FFFFFF0, 0xFFFFFFF8):
            assert dec.decode(a, w) == decode_one(w, a), (hex(a), w.hex())
    assert dec.decode(0x2000, windows[0]).operands[0].value == 0x2005
