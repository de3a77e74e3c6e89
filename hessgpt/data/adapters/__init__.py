"""Adapters: one small function per source schema, registered by dataset name.

An adapter turns one source row (a dict) into a `Conversation` (or a list of them, e.g. every path of an
OpenAssistant tree) and raises `Skip(reason)` when the row cannot be used. Options from a recipe's
`options:` mapping arrive as keyword arguments. A few schemas need the whole table first (the flat
OpenAssistant message table is regrouped into trees): they register a `prepare(rows, **options)` that
maps the stream of rows to the stream of records the adapter converts.

    @register("HuggingFaceH4/ultrachat_200k", "ultrachat")
    def ultrachat(row): ...

    get_adapter("ultrachat").convert(row)
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import Any, Callable

from hessgpt.data.conversation import Conversation, Message, Skip

_MODULES = ("hh_rlhf", "messages", "sharegpt", "instruction", "oasst", "xlam", "glaive", "nexusraven", "code", "wikihow", "routing")


@dataclass(frozen=True)
class Adapter:
    name: str  # the first registered name
    convert: Callable[..., "Conversation | list[Conversation]"]
    prepare: Callable | None = None  # rows -> rows, for schemas that need the whole table
    configs: tuple[str, ...] = ()  # the hub configs whose schema this adapter reads (a recipe may name only these)


_REGISTRY: dict[str, Adapter] = {}


def register(*names: str, prepare: Callable | None = None, configs: tuple[str, ...] = ()):
    """Decorator: register `fn` under each dataset name (hub id and short name), case-insensitive; `configs`:
    the hub configs (datasets.load_dataset's `name`) it was written for, checked offline against the recipes."""

    def deco(fn):
        adapter = Adapter(names[0], fn, prepare, tuple(configs))
        for n in names:
            key = n.lower()
            if key in _REGISTRY and _REGISTRY[key].convert is not fn:
                raise ValueError(f"adapter name {n!r} registered twice")
            _REGISTRY[key] = adapter
        return fn

    return deco


def _load_all() -> None:
    for m in _MODULES:
        importlib.import_module(f"hessgpt.data.adapters.{m}")


def get_adapter(name: str) -> Adapter:
    """The adapter registered for a dataset name; KeyError lists the known names."""
    _load_all()
    key = name.lower()
    if key not in _REGISTRY:
        raise KeyError(f"no adapter for dataset {name!r}; known: {', '.join(sorted(names()))}")
    return _REGISTRY[key]


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


# --- helpers shared by the adapters -------------------------------------------------------------

_MISSING = object()

ROLE_ALIASES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "prompter": "user",
    "utilisateur": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "tool": "tool",
}


def field(row: dict, key: str, type_: type | tuple = str, default: Any = _MISSING) -> Any:
    """row[key], checked: Skip("missing_field") when absent/None, Skip("wrong_type") when not `type_`."""
    if not isinstance(row, dict):
        raise Skip("wrong_type", f"record is {type(row).__name__}, not an object")
    value = row.get(key)
    if value is None:
        if default is not _MISSING:
            return default
        raise Skip("missing_field", key)
    if not isinstance(value, type_):
        raise Skip("wrong_type", f"{key} is {type(value).__name__}")
    return value


def json_field(row: dict, key: str, type_: type = list) -> Any:
    """A field that holds JSON text (or the already-decoded value); Skip("unparsable_json") if bad."""
    value = field(row, key, (str, list, dict))
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise Skip("unparsable_json", f"{key}: {e}") from None
    if not isinstance(value, type_):
        raise Skip("wrong_type", f"{key} decodes to {type(value).__name__}")
    return value


def role(name: Any) -> str:
    """Normalize a role name (human/gpt/prompter/UTILISATEUR/...) to system/user/assistant/tool."""
    r = ROLE_ALIASES.get(str(name).strip().lower()) if isinstance(name, str) else None
    if r is None:
        raise Skip("bad_role", repr(name))
    return r


def text_messages(turns: list[tuple[str, Any]]) -> list[Message]:
    """(role, content) pairs -> messages, with roles normalized and contents checked to be strings."""
    out = []
    for r, content in turns:
        if not isinstance(content, str):
            raise Skip("wrong_type", f"content is {type(content).__name__}")
        out.append(Message(role(r), content.strip()))
    return out


def record_id(row: dict, *keys: str) -> str:
    """The first present id-like field, as a string ('' when none: the pipeline uses the row number)."""
    for k in keys:
        v = row.get(k) if isinstance(row, dict) else None
        if v is not None and v != "":
            return str(v)
    return ""


def single_turn(prompt: str, answer: str, *, id: str = "", system: str = "") -> Conversation:
    msgs = [Message("system", system.strip())] if system.strip() else []
    msgs += [Message("user", prompt.strip()), Message("assistant", answer.strip())]
    return Conversation(msgs, id=id)
