"""hessgpt.datafiles: the one reader of local data files (tokenizer inputs, recipes, shards, perplexity eval)."""

import gzip
import json

import pytest

from hessgpt.datafiles import Unreadable, data_files, is_local, iter_rows, iter_texts
from hessgpt.errors import HessGPTError


def test_is_local_tells_paths_from_hub_ids(tmp_path):
    assert not is_local("HuggingFaceH4/ultrachat_200k") and not is_local("mlfoundations/dclm-baseline-1.0")
    for p in ("./x", "../x", "/abs", "~/x", "data/x.parquet", "a/b.jsonl.gz", "notes.txt", "src/app.py"):
        assert is_local(p), p


def test_data_files_of_a_directory_by_suffix_with_gz_and_exclusions(tmp_path):
    for name in ("a.jsonl", "b.json.gz", "c.txt", "skip/d.jsonl", "sub/e.parquet"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    files = data_files(str(tmp_path), (".jsonl", ".json", ".parquet"), exclude=["skip"])
    assert [f[len(str(tmp_path)) + 1:] for f in files] == ["a.jsonl", "b.json.gz", "sub/e.parquet"]
    with pytest.raises(HessGPTError, match="no data files at .* \\(expected .py, optionally .gz\\)"):
        data_files(str(tmp_path), (".py",))


def test_rows_report_what_cannot_be_read(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n\n{broken\n{"a": 2}\n')
    items = list(iter_rows(str(p)))
    assert items[0] == ("x.jsonl:1", {"a": 1}) and items[2] == ("x.jsonl:4", {"a": 2})
    assert isinstance(items[1], Unreadable) and items[1].reason == "corrupt_json" and items[1].detail.startswith("x.jsonl:3:")
    gz = tmp_path / "y.jsonl.gz"
    gz.write_bytes(gzip.compress(b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(200)))[:-30])  # cut short
    items = list(iter_rows(str(gz)))
    assert items[0] == ("y.jsonl.gz:1", {"i": 0}) and isinstance(items[-1], Unreadable) and items[-1].reason == "load_error"
    arr = tmp_path / "z.json"
    arr.write_text(json.dumps({"data": [{"t": "one"}, {"t": "two"}]}))
    assert list(iter_rows(str(arr))) == [("z.json:0", {"t": "one"}), ("z.json:1", {"t": "two"})]


def test_texts_of_every_kind_of_file(tmp_path):
    (tmp_path / "a.txt").write_bytes("Premier bloc\r\nsuite\r\n\r\nSecond\r\n".encode())
    (tmp_path / "b.jsonl").write_text('{"text": "t1"}\n{"messages": [{"role": "user", "content": "u"}, '
                                      '{"role": "assistant", "content": "a", "code": "print(1)"}]}\nnot json\n')
    assert list(iter_texts(str(tmp_path / "a.txt"))) == ["Premier bloc\nsuite\n", "Second\n"]   # universal newlines
    assert list(iter_texts(str(tmp_path / "b.jsonl"))) == ["t1", "u", "a", "print(1)"]
    with pytest.raises(HessGPTError, match="no such data file"):
        list(iter_texts(str(tmp_path / "missing.txt")))
