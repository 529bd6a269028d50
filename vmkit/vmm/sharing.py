"""How sharing the CPU slows a VM and makes its timer jitter (course notes: "the CPU is being
multi-programmed among many virtual machines, which can further slow down the virtual machines
in unpredictable ways").

:func:`sharing_experiment` runs 1, 2, 4, 8 copies of a guest under one monitor, scheduled on
machine time, with each VM's timer **on machine time** (``machine_timer=True``: the guest's
timer period counts machine cycles, whether or not the VM ran; DESIGN.md "Two clocks"). For VM 0
it reports how many machine cycles it took to finish, its progress per million machine cycles,
and its own instructions between consecutive timer ticks (mean, spread). With one VM the ticks
come every period less the VMM's overhead; with more, a VM that was descheduled finds a tick
waiting as soon as it runs again, so the gaps spread out: jitter. Guest time, not machine time,
is what keeps the kit's equivalence (a guest on the machine-time timer may print differently
under different monitors; that is the point).
"""

from __future__ import annotations

import statistics
import time

from vmkit.errors import VmkitError
from vmkit.vmm.sched import DEFAULT_QUANTUM, machine_time

__all__ = ["sharing_experiment"]


def sharing_experiment(guest="compute", counts=(1, 2, 4, 8), monitor: str = "te", *,
                       timer_period: int = 5_000, quantum: int = DEFAULT_QUANTUM,
                       scheduler="round-robin", costs=None, max_steps: int = 50_000_000,
                       **params) -> list[dict]:
    """Rows, one per number of VMs ``n`` in ``counts``: ``vms``, ``monitor``, ``cycles``
    (machine cycles until VM 0 finished), ``total_cycles`` (until all finished),
    ``instructions`` (VM 0's), ``progress_per_mcycle`` (VM 0's instructions per 10⁶ machine
    cycles), ``ticks`` (timer ticks VM 0 took), ``expiries`` (times its timer's period ran
    out), ``lost_ticks`` (expiries that never became an interrupt: while the VM was
    descheduled its one pending IRQ 0 absorbed them, so a guest that keeps time by counting
    ticks falls behind), ``tick_mean``, ``tick_stdev``, ``tick_min``,
    ``tick_max`` (VM 0's instructions between consecutive ticks), ``world_switches``,
    ``wall_seconds``. ``guest`` is a name (built with ``timer_period`` and ``params``) or a
    GuestImage (its own timer period is then used)."""
    from vmkit import guests
    from vmkit.vmm import MONITORS
    if monitor not in MONITORS or monitor == "native":
        raise VmkitError(f"monitor must be one of te, bt, hw (native runs one VM), got "
                         f"{monitor!r}")
    cls = MONITORS[monitor]
    rows = []
    image = None
    for n in counts:
        if image is None:   # one image serves every VM of every row (as a GuestImage does)
            image = (guests.build(guest, timer_period=timer_period, **params)
                     if isinstance(guest, str) else guest)
        images = [image] * n
        kw = {} if costs is None else {"costs": costs}
        mon = cls(*images, scheduler=scheduler, quantum=quantum, machine_timer=True, **kw)
        finished: dict[int, float] = {}
        mon.on("stop", lambda ev, mon=mon, f=finished: f.setdefault(ev.vm, machine_time(mon)))
        t0 = time.perf_counter()
        mon.run(max_steps=max_steps)
        wall = time.perf_counter() - t0
        total = machine_time(mon)
        vm0 = mon.vms[0]
        cyc = finished.get(0, total)
        gaps = [b - a for a, b in zip(vm0.tick_steps, vm0.tick_steps[1:])]
        rows.append(dict(
            vms=n, monitor=monitor, cycles=cyc, total_cycles=total, instructions=vm0.steps,
            progress_per_mcycle=vm0.steps / cyc * 1e6 if cyc else 0.0,
            ticks=len(vm0.tick_steps), expiries=vm0.devices.ticks,
            lost_ticks=max(0, vm0.devices.ticks - len(vm0.tick_steps)),
            tick_mean=statistics.fmean(gaps) if gaps else 0.0,
            tick_stdev=statistics.pstdev(gaps) if len(gaps) > 1 else 0.0,
            tick_min=min(gaps) if gaps else 0, tick_max=max(gaps) if gaps else 0,
            world_switches=mon.world_switches, wall_seconds=wall,
            results=[vm.result.reason if vm.result else None for vm in mon.vms]))
    return rows
