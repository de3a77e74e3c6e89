import os

import pytest
import torch

from hessgpt import checkpoint, loader
from hessgpt.config import ModelConfig
from hessgpt.engine import SamplingParams, sampling_params
from hessgpt.errors import HessGPTError
from hessgpt.model import Transformer


def test_save_load_round_trip(tiny_ckpt, tokenizer):
    model, tok = checkpoint.load(tiny_ckpt)
    assert tok.hash == tokenizer.hash
    meta = checkpoint.read_meta(tiny_ckpt)
    assert meta["format"] == "hessgpt-checkpoint" and meta["stage"] == "test" and meta["tokenizer_hash"] == tokenizer.hash
    for name in ("config.json", "model.safetensors", "tokenizer.json", "meta.json"):
        assert os.path.exists(os.path.join(tiny_ckpt, name))
    again, _ = checkpoint.load(tiny_ckpt)
    ids = torch.randint(0, tok.vocab_size, (1, 16))
    with torch.no_grad():
        assert torch.equal(model(ids), again(ids))


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, tokenizer, monkeypatch):
    cfg = ModelConfig.preset("tiny", vocab_size=tokenizer.vocab_size)
    path = str(tmp_path / "ck")
    first = Transformer(cfg).init_weights(1)
    checkpoint.save(path, first, tokenizer, meta={"step": 1})

    def crash(*a, **k):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(checkpoint, "save_file", crash)   # safetensors' writer, as checkpoint.py calls it
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, Transformer(cfg).init_weights(2), tokenizer, meta={"step": 2})
    monkeypatch.undo()
    model, _ = checkpoint.load(path)
    assert checkpoint.read_meta(path)["step"] == 1
    assert torch.equal(model.model.embed_tokens.weight, first.model.embed_tokens.weight)
    assert [n for n in os.listdir(tmp_path) if n != "ck"] == []  # no temp folders left behind


def test_crash_between_renames_is_recovered(tmp_path, tokenizer):
    cfg = ModelConfig.preset("tiny", vocab_size=tokenizer.vocab_size)
    path = tmp_path / "ck"
    checkpoint.save(str(path), Transformer(cfg).init_weights(1), tokenizer, meta={"step": 7})
    os.rename(path, str(path) + ".old-123-456")  # the state a crash after the first rename leaves
    model, _ = checkpoint.load(str(path))
    assert checkpoint.read_meta(str(path))["step"] == 7


def test_legacy_pt_checkpoint_loads(tmp_path):
    cfg = ModelConfig.preset("tiny", vocab_size=500)
    m = Transformer(cfg).init_weights(3)
    blob = {"model": {"_orig_mod." + k: v for k, v in m.state_dict().items()},
            "config": {"vocab_size": 500, "d_model": 128, "n_layer": 4, "n_head": 4, "n_kv_heads": 2, "d_ff": 384, "max_seq_len": 256}}
    torch.save(blob, tmp_path / "HessGpt_pretrain.pt")
    loaded, tok = loader.load(str(tmp_path / "HessGpt_pretrain.pt"))
    ids = torch.randint(0, 500, (1, 10))
    with torch.no_grad():
        assert torch.equal(loaded(ids), m.eval()(ids))
    assert loader.load_config(str(tmp_path / "HessGpt_pretrain.pt")) == cfg


def test_checkpoint_load_is_its_own_folder_only(tmp_path):
    """Other kinds of path are loader.py's: checkpoint.load names the path and where to go instead."""
    f = tmp_path / "x.pt"
    f.write_bytes(b"")
    with pytest.raises(HessGPTError, match=r"x\.pt.*not a HessGPT checkpoint folder.*hessgpt\.load"):
        checkpoint.load(str(f))
    with pytest.raises(HessGPTError, match="is not a HessGPT checkpoint folder, a .pt file"):
        loader.load(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "mistral"}')
    with pytest.raises(HessGPTError, match="not a HessGPT checkpoint folder.*Hugging Face"):
        checkpoint.load(str(tmp_path))


def test_mismatched_weights_name_the_keys(tmp_path, tokenizer):
    from safetensors.torch import save_file

    path = tmp_path / "bad"
    checkpoint.save(str(path), Transformer(ModelConfig.preset("tiny", vocab_size=tokenizer.vocab_size)), tokenizer)
    sd = Transformer(ModelConfig.preset("tiny", vocab_size=tokenizer.vocab_size)).state_dict()
    sd["model.layers.0.self_attn.qq_proj.weight"] = sd.pop("model.layers.0.self_attn.q_proj.weight")
    sd.pop("lm_head.weight")
    save_file(sd, str(path / "model.safetensors"))
    with pytest.raises(HessGPTError, match="qq_proj"):
        checkpoint.load(str(path))


def test_vocab_mismatch_is_an_error(tmp_path, tokenizer):
    small = Transformer(ModelConfig.preset("tiny", vocab_size=tokenizer.vocab_size - 10))
    checkpoint.save(str(tmp_path / "ck"), small, tokenizer)
    with pytest.raises(HessGPTError, match="vocab mismatch"):
        checkpoint.load(str(tmp_path / "ck"))


def test_int8_checkpoint_loads_through_hessgpt_load(tiny_ckpt, tmp_path):
    import subprocess
    import sys

    import hessgpt
    from hessgpt.engine import Engine, SamplingParams

    out = tmp_path / "int8"
    r = subprocess.run([sys.executable, "-m", "hessgpt", "quantize", tiny_ckpt, "--int8", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    model, tok = hessgpt.load(str(out))
    assert hasattr(model, "int8_state") and tok is not None
    ids = tok.encode("Bonjour")
    assert len(Engine(model, tok).generate(ids, SamplingParams(max_new_tokens=5, stop_token_ids=[-1]))) == 5


# ---- generation_config.json ------------------------------------------------------------------------


def _tiny(tokenizer, seed=1):
    return Transformer(ModelConfig.preset("tiny", vocab_size=tokenizer.vocab_size)).init_weights(seed)


def _write_gen(path, d):
    import json

    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump(d, f)


def test_generation_config_written_greedy_and_loaded(tiny_ckpt):
    import json

    with open(os.path.join(tiny_ckpt, "generation_config.json")) as f:
        saved = json.load(f)
    assert saved == checkpoint.DEFAULT_GENERATION_CONFIG and saved["temperature"] == 0.0
    model, _ = checkpoint.load(tiny_ckpt)
    assert model.generation_config == saved
    p = sampling_params(model.generation_config)
    assert (p.temperature, p.top_k, p.top_p, p.max_new_tokens) == (0.0, 0, 1.0, 256)


def test_sampling_params_defaults_are_the_default_generation_config():
    """engine.sampling_params fills the keys a folder does not set from SamplingParams' own defaults."""
    d = SamplingParams()
    assert {k: getattr(d, k) for k in checkpoint.DEFAULT_GENERATION_CONFIG} == {**checkpoint.DEFAULT_GENERATION_CONFIG, "top_k": 0}
    assert sampling_params({"top_k": None, "eos_token_id": 2}).top_k == 0


def test_generation_config_explicit_missing_and_overrides(tmp_path, tokenizer):
    path = str(tmp_path / "ck")
    checkpoint.save(path, _tiny(tokenizer), tokenizer, generation_config={"temperature": 0.7, "top_k": 40})
    model, _ = checkpoint.load(path)
    assert model.generation_config["temperature"] == 0.7 and model.generation_config["top_k"] == 40
    assert model.generation_config["top_p"] == 1.0  # unset keys get the defaults on save
    p = sampling_params(model.generation_config, temperature=None, max_new_tokens=9)
    assert (p.temperature, p.top_k, p.max_new_tokens) == (0.7, 40, 9)  # None = keep the checkpoint's
    os.remove(os.path.join(path, "generation_config.json"))  # an older checkpoint: today's defaults
    model, _ = checkpoint.load(path)
    assert model.generation_config == {} and sampling_params({}).temperature == 0.0


@pytest.mark.parametrize("key, value", [("temperature", -1), ("temperature", "hot"), ("top_p", 0), ("top_k", 2.5),
                                        ("max_new_tokens", 0), ("repetition_penalty", 0), ("do_sample", "yes")])
def test_generation_config_bad_value_names_key_and_value(tmp_path, tokenizer, key, value):
    import json

    path = str(tmp_path / "ck")
    checkpoint.save(path, _tiny(tokenizer), tokenizer)
    _write_gen(path, {**checkpoint.DEFAULT_GENERATION_CONFIG, key: value})
    with pytest.raises(HessGPTError) as e:
        checkpoint.load(path)
    msg = str(e.value)
    assert "\n" not in msg and "generation_config.json" in msg and f"{key} = {json.dumps(value)}" in msg


def test_generation_config_unreadable_json(tmp_path, tokenizer):
    path = str(tmp_path / "ck")
    checkpoint.save(path, _tiny(tokenizer), tokenizer)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        f.write("{temperature: 0")
    with pytest.raises(HessGPTError, match="generation_config.json: not valid JSON"):
        checkpoint.load(path)


def test_child_checkpoint_copies_its_parents_generation_config(tmp_path, tokenizer):
    """sft and merge save with meta.parent = the base: the base's recommended sampling is carried over."""
    base = str(tmp_path / "base")
    checkpoint.save(base, _tiny(tokenizer), tokenizer, generation_config={"temperature": 0.3, "max_new_tokens": 99})
    child = str(tmp_path / "child")
    checkpoint.save(child, _tiny(tokenizer, 2), tokenizer, meta={"stage": "sft", "parent": base})
    assert checkpoint.read_generation_config(child)["temperature"] == 0.3
    model, _ = checkpoint.load(child)  # a loaded model carries its config into the next save (merge)
    again = str(tmp_path / "again")
    checkpoint.save(again, model, tokenizer, meta={"stage": "merge"})
    assert checkpoint.read_generation_config(again) == checkpoint.read_generation_config(child)
    assert checkpoint.read_generation_config(again)["max_new_tokens"] == 99


def test_hf_folder_generation_config_has_hf_meaning(tmp_path):
    import json

    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    _write_gen(str(d), {"bos_token_id": 1, "eos_token_id": 2, "temperature": 0.6, "top_p": 0.9})
    assert checkpoint.read_generation_config(str(d)) == {"temperature": 0.0, "top_p": 0.9}  # no do_sample: greedy
    _write_gen(str(d), {"do_sample": True, "temperature": 0.6, "top_p": 0.9, "max_length": 4096})
    assert checkpoint.read_generation_config(str(d)) == {"temperature": 0.6, "top_p": 0.9, "top_k": 50}
    assert checkpoint.read_generation_config(str(tmp_path)) == {}
