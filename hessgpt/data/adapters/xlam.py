"""Salesforce/xlam-function-calling-60k: {id, query, tools (JSON text), answers (JSON text)}.

`answers` is a list of calls (several = parallel calls); `tools[].parameters` maps each parameter to
{type: "str"|"List[int]"|"str, optional", description, default}, converted here to JSON schema.
The conversation ends on the assistant's calls (the dataset has no function responses).
"""

from hessgpt.data.adapters import field, json_field, record_id, register
from hessgpt.data.adapters.schema import tool_schema
from hessgpt.data.conversation import Conversation, Message, Skip
from hessgpt.tools.calls import ToolCall, ToolCallParseError, parse_arguments


def convert_tool(t: dict) -> dict:
    if not isinstance(t, dict) or not isinstance(t.get("name"), str):
        raise Skip("unparsable_tool_definition", "tool without a name")
    params = t.get("parameters") or {}
    if not isinstance(params, dict):
        raise Skip("unparsable_tool_definition", f"{t['name']}: parameters is {type(params).__name__}")
    if params.get("type") == "object" and isinstance(params.get("properties"), dict):
        return {"name": t["name"], "description": t.get("description", ""), "parameters": params}  # already JSON schema
    plist = [dict(spec, name=k) if isinstance(spec, dict) else {"name": k, "type": str(spec)} for k, spec in params.items()]
    return tool_schema(t["name"], t.get("description", ""), plist)


def parse_calls(answers: list) -> list[ToolCall]:
    calls = []
    for a in answers:
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            raise Skip("unparsable_tool_call", repr(a)[:80])
        try:
            calls.append(ToolCall(a["name"], parse_arguments(a.get("arguments"), a["name"])))
        except ToolCallParseError as e:
            raise Skip("unparsable_tool_call", f"{e}: {repr(a)[:80]}") from None
    return calls


@register("Salesforce/xlam-function-calling-60k", "xlam")
def xlam(row: dict) -> Conversation:
    tools = [convert_tool(t) for t in json_field(row, "tools", list)]
    calls = parse_calls(json_field(row, "answers", list))
    if not calls:
        raise Skip("no_tool_call", "empty answers")
    msgs = [Message("user", field(row, "query").strip()), Message("assistant", "", tool_calls=calls)]
    return Conversation(msgs, id=record_id(row, "id"), tools=tools)
