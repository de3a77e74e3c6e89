"""HessGPT checkpoint -> GGUF file for llama.cpp and Ollama (`hessgpt convert to-gguf CKPT OUT.gguf --type q8_0`).

Written with the format's own writer (`gguf.GGUFWriter`) as the `llama` architecture:
  - tensors renamed to llama.cpp's names (token_embd, blk.N.attn_q, ..., output_norm, output; no `output`
    when the embeddings are tied, llama.cpp then reuses token_embd);
  - q/k projection rows permuted from HF's rotate-half RoPE layout to llama.cpp's interleaved pairs, exactly
    like convert_hf_to_gguf.py's `LlamaModel.permute` (k uses the kv head count), so llama.cpp computes the
    same function;
  - hyper-parameters including the RoPE base (`llama.rope.freq_base`, carried explicitly);
  - the byte-level BPE tokenizer (`tokenizer.ggml.model = "gpt2"`; pre-tokenizer "smollm" for HessGPT's default
    one-token-per-digit split, i.e. digits isolated then GPT-2's regex, which differs from HessGPT's single regex
    only on a run of 2+ spaces before a digit; "gpt-2" for GPT-2's regex), token types (special tokens CONTROL),
    merges, bos/eos/eot/pad/unk ids, and the chat template.
`write_gguf(model, tokenizer, out)` writes a loaded model; `to_gguf(ckpt, out)`, which reads anything hessgpt.load
reads, is in export.py. The reverse, GGUF -> HessGPT, is gguf_import.py.
Types: f32, f16 (1-D tensors stay f32, as llama.cpp expects), q8_0 and q4_0 (blocks of 32; a matrix whose rows
are not a multiple of 32 falls back to f16). q4_0 is byte for byte what `hessgpt quantize --int4` stores
(kernels/int4.py), so llama.cpp and HessGPT's int4 engine run the same weights.
"""

import json
import os

import numpy as np
import torch

from hessgpt.errors import HessGPTError
from hessgpt.tokenizer import DIGITS_PATTERN, GPT2_PATTERN, SMOLLM_PATTERN, _split_pattern

TYPES = ("f32", "f16", "q8_0", "q4_0")

# HessGPT (HF Mistral) name -> llama.cpp GGUF name; {i} is the layer
TENSOR_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{i}.input_layernorm.weight": "blk.{i}.attn_norm.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "blk.{i}.attn_q.weight",
    "model.layers.{i}.self_attn.k_proj.weight": "blk.{i}.attn_k.weight",
    "model.layers.{i}.self_attn.v_proj.weight": "blk.{i}.attn_v.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "blk.{i}.attn_output.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "blk.{i}.ffn_norm.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "blk.{i}.ffn_gate.weight",
    "model.layers.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "model.layers.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
}


def gguf_name(name: str) -> str:
    parts = name.split(".")
    if name.startswith("model.layers."):
        i = parts[2]
        key = ".".join(parts[:2] + ["{i}"] + parts[3:])
        return TENSOR_NAMES[key].format(i=i)
    return TENSOR_NAMES[name]


def permute_rope(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rotate-half rows -> interleaved pairs, per head (convert_hf_to_gguf.py LlamaModel.permute).
    w [n_head * head_dim, in]."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(model) -> list[tuple[str, torch.Tensor]]:
    """(GGUF name, fp32 tensor in llama.cpp layout) for every weight, in checkpoint order."""
    cfg = model.config
    out = []
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_embeddings:
            continue
        t = t.detach().float().cpu()
        if name.endswith("q_proj.weight"):
            t = permute_rope(t, cfg.n_heads)
        elif name.endswith("k_proj.weight"):
            t = permute_rope(t, cfg.n_kv_heads)
        out.append((gguf_name(name), t.contiguous()))
    return out


def _pre_type(tokenizer) -> str:
    """llama.cpp's pre-tokenizer kind that splits text like this tokenizer: "gpt-2" for GPT-2's regex, "smollm"
    (every digit alone, then GPT-2's regex) for SmolLM2's pre-tokenizer and for HessGPT's default
    one-token-per-digit split (DIGITS_PATTERN, which differs from it on a whitespace run right before a digit:
    "  1" is " ", " ", "1" in HessGPT and "  ", "1" in llama.cpp)."""
    pattern = _split_pattern(json.loads(tokenizer.hf.to_str()).get("pre_tokenizer"))
    kinds = {GPT2_PATTERN: "gpt-2", DIGITS_PATTERN: "smollm", SMOLLM_PATTERN: "smollm"}
    if pattern not in kinds:
        raise HessGPTError(f"GGUF export: the tokenizer's pre-tokenizer split {pattern!r} has no llama.cpp equivalent")
    return kinds[pattern]


def _vocab(tokenizer, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """tokens (byte-level strings, id order), token types, merges ("a b") of a HessGPT tokenizer."""
    import gguf

    state = json.loads(tokenizer.hf.to_str())
    model = state["model"]
    if model.get("type") != "BPE":
        raise HessGPTError(f"GGUF export supports byte-level BPE tokenizers only, got {model.get('type')!r}")
    by_id: dict[int, str] = {i: tok for tok, i in model["vocab"].items()}
    types: dict[int, int] = {}
    for added in state.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    for i in tokenizer.special_id_set:
        types[i] = gguf.TokenType.CONTROL
    n = max(vocab_size, tokenizer.vocab_size)
    tokens, toktypes = [], []
    for i in range(n):
        if i in by_id:
            tokens.append(by_id[i])
            toktypes.append(int(types.get(i, gguf.TokenType.NORMAL)))
        else:  # the model's embedding table is larger than the vocabulary (padding rows)
            tokens.append(f"[PAD{i}]")
            toktypes.append(int(gguf.TokenType.UNUSED))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, toktypes, merges


def check_type(type: str) -> None:
    if type not in TYPES:
        raise HessGPTError(f"--type {type!r}: use one of {', '.join(TYPES)}")


def write_gguf(model, tokenizer, out: str, type: str = "f16", name: str = "model") -> dict:
    """Write `model` and its tokenizer as `out` (a .gguf file, atomically), named "HessGPT {name}".
    Returns {"tensors", "bytes", "type"}."""
    import gguf   # the optional `gguf` extra

    check_type(type)
    if tokenizer is None:
        raise HessGPTError(f"GGUF export of {name!r}: no tokenizer; a GGUF file needs one")
    cfg = model.config
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
             "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[type]

    out = os.path.abspath(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = out + f".tmp-{os.getpid()}"
    w = gguf.GGUFWriter(tmp, "llama")
    try:
        w.add_name(f"HessGPT {name}")
        w.add_file_type(int(ftype))
        w.add_context_length(cfg.context_length)
        w.add_embedding_length(cfg.dim)
        w.add_block_count(cfg.n_layers)
        w.add_feed_forward_length(cfg.hidden_dim)
        w.add_head_count(cfg.n_heads)
        w.add_head_count_kv(cfg.n_kv_heads)
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
        w.add_rope_dimension_count(cfg.head_dim)
        w.add_rope_freq_base(float(cfg.rope_theta))
        w.add_layer_norm_rms_eps(float(cfg.norm_eps))
        w.add_vocab_size(cfg.vocab_size)

        tokens, toktypes, merges = _vocab(tokenizer, cfg.vocab_size)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(_pre_type(tokenizer))
        w.add_token_list(tokens)
        w.add_token_types(toktypes)
        w.add_token_merges(merges)
        w.add_bos_token_id(tokenizer.bos_id)
        w.add_eos_token_id(tokenizer.turn_end_id)  # a chat turn ends with <|end|> (an imported model: its own, e.g. <|im_end|>)
        w.add_eot_token_id(tokenizer.turn_end_id)
        w.add_unk_token_id(tokenizer.special["<unk>"])
        w.add_pad_token_id(tokenizer.pad_id)
        w.add_add_bos_token(False)                # the chat template writes <s> itself
        w.add_add_eos_token(False)
        w.add_chat_template(tokenizer.chat_template())

        n_bytes = 0
        tensors = gguf_tensors(model)
        for gname, t in tensors:
            arr = t.numpy()
            if arr.ndim == 1 or type == "f32":
                data, raw = arr.astype(np.float32), None
            elif type == "f16" or arr.shape[-1] % 32:
                data, raw = arr.astype(np.float16), None
            else:
                qt = gguf.GGMLQuantizationType.Q8_0 if type == "q8_0" else gguf.GGMLQuantizationType.Q4_0
                data, raw = gguf.quants.quantize(arr, qt), qt
            w.add_tensor(gname, data, raw_dtype=raw)
            n_bytes += data.nbytes
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file(progress=False)
        w.close()
        os.replace(tmp, out)
    except BaseException:
        w.close()
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return {"tensors": len(tensors), "bytes": n_bytes, "type": type}
