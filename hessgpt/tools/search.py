"""`<search>query</search>`: search a local index of the user's own documents (SQLite FTS5, BM25 ranking).

    index = SearchIndex.build(["notes/", "cours.pdf.txt"], "docs.db")   # walks folders, chunks files
    index.search("équation du second degré", k=5) -> [Hit(path, title, snippet, score), ...]
    format_hits(hits)                                                   # the text of the tool message

Files are cut into passages of about `chunk_chars` characters at paragraph boundaries, so a hit points at
the relevant part of a long file and the snippet the model reads is short. The tokenizer is FTS5's
`unicode61 remove_diacritics 2`: case- and accent-insensitive ("equation" finds "Équation"), which suits
French and English alike. Query text is split into words and each word is quoted, so FTS5 operators a
user (or the model) types are never interpreted; all words must match, and if nothing does, any word may.

A web search engine plugs in through the SearchBackend protocol (anything with `.search(query, k)`);
`SearxngBackend` is one, built on the SSRF-safe `http_request` fetcher.
"""

import json
import os
import re
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol

from hessgpt.errors import HessGPTError

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".html", ".htm", ".py", ".json", ".jsonl", ".csv", ".tex", ".org"}
_WORD = re.compile(r"\w+", re.UNICODE)
_TAG = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)


@dataclass
class Hit:
    path: str
    title: str
    snippet: str
    score: float   # higher is better (the negated FTS5 bm25 value)


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


def _fts_query(query: str, op: str) -> str:
    words = [w for w in _WORD.findall(query)]
    return f" {op} ".join(f'"{w}"' for w in words)


class SearchIndex:
    """A built index (an SQLite file). Open one with SearchIndex(path); make one with SearchIndex.build."""

    def __init__(self, db_path: str | os.PathLike):
        self.db_path = str(db_path)
        if not os.path.exists(self.db_path):
            raise HessGPTError(f"search index not found: {self.db_path} (build it with SearchIndex.build)")
        self._conn = sqlite3.connect(self.db_path, check_same_thread=False)

    @classmethod
    def build(cls, paths: Iterable[str | os.PathLike], out_db: str | os.PathLike, chunk_chars: int = 1200,
              progress: bool = False) -> "SearchIndex":
        """Index every text file under `paths` into `out_db` (replaced atomically)."""
        files = iter_files(paths)
        out_db = Path(out_db)
        out_db.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=out_db.name + ".", suffix=".tmp", dir=out_db.parent)
        os.close(fd)
        os.unlink(tmp)
        try:
            conn = sqlite3.connect(tmp)
            try:
                conn.execute("CREATE VIRTUAL TABLE passages USING fts5("
                             "path UNINDEXED, title, body, tokenize = 'unicode61 remove_diacritics 2')")
            except sqlite3.OperationalError as e:
                raise HessGPTError(f"this Python's SQLite has no FTS5 ({e}); install a Python built with FTS5") from None
            it = files
            if progress:
                from tqdm import tqdm

                it = tqdm(files, desc="indexing", unit="file")
            for f in it:
                text = _read_text(f)
                title = _title(f, text)
                conn.executemany("INSERT INTO passages (path, title, body) VALUES (?, ?, ?)",
                                 [(str(f), title, c) for c in chunk_text(text, chunk_chars)])
            conn.commit()
            conn.close()
            os.replace(tmp, out_db)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return cls(out_db)

    def __len__(self) -> int:
        return self._conn.execute("SELECT count(*) FROM passages").fetchone()[0]

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The k best passages for `query`. Title matches weigh twice as much as body matches."""
        for op in ("AND", "OR"):
            q = _fts_query(query, op)
            if not q:
                return []
            rows = self._conn.execute(
                "SELECT path, title, snippet(passages, 2, '', '', ' … ', 32), bm25(passages, 0.0, 2.0, 1.0) "
                "FROM passages WHERE passages MATCH ? ORDER BY bm25(passages, 0.0, 2.0, 1.0) LIMIT ?",
                (q, int(k)),
            ).fetchall()
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
    from hessgpt.tools.registry import Tool

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
    q = sub.add_parser("query", help="search an index")
    q.add_argument("db")
    q.add_argument("query")
    q.add_argument("-k", type=int, default=5)
    args = ap.parse_args(argv)
    if args.cmd == "build":
        idx = SearchIndex.build(args.paths, args.out, args.chunk_chars, progress=True)
        print(f"indexed {len(idx)} passages from {len(iter_files(args.paths))} files -> {args.out}")
    else:
        print(format_hits(SearchIndex(args.db).search(args.query, args.k)))
    return 0
