"""The public out-of-distribution tool-use set (hessgpt/eval/prompts/tools_ood_*.jsonl): well-formed, loadable,
every reference recomputed independently by its `check` expression, and scoreable. No model, fast."""

import collections
import hashlib
import json
import math
import re
from pathlib import Path

import pytest
import sympy

from hessgpt.eval.scoring import score_result
from hessgpt.eval.tools import is_multiturn_file, load_conversations, load_samples

PROMPTS = Path(__file__).resolve().parents[2] / "hessgpt" / "eval" / "prompts"
SINGLE = {"fr": PROMPTS / "tools_ood_fr.jsonl", "en": PROMPTS / "tools_ood_en.jsonl"}
MULTI = PROMPTS / "tools_ood_multiturn.jsonl"

# The set is FROZEN: it is a test set, written by hand before any data change, never a target to write
# training templates for. Changing a file (even one prompt or one reference) needs a new version of the set
# (new file names, e.g. tools_ood_v2_*.jsonl, and new numbers reported beside the old ones), never an edit
# to fit a model. These digests pin the shipped files.
FROZEN_SHA256 = {
    "tools_ood_fr.jsonl": "cd863b6d62a53e1c645efe70163f92d253ca4b8c1b0cb60cb691c69606c0a01b",
    "tools_ood_en.jsonl": "7cabb2dcfca2ca2c1f7432d8436860c6eb1878517a6646685607d8e8bf188a96",
    "tools_ood_multiturn.jsonl": "3a16bf52a6edf954e34aee9649f706ef87d141ab99ebadc7e8839725b3a95244",
}

CATEGORIES = {"maths", "algo", "data", "web", "negative"}
MINIMUM = {"maths": 35, "algo": 15, "data": 12, "web": 6, "negative": 30}
CHECK_NAMES = {"math": math, "sympy": sympy, "json": json, "collections": collections}
SENTENCE = {"fr": "Voici le résultat final du calcul demandé : {}.",
            "en": "Here is the final result of the requested calculation: {}."}
YES_NO = {"fr": ("oui", "non"), "en": ("yes", "no")}


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def single(lang: str) -> list[dict]:
    return read(SINGLE[lang])


def conversations() -> list[dict]:
    return read(MULTI)


def all_checked() -> list[tuple[str, str, str, dict, str]]:
    """(id, lang, question, reference, check) of every single-turn record and every conversation turn."""
    out = [(r["id"], r["lang"], r["messages"][0]["content"], r["reference"], r["check"])
           for lang in SINGLE for r in single(lang)]
    out += [(f"{c['id']}#{i}", c["lang"], t["user"], t["reference"], t["check"])
            for c in conversations() for i, t in enumerate(c["turns"], 1)]
    return out


CHECKED = [pytest.param(*x, id=x[0]) for x in all_checked() if x[3] is not None]


def evaluate_check(check: str):
    return eval(check, {"__builtins__": __builtins__, **CHECK_NAMES})  # noqa: S307 - the repo's own expressions


def fmt_number(value, lang: str) -> str:
    text = str(int(value)) if float(value).is_integer() else repr(float(value))
    return text.replace(".", ",") if lang == "fr" else text


def right_answer(reference: dict, lang: str) -> str:
    """A correct final-answer sentence built from the reference value, in the record's language."""
    kind, value = reference["type"], reference["value"]
    if kind == "number":
        shown = fmt_number(value, lang)
    elif kind == "bool":
        shown = YES_NO[lang][0 if value else 1]
    elif kind == "list":
        shown = repr(list(value))
    else:  # symbolic, string
        shown = str(value)
    return SENTENCE[lang].format(shown)


def test_files_parse_and_ids_unique():
    ids = []
    for lang in SINGLE:
        recs = single(lang)
        assert all(r["lang"] == lang for r in recs)
        ids += [r["id"] for r in recs]
        assert all(re.fullmatch(rf"ood-{lang}-\d{{3}}", r["id"]) for r in recs)
    convs = conversations()
    ids += [c["id"] for c in convs]
    assert all(re.fullmatch(r"ood-mt-(fr|en)-\d{2}", c["id"]) for c in convs)
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("lang", sorted(SINGLE))
def test_single_turn_counts_and_labels(lang):
    recs = single(lang)
    assert len(recs) >= 100
    counts = collections.Counter(r["category"] for r in recs)
    assert set(counts) == CATEGORIES
    for cat, n in MINIMUM.items():
        assert counts[cat] >= n, (cat, counts[cat])
    texts = [r["messages"][0]["content"] for r in recs]
    assert len(texts) == len(set(texts))
    for r in recs:
        assert set(r) == {"id", "lang", "category", "kind", "messages", "needs_code", "reference", "check"}
        assert [m["role"] for m in r["messages"]] == ["user"] and r["messages"][0]["content"].strip()
        assert r["kind"] and isinstance(r["kind"], str)
        assert r["needs_code"] is (r["category"] != "negative")  # False exactly for negatives
        if r["category"] in ("web", "negative"):
            assert r["reference"] is None and r["check"] is None
        else:
            assert isinstance(r["reference"], dict) and isinstance(r["check"], str)
    neg = [r for r in recs if r["category"] == "negative"]
    assert sum(re.search(r"\d", r["messages"][0]["content"]) is not None for r in neg) >= 15


def test_multiturn_counts_and_labels():
    convs = conversations()
    assert len(convs) >= 30
    per_lang = collections.Counter(c["lang"] for c in convs)
    assert per_lang["fr"] >= 15 and per_lang["en"] >= 15 and set(per_lang) == {"fr", "en"}
    for c in convs:
        assert 2 <= len(c["turns"]) <= 4
        for t in c["turns"]:
            assert set(t) == {"user", "needs_code", "reference", "check"} and t["user"].strip()
            assert isinstance(t["needs_code"], bool)
            if t["needs_code"]:
                assert isinstance(t["reference"], dict) and isinstance(t["check"], str)
            else:
                assert t["reference"] is None and t["check"] is None
    # code and no-code turns are mixed in the set as a whole and within many conversations
    mixed = [c for c in convs if len({t["needs_code"] for t in c["turns"]}) == 2]
    assert len(mixed) >= 15


@pytest.mark.parametrize("rid, lang, question, reference, check", CHECKED)
def test_reference_equals_its_check(rid, lang, question, reference, check):
    got = evaluate_check(check)
    kind, value = reference["type"], reference["value"]
    if kind == "number":
        tol = reference.get("tol", 1e-9 * max(1.0, abs(value)))
        assert abs(float(got) - value) <= tol, (rid, got, value)
    elif kind == "symbolic":
        assert sympy.simplify(sympy.sympify(value) - sympy.sympify(got)) == 0, (rid, got, value)
    elif kind == "list":
        assert list(got) == value, (rid, got, value)
    elif kind == "string":
        assert isinstance(got, str) and got == value, (rid, got, value)
    elif kind == "bool":
        assert isinstance(got, bool) and got is value, (rid, got, value)
    else:
        pytest.fail(f"{rid}: unexpected reference type {kind}")


@pytest.mark.parametrize("rid, lang, question, reference, check", CHECKED)
def test_reference_is_scoreable(rid, lang, question, reference, check):
    """A correct answer sentence scores right; the same sentence with a wrong value does not."""
    ok, reason = score_result(reference, right_answer(reference, lang), question, lang)
    assert ok and reason == "ok", (rid, reason, right_answer(reference, lang))
    kind, value = reference["type"], reference["value"]
    wrong = {"number": lambda: {**reference, "value": value + 1000},
             "symbolic": lambda: {**reference, "value": f"{value} + 7*x"},
             "list": lambda: {**reference, "value": list(value) + list(value)[:1]},
             "string": lambda: {**reference, "value": str(value) + "zz"},
             "bool": lambda: {**reference, "value": not value}}[kind]()
    assert not score_result(reference, right_answer(wrong, lang), question, lang)[0], rid


@pytest.mark.parametrize("lang", sorted(SINGLE))
def test_loads_through_eval_tools(lang):
    recs = single(lang)
    samples = load_samples(SINGLE[lang])
    assert not is_multiturn_file(SINGLE[lang])
    assert len(samples) == len(recs)
    for s, r in zip(samples, recs):
        assert s.id == r["id"] and s.lang == lang and s.category == r["category"]
        assert s.needs_code is r["needs_code"]
        assert s.reference == r["reference"]
        assert s.messages == r["messages"]


def test_multiturn_loads_through_eval_tools():
    assert is_multiturn_file(MULTI)
    convs = load_conversations(MULTI)
    assert [c["id"] for c in convs] == [c["id"] for c in conversations()]


@pytest.mark.parametrize("name", sorted(FROZEN_SHA256))
def test_frozen(name):
    digest = hashlib.sha256((PROMPTS / name).read_bytes()).hexdigest()
    assert digest == FROZEN_SHA256[name], f"{name} changed: the OOD set is frozen; ship a new version instead"


def test_runs_end_to_end_on_the_baselines():
    """The whole set goes through `evaluate` / `evaluate_conversations` (constant and regex-router baselines):
    every item is counted, none skipped, every negative and every reference is in a table."""
    from hessgpt.eval.tools import ConstantBackend, RegexRouterBackend, evaluate, evaluate_conversations

    samples = load_samples(SINGLE["fr"]) + load_samples(SINGLE["en"])
    r = evaluate(ConstantBackend(), samples, progress=False, baselines=True)
    o = r["overall"]
    assert o["n"] == len(samples) and o["skipped"] == 0
    assert o["maths"]["n"] + o["algo_data"]["n"] == sum(s.reference is not None for s in samples)
    assert o["negatives_no_code"]["n"] == sum(s.category == "negative" for s in samples)
    assert o["negatives_no_code"]["rate"] == 1.0 and o["routing"]["recall"] == 0.0  # a constant never codes
    assert r["baselines"]["regex"]["overall"]["n"] == len(samples)
    convs = load_conversations(MULTI)
    c = evaluate_conversations(RegexRouterBackend(), convs)
    assert c["overall"]["conversations"] == len(convs)
    assert c["overall"]["turns"] == sum(len(x["turns"]) for x in convs)
