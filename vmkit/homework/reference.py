"""The grader's side of the hidden tests: reference answers, read only by the grader.

The reference answers are not in the package a student imports. They live with the
instructor's solutions, one Python file per assignment in ``<source>/reference/``::

    solutions/reference/hw01-rings-and-traps.py    def expected(P) -> {answer name: value}
    solutions/reference/hw02-trap-and-emulate.py   def dev_in(dev, offset, size) / dev_out(...)

where ``<source>`` is the folder given to ``vmkit grade --source`` (by default the checkout's
``solutions/``) and ``P`` the student's variant (:func:`vmkit.homework.variant.student_params`).

Hidden tests only hand answers over (:func:`vmkit.homework.checks.submit`); the grader checks
them here, outside the student's kernel: :func:`verify` compares each answer, as JSON, with
the value that the reference computes in a fresh process of the grader for the student's
variant. hw02's answers are handler sources: :func:`check_device` runs the guest and the VMM
in a process of the grader's (outside the sandbox; this package never imports the simulator
itself) and calls the student's handler, which runs in another process (in the submission's
sandbox), through a narrow interface over pipes: the grader's VMM sends the handler's inputs
(the device state, the port offset, the size, the value), the handler's process sends back the
changed state (and the value read), which the grader validates before applying. Nothing the
handler's process prints is trusted.

For a course that grades with nbgrader itself, ``VMKIT_REFERENCE`` (the folder
``solutions/reference``, absolute) makes :func:`vmkit.homework.checks.submit` check the answer
in the kernel as well, so that nbgrader's autograde scores it (without any of vmkit's
protection: nbgrader runs the student's code in the instructor's account).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["REFERENCE_DIR", "ENV_VAR", "reference_file", "expected", "same", "verify",
           "check_device", "DeviceProcess", "HandlerError", "ReferenceError", "EXTRA_DATA"]

#: the folder of reference files inside the instructor's source folder
REFERENCE_DIR = "reference"
#: the environment variable that names the reference folder for nbgrader's autograde
ENV_VAR = "VMKIT_REFERENCE"
#: hw02: the answer names (handler names) and which handler each question checks
DEVICE_HANDLERS = ("dev_in", "dev_out")
_MARK = "@@vmkit-result@@"


class ReferenceError(Exception):
    """The reference answers could not be read or computed (the message says where)."""


def reference_file(folder, assignment: str) -> Path:
    """``folder/<assignment>.py`` (``folder`` is a reference folder), or ReferenceError."""
    path = Path(folder) / f"{assignment}.py"
    if not path.is_file():
        raise ReferenceError(f"{path}: no reference answers for {assignment!r}")
    return path


def same(answer, expected) -> bool:
    """Whether ``answer`` equals ``expected`` as JSON (an object whose ``__eq__`` says yes to
    everything is compared by its JSON form, not by its ``__eq__``)."""
    try:
        return json.dumps(answer, sort_keys=True) == json.dumps(expected, sort_keys=True)
    except (TypeError, ValueError):
        return False


_EXPECTED = f"""
import json, runpy, sys
args = json.loads(sys.stdin.read())
from vmkit.homework.variant import student_params
P = student_params(args["assignment"], args["student"])
result = runpy.run_path(args["path"])["expected"](P)
sys.stdout.write("\\n{_MARK}" + json.dumps(result))
"""


def expected(folder, assignment: str, student: str, timeout: float = 300) -> dict:
    """The reference answers of ``assignment`` for ``student``'s variant: the reference file's
    ``expected(P)``, run in a fresh process of the grader (never in the student's kernel)."""
    path = reference_file(folder, assignment)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMKIT_")}
    env["PYTHONHASHSEED"] = "0"
    with tempfile.TemporaryDirectory(prefix="vmkit-reference-") as cwd:
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _EXPECTED], cwd=cwd, env=env, capture_output=True,
                text=True, timeout=timeout,
                input=json.dumps({"assignment": assignment, "student": student,
                                  "path": str(path.resolve())}))
        except subprocess.TimeoutExpired:
            raise ReferenceError(f"{path}: computing the reference took over {timeout} s") \
                from None
    if proc.returncode != 0 or _MARK not in proc.stdout:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ReferenceError(f"{path}: the reference failed ({last[:300]})")
    return json.loads(proc.stdout.rsplit(_MARK, 1)[1])


# --- hw02: the student's device handlers, run in another process -----------------------------

#: the handlers' process: reads requests (one JSON line each) on stdin, answers on the stdout
#: it had at start (the student's prints go to stderr), one JSON line per request
_CHILD = r"""
import json, os, sys
reply = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(2, 1)
sys.stdout = sys.stderr
first = json.loads(sys.stdin.readline())
ns = {"P": first["P"], "__name__": "__handlers__"}
try:
    for src in first["sources"]:
        exec(compile(src, "<your handler>", "exec"), ns)
    reply.write(json.dumps({"ok": True}) + "\n")
except BaseException as e:
    reply.write(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"[:400]}) + "\n")
    raise SystemExit(0)
reply.flush()
for line in sys.stdin:
    req = json.loads(line)
    dev = req["dev"]
    try:
        value = ns[req["fn"]](dev, *req["args"])
        out = {"ok": True, "dev": dev, "value": value if req["fn"] == "dev_in" else None}
        text = json.dumps(out)
    except BaseException as e:
        text = json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"[:400]})
    reply.write(text + "\n")
    reply.flush()
"""


class HandlerError(Exception):
    """The student's handler failed, timed out or answered what the grader cannot accept."""


class DeviceProcess:
    """The client end of the pipes to the student's handler process (:data:`_CHILD`): one
    JSON line a request, one a reply, each within ``deadline`` (``time.monotonic()``)."""

    MAX_LINE = 64 * 1024

    def __init__(self, write_fd: int, read_fd: int, sources: list[str], P: dict,
                 deadline: float):
        self.deadline = deadline
        self._w = os.fdopen(write_fd, "wb", buffering=0)
        self._r = read_fd
        self._buf = b""
        self._send({"sources": sources, "P": P})
        first = self._receive()
        if not first.get("ok"):
            raise HandlerError(f"your handler's cell does not run: {first.get('error')}")

    def _send(self, obj) -> None:
        try:
            self._w.write((json.dumps(obj) + "\n").encode())
        except (BrokenPipeError, OSError):
            raise HandlerError("the handler's process ended") from None

    def _receive(self) -> dict:
        while b"\n" not in self._buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise HandlerError("the handler took too long")
            ready, _, _ = select.select([self._r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._r, 65536)
            if not chunk:
                raise HandlerError("the handler's process ended")
            self._buf += chunk
            if len(self._buf) > self.MAX_LINE and b"\n" not in self._buf:
                raise HandlerError("the handler's answer is too long")
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            obj = json.loads(line)
        except ValueError:
            raise HandlerError("the handler's process answered something unreadable") \
                from None
        if not isinstance(obj, dict):
            raise HandlerError("the handler's process answered something unreadable")
        return obj

    def call(self, fn: str, dev: dict, *args):
        """(new state, value) of ``fn(dev, *args)`` in the handler's process (unvalidated)."""
        self._send({"fn": fn, "dev": dev, "args": list(args)})
        out = self._receive()
        if not out.get("ok"):
            raise HandlerError(str(out.get("error"))[:400])
        return out.get("dev"), out.get("value")


#: hw02: a second data set beside the student's own (every byte value class: 0, 0xff, ...)
EXTRA_DATA = [0x00, 0xFF, 0x80, 0x7F, 0x01, 0xFE, 0x55, 0xAA, 0x10, 0x00, 0xFF]

#: the grader's VMM, in a process of its own (trusted: the homework package itself never
#: imports the simulator): runs the driver under TrapAndEmulate with the reference device,
#: then with the student's handler ``name`` (over the inherited pipe fds) in place of the
#: reference's, and prints the verdict as JSON
_DEVICE_CHECK = f"""
import json, runpy, sys, time
from vmkit.homework.reference import DeviceProcess, HandlerError, EXTRA_DATA
from vmkit.vmm import devices
args = json.loads(sys.stdin.read())
P, name = args["P"], args["name"]
ref = runpy.run_path(args["reference"], init_globals={{"P": P}})

def remote(proc, fn):
    def handler(dev, offset, size, *value):
        new, v = proc.call(fn, dict(dev), offset, size, *value)
        where = f"{{fn}}(dev, {{offset}}, {{size}}{{', ' + hex(value[0]) if value else ''}})"
        devices.check_state(new, where)
        if fn == "dev_in":
            devices.check_value(v, size, where)
        dev.clear()
        dev.update(new)
        return v
    return handler

try:
    proc = DeviceProcess(args["write_fd"], args["read_fd"], [args["source"]], P,
                         time.monotonic() + args["timeout"])
    handlers = {{"dev_in": ref["dev_in"], "dev_out": ref["dev_out"]}}
    handlers[name] = remote(proc, name)
    verdict = [True, ""]
    for data in (P["data"], EXTRA_DATA):
        want, want_dev = devices.run(P, ref["dev_in"], ref["dev_out"], data)
        got, got_dev = devices.run(P, handlers["dev_in"], handlers["dev_out"], data)
        res = got.vms[0].result
        if res is None or res.reason != "poweroff":
            verdict = [False, devices.explain(got)]
            break
        if got.console != want.console or got_dev != want_dev:
            verdict = [False, "the guest read other values than the device's"]
            break
except HandlerError as e:
    verdict = [False, str(e)]
sys.stdout.write("\\n{_MARK}" + json.dumps(verdict))
"""


def check_device(folder, answers: dict, student: str, popen=None, env=None,
                 timeout: float = 60) -> dict:
    """hw02: answer name (``dev_in``/``dev_out``) -> (passed, message). Each handler runs in
    a process of its own started by ``popen`` (the submission's sandbox), and is called by the
    grader's VMM (another process, the grader's own) with the reference's other handler, on
    the student's driver and on :data:`EXTRA_DATA`; the guest's console and the device's
    final state are compared with a run of the reference alone."""
    from vmkit.homework.variant import student_params

    P = student_params("hw02-trap-and-emulate", student)
    ref = reference_file(folder, "hw02-trap-and-emulate")
    popen = popen or subprocess.Popen
    env = env if env is not None else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    grader_env = {k: v for k, v in os.environ.items() if not k.startswith("VMKIT_")}
    out = {}
    for name, source in answers.items():
        if name not in DEVICE_HANDLERS or not isinstance(source, str):
            out[name] = (False, "not an answer of this assignment")
            continue
        child = popen([sys.executable, "-I", "-c", _CHILD], env=env, stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            w, r = child.stdin.fileno(), child.stdout.fileno()
            with tempfile.TemporaryDirectory(prefix="vmkit-vmm-") as cwd:
                proc = subprocess.run(
                    [sys.executable, "-c", _DEVICE_CHECK], cwd=cwd, env=grader_env,
                    pass_fds=(w, r), capture_output=True, text=True, timeout=timeout + 30,
                    input=json.dumps({"P": P, "name": name, "source": source,
                                      "reference": str(ref.resolve()), "write_fd": w,
                                      "read_fd": r, "timeout": timeout}))
            if proc.returncode != 0 or _MARK not in proc.stdout:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise ReferenceError(f"the grader's VMM failed ({last[:300]})")
            ok, why = json.loads(proc.stdout.rsplit(_MARK, 1)[1])
            out[name] = (bool(ok), str(why))
        except subprocess.TimeoutExpired:
            out[name] = (False, "the handler took too long")
        finally:
            try:
                child.kill()
                child.wait(timeout=5)
            except Exception:
                pass
    return out


def verify(folder, assignment: str, answers: dict, student: str, **run) -> dict:
    """Check the handed-over ``answers`` (name -> value) of ``student`` outside the kernel:
    name -> (passed, message). ``run``: ``popen``, ``env`` and ``timeout`` for hw02's handler
    process (the sandbox's), ``timeout`` for the reference's process."""
    if assignment == "hw02-trap-and-emulate":
        return check_device(folder, answers, student, **run)
    want = expected(folder, assignment, student, timeout=run.get("timeout", 300))
    return {name: (name in want and same(value, want[name]), "")
            for name, value in answers.items()}
