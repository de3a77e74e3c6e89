"""int8 weight-only quantization: the scheme, the checkpoint format and CLI, and quality on a trained tiny model
(greedy agreement with fp32 on the first 32 tokens, perplexity within 1% on held-out text)."""

import json
import os

import pytest
import torch

from hessgpt import checkpoint
from hessgpt.config import ModelConfig
from hessgpt.engine import Engine, SamplingParams
from hessgpt.errors import HessGPTError
from hessgpt.model import Transformer
from hessgpt.quantize import (cli_main, dequantize_weight, greedy_agreement, is_quantized, load_quantized, perplexity,
                              quantize_engine, quantize_weight)

from .conftest import TEXT_FILES


def test_per_channel_scheme_is_exact_and_idempotent():
    torch.manual_seed(0)
    w = torch.randn(64, 96) * torch.logspace(-3, 1, 64)[:, None]       # rows of very different magnitude
    q, s = quantize_weight(w)
    assert q.dtype == torch.int8 and s.shape == (64,)
    assert torch.equal(s, s.to(torch.bfloat16).float())                 # bf16-exact scales
    assert q.abs().max() <= 127 and (q.abs().amax(1) >= 126).all()     # each row uses its full range
    err = (dequantize_weight(q, s) - w).abs()
    assert (err <= s[:, None] * 0.5 + 1e-9).all()                       # rounding error at most half a step
    q2, s2 = quantize_weight(dequantize_weight(q, s))
    assert torch.equal(q, q2) and torch.equal(s, s2)                    # dequantize -> quantize is the identity


@pytest.fixture(scope="module")
def trained(tokenizer):
    """A tiny model trained for a few hundred steps on the fixture text (~10 s on one core)."""
    text = "\n\n".join(open(p, encoding="utf-8").read() for p in TEXT_FILES)
    ids = tokenizer.encode(text)
    split = int(len(ids) * 0.9)
    train, val = torch.tensor(ids[:split]), ids[split:]
    cfg = ModelConfig(vocab_size=tokenizer.vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=192,
                      context_length=128, tie_embeddings=False)
    torch.manual_seed(0)
    model = Transformer(cfg).init_weights(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    T, B = 48, 16
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny matmuls: one thread is faster and immune to a busy machine
    try:
        for step in range(300):
            starts = torch.randint(0, len(train) - T - 1, (B,))
            x = torch.stack([train[s:s + T] for s in starts])
            y = torch.stack([train[s + 1:s + T + 1] for s in starts])
            loss = torch.nn.functional.cross_entropy(model(x).view(-1, cfg.vocab_size), y.view(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    assert loss.item() < 5.0, f"the tiny model did not train (loss {loss.item():.2f})"
    return model, val


def test_int8_perplexity_within_1_percent_and_greedy_agreement(trained, tokenizer):
    model, val = trained
    fp, q8 = Engine(model, tokenizer), Engine(model, tokenizer, int8=True)
    ppl_fp, ppl_q8 = perplexity(fp, val[:1024]), perplexity(q8, val[:1024])
    rel = abs(ppl_q8 - ppl_fp) / ppl_fp
    print(f"\nperplexity fp32 {ppl_fp:.3f} int8 {ppl_q8:.3f} ({rel:+.3%})")
    assert ppl_fp < 400, "the model is not trained (uniform = 1024); the comparison would be meaningless"
    assert rel < 0.01
    prompts = [tokenizer.encode(s) for s in ["Le chat", "The city of", "Il était une fois", "In the morning",
                                             "La France est", "Our company", "Les enfants", "This product"]]
    agree = greedy_agreement(model, prompts, n_tokens=32)
    print(f"greedy agreement (first 32 tokens): {agree}")
    assert agree["prompts"] == 8
    assert agree["identical"] >= 0.5 and agree["mean_common_prefix"] >= 16


def test_int8_engine_logits_close_to_fp32(trained, tokenizer):
    model, val = trained
    prompt = val[:40]
    a = Engine(model, tokenizer).session(prompt, SamplingParams())
    b = Engine(model, tokenizer, int8=True).session(prompt, SamplingParams())
    rel = (a.logits - b.logits).abs().max() / a.logits.abs().max()
    assert 0 < rel < 0.05          # int8 really ran (not bit-identical) and stays close


def test_quantize_cli_checkpoint_format_and_load(trained, tokenizer, tmp_path, capsys):
    model, _ = trained
    src, out = str(tmp_path / "fp32"), str(tmp_path / "int8")
    checkpoint.save(src, model, tokenizer, generation_config={"temperature": 0.3, "top_p": 0.9})
    assert cli_main([src, "--int8", "--out", out]) == 0
    assert "int8 tensors" in capsys.readouterr().out
    # the int8 checkpoint recommends the fp32 one's sampling
    assert checkpoint.read_generation_config(out) == checkpoint.full_generation_config({"temperature": 0.3, "top_p": 0.9})
    assert is_quantized(out) and not is_quantized(src)
    from safetensors.torch import load_file

    sd = load_file(os.path.join(out, "model.safetensors"))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert sd[name].dtype == torch.int8 and sd[name + ".scale"].shape == (sd[name].shape[0],)
    assert sd["lm_head.weight"].dtype == torch.int8
    assert sd["model.embed_tokens.weight"].dtype == torch.float32 and sd["model.norm.weight"].dtype == torch.float32
    meta = json.load(open(os.path.join(out, "meta.json")))
    assert meta["quantization"]["method"] == "int8-weight-only" and name in meta["quantization"]["tensors"]
    w_bytes = os.path.getsize(os.path.join(out, "model.safetensors"))
    assert w_bytes < 0.6 * os.path.getsize(os.path.join(src, "model.safetensors"))

    qmodel, qtok = load_quantized(out)
    assert qtok is not None and qtok.hash == tokenizer.hash
    engine = Engine(qmodel, qtok)
    assert engine.int8                                     # a quantized checkpoint decodes in int8 by default
    prompt = tokenizer.encode("Le chat")
    p = SamplingParams(max_new_tokens=24, stop_token_ids=[-1])
    assert engine.generate(prompt, p) == Engine(model, tokenizer, int8=True).generate(prompt, p)
    again = Engine(model, tokenizer)
    quantize_engine(again)                      # the module-level name, kept for callers
    assert again.int8 and again.generate(prompt, p) == engine.generate(prompt, p)
    with pytest.raises(HessGPTError, match="already"):
        cli_main([out, "--int8", "--out", str(tmp_path / "again")])
    with pytest.raises(HessGPTError, match="not an int8"):
        load_quantized(src)


def test_quantize_engine_in_place(trained, tokenizer):
    model, _ = trained
    engine = Engine(model, tokenizer)
    prompt = tokenizer.encode("The city of")
    p = SamplingParams(max_new_tokens=16, stop_token_ids=[-1])
    engine.generate(prompt, p)
    engine.quantize_int8()
    assert engine.int8 and engine.fast.head.kind == "int8"
    assert engine.generate(prompt, p) == Engine(model, tokenizer, int8=True).generate(prompt, p)


# ---- int4: llama.cpp's Q4_0 blocks (kernels/int4.py) ----------------------------------------------------------


def test_int4_scheme_is_gguf_q4_0_byte_for_byte_and_idempotent():
    gguf = pytest.importorskip("gguf")
    import numpy as np

    from hessgpt.kernels import int4

    torch.manual_seed(0)
    w = torch.randn(48, 160) * torch.logspace(-3, 1, 48)[:, None]
    w[0, :32] = 0.0                                                     # an all-zero block: d = 0, every q = 8
    q, d = int4.quantize_weight(w)
    assert q.dtype == torch.uint8 and q.shape == (48, 80) and d.shape == (48, 5)
    raw = gguf.quants.quantize(w.numpy(), gguf.GGMLQuantizationType.Q4_0).reshape(48, 5, 18)
    assert np.array_equal(raw[..., 2:].reshape(48, 80), q.numpy())
    assert np.array_equal(raw[..., :2].copy().view(np.float16).astype(np.float32)[..., 0], d.numpy())
    deq = int4.dequantize_weight(q, d)
    assert torch.equal(deq, torch.from_numpy(gguf.quants.dequantize(raw.reshape(48, 90), gguf.GGMLQuantizationType.Q4_0)))
    assert (deq[0, :32] == 0).all()
    step = d.abs().repeat_interleave(32, dim=1)
    assert ((deq - w).abs() <= step * 1.01 + 1e-6).all()                # within one step (the clamp at +7 d)
    q2, d2 = int4.quantize_weight(deq)
    assert torch.equal(q, q2) and torch.equal(d, d2)                    # dequantize -> quantize is the identity
    with pytest.raises(ValueError, match="multiple of 32"):
        int4.quantize_weight(torch.randn(4, 40))


def test_int4_engine_equals_the_dequantized_model_and_stays_close(trained, tokenizer):
    """Engine(int4=True) computes the fp32 model whose linear weights are the dequantized Q4_0 ones (up to fp32
    rounding; head_dim 16: the folded softmax scale 1/4 is exact), on the native step and the batched rows."""
    import copy

    from hessgpt.kernels import int4

    model, val = trained
    deq = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in deq.named_parameters():
            if p.ndim == 2 and "embed" not in name:
                p.copy_(int4.dequantize_weight(*int4.quantize_weight(p)))
    prompt = val[:40]
    a = Engine(deq, tokenizer).session(prompt, SamplingParams())
    b = Engine(model, tokenizer, int4=True).session(prompt, SamplingParams())
    assert torch.allclose(a.logits, b.logits, atol=1e-4 * a.logits.abs().max().item())
    c = Engine(model, tokenizer).session(prompt, SamplingParams())
    rel = (b.logits - c.logits).abs().max() / c.logits.abs().max()
    assert 0 < rel < 0.3                                               # int4 really ran, and is not noise


def test_int4_perplexity_and_greedy_agreement(trained, tokenizer):
    model, val = trained
    fp, q4 = Engine(model, tokenizer), Engine(model, tokenizer, int4=True)
    ppl_fp, ppl_q4 = perplexity(fp, val[:1024]), perplexity(q4, val[:1024])
    rel = (ppl_q4 - ppl_fp) / ppl_fp
    print(f"\nperplexity fp32 {ppl_fp:.3f} int4 {ppl_q4:.3f} ({rel:+.3%})")
    assert ppl_fp < 400
    assert abs(rel) < 0.03                                             # measured +0.7% here
    prompts = [tokenizer.encode(s) for s in ["Le chat", "The city of", "Il était une fois", "In the morning",
                                             "La France est", "Our company", "Les enfants", "This product"]]
    agree = greedy_agreement(model, prompts, n_tokens=32, bits=4)
    print(f"greedy agreement int4 (first 32 tokens): {agree}")
    assert agree["mean_common_prefix"] >= 4


def test_quantize_cli_int4_checkpoint_format_and_load(trained, tokenizer, tmp_path, capsys):
    from safetensors.torch import load_file

    model, _ = trained
    src, out = str(tmp_path / "fp32"), str(tmp_path / "int4")
    checkpoint.save(src, model, tokenizer)
    assert cli_main([src, "--int4", "--out", out]) == 0
    assert "int4 tensors" in capsys.readouterr().out
    sd = load_file(os.path.join(out, "model.safetensors"))
    name = "model.layers.0.mlp.down_proj.weight"
    assert sd[name].dtype == torch.uint8 and sd[name].shape == (64, 96) and sd[name + ".scale"].shape == (64, 6)
    assert sd["lm_head.weight"].dtype == torch.uint8 and sd["model.embed_tokens.weight"].dtype == torch.float32
    meta = json.load(open(os.path.join(out, "meta.json")))
    assert meta["quantization"]["method"] == "int4-q4_0-weight-only"
    assert os.path.getsize(os.path.join(out, "model.safetensors")) < os.path.getsize(os.path.join(src, "model.safetensors"))
    qmodel, _ = load_quantized(out)
    engine = Engine(qmodel, tokenizer)
    assert engine.int4 and not engine.int8 and engine.fast.head.kind == "int4"
    prompt = tokenizer.encode("Le chat")
    p = SamplingParams(max_new_tokens=24, stop_token_ids=[-1])
    assert engine.generate(prompt, p) == Engine(model, tokenizer, int4=True).generate(prompt, p)
    with pytest.raises(SystemExit):
        cli_main([src, "--int4", "--int8", "--out", str(tmp_path / "both")])
