"""The machine's one declared extension interface: what a monitor (vmkit.vmm) plugs into the
host machine, installed with ``Machine.attach(hooks)``.

A monitor subclasses :class:`MachineHooks` and overrides the methods it needs; the others keep
the bare machine's behaviour. The machine asks only the methods a subclass overrides, so a bare
machine pays nothing for the interface. Three groups:

* **notifications** (``on_exception``, ``on_ring_change``, ``intercept``): called at their
  point when overridden; the defaults are no-ops;
* **event policy** (``deliverable_irq``, ``deliver_irq``, ``deliver``, ``soft_int``,
  ``take_exception``, ``page_fault``, ``descriptor_visible``): each *replaces* the machine's
  method of the same name while the hooks are attached (another CPU mode, VMX non-root, changes
  how interrupts are recognised and delivered, what a page fault does to CR2, what LAR sees).
  The default of each is the machine's own rule, so an override calls ``super()`` for it;
* **ports** (``port_read``, ``port_write``): a port access the CPU permitted, before the
  machine's devices answer (``Machine.port_handlers``, then its own devices).

``attach`` sets ``hooks.host`` to the machine. Besides the hooks, ``Machine.port_handlers``
(extra devices, port -> (read, write): the homework's extension point) stays plain data, and a
hook asks the machine to come back to its monitor with ``Machine.request_exit()``: ``run()``
returns with reason ``"vmm"`` at the next instruction boundary.
Watching memory is not a hook of the monitor but of whoever observes the machine (a debugger):
``Machine.watch_memory(ranges)`` makes every access to those physical bytes a ``MemoryAccess``
trace event, and ``Machine.watched_page(pa)`` tells code that caches translations or runs blocks
of instructions to take the one-instruction path on that page.
"""

from __future__ import annotations

#: the event-policy hooks: each replaces the machine's method of the same name when overridden
EVENT_POLICY = ("deliverable_irq", "deliver_irq", "deliver", "soft_int", "take_exception",
                "page_fault", "descriptor_visible")


class MachineHooks:
    """The defaults of every hook; see ``Machine.attach`` and the module text."""

    host = None   # the machine these hooks are attached to (set by Machine.attach)

    # ---- notifications ---------------------------------------------------------------------
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

    # ---- event policy: each replaces the machine's method of the same name -----------------
    def deliverable_irq(self):
        """The interrupt line to deliver at this instruction boundary, or None (the machine:
        IF set, outside an STI shadow, a line pending at the interrupt controller). Another
        value is passed to :meth:`deliver_irq` as it is."""
        return type(self.host).deliverable_irq(self.host)

    def deliver_irq(self, line) -> bool:
        """Deliver interrupt ``line`` (the machine: acknowledge it, ``on_exception`` first,
        then through the IDT); True when something happened at this boundary."""
        return type(self.host).deliver_irq(self.host, line)

    def deliver(self, vector: int, error_code, return_eip: int, source: str) -> None:
        """Deliver one event through the IDT (gate checks, stack switch, frame); a fault while
        doing so is raised (the machine's double-fault rules take it from there)."""
        type(self.host).deliver(self.host, vector, error_code, return_eip, source)

    def soft_int(self, vector: int, next_eip: int, source: str) -> None:
        """INT n / INT3 / INTO (``on_exception`` first, then :meth:`deliver`)."""
        type(self.host).soft_int(self.host, vector, next_eip, source)

    def take_exception(self, f) -> None:
        """Raise exception ``f`` at the current instruction (``on_exception`` first, then
        delivery with the double-fault rules)."""
        type(self.host).take_exception(self.host, f)

    def page_fault(self, lin: int, err: int, refs: int):
        """The MMU found a #PF at ``lin`` (error code ``err``, after ``refs`` references): the
        machine sets CR2 and raises the Fault."""
        return type(self.host).page_fault(self.host, lin, err, refs)

    def descriptor_visible(self, selector: int):
        """The descriptor LAR/LSL/VERR/VERW may see at the current CPL, or None."""
        return type(self.host).descriptor_visible(self.host, selector)

    # ---- ports -----------------------------------------------------------------------------
    def port_read(self, port: int, size: int):
        """An IN the CPU permitted (or a monitor's device read): the value, or None to let the
        machine's devices answer."""
        return None

    def port_write(self, port: int, size: int, value: int) -> bool:
        """An OUT the CPU permitted: True when the hooks took it, else the machine's devices
        do."""
        return False


def overridden(hooks: MachineHooks, name: str):
    """``hooks``'s bound method ``name`` when its class overrides the default, else None (the
    machine then skips the call, or keeps its own method)."""
    if getattr(type(hooks), name, None) is getattr(MachineHooks, name):
        return None
    return getattr(hooks, name)
