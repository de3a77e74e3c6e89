"""The conversation record of docs/chat-format.md section 1: dataclasses, validation, JSONL read/write.

Every adapter produces `Conversation` objects; `validate` enforces the turn rules; `Skip` is the one
exception that means "this record cannot be used", with a short stable `reason` key counted in reports.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from hessgpt.tools.calls import ToolCall  # the one call type (name, arguments, id), re-exported here

ROLES = ("system", "user", "assistant", "tool")
CODE_LANGS = ("python", "html", "css", "js")


class Skip(Exception):
    """A record that is not converted. `reason` is a short key (e.g. "empty_turn"); `detail` says why."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Message:
    role: str
    content: str = ""
    name: str | None = None  # tool messages: "python", "search" or the function's name
    code: str | None = None  # assistant: source of a code block
    code_lang: str | None = None  # assistant with code: python (default), html, css, js
    tool_calls: list[ToolCall] | None = None  # assistant: several = parallel calls
    search: str | None = None  # assistant: a search query
    weight: int = 1  # assistant: 1 = trained on (loss mask 1), 0 = context only (e.g. a flattened earlier turn)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name is not None:
            d["name"] = self.name
        if self.code is not None:
            d["code"] = self.code
            if self.code_lang and self.code_lang != "python":
                d["code_lang"] = self.code_lang
        if self.tool_calls is not None:
            d["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.search is not None:
            d["search"] = self.search
        if self.weight != 1:
            d["weight"] = self.weight
        return d

    @property
    def has_action(self) -> bool:
        """An assistant message a tool message may follow (code, tool calls or search)."""
        return bool(self.code is not None or self.tool_calls or self.search is not None)


@dataclass
class Conversation:
    messages: list[Message]
    id: str = ""
    source: str = ""
    lang: str | None = None
    tools: list[dict] | None = None

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"id": self.id, "source": self.source, "lang": self.lang or "und"}
        if self.tools:
            d["tools"] = self.tools
        d["messages"] = [m.to_dict() for m in self.messages]
        return d

    def text(self) -> str:
        """All the words of the conversation (for language ID, dedup, length): contents, code, calls."""
        parts = []
        for m in self.messages:
            parts.append(m.content)
            if m.code:
                parts.append(m.code)
            if m.search:
                parts.append(m.search)
            for c in m.tool_calls or ():
                parts.append(json.dumps(c.to_dict(), ensure_ascii=False))
        return "\n".join(p for p in parts if p)

    def num_chars(self) -> int:
        """Characters the renderer would emit, roughly: message text plus the tool definitions."""
        n = len(self.text())
        if self.tools:
            n += sum(len(json.dumps(t, ensure_ascii=False)) for t in self.tools)
        return n


def _valid_weight(w) -> bool:
    return type(w) is int and w in (0, 1)   # not bool: `true` in JSON is a mistake, not a weight


def validate(conv: Conversation) -> Conversation:
    """Check the turn rules of docs/chat-format.md; raise Skip(reason) on the first violation."""
    msgs = conv.messages
    if not msgs:
        raise Skip("empty_conversation")
    prev: Message | None = None
    seen_user = False
    for i, m in enumerate(msgs):
        if m.role not in ROLES:
            raise Skip("bad_role", f"message {i} has role {m.role!r}")
        if not isinstance(m.content, str):
            raise Skip("wrong_type", f"message {i} content is {type(m.content).__name__}")
        if not _valid_weight(m.weight):
            raise Skip("bad_weight", f"message {i} has weight {m.weight!r} (must be 0 or 1)")
        if m.weight != 1 and m.role != "assistant":
            raise Skip("bad_weight", f"message {i} ({m.role}) has weight {m.weight!r}: only assistant messages carry a weight")
        if m.role == "system":
            if i != 0:
                raise Skip("roles_out_of_order", f"system message at position {i}")
        elif m.role == "user":
            if not m.content.strip():
                raise Skip("empty_turn", f"empty user message {i}")
            if prev is not None and prev.role == "user":
                raise Skip("roles_out_of_order", f"two user messages in a row at {i}")
            seen_user = True
        elif m.role == "assistant":
            if not seen_user:
                raise Skip("roles_out_of_order", f"assistant message {i} before any user message")
            if not m.content.strip() and not m.has_action:
                raise Skip("empty_turn", f"empty assistant message {i}")
            if sum(x is not None and x != [] for x in (m.code, m.tool_calls, m.search)) > 1:
                raise Skip("bad_message", f"assistant message {i} has more than one of code/tool_calls/search")
            if m.code is not None and (m.code_lang or "python") not in CODE_LANGS:
                raise Skip("bad_message", f"code_lang {m.code_lang!r} in message {i}")
            for c in m.tool_calls or ():
                if not isinstance(c.name, str) or not c.name or not isinstance(c.arguments, dict):
                    raise Skip("unparsable_tool_call", f"tool call in message {i}")
        else:  # tool
            ok_after_action = prev is not None and prev.role == "assistant" and prev.has_action
            if not (ok_after_action or (prev is not None and prev.role == "tool")):
                raise Skip("roles_out_of_order", f"tool message {i} not after a code/tool call/search")
            if prev is not None and prev.role == "assistant" and prev.code is not None and prev.code_lang not in (None, "python"):
                raise Skip("roles_out_of_order", f"tool message {i} after a non-Python artifact")
            if not m.name:
                raise Skip("bad_message", f"tool message {i} has no name")
        prev = m
    if not seen_user:
        raise Skip("no_user_turn")
    if msgs[-1].role != "assistant":
        raise Skip("no_assistant_reply", f"last message is {msgs[-1].role}")
    return conv


# --- dict <-> dataclass -------------------------------------------------------------------------


def message_from_dict(d: dict) -> Message:
    if not isinstance(d, dict):
        raise Skip("wrong_type", f"message is {type(d).__name__}, not an object")
    calls = d.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise Skip("unparsable_tool_call", "tool_calls is not a list")
        calls = [ToolCall(c.get("name"), c.get("arguments")) if isinstance(c, dict) else ToolCall("", {}) for c in calls]
    return Message(
        role=d.get("role"),
        content=d.get("content", ""),
        name=d.get("name"),
        code=d.get("code"),
        code_lang=d.get("code_lang"),
        tool_calls=calls,
        search=d.get("search"),
        weight=d.get("weight", 1),
    )


def from_dict(d: dict) -> Conversation:
    """A record of the conversation format -> Conversation (validated; raises Skip)."""
    if not isinstance(d, dict) or not isinstance(d.get("messages"), list):
        raise Skip("missing_field", "messages")
    conv = Conversation(
        messages=[message_from_dict(m) for m in d["messages"]],
        id=str(d.get("id", "")),
        source=str(d.get("source", "")),
        lang=d.get("lang"),
        tools=d.get("tools"),
    )
    return validate(conv)


def dumps(conv: Conversation) -> str:
    """One JSONL line (no trailing newline). Keys in a fixed order so outputs are byte-stable."""
    return json.dumps(conv.to_dict(), ensure_ascii=False)


def read_jsonl(path: str | os.PathLike) -> Iterator[Conversation]:
    """Read a conversation JSONL file; a bad line raises Skip naming the line number."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise Skip("corrupt_json", f"{path}:{lineno}: {e}") from None
            yield from_dict(d)


def write_jsonl(path: str | os.PathLike, convs: Iterable[Conversation]) -> int:
    """Atomically write conversations as JSONL (temp file + os.replace). Returns the number written."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    n = 0
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for conv in convs:
                f.write(dumps(conv) + "\n")
                n += 1
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return n


# --- history flattening (training data and inference alike) -------------------------------------


def flatten_history(messages: list[dict], earlier_weight: int | None = None) -> list[dict]:
    """The history of a conversation as the model sees it at inference (docs/chat-format.md, "History").

    Every assistant turn before the last user message that used a tool (code, an artifact, a function call,
    a search, tool results, or several assistant messages) becomes ONE plain assistant message: its text
    before the tool + "\\n\\n" + its text after the result (empty parts left out; no code, no result). A
    plain earlier turn is kept as it is. The current turn (after the last user message) keeps its structure.

    `earlier_weight`: None keeps the messages' weights (inference); 0 marks every earlier assistant message
    `"weight": 0` (training data: only the last turn is trained). Returns new dicts; the input is not changed.
    """
    if earlier_weight not in (None, 0, 1):
        raise ValueError(f"earlier_weight must be None, 0 or 1, got {earlier_weight!r}")
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    out: list[dict] = []
    group: list[dict] = []

    def close() -> None:
        if not group:
            return
        structured = len(group) > 1 or any(
            m.get("role") == "tool" or m.get("code") is not None or m.get("tool_calls") or m.get("search") is not None
            for m in group)
        if structured:
            text = "\n\n".join(t for t in ((m.get("content") or "").strip() for m in group if m.get("role") == "assistant") if t)
            flat = {"role": "assistant", "content": text}
            if all(m.get("weight", 1) == 0 for m in group if m.get("role") == "assistant"):
                flat["weight"] = 0
            kept = [flat]
        else:
            kept = [dict(m) for m in group]
        for m in kept:
            if earlier_weight == 0:
                m["weight"] = 0
            elif earlier_weight == 1:
                m.pop("weight", None)
        out.extend(kept)
        group.clear()

    for i, m in enumerate(messages):
        if i < last_user and m.get("role") in ("assistant", "tool"):
            group.append(m)
            continue
        close()
        out.append(dict(m))
    close()
    return out
