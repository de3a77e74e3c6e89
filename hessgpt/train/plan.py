"""The memory and time of a training step, before the run: what `pretrain`/`sft` check against free memory and
what `hessgpt pipeline RECIPE --plan --gpu NAME` prints per stage.

    mem = estimate(cfg, Step(batch=16, seq_len=2048, amp="bf16"))      # -> Memory (bytes per part)
    mem.total, mem.saved                                               # peak bytes; bytes kept for backward

The activation terms are what autograd really saves for the backward of this repo's model (hessgpt/model.py,
eager mode), counted tensor by tensor with `torch.autograd.graph.saved_tensors_hooks` on CPU and written here
as bytes per token per layer (d = dim, q = n_heads * head_dim, k = n_kv_heads * head_dim, h = hidden_dim,
a = 2 under bf16/fp16 autocast, 4 in fp32; the residual stream and RMSNorm stay fp32):

    RMSNorm (x2)         input 4d + rsqrt 4 + normalised 4d (the last only when its weight trains)
    linear inputs        each consumer casts its own copy under autocast: q, k, v -> 3 a d; gate, up -> 2 a d;
                         fp32: the norm's output, shared (4d); not kept for frozen weights (LoRA)
    attention ("flash")  q, k, v, out (a each; k, v at kv width: SDPA enable_gqa) + logsumexp 4 per head;
                         SDPA flash / memory-efficient (CUDA), the CPU flash kernel and FlexAttention ("flex",
                         packed rows on CUDA) keep no T^2 scores
    attention ("math")   CPU packed rows (model.masked_attention): the softmax probabilities, a T^2 per head
    attention ("masked") CUDA SDPA with a dense [B,1,T,T] mask: + the mask converted to a bias, T^2 per row per layer
    SwiGLU               gate, up, silu(gate), product: 4 a h (the product only for a trained down_proj)
    LoRA (per target)    dropout mask (1 byte on CUDA, the input's dtype on CPU) + the adapter's input a*in + A's output a r
    checkpointed block   only its fp32 input 4d; one block is recomputed at a time during backward

plus the embedding's ids, the final norm, and the head: without chunking its autocast input and fp32 log-probs
of the vocabulary (4 V per token: `cross_entropy` keeps log_softmax's output); with the model's chunked
cross-entropy (`model(x, targets=y)`, more than CE_CHUNK rows) only the fp32 final hidden state (4 d), each chunk's
logits being recomputed in backward. Also the bf16 copies of the weights that autocast keeps for backward.
The peak adds the logits of one chunk (or all rows) and their fp32 gradients at the start of backward
((a + 12) V per row), weights (fp32), gradients and the two AdamW moments of the trainable parameters, autocast's
cache of trainable weights, and a backward allowance (one recomputed block with checkpointing, gradient buffers
of one block's widest activations). tests/train/test_memory.py checks `Memory.saved` against measured saved
bytes within 15% (base, LoRA, checkpointed blocks, chunked cross-entropy, packed rows).
"""

import math
from dataclasses import dataclass, field

from hessgpt.config import ModelConfig
from hessgpt.errors import HessGPTError
from hessgpt.model import CE_CHUNK

GiB = 2**30
ATTENTION_KERNELS = ("flash", "flex", "math", "masked")
LORA_INPUTS = {"q_proj": "d", "k_proj": "d", "v_proj": "d", "gate_proj": "d", "up_proj": "d", "o_proj": "q", "down_proj": "h"}


@dataclass
class LoRAShape:
    r: int
    targets: tuple[str, ...]
    dropout: float = 0.0


@dataclass
class Step:
    """One training micro-step as the estimator sees it."""

    batch: int
    seq_len: int
    amp: str | None = "bf16"          # "bf16", "fp16" or None (fp32)
    lora: LoRAShape | None = None     # None: every weight trains
    checkpointing: bool = False       # activation checkpointing per block
    attention: str = "flash"          # flash | math | masked (see the module docstring)
    device: str = "cuda"              # "cuda" or "cpu": dropout masks are 1 byte on CUDA
    gqa_repeat: bool = False          # True: kv heads repeated to n_heads before SDPA (False: SDPA enable_gqa)
    loss_fraction: float = 1.0        # share of positions whose logits are computed (sft: loss-mask positions)
    ce_chunk: int | None = None       # model(x, targets=y): logits of at most this many rows at once (model.CE_CHUNK)
    fsdp_world: int = 1               # weights, grads and optimizer states sharded over this many ranks

    def __post_init__(self):
        if self.attention not in ATTENTION_KERNELS:
            raise HessGPTError(f"attention kernel {self.attention!r}: use one of {', '.join(ATTENTION_KERNELS)}")
        if self.amp not in (None, "bf16", "fp16"):
            raise HessGPTError(f"amp {self.amp!r}: use bf16, fp16 or None (fp32)")


@dataclass
class Memory:
    """Bytes of one training step's peak, by part."""

    weights: int
    grads: int
    optimizer: int
    weight_casts: int                           # bf16 weight copies alive at the peak (autocast's cache)
    casts_saved: int                            # ... of which autograd keeps for backward
    activations: int
    logits_saved: int
    logits_peak: int
    backward: int
    parts: dict = field(default_factory=dict)   # activation bytes by kind, for the printed breakdown

    @property
    def saved(self) -> int:
        """What autograd keeps for backward at the end of the forward (incl. the loss): the measured quantity."""
        return self.casts_saved + self.activations + self.logits_saved

    @property
    def total(self) -> int:
        return (self.weights + self.grads + self.optimizer + self.weight_casts + self.activations
                + self.logits_peak + self.backward)

    def breakdown(self) -> str:
        items = [("weights", self.weights), ("grads", self.grads), ("AdamW", self.optimizer),
                 ("casts", self.weight_casts), ("activations", self.activations),
                 ("logits", self.logits_peak), ("backward", self.backward)]
        return " + ".join(f"{name} {v / GiB:.1f}" for name, v in items) + f" = {self.total / GiB:.1f} GiB"


def _lora_params(cfg: ModelConfig, lora: LoRAShape) -> int:
    q, k, d, h = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.dim, cfg.hidden_dim
    shapes = {"q_proj": (d, q), "k_proj": (d, k), "v_proj": (d, k), "o_proj": (q, d),
              "gate_proj": (d, h), "up_proj": (d, h), "down_proj": (h, d)}
    return cfg.n_layers * sum(lora.r * (shapes[t][0] + shapes[t][1]) for t in lora.targets)


def trainable_params(cfg: ModelConfig, lora: LoRAShape | None) -> int:
    return _lora_params(cfg, lora) if lora else cfg.num_params()


def block_saved_bytes(cfg: ModelConfig, s: Step) -> dict[str, float]:
    """Bytes one block keeps for backward per token (by kind); T^2 terms per token too (x seq_len)."""
    a = 4 if s.amp is None else 2
    d, h, H = cfg.dim, cfg.hidden_dim, cfg.n_heads
    q, kv = H * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    kvs = q if s.gqa_repeat else kv                     # width of the k, v that SDPA keeps
    T = s.seq_len
    full = s.lora is None
    targets = set(s.lora.targets) if s.lora else set()
    p = s.lora.dropout if s.lora else 0.0

    def inputs(n: int, width: int) -> float:            # the input of n trained linears reading one fp32 tensor
        if n == 0:
            return 0
        return n * 2 * width if s.amp else 4 * width

    out = {}
    out["norms"] = 2 * (4 * d + 4 + (4 * d if full else 0))
    out["attention"] = 2 * a * q + 2 * a * kvs + 4 * H  # q, k, v, out + logsumexp
    if s.attention == "math":                           # q, k, v, o_proj's copy of the output + softmax probs
        out["attention"] += H * T * a - 4 * H
    elif s.attention == "masked":
        out["attention"] += T * (2 if s.amp else 4)     # the bool mask as an additive bias, per row and layer
    mlp = 3 * a * h
    if full:
        out["linear_inputs"] = inputs(3, d) + inputs(2, d)
        mlp += a * h                                    # down_proj's input
    else:
        out["linear_inputs"] = 0
        mask_cuda = s.device == "cuda"
        lora = 0.0
        shared_fp32 = {}
        for t in sorted(targets):
            width = {"d": d, "q": q, "h": h}[LORA_INPUTS[t]]
            fp32_input = LORA_INPUTS[t] == "d"          # q, k, v, gate, up read the fp32 norm output
            if p > 0:
                mask = 1 if mask_cuda else (4 if fp32_input or s.amp is None else a)
                lora += mask * width + (2 if s.amp else 4) * width
            elif s.amp:                                 # a cast per adapter, or the bf16 tensor itself
                lora += 2 * width if fp32_input else (0 if t == "o_proj" else a * width)
            else:
                shared_fp32[LORA_INPUTS[t]] = 4 * width if not (t == "o_proj") else 0
            lora += a * s.lora.r                        # lora_A's output, kept by lora_B
        out["lora"] = lora + sum(shared_fp32.values())
    out["mlp"] = mlp
    if cfg.dropout > 0:                                 # the two residual dropouts' masks
        out["dropout"] = 2 * d * (1 if s.device == "cuda" else a)
    return out


def estimate(cfg: ModelConfig, s: Step) -> Memory:
    a = 4 if s.amp is None else 2
    d, V, L = cfg.dim, cfg.vocab_size, cfg.n_layers
    N = s.batch * s.seq_len                             # tokens per micro-batch
    n_params = cfg.num_params()
    trainable = trainable_params(cfg, s.lora)
    world = s.fsdp_world
    weights = 4 * (n_params + (trainable if s.lora else 0)) / world
    grads = 4 * trainable / world
    optimizer = 8 * trainable / world

    # bf16 copies of the matmul weights made by autocast (the embedding lookup stays fp32): backward keeps those
    # of the blocks and head it does not recompute; autocast's cache also holds the trainable ones until it exits
    q, kv, h = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.hidden_dim
    block_mm, head_mm = L * (2 * d * q + 2 * d * kv + 3 * d * h), V * d
    adapters = trainable if s.lora else 0
    head_rows = math.ceil(N * s.loss_fraction)
    chunked = s.ce_chunk is not None and head_rows > s.ce_chunk    # model.chunked_cross_entropy: one plain pass otherwise
    casts_saved = casts = 0
    if s.amp:
        casts_saved = 2 * ((0 if s.checkpointing else block_mm + adapters) + (0 if chunked else head_mm))
        casts = casts_saved if s.lora else 2 * (block_mm + head_mm)

    per_block = block_saved_bytes(cfg, s)
    block = sum(per_block.values()) * N
    rope = 2 * s.seq_len * cfg.head_dim * 4             # cos, sin [T, hd] fp32, shared by the layers
    if s.checkpointing:
        acts_layers = L * 4 * d * N                     # each block's fp32 input
        backward = block                                # one block recomputed at a time
    else:
        acts_layers = L * block
        backward = 0
    backward += 2 * 4 * N * max(h, d)                   # gradient buffers of the widest activations of a block
    if s.attention == "masked":
        rope += N * s.seq_len                           # the bool mask, once
    ids = 8 * N if s.lora is None else 0               # the embedding keeps its ids when it trains
    # final norm (x_hat only when its weight trains) + the head's input: its autocast copy, or with chunked
    # cross-entropy the fp32 norm output that each checkpointed chunk keeps
    head_in = 4 * d if chunked else (0 if s.lora else (2 * d if s.amp else 4 * d))
    activations = acts_layers + ids + rope + (4 * d + 4 + (4 * d if s.lora is None else 0)) * N + head_in * head_rows
    if s.lora and not s.checkpointing:                  # the first norm's input needs no gradient (frozen embedding)
        activations -= (4 * d + 4) * N
    # logits: log_softmax keeps fp32 log-probs (4 V) and nll its int64 targets; at the start of backward the
    # logits (a V), the log-probs, their gradient and the logits' fp32 gradient coexist: (a + 12) V per row
    rows = s.ce_chunk if chunked else head_rows
    logits_saved = 8 * head_rows + (0 if chunked else 4 * V * head_rows)
    logits_peak = (a + 12) * V * rows + 8 * head_rows
    if chunked and s.amp:
        logits_peak += 2 * head_mm                      # the head's copy, recomputed per chunk
    parts = {k: v * N * (1 if s.checkpointing else L) for k, v in per_block.items()}
    return Memory(int(weights), int(grads), int(optimizer), int(casts), int(casts_saved), int(activations), int(logits_saved),
                  int(logits_peak), int(backward), parts)


def measure_saved_bytes(fn, params) -> int:
    """Bytes of the tensors autograd saves for backward while `fn()` runs (each storage once, parameters
    excluded: they are counted as weights): what `Memory.saved` estimates."""
    import torch

    skip = {p.untyped_storage().data_ptr() for p in params}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in skip:
            seen.setdefault(st.data_ptr(), st.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())
