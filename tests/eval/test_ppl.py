"""Strided perplexity: the window arithmetic, and parity with the `transformers` perplexity procedure."""

import math
import os

import pytest
import torch

from hessgpt.errors import HessGPTError
from hessgpt.eval.ppl import perplexity, sequence_nll, windows

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_windows_cover_every_target_once():
    for seq_len, ctx, stride in [(10, 4, 2), (37, 8, 3), (5, 8, 4), (16, 4, 4), (17, 5, 5)]:
        targets = [t for b, e, first in windows(seq_len, ctx, stride) for t in range(first, e)]
        assert len(targets) == len(set(targets))
        assert all(e - b <= ctx for b, e, _ in windows(seq_len, ctx, stride))
        if stride < ctx:  # overlapping windows score every token but the first
            assert sorted(targets) == list(range(1, seq_len))


def _tiny_mistral(vocab=64, ctx=32):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.MistralConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=ctx,
                                     sliding_window=None)
    torch.manual_seed(0)
    return transformers.MistralForCausalLM(cfg).eval()


def _hf_guide_nll(model, ids, max_length, stride):
    """The loop of the transformers perplexity guide (docs: perplexity.md), returning total NLL and tokens."""
    input_ids = torch.tensor([ids])
    seq_len = input_ids.size(1)
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, seq_len, stride):
        end = min(begin + max_length, seq_len)
        trg_len = end - prev_end
        x = input_ids[:, begin:end]
        target = x.clone()
        target[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(x, labels=target).loss
        n_valid = int((target[:, 1:] != -100).sum())
        nll_sum += float(loss) * n_valid
        n_tokens += n_valid
        prev_end = end
        if end == seq_len:
            break
    return nll_sum, n_tokens


@pytest.mark.parametrize("ctx,stride", [(16, 8), (16, 16), (12, 5)])
def test_parity_with_transformers_guide(ctx, stride):
    model = _tiny_mistral()
    g = torch.Generator().manual_seed(1)
    ids = [1] + torch.randint(14, 64, (50,), generator=g).tolist()
    ours, n = sequence_nll(model, ids, ctx, stride, batch_size=3)
    ref, n_ref = _hf_guide_nll(model, ids, ctx, stride)
    assert n == n_ref
    assert ours == pytest.approx(ref, rel=1e-5)


def test_perplexity_and_bits_per_byte():
    model = _tiny_mistral(vocab=300)
    texts = ["héllo wörld", "a b c d e f g h i j k l m n o p q r s t u v w x y z " * 3, ""]

    def encode(t):  # byte-level "tokenizer": one token per UTF-8 byte, offset past the special ids
        return [14 + b for b in t.encode("utf-8")]

    r = perplexity(model, encode, texts, context_len=16, stride=8, bos_id=1, progress=False)
    total = sum(sequence_nll(model, [1] + encode(t), 16, 8)[0] for t in texts if t)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    assert r.docs == 2 and r.bytes == n_bytes
    assert r.tokens == n_bytes  # every byte-token is a target exactly once (stride < context)
    assert r.mean_nll == pytest.approx(total / r.tokens)
    assert r.ppl == pytest.approx(math.exp(total / r.tokens))
    assert r.bpb == pytest.approx(total / (math.log(2) * n_bytes))
    # a random model over 300 tokens is near uniform: ppl close to the vocabulary size
    assert 150 < r.ppl < 600


def test_parity_with_transformers_on_hf_export(tiny_ckpt, tmp_path):
    """`hessgpt eval ppl` numbers == the transformers perplexity loop on the `hessgpt convert to-hf` export."""
    transformers = pytest.importorskip("transformers")
    import hessgpt
    from hessgpt.convert.export import to_hf

    text_dir = os.path.join(os.path.dirname(__file__), "..", "fixtures", "text")
    TEXT_FILES = [os.path.join(text_dir, "fr_ud_gsd.txt"), os.path.join(text_dir, "en_c4.txt")]
    texts = [ln for ln in open(TEXT_FILES[0], encoding="utf-8").read().splitlines() if ln.strip()][:3]
    texts += [" ".join(open(TEXT_FILES[1], encoding="utf-8").read().split()[:120])]  # longer than the window
    model, tok = hessgpt.load(tiny_ckpt)
    ours = perplexity(model.eval(), tok.encode, texts, context_len=32, stride=16, bos_id=tok.bos_id, progress=False)

    out = tmp_path / "hf"
    to_hf(tiny_ckpt, str(out))
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(str(out), torch_dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    total, n = 0.0, 0
    for t in texts:
        ids = [hf_tok.convert_tokens_to_ids("<s>")] + hf_tok(t, add_special_tokens=False)["input_ids"]
        assert ids == [1] + tok.encode(t)
        s, k = _hf_guide_nll(hf_model, ids, 32, 16)
        total, n = total + s, n + k
    assert ours.tokens == n
    assert ours.mean_nll == pytest.approx(total / n, rel=1e-4)
    assert ours.bpb == pytest.approx(total / (math.log(2) * sum(len(t.encode()) for t in texts)), rel=1e-4)


def test_ppl_cli_writes_result(tiny_ckpt, tmp_path, capsys):
    import json

    from hessgpt.eval.cli import main

    data = tmp_path / "held_out.txt"
    data.write_text("Bonjour tout le monde.\n\nHello world, this is a test.\n", encoding="utf-8")
    more = tmp_path / "more.jsonl"
    more.write_text('{"text": "Encore un document, un peu plus long que les autres."}\n', encoding="utf-8")
    out = tmp_path / "ppl.json"
    assert main(["ppl", tiny_ckpt, "--data", str(data), str(more), "--context-len", "16", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["kind"] == "ppl" and r["docs"] == 3 and r["context_len"] == 16 and r["stride"] == 8
    assert r["ppl"] == pytest.approx(math.exp(r["mean_nll"]))
    a, b = r["per_file"][str(data)], r["per_file"][str(more)]
    assert (a["docs"], b["docs"]) == (2, 1) and r["tokens"] == a["tokens"] + b["tokens"]
    total = a["mean_nll"] * a["tokens"] + b["mean_nll"] * b["tokens"]
    assert r["bpb"] == pytest.approx(total / (math.log(2) * (a["bytes"] + b["bytes"])))
    assert "bits/byte" in capsys.readouterr().out


def test_ppl_cli_starts_documents_with_the_tokenizers_own_bos(tmp_path, chatml_tokenizer):
    """An imported vocabulary (ChatML, as SmolLM2's) has its <s> far from id 1 (id 1 is <|im_start|> there):
    `hessgpt eval ppl` scores [tok.bos_id] + tokens, as the model's training shards start documents."""
    import json

    transformers = pytest.importorskip("transformers")

    import hessgpt
    from hessgpt.convert.hf import from_hf
    from hessgpt.eval.cli import main
    from hessgpt.eval.ppl import iter_eval_texts

    texts = ["Bonjour tout le monde, ceci est un test.", "Hello world, this is a longer test of the window."]
    bpe, hf_tok = chatml_tokenizer(texts * 10, 300, pad_token=None)
    hf_tok.save_pretrained(tmp_path / "hf")
    conf = transformers.LlamaConfig(vocab_size=bpe.get_vocab_size(), hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                    max_position_embeddings=64, tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(conf).save_pretrained(tmp_path / "hf")
    from_hf(str(tmp_path / "hf"), str(tmp_path / "ckpt"))
    model, tok = hessgpt.load(str(tmp_path / "ckpt"))
    assert tok.bos_id != 1 and tok.token_str(tok.bos_id) == "<s>"

    data = tmp_path / "held_out.txt"
    data.write_text("\n\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "ppl.json"
    assert main(["ppl", str(tmp_path / "ckpt"), "--data", str(data), "--context-len", "16", "--out", str(out)]) == 0
    r = json.loads(out.read_text())

    docs = iter_eval_texts([str(data)])                              # the texts as the CLI reads them
    assert [d.strip() for d in docs] == texts

    def mean_nll(bos):
        sums = [sequence_nll(model.eval(), [bos] + tok.encode(t), 16, 8) for t in docs]
        return sum(s for s, _ in sums) / sum(n for _, n in sums)

    assert r["docs"] == 2
    assert r["mean_nll"] == pytest.approx(mean_nll(tok.bos_id), rel=1e-5)
    assert r["mean_nll"] != pytest.approx(mean_nll(1), rel=1e-5)     # id 1 (<|im_start|>) gives other numbers


def test_token_shards_split_at_bos_and_decode(tokenizer, tmp_path):
    from hessgpt.data.shards import text_recipe, write_shards
    from hessgpt.eval.ppl import iter_eval_texts

    docs = ["Bonjour tout le monde.", "Hello world, this is a test."]
    (tmp_path / "docs.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    write_shards(text_recipe([str(tmp_path / "docs.txt")], filter=False, val_fraction=0), tokenizer,
                 str(tmp_path / "shards"), workers=1)
    assert iter_eval_texts([str(tmp_path / "shards")], decode=tokenizer.decode) == [d + "\n" for d in docs]
    assert iter_eval_texts([str(tmp_path / "shards" / "train-c00-00000.bin")], decode=tokenizer.decode) == \
        [d + "\n" for d in docs]
    np_file = tmp_path / "val_000.npy"
    np_file.write_bytes(b"")
    with pytest.raises(HessGPTError, match=".npy token arrays are not read"):
        iter_eval_texts([str(np_file)], decode=tokenizer.decode)
