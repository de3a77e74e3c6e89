"""LoRA: low-rank adapters on chosen nn.Linear layers, saved in PEFT's format.

    y = x W^T + (alpha / r) * dropout(x) A^T B^T          A [r, in] (Kaiming), B [out, r] (zeros at start)

`apply_lora(model, LoRAConfig(...))` swaps each targeted `nn.Linear` of the model for a `LoRALinear` that
holds the frozen base weight (same parameter name, `...q_proj.weight`) plus `lora_A` / `lora_B` (torchtune
style: a wrapper module, the model class is not subclassed). Everything else is frozen.

An adapter folder (what `hessgpt sft --lora` writes) is a PEFT adapter:

    adapter_config.json         {"peft_type": "LORA", "r", "lora_alpha", "lora_dropout", "target_modules", ...}
    adapter_model.safetensors   base_model.model.<module path>.lora_A.weight / .lora_B.weight
    hessgpt_adapter.json        the base checkpoint's path and weight hash: merging onto another base is refused

so `peft.PeftModel.from_pretrained(MistralForCausalLM.from_pretrained(hf_export), adapter_dir)` applies it to
`hessgpt convert to-hf`'s export of the base, and `hessgpt merge` folds it into the weights.
"""

import hashlib
import json
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.tensor import DTensor

from hessgpt.errors import HessGPTError

ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")
ALL_TARGETS = ATTENTION_TARGETS + MLP_TARGETS
CONFIG_FILE, WEIGHTS_FILE, INFO_FILE = "adapter_config.json", "adapter_model.safetensors", "hessgpt_adapter.json"
PREFIX = "base_model.model."  # PEFT's key prefix: PeftModel.base_model (LoraModel).model (the HF model)


@dataclass
class LoRAConfig:
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ATTENTION_TARGETS
    token_rows: tuple[int, ...] = ()   # embedding (and output) rows trained whole: peft's trainable_token_indices

    def __post_init__(self):
        self.targets = tuple(self.targets)
        self.token_rows = tuple(sorted(set(int(i) for i in self.token_rows)))
        if not self.targets:
            raise HessGPTError("--targets: name at least one module")
        for t in self.targets:
            if t not in ALL_TARGETS:
                raise HessGPTError(f"--targets: unknown LoRA target module {t!r} (valid: {','.join(ALL_TARGETS)})")
        if not isinstance(self.r, int) or self.r <= 0:
            raise HessGPTError(f"--rank must be a positive integer, got {self.r!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise HessGPTError(f"--dropout must be in [0, 1), got {self.dropout}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


class LoRALinear(nn.Module):
    """A frozen Linear plus a trainable low-rank update. `weight` is the base's own Parameter."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if base.bias is not None:
            raise HessGPTError("LoRA on a Linear with bias is not supported (HessGPT's Linears have none)")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.weight.requires_grad_(False)
        dev, dtype = base.weight.device, base.weight.dtype
        self.lora_A = nn.Linear(self.in_features, r, bias=False, device=dev, dtype=dtype)
        self.lora_B = nn.Linear(r, self.out_features, bias=False, device=dev, dtype=dtype)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # as PEFT: the product starts at zero
        nn.init.zeros_(self.lora_B.weight)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scaling = alpha / r

    def forward(self, x):
        # x [..., in] -> [..., out]
        return F.linear(x, self.weight) + self.lora_B(self.lora_A(self.dropout(x))) * self.scaling

    def delta(self) -> torch.Tensor:
        """The update the adapter adds to `weight`: scaling * B @ A, [out, in]."""
        return self.scaling * (self.lora_B.weight.float() @ self.lora_A.weight.float())


class TrainableRows(nn.Module):
    """Rows of a frozen [V, D] weight trained as their own values (peft's TrainableTokensLayer): the weight used
    is W with W[indices] = trainable_tokens_delta (peft's name; it holds the rows' values, not a difference)."""

    def __init__(self, weight: nn.Parameter, indices: tuple[int, ...]):
        super().__init__()
        if not indices or min(indices) < 0 or max(indices) >= weight.shape[0]:
            raise HessGPTError(f"trainable token rows {list(indices)[:5]}... are outside the vocabulary (0..{weight.shape[0] - 1})")
        self.register_buffer("indices", torch.tensor(indices, dtype=torch.long, device=weight.device), persistent=False)
        self.trainable_tokens_delta = nn.Parameter(weight.detach()[self.indices].clone())   # [n, D]

    def weight_of(self, base: torch.Tensor) -> torch.Tensor:
        return base.index_copy(0, self.indices, self.trainable_tokens_delta.to(base.dtype))   # [V, D]


class RowsEmbedding(nn.Module):
    """nn.Embedding whose rows `token_adapter.indices` are trainable (module path as peft's: ...embed_tokens.token_adapter)."""

    def __init__(self, base: nn.Embedding, rows: TrainableRows):
        super().__init__()
        self.weight, self.token_adapter = base.weight, rows

    def forward(self, idx):
        return F.embedding(idx, self.token_adapter.weight_of(self.weight))   # [B, T] -> [B, T, D]


class RowsLinear(nn.Module):
    """The output head with the same rows trainable (tied: the embedding's own TrainableRows, shared)."""

    def __init__(self, base: nn.Linear, rows: TrainableRows):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.token_adapter = base.weight, rows

    def forward(self, x):
        return F.linear(x, self.token_adapter.weight_of(self.weight))   # [..., D] -> [..., V]


def _row_modules(model: nn.Module) -> dict[str, TrainableRows]:
    """Module path (embed_tokens / lm_head) -> its TrainableRows, each shared one once (the embedding's)."""
    out, seen = {}, set()
    for name, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, (RowsEmbedding, RowsLinear)) and id(m.token_adapter) not in seen:
            seen.add(id(m.token_adapter))
            out[name] = m.token_adapter
    return out


def _check_targets(model: nn.Module, targets) -> None:
    present = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    for t in targets:
        if t not in present:
            raise HessGPTError(f"--targets: the model has no module named {t!r} (it has {','.join(sorted(present))})")


def apply_lora(model: nn.Module, cfg: LoRAConfig) -> list[str]:
    """Freeze the model and wrap every targeted Linear in place; returns the wrapped module paths."""
    _check_targets(model, cfg.targets)
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in cfg.targets:
            parent_name, child = name.rsplit(".", 1)
            setattr(model.get_submodule(parent_name), child, LoRALinear(module, cfg.r, cfg.alpha, cfg.dropout))
            wrapped.append(name)
    if cfg.token_rows:
        emb, head = model.model.embed_tokens, model.lm_head
        tied = head.weight is emb.weight
        rows = TrainableRows(emb.weight, cfg.token_rows)
        model.model.embed_tokens = RowsEmbedding(emb, rows)
        model.lm_head = RowsLinear(head, rows if tied else TrainableRows(head.weight, cfg.token_rows))
        wrapped += ["model.embed_tokens"] + ([] if tied else ["lm_head"])
    return wrapped


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def _full(w: torch.Tensor) -> torch.Tensor:
    """A parameter as one whole fp32 CPU tensor: an FSDP2 shard (DTensor) is all-gathered first (collective)."""
    w = w.detach()
    if isinstance(w, DTensor):
        w = w.full_tensor()
    return w.float().cpu().contiguous()


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """PEFT keys -> whole tensors (fp32, CPU). Under FSDP every rank must call it (same order on all ranks)."""
    sd = {}
    for name, m in lora_modules(model).items():
        sd[f"{PREFIX}{name}.lora_A.weight"] = _full(m.lora_A.weight)
        sd[f"{PREFIX}{name}.lora_B.weight"] = _full(m.lora_B.weight)
    for name, rows in _row_modules(model).items():
        sd[f"{PREFIX}{name}.token_adapter.trainable_tokens_delta"] = _full(rows.trainable_tokens_delta)
    return sd


def load_adapter_weights(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    mods = lora_modules(model)
    for name, m in mods.items():
        for part in ("lora_A", "lora_B"):
            key = f"{PREFIX}{name}.{part}.weight"
            if key not in sd:
                raise HessGPTError(f"{source}: missing adapter weight {key}")
            w = getattr(m, part).weight
            if tuple(sd[key].shape) != tuple(w.shape):
                raise HessGPTError(f"{source}: {key} has shape {tuple(sd[key].shape)}, the model expects {tuple(w.shape)}")
            with torch.no_grad():
                w.copy_(sd[key])
    for name, rows in _row_modules(model).items():
        key = f"{PREFIX}{name}.token_adapter.trainable_tokens_delta"
        if key not in sd or tuple(sd[key].shape) != tuple(rows.trainable_tokens_delta.shape):
            raise HessGPTError(f"{source}: missing or misshaped trainable token rows {key}")
        with torch.no_grad():
            rows.trainable_tokens_delta.copy_(sd[key])


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace each LoRALinear by a plain Linear holding W + scaling * B A (in place; returns the model)."""
    for name, m in lora_modules(model).items():
        parent_name, child = name.rsplit(".", 1)
        lin = nn.Linear(m.in_features, m.out_features, bias=False, device=m.weight.device, dtype=m.weight.dtype)
        with torch.no_grad():
            lin.weight.copy_((m.weight.float() + m.delta()).to(m.weight.dtype))
        setattr(model.get_submodule(parent_name), child, lin)
    emb, head = model.model.embed_tokens, model.lm_head
    if isinstance(emb, RowsEmbedding):
        tied = head.token_adapter is emb.token_adapter
        with torch.no_grad():
            emb.weight.copy_(emb.token_adapter.weight_of(emb.weight))
            if not tied:
                head.weight.copy_(head.token_adapter.weight_of(head.weight))
        plain = nn.Embedding(emb.weight.shape[0], emb.weight.shape[1], device=emb.weight.device, dtype=emb.weight.dtype)
        plain.weight = emb.weight
        lin = nn.Linear(head.in_features, head.out_features, bias=False, device=head.weight.device, dtype=head.weight.dtype)
        lin.weight = emb.weight if tied else head.weight
        model.model.embed_tokens, model.lm_head = plain, lin
    for p in model.parameters():
        p.requires_grad_(True)
    return model


# ---- the base's identity ------------------------------------------------------------------------


def weights_hash(path: str) -> str:
    """sha256 (first 16 hex) of a checkpoint's weight files: identifies the exact base an adapter was trained on."""
    names = sorted(n for n in os.listdir(path) if (n.startswith("model") and n.endswith(".safetensors"))
                   or (n.startswith("pytorch_model") and n.endswith(".bin")))
    if not names:
        raise HessGPTError(f"{path}: no weight files (model*.safetensors) to identify the base")
    h = hashlib.sha256()
    for name in names:
        with open(os.path.join(path, name), "rb") as f:
            while chunk := f.read(1 << 23):
                h.update(chunk)
    return h.hexdigest()[:16]


# ---- adapter folders (PEFT format) --------------------------------------------------------------


def row_targets(cfg: LoRAConfig, tied: bool) -> list[str]:
    """peft's trainable_token_indices keys: the embedding (a tied head follows it), and an untied head too."""
    return [] if not cfg.token_rows else ["embed_tokens"] + ([] if tied else ["lm_head"])


def peft_config(cfg: LoRAConfig, base_path: str, tied: bool = True) -> dict:
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_path,
        "r": cfg.r,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": sorted(cfg.targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "trainable_token_indices": {m: list(cfg.token_rows) for m in row_targets(cfg, tied)} or None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": None,
    }


def write_adapter(out_dir: str, model: nn.Module | None, cfg: LoRAConfig, base_path: str, base_hash: str,
                  tokenizer=None, meta: dict | None = None, state: dict[str, torch.Tensor] | None = None) -> None:
    """Write the adapter files into `out_dir` (call inside checkpoint.atomic_dir_write for atomicity). `state`: the
    adapter weights already gathered (`adapter_state_dict`, e.g. on every FSDP rank before rank 0 writes)."""
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    state = state if state is not None else adapter_state_dict(model)
    tied = f"{PREFIX}lm_head.token_adapter.trainable_tokens_delta" not in state
    with open(os.path.join(out_dir, CONFIG_FILE), "w") as f:
        json.dump(peft_config(cfg, os.path.abspath(base_path), tied), f, indent=2)
    save_file(state, os.path.join(out_dir, WEIGHTS_FILE), metadata={"format": "pt"})
    with open(os.path.join(out_dir, INFO_FILE), "w") as f:
        json.dump({"base_path": os.path.abspath(base_path), "base_hash": base_hash,
                   "tokenizer_hash": getattr(tokenizer, "hash", None)}, f, indent=2)
    if tokenizer is not None:
        tokenizer.save(out_dir)
    if meta is not None:
        with open(os.path.join(out_dir, "meta.json"), "w") as f:
            json.dump(meta, f, indent=2, default=str)


def is_adapter(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CONFIG_FILE)) and os.path.isfile(os.path.join(path, WEIGHTS_FILE))


def read_adapter(path: str) -> tuple[LoRAConfig, dict[str, torch.Tensor], dict]:
    """(config, PEFT-keyed weights, hessgpt info or {} for a foreign PEFT adapter)."""
    from safetensors.torch import load_file

    if not is_adapter(path):
        raise HessGPTError(f"{path}: not a LoRA adapter (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    with open(os.path.join(path, CONFIG_FILE)) as f:
        pc = json.load(f)
    if pc.get("peft_type") != "LORA":
        raise HessGPTError(f"{path}/{CONFIG_FILE}: peft_type {pc.get('peft_type')!r} is not LORA")
    if pc.get("use_dora") or pc.get("use_rslora") or pc.get("rank_pattern") or pc.get("alpha_pattern"):
        raise HessGPTError(f"{path}/{CONFIG_FILE}: DoRA/rsLoRA/per-layer rank patterns are not supported")
    targets = pc.get("target_modules") or []
    if isinstance(targets, str):
        raise HessGPTError(f"{path}/{CONFIG_FILE}: target_modules as a regex is not supported; list module names")
    rows = pc.get("trainable_token_indices") or {}
    if isinstance(rows, list):
        rows = {"embed_tokens": rows}
    if any(k not in ("embed_tokens", "lm_head") for k in rows) or len({tuple(sorted(v)) for v in rows.values()}) > 1:
        raise HessGPTError(f"{path}/{CONFIG_FILE}: trainable_token_indices {rows} is not supported "
                           "(the same rows of embed_tokens and, untied, lm_head)")
    cfg = LoRAConfig(r=int(pc["r"]), alpha=float(pc["lora_alpha"]), dropout=float(pc.get("lora_dropout", 0.0)),
                     targets=tuple(t.rsplit(".", 1)[-1] for t in targets),
                     token_rows=tuple(next(iter(rows.values()), ())))
    sd = load_file(os.path.join(path, WEIGHTS_FILE))
    info = {}
    if os.path.exists(os.path.join(path, INFO_FILE)):
        with open(os.path.join(path, INFO_FILE)) as f:
            info = json.load(f)
    return cfg, sd, info


def check_base(adapter_dir: str, info: dict, base_path: str) -> None:
    """Refuse an adapter trained on another base (weights hash differs)."""
    want = info.get("base_hash")
    if not want:
        return  # a foreign PEFT adapter: only shapes are checked
    got = weights_hash(base_path)
    if got != want:
        raise HessGPTError(f"adapter {adapter_dir} was trained on base {info.get('base_path')} (weights hash {want}), "
                           f"not on {base_path} (hash {got}); pass the base it was trained on")


def adapter_deltas(cfg: LoRAConfig, sd: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """{'<module path>.weight': scaling * B @ A} for every adapted module."""
    out = {}
    for key in sd:
        if key.endswith(".token_adapter.trainable_tokens_delta"):   # rows replaced, not added: see merge_state_dict
            out[key.removeprefix(PREFIX).removesuffix(".token_adapter.trainable_tokens_delta") + ".weight"] = \
                TokenRows(cfg.token_rows, sd[key].float())
            continue
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[: -len(".lora_A.weight")]
        b_key = module + ".lora_B.weight"
        if b_key not in sd:
            raise HessGPTError(f"{source}: {key} has no matching {b_key}")
        name = module.removeprefix(PREFIX)
        out[name + ".weight"] = cfg.scaling * (sd[b_key].float() @ sd[key].float())
    if not any(not isinstance(d, TokenRows) for d in out.values()):
        raise HessGPTError(f"{source}: no lora_A/lora_B weights found")
    return out


@dataclass
class TokenRows:
    """Trainable token rows of an adapter: weight[indices] = values when merged."""
    indices: tuple[int, ...]
    values: torch.Tensor   # [n, D]


def merge_state_dict(state: dict[str, torch.Tensor], deltas: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Add each delta to the matching weight of a (HessGPT or HF-Mistral/Llama) state dict."""
    out = dict(state)
    for key, d in deltas.items():
        if key not in state:
            raise HessGPTError(f"{source}: the adapter targets {key}, which the base does not have")
        w = state[key]
        if isinstance(d, TokenRows):
            if len(d.indices) != d.values.shape[0] or d.values.shape[1:] != w.shape[1:] or max(d.indices) >= w.shape[0]:
                raise HessGPTError(f"{source}: trainable token rows for {key} do not fit its shape {tuple(w.shape)}")
            out[key] = w.index_copy(0, torch.tensor(d.indices), d.values.to(w.dtype))
            continue
        if tuple(w.shape) != tuple(d.shape):
            raise HessGPTError(f"{source}: {key} is {tuple(w.shape)} in the base but the adapter's update is {tuple(d.shape)}")
        out[key] = (w.float() + d).to(w.dtype)
    return out
