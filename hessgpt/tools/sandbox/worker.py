"""The warm sandbox worker: runs INSIDE bubblewrap, forks one locked-down child per request.

Started by `supervisor.py` as `python -I -S -B worker.py CONFIG_JSON` (no site, no env, no bytecode
writes). It imports only the standard library at top level, then pre-imports and warms numpy and
sympy (incl. a first `sympy.solve`, ~300 ms cold) so each run only costs a fork (~ms).

Protocol (fd 0 in, fd 1 out, one JSON object per line):
  start   -> {"ready": true, "layers": {...}}          (or {"ready": false, "error": "..."})
  request <- {"code": "...", "policy": true}
  reply   -> {"status": ..., "stdout": ..., "stderr": ..., "duration_ms": ...}

Per request the worker forks a child that, before touching the untrusted code:
  new session (own process group) -> oom_score_adj 1000 -> fds 0/1/2 = /dev/null + two pipes, every
  other fd closed -> rlimits (CPU, AS = current + memory_mb, FSIZE 0, NOFILE, CORE 0) -> Landlock
  (read-only on the Python dirs, no TCP, no abstract unix sockets, no signals out of the domain) ->
  seccomp (no sockets, exec, fork, ptrace, kill, mount, open-for-write, ...) -> restricted builtins.
The worker (trusted code) enforces the wall clock with a process-group SIGKILL and caps the output.
Nothing survives a run: the next request forks again from the pristine warm worker.

This file must not import hessgpt (it runs with `-I -S` from a read-only bind mount); the policy
module is loaded from the same directory by path.
"""

import ctypes
import errno
import gc
import json
import os
import resource
import select
import signal
import sys
import time

# exit codes the child uses to tell the worker how the code ended (the code itself can only lie about
# its own outcome, never escape through them)
EXIT_OK, EXIT_ERROR, EXIT_POLICY, EXIT_MEMORY = 0, 1, 2, 3

STDERR_CAP = 8192  # stderr kept (tracebacks are shortened anyway)


# ---------------------------------------------------------------------------------------------------
# Landlock (via raw syscalls: the same numbers on x86_64 and aarch64)
# ---------------------------------------------------------------------------------------------------
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
# filesystem access rights by ABI version
_FS_RIGHTS_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
FS_EXECUTE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 2, 1 << 3
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel struct is packed
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi() -> int:
    abi = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                        ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    return max(int(abi), 0)


def apply_landlock(abi: int, read_dirs: list[str]) -> None:
    """Deny all filesystem access except reading `read_dirs`; deny TCP, abstract unix sockets, signals."""
    fs = _FS_RIGHTS_ABI[max(k for k in _FS_RIGHTS_ABI if k <= abi)]
    attr = _RulesetAttr(fs, (NET_BIND_TCP | NET_CONNECT_TCP) if abi >= 4 else 0,
                        (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if abi >= 6 else 0)
    size = 8 if abi < 4 else (16 if abi < 6 else 24)  # struct size grows with the ABI
    rfd = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if rfd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    for d in read_dirs:
        try:
            fd = os.open(d, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        rule = _PathBeneathAttr(FS_READ_FILE | FS_READ_DIR, fd)
        if _libc.syscall(SYS_LANDLOCK_ADD_RULE, ctypes.c_int(rfd), ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                         ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule {d}")
        os.close(fd)
    if _libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if _libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(rfd), ctypes.c_uint32(0)) < 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    os.close(rfd)


# ---------------------------------------------------------------------------------------------------
# seccomp (libseccomp through Debian's `seccomp` module or PyPI `pyseccomp`)
# ---------------------------------------------------------------------------------------------------
def load_seccomp_module(sonames: dict):
    """`sonames` ({"c": "libc.so.6", "seccomp": "libseccomp.so.2"}) are resolved by the host: inside the
    sandbox `ctypes.util.find_library` has neither ldconfig's cache tool nor a writable temp dir."""
    try:
        import seccomp  # Debian python3-seccomp (system interpreter only)

        return seccomp
    except ImportError:
        pass
    import ctypes.util

    real = ctypes.util.find_library
    ctypes.util.find_library = lambda name: sonames.get(name) or real(name)
    try:
        import pyseccomp  # PyPI, ctypes over libseccomp.so
    finally:
        ctypes.util.find_library = real
    return pyseccomp


# syscalls answered with EPERM for the untrusted child. Threads stay possible (clone with CLONE_THREAD).
DENY_SYSCALLS = [
    # network (also: no network namespace interfaces, Landlock TCP)
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4", "sendto", "sendmsg",
    "sendmmsg", "recvfrom", "recvmsg", "recvmmsg",
    # process creation / exec
    "execve", "execveat", "fork", "vfork",
    # signals and tracing of other processes
    "kill", "tkill", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_send_signal",
    "pidfd_getfd", "kcmp", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
    # filesystem mutation (also: read-only mounts, Landlock, RLIMIT_FSIZE=0)
    "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "link", "linkat",
    "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "chown", "fchown", "lchown", "fchownat",
    "truncate", "ftruncate", "mknod", "mknodat", "utime", "utimes", "utimensat", "futimesat",
    "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
    "memfd_create", "creat", "name_to_handle_at", "open_by_handle_at",
    # namespaces, mounts, kernel interfaces
    "mount", "umount2", "pivot_root", "chroot", "setns", "unshare", "mount_setattr", "move_mount",
    "open_tree", "fsopen", "fsmount", "fsconfig", "fspick", "bpf", "perf_event_open", "userfaultfd",
    "keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "iopl", "ioperm",
    "personality", "setpgid", "setsid", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "landlock_create_ruleset", "seccomp",
]
CLONE_THREAD = 0x00010000
O_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | getattr(os, "O_TMPFILE", 0)


def apply_seccomp(sc, self_pid: int) -> None:
    f = sc.SyscallFilter(defaction=sc.ALLOW)
    eperm = sc.ERRNO(errno.EPERM)
    for name in DENY_SYSCALLS:
        try:
            f.add_rule(eperm, name)
        except Exception:  # syscall unknown on this arch (e.g. fork on aarch64)
            pass
    # clone3 cannot be filtered on its flags (they live in a struct): ENOSYS makes glibc fall back to clone
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    # clone: only threads (a process-creating clone has no CLONE_THREAD)
    f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    # tgkill: only to ourselves (glibc raise()/abort())
    f.add_rule(eperm, "tgkill", sc.Arg(0, sc.NE, self_pid))
    # open/openat with any write/create flag
    for bit in (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND, getattr(os, "O_TMPFILE", 0)):
        if bit:
            f.add_rule(eperm, "open", sc.Arg(1, sc.MASKED_EQ, bit, bit))
            f.add_rule(eperm, "openat", sc.Arg(2, sc.MASKED_EQ, bit, bit))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "openat2")  # flags in a struct: glibc/Python fall back to openat
    f.load()  # sets no_new_privs itself


# ---------------------------------------------------------------------------------------------------
# the child
# ---------------------------------------------------------------------------------------------------
def _vm_size_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def child_main(cfg: dict, code_fd: int, out_fd: int, err_fd: int, sc, policy_mod, abi: int) -> None:
    """Runs in the forked child; never returns (os._exit). The child is forked AHEAD of the request
    (a "spare"): it locks itself down, then blocks reading the request from `code_fd` until EOF."""
    code = EXIT_ERROR
    try:
        os.setsid()  # own session and process group: the worker kills the whole group on timeout
        try:
            with open("/proc/self/oom_score_adj", "w") as fh:  # the cgroup OOM killer picks us, not the worker
                fh.write("1000")
        except OSError:
            pass
        os.dup2(code_fd, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.closerange(3, 65536)  # the worker's control pipes included

        lim = cfg["limits"]
        vm = _vm_size_bytes()
        mem = int(lim["memory_mb"]) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        cpu = int(lim["wall_s"]) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        # address space: what the warm worker already maps (numpy+sympy reserve ~200 MB of it) + the budget
        resource.setrlimit(resource.RLIMIT_AS, (vm + mem, vm + mem))

        if abi > 0:
            apply_landlock(abi, cfg["read_dirs"])
        if sc is not None:
            apply_seccomp(sc, os.getpid())

        chunks = []
        while True:  # the request: b"1\n" (policy on) or b"0\n", then the source, then EOF
            chunk = os.read(0, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        policy_flag, _, source = b"".join(chunks).partition(b"\n")
        if not policy_flag:  # the worker went away without a request
            os._exit(EXIT_OK)
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
        code = policy_mod.run_untrusted(source.decode("utf-8", "replace"), allowed=cfg["allowed_modules"],
                                        use_policy=policy_flag == b"1")
    except BaseException as e:  # a failure of the setup itself: report it, never run the code unprotected
        try:
            os.write(2, f"sandbox setup failed: {type(e).__name__}: {e}\n".encode())
        except OSError:
            pass
        code = EXIT_ERROR
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        os._exit(code)


def spawn_spare(cfg: dict, sc, policy_mod, abi: int) -> tuple:
    """Fork the next child now (fork of a numpy+sympy process costs ~10 ms of page tables, the layers a
    few more), so a request only pays for writing the code. -> (pid, code_w, out_r, err_r)"""
    code_r, code_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        child_main(cfg, code_r, out_w, err_w, sc, policy_mod, abi)
    for fd in (code_r, out_w, err_w):
        os.close(fd)
    return pid, code_w, out_r, err_r


def run_request(cfg: dict, req: dict, spare: tuple) -> dict:
    lim = cfg["limits"]
    out_cap = int(lim["output_bytes"])
    pid, code_w, out_r, err_r = spare
    t0 = time.perf_counter()
    try:  # a pipe holds 64 KB: longer code is written while the child reads
        payload = (b"1\n" if req.get("policy", True) else b"0\n") + req["code"].encode("utf-8", "surrogatepass")
        view = memoryview(payload)
        while view:
            n = os.write(code_w, view[: 1 << 16])
            view = view[n:]
    except OSError:  # the spare died (e.g. its setup failed): its stderr says why
        pass
    os.close(code_w)
    deadline = t0 + float(lim["wall_s"])
    bufs = {out_r: bytearray(), err_r: bytearray()}
    caps = {out_r: out_cap, err_r: STDERR_CAP}
    open_fds = [out_r, err_r]
    killed_for = None
    while open_fds:
        left = deadline - time.perf_counter()
        if left <= 0:
            killed_for = "timeout"
            break
        ready, _, _ = select.select(open_fds, [], [], left)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.remove(fd)
                os.close(fd)
                continue
            bufs[fd] += chunk
            if len(bufs[fd]) > caps[fd]:
                if fd == out_r:
                    killed_for = "output_cap"
                del bufs[fd][caps[fd]:]
        if killed_for:
            break
    if killed_for:
        _kill_tree(pid)
    # the child closed its pipes (or was killed): reap it, but never wait past the deadline + grace
    status = _reap(pid, deadline + 1.0)
    duration_ms = (time.perf_counter() - t0) * 1000.0
    for fd in open_fds:
        os.close(fd)
    stdout = bytes(bufs[out_r]).decode("utf-8", "replace")
    stderr = bytes(bufs[err_r]).decode("utf-8", "replace")
    if killed_for == "timeout":
        res = "timeout"
        stderr += f"\nTimeoutError: ran longer than {lim['wall_s']} s (killed)"
    elif killed_for == "output_cap":
        res = "output_cap"
        stderr += f"\nOutputError: output over {out_cap} bytes (killed)"
    elif os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in (signal.SIGXCPU,):
            res, stderr = "timeout", stderr + "\nTimeoutError: CPU time limit reached (killed)"
        elif sig == signal.SIGKILL:
            # not killed by us: the cgroup OOM killer (or RLIMIT_CPU's hard SIGKILL)
            res, stderr = "memory", stderr + f"\nMemoryError: killed over the {lim['memory_mb']} MB memory limit"
        elif sig == signal.SIGSYS:
            res, stderr = "policy", stderr + "\nPermissionError: forbidden system call (killed)"
        else:
            res, stderr = "error", stderr + f"\nkilled by signal {signal.Signals(sig).name}"
    else:
        rc = os.WEXITSTATUS(status)
        res = {EXIT_OK: "ok", EXIT_POLICY: "policy", EXIT_MEMORY: "memory"}.get(rc, "error")
    return {"status": res, "stdout": stdout, "stderr": stderr.strip("\n") if res != "ok" else stderr,
            "duration_ms": duration_ms}


def _kill_tree(pid: int) -> None:
    for fn, target in ((os.killpg, pid), (os.kill, pid)):
        try:
            fn(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(pid: int, until: float) -> int:
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            return status
        if time.perf_counter() > until:
            _kill_tree(pid)
            return os.waitpid(pid, 0)[1]
        time.sleep(0.001)


# ---------------------------------------------------------------------------------------------------
# worker main
# ---------------------------------------------------------------------------------------------------
def _load_policy(path: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("hessgpt_sandbox_policy", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _warm(allowed: list[str]) -> None:
    """Import the allowed modules and run a first numpy op and sympy.solve (else ~300 ms per run)."""
    for name in allowed:
        try:
            __import__(name)
        except ImportError:
            pass
    if "numpy" in sys.modules:
        import numpy as np

        np.linalg.solve(np.eye(2), np.ones(2))
        np.random.default_rng(0).normal(size=3)
    if "sympy" in sys.modules:
        import sympy as sp

        x = sp.Symbol("x")
        sp.solve(x**2 - 2, x)
        sp.simplify(sp.sin(x) ** 2 + sp.cos(x) ** 2)
        sp.integrate(x**2, x)
        sp.factor(x**2 - 1)
        sp.sympify("x+1")


def main() -> None:
    cfg = json.loads(sys.argv[1])
    ctl_in = os.fdopen(os.dup(0), "rb", buffering=0)
    ctl_out = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open("/dev/null", os.O_RDWR)  # stray prints of libraries must not corrupt the protocol
    os.dup2(null, 0)
    os.dup2(null, 1)

    def send(obj: dict) -> None:
        ctl_out.write(json.dumps(obj).encode() + b"\n")

    try:
        sys.path[:0] = cfg["sys_path"]
        policy_mod = _load_policy(cfg["policy_path"])
        sc = None
        try:
            sc = load_seccomp_module(cfg.get("sonames", {}))
            sc.SyscallFilter(defaction=sc.ALLOW)  # resolves libseccomp now (it may write a temp file)
        except Exception as e:  # noqa: BLE001 - reported as an inactive layer
            sc_err = f"{type(e).__name__}: {e}"
            sc = None
        abi = landlock_abi()
        _warm(cfg["allowed_modules"])
        # the warm heap goes to the GC's permanent generation: a collection in a child no longer walks
        # (and writes to, copy-on-write) every object of numpy/sympy (~20 MB of pages per run otherwise)
        gc.collect()
        gc.freeze()
        layers = {
            "worker_uid": (os.getuid() != 0, f"uid {os.getuid()} gid {os.getgid()}"),
            "landlock": (abi > 0, f"ABI {abi}" if abi else "not supported by this kernel"),
            "seccomp": (sc is not None, f"via {sc.__name__}" if sc is not None else sc_err),
            "rlimits": (True, "CPU, AS = warm size + memory_mb, FSIZE 0, NOFILE 64, CORE 0"),
        }
        send({"ready": True, "layers": layers, "vm_mb": _vm_size_bytes() / 2**20})
    except BaseException as e:
        send({"ready": False, "error": f"{type(e).__name__}: {e}"})
        return
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    spare = spawn_spare(cfg, sc, policy_mod, abi)
    while True:
        line = ctl_in.readline()
        if not line:
            return
        req = json.loads(line)
        reply = run_request(cfg, req, spare)
        send(reply)
        spare = spawn_spare(cfg, sc, policy_mod, abi)  # never reused: a fresh child per run


if __name__ == "__main__":
    main()
