import os

import pytest
import torch

from hessgpt import checkpoint
from hessgpt.config import ModelConfig
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

    import safetensors.torch

    def crash(*a, **k):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
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
    loaded, tok = checkpoint.load(str(tmp_path / "HessGpt_pretrain.pt"))
    ids = torch.randint(0, 500, (1, 10))
    with torch.no_grad():
        assert torch.equal(loaded(ids), m.eval()(ids))


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
