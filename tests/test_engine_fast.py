"""The engine's fast decode path (inference.InferenceModel) against the training model and the naive reference."""

import pytest
import torch

from hessgpt import checkpoint
from hessgpt.config import ModelConfig
from hessgpt.engine import Engine, SamplingParams, naive_generate
from hessgpt.inference import InferenceModel, rope_interleave_perm
from hessgpt.model import Transformer

CONFIGS = [
    dict(vocab_size=300, dim=96, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=160, rope_theta=50000.0, tie_embeddings=False),
    dict(vocab_size=300, dim=120, n_layers=2, n_heads=3, n_kv_heads=3, hidden_dim=200, tie_embeddings=True),   # MHA, hd 40
    dict(vocab_size=300, dim=64, n_layers=3, n_heads=8, n_kv_heads=1, hidden_dim=96, tie_embeddings=False),   # MQA, hd 8
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_fused_view_matches_training_forward_prefill_chunks_and_decode(cfg):
    model = Transformer(ModelConfig(context_length=64, **cfg)).init_weights(4).eval()
    ids = torch.randint(0, 300, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids)
    fast = InferenceModel(model)
    fast.setup_cache(2, 64)
    parts = [fast.forward(ids[:, :9], 0, all_logits=True), fast.forward(ids[:, 9:16], 9, all_logits=True)]
    parts += [fast.forward(ids[:, i:i + 1], i, all_logits=True) for i in range(16, 30)]
    assert (torch.cat(parts, 1) - full).abs().max() < 2e-5
    fast.setup_cache(2, 64)
    assert (fast.forward(ids, 0) - full[:, -1]).abs().max() < 2e-5          # default: last position only


def test_rope_permutation_pairs_the_rotate_half_dims():
    perm = rope_interleave_perm(2, 8)
    assert perm.tolist() == [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]


def test_engine_uses_the_fast_path_and_matches_the_model_cache_path(tiny_ckpt):
    model, tok = checkpoint.load(tiny_ckpt)
    fast, slow = Engine(model, tok), Engine(model, tok, fast=False)
    assert fast.fast is not None and slow.fast is None
    prompt = tok.render_for_generation([{"role": "user", "content": "Quelle heure est-il ?"}])
    a, b = fast.session(prompt, SamplingParams()), slow.session(prompt, SamplingParams())
    for t in [5, 9, 11]:
        a.feed([t])
        b.feed([t])
        assert torch.allclose(a.logits, b.logits, atol=1e-5)
    p = SamplingParams(max_new_tokens=40, temperature=0.9, top_k=50, seed=3)
    assert fast.generate(prompt, p) == slow.generate(prompt, p)


def test_greedy_fast_path_equals_naive_reference_on_a_longer_run(tiny_ckpt):
    model, tok = checkpoint.load(tiny_ckpt)
    prompt = tok.encode("Il était une fois, dans une ville lointaine,")
    p = SamplingParams(max_new_tokens=120, stop_token_ids=[-1])
    assert Engine(model, tok).generate(prompt, p) == naive_generate(model, prompt, p)


def test_view_is_rebuilt_when_weights_change(tiny_ckpt):
    """An Engine kept across training steps must not decode with stale weights."""
    model, tok = checkpoint.load(tiny_ckpt)
    engine = Engine(model, tok)
    prompt = tok.encode("Bonjour")
    before = engine.session(prompt, SamplingParams()).logits.clone()
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(3.0)
    after = engine.session(prompt, SamplingParams()).logits
    assert not torch.allclose(before, after, atol=1e-4)
    assert torch.allclose(after, Engine(model, tok, fast=False).session(prompt, SamplingParams()).logits, atol=1e-5)


def test_batch_and_beam_search_on_the_fast_path(tiny_ckpt):
    model, tok = checkpoint.load(tiny_ckpt)
    fast, slow = Engine(model, tok), Engine(model, tok, fast=False)
    prompts = [tok.encode("Le chat"), tok.encode("The weather today is"), tok.encode("1 2 3")]
    p = SamplingParams(max_new_tokens=16)
    assert fast.generate_batch(prompts, p) == slow.generate_batch(prompts, p)
    assert fast.beam_search(prompts[1], num_beams=3, max_new_tokens=10) == slow.beam_search(prompts[1], num_beams=3, max_new_tokens=10)


def test_decode_allocates_no_cache_per_step(tiny_ckpt):
    """The KV cache is allocated once per (batch, length) and written in place."""
    model, tok = checkpoint.load(tiny_ckpt)
    engine = Engine(model, tok)
    gen = engine.session(tok.encode("Bonjour"), SamplingParams())
    ptrs = [k.data_ptr() for k in engine.fast.k_cache]
    for _ in range(5):
        gen.feed([gen.next_token()])
    assert [k.data_ptr() for k in engine.fast.k_cache] == ptrs
    engine.session(tok.encode("Salut"), SamplingParams())
    assert [k.data_ptr() for k in engine.fast.k_cache] == ptrs       # same shape: cache reused


def test_bf16_model_decodes_on_the_fast_path_and_int8_leaves_it_untouched():
    model = Transformer(ModelConfig(context_length=64, **CONFIGS[0])).init_weights(4).eval().bfloat16()
    ids = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids).float()
    fast = InferenceModel(model)
    fast.setup_cache(1, 64)
    got = torch.cat([fast.forward(ids[:, :6], 0, all_logits=True)] +
                    [fast.forward(ids[:, i:i + 1], i, all_logits=True) for i in range(6, 12)], 1).float()
    assert (got - full).abs().max() < 0.05 * full.abs().max()
    Engine(model, None, int8=True).generate(ids[0].tolist(), SamplingParams(max_new_tokens=4, stop_token_ids=[-1]))
    assert next(model.parameters()).dtype == torch.bfloat16
