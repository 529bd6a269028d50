"""Binary translation: the same hot kernel loop interpreted and translated, the translation
cache's hit rate per guest, and wall time per guest under native, te and bt.

1. **Interpreted vs translated.** A bare-metal kernel (it runs at virtual CPL 0, so every
   instruction goes through the translator) loops over arithmetic, a store, a load, a call and
   a return. ``threshold=10**9`` never translates: the interpreter fetches, decodes and
   dispatches every instruction each time. The default threshold translates the loop's blocks
   after a few runs; from then on they run as compiled Python functions, chained to each other.
   The goal is translated >= 3x interpreted.
2. **Translation cache hit rate** (``tc_hits / tc_lookups``; chained exits skip the lookup, so
   ``chained`` is shown too) for each guest.
3. **Wall time** per guest under Native, TrapAndEmulate and BinaryTranslation, with the cycles
   of the default cost model next to it (the simulator's speed and the modelled machine's are
   different things).

Each figure is the best of ``REPEAT`` runs after a warm-up that fills the process-wide decode and
compile caches (the machine this was written on is shared and noisy).

    .venv/bin/python benchmarks/bench_bt.py
"""

from __future__ import annotations

import time

from vmkit import guests
from vmkit.vmm import Native, TrapAndEmulate
from vmkit.vmm.bt import BinaryTranslation

REPEAT = 3

HOT = """
# the hot kernel loop: runs in ring 0 (bare metal), so under bt in the translator
_start:
    mov ecx, %d
    xor edi, edi
    mov eax, 12345
1:  imul eax, eax, 1103515245
    add eax, 12345
    mov [cell], eax
    call mix
    add edi, edx
    dec ecx
    jnz 1b
    mov eax, edi
    out 0xF4, eax
mix:
    mov edx, [cell]
    shr edx, 16
    xor edx, 0x55
    ret
.data
.align 4096                     # data on its own page: stores do not touch translated code
cell: .long 0
"""

GUESTS = (("compute", {"iterations": 100_000}), ("syscall", {"iterations": 5_000}),
          ("io", {"bytes": 4096}), ("ctxswitch", {"iterations": 500}),
          ("pagefault", {"pages": 200}), ("ptemod", {"iterations": 1000}),
          ("selfmod", {"iterations": 5000}), ("callret", {"iterations": 300}),
          ("divzero", {"iterations": 300}))


def best(make, repeat: int = REPEAT):
    """(seconds, monitor, result) of the fastest of ``repeat`` runs, after a warm-up."""
    make().run(max_steps=200_000)
    out = None
    for _ in range(repeat):
        vm = make()
        t = time.perf_counter()
        r = vm.run(max_steps=100_000_000)
        dt = time.perf_counter() - t
        assert r.reason == "poweroff", r
        if out is None or dt < out[0]:
            out = (dt, vm, r)
    return out


def hot_loop() -> None:
    print("1. the same hot kernel loop, interpreted and translated")
    print(f"{'mode':<26} {'instructions':>12} {'seconds':>8} {'instr/s':>11} {'tc hit rate':>11}"
          f" {'chained':>9} {'interpreted':>11}")
    rates = {}
    for label, kw, n in (("interpreted (no threshold)", {"threshold": 10**9}, 20_000),
                         ("translated (default)", {}, 200_000),
                         ("translated (threshold 1)", {"threshold": 1}, 200_000)):
        img = guests.from_source(HOT % n, name="hot")
        dt, vm, r = best(lambda: BinaryTranslation(img, **kw))
        st = vm.stats
        rate = st["tc_hits"] / max(1, st["tc_lookups"])
        rates[label] = r.steps / dt
        print(f"{label:<26} {r.steps:>12,} {dt:>8.2f} {r.steps / dt:>11,.0f} {rate:>11.1%} "
              f"{st['chained']:>9,} {st['interpreted']:>11,}")
    img = guests.from_source(HOT % 200_000, name="hot")
    dt, vm, r = best(lambda: Native(img))
    print(f"{'native (bare machine)':<26} {r.steps:>12,} {dt:>8.2f} {r.steps / dt:>11,.0f}")
    ratio = rates["translated (default)"] / rates["interpreted (no threshold)"]
    print(f"translated / interpreted: {ratio:.1f}x (goal: at least 3x)\n")


def per_guest() -> None:
    print("2. translation cache per guest (bt, default settings) and 3. wall time")
    print(f"{'guest':<10} {'lookups':>8} {'hit rate':>8} {'chained':>9} {'transl.':>7} "
          f"{'interp.':>8} {'callouts':>8} {'adapt.':>6}   "
          f"{'native s':>8} {'te s':>6} {'bt s':>6}   {'te cyc':>7} {'bt cyc':>7}")
    for name, params in GUESTS:
        img = guests.build(name, **params)
        runs = {m.name: best(lambda m=m: m(img), repeat=2) for m in
                (Native, TrapAndEmulate, BinaryTranslation)}
        st = runs["bt"][1].stats
        cyc = {k: sum(v[1].cycles.values()) for k, v in runs.items()}
        print(f"{name:<10} {st['tc_lookups']:>8,} "
              f"{st['tc_hits'] / max(1, st['tc_lookups']):>8.1%} {st['chained']:>9,} "
              f"{st['translations']:>7,} {st['interpreted']:>8,} {st['callouts']:>8,} "
              f"{st['adaptations']:>6,}   {runs['native'][0]:>8.2f} {runs['te'][0]:>6.2f} "
              f"{runs['bt'][0]:>6.2f}   {cyc['te'] / cyc['native']:>6.2f}x "
              f"{cyc['bt'] / cyc['native']:>6.2f}x")


def main() -> None:
    hot_loop()
    per_guest()


if __name__ == "__main__":
    main()
