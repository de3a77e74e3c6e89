"""Compile decode.c with the system C compiler into a per-machine cache and load it with ctypes.

    lib = build.load()        # ctypes.CDLL, or None (no compiler, no AVX2/FMA, build failed, disabled)

The shared library lives in `$HESSGPT_KERNEL_CACHE` (default `$XDG_CACHE_HOME/hessgpt/kernels`, i.e.
`~/.cache/hessgpt/kernels`) under a name hashing the source, the compiler command and flags, the compiler's
version and the CPU's feature flags, so an edited source, another compiler or a different CPU (a home directory
shared between machines) gets its own build. It is written to a temporary name and renamed into place
(atomic: concurrent processes never load half a file). Builds take ~1 s (no Python or torch headers).

Environment:
    HESSGPT_KERNELS=0          never build or use the kernels (the PyTorch path is used)
    HESSGPT_KERNEL_CACHE=DIR   where the compiled library is cached
    HESSGPT_KERNEL_OPENMP=1    use OpenMP parallel regions instead of the built-in pthread pool
    CC                         the compiler (default: cc)
"""

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile

log = logging.getLogger(__name__)

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "decode.c")
FLAGS = ["-O3", "-shared", "-fPIC", "-std=gnu11"]


def cache_dir() -> str:
    d = os.environ.get("HESSGPT_KERNEL_CACHE")
    if d:
        return d
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hessgpt", "kernels")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty if unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def unavailable_reason() -> str | None:
    """Why the kernels cannot be built here, or None if they can be tried."""
    if os.environ.get("HESSGPT_KERNELS", "1").strip().lower() in ("0", "false", "no", "off"):
        return "disabled by HESSGPT_KERNELS=0"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"not an x86-64 CPU ({platform.machine()})"
    flags = cpu_flags()
    if not {"avx2", "fma"} <= flags:
        return "the CPU lacks AVX2/FMA (or /proc/cpuinfo is unreadable)"
    if shutil.which(os.environ.get("CC", "cc")) is None:
        return f"no C compiler ({os.environ.get('CC', 'cc')} not on PATH)"
    return None


def _command(openmp: bool, march: str = "native") -> list[str]:
    return [os.environ.get("CC", "cc"), *FLAGS, f"-march={march}", *(["-fopenmp", "-DHG_OPENMP"] if openmp else [])]


def _compiler_version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def library_path(openmp: bool = False, march: str = "native") -> str:
    cmd = _command(openmp, march)
    h = hashlib.sha256()
    with open(SOURCE, "rb") as f:
        h.update(f.read())
    h.update(" ".join(cmd).encode())
    h.update(_compiler_version(cmd[0]).encode())
    h.update(" ".join(sorted(cpu_flags())).encode())
    return os.path.join(cache_dir(), f"decode-{h.hexdigest()[:16]}.so")


def compile_library(path: str, openmp: bool = False, march: str = "native") -> None:
    """Compile decode.c to `path` (atomically). Raises RuntimeError with the compiler's output on failure."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
    os.close(fd)
    try:
        out = subprocess.run([*_command(openmp, march), "-o", tmp, SOURCE, "-lm", "-lpthread"],
                             capture_output=True, text=True, timeout=300)
        if out.returncode:
            raise RuntimeError(f"compiling {SOURCE} failed:\n{out.stderr[-4000:]}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load(openmp: bool | None = None, march: str = "native") -> ctypes.CDLL | None:
    """Build (if needed) and load the kernel library; None, logged once at debug level, if it cannot be used.
    `march` is the compiler's -march (tests build "haswell" to check the AVX2 code on an AVX-512 machine)."""
    reason = unavailable_reason()
    if reason is not None:
        log.debug("hessgpt native kernels off: %s", reason)
        return None
    if openmp is None:
        openmp = os.environ.get("HESSGPT_KERNEL_OPENMP", "0") == "1"
    try:
        path = library_path(openmp, march)
        if not os.path.exists(path):
            compile_library(path, openmp, march)
        lib = ctypes.CDLL(path)
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        log.debug("hessgpt native kernels off: %s", e)
        return None
    _declare(lib)
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    p, L, i = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    lib.hg_gemv.argtypes = [p, p, p, p, L, L, i]
    lib.hg_gemv.restype = None
    lib.hg_gemm.argtypes = [p, p, i, p, p, p, L, L, L, i]
    lib.hg_gemm.restype = None
    lib.hg_decode.argtypes = [p, L, L, p, i]
    lib.hg_decode.restype = None
    lib.hg_decode_rows.argtypes = [p, L, p, p, p, L, p, p, p, i]
    lib.hg_decode_rows.restype = None
    lib.hg_set_spin_us.argtypes = [L]
    lib.hg_set_spin_us.restype = None
    lib.hg_simd_width.restype = i
    lib.hg_openmp.restype = i
