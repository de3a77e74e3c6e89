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
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from hessgpt.config import ModelConfig


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
        if self.n_kv_heads != self.n_heads:                     # GQA: share each kv head across a group
            rep = self.n_heads // self.n_kv_heads
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        dropout = self.dropout if self.training else 0.0
        # mask None + causal: training/full forward (flash kernels on GPU); mask None + not causal: one decoded
        # token attending to the whole filled cache; otherwise an explicit boolean mask, True = attend.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None, dropout_p=dropout)
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

    def _rope(self, positions: torch.Tensor, device):
        needed = int(positions.max()) + 1
        if needed > self.rope_cos.shape[0]:  # longer than the context: extend the tables (no error; quality is the user's call)
            cos, sin = rope_tables(self.config.head_dim, max(needed, 2 * self.rope_cos.shape[0]), self.config.rope_theta)
            self.rope_cos, self.rope_sin = cos.to(device), sin.to(device)
        return self.rope_cos[positions], self.rope_sin[positions]

    def forward(self, idx: torch.Tensor, input_pos: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                kv_len: int | None = None, return_hidden: bool = False) -> torch.Tensor:
        """idx [B, T] -> logits [B, T, V].

        Training/full forward: idx alone (causal attention), or `mask` [B, 1, T, T] bool for packed rows.
        With caches (`setup_caches`): `input_pos` [T] are the absolute positions written to the cache and
        `mask` [B, 1, T, kv_len or cache_len] bool says which cached keys each query may see (the engine
        builds it: bottom-right causal, padding excluded). Positions may also be [B, T] for per-row RoPE.
        """
        B, T = idx.shape
        if input_pos is None:
            positions = torch.arange(T, device=idx.device)
        else:
            positions = input_pos
        cos, sin = self._rope(positions, idx.device)
        if cos.dim() == 3:  # per-row positions [B, T, hd] -> [B, 1, T, hd]
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        cache_pos = input_pos if input_pos is None or input_pos.dim() == 1 else input_pos[0]
        causal = True
        if self.has_cache and mask is None:
            if cache_pos is None:
                raise ValueError("a model with KV caches needs input_pos")
            kv = kv_len or self.cache_len
            if T == 1:
                causal = False  # the single new token may see every filled position
            else:  # bottom-right causal mask: query at position p sees keys 0..p (is_causal would align top-left)
                mask = torch.arange(kv, device=idx.device)[None, :] <= cache_pos[:, None]   # [T, kv]
        x = self.model.embed_tokens(idx)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask, cache_pos, kv_len, causal)
        x = self.model.norm(x)
        if return_hidden:
            return x
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


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None):
    """Mean next-token loss. logits [B, T, V], targets [B, T], mask [B, T] (1 = train on this target)."""
    loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    if mask is None:
        return loss.mean()
    m = mask.reshape(-1).to(loss.dtype)
    return (loss * m).sum() / m.sum().clamp(min=1)
