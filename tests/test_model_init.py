"""`hessgpt model init PRESET --tokenizer DIR --out DIR`: a random-weight checkpoint in the standard folder format."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

import hessgpt
from hessgpt.cli import main


def test_model_init_writes_a_loadable_checkpoint(tokenizer_dir, tmp_path, capsys):
    out = str(tmp_path / "tiny")
    assert main(["model", "init", "tiny", "--tokenizer", tokenizer_dir, "--out", out, "--set", "context_length=128"]) == 0
    line = capsys.readouterr().out.strip()
    model, tok = hessgpt.load(out)
    assert model.config.context_length == 128 and model.config.vocab_size == tok.vocab_size
    assert line == (f"wrote {out}: tiny, {model.config.num_params():,} parameters (vocab {tok.vocab_size}, "
                    f"context 128), random weights (seed 0)")
    meta = json.load(open(os.path.join(out, "meta.json")))
    assert meta["format"] == "hessgpt-checkpoint" and meta["stage"] == "init" and meta["seed"] == 0
    logits = model(torch.tensor([tok.encode("Bonjour")]))
    assert logits.shape == (1, len(tok.encode("Bonjour")), tok.vocab_size) and torch.isfinite(logits).all()


def test_model_init_seed_decides_the_weights(tokenizer_dir, tmp_path, capsys):
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert main(["model", "init", "tiny", "--tokenizer", tokenizer_dir, "--out", str(tmp_path / name), "--seed", seed]) == 0
    a, b, c = (load_file(str(tmp_path / n / "model.safetensors")) for n in "abc")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])


def test_model_init_errors(tokenizer_dir, tmp_path, capsys):
    assert main(["model", "init", "nope", "--tokenizer", tokenizer_dir, "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("hessgpt model: error: unknown model preset 'nope' "
                           "(presets: tiny, small, hessgpt-51m, model2-0.3b, model1-0.5b)")
    with pytest.raises(SystemExit) as e:  # argparse: --tokenizer is required
        main(["model", "init", "tiny", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    assert not os.path.exists(tmp_path / "x")


def test_model_help_lists_init(capsys):
    assert main(["model", "--help"]) == 0
    assert "hessgpt model init PRESET --tokenizer DIR --out DIR" in capsys.readouterr().out
    assert main(["model", "presets"]) == 0
    assert capsys.readouterr().out.startswith("tiny ")
