"""`hessgpt data prepare`: determinism, disjoint splits, mixture shares, filters, dedup, reports, shipped recipes."""

import json
import random
from pathlib import Path

import pytest

from hessgpt.data.cli import main as data_main
from hessgpt.data.prepare import prepare
from hessgpt.data.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "data"
VOCAB = "apple river cloud stone lamp tiger violin garden rocket pencil forest candle mirror ocean castle bridge".split()


def _texts(n, seed, words=30):
    rng = random.Random(seed)
    return [" ".join(rng.choice(VOCAB) for _ in range(words)) for _ in range(n)]


def _alpaca_file(path, n, seed):
    with open(path, "w") as f:
        for i, (q, a) in enumerate(zip(_texts(n, seed), _texts(n, seed + 1000))):
            f.write(json.dumps({"id": i, "instruction": q, "input": "", "output": a}) + "\n")
    return path


def _recipe(tmp_path, body):
    p = tmp_path / "recipe.yaml"
    p.write_text(body)
    return p


def _read(path):
    return [json.loads(line) for line in open(path)]


def test_fixture_recipe_is_deterministic_and_splits_are_disjoint(tmp_path):
    recipe = FIXTURES / "recipe-all.yaml"
    r1 = prepare(load_recipe(recipe), tmp_path / "a")
    prepare(load_recipe(recipe), tmp_path / "b")
    for name in ("train.jsonl", "val.jsonl", "report.json", "report.md", "lengths.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    train, val = _read(tmp_path / "a" / "train.jsonl"), _read(tmp_path / "a" / "val.jsonl")
    assert len(train) == r1["train"] and len(val) == r1["val"] and len(val) > 0
    assert not {c["id"] for c in train} & {c["id"] for c in val}
    assert not {json.dumps(c["messages"]) for c in train} & {json.dumps(c["messages"]) for c in val}
    assert len({c["id"] for c in train + val}) == len(train) + len(val)
    assert {c["source"] for c in train + val} == {s["name"] for s in r1["sources"]}
    # every record read is kept or counted under a reason (1:1 sources)
    for s in r1["sources"]:
        if s["name"] != "oasst-trees":
            assert s["kept"] + sum(s["skipped"].values()) == s["records"], s
    assert (tmp_path / "a" / "lengths.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "a" / "report.md").read_text()
    assert "| code_contests | 2 | 1 |" in md and "no_solution" in md


def test_a_different_seed_changes_the_order_only(tmp_path):
    recipe = FIXTURES / "recipe-all.yaml"
    prepare(load_recipe(recipe), tmp_path / "a")
    r = load_recipe(recipe)
    r.seed = 8
    prepare(r, tmp_path / "b")
    a = _read(tmp_path / "a" / "train.jsonl") + _read(tmp_path / "a" / "val.jsonl")
    b = _read(tmp_path / "b" / "train.jsonl") + _read(tmp_path / "b" / "val.jsonl")
    assert sorted(c["id"] for c in a) == sorted(c["id"] for c in b)
    assert [c["id"] for c in a] != [c["id"] for c in b]


def test_weights_with_total(tmp_path):
    _alpaca_file(tmp_path / "a.jsonl", 100, 1)
    _alpaca_file(tmp_path / "b.jsonl", 100, 2)
    recipe = _recipe(tmp_path, """
name: w
total: 40
val_fraction: 0.1
sources:
  - {name: a, dataset: alpaca, path: a.jsonl, weight: 3}
  - {name: b, dataset: alpaca, path: b.jsonl, weight: 1}
""")
    rep = prepare(load_recipe(recipe), tmp_path / "out")
    a, b = rep["sources"]
    assert (a["train"] + a["val"], b["train"] + b["val"]) == (30, 10)
    assert (a["val"], b["val"]) == (3, 1)
    assert a["records"] == 30  # reading stops once the share is filled


def test_weights_without_total_take_the_largest_mix(tmp_path):
    _alpaca_file(tmp_path / "a.jsonl", 100, 1)
    _alpaca_file(tmp_path / "b.jsonl", 20, 2)
    recipe = _recipe(tmp_path, """
sources:
  - {name: a, dataset: alpaca, path: a.jsonl, weight: 1}
  - {name: b, dataset: alpaca, path: b.jsonl, weight: 1}
""")
    rep = prepare(load_recipe(recipe), tmp_path / "out")
    a, b = rep["sources"]
    assert (a["train"] + a["val"], b["train"] + b["val"]) == (20, 20)
    assert a["unused"] == 80


def test_exact_and_near_duplicates_across_sources(tmp_path):
    base = {"instruction": " ".join(_texts(1, 5, 60)), "input": "", "output": " ".join(_texts(1, 6, 60))}
    near = dict(base, output=base["output"].replace("apple", "APPLE!!", 1) + " tiger")  # normalized: one word more
    other = {"instruction": "Something else entirely", "input": "", "output": "Yes."}
    (tmp_path / "a.jsonl").write_text(json.dumps(base) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in (dict(base, input=""), near, other)) + "\n")
    recipe = _recipe(tmp_path, """
sources:
  - {name: a, dataset: alpaca, path: a.jsonl, count: 10}
  - {name: b, dataset: dolly, path: b.jsonl, count: 10}
""".replace("dolly", "alpaca"))
    rep = prepare(load_recipe(recipe), tmp_path / "out")
    assert rep["sources"][1]["skipped"] == {"duplicate": 1, "near_duplicate": 1}
    assert rep["sources"][1]["kept"] == 1


def test_language_and_length_filters(tmp_path):
    rows = [
        {"instruction": "Quelle est la capitale de la France et pourquoi est-elle si célèbre ?", "output": "La capitale de la France est Paris, célèbre pour ses musées et son histoire."},
        {"instruction": "What is the capital of France and why is it so famous?", "output": "The capital of France is Paris, famous for its museums and history."},
        {"instruction": "Was ist die Hauptstadt von Frankreich und warum ist sie so berühmt?", "output": "Die Hauptstadt von Frankreich ist Paris, berühmt für ihre Museen und Geschichte."},
        {"instruction": "Write a long story about the sea.", "output": "The sea was calm. " * 50},
    ]  # fmt: skip
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recipe = _recipe(tmp_path, """
languages: [fr, en]
max_chars: 300
val_fraction: 0
sources:
  - {name: a, dataset: alpaca, path: a.jsonl}
""")
    rep = prepare(load_recipe(recipe), tmp_path / "out")
    assert rep["sources"][0]["skipped"] == {"too_long": 1, "wrong_language": 1}
    assert rep["languages"] == {"en": 1, "fr": 1}
    assert rep["sources"][0]["skip_examples"]["wrong_language"] == ["a:a.jsonl:3: de"]


class CountingTokenizer:
    """Stands in for hessgpt.tokenizer.Tokenizer: render(record) -> (ids, mask)."""

    def render(self, conv: dict):
        ids = [0] * sum(len(m["content"].split()) for m in conv["messages"])
        return ids, [1] * len(ids)


def test_token_length_filter_uses_the_tokenizer(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"instruction": "one two three", "output": "four five"}) + "\n"
                                      + json.dumps({"instruction": "one two three four", "output": "five six seven"}) + "\n")  # fmt: skip
    recipe = _recipe(tmp_path, "max_tokens: 5\nval_fraction: 0\nsources: [{name: a, dataset: alpaca, path: a.jsonl}]\n")
    rep = prepare(load_recipe(recipe), tmp_path / "out", tokenizer=CountingTokenizer())
    assert rep["length_unit"] == "tokens" and rep["lengths"]["max"] == 5
    assert rep["sources"][0]["skipped"] == {"too_long": 1}


@pytest.mark.parametrize("recipe", ["mix-conversations.yaml", "mix-sft.yaml"])
def test_shipped_recipes_run_on_local_copies(tmp_path, recipe, capsys):
    local = {
        "ultrachat": "ultrachat.jsonl", "hh-rlhf": "hh_rlhf.jsonl.gz", "oasst2": "oasst_flat.parquet", "vigogne": "vigogne_messages.jsonl",
        "xlam": "xlam.json", "glaive": "glaive.jsonl", "nexusraven": "nexusraven_queries.jsonl",
        "nexusraven.api_list": "nexusraven_api_list.jsonl",
        "smoltalk": "smoltalk.jsonl", "wikihow": "wikihow_cosmopedia.jsonl", "tulu-math": "tulu_personas.jsonl",
        "tulu-code": "tulu_personas.jsonl", "tulu-if": "tulu_personas.jsonl", "longalign": "longalign.jsonl",
    }  # fmt: skip
    r = load_recipe(ROOT / "recipes" / recipe)
    args = [f"--local={n}={FIXTURES / f}" for n, f in local.items() if n.split(".")[0] in {s.name for s in r.sources}]
    assert len(args) >= len(r.sources)
    assert data_main(["prepare", str(ROOT / "recipes" / recipe), "--out", str(tmp_path / "out"), *args]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert all(s["records"] > 0 for s in report["sources"]), report["sources"]
    out = capsys.readouterr().out
    assert "train " in out and "records" in out
    if recipe == "mix-sft.yaml":  # the same tulu file under three names: the copies are duplicates
        assert report["skip_reasons"] == {"duplicate": 2}


def test_tiny_local_recipe_runs(tmp_path):
    rep = prepare(load_recipe(ROOT / "recipes" / "tiny-local.yaml"), tmp_path)
    assert rep["train"] > 0 and rep["val"] > 0 and set(rep["languages"]) <= {"fr", "en"}


def test_function_calling_recipe_gives_tool_call_conversations(tmp_path, tokenizer):
    """recipes/function-calling-local.yaml (the smollm2 recipe's function-calling data): the glaive demo's calls
    become <|tool_call|> blocks (trained) after the tools in the system text, the function responses untrained."""
    rep = prepare(load_recipe(ROOT / "recipes" / "function-calling-local.yaml"), tmp_path)
    assert rep["train"] > 200 and rep["val"] > 20 and set(rep["languages"]) == {"en"}
    train = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    with_calls = [r for r in train if any(m.get("tool_calls") for m in r["messages"])]
    assert len(with_calls) > 100 and all(r.get("tools") for r in with_calls)
    rec = next(r for r in with_calls if any(m["role"] == "tool" for m in r["messages"]))
    ids, mask = tokenizer.render(rec)
    i = ids.index(tokenizer.tool_call_id)
    j = ids.index(tokenizer.end_id, i)
    call = json.loads(tokenizer.decode(ids[i + 1:j]))
    assert call["name"] in {t["name"] for t in rec["tools"]} and all(mask[i:j + 1])
    k = ids.index(tokenizer.tool_response_id)
    assert not any(mask[k:ids.index(tokenizer.end_id, k) + 1])
    system_end = ids.index(tokenizer.end_id)
    assert "# Tools" in tokenizer.decode(ids[:system_end]) and not any(mask[:system_end])


def test_a_source_can_skip_the_language_filter(tmp_path):
    row = {"instruction": "Wie spät ist es in Berlin, wenn es in Paris Mittag ist?", "output": "Es ist in Berlin ebenfalls Mittag."}
    (tmp_path / "a.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps(dict(row, output="Auch Mittag, gleiche Zeitzone.")) + "\n")
    recipe = _recipe(tmp_path, """
languages: [fr, en]
val_fraction: 0
dedup: false
sources:
  - {name: a, dataset: alpaca, path: a.jsonl}
  - {name: b, dataset: alpaca, path: b.jsonl, languages: all}
""")
    rep = prepare(load_recipe(recipe), tmp_path / "out")
    assert rep["sources"][0]["skipped"] == {"wrong_language": 1}
    assert rep["sources"][1]["kept"] == 1 and rep["languages"] == {"de": 1}


def test_outputs_render_and_parse_back_with_the_real_tokenizer(tmp_path, tokenizer_dir):
    """Every converted fixture renders (ids, mask) and `parse` gives back its messages: the trainer can use it."""
    from hessgpt.tokenizer import Tokenizer

    tok = Tokenizer.load(tokenizer_dir)
    assert data_main(["prepare", str(FIXTURES / "recipe-all.yaml"), "--out", str(tmp_path), "--tokenizer", tokenizer_dir]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["length_unit"] == "tokens"
    records = _read(tmp_path / "train.jsonl") + _read(tmp_path / "val.jsonl")
    with_actions = 0
    for rec in records:
        ids, mask = tok.render(rec)
        assert len(ids) == len(mask) and 0 < sum(mask) < len(ids)
        with_actions += any("code" in m or "tool_calls" in m for m in rec["messages"])
        parsed = tok.parse(ids)
        assert [m["role"] for m in parsed] == [m["role"] for m in rec["messages"]], rec["id"]
    assert with_actions >= 6
