"""Recipe loading, the hub code path (with a stand-in for datasets.load_dataset) and the CLI."""

import os
import sys
import types
from pathlib import Path

import pytest

from hessgpt.data.cli import DELEGATED, main as data_main
from hessgpt.data.conversation import Skip
from hessgpt.data.recipe import SourceSpec, iter_rows, load_pretrain_recipe, load_recipe
from hessgpt.datafiles import is_local
from hessgpt.errors import HessGPTError

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "body, message",
    [
        ("sources: []", "non-empty `sources:`"),
        ("sources: [{path: x.jsonl}]", "`dataset` is required"),
        ("sources: [{dataset: alpaca, wieght: 3}]", "unknown key(s) ['wieght']"),
        ("sources: [{dataset: alpaca, weight: 1, count: 3}]", "not both"),
        ("sources: [{dataset: alpaca, count: -1}]", "count must be a positive integer"),
        ("totl: 3\nsources: [{dataset: alpaca}]", "unknown key(s) ['totl']"),
        ("sources: [{dataset: alpaca}, {dataset: tatsu-lab/alpaca}]", "repeated: ['alpaca']"),
        ("sources: [{dataset: alpaca, weight: 1}, {dataset: dolly, count: 3}]", "needs `total:`"),
        ("val_fraction: 1.5\nsources: [{dataset: alpaca}]", "val_fraction"),
        ("sources: [{dataset: alpaca", "not valid YAML"),
    ],
)
def test_recipe_errors_name_the_problem(tmp_path, body, message):
    with pytest.raises(HessGPTError) as e:
        load_recipe(_write(tmp_path, body))
    assert message in str(e.value)


def test_paths_resolve_relative_to_the_recipe_and_local_overrides(tmp_path):
    (tmp_path / "d").mkdir()
    r = load_recipe(_write(tmp_path, "sources:\n - {dataset: alpaca, path: d/a.jsonl}\n - {dataset: HuggingFaceH4/ultrachat_200k, split: train_sft}\n"))
    assert r.sources[0].path == str(tmp_path / "d" / "a.jsonl") and r.sources[0].name == "alpaca"
    assert r.sources[1].path == "HuggingFaceH4/ultrachat_200k" and r.sources[1].name == "ultrachat_200k"
    assert not is_local("HuggingFaceH4/ultrachat_200k") and is_local("./x") and is_local("data/x.parquet")
    r = load_recipe(r_path := _write(tmp_path, "sources: [{name: u, dataset: ultrachat}]"), {"u": str(tmp_path / "d")})
    assert r.sources[0].path == str(tmp_path / "d")
    with pytest.raises(HessGPTError, match="unknown source"):
        load_recipe(r_path, {"nope": "x"})


def test_bad_adapter_options_are_reported(tmp_path):
    from hessgpt.data.prepare import prepare

    (tmp_path / "a.jsonl").write_text("{}\n")
    r = load_recipe(_write(tmp_path, "sources: [{dataset: oasst2, path: a.jsonl, options: {path: best}}]"))
    with pytest.raises(HessGPTError, match="bad options"):
        prepare(r, tmp_path / "out")
    r = load_recipe(_write(tmp_path, "sources: [{dataset: no-such-set, path: a.jsonl}]"))
    with pytest.raises(HessGPTError, match="no adapter for dataset 'no-such-set'"):
        prepare(r, tmp_path / "out")


class FakeStream:
    def __init__(self, rows, fail_after=None):
        self.rows, self.fail_after, self.shuffled = rows, fail_after, None

    def shuffle(self, seed, buffer_size):
        self.shuffled = (seed, buffer_size)
        return self

    def __iter__(self):
        for i, r in enumerate(self.rows):
            if self.fail_after is not None and i == self.fail_after:
                raise ConnectionError("shard 3 unreachable")
            yield r


def test_hub_sources_stream_with_the_token(monkeypatch):
    import datasets

    calls, stream = [], FakeStream([{"instruction": "a", "output": "b"}] * 3, fail_after=2)

    def fake_load(path, **kw):
        calls.append((path, kw))
        return stream

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    spec = SourceSpec.from_dict({"dataset": "Salesforce/xlam-function-calling-60k", "config": "c", "split": "train"})
    items = list(iter_rows(spec, seed=5, shuffle_buffer=100))
    path, kw = calls[0]
    assert path == "Salesforce/xlam-function-calling-60k"
    assert kw["streaming"] is True and kw["token"] == "hf_test" and kw["name"] == "c" and kw["split"] == "train"
    assert stream.shuffled == (5, 100)
    assert [i[0] for i in items[:2]] == ["0", "1"]
    assert isinstance(items[2], Skip) and items[2].reason == "load_error"  # counted, the run goes on


def test_hub_rows_without_ids_get_content_ids(monkeypatch):
    import datasets

    from hessgpt.data.dedup import Deduper
    from hessgpt.data.prepare import Measurer, collect
    from hessgpt.data.recipe import Recipe

    rows = [{"chosen": "\n\nHuman: Hello there\n\nAssistant: Hi! How can I help?"}]
    monkeypatch.setattr(datasets, "load_dataset", lambda path, **kw: FakeStream(rows))
    recipe = Recipe(name="t", sources=[])
    kept, rep = collect(SourceSpec.from_dict({"dataset": "Anthropic/hh-rlhf"}), recipe, Deduper(), Measurer(recipe), None, set())
    (conv, _), = kept
    assert conv.id.startswith("hh-rlhf:") and len(conv.id) == len("hh-rlhf:") + 12 and conv.source == "hh-rlhf"


def test_hub_load_failure_is_a_user_error(monkeypatch):
    import datasets

    def fake_load(path, **kw):
        raise FileNotFoundError("Dataset 'x/y' doesn't exist on the Hub or cannot be accessed")

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    with pytest.raises(HessGPTError, match=r"source 'y'.*x/y.*HF_TOKEN"):
        list(iter_rows(SourceSpec.from_dict({"dataset": "x/y"})))


def test_cli_delegates_shards_and_routing(monkeypatch, capsys):
    seen = []
    for name in ("shards", "routing"):
        module = DELEGATED[name][0]   # a stand-in for the module the subcommand is delegated to
        mod = types.ModuleType(module)
        mod.main = lambda argv, name=name: seen.append((name, argv)) or 0
        monkeypatch.setitem(sys.modules, module, mod)
    assert data_main(["shards", "--in", "x"]) == 0
    assert data_main(["routing", "--n", "3"]) == 0
    assert seen == [("shards", ["--in", "x"]), ("routing", ["--n", "3"])]
    assert data_main([]) == 0 and "prepare" in capsys.readouterr().out
    assert data_main(["nope"]) == 2


def test_cli_errors(tmp_path):
    with pytest.raises(HessGPTError, match="no such recipe"):
        data_main(["prepare", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)])
    with pytest.raises(HessGPTError, match="NAME=PATH"):
        data_main(["prepare", str(ROOT / "recipes" / "tiny-local.yaml"), "--out", str(tmp_path), "--local", "oops"])


@pytest.mark.parametrize(
    "conversation, pretrain, message",
    [
        ("{name: a, dataset: alpaca, wieght: 3}", "{name: a, path: a.txt, wieght: 3}", "unknown key(s) ['wieght']"),
        ("{name: a, dataset: alpaca, weight: -1}", "{name: a, path: a.txt, weight: -1}",
         "'a': weight must be a positive number, got -1"),
        ("{name: a, path: a.jsonl}", "{name: a, weight: 2}", "is required ("),
        ("[1, 2]", "[1, 2]", "expected a mapping, got [1, 2]"),
    ],
)
def test_both_recipe_kinds_check_sources_the_same_way(tmp_path, conversation, pretrain, message):
    """A conversation mix and a pretraining mix go through one reader and one source check (data/recipe.py)."""
    for load, source in ((load_recipe, conversation), (load_pretrain_recipe, pretrain)):
        with pytest.raises(HessGPTError) as e:
            load(_write(tmp_path, f"sources: [{source}]"))
        assert message in str(e.value), (load.__name__, str(e.value))
    for load, source in ((load_recipe, "{dataset: alpaca}"), (load_pretrain_recipe, "{path: data/alpaca}")):
        with pytest.raises(HessGPTError, match=r"repeated: \['alpaca'\]"):
            load(_write(tmp_path, f"sources: [{source}, {source}]"))
        with pytest.raises(HessGPTError, match="not valid YAML"):
            load(_write(tmp_path, f"sources: [{source}"))


def test_both_recipe_kinds_resolve_paths_the_same_way(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    conv = load_recipe(_write(tmp_path, "sources: [{name: a, dataset: alpaca, path: d/a.jsonl}, "
                                        "{name: b, dataset: x/y}, {name: c, dataset: alpaca, path: ~/c.jsonl}]"))
    pre = load_pretrain_recipe(_write(tmp_path, "sources: [{name: a, path: d/a.jsonl}, {name: b, path: x/y}, "
                                                "{name: c, path: ~/c.jsonl}]"))
    want = [str(tmp_path / "d" / "a.jsonl"), "x/y", str(tmp_path / "home" / "c.jsonl")]
    assert [s.path for s in conv.sources] == want and [s.path for s in pre.sources] == want
    conv = load_recipe(r := _write(tmp_path, "sources: [{name: b, dataset: x/y}]"), {"b": "local/b.jsonl"})
    pre = load_pretrain_recipe(p := _write(tmp_path, "sources: [{name: b, path: x/y}]", "p.yaml"), {"b": "local/b.jsonl"})
    assert conv.sources[0].path == pre.sources[0].path == os.path.abspath("local/b.jsonl")
    for load, path in ((load_recipe, r), (load_pretrain_recipe, p)):
        with pytest.raises(HessGPTError, match=r"--local names unknown source\(s\) \['nope'\]; sources: \['b'\]"):
            load(path, {"nope": "x"})
