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


# ---- issue 17: a compile-friendly, memory-lean training forward ------------------------------------------


def _tiny(**overrides):
    return Transformer(ModelConfig.preset("tiny", vocab_size=300, **overrides)).init_weights(3)


def _packed(B, T, n_conv, seed):
    g = torch.Generator().manual_seed(seed)
    seg = torch.sort(torch.randint(0, n_conv, (B, T), generator=g), dim=1).values        # conversation per token
    starts = torch.cat([torch.ones(B, 1, dtype=torch.bool), seg[:, 1:] != seg[:, :-1]], 1)
    idx = torch.arange(T).expand(B, T)
    first = torch.cummax(torch.where(starts, idx, torch.zeros_like(idx)), 1).values
    return seg, idx - first                                                                  # positions restart


def test_training_forward_has_no_graph_break():
    """No host sync in the forward: dynamo captures the plain, packed-row and loss forwards in one graph each."""
    m = _tiny().train()
    ids = torch.randint(0, 300, (2, 32))
    seg, pos = _packed(2, 32, 3, seed=0)
    for kwargs in ({}, {"input_pos": pos, "segments": seg}, {"targets": ids}):
        torch._dynamo.reset()
        e = torch._dynamo.explain(m)(ids, **kwargs)
        assert (e.graph_count, e.graph_break_count) == (1, 0), (kwargs.keys(), e.break_reasons)
    # the loss over more than one CE_CHUNK of tokens (checkpointed chunks), and checkpointed blocks
    from hessgpt.model import CE_CHUNK

    long = _tiny(context_length=2048, n_layers=1, activation_checkpointing=True).train()
    ids = torch.randint(0, 300, (2, CE_CHUNK // 2 + 50))
    torch._dynamo.reset()
    e = torch._dynamo.explain(long)(ids, targets=ids)
    assert (e.graph_count, e.graph_break_count) == (1, 0), e.break_reasons


def _as_multi_head(gqa: Transformer) -> Transformer:
    """The same model with k/v projections repeated per query head: what repeat_interleave computed."""
    cfg = gqa.config
    mha = Transformer(ModelConfig.from_dict({**cfg.to_dict(), "n_kv_heads": cfg.n_heads}))
    sd = dict(gqa.state_dict())
    rep = cfg.n_heads // cfg.n_kv_heads
    for k in list(sd):
        if k.endswith(("k_proj.weight", "v_proj.weight")):
            sd[k] = sd[k].view(cfg.n_kv_heads, cfg.head_dim, cfg.dim).repeat_interleave(rep, 0).reshape(-1, cfg.dim)
    mha.load_state_dict(sd)
    return mha


def test_enable_gqa_equals_repeated_kv_heads():
    """SDPA's enable_gqa (causal, cached decode) and masked_attention's grouped matmul (packed rows on CPU)
    against the old repeat_interleave maths, values and gradients."""
    torch.manual_seed(0)
    gqa = _tiny()
    assert gqa.config.n_kv_heads < gqa.config.n_heads
    mha = _as_multi_head(gqa)
    ids = torch.randint(0, 300, (2, 40))
    seg, pos = _packed(2, 40, 3, seed=1)
    for kwargs in ({}, {"input_pos": pos, "segments": seg}):
        a, b = gqa(ids, **kwargs), mha(ids, **kwargs)
        assert (a - b).abs().max() < 1e-5
        w = torch.randn(a.shape)
        ga = torch.autograd.grad((a * w).sum(), gqa.model.layers[0].self_attn.q_proj.weight)[0]
        gb = torch.autograd.grad((b * w).sum(), mha.model.layers[0].self_attn.q_proj.weight)[0]
        assert torch.allclose(ga, gb, atol=1e-5, rtol=1e-4)
    with torch.no_grad():                                       # the Transformer's own cache (Engine fast=False)
        outs = []
        for m in (gqa.eval(), mha.eval()):
            m.setup_caches(2, 48)
            outs.append(torch.cat([m(ids[:, :10], input_pos=torch.arange(10), kv_len=10)] +
                                  [m(ids[:, i:i + 1], input_pos=torch.tensor([i]), kv_len=i + 1) for i in range(10, 40)], 1))
    assert (outs[0] - outs[1]).abs().max() < 1e-5


def _saved_bytes(fn):
    """Bytes of the tensors autograd keeps for backward while fn() runs (and the largest one's numel)."""
    sizes = []

    def pack(t):
        sizes.append((t.numel() * t.element_size(), t.numel()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(s for s, _ in sizes), max(n for _, n in sizes)


def test_activation_checkpointing_same_gradients_less_saved():
    """Per-block checkpointing (use_reentrant=False, RNG state preserved): same loss and gradients with
    dropout on, and autograd keeps far fewer bytes."""
    ids, y = torch.randint(0, 300, (2, 48)), torch.randint(0, 300, (2, 48))
    results = []
    for on in (False, True):
        m = _tiny(dropout=0.1, activation_checkpointing=on).train()
        torch.manual_seed(5)                                     # same dropout masks in both runs
        loss, saved, _ = _saved_bytes(lambda: cross_entropy(m(ids), y))
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in m.named_parameters()}, saved))
    (l0, g0, s0), (l1, g1, s1) = results
    assert torch.equal(l0, l1)
    for n in g0:
        assert torch.allclose(g0[n], g1[n], atol=1e-6, rtol=1e-5), n
    assert s1 < 0.6 * s0, (s0, s1)
    m.eval()                                                     # inference never recomputes
    with torch.no_grad():
        assert torch.equal(m(ids), _tiny(dropout=0.1).eval()(ids))


def test_chunked_cross_entropy_equals_plain_loss_and_gradients():
    from hessgpt.model import chunked_cross_entropy

    torch.manual_seed(0)
    m = _tiny(tie_embeddings=False)
    ids, y = torch.randint(0, 300, (3, 30)), torch.randint(0, 300, (3, 30))
    y[0, :5] = -100                                              # ignored targets, like F.cross_entropy
    ref = torch.nn.functional.cross_entropy(m(ids).float().view(-1, 300), y.view(-1), reduction="sum")
    gref = torch.autograd.grad(ref, list(m.parameters()))
    h = m(ids, return_hidden=True)
    for loss in (chunked_cross_entropy(h, m.lm_head, y, chunk=7), m(ids, targets=y)):
        assert torch.allclose(loss, ref, rtol=1e-6), (loss, ref)
        for a, b in zip(torch.autograd.grad(loss, list(m.parameters()), retain_graph=True), gref):
            # fp32 sums in another order: differences of ~1e-7 of the gradient's scale (4.5e-6 of 10.04 seen
            # on an AMD EPYC, 0 on a Xeon with AMX); a lost chunk or mask moves whole rows by O(scale)
            assert torch.allclose(a, b, atol=1e-6 * max(1.0, b.abs().max().item()), rtol=1e-5)
    # no logits are kept for backward (each chunk's are recomputed there), only the chunks' inputs
    h = h.detach().requires_grad_()
    _, chunked_saved, largest = _saved_bytes(lambda: chunked_cross_entropy(h, m.lm_head, y, chunk=16))
    _, plain_saved, plain_largest = _saved_bytes(
        lambda: torch.nn.functional.cross_entropy(m.lm_head(h).float().view(-1, 300), y.view(-1), reduction="sum"))
    assert largest == 16 * h.shape[-1] and plain_largest >= 90 * 300
    assert chunked_saved < plain_saved / 4, (chunked_saved, plain_saved)
    # SFT's form: targets of the selected positions only
    sel = torch.rand(3, 30) < 0.5
    assert torch.allclose(m(ids, logits_at=sel, targets=y[sel]),
                          torch.nn.functional.cross_entropy(m(ids, logits_at=sel), y[sel], reduction="sum"), rtol=1e-6)


def test_packed_block_mask_matches_the_dense_mask():
    """FlexAttention's BlockMask (the CUDA path of packed rows) against the dense reference the CPU path uses:
    the same allowed pairs, the same 128x128 blocks skipped/full, and flex_attention's values equal to the
    dense path's. torch 2.13 runs FlexAttention forward on CPU but not its backward (NotImplementedError), so
    gradients are compared on a GPU by benchmarks/gpu_check.py."""
    from torch.nn.attention.flex_attention import flex_attention

    from hessgpt.model import masked_attention, packed_block_mask, packed_dense_mask

    B, T, H, Hkv, hd = 2, 384, 4, 2, 16
    seg, _ = _packed(B, T, 4, seed=2)
    dense = packed_dense_mask(seg)                                           # [B, 1, T, T]
    bm = packed_block_mask(seg)
    blocks = dense.view(B, 1, T // 128, 128, T // 128, 128)
    any_, all_ = blocks.any(dim=(3, 5)), blocks.all(dim=(3, 5))
    assert torch.equal(bm.to_dense().bool(), any_)                           # every block with a pair is visited
    full = torch.zeros_like(any_)
    for b in range(B):
        for i in range(T // 128):
            n = int(bm.full_kv_num_blocks[b, 0, i])
            full[b, 0, i, bm.full_kv_indices[b, 0, i, :n]] = True
    assert torch.equal(full, all_)                                           # and only fully allowed ones skip the mask
    assert any_.sum() < any_.numel()                                         # some blocks are skipped
    # the dense mask equals the SFT batch's mask for the same rows
    from hessgpt.train.sft import make_batch

    rows_seg = [[int(n) for n in torch.unique_consecutive(seg[b], return_counts=True)[1]] for b in range(B)]
    examples, rows = [], []
    for b, lens in enumerate(rows_seg):
        rows.append([])
        for n in lens:
            rows[-1].append(len(examples))
            examples.append(([1] * n, [1] * n))
    batch = make_batch(examples, rows, T - 1, pad_id=0)
    assert torch.equal(batch["segments"], seg[:, :-1])
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, H, T, hd, generator=g)
    k, v = (torch.randn(B, Hkv, T, hd, generator=g) for _ in range(2))
    with torch.no_grad():
        got = flex_attention(q, k, v, block_mask=bm, enable_gqa=True)
    assert (got - masked_attention(q, k, v, dense)).abs().max() < 1e-5


def test_segments_on_cpu_is_the_dense_mask_path():
    m = _tiny()
    ids = torch.randint(0, 300, (2, 40))
    seg, pos = _packed(2, 40, 3, seed=4)
    from hessgpt.model import packed_dense_mask

    assert torch.equal(m(ids, input_pos=pos, segments=seg), m(ids, input_pos=pos, mask=packed_dense_mask(seg)))
    with pytest.raises(ValueError, match="segments or mask"):
        m(ids, segments=seg, mask=packed_dense_mask(seg))


def test_activation_checkpointing_with_lora_dropout_same_gradients():
    """LoRA adapters with dropout inside checkpointed blocks: the recomputation replays the same masks."""
    from hessgpt.train.lora import LoRAConfig, apply_lora

    ids, y = torch.randint(0, 300, (2, 40)), torch.randint(0, 300, (2, 40))
    grads = []
    for on in (False, True):
        m = _tiny(activation_checkpointing=on)
        torch.manual_seed(0)
        apply_lora(m, LoRAConfig(r=4, alpha=8.0, dropout=0.2, targets=("q_proj", "v_proj", "down_proj")))
        for name, p in m.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02)           # B starts at zero: make the adapters matter
        m.train()
        torch.manual_seed(1)
        cross_entropy(m(ids), y).backward()
        grads.append({n: p.grad for n, p in m.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 4 * 3 * 2
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-5), n
