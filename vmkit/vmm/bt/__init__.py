"""Binary translation: the guest kernel never runs on the real CPU as written (VMware's design,
Adams & Agesen, ASPLOS 2006; translation blocks after QEMU, Bellard, USENIX ATC 2005).

Everything :class:`~vmkit.vmm.te.TrapAndEmulate` builds is reused: the host machine with one
memory slice per VM, the virtual CPU, the shadow GDT, the shadow page tables (a virtual TLB),
reflection through the guest's IDT, the virtual devices, several VMs with world switches. Only
the *policy* for guest kernel code changes:

* **User code (virtual CPL 3) runs directly** on the host machine's interpreter, as under
  trap-and-emulate: it is innocuous by construction (anything sensitive traps at CPL 3).
* **Kernel code (virtual CPL 0) is run by the monitor**, deprivileged (the real CPU stays in
  ring 1, on the shadow tables), one *translation unit* at a time: a straight run of at most
  :data:`MAX_BLOCK` instructions that ends at the first control transfer, callout or page end.

By default a unit is **translated on its first execution**, as VMware's translator does (A&A
§3.2; ``threshold=1``). With ``threshold=N`` > 1 (the Dynamo/Transmeta contrast) a unit is first
**interpreted** (every instruction fetched through the guest's page tables, decoded and
dispatched through the semantics registry, each time; sensitive ones emulated on the virtual CPU
with the trap-and-emulate handlers), and its executions are counted; when it has run
``threshold`` times it is **translated**: the per-instruction Python bodies that the
machine itself compiles (``semantics.source_of``, the identical translation of innocuous
instructions, "IDENT" in A&A), with inline emulation for the cheap sensitive ones and a
**callout** for the rest, are made into **one Python function per block** by the machine's own
block translator (:func:`vmkit.machine.blocks.build`: flags only where read, registers in
locals, a fault located from the traceback), so a block runs with one call and no
per-instruction dispatch. In per-instruction mode (``Machine(blocks=False)``, ``VMKIT_BLOCKS=0``)
the same units run one compiled instruction at a time, with the same counts. Translations live in a bounded **translation
cache** keyed by (VM, guest-physical address of the block start, its linear address, virtual
CPL), with an eviction policy (:class:`FlushWhenFull` as QEMU, :class:`LRU`, :class:`FIFO`).
A block's exits to a successor in the same page are **chained**: the successor's translation
is stored in the block and run without a cache lookup (for an indirect exit, ``ret`` or
``jmp reg``, the last target seen, as an inline indirect-branch cache).

How each kind of instruction is translated
------------------------------------------
=====================================  =================================================
innocuous (add, mov, jcc, push ...)    IDENT: the machine's own compiled body
``cli``                                inline: ``vcpu.IF = 0``
``sti``                                inline: ``vcpu.IF = 1`` (+ the STI shadow); ends the unit
``pushfd``                             inline: push the *virtual* EFLAGS (virtual IF and IOPL)
``popfd``                              inline: pop into the virtual EFLAGS as ring 0 would; ends
``push cs/ss``, ``mov r, cs/ss``       inline: the selector the guest believes (RPL 0)
``mov r, crN``                         inline: the virtual control register
``in out hlt lgdt lidt lldt ltr``      callout: the trap-and-emulate handler, without the trap
``lmsw clts invlpg``, ``mov crN, r``   callout
``iretd retf lcall int int3 into``     callout (reflection through the guest IDT for int)
``mov ss``, ``pop ss``, ``rdtsc``      callout
``sgdt sidt sldt str smsw``            callout: the *virtual* GDTR/IDTR/LDTR/TR/CR0
``lar lsl verr verw``                  callout: the guest's own descriptors, virtual CPL
=====================================  =================================================

So the ``nonvirt-*`` guests, which go wrong under trap-and-emulate on purpose, print what they
print natively: the binary translator sees every sensitive instruction before it runs.

Callouts sit at the end of their unit: the block function returns, the monitor brings guest time
up to date and calls the handler (the handler registry is :attr:`BinaryTranslation.emulate`, the
trap-and-emulate table plus the translator's own entries), then continues with the next block.

Guest time and interrupts
-------------------------
Instructions retired inside translated blocks are host instructions (``native`` cycles: A&A,
translated code runs at near native speed); interpreted instructions cost ``interpret`` each,
callouts ``callout``, and each translated instruction ``translate`` once. Guest time advances by
one per guest instruction whichever way it ran, and each block function takes the remaining
guest-time budget and leaves early when it runs out (QEMU's ``-icount``), so the timer interrupt arrives at the same guest instruction as under
:class:`~vmkit.vmm.base.Native`. An exit in the middle of a block is resumed instruction by
instruction from the block's own per-instruction code, so no half-block translations are made.

Self-modifying code
-------------------
Every byte a translation came from is watched (``Machine.code_watch``): a store into it, by the
guest or by the VMM, invalidates the translation (``tc_invalidations``, a
:class:`~vmkit.trace.TcInvalidation` event) and resets its execution count. A block that writes
into itself stops right after the store.

Adaptive translation
--------------------
The shadow page tables are a virtual TLB (see :mod:`vmkit.vmm.paging.shadow`): after every guest CR3
load the first access to each page is a hidden page fault, a trap into the VMM. An instruction
of translated code that keeps trapping this way (``adapt_after`` hidden faults; ``popad`` on
the kernel stack of the process just switched to is the classic case in ``ctxswitch``) is
**retranslated into a callout** that runs it with the VMM's software MMU (the guest's page
tables, accessed and dirty bits set as natively), without the trap (``adaptations``); an access
that would have been a hidden fault fills the shadow entry as the fault would have, so the
instructions after it find the page mapped. The
callout keeps watching the instruction: after ``REVERT_AFTER`` (64) runs in a row that would
not have trapped as IDENT code (no hidden fault: the shadow already mapped what it touched; no
traced write) it goes back to its IDENT translation, and traps again before it is adapted again
(A&A §3.3:
adapt aggressively towards the general form, "less aggressively towards a more optimistic
translation"). Under traced shadow paging (``shadow="traced"``) a store that keeps writing the
guest's page tables is adapted the same way, and its adapted form is the short in-TC sequence of
A&A §6.3 that stores and updates the shadow entry ("a small program", 391 cycles in their
ptemod): priced from its own work (its instructions, the walk, the shadow update), not as a
callout.

Static translation, the contrast
--------------------------------
``BinaryTranslation(image, static=True)`` also translates the kernel image *ahead of time* by a
linear sweep of its text section from its first byte (as ``objdump -d`` disassembles), cutting
blocks at the control transfers and at the direct branch targets it finds. It breaks where the
sweep cannot know what it sees: the kernel keeps ``syscall_table`` (data) in ``.text``, so the
sweep decodes the table as instructions, and the instructions after it are decoded out of
alignment; the entries are only reached through ``jmp [syscall_table + eax*4]``, a computed
jump the sweep cannot follow; and ``selfmod`` rewrites code after it was translated. The monitor
does not stop there: every lookup that finds no static translation falls back to dynamic
translation and counts ``static_misses`` (``static_miss_log`` says where and why), so the guest
still runs right, and the counters show what a purely static translator would have got wrong.

The package, one mechanism a module (after QEMU's cpu-exec, translate-all and tb-maint)
---------------------------------------------------------------------------------------
``tcache.py``      the translation cache: :class:`Block`, the eviction policies
                   (:class:`FlushWhenFull`, :class:`LRU`, :class:`FIFO`), the watch on guest
                   code, invalidation and flushes
``translator.py``  fetching kernel code through the guest's tables, classifying each
                   instruction (identical, inline, callout), building and compiling units
``engine.py``      running the kernel in translated blocks: chaining, the interpreter below
                   the threshold
``callouts.py``    callouts, the software MMU of adapted instructions, traps from translated
                   code and adaptation
``static.py``      the ahead-of-time linear sweep (``static=True``)
``handlers.py``    the handlers BT adds to trap-and-emulate's table (int, LAR/LSL/VERR/VERW,
                   lcall)
``monitor.py``     :class:`BinaryTranslation`: the policy (who runs the guest) and the state
"""

from __future__ import annotations

from vmkit.vmm.bt.handlers import (emulate_descriptor_query, emulate_int,  # noqa: F401
                                   emulate_lcall)
from vmkit.vmm.bt.monitor import BinaryTranslation
from vmkit.vmm.bt.tcache import DEFAULT_TC_SIZE, FIFO, LRU, Block, EvictionPolicy, FlushWhenFull
from vmkit.vmm.bt.translator import (CALLOUTS, CONTROL, DEFAULT_THRESHOLD,  # noqa: F401
                                     GO_ON, IN_TC, INLINE, MAX_BLOCK, STRING, break_even)

__all__ = ["BinaryTranslation", "Block", "EvictionPolicy", "FlushWhenFull", "LRU", "FIFO",
           "DEFAULT_THRESHOLD", "DEFAULT_TC_SIZE", "MAX_BLOCK", "break_even"]
