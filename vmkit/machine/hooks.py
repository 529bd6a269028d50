"""The machine's one declared extension interface: what a monitor (vmkit.vmm) plugs into the
host machine, installed with ``Machine.attach(hooks)``.

A monitor subclasses :class:`MachineHooks` and overrides the methods it needs; the others keep
the bare machine's behaviour (the defaults below are no-ops). The machine asks only the methods a
subclass overrides, so a bare machine pays nothing for the interface.

Two more extension points stay plain data on the machine: ``Machine.port_handlers`` (extra
devices, port -> (read, write): the homework's extension point) and ``Machine.exit_request``
(set it from a hook to make ``run()`` return with reason ``"vmm"`` at the next instruction
boundary). Watching memory is not a hook of the monitor but of whoever observes the machine
(a debugger): ``Machine.watch_memory(ranges)`` makes every access to those physical bytes a
``MemoryAccess`` trace event, and ``Machine.watched_page(pa)`` tells code that caches
translations or runs blocks of instructions to take the one-instruction path on that page.
"""

from __future__ import annotations


class MachineHooks:
    """No-op defaults of every hook; see ``Machine.attach``."""

    def on_exception(self, vector: int, fault, source: str, next_eip) -> bool:
        """An exception, a software interrupt or a hardware interrupt is about to be delivered
        through the IDT. ``fault`` is the :class:`~vmkit.isa.faults.Fault` (None for an
        interrupt), ``source`` one of ``"exception"``, ``"irq"``, ``"int"``, ``"int3"``,
        ``"into"``, ``next_eip`` the return address of a software interrupt (else None).
        Return True when the monitor handled the event: the IDT never sees it."""
        return False

    def on_ring_change(self, old: int, new: int, cause: str) -> None:
        """The CPU changed privilege level, after the change and before the next instruction
        (``cause``: ``"interrupt"``, ``"iret"``, ``"far return"``, ``"far call"``,
        ``"far jump"``)."""

    def intercept(self, insn):
        """Asked once per instruction when it is compiled: None, or a function to run instead
        of the instruction's compiled semantics (VMX non-root mode: the instructions a VMCS
        makes exit). A monitor that changes its answers flushes the machine's icache."""
        return None


def overridden(hooks: MachineHooks, name: str):
    """``hooks``'s bound method ``name`` when its class overrides the no-op default, else None
    (the machine then skips the call)."""
    if getattr(type(hooks), name, None) is getattr(MachineHooks, name):
        return None
    return getattr(hooks, name)
