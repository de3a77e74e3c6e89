"""Local document search: FTS5 index built from files the test writes, French accents, ranking."""

import json

import pytest

from hessgpt.errors import HessGPTError
from hessgpt.tools.registry import ToolRegistry
from hessgpt.tools.search import DEFAULT_MIN_COVERAGE, Hit, SearchIndex, chunk_text, format_hits, search_tool
from hessgpt.tools.search import main as search_main


@pytest.fixture()
def corpus(tmp_path):
    d = tmp_path / "docs"
    (d / "maths").mkdir(parents=True)
    (d / "maths" / "equations.md").write_text(
        "# Équations du second degré\n\nPour résoudre ax² + bx + c = 0, on calcule le discriminant Δ = b² − 4ac.\n\n"
        "Si le discriminant est négatif, il n'y a pas de solution réelle.\n", encoding="utf-8")
    (d / "cuisine.txt").write_text("Recette de la crème brûlée\n\nFaire chauffer la crème avec la vanille.\n", encoding="utf-8")
    (d / "python.md").write_text("# Sorting in Python\n\nUse sorted(list) or list.sort(); the key argument customises the order.\n")
    (d / "old.txt").write_bytes("Fiche élève: très bon trimestre à Noël.\n".encode("latin-1"))
    (d / "page.html").write_text("<html><head><style>p{color:red}</style></head><body><h1>Castle</h1>"
                                 "<p>The Château de Chambord is in the Loire valley.</p></body></html>")
    (d / ".hidden").mkdir()
    (d / ".hidden" / "secret.txt").write_text("discriminant secret")
    (d / "image.png").write_bytes(b"\x89PNG discriminant")
    return d


def test_build_and_search_accent_insensitive(corpus, tmp_path):
    idx = SearchIndex.build([corpus], tmp_path / "idx" / "docs.db")
    paths = {h.path for h in idx.search("discriminant", 10)}
    assert paths == {str(corpus / "maths" / "equations.md")}   # hidden folder and .png are skipped
    # without accents, with accents, upper case: the same passage
    for q in ("equations second degre", "Équations du SECOND degré", "negatif"):
        hits = idx.search(q)
        assert hits and hits[0].path.endswith("equations.md"), q
        assert hits[0].title == "Équations du second degré"
    assert idx.search("creme brulee")[0].path.endswith("cuisine.txt")
    assert idx.search("eleve noel")[0].path.endswith("old.txt")   # Latin-1 file decoded
    h = idx.search("chateau loire")[0]
    assert h.path.endswith("page.html") and "color" not in h.snippet and "Chambord" in h.snippet
    assert idx.search("how to sort a list in python")[0].path.endswith("python.md")   # falls back to OR
    assert idx.search("zzzz qqqq") == []


def test_ranking_and_query_syntax_is_inert(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_text("python python python snake language")
    (d / "b.txt").write_text("a language among others; python once")
    idx = SearchIndex.build([d], tmp_path / "x.db")
    hits = idx.search("python", 5)
    assert [h.path.endswith("a.txt") for h in hits] == [True, False]
    assert hits[0].score > hits[1].score
    # FTS5 operators and quotes in the query are plain words, never syntax errors
    assert idx.search('python" OR NEAR(* -x')[0].path.endswith("a.txt")
    assert idx.search('"unbalanced AND ( snake')[0].path.endswith("a.txt")
    assert idx.search("   ") == []


def test_chunking_long_file_points_at_the_right_part(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    paras = [f"Paragraph {i} talks about filler words only." for i in range(200)]
    paras[150] = "The secret ingredient is saffron."
    (d / "long.txt").write_text("\n\n".join(paras))
    idx = SearchIndex.build([d], tmp_path / "x.db", chunk_chars=500)
    assert len(idx) > 10
    hit = idx.search("saffron")[0]
    assert "saffron" in hit.snippet and len(hit.snippet) < 500
    assert all(len(c) <= 500 for c in chunk_text("\n\n".join(paras), 500))


def test_tool_and_errors(corpus, tmp_path):
    idx = SearchIndex.build([corpus], tmp_path / "docs.db")
    reg = ToolRegistry([search_tool(idx)])
    out = reg.call("search", {"query": "crème"})
    assert out.startswith("[1] Recette de la crème brûlée") and "cuisine.txt" in out
    assert "minLength" not in reg.call("search", {"query": ""}) and "error" in json.loads(reg.call("search", {"query": ""}))
    assert format_hits([]) == "No results."
    assert format_hits([Hit("p", "T", "s", 1.0)]) == "[1] T (p)\ns"
    with pytest.raises(HessGPTError, match="no such file"):
        SearchIndex.build([tmp_path / "missing"], tmp_path / "y.db")
    with pytest.raises(HessGPTError, match="not found"):
        SearchIndex(tmp_path / "nope.db")


def test_web_backend_through_the_safe_fetcher():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    from hessgpt.tools.http import HttpError, HttpFetcher
    from hessgpt.tools.search import SearxngBackend

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            q = parse_qs(urlsplit(self.path).query)
            body = json.dumps({"results": [{"url": "https://fr.wikipedia.org/wiki/Lyon", "title": "Lyon",
                                            "content": f"résultat pour {q['q'][0]}", "score": 2.5}] * 3}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        port = srv.server_address[1]
        fetcher = HttpFetcher(allowed_hosts=["searx.test"], allowed_ports=None,
                              resolver=lambda h, p: ["127.0.0.1"], allow_private_for_tests=["127.0.0.1"])
        hits = SearxngBackend(f"http://searx.test:{port}", fetcher).search("ville de Lyon", k=2)
        assert [(h.title, h.snippet, h.score) for h in hits] == [("Lyon", "résultat pour ville de Lyon", 2.5)] * 2
        # the default fetcher refuses the same loopback instance
        with pytest.raises(HttpError, match="loopback"):
            SearxngBackend(f"http://127.0.0.1:{port}", HttpFetcher(allowed_hosts=["127.0.0.1"], allowed_ports=None)).search("x")
    finally:
        srv.shutdown()
        srv.server_close()


def test_stemming_and_folding_match_inflections_in_both_languages(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "capitales.md").write_text("# Capitales\n\nOttawa est la capitale du Canada.\n", encoding="utf-8")
    (d / "vote.md").write_text("# Vote\n\nLes élections municipales ont lieu tous les six ans.\n", encoding="utf-8")
    (d / "bees.md").write_text("# Bees\n\nHoneybees pollinate flowering plants and make honey.\n")
    (d / "other.md").write_text("# Other\n\nNothing to see here about running.\n")
    stem = SearchIndex.build([d], tmp_path / "s.db")
    base = SearchIndex.build([d], tmp_path / "f.db", analyzer="fold")
    assert (stem.format, stem.analyzer, base.analyzer) == (2, "snowball-fr-en", "fold")
    for q, want in (("capitales", "capitales.md"), ("election", "vote.md"), ("Élection municipale", "vote.md"),
                    ("capital", "capitales.md"), ("honeybee", "bees.md"), ("run", "other.md")):
        hits = stem.search(q)
        assert hits and hits[0].path.endswith(want), (q, hits)
    assert base.search("elections municipales")[0].path.endswith("vote.md")   # folding alone still matches
    assert base.search("election") == [] and base.search("honeybee") == []   # ... but not other inflections
    assert "élections" in stem.search("election")[0].snippet                   # the snippet shows the real text


def test_snippet_window_and_index_formats(tmp_path):
    import sqlite3

    from hessgpt.tools.search import best_snippet

    body = " ".join(f"w{i}" for i in range(100)) + " saffron rice " + " ".join(f"x{i}" for i in range(100))
    s = best_snippet(body, "saffron", "snowball-fr-en", n_words=10)
    assert "saffron" in s and s.startswith("… ") and s.endswith(" …") and len(s.split()) <= 12
    assert best_snippet("short text", "nothing", "fold") == "short text"
    # a format-1 index (built before format 2: no meta table) is still read with FTS5's own folding
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute("CREATE VIRTUAL TABLE passages USING fts5(path UNINDEXED, title, body, "
                 "tokenize = 'unicode61 remove_diacritics 2')")
    conn.execute("INSERT INTO passages VALUES ('a.md', 'Équations', 'le discriminant négatif')")
    conn.commit()
    conn.close()
    idx = SearchIndex(old)
    assert idx.format == 1 and idx.search("negatif")[0].path == "a.md"
    # an unknown format or analyzer is refused with a message naming it
    conn = sqlite3.connect(old)
    conn.execute("CREATE TABLE hessgpt_meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO hessgpt_meta VALUES ('format', '9')")
    conn.commit()
    conn.close()
    with pytest.raises(HessGPTError, match="format '9'"):
        SearchIndex(old)
    with pytest.raises(HessGPTError, match="unknown analyzer 'porter'"):
        SearchIndex.build([tmp_path], tmp_path / "z.db", analyzer="porter")


def _countries(tmp_path):
    d = tmp_path / "pays"
    d.mkdir()
    pages = {"france": ("France", "La capitale de la France est Paris. La monnaie de la France est l'euro. "
                                  "La France est en Europe."),
             "japon": ("Japon", "La capitale du Japon est Tokyo. La monnaie du Japon est le yen. Le Japon est en Asie."),
             "canada": ("Canada", "La capitale du Canada est Ottawa. La monnaie du Canada est le dollar canadien."),
             "volcans": ("Volcans", "Un volcan rejette de la lave. Le Japon compte de nombreux volcans actifs.")}
    for name, (title, body) in pages.items():
        (d / f"{name}.md").write_text(f"# {title}\n\n{body}\n", encoding="utf-8")
    return d


def test_relevance_floor_answers_no_results_when_only_common_words_match(tmp_path):
    """"capitale Uruguay" over pages that never name Uruguay: the OR fallback finds every capital sentence;
    with the floor, nothing (the router then injects "No results."); the floor off gives the old hits."""
    idx = SearchIndex.build([_countries(tmp_path)], tmp_path / "p.db")
    assert idx.min_coverage == DEFAULT_MIN_COVERAGE > 0
    off = idx.search("capitale Uruguay", 5, min_coverage=0.0)
    assert len(off) == 3 and all(h.title_match is False and h.coverage < DEFAULT_MIN_COVERAGE for h in off)
    assert idx.search("capitale Uruguay", 5) == []
    assert format_hits(idx.search("quelle est la capitale de l'Uruguay ?")) == "No results."   # stopwords weigh nothing
    # the page about the query's subject is kept although the question's other word is on no page
    hits = idx.search("continent Japon", 5)
    assert [h.title for h in hits] == ["Japon", "Volcans"][:len(hits)] and hits[0].title_match is True
    assert {h.title for h in hits} <= {"Japon", "Volcans"}
    # every word matched (the AND query): full coverage, whatever the floor
    h = idx.search("monnaie Canada", 5, min_coverage=1.0)
    assert [x.title for x in h] == ["Canada"] and h[0].coverage == 1.0
    # a hit that holds the rare words of the query but not its title is kept by its coverage
    hits = idx.search("lave actifs Islande", 5)
    assert [x.title for x in hits] == ["Volcans"] and hits[0].title_match is False
    assert DEFAULT_MIN_COVERAGE <= hits[0].coverage < 1.0
    assert [x.title for x in idx.search("lave Islande", 5)] == []   # the same page, half of the weight missing
    with pytest.raises(HessGPTError, match="min_coverage 1.5"):
        SearchIndex(tmp_path / "p.db", min_coverage=1.5)


def test_search_query_cli_floor_flag(tmp_path, capsys):
    d = _countries(tmp_path)
    db = tmp_path / "p.db"
    assert search_main(["build", str(d), "--out", str(db)]) == 0
    capsys.readouterr()
    assert search_main(["query", str(db), "capitale Uruguay"]) == 0
    assert capsys.readouterr().out.strip() == "No results."
    assert search_main(["query", str(db), "capitale Uruguay", "--min-coverage", "0", "-k", "2"]) == 0
    assert capsys.readouterr().out.count("capitale") == 2
