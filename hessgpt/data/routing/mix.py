"""The routing dataset (hessgpt.data.routing.build) with search conversations mixed in (`hessgpt data routing
--search-share S`, hessgpt.data.routing.cli).

    hessgpt data routing --n 3000 --out data/routing.jsonl --search-share 0.12 [every other routing option]
        -> data/routing.jsonl (train) + .val.jsonl (dev) + .test.jsonl (test) + .stats.json

`--search-share S` (default 0: the routing data alone, byte for byte) adds round(S x n) search
conversations of hessgpt.data.routing.search (answerable / unanswerable / no_search, over the shipped corpus)
to train + dev, split with the same --val-fraction, and round(S x test_n) to the test split. The search
generator splits its own entities and templates the same way (train, dev and test never share a country, a
question, query or answer template), with its own seed per split, so the test split stays frozen and
disjoint. Each split is then shuffled with its own seed.

A routing sample that asks about a country of the search corpus (facts.json: the indexed countries and the
absent ones) is dropped when search is mixed in: the routing generator answers "capital of Canada" directly
while the search data looks it up, and "capital of Peru" directly while the search data says the documents do
not state it. The dropped count is in the stats (`search.dropped_conflicts`), with the search records per kind
and language of each split (`search.kinds`) and the search generator's own counters (`search.generator`).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from hessgpt.data.routing import build
from hessgpt.data.routing import search as routing_search
from hessgpt.data.routing.candidate import LANGS
from hessgpt.data.routing.splits import SPLIT_SEED_OFFSET, SPLITS
from hessgpt.errors import HessGPTError
from hessgpt.tools.search import fold

SEARCH_SEED_OFFSET = 31337   # the search generator's seed = the routing seed + this (its own draws)


def corpus_names(corpus: Path = routing_search.CORPUS) -> tuple[str, ...]:
    """Every country name of the search corpus table (indexed and absent, French and English), folded."""
    facts = routing_search.Facts.load(Path(corpus) / "facts.json")
    return tuple(sorted({fold(e[lang]["name"]) for e in facts.entities + facts.absent for lang in routing_search.LANGS}))


def mentions_corpus_country(record: dict, names: tuple[str, ...]) -> bool:
    """Does a user message of the record name one of `names` (folded, whole words)?"""
    text = " ".join(fold(m.get("content") or "") for m in record.get("messages", []) if m.get("role") == "user")
    return any(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", text) for n in names)


def kind_counts(records: list[dict]) -> dict:
    """{kind: n} over the three search kinds (0 when absent), and {"by_lang": {lang: {kind: n}}}."""
    out = {k: sum(r["kind"] == k for r in records) for k in routing_search.KINDS}
    langs = sorted({r["lang"] for r in records})
    out["by_lang"] = {l: {k: sum(r["kind"] == k and r["lang"] == l for r in records) for k in routing_search.KINDS}
                      for l in langs}
    return out


def mix_search(splits: dict[str, list[dict]], stats: dict, search_share: float, n: int, test_n: int,
               val_fraction: float, langs=LANGS, seed: int = 0,
               corpus: Path = routing_search.CORPUS, test_share: float | None = None,
               kinds: dict[str, float] | None = None) -> tuple[dict[str, list[dict]], dict]:
    """The routing `splits` with round(search_share x n) search records added to train + dev and
    round(test_share x test_n) to test (test_share: search_share when None; same split names, each split shuffled
    with its own seed); routing records that name a corpus country dropped. `stats` gets a "search" block and the
    new split sizes. The search test split depends only on the seed and its size, so a recipe that trains on more
    search data keeps the same frozen test items by keeping test_share."""
    test_share = search_share if test_share is None else test_share
    for flag, v in (("--search-share", search_share), ("--search-test-share", test_share)):
        if not 0 <= v <= 1:
            raise HessGPTError(f"{flag} must be in [0, 1], got {v}")
    if search_share == 0 and test_share == 0:
        return splits, stats
    n_search, test_search = round(search_share * n), round(test_share * test_n)
    if n_search == 0 and test_search == 0:
        return splits, stats
    search, sstats = routing_search.generate_splits(max(n_search, 1), test_search, val_fraction,
                                                    tuple(l for l in langs if l in routing_search.LANGS),
                                                    seed + SEARCH_SEED_OFFSET, Path(corpus), kinds=kinds)
    if n_search == 0:
        search["train"], search["dev"] = [], []
    names = corpus_names(corpus)
    out, dropped = {}, {}
    for split in SPLITS:
        kept = [r for r in splits.get(split, []) if not mentions_corpus_country(r, names)]
        dropped[split] = len(splits.get(split, [])) - len(kept)
        mixed = kept + search[split]
        random.Random(seed + SPLIT_SEED_OFFSET[split] + SEARCH_SEED_OFFSET).shuffle(mixed)
        out[split] = mixed
    stats = dict(stats)
    stats["search"] = {"share": search_share, "test_share": test_share,
                       "kind_weights": routing_search.check_kinds(kinds) if kinds else dict(routing_search.KINDS),
                       "requested": {"train+dev": n_search, "test": test_search},
                       "sizes": {s: len(v) for s, v in search.items()},
                       "kinds": {s: kind_counts(v) for s, v in search.items()},
                       "dropped_conflicts": dropped, "seed": seed + SEARCH_SEED_OFFSET,
                       "generator": sstats["splits"], "partition": sstats["partition"]}
    stats["train"], stats["dev"], stats["val"], stats["test"] = (len(out["train"]), len(out["dev"]), len(out["dev"]),
                                                                 len(out["test"]))
    if "kept" in stats:
        stats["kept"] = {**stats["kept"], "search": sum(len(v) for v in search.values())}
    return out, stats


def generate_splits(n: int, test_n: int = 600, val_fraction: float = 0.05, langs=LANGS, seed: int = 0,
                    negative_fraction: float = 0.25, workers: int = 2, progress: bool = True, sandbox=None,
                    multiturn_share: float | None = None, search_share: float = 0.0,
                    search_test_share: float | None = None,
                    search_kinds: dict[str, float] | None = None) -> tuple[dict, dict]:
    """hessgpt.data.build.generate_splits, then `mix_search` (search_share 0: unchanged)."""
    for flag, v in (("--search-share", search_share), ("--search-test-share", search_test_share)):
        if v is not None and not 0 <= v <= 1:
            raise HessGPTError(f"{flag} must be in [0, 1], got {v}")
    if search_kinds:
        routing_search.check_kinds(search_kinds)   # before the routing data is generated, not after
    extra = {} if multiturn_share is None else {"multiturn_share": multiturn_share}
    splits, stats = build.generate_splits(n, test_n, val_fraction, langs, seed, negative_fraction, workers=workers,
                                            progress=progress, sandbox=sandbox, **extra)
    return mix_search(splits, stats, search_share, n, test_n, val_fraction, langs, seed, test_share=search_test_share,
                      kinds=search_kinds)
