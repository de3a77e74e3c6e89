"""GGUF file -> HessGPT checkpoint (`hessgpt convert from-gguf FILE.gguf OUT`, or `hessgpt.load("x.gguf")`).

The reverse of gguf.py, read with the format's own reader (`gguf.GGUFReader`), for the `llama` architecture:
  - tensors dequantized to fp32 with `gguf.quants.dequantize` (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and
    the K-quants Q2_K..Q6_K), renamed back from llama.cpp's names (gguf.TENSOR_NAMES), and the q/k rows
    un-permuted from llama.cpp's interleaved RoPE pairs to HF's rotate-half layout (inverse of `permute_rope`);
    no `output.weight` means tied embeddings;
  - hyper-parameters from `llama.*` (a RoPE scaling, biases, partial RoPE or any unknown tensor is an error,
    never a silently different model);
  - the tokenizer rebuilt as a Hugging Face `tokenizers` byte-level BPE from `tokenizer.ggml.tokens/merges`,
    with llama.cpp's pre-tokenizer split for `tokenizer.ggml.pre`, CONTROL tokens special and USER_DEFINED
    tokens whole (as transformers' GGUF converter does); a SentencePiece vocabulary (`llama`) is handed to
    transformers' converter itself. Then HessGPT's special tokens are added where missing
    (the embeddings grow to fit, each new row = the mean of the rows of the words it stands for, as `from-hf` does);
  - the file's own chat template and special tokens kept in meta.json under "source_tokenizer", so the
    imported model can still be spoken to in the format it was trained on.
"""

import os
from collections import Counter

import numpy as np
import torch
from tokenizers import AddedToken, Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

from hessgpt.checkpoint import load_state_dict_strict, save
from hessgpt.config import ModelConfig
from hessgpt.convert.gguf import TENSOR_NAMES
from hessgpt.convert.hf import grow_vocab
from hessgpt.errors import HessGPTError
from hessgpt.model import Transformer, rope_tables
from hessgpt.tokenizer import PAD, SPECIAL_TOKENS, Tokenizer, description_rows, with_template

ARCHITECTURES = ("llama",)
# ggml type names gguf.quants.dequantize reads that HessGPT accepts
TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")

# llama.cpp's pre-tokenizer kinds (llama-vocab.cpp) -> how `tokenizers` splits the same way
_GPT2 = ("default", "gpt-2", "gpt2", "mpt", "olmo", "jais", "trillion")
_DIGITS_THEN_GPT2 = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")
_LLAMA3 = ("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "smaug-bpe", "dbrx")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
TEKKEN_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = (*_GPT2, *_DIGITS_THEN_GPT2, *_LLAMA3, "tekken")

CONTROL, USER_DEFINED = 3, 4  # gguf.TokenType


def _gguf():
    try:
        import gguf
    except ImportError:
        raise HessGPTError("reading GGUF files needs the `gguf` package: pip install 'hessgpt[gguf]'") from None
    return gguf


class GGUFFile:
    """A GGUF file's metadata (decoded values) and tensors, as the `gguf` reader sees them."""

    def __init__(self, path: str):
        gguf = _gguf()
        if not os.path.isfile(path):
            raise HessGPTError(f"{path}: no such GGUF file")
        try:
            self.reader = gguf.GGUFReader(path)
        except Exception as e:  # not a GGUF (bad magic, truncated): one line naming the file
            raise HessGPTError(f"{path}: not a readable GGUF file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        self.path = path
        self.fields = self.reader.fields
        self.tensors = {t.name: t for t in self.reader.tensors}

    def get(self, key: str, default=None):
        f = self.fields.get(key)
        return default if f is None else f.contents()

    def require(self, key: str):
        v = self.get(key)
        if v is None:
            raise HessGPTError(f"{self.path}: metadata key {key!r} is missing")
        return v

    def tensor(self, name: str) -> torch.Tensor:
        """One tensor dequantized to fp32, in PyTorch's [out, in] order."""
        gguf = _gguf()
        t = self.tensors[name]
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists dims innermost first
        return torch.from_numpy(np.array(data, dtype=np.float32).reshape(shape))  # a writable copy


def unpermute_rope(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Interleaved pairs -> rotate-half rows, per head: the inverse of gguf.permute_rope. w [n_head * head_dim, in]."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_file(g: GGUFFile) -> None:
    arch = g.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise HessGPTError(f"{g.path}: architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})")
    for name, t in g.tensors.items():
        if t.tensor_type.name not in TYPES:
            raise HessGPTError(f"{g.path}: tensor {name} has type {t.tensor_type.name}, not supported "
                               f"(supported: {', '.join(TYPES)})")
    scaling = g.get("llama.rope.scaling.type")
    if scaling not in (None, "none"):
        raise HessGPTError(f"{g.path}: llama.rope.scaling.type {scaling!r} is not supported (only plain RoPE)")


def _f32(v) -> float:
    """A GGUF float32 value as the decimal it was written from (9.99999974e-06 -> 1e-05): the shortest repr."""
    return float(str(np.float32(v)))


def config_from_gguf(g: GGUFFile) -> ModelConfig:
    check_file(g)
    n_heads = int(g.require("llama.attention.head_count"))
    dim = int(g.require("llama.embedding_length"))
    head_dim = int(g.get("llama.attention.key_length") or dim // n_heads)
    rope_dim = int(g.get("llama.rope.dimension_count") or head_dim)
    if rope_dim != head_dim:
        raise HessGPTError(f"{g.path}: llama.rope.dimension_count {rope_dim} != head dim {head_dim} (partial RoPE is not supported)")
    value_dim = int(g.get("llama.attention.value_length") or head_dim)
    if value_dim != head_dim:
        raise HessGPTError(f"{g.path}: llama.attention.value_length {value_dim} != key_length {head_dim} (not supported)")
    embd = g.tensors.get("token_embd.weight")
    if embd is None:
        raise HessGPTError(f"{g.path}: tensor 'token_embd.weight' is missing")
    return ModelConfig(
        vocab_size=int(embd.shape[1]),               # GGUF shape [dim, vocab]
        dim=dim,
        n_layers=int(g.require("llama.block_count")),
        n_heads=n_heads,
        n_kv_heads=int(g.get("llama.attention.head_count_kv") or n_heads),
        hidden_dim=int(g.require("llama.feed_forward_length")),
        head_dim=head_dim,
        context_length=min(int(g.get("llama.context_length") or 2048), 32768),
        rope_theta=_f32(g.get("llama.rope.freq_base") or 10000.0),
        norm_eps=_f32(g.get("llama.attention.layer_norm_rms_epsilon") or 1e-5),
        tie_embeddings="output.weight" not in g.tensors,
    )


def hessgpt_names(cfg: ModelConfig) -> dict[str, str]:
    """GGUF tensor name -> HessGPT (HF Mistral) name, for every tensor a llama file of this shape holds."""
    out = {}
    for ours, theirs in TENSOR_NAMES.items():
        if "{i}" in ours:
            for i in range(cfg.n_layers):
                out[theirs.format(i=i)] = ours.format(i=i)
        elif not (ours == "lm_head.weight" and cfg.tie_embeddings):
            out[theirs] = ours
    return out


def state_dict_from_gguf(g: GGUFFile, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    names = hessgpt_names(cfg)
    unknown = sorted(set(g.tensors) - set(names))
    if unknown:
        raise HessGPTError(f"{g.path}: tensor {unknown[0]!r} is not part of HessGPT's llama architecture "
                           f"({len(unknown)} unknown tensor(s); biases and extra RoPE tables are not supported)")
    missing = sorted(set(names) - set(g.tensors))
    if missing:
        raise HessGPTError(f"{g.path}: tensor {missing[0]!r} is missing")
    sd = {}
    for gname, ours in names.items():
        w = g.tensor(gname)
        if gname.endswith(".attn_q.weight"):
            w = unpermute_rope(w, cfg.n_heads)
        elif gname.endswith(".attn_k.weight"):
            w = unpermute_rope(w, cfg.n_kv_heads)
        sd[ours] = w
    return sd


# ---- tokenizer --------------------------------------------------------------------------------


def _pre_tokenizer(pre: str, source: str):
    if pre in _GPT2:
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _DIGITS_THEN_GPT2:   # llama.cpp: "\p{N}" isolated, then GPT-2's regex
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    split = {**{p: LLAMA3_SPLIT for p in _LLAMA3}, "tekken": TEKKEN_SPLIT}.get(pre)
    if split is None:
        raise HessGPTError(f"{source}: tokenizer.ggml.pre {pre!r} is not supported (supported: {', '.join(PRE_TOKENIZERS)})")
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def sentencepiece_tokenizer(g: GGUFFile):
    """A SentencePiece vocabulary (`tokenizer.ggml.model = "llama"`: Llama 2, Mistral 7B, ...) as a `tokenizers`
    tokenizer, rebuilt by transformers' own GGUF converter (merges recovered from the token scores, byte
    fallback, "▁" spaces), so the ids are those `AutoTokenizer.from_pretrained(dir, gguf_file=...)` gives."""
    try:
        from transformers.integrations.gguf import convert_gguf_tokenizer, get_gguf_tokenizer
    except ImportError:
        raise HessGPTError(f"{g.path}: a SentencePiece ('llama') GGUF vocabulary is rebuilt with transformers' GGUF "
                           "converter: pip install 'hessgpt[hf]'") from None
    arch, tokenizer_dict, _ = get_gguf_tokenizer(g.path)
    hf, _ = convert_gguf_tokenizer(arch, tokenizer_dict)
    return hf


def hf_tokenizer_from_gguf(g: GGUFFile):
    """The file's vocabulary as a `tokenizers.Tokenizer` (ids = the file's token ids): byte-level BPE ("gpt2")
    rebuilt here, SentencePiece ("llama") by transformers' converter."""
    kind = g.get("tokenizer.ggml.model")
    if kind == "llama":
        return sentencepiece_tokenizer(g)
    if kind != "gpt2":
        raise HessGPTError(f"{g.path}: tokenizer.ggml.model {kind!r} is not supported (supported: gpt2 = byte-level "
                           "BPE, llama = SentencePiece)")
    tokens = list(g.require("tokenizer.ggml.tokens"))
    merges = [tuple(m.split(" ", 1)) for m in g.require("tokenizer.ggml.merges")]
    types = list(g.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    pre = g.get("tokenizer.ggml.pre") or "default"
    vocab = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(tok, i)  # a duplicated string keeps its first id (llama.cpp does the same)
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=pre in _LLAMA3))
    hf.pre_tokenizer = _pre_tokenizer(pre, g.path)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False)
                           for t, k in zip(tokens, types) if k == CONTROL and vocab[t] < len(tokens)])
    hf.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == USER_DEFINED])
    return hf


def source_tokenizer_info(g: GGUFFile) -> dict:
    """What the file says about its own chat format (kept in meta.json for later use)."""
    tokens = g.get("tokenizer.ggml.tokens") or []
    info: dict = {"format": "gguf", "chat_template": g.get("tokenizer.chat_template"),
                  "add_bos_token": g.get("tokenizer.ggml.add_bos_token"), "add_eos_token": g.get("tokenizer.ggml.add_eos_token"),
                  "pre_tokenizer": g.get("tokenizer.ggml.pre"), "special_tokens": {}}
    for name, key in [("bos", "bos_token_id"), ("eos", "eos_token_id"), ("eot", "eot_token_id"),
                      ("eom", "eom_token_id"), ("unk", "unknown_token_id"), ("pad", "padding_token_id")]:
        i = g.get(f"tokenizer.ggml.{key}")
        if i is not None and 0 <= int(i) < len(tokens):
            info["special_tokens"][name] = {"id": int(i), "content": tokens[int(i)]}
    return info


def tokenizer_from_gguf(g: GGUFFile):
    """HessGPT Tokenizer: the file's tokenizer, HessGPT's special tokens added where the file lacks them."""
    hf = hf_tokenizer_from_gguf(g)
    missing = [t for t in SPECIAL_TOKENS if hf.token_to_id(t) is None and t != PAD]
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    tok = Tokenizer(hf, {t: hf.token_to_id(t) for t in SPECIAL_TOKENS}, path=g.path)
    named = {k: v["content"] for k, v in source_tokenizer_info(g)["special_tokens"].items()}
    return with_template(tok, g.get("tokenizer.chat_template"), named.get("bos"), named.get("eos"))


# ---- entry points -----------------------------------------------------------------------------


def load_gguf(path: str):
    """(Transformer, Tokenizer) from a llama-architecture GGUF file, fp32 weights.
    `model.source_tokenizer` holds the file's own chat template, special tokens and tensor types."""
    g = GGUFFile(str(path))
    cfg = config_from_gguf(g)
    tokenizer = tokenizer_from_gguf(g)
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device="cpu")
    load_state_dict_strict(model, state_dict_from_gguf(g, cfg), source=g.path)
    model.rope_cos, model.rope_sin = rope_tables(cfg.head_dim, cfg.context_length, cfg.rope_theta)
    if tokenizer.vocab_size > cfg.vocab_size:
        model = grow_vocab(model, tokenizer.vocab_size, description_rows(tokenizer, cfg.vocab_size))
    model.source_tokenizer = source_tokenizer_info(g)
    model.source_tokenizer["tensor_types"] = dict(Counter(t.tensor_type.name for t in g.tensors.values()))
    return model.eval(), tokenizer


def from_gguf(path: str, out: str) -> dict:
    """Write a HessGPT checkpoint folder (atomically). Returns {"params", "vocab_size", "types"}."""
    model, tokenizer = load_gguf(path)
    save(out, model, tokenizer, meta={"stage": "import", "parent": os.path.abspath(path),
                                      "source_tokenizer": model.source_tokenizer})
    return {"params": sum(p.numel() for p in model.parameters()), "vocab_size": model.config.vocab_size,
            "types": model.source_tokenizer["tensor_types"]}
