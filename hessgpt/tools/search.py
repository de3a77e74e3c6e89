"""`<search>query</search>`: search a local index of the user's own documents (SQLite FTS5, BM25 ranking).

    index = SearchIndex.build(["notes/", "cours.pdf.txt"], "docs.db")   # walks folders, chunks files
    index.search("équation du second degré", k=5) -> [Hit(path, title, snippet, score), ...]
    format_hits(hits)                                                   # the text of the tool message

Files are cut into passages of about `chunk_chars` characters at paragraph boundaries, so a hit points at
the relevant part of a long file and the snippet the model reads is short.

Analysis (index format 2, `analyzer="snowball-fr-en"`, the default): every word is lower-cased, its accents
folded (NFKD, combining marks dropped) and reduced by the French *and* the English Snowball stemmers
(`snowballstemmer`, BSD), on the word as written and on its folded form; the passage is indexed under
all of these variants and a query word matches a passage word when they share one. So "capitales" finds
"capitale", "élections" finds "election", "Norvege" finds "Norvège", in either language, with no language
detection. `analyzer="fold"` keeps only the folding (the baseline of `hessgpt eval search`). The index
records its format and analyzer in a `hessgpt_meta` table; a format-1 index (built before, no table) is
still read with its old FTS5 `unicode61 remove_diacritics 2` matching, an unknown format is refused.

Query text is split into words and each word is quoted, so FTS5 operators a user (or the model) types
are never interpreted; all words must match, and if nothing does, any word may.

Relevance floor (`min_coverage`, format 2): when not every query word matches (the OR fallback), a hit is
kept only if its title shares a query word (the passage is about the query's subject) or it holds query
words carrying at least `min_coverage` of the query's weight, each word weighing its BM25 idf over the index
(a word no passage has weighs most; fr/en function words, STOPWORDS, weigh nothing). So "capitale Uruguay"
over pages that never name Uruguay answers "No results." instead of the nearest country's page, and the
model is not handed a passage to invent from. `Hit.coverage` / `Hit.title_match` say why a hit was kept.
DEFAULT_MIN_COVERAGE was chosen on dev sets only (docs/tools.md, "Relevance floor"); 0 turns the floor off.

A web search engine plugs in through the SearchBackend protocol (anything with `.search(query, k)`);
`SearxngBackend` is one, built on the SSRF-safe `http_request` fetcher.
"""

import functools
import json
import math
import os
import re
import sqlite3
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol

import snowballstemmer

from hessgpt.errors import HessGPTError
from hessgpt.tools.registry import Tool

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".html", ".htm", ".py", ".json", ".jsonl", ".csv", ".tex", ".org"}
_WORD = re.compile(r"\w+", re.UNICODE)
_TAG = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)
INDEX_FORMAT = 2
ANALYZERS = ("snowball-fr-en", "fold")
SNIPPET_WORDS = 32
_STEMMERS = (snowballstemmer.stemmer("french"), snowballstemmer.stemmer("english"))   # PyStemmer (C) when installed
STEMMER = "PyStemmer" if snowballstemmer.cext_available else "snowballstemmer"   # recorded in the index, for audits
DEFAULT_MIN_COVERAGE = 0.5   # chosen on the search conversations' dev split (docs/tools.md, "Relevance floor")
# fr/en function words: no weight in the relevance floor (folded forms; elisions split off by the word regex)
STOPWORDS = frozenset("""
a au aux avec c ce ces cet cette d dans de des du elle elles en est et etre il ils j je l la le les leur leurs
lui m ma me mes moi mon n ne nous on ou par pas pour qu que quel quelle quelles quels qui quoi s sa se ses son
sont sur t ta te tes toi ton tu un une vos votre vous y ca comment combien quand dit dis dire peux peut
sais connais donne svp stp voudrais veux aussi tres plus es etait ete
an and are as at be been by can could did do does for from had has have how i in into is it its me my of on or
our please should tell than that the their them there these this those to was were what whats when where which
who whom whose why will with would you your about know give
""".split())


@dataclass
class Hit:
    path: str
    title: str
    snippet: str
    score: float   # higher is better (the negated FTS5 bm25 value)
    coverage: float | None = None   # the query weight this hit matches, 0..1 (format-2 indexes; see min_coverage)
    title_match: bool | None = None  # its title shares a query word (format-2 indexes)

    def above(self, floor: float) -> bool:
        """Kept by a relevance floor of `floor` (module docstring); hits of a format-1 index always are."""
        return self.coverage is None or bool(self.title_match) or self.coverage >= floor


class SearchBackend(Protocol):
    def search(self, query: str, k: int = 5) -> list[Hit]: ...


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")   # old French files are often Latin-1
    if path.suffix.lower() in (".html", ".htm"):
        text = re.sub(r"[ \t]+", " ", _TAG.sub(" ", text))
    return text


def _title(path: Path, text: str) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:120]
    return path.stem


def chunk_text(text: str, chunk_chars: int = 1200) -> list[str]:
    """Paragraph-aligned passages of at most ~chunk_chars characters (a longer paragraph is split on lines)."""
    pieces: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        while len(para) > chunk_chars:
            cut = para.rfind("\n", 0, chunk_chars)
            if cut < chunk_chars // 3:
                cut = para.rfind(" ", 0, chunk_chars)
            if cut < chunk_chars // 3:
                cut = chunk_chars
            pieces.append(para[:cut].strip())
            para = para[cut:].strip()
        if para:
            pieces.append(para)
    chunks, cur = [], ""
    for p in pieces:
        if cur and len(cur) + len(p) + 2 > chunk_chars:
            chunks.append(cur)
            cur = p
        else:
            cur = f"{cur}\n\n{p}" if cur else p
    if cur:
        chunks.append(cur)
    return chunks


def iter_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES
                            and not any(part.startswith(".") for part in f.relative_to(p).parts))
        elif p.is_file():
            files.append(p)
        else:
            raise HessGPTError(f"search index: no such file or folder: {p}")
    return files


def fold(word: str) -> str:
    """Lower case without accents: "Élections" -> "elections", "Œuvre" -> "oeuvre"."""
    w = unicodedata.normalize("NFKD", word.lower().replace("œ", "oe").replace("æ", "ae"))
    return "".join(c for c in w if not unicodedata.combining(c))


@functools.lru_cache(maxsize=200_000)
def variants(word: str, analyzer: str = "snowball-fr-en") -> tuple[str, ...]:
    """The index terms of one word: its folded form ("fold"), or its folded fr/en Snowball stems."""
    folded = fold(word)
    if analyzer == "fold":
        return (folded,)
    low = word.lower()
    forms = (low,) if low == folded else (low, folded)   # most words have no accent: stem them once
    out = {fold(st.stemWord(w)) for st in _STEMMERS for w in forms}
    return tuple(sorted(out))


def analyze(text: str, analyzer: str = "snowball-fr-en") -> str:
    """The text of the indexed `terms` column: every variant of every word, space-separated."""
    return " ".join(v for w in _WORD.findall(text) for v in variants(w, analyzer))


def _fts_query(query: str, op: str, analyzer: str | None = None) -> str:
    """FTS5 MATCH text: each word quoted (operators are inert); with an analyzer, a word is the OR of its variants."""
    words = _WORD.findall(query)
    if analyzer is None:   # a format-1 index: FTS5's own folding
        return f" {op} ".join(f'"{w}"' for w in words)
    groups = []
    for w in words:
        vs = [f'"{v}"' for v in variants(w, analyzer) if v]
        groups.append(vs[0] if len(vs) == 1 else "(" + " OR ".join(vs) + ")")
    return f" {op} ".join(groups)


def best_snippet(body: str, query: str, analyzer: str, n_words: int = SNIPPET_WORDS) -> str:
    """The window of `n_words` words of `body` holding the most distinct query words (ties: most hits,
    then earliest), with " … " where the passage is cut."""
    q = [set(variants(w, analyzer)) for w in _WORD.findall(query)]
    spans = [(m.start(), m.end(), set(variants(m.group(), analyzer))) for m in _WORD.finditer(body)]
    if not spans:
        return body.strip()
    hit = [frozenset(i for i, qv in enumerate(q) if qv & vs) for _, _, vs in spans]
    best, best_key = 0, None
    for start in range(max(1, len(spans) - n_words + 1)):
        win = hit[start:start + n_words]
        key = (len(frozenset().union(*win)), sum(1 for h in win if h))
        if best_key is None or key > best_key:
            best, best_key = start, key
    end = min(len(spans), best + n_words)
    text = body[spans[best][0] if best > 0 else 0:spans[end - 1][1] if end < len(spans) else len(body)].strip()
    return ("… " if best > 0 else "") + text + (" …" if end < len(spans) else "")


class SearchIndex:
    """A built index (an SQLite file). Open one with SearchIndex(path); make one with SearchIndex.build."""

    def __init__(self, db_path: str | os.PathLike, min_coverage: float = DEFAULT_MIN_COVERAGE):
        if not 0.0 <= float(min_coverage) <= 1.0:
            raise HessGPTError(f"search index: min_coverage {min_coverage!r} must be between 0 and 1")
        self.min_coverage = float(min_coverage)
        self._idf_cache: dict[str, float] = {}
        self.db_path = str(db_path)
        if not os.path.exists(self.db_path):
            raise HessGPTError(f"search index not found: {self.db_path} (build it with SearchIndex.build)")
        self._conn = sqlite3.connect(self.db_path, check_same_thread=False)
        try:
            meta = dict(self._conn.execute("SELECT key, value FROM hessgpt_meta").fetchall())
        except sqlite3.OperationalError:   # no meta table: format 1 (FTS5 folding only)
            meta = {"format": "1"}
        except sqlite3.DatabaseError as e:
            raise HessGPTError(f"search index {self.db_path} is not an SQLite file ({e})") from None
        self.format = int(meta.get("format", 0)) if str(meta.get("format", "")).isdigit() else meta.get("format")
        self.analyzer = meta.get("analyzer") if self.format == INDEX_FORMAT else None
        if self.format not in (1, INDEX_FORMAT) or (self.format == INDEX_FORMAT and self.analyzer not in ANALYZERS):
            raise HessGPTError(f"search index {self.db_path}: format {meta.get('format')!r} analyzer "
                               f"{meta.get('analyzer')!r} is not one this HessGPT reads (format 1 or {INDEX_FORMAT} "
                               f"with {', '.join(ANALYZERS)}); rebuild it with `hessgpt search build`")

    @classmethod
    def build(cls, paths: Iterable[str | os.PathLike], out_db: str | os.PathLike, chunk_chars: int = 1200,
              progress: bool = False, analyzer: str = "snowball-fr-en",
              min_coverage: float = DEFAULT_MIN_COVERAGE) -> "SearchIndex":
        """Index every text file under `paths` into `out_db` (replaced atomically); opened with `min_coverage`."""
        if analyzer not in ANALYZERS:
            raise HessGPTError(f"search index: unknown analyzer {analyzer!r} (choose one of {', '.join(ANALYZERS)})")
        files = iter_files(paths)
        out_db = Path(out_db)
        out_db.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=out_db.name + ".", suffix=".tmp", dir=out_db.parent)
        os.close(fd)
        os.unlink(tmp)
        try:
            conn = sqlite3.connect(tmp)
            try:
                # path/title/body are what a hit shows; title_terms/body_terms (analyze()) are what is matched
                conn.execute("CREATE VIRTUAL TABLE passages USING fts5(path UNINDEXED, title UNINDEXED, "
                             "body UNINDEXED, title_terms, body_terms, tokenize = 'unicode61 remove_diacritics 2')")
            except sqlite3.OperationalError as e:
                raise HessGPTError(f"this Python's SQLite has no FTS5 ({e}); install a Python built with FTS5") from None
            conn.execute("CREATE TABLE hessgpt_meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.executemany("INSERT INTO hessgpt_meta VALUES (?, ?)",
                             [("format", str(INDEX_FORMAT)), ("analyzer", analyzer), ("chunk_chars", str(chunk_chars)),
                              ("stemmer", STEMMER)])
            it = files
            if progress:
                from tqdm import tqdm

                it = tqdm(files, desc="indexing", unit="file")
            for f in it:
                text = _read_text(f)
                title = _title(f, text)
                tt = analyze(title, analyzer)
                conn.executemany("INSERT INTO passages (path, title, body, title_terms, body_terms) VALUES (?, ?, ?, ?, ?)",
                                 [(str(f), title, c, tt, analyze(c, analyzer)) for c in chunk_text(text, chunk_chars)])
            conn.commit()
            conn.close()
            os.replace(tmp, out_db)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return cls(out_db, min_coverage=min_coverage)

    def __len__(self) -> int:
        return self._conn.execute("SELECT count(*) FROM passages").fetchone()[0]

    @functools.cached_property
    def _n_passages(self) -> int:
        return len(self)

    def _idf(self, word: str) -> float:
        """BM25 idf of one query word over the index: log(1 + (N - df + 0.5) / (df + 0.5))."""
        if word not in self._idf_cache:   # the file is never changed in place (build replaces it)
            n = self._n_passages
            q = _fts_query(word, "AND", self.analyzer)
            df = self._conn.execute("SELECT count(*) FROM passages WHERE passages MATCH ?", (q,)).fetchone()[0] if q else 0
            self._idf_cache[word] = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
        return self._idf_cache[word]

    def query_weights(self, query: str) -> dict[str, tuple[float, set[str]]]:
        """{query word: (its idf over the index, its index terms)}: the content words (stopwords weigh
        nothing; a query of stopwords only keeps every word)."""
        words = list(dict.fromkeys(fold(w) for w in _WORD.findall(query)))
        content = [w for w in words if w not in STOPWORDS] or words
        return {w: (self._idf(w), set(variants(w, self.analyzer))) for w in content}

    @staticmethod
    def relevance(weights: dict[str, tuple[float, set[str]]], title_terms: set[str], body_terms: set[str]) -> tuple[float, bool]:
        """(coverage, title_match) of one passage for a query's `query_weights`: the share of the query's idf
        weight whose words (any variant) the passage holds, and whether its title holds one of them."""
        total = sum(x for x, _ in weights.values())
        held = sum(x for x, vs in weights.values() if vs & (title_terms | body_terms))
        title = any(vs & title_terms for _, vs in weights.values())
        return (held / total if total > 0 else 1.0), title

    def search(self, query: str, k: int = 5, min_coverage: float | None = None) -> list[Hit]:
        """The k best passages for `query`, title matches weighing twice as much as body matches; of
        those, the ones above the relevance floor `min_coverage` (default: the index's; Hit.above)."""
        floor = self.min_coverage if min_coverage is None else float(min_coverage)
        for op in ("AND", "OR"):
            q = _fts_query(query, op, self.analyzer)
            if not q:
                return []
            if self.format == 1:
                rows = self._conn.execute(
                    "SELECT path, title, snippet(passages, 2, '', '', ' … ', 32), bm25(passages, 0.0, 2.0, 1.0) "
                    "FROM passages WHERE passages MATCH ? ORDER BY bm25(passages, 0.0, 2.0, 1.0) LIMIT ?",
                    (q, int(k)),
                ).fetchall()
            else:
                hits = []
                weights = self.query_weights(query)   # once per query, not per hit
                for p, t, body, tt, bt, b in self._conn.execute(
                        "SELECT path, title, body, title_terms, body_terms, bm25(passages, 0.0, 0.0, 0.0, 2.0, 1.0) "
                        "FROM passages WHERE passages MATCH ? ORDER BY bm25(passages, 0.0, 0.0, 0.0, 2.0, 1.0) LIMIT ?",
                        (q, int(k))):
                    cov, title = self.relevance(weights, set(tt.split()), set(bt.split()))
                    hits.append(Hit(path=p, title=t, snippet=best_snippet(body, query, self.analyzer).strip(),
                                    score=-float(b), coverage=round(cov, 4), title_match=title))
                if hits:
                    return [h for h in hits if h.above(floor)]
                continue
            if rows:
                return [Hit(path=p, title=t, snippet=s.strip(), score=-float(b)) for p, t, s, b in rows]
        return []

    def close(self) -> None:
        self._conn.close()


def format_hits(hits: list[Hit]) -> str:
    """The text injected after `<|result|>` for a search: numbered hits, title, source, snippet."""
    if not hits:
        return "No results."
    return "\n".join(f"[{i}] {h.title} ({h.path})\n{h.snippet}" for i, h in enumerate(hits, 1))


def search_tool(backend: SearchBackend, k: int = 5):
    """The search backend as a registry Tool named `search` (returns format_hits text)."""
    return Tool(
        name="search",
        description="Search the user's documents (or the web, depending on the backend) and return the best passages.",
        parameters={"type": "object", "properties": {"query": {"type": "string", "minLength": 1},
                                                     "k": {"type": "integer", "minimum": 1, "maximum": 20, "default": k}},
                    "required": ["query"], "additionalProperties": False},
        fn=lambda query, k=k: format_hits(backend.search(query, k)),
    )


class SearxngBackend:
    """Web search through a SearXNG instance's JSON API (`/search?q=...&format=json`), via HttpFetcher,
    so the instance's host must be on the fetcher's allowlist."""

    def __init__(self, base_url: str, fetcher):
        self.base_url = base_url.rstrip("/")
        self.fetcher = fetcher

    def search(self, query: str, k: int = 5) -> list[Hit]:
        from urllib.parse import urlencode

        r = self.fetcher.request(f"{self.base_url}/search?{urlencode({'q': query, 'format': 'json'})}")
        if r.status != 200:
            raise HessGPTError(f"web search at {self.base_url} answered HTTP {r.status}")
        results = json.loads(r.body).get("results", [])[:k]
        return [Hit(path=x.get("url", ""), title=x.get("title", ""), snippet=x.get("content", ""),
                    score=float(x.get("score", 0.0))) for x in results]


def main(argv: list[str]) -> int:
    """`hessgpt search build PATH... --out DB` | `hessgpt search query DB "text" [-k 5]`."""
    import argparse

    ap = argparse.ArgumentParser(prog="hessgpt search", description="local document search for <search> queries")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="index text files and folders")
    b.add_argument("paths", nargs="+")
    b.add_argument("--out", required=True, help="the SQLite index file to write")
    b.add_argument("--chunk-chars", type=int, default=1200)
    b.add_argument("--analyzer", choices=ANALYZERS, default="snowball-fr-en",
                   help="snowball-fr-en: accent folding + French/English stems (default); fold: folding only")
    q = sub.add_parser("query", help="search an index")
    q.add_argument("db")
    q.add_argument("query")
    q.add_argument("-k", type=int, default=5)
    q.add_argument("--min-coverage", type=float, default=DEFAULT_MIN_COVERAGE,
                   help=f"relevance floor: the share of the query's weight a hit must match (default {DEFAULT_MIN_COVERAGE}; 0: off)")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        idx = SearchIndex.build(args.paths, args.out, args.chunk_chars, progress=True, analyzer=args.analyzer)
        print(f"indexed {len(idx)} passages from {len(iter_files(args.paths))} files -> {args.out}")
    else:
        print(format_hits(SearchIndex(args.db, min_coverage=args.min_coverage).search(args.query, args.k)))
    return 0
