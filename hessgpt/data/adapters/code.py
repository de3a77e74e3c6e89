"""Programming problems with reference solutions: deepmind/code_contests and codeparrot/apps.

The solution goes in the assistant's text as a fenced ```python block: it reads stdin, so it is an
answer to show, not a `code` block for the sandbox to execute (docs/chat-format.md).
"""

import json

from hessgpt.data.adapters import field, record_id, register, single_turn
from hessgpt.data.conversation import Conversation, Skip

PYTHON3 = 3  # code_contests `solutions.language` ClassLabel: 0 unknown, 1 python2, 2 cpp, 3 python3, 4 java


def fenced(code: str) -> str:
    return f"```python\n{code.strip()}\n```"


@register("deepmind/code_contests", "code_contests")
def code_contests(row: dict) -> Conversation:
    sols = field(row, "solutions", dict)
    langs, codes = sols.get("language"), sols.get("solution")
    if not isinstance(langs, list) or not isinstance(codes, list):
        raise Skip("wrong_type", "solutions.language/solution are not lists")
    code = next((c for lang, c in zip(langs, codes) if lang == PYTHON3 and isinstance(c, str) and c.strip()), None)
    if code is None:
        raise Skip("no_solution", "no Python 3 solution")
    return single_turn(field(row, "description"), fenced(code), id=record_id(row, "name"))


@register("codeparrot/apps", "apps")
def apps(row: dict) -> Conversation:
    raw = field(row, "solutions", (str, list))
    try:
        sols = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        if not raw.strip():
            raise Skip("no_solution", "empty solutions") from None
        raise Skip("unparsable_json", "solutions") from None
    if not isinstance(sols, list) or not sols or not isinstance(sols[0], str):
        raise Skip("no_solution", "no solution")
    question = field(row, "question")
    starter = field(row, "starter_code", default="")
    if isinstance(starter, str) and starter.strip():
        question = f"{question.strip()}\n\n{fenced(starter)}"
    return single_turn(question, fenced(sols[0]), id=record_id(row, "problem_id"))
