"""Independent references: each sample's expected result computed here, in plain Python (never by running the
sample's code), type-tagged (`_rnum`, `_rlist`, `_rstr`, ...), and `agrees`, which compares a reference
with the sandbox's stdout; a sample is kept only when both agree."""

import math
from fractions import Fraction


# ---------------------------------------------------------------------------------------------------
# independent references: computed here, in plain Python (never by running the sample's code), and
# compared with the sandbox's stdout; a sample is kept only when both agree
# ---------------------------------------------------------------------------------------------------
def _rnum(v, tol=None) -> dict:
    r = {"type": "number", "value": v}
    if tol is not None:
        r["tol"] = tol
    return r


def _plain(v):
    """Tuples -> lists, recursively (JSON-like values)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _rlist(v, ordered: bool = True) -> dict:
    return {"type": "list", "value": _plain(v), "ordered": ordered}


def _rstr(v: str) -> dict:
    return {"type": "string", "value": v}


_BINOPS = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mult": lambda a, b: a * b, "Div": lambda a, b: a / b,
           "FloorDiv": lambda a, b: a // b, "Mod": lambda a, b: a % b, "Pow": lambda a, b: a ** b}


def _eval_shown(text: str) -> Fraction:
    """The expression as the user sees it ("17 × 23", "2^5") evaluated exactly with Fractions."""
    import ast

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow):
                return Fraction(a.numerator ** int(b))
            return Fraction(_BINOPS[type(node.op).__name__](a, b))
        raise ValueError(f"unexpected expression {text!r}")

    return ev(ast.parse(text.replace("×", "*").replace("^", "**"), mode="eval"))


def _mean(d):
    return sum(d) / len(d)


def _median(d):
    s, n = sorted(d), len(d)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _stdev(d):
    m = _mean(d)
    return (sum((x - m) ** 2 for x in d) / (len(d) - 1)) ** 0.5


def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


def _fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def _factorial(n):
    r = 1
    for i in range(2, n + 1):
        r *= i
    return r


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def _insertion_sort(data, desc=False):
    out = []
    for x in data:
        i = len(out)
        while i > 0 and ((out[i - 1] < x) if desc else (out[i - 1] > x)):
            i -= 1
        out.insert(i, x)
    return out


def _binary(n: int) -> str:
    s = ""
    while n:
        s, n = str(n % 2) + s, n // 2
    return s or "0"


def _digit_sum(n: int) -> int:
    t = 0
    while n:
        t, n = t + n % 10, n // 10
    return t


def _argmax(d: dict):
    best = None
    for k, v in d.items():
        if best is None or v > d[best]:
            best = k
    return best


def _invert(d: dict) -> list:
    """{v: k} as a dict comprehension builds it (a later key wins, first position kept), as pairs."""
    order, val = [], {}
    for k, v in d.items():
        if v not in val:
            order.append(v)
        val[v] = k
    return [[v, val[v]] for v in order]


def _top_letters(text: str, k: int) -> list:
    counts: dict = {}
    for c in text:
        if c.isalpha():
            counts[c] = counts.get(c, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])   # stable: ties keep first appearance
    return [[c, n] for c, n in ranked[:k]]


def _sym_ref(op: str, f: str) -> str:
    import sympy as sp

    x = sp.symbols("x")
    e = sp.sympify(f, locals={"x": x})
    return str(sp.diff(e, x) if op == "diff" else sp.integrate(e, x))


def _poly_integral(f: str, lo: int, hi: int) -> Fraction:
    """Definite integral of a polynomial string ('3*x**2 - 5*x + 2'), term by term with Fractions."""
    total = Fraction(0)
    for t in (t for t in f.replace(" ", "").replace("-", "+-").split("+") if t):
        neg, t = t.startswith("-"), t.lstrip("-")
        if "x" not in t:
            c, d = int(t), 0
        else:
            head, _, tail = t.rpartition("x")
            c = int(head.rstrip("*")) if head else 1
            d = int(tail[2:]) if tail else 1
        total += (-c if neg else c) * (Fraction(hi) ** (d + 1) - Fraction(lo) ** (d + 1)) / (d + 1)
    return total


def _parse_number(text: str) -> float:
    t = text.strip()
    if "/" in t:
        return float(Fraction(t))
    return float(t)


def _num_eq(a, b, tol) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= (tol if tol is not None else 1e-9 * max(1.0, abs(b)))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_num_eq(x, y, tol) for x, y in zip(a, b))
    return a == b


def _literal(text: str):
    import ast

    v = ast.literal_eval(text.strip())
    if isinstance(v, dict):
        v = [[k, x] for k, x in v.items()]
    return _plain(v)


def _value_agrees(ref: dict, text: str) -> bool:
    kind, value = ref["type"], ref["value"]
    tol = ref.get("tol")
    if kind == "number":
        return _num_eq(_parse_number(text), value, tol)
    if kind == "string":
        return text.strip() == value
    if kind == "bool":
        return text.strip() == str(bool(value))
    if kind == "list":
        got = _literal(text)
        if not ref.get("ordered", True):
            return sorted(map(repr, got)) == sorted(map(repr, value))
        return _num_eq(got, value, 1e-6)
    if kind == "symbolic":
        import sympy as sp

        x = sp.symbols("x")
        got, want = sp.sympify(text.strip(), locals={"x": x}), sp.sympify(value, locals={"x": x})
        return str(got) == str(want) or sp.simplify(got - want) == 0
    if kind == "set_of_numbers":
        import sympy as sp

        got = sorted(float(sp.N(v)) for v in sp.sympify(text.strip()))
        return len(got) == len(value) and all(abs(a - b) <= 1e-6 for a, b in zip(got, sorted(value)))
    raise ValueError(f"unknown reference type {kind!r}")


def agrees(ref: dict, stdout: str, lines: bool = False) -> bool:
    """Does the sandbox's stdout state the reference? `lines`: a list reference, one item per printed line."""
    try:
        if lines:
            got = [line for line in stdout.strip().splitlines()]
            if len(got) != len(ref["value"]):
                return False
            return all(_value_agrees(_line_ref(v, ref.get("tol")), t) for v, t in zip(ref["value"], got))
        return _value_agrees(ref, stdout)
    except Exception:   # unparsable output: no agreement
        return False


def _line_ref(v, tol=None) -> dict:
    if isinstance(v, bool):
        return {"type": "bool", "value": v}
    if isinstance(v, (int, float)):
        return _rnum(v, tol if tol is not None else (6e-3 if isinstance(v, float) else None))
    if isinstance(v, str):
        return _rstr(v)
    return _rlist(v)
