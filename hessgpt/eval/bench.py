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

Beside the model, every run scores the **constant-answer baseline** (CONSTANT_ANSWERS: one fixed greeting per
language, scored by the same checks) so a reader sees what the model adds. `overlap_report` says which items'
prompts or reference answers overlap the user messages of training data (`hessgpt eval bench --train-data`).
"""

from __future__ import annotations

import json
import math
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
    """Generate an answer to every item (greedy, via `generate(messages) -> str`) and score them; the
    constant-answer baseline goes under "baselines"."""
    from tqdm import tqdm

    answers = [generate(item["messages"]) for item in tqdm(items, desc="bench", disable=not progress)]
    return with_baselines(score_items(items, answers, judge=judge), items)


# ---------------------------------------------------------------------------- constant-answer baseline

# The answer of a model that collapsed onto greetings: the routing generator's own first greeting reply.
CONSTANT_ANSWERS = {"fr": "Bonjour ! Comment puis-je vous aider aujourd'hui ?", "en": "Hello! How can I help you today?"}


def constant_answer(item: dict) -> str:
    return CONSTANT_ANSWERS.get(item.get("lang"), CONSTANT_ANSWERS["en"])


def constant_baseline(items: list[dict]) -> dict:
    """The /20 table (overall and per language) of the constant answer, with its per-item scores."""
    r = score_items(items, [constant_answer(it) for it in items])
    return {"answers": dict(CONSTANT_ANSWERS), "max": r["max"], "total": r["total"], "categories": r["categories"],
            "n_items": r["n_items"], "per_lang": r["per_lang"],
            "items": [{"id": row["id"], "score": row["score"]} for row in r["items"]]}


def with_baselines(result: dict, items: list[dict]) -> dict:
    result["baselines"] = {"constant": constant_baseline(items)}
    return result


def format_table(result: dict) -> str:
    """The README-style table: category | score / max, and the constant-answer baseline when the result has it."""
    base = result.get("baselines", {}).get("constant")
    lines = ["| Category | Score | Constant answer |", "|---|---|---|"] if base else ["| Category | Score |", "|---|---|"]

    def cell(c):
        return ("n/a" if c["score"] is None else f"{c['score']:.1f}") + f" / {c['max']:g}"

    for name, c in result["categories"].items():
        lines.append(f"| {CATEGORY_LABELS[name]} | {cell(c)} |" + (f" {cell(base['categories'][name])} |" if base else ""))
    total = f"| **Total** | **{result['total']:.1f} / {result['max']:g}** |"
    lines.append(total + (f" {base['total']:.1f} / {base['max']:g} |" if base else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- overlap with training data

OVERLAP_RULE = ("texts normalised (lowercase, accents stripped, punctuation dropped, spaces collapsed) into word "
                "tokens; a bench text overlaps a training user message when: exact (same tokens); contained (the "
                "whole bench text, >= 3 tokens, occurs in the message; or the whole message, >= 3 tokens, occurs "
                "in the bench text and makes up >= 60% of it); jaccard (token-set Jaccard >= 0.8); or 8-gram "
                "(they share a run of 8 tokens)")
JACCARD_MIN, CONTAIN_MIN_TOKENS, CONTAIN_SHARE, NGRAM = 0.8, 3, 0.6, 8
_MATCH_ORDER = ("exact", "contained", "jaccard", "8-gram")


def norm_tokens(text: str) -> tuple[str, ...]:
    """'Qui a écrit « Les Misérables » ?' -> ('qui', 'a', 'ecrit', 'les', 'miserables')."""
    return tuple(re.findall(r"\w+", scoring.normalize(text)))


def _user_texts(record: dict) -> list[str]:
    """The user messages of one training record: conversation `messages`, OOD `turns`, or a question field."""
    out = []
    for m in record.get("messages") or []:
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
            out.append(m["content"])
    for t in (record["turns"] if isinstance(record.get("turns"), list) else []):
        if isinstance(t, dict) and isinstance(t.get("user"), str):
            out.append(t["user"])
    for key in ("question", "query", "prompt", "instruction"):
        if isinstance(record.get(key), str):
            out.append(record[key])
    return out


def read_user_messages(paths: Iterable[str | Path]) -> list[tuple[str, str]]:
    """(file, user message) for every user message of these JSONL files."""
    out = []
    for path in paths:
        f = Path(path)
        if not f.is_file():
            raise HessGPTError(f"--train-data: no such file {f}")
        with open(f, encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise HessGPTError(f"{f}:{i}: invalid JSON ({e.msg})") from None
                if isinstance(rec, dict):
                    out += [(str(f), t) for t in _user_texts(rec)]
    return out


class OverlapIndex:
    """Training user messages, deduplicated after normalisation, indexed for the four overlap rules."""

    def __init__(self, messages: Iterable[tuple[str, str]]):
        self.texts: dict[tuple, tuple[str, str]] = {}   # tokens -> (file, original text), first occurrence
        for file, text in messages:
            toks = norm_tokens(text)
            if toks and toks not in self.texts:
                self.texts[toks] = (file, text)
        self.keys = list(self.texts)
        self.sets = [frozenset(k) for k in self.keys]
        self.postings: dict[str, list[int]] = {}
        self.grams: dict[tuple, int] = {}
        for i, (k, ks) in enumerate(zip(self.keys, self.sets)):
            for t in ks:
                self.postings.setdefault(t, []).append(i)
            for j in range(len(k) - NGRAM + 1):
                self.grams.setdefault(k[j : j + NGRAM], i)

    def __len__(self) -> int:
        return len(self.keys)

    def _hit(self, rule: str, i: int, score: float | None = None) -> dict:
        file, text = self.texts[self.keys[i]]
        return {"match": rule, "train_file": file, "train_text": text[:300], "score": score}

    def match(self, text: str, bench_in_train: dict | None = None) -> dict | None:
        """The strongest overlap of one bench text (exact > contained > jaccard > 8-gram), or None.
        `bench_in_train` (from `contained_in_train`) maps short bench token runs to a message that contains them."""
        toks = norm_tokens(text)
        if not toks:
            return None
        if toks in self.texts:
            return self._hit("exact", self._index_of(toks), 1.0)
        n = len(toks)
        if bench_in_train and toks in bench_in_train:
            return self._hit("contained", bench_in_train[toks], None)
        # the whole message inside the bench text, making up >= CONTAIN_SHARE of it
        for L in range(n - 1, max(CONTAIN_MIN_TOKENS, math.ceil(CONTAIN_SHARE * n)) - 1, -1):
            for j in range(n - L + 1):
                sub = toks[j : j + L]
                if sub in self.texts:
                    return self._hit("contained", self._index_of(sub), round(L / n, 3))
        grams = [toks[j : j + NGRAM] for j in range(n - NGRAM + 1)]
        if n >= NGRAM:  # the whole bench text inside a longer message
            for g in grams:
                i = self.grams.get(g)
                if i is not None and _contains(self.keys[i], toks):
                    return self._hit("contained", i, None)
        a = frozenset(toks)
        k = math.ceil(JACCARD_MIN * len(a) - 1e-9)
        rare = sorted(a, key=lambda t: len(self.postings.get(t, ())))[: len(a) - k + 1]
        best, best_j = None, 0.0
        for i in {i for t in rare for i in self.postings.get(t, ())}:
            b = self.sets[i]
            if not JACCARD_MIN * len(a) <= len(b) <= len(a) / JACCARD_MIN:
                continue
            j = len(a & b) / len(a | b)
            if j >= JACCARD_MIN and j > best_j:
                best, best_j = i, j
        if best is not None:
            return self._hit("jaccard", best, round(best_j, 3))
        for g in grams:
            i = self.grams.get(g)
            if i is not None:
                return self._hit("8-gram", i, None)
        return None

    def _index_of(self, toks: tuple) -> int:
        if not hasattr(self, "_pos"):
            self._pos = {k: i for i, k in enumerate(self.keys)}
        return self._pos[toks]

    def contained_in_train(self, texts: Iterable[str]) -> dict[tuple, int]:
        """Bench token runs of CONTAIN_MIN_TOKENS..NGRAM-1 tokens that occur whole inside a training message
        (longer runs are found through the 8-gram index)."""
        wanted: dict[int, set] = {}
        for t in texts:
            toks = norm_tokens(t)
            if CONTAIN_MIN_TOKENS <= len(toks) < NGRAM:
                wanted.setdefault(len(toks), set()).add(toks)
        found: dict[tuple, int] = {}
        for i, k in enumerate(self.keys):
            for L, pool in wanted.items():
                for j in range(len(k) - L + 1):
                    sub = k[j : j + L]
                    if sub in pool and sub not in found:
                        found[sub] = i
        return found


def _contains(hay: tuple, needle: tuple) -> bool:
    L = len(needle)
    return any(hay[j : j + L] == needle for j in range(len(hay) - L + 1))


def item_texts(item: dict) -> list[tuple[str, str]]:
    """(field, text) pairs of one bench item that the overlap check looks at: its user messages, its references."""
    out = [("prompt", m["content"]) for m in item["messages"] if m.get("role") == "user"]
    return out + [("reference", r) for r in item.get("references") or []]


def overlap_report(items: list[dict], train_files: list[str | Path], index: OverlapIndex | None = None) -> dict:
    """Which bench items' prompts or reference answers overlap a user message of the training files."""
    index = index or OverlapIndex(read_user_messages(train_files))
    inside = index.contained_in_train(t for it in items for _, t in item_texts(it))
    rows = []
    for it in items:
        for fld, text in item_texts(it):
            hit = index.match(text, inside)
            if hit:
                rows.append({"id": it["id"], "lang": it.get("lang"), "category": it.get("category"), "field": fld,
                             "text": text, **hit})
    ids = sorted({r["id"] for r in rows})
    return {"rule": OVERLAP_RULE, "train_data": [str(f) for f in train_files], "train_messages": len(index),
            "n_items": len(items), "n_overlapping": len(ids), "ids": ids, "overlaps": rows}


def format_overlap(ov: dict) -> str:
    lines = [f"overlap with training data: {ov['n_overlapping']} of {ov['n_items']} items "
             f"({ov['train_messages']} distinct user messages in {', '.join(ov['train_data'])})"]
    for r in ov["overlaps"]:
        lines.append(f"- {r['id']} ({r['field']}, {r['match']}): {r['text'][:80]!r} ~ {r['train_text'][:80]!r}")
    return "\n".join(lines)


def generate_fn(backend, max_new_tokens: int = 256) -> GenerateFn:
    """Turn a backend's `stream_chat(messages, params)` into `generate(messages) -> str` (greedy)."""
    from hessgpt.engine import SamplingParams  # lazy: torch (~1.5 s); eval/cli and quickstart import this module

    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, seed=0)

    def generate(messages: list[dict]) -> str:
        return "".join(ev.text for ev in backend.stream_chat(messages, params) if ev.type == "text")

    return generate
