"""GGUF export read back with the format's own reader: metadata, tokenizer, tensor layout, and a llama.cpp-style
forward pass over the file's tensors that must reproduce HessGPT's logits (this is what catches a wrong q/k
permutation or rope base: the file would load in llama.cpp and silently compute something else)."""

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from hessgpt import checkpoint, loader  # noqa: E402
from hessgpt.config import ModelConfig  # noqa: E402
from hessgpt.convert.export import to_gguf  # noqa: E402
from hessgpt.convert.gguf import gguf_name  # noqa: E402
from hessgpt.errors import HessGPTError  # noqa: E402
from hessgpt.model import Transformer  # noqa: E402


def field(reader, key):
    return reader.fields[key].contents()


def tensors_f32(reader) -> dict[str, np.ndarray]:
    out = {}
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type) if t.tensor_type not in (0, 1) else np.asarray(t.data, np.float32)
        out[t.name] = np.array(data, np.float32).reshape(tuple(int(d) for d in reversed(t.shape)))
    return out


def llama_cpp_forward(reader, ids: list[int]) -> torch.Tensor:
    """What llama.cpp computes for arch `llama` (RoPE on interleaved pairs, "norm" mode), from the file alone."""
    w = {k: torch.from_numpy(v) for k, v in tensors_f32(reader).items()}
    n_layers, H = field(reader, "llama.block_count"), field(reader, "llama.attention.head_count")
    Hkv, hd = field(reader, "llama.attention.head_count_kv"), field(reader, "llama.rope.dimension_count")
    base, eps = field(reader, "llama.rope.freq_base"), field(reader, "llama.attention.layer_norm_rms_epsilon")
    T = len(ids)
    pos = torch.arange(T, dtype=torch.float64)
    theta = base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = (pos[:, None] * theta[None]).float()                       # [T, hd/2]
    cos, sin = ang.cos(), ang.sin()

    def rope(x):  # x [T, heads, hd], pairs (2i, 2i+1)
        a, b = x[..., 0::2], x[..., 1::2]
        c, s = cos[:, None], sin[:, None]
        return torch.stack([a * c - b * s, a * s + b * c], -1).flatten(-2)

    def norm(x, g):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g

    x = w["token_embd.weight"][torch.tensor(ids)]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(n_layers):
        h = norm(x, w[f"blk.{i}.attn_norm.weight"])
        q = rope((h @ w[f"blk.{i}.attn_q.weight"].T).view(T, H, hd))
        k = rope((h @ w[f"blk.{i}.attn_k.weight"].T).view(T, Hkv, hd))
        v = (h @ w[f"blk.{i}.attn_v.weight"].T).view(T, Hkv, hd)
        k, v = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
        att = torch.einsum("thd,shd->hts", q, k) / hd ** 0.5
        att = att.masked_fill(~causal, float("-inf")).softmax(-1)
        y = torch.einsum("hts,shd->thd", att, v).reshape(T, H * hd)
        x = x + y @ w[f"blk.{i}.attn_output.weight"].T
        h = norm(x, w[f"blk.{i}.ffn_norm.weight"])
        x = x + (torch.nn.functional.silu(h @ w[f"blk.{i}.ffn_gate.weight"].T) * (h @ w[f"blk.{i}.ffn_up.weight"].T)) @ w[f"blk.{i}.ffn_down.weight"].T
    head = w.get("output.weight", w["token_embd.weight"])
    return norm(x, w["output_norm.weight"]) @ head.T


@pytest.fixture(scope="module")
def exported(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    return {t: (to_gguf(tiny_ckpt, str(out / f"m-{t}.gguf"), t), gguf.GGUFReader(str(out / f"m-{t}.gguf")), str(out / f"m-{t}.gguf"))
            for t in ("f32", "f16", "q8_0", "q4_0")}


def test_metadata_tokenizer_and_template_match_the_checkpoint(tiny_ckpt, exported):
    model, tok = checkpoint.load(tiny_ckpt)
    cfg = model.config
    _, r, _ = exported["q8_0"]
    assert field(r, "general.architecture") == "llama"
    assert field(r, "general.file_type") == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    assert field(r, "llama.rope.freq_base") == pytest.approx(cfg.rope_theta) and cfg.rope_theta == 50000.0
    for key, value in [("llama.block_count", cfg.n_layers), ("llama.embedding_length", cfg.dim),
                       ("llama.feed_forward_length", cfg.hidden_dim), ("llama.attention.head_count", cfg.n_heads),
                       ("llama.attention.head_count_kv", cfg.n_kv_heads), ("llama.context_length", cfg.context_length),
                       ("llama.rope.dimension_count", cfg.head_dim)]:
        assert field(r, key) == value, key
    # HessGPT's default split (one token per digit) is llama.cpp's "smollm" kind: digits alone, then GPT-2's regex
    assert field(r, "tokenizer.ggml.model") == "gpt2" and field(r, "tokenizer.ggml.pre") == "smollm"
    tokens = field(r, "tokenizer.ggml.tokens")
    assert len(tokens) == cfg.vocab_size
    assert [tokens[i] for i in range(tok.vocab_size)] == [tok.token_str(i) for i in range(tok.vocab_size)]
    types = field(r, "tokenizer.ggml.token_type")
    assert all(types[i] == gguf.TokenType.CONTROL for i in tok.special_id_set)
    assert types[tok.encode("le")[0]] == gguf.TokenType.NORMAL
    assert field(r, "tokenizer.ggml.bos_token_id") == tok.bos_id
    assert field(r, "tokenizer.ggml.eos_token_id") == tok.end_id
    assert field(r, "tokenizer.ggml.padding_token_id") == tok.pad_id
    merges = field(r, "tokenizer.ggml.merges")
    assert len(merges) > 100 and all(len(m.split(" ")) == 2 for m in merges[:50])
    assert field(r, "tokenizer.chat_template") == tok.chat_template()


def test_tensor_names_shapes_and_types(tiny_ckpt, exported):
    model, _ = checkpoint.load(tiny_ckpt)
    expected = {gguf_name(k): tuple(v.shape) for k, v in model.state_dict().items()}
    for t, (stats, r, _) in exported.items():
        got = {x.name: tuple(int(d) for d in reversed(x.shape)) for x in r.tensors}
        assert got == expected, t
        assert stats["tensors"] == len(expected)
        kinds = {x.name: x.tensor_type for x in r.tensors}
        assert kinds["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
        want = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
                "q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}[t]
        assert kinds["blk.0.attn_q.weight"] == want and kinds["output.weight"] == want
    sizes = {t: stats["bytes"] for t, (stats, _, _) in exported.items()}
    assert sizes["q4_0"] < sizes["q8_0"] < sizes["f16"] < sizes["f32"]


@pytest.mark.parametrize("kind,tol", [("f32", 1e-4), ("f16", 2e-2), ("q8_0", 6e-2), ("q4_0", 0.5)])
def test_llama_cpp_semantics_reproduce_hessgpt_logits(tiny_ckpt, exported, kind, tol):
    model, tok = checkpoint.load(tiny_ckpt)
    ids = tok.render_for_generation([{"role": "user", "content": "Bonjour, quelle est la capitale de la France ?"}])
    with torch.no_grad():
        ref = model(torch.tensor([ids]))[0]
    got = llama_cpp_forward(exported[kind][1], ids)
    err = (got - ref).abs().max().item() / ref.abs().max().item()
    assert err < tol, f"{kind}: relative max error {err}"
    if kind == "f32":   # without the permutation the same file computes something clearly different
        assert (got.argmax(-1) == ref.argmax(-1)).all()


def test_q_k_permutation_is_needed(tiny_ckpt, exported):
    """Undo the permutation in a copy of the reader's tensors: llama.cpp semantics then disagree with HessGPT."""
    model, tok = checkpoint.load(tiny_ckpt)
    q = model.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    stored = tensors_f32(exported["f32"][1])["blk.0.attn_q.weight"]
    assert not np.allclose(stored, q.numpy())
    assert np.allclose(np.sort(stored, axis=0), np.sort(q.numpy(), axis=0))  # same rows, reordered


def test_tied_model_has_no_output_tensor(tmp_path, tokenizer):
    cfg = ModelConfig.preset("tiny", vocab_size=tokenizer.vocab_size + 6)     # tied, embedding rows beyond the vocab
    ck = str(tmp_path / "tied")
    checkpoint.save(ck, Transformer(cfg).init_weights(3), tokenizer)
    to_gguf(ck, str(tmp_path / "t.gguf"), "f32")
    r = gguf.GGUFReader(str(tmp_path / "t.gguf"))
    names = {t.name for t in r.tensors}
    assert "output.weight" not in names and "token_embd.weight" in names
    tokens = field(r, "tokenizer.ggml.tokens")
    assert len(tokens) == cfg.vocab_size and tokens[-1] == f"[PAD{cfg.vocab_size - 1}]"
    model, tok = checkpoint.load(ck)
    ids = tok.encode("Le chat dort.")
    with torch.no_grad():
        ref = model(torch.tensor([ids]))[0]
    assert (llama_cpp_forward(r, ids) - ref).abs().max() < 1e-4


def test_bad_type_and_missing_tokenizer(tmp_path, tiny_ckpt):
    with pytest.raises(HessGPTError, match="--type"):
        to_gguf(tiny_ckpt, str(tmp_path / "x.gguf"), "q4_k")
    ck = str(tmp_path / "notok")
    checkpoint.save(ck, Transformer(ModelConfig.preset("tiny", vocab_size=300)).init_weights(0))
    with pytest.raises(HessGPTError, match="tokenizer"):
        to_gguf(ck, str(tmp_path / "y.gguf"), "f32")
    assert not any(p.name.startswith("y.gguf") for p in tmp_path.iterdir())


def test_llama_cpp_runs_the_export_like_hessgpt(tiny_ckpt, exported):
    """When the llama.cpp Python bindings are installed: same tokens, same logits, same greedy continuation."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from hessgpt.engine import Engine, SamplingParams

    model, tok = checkpoint.load(tiny_ckpt)
    llm = llama_cpp.Llama(exported["f32"][2], n_ctx=256, n_threads=1, logits_all=True, verbose=False)
    try:
        text = "Bonjour, comment allez-vous ? The weather is nice."
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == tok.encode(text)
        ids = tok.render_for_generation([{"role": "user", "content": "Quelle est la capitale de la France ?"}])
        llm.eval(ids)
        got = torch.tensor(np.array(llm.scores[: len(ids)]))
        with torch.no_grad():
            ref = model(torch.tensor([ids]))[0]
        assert (got - ref).abs().max() < 1e-3
        llm.reset()
        greedy = []
        for t in llm.generate(ids, temp=0.0, top_k=1, reset=True):
            greedy.append(t)
            if len(greedy) == 16:
                break
        assert greedy == Engine(model, tok).generate(ids, SamplingParams(max_new_tokens=16, stop_token_ids=[-1]))
    finally:
        llm.close()


# ---- import: `hessgpt convert from-gguf` and `hessgpt.load("x.gguf")` ------------------------------------

from hessgpt.cli import main as cli_main  # noqa: E402
from hessgpt.convert.gguf import permute_rope  # noqa: E402
from hessgpt.convert.gguf_import import load_gguf, unpermute_rope  # noqa: E402

TEXTS = ["Bonjour, ça va ? L'été à Paris — 3,14 € ! 12345 et 1999.", "def f(x):\n    return x**2  # 👋\n",
         "Ünïcödé ½ ∑ 中文 don't we'll <|end|> <s>"]


def rewrite_gguf(src: str, out: str, qtype, *, arch: str | None = None, raw=None) -> None:
    """Copy a GGUF file's metadata and re-encode every matrix as `qtype` with the `gguf` writer (1-D tensors stay
    F32). `raw(name, fp32 array) -> bytes array` supplies blocks for types `gguf` cannot quantize (K-quants)."""
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(out, arch or field(r, "general.architecture"))
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, f.contents(), f.types[0], sub_type=sub)
    for name, arr in tensors_f32(r).items():
        if arr.ndim == 1:
            w.add_tensor(name, arr)
        elif raw is not None:
            w.add_tensor(name, raw(name, arr), raw_dtype=qtype)
        elif qtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()


def logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids]))[0]


def test_unpermute_rope_inverts_the_exporters_permutation():
    w = torch.randn(4 * 16, 24)
    assert torch.equal(unpermute_rope(permute_rope(w, 4), 4), w)
    assert not torch.equal(permute_rope(w, 4), w)


@pytest.mark.parametrize("kind", ["f32", "q8_0"])
def test_from_gguf_round_trip(tiny_ckpt, exported, tmp_path, kind, capsys):
    """`hessgpt convert from-gguf` of HessGPT's own export: same config, tokenizer and (f32) logits."""
    src_model, src_tok = checkpoint.load(tiny_ckpt)
    out = str(tmp_path / "imported")
    assert cli_main(["convert", "from-gguf", exported[kind][2], out]) == 0
    assert "wrote HessGPT checkpoint" in capsys.readouterr().out
    model, tok = checkpoint.load(out)
    assert model.config == src_model.config
    for text in TEXTS:
        assert tok.encode(text) == src_tok.encode(text), text
        assert tok.decode(tok.encode(text)) == text
    assert tok.special == src_tok.special
    conv = [{"role": "system", "content": "Tu es utile."}, {"role": "user", "content": "Calcule 15 * 23"},
            {"role": "assistant", "content": "", "code": "print(15 * 23)"}, {"role": "tool", "content": "345"}]
    assert tok.render(conv) == src_tok.render(conv)
    ids = src_tok.render_for_generation([{"role": "user", "content": TEXTS[0]}])
    ref, got = logits(src_model, ids), logits(model, ids)
    if kind == "f32":
        assert (got - ref).abs().max() < 1e-5
    else:  # Q8_0: exactly the function the file's dequantized weights compute, and close to the source
        assert (got - llama_cpp_forward(exported[kind][1], ids)).abs().max() < 1e-4
        rel = ((got - ref).abs().max() / ref.abs().max()).item()
        assert 0 < rel < 6e-2, rel
    meta = checkpoint.read_meta(out)
    assert meta["stage"] == "import" and meta["source_tokenizer"]["chat_template"] == src_tok.chat_template()
    assert meta["source_tokenizer"]["special_tokens"]["eos"] == {"id": src_tok.end_id, "content": "<|end|>"}


def test_hessgpt_load_accepts_a_gguf_path(tiny_ckpt, exported):
    import hessgpt

    src_model, src_tok = checkpoint.load(tiny_ckpt)
    model, tok = hessgpt.load(exported["f32"][2])
    assert model.config == src_model.config and tok.vocab_size == src_tok.vocab_size
    ids = tok.encode(TEXTS[1])
    assert (logits(model, ids) - logits(src_model, ids)).abs().max() < 1e-5
    assert model.source_tokenizer["tensor_types"] == {"F32": len(exported["f32"][1].tensors)}


@pytest.mark.parametrize("qtype", ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q4_K", "Q6_K"])
def test_other_tensor_types_compute_what_the_file_describes(tiny_ckpt, exported, tmp_path, qtype):
    """Each type written with the `gguf` writer; the import computes the file's function (the llama.cpp-style
    forward above, from the file alone). K-quants (which `gguf` cannot quantize) get random blocks with small
    f16 scales."""
    q = gguf.GGMLQuantizationType[qtype]
    raw = None
    if qtype in ("Q4_K", "Q6_K"):
        rng = np.random.default_rng(0)
        block, nbytes = gguf.GGML_QUANT_SIZES[q]
        scale_at = {"Q4_K": [0, 2], "Q6_K": [nbytes - 2]}[qtype]          # d, dmin (Q4_K) / d (Q6_K): f16
        d = {"Q4_K": 0.002, "Q6_K": 2e-5}[qtype]                              # weights of ~0.01-1 (Q6_K's scales are int8)

        def raw(name, arr):
            if arr.shape[-1] % block:
                pytest.skip(f"{name}: rows of {arr.shape[-1]} are not a multiple of {block}")
            b = rng.integers(0, 256, (arr.shape[0], arr.shape[1] // block, nbytes), dtype=np.uint8)
            for at in scale_at:
                b[..., at:at + 2] = np.full(b.shape[:2], d, np.float16).view(np.uint8).reshape(*b.shape[:2], 2)
            return b.reshape(arr.shape[0], -1)

    path = str(tmp_path / f"m-{qtype}.gguf")
    src = exported["f32"][2] if raw is None else str(tmp_path / "k.gguf")
    if raw is not None:  # a model whose rows are multiples of 256
        _, tok = checkpoint.load(tiny_ckpt)
        cfg = ModelConfig(vocab_size=tok.vocab_size, dim=256, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=512,
                          context_length=64, rope_theta=20000.0, tie_embeddings=False)
        checkpoint.save(str(tmp_path / "k"), Transformer(cfg).init_weights(1), tok)
        to_gguf(str(tmp_path / "k"), src, "f32")
    rewrite_gguf(src, path, q, raw=raw)
    r = gguf.GGUFReader(path)
    assert {t.tensor_type.name for t in r.tensors} == {"F32", qtype}
    model, tok = load_gguf(path)
    assert model.source_tokenizer["tensor_types"][qtype] > 0
    ids = tok.encode(TEXTS[0])[:40]
    ref = llama_cpp_forward(r, ids)
    assert (logits(model, ids) - ref).abs().max() < 1e-4 * max(1.0, ref.abs().max().item())


def test_import_matches_transformers_loading_the_same_file(exported):
    """transformers' own GGUF loader (dequantize + reverse permutation) gives the same weights and logits."""
    transformers = pytest.importorskip("transformers")
    import os

    path = exported["q8_0"][2]
    hf = transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                           dtype=torch.float32).eval()
    model, tok = load_gguf(path)
    sd = model.state_dict()
    for k, v in hf.state_dict().items():
        assert torch.equal(sd[k], v), k
    ids = tok.encode(TEXTS[0])
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0]
    assert (logits(model, ids) - ref).abs().max() < 1e-4


def test_import_errors_are_one_line(tmp_path, exported, capsys):
    other = str(tmp_path / "qwen.gguf")
    rewrite_gguf(exported["f32"][2], other, gguf.GGMLQuantizationType.F32, arch="qwen2")
    with pytest.raises(HessGPTError, match=r"architecture 'qwen2' is not supported \(supported: llama\)"):
        load_gguf(other)
    odd = str(tmp_path / "iq4.gguf")
    rewrite_gguf(exported["f32"][2], odd, gguf.GGMLQuantizationType.IQ4_NL,
                 raw=lambda name, a: np.zeros((a.shape[0], a.shape[1] // 32 * 18), np.uint8))
    with pytest.raises(HessGPTError, match=r"tensor \S+ has type IQ4_NL, not supported"):
        load_gguf(odd)
    notgguf = tmp_path / "x.gguf"
    notgguf.write_text("hello")
    with pytest.raises(HessGPTError, match="not a readable GGUF file"):
        loader.load(str(notgguf))
    assert cli_main(["convert", "from-gguf", other, str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "architecture 'qwen2'" in err
    assert not (tmp_path / "out").exists()


def test_sentencepiece_vocabulary_like_transformers(tmp_path):
    """A `llama` (SentencePiece) vocabulary, as Llama 2 / Mistral 7B files hold: same ids as transformers'
    AutoTokenizer on the file, logits equal to the source model's."""
    transformers = pytest.importorskip("transformers")
    import os

    from hessgpt.convert.gguf import gguf_tensors

    pieces = (["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
              + ["▁", *"abcdefghijklmnopqrstuvwxyzéàçBLP", "▁l", "▁le", "▁la", "es", "en", "on", "▁de", "▁c", "▁ch",
                 "▁cha", "▁chat", "er", "re", "▁p", "▁pa", "▁par", "ar", "ri", "is", "▁Pa", "▁Par", "▁Paris"])
    n_normal = len(pieces) - 259
    types = [2, 3, 3] + [6] * 256 + [1] * n_normal                  # UNKNOWN, CONTROL, BYTE, NORMAL
    scores = [0.0] * 259 + [-float(i) for i in range(n_normal)]
    cfg = ModelConfig(vocab_size=len(pieces), dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=128,
                      context_length=64, rope_theta=10000.0, tie_embeddings=True)
    src = Transformer(cfg).init_weights(2)
    path = str(tmp_path / "spm.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(cfg.context_length)
    w.add_embedding_length(cfg.dim)
    w.add_block_count(cfg.n_layers)
    w.add_feed_forward_length(cfg.hidden_dim)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_tokenizer_model("llama")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    for name, t in gguf_tensors(src):
        w.add_tensor(name, t.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()

    model, tok = load_gguf(path)
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=os.path.basename(path))
    for text in ["le chat de Paris", "la chaîne, par ici ! 42", "Bonjour 👋"]:
        ids = tok.encode(text)
        assert ids == hf_tok(text, add_special_tokens=False)["input_ids"], text
        assert tok.decode(ids) == text
    assert tok.vocab_size == len(pieces) + 10 and tok.bos_id == 1 and tok.eos_id == 2   # <s> </s> <unk> reused, no <pad>
    ids = tok.encode("le chat de Paris par ici")
    assert (logits(model, ids)[:, : len(pieces)] - logits(src, ids)).abs().max() < 1e-5


def test_q4_0_file_holds_hessgpt_int4_weights_and_computes_what_the_int4_engine_does(tiny_ckpt, exported):
    """`to-gguf --type q4_0` writes, byte for byte, the blocks `hessgpt quantize --int4` stores (kernels/int4.py),
    and llama.cpp's semantics on that file give the logits of HessGPT's int4 engine (the same weights)."""
    from hessgpt.engine import Engine
    from hessgpt.kernels import int4

    model, tok = checkpoint.load(tiny_ckpt)
    r = exported["q4_0"][1]
    t = next(x for x in r.tensors if x.name == "blk.0.attn_output.weight")
    raw = np.asarray(t.data).reshape(-1, 18)                             # Q4_0 block: fp16 d, 16 bytes of nibbles
    q, d = int4.quantize_weight(model.state_dict()["model.layers.0.self_attn.o_proj.weight"])
    assert np.array_equal(raw[:, 2:].reshape(q.shape), q.numpy())
    assert np.array_equal(raw[:, :2].copy().view(np.float16).astype(np.float32).reshape(d.shape), d.numpy())
    ids = tok.render_for_generation([{"role": "user", "content": "Bonjour, quelle est la capitale de la France ?"}])
    got = llama_cpp_forward(r, ids)[-1]
    with torch.no_grad():   # the file's token_embd is Q4_0 too; HessGPT keeps embeddings fp32: give it the same rows
        emb = model.model.embed_tokens.weight
        emb.copy_(int4.dequantize_weight(*int4.quantize_weight(emb)))
    engine = Engine(model, tok, int4=True)
    assert engine.fast.head.kind == "int4"
    engine.fast.setup_cache(1, len(ids))
    want = engine.fast.forward(torch.tensor([ids]), 0)[0]
    assert torch.allclose(got, want, atol=1e-3 * want.abs().max().item())
