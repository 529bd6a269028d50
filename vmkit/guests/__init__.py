"""Guest software: the mini kernel and user programs (commented assembly in this folder) and the
builder that assembles and links them into guest images.

>>> from vmkit import guests
>>> guests.names()                       # doctest: +ELLIPSIS
['callret', 'compute', ...]
>>> image = guests.build("syscall", iterations=1000)

A guest image is the same bytes under every monitor. Each guest declares its parameters with
defaults and a Python function computing the result line the guest must print, which the tests
compare with the console.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
from dataclasses import dataclass, field
from typing import Callable

from vmkit.errors import GuestError

__all__ = ["GuestImage", "GuestSpec", "names", "build", "build_program", "spec", "GUEST_DIR",
           "KERNEL_BASE", "USER_BASE", "USER_PHYS", "USER_SLOT", "MEMORY_SIZE"]

GUEST_DIR = os.path.dirname(os.path.abspath(__file__))
KERNEL_BASE = 0x1000          # the kernel is loaded (and linked) here
USER_BASE = 0x00400000        # user programs are linked here (virtual)
USER_PHYS = 0x00100000        # the builder places program i at USER_PHYS + i * USER_SLOT
USER_SLOT = 0x00040000        # 256 KiB per program
MAX_PROCS = 4
TIMER_CLOCKS = ("guest", "machine")   # what GuestImage.timer_clock may be
MEMORY_SIZE = 4 << 20
DEFAULT_TIMER_PERIOD = 200_000
"""Guest instructions between two timer interrupts. Linux with HZ=1000 on a 1 GHz CPU retiring
about one instruction a cycle ticks every ~1,000,000 instructions; the kit ticks five times as
often, so that preemption shows within runs of 10^5-10^6 instructions, while a tick stays rare
next to the work between ticks: handling one costs about 60 guest instructions natively and two
or three traps or VM exits under a monitor (a few thousand cycles with the p4-2006 costs), so a
CPU-bound guest runs within a few percent of native cycles under every monitor, as Adams &
Agesen (ASPLOS 2006) report for CPU-bound work. Preemption experiments pass a smaller
``timer_period``."""


@dataclass
class GuestImage:
    """Everything a monitor needs to boot a guest: the bytes to load at which physical addresses,
    where to start, how much memory, the input device's bytes, and the programs (for listings)."""
    name: str
    params: dict
    memory_size: int
    loads: list                 # [(physical address, bytes)]
    entry: int
    programs: dict              # program name -> vmkit Program (kernel first)
    input: bytes = b""
    expected: str | None = None  # the console text the guest must produce (None: not checked)
    paravirtual: bool = False
    description: str = ""
    kernel: bool = True         # False for a bare-metal program (vmkit run FILE.s)
    processes: list = field(default_factory=list)   # program name of each process
    #: the clock the guest's timer counts: "guest" (its own instructions; the default, which
    #: keeps equivalence) or "machine" (machine time: the cost model's cycles across all VMs,
    #: descheduled time included; DESIGN.md "Two clocks"). Multi-VM monitors honour it per VM,
    #: as their ``machine_timer=True`` does for every VM; Native (one VM, no VMM, nothing to
    #: share) ignores it and stays the reference (vmkit/vmm/sched.py, "Timer clocks").
    timer_clock: str = "guest"

    @property
    def symbols(self) -> dict:
        """Symbols of the kernel (or of the bare program)."""
        first = next(iter(self.programs.values()))
        return first.symbols

    def line_of(self, address: int, user: bool | None = None):
        """(file, line) of a guest address: kernel addresses below USER_BASE, else the user
        program (the first process's when several share the address range)."""
        progs = list(self.programs.values())
        if not self.kernel:
            return progs[0].line_of(address)
        if address < USER_BASE and user is not True:
            return progs[0].line_of(address)
        for p in progs[1:]:
            r = p.line_of(address)
            if r is not None:
                return r
        return None

    def program_for(self, address: int, process: int = 0):
        """The Program holding a guest-virtual address (kernel or the process's program)."""
        progs = list(self.programs.values())
        if not self.kernel or address < USER_BASE:
            return progs[0]
        name = self.processes[process] if process < len(self.processes) else self.processes[0]
        return self.programs.get(name, progs[0])

    def digest(self) -> str:
        h = hashlib.sha256()
        for a, b in self.loads:
            h.update(a.to_bytes(4, "little"))
            h.update(b)
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        p = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"<GuestImage {self.name}({p}) {sum(len(b) for _, b in self.loads)} bytes>"


@dataclass
class GuestSpec:
    """How to build one named guest: which programs run as processes, the parameters with their
    defaults and allowed ranges, the expected output, and the input bytes."""
    name: str
    description: str
    programs: Callable[[dict], list]           # params -> list of program names (processes)
    params: dict                               # name -> default
    ranges: dict                               # name -> (min, max)
    expected: Callable[[dict], str] | None
    constants: Callable[[dict], dict] = lambda p: {}
    input: Callable[[dict], bytes] = lambda p: b""
    kernel_program: str = "kernel"
    #: params -> {include name: source} given to the kernel's assembly (they take precedence
    #: over the files of vmkit/guests; the nonvirt- guests replace boot_hook.s this way)
    kernel_files: Callable[[dict], dict] = lambda p: {}
    #: this guest's default timer period (None: DEFAULT_TIMER_PERIOD), for demonstrations
    #: that need ticks soon
    timer_period: int | None = None
    pv_kernel_files: dict | None = None  # {include name: source} for the paravirtual kernel
    #: a demonstration of the paravirtual interface itself (no native twin)
    paravirtual_only: bool = False
    #: system calls its kernel_files add to the kernel's (syscalls_ext.s, numbered from
    #: SYSCALL_COUNT on; EXTRA_SYSCALLS in config.s)
    extra_syscalls: int = 0


@functools.lru_cache(maxsize=64)
def _lcg_checksum(iterations: int, seed: int) -> int:
    """What compute prints (a Python loop of ``iterations`` steps: 75 ms for the default
    100,000, once a process per parameter value; notebook 08 built compute 16 times)."""
    x, acc = seed & 0xFFFFFFFF, 0
    for _ in range(iterations):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        acc = (acc + (x >> 16)) & 0xFFFFFFFF
    return acc


def _io_input(p: dict) -> bytes:
    return random.Random(p["seed"]).randbytes(p["bytes"])


_SPECS: dict[str, GuestSpec] = {}


def _register(s: GuestSpec) -> None:
    _SPECS[s.name] = s


_register(GuestSpec(
    "hello", "prints a greeting from ring 3 with its pid", lambda p: ["hello"], {}, {},
    lambda p: "Hello from user mode! pid 1\n"))
_register(GuestSpec(
    "userpriv", "a user program tries cli (privileged) and is killed by #GP",
    lambda p: ["userpriv"], {}, {}, None))
_register(GuestSpec(
    "compute", "CPU-bound loop, no system calls", lambda p: ["compute"],
    {"iterations": 100_000, "seed": 1}, {"iterations": (1, 10**8), "seed": (0, 2**32 - 1)},
    lambda p: f"compute: checksum {_lcg_checksum(p['iterations'], p['seed'])}\n",
    lambda p: {"ITERATIONS": p["iterations"], "SEED": p["seed"]}))
_register(GuestSpec(
    "syscall", "N getpid system calls", lambda p: ["syscall"],
    {"iterations": 1000}, {"iterations": (1, 10**7)},
    lambda p: f"syscall: {p['iterations']} getpid calls, pid sum {p['iterations']}\n",
    lambda p: {"ITERATIONS": p["iterations"]}))
_register(GuestSpec(
    "io", "port-I/O heavy: the kernel polls the input device for every byte", lambda p: ["io"],
    {"bytes": 2048, "chunk": 64, "seed": 7}, {"bytes": (1, 1 << 20), "chunk": (1, 4096),
                                              "seed": (0, 2**32 - 1)},
    lambda p: f"io: read {p['bytes']} bytes, sum {sum(_io_input(p))}\n",
    lambda p: {"BYTES": p["bytes"], "CHUNK": p["chunk"]}, _io_input))
_register(GuestSpec(
    "ctxswitch", "processes yielding to each other (and preempted by the timer)",
    lambda p: ["ctxswitch"] * p["processes"],
    {"iterations": 200, "processes": 2}, {"iterations": (1, 10**6), "processes": (1, MAX_PROCS)},
    None,  # the finishing order depends on the schedule: checked by the tests per pid
    lambda p: {"ITERATIONS": p["iterations"]}))
_register(GuestSpec(
    "pagefault", "touches unmapped heap pages; the kernel maps them on demand",
    lambda p: ["pagefault"], {"pages": 64}, {"pages": (1, 448)},
    lambda p: f"pagefault: {p['pages']} pages, sum {p['pages'] * (p['pages'] + 1) // 2}\n",
    lambda p: {"PAGES": p["pages"]}))
_register(GuestSpec(
    "ptemod", "repeated PTE changes with invlpg", lambda p: ["ptemod"],
    {"iterations": 200}, {"iterations": (1, 10**6)},
    lambda p: f"ptemod: PTE changes {p['iterations']}\n",
    lambda p: {"ITERATIONS": p["iterations"]}))
_register(GuestSpec(
    "divzero", "user code divides by zero; the kernel handles #DE and resumes it",
    lambda p: ["divzero"], {"iterations": 100}, {"iterations": (1, 10**6)},
    lambda p: f"divzero: divide errors handled {p['iterations']}\n",
    lambda p: {"ITERATIONS": p["iterations"]}))
_register(GuestSpec(
    "callret", "deep call/ret chains", lambda p: ["callret"],
    {"iterations": 100, "depth": 50}, {"iterations": (1, 10**6), "depth": (1, 400)},
    lambda p: f"callret: total {(p['iterations'] * p['depth'] * (p['depth'] + 1) // 2) & 0xFFFFFFFF}\n",
    lambda p: {"ITERATIONS": p["iterations"], "DEPTH": p["depth"]}))
_register(GuestSpec(
    "kcallret", "deep call/ret chains in the kernel (ring 0), A&A's call/ret",
    lambda p: ["nonvirt_user"], {"iterations": 100, "depth": 50},
    {"iterations": (1, 10**6), "depth": (1, 400)},   # the boot stack is one page
    lambda p: f"kcallret: total {(p['iterations'] * p['depth'] * (p['depth'] + 1) // 2) & 0xFFFFFFFF}\n",
    lambda p: {"ITERATIONS": p["iterations"], "DEPTH": p["depth"]},
    kernel_files=lambda p: {"boot_hook.s": '.include "kcallret.s"\n'}))
_register(GuestSpec(
    "kpgfault", "the kernel takes N true page faults and resumes after each (A&A's pgfault)",
    lambda p: ["nonvirt_user"], {"iterations": 100}, {"iterations": (1, 10**6)},
    lambda p: f"kpgfault: page faults handled {p['iterations']}\n",
    lambda p: {"ITERATIONS": p["iterations"]},
    kernel_files=lambda p: {"boot_hook.s": '.include "kpgfault.s"\n'}))
_register(GuestSpec(
    "kptemod", "the kernel stores a page table entry N x 8 times, no system call (A&A's ptemod)",
    lambda p: ["nonvirt_user"], {"iterations": 100}, {"iterations": (1, 10**6)},
    lambda p: f"kptemod: PTE stores {p['iterations'] * 8}\n",
    lambda p: {"ITERATIONS": p["iterations"]},
    kernel_files=lambda p: {"boot_hook.s": '.include "kptemod.s"\n'}))
_register(GuestSpec(
    "selfmod", "the kernel patches its own code and runs it in a hot loop",
    lambda p: ["selfmod"], {"iterations": 2000}, {"iterations": (2, 10**7)},
    lambda p: f"selfmod: sum {(p['iterations'] // 2) * 3}\n",
    lambda p: {"ITERATIONS": p["iterations"]}))

#: heap pages the forkwait parent touches before it forks: with its program and stack pages,
#: the address space each fork shares copy-on-write (an estimate of a small process's private
#: pages)
FORKWAIT_HEAP = 32

_register(GuestSpec(
    "forkwait", "fork a child that exits at once and wait for it, N times (A&A 2006 §6.2)",
    # two process slots: the parent's and the one its children use in turn (vmkit/guests/fork.s)
    lambda p: ["forkwait", "forkwait"], {"iterations": 200, "heap": FORKWAIT_HEAP},
    {"iterations": (1, 10**6), "heap": (1, 256)},
    lambda p: (f"forkwait: {p['iterations']} children forked and reaped, pid sum "
               f"{(p['iterations'] * (p['iterations'] + 5) // 2) & 0xFFFFFFFF}\n"),
    lambda p: {"ITERATIONS": p["iterations"], "HEAP_PAGES": p["heap"]},
    # fork.s (copy-on-write fork and wait), its boot, exit and copy-on-write fault hooks
    kernel_files=lambda p: {"boot_hook.s": "    call fork_init\n",
                            "syscalls_ext.s": '.include "fork.s"\n',
                            "exit_hook.s": "    call fork_exit\n",
                            "fault_hook.s": "    jmp fork_fault\nfork_not_cow:\n"},
    extra_syscalls=2))


# ---- tlbwalk (memory virtualization, docs/memory-virtualization.md) -------------------------
def _tlbwalk_checksum(pages: int, passes: int) -> int:
    """What tlbwalk prints: value[i] += i + pass + 1 on every page, summing the values written."""
    value, acc = [0] * pages, 0
    for p in range(passes):
        for i in range(pages):
            value[i] = (value[i] + i + p + 1) & 0xFFFFFFFF
            acc = (acc + value[i]) & 0xFFFFFFFF
    return acc


_register(GuestSpec(
    "tlbwalk", "TLB-heavy: processes walk their heap pages (one dword each) and yield, so "
    "every pass misses the TLB on every page", lambda p: ["tlbwalk"] * p["processes"],
    {"pages": 64, "passes": 4, "processes": 2},
    {"pages": (1, 120), "passes": (1, 10**5), "processes": (1, MAX_PROCS)},
    lambda p: (f"tlbwalk: {p['pages']} pages x {p['passes']} passes, checksum "
               f"{_tlbwalk_checksum(p['pages'], p['passes'])}\n") * p["processes"],
    lambda p: {"PAGES": p["pages"], "PASSES": p["passes"]}))


def names() -> list[str]:
    """Names of every guest image ``build`` can make."""
    _load_extra()
    return sorted(_SPECS)


def spec(name: str) -> GuestSpec:
    _load_extra()
    try:
        return _SPECS[name]
    except KeyError:
        import difflib
        close = difflib.get_close_matches(name, _SPECS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise GuestError(f"unknown guest {name!r}: expected one of {', '.join(sorted(_SPECS))}"
                         f"{hint}") from None


_extra_loaded = False


def _load_extra() -> None:
    """Guests defined by later modules (the nonvirt- demonstrations) register themselves."""
    global _extra_loaded
    if not _extra_loaded:
        _extra_loaded = True
        try:
            from vmkit.guests import nonvirt  # noqa: F401
            from vmkit.guests import iodemo  # noqa: F401
            from vmkit.guests import pvdemo  # noqa: F401
        except ImportError:
            pass


def register(s: GuestSpec) -> None:
    """Add a guest (for modules that define more guests)."""
    _register(s)


def _source(name: str) -> str:
    path = os.path.join(GUEST_DIR, f"{name}.s")
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _const_lines(consts: dict) -> str:
    return "".join(f".equ {k}, {v}\n" for k, v in consts.items())


#: programs assembled in this process: (name, base, generated files, the guest sources'
#: sizes and times) -> Program. Notebooks build the same guest once per monitor and per
#: parameter value (``compare``, ``per_operation``), and assembling the kernel costs about
#: 80 ms: notebook 08 spent a quarter of its time in the assembler. A source edited on disk
#: changes the key, so the cache never returns what the files no longer say.
_ASSEMBLED: dict = {}
_ASSEMBLED_MAX = 256


def _sources_stamp() -> tuple:
    """Every guest source's name, size and modification time (what a build may include)."""
    with os.scandir(GUEST_DIR) as it:
        return tuple(sorted((e.name, st.st_size, st.st_mtime_ns) for e in it
                            if e.name.endswith(".s") for st in (e.stat(),)))


def _copy_program(prog):
    """A copy of ``prog`` whose containers are its own (a caller may change its symbols)."""
    import copy
    c = copy.copy(prog)
    for k, v in vars(prog).items():
        if isinstance(v, (dict, list, set)):
            setattr(c, k, copy.copy(v))
    return c


def build_program(name: str, base: int, files: dict):
    """Assemble ``vmkit/guests/NAME.s`` at ``base`` with generated include files (each
    distinct build once a process: a copy of the first result afterwards)."""
    from vmkit.isa.asm import assemble
    key = (name, base, tuple(sorted(files.items())), _sources_stamp())
    prog = _ASSEMBLED.get(key)
    if prog is None:
        prog = assemble(_source(name), base=base, filename=f"{name}.s",
                        include_path=[GUEST_DIR], files=files)
        if len(_ASSEMBLED) >= _ASSEMBLED_MAX:
            _ASSEMBLED.pop(next(iter(_ASSEMBLED)))     # the oldest first
        _ASSEMBLED[key] = prog
    return _copy_program(prog)


def build(name: str, *, paravirtual: bool = False, timer_period: int | None = None,
          timer_clock: str = "guest", **params) -> GuestImage:
    """Assemble and link guest ``name`` with ``params`` (each guest lists its own; unknown or
    out-of-range parameters raise GuestError). ``timer_period`` is the number of guest
    instructions between timer interrupts (default DEFAULT_TIMER_PERIOD; 0 turns the timer off).
    ``paravirtual=True`` builds the same sources with privileged operations replaced by
    hypercalls (for the Paravirtual monitor). ``timer_clock="machine"`` puts the guest's timer
    on machine time under a multi-VM monitor (see ``GuestImage.timer_clock``)."""
    if timer_clock not in TIMER_CLOCKS:
        raise GuestError(f"timer_clock must be one of {', '.join(map(repr, TIMER_CLOCKS))}, "
                         f"got {timer_clock!r}")
    s = spec(name)
    if s.paravirtual_only and not paravirtual:
        raise GuestError(f"guest {name!r} demonstrates the paravirtual interface: build it with "
                         f"guests.build({name!r}, paravirtual=True) and run it under Paravirtual")
    p = dict(s.params)
    for k, v in params.items():
        if k not in s.params:
            allowed = ", ".join(s.params) or "none"
            raise GuestError(f"guest {name!r} has no parameter {k!r} (parameters: {allowed})")
        if not isinstance(v, int) or isinstance(v, bool):
            raise GuestError(f"parameter {k!r} of guest {name!r} must be an integer, got {v!r}")
        lo, hi = s.ranges.get(k, (0, 2**32 - 1))
        if not lo <= v <= hi:
            raise GuestError(f"parameter {k!r} of guest {name!r} must be between {lo} and {hi}, "
                             f"got {v}")
        p[k] = v
    if timer_period is None:
        timer_period = s.timer_period if s.timer_period is not None else DEFAULT_TIMER_PERIOD
    if not isinstance(timer_period, int) or not 0 <= timer_period < 2**32:
        raise GuestError(f"timer_period must be a non-negative integer, got {timer_period!r}")
    progs = s.programs(p)
    if len(progs) > MAX_PROCS:
        raise GuestError(f"at most {MAX_PROCS} processes, got {len(progs)}")
    consts = s.constants(p)
    user = {}
    loads = []
    table = []
    for i, prog_name in enumerate(progs):
        if prog_name not in user:
            files = {"params.s": _const_lines(consts)}
            user[prog_name] = build_program(prog_name, USER_BASE, files)
        prog = user[prog_name]
        if len(prog.code) > USER_SLOT:
            raise GuestError(f"program {prog_name} is {len(prog.code)} bytes; at most {USER_SLOT}")
        phys = USER_PHYS + i * USER_SLOT
        loads.append((phys, prog.code))
        table.append((phys, len(prog.code), prog.symbols.get("_start", USER_BASE)))
    config = [f".equ NPROC, {len(progs)}\n", f".equ TIMER_PERIOD, {timer_period}\n",
              f".equ PARAVIRTUAL, {1 if paravirtual else 0}\n",
              f".equ EXTRA_SYSCALLS, {s.extra_syscalls}\n",
              ".data\n.align 4\nproc_table:\n"]
    for phys, size, entry in table:
        config.append(f"    .long {phys:#x}, {size}, {entry:#x}\n")
    config.append(".text\n")
    files = dict(s.pv_kernel_files) if paravirtual and s.pv_kernel_files is not None \
        else dict(s.kernel_files(p))
    if paravirtual:
        # the same kernel.s with the paravirtual privileged operations (pvops_pv.s)
        files.setdefault("pvops.s", _source("pvops_pv"))
        files.setdefault("pvops_impl.s", _source("pvops_pv_impl"))
    files.update({"config.s": "".join(config), "params.s": _const_lines(consts)})
    kernel = build_program(s.kernel_program, KERNEL_BASE, files)
    programs = {s.kernel_program: kernel}
    programs.update(user)
    loads.insert(0, (KERNEL_BASE, kernel.code))
    return GuestImage(name, p, MEMORY_SIZE, loads, kernel.symbols.get("_start", KERNEL_BASE),
                      programs, s.input(p), s.expected(p) if s.expected else None, paravirtual,
                      s.description, True, list(progs), timer_clock=timer_clock)


def from_program(prog, name: str = "program", memory_size: int = MEMORY_SIZE) -> GuestImage:
    """A bare-metal guest image from one assembled Program (no kernel): it starts at its
    ``_start`` symbol or base, in ring 0 with paging off, on the machine's boot GDT."""
    return GuestImage(name, {}, memory_size, [(prog.base, prog.code)],
                      prog.symbols.get("_start", prog.base), {name: prog}, kernel=False)


def from_source(source: str, name: str = "program", base: int = KERNEL_BASE,
                filename: str = "<input>") -> GuestImage:
    """Assemble a student's bare-metal program (``abi.s`` may be included) into an image."""
    from vmkit.isa.asm import assemble
    prog = assemble(source, base=base, filename=filename, include_path=[GUEST_DIR])
    return from_program(prog, name)
