"""The /20 bench: category arithmetic on fixed answers, the optional judge, the generation loop and the CLI."""

import json
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
    monkeypatch.setattr(cli, "load_backend", lambda m1, m2=None, plain=False: EchoBackend(
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
