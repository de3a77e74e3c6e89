"""Weight-only quantization for CPU chat: int8 (per output row) or int4 (llama.cpp's Q4_0 blocks).

    hessgpt quantize runs/tiny --int8 --out runs/tiny-int8           # a quantized checkpoint folder
    hessgpt quantize runs/tiny --int4 --out runs/tiny-int4           # Q4_0: 4.5 bits a weight (kernels/int4.py)
    engine = Engine(model, tok, int8=True)                           # or engine.quantize_int8() / int4=True
    model, tok = load_quantized("runs/tiny-int8")                    # Engine(model) then decodes in int8

Scheme (kernels/int8.py, where the int8 linear layer lives): every linear weight W [out, in] (q|k|v, o,
gate|up, down, and the LM head) becomes
    q = clamp(round(W / s), -127, 127) int8,   s[o] = bf16(max_i |W[o, i]| / 127)   (one scale per output row)
The scale is rounded to bf16 so the kernel (`torch._weight_int8pack_mm`, bf16 activations, AVX512 on CPU)
uses it exactly, and so dequantize -> quantize gives back the same int8 weights. Embeddings and RMSNorm
weights stay fp32 (one embedding row is read per token, so they cost no decode bandwidth).

Quantized checkpoint = a normal HessGPT checkpoint folder where model.safetensors holds, for each quantized
weight NAME, an int8 tensor NAME [out, in] plus NAME.scale fp32 [out]; meta.json has
`"quantization": {"method": "int8-weight-only", "scale": "per-output-channel absmax/127, bf16-exact", "tensors": [...]}`.
An int4 folder is the same with, for each quantized NAME, a uint8 tensor NAME [out, in / 2] (two Q4_0 weights a
byte) plus NAME.scale fp32 [out, in / 32] (fp16-exact), and the method "int4-q4_0-weight-only"; a matrix whose
rows are not a multiple of 32 weights is stored int8 there (kernels/int4.make_linear does the same in memory).
This module writes it (`save_quantized`, from anything hessgpt.load reads); checkpoint.py reads it
(`load_quantized`, also what `hessgpt.load` and `checkpoint.load` use for such a folder): a Transformer holding
the dequantized weights (so everything else works on it) with `model.int8_state` set, which makes
`Engine(model)` decode with the int8 kernels.
"""

import argparse
import json
import math
import os

import torch
from safetensors.torch import save_file

from hessgpt import checkpoint
from hessgpt.checkpoint import INT4_METHOD, QUANTIZATION_METHOD as METHOD, is_quantized, load_quantized
from hessgpt.engine import Engine, SamplingParams
from hessgpt.errors import HessGPTError
from hessgpt.kernels import int4
from hessgpt.kernels.int8 import Int8Linear, dequantize_weight, quantize_weight
from hessgpt.loader import load
from hessgpt.inference import int8_inference_model

# re-exported: the int8 layer and its (de)quantization (kernels/int8.py), the int8 InferenceModel (inference.py),
# the int8 folder reader (checkpoint.py)
__all__ = ["METHOD", "INT4_METHOD", "LINEAR_SUFFIXES", "Int8Linear", "quantize_weight", "dequantize_weight", "int8_inference_model",
           "quantize_engine", "is_quantized", "load_quantized", "save_quantized", "greedy_agreement", "perplexity",
           "cli_main"]

LINEAR_SUFFIXES = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight",
                   "gate_proj.weight", "up_proj.weight", "down_proj.weight")


def quantize_engine(engine: Engine) -> None:
    """Switch an existing Engine to int8 weights in place (`engine.quantize_int8()`)."""
    engine.quantize_int8()


# ---- quantized checkpoints ------------------------------------------------------------------------


def _quantized_names(sd: dict, tie_embeddings: bool) -> list[str]:
    names = [k for k in sd if k.endswith(LINEAR_SUFFIXES)]
    if not tie_embeddings and "lm_head.weight" in sd:
        names.append("lm_head.weight")
    return names


def save_quantized(ckpt: str, out: str, bits: int = 8) -> dict:
    """Quantize checkpoint `ckpt` (anything hessgpt.load reads) into folder `out`, int8 (bits=8) or int4 Q4_0
    (bits=4); returns {"fp32_bytes", "int8_bytes" (the quantized weights' bytes, either scheme), "tensors"}."""
    if bits not in (4, 8):
        raise HessGPTError(f"bits={bits!r}: 8 (int8) or 4 (int4 Q4_0)")
    if is_quantized(ckpt):
        raise HessGPTError(f"{ckpt}: already an int8 or int4 checkpoint")
    model, tokenizer = load(ckpt)
    cfg = model.config
    sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    if cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)
    names = _quantized_names(sd, cfg.tie_embeddings)
    out_sd, fp32_bytes, int8_bytes = {}, 0, 0
    for k, v in sd.items():
        fp32_bytes += v.numel() * 4
        if k in names and bits == 4 and v.shape[1] % int4.BLOCK == 0:
            q, s = int4.quantize_weight(v)
            out_sd[k], out_sd[k + ".scale"] = q, s
            int8_bytes += q.numel() + s.numel() * 4
        elif k in names:
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

    method = METHOD if bits == 8 else INT4_METHOD
    scale_doc = "per-output-channel absmax/127, bf16-exact, stored fp32 as NAME.scale" if bits == 8 else \
        "Q4_0: per block of 32 weights of a row, d = the largest-magnitude weight / -8, fp16-exact, stored fp32 " \
        "as NAME.scale [out, in/32]; weights uint8 [out, in/2], low nibble weight j, high nibble weight j+16 " \
        "(rows not a multiple of 32: int8 as in int8-weight-only)"

    def write(tmp: str) -> None:
        cfg.to_json(os.path.join(tmp, "config.json"))
        save_file(out_sd, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt", "quantization": method})
        if tokenizer is not None:
            tokenizer.save(tmp)
        m = {**{k: v for k, v in meta.items() if k not in ("quantization",)},
             "format": checkpoint.FORMAT, "version": checkpoint.VERSION, "stage": "quantize", "parent": os.path.abspath(ckpt),
             "quantization": {"method": method, "scale": scale_doc, "tensors": names}}
        with open(os.path.join(tmp, checkpoint.GENERATION_CONFIG), "w") as f:  # the fp32 model's sampling
            json.dump(checkpoint.full_generation_config(checkpoint.read_generation_config(ckpt)), f, indent=2)
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(m, f, indent=2, default=str)

    checkpoint.atomic_dir_write(out, write)
    return {"fp32_bytes": fp32_bytes, "int8_bytes": int8_bytes, "tensors": len(names)}


# ---- quality checks ---------------------------------------------------------------------------------


def greedy_agreement(model, prompts: list[list[int]], n_tokens: int = 32, bits: int = 8) -> dict:
    """Greedy continuations of fp32 vs int8 (bits=8) or int4 (bits=4) engines: fraction of prompts whose first
    n_tokens are identical, and the mean length of the common prefix."""
    fp, q = Engine(model, int8=False), Engine(model, int8=bits == 8, int4=bits == 4)
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
    p = argparse.ArgumentParser(prog="hessgpt quantize", description="int8 or int4 weight-only quantization of a checkpoint (CPU chat).")
    p.add_argument("ckpt", help="HessGPT checkpoint folder (or anything hessgpt.load reads)")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--int8", action="store_true", help="int8 weights, per-output-channel scales")
    kind.add_argument("--int4", action="store_true", help="int4 weights, llama.cpp's Q4_0 blocks of 32 (4.5 bits a weight)")
    p.add_argument("--out", required=True, help="output checkpoint folder")
    args = p.parse_args(argv)
    bits = 4 if args.int4 else 8
    stats = save_quantized(args.ckpt, args.out, bits=bits)
    print(f"wrote {args.out}: {stats['tensors']} int{bits} tensors, weights {stats['fp32_bytes'] / 2**20:.1f} MiB fp32 -> "
          f"{stats['int8_bytes'] / 2**20:.1f} MiB (hessgpt chat/serve/ask load it as it is; in Python: hessgpt.load)")
    return 0
