"""`hessgpt eval search`: recall@k of the local search index on a hand-labelled question set.

    hessgpt eval search [--corpus DIR] [--sets search_fr.jsonl,search_en.jsonl] [--out FILE]

Each labelled item is `{"id", "lang", "question", "passage", "split"}`: a question written by hand and the
id of the corpus passage that answers it (its path under the corpus folder, without suffix, e.g.
`fr/canada`). The corpus (by default the one the repo ships, hessgpt/data/search_corpus/docs: 16 country pages
and 8 topic pages per language) is indexed twice, with the `snowball-fr-en` analyzer (folding + stems) and
with `fold` (folding only: the baseline), and the question itself is the query. recall@k = the share of
questions whose passage is among the k first hits, per analyzer, language and split, with the relevance
floor off, then with it (`snowball-fr-en+floor`: what the router uses). The `dev` half is the one to look
at while changing the analyzer or the floor; the `test` half is the number to report.

The floor is also scored on the search conversations' labelled queries (hessgpt.data.routing.search,
generated with the floor off so that the items do not depend on it): an answerable query keeps its
answer when a hit above the floor states the fact; an unanswerable one (a country no page names, a fact
no page states) is "empty" when no hit is left, i.e. the router answers "No results.". Per split (dev:
choose; test: report) and per kind, floor off vs the default floor.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hessgpt.data.routing import search as conversations
from hessgpt.errors import HessGPTError
from hessgpt.tools.search import ANALYZERS, DEFAULT_MIN_COVERAGE, SearchIndex

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


def recall_at_k(index: SearchIndex, items: list[dict], corpus: Path, ks=KS, min_coverage: float = 0.0) -> dict:
    """{lang: {split: {"n", "recall@k"...}}}, plus "all" over the splits, and the misses at the largest k."""
    per: dict = {}
    misses = []
    for it in items:
        ranked = [passage_id(h.path, corpus) for h in index.search(it["question"], k=max(ks), min_coverage=min_coverage)]
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
            if a == "snowball-fr-en":
                out["analyzers"][f"{a}+floor"] = {"passages": len(idx), "min_coverage": DEFAULT_MIN_COVERAGE,
                                                  **recall_at_k(idx, items, corpus, ks, DEFAULT_MIN_COVERAGE)}
            idx.close()
    return out


def floor_on_conversations(n: int = 2000, test_n: int = 400, seed: int = 0,
                           floors=(0.0, DEFAULT_MIN_COVERAGE)) -> dict:
    """The relevance floor on the search conversations' labelled queries, {split: {floor: counts}}: the
    shipped corpus, its real top-3 hits (the router's k)."""
    splits, _ = conversations.generate_splits(n, test_n, 0.1, seed=seed, min_coverage=0.0)
    out: dict = {"n": n, "test_n": test_n, "seed": seed, "k": conversations.K, "splits": {}}
    with tempfile.TemporaryDirectory() as tmp:
        index = conversations.build_index(conversations.CORPUS, Path(tmp) / "search.db", 0.0)
        search = conversations.CorpusSearch(index, conversations.CORPUS / "docs")
        for split in ("dev", "test"):
            queries = [r for r in splits[split] if r["kind"] != "no_search"]
            hits = {r["id"]: search.search(r["messages"][1]["search"], k=conversations.K, min_coverage=0.0) for r in queries}
            per = {}
            for floor in floors:
                c = {"answerable": 0, "answerable_kept": 0, "absent_entity": 0, "absent_entity_empty": 0,
                     "absent_fact": 0, "absent_fact_empty": 0}
                for r in queries:
                    kept = [h for h in hits[r["id"]] if h.above(floor)]
                    if r["kind"] == "answerable":
                        c["answerable"] += 1
                        c["answerable_kept"] += any(conversations.states(h.snippet, r["reference"]["value"]) for h in kept)
                    else:
                        c[r["why"]] += 1
                        c[f"{r['why']}_empty"] += not kept
                per[str(floor)] = c
            out["splits"][split] = per
        index.close()
    return out


def format_floor(res: dict) -> str:
    rows = ["| split | floor | answerable: answer still retrieved | unanswerable, absent country: no results "
            "| unanswerable, absent fact: no results |", "|---|---|---|---|---|"]
    for split, per in res["splits"].items():
        for floor, c in per.items():
            rows.append(f"| {split} | {'off' if float(floor) == 0 else floor} | {c['answerable_kept']}/{c['answerable']} "
                        f"| {c['absent_entity_empty']}/{c['absent_entity']} | {c['absent_fact_empty']}/{c['absent_fact']} |")
    return "\n".join(rows)


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
