"""The routing format: {"messages": [...]} where assistant text carries the markers the router sees.

`<|code|>SRC<|end|>` is a code block, `<|result|>OUT<|end|>` its output (or a search's hits),
`<search>Q</search>` a search, `<|tool_call|>{json}<|end|>` a function call and
`<|tool_response|>JSON<|end|>` its response. A result may also sit in its own message (role tool).
Parsed into assistant `code`/`search`/`tool_calls` messages and tool messages (docs/chat-format.md). Records
already in the conversation format (assistant `code`, `weight`, ... as `hessgpt data routing` writes them) are
taken as they are, so the routing data (multi-turn included) can go into a `data prepare` mix.
"""

import re

from hessgpt.data.adapters import field, record_id, register, role
from hessgpt.data.conversation import Conversation, Message, Skip, message_from_dict
from hessgpt.tools.calls import ToolCallParseError, parse_tool_call

_MARK = re.compile(
    r"<\|code\|>(?P<code>.*?)<\|end\|>"
    r"|<\|result\|>(?P<result>.*?)(?:<\|end\|>|$)"
    r"|<search>(?P<search>.*?)</search>"
    r"|<\|tool_call\|>(?P<call>.*?)<\|end\|>"
    r"|<\|tool_response\|>(?P<response>.*?)(?:<\|end\|>|$)",
    flags=re.S,
)


def _last_action(msgs: list[Message]) -> Message | None:
    for m in reversed(msgs):
        if m.role == "assistant":
            return m if m.has_action else None
        if m.role != "tool":
            return None
    return None


def _result(msgs: list[Message], text: str) -> None:
    action = _last_action(msgs)
    if action is None:
        raise Skip("roles_out_of_order", "a result without a code block, search or call before it")
    if action.code is not None:
        name = "python"
    elif action.search is not None:
        name = "search"
    else:
        name = action.tool_calls[0].name
    msgs.append(Message("tool", text, name=name))


def parse_assistant(text: str, msgs: list[Message]) -> None:
    """Append the messages one marked-up assistant text stands for."""
    pos, pending = 0, ""
    for m in _MARK.finditer(text):
        pending += text[pos : m.start()]
        pos = m.end()
        kind = m.lastgroup
        body = m.group(kind)
        if kind == "code":
            msgs.append(Message("assistant", pending.strip(), code=body.strip("\n")))
        elif kind == "search":
            msgs.append(Message("assistant", pending.strip(), search=body.strip()))
        elif kind == "call":
            try:
                call = parse_tool_call(body)   # the router's lenient parser: the data reads calls as production does
            except ToolCallParseError as e:
                raise Skip("unparsable_tool_call", f"{e}: {body[:80]!r}") from None
            last = msgs[-1] if msgs else None
            if last is not None and last.role == "assistant" and last.tool_calls and not pending.strip():
                last.tool_calls.append(call)  # consecutive calls = parallel calls
            else:
                msgs.append(Message("assistant", pending.strip(), tool_calls=[call]))
        else:  # result / response
            if pending.strip():
                raise Skip("roles_out_of_order", "text between an action and its result")
            _result(msgs, body)
        pending = ""
    pending += text[pos:]
    if pending.strip():
        msgs.append(Message("assistant", pending.strip()))


# fields of an assistant message already in the conversation format (what `hessgpt data routing` writes):
# taken as they are, not parsed from markers
NATIVE = ("code", "code_lang", "tool_calls", "search", "weight")


@register("routing", "hessgpt-routing")
def routing(row: dict) -> Conversation:
    msgs: list[Message] = []
    for m in field(row, "messages", list):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise Skip("wrong_type", "message without a string content")
        r = role(m.get("role"))
        if r == "assistant" and any(m.get(k) is not None for k in NATIVE):
            msgs.append(message_from_dict({**m, "role": "assistant"}))   # already the conversation format
        elif r == "assistant":
            parse_assistant(m["content"], msgs)
        elif r == "tool":
            text = _MARK.sub(lambda x: x.group("result") or x.group("response") or x.group(0), m["content"])
            if m.get("name"):
                msgs.append(Message("tool", text, name=m["name"]))
            else:
                _result(msgs, text)
        else:
            msgs.append(Message(r, m["content"].strip()))
    return Conversation(msgs, id=record_id(row, "id"), lang=row.get("lang"))
