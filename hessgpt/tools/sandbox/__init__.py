"""The secure Python sandbox: untrusted (model-written) code runs in warm, locked-down workers.

    from hessgpt.tools.sandbox import Sandbox, Limits, execute
    with Sandbox(Limits(wall_s=5.0, memory_mb=100, output_bytes=65536)) as sb:
        r = sb.run("import sympy as sp; x = sp.Symbol('x'); print(sp.solve(x**2 - 2, x))")
        r.status, r.stdout, r.stderr, r.duration_ms
    execute("print(2+2)")  # -> "4\\n" (or a short error text), through a lazily created module-level Sandbox

Layers and what each blocks: docs/sandbox.md. `hessgpt sandbox doctor` prints which are active.
"""

import atexit
import threading

from hessgpt.tools.sandbox.policy import DEFAULT_ALLOWED_MODULES
from hessgpt.tools.sandbox.supervisor import Limits, RunResult, Sandbox

__all__ = ["Sandbox", "Limits", "RunResult", "execute", "doctor", "DEFAULT_ALLOWED_MODULES"]

_default: "Sandbox | None" = None
_default_lock = threading.Lock()


def _default_sandbox() -> Sandbox:
    global _default
    with _default_lock:
        if _default is None:
            _default = Sandbox()
            atexit.register(_default.close)
        return _default


def execute(code: str) -> str:
    """The design's simple tool API: stdout of `code`, or a short error text (traceback, timeout, ...)."""
    return _default_sandbox().run(code).text()


def doctor(limits: "Limits | None" = None) -> dict:
    """layer -> (active: bool, detail: str). Starts a worker to probe; raises HessGPTError if one can't start."""
    with Sandbox(limits=limits) as sb:
        return sb.layers()
