"""The parallel tokenization path of pretraining shards: byte-range tasks read the same documents as the whole
file, and 1 or 2 workers (with chunks, resume, several sources and formats) write identical output."""

import filecmp
import gzip
import json
import os
import random

import numpy as np
import pytest

from hessgpt.data import shards
from hessgpt.data.recipe import PretrainRecipe, PretrainSource
from hessgpt.data.shards import write_shards


def _tricky_text(path, seed):
    """Blank-line-separated documents with every line ending and 'blank' line the text reader knows:
    \\n, \\r\\n, lone \\r, whitespace-only and Unicode-whitespace lines, invalid UTF-8, no final newline."""
    rng = random.Random(seed)
    ends = [b"\n", b"\r\n", b"\r"]
    blanks = [b"\n", b"\r\n", b"  \t\n", b"\xe3\x80\x80\n", b"\xc2\xa0\r\n", b"\n\n\n", b"\x0c\n"]
    words = ["maison", "soleil", "stone", "lumi\xe8re", "\u00e9t\u00e9", "river", "\u2028", "x\ty"]
    out = bytearray()
    for i in range(300):
        for _ in range(rng.randint(1, 4)):
            out += " ".join(rng.choice(words) for _ in range(rng.randint(1, 12))).encode() + f" {i}".encode()
            if rng.random() < 0.05:
                out += b"\xff\xfe bad \xc3"  # invalid UTF-8: replaced, the same way in a range and in the file
            out += rng.choice(ends)
        out += rng.choice(blanks)
    out += b"last document, no final newline"
    path.write_bytes(bytes(out))


def _tricky_jsonl(path, seed):
    rng = random.Random(seed)
    lines = []
    for i in range(200):
        r = rng.random()
        if r < 0.05:
            lines.append(b"{not json")
        elif r < 0.1:
            lines.append(b"   ")  # blank: not a document
        elif r < 0.15:
            lines.append(json.dumps({"other": i}).encode())  # no text column: a row without text
        else:
            lines.append(json.dumps({"text": f"row {i} " + "mot " * rng.randint(1, 30)}, ensure_ascii=rng.random() < 0.5).encode())
    path.write_bytes(b"".join(line + rng.choice([b"\n", b"\r\n"]) for line in lines))


@pytest.mark.parametrize("target", [1, 7, 64, 500, 10**9])
def test_byte_ranges_read_the_same_documents_as_the_whole_file(tmp_path, target):
    _tricky_text(tmp_path / "t.txt", 0)
    _tricky_jsonl(tmp_path / "j.jsonl", 1)
    for name, fmt in (("t.txt", "blocks"), ("j.jsonl", "lines")):
        path = str(tmp_path / name)
        src = PretrainSource("s", path)
        assert shards._range_format(path, src) == fmt
        whole = list(shards._file_docs(path, src))
        assert len(whole) > 150
        assert None in whole if fmt == "lines" else "\ufffd" in "".join(whole)  # corrupt rows / bytes on the way
        cuts = shards._cuts(path, fmt, target)
        assert cuts[0][0] == 0 and cuts[-1][1] == os.path.getsize(path)
        assert all(a < b == c for (a, b), (c, _) in zip(cuts, cuts[1:] + [(cuts[-1][1], None)]))
        if target < 100:
            assert len(cuts) > 20  # really cut, often next to \r\n and odd blank lines
        ranged = [d for a, b in cuts for d in shards._range_docs(path, a, b, fmt, None)]
        assert ranged == whole
        assert sum(shards._count_range(path, a, b, fmt) for a, b in cuts) == len(whole)


def test_files_that_cannot_be_cut_are_sent_as_texts(tmp_path):
    json.dump([{"text": "an array"}], open(tmp_path / "a.json", "w"))
    (tmp_path / "l.json").write_text('{"text": "a line"}\n')
    with gzip.open(tmp_path / "z.txt.gz", "wt") as f:
        f.write("gzipped\n")
    (tmp_path / "m.py").write_text("x = 1\n")
    src = PretrainSource("s", str(tmp_path))
    assert shards._range_format(str(tmp_path / "a.json"), src) is None
    assert shards._range_format(str(tmp_path / "l.json"), src) == "lines"
    assert shards._range_format(str(tmp_path / "z.txt.gz"), src) is None
    assert shards._range_format(str(tmp_path / "m.py"), PretrainSource("c", str(tmp_path), kind="python")) is None


def _sources(tmp_path):
    """Four sources covering both task kinds: text and JSON Lines byte ranges, a gzip file and a mixed
    directory (a range file and a JSON array sent as texts)."""
    _tricky_text(tmp_path / "a.txt", 2)
    _tricky_jsonl(tmp_path / "b.jsonl", 3)
    with gzip.open(tmp_path / "c.txt.gz", "wb") as f:
        _tricky_text(tmp_path / "c.txt", 4)
        f.write((tmp_path / "c.txt").read_bytes())
    os.remove(tmp_path / "c.txt")
    os.makedirs(tmp_path / "d")
    _tricky_text(tmp_path / "d" / "1.txt", 5)
    json.dump([{"text": f"array document {i} " + "bla " * i} for i in range(40)], open(tmp_path / "d" / "2.json", "w"))
    return [PretrainSource("a", str(tmp_path / "a.txt"), weight=2), PretrainSource("b", str(tmp_path / "b.jsonl")),
            PretrainSource("c", str(tmp_path / "c.txt.gz")), PretrainSource("d", str(tmp_path / "d"), weight=1.5)]


def _same_output(a, b):
    files = sorted(f for f in os.listdir(a) if f.endswith(".bin"))
    assert files == sorted(f for f in os.listdir(b) if f.endswith(".bin")) and len(files) >= 4
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors, mismatch
    ma, mb = (json.load(open(os.path.join(d, "manifest.json"))) for d in (a, b))
    assert ma == mb


@pytest.mark.parametrize("chunks", [1, 2])
def test_one_and_two_workers_write_identical_shards_and_manifests(tmp_path, tokenizer, chunks):
    sources = _sources(tmp_path)

    def recipe():
        return PretrainRecipe(name="mix", sources=sources, shard_tokens=5000, val_fraction=0.05, filter=False)

    one, two, resumed = (str(tmp_path / d) for d in ("one", "two", "resumed"))
    m1 = write_shards(recipe(), tokenizer, one, chunks=chunks, workers=1, batch_chars=300)
    write_shards(recipe(), tokenizer, two, chunks=chunks, workers=2, batch_chars=300)
    _same_output(one, two)
    assert all(m1["sources"][s]["train_docs"] > 20 for s in "abcd")
    assert sum(m1["sources"]["b"]["rejected"].values()) > 0  # rows without text went through the counts

    # interrupted twice, each time resumed with the other worker count and another batch size (other cuts)
    for k in range(chunks):
        write_shards(recipe(), tokenizer, resumed, chunks=chunks, chunk=k, workers=2, max_shards=2, batch_chars=300)
        write_shards(recipe(), tokenizer, resumed, chunks=chunks, chunk=k, workers=1, max_shards=3, batch_chars=1000)
        write_shards(recipe(), tokenizer, resumed, chunks=chunks, chunk=k, workers=2, batch_chars=50)
    _same_output(one, resumed)


def test_range_tasks_take_the_documents_of_the_reference_reader(tmp_path, tokenizer):
    """Per source and chunk, the documents in the shards are those of `iter_documents` (the one-by-one
    reader), in order: chunk selection and skipping inside byte ranges agree with it."""
    src = _sources(tmp_path)[0]  # a single source: the stream is its documents in order
    for chunks in (1, 3):
        for k in range(chunks):
            out = str(tmp_path / f"out-{chunks}-{k}")
            recipe = PretrainRecipe(name="one", sources=[src], shard_tokens=500, val_fraction=0, filter=False)
            write_shards(recipe, tokenizer, out, chunks=chunks, chunk=k, workers=2, max_shards=1, batch_chars=200)
            m = write_shards(recipe, tokenizer, out, chunks=chunks, chunk=k, workers=2, batch_chars=200)
            stream = np.concatenate([np.fromfile(os.path.join(out, s["file"]), dtype=np.uint16) for s in m["shards"]])
            docs = [d for d in shards.iter_documents(src, chunk=k, chunks=chunks) if d is not None and d.strip()]
            expected = np.array([t for d in docs for t in [tokenizer.bos_id, *tokenizer.encode_slow(d), tokenizer.eos_id]],
                                dtype=np.uint16)
            assert len(docs) > 50 // chunks and np.array_equal(stream, expected)


def test_blank_line_search_finds_the_first_one_across_search_windows(tmp_path):
    import mmap
    import re

    for pat in (b"\n\n", b"\n\r\n"):
        for at in range(65536 - 4, 65536 + 14):  # around the first window's end (lo=10: it ends at 65546)
            data = b"a\n" * (at // 2) + b"a" * (at % 2) + pat + b"tail\n\r\nmore"
            path = tmp_path / "f.txt"
            path.write_bytes(data)
            expected = re.compile(rb"\n\r?\n").search(data, 10).end()
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                assert shards._blank_line_end(mm, 10, len(data)) == expected
    (tmp_path / "g.txt").write_bytes(b"x\n" * 100_000)  # no blank line: one range
    assert shards._cuts(str(tmp_path / "g.txt"), "blocks", 1000) == [(0, 200_000)]
