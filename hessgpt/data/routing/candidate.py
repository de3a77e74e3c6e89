"""A routing sample before and after execution: `Candidate` (what a generator drew), the record it becomes
(`to_record`, with the final sentence filled from the real stdout), the categories and languages."""

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Callable


CATEGORIES = ("maths", "algo", "web", "data")
LANGS = ("fr", "en")


@dataclass
class Candidate:
    """A sample before execution. `answer` is a str.format template filled with the params plus
    `out` (stdout stripped) and `l` (its lines); for web/negative it is the final text."""

    category: str
    kind: str
    lang: str
    user: str
    lead: str = ""
    code: str | None = None
    code_lang: str = "python"
    answer: str = ""
    params: dict = field(default_factory=dict)
    reference: dict | None = None   # type-tagged, computed here in plain Python (None: no exact result)
    ref_lines: bool = False         # a list reference stated one item per printed line
    split: str = "train"
    template: str = ""              # the question template (python samples), for the stats

    def key(self) -> str:
        return " ".join(self.user.lower().split())


Gen = Callable[[random.Random, str], tuple[dict, str, list[str], list[str]]]


# ---------------------------------------------------------------------------------------------------
# execution and records
# ---------------------------------------------------------------------------------------------------
def final_text(c: Candidate, stdout: str) -> str:
    out = stdout.strip()
    lines = [line.strip() for line in out.splitlines()] or [""]
    return c.answer.format(**c.params, out=out, l=lines)


def to_record(c: Candidate, stdout: str | None = None) -> dict:
    if c.category == "negative":
        messages = [{"role": "user", "content": c.user}, {"role": "assistant", "content": c.answer}]
    elif c.code_lang != "python":
        messages = [{"role": "user", "content": c.user},
                    {"role": "assistant", "content": c.lead, "code": c.code, "code_lang": c.code_lang},
                    {"role": "assistant", "content": c.answer}]
    else:
        messages = [{"role": "user", "content": c.user},
                    {"role": "assistant", "content": c.lead, "code": c.code},
                    {"role": "tool", "name": "python", "content": stdout},
                    {"role": "assistant", "content": final_text(c, stdout)}]
    digest = hashlib.sha1(json.dumps(messages, ensure_ascii=False).encode()).hexdigest()[:12]
    return {"id": f"routing:{c.category}-{digest}", "source": "routing", "lang": c.lang, "category": c.category,
            "kind": c.kind, "split": c.split, "reference": c.reference, "messages": messages}
