"""What instructor test cells call: expected values computed in a fresh Python process.

A student's cells run in the same kernel as the tests, and could patch the kit (``Native.run``,
``vmkit.classify`` ...) so that a test compares a wrong answer with a wrong expectation.
:func:`fresh` therefore runs the expectation in a new interpreter (``python -I``: no current
directory, no user site, no ``PYTHON*`` variables), which imports an unpatched kit. The
subprocess functions are bound when this module is imported, in the locked setup cell, before
any student code runs.

A kernel is still the student's, and this module could be patched in it too. So hidden tests
also hand each answer to the grader with :func:`submit` (one marked line of output), and the
grader checks it *outside* the kernel with :func:`verify`, against values it computes itself in
a fresh process for the student's variant: a forged line can only report the right answer.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap

__all__ = ["fresh", "same", "handler_source", "expected", "te_equivalence", "submit",
           "answers_in", "verify", "ANSWER_MARK"]

#: the start of the output line by which :func:`submit` hands an answer to the grader
ANSWER_MARK = "@@vmkit-answer "

_run = subprocess.run
_executable = sys.executable
_dumps, _loads = json.dumps, json.loads
_getsource, _dedent = inspect.getsource, textwrap.dedent


def fresh(code: str, timeout: float = 120, *, env=None, cwd=None, preexec_fn=None,
          sandbox=None, **inputs):
    """Run ``code`` in a new interpreter and return its ``result`` (JSON-serializable).

    ``inputs`` are given to the code as global names (JSON values); ``env``, ``cwd`` and
    ``preexec_fn`` go to the process (the grader's limits when it runs a student's code).
    With ``sandbox`` (a :class:`vmkit.homework.sandbox.Sandbox`: the grader running a
    student's code) the process runs in it, with the allow-listed part of ``env``, in its
    scratch folder and within its limits (``cwd`` and ``preexec_fn`` are not used)."""
    script = ("import json, sys\n"
              "globals().update(json.loads(sys.stdin.read()))\n"
              f"{code}\n"
              "sys.stdout.write('\\n@@RESULT@@' + json.dumps(result))\n")
    argv = [_executable, "-I", "-c", script]
    if sandbox is not None:
        proc = sandbox.popen(argv, env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(_dumps(inputs), timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        proc = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    else:
        proc = _run(argv, input=_dumps(inputs), capture_output=True, text=True,
                    timeout=timeout, env=env, cwd=cwd, preexec_fn=preexec_fn)
    if proc.returncode != 0 or "@@RESULT@@" not in proc.stdout:
        raise RuntimeError(f"expected values could not be computed:\n{proc.stderr[-2000:]}")
    return _loads(proc.stdout.rsplit("@@RESULT@@", 1)[1])


def handler_source(func) -> str:
    """The source of a function defined in a notebook cell (to rerun it in :func:`fresh`)."""
    return _dedent(_getsource(func))


def same(answer, expected) -> bool:
    """Whether ``answer`` equals ``expected`` as JSON: an object whose ``__eq__`` says yes to
    everything (an ``int`` subclass, say) is compared by its value, not by its ``__eq__``."""
    try:
        return _dumps(answer, sort_keys=True) == _dumps(expected, sort_keys=True)
    except (TypeError, ValueError):
        return False


# --- each assignment's expectations (run by fresh(); the variant comes from the environment) ---

_HW01 = '''
import struct
from vmkit import guests
from vmkit.vmm import Native
from vmkit.homework.variant import student_params
P = student_params("hw01-rings-and-traps")
vm = Native(guests.build(P["guest"], iterations=P["iterations"]))
frames = []
def on_interrupt(ev):
    if ev.vector == 0x80 and not frames:
        frames.append(dict(zip(["eip", "cs", "eflags", "esp", "ss"],
                               struct.unpack("<5I", vm.machine.read(vm.cpu.esp, 20)))))
vm.on("interrupt", on_interrupt)
vm.run(max_steps=1_000_000)
result = {"ring_transitions": vm.trace.counts["ring"],
          "vectors": sorted({e.vector for e in vm.trace.of("interrupt")}),
          "frame": frames[0]}
'''

_HW02 = '''
from vmkit import guests
from vmkit.vmm import Native, TrapAndEmulate
from vmkit.isa.faults import Fault
from vmkit.isa.decode import Imm, Reg
from vmkit.machine.cpu import FLAGS_DEFINED_MASK
from vmkit.homework.variant import student_params
P = student_params("hw02-trap-and-emulate")
def state(vm):
    c = vm.vcpu
    return {"console": vm.console, "regs": list(c.regs), "eip": c.eip,
            "eflags": c.eflags & FLAGS_DEFINED_MASK, "cpl": c.cpl}
ns = {"Fault": Fault, "Imm": Imm, "Reg": Reg}
for src in sources.values():
    exec(src, ns)
result = {}
for guest, params in [(P["guest"], P["params"])] + [(g, {}) for g in extra_guests]:
    img = guests.build(guest, **params)
    ref = Native(img)
    ref.run(max_steps=5_000_000)
    te = TrapAndEmulate(img)
    for mnemonic in sources:
        te.emulate[mnemonic] = ns["emulate_" + mnemonic]
    te.run(max_steps=5_000_000)
    result[guest] = {"native": state(ref), "te": state(te),
                     "emulated": {k: v for k, v in te.stats["emulated"].items()}}
'''

_HW03 = '''
import vmkit
from vmkit.homework.variant import student_params
P = student_params("hw03-popek-goldberg")
def kind(instr):
    c = vmkit.classify(instr)
    return "privileged" if c.privileged else ("sensitive" if c.sensitive else "innocuous")
result = {"predictions": {i: kind(i) for i in P["predict"]},
          "violators": sorted(i for i in P["candidates"] if kind(i) == "sensitive")}
'''

_HW04 = '''
from vmkit import guests
from vmkit.vmm import BinaryTranslation
from vmkit.vmm.bt import LRU, FIFO, FlushWhenFull
from vmkit.homework.variant import student_params
P = student_params("hw04-translation-cache")
def rate(threshold, policy):
    vm = BinaryTranslation(guests.build(P["guest"], **P["params"]), threshold=threshold,
                           tc_size=P["tc_size"], policy=policy())
    vm.run(max_steps=2_000_000)
    return vm.stats["tc_hits"] / vm.stats["tc_lookups"]
result = {"hit_rate": rate(P["threshold"], LRU),
          "rates": {p.__name__: rate(P["threshold"], p) for p in (LRU, FIFO, FlushWhenFull)},
          "sweep": [[t, rate(t, LRU)] for t in P["thresholds"]]}
'''

_HW05 = '''
from collections import Counter
from vmkit import guests
from vmkit.vmm import HardwareAssisted
from vmkit.homework.variant import student_params
P = student_params("hw05-shadow-vs-nested")
ept = HardwareAssisted(guests.build(P["guest"], **P["params"]), ept=True)
walks = Counter()
ept.on("tlb_miss", lambda ev: walks.update([ev.references]))
ept.run(max_steps=2_000_000)
shadow = HardwareAssisted(guests.build(P["guest"], **P["params"]), ept=False)
shadow.run(max_steps=2_000_000)
result = {"walk_refs": [n * m + n + m for n, m in P["levels"]],
          "walks": sorted([k, v] for k, v in walks.items()),
          "exits": {"ept": sum(ept.stats["vm_exits"].values()),
                    "shadow": sum(shadow.stats["vm_exits"].values()),
                    "hidden_page_faults": shadow.stats["hidden_page_faults"]}}
'''

_HW06 = '''
from vmkit.vmm.compare import per_operation
from vmkit.homework.variant import student_params
P = student_params("hw06-cost-analysis")
per_op = {p: per_operation(P["guest"], costs=p)[0] for p in ("p4-2006", "modern-2020")}
def winners(cycles):
    best = min(v for k, v in cycles.items() if k != "native")
    return sorted(k for k, v in cycles.items() if k != "native" and v == best)
result = {"per_op": per_op, "winners": {p: winners(c) for p, c in per_op.items()}}
'''

_EXPECTED = {"hw01-rings-and-traps": _HW01, "hw03-popek-goldberg": _HW03,
             "hw04-translation-cache": _HW04, "hw05-shadow-vs-nested": _HW05,
             "hw06-cost-analysis": _HW06}


def expected(assignment: str):
    """The answers of ``assignment`` for this student's variant, from a fresh process."""
    return fresh(_EXPECTED[assignment])


def te_equivalence(handlers: dict, extra_guests=()) -> dict:
    """Run this student's hw02 guest (and ``extra_guests``) under Native and under
    TrapAndEmulate with ``handlers`` (mnemonic -> function ``emulate_<mnemonic>``), each
    re-created from its source in a fresh process; guest -> {"native", "te", "emulated"}."""
    sources = {m: handler_source(f) for m, f in handlers.items()}
    return fresh(_HW02, sources=sources, extra_guests=list(extra_guests))


def submit(name: str, value) -> None:
    """Hand ``value`` (JSON) to the grader as the answer ``name`` (a marked output line)."""
    sys.stdout.write(ANSWER_MARK + _dumps({"name": name, "value": value}, sort_keys=True) + "\n")


def answers_in(outputs) -> dict:
    """name -> value of every answer that :func:`submit` wrote into a cell's ``outputs``."""
    found = {}
    for out in outputs:
        if out.get("output_type") != "stream" or out.get("name") != "stdout":
            continue
        text = out.get("text", "")
        for line in ("".join(text) if isinstance(text, list) else text).splitlines():
            if line.startswith(ANSWER_MARK):
                try:
                    item = _loads(line[len(ANSWER_MARK):])
                    found[item["name"]] = item["value"]
                except (ValueError, KeyError, TypeError):
                    continue
    return found


def verify(assignment: str, answers: dict, student: str, **run) -> dict:
    """Check submitted ``answers`` (name -> value) of ``student`` outside the kernel: name ->
    True/False. hw01/hw03-hw06 answers are compared as JSON with :func:`expected`'s values for the
    student's variant; hw02's (``handlers:<mnemonics>``, a dict of handler sources) are run
    under TrapAndEmulate next to Native. ``run`` goes to :func:`fresh` (the grader's env with
    the student's id, a scratch cwd, limits)."""
    import os

    env = {**(run.pop("env", None) or os.environ), "VMKIT_STUDENT_ID": student}
    if assignment == "hw02-trap-and-emulate":
        out = {}
        for name, sources in answers.items():
            extra = ["userpriv"] if "cli" in sources else []
            try:
                runs = fresh(_HW02, env=env, sources=dict(sources), extra_guests=extra, **run)
            except Exception:
                out[name] = False
                continue
            out[name] = all(r["te"] == r["native"] and
                            all(r["emulated"].get(m, 0) > 0 for m in sources if m == "out")
                            for r in runs.values())
        return out
    want = fresh(_EXPECTED[assignment], env=env, **run)
    return {name: name in want and same(value, want[name]) for name, value in answers.items()}
