"""A bubblewrap sandbox per submission: what a student's code can reach while it is graded.

Every process a submission starts (its kernel, the processes the kernel starts, the grader's
outside check of its handlers) runs in a :class:`Sandbox`, made with ``bwrap`` (Debian package
``bubblewrap``). One sandbox belongs to one submission; each process started in it is one
``bwrap`` instance with

- **its own namespaces**: PID (the grader, other submissions and other kernels of the run are
  not in its ``/proc`` and cannot be signalled), network (no interface but its own loopback: the
  grader talks to the kernel over Unix sockets, jupyter_client's ``ipc`` transport, in a folder
  bound into the sandbox), IPC, UTS and cgroup;
- **a file system made of named binds, never ``/`` whole**: ``/usr`` (and the ``/bin``, ``/lib*``
  links into it), a few files of ``/etc``, the Python installation and the venv, and the ``vmkit``
  package folder, all read-only, each at its own path (so ``/root``, whose mode is 700, is never
  opened: only the interpreter under it is bound). The checkout around the package (solutions/,
  the instructor's reference answers), the grader's HOME, its CSV and feedback folders and other
  submissions are simply not there. ``/proc`` is the sandbox's own, ``/dev`` a minimal one,
  ``/tmp`` a size-limited tmpfs;
- **a fresh empty writable scratch folder** (:attr:`Sandbox.scratch`) as working folder and
  HOME; IPython's, Jupyter's and matplotlib's own folders go to the sandbox's ``/tmp``, so the
  scratch folder stays the student's and nothing written there survives the submission (an
  IPython startup file, a kernelspec, a ``.pth`` file: every later submission gets new folders,
  and the venv is read-only);
- **an allow-listed environment** (:data:`ALLOWED_ENV`, ``VMKIT_*``): nothing of the grader's
  (``PYTHONPATH``, tokens, ``JUPYTERHUB_*``) gets in;
- **limits set at launch** (:class:`Limits`): address space, processes, CPU time, file size,
  open files, no core files; the student's code can lower them, never raise them;
- **a CPU cgroup of its own** (root grader, where the cpu controller is available, v1 or v2):
  sandboxes get equal CPU weights, so a submission that runs a hundred busy processes gets no
  more CPU than the honest one graded beside it (without cgroups, the CPU is shared per
  process, and the deadline is what bounds such a submission).

**Who runs the code.** ``bwrap`` started by root keeps every capability inside the sandbox (a
cell could remount the read-only binds writable), and Linux does not apply the process limit to
uid 0. So when the grader is root, ``bwrap`` (no user namespace) runs ``setpriv`` as the last
step inside: it switches to an unprivileged uid and gid with no supplementary groups, empties
the inheritable, ambient and bounding capability sets and sets ``no_new_privs`` before
``prlimit`` applies the limits and starts the kernel. Each concurrent sandbox gets its *own* uid
(``UID_BASE`` + n, held with a lock file for as long as the sandbox lives): the process limit
then counts one submission's processes only, and a fork bomb or a ``kill(-1, 9)`` in one
submission cannot touch another's. When the grader is not root, ``bwrap`` makes an unprivileged
user namespace instead (``--unshare-user --disable-userns``, no capabilities); the uid is the
grader's own, so the other protections rest on the namespaces alone.

**Nothing outlives it.** ``--die-with-parent`` ties each ``bwrap`` to the grader's process that
started it, ``--new-session`` keeps a cell off the grader's terminal, and the PID namespace
dies with its first process: a process that double-forks, calls ``setsid`` or runs under
``nohup`` is still inside and is killed with it. :meth:`Sandbox.close` kills every process the
sandbox started and, as root, every process left with the sandbox's uid, then deletes its
folders.

:class:`Sandbox` ``(enabled=False)`` (``vmkit grade --no-sandbox``) keeps the interface, the
scratch folder, the environment and the limits, but runs the code as the grader's own user with
the grader's view of the machine: see the README (*Where to grade*) for what that risks.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Limits", "Sandbox", "SandboxUnavailable", "check_available", "layout",
           "acquire_uid", "release_uid", "kill_uid", "prune_cgroups", "ALLOWED_ENV", "UID_BASE"]

#: environment variables a caller may hand into the sandbox (besides ``VMKIT_*``)
ALLOWED_ENV = frozenset({"PYTHONHASHSEED", "MPLBACKEND", "LANG", "LC_ALL", "LC_CTYPE", "TZ"})

#: sandboxed processes run as uid/gid UID_BASE + n (root grader): far above any account's uid
UID_BASE = 1_800_000_000
_UID_SLOTS = 4096

#: files of /etc that programs in the sandbox read (the dynamic loader, ``/usr/bin``'s
#: alternatives links, fonts for matplotlib and graphviz, the time zone)
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "fonts", "localtime",
        "timezone", "mime.types")

_NO_SANDBOX = "or grade with --no-sandbox (see README: what it risks)"


class SandboxUnavailable(Exception):
    """The sandbox cannot start here; ``str()`` is one line that names the fix."""


@dataclass
class Limits:
    """Per-process limits set when a sandboxed process starts (``prlimit``)."""
    memory_mb: int = 2048      #: address space (RLIMIT_AS): going over raises MemoryError
    cpu_seconds: int = 600     #: CPU time (RLIMIT_CPU): past it the process is killed
    processes: int = 128       #: processes and threads of the sandbox's uid (RLIMIT_NPROC)
    file_size_mb: int = 256    #: largest file a process may write (RLIMIT_FSIZE)
    open_files: int = 1024     #: open file descriptors (RLIMIT_NOFILE)
    tmp_mb: int = 256          #: size of the sandbox's /tmp (a tmpfs)

    def prlimit_args(self, with_nproc: bool) -> list[str]:
        mib = 1 << 20
        args = [f"--as={self.memory_mb * mib}", f"--cpu={self.cpu_seconds}",
                f"--fsize={self.file_size_mb * mib}", f"--nofile={self.open_files}",
                "--core=0"]
        return args + ([f"--nproc={self.processes}"] if with_nproc else [])

    def rlimits(self) -> list[tuple[int, int]]:
        import resource
        mib = 1 << 20
        return [(resource.RLIMIT_AS, self.memory_mb * mib),
                (resource.RLIMIT_CPU, self.cpu_seconds),
                (resource.RLIMIT_FSIZE, self.file_size_mb * mib),
                (resource.RLIMIT_NOFILE, self.open_files), (resource.RLIMIT_CORE, 0)]


# --- what the sandbox binds -----------------------------------------------------------------


def _kit_binds() -> tuple[list[tuple[str, str]], str | None]:
    """(source, destination) binds that make the grader's ``vmkit`` package importable in the
    sandbox, and a PYTHONPATH if one is needed.

    Only the package folder is bound, never the checkout around it. It is bound where the
    venv's Python finds ``vmkit`` when started isolated (``python -I``, as the test helpers'
    fresh processes are): an editable install maps it to the checkout's ``vmkit/``; a grader
    started with another ``vmkit`` on its PYTHONPATH grades with that one, at that place."""
    import vmkit
    kit = Path(vmkit.__file__).resolve().parent
    probe = subprocess.run([sys.executable, "-I", "-c",
                            "import importlib.util as u; s = u.find_spec('vmkit'); "
                            "print(s.origin if s and s.origin else '')"],
                           capture_output=True, text=True, timeout=60)
    origin = probe.stdout.strip()
    if origin:
        target = Path(origin).parent
        if target == kit and _inside(kit, _python_roots()):
            return [], None  # installed in the venv: bound with it
        return [(str(kit), str(target))], None
    return [(str(kit), str(kit))], str(kit.parent)


def _compile_kit() -> None:
    """Write the kit's bytecode caches where they are missing: in the sandbox the kit is
    read-only, and every kernel and check would otherwise compile it again (about 0.1 s of
    CPU per process)."""
    import compileall
    import vmkit
    try:
        compileall.compile_dir(str(Path(vmkit.__file__).resolve().parent), quiet=2)
    except OSError:  # a read-only installation: its caches are what they are
        pass


def _python_roots() -> list[Path]:
    roots = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(),
             Path(sys.exec_prefix).resolve(), Path(sys.base_exec_prefix).resolve()}
    # site-packages folders outside the prefixes, which a .pth file of the environment adds
    # (an environment layered on another's packages): the kernel's Python adds them too
    for entry in sys.path:
        path = Path(entry)
        if path.name in ("site-packages", "dist-packages") and path.is_dir():
            roots.add(path.resolve())
    roots = {r for r in roots if not _inside(r, [Path("/usr")])}
    return sorted(r for r in roots if not any(o != r and _inside(r, [o]) for o in roots))


def _inside(path: Path, roots) -> bool:
    return any(path == r or r in path.parents for r in roots)


_LAYOUT: dict | None = None


def layout() -> dict:
    """What every sandbox binds (computed once per process)."""
    global _LAYOUT
    if _LAYOUT is None:
        kit, pythonpath = _kit_binds()
        _compile_kit()
        bwrap = shutil.which("bwrap")
        helps = subprocess.run([bwrap, "--help"], capture_output=True, text=True,
                               timeout=60).stdout if bwrap else ""
        _LAYOUT = {"python": [str(p) for p in _python_roots()], "kit": kit,
                   "pythonpath": pythonpath,
                   # options newer than some distributions' bwrap (Ubuntu 22.04 has 0.6)
                   "options": [o for o in ("--disable-userns", "--size") if o in helps]}
    return _LAYOUT


def _system_args() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / name
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    args += ["--perms", "0755", "--dir", "/etc"]
    for name in _ETC:
        if os.path.lexists(f"/etc/{name}"):
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args


def _dirs_for(paths) -> list[str]:
    """``--dir`` for every missing parent of the bind destinations, world-traversable (bwrap
    would make them 0700, and the sandbox's user could not get through them)."""
    bound = [Path(p) for p in paths]
    parents = set()
    for p in bound:
        for a in p.parents:
            if str(a) in ("/", "/usr", "/tmp") or _inside(a, [Path("/usr")]):
                continue
            if any(a == b or b in a.parents for b in bound):
                continue  # inside something bound already
            parents.add(a)
    args = []
    for a in sorted(parents, key=lambda x: len(x.parts)):
        args += ["--perms", "0755", "--dir", str(a)]
    return args


# --- uids for a root grader -----------------------------------------------------------------


def _lock_dir() -> Path:
    d = Path(tempfile.gettempdir()) / "vmkit-sandbox-uids"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def acquire_uid() -> tuple[int, int]:
    """(uid, lock fd): an unused uid of the sandbox range, held until :func:`release_uid`.
    Processes left over with that uid (a grader that was killed) are killed first."""
    lock = _lock_dir()
    for n in range(_UID_SLOTS):
        uid = UID_BASE + n
        try:
            pwd.getpwuid(uid)
            continue  # an account has it
        except KeyError:
            pass
        fd = os.open(lock / f"uid-{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        kill_uid(uid)
        return uid, fd
    raise SandboxUnavailable(f"all {_UID_SLOTS} sandbox uids are in use")


def release_uid(fd: int) -> None:
    os.close(fd)


def _uid_pids(uid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Uid:"):
                        if int(line.split()[1]) == uid:
                            pids.append(int(entry.name))
                        break
        except OSError:
            continue
    return pids


def kill_uid(uid: int, tries: int = 200) -> bool:
    """SIGKILL every process whose real uid is ``uid`` until none is left (a fork bomb refills
    the table while it is being emptied). True when none is left."""
    for _ in range(tries):
        pids = _uid_pids(uid)
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.005)
    return not _uid_pids(uid)


# --- CPU shares for a root grader ----------------------------------------------------------

_CGROUP_BASE: Path | None | bool = False


def _cgroup_base() -> Path | None:
    """The folder under which each sandbox gets a CPU cgroup of its own (equal weights, so
    that a submission running a hundred busy processes gets as much CPU as one running one),
    or None where cgroups cannot be made (then processes share the CPU as processes)."""
    global _CGROUP_BASE
    if _CGROUP_BASE is not False:
        return _CGROUP_BASE
    _CGROUP_BASE = None
    top = Path("/sys/fs/cgroup")
    try:
        if (top / "cgroup.controllers").exists():  # cgroup v2
            if "cpu" not in (top / "cgroup.controllers").read_text().split():
                return None
            if "cpu" not in (top / "cgroup.subtree_control").read_text().split():
                (top / "cgroup.subtree_control").write_text("+cpu")
            base = top / "vmkit-sandbox"
            base.mkdir(exist_ok=True)
            (base / "cgroup.subtree_control").write_text("+cpu")
        elif (top / "cpu" / "cgroup.procs").exists():  # cgroup v1, the cpu hierarchy
            base = top / "cpu" / "vmkit-sandbox"
            base.mkdir(exist_ok=True)
        else:
            return None
    except OSError:
        return None
    _CGROUP_BASE = base
    return base


def prune_cgroups() -> None:
    """Remove the sandboxes' CPU cgroups that no process is in any more."""
    base = _cgroup_base() if os.geteuid() == 0 else None
    for d in (base.iterdir() if base else ()):
        if d.is_dir():
            try:
                d.rmdir()
            except OSError:
                pass


# --- the sandbox ----------------------------------------------------------------------------


class Sandbox:
    """One submission's sandbox (a context manager: :meth:`close` on exit).

    ``limits`` apply to every process started in it; ``enabled=False`` runs them unsandboxed
    (same folders, environment and limits). ``uid`` (root grader only) is the uid to run as; by
    default one is taken from the sandbox range (:func:`acquire_uid`)."""

    def __init__(self, limits: Limits | None = None, enabled: bool = True,
                 uid: int | None = None):
        self.limits = limits or Limits()
        self.enabled = enabled
        self.as_root = enabled and os.geteuid() == 0
        self._lock = None
        self.uid = None
        if self.as_root:
            if uid is None:
                uid, self._lock = acquire_uid()
            self.uid = int(uid)
        self._procs: list[subprocess.Popen] = []
        self.root = Path(tempfile.mkdtemp(prefix="vmkit-sandbox-"))
        #: the fresh empty writable folder: working folder and HOME of what runs inside
        self.scratch = self.root / "scratch"
        #: where the kernel's connection file and Unix sockets go (bound read-write)
        self.runtime = self.root / "run"
        self._tmp = self.root / "tmp"  # the unsandboxed stand-in for the sandbox's /tmp
        for d in (self.scratch, self.runtime, self._tmp):
            d.mkdir(mode=0o700)
        self.cgroup = None
        if self.as_root and _cgroup_base():
            try:
                self.cgroup = _cgroup_base() / self.root.name
                self.cgroup.mkdir()
                # equal among sandboxes; against the machine's other processes, worth a few
                # (a kernel keeps two or three threads busy: it should not lose to them)
                for name, weight in (("cpu.weight", "800"), ("cpu.shares", "8192")):
                    if (self.cgroup / name).exists():
                        (self.cgroup / name).write_text(weight)
            except OSError:
                self.cgroup = None
        if self.as_root:
            os.chmod(self.root, 0o711)
            os.chown(self.scratch, self.uid, self.uid)
            # the kernel makes its sockets here, the grader connects to them as root: a
            # root-owned sticky folder, so that (fs.protected_symlinks) the grader never
            # follows a symlink the sandbox's user put in place of a socket
            os.chmod(self.runtime, 0o1777)
            (self.root / "passwd").write_text(
                f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
                f"student:x:{self.uid}:{self.uid}:student:{self.scratch}:/usr/sbin/nologin\n")
            (self.root / "group").write_text(f"root:x:0:\nstudent:x:{self.uid}:\n")
        self.closed = False

    # what runs inside

    @property
    def tmp(self) -> str:
        """The sandbox's /tmp as the processes inside see it."""
        return "/tmp" if self.enabled else str(self._tmp)

    def environment(self, env: dict | None = None) -> dict:
        """The environment of a process in the sandbox: the allow-listed part of ``env`` and
        the sandbox's own HOME, TMPDIR, PATH and tool folders."""
        out = {k: str(v) for k, v in (env or {}).items()
               if k in ALLOWED_ENV or k.startswith("VMKIT_")}
        tmp = self.tmp
        lay = layout() if self.enabled else None
        out.update({
            "HOME": str(self.scratch), "TMPDIR": tmp, "USER": "student", "LOGNAME": "student",
            "PATH": f"{Path(sys.prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "LANG": out.get("LANG", "C.UTF-8"), "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONNOUSERSITE": "1", "IPYTHONDIR": f"{tmp}/ipython",
            "MPLCONFIGDIR": f"{tmp}/matplotlib", "XDG_CACHE_HOME": f"{tmp}/cache",
            "XDG_CONFIG_HOME": f"{tmp}/config", "JUPYTER_CONFIG_DIR": f"{tmp}/jupyter",
            "JUPYTER_DATA_DIR": f"{tmp}/jupyter-data",
            "JUPYTER_RUNTIME_DIR": f"{tmp}/jupyter-runtime"})
        if lay and lay["pythonpath"]:
            out["PYTHONPATH"] = lay["pythonpath"]
        return out

    def command(self, argv: list[str], env: dict | None = None) -> list[str]:
        """The command line that runs ``argv`` in the sandbox with the allow-listed ``env``
        (what :meth:`popen` starts; a kernel manager wraps its kernel's command with it)."""
        env = self.environment(env)
        if not self.enabled:
            return [sys.executable, "-I", "-S", "-c", _SHIM,
                    json.dumps([list(x) for x in self.limits.rlimits()]), *argv]
        lay = layout()
        binds = [(p, p) for p in lay["python"]] + lay["kit"]
        rw = [str(self.scratch), str(self.runtime)]
        args = []
        if self.cgroup:  # bwrap and all it starts in the sandbox's own CPU cgroup
            args = ["/bin/sh", "-c", 'echo $$ 2>/dev/null > "$0"; exec "$@"',
                    str(self.cgroup / "cgroup.procs")]
        args += [shutil.which("bwrap") or "bwrap",
                "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--hostname", "sandbox",
                "--die-with-parent", "--new-session"]
        if not self.as_root:
            args += ["--unshare-user", "--cap-drop", "ALL"]
            if "--disable-userns" in lay["options"]:
                args.append("--disable-userns")
        args += _system_args()
        if self.as_root:
            args += ["--ro-bind", str(self.root / "passwd"), "/etc/passwd",
                     "--ro-bind", str(self.root / "group"), "/etc/group"]
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777"]
        if "--size" in lay["options"]:
            args += ["--size", str(self.limits.tmp_mb << 20)]
        args += ["--tmpfs", "/tmp"]
        args += _dirs_for([d for _, d in binds] + rw)
        for src, dst in binds:
            args += ["--ro-bind", src, dst]
        for d in rw:
            args += ["--bind", d, d]
        args += ["--chdir", str(self.scratch), "--clearenv"]
        for k, v in sorted(env.items()):
            args += ["--setenv", k, v]
        args.append("--")
        if self.as_root:
            args += [shutil.which("setpriv") or "setpriv", f"--reuid={self.uid}",
                     f"--regid={self.uid}", "--clear-groups", "--inh-caps=-all",
                     "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        args += [shutil.which("prlimit") or "prlimit",
                 *self.limits.prlimit_args(with_nproc=True), "--"]
        return args + list(argv)

    def popen(self, argv: list[str], env: dict | None = None, **popen_kw) -> subprocess.Popen:
        """Start ``argv`` in the sandbox (working folder: :attr:`scratch`); ``popen_kw`` go to
        :class:`subprocess.Popen` (pipes work: stdin, stdout, stderr, text)."""
        if self.closed:
            raise RuntimeError("the sandbox is closed")
        popen_kw.pop("cwd", None)
        popen_kw.pop("preexec_fn", None)
        popen_kw.setdefault("stdin", subprocess.DEVNULL)
        env_out = self.environment(env) if not self.enabled else {"PATH": "/usr/bin:/bin"}
        proc = subprocess.Popen(self.command(argv, env), env=env_out, cwd=str(self.scratch),
                                start_new_session=True, **popen_kw)
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        """Kill everything that runs in the sandbox and delete its folders."""
        if self.closed:
            return
        self.closed = True
        for proc in self._procs:
            _kill(proc)
        if self.as_root:
            kill_uid(self.uid)
        for _ in range(50 if self.cgroup else 0):
            try:
                self.cgroup.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:  # its last processes are still exiting
                time.sleep(0.01)
        shutil.rmtree(self.root, ignore_errors=True)
        if self._lock is not None:
            release_uid(self._lock)
            self._lock = None

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            try:
                proc.kill()
            except OSError:
                pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


#: the unsandboxed launcher: sets the limits, asks to be killed with the grader's process
#: that started it (PR_SET_PDEATHSIG, kept across exec), then becomes the command
_SHIM = ("import ctypes, json, os, resource, signal, sys\n"
         "for what, n in json.loads(sys.argv[1]):\n"
         "    resource.setrlimit(what, (n, n))\n"
         "ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))\n"
         "os.execvp(sys.argv[2], sys.argv[2:])\n")


# --- can it start here? ---------------------------------------------------------------------

_AVAILABLE = False


def check_available() -> None:
    """Raise :class:`SandboxUnavailable` (one line naming the fix) unless a sandbox can start
    here and import the kit inside; the answer is remembered for the process."""
    global _AVAILABLE
    if _AVAILABLE:
        return
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable(f"the sandbox needs Linux (bubblewrap), {_NO_SANDBOX}")
    if not shutil.which("bwrap"):
        raise SandboxUnavailable("bubblewrap is not installed: apt-get install bubblewrap "
                                 f"(or make sysdeps), {_NO_SANDBOX}")
    need = ["prlimit"] + (["setpriv"] if os.geteuid() == 0 else [])
    for tool in need:
        if not shutil.which(tool):
            raise SandboxUnavailable(f"{tool} is not installed: apt-get install util-linux, "
                                     f"{_NO_SANDBOX}")
    try:
        with Sandbox(Limits(cpu_seconds=60)) as sb:
            proc = sb.popen([sys.executable, "-I", "-c", "import vmkit.homework"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                _, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                raise SandboxUnavailable(f"the sandbox did not start within 60 s, {_NO_SANDBOX}")
    except OSError as e:
        raise SandboxUnavailable(f"the sandbox cannot start ({e}), {_NO_SANDBOX}") from None
    if proc.returncode != 0:
        last = (err.strip().splitlines() or ["no message"])[-1][:200]
        if "namespace" in last or "uid map" in last or "setting up uid" in last:
            fix = ("user namespaces are disabled: sysctl -w kernel.unprivileged_userns_clone=1 "
                   "(Ubuntu 24.04: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0), "
                   "or grade as root")
        else:
            fix = "the sandbox cannot start"
        raise SandboxUnavailable(f"{fix} (bwrap: {last}), {_NO_SANDBOX}")
    _AVAILABLE = True
