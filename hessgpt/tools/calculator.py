"""A calculator for plain arithmetic: the expression is parsed with `ast` and walked node by node.

Nothing is ever passed to eval/exec. Only numbers, + - * / // % ** (and ^ as a power), parentheses,
unary minus/plus, a fixed set of math functions and constants are accepted; everything else (names,
attributes, calls to anything else, comprehensions, strings) is refused with a clear message.
Bounds keep it cheap: expression length, node count, exponent size, integer size, factorial argument.

    calculate("2 * (3 + 4) ** 2")   # 98
    calculate("sqrt(144) + 2^10")   # 1036.0
"""

import ast
import math
import operator
from typing import Any

from hessgpt.tools.registry import Tool

MAX_EXPR_CHARS = 500
MAX_NODES = 200
MAX_EXPONENT = 10_000
MAX_INT_DIGITS = 1_000
MAX_FACTORIAL = 1_000


class CalculatorError(ValueError):
    pass


def _factorial(n):
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    if not isinstance(n, int) or n < 0:
        raise CalculatorError("factorial needs a non-negative integer")
    if n > MAX_FACTORIAL:
        raise CalculatorError(f"factorial argument too large (max {MAX_FACTORIAL})")
    return math.factorial(n)


FUNCTIONS = {
    "sqrt": math.sqrt, "cbrt": lambda x: math.copysign(abs(x) ** (1 / 3), x),
    "exp": math.exp, "log": math.log, "ln": math.log, "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "cos": math.cos, "tan": math.tan,
    "asin": math.asin, "acos": math.acos, "atan": math.atan, "atan2": math.atan2,
    "sinh": math.sinh, "cosh": math.cosh, "tanh": math.tanh,
    "degrees": math.degrees, "radians": math.radians,
    "abs": abs, "round": round, "floor": math.floor, "ceil": math.ceil, "trunc": math.trunc,
    "factorial": _factorial, "gcd": math.gcd, "lcm": math.lcm, "hypot": math.hypot,
    "min": min, "max": max,
}
CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf}


def _check_int(x):
    if isinstance(x, int) and x.bit_length() > MAX_INT_DIGITS * 3.33:
        raise CalculatorError(f"result too large (more than {MAX_INT_DIGITS} digits)")
    return x


def _pow(a, b):
    if isinstance(b, (int, float)) and abs(b) > MAX_EXPONENT:
        raise CalculatorError(f"exponent too large (max {MAX_EXPONENT})")
    if isinstance(a, int) and isinstance(b, int) and b > 0 and a not in (0, 1, -1):
        if b * math.log2(abs(a)) > MAX_INT_DIGITS * 3.33:
            raise CalculatorError(f"result too large (more than {MAX_INT_DIGITS} digits)")
    return a ** b


def _div(a, b):
    if b == 0:
        raise CalculatorError("division by zero")
    return a / b


def _floordiv(a, b):
    if b == 0:
        raise CalculatorError("division by zero")
    return a // b


def _mod(a, b):
    if b == 0:
        raise CalculatorError("modulo by zero")
    return a % b


BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: _div,
    ast.FloorDiv: _floordiv, ast.Mod: _mod, ast.Pow: _pow, ast.BitXor: _pow,   # 2^10 means a power here
}
UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise CalculatorError(f"only numbers are allowed, got {node.value!r}")
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        return _check_int(BINARY[type(node.op)](_eval(node.left), _eval(node.right)))
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise CalculatorError(f"unknown name {node.id!r}; constants: {', '.join(CONSTANTS)}")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise CalculatorError(f"unknown function {name!r}; functions: {', '.join(FUNCTIONS)}")
        if node.keywords:
            raise CalculatorError("keyword arguments are not allowed")
        args = [_eval(a) for a in node.args]
        try:
            return _check_int(FUNCTIONS[node.func.id](*args))
        except CalculatorError:
            raise
        except (ValueError, TypeError, OverflowError) as e:
            raise CalculatorError(f"{node.func.id}: {e}") from None
    raise CalculatorError(f"not allowed in an arithmetic expression: {type(node).__name__}")


def calculate(expression: str) -> int | float:
    """Evaluate an arithmetic expression safely. Raises CalculatorError with a readable message."""
    if not isinstance(expression, str) or not expression.strip():
        raise CalculatorError("empty expression")
    if len(expression) > MAX_EXPR_CHARS:
        raise CalculatorError(f"expression too long (max {MAX_EXPR_CHARS} characters)")
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("−", "-")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise CalculatorError(f"syntax error in {expression!r}: {e.msg}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculatorError(f"expression too complex (max {MAX_NODES} nodes)")
    try:
        result = _eval(tree)
    except OverflowError:
        raise CalculatorError("result too large") from None
    if isinstance(result, complex):
        raise CalculatorError("the result is a complex number")
    if isinstance(result, float) and math.isnan(result):
        raise CalculatorError("the result is not a number (NaN)")
    return result


def format_number(x: int | float) -> str:
    """12.0 -> '12', 0.1 + 0.2 -> '0.3' (12 significant digits), ints unchanged."""
    if isinstance(x, float):
        if x.is_integer() and abs(x) < 1e16:
            return str(int(x))
        return f"{x:.12g}"
    return str(x)


def calculator_tool():
    """The calculator as a registry Tool named `calculator`."""
    def run(expression: str) -> str:
        return format_number(calculate(expression))

    return Tool(
        name="calculator",
        description="Evaluate an arithmetic expression: + - * / // % ** ( ), sqrt, log, sin, cos, pi, e, factorial ...",
        parameters={
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "e.g. 2 * (3 + 4) ** 2"}},
            "required": ["expression"],
            "additionalProperties": False,
        },
        fn=run,
    )
