"""Nexusflow/NexusRaven_API_evaluation: queries (config `standardized_queries`) joined with the
function list (config `standardized_api_list`).

A query row is {dataset, prompt, python_function_name, python_args_dict, context_functions: [names]};
an API row is {dataset, name, description, args_dicts: [{name, type, description, required, default}]}.
The recipe names the API list with the option `api_list: {path, config, split}`; `prepare` loads it and
attaches each query's tool definitions. Licence: CC-BY-NC-4.0, and it is evaluation data.
"""

import json

from hessgpt.data.adapters import field, register
from hessgpt.data.adapters.schema import tool_schema
from hessgpt.data.conversation import Conversation, Message, Skip
from hessgpt.data.recipe import SourceSpec, iter_rows
from hessgpt.tools.calls import ToolCall, ToolCallParseError, parse_arguments


def api_tool(row: dict) -> dict:
    args = row.get("args_dicts") or []
    if isinstance(args, str):
        args = json.loads(args)
    return tool_schema(row["name"], row.get("description", ""), [a for a in args if isinstance(a, dict) and a.get("name")])


def attach_tools(rows, api_list: dict | None = None, **_options):
    """Stream pass-through that adds `_tools` (definitions of `context_functions`) to each query row."""
    index: dict[tuple[str, str], dict] = {}
    if api_list:
        for item in iter_rows(SourceSpec.from_dict(dict(api_list, dataset="nexusraven-api"))):
            if isinstance(item, Skip) or not isinstance(item[1], dict) or not item[1].get("name"):
                continue
            row = item[1]
            index[(row.get("dataset", ""), row["name"])] = api_tool(row)
            index.setdefault(("", row["name"]), index[(row.get("dataset", ""), row["name"])])
    for item in rows:
        if not isinstance(item, Skip) and isinstance(item[1], dict) and index:
            pos, row = item
            names = row.get("context_functions") or []
            ds = row.get("dataset", "")
            tools = [index.get((ds, n)) or index.get(("", n)) for n in names if isinstance(n, str)]
            item = (pos, dict(row, _tools=[t for t in tools if t]))
        yield item


def _args(value) -> dict:
    """python_args_dict: a dict, JSON text or a Python dict repr (some rows), read by the router's parser."""
    try:
        return parse_arguments(value, "python_args_dict")
    except ToolCallParseError as e:
        raise Skip("unparsable_tool_call", f"{e}: {str(value)[:80]!r}") from None


@register("Nexusflow/NexusRaven_API_evaluation", "nexusraven", prepare=attach_tools,
          configs=("standardized_queries", "standardized_api_list"))
def nexusraven(row: dict, api_list: dict | None = None) -> Conversation:
    call = ToolCall(field(row, "python_function_name"), _args(field(row, "python_args_dict", (str, dict))))
    msgs = [Message("user", field(row, "prompt").strip()), Message("assistant", "", tool_calls=[call])]
    return Conversation(msgs, tools=row.get("_tools") or None)
