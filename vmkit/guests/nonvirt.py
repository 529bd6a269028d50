"""The ``nonvirt-`` guests: kernels that show, on purpose, that x86 is not classically
virtualizable (Popek & Goldberg 1974; Robin & Irvine 2000).

Each is the kit's mini kernel (``kernel.s``) with a short demonstration that runs in the kernel
at the end of boot (``boot_hook.s``, replaced per guest by one ``nonvirt_*.s`` file), then the
one process ``nonvirt_user.s``, which exits. The demonstration executes a *sensitive but
unprivileged* instruction and prints what it saw:

==================  ================  ==========================================================
guest               instruction       natively (ring 0)        under trap-and-emulate (ring 1)
==================  ================  ==========================================================
``nonvirt-popf``    ``popfd``         3 of 3 ticks arrive      0 ticks: IF was never set
``nonvirt-pushcs``  ``push cs``,      ring 0                   ring 1
                    ``mov ax, cs``
``nonvirt-sgdt``    ``sgdt``,         the kernel's own tables  the monitor's tables
                    ``sidt``
``nonvirt-lar``     ``lar``           DPL 0                    DPL 1, or not visible
``nonvirt-smsw``    ``smsw``          the CR0 it wrote         the monitor's real CR0
==================  ================  ==========================================================

None of these instructions traps when the kernel runs deprivileged, so a trap-and-emulate
monitor never gets the chance to give the guest the answer it would get on the bare machine:
these guests work under ``Native`` (their ``expected`` output) and go visibly wrong under
``TrapAndEmulate``. They are the documented exceptions to the equivalence the tests check for
every other guest (DESIGN.md). The details are in the comments of each ``.s`` file.

Registered with :func:`vmkit.guests.register` when the guest list is first used.
"""

from __future__ import annotations

from vmkit.guests import GuestSpec, register

__all__ = ["NONVIRT", "TICKS"]

#: timer ticks nonvirt-popf waits for (``NV_TICKS`` in nonvirt_popf.s)
TICKS = 3


#: the demonstrations wait for a few ticks, so they tick more often than the default
TIMER_PERIOD = 10_000


def _spec(name: str, source: str, description: str, expected: str) -> GuestSpec:
    return GuestSpec(
        name, description, lambda p: ["nonvirt_user"], {}, {}, lambda p: expected,
        kernel_files=lambda p: {"boot_hook.s": f'.include "{source}"\n'},
        timer_period=TIMER_PERIOD)


NONVIRT = (
    _spec("nonvirt-popf", "nonvirt_popf.s",
          "the kernel enables interrupts with popfd: lost when deprivileged (no tick arrives)",
          f"nonvirt-popf: {TICKS} of {TICKS} timer ticks arrived after popfd turned "
          f"interrupts on\n"),
    _spec("nonvirt-pushcs", "nonvirt_pushcs.s",
          "the kernel reads its ring from CS (push cs, mov ax, cs): 1 when deprivileged",
          "nonvirt-pushcs: the kernel runs in ring 0 (push cs), ring 0 (mov ax, cs)\n"),
    _spec("nonvirt-sgdt", "nonvirt_sgdt.s",
          "the kernel reads GDTR and IDTR (sgdt, sidt): the monitor's tables when virtualized",
          "nonvirt-sgdt: sgdt shows the kernel's own GDT\n"
          "nonvirt-sgdt: sidt shows the kernel's own IDT\n"),
    _spec("nonvirt-lar", "nonvirt_lar.s",
          "the kernel checks its data segment with lar: DPL 1 or invisible when deprivileged",
          "nonvirt-lar: lar says the kernel's data segment 0x10 has DPL 0\n"),
    _spec("nonvirt-smsw", "nonvirt_smsw.s",
          "the kernel sets CR0.TS and reads CR0 back with smsw: the real CR0 when virtualized",
          "nonvirt-smsw: after setting CR0.TS, smsw shows CR0 = 0x80010019 (TS set)\n"),
)

for _s in NONVIRT:
    register(_s)
