"""LoRA: HessGPT's adapter equals PEFT's on the HF export, merging is exact, bad adapters are refused."""

import json
import os

import pytest
import torch

from hessgpt import checkpoint
from hessgpt.train import lora as L
from hessgpt.train.merge import merge

from .conftest import run_cli


def lora_model(base: str, targets=L.ALL_TARGETS, seed: int = 0):
    """The base with random (non-zero) LoRA weights on `targets`, in eval mode."""
    model, tok = checkpoint.load(base)
    torch.manual_seed(seed)
    L.apply_lora(model, L.LoRAConfig(r=4, alpha=8, dropout=0.1, targets=targets))
    with torch.no_grad():
        for m in L.lora_modules(model).values():
            m.lora_B.weight.normal_(0, 0.05)  # B starts at zero; make the update visible
    return model.eval(), tok


def save_adapter(model, tok, base: str, out: str, targets=L.ALL_TARGETS):
    cfg = L.LoRAConfig(r=4, alpha=8, dropout=0.1, targets=targets)
    L.write_adapter(out, model, cfg, base, L.weights_hash(base), tok, meta={"stage": "sft-lora", "parent": base})


def ids_for(tok, vocab: int):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab, (2, 24), generator=g)


def test_lora_starts_as_identity_and_only_adapters_train(small_base):
    base, _ = checkpoint.load(small_base)
    model, _ = checkpoint.load(small_base)
    wrapped = L.apply_lora(model, L.LoRAConfig(r=4, alpha=8, targets=("q_proj", "down_proj")))
    assert len(wrapped) == 2 * base.config.n_layers
    x = ids_for(None, base.config.vocab_size)
    assert torch.equal(model.eval()(x), base.eval()(x))  # B = 0: the adapter adds nothing yet
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert "model.layers.0.self_attn.q_proj.weight" in model.state_dict()  # base names unchanged


def test_merge_equals_base_plus_adapter(small_base, tmp_path):
    model, tok = lora_model(small_base)
    adapter = str(tmp_path / "adapter")
    save_adapter(model, tok, small_base, adapter)
    merge(small_base, adapter, str(tmp_path / "merged"))
    merged, _ = checkpoint.load(str(tmp_path / "merged"))
    x = ids_for(tok, merged.config.vocab_size)
    with torch.no_grad():
        want, got = model(x), merged(x)
    assert (want - got).abs().max().item() < 1e-5
    base_logits = checkpoint.load(small_base)[0](x)
    assert (base_logits - got).abs().max().item() > 1e-3  # the merge changed something
    meta = checkpoint.read_meta(str(tmp_path / "merged"))
    assert meta["parent"] == os.path.abspath(small_base) and meta["stage"] == "merge"


def test_peft_applies_hessgpt_adapter_to_hf_export(small_base, tmp_path):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from hessgpt.convert.export import to_hf

    model, tok = lora_model(small_base)
    adapter = str(tmp_path / "adapter")
    save_adapter(model, tok, small_base, adapter)
    with open(os.path.join(adapter, "adapter_config.json")) as f:
        cfg = json.load(f)
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 8
    hf_dir = str(tmp_path / "hf")
    to_hf(small_base, hf_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    pm = peft.PeftModel.from_pretrained(hf, adapter).eval()
    x = ids_for(tok, model.config.vocab_size)
    with torch.no_grad():
        want = model(x)
        got = pm(input_ids=x).logits
    assert (want - got).abs().max().item() < 1e-5
    # and peft's own merge agrees with ours
    merged_hf = pm.merge_and_unload()
    with torch.no_grad():
        assert (merged_hf(input_ids=x).logits - want).abs().max().item() < 1e-5


def test_merge_peft_adapter_onto_hf_base(small_base, tmp_path):
    transformers = pytest.importorskip("transformers")
    from hessgpt.convert.export import to_hf

    hf_dir = str(tmp_path / "hf")
    to_hf(small_base, hf_dir)
    model, tok = lora_model(small_base, targets=("v_proj", "up_proj"))
    adapter = str(tmp_path / "adapter")
    cfg = L.LoRAConfig(r=4, alpha=8, dropout=0.1, targets=("v_proj", "up_proj"))
    L.write_adapter(adapter, model, cfg, hf_dir, L.weights_hash(hf_dir), tok)
    assert merge(hf_dir, adapter, str(tmp_path / "merged_hf")) == "hf"
    assert merge(hf_dir, adapter, str(tmp_path / "merged_ckpt"), "hessgpt") == "hessgpt"
    x = ids_for(tok, model.config.vocab_size)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged_hf"), dtype=torch.float32).eval()
    ours, _ = checkpoint.load(str(tmp_path / "merged_ckpt"))
    with torch.no_grad():
        want = model(x)
        assert (hf(input_ids=x).logits - want).abs().max().item() < 1e-5
        assert (ours(x) - want).abs().max().item() < 1e-5


def test_adapter_for_another_base_is_refused(small_base, tiny_ckpt, tmp_path):
    model, tok = lora_model(small_base)
    adapter = str(tmp_path / "adapter")
    save_adapter(model, tok, small_base, adapter)
    r = run_cli("merge", "--base", tiny_ckpt, "--lora", adapter, "--out", tmp_path / "m")
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "trained on base" in lines[0] and "hash" in lines[0], r.stderr
    assert not (tmp_path / "m").exists()


def test_unknown_target_module_is_one_line_error(small_base, sft_dir, tmp_path):
    r = run_cli("sft", "--base", small_base, "--data", sft_dir, "--out", tmp_path / "o", "--lora", "--targets", "q_proj,qkv_proj")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "'qkv_proj'" in lines[0] and "gate_proj" in lines[0], r.stderr
