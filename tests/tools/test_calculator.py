"""The calculator evaluates arithmetic through the AST, never eval, within bounds."""

import json
import math

import pytest

from hessgpt.tools.calculator import CalculatorError, calculate, calculator_tool, format_number
from hessgpt.tools.registry import ToolRegistry


@pytest.mark.parametrize("expr,expected", [
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("7 / 2", 3.5), ("7 // 2", 3), ("7 % 3", 1), ("2 ** 10", 1024),
    ("2^10", 1024), ("-3 + -(-2)", -1), ("+5", 5), ("sqrt(144)", 12.0), ("factorial(5)", 120),
    ("round(pi, 3)", 3.142), ("max(3, 9, 4) - min(1, 2)", 8), ("log(e)", 1.0), ("12 × 3 ÷ 4", 9.0),
    ("gcd(12, 18)", 6), ("abs(-2.5)", 2.5), ("floor(2.7) + ceil(2.1)", 5), ("1e3 / 4", 250.0),
])
def test_arithmetic(expr, expected):
    assert calculate(expr) == pytest.approx(expected)


@pytest.mark.parametrize("expr,msg", [
    ("__import__('os').system('id')", "unknown function"),
    ("().__class__", "not allowed"),
    ("open('x')", "unknown function 'open'"),
    ("x + 1", "unknown name 'x'"),
    ("'a' * 3", "only numbers"),
    ("[1, 2]", "not allowed"),
    ("1 / 0", "division by zero"),
    ("5 % 0", "modulo by zero"),
    ("10 ** 100000", "exponent too large"),
    ("9 ** 9999", "too large"),
    ("factorial(100000)", "too large"),
    ("sqrt(-1)", "sqrt: math domain error"),
    ("1 +", "syntax error"),
    ("", "empty"),
    ("1+" * 300 + "1", "too long"),
    ("True + 1", "only numbers"),
    ("sqrt(x=4)", "keyword"),
])
def test_refused(expr, msg):
    with pytest.raises(CalculatorError, match=msg.replace("(", r"\(").replace("[", r"\[")):
        calculate(expr)


def test_format_and_tool():
    assert format_number(12.0) == "12" and format_number(0.1 + 0.2) == "0.3" and format_number(7) == "7"
    assert format_number(math.pi) == "3.14159265359"
    reg = ToolRegistry([calculator_tool()])
    assert reg.call("calculator", {"expression": "(17 + 4) * 2"}) == "42"
    assert "division by zero" in json.loads(reg.call("calculator", {"expression": "1/0"}))["error"]
    assert "missing required argument 'expression'" in json.loads(reg.call("calculator", {}))["error"]
