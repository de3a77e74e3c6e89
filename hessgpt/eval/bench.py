"""The /20 benchmark of HessGPT v1, made automatic: factual /8, conversation /5, instruction /4,
creativity /2, robustness /1.

Prompt items live in hessgpt/eval/prompts/bench_{fr,en}.jsonl, one JSON object a line:

    {"id": "fr-fact-03", "lang": "fr", "category": "factual", "kind": "factual",
     "messages": [{"role": "user", "content": "Quelle est la capitale de l'Australie ?"}],
     "checks": [{"type": "contains_any", "values": ["Canberra"]}],
     "references": ["..."]}                     # optional: reference answers, scored with BLEU/chrF
     "answer_lang": "en"                         # optional: expected answer language (default: lang; null = any)

A category's score = max * mean(item scores of that category); robustness = max * (mean of the robustness
items + share of *all* answers that are non-degenerate and in the expected language) / 2.
Generation is greedy, so a checkpoint always gets the same score.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from hessgpt.errors import HessGPTError
from hessgpt.eval import scoring
from hessgpt.eval.bleu import corpus_scores

# category -> points, in the order of the original README's table
CATEGORIES = {"factual": 8.0, "conversation": 5.0, "instruction": 4.0, "creativity": 2.0, "robustness": 1.0}
CATEGORY_LABELS = {
    "factual": "Factual precision",
    "conversation": "Conversational quality",
    "instruction": "Instruction following",
    "creativity": "Creativity",
    "robustness": "Robustness",
}
PROMPTS_DIR = Path(__file__).parent / "prompts"
GenerateFn = Callable[[list[dict]], str]


def load_items(langs: Iterable[str] = ("fr", "en"), path: str | Path | None = None) -> list[dict]:
    """Bench items for these languages, from the shipped prompt set (or a JSONL file of the same format)."""
    files = [Path(path)] if path else [PROMPTS_DIR / f"bench_{lang}.jsonl" for lang in langs]
    items = []
    for f in files:
        if not f.exists():
            raise HessGPTError(f"no bench prompt file {f} (languages available: fr, en)")
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise HessGPTError(f"{f}:{i}: invalid JSON ({e.msg})") from None
            if item.get("category") not in CATEGORIES:
                raise HessGPTError(f"{f}:{i}: category {item.get('category')!r} is not one of {list(CATEGORIES)}")
            if "messages" not in item:
                raise HessGPTError(f"{f}:{i}: item {item.get('id')!r} has no messages")
            items.append(item)
    if path:
        items = [it for it in items if it.get("lang") in set(langs)]
    return items


# ---------------------------------------------------------------------------- optional LLM judge


JUDGE_PROMPT = """You grade answers of a small bilingual (French/English) chat assistant.
Question (language: {lang}):
{question}

{reference}Assistant's answer:
{answer}

Grade correctness, helpfulness, fluency and whether it answers in the question's language.
Reply with one line "Score: N" where N is an integer from 0 (useless) to 10 (perfect)."""


@dataclass
class LLMJudge:
    """Scores an answer 0..1 with any OpenAI-compatible chat endpoint (temperature 0)."""

    url: str
    model: str
    api_key: str | None = None
    client: object | None = None  # an `openai.OpenAI`-like object; built from url/api_key when None

    def __post_init__(self):
        if self.client is None:
            import os

            from openai import OpenAI

            self.client = OpenAI(base_url=self.url, api_key=self.api_key or os.environ.get("OPENAI_API_KEY", "none"))

    def __call__(self, item: dict, answer: str) -> float | None:
        question = "\n".join(f"{m['role']}: {m['content']}" for m in item["messages"])
        refs = item.get("references")
        reference = f"Reference answer:\n{refs[0]}\n\n" if refs else ""
        prompt = JUDGE_PROMPT.format(lang=item.get("lang"), question=question, reference=reference, answer=answer)
        resp = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=20)
        m = re.search(r"score\s*:?\s*(\d+(?:\.\d+)?)", resp.choices[0].message.content or "", flags=re.I)
        return None if m is None else max(0.0, min(1.0, float(m.group(1)) / 10.0))


# ---------------------------------------------------------------------------- running and scoring


def score_items(items: list[dict], answers: list[str], judge: Callable | None = None) -> dict:
    """Per-item scores, per-category table, BLEU/chrF — for answers[i] to items[i]. Pure: no model."""
    if len(items) != len(answers):
        raise ValueError(f"{len(items)} items but {len(answers)} answers")
    rows = []
    for item, answer in zip(items, answers):
        s = scoring.score_answer(item, answer)
        row = {"id": item["id"], "lang": item["lang"], "category": item["category"], "kind": item.get("kind"),
               "answer": answer, "auto_score": round(s.score, 4), "checks": s.checks,
               "degenerate": s.degenerate, "answer_lang": s.lang}
        score = s.score
        if judge is not None:
            j = None if s.degenerate else judge(item, answer)
            row["judge_score"] = j
            if j is not None:
                score = 0.5 * s.score + 0.5 * j
        row["score"] = round(score, 4)
        # robust = not degenerate and in the expected language (the per-answer part of the robustness score)
        lang_ok = all(c["score"] == 1.0 for c in s.checks if c["type"] == "lang")
        row["robust"] = not s.degenerate and lang_ok
        rows.append(row)

    result = {"max": sum(CATEGORIES.values()), **_table(rows)}
    result["per_lang"] = {lang: _table([r for r in rows if r["lang"] == lang])
                          for lang in sorted({r["lang"] for r in rows})}
    result["bleu"] = _bleu(items, answers)
    result["items"] = rows
    return result


def _table(rows: list[dict]) -> dict:
    cats = {}
    for name, points in CATEGORIES.items():
        sel = [r["score"] for r in rows if r["category"] == name]
        mean = sum(sel) / len(sel) if sel else None
        if name == "robustness":
            robust_share = sum(r["robust"] for r in rows) / len(rows) if rows else None
            parts = [x for x in (mean, robust_share) if x is not None]
            mean = sum(parts) / len(parts) if parts else None
        cats[name] = {"score": None if mean is None else round(points * mean, 2), "max": points, "n": len(sel)}
    total = round(sum(c["score"] for c in cats.values() if c["score"] is not None), 2)
    return {"total": total, "categories": cats, "n_items": len(rows)}


def _bleu(items: list[dict], answers: list[str]) -> dict:
    """Corpus BLEU/chrF per (lang, kind) over the items that carry reference answers."""
    groups: dict[str, tuple[list, list]] = {}
    for item, answer in zip(items, answers):
        if item.get("references"):
            key = f"{item['lang']}/{item.get('kind', item['category'])}"
            hyps, refs = groups.setdefault(key, ([], []))
            hyps.append(answer)
            refs.append(item["references"])
    return {key: corpus_scores(h, r) for key, (h, r) in sorted(groups.items())}


def run_bench(generate: GenerateFn, items: list[dict], judge: Callable | None = None,
              progress: bool = True) -> dict:
    """Generate an answer to every item (greedy, via `generate(messages) -> str`) and score them."""
    from tqdm import tqdm

    answers = [generate(item["messages"]) for item in tqdm(items, desc="bench", disable=not progress)]
    return score_items(items, answers, judge=judge)


def format_table(result: dict) -> str:
    """The README-style table: category | score / max."""
    lines = ["| Category | Score |", "|---|---|"]
    for name, c in result["categories"].items():
        score = "n/a" if c["score"] is None else f"{c['score']:.1f}"
        lines.append(f"| {CATEGORY_LABELS[name]} | {score} / {c['max']:g} |")
    lines.append(f"| **Total** | **{result['total']:.1f} / {result['max']:g}** |")
    return "\n".join(lines)


def generate_fn(backend, max_new_tokens: int = 256) -> GenerateFn:
    """Turn a backend's `stream_chat(messages, params)` into `generate(messages) -> str` (greedy)."""
    from hessgpt.engine import SamplingParams

    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, seed=0)

    def generate(messages: list[dict]) -> str:
        return "".join(ev.text for ev in backend.stream_chat(messages, params) if ev.type == "text")

    return generate
