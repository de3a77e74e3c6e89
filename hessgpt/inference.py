"""The inference-only model: a read-only, pre-laid-out copy of a training `Transformer` (model.py) that the
engine decodes through, with its own KV caches (one batch cache for `forward`, slot caches for `forward_rows`).

    fast = InferenceModel(model)             # or int8_inference_model / int4_inference_model (kernels/int8.py, int4.py)
    fast.setup_cache(batch=1, max_len=2048)
    logits = fast.forward(ids, pos)          # ids [B, T] at absolute positions pos..pos+T-1 -> [B, V] (last)

Batch-1 decoding on a CPU is either bandwidth-bound (every weight is read once per token) or, for small
models, bound by per-op dispatch overhead (~2-10 us per PyTorch op). The training modules of model.py cost ~45
ops per layer per token; `InferenceModel` does the same math in ~16 by laying the weights out once:
  - q|k|v and gate|up fused into one matmul each, weights stored transposed ([in, out], the layout whose
    matrix-vector product is fastest through MKL here), the attention scale folded into wq;
  - q/k output rows permuted per head from HF's rotate-half layout to interleaved pairs, so RoPE is one
    in-place complex multiply (q.k is unchanged: both sides get the same permutation);
  - residual adds fused into the o/down matmuls (addmm); RMSNorm in 5 ops; logits for the last position only;
  - its own preallocated KV cache written in place; decode attention as two small matmuls (GQA by reshape).
The Transformer is untouched (parameter names, training path); the Engine builds this view at creation.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from hessgpt import kernels
from hessgpt.kernels import int4
from hessgpt.kernels.dense import DenseLinear
from hessgpt.kernels.int8 import Int8Linear
from hessgpt.model import Transformer


def rope_interleave_perm(n_heads: int, head_dim: int) -> torch.Tensor:
    """Row order taking rotate-half layout [x0..x_{h-1}, x_h..x_{2h-1}] to pairs [x0, x_h, x1, x_{h+1}, ...]
    within each head (the layout llama.cpp's GGUF conversion uses too)."""
    half = head_dim // 2
    one = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).reshape(-1)   # [hd]
    return (torch.arange(n_heads)[:, None] * head_dim + one[None]).reshape(-1)            # [n_heads * hd]


@dataclass
class SlotCache:
    """K and V per layer, [slots, n_kv, max_len, hd] each: one independent sequence per slot (batched decode)."""

    k: list
    v: list
    steps: dict = field(default_factory=dict)   # slot -> native batch-1 step on that slot (or None), lazily
    rows: object = False                        # the native step of several rows (kernels.RowsStep or None), lazily

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
    (dense fp32/bf16 in kernels/dense.py; int8 weight-only in kernels/int8.py). The default (None) is the native AVX2/AVX-512
    kernels of hessgpt/kernels for an fp32 model on CPU when they can be built there, else DenseLinear; with
    them, a batch-1 cache decodes each token in one native call (`decode_step`, the whole step in C).
    """

    def __init__(self, model: Transformer, make_linear=None, quantize_head: bool = True):
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
        batch-1 C step on that slot (kernels.decode_step(self, cache, slot)), as fast as `forward`'s; several
        rows of one token each (a decode step): the native step of all rows (kernels.rows_step), every weight
        read once for the batch and no PyTorch op per layer."""
        if self.native_rows and ids.numel() == 1:   # one row, one token: the whole step in one native call
            if slots[0] not in cache.steps:
                cache.steps[slots[0]] = kernels.decode_step(self, cache, slots[0])
            step = cache.steps[slots[0]]
            if step is not None:
                if int(pos[0]) >= cache.max_len:
                    raise ValueError(f"position {int(pos[0]) + 1} is past the cache length {cache.max_len}")
                return step(int(ids[0, 0]), int(pos[0]))
        if self.native_rows and ids.shape[1] == 1 and ids.device.type == "cpu":   # B rows, one token each
            if cache.rows is False:
                cache.rows = kernels.rows_step(self, cache)
            if cache.rows is not None:
                P = pos.tolist()
                if max(P) >= cache.max_len:
                    raise ValueError(f"position {max(P) + 1} is past the cache length {cache.max_len}")
                return cache.rows(ids[:, 0].tolist(), P, list(slots))
        nth = torch.get_num_threads()
        if not (self.native_rows and ids.numel() <= kernels.GEMM_ROWS and nth > 1):
            return self._forward_rows(ids, pos, slots, cache, nth)
        torch.set_num_threads(1)
        try:
            return self._forward_rows(ids, pos, slots, cache, nth)
        finally:
            torch.set_num_threads(nth)

    @torch.inference_mode()
    def forward_tokens(self, tokens: list[int], pos: list[int], slots: list[int], cache: "SlotCache",
                       out: list[int]) -> torch.Tensor | None:
        """A ragged batch in one forward: token tokens[i] at position pos[i] of slot slots[i]; tokens of one slot at
        consecutive positions are causal (a prompt chunk next to other slots' decode tokens) -> logits [len(out), V]
        of the rows `out` (ascending). The native whole step of kernels.rows_step; None where it does not apply
        (not CPU with the native kernels): the caller runs forward_rows per sequence instead."""
        if not self.native_rows:
            return None
        if cache.rows is False:
            cache.rows = kernels.rows_step(self, cache)
        return None if cache.rows is None else cache.rows(tokens, pos, slots, out)

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
    def forward(self, ids: torch.Tensor, pos: int, all_logits: bool = False) -> torch.Tensor:
        """ids [B, T] written at cache positions pos..pos+T-1 -> logits [B, V] of the last position
        ([B, T, V] with all_logits); each query attends to every cached position up to its own (causal over
        everything cached: the rows of a batch all start at 0, as in beam search; rows at their own positions
        are `forward_rows`)."""
        B, T = ids.shape
        H, Hkv, hd, L = self.n_heads, self.n_kv, self.hd, pos + T
        if L > self.max_len:
            raise ValueError(f"position {L} is past the cache length {self.max_len}")
        if self.decode_step is not None and T == 1 and B == 1 and not all_logits:
            return self.decode_step(int(ids[0, 0]), pos)            # [1, V], the whole step in one native call
        x = F.embedding(ids.reshape(-1), self.embed)               # [B*T, D]
        cis = self.freqs_cis[pos:L, None]                           # [T, 1, hd/2]
        decode = T == 1
        mask = None                                                 # pos 0: plain causal (is_causal)
        if not decode and pos > 0:                                  # bottom-right causal over the cached prefix
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


def int4_inference_model(model: Transformer) -> InferenceModel:
    """`InferenceModel` of `model` with int4 Q4_0 linear weights (kernels/int4.py; a matrix whose rows are not a
    multiple of 32 stays int8). Blocks run along each output row, so fusing q|k|v and gate|up quantizes the same
    blocks as the separate matrices. Activations, norms, embeddings and the KV cache stay fp32."""
    return InferenceModel(model, make_linear=int4.make_linear)
