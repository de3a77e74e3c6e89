"""Tool-calling chats: raw glaive-function-calling-v2 and the ShareGPT tool format derived from it.

Raw glaive rows are {system, chat}: `system` is "SYSTEM: <text> -\\n{json fn}\\n\\n{json fn}" (functions
concatenated, no list), `chat` is "USER: ...\\n\\n\\nASSISTANT: <functioncall> {"name": "f", "arguments":
'{"a": 1}'} <|endoftext|>\\n\\n\\nFUNCTION RESPONSE: {...}\\n\\n\\nASSISTANT: ... <|endoftext|>" (arguments
in single quotes: not valid JSON). ShareGPT tool rows (LLaMA-Factory) are {conversations: [{from:
human/gpt/function_call/observation, value}], tools: JSON text}.
"""

import json
import re

from hessgpt.data.adapters import field, json_field, record_id, register, role
from hessgpt.data.adapters.xlam import convert_tool
from hessgpt.data.conversation import Conversation, Message, Skip
from hessgpt.tools.calls import ToolCall, ToolCallParseError, parse_arguments, parse_tool_call

_SPEAKER = re.compile(r"(?:^|\n)[ \t]*(USER|ASSISTANT|FUNCTION RESPONSE):[ \t]*")
_EOT = "<|endoftext|>"


def parse_functions(text: str) -> list[dict]:
    """Concatenated JSON objects (whitespace between) -> list of objects."""
    dec, out, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        try:
            obj, i = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise Skip("unparsable_tool_definition", str(e)) from None
        out.append(obj)


def parse_call(text: str) -> ToolCall:
    """'{"name": "f", "arguments": '{"a": 1}'}' (or valid JSON) -> ToolCall; Skip if unparsable."""
    text = text.replace(_EOT, "").strip()
    try:
        return parse_tool_call(text)   # the router's lenient parser (glaive's '...' arguments are a Python literal)
    except ToolCallParseError as e:
        error = e
    # '...' arguments holding an apostrophe ('{"q": "l'eau"}') are no Python literal: cut them out by shape
    m = re.fullmatch(r"""\{\s*"name"\s*:\s*"([^"]+)"\s*,\s*"arguments"\s*:\s*'(.*)'\s*\}""", text, flags=re.S)
    if not m:
        raise Skip("unparsable_tool_call", f"{error}: {text[:80]!r}")
    try:
        return ToolCall(m.group(1), parse_arguments(m.group(2), m.group(1)))
    except ToolCallParseError as e:
        raise Skip("unparsable_tool_call", str(e)) from None


def add_calls(msgs: list[Message], calls: list[ToolCall], text: str = "") -> None:
    """Attach calls to the previous plain assistant message of the turn, or open a new one."""
    last = msgs[-1] if msgs else None
    if last is not None and last.role == "assistant" and not last.has_action and not text:
        last.tool_calls = calls
    else:
        msgs.append(Message("assistant", text, tool_calls=calls))


def add_result(msgs: list[Message], content: str) -> None:
    """A function response, named after the call it answers (the k-th response answers the k-th call)."""
    k = 0
    while k < len(msgs) and msgs[-1 - k].role == "tool":
        k += 1
    caller = msgs[-1 - k] if k < len(msgs) else None
    calls = (caller.tool_calls or []) if caller is not None and caller.role == "assistant" else []
    if not calls:
        raise Skip("roles_out_of_order", "function response without a call")
    msgs.append(Message("tool", content.strip(), name=calls[min(k, len(calls) - 1)].name))


@register("glaiveai/glaive-function-calling-v2", "glaive")
def glaive(row: dict) -> Conversation:
    if isinstance(row, dict) and "conversations" in row:  # the converted ShareGPT form
        return sharegpt_tools(row)
    system = field(row, "system").strip()
    if system.upper().startswith("SYSTEM:"):
        system = system[len("SYSTEM:") :].strip()
    tools = None
    if "{" in system:
        head, brace = system.split("{", 1)
        tools = [convert_tool(t) for t in parse_functions("{" + brace)]
        system = head.strip().rstrip("-").strip()
    msgs = [Message("system", system)] if system else []
    parts = _SPEAKER.split(field(row, "chat"))
    if parts[0].strip():
        raise Skip("roles_out_of_order", "text before the first USER/ASSISTANT tag")
    for speaker, text in zip(parts[1::2], parts[2::2]):
        text = text.replace(_EOT, "").strip()
        if speaker == "USER":
            msgs.append(Message("user", text))
        elif speaker == "FUNCTION RESPONSE":
            add_result(msgs, text)
        elif "<functioncall>" in text:
            before, call = text.split("<functioncall>", 1)
            add_calls(msgs, [parse_call(call)], before.strip())
        else:
            msgs.append(Message("assistant", text))
    return Conversation(msgs, id=record_id(row, "id"), tools=tools)


@register("sharegpt-tools", "llamafactory-toolcall")
def sharegpt_tools(row: dict) -> Conversation:
    tools = [convert_tool(t) for t in json_field(row, "tools", list)] if row.get("tools") else None
    system = row.get("system")
    msgs = [Message("system", system.strip())] if isinstance(system, str) and system.strip() else []
    for t in field(row, "conversations", list):
        if not isinstance(t, dict) or "from" not in t or "value" not in t:
            raise Skip("missing_field", "conversations[].from/value")
        who, value = t["from"], t["value"]
        if not isinstance(value, str):
            raise Skip("wrong_type", f"value is {type(value).__name__}")
        if who == "function_call":
            try:
                obj = json.loads(value)   # one call, or a list of parallel calls
            except json.JSONDecodeError:
                obj = value               # not JSON: parse_call reads it leniently (or says why not)
            items = obj if isinstance(obj, list) else [obj]
            add_calls(msgs, [parse_call(o if isinstance(o, str) else json.dumps(o)) for o in items])
        elif who == "observation":
            add_result(msgs, value)
        else:
            msgs.append(Message(role(who), value.strip()))
    return Conversation(msgs, id=record_id(row, "id"), tools=tools)
