"""Tool-use evaluation of the dual-model system: does model 1 call code when it should, does the code run,
is the final answer right, are function calls right?

Works on any backend with `stream_chat(messages, params, tools=None) -> Iterator[Event]` (hessgpt/events.py),
so tests drive it with a scripted model. Input records (JSONL, one format per line, detected per record):

- conversation format (docs/chat-format.md), e.g. the routing dev/test splits: the sample *needs code* iff an
  assistant message has `code`; the reference result is its type-tagged top-level "reference" when present,
  else the last number printed by its python tool message; expected function calls are the first turn's
  assistant `tool_calls`. The category is "category", or the id prefix "routing:CATEGORY-...".
- OOD single-turn {id, lang, category, kind, messages, needs_code, reference: {...} | null}.
- OOD multi-turn {id, lang, turns: [{user, needs_code, reference}]}: see `load_conversations` and
  `evaluate_conversations`.
- GSM8K-style word problems {question, answer: "... #### N"} (en or fr): needs code, reference N.
- BFCL {id, question: [[messages]], function: [...]} with its possible-answer file ({id, ground_truth}).
- xLAM {query, tools: JSON text, answers: JSON text}.

Metrics, per language and overall, one denominator per table (every item, skipped ones included): routing
precision/recall/F1 (code emitted when needed, not otherwise; a web artifact counts as code), execution success
rate (share of executed code blocks whose result status is "ok"), answer exact match (`score_result` of the
text after the last tool result against the reference: hessgpt/eval/scoring.py), maths and algo+data exact,
negatives answered without code (and those whose question contains a digit), and function-call exact match (BFCL's AST rule:
same function names, every required argument present, no unknown argument, each value in the allowed list).

Search items (records of hessgpt.data.routing.search, `category: "search"`, e.g. in a routing test split built
with `--search-share`) get their own table (`search_metrics`, `format_search`): `<search>` precision/recall
(searched iff the record searches), answerable ones right when the answer states the fact, unanswerable ones
right when the answer declines ("not found") and states no number, no-search ones right without a search
(hessgpt.eval.scoring.score_search); with the baselines, `always_search` (searches the question, then "not
found") beside `constant` (never searches, "I don't know."). The router needs an index for `<search>`:
`eval tools` gives it the shipped corpus (hessgpt.data.routing.search.shipped_search) unless --search-index.

With model 2 (`evaluate(..., model2=True)`, `eval tools --model2`): its effect on the same items in the same run,
under "model2" (`model2_summary`: asked, changed, fixed, broke, exact answers and execution with and without).
`evaluate_refinement` (`eval refine`) measures model 2 alone behind the router's policy on mutated programs.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hessgpt.data.refine import MUTATIONS, mutate, programs_from_routing
from hessgpt.engine import SamplingParams
from hessgpt.errors import HessGPTError
from hessgpt.events import Event
from hessgpt.eval.scoring import detect_lang, score_output, score_result, score_search
from hessgpt.tools.calls import ToolCallParseError, parse_arguments


@dataclass
class Sample:
    id: str
    lang: str
    messages: list[dict]                      # the prompt: system? + first user message
    needs_code: bool | None = None            # None: routing not scored (function-call data)
    reference: dict | float | None = None     # expected result: type-tagged object or a number
    category: str | None = None                # maths, algo, data, web, negative, ...
    tools: list[dict] | None = None
    expected_calls: list[dict] | None = None  # [{name: {arg: [allowed values]}}] (BFCL possible-answer form)
    source: str = ""
    search: dict | None = None                # search items: {"needed", "answerable", "value"} (see search_spec)


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
        args = parse_arguments(c.get("arguments"), c["name"])   # the router's parser: dict or JSON text
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


_ROUTING_ID = re.compile(r"^routing:([a-z]+)[-_:]")


def _category(record: dict, rid: str, needs_code: bool | None) -> str | None:
    if record.get("category"):
        return str(record["category"])
    m = _ROUTING_ID.match(rid)
    if m:
        return m.group(1)
    return "negative" if needs_code is False else None


def search_spec(record: dict) -> dict | None:
    """A search record of hessgpt.data.routing.search (`category: "search"` with `route`): {"needed": bool,
    "answerable": bool | None, "value": the fact an answerable one must state}; None for any other record."""
    route = record.get("route")
    if record.get("category") != "search" or not isinstance(route, dict) or "search" not in route:
        return None
    ref = record.get("reference") if isinstance(record.get("reference"), dict) else {}
    answerable = route.get("answerable") if route["search"] else None
    if answerable and not ref.get("value"):
        raise HessGPTError(f"search record {record.get('id')!r}: answerable but no reference value")
    return {"needed": bool(route["search"]), "answerable": answerable, "value": ref.get("value") if answerable else None}


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
        if isinstance(record.get("needs_code"), bool):               # OOD single-turn: the label is given
            needs_code = record["needs_code"]
        reference = record.get("reference")
        if reference is None and "reference" not in record:
            outputs = [m["content"] for m in turn if m["role"] == "tool" and m.get("name") == "python"]
            reference = _last_number(outputs[-1]) if outputs else None
        calls = [c for m in turn if m["role"] == "assistant" for c in (m.get("tool_calls") or [])]
        search = search_spec(record)
        if search is not None:   # scored by score_search (the search table), not by the code-answer tables
            reference = None
        return Sample(rid, _lang_of(record, prompt[-1]["content"]), prompt, needs_code=needs_code,
                      reference=reference if reference is None or isinstance(reference, dict) else float(reference),
                      tools=record.get("tools"), expected_calls=_exact_calls(calls) if calls else None,
                      source=record.get("source", "conversation"), category=_category(record, rid, needs_code),
                      search=search)
    if isinstance(record.get("question"), str) and "answer" in record:  # GSM8K
        try:
            ref = gsm8k_reference(record["answer"])
        except ValueError:
            raise HessGPTError(f"record {n}: GSM8K answer has no final '#### N'") from None
        return Sample(rid, _lang_of(record, record["question"]), [{"role": "user", "content": record["question"]}],
                      needs_code=True, reference=ref, source="gsm8k", category="maths")
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
    if "turns" in record:
        raise HessGPTError(f"record {n} ({rid}): a multi-turn conversation; load it with load_conversations")
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


def load_conversations(path: str | Path, limit: int | None = None) -> list[dict]:
    """Multi-turn records {id, lang, turns: [{user, needs_code, reference}]} of a JSONL file."""
    path = Path(path)
    if not path.exists():
        raise HessGPTError(f"no such data file {path}")
    convs = _read_jsonl(path)[:limit]
    for i, c in enumerate(convs, 1):
        if not isinstance(c.get("turns"), list) or not c["turns"] or \
                any(not isinstance(t, dict) or "user" not in t for t in c["turns"]):
            raise HessGPTError(f"{path} record {i}: not a multi-turn conversation (needs 'turns': [{{user, ...}}])")
    return convs


def is_multiturn_file(path: str | Path) -> bool:
    """True when the file's first record has "turns" (the OOD multi-turn format)."""
    recs = _read_jsonl(Path(path))
    return bool(recs) and "turns" in recs[0]


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
    try:
        args = parse_arguments(call.get("arguments"), name)   # the calls come from the router/backend's parser
    except ToolCallParseError:
        return False
    if set(args) - set(params):
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
    codes: list[str] = field(default_factory=list)      # the code blocks, as executed
    outputs: list[str] = field(default_factory=list)    # what each executed block printed (or its error)
    text: str = ""
    final_text: str = ""                                 # the text after the last tool result (the stated answer)
    tool_calls: list[dict] = field(default_factory=list)
    refine_calls: int = 0                                # model 2 asked (refined_code events)
    refined_used: int = 0                                # ... and its program's result replaced model 1's
    refine_skipped: int = 0                              # model 2 needed but not asked (refine_skipped events)
    votes_replaced: int = 0                              # --code-votes: the vote ran another block than model 1's
    refine_asked: list[str] = field(default_factory=list)     # why model 2 was asked, per call (error, no output, ...)
    refine_verdicts: list[str] = field(default_factory=list)  # the router's verdict on its program, per call
    searches: list[str] = field(default_factory=list)   # the queries of the turn's <search> blocks


def run_sample(backend, sample: Sample, params) -> Outcome:
    return run_messages(backend, sample.messages, params, sample.tools)


def run_messages(backend, messages: list[dict], params, tools=None) -> Outcome:
    out = Outcome()
    after_code = False
    for ev in backend.stream_chat(messages, params, tools=tools):
        if ev.type == "code":
            out.code_blocks += 1
            out.codes.append(ev.text)
            after_code = True
        elif ev.type == "result" and after_code:   # search hits are "result" events too: only count code runs
            out.results.append(str(ev.data.get("status", "")))
            out.outputs.append(ev.text)
            after_code = False
            out.final_text = ""
        elif ev.type == "result":
            out.final_text = ""
        elif ev.type == "search":
            after_code = False
            out.searches.append(ev.text)
        elif ev.type == "text":
            out.text += ev.text
            out.final_text += ev.text
        elif ev.type == "tool_call":
            out.tool_calls.append({"name": ev.data.get("name"), "arguments": ev.data.get("arguments")})
        elif ev.type == "refined_code":
            out.refine_calls += 1
            out.refined_used += bool(ev.data.get("used"))
            out.refine_asked.append(str(ev.data.get("reason", "")))
            out.refine_verdicts.append(str(ev.data.get("verdict", "used" if ev.data.get("used") else "")))
        elif ev.type == "refine_skipped":
            out.refine_skipped += 1
        elif ev.type == "code_vote":
            out.votes_replaced += bool(ev.data.get("replaced"))
    return out


def attach_search(backend, search) -> bool:
    """Give the backend's router (a DualModelBackend's `router`) `search` for its `<search>` blocks; False
    when the backend has no router (a scripted or plain backend answers searches itself, or never)."""
    router = getattr(backend, "router", None)
    if router is None or not hasattr(router, "search"):
        return False
    router.search = search
    return True


def _prompt_tokens(backend, messages: list[dict], tools) -> int | None:
    tok = getattr(backend, "tokenizer", None)
    if tok is None or not hasattr(tok, "render_for_generation"):
        return None
    msgs = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
    return len(tok.render_for_generation({"messages": msgs, **({"tools": tools} if tools else {})}))


def too_long(backend, messages: list[dict], params, tools=None) -> bool:
    """The prompt + the answer's reserve (min(max_new_tokens, context/2)) does not fit the backend's context."""
    ctx = getattr(backend, "context_length", None)
    if not ctx:
        return False
    n = _prompt_tokens(backend, messages, tools)
    return n is not None and n + min(params.max_new_tokens, ctx // 2) > ctx


def safe_run(backend, messages, params, tools=None) -> tuple[Outcome, str | None]:
    """(outcome, None), or (empty outcome, "too_long" | "error: ...") for an item that cannot run: never raises."""
    if too_long(backend, messages, params, tools):
        return Outcome(), "too_long"
    try:
        return run_messages(backend, messages, params, tools), None
    except HessGPTError as e:
        return Outcome(), "too_long" if "context" in str(e) else f"error: {e}"
    except Exception as e:  # one item's backend failure is a counted skip, not an aborted run
        return Outcome(), f"error: {type(e).__name__}: {e}"


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else round(num / den, 4)


def metrics(rows: list[dict]) -> dict:
    """Routing / execution / answer / function-call metrics over per-sample rows (see `evaluate`).

    One denominator per table: every row of the table, skipped ones included (they count as not right)."""
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

    def exact(sub):
        # where the wrong ones go wrong: no code run, code whose printed result is not the reference, or the right
        # result printed and a wrong one stated (result_right: the last block's printed output scored by score_output)
        # (the three counts partition the wrong answers)
        wrong = [r for r in sub if not r["answer_correct"]]
        return {"n": len(sub), "right": len(sub) - len(wrong), "exact_match": _ratio(len(sub) - len(wrong), len(sub)),
                "no_code_run": sum(r.get("result_right") is None for r in wrong),
                "result_wrong": sum(r.get("result_right") is False for r in wrong),
                "result_right_stated_wrong": sum(r.get("result_right") is True for r in wrong)}

    maths = [r for r in answered if r.get("category") in ("maths", "gsm8k")]
    algo = [r for r in answered if r.get("category") in ("algo", "data")]
    neg = [r for r in routed if not r["needs_code"]]
    neg_digits = [r for r in neg if r.get("question_has_digit")]

    def no_code(sub):
        ok = sum(not r["coded"] and not r.get("skipped") for r in sub)
        return {"n": len(sub), "right": ok, "rate": _ratio(ok, len(sub))}

    return {
        "n": len(rows),
        "search": search_metrics(rows),
        "skipped": sum(bool(r.get("skipped")) for r in rows),
        "routing": {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": precision, "recall": recall, "f1": f1,
                    "accuracy": _ratio(tp + tn, len(routed))},
        "execution": {"executed": len(statuses), "ok": statuses.count("ok"),
                      "success_rate": _ratio(statuses.count("ok"), len(statuses))},
        "answer": {"n": len(answered), "exact_match": _ratio(sum(r["answer_correct"] for r in answered), len(answered))},
        "maths": exact(maths), "algo_data": exact(algo),
        "negatives_no_code": no_code(neg), "negatives_with_digits_no_code": no_code(neg_digits),
        "function_call": {"n": len(called), "exact_match": _ratio(sum(r["calls_correct"] for r in called), len(called))},
    }


def search_metrics(rows: list[dict]) -> dict:
    """Search items (rows with a "search" spec): <search> precision/recall (searched iff needed), answerable
    ones answered right (the fact stated), unanswerable ones declined ("not found", no invented fact),
    no-search ones answered without a search; and how often the other items searched. One denominator per line:
    every item of its kind, skipped ones included (not right)."""
    items = [r for r in rows if r.get("search")]
    need = [r for r in items if r["search"]["needed"]]
    tp = sum(r["searched"] for r in need)
    fp = sum(r["searched"] for r in items if not r["search"]["needed"])
    fn = len(need) - tp

    def rate(sub):
        ok = sum(bool(r["search_right"]) for r in sub)
        return {"n": len(sub), "right": ok, "rate": _ratio(ok, len(sub))}

    others = [r for r in rows if not r.get("search")]
    return {"n": len(items), "tp": tp, "fp": fp, "fn": fn, "tn": len(items) - len(need) - fp,
            "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
            "answerable": rate([r for r in need if r["search"]["answerable"]]),
            "unanswerable": rate([r for r in need if not r["search"]["answerable"]]),
            "no_search": rate([r for r in items if not r["search"]["needed"]]),
            # the answerable ones again with the router's index removed (add_without_search): what the hits add
            "answerable_without_search": rate([r["without_search"] for r in need if r.get("without_search")]),
            "other_items_searched": {"n": len(others), "searched": sum(bool(r.get("searched")) for r in others)}}


def _default_params():
    return SamplingParams(max_new_tokens=512, temperature=0.0, seed=0)


def _last_user(messages: list[dict]) -> str:
    return next((m.get("content") or "" for m in reversed(messages) if m["role"] == "user"), "")


def sample_row(backend, s: Sample, params) -> dict:
    o, skip = safe_run(backend, s.messages, params, s.tools)
    question = _last_user(s.messages)
    right, reason = (False, skip) if skip else (False, "no_reference")
    result_right = None      # did the last executed block print the reference? (code right, whatever was said)
    if not skip and s.reference is not None:
        right, reason = score_result(s.reference, o.final_text, question, s.lang)
        if o.outputs:
            result_right = score_output(s.reference, o.outputs[-1])[0]
    search_right, search_reason = (None, None) if s.search is None else (False, skip) if skip else \
        score_search(s.search, bool(o.searches), o.final_text, question, s.lang)
    return {
        "id": s.id, "lang": s.lang, "source": s.source, "category": s.category, "needs_code": s.needs_code,
        "coded": o.code_blocks > 0, "results": o.results, "reference": s.reference,
        "answer_correct": right, "reason": reason, "skipped": skip,
        "code": o.codes, "outputs": o.outputs, "result_right": result_right,
        "question_has_digit": re.search(r"\d", question) is not None,
        "expected_calls": s.expected_calls, "tool_calls": o.tool_calls,
        "calls_correct": not skip and s.expected_calls is not None and calls_match(o.tool_calls, s.expected_calls),
        "answer": o.text, "final_text": o.final_text,
        "refine_calls": o.refine_calls, "refined_used": o.refined_used, "refine_skipped": o.refine_skipped,
        "refine_asked": o.refine_asked, "refine_verdicts": o.refine_verdicts, "votes_replaced": o.votes_replaced,
        "search": s.search, "searched": bool(o.searches), "search_queries": o.searches,
        "search_right": search_right, "search_reason": search_reason,
    }


def add_without_search(backend, samples: list[Sample], rows: list[dict], params) -> bool:
    """The answerable search items run again with the backend's router holding no index (its `<search>` gets
    "search is not configured"), as row["without_search"] = {search_right, search_reason, answer}: the answer
    correctness with vs without search, on the same items. False (nothing run) when the backend has no router."""
    router = getattr(backend, "router", None)
    if router is None or not hasattr(router, "search"):
        return False
    old, router.search = router.search, None
    try:
        for s, r in zip(samples, rows):
            if s.search and s.search["answerable"]:
                w = sample_row(backend, s, params)
                r["without_search"] = {"search_right": w["search_right"], "search_reason": w["search_reason"],
                                       "searched": w["searched"], "answer": w["answer"]}
    finally:
        router.search = old
    return True


def _good(r: dict) -> bool:
    """An item is right: its answer states the reference, or (no reference) every code block ran ok."""
    if r["reference"] is not None:
        return bool(r["answer_correct"])
    return bool(r["results"]) and all(x == "ok" for x in r["results"])


def add_without_model2(backend, samples: list[Sample], rows: list[dict], params) -> None:
    """For each row where model 2's program was used, the same item again with model 2 off (the backend's
    `model2_disabled()` context), as row["without"] = {answer_correct, results, final_text}. Elsewhere the run
    without model 2 is the same run (greedy decoding; model 1 read its own result), so no row is run twice
    unless model 2 changed what model 1 read: the with/without comparison is exact and costs only those items."""
    disabled = getattr(backend, "model2_disabled", None)
    for s, r in zip(samples, rows):
        if not r.get("refined_used"):
            continue
        if disabled is None:
            raise HessGPTError(f"item {r['id']}: model 2 changed the result but the backend cannot run without it "
                               "(no model2_disabled())")
        with disabled():
            w = sample_row(backend, s, params)
        r["without"] = {"answer_correct": w["answer_correct"], "results": w["results"], "final_text": w["final_text"],
                        "reason": w["reason"], "reference": w["reference"]}


def model2_summary(rows: list[dict]) -> dict:
    """Model 2's effect over rows scored by `evaluate(..., model2=True)`: how many items it was asked on
    (calls), changed the result of (changed), turned from wrong to right (fixed) or right to wrong (broke);
    exact-answer accuracy and execution success rate with and without it, on the same items (metrics())."""
    without = [{**r, **r["without"]} if r.get("without") else r for r in rows]
    w, wo = metrics(rows), metrics(without)
    return {"n": len(rows), "calls": sum(r.get("refine_calls", 0) > 0 for r in rows),
            "changed": sum(bool(r.get("without")) for r in rows),
            "fixed": sum(_good(a) and not _good(b) for a, b in zip(rows, without)),
            "broke": sum(_good(b) and not _good(a) for a, b in zip(rows, without)),
            "skipped": sum(r.get("refine_skipped", 0) > 0 for r in rows),
            "answer_correct_with": w["answer"]["exact_match"], "answer_correct_without": wo["answer"]["exact_match"],
            "right_with": sum(r["answer_correct"] for r in rows if r["reference"] is not None),
            "right_without": sum(r["answer_correct"] for r in without if r["reference"] is not None),
            "executable_with": w["execution"]["success_rate"], "executable_without": wo["execution"]["success_rate"],
            # per call: why model 2 was asked (model 1's run), and what became of its program (ToolRouter._judge:
            # used, same_output, still_wrong, failed, no_output, unchanged, not_python)
            "asked_because": dict(Counter(_short_reason(x) for r in rows for x in r.get("refine_asked", [])).most_common()),
            "verdicts": dict(Counter(x for r in rows for x in r.get("refine_verdicts", [])).most_common())}


def _short_reason(reason: str) -> str:
    """A refine reason as a category: "operand 12 of the request not in the code" -> "operand missing"."""
    return "operand missing" if reason.startswith("operand ") else reason


def tables(rows: list[dict]) -> dict:
    """Metrics over per-sample rows: overall, per language, the skipped items, and the rows themselves."""
    return {"overall": metrics(rows),
            "per_lang": {lang: metrics([r for r in rows if r["lang"] == lang]) for lang in sorted({r["lang"] for r in rows})},
            "skipped": [{"id": r["id"], "reason": r["skipped"]} for r in rows if r["skipped"]],
            "samples": rows}


class ConstantBackend:
    """Baseline: one fixed sentence without code, in the prompt's language ("Je ne sais pas." / "I don't know.")."""

    context_length = None
    SENTENCES = {"fr": "Je ne sais pas.", "en": "I don't know."}

    def answer(self, messages) -> str:
        return self.SENTENCES.get(detect_lang(_last_user(messages)) or "en", self.SENTENCES["en"])

    def stream_chat(self, messages, params, tools=None, cancel=None):
        yield Event("text", self.answer(messages))
        yield Event("done", data={"finish_reason": "stop"})


# Written before looking at any result, as a sceptic would, and not tuned: a digit, a bracket, or a maths/code word.
REGEX_ROUTE = re.compile(
    r"\d|[\[\]{}()]|\b(?:combien|calcul\w*|somme|produit|moyenne|racine|d[ée]riv\w*|int[ée]gr\w*|[ée]quation|"
    r"pourcentage|trie[rz]?|liste|fonction|code|python|html|page|inverse\w*|how much|how many|calculate|compute|"
    r"sum|product|average|mean|square|root|derivative|integral|solve|percent\w*|sort|list|function|reverse|"
    r"script|program)\b", re.I)


class RegexRouterBackend(ConstantBackend):
    """Baseline: a code block iff REGEX_ROUTE matches the user's last message, then the constant sentence (it
    cannot compute)."""

    def stream_chat(self, messages, params, tools=None, cancel=None):
        if REGEX_ROUTE.search(_last_user(messages)):
            yield Event("code", "print()", {"lang": "python"})
            yield Event("result", "\n", {"status": "ok"})
        yield Event("text", self.answer(messages))
        yield Event("done", data={"finish_reason": "stop"})


BASELINES = {"constant": ConstantBackend, "regex": RegexRouterBackend}


class AlwaysSearchBackend(ConstantBackend):
    """Search baseline: always `<search>` the question itself, then say the documents do not have it (never
    invents, never answers). With the constant one (never searches, "I don't know."), what a model adds on
    search items: recall 1 and every unanswerable item right come for free; the answerable ones do not."""

    SENTENCES = {"fr": "Je n'ai pas trouvé la réponse dans les documents.", "en": "I could not find the answer in the documents."}

    def stream_chat(self, messages, params, tools=None, cancel=None):
        yield Event("search", _last_user(messages))
        yield Event("result", "No results.", {"status": "ok", "tool": "search"})
        yield Event("text", self.answer(messages))
        yield Event("done", data={"finish_reason": "stop"})


SEARCH_BASELINES = {"always_search": AlwaysSearchBackend}   # added to `baselines` when search items are scored


def evaluate(backend, samples: list[Sample], params=None, progress: bool = True, baselines: bool = False,
             model2: bool = False, search_ablation: bool = True) -> dict:
    """Run every sample through the backend; metrics overall and per language, per-sample rows, the skipped
    items, and (baselines=True) the same tables for the constant and regex-router baselines under "baselines".
    model2=True: model 2's effect under "model2" (`model2_summary`), the items it changed run again without it.
    search_ablation (with a router backend and answerable search items): those items again without the index
    (`add_without_search`), scored under search.answerable_without_search."""
    from tqdm import tqdm

    params = params or _default_params()
    rows = [sample_row(backend, s, params) for s in tqdm(samples, desc="tools", disable=not progress)]
    if model2:
        add_without_model2(backend, samples, rows, params)
    if search_ablation and any(s.search and s.search["answerable"] for s in samples):
        add_without_search(backend, samples, rows, params)
    result = tables(rows)
    if model2:
        result["model2"] = model2_summary(rows)
    if baselines:
        extra = SEARCH_BASELINES if any(s.search for s in samples) else {}
        result["baselines"] = {name: tables([sample_row(cls(), s, params) for s in samples])
                               for name, cls in {**BASELINES, **extra}.items()}
    return result


def evaluate_refinement(router, records: list[dict], seed: int = 0, limit: int | None = None,
                        progress: bool = False) -> dict:
    """Model 2 under the router's policy (`ToolRouter.run_code`) on model-1-like failures, without model 1:
    each single-step Python program of `records` (routing dev/test: never in model 2's training data) as is
    ("correct") and once per mutation kind of hessgpt.data.refine (the draft), through the router with its
    real sandbox and model 2. Per kind: n, asked (model 2 called), used (its result replaced the draft's),
    skipped, right_without / right_with (the result is the program's correct output, without model 2 = the
    draft's own run), fixed, broke, executable_without / executable_with."""
    import random as _random

    from tqdm import tqdm


    programs = programs_from_routing(records, splits=("train", "dev", "test"))[:limit]
    rng = _random.Random(seed)
    items = [(p, "correct", p.code) for p in programs]
    for p in programs:
        for kind in MUTATIONS:
            d = mutate(p.code, kind, rng)
            if d is not None:
                items.append((p, kind, d))

    def norm(s):
        return "\n".join(line.rstrip() for line in s.strip().splitlines())

    per: dict[str, dict] = {}
    for p, kind, draft in tqdm(items, desc="refine", disable=not progress):
        alone = router.sandbox.run(draft)
        events = [e for e in router.run_code(draft, p.request) if isinstance(e, Event)]
        result = next(e for e in events if e.type == "result")
        refined = next((e for e in events if e.type == "refined_code"), None)
        right_wo = alone.status == "ok" and norm(alone.stdout) == norm(p.output)
        right_w = result.data["status"] == "ok" and norm(result.text) == norm(p.output)
        t = per.setdefault(kind, {k: 0 for k in ("n", "asked", "used", "skipped", "right_without", "right_with", "fixed",
                                                 "broke", "executable_without", "executable_with")})
        t["n"] += 1
        t["asked"] += refined is not None
        t["used"] += bool(result.data.get("refined"))
        t["skipped"] += any(e.type == "refine_skipped" for e in events)
        t["right_without"] += right_wo
        t["right_with"] += right_w
        t["fixed"] += right_w and not right_wo
        t["broke"] += right_wo and not right_w
        t["executable_without"] += alone.status == "ok"
        t["executable_with"] += result.data["status"] == "ok"
    total = {k: sum(t[k] for kk, t in per.items() if kk != "correct") for k in next(iter(per.values()), {})}
    return {"programs": len(programs), "per_kind": per, "mutated": total}


def format_refinement(result: dict) -> str:
    cols = ("n", "asked", "used", "skipped", "right_without", "right_with", "fixed", "broke", "executable_without", "executable_with")
    rows = [("kind",) + cols] + [(k,) + tuple(str(t[c]) for c in cols) for k, t in result["per_kind"].items()]
    rows.append(("all mutated",) + tuple(str(result["mutated"].get(c, 0)) for c in cols))
    return "\n".join("| " + " | ".join(r) + " |" + ("\n|" + "---|" * len(r) if i == 0 else "") for i, r in enumerate(rows))


def evaluate_conversations(backend, convs: list[dict], params=None, progress: bool = False) -> dict:
    """Replay multi-turn conversations turn by turn as an API client: history = the previous user turns + the
    model's own previous answers as plain assistant text (no code, no result). A turn is right iff its routing
    is right, its result (if a reference) is right and, for a no-code turn, it has no code and a non-empty
    answer. Returns {overall, per_lang: {turns, turns_right, turn_rate, conversations, conversations_right,
    conversation_rate}, conversations: [{id, lang, turns: [row]}]}."""
    from tqdm import tqdm

    params = params or _default_params()
    out = []
    for c in tqdm(convs, desc="conversations", disable=not progress):
        lang = c.get("lang") or detect_lang(c["turns"][0]["user"]) or "en"
        history, turns = [], []
        for t in c["turns"]:
            history.append({"role": "user", "content": t["user"]})
            o, skip = safe_run(backend, history, params)
            ref = t.get("reference")
            routed = (o.code_blocks > 0) == bool(t.get("needs_code"))
            res_ok, reason = True, "ok"
            if skip:
                res_ok, reason = False, skip
            elif ref is not None:
                res_ok, reason = score_result(ref, o.final_text, t["user"], lang)
            elif not t.get("needs_code") and not o.text.strip():
                res_ok, reason = False, "empty"
            if not routed and reason == "ok":
                reason = "wrong_route"
            turns.append({"user": t["user"], "needs_code": t.get("needs_code"), "coded": o.code_blocks > 0,
                          "reference": ref, "right": routed and res_ok, "reason": reason, "answer": o.text})
            history.append({"role": "assistant", "content": o.text})
        out.append({"id": c.get("id"), "lang": lang, "turns": turns, "right": all(t["right"] for t in turns)})

    def summary(cs):
        ts = [t for c in cs for t in c["turns"]]
        return {"turns": len(ts), "turns_right": sum(t["right"] for t in ts),
                "turn_rate": _ratio(sum(t["right"] for t in ts), len(ts)),
                "conversations": len(cs), "conversations_right": sum(c["right"] for c in cs),
                "conversation_rate": _ratio(sum(c["right"] for c in cs), len(cs))}

    return {"overall": summary(out),
            "per_lang": {lang: summary([c for c in out if c["lang"] == lang]) for lang in sorted({c["lang"] for c in out})},
            "conversations": out}


def _fmt(x):
    return "n/a" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


ROWS = [("samples", ("n",)), ("skipped", ("skipped",)), ("routing precision", ("routing", "precision")),
        ("routing recall", ("routing", "recall")), ("routing F1", ("routing", "f1")),
        ("execution success", ("execution", "success_rate")), ("answer exact match", ("answer", "exact_match")),
        ("maths exact", ("maths", "exact_match")),
        ("maths wrong: no code run", ("maths", "no_code_run")), ("maths wrong: code result wrong", ("maths", "result_wrong")),
        ("maths wrong: result right, answer wrong", ("maths", "result_right_stated_wrong")),
        ("algo+data exact", ("algo_data", "exact_match")),
        ("algo+data wrong: code result wrong", ("algo_data", "result_wrong")),
        ("algo+data wrong: result right, answer wrong", ("algo_data", "result_right_stated_wrong")),
        ("negatives without code", ("negatives_no_code", "rate")),
        ("negatives with digits without code", ("negatives_with_digits_no_code", "rate")),
        ("function-call exact match", ("function_call", "exact_match"))]


def _table(result: dict, title: str, cols: list[str], baselines: tuple[str, ...], rows, section: str | None = None) -> str:
    """Markdown: one column per language (then overall), each as model | baseline...; `rows` = (label, key path)
    read under `section` of each column's metrics when given."""
    systems = [("", result)] + [(f" {n}", result["baselines"][n]) for n in baselines if n in result.get("baselines", {})]
    heads = [c + name if name else c for c in cols for name, _ in systems]
    lines = [f"| {title} | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for label, path in rows:
        vals = []
        for c in cols:
            for _, res in systems:
                v = res["overall"] if c == "overall" else res["per_lang"].get(c, {})
                for k in ((section,) if section else ()) + tuple(path):
                    v = None if v is None else v.get(k)
                vals.append(_fmt(v))
        lines.append(f"| {label} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def format_metrics(result: dict) -> str:
    """A Markdown table: one column per language, then overall; with baselines, model | regex | constant per column."""
    return _table(result, "metric", list(result["per_lang"]) + ["overall"], ("regex", "constant"), ROWS)


SEARCH_ROWS = [("search items", ("n",)), ("<search> precision", ("precision",)), ("<search> recall", ("recall",)),
               ("answerable: fact stated", ("answerable", "rate")), ("unanswerable: not found", ("unanswerable", "rate")),
               ("no-search: answered without search", ("no_search", "rate")),
               ("answerable, index removed: fact stated", ("answerable_without_search", "rate"))]


def has_search(result: dict) -> bool:
    return bool((result.get("overall") or {}).get("search", {}).get("n"))


def format_search(result: dict) -> str:
    """The search table: one column per language, then overall, each as model | always_search | constant."""
    cols = [c for c in result["per_lang"] if result["per_lang"][c].get("search", {}).get("n")] + ["overall"]
    return _table(result, "search", cols, ("always_search", "constant"), SEARCH_ROWS, section="search")


def format_model2(block: dict) -> str:
    """One Markdown table: exact answers and execution with and without model 2, and what it did."""
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"
    return "\n".join([
        "| model 2 | without | with |", "|---|---|---|",
        f"| answer exact match | {pct(block['answer_correct_without'])} ({block['right_without']}) | "
        f"{pct(block['answer_correct_with'])} ({block['right_with']}) |",
        f"| execution success | {pct(block['executable_without'])} | {pct(block['executable_with'])} |",
        f"| asked / changed / fixed / broke / skipped (of {block['n']}) | | {block['calls']} / {block['changed']} / "
        f"{block['fixed']} / {block['broke']} / {block['skipped']} |",
        *([f"| model 2's programs (per call) | | {', '.join(f'{k} {v}' for k, v in block['verdicts'].items())} |"]
          if block.get("verdicts") else [])])


def format_conversations(result: dict) -> str:
    """A Markdown table of the multi-turn replay: turns and whole conversations right per language, then the
    baselines' (when present) under the model's."""
    cols = list(result["per_lang"]) + ["overall"]
    lines = ["| multi-turn | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    systems = [("", result)] + [(f" ({n})", result["baselines"][n]) for n in ("regex", "constant")
                                if n in result.get("baselines", {})]
    for what, n_key, k_key in (("turns right", "turns", "turns_right"),
                               ("conversations right", "conversations", "conversations_right")):
        for name, res in systems:
            get = {**res["per_lang"], "overall": res["overall"]}
            lines.append(f"| {what}{name} | " + " | ".join(
                f"{get[c][k_key]}/{get[c][n_key]}" if c in get else "n/a" for c in cols) + " |")
    return "\n".join(lines)


__all__ = ["Sample", "load_samples", "load_conversations", "sample_from_record", "evaluate", "evaluate_conversations",
           "metrics", "tables", "model2_summary", "format_model2", "evaluate_refinement", "format_refinement", "calls_match", "call_matches", "value_matches", "format_metrics", "format_conversations",
           "gsm8k_reference", "ConstantBackend", "RegexRouterBackend", "BASELINES", "is_multiturn_file",
           "AlwaysSearchBackend", "SEARCH_BASELINES", "attach_search", "search_spec", "search_metrics", "format_search", "has_search",
           "add_without_search"]
