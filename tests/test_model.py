import pytest
import torch

from hessgpt.config import PRESETS, ModelConfig
from hessgpt.errors import HessGPTError
from hessgpt.model import Transformer, cross_entropy


@pytest.mark.parametrize("name,target", [("hessgpt-51m", 51e6), ("model2-0.3b", 0.3e9), ("model1-0.5b", 0.5e9)])
def test_design_presets_within_10_percent(name, target):
    cfg = ModelConfig.preset(name)
    assert abs(cfg.num_params() - target) / target <= 0.10
    # the analytic count is the real one
    with torch.device("meta"):
        model = Transformer(cfg)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params()


def test_preset_shapes_follow_the_design():
    assert PRESETS["model2-0.3b"]["n_kv_heads"] == 2 and PRESETS["model1-0.5b"]["n_kv_heads"] == 5
    assert ModelConfig.preset("hessgpt-51m").vocab_size == 50257


@pytest.mark.parametrize("bad,needle", [
    ({"dimm": 4}, "'dimm'"),
    ({"dim": 100, "n_heads": 3}, "not divisible by n_heads"),
    ({"n_heads": 8, "n_kv_heads": 3}, "not divisible by n_kv_heads"),
    ({"vocab_size": 0}, "vocab_size"),
])
def test_invalid_configs_name_the_key(bad, needle):
    with pytest.raises(HessGPTError, match=needle):
        ModelConfig.from_dict({**PRESETS["tiny"], **bad})


def test_parameter_names_are_hf_mistral():
    names = set(Transformer(ModelConfig.preset("tiny", tie_embeddings=False)).state_dict())
    for expected in ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
                     "model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.o_proj.weight",
                     "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight",
                     "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
                     "model.norm.weight", "lm_head.weight"]:
        assert expected in names


def test_tied_head_shares_the_embedding():
    m = Transformer(ModelConfig.preset("tiny"))
    assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()


def test_kv_cache_decode_matches_full_forward():
    torch.manual_seed(0)
    m = Transformer(ModelConfig.preset("tiny", vocab_size=300)).init_weights(1).eval()
    ids = torch.randint(0, 300, (2, 40))
    with torch.no_grad():
        full = m(ids)
        m.setup_caches(2, 64)
        parts = [m(ids[:, :12], input_pos=torch.arange(12), kv_len=12),
                 m(ids[:, 12:20], input_pos=torch.arange(12, 20), kv_len=20)]   # multi-token chunk on top of a cache
        parts += [m(ids[:, i:i + 1], input_pos=torch.tensor([i]), kv_len=i + 1) for i in range(20, 40)]
    assert (torch.cat(parts, 1) - full).abs().max().item() < 1e-5


def test_causality_future_tokens_do_not_change_past_logits():
    m = Transformer(ModelConfig.preset("tiny", vocab_size=300)).init_weights(2).eval()
    a = torch.randint(0, 300, (1, 20))
    b = a.clone()
    b[0, 15:] = (b[0, 15:] + 7) % 300
    with torch.no_grad():
        assert torch.allclose(m(a)[:, :15], m(b)[:, :15], atol=1e-6)


def test_masked_loss_ignores_unmasked_targets():
    logits = torch.randn(1, 6, 11)
    t1 = torch.tensor([[1, 2, 3, 4, 5, 6]])
    t2 = torch.tensor([[1, 9, 3, 9, 5, 9]])
    mask = torch.tensor([[1, 0, 1, 0, 1, 0]])
    assert torch.equal(cross_entropy(logits, t1, mask), cross_entropy(logits, t2, mask))
    assert not torch.equal(cross_entropy(logits, t1), cross_entropy(logits, t2))


def test_masked_attention_equals_sdpa_values_and_gradients():
    """The CPU training path for packed rows (model.masked_attention) against F.scaled_dot_product_attention."""
    import torch.nn.functional as F

    from hessgpt.model import masked_attention

    g = torch.Generator().manual_seed(0)
    B, H, T, hd = 3, 4, 20, 16
    q, k, v = (torch.randn(B, H, T, hd, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    seg = torch.sort(torch.randint(0, 3, (B, T), generator=g), dim=1).values            # packed conversations
    mask = ((seg[:, :, None] == seg[:, None, :]) & torch.ones(T, T, dtype=torch.bool).tril()).unsqueeze(1)
    a = masked_attention(q, k, v, mask)
    b = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(a, b, atol=1e-10)
    w = torch.randn(a.shape, generator=g, dtype=torch.float64)
    ga = torch.autograd.grad((a * w).sum(), (q, k, v))
    gb = torch.autograd.grad((b * w).sum(), (q, k, v))
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, atol=1e-10)


def test_masked_attention_under_bf16_autocast_matches_fp64():
    """The training dtype path: bf16 scores with the mask added as a bf16 bias, against the fp64 result."""
    from hessgpt.model import masked_attention

    g = torch.Generator().manual_seed(1)
    B, H, T, hd = 2, 4, 32, 32
    q, k, v = (torch.randn(B, H, T, hd, generator=g) for _ in range(3))
    seg = torch.sort(torch.randint(0, 4, (B, T), generator=g), dim=1).values
    mask = ((seg[:, :, None] == seg[:, None, :]) & torch.ones(T, T, dtype=torch.bool).tril()).unsqueeze(1)
    ref = masked_attention(q.double(), k.double(), v.double(), mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = masked_attention(q, k, v, mask)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert (out.double() - ref).abs().max() < 0.05
    # a masked key changes nothing: perturb keys/values a query may not see, its output stays the same
    k2, v2 = k.clone(), v.clone()
    k2[0, :, -1], v2[0, :, -1] = 100.0, 100.0       # the last token of row 0: only it may see itself
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out2 = masked_attention(q, k2, v2, mask)
    assert torch.equal(out2[0, :, :-1], out[0, :, :-1])
