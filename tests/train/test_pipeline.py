"""The pipeline: a recipe runs tokenizer -> shards -> pretrain -> SFT LoRA -> merge, records lineage, skips finished stages."""

import json
import os
import shutil

import pytest
import torch
import yaml

from hessgpt import checkpoint
from hessgpt.data.recipe import load_recipe
from hessgpt.errors import HessGPTError
from hessgpt.train.common import read_metrics
from hessgpt.train.pipeline import Pipeline, _flags

from .conftest import FIXTURES_TEXT, make_conversations, run_cli, write_jsonl

TRAIN = {"threads": 1, "dtype": "fp32", "device": "cpu", "no-progress": True, "batch-size": 2, "seq-len": 64}


def recipe(tmp_path, **extra) -> str:
    data = tmp_path / "chat"
    data.mkdir(exist_ok=True)
    write_jsonl(data / "train.jsonl", make_conversations(24, seed=5))
    write_jsonl(data / "val.jsonl", make_conversations(4, seed=6))
    r = {
        "name": "t",
        "workdir": "work",
        "defaults": TRAIN,
        "stages": [
            {"name": "tok", "kind": "tokenizer", "inputs": FIXTURES_TEXT + ["chat/train.jsonl"], "vocab_size": 512},
            {"name": "shards", "kind": "shards", "text": FIXTURES_TEXT, "tokenizer": "@tok", "val_fraction": 0.1,
             "shard_tokens": 8192, "workers": 1},
            {"name": "pre", "kind": "pretrain", "model": "tiny", "data": "@shards",
             "args": {"steps": 3, "set": ["dim=32", "n_layers=1", "context_length=64"], "eval-every": 0}},
            {"name": "lora", "kind": "sft", "base": "@pre", "data": "chat",
             "lora": {"rank": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]}, "args": {"steps": 2, "eval-every": 0}},
            {"name": "merged", "kind": "merge", "base": "@pre", "lora": "@lora"},
        ],
        "final": {"model1": "@merged"},
        **extra,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(r))
    return str(path)


def test_pipeline_runs_records_lineage_and_skips_finished_stages(tmp_path, capsys):
    path = recipe(tmp_path)
    assert Pipeline(path).run() == 0
    work = tmp_path / "work"
    merged = json.load(open(work / "merged" / "meta.json"))
    lora = json.load(open(work / "lora" / "meta.json"))
    pre = json.load(open(work / "pre" / "meta.json"))
    assert merged["parent"] == str(work / "pre") and merged["adapter"] == str(work / "lora")
    assert lora["parent"] == str(work / "pre") and lora["stage"] == "sft-lora" and pre["stage"] == "pretrain"
    assert os.path.realpath(work / "model1") == str(work / "merged")
    record = json.load(open(work / "pipeline.json"))
    assert list(record["stages"]) == ["tok", "shards", "pre", "lora", "merged"]
    assert record["stages"]["merged"]["inputs"] == {"base": str(work / "pre"), "lora": str(work / "lora")}
    before = os.path.getmtime(work / "merged" / "model.safetensors")
    capsys.readouterr()
    assert Pipeline(path).run() == 0
    out = capsys.readouterr().out
    assert out.count("already done, skipped") == 5
    assert os.path.getmtime(work / "merged" / "model.safetensors") == before
    # an unfinished stage (its meta.json gone) is redone, and only it
    os.remove(work / "merged" / "meta.json")
    assert Pipeline(path).run() == 0
    out = capsys.readouterr().out
    assert out.count("already done, skipped") == 4 and "merged: finished" in out


def test_sft_stage_takes_a_list_of_data_sources(tmp_path, monkeypatch):
    """`data: [A, "@stage"]` -> `hessgpt sft --data A STAGE_OUT` (trained together; tests/train/test_sft.py)."""
    from hessgpt.train import sft

    seen = []
    monkeypatch.setattr(sft, "main", lambda argv: seen.append(argv) or 0)
    (tmp_path / "chat").mkdir()
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "workdir": "work", "stages": [
        {"name": "fc", "kind": "sft", "base": "base", "data": "chat"},
        {"name": "both", "kind": "sft", "base": "base", "data": ["chat", "@fc"], "args": {"steps": 1}}], "final": {}}))
    assert Pipeline(str(path)).run(only=["both"]) == 0
    argv = seen[0]
    i = argv.index("--data")
    assert argv[i + 1:i + 4] == [str(tmp_path / "chat"), str(tmp_path / "work" / "fc"), "--out"]


@pytest.mark.slow
def test_nproc_stage_runs_data_parallel_and_equals_one_process(tmp_path):
    """`nproc: 2` runs an SFT stage as two torchrun workers with --batch-size each: the same optimisation as one
    process with twice the batch (full fine-tune, so the DDP-wrapped model's save is exercised too)."""
    path = recipe(tmp_path)
    r = yaml.safe_load(open(path))
    sft = {"kind": "sft", "base": "@pre", "data": "chat", "args": {"steps": 3, "eval-every": 0, "lr": 3e-3, "dropout": 0}}
    r["stages"] = r["stages"][:3] + [
        {**sft, "name": "one", "args": {**sft["args"], "batch-size": 4}},
        {**sft, "name": "two", "nproc": 2, "args": {**sft["args"], "batch-size": 2}},
    ]
    r["final"] = {"model1": "@two"}
    open(path, "w").write(yaml.safe_dump(r))
    assert Pipeline(path).run() == 0
    work = tmp_path / "work"
    a = [row["loss"] for row in read_metrics(str(work / "one" / "metrics.jsonl"))]
    b = [row["loss"] for row in read_metrics(str(work / "two" / "metrics.jsonl"))]
    assert len(a) == len(b) == 3 and max(abs(x - y) for x, y in zip(a, b)) < 1e-4, (a, b)
    m1, _ = checkpoint.load(str(work / "one"))
    m2, _ = checkpoint.load(str(work / "two"))
    for k, v in m1.state_dict().items():
        assert torch.allclose(v, m2.state_dict()[k], atol=1e-4), k


def test_recipe_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"stages": [{"name": "a", "kind": "sft", "base": "@nope", "data": "x"}]}))
    with pytest.raises(HessGPTError, match="@nope"):
        Pipeline(str(bad))
    bad.write_text(yaml.safe_dump({"stages": [{"name": "a", "kind": "pretrain", "model": "tiny", "data": "x", "lr": 1}]}))
    with pytest.raises(HessGPTError, match="unknown key 'lr'"):
        Pipeline(str(bad))
    bad2 = tmp_path / "bad2.yaml"
    bad2.write_text(yaml.safe_dump({"stages": [{"name": "a", "kind": "sft", "base": "b", "data": "x", "nproc": "two"}]}))
    with pytest.raises(HessGPTError, match="`nproc` must be a positive integer, got 'two'"):
        Pipeline(str(bad2)).run()
    r = run_cli("pipeline", str(bad))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("text, message", [
    ("stages: [{name: a, kind: merge, base: b, lora: c}]\nstags: []\n", "unknown key(s) ['stags']; known: ['defaults',"),
    ("stages: []\n", "a recipe needs a non-empty `stages:` list"),
    ("- {name: a, kind: merge}\n", "a recipe needs a non-empty `stages:` list"),
    ("stages: [{name: a, kind: merge\n", "not valid YAML (line 2, column 1: expected ',' or '}'"),
    (None, "no such recipe file"),
])
def test_top_level_checks_are_the_data_recipes(tmp_path, text, message):
    """The pipeline file goes through data/recipe.py's reader (read_recipe_mapping): its one-line errors name the
    file and the offending key, as a data recipe's do."""
    path = tmp_path / "p.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(HessGPTError) as e:
        Pipeline(str(path))
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value), str(e.value)
    if text is not None:   # a data recipe with the same fault says the same, with its own list key and known keys
        data = tmp_path / "d.yaml"
        data.write_text(text.replace("stages:", "sources:").replace("stags:", "totl:"))
        with pytest.raises(HessGPTError) as d:
            load_recipe(data)
        same = str(e.value).replace(str(path), str(data)).replace("stages", "sources").replace("stags", "totl")
        assert str(d.value).split("; known")[0] == same.split("; known")[0]


def test_shipped_recipes_parse(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for name in ("tiny-cpu.yaml", "hessgpt-dual.yaml"):
        p = Pipeline(os.path.join(root, "recipes", name), workdir=str(tmp_path / name))
        assert p.final and all(s.kind for s in p.stages)


def test_flags():
    assert _flags({"batch-size": 4, "compile": True, "resume": False, "set": ["a=1", "b=2"], "lr": 1e-3}) == \
        ["--batch-size", "4", "--compile", "--set", "a=1", "--set", "b=2", "--lr", "0.001"]
