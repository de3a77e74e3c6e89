"""Tool-use evaluation of the dual-model system: does model 1 call code when it should, does the code run,
is the final answer right, are function calls right?

Works on any backend with `stream_chat(messages, params, tools=None) -> Iterator[Event]` (hessgpt/events.py),
so tests drive it with a scripted model. Input records (JSONL, one format per line, detected per record):

- conversation format (docs/chat-format.md), e.g. the routing validation split: the sample *needs code* iff an
  assistant message has `code`; the reference result is the last number printed by its python tool message
  (or a top-level "reference"); expected function calls are the first turn's assistant `tool_calls`.
- GSM8K-style word problems {question, answer: "... #### N"} (en or fr): needs code, reference N.
- BFCL {id, question: [[messages]], function: [...]} with its possible-answer file ({id, ground_truth}).
- xLAM {query, tools: JSON text, answers: JSON text}.

Metrics, per language and overall: routing precision/recall/F1 (code emitted when needed, not otherwise),
execution success rate (share of executed code blocks whose result status is "ok"), answer exact match (the
numbers of the final answer include the reference value) and function-call exact match (BFCL's AST rule:
same function names, every required argument present, no unknown argument, each value in the allowed list).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hessgpt.errors import HessGPTError
from hessgpt.eval.scoring import detect_lang, number_in


@dataclass
class Sample:
    id: str
    lang: str
    messages: list[dict]                      # the prompt: system? + first user message
    needs_code: bool | None = None            # None: routing not scored (function-call data)
    reference: float | None = None            # expected numeric result
    tools: list[dict] | None = None
    expected_calls: list[dict] | None = None  # [{name: {arg: [allowed values]}}] (BFCL possible-answer form)
    source: str = ""


# ---------------------------------------------------------------------------- loading


def _last_number(text: str) -> float | None:
    nums = re.findall(r"-?\d+(?:\.\d+)?", text.replace(",", ""))
    return float(nums[-1]) if nums else None


def gsm8k_reference(answer: str) -> float:
    """The final "#### N" of a GSM8K answer: "#### 1,000" (en), "#### 70 000" / "#### 125 $" (fr) -> float."""
    _, sep, tail = answer.rpartition("####")
    digits = re.sub(r"[^\d.\-]", "", tail.replace(",", "")).rstrip(".")
    if not sep or not re.fullmatch(r"-?\d+(\.\d+)?", digits):
        raise ValueError("no '#### N' in the answer")
    return float(digits)


def _exact_calls(calls: list[dict]) -> list[dict]:
    """[{name, arguments}] -> BFCL possible-answer form [{name: {arg: [value]}}] (exactly these values)."""
    out = []
    for c in calls:
        args = c.get("arguments") or {}
        if isinstance(args, str):
            args = json.loads(args)
        out.append({c["name"]: {k: [v] for k, v in args.items()}})
    return out


def _bfcl_tool(fn: dict) -> dict:
    """BFCL function -> chat-format tool: BFCL writes JSON-schema type "dict" where JSON schema says "object"."""
    def fix(schema):
        if isinstance(schema, dict):
            return {k: ("object" if k == "type" and v == "dict" else fix(v)) for k, v in schema.items()}
        if isinstance(schema, list):
            return [fix(x) for x in schema]
        return schema
    return {"name": fn["name"], "description": fn.get("description", ""), "parameters": fix(fn.get("parameters", {}))}


def _lang_of(record: dict, text: str) -> str:
    return record.get("lang") or detect_lang(text) or "en"


def sample_from_record(record: dict, n: int, answers: dict[str, list] | None = None) -> Sample:
    """One evaluation sample from a record of any supported format (see the module docstring)."""
    rid = str(record.get("id", n))
    if "messages" in record:                                         # conversation format
        msgs = record["messages"]
        first_asst = next((i for i, m in enumerate(msgs) if m["role"] == "assistant"), len(msgs))
        prompt = [m for m in msgs[:first_asst] if m["role"] in ("system", "user")]
        if not prompt or prompt[-1]["role"] != "user":
            raise HessGPTError(f"record {n} ({rid}): no user message before the first assistant message")
        # the first turn: assistant/tool messages until the next user message
        turn = []
        for m in msgs[first_asst:]:
            if m["role"] == "user":
                break
            turn.append(m)
        # a code block is needed when the reference answer has one: Python to run, or an HTML/CSS/JS artifact
        needs_code = any(m["role"] == "assistant" and m.get("code") for m in msgs)
        reference = record.get("reference")
        if reference is None:
            outputs = [m["content"] for m in turn if m["role"] == "tool" and m.get("name") == "python"]
            reference = _last_number(outputs[-1]) if outputs else None
        calls = [c for m in turn if m["role"] == "assistant" for c in (m.get("tool_calls") or [])]
        return Sample(rid, _lang_of(record, prompt[-1]["content"]), prompt, needs_code=needs_code,
                      reference=None if reference is None else float(reference), tools=record.get("tools"),
                      expected_calls=_exact_calls(calls) if calls else None, source=record.get("source", "conversation"))
    if isinstance(record.get("question"), str) and "answer" in record:  # GSM8K
        try:
            ref = gsm8k_reference(record["answer"])
        except ValueError:
            raise HessGPTError(f"record {n}: GSM8K answer has no final '#### N'") from None
        return Sample(rid, _lang_of(record, record["question"]), [{"role": "user", "content": record["question"]}],
                      needs_code=True, reference=ref, source="gsm8k")
    if isinstance(record.get("question"), list) and "function" in record:  # BFCL
        turn = record["question"][0]
        expected = (answers or {}).get(rid)
        if expected is None:
            raise HessGPTError(f"record {n}: no possible answer for BFCL id {rid!r} (pass --answers FILE)")
        return Sample(rid, _lang_of(record, turn[-1]["content"]), list(turn), tools=[_bfcl_tool(f) for f in record["function"]],
                      expected_calls=expected, source="bfcl")
    if "query" in record and "answers" in record:                    # xLAM
        tools = json.loads(record["tools"]) if isinstance(record["tools"], str) else record["tools"]
        calls = json.loads(record["answers"]) if isinstance(record["answers"], str) else record["answers"]
        return Sample(rid, _lang_of(record, record["query"]), [{"role": "user", "content": record["query"]}],
                      tools=tools, expected_calls=_exact_calls(calls), source="xlam")
    raise HessGPTError(f"record {n}: unknown format (keys {sorted(record)}); expected conversation, GSM8K, BFCL or xLAM")


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise HessGPTError(f"{path}:{i}: invalid JSON ({e.msg})") from None
    return out


def load_samples(path: str | Path, answers: str | Path | None = None, limit: int | None = None) -> list[Sample]:
    """Samples from a JSONL file; BFCL files need their possible-answer file (found next to it by name if omitted)."""
    path = Path(path)
    if not path.exists():
        raise HessGPTError(f"no such data file {path}")
    if answers is None:  # BFCL layout: foo.jsonl + foo_possible_answer.jsonl
        guess = path.with_name(path.stem + "_possible_answer" + path.suffix)
        answers = guess if guess.exists() else None
    ans = {str(r["id"]): r["ground_truth"] for r in _read_jsonl(Path(answers))} if answers else None
    records = _read_jsonl(path)[:limit]
    return [sample_from_record(r, i, ans) for i, r in enumerate(records, 1)]


# ---------------------------------------------------------------------------- BFCL-style AST matching


def _std_string(s: str) -> str:
    # BFCL's standardize_string: case- and punctuation-insensitive string comparison
    return re.sub(r"[ ,./\-_*^]", "", s).lower().replace("'", '"')


def value_matches(value: Any, allowed: Any) -> bool:
    """One value against one allowed value: strings loosely, ints accepted for floats, lists/dicts recursively."""
    if isinstance(allowed, str):
        return isinstance(value, str) and _std_string(value) == _std_string(allowed)
    if isinstance(allowed, bool) or isinstance(value, bool):
        return value is allowed if isinstance(allowed, bool) else False
    if isinstance(allowed, (int, float)):
        return isinstance(value, (int, float)) and float(value) == float(allowed) and \
            not (isinstance(allowed, int) and isinstance(value, float) and not value.is_integer())
    if isinstance(allowed, list):
        return isinstance(value, list) and len(value) == len(allowed) and \
            all(value_matches(v, a) for v, a in zip(value, allowed))
    if isinstance(allowed, dict):
        return isinstance(value, dict) and set(value) == set(allowed) and \
            all(value_matches(value[k], allowed[k]) for k in allowed)
    return value == allowed


def call_matches(call: dict, expected: dict) -> bool:
    """call = {name, arguments}; expected = {name: {arg: [allowed values, "" = may be omitted]}}."""
    (name, params), = expected.items()
    if call.get("name") != name:
        return False
    args = call.get("arguments") or {}
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return False
    if not isinstance(args, dict) or set(args) - set(params):
        return False  # an argument the answer does not know
    for arg, allowed in params.items():
        if arg not in args:
            if "" not in allowed:
                return False  # required argument missing
            continue
        if not any(value_matches(args[arg], a) for a in allowed if a != "" or args[arg] == ""):
            return False
    return True


def calls_match(calls: list[dict], expected: list[dict]) -> bool:
    """Same number of calls, matched one-to-one in any order (BFCL parallel/multiple)."""
    if len(calls) != len(expected):
        return False
    remaining = list(expected)
    for c in calls:
        hit = next((i for i, e in enumerate(remaining) if call_matches(c, e)), None)
        if hit is None:
            return False
        remaining.pop(hit)
    return True


# ---------------------------------------------------------------------------- running


@dataclass
class Outcome:
    """What the backend did on one sample."""
    code_blocks: int = 0
    results: list[str] = field(default_factory=list)    # statuses of the executed code blocks
    text: str = ""
    tool_calls: list[dict] = field(default_factory=list)


def run_sample(backend, sample: Sample, params) -> Outcome:
    out = Outcome()
    after_code = False
    for ev in backend.stream_chat(sample.messages, params, tools=sample.tools):
        if ev.type == "code":
            out.code_blocks += 1
            after_code = True
        elif ev.type == "result" and after_code:   # search hits are "result" events too: only count code runs
            out.results.append(str(ev.data.get("status", "")))
            after_code = False
        elif ev.type == "search":
            after_code = False
        elif ev.type == "text":
            out.text += ev.text
        elif ev.type == "tool_call":
            out.tool_calls.append({"name": ev.data.get("name"), "arguments": ev.data.get("arguments")})
    return out


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else round(num / den, 4)


def metrics(rows: list[dict]) -> dict:
    """Routing / execution / answer / function-call metrics over per-sample rows (see `evaluate`)."""
    routed = [r for r in rows if r["needs_code"] is not None]
    tp = sum(r["needs_code"] and r["coded"] for r in routed)
    fp = sum((not r["needs_code"]) and r["coded"] for r in routed)
    fn = sum(r["needs_code"] and not r["coded"] for r in routed)
    tn = sum((not r["needs_code"]) and not r["coded"] for r in routed)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = None if not precision or not recall else round(2 * precision * recall / (precision + recall), 4)
    statuses = [s for r in rows for s in r["results"]]
    answered = [r for r in rows if r["reference"] is not None]
    called = [r for r in rows if r["expected_calls"] is not None]
    return {
        "n": len(rows),
        "routing": {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": precision, "recall": recall, "f1": f1,
                    "accuracy": _ratio(tp + tn, len(routed))},
        "execution": {"executed": len(statuses), "ok": statuses.count("ok"),
                      "success_rate": _ratio(statuses.count("ok"), len(statuses))},
        "answer": {"n": len(answered), "exact_match": _ratio(sum(r["answer_correct"] for r in answered), len(answered))},
        "function_call": {"n": len(called), "exact_match": _ratio(sum(r["calls_correct"] for r in called), len(called))},
    }


def evaluate(backend, samples: list[Sample], params=None, progress: bool = True) -> dict:
    """Run every sample through the backend; metrics overall and per language, plus per-sample rows."""
    from tqdm import tqdm

    if params is None:
        from hessgpt.engine import SamplingParams

        params = SamplingParams(max_new_tokens=512, temperature=0.0, seed=0)
    rows = []
    for s in tqdm(samples, desc="tools", disable=not progress):
        o = run_sample(backend, s, params)
        rows.append({
            "id": s.id, "lang": s.lang, "source": s.source, "needs_code": s.needs_code, "coded": o.code_blocks > 0,
            "results": o.results, "reference": s.reference,
            "answer_correct": s.reference is not None and number_in(o.text, s.reference),
            "expected_calls": s.expected_calls, "tool_calls": o.tool_calls,
            "calls_correct": s.expected_calls is not None and calls_match(o.tool_calls, s.expected_calls),
            "answer": o.text,
        })
    return {"overall": metrics(rows),
            "per_lang": {lang: metrics([r for r in rows if r["lang"] == lang]) for lang in sorted({r["lang"] for r in rows})},
            "samples": rows}


def format_metrics(result: dict) -> str:
    """A Markdown table: one column per language, then overall."""
    cols = list(result["per_lang"]) + ["overall"]
    get = {**result["per_lang"], "overall": result["overall"]}

    def fmt(x):
        return "n/a" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))

    lines = ["| metric | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label, path in [("samples", ("n",)), ("routing precision", ("routing", "precision")),
                        ("routing recall", ("routing", "recall")), ("routing F1", ("routing", "f1")),
                        ("execution success", ("execution", "success_rate")),
                        ("answer exact match", ("answer", "exact_match")),
                        ("function-call exact match", ("function_call", "exact_match"))]:
        vals = []
        for c in cols:
            v = get[c]
            for k in path:
                v = v[k]
            vals.append(fmt(v))
        lines.append(f"| {label} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


__all__ = ["Sample", "load_samples", "sample_from_record", "evaluate", "metrics", "calls_match", "call_matches",
           "value_matches", "format_metrics", "gsm8k_reference"]
