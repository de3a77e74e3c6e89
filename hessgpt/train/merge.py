"""`hessgpt merge`: fold a LoRA adapter into its base's weights (W <- W + alpha/r * B A).

    hessgpt merge --base runs/pretrain --lora runs/sft-lora --out runs/merged          # HessGPT checkpoint
    hessgpt merge --base hf_mistral_dir --lora peft_adapter --out merged_hf           # HF dir in, HF dir out
    hessgpt merge --base hf_mistral_dir --lora peft_adapter --out ckpt --format hessgpt

The base is a HessGPT checkpoint or a Hugging Face Mistral/Llama directory (recognised by its config.json's
`model_type`); the output has the base's format unless `--format` says otherwise. An adapter that records
another base's weights hash is refused. Works on the state dict alone (no forward pass): minutes on CPU
for the 0.5B model, mostly reading and writing files.
"""

import argparse
import json
import os
import shutil
import tempfile

import torch
from safetensors.torch import save_file

from hessgpt import checkpoint
from hessgpt.checkpoint import atomic_dir_write, find_tokenizer, load_model, load_state_dict_strict, read_meta
from hessgpt.convert.export import to_hf
from hessgpt.convert.hf import from_hf, read_hf_state_dict
from hessgpt.errors import HessGPTError
from hessgpt.train import lora as L


def _is_hf(path: str) -> bool:
    cfg = os.path.join(path, "config.json")
    if not os.path.isfile(cfg):
        return False
    with open(cfg) as f:
        try:
            return "model_type" in json.load(f)
        except json.JSONDecodeError:
            raise HessGPTError(f"{cfg}: not valid JSON") from None


def merge_checkpoint(base: str, adapter: str, out: str, meta: dict | None = None) -> None:
    """HessGPT checkpoint + adapter -> HessGPT checkpoint (meta.parent = base, meta.adapter = adapter)."""
    cfg, sd, info = L.read_adapter(adapter)
    L.check_base(adapter, info, base)
    model = load_model(base)
    state = {k: v for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop("lm_head.weight", None)
    merged = L.merge_state_dict(state, L.adapter_deltas(cfg, sd, adapter), adapter)
    load_state_dict_strict(model, merged, source=base)
    tokenizer = find_tokenizer(base)
    base_meta = read_meta(base) if os.path.exists(os.path.join(base, "meta.json")) else {}
    m = {"stage": "merge", "step": base_meta.get("step"), "parent": os.path.abspath(base),
         "adapter": os.path.abspath(adapter), "adapter_parent": _adapter_meta(adapter).get("parent"), **(meta or {})}
    checkpoint.save(out, model, tokenizer, meta=m)


def _adapter_meta(adapter: str) -> dict:
    p = os.path.join(adapter, "meta.json")
    if os.path.exists(p):
        with open(p) as f:
            return json.load(f)
    return {}


def merge_hf(base: str, adapter: str, out: str) -> None:
    """HF directory + PEFT adapter -> HF directory (config/tokenizer files copied, weights merged)."""
    cfg, sd, info = L.read_adapter(adapter)
    L.check_base(adapter, info, base)
    state = read_hf_state_dict(base)
    merged = L.merge_state_dict(state, L.adapter_deltas(cfg, sd, adapter), adapter)

    def write(tmp: str) -> None:
        for name in os.listdir(base):
            src = os.path.join(base, name)
            weights = name.startswith(("model", "pytorch_model")) and name.endswith((".safetensors", ".bin", ".index.json"))
            if os.path.isfile(src) and not weights:
                shutil.copy2(src, os.path.join(tmp, name))
        save_file({k: v.contiguous() for k, v in merged.items()}, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})

    atomic_dir_write(out, write)


def merge(base: str, adapter: str, out: str, fmt: str | None = None) -> str:
    """Merge and write `out`; returns the format written ("hessgpt" or "hf")."""
    if not os.path.isdir(base):
        raise HessGPTError(f"--base {base}: no such checkpoint directory")
    if not os.path.isdir(adapter):
        raise HessGPTError(f"--lora {adapter}: no such adapter directory")
    hf = _is_hf(base)
    fmt = fmt or ("hf" if hf else "hessgpt")
    if hf and fmt == "hf":
        merge_hf(base, adapter, out)
    elif hf:  # HF in, HessGPT out: merge as HF in a temp folder, then import it
        with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(out))) as tmp:
            merge_hf(base, adapter, os.path.join(tmp, "hf"))
            from_hf(os.path.join(tmp, "hf"), out)
    elif fmt == "hessgpt":
        merge_checkpoint(base, adapter, out)
    else:  # HessGPT in, HF out
        with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(out))) as tmp:
            merge_checkpoint(base, adapter, os.path.join(tmp, "ckpt"))
            to_hf(os.path.join(tmp, "ckpt"), out)
    return fmt


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="hessgpt merge", description="Merge a LoRA adapter into its base model.")
    p.add_argument("--base", required=True, help="HessGPT checkpoint or Hugging Face Mistral/Llama directory")
    p.add_argument("--lora", required=True, help="adapter directory (hessgpt sft --lora output, or any PEFT LoRA adapter)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--format", choices=["hessgpt", "hf"], help="output format (default: the base's)")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    fmt = merge(args.base, args.lora, args.out, args.format)
    print(f"merged {args.lora} into {args.base} -> {args.out} ({'Hugging Face' if fmt == 'hf' else 'HessGPT'} format)")
    return 0
