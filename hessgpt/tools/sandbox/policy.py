"""The in-process layer: an import/AST policy and restricted builtins — for FRIENDLY ERRORS ONLY.

This is not a security boundary (numpy and sympy hand out `os`, `ctypes` and `eval`; `__subclasses__`
walks reach the real builtins). It exists so that the model gets "import of 'os' is not allowed"
instead of an opaque EPERM. The boundary is the OS layers (bubblewrap, cgroup, rlimits, Landlock,
seccomp) around the process that runs this code.

Standard library only: `worker.py` loads this file by path inside the sandbox.
"""

import ast
import builtins
import linecache
import sys
import traceback

DEFAULT_ALLOWED_MODULES = (
    "math", "cmath", "numpy", "sympy", "statistics", "fractions", "decimal", "itertools", "functools",
    "collections", "json", "re", "datetime", "random", "string",
)

EXIT_OK, EXIT_ERROR, EXIT_POLICY, EXIT_MEMORY = 0, 1, 2, 3
SOURCE_NAME = "<code>"

# builtins the untrusted code does not get (open: files; eval/exec/compile: dynamic code; the rest:
# introspection of the caller or interactive helpers)
BLOCKED_BUILTINS = frozenset({
    "open", "eval", "exec", "compile", "input", "breakpoint", "help", "exit", "quit", "globals", "locals",
    "vars", "memoryview", "__loader__", "__spec__", "copyright", "credits", "license",
})
# dunder attributes code may use; any other `obj.__x__` is a policy error (frame/class walks)
ALLOWED_DUNDERS = frozenset({
    "__init__", "__name__", "__doc__", "__len__", "__iter__", "__next__", "__repr__", "__str__", "__eq__",
    "__lt__", "__le__", "__gt__", "__ge__", "__hash__", "__add__", "__sub__", "__mul__", "__truediv__",
    "__getitem__", "__setitem__", "__contains__", "__call__", "__enter__", "__exit__", "__post_init__",
})


class PolicyError(Exception):
    """The code uses something the policy forbids; the message is meant for the model."""


def check(code: str, allowed: "list[str] | tuple[str, ...]" = DEFAULT_ALLOWED_MODULES) -> "str | None":
    """Static check. Returns a friendly message (e.g. "import of 'os' is not allowed") or None.

    A SyntaxError is not a policy matter: it returns None and surfaces when the code runs.
    """
    try:
        tree = ast.parse(code, filename=SOURCE_NAME)
    except (SyntaxError, ValueError):
        return None
    allowed_set = set(allowed)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in allowed_set:
                    return f"import of {alias.name.split('.')[0]!r} is not allowed (allowed: {', '.join(sorted(allowed_set))})"
        elif isinstance(node, ast.ImportFrom):
            mod = (node.module or "").split(".")[0]
            if node.level or mod not in allowed_set:
                return f"import of {mod or '.'!r} is not allowed (allowed: {', '.join(sorted(allowed_set))})"
        elif isinstance(node, ast.Attribute):
            a = node.attr
            if a.startswith("__") and a.endswith("__") and a not in ALLOWED_DUNDERS:
                return f"attribute {a!r} is not allowed"
            if a.startswith(("f_", "gi_", "cr_", "ag_", "tb_", "co_")) and a in _FRAME_ATTRS:
                return f"attribute {a!r} is not allowed"
        elif isinstance(node, ast.Name):
            if node.id in BLOCKED_BUILTINS or node.id in ("__builtins__", "__import__"):
                return f"{node.id!r} is not allowed"
    return None


_FRAME_ATTRS = frozenset({
    "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "gi_frame", "gi_code", "cr_frame", "cr_code",
    "ag_frame", "ag_code", "tb_frame", "tb_next", "co_code", "co_consts",
})


def _guarded_import(allowed: set):
    real_import = builtins.__import__

    def _import(name, globals=None, locals=None, fromlist=(), level=0):
        top = name.split(".")[0]
        if level or top not in allowed:
            raise ImportError(f"import of {top!r} is not allowed")
        return real_import(name, globals, locals, fromlist, level)

    return _import


def safe_builtins(allowed) -> dict:
    b = {k: v for k, v in vars(builtins).items() if k not in BLOCKED_BUILTINS}
    b["__import__"] = _guarded_import(set(allowed))
    return b


def _short_traceback(exc: BaseException) -> str:
    """The traceback limited to the user's own frames: what a model can act on."""
    te = traceback.TracebackException.from_exception(exc, limit=None)
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename == SOURCE_NAME][-5:])
    te.__cause__ = te.__context__ = None
    return "".join(te.format()).replace(f'File "{SOURCE_NAME}", ', "")


def _compile_with_echo(code: str):
    """Compile `code`; if its last statement is a bare expression (not a call returning None, like
    print), its value is printed as a REPL would."""
    tree = ast.parse(code, filename=SOURCE_NAME)
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body[-1]
        call = ast.Call(func=ast.Name("__sandbox_echo__", ast.Load()), args=[last.value], keywords=[])
        tree.body[-1] = ast.copy_location(ast.Expr(call), last)
        ast.fix_missing_locations(tree)
    return compile(tree, SOURCE_NAME, "exec")


def _echo(value) -> None:
    if value is not None:
        print(repr(value) if not isinstance(value, str) else value)


def run_untrusted(code: str, allowed=DEFAULT_ALLOWED_MODULES, use_policy: bool = True) -> int:
    """Run `code` with restricted builtins; print a short traceback on error. Returns an exit code.

    use_policy=False runs with the real builtins and no checks (used by the security tests to show
    that the OS layers hold on their own)."""
    linecache.cache[SOURCE_NAME] = (len(code), None, code.splitlines(True), SOURCE_NAME)
    if use_policy:
        msg = check(code, allowed)
        if msg:
            print(f"PolicyError: {msg}", file=sys.stderr)
            return EXIT_POLICY
    try:
        compiled = _compile_with_echo(code)
    except SyntaxError as e:
        print("".join(traceback.format_exception_only(type(e), e)).replace(f'File "{SOURCE_NAME}", ', ""),
              file=sys.stderr, end="")
        return EXIT_ERROR
    g = {"__name__": "__main__", "__sandbox_echo__": _echo,
         "__builtins__": safe_builtins(allowed) if use_policy else builtins}
    try:
        exec(compiled, g)
    except SystemExit as e:
        return EXIT_OK if e.code in (None, 0) else EXIT_ERROR
    except MemoryError:
        print("MemoryError: out of memory (over the sandbox memory limit)", file=sys.stderr)
        return EXIT_MEMORY
    except ImportError as e:
        print(_short_traceback(e), file=sys.stderr, end="")
        return EXIT_POLICY if "is not allowed" in str(e) else EXIT_ERROR
    except BaseException as e:  # noqa: BLE001 - any error of the untrusted code is its result
        print(_short_traceback(e), file=sys.stderr, end="")
        return EXIT_ERROR
    return EXIT_OK
