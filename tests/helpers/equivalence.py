"""What the monitor tests share: small guest parameters, the guest-visible state that
equivalence compares (DESIGN.md: Popek & Goldberg's equivalence), and bare-metal test kernels."""

from __future__ import annotations

import hashlib

from vmkit import guests
from vmkit.machine.cpu import FLAGS_DEFINED_MASK
from vmkit.vmm import Native

#: small parameters keep the whole guest list fast; the short timer period makes preemption and
#: timer interrupts frequent (inside translated blocks too), so their timing is checked as well
SMALL = {"compute": {"iterations": 3000}, "syscall": {"iterations": 200},
         "io": {"bytes": 512, "chunk": 32}, "ctxswitch": {"iterations": 40, "processes": 3},
         "pagefault": {"pages": 24}, "ptemod": {"iterations": 40},
         "divzero": {"iterations": 30}, "callret": {"iterations": 20, "depth": 20},
         "kcallret": {"iterations": 20, "depth": 20}, "selfmod": {"iterations": 400},
         "kptemod": {"iterations": 20}, "kpgfault": {"iterations": 20},
         "tlbwalk": {"pages": 16, "passes": 2}, "forkwait": {"iterations": 5, "heap": 2}}
TIMER = 700
MAX_STEPS = 3_000_000


def build(name: str, **extra):
    """Guest ``name`` with SMALL parameters and the TIMER period (both can be overridden)."""
    timer = extra.pop("timer_period", TIMER)
    known = guests.spec(name).params
    params = {k: v for k, v in SMALL.get(name, {}).items() if k in known}
    params.update(extra)
    return guests.build(name, timer_period=timer, **params)


def guest_state(cpu) -> dict:
    """What the guest can see of its CPU (the equivalence of DESIGN.md)."""
    return {"regs": list(cpu.regs), "eip": cpu.eip, "eflags": cpu.eflags & FLAGS_DEFINED_MASK,
            "selectors": (cpu.cs, cpu.ss, cpu.ds, cpu.es, cpu.fs, cpu.gs),
            "cr0": cpu.cr0, "cr3": cpu.cr3, "cr4": cpu.cr4, "cpl": cpu.cpl,
            "gdtr": (cpu.gdtr.base, cpu.gdtr.limit), "idtr": (cpu.idtr.base, cpu.idtr.limit)}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_native(img, max_steps=MAX_STEPS):
    vm = Native(img)
    return vm, vm.run(max_steps=max_steps)


OWN_KERNEL = r"""
# A bare-metal kernel with its own IDT and timer: it idles in sti; hlt, lets ticks wait while
# IF is clear (sti then delivers them after one instruction), and its handler irets to ring 0.
_start:
    lidt [idt_ptr]
    mov eax, offset on_tick          # gate 32: interrupt gate to 0x08:on_tick
    mov word ptr [idt + 32*8], ax
    mov word ptr [idt + 32*8 + 2], 0x08
    mov word ptr [idt + 32*8 + 4], 0x8E00
    shr eax, 16
    mov word ptr [idt + 32*8 + 6], ax
    mov al, 0xFE
    out 0x21, al
    mov eax, 300
    out 0x40, eax
1:  sti
    hlt
    cli
    mov ecx, 250                     # interrupts off: the next tick waits (interrupt window)
2:  dec ecx
    jnz 2b
    sti                              # ... and comes right after the next instruction
    add dword ptr [work], 1
    mov ecx, 100                     # interrupts on: a tick in the middle
3:  add dword ptr [work], ecx
    dec ecx
    jnz 3b
    cmp dword ptr [ticks], 20
    jb 1b
    cli
    mov eax, [ticks]
    out 0xF4, eax
on_tick:
    push eax
    inc dword ptr [ticks]
    mov eax, [work]
    mov [seen], eax                  # how far the main loop was when the tick came
    mov al, 0x20
    out 0x20, al
    pop eax
    iretd                            # to ring 0 (under te, from ring 1: it traps)
.data
.align 8
idt_ptr: .word 256*8 - 1
         .long idt
ticks:   .long 0
work:    .long 0
seen:    .long 0
.align 8
idt:     .space 256*8
"""
