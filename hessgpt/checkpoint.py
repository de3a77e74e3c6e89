"""The checkpoint folder contract (docs/checkpoint-format.md).

    CKPT/
      config.json            ModelConfig as JSON
      model.safetensors      the weights, HF-Mistral names (tied lm_head stored once, as the embedding)
      tokenizer.json         + hessgpt_tokenizer.json (special-token ids, vocab hash)
      meta.json              {"format": "hessgpt-checkpoint", "version": 1, "stage", "step", "parent", "args", ...}
      generation_config.json recommended sampling ({"temperature", "top_k", "top_p", "repetition_penalty",
                             "max_new_tokens"}), used by serve/chat/ask when a request or flag sets none
      train_state.pt         optional: optimizer, RNG, data position, schedule (never needed to load the model)

Writes are atomic: everything goes to a sibling temp folder, then is swapped in with renames, so a crash
leaves either the previous checkpoint or the new one, never a half-written folder that half-loads.

The int8 variant (quantize.py writes it) is the same folder where model.safetensors holds, for each quantized
weight NAME, an int8 tensor NAME [out, in] plus NAME.scale fp32 [out], and meta.json a "quantization" entry;
`load` reads both. Other kinds of path (legacy .pt, Hugging Face folders, GGUF files) are loader.py's.
"""

import json
import os
import shutil
import tempfile
import time

import torch
from safetensors.torch import load_file, save_file

from hessgpt.config import ModelConfig
from hessgpt.errors import HessGPTError
from hessgpt.kernels import int4
from hessgpt.kernels.int8 import dequantize_weight
from hessgpt.model import Transformer, rope_tables
from hessgpt.tokenizer import Tokenizer

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


# ---- generation_config.json: the checkpoint's recommended sampling -------------------------------

GENERATION_CONFIG = "generation_config.json"
# HessGPT's small models answer best greedily; these are also SamplingParams' defaults.
DEFAULT_GENERATION_CONFIG = {"temperature": 0.0, "top_k": None, "top_p": 1.0, "repetition_penalty": 1.0,
                             "max_new_tokens": 256}


def _check_generation_value(key: str, v, source: str):
    def bad(why: str):
        raise HessGPTError(f"{source}: {key} = {json.dumps(v)}: {why}")

    is_num = isinstance(v, (int, float)) and not isinstance(v, bool)
    is_int = isinstance(v, int) and not isinstance(v, bool)
    if key == "temperature":
        if not is_num or v < 0:
            bad("must be a number >= 0 (0 = greedy)")
        return float(v)
    if key == "top_k":
        if v is None:
            return None
        if not is_int or v < 0:
            bad("must be an integer >= 0 or null (off)")
        return int(v) or None
    if key == "top_p":
        if not is_num or not 0 < v <= 1:
            bad("must be a number in (0, 1]")
        return float(v)
    if key == "repetition_penalty":
        if not is_num or v <= 0:
            bad("must be a number > 0 (1 = off)")
        return float(v)
    if key == "max_new_tokens":
        if not is_int or v < 1:
            bad("must be an integer >= 1")
        return int(v)
    raise AssertionError(key)


def parse_generation_config(d, source: str, hf: bool = False) -> dict:
    """The sampling keys of a generation_config dict, checked: {"temperature", "top_k", ...} (only the keys it
    sets). `hf=True` reads Hugging Face's meaning: without `"do_sample": true` decoding is greedy (and HF's
    top_k default is 50 when it samples). Other keys (eos_token_id, ...) are ignored."""
    if not isinstance(d, dict):
        raise HessGPTError(f"{source}: must be a JSON object, got {type(d).__name__}")
    if "do_sample" in d and not isinstance(d["do_sample"], bool):
        raise HessGPTError(f"{source}: do_sample = {json.dumps(d['do_sample'])}: must be true or false")
    out = {k: _check_generation_value(k, d[k], source) for k in DEFAULT_GENERATION_CONFIG if k in d}
    if hf or "do_sample" in d:
        if not d.get("do_sample", False):
            out["temperature"] = 0.0
        else:
            out.setdefault("temperature", 1.0)
            if "top_k" not in d:
                out["top_k"] = 50
    return out


def read_generation_config(path: str) -> dict:
    """The sampling a model folder recommends (only the keys its generation_config.json sets; {} without one).

    Works for HessGPT checkpoints and Hugging Face folders (their own generation_config.json, read with HF's
    meaning: greedy unless do_sample). A bad value is a one-line HessGPTError naming the key and the value."""
    d = path if os.path.isdir(path) else os.path.dirname(path)
    f = os.path.join(d, GENERATION_CONFIG)
    if not os.path.isfile(f):
        return {}
    try:
        with open(f) as fh:
            raw = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HessGPTError(f"{f}: not valid JSON ({e})") from None
    hf = False
    cfg = os.path.join(d, "config.json")
    if os.path.isfile(cfg):
        try:
            with open(cfg) as fh:
                hf = "model_type" in json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            hf = False
    return parse_generation_config(raw, f, hf=hf)


def full_generation_config(partial: dict | None) -> dict:
    """`partial` over DEFAULT_GENERATION_CONFIG: every key present."""
    return {**DEFAULT_GENERATION_CONFIG, **(partial or {})}


def _generation_config_for_save(model, meta: dict | None, explicit: dict | None) -> dict:
    """explicit argument > the model's own (loaded from its checkpoint) > the parent's file (sft, merge, import
    copy their base's) > greedy defaults."""
    if explicit is not None:
        return full_generation_config(parse_generation_config(explicit, "generation_config"))
    own = getattr(model, "generation_config", None)
    if isinstance(own, dict):
        return full_generation_config(own)
    parent = (meta or {}).get("parent")
    if isinstance(parent, str) and os.path.isdir(parent):
        return full_generation_config(read_generation_config(parent))
    return dict(DEFAULT_GENERATION_CONFIG)


def save(path: str, model, tokenizer=None, meta: dict | None = None, train_state: dict | None = None,
         generation_config: dict | None = None) -> None:
    """Write a checkpoint folder atomically. `generation_config` (the recommended sampling) defaults to the
    model's own, else the parent checkpoint's (meta["parent"]), else greedy (DEFAULT_GENERATION_CONFIG)."""
    gen = _generation_config_for_save(model, meta, generation_config)

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
        with open(os.path.join(tmp, GENERATION_CONFIG), "w") as f:
            json.dump(gen, f, indent=2)
        if train_state is not None:
            torch.save(train_state, os.path.join(tmp, "train_state.pt"))

    atomic_dir_write(path, write)


def recover(path: str) -> str:
    """`path`, or if a swap was interrupted after moving the old folder aside, the old one moved back."""
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
    """The Transformer of a HessGPT checkpoint folder with fp32 weights (no tokenizer)."""
    path = recover(path)
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
    model.rope_cos, model.rope_sin = rope_tables(cfg.head_dim, cfg.context_length, cfg.rope_theta)
    model.generation_config = read_generation_config(path)
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


# ---- the quantized variants of the folder (written by quantize.save_quantized) ------------------------

QUANTIZATION_METHOD = "int8-weight-only"      # int8 tensor NAME [out, in] + NAME.scale [out]
INT4_METHOD = "int4-q4_0-weight-only"         # uint8 tensor NAME [out, in / 2] (Q4_0 nibbles) + NAME.scale [out, in / 32]
METHODS = (QUANTIZATION_METHOD, INT4_METHOD)


def quantization_method(path: str) -> str | None:
    """The folder's quantization method (one of METHODS), or None for an fp32 folder or any other path."""
    meta = os.path.join(str(path), "meta.json")
    if not os.path.exists(meta):
        return None
    with open(meta) as f:
        method = (json.load(f).get("quantization") or {}).get("method")
    return method if method in METHODS else None


def is_quantized(path: str) -> bool:
    return quantization_method(path) is not None


def load_quantized(path: str, device=None):
    """(model, tokenizer) from an int8 or int4 checkpoint: a Transformer with the dequantized weights and
    `model.int8_state` / `model.int4_state` = {name: (q, scale)}, so `Engine(model)` decodes with exactly these
    weights (re-quantizing the dequantized weights gives them back: kernels/int8.py, int4.py)."""
    path = str(path)
    method = quantization_method(path)
    if method is None:
        raise HessGPTError(f"{path}: not an int8 or int4 checkpoint (meta.json has no quantization entry)")
    cfg = ModelConfig.from_json(os.path.join(path, "config.json"))
    raw = load_file(os.path.join(path, "model.safetensors"))
    want = torch.int8 if method == QUANTIZATION_METHOD else torch.uint8
    sd, state = {}, {}
    for k, v in raw.items():
        if k.endswith(".scale"):
            continue
        if v.dtype in (torch.int8, torch.uint8):
            if v.dtype != want or k + ".scale" not in raw:
                raise HessGPTError(f"{path}/model.safetensors: {k} ({v.dtype}) is not a {method} tensor with its {k}.scale")
            state[k] = (v, raw[k + ".scale"].float())
            sd[k] = dequantize_weight(*state[k]) if want == torch.int8 else int4.dequantize_weight(*state[k])
        else:
            sd[k] = v.float()
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device="cpu")
    load_state_dict_strict(model, sd, source=path)
    model.rope_cos, model.rope_sin = rope_tables(cfg.head_dim, cfg.context_length, cfg.rope_theta)
    if device is not None:
        model = model.to(device)
    if method == QUANTIZATION_METHOD:
        model.int8_state = state
    else:
        model.int4_state = state
    return model.eval(), find_tokenizer(path)


# ---- (model, tokenizer) of a folder -----------------------------------------------------------------


def find_tokenizer(path: str):
    d = path if os.path.isdir(path) else os.path.dirname(path)
    if os.path.exists(os.path.join(d, "tokenizer.json")):
        return Tokenizer.load(d)
    return None


def check_vocab(model, tokenizer, source: str) -> None:
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
        raise HessGPTError(f"{source}: tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                           f"{model.config.vocab_size} (tokenizer/model vocab mismatch)")


def load(path: str, device=None, dtype=None):
    """(model, tokenizer) of a HessGPT checkpoint folder, fp32 or int8 (int8: dequantized weights plus
    `model.int8_state` for the engine). `model.generation_config` is the folder's recommended sampling
    (read_generation_config; {} when none). Any other kind of path: `hessgpt.load` (loader.py)."""
    path = str(path)
    if not os.path.exists(path):
        path = recover(path)
    if not os.path.isdir(path) or _is_hf_folder(path):
        raise HessGPTError(f"{path!r} is not a HessGPT checkpoint folder (hessgpt.load also reads .pt, Hugging Face and .gguf)")
    if is_quantized(path):
        model, tokenizer = load_quantized(path, device)   # int8/int4 tensors + their dequantized copy (fp32)
    else:
        model, tokenizer = load_model(path), find_tokenizer(path)
        model = model.to(device=device or "cpu", dtype=dtype) if (device or dtype) else model
    check_vocab(model, tokenizer, path)
    model.generation_config = read_generation_config(path)
    return model.eval(), tokenizer


def _is_hf_folder(path: str) -> bool:
    try:
        with open(os.path.join(path, "config.json")) as f:
            return "model_type" in json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, TypeError):
        return False   # no or unreadable config.json: load_model names the problem
