"""The pipeline: a recipe runs tokenizer -> shards -> pretrain -> SFT LoRA -> merge, records lineage, skips finished stages."""

import json
import os
import shutil

import pytest
import yaml

from hessgpt.errors import HessGPTError
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


def test_recipe_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"stages": [{"name": "a", "kind": "sft", "base": "@nope", "data": "x"}]}))
    with pytest.raises(HessGPTError, match="@nope"):
        Pipeline(str(bad))
    bad.write_text(yaml.safe_dump({"stages": [{"name": "a", "kind": "pretrain", "model": "tiny", "data": "x", "lr": 1}]}))
    with pytest.raises(HessGPTError, match="unknown key 'lr'"):
        Pipeline(str(bad))
    r = run_cli("pipeline", str(bad))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1


def test_shipped_recipes_parse(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for name in ("tiny-cpu.yaml", "hessgpt-dual.yaml"):
        p = Pipeline(os.path.join(root, "recipes", name), workdir=str(tmp_path / name))
        assert p.final and all(s.kind for s in p.stages)


def test_flags():
    assert _flags({"batch-size": 4, "compile": True, "resume": False, "set": ["a=1", "b=2"], "lr": 1e-3}) == \
        ["--batch-size", "4", "--compile", "--set", "a=1", "--set", "b=2", "--lr", "0.001"]
