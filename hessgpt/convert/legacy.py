"""Legacy single-file .pt checkpoints (HessGPT v1 style): a dict holding the state dict ("model",
"model_state_dict" or "state_dict") and its config ("config", "model_config" or "model_args"), read into a
Transformer. `hessgpt.load("x.pt")` comes here through loader.py.
"""

import torch

from hessgpt.checkpoint import load_state_dict_strict
from hessgpt.config import ModelConfig
from hessgpt.errors import HessGPTError
from hessgpt.model import Transformer

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


def load_legacy(path: str) -> Transformer:
    sd, _ = _legacy_blob(path)
    cfg = load_legacy_config(path)
    model = Transformer(cfg)
    load_state_dict_strict(model, sd, source=path)
    return model
