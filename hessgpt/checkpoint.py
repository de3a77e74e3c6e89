"""The checkpoint folder contract (docs/checkpoint-format.md).

    CKPT/
      config.json            ModelConfig as JSON
      model.safetensors      the weights, HF-Mistral names (tied lm_head stored once, as the embedding)
      tokenizer.json         + hessgpt_tokenizer.json (special-token ids, vocab hash)
      meta.json              {"format": "hessgpt-checkpoint", "version": 1, "stage", "step", "parent", "args", ...}
      train_state.pt         optional: optimizer, RNG, data position, schedule (never needed to load the model)

Writes are atomic: everything goes to a sibling temp folder, then is swapped in with renames, so a crash
leaves either the previous checkpoint or the new one, never a half-written folder that half-loads.
"""

import json
import os
import shutil
import tempfile
import time

import torch

from hessgpt.config import ModelConfig
from hessgpt.errors import HessGPTError

FORMAT = "hessgpt-checkpoint"
VERSION = 1


def is_checkpoint(path: str) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "meta.json")) and os.path.exists(os.path.join(path, "model.safetensors"))


def _state_for_save(model) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        sd.pop("lm_head.weight", None)  # shared with model.embed_tokens.weight
    return sd


def atomic_dir_write(path: str, write_fn) -> None:
    """Call write_fn(tmp_dir) then swap tmp_dir into `path` (replacing an existing folder)."""
    path = os.path.abspath(path.rstrip("/"))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(path) + ".tmp-", dir=parent)
    try:
        write_fn(tmp)
        for name in os.listdir(tmp):  # flush file contents before the rename makes them visible
            fd = os.open(os.path.join(tmp, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(path):
        old = path + f".old-{os.getpid()}-{int(time.time() * 1000)}"
        os.rename(path, old)      # a crash right here leaves `old`, which load() recovers
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, path)


def save(path: str, model, tokenizer=None, meta: dict | None = None, train_state: dict | None = None) -> None:
    from safetensors.torch import save_file

    def write(tmp: str) -> None:
        model.config.to_json(os.path.join(tmp, "config.json"))
        save_file(_state_for_save(model), os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(tmp)
        m = {"format": FORMAT, "version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "num_params": sum(p.numel() for p in model.parameters()),
             "tokenizer_hash": getattr(tokenizer, "hash", None), **(meta or {})}
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(m, f, indent=2, default=str)
        if train_state is not None:
            torch.save(train_state, os.path.join(tmp, "train_state.pt"))

    atomic_dir_write(path, write)


def _recover(path: str) -> str:
    """If a swap was interrupted after moving the old folder aside, use the old one."""
    path = path.rstrip("/")
    if os.path.exists(path):
        return path
    parent, base = os.path.split(os.path.abspath(path))
    olds = sorted(n for n in os.listdir(parent or ".") if n.startswith(base + ".old-")) if os.path.isdir(parent or ".") else []
    if olds:
        os.rename(os.path.join(parent, olds[-1]), path)
        return path
    raise HessGPTError(f"checkpoint {path!r} does not exist")


def read_meta(path: str) -> dict:
    with open(os.path.join(path, "meta.json")) as f:
        return json.load(f)


def load_model(path: str, device=None, dtype=None):
    """The Transformer of a HessGPT checkpoint folder (no tokenizer)."""
    from safetensors.torch import load_file

    from hessgpt.model import Transformer

    path = _recover(path)
    cfg_path = os.path.join(path, "config.json")
    if not os.path.exists(cfg_path):
        raise HessGPTError(f"{path}: not a checkpoint (no config.json)")
    cfg = ModelConfig.from_json(cfg_path)
    weights = os.path.join(path, "model.safetensors")
    if not os.path.exists(weights):
        raise HessGPTError(f"{path}: not a checkpoint (no model.safetensors)")
    with torch.device("meta"):
        model = Transformer(cfg)
    try:
        sd = load_file(weights)
    except Exception as e:
        raise HessGPTError(f"{weights}: unreadable safetensors file ({e})") from None
    model.to_empty(device="cpu")
    load_state_dict_strict(model, sd, source=weights)
    from hessgpt.model import rope_tables

    model.rope_cos, model.rope_sin = rope_tables(cfg.head_dim, cfg.context_length, cfg.rope_theta)
    return model.to(device=device or "cpu", dtype=dtype) if (device or dtype) else model


def load_state_dict_strict(model, sd: dict, source: str) -> None:
    """load_state_dict that names unknown/missing keys and shape mismatches in one clear line."""
    if model.config.tie_embeddings:
        sd = {k: v for k, v in sd.items() if k != "lm_head.weight"}
    expected = {k: v for k, v in model.state_dict().items() if not (model.config.tie_embeddings and k == "lm_head.weight")}
    unknown = sorted(set(sd) - set(expected))
    missing = sorted(set(expected) - set(sd))
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unknown keys {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        raise HessGPTError(f"{source}: weights do not match the config: " + "; ".join(parts))
    for k, v in sd.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise HessGPTError(f"{source}: {k} has shape {tuple(v.shape)}, config expects {tuple(expected[k].shape)}")
    model.load_state_dict(sd, strict=False, assign=True)
    if model.config.tie_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight


# ---- legacy single-file .pt checkpoints (HessGPT v1 style) ---------------------------------------

_LEGACY_CONFIG_KEYS = {
    "vocab_size": "vocab_size", "d_model": "dim", "n_embd": "dim", "dim": "dim", "embed_dim": "dim",
    "n_layer": "n_layers", "n_layers": "n_layers", "num_layers": "n_layers",
    "n_head": "n_heads", "n_heads": "n_heads", "num_heads": "n_heads",
    "n_kv_heads": "n_kv_heads", "num_kv_heads": "n_kv_heads",
    "hidden_dim": "hidden_dim", "d_ff": "hidden_dim", "intermediate_size": "hidden_dim",
    "max_seq_len": "context_length", "block_size": "context_length", "context_length": "context_length", "max_len": "context_length",
    "rope_theta": "rope_theta", "norm_eps": "norm_eps", "tie_embeddings": "tie_embeddings", "dropout": "dropout",
}


def _legacy_blob(path: str) -> tuple[dict, dict]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise HessGPTError(f"{path}: cannot read as a PyTorch checkpoint ({str(e).splitlines()[0]})") from None
    if not isinstance(blob, dict):
        raise HessGPTError(f"{path}: expected a dict (state dict or {{'model': ..., 'config': ...}})")
    sd = blob.get("model") or blob.get("model_state_dict") or blob.get("state_dict") or blob
    cfg = blob.get("config") or blob.get("model_config") or blob.get("model_args")
    if not isinstance(cfg, dict):
        raise HessGPTError(f"{path}: no 'config' dict stored beside the weights; cannot rebuild the model")
    sd = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    return sd, cfg


def load_legacy_config(path: str) -> ModelConfig:
    sd, cfg = _legacy_blob(path)
    mapped = {}
    for k, v in cfg.items():
        if k in _LEGACY_CONFIG_KEYS:
            mapped[_LEGACY_CONFIG_KEYS[k]] = v
    if "lm_head.weight" not in sd and "tie_embeddings" not in mapped:
        mapped["tie_embeddings"] = True
    return ModelConfig.from_dict(mapped, source=f"{path} config")


def load_legacy(path: str):
    from hessgpt.model import Transformer

    sd, _ = _legacy_blob(path)
    cfg = load_legacy_config(path)
    model = Transformer(cfg)
    load_state_dict_strict(model, sd, source=path)
    return model


# ---- one entry point ----------------------------------------------------------------------------


def find_tokenizer(path: str):
    from hessgpt.tokenizer import Tokenizer

    d = path if os.path.isdir(path) else os.path.dirname(path)
    if os.path.exists(os.path.join(d, "tokenizer.json")):
        return Tokenizer.load(d)
    return None


def check_vocab(model, tokenizer, source: str) -> None:
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
        raise HessGPTError(f"{source}: tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                           f"{model.config.vocab_size} (tokenizer/model vocab mismatch)")


def load(path: str, device=None, dtype=None):
    """(model, tokenizer) from a HessGPT checkpoint, a legacy .pt file or a Hugging Face directory."""
    path = str(path)
    if not os.path.exists(path):
        path = _recover(path)
    if os.path.isfile(path) and path.endswith(".pt"):
        model = load_legacy(path)
    elif os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json")):
        with open(os.path.join(path, "config.json")) as f:
            try:
                cfg = json.load(f)
            except json.JSONDecodeError as e:
                raise HessGPTError(f"{path}/config.json: not valid JSON ({e})") from None
        if "model_type" in cfg:
            from hessgpt.convert.hf import load_hf

            model, tokenizer = load_hf(path)
            check_vocab(model, tokenizer, path)
            return model.to(device=device or "cpu", dtype=dtype).eval(), tokenizer
        from hessgpt import quantize

        if quantize.is_quantized(path):  # int8 weights: dequantized copy + the int8 tensors for the engine
            model, tokenizer = quantize.load_quantized(path, device)
            check_vocab(model, tokenizer, path)
            return model.eval(), tokenizer
        model = load_model(path)
    else:
        raise HessGPTError(f"{path!r} is not a HessGPT checkpoint folder, a .pt file or a Hugging Face directory")
    tokenizer = find_tokenizer(path)
    check_vocab(model, tokenizer, path)
    model = model.to(device=device or "cpu", dtype=dtype) if (device or dtype) else model
    return model.eval(), tokenizer
