"""Pretraining shards: stream text (or code) from weighted sources, filter, tokenize in parallel, and write
fixed-size binary token shards plus a manifest that the loader (`hessgpt.data.loader`) reads.

    hessgpt data shards recipes/pretrain-text.yaml --tokenizer tok/ --out shards/           # a recipe
    hessgpt data shards recipes/pretrain-text.yaml --tokenizer tok/ --out shards/ --chunks 10 --chunk 3
    hessgpt data shards --text a.txt b.txt --tokenizer tok/ --out shards/                   # no recipe
    hessgpt data shards --text /usr/lib/python3.11 --kind python --tokenizer tok/ --out code-shards/

The recipe (`PretrainRecipe`, `load_pretrain_recipe`, `text_recipe`) is one kind of the data recipes of
hessgpt.data.recipe; this module writes it.

Output (docs/shards.md): `train-cCC-NNNNN.bin` / `val-cCC-NNNNN.bin` (raw little-endian uint16, or uint32
when the vocabulary has more than 65535 ids; each document is `[bos] + ids + [eos]`, documents run across
shard boundaries), `manifest.json`, and `progress/` (per-chunk resume state).

Determinism. Each source is one ordered document stream (a hub stream, optionally shuffled in a seeded
buffer, or local files in sorted order). The mixer always takes the next document from the source whose
token count is furthest below its weight (ties: first listed), so the token shares follow the weights
exactly up to one document, and the output depends only on the recipe, the tokenizer and the data, never
on the number of workers. After every shard the writer saves each source's row position, the mixer's
counters and the partial buffers; a run restarted on the same output continues from there and writes
shards byte-identical to an uninterrupted run. `--chunks N --chunk k` writes the k-th of N disjoint parts
of every source (a 1/N share of the token budget), so a long corpus can be tokenized and trained on
chunk by chunk.

Parallelism. `--workers N` processes read, filter and tokenize; the parent only mixes and writes. Workers
read uncompressed local text and JSON Lines files themselves, as byte ranges cut where no document spans the
cut, and send back one token array per batch, so almost nothing crosses processes; hub streams, parquet,
JSON arrays, .gz and code files travel to them as text batches.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import hashlib
import io
import itertools
import json
import mmap
import multiprocessing as mp
import os
import sys
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Iterator

import numpy as np
from tqdm import tqdm

from hessgpt.data.quality import KINDS, Filters
from hessgpt.data.recipe import PretrainRecipe, PretrainSource, check_recipe, load_pretrain_recipe, text_recipe
from hessgpt.datafiles import CODE_SUFFIXES, ROW_SUFFIXES, TEXT_SUFFIXES, Unreadable, data_files, is_local, json_rows, \
    open_bytes, parquet_columns, parquet_rows, text_blocks
from hessgpt.errors import HessGPTError
from hessgpt.tokenizer import Tokenizer

FORMAT = "hessgpt-shards"
VERSION = 1
DOC_SUFFIXES = TEXT_SUFFIXES + ROW_SUFFIXES   # the files of a text source's directory

# ---- reading documents -----------------------------------------------------------------------------------
# A source yields its documents as str, or None for a row that has no usable text (counted as "no_text").


def _column(row, column: str | None):
    if not isinstance(row, dict):
        return row if isinstance(row, str) else None
    if column:
        v = row.get(column)
    else:
        v = row.get("text") if isinstance(row.get("text"), str) else row.get("content")
    return v if isinstance(v, str) else None


def _local_files(src: PretrainSource) -> list[str]:
    # a directory holds source files (code) or text/data files; a file or glob may be any of them
    suffixes = CODE_SUFFIXES[src.kind] if src.kind in CODE_SUFFIXES else DOC_SUFFIXES
    try:
        return data_files(src.path, suffixes, exclude=src.exclude or [])
    except HessGPTError as e:
        raise HessGPTError(f"source {src.name!r}: {e}") from None


def _json_lines(lines, column: str | None) -> Iterator[str | None]:
    """JSON Lines (an iterable of bytes lines): one document per non-blank line (None: a corrupt line)."""
    for item in json_rows(lines):
        yield None if isinstance(item, Unreadable) else _column(item[1], column)


def _file_docs(path: str, src: PretrainSource) -> Iterator[str | None]:
    low = path.lower().removesuffix(".gz")
    if low.endswith(".parquet"):
        names = parquet_columns(path)
        col = src.column or ("text" if "text" in names else "content")
        if col not in names:
            raise HessGPTError(f"source {src.name!r}: {path} has no column {col!r} (columns: {names})")
        for item in parquet_rows(path, [col]):
            v = None if isinstance(item, Unreadable) else item[1][col]
            yield v if isinstance(v, str) else None
        return
    if low.endswith((".jsonl", ".ndjson", ".json")):
        with open_bytes(path) as f:
            head = f.read(1)
            while head in (b" ", b"\n", b"\r", b"\t"):
                head = f.read(1)
            f.seek(0)
            if low.endswith(".json") and head == b"[":  # a JSON array
                for row in json.load(f):
                    yield _column(row, src.column)
                return
            yield from _json_lines(f, src.column)
        return
    if src.kind != "text" and low.endswith(sum(CODE_SUFFIXES.values(), ())):
        with open_bytes(path) as f:
            raw = f.read()
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            yield None
        return
    with open_bytes(path) as f:
        yield from text_blocks(io.TextIOWrapper(f, encoding="utf-8", errors="replace"))


def _local_docs(src: PretrainSource, chunk: int, chunks: int, skip: int) -> Iterator[str | None]:
    """Documents of this chunk (document i of the source belongs to chunk i % chunks), after `skip`."""
    files = _local_files(src)
    one_doc_per_file = src.kind != "text" and all(f.lower().removesuffix(".gz").endswith(CODE_SUFFIXES[src.kind]) for f in files)
    if one_doc_per_file:  # a directory of source files: skip without reading
        for f in files[chunk::chunks][skip:]:
            yield from _file_docs(f, src)
        return
    i = n = 0
    for f in files:
        for doc in _file_docs(f, src):
            if i % chunks == chunk:
                if n >= skip:
                    yield doc
                n += 1
            i += 1


def _hub_docs(src: PretrainSource, chunk: int, chunks: int, skip: int, seed: int, shuffle_buffer: int) -> Iterator[str | None]:
    """A hub dataset, streamed: chunk k of N is `IterableDataset.shard(N, k)` (disjoint data files) when the
    dataset has at least N files, else every N-th row."""
    import datasets  # lazy: an optional extra (.[data]) that takes ~1.4 s to import, needed for hub sources only

    token = os.environ.get("HF_TOKEN") or None
    try:
        ds = datasets.load_dataset(src.path, name=src.config, data_dir=src.data_dir, data_files=src.data_files,
                                   split=src.split, revision=src.revision, streaming=True, token=token)
    except Exception as e:  # offline, gated without a token, unknown id or config
        hint = (" (offline: HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set; read a local copy with --local NAME=PATH)"
                if "Offline" in f"{type(e).__name__}{e}" else
                " (gated: accept the terms on the hub, then set HF_TOKEN or run `huggingface-cli login`)")
        raise HessGPTError(f"source {src.name!r}: cannot stream {src.path!r}"
                           f"{' config ' + src.config if src.config else ''}: {type(e).__name__}: {e}{hint}") from None
    by_file = chunks > 1 and ds.num_shards >= chunks
    if by_file:
        ds = ds.shard(num_shards=chunks, index=chunk)
    if shuffle_buffer > 1:
        ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer)
    if chunks == 1 or by_file:
        if skip:
            ds = ds.skip(skip)
        for row in ds:
            yield _column(row, src.column)
        return
    n = 0
    for i, row in enumerate(ds):
        if i % chunks == chunk:
            if n >= skip:
                yield _column(row, src.column)
            n += 1


def iter_documents(src: PretrainSource, chunk: int = 0, chunks: int = 1, skip: int = 0, seed: int = 0,
                   shuffle_buffer: int = 0) -> Iterator[str | None]:
    if is_local(os.path.expanduser(src.path)):
        return _local_docs(src, chunk, chunks, skip)
    return _hub_docs(src, chunk, chunks, skip, seed, shuffle_buffer)


# ---- tasks: what a worker is sent -------------------------------------------------------------------------
# A task is a batch of one source's documents, in stream order, in one of two forms:
#   ("texts", [str | None, ...])                the documents themselves (hub streams, parquet, .gz, code files)
#   ("range", path, start, end, fmt, column, first, chunks, chunk, skip)
#                                               bytes [start, end) of an uncompressed local text or JSON Lines
#                                               file, cut where no document spans the cut; the worker reads
#                                               and splits them itself, so only these few values cross
#                                               processes (text is the bulk of the data: pickling it to a
#                                               worker cost more CPU than the parent could spare).
# A range holds documents first, first+1, ... of its source (over all chunks); the worker keeps those with
# index % chunks == chunk and drops the first `skip` of them (a resumed run).

def _range_format(path: str, src: PretrainSource) -> str | None:
    """"blocks" (blank-line-separated text) or "lines" (JSON Lines) when `_file_docs` reads `path` that way
    and the file can be cut into byte ranges (not compressed); None: send its documents as texts."""
    low = path.lower()
    if low.endswith((".gz", ".parquet")) or (src.kind != "text" and low.endswith(sum(CODE_SUFFIXES.values(), ()))):
        return None
    if low.endswith((".jsonl", ".ndjson")):
        return "lines"
    if low.endswith(".json"):
        with open(path, "rb") as f:
            head = f.read(4096).lstrip(b" \n\r\t")
        return None if head.startswith(b"[") or (not head and os.path.getsize(path) > 4096) else "lines"
    return "blocks"


def _cuts(path: str, fmt: str, target: int) -> list[tuple[int, int]]:
    """Byte ranges of about `target` bytes covering the file, each ending right after a newline (JSON Lines)
    or a blank line (text blocks): decoding and splitting the ranges one by one gives the same documents as
    the whole file (UTF-8 never has b"\\n" inside a character; a range never ends inside a \\r\\n)."""
    size = os.path.getsize(path)
    if size == 0:
        return []
    cuts, a = [], 0
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        while a < size:
            want = a + max(target, 1)
            if want >= size:
                b = size
            elif fmt == "lines":
                j = mm.find(b"\n", want - 1)
                b = size if j < 0 else j + 1
            else:
                b = _blank_line_end(mm, want - 1, size)
            cuts.append((a, b))
            a = b
    return cuts


def _blank_line_end(mm, lo: int, size: int) -> int:
    """The end of the first b"\n\n" or b"\n\r\n" at or after `lo` (a line ended, then a blank one), else
    `size`. Searched in growing windows: a file without CRLF is not scanned to its end for each cut."""
    span = 1 << 16
    while True:
        hi = min(size, lo + span)
        ends = [j + len(pat) for pat in (b"\n\n", b"\n\r\n") if (j := mm.find(pat, lo, hi)) >= 0]
        if ends:
            return min(ends)
        if hi == size:
            return size
        lo, span = hi - 2, span * 2  # overlap: a pattern across the window's end is found in the next


def _range_docs(path: str, start: int, end: int, fmt: str, column: str | None) -> Iterator[str | None]:
    with open(path, "rb") as f:
        f.seek(start)
        data = io.BytesIO(f.read(end - start))
    if fmt == "lines":
        return _json_lines(data, column)
    return text_blocks(io.TextIOWrapper(data, encoding="utf-8", errors="replace"))


def _count_range(path: str, start: int, end: int, fmt: str) -> int:
    """Documents in a byte range (rows, counting the ones without text), without parsing JSON."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    if fmt == "lines":
        return sum(1 for line in data.split(b"\n") if line.strip())
    return sum(1 for _ in text_blocks(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace")))


def _task_docs(task: tuple) -> Iterator[str | None]:
    if task[0] == "texts":
        return iter(task[1])
    _, path, start, end, fmt, column, first, chunks, chunk, skip = task
    docs = _range_docs(path, start, end, fmt, column)
    if chunks == 1 and not skip:
        return docs
    mine = (d for j, d in enumerate(docs) if (first + j) % chunks == chunk)
    return itertools.islice(mine, skip, None)


def _text_batches(docs: Iterator[str | None], batch_chars: int) -> Iterator[tuple]:
    texts, size = [], 0
    for doc in docs:
        texts.append(doc)
        size += len(doc) if doc else 0
        if size >= batch_chars or len(texts) >= 4096:
            yield ("texts", texts)
            texts, size = [], 0
    if texts:
        yield ("texts", texts)


def _counts(jobs: list[tuple], pool, ahead: int) -> Iterator[int]:
    """`_count_range(*job)` for each job, in order, at most `ahead` running ahead of the consumer."""
    pending: deque = deque()
    for job in jobs:
        pending.append(pool.apply_async(_count_range, job) if pool else _Done(_count_range(*job)))
        if len(pending) >= ahead:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _source_tasks(src: PretrainSource, chunk: int, chunks: int, skip: int, seed: int, shuffle_buffer: int,
                  batch_chars: int, pool, ahead: int) -> Iterator[tuple]:
    """The tasks of one source: the same documents, in the same order, as `iter_documents`."""
    if not is_local(os.path.expanduser(src.path)):
        yield from _text_batches(_hub_docs(src, chunk, chunks, skip, seed, shuffle_buffer), batch_chars)
        return
    files = _local_files(src)
    if src.kind != "text" and all(f.lower().removesuffix(".gz").endswith(CODE_SUFFIXES[src.kind]) for f in files):
        yield from _text_batches(_local_docs(src, chunk, chunks, skip), batch_chars)  # a file per document
        return
    i = n = 0  # documents of the source so far (all chunks), and of this chunk (taken or skipped)
    for path in files:
        fmt = _range_format(path, src)
        if fmt is None:
            def docs():
                nonlocal i, n
                for doc in _file_docs(path, src):
                    if i % chunks == chunk:
                        if n >= skip:
                            yield doc
                        n += 1
                    i += 1
            yield from _text_batches(docs(), batch_chars)
            continue
        cuts = _cuts(path, fmt, batch_chars)
        if chunks == 1 and n >= skip:  # every document taken: no need to know where they start
            for a, b in cuts:
                yield ("range", path, a, b, fmt, src.column, 0, 1, 0, 0)
            continue
        for (a, b), count in zip(cuts, _counts([(path, a, b, fmt) for a, b in cuts], pool, ahead)):
            mine = len(range(i + (chunk - i) % chunks, i + count, chunks))  # indices g in [i, i+count), g % chunks == chunk
            if n + mine > skip:
                yield ("range", path, a, b, fmt, src.column, i, chunks, chunk, max(0, skip - n))
            i, n = i + count, n + mine


# ---- workers: filter + tokenize ----------------------------------------------------------------------------

_W: dict = {}


def _init_worker(tokenizer_dir: str, encoder: str, dtype: str, filters: list[Filters]) -> None:
    tok = Tokenizer.load(tokenizer_dir)
    _W.update(encode=tok.encode if encoder == "fast" else tok.encode_slow, bos=tok.bos_id, eos=tok.eos_id,
              dtype=np.dtype(dtype), filters=filters)
    _W["encode"]("warm up")  # builds (and verifies) the fast encoder once, before any fork


def _process(source: int, task: tuple) -> tuple[list[int], dict[int, str], np.ndarray]:
    """Read (a range task), filter and tokenize one batch of documents of one source. Returns
    (tokens per document: len(ids) + 2, or 0 if rejected; {document index: reject reason};
     all kept documents' [bos] + ids + [eos], concatenated: one array, the cheapest thing to send back)."""
    filt: Filters = _W["filters"][source]
    encode, bos, eos = _W["encode"], _W["bos"], _W["eos"]
    lengths, rejected, flat = [], {}, []
    for j, text in enumerate(_task_docs(task)):
        reason = "no_text" if text is None else filt.reject_reason(text)
        if reason:
            lengths.append(0)
            rejected[j] = reason
            continue
        ids = encode(text)
        flat.append(bos)
        flat.extend(ids)
        flat.append(eos)
        lengths.append(len(ids) + 2)
    return lengths, rejected, np.array(flat, dtype=_W["dtype"])


class _Done:
    """A task run in this process (1 worker): the same interface as AsyncResult."""

    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value


@dataclass
class _Batch:
    """One tokenized batch of a source, read document by document (`_process`'s result)."""

    lengths: list[int]          # per row: tokens of the kept document ([bos] + ids + [eos]), 0 when rejected
    rejected: dict[int, str]    # row -> reason
    ids: np.ndarray             # the kept documents, end to end
    row: int = 0                # the next row to read
    offset: int = 0             # where its tokens start in `ids`


@dataclass
class _Source:
    """The mixer's view of one source: its tasks and the tokenized batches ahead of it."""

    index: int
    tasks: Iterator
    row: int = 0                      # rows of this source consumed (taken or rejected) so far
    batches: deque = field(default_factory=deque)  # AsyncResults, in stream order
    cur: "_Batch | None" = None       # the batch being read
    read_all: bool = False
    done: bool = False


# ---- the writer ----------------------------------------------------------------------------------------------


SPLITS = ("train", "val")


@dataclass
class SourceCounts:
    """What one source gave a chunk: tokens and documents per split, rejected rows by reason."""

    train_tokens: int = 0
    val_tokens: int = 0
    train_docs: int = 0
    val_docs: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def add(self, split: str, tokens: int) -> None:
        setattr(self, f"{split}_tokens", getattr(self, f"{split}_tokens") + tokens)
        setattr(self, f"{split}_docs", getattr(self, f"{split}_docs") + 1)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


@dataclass
class ChunkState:
    """One chunk's resume state, saved as progress/cCC.json after every shard (`to_json` keeps the file's
    keys and their order). Per source (lists indexed like the recipe's sources): rows consumed, exhausted,
    tokens taken by the mixer, and its counts; `carry` names the files holding each split's partial buffer."""

    fingerprint: str
    chunk: int
    chunks: int
    complete: bool = False
    shards: list[dict] = field(default_factory=list)    # {file, split, chunk, tokens}, in writing order
    rows: list[int] = field(default_factory=list)
    exhausted: list[bool] = field(default_factory=list)
    mix_tokens: list[int] = field(default_factory=list)
    docs: int = 0                                        # documents taken (both splits): drives the val share
    split_tokens: dict[str, int] = field(default_factory=lambda: {"train": 0, "val": 0})
    sources: list[SourceCounts] = field(default_factory=list)
    carry: dict[str, str | None] = field(default_factory=lambda: {"train": None, "val": None})
    seq: int = 0                                         # saves so far: names the carry files

    @classmethod
    def fresh(cls, fingerprint: str, chunk: int, chunks: int, n_sources: int) -> "ChunkState":
        return cls(fingerprint, chunk, chunks, rows=[0] * n_sources, exhausted=[False] * n_sources,
                   mix_tokens=[0] * n_sources, sources=[SourceCounts() for _ in range(n_sources)])

    @classmethod
    def from_json(cls, d: dict) -> "ChunkState":
        return cls(**{**d, "sources": [SourceCounts(**s) for s in d["sources"]]})

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class SplitBuffer:
    """The tokens of one split not yet written to a shard (documents run across shard boundaries)."""

    split: str
    arrays: list[np.ndarray]
    written: int                           # shards of this split this chunk has written (names the next one)
    tokens: int = field(init=False)        # len of the arrays together

    def __post_init__(self):
        self.tokens = sum(len(a) for a in self.arrays)

    def append(self, doc: np.ndarray) -> None:
        self.arrays.append(doc)
        self.tokens += len(doc)

    def take(self, n: int) -> np.ndarray:
        """The first n tokens (all of them when fewer), removed from the buffer."""
        arr = np.concatenate(self.arrays)
        head, rest = arr[:n], arr[n:]
        self.arrays[:] = [rest] if len(rest) else []
        self.tokens = len(rest)
        return head



def _dtype_for(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 65535 else "uint32"


def _atomic_write_bytes(path: str, data: bytes | np.ndarray) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        if isinstance(data, np.ndarray):
            data.tofile(f)
        else:
            f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_write_json(path: str, obj) -> None:
    _atomic_write_bytes(path, (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode())


def _fingerprint(recipe: PretrainRecipe, tok_hash: str, chunks: int) -> str:
    blob = json.dumps({"recipe": asdict(recipe), "tokenizer": tok_hash, "chunks": chunks, "version": VERSION},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _budget(total: int | None, chunks: int, chunk: int) -> int | None:
    """Chunk k's share of `total` (the shares add up to it exactly)."""
    if total is None:
        return None
    return total * (chunk + 1) // chunks - total * chunk // chunks


class _Writer:
    """Writes one chunk; `run()` returns after the chunk is complete or `max_shards` new shards."""

    def __init__(self, recipe: PretrainRecipe, tokenizer, out: str, chunks: int, chunk: int, workers: int,
                 encoder: str, progress: bool, max_shards: int | None, batch_chars: int):
        self.recipe, self.out, self.chunks, self.chunk = recipe, out, chunks, chunk
        self.workers, self.encoder, self.progress, self.max_shards = workers, encoder, progress, max_shards
        self.batch_chars = batch_chars
        self.tok_dir = tokenizer.path
        self.tok_hash, self.vocab_size = tokenizer.hash, tokenizer.vocab_size
        self.bos_id, self.eos_id = tokenizer.bos_id, tokenizer.eos_id
        self.dtype = _dtype_for(self.vocab_size)
        self.fingerprint = _fingerprint(recipe, self.tok_hash, chunks)
        self.train_budget = _budget(recipe.total_tokens, chunks, chunk)
        self.val_budget = _budget(recipe.val_tokens, chunks, chunk) if recipe.val_fraction > 0 else 0
        self.progress_path = os.path.join(out, "progress", f"c{chunk:02d}.json")
        self.filters = [recipe.source_filters(s) for s in recipe.sources]

    # -- state ------------------------------------------------------------------------------------

    def _load_state(self) -> ChunkState:
        if not os.path.exists(self.progress_path):
            return ChunkState.fresh(self.fingerprint, self.chunk, self.chunks, len(self.recipe.sources))
        with open(self.progress_path) as f:
            state = json.load(f)
        if state.get("fingerprint") != self.fingerprint:
            raise HessGPTError(
                f"{self.out}: chunk {self.chunk} was started with another recipe, tokenizer or --chunks "
                f"(fingerprint {state.get('fingerprint')} != {self.fingerprint}); use a new --out or delete {self.out}")
        return ChunkState.from_json(state)

    def _carry_load(self, name: str | None) -> list[np.ndarray]:
        if not name:
            return []
        path = os.path.join(self.out, "progress", name)
        if not os.path.exists(path):
            raise HessGPTError(f"{self.out}: resume state names {path}, which is missing; delete {self.out} and start again")
        return [np.fromfile(path, dtype=self.dtype)]

    def _buffers(self, state: ChunkState) -> dict[str, SplitBuffer]:
        """Each split's carried partial buffer and the count of its shards already written."""
        return {sp: SplitBuffer(sp, self._carry_load(state.carry[sp]), sum(1 for sh in state.shards if sh["split"] == sp))
                for sp in SPLITS}

    def _save_state(self, state: ChunkState, bufs: dict[str, SplitBuffer]) -> None:
        """Carry buffers under new names, then the state that points to them (atomic), then old carries go."""
        state.seq += 1
        old = dict(state.carry)
        for split in SPLITS:
            buf = bufs[split]
            arr = np.concatenate(buf.arrays) if buf.arrays else np.empty(0, self.dtype)
            if len(arr):
                name = f"c{self.chunk:02d}.{split}.{state.seq}.carry"
                _atomic_write_bytes(os.path.join(self.out, "progress", name), arr)
                buf.arrays[:] = [arr]
                state.carry[split] = name
            else:
                state.carry[split] = None
        _atomic_write_json(self.progress_path, state.to_json())
        for split, name in old.items():
            if name and name != state.carry[split]:
                try:
                    os.remove(os.path.join(self.out, "progress", name))
                except FileNotFoundError:
                    pass
        write_manifest(self.out)

    # -- reading ------------------------------------------------------------------------------------

    def _submit(self, s: _Source, pool) -> None:
        task = next(s.tasks, None)
        if task is None:
            s.read_all = True
        else:
            s.batches.append(pool.apply_async(_process, (s.index, task)) if pool else _Done(_process(s.index, task)))

    def _next_doc(self, s: _Source, pool, depth: int, counts: SourceCounts) -> np.ndarray | None:
        """The next kept document of source s (rejected rows on the way are counted), or None at its end."""
        while True:
            if s.cur is None:
                while not s.read_all and len(s.batches) < depth:
                    self._submit(s, pool)
                if not s.batches:
                    return None
                s.cur = _Batch(*s.batches.popleft().get())
                if not s.read_all:
                    self._submit(s, pool)  # keep `depth` batches in flight
            b = s.cur
            while b.row < len(b.lengths):
                n = b.lengths[b.row]
                s.row += 1
                if not n:
                    counts.reject(b.rejected[b.row])
                    b.row += 1
                    continue
                doc = b.ids[b.offset:b.offset + n]
                b.row, b.offset = b.row + 1, b.offset + n
                return doc
            s.cur = None

    # -- main loop ------------------------------------------------------------------------------------

    def _flush(self, buf: SplitBuffer, state: ChunkState, final: bool = False) -> bool:
        """Write the full shards of `buf` (and, if final, the rest); False once max_shards new ones are written."""
        shard_tokens = self.recipe.shard_tokens
        while buf.tokens >= shard_tokens or (final and buf.tokens > 0):
            shard = buf.take(shard_tokens)
            name = f"{buf.split}-c{self.chunk:02d}-{buf.written:05d}.bin"
            _atomic_write_bytes(os.path.join(self.out, name), shard)
            state.shards.append({"file": name, "split": buf.split, "chunk": self.chunk, "tokens": int(len(shard))})
            buf.written += 1
            self.new_shards += 1
            if self.max_shards is not None and self.new_shards >= self.max_shards and not final:
                return False
        return True

    def _pick(self, live: list[_Source], state: ChunkState) -> _Source:
        """The source furthest below its weight (ties: the first listed)."""
        weights = [s.weight for s in self.recipe.sources]
        return live[0] if len(live) == 1 else min(live, key=lambda s: (state.mix_tokens[s.index] / weights[s.index], s.index))

    def _split_of(self, state: ChunkState) -> str:
        """Document number state.docs goes to val when the running val share crosses a multiple of val_fraction."""
        d, frac = state.docs, self.recipe.val_fraction
        return "val" if int((d + 1) * frac) > int(d * frac) and state.split_tokens["val"] < self.val_budget else "train"

    def _start_pool(self):
        """The tokenizer processes (None for 1 worker: tasks run here, on the tokenizer loaded by _init_worker)."""
        init = (self.tok_dir, self.encoder, self.dtype, self.filters)
        _init_worker(*init)  # forked workers inherit the loaded tokenizer
        if self.workers <= 1:
            return None
        fork = sys.platform == "linux"
        return mp.get_context("fork" if fork else "spawn").Pool(self.workers, *((None, ()) if fork else (_init_worker, init)))

    def run(self) -> ChunkState:
        recipe, out = self.recipe, self.out
        os.makedirs(os.path.join(out, "progress"), exist_ok=True)
        for stale in glob.glob(os.path.join(out, "*.tmp.*")) + glob.glob(os.path.join(out, "progress", "*.tmp.*")):
            os.remove(stale)  # left by a killed run: never a finished file
        state = self._load_state()
        if state.complete:
            return state
        bufs = self._buffers(state)
        self.new_shards = 0
        depth = 2 * self.workers + 2  # batches in flight per source: a worker that finishes finds the next one queued
        pool = self._start_pool()
        srcs = []
        for i, spec in enumerate(recipe.sources):
            tasks = _source_tasks(spec, self.chunk, self.chunks, state.rows[i], recipe.seed + 1000 * i,
                                  recipe.shuffle_buffer, self.batch_chars, pool, ahead=2 * self.workers)
            srcs.append(_Source(index=i, tasks=tasks, row=state.rows[i], done=state.exhausted[i]))

        bar = None
        if self.progress:
            bar = tqdm(total=self.train_budget, initial=state.split_tokens["train"], unit="tok", unit_scale=True,
                       desc=f"chunk {self.chunk}/{self.chunks}" if self.chunks > 1 else "shards", dynamic_ncols=True)
        stopped = False
        try:
            while True:
                if self.train_budget is not None and state.split_tokens["train"] >= self.train_budget:
                    break
                live = [s for s in srcs if not s.done]
                if not live:
                    break
                s = self._pick(live, state)
                counts = state.sources[s.index]
                doc = self._next_doc(s, pool, depth, counts)
                state.rows[s.index] = s.row
                if doc is None:
                    s.done = state.exhausted[s.index] = True
                    if recipe.stop == "first_exhausted":
                        break
                    continue
                state.mix_tokens[s.index] += len(doc)
                split = self._split_of(state)
                state.docs += 1
                if split == "train" and self.train_budget is not None:
                    doc = doc[:self.train_budget - state.split_tokens["train"]]  # the budget is exact
                bufs[split].append(doc)
                state.split_tokens[split] += len(doc)
                counts.add(split, len(doc))
                if bar is not None and split == "train":
                    bar.update(len(doc))
                if bufs[split].tokens >= recipe.shard_tokens:
                    keep_going = self._flush(bufs[split], state)
                    self._save_state(state, bufs)
                    if not keep_going:
                        stopped = True
                        break
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
            if bar is not None:
                bar.close()
        if stopped:
            return state
        if state.split_tokens["train"] == 0 and state.split_tokens["val"] > 0:
            raise HessGPTError(f"chunk {self.chunk}: every kept document went to validation; lower val_fraction")
        self._flush(bufs["train"], state, final=True)
        self._flush(bufs["val"], state, final=True)
        state.complete = True
        self._save_state(state, bufs)
        return state


def write_shards(recipe: PretrainRecipe, tokenizer, out: str, chunks: int = 1, chunk: int | None = None,
                 workers: int | None = None, encoder: str = "fast", progress: bool = False,
                 max_shards: int | None = None, batch_chars: int = 1 << 20) -> dict:
    """Write chunk `chunk` of `chunks` (None: all chunks, in order) of `recipe` into `out`; resumes whatever
    `out` already holds for the same recipe and tokenizer. `tokenizer` is a Tokenizer loaded from a directory
    (workers reload it from `tokenizer.path`) or that directory. `max_shards` stops after that many new
    shards (a later call continues). Returns the manifest."""
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = Tokenizer.load(str(tokenizer))
    if not tokenizer.path:
        raise HessGPTError("write_shards needs a tokenizer loaded from a directory (Tokenizer.load) so workers can load it")
    if encoder not in ("fast", "tokenizers"):
        raise HessGPTError(f"encoder must be 'fast' or 'tokenizers', got {encoder!r}")
    if chunks < 1 or (chunk is not None and not 0 <= chunk < chunks):
        raise HessGPTError(f"--chunk must be in [0, {chunks}) with --chunks {chunks}, got {chunk}")
    workers = workers or min(os.cpu_count() or 1, 8)
    os.makedirs(os.path.join(out, "progress"), exist_ok=True)
    _check_out(out, tokenizer, chunks)
    fp = _fingerprint(recipe, tokenizer.hash, chunks)
    for path in glob.glob(os.path.join(out, "progress", "c*.json")):
        with open(path) as f:
            if json.load(f).get("fingerprint") != fp:
                raise HessGPTError(f"{out} holds shards of another recipe, tokenizer or --chunks ({path}); "
                                   f"use a new --out or delete {out}")
    write_manifest(out, recipe=recipe, tokenizer=tokenizer, chunks=chunks)
    for k in ([chunk] if chunk is not None else range(chunks)):
        _Writer(recipe, tokenizer, out, chunks, k, workers, encoder, progress, max_shards, batch_chars).run()
    return write_manifest(out, recipe=recipe, tokenizer=tokenizer, chunks=chunks)


def _check_out(out: str, tokenizer, chunks: int) -> None:
    path = os.path.join(out, "manifest.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        m = json.load(f)
    if m.get("tokenizer", {}).get("hash") != tokenizer.hash:
        raise HessGPTError(f"{out} holds shards made with tokenizer {m.get('tokenizer', {}).get('hash')}, not "
                           f"{tokenizer.hash} ({tokenizer.path}); use a new --out")
    if m.get("chunks", {}).get("count") != chunks:
        raise HessGPTError(f"{out} was written with --chunks {m.get('chunks', {}).get('count')}, not {chunks}")


def write_manifest(out: str, recipe: PretrainRecipe | None = None, tokenizer=None, chunks: int | None = None) -> dict:
    """Merge every chunk's progress file into `out/manifest.json` (under a lock: chunks may run at once)."""
    with open(os.path.join(out, "progress", ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = os.path.join(out, "manifest.json")
        old = {}
        if os.path.exists(path):
            with open(path) as f:
                old = json.load(f)
        states = []
        for p in sorted(glob.glob(os.path.join(out, "progress", "c*.json"))):
            with open(p) as f:
                states.append(json.load(f))
        m = old
        if tokenizer is not None:
            m["format"], m["version"] = FORMAT, VERSION
            m["tokenizer"] = {"hash": tokenizer.hash, "vocab_size": tokenizer.vocab_size, "bos_id": tokenizer.bos_id,
                              "eos_id": tokenizer.eos_id, "path": os.path.abspath(tokenizer.path)}
            m["dtype"] = _dtype_for(tokenizer.vocab_size)
        if recipe is not None:
            m["recipe"] = asdict(recipe)
            m["shard_tokens"] = recipe.shard_tokens
        if chunks is not None:
            m["chunks"] = {"count": chunks}
        names = [s["name"] for s in m["recipe"]["sources"]]
        m["chunks"]["complete"] = sorted(s["chunk"] for s in states if s["complete"])
        m["chunks"]["partial"] = sorted(s["chunk"] for s in states if not s["complete"])
        m["shards"] = sorted((sh for s in states for sh in s["shards"]),
                             key=lambda sh: (sh["split"], sh["chunk"], sh["file"]))
        m["tokens"] = {sp: sum(sh["tokens"] for sh in m["shards"] if sh["split"] == sp) for sp in ("train", "val")}
        sources = {}
        for i, name in enumerate(names):
            agg = {"train_tokens": 0, "val_tokens": 0, "train_docs": 0, "val_docs": 0, "rejected": Counter()}
            for s in states:
                st = s["sources"][i]
                for k in ("train_tokens", "val_tokens", "train_docs", "val_docs"):
                    agg[k] += st[k]
                agg["rejected"].update(st["rejected"])
            agg["rejected"] = dict(sorted(agg["rejected"].items()))
            sources[name] = agg
        m["sources"] = sources
        _atomic_write_json(path, m)
        return m


# ---- CLI -----------------------------------------------------------------------------------------------------


def _print_summary(m: dict, out: str) -> None:
    rows = [("source", "train tok", "val tok", "docs", "rejected")]
    for name, s in m["sources"].items():
        rej = s["rejected"]
        top = ", ".join(f"{k}={v}" for k, v in sorted(rej.items(), key=lambda kv: -kv[1])[:4])
        rows.append((name, f"{s['train_tokens']:,}", f"{s['val_tokens']:,}", f"{s['train_docs'] + s['val_docs']:,}",
                     f"{sum(rej.values()):,}" + (f" ({top})" if top else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r[:4], widths))) + "  " + r[4])
    n_train = sum(1 for s in m["shards"] if s["split"] == "train")
    n_val = len(m["shards"]) - n_train
    print(f"train {m['tokens']['train']:,} tokens in {n_train} shard(s), val {m['tokens']['val']:,} in {n_val}; "
          f"{m['dtype']}, tokenizer {m['tokenizer']['hash']}; chunks done {m['chunks']['complete']} of {m['chunks']['count']}")
    print(f"wrote {os.path.join(out, 'manifest.json')}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hessgpt data shards",
                                description="Tokenize pretraining corpora into binary shards + manifest.json.")
    p.add_argument("recipe", nargs="?", help="pretraining recipe (recipes/pretrain-*.yaml)")
    p.add_argument("--text", nargs="+", metavar="PATH", help="no recipe: these files/directories, each a source, all taken")
    p.add_argument("--kind", default="text", choices=KINDS, help="with --text: text or a code language (filters, file types)")
    p.add_argument("--languages", help="with --text: keep only these languages, e.g. fr,en")
    p.add_argument("--tokenizer", required=True, help="tokenizer directory")
    p.add_argument("--out", required=True, help="output directory (resumed if it holds a partial run)")
    p.add_argument("--chunks", type=int, default=1, help="split every source into N disjoint chunks")
    p.add_argument("--chunk", type=int, help="write only chunk K (0-based; default: all chunks in order)")
    p.add_argument("--workers", type=int, help="tokenizer processes (default: CPU count, at most 8)")
    p.add_argument("--local", action="append", default=[], metavar="NAME=PATH", help="read source NAME from a local path")
    p.add_argument("--total-tokens", type=int, help="override the recipe's train-token budget")
    p.add_argument("--shard-tokens", type=int, help="override the recipe's tokens per shard")
    p.add_argument("--val-fraction", type=float, help="override the share of documents held out")
    p.add_argument("--val-tokens", type=int, help="override the validation-token cap")
    p.add_argument("--max-shards", type=int, help="stop after this many new shards (run again to continue)")
    p.add_argument("--no-filter", action="store_true", help="keep every non-empty document")
    p.add_argument("--encoder", default="fast", choices=("fast", "tokenizers"),
                   help="fast: tiktoken when verified identical (default); tokenizers: the reference")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if bool(args.recipe) == bool(args.text):
        raise HessGPTError("give a RECIPE or --text FILE..., not both (nor neither)")
    if args.text:
        langs = [x.strip() for x in args.languages.split(",")] if args.languages else None
        recipe = text_recipe(args.text, kind=args.kind, languages=langs)
    else:
        local = {}
        for item in args.local:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise HessGPTError(f"--local expects NAME=PATH, got {item!r}")
            local[name] = path
        recipe = load_pretrain_recipe(args.recipe, local)
    for key in ("total_tokens", "shard_tokens", "val_fraction", "val_tokens"):
        if getattr(args, key) is not None:
            setattr(recipe, key, getattr(args, key))
    if args.no_filter:
        recipe.filter = False
    check_recipe(recipe, args.recipe or "--text")
    tok = Tokenizer.load(args.tokenizer)
    t0 = time.time()
    m = write_shards(recipe, tok, args.out, chunks=args.chunks, chunk=args.chunk, workers=args.workers,
                     encoder=args.encoder, progress=not args.no_progress and sys.stderr.isatty(), max_shards=args.max_shards)
    _print_summary(m, args.out)
    print(f"{time.time() - t0:.1f} s")
    return 0
