"""The host side of the sandbox: starts warm workers under bubblewrap + a cgroup and talks to them.

Layers, outermost first (see docs/sandbox.md):
  1. policy     (policy.py, host + child) friendly errors only: "import of 'os' is not allowed"
  2. bubblewrap new net/pid/ipc/uts/cgroup/mount namespaces, read-only /usr + Python dirs, private
                tmpfs /tmp, clean environment, dies with its parent; as root the worker then drops to
                uid/gid 65534 with no capabilities and no_new_privs (setpriv); as a user, a user namespace
  3. cgroup     the worker tree capped at (warm size + memory_mb) of memory and a few pids (needs root)
  4. child      per run (worker.py): new session, rlimits, Landlock, seccomp, restricted builtins
  5. wall clock the worker SIGKILLs the child's process group at wall_s and caps the output; this side
                kills the whole worker if it stops answering.
Untrusted code never runs in this process.
"""

import ctypes.util
import itertools
import json
import os
import queue
import select
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.util import find_spec

from hessgpt.errors import HessGPTError
from hessgpt.tools.sandbox import policy

HERE = os.path.dirname(os.path.abspath(__file__))
NOBODY = 65534
UNSAFE_ENV = "HESSGPT_SANDBOX_UNSAFE"
CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_NAME = "hessgpt-sandbox"
WORKER_START_TIMEOUT_S = 120.0  # cold import of numpy + sympy + warm-up on a busy 2-core machine
REPLY_GRACE_S = 10.0  # the worker enforces wall_s itself; past wall_s + this, we kill the worker


@dataclass(frozen=True)
class Limits:
    wall_s: float = 5.0  # wall clock per run (the process group is SIGKILLed)
    memory_mb: int = 100  # memory a run may add on top of the warm worker (RLIMIT_AS + cgroup)
    output_bytes: int = 65536  # stdout cap; more kills the run with status "output_cap"
    pids: int = 32  # cgroup pids.max for the worker tree (threads count)


@dataclass
class RunResult:
    status: str  # "ok" | "error" | "timeout" | "memory" | "output_cap" | "policy"
    stdout: str
    stderr: str  # truncated; a short traceback on error
    duration_ms: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def text(self) -> str:
        """What a tool call returns to the model: stdout, or a short error text."""
        if self.status == "ok":
            return self.stdout
        err = self.stderr.strip() or self.status
        return (self.stdout + ("\n" if self.stdout and not self.stdout.endswith("\n") else "") + err) if self.stdout else err


# ---------------------------------------------------------------------------------------------------
# cgroups (v1 memory+pids, or v2), root only
# ---------------------------------------------------------------------------------------------------
class _Cgroup:
    """One cgroup per worker. v1: <root>/{memory,pids}/hessgpt-sandbox/<id>; v2: <root>/hessgpt-sandbox/<id>."""

    def __init__(self, name: str):
        self.v2 = _is_cgroup2(CGROUP_ROOT)
        if self.v2:
            parent = os.path.join(CGROUP_ROOT, CGROUP_NAME)
            os.makedirs(parent, exist_ok=True)
            for ctl_dir, ctl in ((CGROUP_ROOT, "+memory +pids"), (parent, "+memory +pids")):
                with open(os.path.join(ctl_dir, "cgroup.subtree_control"), "w") as fh:
                    fh.write(ctl)
            self.dirs = {"memory": os.path.join(parent, name), "pids": os.path.join(parent, name)}
        else:
            self.dirs = {c: os.path.join(CGROUP_ROOT, c, CGROUP_NAME, name) for c in ("memory", "pids")}
        for d in set(self.dirs.values()):
            os.makedirs(d, exist_ok=True)

    def _write(self, ctl: str, fname: str, value) -> None:
        with open(os.path.join(self.dirs[ctl], fname), "w") as fh:
            fh.write(str(value))

    def _read(self, ctl: str, fname: str) -> str:
        with open(os.path.join(self.dirs[ctl], fname)) as fh:
            return fh.read()

    def set_memory(self, nbytes: int) -> None:
        self._write("memory", "memory.max" if self.v2 else "memory.limit_in_bytes", nbytes)

    def memory_usage(self) -> int:
        return int(self._read("memory", "memory.current" if self.v2 else "memory.usage_in_bytes"))

    def anon_memory(self) -> int:
        """Anonymous (heap) memory of the tree: what a forked child may copy-on-write."""
        stat = dict(line.split() for line in self._read("memory", "memory.stat").splitlines() if line.count(" ") == 1)
        return int(stat.get("anon" if self.v2 else "rss", 0))

    def oom_kills(self) -> int:
        text = self._read("memory", "memory.events" if self.v2 else "memory.oom_control")
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if k == "oom_kill":
                return int(v)
        return 0

    def set_pids(self, n: int) -> None:
        self._write("pids", "pids.max", n)

    def procs_files(self) -> list[str]:
        return sorted({os.path.join(d, "cgroup.procs") for d in self.dirs.values()})

    def remove(self) -> None:
        for d in set(self.dirs.values()):
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # processes still exiting
                    time.sleep(0.02)


def _is_cgroup2(path: str) -> bool:
    return os.path.exists(os.path.join(path, "cgroup.controllers"))


def cgroup_status() -> tuple[bool, str]:
    """Can this process create memory+pids cgroups?"""
    if os.geteuid() != 0:
        return False, "needs root (run as root, or accept the RLIMIT_AS memory cap alone)"
    if _is_cgroup2(CGROUP_ROOT):
        ok = all(c in open(os.path.join(CGROUP_ROOT, "cgroup.controllers")).read().split() for c in ("memory", "pids"))
        return ok, "cgroup v2 memory+pids" if ok else "cgroup v2 without memory/pids controllers"
    ok = all(os.access(os.path.join(CGROUP_ROOT, c), os.W_OK) for c in ("memory", "pids"))
    return ok, "cgroup v1 memory+pids" if ok else "no writable cgroup v1 memory/pids hierarchy"


# ---------------------------------------------------------------------------------------------------
# what the worker needs to see
# ---------------------------------------------------------------------------------------------------
def _python_dirs(allowed: tuple[str, ...]) -> tuple[str, list[str]]:
    """(interpreter, read-only dirs): the base installation and the site dirs holding the allowed modules."""
    exe = os.path.realpath(sys.executable)
    base = os.path.realpath(sys.base_prefix)
    site_dirs = []
    for name in (*allowed, "mpmath", "pyseccomp"):  # sympy needs mpmath; seccomp via PyPI pyseccomp
        spec = find_spec(name) if name not in sys.builtin_module_names else None
        if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
            continue
        path = os.path.realpath(spec.origin)
        root = os.path.dirname(os.path.dirname(path)) if spec.submodule_search_locations else os.path.dirname(path)
        if not root.startswith(base + os.sep) and root not in site_dirs:
            site_dirs.append(root)
    if os.path.isdir("/usr/lib/python3/dist-packages") and exe.startswith("/usr/"):
        site_dirs.append("/usr/lib/python3/dist-packages")  # Debian's python3-seccomp
    return exe, [base, *site_dirs]


def _ancestors(path: str) -> list[str]:
    parts, out = path.strip("/").split("/"), []
    for i in range(1, len(parts)):
        out.append("/" + "/".join(parts[:i]))
    return out


def bwrap_argv(exe: str, ro_dirs: list[str], as_root: bool) -> list[str]:
    bwrap = shutil.which("bwrap")
    argv = [bwrap, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv", "--hostname", "sandbox"]
    if as_root:
        # no user namespace: the worker becomes the REAL uid 65534 (setpriv below), not a uid mapped to root.
        # bwrap keeps only what setpriv needs to drop to nobody.
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    else:
        argv += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY), "--cap-drop", "ALL"]
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "OPENBLAS_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2", "PYTHONDONTWRITEBYTECODE": "1"}
    for k, v in env.items():
        argv += ["--setenv", k, v]
    argv += ["--ro-bind", "/usr", "/usr"]
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    if os.path.exists("/etc/ld.so.cache"):  # ctypes.util.find_library (libseccomp) reads it
        argv += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    # /tmp, /proc and /dev first: a Python, venv or checkout living under /tmp (a CI clone, say) is then bound
    # on top of the private tmpfs instead of being hidden by it
    argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "0755", "--tmpfs", "/tmp"]
    made = {"/usr", "/etc", "/tmp", "/proc", "/dev"}
    for d in [*ro_dirs, HERE]:
        if d.startswith("/usr/"):
            continue
        for a in _ancestors(d):
            if a not in made:
                argv += ["--perms", "0755", "--dir", a]
                made.add(a)
        argv += ["--ro-bind", d, d]
        made.add(d)
    argv += ["--chdir", "/tmp"]
    argv.append("--")
    if as_root:
        argv += [shutil.which("setpriv") or "/usr/bin/setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                 "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    return argv


# ---------------------------------------------------------------------------------------------------
# the thread that starts workers
# ---------------------------------------------------------------------------------------------------
class _Spawner:
    """Starts every worker process from ONE long-lived thread.

    `bwrap --die-with-parent` is PR_SET_PDEATHSIG(SIGKILL), and the kernel sends it when the *thread*
    that forked bwrap exits, not the process. A worker started from a short-lived thread (run_many's
    ThreadPoolExecutor, a web server's recycled worker threads) was SIGKILLed as soon as that thread
    ended: the next run either restarted it (~1 s) or, racing the kill, wrote its request to a dying
    worker and came back as "stopped answering". This daemon thread lives as long as the process, so
    the workers still die with the host process and only with it."""

    _lock = threading.Lock()
    _jobs: "queue.SimpleQueue | None" = None
    _pid = 0  # a fork()ed host process inherits _jobs but not the thread: it starts its own

    @classmethod
    def popen(cls, argv: list[str], **kwargs) -> subprocess.Popen:
        with cls._lock:
            if cls._jobs is None or cls._pid != os.getpid():
                cls._jobs, cls._pid = queue.SimpleQueue(), os.getpid()
                threading.Thread(target=cls._loop, args=(cls._jobs,), name="hessgpt-sandbox-spawner",
                                 daemon=True).start()
        done = threading.Event()
        box: list = []
        cls._jobs.put((argv, kwargs, box, done))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    @staticmethod
    def _loop(jobs: "queue.SimpleQueue") -> None:
        while True:
            argv, kwargs, box, done = jobs.get()
            try:
                box.append(subprocess.Popen(argv, **kwargs))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box.append(e)
            done.set()


# ---------------------------------------------------------------------------------------------------
# one warm worker
# ---------------------------------------------------------------------------------------------------
class _Worker:
    _ids = itertools.count(1)  # next() is atomic: workers started at once from two threads get two cgroups

    def __init__(self, limits: Limits, allowed: tuple[str, ...], unsafe: bool):
        self.limits = limits
        exe, ro_dirs = _python_dirs(allowed)
        cfg = {
            "limits": {"wall_s": limits.wall_s, "memory_mb": limits.memory_mb, "output_bytes": limits.output_bytes},
            "allowed_modules": list(allowed),
            "sys_path": ro_dirs[1:],
            "policy_path": os.path.join(HERE, "policy.py"),
            "sonames": {n: ctypes.util.find_library(n) for n in ("c", "seccomp")},
            # the child may only read the Python installation (lazy imports) and shared libraries
            "read_dirs": [*ro_dirs, "/usr/lib", "/usr/lib64", "/usr/lib32"],
        }
        python_argv = [exe, "-I", "-S", "-B", os.path.join(HERE, "worker.py"), json.dumps(cfg)]
        self.bwrap = shutil.which("bwrap") is not None
        as_root = os.geteuid() == 0
        self.cgroup = None
        cg_ok, _ = cgroup_status()
        if cg_ok:
            self.cgroup = _Cgroup(f"{os.getpid()}-{next(_Worker._ids)}")
            self.cgroup.set_memory(2 * 1024**3)  # generous while it imports and warms up; tightened below
            self.cgroup.set_pids(limits.pids)
        if self.bwrap:
            argv = bwrap_argv(exe, ro_dirs, as_root) + python_argv
        elif unsafe:
            argv = python_argv  # DEVELOPMENT ONLY: no namespaces, no uid drop
        else:
            raise HessGPTError(_missing_bwrap_message())
        procs = self.cgroup.procs_files() if self.cgroup else []

        def _enter_cgroup() -> None:  # runs in the forked child before exec: the whole tree is inside
            for p in procs:
                fd = os.open(p, os.O_WRONLY)
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)

        self.errlog = tempfile.TemporaryFile()
        # from the spawner thread: bwrap's --die-with-parent is tied to the thread that forks it
        self.proc = _Spawner.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errlog,
                                   preexec_fn=_enter_cgroup if procs else None, start_new_session=True,
                                   env={"PATH": "/usr/bin:/bin"}, cwd="/")
        hello = self._read_line(WORKER_START_TIMEOUT_S)
        if hello is None or not hello.get("ready"):
            detail = (hello or {}).get("error") or self._stderr_tail() or "no answer"
            self.kill()
            if self.bwrap and not as_root and "namespace" in detail:
                raise HessGPTError(_userns_refusal(detail))
            raise HessGPTError(f"sandbox worker failed to start: {detail} (run `hessgpt sandbox doctor`)")
        self.layers = hello["layers"]
        self.vm_mb = hello.get("vm_mb", 0.0)
        if self.cgroup:
            base = self.cgroup.memory_usage()
            # The tree = the warm worker + one run. RLIMIT_AS gives the run memory_mb of NEW memory, but the
            # run also copies (copy-on-write) the warm pages it writes to (refcounts of every numpy/sympy
            # object it touches): up to the worker's anonymous memory, charged to this cgroup too. Without
            # that allowance a harmless run using ~90 of its 100 MB was OOM-killed here. +16 MB: the
            # fork's page tables and pipes.
            cow = self.cgroup.anon_memory()
            self.cgroup.set_memory(base + cow + (limits.memory_mb + 16) * 1024**2)
            self.cgroup_base_mb, self.cgroup_cow_mb = base / 2**20, cow / 2**20
            self.oom_seen = self.cgroup.oom_kills()

    def _stderr_tail(self) -> str:
        self.errlog.seek(0)
        return self.errlog.read()[-2000:].decode("utf-8", "replace").strip()

    def _read_line(self, timeout: float) -> "dict | None":
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()  # the worker writes whole lines
        return json.loads(line) if line else None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, code: str, use_policy: bool) -> RunResult:
        t0 = time.perf_counter()
        try:
            self.proc.stdin.write(json.dumps({"code": code, "policy": use_policy}).encode() + b"\n")
            self.proc.stdin.flush()
            reply = self._read_line(self.limits.wall_s + REPLY_GRACE_S)
        except (BrokenPipeError, OSError, ValueError):
            reply = None
        if reply is None:  # worker hung or died: it is replaced by the next run
            # The worker (trusted code) answers by wall_s + ~1 s however slow the machine: a silence past
            # wall_s + REPLY_GRACE_S means it hangs; an EOF before that means it died (exit status below).
            oom = self.cgroup is not None and self.cgroup.oom_kills() > self.oom_seen
            try:  # after an EOF the process is gone or going
                rc = self.proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                rc = None
            self.kill()
            dt = (time.perf_counter() - t0) * 1000
            if oom:
                return RunResult("memory", "", f"MemoryError: over the {self.limits.memory_mb} MB memory limit (killed)", dt)
            why = f"died, exit status {rc}" if rc is not None else f"no answer in {self.limits.wall_s + REPLY_GRACE_S:.0f} s"
            status = "timeout" if rc is None and dt / 1000 >= self.limits.wall_s else "error"
            return RunResult(status, "", f"sandbox worker stopped answering ({why}; killed and restarted)", dt)
        return RunResult(reply["status"], reply["stdout"], reply["stderr"], reply["duration_ms"])

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        if self.cgroup:
            self.cgroup.remove()
        self.errlog.close()


USERNS_SYSCTLS = (  # (file, value that forbids unprivileged user namespaces, how to allow them)
    ("/proc/sys/kernel/unprivileged_userns_clone", "0", "sudo sysctl -w kernel.unprivileged_userns_clone=1"),
    ("/proc/sys/user/max_user_namespaces", "0", "sudo sysctl -w user.max_user_namespaces=15000"),
    ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1",
     "an AppArmor profile allowing userns for bwrap, or sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"),
)


def userns_blockers(proc_sys: str = "/proc/sys") -> list[tuple[str, str]]:
    """[(setting, fix)] for each kernel setting that forbids a normal user's user namespaces (bubblewrap's
    way in without root). Empty when none is set, e.g. upstream kernels, Debian >= 11, Fedora."""
    out = []
    for path, bad, fix in USERNS_SYSCTLS:
        try:
            with open(path.replace("/proc/sys", proc_sys, 1)) as fh:
                value = fh.read().strip()
        except OSError:
            continue
        if value == bad:
            out.append((path[len("/proc/sys/"):].replace("/", ".") + "=" + value, fix))
    return out


def _userns_refusal(bwrap_error: str) -> str:
    """The one-line refusal when bubblewrap cannot create its user namespace as a normal user."""
    blockers = userns_blockers()
    why = "; ".join(s for s, _ in blockers) or "the kernel refused it"
    fix = "; ".join(f for _, f in blockers) or "allow unprivileged user namespaces"
    return (f"sandbox refuses to run: layer 'bubblewrap' cannot create its user namespace as uid {os.getuid()} "
            f"({why}; bwrap said: {bwrap_error.splitlines()[-1]}): fix: {fix}, or run as root; "
            f"{UNSAFE_ENV}=1 overrides for development only (NOT a security boundary)")


def _missing_bwrap_message() -> str:
    return ("sandbox layer 'bubblewrap' is missing (it enforces the network, filesystem and process isolation "
            "and the drop to an unprivileged uid): install it with `apt-get install bubblewrap`; "
            f"for development only, {UNSAFE_ENV}=1 runs without it (NOT a security boundary)")


# ---------------------------------------------------------------------------------------------------
# the public Sandbox
# ---------------------------------------------------------------------------------------------------
THREAT_CLASSES = {  # threat class -> layers that enforce it (one active layer is required)
    "network": ("bubblewrap", "seccomp"),
    "filesystem": ("bubblewrap", "landlock"),
    "exec/signals": ("seccomp",),
    "memory": ("rlimits", "cgroup"),
    "time": ("wall_clock",),
}


class Sandbox:
    """Runs untrusted Python in warm, locked-down worker processes.

    sb = Sandbox(Limits(wall_s=5, memory_mb=100))
    sb.run("print(2+2)")  # RunResult(status='ok', stdout='4\\n', ...)
    """

    def __init__(self, limits: "Limits | None" = None, allowed_modules=None, workers: int = 1,
                 unsafe_allow_weak: bool = False, _python_policy: bool = True):
        self.limits = limits or Limits()
        self.allowed_modules = tuple(allowed_modules) if allowed_modules is not None else policy.DEFAULT_ALLOWED_MODULES
        self.n_workers = max(1, int(workers))
        self.unsafe = unsafe_allow_weak or os.environ.get(UNSAFE_ENV) == "1"
        self._python_policy = _python_policy  # False only in the security tests: the OS layers alone
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closed = False
        self._layers: "dict | None" = None

    # -- workers ---------------------------------------------------------------------------------------
    def _start_worker(self) -> _Worker:
        if not self.unsafe and shutil.which("bwrap") is None:
            raise HessGPTError(_missing_bwrap_message())
        w = _Worker(self.limits, self.allowed_modules, self.unsafe)
        layers = self._describe(w)
        missing = [c for c, ls in THREAT_CLASSES.items() if not any(layers[x][0] for x in ls)]
        if missing and not self.unsafe:
            w.kill()
            fixes = {"exec/signals": "seccomp: `apt-get install python3-seccomp` or `pip install pyseccomp` (needs libseccomp2)",
                     "network": "`apt-get install bubblewrap`", "filesystem": "`apt-get install bubblewrap`",
                     "memory": "run as root for a cgroup", "time": "-"}
            raise HessGPTError("sandbox refuses to run: no active layer for " + ", ".join(
                f"{c} (fix: {fixes[c]})" for c in missing) + f"; {UNSAFE_ENV}=1 overrides for development only")
        self._layers = layers
        return w

    def _describe(self, w: _Worker) -> dict:
        as_root = os.geteuid() == 0
        layers = {"policy": (True, f"AST/import check + restricted builtins; allowed: {', '.join(self.allowed_modules)}")}
        layers["bubblewrap"] = (w.bwrap, ("net/pid/ipc/uts/mount namespaces, read-only /usr and Python dirs, tmpfs /tmp, "
                                          "clean env, die-with-parent") if w.bwrap else "bwrap not found: `apt-get install bubblewrap`")
        uid_ok, uid_detail = w.layers["worker_uid"]
        layers["unprivileged_uid"] = (uid_ok, (f"worker {uid_detail} (real uid via setpriv, no capabilities, no_new_privs)"
                                               if as_root else f"worker {uid_detail} in a user namespace, no capabilities"))
        if w.cgroup:
            layers["cgroup"] = (True, f"{'v2' if w.cgroup.v2 else 'v1'} memory limit = warm {w.cgroup_base_mb:.0f} MB + "
                                      f"copy-on-write {w.cgroup_cow_mb:.0f} MB + {self.limits.memory_mb} MB + 16 MB, "
                                      f"pids.max {self.limits.pids}")
        else:
            layers["cgroup"] = (False, cgroup_status()[1])
        rl_ok, rl_detail = w.layers["rlimits"]
        layers["rlimits"] = (rl_ok, rl_detail.replace("memory_mb", f"{self.limits.memory_mb} MB") + f" (warm VM {w.vm_mb:.0f} MB)")
        layers["landlock"] = tuple(w.layers["landlock"])
        layers["seccomp"] = tuple(w.layers["seccomp"])
        layers["wall_clock"] = (True, f"process-group SIGKILL at {self.limits.wall_s} s, stdout cap {self.limits.output_bytes} B")
        return layers

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise HessGPTError("the sandbox is closed")
                if self._idle:
                    w = self._idle.pop()
                    if w.alive():
                        return w
                    self._all.remove(w)
                    w.kill()
                    continue
                if len(self._all) < self.n_workers:
                    self._all.append(None)  # reserve the slot while starting outside the lock
                    break
                self._cond.wait()
        try:
            w = self._start_worker()
        except BaseException:
            with self._cond:
                self._all.remove(None)
                self._cond.notify()
            raise
        with self._cond:
            self._all[self._all.index(None)] = w
        return w

    def _release(self, w: _Worker) -> None:
        with self._cond:
            if w.alive() and not self._closed:
                self._idle.append(w)
            else:
                if w in self._all:
                    self._all.remove(w)
                w.kill()
            self._cond.notify()

    # -- public ----------------------------------------------------------------------------------------
    def run(self, code: str) -> RunResult:
        if not isinstance(code, str):
            raise TypeError(f"code must be str, got {type(code).__name__}")
        if self._python_policy:  # friendly message without a fork (the child checks again)
            msg = policy.check(code, self.allowed_modules)
            if msg:
                return RunResult("policy", "", f"PolicyError: {msg}", 0.0)
        w = self._acquire()
        try:
            return w.run(code, self._python_policy)
        finally:
            self._release(w)

    def run_many(self, codes: list[str]) -> list[RunResult]:
        if self.n_workers == 1 or len(codes) <= 1:
            return [self.run(c) for c in codes]
        with ThreadPoolExecutor(self.n_workers) as ex:
            return list(ex.map(self.run, codes))

    def layers(self) -> dict:
        """layer -> (active, detail), from the last started worker (starts one if needed)."""
        if self._layers is None:
            self._release(self._acquire())
        return dict(self._layers)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            workers = [w for w in self._all if w is not None]
            self._all, self._idle = [], []
            self._cond.notify_all()
        for w in workers:
            w.kill()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
