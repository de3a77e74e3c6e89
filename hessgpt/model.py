"""The HessGPT transformer, top to bottom: a Mistral/Llama-style decoder.

    token ids [B, T]
      -> embed_tokens                                  [B, T, D]
      -> N x Block:  x + Attention(RMSNorm(x))         RoPE, grouped-query attention, SDPA
                     x + SwiGLU-MLP(RMSNorm(x))
      -> RMSNorm -> lm_head                            [B, T, V] logits

Parameter names are exactly Hugging Face `MistralForCausalLM`'s (`model.layers.{i}.self_attn.q_proj`, ...),
so converting to/from `transformers` is a copy of the state dict and LoRA adapters trained here apply to
the exported model unchanged.

The model knows nothing about sampling or tools (that is `engine.py`). For fast generation it can hold a
static KV cache (gpt-fast style): `setup_caches(batch, length)` then `forward(ids, input_pos=..., mask=...)`.
The engine decodes through `InferenceModel` (inference.py): an inference-only copy of the weights laid out
for speed (fused q|k|v and gate|up, interleaved RoPE, its own cache), built from a Transformer.

Why this model keeps a cache of its own beside InferenceModel's (measured 2026-12-03, issue 18): the callers of
each decode path, by grep of hessgpt/, tests/, benchmarks/ and by counting calls in 256 tests (tests/serve,
tests/tools/test_router.py, tests/eval/test_tools.py and test_search_tools.py, test_quantize.py,
test_engine*.py, test_model.py, tests/kernels):
  - InferenceModel.forward + its batch cache: Engine's default on CPU and CUDA, so every chat, ask, serve,
    eval and quantize run (Generation, beam search, quantize's perplexity); setup_cache called 226 times.
  - InferenceModel.forward_rows + SlotCache: BatchDecoder (generate_batch, serve --max-batch > 1); 25 calls.
  - This model's cache (setup_caches, KVCache, forward with input_pos/kv_len): Engine(fast=False), reached
    (1) as Engine's default on every device other than CPU and CUDA (`--device mps`, and device.pick_device's
    "auto" on a Mac), where InferenceModel has never been run (no such machine here: its RoPE is a complex
    view, and nothing says MPS runs it the same); (2) by benchmarks/decode.py's "plain static-cache fp32"
    baseline row; (3) by tests only otherwise: 6 setup_caches calls, all in test_engine_fast.py (the same
    tokens as InferenceModel for seeded sampling, generate_batch and beam search; logits within 1e-5) and
    test_model.py (cache == full forward, GQA == MHA). No serve, tools or eval test reaches it.
  - engine.naive_generate (no cache): the reference the other two must match token for token.
So it stays while it is the only decode path on MPS. To delete it (with Engine(fast=False), _model_forward,
_generate_batch_padded and the fallbacks in _ensure_cache/_reorder_cache, about 120 lines): run
tests/test_engine_fast.py and tests/test_engine_batch.py with the fast path on an MPS machine; green there,
the fast path serves every device.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
from torch.utils.checkpoint import checkpoint

from hessgpt.config import ModelConfig

# Rows of the LM head computed at once by `chunked_cross_entropy`: its fp32 logits are [CE_CHUNK, V] at a
# time (262 MB at V=32008) instead of [B*T, V] (4.2 GB at B=16, T=2048, and as much for their gradient),
# each chunk recomputed in backward.
CE_CHUNK = 2048

_flex_compiled = None   # torch.compile(flex_attention), made on first use: importing the compiler costs seconds


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # Normalise in fp32 like the reference implementation (matters under bf16 autocast), cast back.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables [length, head_dim] in HF's "rotate half" layout (frequencies repeated twice)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    t = torch.arange(length, dtype=torch.int64).float()
    freqs = torch.outer(t, inv_freq)            # [length, head_dim/2]
    emb = torch.cat((freqs, freqs), dim=-1)      # [length, head_dim]
    return emb.cos(), emb.sin()


def apply_rope(x, cos, sin):
    # x [B, H, T, hd]; cos/sin [T, hd] (or [B, 1, T, hd])
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class KVCache(nn.Module):
    """Preallocated keys/values [B, n_kv_heads, max_len, head_dim]; positions are written in place."""

    def __init__(self, batch: int, max_len: int, n_kv_heads: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos, k, v):
        # input_pos [T]; k, v [B, n_kv, T, hd]
        self.k.index_copy_(2, input_pos, k)
        self.v.index_copy_(2, input_pos, v)
        return self.k, self.v


def masked_attention(q, k, v, mask):
    """softmax(q k^T / sqrt(hd), masked) v as two matmuls: q [B, H, T, hd], k, v [B, Hkv, S, hd] (Hkv divides
    H: grouped-query attention, q head h reads kv head h // (H / Hkv)), mask [B, 1, T, S] bool (True = attend;
    every query must see at least one key) -> [B, H, T, hd]. Same maths as SDPA with a boolean mask and
    enable_gqa; used for CPU training on packed rows, where PyTorch's fused CPU kernel with an explicit mask
    is slower at small head dims (its backward above all): measured 7-9% of a whole SFT step at hd 32 with
    bf16 autocast on the 2-core reference CPU (docs/training.md)."""
    B, H, T, hd = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    # GQA without copying k/v: the rep = H/Hkv query heads of a kv head become rows of one matmul
    s = torch.matmul(q.reshape(B, Hkv, (H // Hkv) * T, hd), k.transpose(-2, -1)) * hd ** -0.5   # [B, Hkv, rep*T, S]
    # the mask as an additive bias of the scores' dtype, [B, 1, 1, T, S] broadcast over heads: a plain add, whose
    # backward is free, instead of masked_fill on the [B, H, T, S] scores and again on their gradient (a
    # quarter of this function's time at hd 32 under bf16 autocast)
    bias = torch.zeros(mask.shape, dtype=s.dtype, device=s.device).masked_fill_(~mask, float("-inf"))
    p = torch.softmax(s.view(B, Hkv, H // Hkv, T, S) + bias.unsqueeze(1), dim=-1)              # [B, Hkv, rep, T, S]
    return torch.matmul(p.view(B, Hkv, (H // Hkv) * T, S), v).view(B, H, T, hd)


def block_sparse_attention(q, k, v, block_mask: BlockMask, enable_gqa: bool):
    """FlexAttention: q [B, H, T, hd], k, v [B, Hkv, T, hd] -> [B, H, T, hd], computing only the blocks
    `block_mask` visits. Compiled (eager FlexAttention is a slow reference), once per shape; inside an outer
    torch.compile of the model it is traced with the rest of the graph."""
    global _flex_compiled
    if torch.compiler.is_compiling():
        return flex_attention(q, k, v, block_mask=block_mask, enable_gqa=enable_gqa)
    if _flex_compiled is None:
        _flex_compiled = torch.compile(flex_attention, dynamic=False)
    return _flex_compiled(q, k, v, block_mask=block_mask, enable_gqa=enable_gqa)


def packed_block_mask(segments: torch.Tensor) -> BlockMask:
    """FlexAttention BlockMask of packed rows: segments [B, T] (the conversation index of each token) ->
    a token attends to earlier tokens of its own conversation. Blocks (128 x 128) with no allowed pair are
    skipped by the kernel; the dense equivalent is `packed_dense_mask`."""
    B, T = segments.shape

    def document_causal(b, h, q_idx, kv_idx):
        return (segments[b, q_idx] == segments[b, kv_idx]) & (q_idx >= kv_idx)

    return create_block_mask(document_causal, B, None, T, T, device=segments.device)


def packed_dense_mask(segments: torch.Tensor) -> torch.Tensor:
    """segments [B, T] -> [B, 1, T, T] bool (True = attend): block-diagonal causal, as `packed_block_mask`."""
    T = segments.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()
    return ((segments[:, :, None] == segments[:, None, :]) & causal).unsqueeze(1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.dropout = cfg.dropout
        self.kv_cache: KVCache | None = None

    def forward(self, x, cos, sin, mask=None, input_pos=None, kv_len=None, causal=True):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)      # [B, H, T, hd]
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)   # [B, Hkv, T, hd]
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.kv_cache is not None:
            k, v = self.kv_cache.update(input_pos, k, v)       # [B, Hkv, max_len, hd]
            if kv_len is not None:                              # attend to the filled prefix only
                k, v = k[:, :, :kv_len], v[:, :, :kv_len]
        gqa = self.n_kv_heads != self.n_heads                   # GQA: each kv head serves H/Hkv query heads
        dropout = self.dropout if self.training else 0.0
        # mask None + causal: training/full forward (flash kernels on GPU); mask None + not causal: one decoded
        # token attending to the whole filled cache; a BlockMask: packed rows on CUDA (FlexAttention skips the
        # masked blocks); otherwise an explicit boolean mask, True = attend.
        if isinstance(mask, BlockMask):
            y = block_sparse_attention(q, k, v, mask, gqa)
        elif mask is not None and x.device.type == "cpu" and torch.is_grad_enabled() and dropout == 0.0:
            y = masked_attention(q, k, v, mask)                 # packed-row SFT on CPU: faster than SDPA here
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                               dropout_p=dropout, enable_gqa=gqa)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.o_proj(y)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, mask=None, input_pos=None, kv_len=None, causal=True):
        x = x + self.resid_dropout(self.self_attn(self.input_layernorm(x), cos, sin, mask, input_pos, kv_len, causal))
        x = x + self.resid_dropout(self.mlp(self.post_attention_layernorm(x)))
        return x


class Decoder(nn.Module):
    """The `model.` part of the HF naming: embeddings, blocks, final norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        cos, sin = rope_tables(cfg.head_dim, cfg.context_length, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)   # [context, hd]
        self.register_buffer("rope_sin", sin, persistent=False)
        self.cache_len = 0  # max_len of the KV caches, 0 = no caches

    # ---- init -------------------------------------------------------------------------------

    def init_weights(self, seed: int | None = None) -> "Transformer":
        """GPT-2/Llama-style init: N(0, 0.02), output projections scaled by 1/sqrt(2 * n_layers)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = 0.02
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)  # RMSNorm weights
            else:
                s = std / math.sqrt(2 * self.config.n_layers) if name.endswith(("o_proj.weight", "down_proj.weight")) else std
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=gen) * s)
        return self

    # ---- forward ----------------------------------------------------------------------------

    def _rope(self, positions: torch.Tensor | None, length: int):
        """cos, sin for `positions` ([T] or [B, T]; None = 0..length-1). `length` is a host-side bound on the
        positions (no device sync, no graph break): the tables grow to it when it is past the context (no
        error; quality is the user's call)."""
        if length > self.rope_cos.shape[0]:
            cos, sin = rope_tables(self.config.head_dim, max(length, 2 * self.rope_cos.shape[0]), self.config.rope_theta)
            self.rope_cos, self.rope_sin = cos.to(self.rope_cos.device), sin.to(self.rope_cos.device)
        if positions is None:
            return self.rope_cos[:length], self.rope_sin[:length]
        return self.rope_cos[positions], self.rope_sin[positions]

    def forward(self, idx: torch.Tensor, input_pos: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                kv_len: int | None = None, return_hidden: bool = False, logits_at: torch.Tensor | None = None,
                segments: torch.Tensor | None = None, targets: torch.Tensor | None = None) -> torch.Tensor:
        """idx [B, T] -> logits [B, T, V]; with `logits_at` [B, T] bool, logits [N, V] of those N positions only
        (SFT needs them where its loss mask is 1: the head and its softmax then skip the prompt tokens).
        With `targets` ([B, T], or [N] with logits_at): the summed next-token cross-entropy instead of logits,
        an fp32 scalar, computed by `chunked_cross_entropy` (the whole [B*T, V] fp32 logits never exist;
        targets of -100 are ignored, as in F.cross_entropy).

        Training/full forward: idx alone (causal attention), `segments` [B, T] long (the conversation index of
        each token of packed rows: block-diagonal causal attention; FlexAttention with a BlockMask on CUDA,
        the dense mask elsewhere), or `mask` [B, 1, T, T] bool.
        With caches (`setup_caches`): `input_pos` [T] are the absolute positions written to the cache and
        `mask` [B, 1, T, kv_len or cache_len] bool says which cached keys each query may see (the engine
        builds it: bottom-right causal, padding excluded). Positions may also be [B, T] for per-row RoPE;
        without a cache they must be < max(T, context_length) on CUDA (packed rows restart theirs per
        conversation; on CPU any position works). No host sync: `torch._dynamo.explain` finds no graph break.
        """
        B, T = idx.shape
        length = max(T, self.cache_len)
        if input_pos is not None and not self.has_cache and idx.device.type == "cpu" and not torch.compiler.is_compiling():
            length = max(length, int(input_pos.max()) + 1)       # a CPU tensor: reading it syncs nothing
        cos, sin = self._rope(input_pos, length)
        if cos.dim() == 3:  # per-row positions [B, T, hd] -> [B, 1, T, hd]
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        cache_pos = input_pos if input_pos is None or input_pos.dim() == 1 else input_pos[0]
        causal = True
        if segments is not None:
            if mask is not None:
                raise ValueError("pass either segments or mask, not both")
            flex = idx.device.type == "cuda" and not (self.training and self.config.dropout > 0)   # flex has no dropout
            mask = packed_block_mask(segments) if flex else packed_dense_mask(segments)
        if self.has_cache and mask is None:
            if cache_pos is None:
                raise ValueError("a model with KV caches needs input_pos")
            kv = kv_len or self.cache_len
            if T == 1:
                causal = False  # the single new token may see every filled position
            else:  # bottom-right causal mask: query at position p sees keys 0..p (is_causal would align top-left)
                mask = torch.arange(kv, device=idx.device)[None, :] <= cache_pos[:, None]   # [T, kv]
        x = self.model.embed_tokens(idx)
        recompute = self.config.activation_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.model.layers:
            if recompute:   # keep only each block's input; its activations are recomputed in backward
                x = checkpoint(layer, x, cos, sin, mask, cache_pos, kv_len, causal, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, cache_pos, kv_len, causal)
        x = self.model.norm(x)
        if return_hidden:
            return x
        if logits_at is not None:
            x = x[logits_at]                                     # [N, D]
        if targets is not None:
            return chunked_cross_entropy(x, self.lm_head, targets)
        return self.lm_head(x)

    # ---- KV cache ---------------------------------------------------------------------------

    def setup_caches(self, batch: int, max_len: int, dtype=None, device=None) -> None:
        p = self.lm_head.weight
        dtype, device = dtype or p.dtype, device or p.device
        for layer in self.model.layers:
            layer.self_attn.kv_cache = KVCache(batch, max_len, self.config.n_kv_heads, self.config.head_dim, dtype, device)
        self.cache_len = max_len

    def clear_caches(self) -> None:
        for layer in self.model.layers:
            layer.self_attn.kv_cache = None
        self.cache_len = 0

    @property
    def has_cache(self) -> bool:
        return self.cache_len > 0


def _ce_sum(x: torch.Tensor, head: nn.Module, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(x).float(), targets, reduction="sum")      # [n, V] fp32 logits, one chunk


def chunked_cross_entropy(x: torch.Tensor, head: nn.Module, targets: torch.Tensor, chunk: int = CE_CHUNK) -> torch.Tensor:
    """sum over tokens of cross_entropy(head(x), targets), x [..., D], targets [...] (-100 ignored), in chunks of
    `chunk` tokens, each under activation checkpointing: only one chunk's logits (and their fp32 copy and
    gradient) exist at a time, recomputed in backward (one more head matmul: 2 D V FLOPs a token, 2.4% of
    model1-0.5b's 3.4 GFLOP/token).
    At most `chunk` tokens (CPU-sized batches): one plain pass, nothing recomputed.
    Same value and gradients as F.cross_entropy(head(x).float(), targets, reduction="sum")."""
    x, targets = x.reshape(-1, x.shape[-1]), targets.reshape(-1)
    if x.shape[0] <= chunk:
        return _ce_sum(x, head, targets)                   # one chunk: recomputing it would save nothing
    total = torch.zeros((), dtype=torch.float32, device=x.device)
    for i in range(0, x.shape[0], chunk):
        total = total + checkpoint(_ce_sum, x[i:i + chunk], head, targets[i:i + chunk], use_reentrant=False)
    return total


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None):
    """Mean next-token loss. logits [B, T, V], targets [B, T], mask [B, T] (1 = train on this target)."""
    loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    if mask is None:
        return loss.mean()
    m = mask.reshape(-1).to(loss.dtype)
    return (loss * m).sum() / m.sum().clamp(min=1)
