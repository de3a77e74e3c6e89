"""Datasets already stored as `messages: [{role, content}]`: UltraChat, SmolTalk, Tulu 3 personas,
LongAlign, and the vigogne chat files (newer `messages`, older `conversation` with French role names).
"""

from hessgpt.data.adapters import field, record_id, register, text_messages
from hessgpt.data.adapters.instruction import alpaca
from hessgpt.data.conversation import Conversation, Skip


def from_messages(row: dict, key: str = "messages", *, id_keys=("id",)) -> Conversation:
    msgs = field(row, key, list)
    turns = []
    for m in msgs:
        if not isinstance(m, dict):
            raise Skip("wrong_type", f"{key} item is {type(m).__name__}")
        if "role" not in m or "content" not in m:
            raise Skip("missing_field", f"{key}[].role/content")
        turns.append((m["role"], m["content"]))
    return Conversation(text_messages(turns), id=record_id(row, *id_keys))


@register("HuggingFaceH4/ultrachat_200k", "ultrachat", "ultrachat_200k")
def ultrachat(row: dict) -> Conversation:
    return from_messages(row, id_keys=("prompt_id",))


@register("HuggingFaceTB/smoltalk", "smoltalk", configs=("all",))
def smoltalk(row: dict) -> Conversation:
    return from_messages(row)


@register(
    "allenai/tulu-3-sft-personas-math",
    "allenai/tulu-3-sft-personas-math-grade",
    "allenai/tulu-3-sft-personas-algebra",
    "allenai/tulu-3-sft-personas-code",
    "allenai/tulu-3-sft-personas-instruction-following",
    "tulu-3-personas",
    "tulu",
)
def tulu_personas(row: dict) -> Conversation:
    return from_messages(row)


@register("THUDM/LongAlign-10k", "longalign")
def longalign(row: dict) -> Conversation:
    return from_messages(row)


@register("messages", "chat-messages")
def generic_messages(row: dict) -> Conversation:
    """Any `{messages: [{role, content}]}` file (role names normalized)."""
    return from_messages(row)


@register("bofenghuang/vigogne-instruction-following-v1.0", "vigogne")
def vigogne(row: dict) -> Conversation:
    """The three vigogne schemas: {instruction, input, output}, {messages}, {conversation} (UTILISATEUR/ASSISTANT)."""
    if isinstance(row, dict) and "messages" in row:
        return from_messages(row, "messages")
    if isinstance(row, dict) and "conversation" in row:
        return from_messages(row, "conversation")
    return alpaca(row)
