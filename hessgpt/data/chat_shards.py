"""Mid-training shards: conversations rendered in the chat format (special tokens included) and plain text,
written as pretraining shards, so `hessgpt pretrain` trains on every token of them.

    hessgpt data chat-shards --chat routing/train.jsonl chat/train.jsonl --text en.txt fr.txt \
        --tokenizer tok/ --out shards/mid

This is nanochat's "mid-training": after (or instead of, at toy scale) pretraining on web text, the model
sees whole conversations, so the embeddings of the chat and tool tokens (`<|user|>`, `<|code|>`,
`<|result|>`, ...) and the habits they carry (copy the operands into the code, restate the result) are
learned by every parameter. The SFT that follows (LoRA, loss on assistant tokens only) then only has to
sharpen them. The quickstart's model 1 starts this way (recipes/tiny-cpu.yaml).

Output: the same folder contract as `hessgpt data shards` (docs/shards.md): `train-c00-NNNNN.bin` /
`val-c00-NNNNN.bin` (uint16 or uint32 by vocabulary size) and `manifest.json`, readable by
`hessgpt.data.loader.ShardLoader`. A conversation is `tokenizer.render(conversation)` (which starts with
`<s>`) followed by `</s>`; a text document is `[<s>] + encode(text) + [</s>]`. Documents are shuffled with
`seed`; a `val_fraction` share of them (at least one) goes to the validation split. The output depends only
on the inputs, the tokenizer and the seed; it is written to a temporary folder and moved into place, so an
interrupted run leaves nothing half-written (re-run it).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np

from hessgpt.data.shards import FORMAT, VERSION, _dtype_for
from hessgpt.datafiles import text_blocks
from hessgpt.errors import HessGPTError
from hessgpt.tokenizer import Tokenizer


def _conversation_docs(path: str, tokenizer) -> tuple[list[list[int]], int]:
    """Rendered ids of every conversation of a JSONL file, and the number of records that failed."""
    docs, bad = [], 0
    if not os.path.isfile(path):
        raise HessGPTError(f"--chat: no such file {path!r} (a conversations JSONL, e.g. routing/train.jsonl)")
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                ids, _ = tokenizer.render(json.loads(line))
            except (ValueError, KeyError, TypeError, HessGPTError):
                bad += 1   # counted in the manifest, never fatal (`hessgpt data prepare` names the reasons)
                continue
            docs.append(list(ids) + [tokenizer.eos_id])
    return docs, bad


def _text_docs(path: str, tokenizer) -> list[list[int]]:
    if not os.path.isfile(path):
        raise HessGPTError(f"--text: no such file {path!r}")
    with open(path, "rb") as f:
        blocks = list(text_blocks(io.TextIOWrapper(f, encoding="utf-8", errors="replace")))
    return [[tokenizer.bos_id] + tokenizer.encode(b) + [tokenizer.eos_id] for b in blocks if b and b.strip()]


def write_chat_shards(chat: list[str], text: list[str], tokenizer, out: str, val_fraction: float = 0.02,
                      seed: int = 0) -> dict:
    """Render `chat` JSONL files and encode `text` files into train/val shards at `out`. Returns the manifest."""
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = Tokenizer.load(str(tokenizer))
    if not chat and not text:
        raise HessGPTError("chat-shards: give at least one --chat or --text file")
    if not 0 <= val_fraction < 1:
        raise HessGPTError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    docs: list[tuple[str, list[int]]] = []
    sources: dict[str, dict] = {}
    for path in chat:
        ds, bad = _conversation_docs(path, tokenizer)
        sources[path] = {"kind": "chat", "docs": len(ds), "rejected": {"unreadable": bad} if bad else {}}
        docs += [(path, d) for d in ds]
    for path in text:
        ds = _text_docs(path, tokenizer)
        sources[path] = {"kind": "text", "docs": len(ds), "rejected": {}}
        docs += [(path, d) for d in ds]
    if not docs:
        raise HessGPTError(f"chat-shards: no documents in {', '.join(chat + text)}")
    random.Random(seed).shuffle(docs)
    n_val = max(1, round(len(docs) * val_fraction)) if val_fraction > 0 and len(docs) > 1 else 0
    split = {"val": docs[:n_val], "train": docs[n_val:]}

    dtype = _dtype_for(tokenizer.vocab_size)
    tmp = out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    shards = []
    for name, part in split.items():
        for src, _ in part:
            sources[src][f"{name}_docs"] = sources[src].get(f"{name}_docs", 0) + 1
        if not part:
            continue
        arr = np.fromiter((t for _, d in part for t in d), dtype=np.int64)
        for src, d in part:
            sources[src][f"{name}_tokens"] = sources[src].get(f"{name}_tokens", 0) + len(d)
        fname = f"{name}-c00-00000.bin"
        arr.astype(dtype).tofile(os.path.join(tmp, fname))
        shards.append({"file": fname, "split": name, "chunk": 0, "tokens": int(arr.size)})
    for s in sources.values():
        for k in ("train_docs", "val_docs", "train_tokens", "val_tokens"):
            s.setdefault(k, 0)
    manifest = {
        "format": FORMAT, "version": VERSION, "kind": "chat",
        "tokenizer": {"hash": tokenizer.hash, "vocab_size": tokenizer.vocab_size, "bos_id": tokenizer.bos_id,
                      "eos_id": tokenizer.eos_id, "path": os.path.abspath(tokenizer.path) if tokenizer.path else None},
        "dtype": dtype, "seed": seed, "val_fraction": val_fraction,
        "chunks": {"count": 1, "complete": [0], "partial": []},
        "shards": shards,
        "tokens": {sp: sum(s["tokens"] for s in shards if s["split"] == sp) for sp in ("train", "val")},
        "sources": sources,
    }
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hessgpt data chat-shards", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chat", nargs="*", default=[], help="conversation JSONL files (docs/chat-format.md)")
    p.add_argument("--text", nargs="*", default=[], help="plain text files (one document per blank-line block)")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder")
    p.add_argument("--out", required=True, help="output shards folder (replaced)")
    p.add_argument("--val-fraction", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    m = write_chat_shards(args.chat, args.text, args.tokenizer, args.out, args.val_fraction, args.seed)
    for src, s in m["sources"].items():
        rej = sum(s["rejected"].values())
        print(f"{Path(src).name:<24} {s['kind']:<5} {s['train_docs'] + s['val_docs']:>7,} docs "
              f"{s['train_tokens'] + s['val_tokens']:>11,} tokens" + (f"  ({rej} unreadable)" if rej else ""))
    print(f"train {m['tokens']['train']:,} tokens, val {m['tokens']['val']:,}; {m['dtype']}; wrote {args.out}/manifest.json")
    return 0
