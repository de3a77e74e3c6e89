"""What kind of path is this: the one place that decides, for `hessgpt.load` and the CLI.

    model, tokenizer = load(path)        # HessGPT checkpoint folder (fp32 or int8), legacy .pt file,
                                         # Hugging Face folder (config.json with "model_type") or .gguf file
    cfg = load_config(spec)              # the same kinds of path, or a preset name, or a config.json

Each kind has its own reader: checkpoint.py (HessGPT folders, int8 included), convert/legacy.py,
convert/hf.py, convert/gguf_import.py. `hessgpt model presets|info` is here too (`cli_main`).
"""

import argparse
import json
import os

from hessgpt import checkpoint
from hessgpt.config import PRESETS, ModelConfig
from hessgpt.convert.gguf_import import load_gguf
from hessgpt.convert.hf import config_from_hf, load_hf
from hessgpt.convert.legacy import load_legacy, load_legacy_config
from hessgpt.errors import HessGPTError

KINDS = "a HessGPT checkpoint folder, a .pt file, a Hugging Face directory or a .gguf file"


def _read_folder_config(path: str) -> dict:
    with open(os.path.join(path, "config.json")) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise HessGPTError(f"{path}/config.json: not valid JSON ({e})") from None


def load(path: str, device=None, dtype=None):
    """(model, tokenizer) from a HessGPT checkpoint (fp32 or int8), a legacy .pt file, a Hugging Face directory
    or a .gguf file. `model.generation_config` is the folder's recommended sampling
    (checkpoint.read_generation_config; {} when none, and for files)."""
    path = str(path)
    if not os.path.exists(path):
        path = checkpoint.recover(path)
    if os.path.isfile(path) and path.endswith(".gguf"):  # llama-architecture GGUF, dequantized to fp32
        model, tokenizer = load_gguf(path)
        checkpoint.check_vocab(model, tokenizer, path)
        model = model.to(device=device or "cpu", dtype=dtype).eval()
    elif os.path.isfile(path) and path.endswith(".pt"):
        model = load_legacy(path)
        tokenizer = checkpoint.find_tokenizer(path)
        checkpoint.check_vocab(model, tokenizer, path)
        model = model.to(device=device or "cpu", dtype=dtype) if (device or dtype) else model
        model = model.eval()
    elif os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json")):
        if "model_type" in _read_folder_config(path):
            model, tokenizer = load_hf(path)
            checkpoint.check_vocab(model, tokenizer, path)
            model = model.to(device=device or "cpu", dtype=dtype).eval()
        else:
            return checkpoint.load(path, device, dtype)
    else:
        raise HessGPTError(f"{path!r} is not {KINDS}")
    model.generation_config = checkpoint.read_generation_config(path) if os.path.isdir(path) else {}
    return model, tokenizer


def load_config(spec: str) -> ModelConfig:
    """A preset name, a config.json, or a checkpoint folder / Hugging Face folder / legacy .pt holding one."""
    if spec in PRESETS:
        return ModelConfig.preset(spec)
    if os.path.isdir(spec):
        path = os.path.join(spec, "config.json")
        if not os.path.exists(path):
            raise HessGPTError(f"{spec}: not a checkpoint (no config.json) and not a preset ({', '.join(PRESETS)})")
        with open(path) as f:
            d = json.load(f)
        if "model_type" in d:  # a Hugging Face directory
            return config_from_hf(d, source=path)
        return ModelConfig.from_dict(d, source=path)
    if os.path.isfile(spec) and spec.endswith(".json"):
        return ModelConfig.from_json(spec)
    if os.path.isfile(spec) and spec.endswith(".pt"):
        return load_legacy_config(spec)
    raise HessGPTError(f"{spec!r} is neither a preset ({', '.join(PRESETS)}) nor an existing checkpoint path")


def _fmt(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def cli_main(argv: list[str]) -> int:
    """`hessgpt model presets` and `hessgpt model info PRESET|CHECKPOINT`."""
    p = argparse.ArgumentParser(prog="hessgpt model", description="Inspect model presets and checkpoints.")
    sub = p.add_subparsers(dest="cmd", required=True)
    info = sub.add_parser("info", help="print a config and its parameter count")
    info.add_argument("spec", help="preset name or checkpoint path")
    info.add_argument("--json", action="store_true", help="print JSON only")
    sub.add_parser("presets", help="list the named presets")
    args = p.parse_args(argv)
    if args.cmd == "presets":
        for name in PRESETS:
            cfg = ModelConfig.preset(name)
            print(f"{name:<13} {_fmt(cfg.num_params()):>8}  dim {cfg.dim:<5} layers {cfg.n_layers:<3} "
                  f"heads {cfg.n_heads}/{cfg.n_kv_heads} ctx {cfg.context_length} vocab {cfg.vocab_size}")
        return 0
    cfg = load_config(args.spec)
    if args.json:
        print(json.dumps({**cfg.to_dict(), "num_params": cfg.num_params()}, indent=2))
        return 0
    print(f"model: {args.spec}")
    for k, v in cfg.to_dict().items():
        print(f"  {k:<15} {v}")
    n, n_body = cfg.num_params(), cfg.num_params(embeddings=False)
    print(f"  parameters      {n:,} ({_fmt(n)}; {_fmt(n_body)} without embeddings)")
    print(f"  fp32 weights    {n * 4 / 2**20:,.0f} MiB; bf16 {n * 2 / 2**20:,.0f} MiB")
    return 0
