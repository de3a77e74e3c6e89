"""Tool registry, JSON-schema validation and tool-call parsing."""

import json

import pytest

from hessgpt.tools.calls import ToolCall, ToolCallError, parse_tool_call, parse_tool_calls, render_tool_calls
from hessgpt.tools.defaults import default_registry
from hessgpt.tools.registry import Tool, ToolRegistry, validate

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "unit": {"type": "string", "enum": ["C", "F"], "default": "C"},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city"],
    "additionalProperties": False,
}


def _registry():
    seen = []

    def weather(city, unit, days=1):
        seen.append((city, unit, days))
        return {"city": city, "temp": 21 if unit == "C" else 70, "days": days}

    def boom():
        raise RuntimeError("backend down")

    reg = ToolRegistry([
        Tool("get_weather", "Current weather", WEATHER, weather),
        Tool("add", "a + b", {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                              "required": ["a", "b"]}, lambda a, b: a + b),
        Tool("boom", "always fails", {"type": "object", "properties": {}}, boom),
    ])
    return reg, seen


def test_schemas_and_call():
    reg, seen = _registry()
    assert [s["name"] for s in reg.schemas()] == ["get_weather", "add", "boom"]
    assert reg.schemas()[0]["parameters"] == WEATHER
    assert reg.call("add", {"a": 2, "b": 3.5}) == "5.5"
    out = json.loads(reg.call("get_weather", {"city": "Paris"}))
    assert out == {"city": "Paris", "temp": 21, "days": 1}
    assert seen == [("Paris", "C", 1)]   # the schema default for unit was filled in
    with pytest.raises(ValueError, match="already registered"):
        reg.register(Tool("add", "x", {"type": "object"}, lambda: 0))
    with pytest.raises(KeyError, match="unknown tool 'nope'"):
        reg.get("nope")


@pytest.mark.parametrize("name,args,msg", [
    ("get_weather", {}, "missing required argument 'city'"),
    ("get_weather", {"city": 12}, "arguments.city: expected string, got int"),
    ("get_weather", {"city": "Lyon", "unit": "K"}, "'K' is not one of ['C', 'F']"),
    ("get_weather", {"city": "Lyon", "days": 9}, "greater than the maximum 7"),
    ("get_weather", {"city": "Lyon", "days": 2.5}, "expected integer"),
    ("get_weather", {"city": "Lyon", "country": "FR"}, "unknown argument 'country'"),
    ("add", {"a": True, "b": 1}, "expected number, got bool"),
    ("nope", {}, "unknown tool 'nope'; available tools: add, boom, get_weather"),
    ("boom", {}, "boom failed: RuntimeError: backend down"),
])
def test_errors_are_returned_as_results(name, args, msg):
    reg, seen = _registry()
    result = json.loads(reg.call(name, args))
    assert msg in result["error"]
    assert seen == []   # the function never ran on bad arguments


def test_validate_nested():
    schema = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "integer"}, "maxItems": 3}}}
    assert validate({"items": [1, 2]}, schema) == []
    errs = validate({"items": [1, "x", 3, 4]}, schema)
    assert any("arguments.items[1]: expected integer" in e for e in errs)
    assert any("more than 3 items" in e for e in errs)


def test_parse_strict_and_lenient():
    c = parse_tool_call('{"name": "add", "arguments": {"a": 1, "b": 2}}')
    assert (c.name, c.arguments) == ("add", {"a": 1, "b": 2})
    # single quotes, Python literals, trailing text, arguments as a JSON string, missing arguments
    assert parse_tool_call("{'name': 'f', 'arguments': {'x': True, 'y': None}} and then").arguments == {"x": True, "y": None}
    assert parse_tool_call("{'name': 'f', 'arguments': {'x': true}}").arguments == {"x": True}
    assert parse_tool_call('Sure! {"name": "f", "arguments": "{\\"q\\": \\"a}b\\"}"} done').arguments == {"q": "a}b"}
    assert parse_tool_call('{"name": "f"}').arguments == {}
    assert parse_tool_call('{"function": {"name": "f", "arguments": {"k": 1}}}').to_dict() == {"name": "f", "arguments": {"k": 1}}


def test_parallel_calls_and_malformed_reported():
    text = ('<|tool_call|>{"name": "add", "arguments": {"a": 1, "b": 2}}<|end|>'
            '<|tool_call|>{"name": "get_weather", "arguments": {"city": "Nice"<|end|>'   # unclosed
            "<|tool_call|>{'name': 'get_weather', 'arguments': {'city': 'Brest', 'unit': 'F'}}<|end|>"
            '<|tool_call|>["add", 1, 2]<|end|>'
            '<|tool_call|>{"name": "add", "arguments": [1, 2]}<|end|>')
    calls = parse_tool_calls(text)
    assert [type(c).__name__ for c in calls] == ["ToolCall", "ToolCallError", "ToolCall", "ToolCallError", "ToolCallError"]
    assert "not closed" in calls[1].message
    assert "no JSON object" in calls[3].message
    assert "must be a JSON object, got list" in calls[4].message
    reg, _ = _registry()
    msgs = reg.run_text(text)
    assert [m["role"] for m in msgs] == ["tool"] * 5
    assert msgs[0] == {"role": "tool", "name": "add", "content": "3"}
    assert json.loads(msgs[2]["content"])["temp"] == 70 and msgs[2]["name"] == "get_weather"
    assert msgs[1]["name"] == "invalid_tool_call"
    assert json.loads(msgs[1]["content"])["error"].startswith("could not parse tool call: unbalanced braces")


def test_garbage_json_error_is_clear():
    [err] = parse_tool_calls('{"name": "add", "arguments": {"a": 1,, "b": 2}}')
    assert isinstance(err, ToolCallError) and "invalid JSON" in err.message


def test_render_roundtrip():
    calls = [ToolCall("add", {"a": 1, "b": 2}), ToolCall("get_weather", {"city": "Montréal"})]
    text = render_tool_calls(calls)
    assert text.count("<|tool_call|>") == 2 and "Montréal" in text
    assert [c.to_dict() for c in parse_tool_calls(text)] == [c.to_dict() for c in calls]


def test_default_registry_has_calculator():
    reg = default_registry()
    assert reg.names() == ["calculator"]
    assert reg.run_text('<|tool_call|>{"name": "calculator", "arguments": {"expression": "2*(3+4)"}}<|end|>')[0]["content"] == "14"
