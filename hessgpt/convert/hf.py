"""Hugging Face conversion: HessGPT <-> `MistralForCausalLM` / `LlamaForCausalLM` directories.

HessGPT's parameter names *are* HF Mistral's, so the weight key map is the identity; what needs care is the
config (names, tied embeddings, rope base: transformers 5 writes `rope_parameters` instead of `rope_theta`)
and the tokenizer (special tokens, chat template). `load_hf` is the reader loader.py uses for HF folders;
`to_hf(ckpt, out)`, which reads anything hessgpt.load reads, is in export.py.
"""

import json
import os

import torch
from safetensors.torch import load_file, save_file

from hessgpt.checkpoint import atomic_dir_write, load_state_dict_strict, save
from hessgpt.config import ModelConfig
from hessgpt.errors import HessGPTError
from hessgpt.model import Transformer
from hessgpt.tokenizer import BOS, PAD, UNK, Tokenizer, adopt_tokenizer, description_rows, with_template

# HF config key -> HessGPT ModelConfig field
CONFIG_KEY_MAP = {
    "vocab_size": "vocab_size",
    "hidden_size": "dim",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "num_key_value_heads": "n_kv_heads",
    "intermediate_size": "hidden_dim",
    "head_dim": "head_dim",
    "max_position_embeddings": "context_length",
    "rms_norm_eps": "norm_eps",
    "tie_word_embeddings": "tie_embeddings",
}
SUPPORTED = ("mistral", "llama")


def rope_theta_of(hf: dict) -> float:
    if "rope_theta" in hf and hf["rope_theta"] is not None:
        return float(hf["rope_theta"])
    params = hf.get("rope_parameters") or {}
    if params.get("rope_type", "default") not in ("default", None):
        raise HessGPTError(f"rope scaling {params.get('rope_type')!r} is not supported (only plain RoPE)")
    if "rope_theta" in params:
        return float(params["rope_theta"])
    return 10000.0


def config_from_hf(hf: dict, source: str = "config.json") -> ModelConfig:
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED:
        raise HessGPTError(f"{source}: model_type {model_type!r} is not supported (supported: {', '.join(SUPPORTED)})")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise HessGPTError(f"{source}: attention_bias/mlp_bias are not supported by HessGPT's architecture")
    if (hf.get("rope_scaling") or {}).get("rope_type", "default") not in ("default",):
        raise HessGPTError(f"{source}: rope_scaling {hf['rope_scaling']} is not supported")
    d = {ours: hf[theirs] for theirs, ours in CONFIG_KEY_MAP.items() if hf.get(theirs) is not None}
    d["rope_theta"] = rope_theta_of(hf)
    d.setdefault("tie_embeddings", False)
    d["context_length"] = min(int(d.get("context_length", 2048)), 32768)
    return ModelConfig.from_dict(d, source=source)


def config_to_hf(cfg: ModelConfig, tokenizer=None) -> dict:
    special = {}
    if tokenizer is not None:
        special = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.turn_end_id, "pad_token_id": tokenizer.pad_id}
    return {
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.context_length,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,  # read by transformers 4; transformers 5 reads rope_parameters
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "sliding_window": None,
        "attention_dropout": 0.0,
        "tie_word_embeddings": cfg.tie_embeddings,
        "torch_dtype": "float32",
        "use_cache": True,
        **special,
    }


def save_hf(model, tokenizer, out: str) -> None:
    """Write `model` (and `tokenizer`) as a directory that `AutoModelForCausalLM` and `AutoTokenizer` load
    offline, atomically."""

    def write(tmp: str) -> None:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config_to_hf(model.config, tokenizer), f, indent=2)
        sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        if model.config.tie_embeddings:
            sd.pop("lm_head.weight")
        save_file(sd, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            write_hf_tokenizer(tokenizer, tmp)
            with open(os.path.join(tmp, "generation_config.json"), "w") as f:
                json.dump({"bos_token_id": tokenizer.bos_id, "eos_token_id": list(dict.fromkeys([tokenizer.turn_end_id] + tokenizer.stop_ids)),
                           "pad_token_id": tokenizer.pad_id}, f, indent=2)

    atomic_dir_write(out, write)


def write_hf_tokenizer(tokenizer, out_dir: str) -> None:
    tokenizer.save(out_dir)  # tokenizer.json (+ hessgpt_tokenizer.json, ignored by transformers)
    own = tokenizer.template.spec if tokenizer.template is not None else {}   # an imported model's bos/eos
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": own.get("bos_token") or BOS, "eos_token": tokenizer.token_str(tokenizer.turn_end_id), "unk_token": UNK, "pad_token": PAD if tokenizer.special.get(PAD) is not None else UNK,
        "add_bos_token": False, "add_eos_token": False,
        "model_max_length": 1_000_000,
        "clean_up_tokenization_spaces": False,
        "chat_template": tokenizer.chat_template(),
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
        json.dump({k: cfg[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}, f, indent=2)
    with open(os.path.join(out_dir, "chat_template.jinja"), "w") as f:
        f.write(tokenizer.chat_template())


def read_hf_state_dict(hf_dir: str) -> dict[str, torch.Tensor]:
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    single = os.path.join(hf_dir, "model.safetensors")
    if os.path.exists(single):
        return load_file(single)
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        sd = {}
        for name in files:
            sd.update(load_file(os.path.join(hf_dir, name)))
        return sd
    bins = [n for n in os.listdir(hf_dir) if n.startswith("pytorch_model") and n.endswith(".bin")]
    if bins:
        sd = {}
        for name in sorted(bins):
            sd.update(torch.load(os.path.join(hf_dir, name), map_location="cpu", weights_only=True))
        return sd
    raise HessGPTError(f"{hf_dir}: no model.safetensors, sharded index or pytorch_model*.bin found")


def load_hf(hf_dir: str):
    """(Transformer, Tokenizer or None) from a Mistral/Llama HF directory; the tokenizer gets HessGPT's
    special tokens added (and the embeddings grow to fit, descriptive rows: grow_vocab) when it lacks them."""
    cfg_path = os.path.join(hf_dir, "config.json")
    with open(cfg_path) as f:
        cfg = config_from_hf(json.load(f), source=cfg_path)
    sd = read_hf_state_dict(hf_dir)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}
    model = Transformer(cfg)
    load_state_dict_strict(model, sd, source=hf_dir)
    tokenizer = None
    if os.path.exists(os.path.join(hf_dir, "tokenizer.json")):
        try:
            tokenizer = Tokenizer.load(hf_dir)
        except HessGPTError:  # a foreign vocabulary: HessGPT's tokens added, its own chat template kept
            tokenizer = with_template(adopt_tokenizer(hf_dir), *hf_chat_template(hf_dir))
        if tokenizer.vocab_size > cfg.vocab_size:
            model = grow_vocab(model, tokenizer.vocab_size, description_rows(tokenizer, cfg.vocab_size))
    return model, tokenizer


def hf_chat_template(hf_dir: str) -> tuple[str | None, str | None, str | None]:
    """(chat_template, bos_token, eos_token) of an HF folder: tokenizer_config.json, else chat_template.jinja."""
    cfg = {}
    path = os.path.join(hf_dir, "tokenizer_config.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    template = cfg.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    jinja = os.path.join(hf_dir, "chat_template.jinja")
    if template is None and os.path.exists(jinja):
        with open(jinja, encoding="utf-8") as f:
            template = f.read()

    def content(t):
        return t.get("content") if isinstance(t, dict) else t

    return template, content(cfg.get("bos_token")), content(cfg.get("eos_token"))


def grow_vocab(model, vocab_size: int, like: dict[int, list[int]] | None = None):
    """Resize embeddings (and untied head) to `vocab_size`. A new row `i` in `like` is the mean of the old rows
    `like[i]` (tokenizer.description_rows: the words the token stands for); any other new row is the mean of
    all old rows."""
    old = model.config
    cfg = ModelConfig.from_dict({**old.to_dict(), "vocab_size": vocab_size})
    new = Transformer(cfg)
    sd = model.state_dict()
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        w = sd[key]
        extra = w.mean(0, keepdim=True).repeat(vocab_size - w.shape[0], 1)
        for i, ids in (like or {}).items():
            extra[i - w.shape[0]] = w[ids].mean(0)
        sd[key] = torch.cat([w, extra], 0)
    new.load_state_dict(sd, strict=not cfg.tie_embeddings)
    return new


def from_hf(hf_dir: str, out: str) -> None:
    model, tokenizer = load_hf(hf_dir)
    save(out, model, tokenizer, meta={"stage": "import", "parent": os.path.abspath(hf_dir)})
