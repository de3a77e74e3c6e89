"""int8 weight-only quantization for CPU chat.

    hessgpt quantize runs/tiny --int8 --out runs/tiny-int8           # a quantized checkpoint folder
    engine = Engine(model, tok, int8=True)                           # or quantize an engine in memory
    model, tok = load_quantized("runs/tiny-int8")                    # Engine(model) then decodes in int8

Scheme: every linear weight W [out, in] (q|k|v, o, gate|up, down, and the LM head) becomes
    q = clamp(round(W / s), -127, 127) int8,   s[o] = bf16(max_i |W[o, i]| / 127)   (one scale per output row)
The scale is rounded to bf16 so the kernel (`torch._weight_int8pack_mm`, bf16 activations, AVX512 on CPU)
uses it exactly, and so dequantize -> quantize gives back the same int8 weights. Embeddings and RMSNorm
weights stay fp32 (one embedding row is read per token, so they cost no decode bandwidth).

Quantized checkpoint = a normal HessGPT checkpoint folder where model.safetensors holds, for each quantized
weight NAME, an int8 tensor NAME [out, in] plus NAME.scale fp32 [out]; meta.json has
`"quantization": {"method": "int8-weight-only", "scale": "per-output-channel absmax/127, bf16-exact", "tensors": [...]}`.
`load_quantized` (and `hessgpt.load` via `checkpoint.load`, when it routes quantized folders here) returns a
Transformer holding the dequantized weights (so everything else works on it) with `model.int8_state` set,
which makes `Engine(model)` decode with the int8 kernels.
"""

import argparse
import json
import os

import torch

from hessgpt.errors import HessGPTError

METHOD = "int8-weight-only"
LINEAR_SUFFIXES = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight",
                   "gate_proj.weight", "up_proj.weight", "down_proj.weight")


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W [out, in] float -> (q int8 [out, in], scale fp32 [out]), symmetric per output channel."""
    w = w.detach().float()
    amax = w.abs().amax(dim=1).clamp(min=1e-12)
    scale = (amax / 127).to(torch.bfloat16).float()                 # bf16-exact scale
    q = torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8)
    return q, scale


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale[:, None]


class Int8Linear:
    """y = x @ dequant(W).T through `torch._weight_int8pack_mm` (int8 weights read once, bf16 activations,
    fp32 accumulation). Same interface as model.DenseLinear. On CPU with the native kernels (hessgpt/kernels),
    batch-1 decoding bypasses this class: the whole step runs in C on the same int8 weights, fp32 activations."""

    kind = "int8"

    def __init__(self, weight: torch.Tensor, q: torch.Tensor | None = None, scale: torch.Tensor | None = None):
        if q is None:
            q, scale = quantize_weight(weight)
        from hessgpt.kernels import huge_page_copy

        self.q = huge_page_copy(q)                                   # [out, in] int8 (2 MiB pages on CPU)
        self.scale = scale.to(torch.bfloat16).to(q.device)           # [out], exact (bf16-rounded at quantization)
        self.scale_f32 = self.scale.float()                          # [out], the same values for the native kernels
        self.out_features = q.shape[0]

    def __call__(self, x):
        return torch._weight_int8pack_mm(x.to(torch.bfloat16), self.q, self.scale).to(x.dtype)

    def raw(self, x):
        """Output left in bf16 (saves two casts when the next op is another int8 matmul)."""
        return torch._weight_int8pack_mm(x.to(torch.bfloat16), self.q, self.scale)

    def add_to(self, res, x):
        return res.add_(torch._weight_int8pack_mm(x.to(torch.bfloat16), self.q, self.scale))

    def nbytes(self) -> int:
        return self.q.numel() + self.scale.numel() * 2


def int8_inference_model(model, quantize_head: bool = True):
    """`InferenceModel` of `model` with int8 linear weights. Fused weights (q|k|v, gate|up) are quantized
    per output row, so fusing first or after gives the same int8 weights (scales are per row). Activations,
    norms and the KV cache stay in the model's dtype (the model is not modified)."""
    from hessgpt.model import InferenceModel

    return InferenceModel(model, make_linear=Int8Linear, quantize_head=quantize_head)


def quantize_engine(engine) -> None:
    """Switch an existing Engine to int8 weights in place."""
    engine.int8 = True
    engine._build_fast()
    engine.fast.setup_cache(max(engine._cache_batch, 1), engine.max_len)


# ---- quantized checkpoints ------------------------------------------------------------------------


def is_quantized(path: str) -> bool:
    meta = os.path.join(str(path), "meta.json")
    if not os.path.exists(meta):
        return False
    with open(meta) as f:
        return (json.load(f).get("quantization") or {}).get("method") == METHOD


def _quantized_names(sd: dict, tie_embeddings: bool) -> list[str]:
    names = [k for k in sd if k.endswith(LINEAR_SUFFIXES)]
    if not tie_embeddings and "lm_head.weight" in sd:
        names.append("lm_head.weight")
    return names


def save_quantized(ckpt: str, out: str) -> dict:
    """Quantize checkpoint `ckpt` into folder `out`; returns {"fp32_bytes", "int8_bytes", "tensors"}."""
    from safetensors.torch import save_file

    from hessgpt import checkpoint

    if is_quantized(ckpt):
        raise HessGPTError(f"{ckpt}: already an int8 checkpoint")
    model, tokenizer = checkpoint.load(ckpt)
    cfg = model.config
    sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    if cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)
    names = _quantized_names(sd, cfg.tie_embeddings)
    out_sd, fp32_bytes, int8_bytes = {}, 0, 0
    for k, v in sd.items():
        fp32_bytes += v.numel() * 4
        if k in names:
            q, s = quantize_weight(v)
            out_sd[k], out_sd[k + ".scale"] = q, s
            int8_bytes += q.numel() + s.numel() * 4
        else:
            out_sd[k] = v
            int8_bytes += v.numel() * 4
    try:
        meta = checkpoint.read_meta(ckpt)
    except OSError:
        meta = {}

    def write(tmp: str) -> None:
        cfg.to_json(os.path.join(tmp, "config.json"))
        save_file(out_sd, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt", "quantization": METHOD})
        if tokenizer is not None:
            tokenizer.save(tmp)
        m = {**{k: v for k, v in meta.items() if k not in ("quantization",)},
             "format": checkpoint.FORMAT, "version": checkpoint.VERSION, "stage": "quantize", "parent": os.path.abspath(ckpt),
             "quantization": {"method": METHOD, "scale": "per-output-channel absmax/127, bf16-exact, stored fp32 as NAME.scale",
                              "tensors": names}}
        with open(os.path.join(tmp, checkpoint.GENERATION_CONFIG), "w") as f:  # the fp32 model's sampling
            json.dump(checkpoint.full_generation_config(checkpoint.read_generation_config(ckpt)), f, indent=2)
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(m, f, indent=2, default=str)

    checkpoint.atomic_dir_write(out, write)
    return {"fp32_bytes": fp32_bytes, "int8_bytes": int8_bytes, "tensors": len(names)}


def load_quantized(path: str, device=None):
    """(model, tokenizer) from an int8 checkpoint: a Transformer with the dequantized weights and
    `model.int8_state = {name: (q, scale)}`, so `Engine(model)` decodes in int8 with exactly these weights."""
    from safetensors.torch import load_file

    from hessgpt.checkpoint import find_tokenizer, load_state_dict_strict
    from hessgpt.config import ModelConfig
    from hessgpt.model import Transformer, rope_tables

    path = str(path)
    if not is_quantized(path):
        raise HessGPTError(f"{path}: not an int8 checkpoint (meta.json has no quantization entry)")
    cfg = ModelConfig.from_json(os.path.join(path, "config.json"))
    raw = load_file(os.path.join(path, "model.safetensors"))
    sd, state = {}, {}
    for k, v in raw.items():
        if k.endswith(".scale"):
            continue
        if v.dtype == torch.int8:
            if k + ".scale" not in raw:
                raise HessGPTError(f"{path}/model.safetensors: int8 tensor {k} has no {k}.scale")
            state[k] = (v, raw[k + ".scale"].float())
            sd[k] = dequantize_weight(*state[k])
        else:
            sd[k] = v.float()
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device="cpu")
    load_state_dict_strict(model, sd, source=path)
    model.rope_cos, model.rope_sin = rope_tables(cfg.head_dim, cfg.context_length, cfg.rope_theta)
    if device is not None:
        model = model.to(device)
    model.int8_state = state
    return model.eval(), find_tokenizer(path)


# ---- quality checks ---------------------------------------------------------------------------------


def greedy_agreement(model, prompts: list[list[int]], n_tokens: int = 32) -> dict:
    """Greedy continuations of fp32 vs int8 engines: fraction of prompts whose first n_tokens are identical,
    and the mean length of the common prefix."""
    from hessgpt.engine import Engine, SamplingParams

    fp, q = Engine(model, int8=False), Engine(model, int8=True)
    params = SamplingParams(max_new_tokens=n_tokens, stop_token_ids=[-1])
    same, prefix = 0, 0
    for p in prompts:
        a, b = fp.generate(p, params), q.generate(p, params)
        same += a == b
        k = 0
        while k < min(len(a), len(b)) and a[k] == b[k]:
            k += 1
        prefix += k
    return {"identical": same / len(prompts), "mean_common_prefix": prefix / len(prompts), "prompts": len(prompts)}


def perplexity(engine, ids: list[int], window: int | None = None) -> float:
    """Perplexity of token ids under an Engine's fast path (fp32 or int8), non-overlapping windows."""
    import math

    fast = engine.fast
    window = min(window or engine.max_len, engine.max_len)
    fast.setup_cache(1, engine.max_len)
    nll, count = 0.0, 0
    for start in range(0, len(ids) - 1, window):
        chunk = torch.tensor([ids[start:start + window + 1]], device=engine.device)
        if chunk.shape[1] < 2:
            break
        logits = fast.forward(chunk[:, :-1], 0, all_logits=True).float()
        loss = torch.nn.functional.cross_entropy(logits[0], chunk[0, 1:], reduction="sum")
        nll += float(loss)
        count += chunk.shape[1] - 1
    return math.exp(nll / count)


# ---- CLI -----------------------------------------------------------------------------------------


def cli_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="hessgpt quantize", description="int8 weight-only quantization of a checkpoint (CPU chat).")
    p.add_argument("ckpt", help="HessGPT checkpoint folder (or anything hessgpt.load reads)")
    p.add_argument("--int8", action="store_true", required=True, help="int8 weights, per-output-channel scales")
    p.add_argument("--out", required=True, help="output checkpoint folder")
    args = p.parse_args(argv)
    stats = save_quantized(args.ckpt, args.out)
    print(f"wrote {args.out}: {stats['tensors']} int8 tensors, weights {stats['fp32_bytes'] / 2**20:.1f} MiB fp32 -> "
          f"{stats['int8_bytes'] / 2**20:.1f} MiB (load with hessgpt.quantize.load_quantized or Engine(model, int8=True))")
    return 0
