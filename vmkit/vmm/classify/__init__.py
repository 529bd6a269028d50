"""Popek & Goldberg classes of the kit's instructions, found by experiment.

``classify("popfd")`` does not look anything up: it assembles the instruction, runs it once on
bare machines prepared in many states, and compares what happened (Popek & Goldberg, "Formal
Requirements for Virtualizable Third Generation Architectures", CACM 17(7), 1974):

* **privileged**: it traps at CPL 3 and does not trap at CPL 0: every CPL-3 run traps and at
  least one CPL-0 run does not. (This implies Popek & Goldberg's condition on pairs of states
  that differ only in the mode, and it also keeps out instructions that trap at CPL 3 for some
  operands only, like ``mov ss, ax`` with a ring-0 selector.) The user-mode states are the ones
  a monitor can give a deprivileged guest: IOPL 0 and a TSS whose I/O bitmap denies every port
  — so CLI, STI, IN and OUT count as privileged, which is what a trap-and-emulate monitor
  relies on.
* **control-sensitive**: in some run that does not trap it changes the virtualized state: GDTR,
  IDTR, LDTR, TR, CR0-CR4, EFLAGS.IF/IOPL (and TF, NT, RF, VM), the CPL, a segment register,
  the halted state, the devices (interrupt controller, timer, console, power), the system
  tables in memory (GDT, LDT, IDT, TSS, page tables) or the TLB (entries dropped).
* **behaviour-sensitive**: two runs that do not trap, from states that differ only in the
  virtualized state or only in the mode (and start with the same registers, flags and
  memory), end differently: other registers, flags or memory, or different final values of
  the virtualized state they write (POPF at CPL 3 leaves IF alone where CPL 0 sets it).
* **sensitive** = control- or behaviour-sensitive; **innocuous** = not sensitive.
* **user-sensitive** (for Theorem 3, the hybrid monitor) = sensitive *when executed in user
  mode*: a CPL-3 run changes the virtualized state, or two CPL-3 runs from states differing in
  the virtualized state end differently. A software interrupt whose gate takes user mode into
  ring 0 is not counted here: it enters the supervisor through the IDT, the trap sequence, and
  under a monitor the real IDT is the monitor's.

A *trap* is an exception the processor raises for the instruction (#GP, #UD, #PF, #NM, ...),
delivered through the IDT to a handler that records the vector and halts. ``int n`` going
through its gate is the instruction's own effect, not a trap (so INT n comes out sensitive and
not privileged, as Robin & Irvine count it).

The states (:data:`WORLDS`) change one virtualized resource at a time from a base state; each
runs at CPL 0 and, except ``iopl``, at CPL 3. Each instruction form also gets one or more
operand set-ups (:func:`setups_for`): the register, stack and memory contents it reads, the
same in every state (e.g. ``mov ds, ax`` with a ring-0 and a ring-3 data selector; ``popfd``
with IF and IOPL set in the popped value and with them clear). Memory operands are pointed
into a scratch area. Every run is one instruction with a step budget for the trap handler;
a run the kit cannot execute (an encoding outside the subset) is an outcome too.

Two results to expect, both consequences of the kit's design rather than gaps: RDTSC comes out
innocuous because it reads guest time, which every monitor keeps equal to native time
(DESIGN.md, "Two clocks"), so no state differs in it; and CR4.UMIP is never set, since with it
SGDT, SIDT, SLDT, SMSW and STR would trap at CPL 3 (that is what UMIP is for).

``classify_all()`` runs every instruction form of the subset (derived from the semantics
registry, :func:`canonical_forms`) and caches the table for the process. ``theorem1(table)``
and ``theorem3(table)`` return the instructions that break the conditions of Popek &
Goldberg's Theorems 1 and 3; ``robin_irvine()`` lists the instructions Robin & Irvine (USENIX
Security 2000) found sensitive and unprivileged, and ``compare_robin_irvine()`` checks the
experiments against them.

The package
-----------
``worlds.py``        the laboratory machine, its states (``WORLDS``) and the operand set-ups
``lab.py``           one run of an instruction, and what it did (``Outcome``)
``analysis.py``      outcomes -> classes (``Classification``)
``forms.py``         instruction forms, parsing, ``classify(line)``
``table.py``         ``classify_all()``, its table, ``theorem1``/``theorem3``
``robin_irvine.py``  Robin & Irvine's list against the kit's table
"""

from __future__ import annotations

from vmkit.vmm.classify.analysis import Classification
from vmkit.vmm.classify.forms import canonical_forms, classify
from vmkit.vmm.classify.robin_irvine import (PROTECTION, REGISTER,  # noqa: F401
                                             RobinIrvineCheck, RobinIrvineEntry,
                                             compare_robin_irvine, robin_irvine)
from vmkit.vmm.classify.table import (ClassificationTable, Violators, classify_all, theorem1,
                                      theorem3)
from vmkit.vmm.classify.worlds import WORLDS, Setup, setups_for

__all__ = ["Classification", "ClassificationTable", "classify", "classify_all",
           "canonical_forms", "setups_for", "theorem1", "theorem3", "robin_irvine",
           "compare_robin_irvine", "RobinIrvineEntry", "Violators", "WORLDS", "Setup"]
