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
The engine decodes through `InferenceModel` (end of this file): an inference-only copy of the weights laid out
for speed (fused q|k|v and gate|up, interleaved RoPE, its own cache), built from a Transformer.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
from torch.utils.checkpoint import checkpoint

from hessgpt import kernels
from hessgpt.config import ModelConfig
from hessgpt.kernels.int8 import Int8Linear

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


# ---- inference-only fused view (fast decode) ------------------------------------------------------
#
# Batch-1 decoding on a CPU is either bandwidth-bound (every weight is read once per token) or, for small
# models, bound by per-op dispatch overhead (~2-10 us per PyTorch op). The training modules above cost ~45 ops
# per layer per token; `InferenceModel` does the same math in ~16 by laying the weights out once:
#   - q|k|v and gate|up fused into one matmul each, weights stored transposed ([in, out], the layout whose
#     matrix-vector product is fastest through MKL here), the attention scale folded into wq;
#   - q/k output rows permuted per head from HF's rotate-half layout to interleaved pairs, so RoPE is one
#     in-place complex multiply (q.k is unchanged: both sides get the same permutation);
#   - residual adds fused into the o/down matmuls (addmm); RMSNorm in 5 ops; logits for the last position only;
#   - its own preallocated KV cache written in place; decode attention as two small matmuls (GQA by reshape).
# The Transformer is untouched (parameter names, training path); the Engine builds this view at creation.


def rope_interleave_perm(n_heads: int, head_dim: int) -> torch.Tensor:
    """Row order taking rotate-half layout [x0..x_{h-1}, x_h..x_{2h-1}] to pairs [x0, x_h, x1, x_{h+1}, ...]
    within each head (the layout llama.cpp's GGUF conversion uses too)."""
    half = head_dim // 2
    one = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).reshape(-1)   # [hd]
    return (torch.arange(n_heads)[:, None] * head_dim + one[None]).reshape(-1)            # [n_heads * hd]


class DenseLinear:
    """y = x @ W.T with W stored transposed and contiguous ([in, out]). x [N, in] -> [N, out]."""

    kind = "dense"

    def __init__(self, weight: torch.Tensor):
        self.wt = weight.detach().t().contiguous()   # [in, out]
        self.out_features = self.wt.shape[1]

    def __call__(self, x):
        return torch.mm(x, self.wt)

    raw = __call__   # output in the kernel's own dtype (the same here)

    def add_to(self, res, x):
        """res + x @ W.T in one op (the residual add fused into the matmul)."""
        return torch.addmm(res, x, self.wt)

    def nbytes(self) -> int:
        return self.wt.numel() * self.wt.element_size()


@dataclass
class SlotCache:
    """K and V per layer, [slots, n_kv, max_len, hd] each: one independent sequence per slot (batched decode)."""

    k: list
    v: list
    steps: dict = field(default_factory=dict)   # slot -> native batch-1 step on that slot (or None), lazily

    @property
    def slots(self) -> int:
        return self.k[0].shape[0]

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]


class InferenceModel:
    """A read-only, pre-laid-out copy of a `Transformer` for generation, with its own KV cache.

        fast = InferenceModel(model)             # or int8_inference_model(model) (kernels/int8.py weights)
        fast.setup_cache(batch=1, max_len=2048)
        logits = fast.forward(ids, pos)          # ids [B, T] at absolute positions pos..pos+T-1 -> [B, V] (last)

    `make_linear(weight [out, in]) -> object with __call__(x) and add_to(res, x)` chooses the matmul kernel
    (dense fp32/bf16 here; int8 weight-only in kernels/int8.py). The default (None) is the native AVX2/AVX-512
    kernels of hessgpt/kernels for an fp32 model on CPU when they can be built there, else DenseLinear; with
    them, a batch-1 cache decodes each token in one native call (`decode_step`, the whole step in C).
    """

    def __init__(self, model: "Transformer", make_linear=None, quantize_head: bool = True):
        cfg = model.config
        self.config = cfg
        self.n_heads, self.n_kv, self.hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.dim, self.eps = cfg.dim, cfg.norm_eps
        p = model.lm_head.weight
        self.device, self.dtype = p.device, p.dtype
        dense = DenseLinear   # fp32/bf16 weights: the native GEMV layout when those kernels apply
        if self.device.type == "cpu" and self.dtype == torch.float32:
            if kernels.available():
                dense = kernels.KernelLinear
        make_linear = make_linear or dense
        self.native_rows = False  # forward_rows' linears through kernels.rows_matmul (CPU, fp32 activations)
        if self.device.type == "cpu" and self.dtype == torch.float32:
            self.native_rows = kernels.available()
        self.decode_step = None   # native whole-step decoder (hessgpt/kernels), set by setup_cache when it applies
        perm_q = rope_interleave_perm(cfg.n_heads, cfg.head_dim).to(self.device)
        perm_k = rope_interleave_perm(cfg.n_kv_heads, cfg.head_dim).to(self.device)
        scale = cfg.head_dim ** -0.5
        self.layers = []
        with torch.no_grad():
            for block in model.model.layers:
                a, m = block.self_attn, block.mlp
                wq = a.q_proj.weight[perm_q] * scale               # [H*hd, D], softmax scale folded in
                wk = a.k_proj.weight[perm_k]                        # [Hkv*hd, D]
                wqkv = torch.cat([wq, wk, a.v_proj.weight], 0)      # [(H + 2 Hkv) hd, D]
                self.layers.append((
                    block.input_layernorm.weight.detach().clone(),
                    make_linear(wqkv),
                    make_linear(a.o_proj.weight),
                    block.post_attention_layernorm.weight.detach().clone(),
                    make_linear(torch.cat([m.gate_proj.weight, m.up_proj.weight], 0)),   # [2 hidden, D]
                    make_linear(m.down_proj.weight),
                ))
            self.embed = model.model.embed_tokens.weight.detach()    # [V, D] (shared, not copied)
            self.norm = model.model.norm.weight.detach().clone()
            self.head = make_linear(model.lm_head.weight) if quantize_head else dense(model.lm_head.weight)
        self.hidden = cfg.hidden_dim
        self._rope(cfg.context_length)
        self.k_cache: list[torch.Tensor] = []
        self.v_cache: list[torch.Tensor] = []
        self.batch = self.max_len = 0

    def _rope(self, length: int) -> None:
        # freqs_cis [length, hd/2] complex: e^{i * pos * theta_j}, same frequencies as rope_tables
        inv_freq = 1.0 / (self.config.rope_theta ** (torch.arange(0, self.hd, 2, dtype=torch.int64).float() / self.hd))
        angles = torch.outer(torch.arange(length, dtype=torch.int64).float(), inv_freq)
        self.freqs_cis = torch.polar(torch.ones_like(angles), angles).to(self.device)

    def setup_cache(self, batch: int, max_len: int) -> None:
        if batch == self.batch and max_len == self.max_len:
            return
        shape = (batch, self.n_kv, max_len, self.hd)
        self.k_cache = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        self.v_cache = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        self.batch, self.max_len = batch, max_len
        if max_len > self.freqs_cis.shape[0]:
            self._rope(max_len)
        self.decode_step = None
        if self.device.type == "cpu" and self.dtype == torch.float32:
            self.decode_step = kernels.decode_step(self)   # None unless batch 1 with the native linears

    def reorder_cache(self, rows: torch.Tensor) -> None:
        """Cache row b becomes old row rows[b] (beam search)."""
        for k, v in zip(self.k_cache, self.v_cache):
            k.copy_(k.index_select(0, rows))
            v.copy_(v.index_select(0, rows))

    def new_slot_cache(self, slots: int, max_len: int) -> "SlotCache":
        """A KV cache of `slots` independent rows for batched decoding (`forward_rows`), separate from the
        cache `forward` uses (a batch keeps running while single-sequence calls use theirs)."""
        if max_len > self.freqs_cis.shape[0]:
            self._rope(max_len)
        shape = (slots, self.n_kv, max_len, self.hd)
        return SlotCache([torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers],
                         [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers])

    @torch.inference_mode()
    def forward_rows(self, ids: torch.Tensor, pos: torch.Tensor, slots: list[int], cache: "SlotCache") -> torch.Tensor:
        """Batched step with per-row positions: row b's ids [b, :T] are written at positions pos[b]..pos[b]+T-1
        of cache slot slots[b] and attend to that slot's positions 0..pos[b]+t only -> logits [B, V] of each
        row's last position. ids [B, T] long, pos [B] long (on the model's device), slots: distinct cache rows.
        On CPU with the native kernels, the linears of a decode batch (B*T <= kernels.GEMM_ROWS) run through
        kernels.rows_matmul (each weight read once per step for all rows) on the kernels' thread pool, and the
        small attention/norm ops on one thread, so PyTorch's OpenMP workers do not fight the pool's spinning
        workers for the cores (measured 2 threads on this 2-core box: 10-20x slower otherwise); everything else
        is PyTorch ops on the usual threads. One row and one token (a batch with one running row): the native
        batch-1 C step on that slot (kernels.decode_step(self, cache, slot)), as fast as `forward`'s."""
        if self.native_rows and ids.numel() == 1:   # one row, one token: the whole step in one native call
            if slots[0] not in cache.steps:
                cache.steps[slots[0]] = kernels.decode_step(self, cache, slots[0])
            step = cache.steps[slots[0]]
            if step is not None:
                if int(pos[0]) >= cache.max_len:
                    raise ValueError(f"position {int(pos[0]) + 1} is past the cache length {cache.max_len}")
                return step(int(ids[0, 0]), int(pos[0]))
        nth = torch.get_num_threads()
        if not (self.native_rows and ids.numel() <= kernels.GEMM_ROWS and nth > 1):
            return self._forward_rows(ids, pos, slots, cache, nth)
        torch.set_num_threads(1)
        try:
            return self._forward_rows(ids, pos, slots, cache, nth)
        finally:
            torch.set_num_threads(nth)

    def _forward_rows(self, ids, pos, slots, cache, nth: int) -> torch.Tensor:
        B, T = ids.shape
        H, Hkv, hd = self.n_heads, self.n_kv, self.hd
        P = pos[:, None] + torch.arange(T, device=ids.device)          # [B, T] absolute positions
        L = int(P.max()) + 1
        if L > cache.max_len:
            raise ValueError(f"position {L} is past the cache length {cache.max_len}")
        s0 = slots[0]
        contiguous = list(slots) == list(range(s0, s0 + B))            # cache rows readable as a view
        rows = torch.tensor(slots, device=ids.device)
        mask = (torch.arange(L, device=ids.device)[None, None] <= P[:, :, None])[:, None]   # [B, 1, T, L]
        hide = ~mask                                                    # decode: [B, 1, 1, L] keys to drop
        cis = self.freqs_cis[P][:, :, None]                             # [B, T, 1, hd/2]
        x = F.embedding(ids.reshape(-1), self.embed)                    # [B*T, D]
        for i, (ln1, qkv_proj, o_proj, ln2, gate_up, down) in enumerate(self.layers):
            qkv = self._rows_linear(nth, qkv_proj, self._norm(x, ln1)).view(B, T, H + 2 * Hkv, hd)
            if qkv.dtype == torch.float32:
                torch.view_as_complex(qkv.view(B, T, H + 2 * Hkv, hd // 2, 2))[:, :, : H + Hkv].mul_(cis)
            else:
                qk = qkv[:, :, : H + Hkv].float()
                torch.view_as_complex(qk.view(B, T, H + Hkv, hd // 2, 2)).mul_(cis)
                qkv[:, :, : H + Hkv] = qk
            kc, vc = cache.k[i], cache.v[i]                             # [slots, Hkv, max_len, hd]
            kc[rows[:, None], :, P] = qkv[:, :, H:H + Hkv]              # [B, T, Hkv, hd] into each row's slot
            vc[rows[:, None], :, P] = qkv[:, :, H + Hkv:]
            if contiguous:
                k, v = kc[s0:s0 + B, :, :L], vc[s0:s0 + B, :, :L]       # [B, Hkv, L, hd] views
            else:
                k, v = kc[rows, :, :L], vc[rows, :, :L]                 # gathered copies of the L used positions
            if T == 1:   # decode: q heads grouped by their kv head, two small matmuls (no SDPA dispatch)
                q = qkv[:, 0, :H].reshape(B, Hkv, H // Hkv, hd)         # [B, Hkv, rep, hd]
                att = torch.einsum("bgrd,bgld->bgrl", q, k).masked_fill_(hide, float("-inf"))  # [B, Hkv, rep, L]
                y = torch.matmul(att.softmax(-1), v).reshape(B, H * hd)
            else:
                q = qkv[:, :, :H].transpose(1, 2)                       # [B, H, T, hd]
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0, enable_gqa=Hkv != H)
                y = y.transpose(1, 2).reshape(B * T, H * hd)
            x = self._rows_linear(nth, o_proj, y, x)
            gu = self._rows_linear(nth, gate_up, self._norm(x, ln2), raw=True)   # [B*T, 2 hidden]
            act = F.silu(gu[:, : self.hidden]).mul_(gu[:, self.hidden:])
            x = self._rows_linear(nth, down, act, x)
        x = x.view(B, T, -1)[:, -1]                                     # [B, D]
        return self._rows_linear(nth, self.head, self._norm(x, self.norm))

    def _rows_linear(self, nth: int, lin, x, res=None, raw: bool = False):
        """lin(x) (+ res) for forward_rows: the native batched GEMM when it applies, else the linear itself."""
        if self.native_rows:
            y = kernels.rows_matmul(lin, x, res, nth)
            if y is not None:
                return y
        if res is not None:
            return lin.add_to(res, x)
        return lin.raw(x) if raw else lin(x)

    def _norm(self, x, w):
        # RMSNorm in fp32 like the training module (x is fp32 here unless the model is bf16)
        r = x.pow(2).sum(-1, keepdim=True).mul_(1.0 / x.shape[-1]).add_(self.eps).rsqrt_()   # sum: mean costs 2 more ops
        return torch.mul(x, r).mul_(w)

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, pos: int, mask: torch.Tensor | None = None, all_logits: bool = False) -> torch.Tensor:
        """ids [B, T] written at cache positions pos..pos+T-1 -> logits [B, V] of the last position
        ([B, T, V] with all_logits). `mask` [B, 1, T, pos+T] bool (True = attend) overrides the default
        (causal over everything cached), e.g. to hide left padding."""
        B, T = ids.shape
        H, Hkv, hd, L = self.n_heads, self.n_kv, self.hd, pos + T
        if L > self.max_len:
            raise ValueError(f"position {L} is past the cache length {self.max_len}")
        if self.decode_step is not None and T == 1 and B == 1 and mask is None and not all_logits:
            return self.decode_step(int(ids[0, 0]), pos)            # [1, V], the whole step in one native call
        x = F.embedding(ids.reshape(-1), self.embed)               # [B*T, D]
        cis = self.freqs_cis[pos:L, None]                           # [T, 1, hd/2]
        decode = T == 1 and mask is None
        if not decode and mask is None and pos > 0:                 # bottom-right causal over the cached prefix
            mask = torch.arange(L, device=ids.device)[None, :] <= torch.arange(pos, L, device=ids.device)[:, None]
        for i, (ln1, qkv_proj, o_proj, ln2, gate_up, down) in enumerate(self.layers):
            qkv = qkv_proj(self._norm(x, ln1)).view(B, T, H + 2 * Hkv, hd)
            if qkv.dtype == torch.float32:   # RoPE on q, k: one in-place complex multiply
                torch.view_as_complex(qkv.view(B, T, H + 2 * Hkv, hd // 2, 2))[:, :, : H + Hkv].mul_(cis)
            else:                            # bf16/fp16 have no complex view: rotate in fp32, write back
                qk = qkv[:, :, : H + Hkv].float()
                torch.view_as_complex(qk.view(B, T, H + Hkv, hd // 2, 2)).mul_(cis)
                qkv[:, :, : H + Hkv] = qk
            kc, vc = self.k_cache[i], self.v_cache[i]
            kc[:, :, pos:L].copy_(qkv[:, :, H:H + Hkv].transpose(1, 2))
            vc[:, :, pos:L].copy_(qkv[:, :, H + Hkv:].transpose(1, 2))
            k, v = kc[:, :, :L], vc[:, :, :L]                       # [B, Hkv, L, hd] views, no copy
            if decode:   # one query per row: q heads grouped by their kv head, two batched matmuls
                q = qkv[:, 0, :H].reshape(B * Hkv, H // Hkv, hd)    # [B*Hkv, rep, hd]
                k, v = k.view(B * Hkv, L, hd), v.view(B * Hkv, L, hd)
                y = torch.bmm(torch.bmm(q, k.transpose(1, 2)).softmax(-1), v)   # [B*Hkv, rep, hd]
                y = y.view(B, H * hd)
            else:
                q = qkv[:, :, :H].transpose(1, 2)                   # [B, H, T, hd]
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                                   scale=1.0, enable_gqa=Hkv != H)
                y = y.transpose(1, 2).reshape(B * T, H * hd)
            x = o_proj.add_to(x, y)
            gu = gate_up.raw(self._norm(x, ln2))                    # [B*T, 2 hidden] (bf16 for int8 kernels)
            act = F.silu(gu[:, : self.hidden]).mul_(gu[:, self.hidden:])
            x = down.add_to(x, act)
        if not all_logits:
            x = x.view(B, T, -1)[:, -1]                             # [B, D]: the head only for the last position
        logits = self.head(self._norm(x, self.norm))
        return logits.view(B, T, -1) if all_logits else logits


def int8_inference_model(model: Transformer, quantize_head: bool = True) -> InferenceModel:
    """`InferenceModel` of `model` with int8 linear weights (kernels/int8.py). Fused weights (q|k|v, gate|up) are
    quantized per output row, so fusing first or after gives the same int8 weights (scales are per row).
    Activations, norms and the KV cache stay in the model's dtype (the model is not modified)."""
    return InferenceModel(model, make_linear=Int8Linear, quantize_head=quantize_head)
