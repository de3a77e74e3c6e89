"""Deterministic, resumable (B, T) batches from the token shards written by `hessgpt data shards`.

    loader = ShardLoader("shards/", batch_size=B, seq_len=T, split="train", rank=r, world_size=w, seed=0)
    x, y = next(loader)            # LongTensor [B, T] inputs and next-token targets (y = x shifted by one)
    state = loader.state_dict()    # {"epoch", "shard", "offset", ...}: JSON-serialisable, the same on every rank
    loader.load_state_dict(state)  # continue exactly from there
    check_shards("shards/", tokenizer)  # HessGPTError naming both hashes on a tokenizer mismatch
    docs = shard_documents("shards/val-c00-00000.bin")  # token ids of its documents (evaluation reads them so)

The split's shards, in an epoch's order, form one token stream. A step reads the next `w * B * T + 1`
tokens at the position (shard, offset): rank r takes tokens [r*B*T, (r+1)*B*T + 1) of them and cuts B rows
of T (inputs) and the same shifted by one (targets). So the ranks' rows are disjoint, and together they
are exactly the rows one rank with batch w*B would get (rank r = rows r*B .. r*B+B-1). The position then
advances by w*B*T tokens, on every rank alike. An epoch ends when fewer than w*B*T + 1 tokens remain.

Epoch 0 reads the shards in manifest order (chunk 0 first, so chunks written later extend the stream
without moving anything already read); epoch e > 0 reads them in a permutation seeded by (seed, e).
"""

from __future__ import annotations

import bisect
import json
import os
import random

import numpy as np
import torch

from hessgpt.errors import HessGPTError
from hessgpt.tokenizer import Tokenizer


def read_manifest(shards_dir: str) -> dict:
    path = os.path.join(shards_dir, "manifest.json")
    if not os.path.exists(path):
        raise HessGPTError(f"{shards_dir}: no manifest.json (write shards with `hessgpt data shards`)")
    try:
        with open(path) as f:
            m = json.load(f)
    except json.JSONDecodeError as e:
        raise HessGPTError(f"{path}: not valid JSON ({e})") from None
    for key in ("tokenizer", "dtype", "shards"):
        if key not in m:
            raise HessGPTError(f"{path}: missing `{key}` (not a HessGPT shard manifest)")
    return m


def check_shards(shards_dir: str, tokenizer) -> dict:
    """Raise HessGPTError unless the shards were made with `tokenizer` (a Tokenizer or its directory).
    Returns the manifest."""
    m = read_manifest(shards_dir)
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = Tokenizer.load(str(tokenizer))
    made = m["tokenizer"]
    if made.get("hash") != tokenizer.hash or made.get("vocab_size") != tokenizer.vocab_size:
        where = f" ({tokenizer.path})" if tokenizer.path else ""
        raise HessGPTError(
            f"{shards_dir} was tokenized with tokenizer {made.get('hash')} (vocab {made.get('vocab_size')}, "
            f"{made.get('path')}), but the tokenizer{where} is {tokenizer.hash} (vocab {tokenizer.vocab_size}): "
            "re-run `hessgpt data shards` with this tokenizer, or train with the one the shards were made with")
    return m


def shard_tokens(path: str) -> tuple[np.ndarray, dict]:
    """The tokens of one shard file, in the dtype of its directory's manifest (the size checked against the
    manifest's entry), and that manifest."""
    shards_dir, name = os.path.split(os.path.abspath(path))
    m = read_manifest(shards_dir)
    entry = next((s for s in m["shards"] if s["file"] == name), None)
    if entry is None:
        raise HessGPTError(f"{path}: not a shard listed in {os.path.join(shards_dir, 'manifest.json')}")
    dtype = np.dtype(m["dtype"])
    size = os.path.getsize(path) if os.path.exists(path) else None
    if size != entry["tokens"] * dtype.itemsize:
        raise HessGPTError(f"{path}: expected {entry['tokens'] * dtype.itemsize} bytes ({entry['tokens']} {dtype.name} "
                           f"tokens), found {size if size is not None else 'no file'}")
    return np.fromfile(path, dtype=dtype), m


def split_documents(tokens: np.ndarray, bos_id: int, eos_id: int) -> list[list[int]]:
    """The text ids of each document of a stretch of the token stream ([bos] + ids + [eos] per document):
    split at bos, bos and eos dropped; a stretch cut inside a document gives that document's piece."""
    docs, cur = [], []
    for t in tokens.astype(np.int64).tolist():
        if t == bos_id and cur:
            docs.append(cur)
            cur = []
        if t not in (bos_id, eos_id):
            cur.append(t)
    if cur:
        docs.append(cur)
    return docs


def shard_documents(path: str) -> list[list[int]]:
    """The documents of one shard file (its dtype and bos/eos ids from its directory's manifest)."""
    tokens, m = shard_tokens(path)
    return split_documents(tokens, m["tokenizer"]["bos_id"], m["tokenizer"]["eos_id"])


class ShardLoader:
    """Iterator of (x, y) LongTensor [B, T] batches over one split of a shard directory."""

    def __init__(self, shards_dir: str, batch_size: int, seq_len: int, split: str = "train", rank: int = 0,
                 world_size: int = 1, seed: int = 0, tokenizer=None, device: str | torch.device | None = None):
        if batch_size < 1 or seq_len < 1:
            raise HessGPTError(f"batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
        if not 0 <= rank < world_size:
            raise HessGPTError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.dir = shards_dir
        self.manifest = check_shards(shards_dir, tokenizer) if tokenizer is not None else read_manifest(shards_dir)
        self.batch_size, self.seq_len, self.split = batch_size, seq_len, split
        self.rank, self.world_size, self.seed, self.device = rank, world_size, seed, device
        self.dtype = np.dtype(self.manifest["dtype"])
        self.shards = [s for s in self.manifest["shards"] if s["split"] == split and s["tokens"] > 0]
        if not self.shards:
            splits = sorted({s["split"] for s in self.manifest["shards"]})
            raise HessGPTError(f"{shards_dir}: no {split!r} shards (splits present: {splits})")
        for s in self.shards:  # a truncated or missing shard fails here, not mid-training
            path = os.path.join(shards_dir, s["file"])
            size = os.path.getsize(path) if os.path.exists(path) else None
            if size != s["tokens"] * self.dtype.itemsize:
                raise HessGPTError(f"{path}: expected {s['tokens'] * self.dtype.itemsize} bytes "
                                   f"({s['tokens']} {self.dtype.name} tokens), found {size if size is not None else 'no file'}")
        self.tokens_per_epoch = sum(s["tokens"] for s in self.shards)
        self.step_tokens = world_size * batch_size * seq_len  # tokens the position advances per step
        if self.tokens_per_epoch < self.step_tokens + 1:
            raise HessGPTError(f"{shards_dir}: the {split!r} split has {self.tokens_per_epoch} tokens, fewer than one "
                               f"step needs (world_size*batch_size*seq_len + 1 = {self.step_tokens + 1})")
        self.steps_per_epoch = (self.tokens_per_epoch - 1) // self.step_tokens
        self._maps: dict[int, np.memmap] = {}
        self.epoch, self.shard, self.offset = 0, 0, 0
        self._set_epoch(0)

    # ---- position ---------------------------------------------------------------------------

    def _set_epoch(self, epoch: int) -> None:
        order = list(range(len(self.shards)))
        if epoch > 0:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        self.epoch, self._order = epoch, order
        self._starts = [0]  # token index of each shard's start in this epoch's stream
        for i in order:
            self._starts.append(self._starts[-1] + self.shards[i]["tokens"])

    def _global(self) -> int:
        return self._starts[self.shard] + self.offset

    def _seek(self, g: int) -> None:
        self.shard = bisect.bisect_right(self._starts, g) - 1
        self.offset = g - self._starts[self.shard]

    def _map(self, i: int) -> np.memmap:
        if i not in self._maps:
            self._maps[i] = np.memmap(os.path.join(self.dir, self.shards[i]["file"]), dtype=self.dtype, mode="r")
        return self._maps[i]

    def _read(self, g: int, n: int) -> np.ndarray:
        """Tokens [g, g + n) of this epoch's stream (crossing shard boundaries as needed)."""
        out = np.empty(n, dtype=np.int64)
        k = bisect.bisect_right(self._starts, g) - 1
        done = 0
        while done < n:
            shard = self._map(self._order[k])
            lo = g + done - self._starts[k]
            take = min(n - done, len(shard) - lo)
            out[done:done + take] = shard[lo:lo + take]
            done += take
            k += 1
        return out

    # ---- iteration --------------------------------------------------------------------------

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = self.batch_size, self.seq_len
        if self.tokens_per_epoch - self._global() < self.step_tokens + 1:
            self._set_epoch(self.epoch + 1)
            self.shard, self.offset = 0, 0
        g = self._global()
        buf = torch.from_numpy(self._read(g + self.rank * B * T, B * T + 1))  # [B*T + 1]
        x = buf[:-1].view(B, T)
        y = buf[1:].view(B, T)  # y[b, t] = x[b, t + 1]; the last target comes from the next row's first token
        self._seek(g + self.step_tokens)
        if self.device is not None:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
        return x, y

    @property
    def position(self) -> int:
        """Tokens of this epoch's stream already consumed (by all ranks together)."""
        return self._global()

    # ---- checkpointing ------------------------------------------------------------------------

    def state_dict(self) -> dict:
        i = self._order[self.shard] if self.shard < len(self._order) else None
        return {"epoch": self.epoch, "shard": self.shard, "offset": self.offset,
                "shard_file": self.shards[i]["file"] if i is not None else None,
                "split": self.split, "seed": self.seed, "tokenizer_hash": self.manifest["tokenizer"]["hash"],
                "tokens_per_epoch": self.tokens_per_epoch, "batch_size": self.batch_size, "seq_len": self.seq_len,
                "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state` (batch size, sequence length and world size may differ: the position is in tokens)."""
        for key, mine in (("split", self.split), ("seed", self.seed), ("tokenizer_hash", self.manifest["tokenizer"]["hash"])):
            if key in state and state[key] != mine:
                raise HessGPTError(f"loader state: {key} is {state[key]!r} but this loader's is {mine!r}")
        self._set_epoch(int(state["epoch"]))
        shard, offset = int(state["shard"]), int(state["offset"])
        name = state.get("shard_file")
        if name is not None:
            files = [self.shards[i]["file"] for i in self._order]
            if shard >= len(files) or files[shard] != name:
                if name not in files:
                    raise HessGPTError(f"loader state: shard {name} is not among the {self.split!r} shards of {self.dir}")
                shard = files.index(name)  # shards were added before it (chunks written out of order)
        if shard > len(self._order) or (shard < len(self._order) and offset > self.shards[self._order[shard]]["tokens"]):
            raise HessGPTError(f"loader state: position (shard {shard}, offset {offset}) is outside {self.dir}")
        self.shard, self.offset = shard, offset
