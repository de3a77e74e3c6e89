"""`hessgpt quickstart --smoke --no-serve` end to end (recipes/smoke-cpu.yaml): every stage's output exists and
loads, the eval JSONs and the report are written, and a second run skips everything."""

import json
import os

import pytest

import hessgpt
from hessgpt import quickstart


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = tmp_path_factory.mktemp("quickstart")
    assert quickstart.main(["--smoke", "--no-serve", "--out", str(out)]) == 0
    return out


def test_every_stage_output_loads(run_dir):
    record = json.loads((run_dir / "pipeline.json").read_text())
    # the chain: model 1 pretrain -> SFT LoRA -> merge -> routing SFT (+ LoRA) -> merge; model 2
    # pretrain on code -> SFT on the refinement pairs -> merge
    stages = ["routing", "refine-pairs", "chat-data", "tokenizer", "model1-init", "model1-mid-shards", "model1-pretrain",
              "model1-chat-lora", "model1-chat", "model1-routing", "model1-routing-lora", "model1-merged",
              "code-shards", "model2-init", "model2-pretrain", "model2-code-lora", "model2"]
    assert set(stages) <= set(record["stages"])
    assert (run_dir / "routing" / "train.jsonl").stat().st_size > 0
    pairs = [json.loads(line) for line in (run_dir / "refine-pairs" / "train.jsonl").read_text().splitlines()]
    assert pairs and all(r["split"] == "train" and r["messages"][-1]["code"] for r in pairs)
    val = [json.loads(line) for line in (run_dir / "routing" / "val.jsonl").read_text().splitlines()]
    assert val and all("messages" in r for r in val)
    assert (run_dir / "tokenizer" / "tokenizer.json").exists()
    assert json.loads((run_dir / "code-shards" / "manifest.json").read_text())["tokens"]["val"] > 0
    assert json.loads((run_dir / "model1-mid-shards" / "manifest.json").read_text())["tokens"]["train"] > 0
    assert json.loads((run_dir / "model1-pretrain" / "meta.json").read_text())["stage"] == "pretrain"
    for lora in ("model1-chat-lora", "model1-routing-lora", "model2-code-lora"):
        assert (run_dir / lora / "adapter_model.safetensors").exists()
    for name in ("model1-init", "model1-pretrain", "model1-chat", "model1-routing", "model1-merged", "model2-pretrain", "model2", "model1"):
        model, tok = hessgpt.load(str(run_dir / name))
        ids = tok.encode("Calcule 15 * 23")
        assert model(__import__("torch").tensor([ids])).shape == (1, len(ids), model.config.vocab_size)
    # model1 is the merged routing model, not the random init
    assert os.path.realpath(run_dir / "model1") == os.path.realpath(run_dir / "model1-merged")


def test_evals_and_report(run_dir):
    tools = json.loads((run_dir / "model1" / "eval" / "tools.json").read_text())   # the frozen test split
    assert tools["overall"]["n"] == quickstart.SMOKE.tools_limit
    assert "routing" in tools["overall"] and tools["per_lang"]
    assert set(tools["baselines"]) == {"constant", "regex"}
    m2 = tools["model2"]   # model 2's effect, with and without it on the same items
    assert m2["n"] == quickstart.SMOKE.tools_limit and m2["calls"] >= m2["changed"] >= m2["fixed"]
    assert {"answer_correct_with", "answer_correct_without", "executable_with", "executable_without", "broke"} <= set(m2)
    dev = json.loads((run_dir / "model1" / "eval" / "tools-dev.json").read_text())
    assert dev["overall"]["n"] == quickstart.SMOKE.tools_limit
    ood = json.loads((run_dir / "model1" / "eval" / "tools-ood.json").read_text())
    assert set(ood["per_data"]) == {"tools_ood_fr", "tools_ood_en"}
    assert all(t["overall"]["n"] == quickstart.SMOKE.ood_limit for t in ood["per_data"].values())
    assert ood["overlap"]["n_items"] == 2 * quickstart.SMOKE.ood_limit and "clean" in ood["overlap"]
    conv = ood["conversations"]["tools_ood_multiturn"]
    assert conv["overall"]["conversations"] == quickstart.SMOKE.ood_limit and conv["overall"]["turns"] >= 2 * quickstart.SMOKE.ood_limit
    assert set(conv["baselines"]) == {"constant", "regex"}
    gsm = json.loads((run_dir / "model1" / "eval" / "tools-gsm8k.json").read_text())
    assert gsm["overall"]["n"] == 2 * quickstart.SMOKE.gsm8k_limit   # ran to the end (too-long items are counted skips)
    assert set(gsm["per_lang"]) == {"fr", "en"}
    bench = json.loads((run_dir / "model1" / "eval" / "bench.json").read_text())
    assert set(bench["per_lang"]) == {"fr", "en"}  # the subset takes both languages
    for m in ("model1", "model2"):
        ppl = json.loads((run_dir / m / "eval" / "ppl.json").read_text())
        assert ppl["tokens"] > 0 and ppl["ppl"] > 1
    for f in ("report.md", "report.json", "loss.png", "bench.png"):
        assert (run_dir / "report" / f).stat().st_size > 0
    summary = json.loads((run_dir / "quickstart.json").read_text())
    assert set(summary["evals"]) == {"eval tools test", "eval tools dev", "eval tools ood", "eval tools gsm8k",
                                     "eval bench", "eval ppl model1", "eval ppl model2"}
    assert all(summary["stages"][s] is not None for s in summary["stages"])
    assert summary["totals"]["train_s"] > 0


def test_rerun_skips_finished_work(run_dir, capsys):
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "model1" / "eval").glob("*.json")}
    assert quickstart.main(["--smoke", "--no-serve", "--out", str(run_dir)]) == 0
    text = capsys.readouterr().out
    assert text.count("already done, skipped") == 17   # every pipeline stage
    assert text.count("already done (") == 7
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_model2_is_served_only_when_it_fixed_more_than_it_broke_on_dev(tmp_path):
    ev = tmp_path / "model1" / "eval"
    ev.mkdir(parents=True)
    assert quickstart.model2_pays(tmp_path)[0] is False          # not measured: off
    block = {"calls": 9, "changed": 3, "fixed": 1, "broke": 1, "answer_correct_with": 0.5, "answer_correct_without": 0.5}
    for fixed, on in ((1, False), (2, True), (0, False)):
        (ev / "tools-dev.json").write_text(json.dumps({"model2": {**block, "fixed": fixed}}))
        use, why = quickstart.model2_pays(tmp_path)
        assert use is on and f"fixed {fixed}, broke 1" in why
