"""WikiHow as SFT pairs. Two schemas carry it:

- the `wikihow` subset of HuggingFaceTB/cosmopedia: {prompt, text} -> user prompt, assistant text;
- the HF `wikihow` set (all config): {title, headline, text} -> user "How to ...?", assistant text.
"""

from hessgpt.data.adapters import field, record_id, register, single_turn
from hessgpt.data.conversation import Conversation


@register("wikihow", "HuggingFaceTB/cosmopedia", configs=("wikihow",))
def wikihow(row: dict) -> Conversation:
    if isinstance(row, dict) and "prompt" in row:
        return single_turn(field(row, "prompt"), field(row, "text"), id=record_id(row, "id"))
    question = field(row, "title").strip().rstrip("?").strip() + "?"  # "How to Tie a Tie?"
    return single_turn(question, field(row, "text"), id=record_id(row, "id"))
