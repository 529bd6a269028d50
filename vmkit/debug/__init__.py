"""The headless debugger (DESIGN.md: ``vmkit.Debugger``) and what it is built on: guest
memory as the guest sees it (:mod:`~vmkit.debug.memory`), the memory operands of an
instruction (:mod:`~vmkit.debug.operands`), checkpoints and replay
(:mod:`~vmkit.debug.timeline`).

Layer: above ``vmm`` and ``trace`` (it drives monitors through their public API), below
``viz`` and ``widgets`` (they show it); a contract in pyproject.toml keeps it so.
"""

from vmkit.debug.debugger import (COUNTER_KINDS, EVENT_ALIASES, Breakpoint, DebugStop, Debugger,
                                  EventBreak, Watchpoint)
from vmkit.debug.memory import GuestView
from vmkit.debug.timeline import DEFAULT_BUDGET, Timeline

__all__ = ["Debugger", "DebugStop", "Breakpoint", "Watchpoint", "EventBreak", "GuestView",
           "Timeline", "DEFAULT_BUDGET", "EVENT_ALIASES", "COUNTER_KINDS"]
