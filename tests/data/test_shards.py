"""Pretraining shards: manifest counts, weighted mixing, byte-identical resume, chunks, quality filters, CLI."""

import filecmp
import json
import os
import random

import numpy as np
import pytest

from hessgpt.data import shards
from hessgpt.data.quality import (CodeFilter, TextFilter, code_reject_reason, find_secret, python_comment_fraction,
                                  text_reject_reason)
from hessgpt.data.recipe import PretrainRecipe, PretrainSource, load_pretrain_recipe, text_recipe
from hessgpt.data.shards import write_shards
from hessgpt.errors import HessGPTError

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "text")
EN, FR = os.path.join(FIXTURES, "en_c4.txt"), os.path.join(FIXTURES, "fr_ud_gsd.txt")
RECIPES = os.path.join(os.path.dirname(__file__), "..", "..", "recipes")


def _words_corpus(path, n_docs, seed, prefix):
    """n_docs distinct blank-line-separated documents of random words (lengths vary)."""
    rng = random.Random(seed)
    vocab = [f"{prefix}{w}" for w in ("alpha", "beta", "gamma", "delta", "maison", "soleil", "table", "river",
                                       "stone", "night", "rouge", "vert", "lumière", "garden", "window")]
    docs = [" ".join(rng.choice(vocab) for _ in range(rng.randint(5, 60))) + f" {prefix}{i}." for i in range(n_docs)]
    with open(path, "w") as f:
        f.write("\n\n".join(docs) + "\n")
    return docs


def _stream(out, split):
    m = json.load(open(os.path.join(out, "manifest.json")))
    dtype = np.dtype(m["dtype"])
    parts = [np.fromfile(os.path.join(out, s["file"]), dtype=dtype) for s in m["shards"] if s["split"] == split]
    return np.concatenate(parts) if parts else np.empty(0, dtype)


def _docs_of(stream, bos, eos):
    """Split a token stream back into documents: [bos] ids [eos] repeated."""
    docs, cur = [], None
    for t in stream.tolist():
        if t == bos and cur is None:
            cur = []
        elif t == eos and cur is not None:
            docs.append(cur)
            cur = None
        else:
            cur.append(t)
    assert cur is None, "stream ends inside a document"
    return docs


def _same_dir(a, b):
    files_a = sorted(f for f in os.listdir(a) if f.endswith(".bin"))
    files_b = sorted(f for f in os.listdir(b) if f.endswith(".bin"))
    assert files_a == files_b and files_a
    _, mismatch, errors = filecmp.cmpfiles(a, b, files_a, shallow=False)
    assert not mismatch and not errors, mismatch
    ma, mb = (json.load(open(os.path.join(d, "manifest.json"))) for d in (a, b))
    assert ma["shards"] == mb["shards"] and ma["sources"] == mb["sources"] and ma["tokens"] == mb["tokens"]


# ---- manifest and contents ------------------------------------------------------------------------------


def test_manifest_counts_and_documents_match_the_reference_tokenizer(tmp_path, tokenizer):
    recipe = text_recipe([EN], shard_tokens=2000, val_fraction=0.25)
    m = write_shards(recipe, tokenizer, str(tmp_path / "out"), workers=2)
    out = str(tmp_path / "out")

    # expected, computed independently: the fixture's blank-line blocks, the default text filters, every
    # 4th kept document (d = 3, 7, ...) to val, each encoded by `tokenizers` (the reference, not tiktoken)
    blocks = open(EN, encoding="utf-8").read().split("\n\n")
    blocks = [b.strip("\n") + "\n" for b in blocks if b.strip()]
    kept = [b for b in blocks if text_reject_reason(b) is None]
    assert 0 < len(kept) < len(blocks)  # the fixture has documents the filters reject
    val_docs = [tokenizer.encode_slow(b) for d, b in enumerate(kept) if d % 4 == 3]
    train_docs = [tokenizer.encode_slow(b) for d, b in enumerate(kept) if d % 4 != 3]

    assert _docs_of(_stream(out, "train"), tokenizer.bos_id, tokenizer.eos_id) == train_docs
    assert _docs_of(_stream(out, "val"), tokenizer.bos_id, tokenizer.eos_id) == val_docs
    n_train = sum(len(d) + 2 for d in train_docs)
    n_val = sum(len(d) + 2 for d in val_docs)
    assert m["tokens"] == {"train": n_train, "val": n_val}
    src = m["sources"]["en_c4.txt"]
    assert (src["train_tokens"], src["val_tokens"]) == (n_train, n_val)
    assert (src["train_docs"], src["val_docs"]) == (len(train_docs), len(val_docs))
    assert sum(src["rejected"].values()) == len(blocks) - len(kept)
    # fixed-size shards: all full but the last of each split, file sizes = tokens * 2 bytes (uint16)
    train = [s for s in m["shards"] if s["split"] == "train"]
    assert [s["tokens"] for s in train[:-1]] == [2000] * (len(train) - 1) and 0 < train[-1]["tokens"] <= 2000
    for s in m["shards"]:
        assert os.path.getsize(os.path.join(out, s["file"])) == 2 * s["tokens"]
    assert m["dtype"] == "uint16" and m["tokenizer"]["hash"] == tokenizer.hash
    assert m["tokenizer"]["vocab_size"] == tokenizer.vocab_size and m["chunks"]["complete"] == [0]


def test_dtype_follows_the_vocabulary_size():
    assert shards._dtype_for(1024) == "uint16" and shards._dtype_for(65535) == "uint16"
    assert shards._dtype_for(65536) == "uint32" and shards._dtype_for(128_000) == "uint32"


def test_mixer_follows_the_weights_and_the_budget_is_exact(tmp_path, tokenizer):
    a = _words_corpus(tmp_path / "a.txt", 400, 1, "")
    _words_corpus(tmp_path / "b.txt", 400, 2, "x")
    recipe = PretrainRecipe(name="mix", sources=[PretrainSource("a", str(tmp_path / "a.txt"), weight=3),
                                                 PretrainSource("b", str(tmp_path / "b.txt"), weight=1)],
                            total_tokens=8000, shard_tokens=3000, val_fraction=0, filter=False)
    m = write_shards(recipe, tokenizer, str(tmp_path / "out"), workers=1)
    assert m["tokens"]["train"] == 8000  # the last document is cut to land exactly on the budget
    assert [s["tokens"] for s in m["shards"]] == [3000, 3000, 2000]
    ta, tb = m["sources"]["a"]["train_tokens"], m["sources"]["b"]["train_tokens"]
    longest = max(len(tokenizer.encode(d)) + 2 for d in a)
    assert abs(ta - 3 * tb) <= 3 * longest, (ta, tb)  # shares within one document of 3:1
    assert m["sources"]["a"]["train_docs"] < 400  # stopped by the budget, not by running out


# ---- resume and chunks ------------------------------------------------------------------------------------


def _mix_recipe(tmp_path, **kw):
    _words_corpus(tmp_path / "a.txt", 300, 1, "")
    _words_corpus(tmp_path / "b.txt", 300, 2, "x")
    src = [PretrainSource("a", str(tmp_path / "a.txt"), weight=2), PretrainSource("b", str(tmp_path / "b.txt"), weight=1)]
    return PretrainRecipe(name="mix", sources=src, shard_tokens=1500, val_fraction=0.1, filter=False, **kw)


def test_resuming_a_half_written_run_gives_byte_identical_shards(tmp_path, tokenizer):
    recipe = _mix_recipe(tmp_path)
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    m_full = write_shards(recipe, tokenizer, full, workers=2, batch_chars=2000)
    assert len(m_full["shards"]) >= 6

    m = write_shards(recipe, tokenizer, part, workers=2, max_shards=2, batch_chars=2000)  # "interrupted"
    assert len(m["shards"]) == 2 and m["chunks"]["partial"] == [0] and m["chunks"]["complete"] == []
    with open(os.path.join(part, "train-c00-00002.bin.tmp.999"), "wb") as f:  # a shard a killed run left half-written
        f.write(b"\x00" * 10)
    m = write_shards(recipe, tokenizer, part, workers=1, max_shards=3, batch_chars=5000)  # other workers, batches
    assert len(m["shards"]) == 5
    write_shards(recipe, tokenizer, part, workers=2, batch_chars=2000)
    assert not [f for f in os.listdir(part) if ".tmp" in f]
    _same_dir(full, part)
    assert not [f for f in os.listdir(os.path.join(part, "progress")) if f.endswith(".carry")]  # cleaned at the end

    before = {f: os.path.getmtime(os.path.join(part, f)) for f in os.listdir(part) if f.endswith(".bin")}
    write_shards(recipe, tokenizer, part, workers=2)  # complete: nothing rewritten
    assert before == {f: os.path.getmtime(os.path.join(part, f)) for f in before}


def test_chunks_are_disjoint_resumable_and_order_independent(tmp_path, tokenizer):
    recipe = _mix_recipe(tmp_path, total_tokens=6000)
    together, apart = str(tmp_path / "together"), str(tmp_path / "apart")
    m = write_shards(recipe, tokenizer, together, chunks=2, workers=2)
    assert m["chunks"] == {"count": 2, "complete": [0, 1], "partial": []}
    assert m["tokens"]["train"] == 6000
    write_shards(recipe, tokenizer, apart, chunks=2, chunk=1, workers=1)
    m1 = json.load(open(os.path.join(apart, "manifest.json")))
    assert m1["chunks"]["complete"] == [1] and {s["chunk"] for s in m1["shards"]} == {1}
    write_shards(recipe, tokenizer, apart, chunks=2, chunk=0, workers=2, max_shards=1)
    write_shards(recipe, tokenizer, apart, chunks=2, chunk=0, workers=2)
    _same_dir(together, apart)

    # chunk 0 holds even-numbered documents of each source, chunk 1 odd ones: no document in both
    def docs(chunk):
        stream = np.concatenate([np.fromfile(os.path.join(together, s["file"]), dtype=np.uint16)
                                 for s in m["shards"] if s["chunk"] == chunk])
        return {tuple(d) for d in _docs_of(stream[:np.where(stream == tokenizer.eos_id)[0][-1] + 1],
                                           tokenizer.bos_id, tokenizer.eos_id)}
    assert docs(0) and docs(1) and not docs(0) & docs(1)


def test_resume_refuses_another_recipe_or_tokenizer(tmp_path, tokenizer):
    recipe = _mix_recipe(tmp_path)
    out = str(tmp_path / "out")
    write_shards(recipe, tokenizer, out, workers=1, max_shards=1)
    recipe.sources[0].weight = 5
    with pytest.raises(HessGPTError, match="another recipe"):
        write_shards(recipe, tokenizer, out, workers=1)
    with pytest.raises(HessGPTError, match="--chunks"):
        write_shards(_mix_recipe(tmp_path), tokenizer, out, chunks=2, workers=1)


# ---- reading sources ---------------------------------------------------------------------------------------


def test_local_formats_and_columns(tmp_path, tokenizer):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"content": f"document number {i} " + "word " * i, "url": "u"} for i in range(1, 6)]
    with gzip.open(tmp_path / "rw.jsonl.gz", "wt") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write("{not json\n")
    pq.write_table(pa.table({"text": ["parquet one", None, "parquet two"]}), tmp_path / "t.parquet")
    json.dump([{"text": "json array"}], open(tmp_path / "a.json", "w"))
    src = PretrainSource("rw", str(tmp_path / "rw.jsonl.gz"), column="content")
    assert list(shards.iter_documents(src)) == [r["content"] for r in rows] + [None]
    assert list(shards.iter_documents(PretrainSource("p", str(tmp_path / "t.parquet")))) == ["parquet one", None, "parquet two"]
    assert list(shards.iter_documents(PretrainSource("j", str(tmp_path / "a.json")))) == ["json array"]
    # chunk k of N = documents i with i % N == k, and `skip` resumes inside the chunk
    assert list(shards.iter_documents(src, chunk=1, chunks=2)) == [rows[1]["content"], rows[3]["content"], None]
    assert list(shards.iter_documents(src, chunk=0, chunks=2, skip=1)) == [rows[2]["content"], rows[4]["content"]]


def test_hub_sources_fail_clearly_offline(tmp_path):
    src = PretrainSource("c4-fr", "allenai/c4", config="fr")
    with pytest.raises(HessGPTError, match="c4-fr.*allenai/c4.*--local"):
        next(shards.iter_documents(src))


def test_shipped_recipes_load(tmp_path):
    text = load_pretrain_recipe(os.path.join(RECIPES, "pretrain-text.yaml"))
    by_path = {(s.path, s.config): s for s in text.sources}
    for key in [("allenai/c4", "en"), ("allenai/c4", "fr"), ("HuggingFaceFW/fineweb-edu", "sample-10BT"),
                ("mlfoundations/dclm-baseline-1.0", None), ("tiiuae/falcon-refinedweb", None),
                ("HuggingFaceTB/smollm-corpus", "cosmopedia-v2"), ("wikimedia/wikipedia", "20231101.en"),
                ("wikimedia/wikipedia", "20231101.fr")]:
        assert key in by_path, key
    assert by_path[("tiiuae/falcon-refinedweb", None)].column == "content"
    code = load_pretrain_recipe(os.path.join(RECIPES, "pretrain-code.yaml"))
    total = sum(s.weight for s in code.sources)
    share = {s.kind: s.weight / total for s in code.sources}
    assert 0.50 <= share["python"] <= 0.60 and 0.20 <= share["javascript"] <= 0.25
    assert 0.10 <= share["html"] <= 0.12 and 0.08 <= share["css"] <= 0.10
    assert {s.data_dir for s in code.sources} == {"data/python", "data/javascript", "data/html", "data/css"}
    local = load_pretrain_recipe(os.path.join(RECIPES, "pretrain-local.yaml"), {"en-c4": EN})
    assert local.sources[0].path == os.path.abspath(EN) and os.path.isfile(local.sources[1].path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  - {path: x.txt, wieght: 2}\n")
    with pytest.raises(HessGPTError, match="wieght"):
        load_pretrain_recipe(bad)
    bad.write_text("sources:\n  - {path: x.txt, filters: {min_char: 2}}\n")
    with pytest.raises(HessGPTError, match="min_char"):
        load_pretrain_recipe(bad)


# ---- quality filters ----------------------------------------------------------------------------------------

GOOD_TEXT = open(EN, encoding="utf-8").read().split("\n\n")[0]


def test_text_filter_keeps_real_text_and_rejects_repetition():
    assert text_reject_reason(GOOD_TEXT) is None
    fr = open(FR, encoding="utf-8").read()[:3000]
    assert text_reject_reason(fr, TextFilter(languages=["fr", "en"])) is None
    assert text_reject_reason(fr, TextFilter(languages=["en"])) == "lang_fr"
    assert text_reject_reason("Too short.") == "too_short"
    spam = "\n".join(["Click here to buy cheap watches now!"] * 20 + [GOOD_TEXT[:300]])
    assert text_reject_reason(spam) in ("dup_lines", "dup_line_chars")
    loop = "the cat sat on the mat and " * 60  # one line, a repeated phrase
    assert text_reject_reason(loop).startswith(("top_ngram", "dup_ngram"))
    assert text_reject_reason("#tag #tag2 " * 40 + GOOD_TEXT) == "symbols"
    assert text_reject_reason("1234 5678 ++ -- == " * 40) in ("too_few_words", "non_alpha")


GOOD_PY = '''"""Small helpers for geometry."""

import math


def area(radius: float) -> float:
    # the area of a disc
    return math.pi * radius ** 2


def perimeter(radius: float) -> float:
    """Circumference of a circle."""
    return 2 * math.pi * radius
'''


def test_code_filter_rejects_unparsable_python_secrets_and_minified_files():
    assert code_reject_reason(GOOD_PY) is None
    assert code_reject_reason(GOOD_PY.replace("def area(radius: float)", "def area(radius: float")) == "unparsable"
    assert code_reject_reason("print 'hello python 2'\n" + GOOD_PY) == "unparsable"
    no_comments = "import math\n" + "".join(f"\ndef area{i}(r):\n    return math.pi * r ** {i}\n" for i in range(5))
    assert code_reject_reason(no_comments) == "few_comments"
    secrets = {
        "aws_key": 'KEY_ID = "AKIAIOSFODNN7EXAMPLE"\n',
        "aws_secret": 'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"\n',
        "private_key": 'PEM = """-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"""\n',
        "github_token": 'TOKEN = "ghp_' + "a1B2c3D4e5" * 4 + '"\n',
        "slack_token": 'SLACK = "xoxb-123456789012-abcdefABCDEF"\n',
        "hf_token": 'HF = "hf_' + "AbCdEfGhIj" * 4 + '"\n',
        "password_assignment": 'password = "hunter2hunter2x9"\n',
    }
    for name, line in secrets.items():
        assert find_secret(line) == name, name
        assert code_reject_reason(GOOD_PY + line) == f"secret_{name}", name
    assert find_secret(GOOD_PY) is None and find_secret('password = os.environ["PASSWORD"]') is None
    minified = "var a=1;" * 200
    assert code_reject_reason(minified, "javascript") == "long_lines"
    assert code_reject_reason("// Auto-generated file. Do not edit.\n" + "var x = 1;\n" * 20, "javascript") == "generated"
    css = "/* layout */\nbody {\n  margin: 0;\n  padding: 0;\n}\n.card {\n  color: #333;\n  border: 1px solid #ccc;\n}\n"
    assert code_reject_reason(css, "css", CodeFilter(min_chars=50)) is None
    assert 0.05 < python_comment_fraction(GOOD_PY) < 0.5


def test_cli_code_directory_counts_rejects(tmp_path, tokenizer_dir, capsys):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "good.py").write_text(GOOD_PY)
    (src / "pkg" / "also_good.py").write_text(GOOD_PY.replace("radius", "r"))
    (src / "broken.py").write_text(GOOD_PY + "\ndef oops(:\n    pass\n")
    (src / "leak.py").write_text(GOOD_PY + 'AWS = "AKIAIOSFODNN7EXAMPLE"\n')
    (src / "latin1.py").write_bytes(GOOD_PY.encode() + "# caf\xe9\n".encode("latin-1"))
    (src / "notes.txt").write_text("not python, not read")
    (src / "site-packages" / "dep").mkdir(parents=True)
    (src / "site-packages" / "dep" / "mod.py").write_text(GOOD_PY)  # installed packages: skipped
    out = tmp_path / "out"
    rc = shards.main(["--text", str(src), "--kind", "python", "--tokenizer", tokenizer_dir, "--out", str(out),
                      "--val-fraction", "0", "--workers", "2", "--no-progress"])
    assert rc == 0
    m = json.load(open(out / "manifest.json"))
    s = m["sources"]["src"]
    assert s["train_docs"] == 2
    assert s["rejected"] == {"no_text": 1, "secret_aws_key": 1, "unparsable": 1}
    printed = capsys.readouterr().out
    assert "src" in printed and "unparsable=1" in printed and "manifest.json" in printed


def test_cli_needs_a_recipe_or_text(tmp_path, tokenizer_dir):
    with pytest.raises(HessGPTError, match="RECIPE or --text"):
        shards.main(["--tokenizer", tokenizer_dir, "--out", str(tmp_path)])
    with pytest.raises(HessGPTError, match="no such file"):
        shards.main(["--text", str(tmp_path / "missing.txt"), "--tokenizer", tokenizer_dir, "--out", str(tmp_path)])
