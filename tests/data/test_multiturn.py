"""Multi-turn conversations: message `weight` (validation, JSONL, loss mask), history flattening, and the
multi-turn routing records of hessgpt.data.routing.multiturn (docs/chat-format.md)."""

import json

import pytest

from hessgpt.data.conversation import Skip, flatten_history, from_dict, read_jsonl, write_jsonl
from hessgpt.errors import HessGPTError

TWO_TURNS = {
    "id": "t:1", "source": "t", "lang": "fr",
    "messages": [
        {"role": "user", "content": "Combien font 17 fois 23 ?"},
        {"role": "assistant", "content": "17 × 23 = 391.", "weight": 0},
        {"role": "user", "content": "Et si je divise ce résultat par 8 ?"},
        {"role": "assistant", "content": "Je calcule.", "code": "print(391 / 8)"},
        {"role": "tool", "name": "python", "content": "48.875\n"},
        {"role": "assistant", "content": "391 / 8 = 48.875."},
    ],
}


def _spans(tok, ids, mask):
    """Decoded text of the mask-1 tokens, and of the mask-0 tokens."""
    on = tok.decode([i for i, m in zip(ids, mask) if m])
    off = tok.decode([i for i, m in zip(ids, mask) if not m])
    return on, off


# --- weight: conversation format --------------------------------------------------------------------


def test_weight_round_trips_through_jsonl(tmp_path):
    conv = from_dict(TWO_TURNS)
    assert [m.weight for m in conv.messages] == [1, 0, 1, 1, 1, 1]
    p = tmp_path / "c.jsonl"
    write_jsonl(p, [conv])
    line = json.loads(p.read_text())
    assert line["messages"][1]["weight"] == 0
    assert all("weight" not in m for i, m in enumerate(line["messages"]) if i != 1)   # default 1 is not written
    back = list(read_jsonl(p))[0]
    assert [m.weight for m in back.messages] == [1, 0, 1, 1, 1, 1]


@pytest.mark.parametrize("bad", [2, -1, 0.5, "0", True, None])
def test_bad_weight_is_a_skip_naming_it(bad):
    rec = json.loads(json.dumps(TWO_TURNS))
    rec["messages"][1]["weight"] = bad
    with pytest.raises(Skip) as e:
        from_dict(rec)
    assert e.value.reason == "bad_weight"
    assert "weight" in str(e.value) and "message 1" in str(e.value)


def test_weight_only_on_assistant_messages():
    rec = json.loads(json.dumps(TWO_TURNS))
    rec["messages"][0]["weight"] = 0
    with pytest.raises(Skip) as e:
        from_dict(rec)
    assert e.value.reason == "bad_weight" and "user" in str(e.value)


# --- weight: loss mask -------------------------------------------------------------------------------


def test_weight_zero_masks_the_whole_earlier_turn(tokenizer):
    ids, mask = tokenizer.render(TWO_TURNS)
    tok = tokenizer
    assert len(ids) == len(mask)
    on, off = _spans(tok, ids, mask)
    assert "391." not in on.replace("391 / 8", "")   # the first answer is not a target
    assert "17 × 23 = 391." in off
    assert "Je calcule." in on and "print(391 / 8)" in on and "391 / 8 = 48.875." in on
    assert "48.875\n" in off   # the tool result stays context
    # the closing <|end|> of turn 1 (just before the second <|user|>) is masked; that of turn 2 is trained
    u2 = [i for i, t in enumerate(ids) if t == tok.user_id][1]
    assert ids[u2 - 1] == tok.end_id and mask[u2 - 1] == 0
    assert ids[-1] == tok.end_id and mask[-1] == 1
    # the same conversation with default weights trains both turns: exactly turn 1's tokens differ
    plain = json.loads(json.dumps(TWO_TURNS))
    del plain["messages"][1]["weight"]
    ids2, mask2 = tokenizer.render(plain)
    assert ids2 == ids
    diff = [i for i, (a, b) in enumerate(zip(mask, mask2)) if a != b]
    first_turn = tok.encode("17 × 23 = 391.")
    assert len(diff) == len(first_turn) + 1 and all(mask2[i] == 1 for i in diff)
    assert ids[diff[0]:diff[0] + len(first_turn)] == first_turn and diff[-1] == u2 - 1


def test_default_weight_is_unchanged(tokenizer):
    plain = json.loads(json.dumps(TWO_TURNS))
    del plain["messages"][1]["weight"]
    explicit = json.loads(json.dumps(plain))
    for m in explicit["messages"]:
        if m["role"] == "assistant":
            m["weight"] = 1
    assert tokenizer.render(plain) == tokenizer.render(explicit)


def test_render_rejects_a_bad_weight(tokenizer):
    rec = json.loads(json.dumps(TWO_TURNS))
    rec["messages"][1]["weight"] = 3
    with pytest.raises(HessGPTError, match="weight"):
        tokenizer.render(rec)


def test_weight_reaches_the_sft_loss_mask(tokenizer, tmp_path):
    """The SFT data path (render_file -> make_batch) keeps the render mask: no target inside turn 1."""
    from hessgpt.train.sft import make_batch, render_file

    p = tmp_path / "train.jsonl"
    p.write_text(json.dumps(TWO_TURNS, ensure_ascii=False) + "\n")
    examples, stats = render_file(str(p), tokenizer, 512)
    ids, mask = examples[0]
    assert (ids, mask) == tuple(tokenizer.render(TWO_TURNS))
    batch = make_batch(examples, [[0]], len(ids) - 1, tokenizer.pad_id)
    y, lm = batch["y"][0].tolist(), batch["loss_mask"][0].tolist()
    targets = tokenizer.decode([t for t, m in zip(y, lm) if m])
    assert "17 × 23" not in targets and "391 / 8 = 48.875." in targets
    assert sum(lm) == sum(mask[1:])


# --- history flattening ------------------------------------------------------------------------------

TOOL_TURN = [
    {"role": "user", "content": "Combien font 17 fois 23 ?"},
    {"role": "assistant", "content": "Je lance un petit script.", "code": "print(17 * 23)"},
    {"role": "tool", "name": "python", "content": "391\n"},
    {"role": "assistant", "content": "Résultat : 391."},
]


def test_flatten_history_joins_text_before_and_after_the_tool():
    msgs = TOOL_TURN + [{"role": "user", "content": "Merci !"}, {"role": "assistant", "content": "Avec plaisir !"}]
    flat = flatten_history(msgs)
    assert flat == [
        {"role": "user", "content": "Combien font 17 fois 23 ?"},
        {"role": "assistant", "content": "Je lance un petit script.\n\nRésultat : 391."},
        {"role": "user", "content": "Merci !"},
        {"role": "assistant", "content": "Avec plaisir !"},
    ]
    assert msgs[1]["code"] == "print(17 * 23)"   # the input is not changed


def test_flatten_history_keeps_the_last_turn_and_plain_turns():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Salut"}, {"role": "assistant", "content": "Bonjour !"}] + TOOL_TURN
    flat = flatten_history(msgs)
    assert flat == msgs   # no earlier tool turn: nothing to flatten, the last turn keeps code and result
    # empty lead text: only the final text remains, no leading blank line
    msgs2 = [dict(m) for m in TOOL_TURN]
    msgs2[1]["content"] = ""
    flat2 = flatten_history(msgs2 + [{"role": "user", "content": "Et par 8 ?"}])
    assert flat2[1] == {"role": "assistant", "content": "Résultat : 391."} and flat2[-1]["role"] == "user"


def test_flatten_history_training_weights():
    msgs = TOOL_TURN + [{"role": "user", "content": "Bonjour"}, {"role": "assistant", "content": "Salut !"},
                        {"role": "user", "content": "Et par 8 ?"}] + [dict(m) for m in TOOL_TURN[1:]]
    flat = flatten_history(msgs, earlier_weight=0)
    assert [m.get("weight", 1) for m in flat if m["role"] == "assistant"] == [0, 0, 1, 1]
    assert flat[1]["content"] == "Je lance un petit script.\n\nRésultat : 391." and "code" not in flat[1]
    assert flat[-3]["code"] == "print(17 * 23)" and flat[-2]["role"] == "tool"
    from_dict({"messages": flat})   # a valid conversation


def test_flatten_history_is_the_routers():
    """Inference (hessgpt.serve.dual, the router's backend) renders history with this very function: one implementation."""
    from hessgpt.serve import dual

    assert dual.flatten_history is flatten_history


# --- multi-turn routing records ----------------------------------------------------------------------------

import contextlib
import io
import random
import re
from collections import Counter

from hessgpt.data.routing import multiturn as mt


def fake_run(code: str) -> str:
    """Stands in for the sandbox: runs the (generated, trusted) code here and returns its stdout."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(code, {})
    return buf.getvalue()


def _single(cat, lang, user, lead=None, code=None, out=None, final="", ref=None, code_lang=None):
    if code is None:
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": final}]
    elif code_lang:
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": lead, "code": code, "code_lang": code_lang},
                {"role": "assistant", "content": final}]
    else:
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": lead, "code": code},
                {"role": "tool", "name": "python", "content": out}, {"role": "assistant", "content": final}]
    return {"id": f"routing:{cat}-{abs(hash(user)) % 10**12:012d}", "source": "routing", "lang": lang, "category": cat,
            "reference": ref, "messages": msgs}


def make_singles(k: int = 30, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(k):
        for lang in ("fr", "en"):
            a, b = rng.randint(11, 99), rng.randint(11, 99)
            user = f"Combien font {a} × {b} ?" if lang == "fr" else f"What is {a} times {b}?"
            lead = "Je calcule." if lang == "fr" else "Let me compute it."
            out.append(_single("maths", lang, user, lead, f"print({a} * {b})", f"{a * b}\n", f"{a} × {b} = {a * b}.",
                               {"type": "number", "value": a * b}))
            xs = [rng.randint(-50, 99) for _ in range(rng.randint(4, 8))]
            user = f"Trie la liste {xs}" if lang == "fr" else f"Sort the list {xs}"
            out.append(_single("data", lang, user, "", f"data = {xs}\nprint(sorted(data))", f"{sorted(xs)}\n",
                               f"{'Triée' if lang == 'fr' else 'Sorted'} : {sorted(xs)}.",
                               {"type": "list", "value": sorted(xs), "ordered": True}))
            user = (f"Quelle est la capitale du pays n°{i} ?" if lang == "fr" else f"What is the capital of country #{i}?")
            out.append(_single("negative", lang, user, final=f"C'est la ville {i}." if lang == "fr" else f"It is city {i}."))
            out.append(_single("web", lang, f"Une page HTML avec le titre T{i}" if lang == "fr" else f"An HTML page titled T{i}",
                               "Voici :" if lang == "fr" else "Here:", f"<h1>T{i}</h1>", final="Voilà." if lang == "fr" else "Done.",
                               code_lang="html"))
    return out


SINGLES = make_singles()


@pytest.fixture(scope="module")
def composed():
    stats = Counter()
    recs = mt.compose_conversations(SINGLES, 300, random.Random(7), None, fake_run, stats)
    return recs, stats


def _turns(rec):
    """The record's messages split into turns (each starts with a user message)."""
    turns = []
    for m in rec["messages"]:
        if m["role"] == "user":
            turns.append([])
        turns[-1].append(m)
    return turns


def test_compose_structure_and_weights(composed):
    recs, stats = composed
    assert len(recs) == 300 and stats["short"] == 0
    assert {r["kind"] for r in recs} == set(mt.KINDS)
    assert {r["lang"] for r in recs} == {"fr", "en"}
    assert len({r["id"] for r in recs}) == len(recs)
    for r in recs:
        conv = from_dict(r)                               # a valid conversation
        assert re.fullmatch(r"routing:multiturn-[0-9a-f]{12}", r["id"]) and r["source"] == "routing"
        assert "category" in r and "reference" in r
        turns = _turns(r)
        assert 2 <= len(turns) <= 3 and len(turns) == r["n_turns"]
        for t in turns[:-1]:                              # earlier turns: one plain assistant message, weight 0
            assert len(t) == 2 and t[1]["role"] == "assistant" and t[1]["weight"] == 0
            assert "code" not in t[1] and t[1]["content"].strip()
        last = turns[-1]
        assert all(m.get("weight", 1) == 1 for m in last)
        assert all(m.weight == 1 for m in conv.messages[-len(last):])
        if r["kind"] == "multiturn-thanks" or r["category"] == "negative":   # a closing ends some other kinds too
            assert len(last) == 2 and r["category"] == "negative" and r["reference"] is None and "followup" not in r
        elif r["kind"] in ("multiturn-followup", "multiturn-correction"):
            assert last[1].get("code") and last[2]["role"] == "tool"
            assert r["reference"]["type"] in ("number", "list")
    kinds = Counter((r["kind"], r["n_turns"]) for r in recs)
    assert kinds[("multiturn-followup", 3)] > 0 and kinds[("multiturn-unrelated", 3)] > 0


def test_unrelated_mixes_code_and_no_code(composed):
    recs, _ = composed
    pairs = Counter()
    by_user = {s["messages"][0]["content"]: s for s in SINGLES}
    for r in recs:
        if r["kind"] != "multiturn-unrelated":
            continue
        kinds = ["code" if any("code" in m for m in by_user[t[0]["content"]]["messages"]) else "nocode" for t in _turns(r)]
        pairs[tuple(kinds[:2])] += 1
    assert pairs[("code", "nocode")] and pairs[("nocode", "code")] and pairs[("code", "code")]


def test_flattened_history_joins_lead_and_final_with_a_blank_line(composed):
    recs, _ = composed
    by_user = {s["messages"][0]["content"]: s for s in SINGLES}
    checked = 0
    for r in recs:
        for t in _turns(r)[:-1]:
            src = by_user.get(t[0]["content"])
            if src is None:
                continue                                  # a generated turn (a follow-up, a unit conversion)
            texts = [m["content"].strip() for m in src["messages"] if m["role"] == "assistant" and m["content"].strip()]
            assert t[1]["content"] == "\n\n".join(texts)
            checked += 1
            if len(texts) == 2:
                assert "\n\n" in t[1]["content"]
    assert checked > 50


_OPS = {"div": lambda p, k: p / k, "mul": lambda p, k: p * k, "add": lambda p, k: p + k, "sub": lambda p, k: p - k,
        "square": lambda p, k: p ** 2, "pct": lambda p, k: p * k / 100, "round": lambda p, k: round(p)}
_LIST_OPS = {"sort_desc": lambda v: sorted(v, reverse=True), "sort_asc": sorted, "reverse": lambda v: v[::-1],
             "sum": sum, "max": max, "min": min, "len": len}


def test_followup_results_are_right(composed):
    """Recomputed here from the previous turn's *stated* text and the follow-up's operand."""
    recs, _ = composed
    n_num = n_list = 0
    for r in recs:
        if r["kind"] != "multiturn-followup" or "followup" not in r:
            continue
        turns = _turns(r)
        f = r["followup"]
        prev_text = turns[-2][1]["content"]
        user, code, out, final = turns[-1][0]["content"], turns[-1][1]["code"], turns[-1][2]["content"], turns[-1][3]["content"]
        if "previous" in f:
            p = f["previous"]
            assert re.search(r"(?<![\d.])" + re.escape(p) + r"(?![\d])", prev_text), (p, prev_text)   # it was stated
            assert p in code                               # ... and reused as a literal
            if "unit" in f:                                # "Et en minutes ?": the unit is named, the factor is known
                assert mt._unit_names(r["lang"], f["unit"]) in user
                assert f["operand"] == {"days": 7, "hours": 24, "minutes": 60, "seconds": 60, "m": 1000, "cm": 100,
                                        "mm": 10, "g": 1000, "mg": 1000, "ml": 1000}[f["unit"]]
            elif f["op"] not in ("square", "round"):
                assert re.search(r"(?<!\d)" + str(f["operand"]) + r"(?!\d)", user)
            want = _OPS[f["op"]](float(p), f["operand"])
            if "ndigits" in f:                             # a long quotient is rounded in the code and the answer
                assert f"round(" in code and len(out.strip().partition(".")[2]) <= f["ndigits"]
                want = round(want, f["ndigits"])
            assert r["reference"]["value"] == pytest.approx(want, rel=1e-9)
            assert float(out) == pytest.approx(want, rel=1e-9)
            n_num += 1
        else:
            values = f["values"]
            want = _LIST_OPS[f["op"]](list(values))
            assert r["reference"]["value"] == want
            assert str(values) in code
            n_list += 1
        assert out.strip() in final                        # the final answer states the result
    assert n_num > 20 and n_list > 10


def test_correction_changes_the_number_and_recomputes(composed):
    recs, _ = composed
    n = 0
    for r in recs:
        if r["kind"] != "multiturn-correction" or "followup" not in r:
            continue
        turns = _turns(r)
        first_user, fix = turns[0][0]["content"], turns[1]
        f = r["followup"]
        m = re.fullmatch(r"(?:Combien font|What is) (\d+) (?:×|times) (\d+) \?|(?:Combien font|What is) (\d+) (?:×|times) (\d+)\?", first_user)
        if m is None:
            continue
        a, b = [int(x) for x in m.groups() if x is not None]
        old, new = int(f["old"]), int(f["new"])
        assert old in (a, b) and new != old
        assert f["old"] in fix[0]["content"] and f["new"] in fix[0]["content"]
        want = (new if a == old else a) * (new if b == old and a != old else b)
        assert r["reference"]["value"] == want and fix[2]["content"].strip() == str(want)
        assert str(want) in fix[3]["content"]
        n += 1
    assert n > 5


def test_compose_is_deterministic_for_a_seed():
    a = mt.compose_conversations(SINGLES, 40, random.Random(3), "fr", fake_run)
    b = mt.compose_conversations(SINGLES, 40, random.Random(3), "fr", fake_run)
    c = mt.compose_conversations(SINGLES, 40, random.Random(4), "fr", fake_run)
    assert a == b and a != c
    assert all(r["lang"] == "fr" for r in a)
    assert all(m.get("weight", 1) in (0, 1) for r in a for m in r["messages"])


def test_compose_accepts_an_int_seed():
    a = mt.compose_conversations(SINGLES, 20, 5, "en", run_code=fake_run)
    assert a and a == mt.compose_conversations(SINGLES, 20, random.Random(5), "en", run_code=fake_run)


def test_wrong_or_failed_runs_are_dropped():
    stats = Counter()
    wrong = lambda code: "12345\n"                  # a sandbox that answers nonsense: no follow-up passes the check
    recs = mt.compose_conversations(SINGLES, 30, random.Random(0), "en", wrong, stats,
                                    kind_weights={"multiturn-followup": 1.0})
    assert stats["dropped_check"] > 0
    assert recs == []
    none = mt.compose_conversations(SINGLES, 10, random.Random(0), "en", lambda code: None, Counter(),
                                    kind_weights={"multiturn-followup": 1.0})
    assert none == []


def test_no_frozen_ood_prompt_is_produced():
    frozen = mt.frozen_prompts()
    assert len(frozen) > 100   # the shipped OOD sets were read
    recs = mt.compose_conversations(SINGLES, 400, random.Random(11), None, fake_run)
    for r in recs:
        for t in _turns(r)[1:]:
            assert mt._norm(t[0]["content"]) not in frozen, t[0]["content"]


def test_multiturn_record_renders_only_the_last_turn_as_target(tokenizer, composed):
    recs, _ = composed
    r = next(r for r in recs if r["kind"] == "multiturn-followup" and r["n_turns"] == 2)
    ids, mask = tokenizer.render(r)
    on = tokenizer.decode([i for i, m in zip(ids, mask) if m])
    turns = _turns(r)
    last = turns[-1]
    expect = "".join([last[1]["content"], last[1]["code"], last[3]["content"]])
    assert on.replace("\n", "") .startswith(last[1]["content"].replace("\n", ""))
    assert turns[0][1]["content"] not in on
    assert last[3]["content"] in on and last[1]["code"] in on and len(expect) > 0
