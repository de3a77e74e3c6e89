"""Parse the model's function calls: `<|tool_call|>{"name": "f", "arguments": {...}}<|end|>` -> ToolCall.

A small model writes imperfect JSON, so parsing is lenient:
  - text around the object is ignored ("Sure: {...} done"), only the first balanced {...} is read;
  - Python-style literals are accepted ({'name': 'f', 'arguments': {'x': True}}), via ast.literal_eval
    (a literal parser: it never evaluates code);
  - `arguments` given as a JSON string (OpenAI style) is decoded; `parameters` / `args` are aliases;
  - a missing `arguments` means {}.
What still cannot be read becomes a ToolCallError whose message says why and quotes the text, so the router
can return it to the model as the tool's result and let it try again (instead of silently dropping the call).

This is the one parser of the call markup: the router, the HF backend, the API's `tool_calls` conversion, the
function-calling data adapters and the evaluation all read calls here, and `ToolCall` is the one call type
(hessgpt.data.conversation re-exports it).

Several `<|tool_call|>...<|end|>` blocks in one assistant message are parallel calls.
"""

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

TOOL_CALL_OPEN = "<|tool_call|>"
END = "<|end|>"


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    def to_dict(self) -> dict:
        """The conversation format's `tool_calls` entry: {"name": ..., "arguments": {...}}."""
        return {"name": self.name, "arguments": self.arguments}

    def render(self) -> str:
        """The text the model emits for this call (between <|tool_call|> and <|end|>)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)


@dataclass
class ToolCallError:
    """A call that could not be parsed: `text` is what the model wrote, `message` says what is wrong."""

    text: str
    message: str
    id: str = ""
    name: str = "invalid_tool_call"   # the tool name used when returning the error to the model

    def as_result(self) -> str:
        return json.dumps({"error": self.message}, ensure_ascii=False)


class ToolCallParseError(ValueError):
    pass


def _first_object(text: str) -> str:
    """The first balanced {...} in text (braces inside quoted strings are skipped)."""
    start = text.find("{")
    if start < 0:
        raise ToolCallParseError("no JSON object found: expected {\"name\": ..., \"arguments\": {...}}")
    depth = 0
    quote = ""
    escaped = False
    for i in range(start, len(text)):
        c = text[i]
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    raise ToolCallParseError("unbalanced braces: the JSON object is not closed")


def _loads_lenient(obj_text: str) -> Any:
    try:
        return json.loads(obj_text)
    except json.JSONDecodeError as e:
        json_error = e
    # Python-literal spelling: single quotes, True/False/None. literal_eval only parses literals.
    try:
        return ast.literal_eval(obj_text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    # JSON spelling of literals with single quotes: {'x': true}
    fixed = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", obj_text)))
    try:
        return ast.literal_eval(fixed)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    raise ToolCallParseError(f"invalid JSON ({json_error.msg} at position {json_error.pos})")


def parse_tool_call(text: str, call_id: str = "") -> ToolCall:
    """Parse one call's text (what sits between <|tool_call|> and <|end|>). Raises ToolCallParseError."""
    obj = _loads_lenient(_first_object(text))
    if not isinstance(obj, dict):
        raise ToolCallParseError("the call must be a JSON object")
    name = obj.get("name")
    if name is None and isinstance(obj.get("function"), dict):   # {"function": {"name":..., "arguments":...}}
        obj = obj["function"]
        name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ToolCallParseError('missing "name" (a string): expected {"name": ..., "arguments": {...}}')
    args = parse_arguments(obj.get("arguments", obj.get("parameters", obj.get("args", {}))), name)
    return ToolCall(name=name.strip(), arguments=args, id=call_id)


def parse_arguments(args: Any, name: str = "") -> dict:
    """A call's `arguments` as written -> dict: a dict, None (= {}), or a string holding a JSON / Python-literal
    object (OpenAI style, possibly with text around it). Raises ToolCallParseError."""
    if args is None:
        return {}
    if isinstance(args, str):   # OpenAI-style: arguments encoded as a JSON string
        try:
            args = _loads_lenient(_first_object(args)) if args.strip() else {}
        except ToolCallParseError as e:
            raise ToolCallParseError(f'"arguments" of {name!r} is a string that is not a JSON object: {e}') from None
    if not isinstance(args, dict):
        raise ToolCallParseError(f'"arguments" of {name!r} must be a JSON object, got {type(args).__name__}')
    return args


def read_tool_call(text: str, call_id: str = "") -> ToolCall | ToolCallError:
    """parse_tool_call that never raises: a ToolCallError whose message says what is wrong and quotes the text."""
    try:
        return parse_tool_call(text, call_id)
    except ToolCallParseError as e:
        body = text.strip()
        shown = body if len(body) <= 200 else body[:200] + "..."
        return ToolCallError(text=body, message=f"could not parse tool call: {e}; the call was {shown!r}", id=call_id)


def split_tool_calls(text: str) -> list[str]:
    """The bodies of every <|tool_call|>...<|end|> block in an assistant's text (an unclosed last block counts)."""
    bodies = []
    pos = 0
    while True:
        i = text.find(TOOL_CALL_OPEN, pos)
        if i < 0:
            return bodies
        j = text.find(END, i + len(TOOL_CALL_OPEN))
        if j < 0:
            bodies.append(text[i + len(TOOL_CALL_OPEN) :])
            return bodies
        bodies.append(text[i + len(TOOL_CALL_OPEN) : j])
        pos = j + len(END)


def parse_tool_calls(text: str, id_prefix: str = "call_") -> list[ToolCall | ToolCallError]:
    """Every call in `text`, in order. If `text` has no <|tool_call|> marker it is read as one call body.

    Returns ToolCall for the good ones and ToolCallError (with a clear message) for the others, so
    parallel calls are handled independently: one bad call does not lose the others.
    """
    bodies = split_tool_calls(text) if TOOL_CALL_OPEN in text else [text]
    out: list[ToolCall | ToolCallError] = []
    for k, body in enumerate(bodies):
        out.append(read_tool_call(body, f"{id_prefix}{k}"))
    return out


def render_tool_calls(calls: list[ToolCall]) -> str:
    """The text the model emits for these calls: one <|tool_call|>...<|end|> per call."""
    return "".join(f"{TOOL_CALL_OPEN}{c.render()}{END}" for c in calls)


def to_chat_format(messages: list[dict]) -> list[dict]:
    """OpenAI-style messages -> conversation-format messages (docs/chat-format.md section 1).

    assistant `tool_calls` become `[{"name", "arguments": dict}]`; a tool message keeps its `name` (the API
    resolves it from `tool_call_id`) and its content string.
    """
    out = []
    for m in messages:
        msg: dict[str, Any] = {k: v for k, v in m.items() if k in ("role", "content", "code", "code_lang", "search", "name")}
        msg["content"] = m.get("content") or ""
        if m["role"] == "assistant" and m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                fn = c.get("function", c)
                try:
                    args = parse_arguments(fn.get("arguments", {}), fn["name"])
                except ToolCallParseError:
                    args = {"_raw": fn.get("arguments")}   # kept verbatim: the model sees what the client sent
                calls.append({"name": fn["name"], "arguments": args})
            msg["tool_calls"] = calls
        if m["role"] == "tool":
            msg["name"] = m.get("name") or "python"
        out.append(msg)
    return out
