"""The machine's memory accessors: the ``rd1``/``rd2``/``rd4``/``wr1``/``wr2``/``wr4`` functions
compiled instructions and blocks call (``Machine.compile_globals``), made once per paging mode
and privilege (``MMUMixin._make_accessors``) as closures over the machine's memory, TLB and
code pages: a TLB hit is a dict lookup and a slice, a miss or a page-straddling access goes
through ``translate`` (one translation per page touched, as the TLB counts it).
"""

from __future__ import annotations

import struct

from vmkit.machine.mmu import _U16, _U32, CR0_PG

__all__ = ["make_accessors"]


def _filler(n: int, resolve, mem, size: int, cp: dict, counter):
    """``fill(a, v, count)`` for REP STOS: the elements of ``n`` bytes from linear ``a`` up
    that lie wholly in ``a``'s page, written at once when ``resolve(a)`` gives the physical
    address without a walk (a TLB hit, or paging off) and the page holds no compiled code
    and lies in memory; returns how many it wrote (0: the caller writes one element with the
    accessor, which takes the slow path). Each element counts a TLB hit, as the accessor
    would. A kernel clearing a page: 1,024 accessor calls before, one slice store now."""
    def fill(a, v, count):
        c = min(count, (0x1000 - (a & 0xFFF)) // n)
        if c <= 0:
            return 0
        pa = resolve(a)
        if pa is None or pa + n * c > size or pa >> 12 in cp:
            return 0
        mem[pa:pa + n * c] = v.to_bytes(n, "little") * c
        if counter is not None:
            counter.tlb_hits += c
        return c
    return fill


_POP8 = struct.Struct("<8I")


def _all8(rd_resolve, wr_resolve, mem, size: int, cp: dict, counter, rd4, wr4) -> None:
    """``rd4.x8(a)`` and ``wr4.x8(top, values)`` for POPAD and PUSHAD: the eight doublewords
    from ``a`` up, and the eight pushes below ``top`` (``values[0]`` at ``top - 4``, as the
    first push), each as one slice when they lie in one page that ``rd_resolve`` /
    ``wr_resolve`` maps without a walk (a TLB hit, or paging off), in memory, with no compiled
    code there; else one accessor call each, in the instruction's order (so a fault on the
    fifth push leaves the first four written). Each doubleword counts a TLB hit, as the
    accessor would. The syscall guest's kernel entry and exit: 16 accessor calls -> 2."""
    def rd4x8(a):
        if (a & 0xFFF) <= 0xFE0:
            pa = rd_resolve(a)
            if pa is not None and pa + 32 <= size:
                if counter is not None:
                    counter.tlb_hits += 8
                return _POP8.unpack_from(mem, pa)
        return [rd4((a + 4 * k) & 0xFFFFFFFF) for k in range(8)]

    def wr4x8(top, values):
        a = (top - 32) & 0xFFFFFFFF
        if (a & 0xFFF) <= 0xFE0:
            pa = wr_resolve(a)
            if pa is not None and pa + 32 <= size and pa >> 12 not in cp:
                _POP8.pack_into(mem, pa, *values[::-1])
                if counter is not None:
                    counter.tlb_hits += 8
                return
        for k, v in enumerate(values):
            wr4((top - 4 * (k + 1)) & 0xFFFFFFFF, v)
    # attributes, as ``fill``: code compiled with other accessors (a monitor's, through the
    # guest's page tables) finds none and goes element by element
    rd4.x8 = rd4x8
    wr4.x8 = wr4x8


def make_accessors(m, user: bool) -> dict:
    """The six memory accessors (``rd1``, ``rd2``, ``rd4``, ``wr1``, ``wr2``, ``wr4``) of machine
    ``m`` for its current paging mode and privilege ``user``; the writers carry ``fill``
    (REP STOS) where their fast path allows it, ``rd4`` and ``wr4`` carry ``x8`` (POPAD,
    PUSHAD)."""
    mem = m.mem
    size = m.memory_size
    cp = m.code_pages
    smc = m._smc
    u16, u32 = _U16.unpack_from, _U32.unpack_from
    p16, p32 = _U16.pack_into, _U32.pack_into
    lim1, lim2, lim4 = size - 1, size - 2, size - 4
    phys_rd, phys_wr = m._insn_rd, m._insn_wr
    wp = m.watched_pages

    if not m.cpu.cr0 & CR0_PG and m.nested is None and wp:
        # paging off with watched memory: every access to a watched page by the slow path
        def rd(n):
            fast = {1: lambda a: mem[a], 2: lambda a: u16(mem, a)[0],
                    4: lambda a: u32(mem, a)[0]}[n]

            def rdn(a):
                if a >> 12 in wp or (a + n - 1) >> 12 in wp or a > size - n:
                    return phys_rd(a, n)
                return fast(a)
            return rdn

        def wr(n):
            pack = {1: lambda a, v: mem.__setitem__(a, v), 2: lambda a, v: p16(mem, a, v),
                    4: lambda a, v: p32(mem, a, v)}[n]

            def wrn(a, v):
                if a >> 12 in wp or (a + n - 1) >> 12 in wp or a > size - n or \
                        a >> 12 in cp or (a + n - 1) >> 12 in cp:
                    phys_wr(a, n, v)
                else:
                    pack(a, v)
            return wrn
        def unwatched(a):
            return None if a >> 12 in wp else a
        acc = dict(rd1=rd(1), rd2=rd(2), rd4=rd(4), wr1=wr(1), wr2=wr(2), wr4=wr(4))
        _all8(unwatched, unwatched, mem, size, cp, None, acc["rd4"], acc["wr4"])
        return acc

    if not m.cpu.cr0 & CR0_PG and m.nested is None:
        def rd1(a):
            return mem[a] if a <= lim1 else 0xFF

        def rd2(a):
            return u16(mem, a)[0] if a <= lim2 else phys_rd(a, 2)

        def rd4(a):
            return u32(mem, a)[0] if a <= lim4 else phys_rd(a, 4)

        def wr1(a, v):
            if a <= lim1:
                mem[a] = v
                if a >> 12 in cp:
                    smc(a, 1)

        def wr2(a, v):
            if a <= lim2:
                p16(mem, a, v)
                if a >> 12 in cp or (a + 1) >> 12 in cp:
                    smc(a, 2)
            else:
                phys_wr(a, 2, v)

        def wr4(a, v):
            if a <= lim4:
                p32(mem, a, v)
                if a >> 12 in cp or (a + 3) >> 12 in cp:
                    smc(a, 4)
            else:
                phys_wr(a, 4, v)
        for n, w in ((1, wr1), (2, wr2), (4, wr4)):
            w.fill = _filler(n, lambda a: a, mem, size, cp, None)
        _all8(lambda a: a, lambda a: a, mem, size, cp, None, rd4, wr4)
        return dict(rd1=rd1, rd2=rd2, rd4=rd4, wr1=wr1, wr2=wr2, wr4=wr4)

    rt = m.tlb["ru" if user else "rs"]
    wt = m.tlb["wu" if user else "ws"]
    rget, wget = rt.get, wt.get
    translate = m.translate
    machine = m

    # A TLB miss or an access straddling two pages: one translation per page touched,
    # so an access counts one miss (or hit) per page, as the TLB sees it, and a
    # straddling write checks both pages before it writes either.
    def slow_rd(a, n):
        k = 0x1000 - (a & 0xFFF)
        if k >= n:
            return phys_rd(translate(a, False, user), n)
        pa1 = translate(a, False, user)
        pa2 = translate((a + k) & 0xFFFFFFFF, False, user)
        return phys_rd(pa1, k) | (phys_rd(pa2, n - k) << (8 * k))

    def slow_wr(a, n, v):
        k = 0x1000 - (a & 0xFFF)
        if k >= n:
            phys_wr(translate(a, True, user), n, v)
            return
        pa1 = translate(a, True, user)
        pa2 = translate((a + k) & 0xFFFFFFFF, True, user)
        phys_wr(pa1, k, v)
        phys_wr(pa2, n - k, v >> (8 * k))

    def rd1(a):
        f = rget(a >> 12)
        if f is None:
            return phys_rd(translate(a, False, user), 1)
        machine.tlb_hits += 1
        pa = f | (a & 0xFFF)
        return mem[pa] if pa <= lim1 else 0xFF

    def rd2(a):
        f = rget(a >> 12)
        if f is None or a & 0xFFF > 0xFFE:
            return slow_rd(a, 2)
        machine.tlb_hits += 1
        pa = f | (a & 0xFFF)
        return u16(mem, pa)[0] if pa <= lim2 else phys_rd(pa, 2)

    def rd4(a):
        f = rget(a >> 12)
        if f is None or a & 0xFFF > 0xFFC:
            return slow_rd(a, 4)
        machine.tlb_hits += 1
        pa = f | (a & 0xFFF)
        return u32(mem, pa)[0] if pa <= lim4 else phys_rd(pa, 4)

    def wr1(a, v):
        f = wget(a >> 12)
        if f is None:
            phys_wr(translate(a, True, user), 1, v)
            return
        machine.tlb_hits += 1
        pa = f | (a & 0xFFF)
        if pa <= lim1:
            mem[pa] = v
            if pa >> 12 in cp:
                smc(pa, 1)

    def wr2(a, v):
        f = wget(a >> 12)
        if f is None or a & 0xFFF > 0xFFE:
            slow_wr(a, 2, v)
            return
        machine.tlb_hits += 1
        pa = f | (a & 0xFFF)
        if pa <= lim2:
            p16(mem, pa, v)
            if pa >> 12 in cp:
                smc(pa, 2)

    def wr4(a, v):
        f = wget(a >> 12)
        if f is None or a & 0xFFF > 0xFFC:
            slow_wr(a, 4, v)
            return
        machine.tlb_hits += 1
        pa = f | (a & 0xFFF)
        if pa <= lim4:
            p32(mem, pa, v)
            if pa >> 12 in cp:
                smc(pa, 4)
    def hit(a):
        f = wget(a >> 12)
        return None if f is None else f | (a & 0xFFF)
    def rhit(a):
        f = rget(a >> 12)
        return None if f is None else f | (a & 0xFFF)
    for n, w in ((1, wr1), (2, wr2), (4, wr4)):
        w.fill = _filler(n, hit, mem, size, cp, machine)
    _all8(rhit, hit, mem, size, cp, machine, rd4, wr4)
    return dict(rd1=rd1, rd2=rd2, rd4=rd4, wr1=wr1, wr2=wr2, wr4=wr4)
