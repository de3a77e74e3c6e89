"""Behaviour of the sandbox API: results, statuses, limits, parallel runs, the simple `execute`."""

import shutil

import pytest

from hessgpt.errors import HessGPTError
from hessgpt.tools.sandbox import Limits, RunResult, Sandbox, execute
from hessgpt.tools.sandbox import policy

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="covered loudly by test_sandbox_security.py")


# -- the policy layer alone (pure Python, no processes) ------------------------------------------------
@pytest.mark.parametrize("code,needle", [
    ("import os", "'os'"), ("from subprocess import run", "'subprocess'"), ("import importlib", "'importlib'"),
    ("open('/etc/passwd')", "'open'"), ("eval('1')", "'eval'"), ("().__class__.__subclasses__()", "__subclasses__"),
    ("print.__self__", "__self__"), ("def g(): yield 1\ng().gi_frame", "gi_frame"), ("__import__('os')", "__import__"),
])
def test_policy_rejects_with_friendly_message(code, needle):
    msg = policy.check(code)
    assert msg is not None and needle in msg


@pytest.mark.parametrize("code", ["import numpy as np\nprint(np.eye(2))", "from sympy import Symbol",
                                  "import collections.abc", "x = [i**2 for i in range(3)]", "def f(:"])
def test_policy_accepts_ordinary_code(code):
    assert policy.check(code) is None


def test_policy_allowed_modules_are_configurable():
    assert policy.check("import heapq") is not None
    assert policy.check("import heapq", allowed=[*policy.DEFAULT_ALLOWED_MODULES, "heapq"]) is None


def test_refuses_without_bwrap(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("HESSGPT_SANDBOX_UNSAFE", raising=False)
    with pytest.raises(HessGPTError, match="bubblewrap.*apt-get install bubblewrap"):
        Sandbox().run("print(1)")


# -- real runs ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sb():
    with Sandbox(Limits(wall_s=2.0, memory_mb=100, output_bytes=4096)) as s:
        yield s


@needs_bwrap
def test_ok_numpy_sympy(sb):
    r = sb.run("import numpy as np, sympy as sp\nx = sp.Symbol('x')\nprint(np.arange(4).sum(), sp.solve(x**2 - 4, x))")
    assert isinstance(r, RunResult)
    assert (r.status, r.stdout) == ("ok", "6 [-2, 2]\n")
    assert 0 < r.duration_ms < 2000


@needs_bwrap
def test_last_expression_is_echoed(sb):
    assert sb.run("x = 6\nx * 7").stdout == "42\n"
    assert sb.run("print('a')").stdout == "a\n"  # print returns None: nothing extra


@needs_bwrap
def test_error_has_short_traceback(sb):
    r = sb.run("def f(x):\n    return 1 / x\nf(0)")
    assert r.status == "error"
    assert "ZeroDivisionError" in r.stderr and "line 2, in f" in r.stderr
    assert "worker.py" not in r.stderr and "policy.py" not in r.stderr  # only the user's frames


@needs_bwrap
def test_syntax_error(sb):
    r = sb.run("print(1")
    assert r.status == "error" and "SyntaxError" in r.stderr


@needs_bwrap
def test_policy_status(sb):
    r = sb.run("import os\nprint(os.getcwd())")
    assert r.status == "policy" and "import of 'os' is not allowed" in r.stderr and r.stdout == ""


@needs_bwrap
def test_timeout_keeps_partial_output(sb):
    r = sb.run("print('started', flush=True)\nwhile True: pass")
    assert r.status == "timeout" and r.stdout == "started\n"
    assert 1900 <= r.duration_ms < 4000


@needs_bwrap
def test_output_cap(sb):
    r = sb.run("print('y' * 10000)")
    assert r.status == "output_cap" and len(r.stdout) == 4096


@needs_bwrap
def test_memory_limit(sb):
    r = sb.run("a = bytearray(150 * 2**20)\nprint(len(a))")
    assert r.status == "memory" and r.stdout == ""
    assert sb.run("a = bytearray(50 * 2**20)\nprint(len(a))").stdout == f"{50 * 2**20}\n"  # under the limit


@needs_bwrap
def test_run_many_parallel_and_ordered():
    with Sandbox(workers=2) as s:
        res = s.run_many([f"print({i} * 3)" for i in range(20)])
    assert [r.stdout for r in res] == [f"{i * 3}\n" for i in range(20)]


@needs_bwrap
def test_execute_simple_api():
    assert execute("print(2 + 2)") == "4\n"
    assert "ZeroDivisionError" in execute("1/0")
    assert "not allowed" in execute("import os")
