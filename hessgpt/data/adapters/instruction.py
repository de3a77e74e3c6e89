"""Single-turn instruction datasets: {instruction, input, output} and close relatives.

Alpaca, CodeAlpaca, Open-Platypus, WizardLM evol-instruct 70k, vigogne instruct files, Dolly
(`context` joined into the user turn).
"""

from hessgpt.data.adapters import field, record_id, register, single_turn
from hessgpt.data.adapters.sharegpt import from_sharegpt
from hessgpt.data.conversation import Conversation


def join(instruction: str, extra: str) -> str:
    """Instruction, then the input/context after a blank line (when there is one)."""
    instruction, extra = instruction.strip(), extra.strip()
    return f"{instruction}\n\n{extra}" if extra else instruction


@register(
    "tatsu-lab/alpaca",
    "alpaca",
    "sahil2801/CodeAlpaca-20k",
    "codealpaca",
    "garage-bAInd/Open-Platypus",
    "platypus",
    "instruction",
)
def alpaca(row: dict) -> Conversation:
    prompt = join(field(row, "instruction"), field(row, "input", default=""))
    return single_turn(prompt, field(row, "output"), id=record_id(row, "id"))


@register("WizardLMTeam/WizardLM_evol_instruct_70k", "WizardLM/WizardLM_evol_instruct_70k", "wizardlm")
def wizardlm_70k(row: dict) -> Conversation:
    """The 70k file is {instruction, output}; the V2 file ({idx, conversations}) is also accepted."""
    if isinstance(row, dict) and "conversations" in row:
        return from_sharegpt(row)
    return single_turn(field(row, "instruction"), field(row, "output"), id=record_id(row, "idx", "id"))


@register("databricks/databricks-dolly-15k", "dolly")
def dolly(row: dict) -> Conversation:
    prompt = join(field(row, "instruction"), field(row, "context", default=""))
    return single_turn(prompt, field(row, "response"), id=record_id(row, "id"))
