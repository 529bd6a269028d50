"""The golden file: what every guest does under every monitor, recorded once and compared on
every test run, so that a change to the monitors' structure that is meant to change nothing
visibly changes nothing.

For each monitor (``MONITORS``: the five monitors and ``hw-shadow``, hardware assist without
EPT) and each guest of ``vmkit.guests.names()`` (paravirtual builds under ``pv``), with the
small parameters of ``PARAMS``, a short timer period and a step limit, a case records:

* the run's result (reason, steps, detail) and each VM's console;
* ``stats``: every counter of ``monitor.stats`` (Counters as sorted dicts);
* ``events``: the trace's event counts by kind;
* ``state``: per VM, the guest-visible CPU state as the guest reads it (general registers,
  EIP, the defined EFLAGS bits, selectors, CR0/CR3/CR4, CPL, GDTR/IDTR) and a SHA-256 of its
  guest-physical memory;
* ``ticks``: per VM, timer expiries and the timer interrupts delivered;
* ``cycles``: totals and breakdowns under the default ``CostModel()`` and under ``p4-2006``.

Besides one case per guest: a run of several VMs at once (monitors that multiplex), a
snapshot/restore round trip (run part way, snapshot, run to the end, restore, run to the end
again: both ends and the counters at the snapshot are recorded), and the monitors' options
(``VARIANTS``: an assigned disk, timers on machine time, small translation caches, static
translation, lazy EPT).

Files: ``tests/golden/<monitor>.json``, one per monitor (the tests are split per monitor too,
``tests/golden/test_golden_<monitor>.py``, so that pytest-xdist can spread them).

The file is recorded in per-instruction mode (``VMKIT_BLOCKS=0``); the tests run in the
default mode, block translation (vmkit/machine/blocks.py), which must reproduce it exactly.

Regenerate with ``python -m tests.golden.regen`` (or ``python -m tests.golden.regen te bt``
for some monitors) from the repository's root. A change that alters what a guest does
regenerates the golden file in a commit that says why.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent / "helpers") not in sys.path:  # tests/helpers/ (for `python -m tests.golden.regen`)
    sys.path.insert(0, str(HERE.parent / "helpers"))

from equivalence import guest_state  # noqa: E402

from vmkit import guests  # noqa: E402
from vmkit.vmm import CostModel  # noqa: E402

__all__ = ["MONITORS", "PARAMS", "record", "load", "path_of", "diff", "FORMAT"]

#: bump when the recorded fields change (then regenerate)
FORMAT = 1

MONITORS = ("native", "te", "bt", "hw", "hw-shadow", "pv")

#: small parameters: the whole file takes seconds to make; frozen here (not shared with other
#: tests) so that the golden file changes only when a guest or a monitor does
PARAMS = {"callret": {"iterations": 20, "depth": 20}, "compute": {"iterations": 3000},
          "ctxswitch": {"iterations": 40, "processes": 3}, "diskio": {"kb": 4, "batch": 4},
          "divzero": {"iterations": 30}, "forkwait": {"iterations": 5, "heap": 2},
          "io": {"bytes": 512, "chunk": 32},
          "kcallret": {"iterations": 20, "depth": 20}, "kpgfault": {"iterations": 20},
          "kptemod": {"iterations": 20},
          "pagefault": {"pages": 24},
          "ptemod": {"iterations": 40}, "selfmod": {"iterations": 400},
          "syscall": {"iterations": 200}, "tlbwalk": {"pages": 16, "passes": 2}}
TIMER = 700                 # guest instructions between timer ticks: many ticks, in blocks too
MAX_STEPS = 150_000         # nonvirt-popf never ends under te and pv: it stops here
MULTI = ("syscall", "ctxswitch")   # the several-VMs case
ROUNDTRIP = ("tlbwalk", 6_000)     # the snapshot/restore case: guest, steps before the snapshot
COSTS = {"default": CostModel(), "p4-2006": CostModel.preset("p4-2006")}


def path_of(monitor: str) -> Path:
    return HERE / f"{monitor}.json"


def _make(monitor: str, *images):
    """A monitor over ``images`` (``hw-shadow`` is HardwareAssisted with ept=False)."""
    return _make_kw(monitor, images)


def _build(name: str, monitor: str):
    """-> (image, None) or (None, reason it cannot run under ``monitor``)."""
    s = guests.spec(name)
    pv = monitor == "pv"
    if s.paravirtual_only and not pv:
        return None, "a demonstration of the paravirtual interface: runs only under pv"
    params = {k: v for k, v in PARAMS.get(name, {}).items() if k in s.params}
    return guests.build(name, paravirtual=pv, timer_period=TIMER, **params), None


def _plain(v):
    if isinstance(v, dict):        # Counter included
        return {str(k): _plain(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


def _memory(vm) -> bytes:
    return vm.memory() if hasattr(vm, "memory") else bytes(vm.machine.mem)


def _ticks(vm) -> dict:
    devices = getattr(vm, "devices", None) or vm.machine.dev
    out = {"expired": devices.ticks}
    if hasattr(vm, "tick_steps"):
        out["delivered"] = len(vm.tick_steps)
    return out


def _observe(mon, result) -> dict:
    """Everything the golden file keeps of a monitor after a run."""
    counts = mon.event_counts()
    cycles = {}
    for label, model in COSTS.items():
        priced = model.price(counts)
        cycles[label] = {"total": sum(priced.values()), "by_category": priced}
    vms = []
    for vm in mon.vms:
        r = vm.result
        vms.append({
            "console": vm.console,
            "result": None if r is None else [r.reason, r.steps, r.detail or ""],
            "state": guest_state(vm.vcpu),
            "memory_sha256": hashlib.sha256(_memory(vm)).hexdigest(),
            "ticks": _ticks(vm),
        })
    return _plain({
        "result": [result.reason, result.steps, result.detail or ""],
        "stats": mon.stats,
        "events": Counter(mon.trace.counts),
        "event_counts": counts,
        "cycles": cycles,
        "vms": vms,
        "refused_io": getattr(mon, "refused_io", None),
    })


def _counters(mon) -> dict:
    return _plain({"stats": mon.stats, "cycles": sum(mon.cycles.values())})


def _variant_assigned_disk(monitor):
    """Two VMs running diskio; VM 0 owns the disk (direct assignment), VM 1 is refused."""
    return _make_kw(monitor, [_build("diskio", monitor)[0], _build("diskio", monitor)[0]],
                    assign={0: ["disk"]})


def _variant_machine_timer(monitor):
    """Two VMs whose timers count machine time, short slices (the schedulers' clocks)."""
    pv = monitor == "pv"
    return _make_kw(monitor, [guests.build("syscall", paravirtual=pv, iterations=100),
                              guests.build("compute", paravirtual=pv, iterations=2000)],
                    machine_timer=True, slice=500)


def _variant_small_cache(monitor):
    """bt with a translation cache of 16 blocks under LRU: evictions."""
    from vmkit.vmm.bt import LRU
    return _make_kw(monitor, [_build("ctxswitch", monitor)[0]], tc_size=16, policy=LRU())


def _variant_flush_when_full(monitor):
    """bt with 16 blocks, flushed whole when full (the default policy)."""
    return _make_kw(monitor, [_build("selfmod", monitor)[0]], tc_size=16)


def _variant_static(monitor):
    """bt translating the kernel ahead of time, and adapting hot faulting instructions."""
    return _make_kw(monitor, [_build("ptemod", monitor)[0]], static=True, adapt_after=2)


def _variant_lazy_ept(monitor):
    """hw filling the EPT on violations instead of at boot."""
    return _make_kw(monitor, [_build("pagefault", monitor)[0]], lazy_ept=True)


#: monitor-specific cases: name -> (monitors, make(monitor) -> monitor)
VARIANTS = {
    "assigned-disk": (("te", "hw", "hw-shadow"), _variant_assigned_disk),
    "machine-timer": (("te", "bt", "hw", "hw-shadow", "pv"), _variant_machine_timer),
    "small-cache": (("bt",), _variant_small_cache),
    "flush-when-full": (("bt",), _variant_flush_when_full),
    "static": (("bt",), _variant_static),
    "lazy-ept": (("hw",), _variant_lazy_ept),
}


def _make_kw(monitor: str, images, **kw):
    from vmkit.vmm import MONITORS as CLASSES
    if monitor == "hw-shadow":
        return CLASSES["hw"](*images, ept=False, **kw)
    return CLASSES[monitor](*images, **kw)


def record_case(monitor: str, case: str) -> dict:
    """One case of ``monitor``: a guest name, ``"multi"``, ``"roundtrip"`` or a VARIANTS name."""
    if case in VARIANTS:
        mon = VARIANTS[case][1](monitor)
        return _observe(mon, mon.run(max_steps=2 * MAX_STEPS))
    if case == "multi":
        if monitor == "native":
            return {"skipped": "Native runs one guest: multiplexing VMs is a monitor's job"}
        images = [_build(n, monitor)[0] for n in MULTI]
        mon = _make(monitor, *images)
        return _observe(mon, mon.run(max_steps=2 * MAX_STEPS))
    if case == "roundtrip":
        name, first = ROUNDTRIP
        image, _ = _build(name, monitor)
        mon = _make(monitor, image)
        mon.run(max_steps=first)
        snap = mon.snapshot()
        at_snapshot = _counters(mon)
        straight = _observe(mon, mon.run(max_steps=MAX_STEPS))
        mon.restore(snap)
        restored = _counters(mon)
        again = _observe(mon, mon.run(max_steps=MAX_STEPS))
        return {"at_snapshot": at_snapshot, "after_restore": restored, "end": straight,
                "end_after_restore": again}
    image, why = _build(case, monitor)
    if image is None:
        return {"skipped": why}
    mon = _make(monitor, image)
    return _observe(mon, mon.run(max_steps=MAX_STEPS))


def cases(monitor: str) -> list[str]:
    return (list(guests.names()) + ["multi", "roundtrip"]
            + [v for v, (mons, _) in VARIANTS.items() if monitor in mons])


def record(monitor: str) -> dict:
    """The golden record of one monitor (what ``tests/golden/<monitor>.json`` holds)."""
    return {"format": FORMAT, "monitor": monitor, "timer_period": TIMER,
            "max_steps": MAX_STEPS, "params": PARAMS,
            "cases": {c: record_case(monitor, c) for c in cases(monitor)}}


def dumps(rec: dict) -> str:
    return json.dumps(rec, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def load(monitor: str) -> dict:
    return json.loads(path_of(monitor).read_text(encoding="utf-8"))


def diff(old, new, path: str = "", limit: int = 25) -> list[str]:
    """Where two records differ: ``["cases.syscall.stats.traps: 412 -> 413", ...]``."""
    out: list[str] = []

    def walk(a, b, p):
        if len(out) >= limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                q = f"{p}.{k}" if p else str(k)
                if k not in a:
                    out.append(f"{q}: new {_short(b[k])}")
                elif k not in b:
                    out.append(f"{q}: gone (was {_short(a[k])})")
                else:
                    walk(a[k], b[k], q)
        elif a != b:
            out.append(f"{p}: {_short(a)} -> {_short(b)}")

    walk(old, new, path)
    return out


def _short(v) -> str:
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= 120 else s[:117] + "..."


# ---- the tests (tests/golden/test_golden_<monitor>.py) ----------------------------------------------

def golden_tests(monitor: str):
    """The test functions of one monitor's golden file: one test per case, and one that the
    file covers every guest there is."""
    import pytest

    stored = load(monitor)

    @pytest.mark.parametrize("case", cases(monitor))
    def test_case(case):
        if case not in stored["cases"]:
            pytest.fail(f"{case!r} is not in {path_of(monitor).name}: a new guest? regenerate "
                        f"with `python -m tests.golden.regen {monitor}` in a commit that says why")
        got = record_case(monitor, case)
        changes = diff(stored["cases"][case], got)
        assert not changes, (
            f"{monitor} / {case} differs from the golden file {path_of(monitor).name}:\n  "
            + "\n  ".join(changes)
            + f"\nIf the change is meant, regenerate (`python -m tests.golden.regen {monitor}`)"
              f" in a commit that says why.")

    def test_file_matches_the_recorder():
        assert stored["format"] == FORMAT and stored["monitor"] == monitor
        assert (stored["timer_period"], stored["max_steps"], stored["params"]) == \
            (TIMER, MAX_STEPS, json.loads(json.dumps(PARAMS)))
        assert sorted(stored["cases"]) == sorted(cases(monitor)), "regenerate the golden file"

    def test_restore_brings_back_what_the_snapshot_saw():
        """The round trip: after restore(), the counters and cycles are those at the snapshot,
        and running on gives the same end (bt: its translation cache starts empty again, so
        only the guest's side is the same)."""
        rt = stored["cases"]["roundtrip"]
        before, after = rt["at_snapshot"], rt["after_restore"]
        if monitor == "bt":     # a gauge, not a counter: restore() empties the cache
            before = {**before, "stats": {**before["stats"], "tc_blocks": 0}}
        assert diff(before, after) == []
        end, again = rt["end"], rt["end_after_restore"]
        assert end["vms"] == again["vms"] and end["events"].keys() == again["events"].keys()
        if monitor != "bt":
            assert diff(end, again) == []

    return test_case, test_file_matches_the_recorder, test_restore_brings_back_what_the_snapshot_saw
