"""Local data files, read one way by every consumer: the tokenizer's training inputs, the conversation recipes
(hessgpt.data.recipe), the pretraining shard writer (hessgpt.data.shards, hessgpt.data.chat_shards) and the
perplexity evaluation (hessgpt.eval.ppl).

- `is_local(path)`: a local file, directory or glob rather than a hub id;
- `data_files(path, suffixes)`: the files a path names (a directory: its files with those suffixes, `.gz`
  allowed, in sorted order; a file or glob: what it matches);
- `iter_rows(path)`: the rows of a .jsonl/.ndjson/.json/.parquet file (optionally .gz) as (position, row)
  pairs, and `Unreadable(reason, detail)` for what cannot be read (a corrupt line, a truncated .gz), so
  callers count it instead of crashing; `json_rows(lines)` the same for JSON Lines already in hand;
- `text_blocks(lines)`: a plain-text file, one document per blank-line-separated block;
- `iter_texts(path)`: the texts of any of those files (a row's "text"/"content", or its messages).

It sits below the tokenizer in the import layers (it imports only hessgpt.errors): the tokenizer reads its
training files with it.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hessgpt.errors import HessGPTError

ROW_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet")   # files of rows (records)
TEXT_SUFFIXES = (".txt", ".md")                             # plain text: blank-line-separated documents
CODE_SUFFIXES = {"python": (".py",), "javascript": (".js", ".mjs", ".cjs"), "html": (".html", ".htm"), "css": (".css",)}
LOCAL_SUFFIXES = ROW_SUFFIXES + TEXT_SUFFIXES + sum(CODE_SUFFIXES.values(), ()) + (".gz",)


def is_local(path: str) -> bool:
    """A local file/dir/glob (it exists, starts like a path, or has a data-file suffix), not a hub id."""
    return (
        path.startswith(("/", "./", "../", "~"))
        or os.path.exists(path)
        or bool(glob.glob(path))
        or path.lower().endswith(LOCAL_SUFFIXES)
    )


def data_files(path: str, suffixes: tuple[str, ...], exclude: Iterable[str] = ()) -> list[str]:
    """The files `path` names: a directory's files (recursively) ending with one of `suffixes` (or that plus
    .gz), outside directories named in `exclude`; a file or glob: every match. Sorted; an error when none."""
    p = os.path.expanduser(path)
    if os.path.isdir(p):
        skip = set(exclude)
        files = sorted(str(f) for f in Path(p).rglob("*")
                       if f.is_file() and f.name.lower().removesuffix(".gz").endswith(suffixes)
                       and not skip.intersection(f.relative_to(p).parts[:-1]))
    else:
        files = sorted(glob.glob(p))
    if not files:
        raise HessGPTError(f"no data files at {path!r} (expected {', '.join(suffixes)}, optionally .gz)")
    return files


def open_bytes(path: str):
    """The file opened for reading bytes, through gzip when its name ends in .gz."""
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


@dataclass(frozen=True)
class Unreadable:
    """Something of a file that could not be read: a corrupt JSON line ("corrupt_json"), a file that breaks
    off ("load_error"). `detail` names the file and line."""

    reason: str
    detail: str


def json_rows(lines: Iterable[bytes], name: str = "") -> Iterator[tuple[str, object] | Unreadable]:
    """JSON Lines (bytes lines): ("NAME:LINE", row) per non-blank line, Unreadable for a corrupt one."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            yield Unreadable("corrupt_json", f"{name}:{lineno}: {e}")
            continue
        yield f"{name}:{lineno}", row


def _jsonl_rows(path: str) -> Iterator[tuple[str, object] | Unreadable]:
    name = os.path.basename(path)
    lineno = 0
    try:
        with open_bytes(path) as f:
            for item in json_rows(f, name):
                if not isinstance(item, Unreadable):
                    lineno = int(item[0].rsplit(":", 1)[1])
                yield item
    except (OSError, EOFError) as e:  # a truncated or corrupt .gz: reported, what was read is kept
        yield Unreadable("load_error", f"{name} after line {lineno}: {type(e).__name__}: {e}")


def _json_rows(path: str) -> Iterator[tuple[str, object] | Unreadable]:
    """A JSON array (or {"data": [...]}) file; JSON Lines content under a .json name also works."""
    try:
        with open_bytes(path) as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        yield Unreadable("load_error", f"{os.path.basename(path)}: {type(e).__name__}: {e}")
        return
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        yield from _jsonl_rows(path)  # maybe JSON Lines; corrupt lines reported one by one
        return
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else [data]
    elif not isinstance(data, list):
        data = [data]
    name = os.path.basename(path)
    for i, row in enumerate(data):
        yield f"{name}:{i}", row


def parquet_columns(path: str) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.ParquetFile(path).schema_arrow.names)


def parquet_rows(path: str, columns: list[str] | None = None) -> Iterator[tuple[str, dict] | Unreadable]:
    """("NAME:ROW", row dict) per row of a parquet file (only `columns` when given), Unreadable if it breaks."""
    import pyarrow.parquet as pq

    name = os.path.basename(path)
    i = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(columns=columns, batch_size=1024):
            for row in batch.to_pylist():
                yield f"{name}:{i}", row
                i += 1
    except Exception as e:  # a corrupt file: reported, what was read is kept
        yield Unreadable("load_error", f"{name} after row {i}: {type(e).__name__}: {e}")


def iter_rows(path: str) -> Iterator[tuple[str, object] | Unreadable]:
    """The rows of one .jsonl/.ndjson/.json/.parquet file (optionally .gz): (position, row) or Unreadable."""
    low = path.lower().removesuffix(".gz")
    if low.endswith(".parquet"):
        return parquet_rows(path)
    if low.endswith(".json"):
        return _json_rows(path)
    return _jsonl_rows(path)


def text_blocks(lines) -> Iterator[str]:
    """A plain-text file (any iterable of lines): one document per blank-line-separated block."""
    block: list[str] = []
    for line in lines:
        if line.strip():
            block.append(line)
        elif block:
            yield "".join(block)
            block = []
    if block:
        yield "".join(block)


def row_texts(row) -> Iterator[str]:
    """The texts of one row: itself (a string), its "text"/"content", else its messages' contents and code,
    else its instruction/input/output/response/context fields."""
    if isinstance(row, str):
        yield row
    elif isinstance(row, dict):
        for key in ("text", "content"):
            if isinstance(row.get(key), str):
                yield row[key]
                return
        msgs = row.get("messages") or row.get("conversations") or row.get("conversation")
        if isinstance(msgs, list):
            for m in msgs:
                if isinstance(m, dict):
                    t = m.get("content") or m.get("value") or ""
                    if isinstance(t, str) and t:
                        yield t
                    if isinstance(m.get("code"), str):
                        yield m["code"]
            return
        for key in ("instruction", "input", "output", "response", "context"):
            if isinstance(row.get(key), str) and row[key]:
                yield row[key]


def iter_texts(path: str) -> Iterator[str]:
    """Texts of one local file: .txt/.md and any other suffix one per blank-line-separated block, rows of
    .jsonl/.ndjson/.json through `row_texts`, .parquet's "text" (else "content") column; .gz of those.
    Unreadable lines are passed over."""
    if not os.path.exists(path):
        raise HessGPTError(f"no such data file {path!r}")
    low = path.lower().removesuffix(".gz")
    if low.endswith(".parquet"):
        col = "text" if "text" in parquet_columns(path) else "content"
        for item in parquet_rows(path, [col]):
            if not isinstance(item, Unreadable) and item[1][col]:
                yield item[1][col]
        return
    if low.endswith((".jsonl", ".ndjson", ".json")):
        for item in iter_rows(path):
            if not isinstance(item, Unreadable):
                yield from row_texts(item[1])
        return
    with open_bytes(path) as f:
        yield from text_blocks(io.TextIOWrapper(f, encoding="utf-8"))
