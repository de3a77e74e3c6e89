"""The /20 bench: category arithmetic on fixed answers, the optional judge, the generation loop and the CLI."""

import json
import re
from types import SimpleNamespace

import pytest

from hessgpt.eval.bench import format_table, generate_fn, load_items, run_bench, score_items
from hessgpt.events import Event


def item(id_, lang, category, content, checks, **extra):
    return {"id": id_, "lang": lang, "category": category, "kind": category,
            "messages": [{"role": "user", "content": content}], "checks": checks, **extra}


ITEMS = [
    item("f1", "fr", "factual", "Capitale de l'Australie ?", [{"type": "contains_any", "values": ["Canberra"]}]),
    item("f2", "en", "factual", "Capital of Japan?", [{"type": "contains_any", "values": ["Tokyo"]}]),
    item("c1", "en", "conversation", "How are you?", [{"type": "contains_any", "values": ["fine"]}]),
    item("i1", "en", "instruction", "A numbered list of 3 colours.", [{"type": "numbered_list", "n": 3}]),
    item("k1", "fr", "creativity", "Un poème.", [{"type": "min_words", "n": 3}]),
    item("r1", "en", "robustness", "wat is teh capitol of france", [{"type": "contains_any", "values": ["Paris"]}]),
    item("t1", "fr", "instruction", "Traduis : « Le chat dort. »", [], answer_lang="en", references=["The cat is sleeping."]),
]
ANSWERS = {
    "f1": "La capitale de l'Australie est Canberra.",      # right: 1
    "f2": "I do not know the answer to that question.",     # wrong (right language): 0
    "c1": "Hello! I am fine, thank you for asking.",       # 1
    "i1": "1. red\n2. blue",                               # wrong format: 0
    "k1": "la la la la la la la la la la la la la la la",  # degenerate: 0
    "r1": "Paris",                                         # 1
    "t1": "The cat is sleeping.",                          # right language, no other check: 1
}


def test_category_scores_from_fixed_answers():
    r = score_items(ITEMS, [ANSWERS[i["id"]] for i in ITEMS])
    c = {k: v["score"] for k, v in r["categories"].items()}
    assert c["factual"] == 4.0                     # 8 * (1 + 0) / 2
    assert c["conversation"] == 5.0
    assert c["instruction"] == 2.0                 # 4 * (0 + 1) / 2
    assert c["creativity"] == 0.0
    # robustness: (robustness items 1.0 + share of robust answers 6/7) / 2
    assert c["robustness"] == round((1 + 6 / 7) / 2, 2)
    assert r["total"] == pytest.approx(4 + 5 + 2 + 0 + round((1 + 6 / 7) / 2, 2))
    assert r["max"] == 20
    assert r["per_lang"]["fr"]["categories"]["factual"]["score"] == 8.0
    assert r["per_lang"]["en"]["categories"]["factual"]["score"] == 0.0
    rows = {x["id"]: x for x in r["items"]}
    assert rows["k1"]["degenerate"] == ["repetitive"] and rows["k1"]["score"] == 0
    assert r["bleu"]["fr/instruction"]["chrf"] == 100.0 and r["bleu"]["fr/instruction"]["n"] == 1
    table = format_table(r)
    assert "| Factual precision | 4.0 / 8 |" in table and "| Creativity | 0.0 / 2 |" in table
    assert f"**{r['total']:.1f} / 20**" in table


def test_judge_is_combined_with_automatic_score():
    prompts = []

    class FakeCompletions:
        def create(self, model, messages, temperature, max_tokens):
            prompts.append(messages[0]["content"])
            return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content="Score: 8"))])

    from hessgpt.eval.bench import LLMJudge

    judge = LLMJudge("http://judge/v1", "judge-model", client=SimpleNamespace(chat=SimpleNamespace(completions=FakeCompletions())))
    r = score_items(ITEMS, [ANSWERS[i["id"]] for i in ITEMS], judge=judge)
    rows = {x["id"]: x for x in r["items"]}
    assert rows["f2"]["judge_score"] == 0.8 and rows["f2"]["score"] == pytest.approx(0.5 * 0 + 0.5 * 0.8)
    assert rows["k1"]["score"] == 0 and "judge_score" in rows["k1"] and rows["k1"]["judge_score"] is None
    assert len(prompts) == len(ITEMS) - 1  # the degenerate answer is not sent to the judge
    assert "Reference answer:\nThe cat is sleeping." in prompts[-1]


class EchoBackend:
    """Answers every question with its scripted text, as several deltas, with a code block in between."""

    def __init__(self, answers):
        self.answers, self.params = answers, []

    def stream_chat(self, messages, params, tools=None):
        self.params.append(params)
        text = self.answers.get(messages[-1]["content"], "Je ne sais pas du tout, désolé.")
        half = len(text) // 2
        yield Event("text", text[:half])
        yield Event("code", "print(1)", {"lang": "python"})
        yield Event("result", "1\n", {"status": "ok"})
        yield Event("text", text[half:])
        yield Event("done", data={"finish_reason": "stop"})


def test_run_bench_generates_greedily_through_the_backend():
    backend = EchoBackend({i["messages"][-1]["content"]: ANSWERS[i["id"]] for i in ITEMS})
    r = run_bench(generate_fn(backend, max_new_tokens=64), ITEMS, progress=False)
    assert [x["answer"] for x in r["items"]] == [ANSWERS[i["id"]] for i in ITEMS]
    assert all(p.temperature == 0.0 and p.max_new_tokens == 64 for p in backend.params)
    assert r["total"] == score_items(ITEMS, [ANSWERS[i["id"]] for i in ITEMS])["total"]


def test_bench_cli(tmp_path, monkeypatch, capsys):
    from hessgpt.eval import cli

    prompts = tmp_path / "mini.jsonl"
    prompts.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in ITEMS), encoding="utf-8")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    monkeypatch.setattr(cli, "load_backend", lambda m1, m2=None, plain=False, code_votes=1: EchoBackend(
        {i["messages"][-1]["content"]: ANSWERS[i["id"]] for i in ITEMS}))
    assert cli.main(["bench", str(ckpt), "--prompts", str(prompts), "--lang", "en"]) == 0
    saved = json.loads((ckpt / "eval" / "bench.json").read_text())
    assert saved["kind"] == "bench" and saved["langs"] == ["en"]
    assert {x["id"] for x in saved["items"]} == {"f2", "c1", "i1", "r1"}  # --lang en filters the prompt file
    assert "| Conversational quality | 5.0 / 5 |" in capsys.readouterr().out


def test_load_items_errors(tmp_path):
    from hessgpt.errors import HessGPTError

    with pytest.raises(HessGPTError, match="no bench prompt file"):
        load_items(["de"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "lang": "fr", "category": "poetry", "messages": []}\n')
    with pytest.raises(HessGPTError, match="bad.jsonl:1: category 'poetry'"):
        load_items(["fr"], bad)


def test_bench_end_to_end_on_a_tiny_checkpoint_is_deterministic(tiny_ckpt, tmp_path):
    """A real (random-weight) checkpoint through the renderer + engine: runs, and greedy = same answers twice."""
    from hessgpt.eval import cli

    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    for out in outs:
        assert cli.main(["bench", tiny_ckpt, "--plain", "--limit", "3", "--max-new-tokens", "12", "--out", str(out)]) == 0
    a, b = (json.loads(o.read_text()) for o in outs)
    assert [x["answer"] for x in a["items"]] == [x["answer"] for x in b["items"]]
    assert len(a["items"]) == 3 and 0 <= a["total"] <= 20


# ---------------------------------------------------------------------------- constant-answer baseline


def test_constant_baseline_is_scored_by_the_same_checks():
    from hessgpt.eval.bench import CONSTANT_ANSWERS, constant_baseline, with_baselines

    greet = [item("g1", "fr", "conversation", "Salut !", [{"type": "contains_any", "values": ["bonjour"]}]),
             item("g2", "en", "conversation", "Hey!", [{"type": "contains_any", "values": ["help"]}])]
    b = constant_baseline(ITEMS + greet)
    assert b["answers"] == CONSTANT_ANSWERS
    rows = {r["id"]: r["score"] for r in b["items"]}
    # the greeting answers the two greetings and nothing else; t1 asks for English, gets French: half of 1
    assert rows == {"f1": 0, "f2": 0, "c1": 0, "i1": 0, "k1": 1.0, "r1": 0, "t1": 0.5, "g1": 1.0, "g2": 1.0}
    assert b["categories"]["conversation"]["score"] == round(5 * 2 / 3, 2)
    assert b["total"] == score_items(ITEMS + greet, [CONSTANT_ANSWERS[i["lang"]] for i in ITEMS + greet])["total"]
    assert set(b["per_lang"]) == {"fr", "en"}

    r = with_baselines(score_items(ITEMS, [ANSWERS[i["id"]] for i in ITEMS]), ITEMS)
    table = format_table(r)
    assert table.splitlines()[0] == "| Category | Score | Constant answer |"
    assert f"| Factual precision | 4.0 / 8 | 0.0 / 8 |" in table
    assert f"| **Total** | **{r['total']:.1f} / 20** | {r['baselines']['constant']['total']:.1f} / 20 |" in table


def test_run_bench_and_cli_print_the_constant_baseline(tmp_path, monkeypatch, capsys):
    from hessgpt.eval import cli

    backend = EchoBackend({i["messages"][-1]["content"]: ANSWERS[i["id"]] for i in ITEMS})
    r = run_bench(generate_fn(backend), ITEMS, progress=False)
    assert r["baselines"]["constant"]["n_items"] == len(ITEMS) and r["baselines"]["constant"]["total"] < r["total"]

    prompts = tmp_path / "mini.jsonl"
    prompts.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in ITEMS), encoding="utf-8")
    monkeypatch.setattr(cli, "load_backend", lambda m1, m2=None, plain=False, code_votes=1: backend)
    out = tmp_path / "b.json"
    assert cli.main(["bench", str(tmp_path), "--prompts", str(prompts), "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert "Constant answer" in text
    assert f"fr: {saved['per_lang']['fr']['total']:.1f} / 20 (3 items) | constant answer " \
           f"{saved['baselines']['constant']['per_lang']['fr']['total']:.1f}" in text


# ---------------------------------------------------------------------------- overlap with training data

BENCH = [
    item("exact", "fr", "factual", "Qui a écrit « Le Petit Prince » ?", []),
    item("wrapped", "en", "factual", "Who painted The Starry Night?", []),
    item("inside", "en", "robustness", "Hello!!!!! :) :) what is the capital of Peru??", []),
    item("jaccard", "en", "factual", "What is the boiling point of water in Fahrenheit at sea level?", []),
    item("clean", "en", "factual", "Which organ pumps blood through the human body?", []),
    item("short", "en", "conversation", "Can you help me study for an exam?", []),
    item("ref", "fr", "instruction", "Traduis en anglais : « Le chien aboie. »", [],
         references=["The dog barks at the mailman every single morning before breakfast."]),
    {**item("multi", "en", "conversation", "My name is Zoe.", []),
     "messages": [{"role": "user", "content": "My name is Zoe."}, {"role": "assistant", "content": "Hi Zoe!"},
                  {"role": "user", "content": "Tell me something nice."}]},
    item("empty", "en", "robustness", "?", []),
]
TRAIN = [
    {"messages": [{"role": "system", "content": "Who painted The Starry Night?"},   # not a user message
                  {"role": "user", "content": "qui a ecrit le petit prince"}, {"role": "assistant", "content": "Saint-Exupéry."}]},
    {"messages": [{"role": "user", "content": "Bonjour ! So, who painted the Starry Night, please? Thanks!"}]},
    {"messages": [{"role": "user", "content": "What is the capital of Peru?"}]},
    {"messages": [{"role": "user", "content": "At sea level, what is the boiling point of water in Fahrenheit"}]},
    {"messages": [{"role": "user", "content": "Can you help me?"}]},   # 4 of 8 tokens: not most of the bench prompt
    {"messages": [{"role": "user", "content": "Why does my dog bark at the mailman every single morning before breakfast?"}]},
    {"turns": [{"user": "Tell me something nice!", "needs_code": False}]},
    {"question": "What is the heart?", "answer": "#### 0"},
    {"messages": [{"role": "user", "content": "?"}]},
]


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_overlap_rules(tmp_path):
    from hessgpt.eval.bench import norm_tokens, overlap_report

    assert norm_tokens("Qui a écrit « Le Petit Prince » ?") == ("qui", "a", "ecrit", "le", "petit", "prince")
    a = _write_jsonl(tmp_path / "a.jsonl", TRAIN[:4])
    b = _write_jsonl(tmp_path / "b.jsonl", TRAIN[4:] + [{"messages": "not a list"}, ["not", "a", "dict"]])
    ov = overlap_report(BENCH, [a, b])
    got = {(r["id"], r["field"]): r for r in ov["overlaps"]}
    assert {k: r["match"] for k, r in got.items()} == {
        ("exact", "prompt"): "exact", ("wrapped", "prompt"): "contained", ("inside", "prompt"): "contained",
        ("jaccard", "prompt"): "jaccard", ("ref", "reference"): "8-gram", ("multi", "prompt"): "exact"}
    assert ov["ids"] == ["exact", "inside", "jaccard", "multi", "ref", "wrapped"] and ov["n_overlapping"] == 6
    assert ov["n_items"] == len(BENCH) and ov["train_messages"] == 8   # "?" has no token; the system line is not read
    assert got[("wrapped", "prompt")]["train_file"] == str(a)
    assert got[("inside", "prompt")]["score"] == round(6 / 7, 3)     # 6 of the 7 bench tokens are the message
    assert got[("jaccard", "prompt")]["score"] >= 0.8
    assert got[("multi", "prompt")]["text"] == "Tell me something nice."  # the second user turn
    assert "Jaccard >= 0.8" in ov["rule"] and "8 tokens" in ov["rule"]


def test_overlap_cli_without_a_checkpoint(tmp_path, capsys):
    from hessgpt.errors import HessGPTError
    from hessgpt.eval import cli

    prompts = _write_jsonl(tmp_path / "bench.jsonl", BENCH)
    train = _write_jsonl(tmp_path / "train.jsonl", TRAIN)
    out = tmp_path / "ov.json"
    assert cli.main(["bench", "--prompts", str(prompts), "--lang", "fr,en", "--train-data", str(train),
                     "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "overlap with training data: 6 of 9 items" in text and "- exact (prompt, exact):" in text
    saved = json.loads(out.read_text())
    assert saved["overlap"]["ids"] == ["exact", "inside", "jaccard", "multi", "ref", "wrapped"]
    assert saved["baselines"]["constant"]["n_items"] == 9 and "items" not in saved
    with pytest.raises(HessGPTError, match="needs a checkpoint"):
        cli.main(["bench", "--prompts", str(prompts)])
    with pytest.raises(HessGPTError, match="no such file"):
        cli.main(["bench", "--prompts", str(prompts), "--train-data", str(tmp_path / "missing.jsonl")])
    (tmp_path / "bad.jsonl").write_text('{"messages": []}\n{oops\n')
    with pytest.raises(HessGPTError, match="bad.jsonl:2: invalid JSON"):
        cli.main(["bench", "--prompts", str(prompts), "--train-data", str(tmp_path / "bad.jsonl")])


# ---------------------------------------------------------------------------- the shipped bench vs the generator


class ExecSandbox:
    """Runs the routing generator's own snippets in-process (they are HessGPT's code, not a model's), so the
    test needs no bubblewrap; only the user prompts matter here."""

    def run_many(self, codes):
        import contextlib
        import io

        from hessgpt.tools.sandbox.supervisor import RunResult

        out = []
        for code in codes:
            buf = io.StringIO()
            try:
                with contextlib.redirect_stdout(buf):
                    exec(compile(code, "<routing>", "exec"), {"__name__": "__main__"})
                out.append(RunResult("ok", buf.getvalue(), "", 0.0))
            except Exception as e:  # noqa: BLE001 - a failing snippet is just not kept
                out.append(RunResult("error", buf.getvalue(), repr(e), 0.0))
        return out

    def run(self, code):
        return self.run_many([code])[0]

    def close(self):
        pass


def test_shipped_bench_asks_nothing_the_routing_generator_produces():
    import inspect

    from hessgpt.data.routing import build, negatives
    from hessgpt.eval.bench import OverlapIndex, item_texts, overlap_report

    items = load_items(["fr", "en"])
    kwargs = {"seed": 0, "negative_fraction": 0.5, "sandbox": ExecSandbox(), "progress": False}
    kwargs = {k: v for k, v in kwargs.items() if k in inspect.signature(build.generate).parameters}
    records, _ = build.generate(1500, **kwargs)
    messages = [("routing", m["content"]) for r in records for m in r["messages"] if m["role"] == "user"]
    assert len(messages) >= 1000
    # every question of the generator's fixed lists too, not only those the sample happened to draw
    for name in ("FACTS", "GREETINGS", "OPINIONS"):
        table = getattr(negatives, name)
        rows = [r for rows in table.values() for r in rows] if isinstance(table, dict) else table or []
        messages += [("routing." + name, q) for row in rows for q in (row[0::2] if len(row) == 4 else row[:1])]
    ov = overlap_report(items, ["routing"], index=OverlapIndex(messages))
    prompts = [r for r in ov["overlaps"] if r["field"] == "prompt"]
    assert prompts == [], prompts
    # no capital question at all: the generator's capitals (and its test split's) are its own territory
    asked = [t for it in items for f, t in item_texts(it) if f == "prompt" and re.search(r"\bcapitale\b|\bcapit[ao]l (?:city )?of\b", t, re.I)]
    assert asked == []
