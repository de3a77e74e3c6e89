"""ShareGPT-style `conversations: [{from, value}]` (system/human/gpt): OpenHermes-2.5, WizardLM V2.

The tool-calling variant (function_call/observation turns + `tools`) lives in glaive.py.
"""

from hessgpt.data.adapters import field, record_id, register, text_messages
from hessgpt.data.conversation import Conversation, Skip


def from_sharegpt(row: dict, *, id_keys=("id", "idx")) -> Conversation:
    turns = []
    for t in field(row, "conversations", list):
        if not isinstance(t, dict):
            raise Skip("wrong_type", f"conversations item is {type(t).__name__}")
        if "from" not in t or "value" not in t:
            raise Skip("missing_field", "conversations[].from/value")
        turns.append((t["from"], t["value"]))
    return Conversation(text_messages(turns), id=record_id(row, *id_keys))


@register("teknium/OpenHermes-2.5", "openhermes")
def openhermes(row: dict) -> Conversation:
    return from_sharegpt(row)


@register("WizardLMTeam/WizardLM_evol_instruct_V2_196k", "WizardLM/WizardLM_evol_instruct_V2_196k", "wizardlm-v2", "sharegpt")
def wizardlm_v2(row: dict) -> Conversation:
    return from_sharegpt(row)
