"""The routing dataset: balanced, deterministic, deduplicated, and every sample verified in the sandbox."""

import json
import re
from collections import Counter

import pytest

from hessgpt.data.conversation import from_dict
from hessgpt.data.routing import (algo, build, candidate, check, data, maths, negatives, phrasing, reference, splits, web,
                                  words)
from hessgpt.data.routing.build import generate
from hessgpt.data.routing.check import expand_inline, unsupported_numbers, validate_file
from hessgpt.data.routing.cli import main
from hessgpt.tools.sandbox import Sandbox

N = 160


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2) as sb:
        yield sb


@pytest.fixture(scope="module")
def sample(sandbox):
    records, stats = generate(N, seed=7, sandbox=sandbox, progress=False)
    return records, stats


def _category(rec):
    return rec["id"].split(":", 1)[1].rsplit("-", 1)[0]


def test_counts_balanced_and_unique(sample):
    records, stats = sample
    assert len(records) == N
    cats = Counter(_category(r) for r in records)
    assert cats["negative"] == N // 4
    # positives split by CATEGORY_SHARES: maths 40%, algo/web/data 20% each
    assert {c: cats[c] for c in candidate.CATEGORIES} == {"maths": 48, "algo": 24, "web": 24, "data": 24}
    langs = Counter(r["lang"] for r in records)
    assert abs(langs["fr"] - langs["en"]) <= 4
    users = [" ".join(r["messages"][0]["content"].lower().split()) for r in records]
    assert len(set(users)) == len(users)
    assert len({r["id"] for r in records}) == N
    assert sum(stats.kept.values()) == N and stats.sandbox_runs >= 90


def test_deterministic_by_seed(sample, sandbox):
    records, _ = sample
    again, _ = generate(N, seed=7, sandbox=sandbox, progress=False)
    assert again == records
    other, _ = generate(40, seed=8, sandbox=sandbox, progress=False)
    assert {r["id"] for r in other} != {r["id"] for r in records[:40]}


def test_records_follow_the_conversation_format(sample):
    for rec in sample[0]:
        from_dict(rec)   # raises Skip if a turn rule is broken
        msgs = rec["messages"]
        cat = _category(rec)
        if cat == "negative":
            assert [m["role"] for m in msgs] == ["user", "assistant"] and "code" not in msgs[1]
        elif cat == "web":
            assert msgs[1]["code_lang"] in ("html", "css", "js")
            assert all(m["role"] != "tool" for m in msgs)   # artifacts are never executed
        else:
            assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "assistant"]
            assert msgs[2]["name"] == "python" and "code_lang" not in msgs[1]


def test_every_sample_reexecutes_to_the_answer_it_states(sample, sandbox):
    py = [r for r in sample[0] if r["messages"][-2]["role"] == "tool"]
    runs = build._run_with_retry(sandbox, [r["messages"][1]["code"] for r in py])   # retries lost workers only
    for rec, run in zip(py, runs):
        user, call, tool, final = rec["messages"]
        assert run.status == "ok" and run.stdout == tool["content"], rec["id"]
        for line in run.stdout.strip().splitlines():   # the answer restates the real output...
            assert line.strip() in final["content"], (rec["id"], line, final["content"])
        # ...and states no number that is neither printed nor given in the question or the code
        assert unsupported_numbers(final["content"], run.stdout, user["content"] + " " + call["code"]) == [], rec["id"]


def test_kinds_cover_the_design(sample):
    kinds = set(sample[1].kinds)
    for k in ("maths/derivative", "maths/integral", "maths/arithmetic", "algo/sort", "data/json", "negative/fact"):
        assert k in kinds, k


def test_cli_writes_train_val_and_stats(tmp_path, monkeypatch, sandbox):
    monkeypatch.setattr("hessgpt.tools.sandbox.Sandbox", lambda workers=2: _Shared(sandbox))
    out = tmp_path / "r.jsonl"
    assert main(["--n", "40", "--out", str(out), "--seed", "3", "--val-fraction", "0.1", "--langs", "fr", "--no-progress",
                 "--test-n", "20", "--multiturn-share", "0"]) == 0
    train = [json.loads(l) for l in out.read_text().splitlines()]
    val = [json.loads(l) for l in (tmp_path / "r.val.jsonl").read_text().splitlines()]
    test = [json.loads(l) for l in (tmp_path / "r.test.jsonl").read_text().splitlines()]
    stats = json.loads((tmp_path / "r.stats.json").read_text())
    assert (len(train), len(val), len(test)) == (36, 4, 20) and (stats["train"], stats["dev"], stats["test"]) == (36, 4, 20)
    assert {r["split"] for r in train} == {"train"} and {r["split"] for r in val} == {"dev"} and {r["split"] for r in test} == {"test"}
    assert {r["lang"] for r in train + val + test} == {"fr"}
    assert not {r["id"] for r in train} & {r["id"] for r in val}
    users = [r["messages"][0]["content"].lower() for r in train + val + test]
    assert len(set(users)) == len(users)
    assert stats["verification_disagreements"] == 0 and set(stats["splits"]) == {"train", "dev", "test"}


def test_multiturn_conversations_in_train_and_dev_only(sandbox):
    """generate_splits adds multi-turn conversations composed from each split's own singles to train and dev;
    the test split stays single-turn (the follow-up phrasings are shared by the splits)."""
    splits, stats = build.generate_splits(120, test_n=30, val_fraction=0.25, seed=5, progress=False, sandbox=sandbox,
                                            multiturn_share=0.2)
    for name in ("train", "dev"):
        multi = [r for r in splits[name] if r["id"].startswith("routing:multiturn-")]
        singles = [r for r in splits[name] if not r["id"].startswith("routing:multiturn-")]
        assert multi and len(multi) <= round(0.2 * len(singles)) and {r["split"] for r in multi} == {name}
        for r in multi:
            from_dict(r)   # valid conversation format
            msgs = r["messages"]
            assistants = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
            last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
            # earlier turns: plain text, weight 0; the last turn trained
            assert all(msgs[i].get("weight") == 0 and "code" not in msgs[i] for i in assistants if i < last_user)
            assert all(msgs[i].get("weight", 1) == 1 for i in assistants if i > last_user)
    # no prompt of another split's singles leaks into a split's conversations
    prompts = {k: {r["messages"][0]["content"] for r in v if not r["id"].startswith("routing:multiturn-")}
               for k, v in splits.items()}
    for name in ("train", "dev"):
        users = {m["content"] for r in splits[name] if r["id"].startswith("routing:multiturn-")
                 for m in r["messages"] if m["role"] == "user"}
        assert users & prompts[name]                       # built from the split's own singles
        assert not users & (set().union(*(p for k, p in prompts.items() if k != name)))
    assert not [r for r in splits["test"] if r["id"].startswith("routing:multiturn-")]
    assert set(stats["multiturn"]) == {"train", "dev"}


class _Shared:
    """The module's sandbox, handed to code that would open and close its own."""

    def __init__(self, sb):
        self.sb = sb

    def run(self, code):
        return self.sb.run(code)

    def run_many(self, codes):
        return self.sb.run_many(codes)

    def close(self):
        pass


def test_validate_detects_wrong_samples(tmp_path, monkeypatch, sandbox):
    monkeypatch.setattr("hessgpt.tools.sandbox.Sandbox", lambda workers=2: _Shared(sandbox))
    good = {"messages": [{"role": "user", "content": "What is 17 * 23?"},
                         {"role": "assistant", "content": "", "code": "print(17 * 23)"},
                         {"role": "tool", "name": "python", "content": "391\n"},
                         {"role": "assistant", "content": "17 * 23 = 391."}]}
    wrong_output = json.loads(json.dumps(good))
    wrong_output["messages"][2]["content"] = "392\n"
    wrong_final = json.loads(json.dumps(good))
    wrong_final["messages"][3]["content"] = "17 * 23 = 392."
    inline_ok = {"messages": [{"role": "user", "content": "Racine de 2 ?"},
                              {"role": "assistant", "content": "Je calcule.<|code|>import math\nprint(round(math.sqrt(2), 4))<|end|>"
                                                               "<|result|>1.4142<|end|>La racine de 2 vaut environ 1.41."}]}
    inline_no_result = {"messages": [{"role": "user", "content": "2**10?"},
                                     {"role": "assistant", "content": "<|code|>print(2**10)<|end|>"},
                                     {"role": "assistant", "content": "It is 1024."}]}
    inline_wrong = {"messages": [{"role": "user", "content": "2**10?"},
                                 {"role": "assistant", "content": "<|code|>print(2**10)<|end|>It is 1000."}]}
    crashes = {"messages": [{"role": "user", "content": "x"},
                            {"role": "assistant", "content": "", "code": "print(1/0)"},
                            {"role": "assistant", "content": "Infinity."}]}
    artifact = {"messages": [{"role": "user", "content": "A red button"},
                             {"role": "assistant", "content": "", "code": "<button>7</button>", "code_lang": "html"},
                             {"role": "assistant", "content": "Done, 12 px corners."}]}
    lines = [json.dumps(r) for r in (good, wrong_output, wrong_final, inline_ok, inline_no_result, inline_wrong, crashes, artifact)]
    src = tmp_path / "llm.jsonl"
    src.write_text("\n".join(lines + ["not json"]) + "\n")
    rep = validate_file(str(src), str(tmp_path / "ok.jsonl"))
    dropped = dict(rep["problems"])
    assert set(dropped) == {2, 3, 6, 7, 9}
    assert "stated output '392' but the code prints '391'" in dropped[2]
    assert "states 392" in dropped[3]
    assert "states 1000" in dropped[6]
    assert "ZeroDivisionError" in dropped[7] or "error" in dropped[7]
    kept = [json.loads(l) for l in (tmp_path / "ok.jsonl").read_text().splitlines()]
    assert rep["kept"] == len(kept) == 4
    for rec in kept:
        from_dict(rec)
    # the inline record became conversation format; the missing result was filled with the real output
    assert kept[1]["messages"][1]["code"].startswith("import math") and kept[1]["messages"][2]["content"] == "1.4142\n"
    assert kept[2]["messages"][2] == {"role": "tool", "name": "python", "content": "1024\n"}


def test_number_check_and_inline_parsing():
    assert unsupported_numbers("La racine vaut 1,41.", "1.4142135\n", "") == []   # rounded, French comma
    assert unsupported_numbers("It is 12.", "12.0\n", "") == []
    assert unsupported_numbers("It is 13.", "12.0\n", "13 apples") == []   # a number from the question
    assert unsupported_numbers("It is 13.", "12.0\n", "") == ["13"]
    assert unsupported_numbers("About 1.5", "1.4142\n", "") == ["1.5"]
    msgs = expand_inline([{"role": "user", "content": "q"},
                          {"role": "assistant", "content": "A<|code|>print(1)<|end|><|result|>1\n<|end|>B"}])
    assert msgs[1:] == [{"role": "assistant", "content": "A", "code": "print(1)"},
                        {"role": "tool", "name": "python", "content": "1\n"}, {"role": "assistant", "content": "B"}]


def test_records_carry_reference_category_kind_split(sample):
    for rec in sample[0]:
        assert rec["category"] == _category(rec) and rec["kind"] and rec["split"] in ("train", "dev", "test")
        if rec["messages"][-2]["role"] == "tool":
            ref = rec["reference"]
            assert ref["type"] in ("number", "symbolic", "list", "string", "bool", "set_of_numbers"), rec["id"]
            assert reference.agrees(ref, rec["messages"][2]["content"], False) or isinstance(ref["value"], list)
        else:
            assert rec["reference"] is None
    assert sample[1].to_dict()["verification_disagreements"] == {}


def _primes_from_question(text):
    """What the question asks, read from its words only: n, and whether n itself counts."""
    import re

    n = int(re.findall(r"\d+", text)[-1])
    below = re.search(r"inférieurs à|below|less than", text) and "ou égaux" not in text
    return [k for k in range(2, n if below else n + 1) if all(k % d for d in range(2, int(k ** 0.5) + 1))]


def test_primes_up_to_n_include_n_when_the_question_says_so(sandbox):
    """The bug of issue 14: 'primes up to n' printed the primes below n. Checked against the question's words."""
    import random as _r

    rng, cases = _r.Random(5), []
    while len(cases) < 60:
        lang = "fr" if len(cases) % 2 else "en"
        p, code, qs, _ = algo.g_primes(rng, lang)
        if p.get("_ref", {}).get("type") == "list":
            cases.append((qs[0].format(**p), code, p["_ref"]))
    runs = build._run_with_retry(sandbox, [c for _, c, _ in cases])
    prime_n = 0
    for (q, code, ref), run in zip(cases, runs):
        want = _primes_from_question(q)
        assert json.loads(run.stdout) == want == ref["value"], q
        prime_n += bool(want) and want[-1] == int(__import__("re").findall(r"\d+", q)[-1])
    assert prime_n > 0   # some cases do have a prime n, included


def test_a_wrong_candidate_is_rejected(sandbox, monkeypatch):
    """A generator whose code does not compute what its reference says: every sample dropped and counted."""
    def g_wrong(rng, lang):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        return ({"a": a, "b": b, "_ref": reference._rnum(a * b)}, f"print({a} ** {b} % 1000003)",
                ["What is {a} times {b}?"], ["{a} times {b} is {out}."])

    def g_right(rng, lang):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        return ({"a": a, "b": b, "_ref": reference._rnum(a * b)}, f"print({a} * {b})", ["How much is {a} times {b}?"],
                ["{out}."])

    monkeypatch.setitem(build.PYTHON_GENS, "maths", [("wrong", g_wrong, 1), ("right", g_right, 1)])
    records, stats = generate(40, langs=("en",), seed=1, sandbox=sandbox, progress=False)
    assert stats.disagreements["maths/wrong"] > 0
    assert not [r for r in records if r["kind"] == "wrong"] and [r for r in records if r["kind"] == "right"]
    assert not reference.agrees(reference._rnum(391), "17 ** 23\n") and reference.agrees(reference._rnum(391), "391\n")
    assert reference.agrees({"type": "symbolic", "value": "2*x + 1"}, "1 + 2*x\n")
    assert not reference.agrees({"type": "list", "value": [2, 3, 5]}, "[2, 3]\n")


def _registered_lists():
    """Every module-level phrasing/entity list of the generator (and those nested in dicts), plus the
    question lists each generator function builds (collected by calling it through a recording rng)."""
    out = []

    def walk(v):
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list) and v and not callable(v[0]) and not (isinstance(v[0], tuple) and callable(v[0][1:2] and v[0][1])):
            out.append(tuple(v))
            if all(isinstance(x, list) for x in v):
                for x in v:
                    walk(x)

    for module in (candidate, splits, words, reference, maths, algo, data, web, negatives, build, check):
        for name in dir(module):
            if name.isupper() and name not in ("PYTHON_GENS", "CATEGORIES", "LANGS", "SPLITS"):
                walk(getattr(module, name))
    return out


def test_splits_are_disjoint_by_construction():
    """Iterates the partitions themselves (not samples): no item of a partitioned list, no integer of a
    partitioned range, no polynomial/function string is in two splits."""
    lists = _registered_lists()
    partitioned = 0
    for items in lists:
        try:
            parts = splits.partition(items)
        except TypeError:
            continue
        if parts["train"] == parts["test"]:   # shared short list (< 3 items)
            assert len(set(x for x in items if x != "")) < splits.MIN_PARTITIONED
            continue
        partitioned += 1
        sets = {k: {splits._item_key(x) for x in v if x != ""} for k, v in parts.items()}
        assert all(sets.values()), items   # every split keeps at least one item
        assert not sets["train"] & sets["dev"] and not sets["train"] & sets["test"] and not sets["dev"] & sets["test"]
        assert sets["train"] | sets["dev"] | sets["test"] == {splits._item_key(x) for x in items if x != ""}
    assert partitioned >= 20   # greetings, leads, names, fruits, words, sentences, capitals, facts, ...
    for name in ("CAPITALS", "FACTS", "CONCEPTS", "FR_NAMES", "EN_NAMES", "SENTENCES", "WORDS_FR", "WORDS_EN"):
        v = getattr(negatives if name in ("CAPITALS", "FACTS", "CONCEPTS") else words, name)
        for items in (v.values() if isinstance(v, dict) else [v]):
            assert splits.partition(tuple(items))["train"] != splits.partition(tuple(items))["test"], name
    # operand integers: one function of the integer, so each integer is in exactly one split
    by = {s: {n for n in range(-2000, 20001) if splits.int_split(n) == s} for s in splits.SPLITS}
    assert sum(map(len, by.values())) == 22001 and all(0.05 < len(v) / 22001 < 0.9 for v in by.values())


def test_each_split_draws_only_its_own_items():
    import random as _r

    for split in splits.SPLITS:
        rng = splits.SplitRandom(3, split)
        for _ in range(300):
            n = rng.randint(1, 999)
            assert splits.int_split(n) == split
            f = maths._func(rng)
            assert splits.str_split(f) == split
            name = rng.choice(words.FR_NAMES)
            assert name in splits.partition(tuple(words.FR_NAMES))[split]
            cap = rng.choice(negatives.CAPITALS)
            assert cap in splits.partition(tuple(negatives.CAPITALS))[split]


def test_test_split_shares_no_template_or_entity_with_train(sandbox):
    seen = set()
    train, st_train = generate(120, seed=2, sandbox=sandbox, progress=False, split="train", seen=seen)
    test, st_test = generate(60, seed=2, sandbox=sandbox, progress=False, split="test", seen=seen)
    assert {r["split"] for r in test} == {"test"}
    t_train = set().union(*st_train.templates.values())
    t_test = set().union(*st_test.templates.values())
    shared = t_train & t_test
    # a template is shared only when its list had fewer than 3 phrasings (counted in the stats)
    for t in shared:
        assert any(t in items and len(set(items)) < splits.MIN_PARTITIONED for items in _generator_lists()), t


def _generator_lists():
    """The question lists the generators return, collected by running each one a few times."""
    import random as _r

    out = []
    for gens in build.PYTHON_GENS.values():
        for _, gen, _ in gens:
            for split in splits.SPLITS:
                rng = splits.SplitRandom(0, split)
                for i in range(40):
                    out.append(tuple(gen(rng, "fr" if i % 2 else "en")[2]))
    return out


def _phrasing_lists():
    """Every list (or tuple list) of phrasings in hessgpt.data.routing.phrasing, with its name."""
    P = phrasing

    out = []

    def walk(name, v):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{name}[{k}]", x)
        elif isinstance(v, list) and v:
            out.append((name, v))

    for name in dir(P):
        if name.isupper() and not name.startswith("_"):
            walk(name, getattr(P, name))
    return out


def test_every_phrasing_list_has_three_items_and_is_partitioned():
    lists = _phrasing_lists()
    assert len(lists) >= 60
    for name, items in lists:
        assert len(set(items)) >= splits.MIN_PARTITIONED, name
        parts = splits.partition(tuple(items))
        assert parts["train"] != parts["test"], name
        assert not set(parts["train"]) & set(parts["test"]), name


def test_number_words():
    from hessgpt.data.routing.phrasing import spell_en, spell_fr

    fr = {0: "zéro", 7: "sept", 17: "dix-sept", 21: "vingt et un", 33: "trente-trois", 70: "soixante-dix", 71: "soixante et onze",
          77: "soixante-dix-sept", 80: "quatre-vingts", 81: "quatre-vingt-un", 91: "quatre-vingt-onze", 99: "quatre-vingt-dix-neuf"}
    en = {0: "zero", 13: "thirteen", 23: "twenty-three", 40: "forty", 99: "ninety-nine"}
    assert {n: spell_fr(n) for n in fr} == fr and {n: spell_en(n) for n in en} == en
    assert len({spell_fr(n) for n in range(100)}) == 100 and len({spell_en(n) for n in range(100)}) == 100
    with pytest.raises(ValueError):
        spell_fr(100)


def _story_value(p, template):
    """The story's result recomputed from the numbers as the question shows them (not from the generator's code)."""
    num = lambda s: Fraction(str(s).replace(",", "."))
    if "i1" in p:
        return sum(num(p[f"n{j}"]) * num(p[f"p{j}"]) for j in (1, 2, 3) if f"i{j}" in p and "{" + f"i{j}" + "}" in template)
    if "t" in p:
        return num(p["a"]) / num(p["b"])
    if "s" in p:
        return num(p["d"]) / num(p["s"])
    if "m" in p:
        return num(p["m"]) * num(p["k"])
    if "ing" in p:
        return round(num(p["q"]) * num(p["r"]) / num(p["p"]), 1)
    if "y1" in p:
        return num(p["y2"]) - num(p["y1"]) if "{y1}" in template else num(p["b"]) - num(p["a"])
    return num(p["L"]) * num(p["W"])


from fractions import Fraction  # noqa: E402


def test_story_reference_equals_an_independent_recomputation(sandbox):
    rng = splits.SplitRandom(11, "train")
    cands = []
    for i in range(120):
        lang = "fr" if i % 2 else "en"
        p, code, qs, _ = maths.g_story(rng, lang)
        assert len(qs) == 1
        want = _story_value(p, qs[0])
        ref = p["_ref"]
        assert abs(ref["value"] - float(want)) <= ref.get("tol", 0) + 1e-9, (qs[0], p)
        # the question states every number the code uses
        user = qs[0].format(**{k: v for k, v in p.items() if not k.startswith("_")})
        for n in check._NUMBER.findall(re.sub(r", \d+\)", ")", code)):   # not round()'s digits
            assert n in user.replace(",", "."), (n, user, code)
        cands.append((ref, code))
    runs = build._run_with_retry(sandbox, [c for _, c in cands])
    assert all(r.status == "ok" and reference.agrees(ref, r.stdout) for (ref, _), r in zip(cands, runs))


def test_composed_question_templates_are_split_disjoint():
    """python_candidate's templates of every python category: none occurs in both train and test."""
    by = {}
    for split in ("train", "test"):
        rng = splits.SplitRandom(5, split)
        by[split] = {}
        for cat in build.PYTHON_GENS:
            for i in range(400):
                c = build.python_candidate(rng, cat, "fr" if i % 2 else "en")
                by[split].setdefault(c.kind, set()).add(c.template)
    shared = {k: by["train"].get(k, set()) & by["test"].get(k, set()) for k in by["train"]}
    # known, older single-phrasing cases still shared: structures (FIFO queue, 1 phrasing), strings (upper/title,
    # 2 phrasings drawn by index), sort (its 4th phrasing depends on the manual flag, so two lists)
    known = {"structures", "strings", "sort"}
    assert not {k: v for k, v in shared.items() if v and k not in known}
    for kind in ("arithmetic_words", "conversion", "divmod", "story", "tip"):
        assert by["test"][kind] and by["train"][kind]
