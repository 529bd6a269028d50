"""How fast does the bare Machine interpret? (a script, not a test: ``make bench``)

Reports, on this host:

* guest instructions per second of a hot loop (ALU, memory, lea, a taken branch), with paging
  off, and with paging on through identity-mapped page tables the guest builds and enables
  itself (every data access then goes through the TLB accessors);
* the decode-cache and instruction-cache hit rates over those runs (each instruction should be
  decoded and compiled once, then only looked up);
* the cost of an instruction's first execution (capstone decode, Python source generation,
  ``compile``) against a warm execution, over a straight line of distinct instructions.

``python benchmarks/bench_interp.py [--iterations N] [--distinct N]``
"""

from __future__ import annotations

import argparse
import random
import time

import vmkit
from vmkit.isa import decode as dec
from vmkit.isa import semantics as sem
from vmkit.machine.machine import Machine

BASE = 0x1000
PD, PT = 0x20000, 0x21000

HOT_LOOP = """
_start:
    mov ecx, {n}
    mov ebx, 0x9000
    xor eax, eax
top:
    add eax, ecx
    xor edx, eax
    mov dword ptr [ebx + 8], edx
    lea esi, [eax + ecx*4 + 8]
    mov edi, dword ptr [ebx + 8]
    shl edi, 3
    dec ecx
    jnz top
    hlt
"""
LOOP_BODY = 8  # instructions per iteration

# The guest builds a page directory with one page table mapping 0-4 MiB to itself and turns
# paging on (CR3, then CR0.PG), then runs the same loop.
PAGING_PROLOGUE = f"""
_start:
    mov edi, {PT:#x}
    mov eax, 0x7            # frame 0, present | writable | user
    mov ecx, 1024
fill:
    mov dword ptr [edi], eax
    add eax, 0x1000
    add edi, 4
    dec ecx
    jnz fill
    mov dword ptr [{PD:#x}], {PT | 7:#x}
    mov eax, {PD:#x}
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
"""


def _timed_run(source: str, max_steps: int) -> tuple[float, int, Machine, dict]:
    prog = vmkit.assemble(source, base=BASE)
    m = Machine()
    m.load(prog)
    h0, m0 = dec.DECODER.hits, dec.DECODER.misses
    compiles = 0
    compile_ = m._compile

    def counting(eip):
        nonlocal compiles
        compiles += 1
        return compile_(eip)

    m._compile = counting
    t = time.perf_counter()
    r = m.run(max_steps=max_steps)
    dt = time.perf_counter() - t
    assert r.reason == "halt", r
    info = {"decoder_hits": dec.DECODER.hits - h0, "decoder_misses": dec.DECODER.misses - m0,
            "compiles": compiles, "tlb_misses": m.tlb_misses}
    return dt, r.steps, m, info


def hot_loop(iterations: int, paging: bool) -> dict:
    body = HOT_LOOP.format(n=iterations)
    if paging:
        body = PAGING_PROLOGUE + body.replace("_start:", "")
    dt, steps, m, info = _timed_run(body, 10 * iterations * LOOP_BODY + 100_000)
    assert m.cpu.paging == paging
    info.update(steps=steps, seconds=dt, ips=steps / dt)
    return info


TEMPLATES = [
    "add eax, {imm}", "sub ecx, {imm}", "xor edx, {imm}", "and ebx, {imm}", "cmp eax, {imm}",
    "mov esi, {imm}", "lea edi, [eax + ecx*4 + {imm}]", "imul ebx, ecx, {imm}",
    "mov eax, dword ptr [{addr}]", "mov dword ptr [{addr}], ecx", "movzx edx, byte ptr [{addr}]",
    "shl eax, {sh}", "sar edx, {sh}", "rol ebx, {sh}", "adc eax, {imm}", "test ecx, {imm}",
]


def first_execution(distinct: int, seed: int = 1) -> dict:
    """Run ``distinct`` different instructions once with cold caches, then again warm."""
    rng = random.Random(seed)
    lines = ["_start:"]
    for _ in range(distinct):
        t = rng.choice(TEMPLATES)
        lines.append(t.format(imm=hex(rng.getrandbits(31)),
                              addr=hex(0x100000 + 4 * rng.randrange(4096)),
                              sh=rng.randrange(1, 32)))
    lines.append("hlt")
    prog = vmkit.assemble("\n".join(lines), base=BASE)

    def fresh() -> Machine:
        m = Machine()
        m.load(prog)
        return m

    sem._CODE_CACHE.clear()
    dec.DECODER._cache.clear()
    m = fresh()
    t = time.perf_counter()
    r = m.run(max_steps=distinct + 10)
    cold = time.perf_counter() - t
    assert r.reason == "halt", r
    # warm: same machine, same compiled functions, run again from the start
    m.cpu.eip, m.cpu.halted, m.stopped = BASE, False, None
    t = time.perf_counter()
    r = m.run(max_steps=distinct + 10)
    warm = time.perf_counter() - t
    assert r.reason == "halt", r

    # the parts of a first execution, separately: capstone decode, source generation, compile
    code = prog.code
    insns = []
    t = time.perf_counter()
    off = 0
    while off < len(code):
        insn = dec.decode_one(code[off:off + 15], BASE + off)
        insns.append(insn)
        off += insn.size
    t_decode = time.perf_counter() - t
    t = time.perf_counter()
    srcs = [sem.source_of(i) for i in insns]
    t_source = time.perf_counter() - t
    t = time.perf_counter()
    for s in srcs:
        compile(s, "<bench>", "exec")
    t_compile = time.perf_counter() - t
    n = r.steps
    return {"n": n, "cold_us": cold / n * 1e6, "warm_us": warm / n * 1e6,
            "decode_us": t_decode / len(insns) * 1e6, "source_us": t_source / len(insns) * 1e6,
            "compile_us": t_compile / len(insns) * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=100_000, help="hot-loop iterations "
                    "(8 instructions each; default 100000)")
    ap.add_argument("--distinct", type=int, default=3000, help="distinct instructions for the "
                    "first-execution measurement (default 3000)")
    a = ap.parse_args()
    print(f"bench_interp: iterations={a.iterations} distinct={a.distinct}")
    rows = []
    for paging in (False, True):
        hot_loop(1000, paging)  # warm the process (imports, code cache)
        best = max((hot_loop(a.iterations, paging) for _ in range(3)), key=lambda r: r["ips"])
        rows.append((paging, best))
    print()
    print(f"{'hot loop':<14}{'instructions':>13}{'seconds':>9}{'instr/s':>12}"
          f"{'compiled':>10}{'icache hit':>12}{'decode cache':>14}{'TLB misses':>12}")
    for paging, r in rows:
        looked_up = r["decoder_hits"] + r["decoder_misses"]
        ihit = 1 - r["compiles"] / r["steps"]
        print(f"{'paging ' + ('on' if paging else 'off'):<14}{r['steps']:>13,}"
              f"{r['seconds']:>9.2f}{r['ips']:>12,.0f}{r['compiles']:>10}{ihit:>12.4%}"
              f"{str(r['decoder_hits']) + '/' + str(looked_up) + ' hits':>14}"
              f"{r['tlb_misses']:>12,}")
    print("  compiled = instruction-cache misses (decode + compile); the decode cache is "
          "process-wide,\n  so a fresh machine finds most instructions already decoded")
    f = first_execution(a.distinct)
    print()
    print(f"first execution of {f['n']} distinct instructions (per instruction):")
    print(f"  {'cold run (decode + compile + execute)':<44}{f['cold_us']:>9.1f} us")
    print(f"  {'warm run (execute only)':<44}{f['warm_us']:>9.1f} us")
    print(f"  {'  of the cold run: capstone decode':<44}{f['decode_us']:>9.1f} us")
    print(f"  {'                   source generation':<44}{f['source_us']:>9.1f} us")
    print(f"  {'                   Python compile()':<44}{f['compile_us']:>9.1f} us")


if __name__ == "__main__":
    main()
