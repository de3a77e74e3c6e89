"""Function calling: tools described by a JSON schema, argument validation, results as tool messages.

    reg = ToolRegistry()
    reg.register(Tool("add", "Add two numbers",
                      {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                       "required": ["a", "b"]},
                      lambda a, b: a + b))
    reg.schemas()                       # -> the conversation format's `tools` list
    reg.call("add", {"a": 1, "b": 2})   # -> "3"
    reg.run_text('<|tool_call|>{"name": "add", "arguments": {"a": 1, "b": 2}}<|end|>')
        # -> [{"role": "tool", "name": "add", "content": "3"}]

`call` never raises for a mistake the model made (unknown tool, bad arguments, a tool that fails): it
returns the error as the result text, `{"error": "..."}`, so the model reads what went wrong and can
retry. Only programming errors of the caller (registering twice, a bad schema) raise.
The standard set (calculator, search, http_request) is `tools.defaults.default_registry`.
"""

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from hessgpt.tools.calls import ToolCall, ToolCallError, parse_tool_calls

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list, tuple),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _is_type(value: Any, type_name: str) -> bool:
    if type_name not in _JSON_TYPES:
        raise ValueError(f"unsupported JSON schema type {type_name!r}")
    if isinstance(value, bool) and type_name in ("integer", "number"):
        return False   # True is an int in Python, not a number in JSON
    if type_name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _JSON_TYPES[type_name])


def validate(value: Any, schema: dict, path: str = "arguments") -> list[str]:
    """Check `value` against a JSON schema (the subset function definitions use). Returns error messages.

    Supported: type (or a list of types), properties, required, additionalProperties (bool or schema),
    items, enum, const, minimum/maximum/exclusiveMinimum/exclusiveMaximum, minLength/maxLength,
    pattern, minItems/maxItems, anyOf/oneOf (at least one branch must match).
    """
    errors: list[str] = []
    if not schema:
        return errors
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [validate(value, s, path) for s in schema[key]]
            if all(branches):
                errors.append(f"{path}: does not match any allowed form ({'; '.join(b[0] for b in branches)})")
                return errors
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, t) for t in types):
            got = "null" if value is None else type(value).__name__
            return [f"{path}: expected {' or '.join(types)}, got {got} ({json.dumps(value, default=str)[:60]})"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: must be {schema['const']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} is less than the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} is greater than the maximum {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{path}: {value} must be greater than {schema['exclusiveMinimum']}")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            errors.append(f"{path}: {value} must be less than {schema['exclusiveMaximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match the pattern {schema['pattern']!r}")
    if isinstance(value, (list, tuple)):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                errors += validate(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}: missing required argument {name!r}")
        extra = schema.get("additionalProperties", True)
        for name, v in value.items():
            if name in props:
                errors += validate(v, props[name], f"{path}.{name}")
            elif extra is False:
                allowed = ", ".join(sorted(props)) or "none"
                errors.append(f"{path}: unknown argument {name!r} (allowed: {allowed})")
            elif isinstance(extra, dict):
                errors += validate(v, extra, f"{path}.{name}")
    return errors


@dataclass
class Tool:
    """A function the model may call. `parameters` is the JSON schema of its keyword arguments."""

    name: str
    description: str
    parameters: dict
    fn: Callable[..., Any]

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", self.name):
            raise ValueError(f"invalid tool name {self.name!r}: letters, digits, _ . - (max 64), not starting with a digit")
        if self.parameters.get("type", "object") != "object":
            raise ValueError(f"tool {self.name!r}: parameters must be a JSON schema of type 'object'")

    def schema(self) -> dict:
        """The tool definition in the conversation format's `tools` list."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


def error_result(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


class ToolRegistry:
    def __init__(self, tools: list[Tool] | None = None, max_result_chars: int = 8000):
        self._tools: dict[str, Tool] = {}
        self.max_result_chars = max_result_chars
        for t in tools or []:
            self.register(t)

    def register(self, tool: Tool) -> Tool:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        return tool

    def get(self, name: str) -> Tool:
        if name not in self._tools:
            raise KeyError(f"unknown tool {name!r}; registered: {', '.join(sorted(self._tools)) or 'none'}")
        return self._tools[name]

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def names(self) -> list[str]:
        return list(self._tools)

    def schemas(self) -> list[dict]:
        return [t.schema() for t in self._tools.values()]

    def call(self, name: str, arguments: dict | None = None) -> str:
        """Run a tool; the result (or a clear `{"error": ...}`) as text for a tool message. Never raises
        for the model's mistakes."""
        if name not in self._tools:
            known = ", ".join(sorted(self._tools)) or "none"
            return error_result(f"unknown tool {name!r}; available tools: {known}")
        tool = self._tools[name]
        arguments = {} if arguments is None else arguments
        if not isinstance(arguments, dict):
            return error_result(f"arguments of {name!r} must be a JSON object, got {type(arguments).__name__}")
        problems = validate(arguments, tool.parameters)
        if problems:
            return error_result(f"invalid arguments for {name!r}: " + "; ".join(problems))
        # Fill defaults declared in the schema, so fn sees them even when the model left them out.
        kwargs = dict(arguments)
        for pname, pschema in tool.parameters.get("properties", {}).items():
            if pname not in kwargs and isinstance(pschema, dict) and "default" in pschema:
                kwargs[pname] = pschema["default"]
        try:
            text = _to_text(tool.fn(**kwargs))
        except Exception as e:   # a failing tool is reported to the model, not raised into the chat loop
            return error_result(f"{name} failed: {type(e).__name__}: {e}")
        if len(text) > self.max_result_chars:
            text = text[: self.max_result_chars] + f"\n[truncated: {len(text)} characters in all]"
        return text

    def execute(self, calls: list[ToolCall | ToolCallError]) -> list[dict]:
        """Run parsed calls (parallel calls in order) -> tool messages {"role": "tool", "name", "content"}."""
        messages = []
        for c in calls:
            if isinstance(c, ToolCallError):
                messages.append({"role": "tool", "name": c.name, "content": c.as_result()})
            else:
                messages.append({"role": "tool", "name": c.name, "content": self.call(c.name, c.arguments)})
        return messages

    def run_text(self, text: str) -> list[dict]:
        """Parse every <|tool_call|>...<|end|> in `text`, run them, return the tool messages."""
        return self.execute(parse_tool_calls(text))
