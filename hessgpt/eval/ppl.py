"""Perplexity and bits per byte of a checkpoint on held-out text, with a strided sliding window.

Each document is scored on its own as [bos_id] + encode(text), bos_id the tokenizer's own `<s>` id
(`Tokenizer.bos_id`: 1 for a HessGPT tokenizer, another id for an imported vocabulary such as SmolLM2's); a
window of `context_len` tokens slides by `stride`, and each window scores only the tokens the previous windows
did not (so every token after the first window sees at least context_len - stride tokens of context). This is
exactly the procedure of the `transformers` perplexity guide (labels = -100 outside the new tokens), so on the
HF export `transformers` gets the same numbers.

    mean NLL  = total NLL (nats) / scored tokens
    PPL       = exp(mean NLL)
    bits/byte = total NLL / (ln 2 * total UTF-8 bytes of the texts)   # comparable across tokenizers
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from hessgpt.data.loader import shard_documents
from hessgpt.datafiles import iter_texts
from hessgpt.errors import HessGPTError

@dataclass
class PplResult:
    mean_nll: float      # nats per scored token
    ppl: float
    bpb: float           # bits per UTF-8 byte
    tokens: int          # scored tokens
    bytes: int           # UTF-8 bytes of the scored texts
    docs: int
    context_len: int
    stride: int

    def to_dict(self) -> dict:
        return asdict(self)


def windows(seq_len: int, context_len: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first_target) for each window: tokens [begin, end) are fed, targets [first_target, end) scored.

    >>> windows(10, 4, 2)
    [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
    """
    if not 0 < stride <= context_len:
        raise HessGPTError(f"stride must be in [1, context_len={context_len}], got {stride}")
    out, prev_end = [], 0
    for begin in range(0, seq_len, stride):
        end = min(begin + context_len, seq_len)
        # position `begin` has no context inside its window, so it is never a target (as in transformers)
        out.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == seq_len:
            break
    return [w for w in out if w[2] < w[1]]


def _logits(model, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out.logits if hasattr(out, "logits") else out  # HF models return an output object


@torch.no_grad()
def sequence_nll(model: Callable, ids: list[int], context_len: int, stride: int, batch_size: int = 8,
                 device: str | torch.device = "cpu") -> tuple[float, int]:
    """(sum of NLL in nats, number of scored tokens) of ids[1:] under `model(ids[B, T]) -> logits[B, T, V]`."""
    ids_t = torch.tensor(ids, dtype=torch.long)
    total, count = 0.0, 0
    wins = windows(len(ids), context_len, stride)
    # windows of the same length run as one batch (all but the last are context_len long)
    by_len: dict[int, list[tuple[int, int, int]]] = {}
    for w in wins:
        by_len.setdefault(w[1] - w[0], []).append(w)
    for T, group in by_len.items():
        for i in range(0, len(group), batch_size):
            chunk = group[i:i + batch_size]
            x = torch.stack([ids_t[b:e] for b, e, _ in chunk]).to(device)              # [B, T]
            logp = torch.log_softmax(_logits(model, x)[:, :-1].float(), dim=-1)        # [B, T-1, V]
            tok_nll = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)                     # [B, T-1]: predicts x[:, 1:]
            for row, (b, e, first) in enumerate(chunk):
                scored = tok_nll[row, first - b - 1:]                                   # targets [first, e)
                total += float(scored.double().sum())
                count += scored.numel()
    return total, count


def model_context_len(model) -> int:
    cfg = getattr(model, "config", None)
    for key in ("context_length", "max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1024


def perplexity(model, encode: Callable[[str], list[int]], texts: Iterable[str], context_len: int | None = None,
               stride: int | None = None, batch_size: int = 8, device: str | torch.device | None = None, *,
               bos_id: int | None, progress: bool = True) -> PplResult:
    """Strided perplexity and bits per byte of `model` over `texts` (each text one document, starting with
    `bos_id`: the tokenizer's `bos_id`, as its training shards start documents; None = no start token)."""
    from tqdm import tqdm

    context_len = context_len or model_context_len(model)
    stride = stride or max(1, context_len // 2)
    if device is None:
        device = next(model.parameters()).device if isinstance(model, torch.nn.Module) else "cpu"
    total, tokens, nbytes, docs = 0.0, 0, 0, 0
    bar = tqdm(texts, desc="ppl", unit="doc", disable=not progress)
    for text in bar:
        ids = ([bos_id] if bos_id is not None else []) + list(encode(text))
        if len(ids) < 2:
            continue
        nll, n = sequence_nll(model, ids, context_len, stride, batch_size, device)
        total, tokens = total + nll, tokens + n
        nbytes += len(text.encode("utf-8"))
        docs += 1
        if progress and tokens:
            bar.set_postfix(ppl=f"{math.exp(total / tokens):.2f}")
    if tokens == 0:
        raise HessGPTError("no text to evaluate: every document was empty")
    mean = total / tokens
    return PplResult(mean_nll=mean, ppl=math.exp(mean), bpb=total / (math.log(2) * nbytes), tokens=tokens,
                     bytes=nbytes, docs=docs, context_len=context_len, stride=stride)


def combine(results: list[PplResult]) -> PplResult:
    """The result over the union of the documents of several results (same window settings)."""
    total = sum(r.mean_nll * r.tokens for r in results)
    tokens, nbytes = sum(r.tokens for r in results), sum(r.bytes for r in results)
    return PplResult(mean_nll=total / tokens, ppl=math.exp(total / tokens), bpb=total / (math.log(2) * nbytes),
                     tokens=tokens, bytes=nbytes, docs=sum(r.docs for r in results),
                     context_len=results[0].context_len, stride=results[0].stride)


# ---------------------------------------------------------------------------- data


def iter_eval_texts(paths: list[str], decode: Callable[[list[int]], str] | None = None,
                    limit: int | None = None) -> list[str]:
    """Documents from text files (.txt, .jsonl, .json, .parquet, .gz: see hessgpt.datafiles.iter_texts), token
    shards (.bin files of `hessgpt data shards`, read by hessgpt.data.loader.shard_documents: split at <s>
    and decoded) or directories of those."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        elif p.exists():
            files.append(p)
        else:
            raise HessGPTError(f"no such eval data {p}")
    texts: list[str] = []
    for f in files:
        if f.suffix == ".bin":
            if decode is None:
                raise HessGPTError(f"{f}: token shards need a tokenizer to decode them")
            texts += [decode(d) for d in shard_documents(str(f)) if d]
        elif f.suffix == ".npy":
            raise HessGPTError(f"{f}: .npy token arrays are not read; give the .bin shards of `hessgpt data shards` "
                               "(their manifest.json names the dtype and the <s>/</s> ids)")
        elif f.suffix in (".txt", ".jsonl", ".json", ".parquet", ".gz"):
            texts += [t for t in iter_texts(str(f)) if t.strip()]
        if limit and len(texts) >= limit:
            return texts[:limit]
    if not texts:
        raise HessGPTError(f"no documents found in {', '.join(paths)}")
    return texts
