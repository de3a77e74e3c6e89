"""Anthropic/hh-rlhf: `chosen` is a whole transcript "\\n\\nHuman: ...\\n\\nAssistant: ..."; we keep it.

The `rejected` transcript shares the prefix and differs only in the last reply: not used for SFT.
"""

import re

from hessgpt.data.adapters import field, register, text_messages
from hessgpt.data.conversation import Conversation, Skip

# A speaker tag starts a turn only after a blank line, as in the dataset ("\n\nHuman: ").
_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")


def split_transcript(text: str) -> list[tuple[str, str]]:
    """'\\n\\nHuman: a\\n\\nAssistant: b' -> [("human", "a"), ("assistant", "b")]."""
    parts = _TURN.split(text)
    if parts[0].strip():
        raise Skip("roles_out_of_order", "text before the first Human/Assistant tag")
    # parts = ['', 'Human', 'a', 'Assistant', 'b', ...]
    return [(parts[i].lower(), parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


@register("Anthropic/hh-rlhf", "hh-rlhf", "hh_rlhf")
def hh_rlhf(row: dict) -> Conversation:
    turns = split_transcript(field(row, "chosen"))
    if not turns:
        raise Skip("empty_conversation", "no Human/Assistant turns")
    return Conversation(text_messages(turns))
