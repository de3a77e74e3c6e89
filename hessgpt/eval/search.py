"""`hessgpt eval search`: recall@k of the local search index on a hand-labelled question set.

    hessgpt eval search [--corpus DIR] [--sets search_fr.jsonl,search_en.jsonl] [--out FILE]

Each labelled item is `{"id", "lang", "question", "passage", "split"}`: a question written by hand and the
id of the corpus passage that answers it (its path under the corpus folder, without suffix, e.g.
`fr/canada`). The corpus (by default the one the repo ships, hessgpt/data/search_corpus/docs: 16 country pages
and 8 topic pages per language) is indexed twice, with the `snowball-fr-en` analyzer (folding + stems) and
with `fold` (folding only: the baseline), and the question itself is the query. recall@k = the share of
questions whose passage is among the k first hits, per analyzer, language and split. The `dev` half is the
one to look at while changing the analyzer; the `test` half is the number to report.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hessgpt.errors import HessGPTError
from hessgpt.tools.search import ANALYZERS, SearchIndex

PROMPTS = Path(__file__).parent / "prompts"
CORPUS = Path(__file__).resolve().parent.parent / "data" / "search_corpus" / "docs"
DEFAULT_SETS = (PROMPTS / "search_fr.jsonl", PROMPTS / "search_en.jsonl")
KS = (1, 5)


def load_labelled(paths) -> list[dict]:
    items = []
    for p in map(Path, paths):
        if not p.exists():
            raise HessGPTError(f"eval search: no such labelled set {p}")
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            r = json.loads(line)
            missing = {"id", "lang", "question", "passage", "split"} - set(r)
            if missing:
                raise HessGPTError(f"eval search: {p}:{n} lacks {sorted(missing)}")
            items.append(r)
    return items


def passage_id(path: str, corpus: Path) -> str:
    """`<corpus>/fr/canada.md` -> `fr/canada` (the id the labelled sets use)."""
    p = Path(path)
    try:
        p = p.resolve().relative_to(corpus.resolve())
    except ValueError:
        pass
    return p.with_suffix("").as_posix()


def recall_at_k(index: SearchIndex, items: list[dict], corpus: Path, ks=KS) -> dict:
    """{lang: {split: {"n", "recall@k"...}}}, plus "all" over the splits, and the misses at the largest k."""
    per: dict = {}
    misses = []
    for it in items:
        ranked = [passage_id(h.path, corpus) for h in index.search(it["question"], k=max(ks))]
        for key in (it["split"], "all"):
            d = per.setdefault(it["lang"], {}).setdefault(key, {"n": 0, **{f"recall@{k}": 0 for k in ks}})
            d["n"] += 1
            for k in ks:
                d[f"recall@{k}"] += it["passage"] in ranked[:k]
        if it["passage"] not in ranked:
            misses.append({"id": it["id"], "question": it["question"], "want": it["passage"], "got": ranked[:3]})
    for lang in per.values():
        for d in lang.values():
            for k in ks:
                d[f"recall@{k}"] = round(d[f"recall@{k}"] / d["n"], 4)
    return {"recall": per, "misses": misses}


def evaluate(corpus: str | Path = CORPUS, sets=DEFAULT_SETS, analyzers=ANALYZERS, ks=KS) -> dict:
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise HessGPTError(f"eval search: no such corpus folder {corpus}")
    items = load_labelled(sets)
    out = {"corpus": str(corpus), "sets": [str(s) for s in sets], "n": len(items), "ks": list(ks), "analyzers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for a in analyzers:
            idx = SearchIndex.build([corpus], Path(tmp) / f"{a}.db", analyzer=a)
            known = {passage_id(p, corpus) for (p,) in idx._conn.execute("SELECT path FROM passages")}
            bad = sorted({it["passage"] for it in items} - known)
            if bad:
                raise HessGPTError(f"eval search: labelled passage(s) {bad[:5]} are not in the corpus {corpus}")
            out["analyzers"][a] = {"passages": len(idx), **recall_at_k(idx, items, corpus, ks)}
            idx.close()
    return out


def format_table(res: dict) -> str:
    ks = res["ks"]
    head = "| analyzer | lang | split | n | " + " | ".join(f"recall@{k}" for k in ks) + " |"
    rows = [head, "|" + "---|" * (4 + len(ks))]
    for a, r in res["analyzers"].items():
        for lang, splits in sorted(r["recall"].items()):
            for split in ("dev", "test", "all"):
                if split in splits:
                    d = splits[split]
                    rows.append(f"| {a} | {lang} | {split} | {d['n']} | " + " | ".join(f"{d[f'recall@{k}']:.3f}" for k in ks) + " |")
    return "\n".join(rows)
