"""Search conversations (hessgpt.data.routing.search): the three kinds, languages, rewritten queries, split
hygiene, hits that hold the answer, and the rendering (injected passages are not trained on)."""

import json
import re
from pathlib import Path

import pytest
from py3langid.langid import MODEL_FILE, LanguageIdentifier

from hessgpt.data.routing import search as R
from hessgpt.data.conversation import from_dict
from hessgpt.data.routing.splits import partition
from hessgpt.errors import HessGPTError
from hessgpt.tools.search import fold


@pytest.fixture(scope="module")
def splits():
    out, stats = R.generate_splits(300, 120, 0.2, seed=0)
    return out, stats


def _all(out):
    return [r for s in ("train", "dev", "test") for r in out[s]]


def test_facts_table_matches_the_shipped_pages():
    facts = R.Facts.load(R.CORPUS / "facts.json")
    pages = {p.relative_to(R.CORPUS / "docs").with_suffix("").as_posix(): fold(p.read_text(encoding="utf-8"))
             for p in (R.CORPUS / "docs").rglob("*.md")}
    assert len(facts.entities) >= 12 and len(facts.absent) >= 8
    for e in facts.entities:
        for lang in R.LANGS:
            page = pages[f"{lang}/{e['id']}"]
            for rel in R.RELATIONS:
                assert R.states(page, e[lang][rel]), (e["id"], lang, rel)
    for page in pages.values():                       # nothing the unanswerable questions ask is in the corpus
        assert not any(w in page for ws in R.ABSENT_WORDS.values() for w in ws)
        for e in facts.absent:
            assert not any(re.search(rf"\b{re.escape(fold(e[l]['name']))}\b", page) for l in R.LANGS), e["id"]


def test_states_matches_whole_words():
    assert R.states("Sa capitale est Lisbonne.", "Lisbonne") and not R.states("Sa capitale est Lisbonne.", "Lisbon")
    assert R.states("La monnaie est l'euro.", "l'euro") and R.states("Brasilia, capitale", "Brasília")
    assert not R.states("Berne", "Bern")


def test_three_kinds_in_both_languages_in_every_split(splits):
    out, stats = splits
    assert {s: len(v) for s, v in out.items()} == {"train": 240, "dev": 60, "test": 120} == stats["sizes"]
    for s, recs in out.items():
        assert {(r["kind"], r["lang"]) for r in recs} == {(k, l) for k in R.KINDS for l in R.LANGS}, s
    for r in _all(out):
        m = r["messages"]
        assert r["category"] == "search" and r["source"] == "routing" and r["id"].startswith("routing:search-")
        assert m[0]["role"] == "user" and m[-1]["role"] == "assistant" and m[-1]["content"].strip()
        if r["kind"] == "no_search":
            assert len(m) == 2 and "search" not in m[1] and r["route"] == {"search": False, "answerable": None}
            continue
        assert [x["role"] for x in m] == ["user", "assistant", "tool", "assistant"]
        assert m[1]["search"].strip() and m[2]["name"] == "search"
        assert r["route"] == {"search": True, "answerable": r["kind"] == "answerable"}
        from_dict(r)                                  # valid conversation format


def test_languages_are_what_the_record_says(splits):
    out, _ = splits
    ident = LanguageIdentifier.from_model_file(MODEL_FILE)
    ident.set_languages(["fr", "en"])   # the question is which of the two, not which of 97
    checked = 0
    for r in _all(out):
        question, final = r["messages"][0]["content"], r["messages"][-1]["content"]
        # a translation answer holds both languages and small talk is short: their request is checked alone
        text = question if r["kind"] == "no_search" else f"{question} {final}"
        if len(text.split()) < 5:
            continue
        lang = ident.classify(text)[0]
        assert lang == r["lang"], (r["lang"], text)
        checked += 1
    assert checked > 0.8 * len(_all(out))


def test_queries_are_rewritten_not_copied(splits):
    out, _ = splits
    searches = [r for r in _all(out) if r["kind"] != "no_search"]
    for r in searches:
        q, question = R._norm(r["messages"][1]["search"]), R._norm(r["messages"][0]["content"])
        assert q != question and q not in question, (q, question)
        assert len(q.split()) < len(question.split()) + 2
    assert len({r["query_template"] for r in searches}) >= 20


def test_split_hygiene(splits):
    out, _ = splits
    for key in ("entity", "template", "query_template"):
        parts = {s: {(r["lang"], r[key]) for r in out[s] if r.get(key)} for s in out}
        assert not parts["train"] & parts["dev"] and not parts["train"] & parts["test"] and not parts["dev"] & parts["test"], key
    prompts = {s: {R._norm(r["messages"][0]["content"]) for r in out[s]} for s in out}
    assert not prompts["train"] & prompts["test"] and not prompts["train"] & prompts["dev"]
    # every phrasing list is long enough to give each split its own part
    lists = [v for L in R.LANGS for d in (R.QUESTIONS, R.QUERIES) for v in d[L].values()]
    lists += [d[L] for L in R.LANGS for d in (R.ANSWERS, R.NOT_FOUND, R.LEADS, R.NO_SEARCH, R.TRANSLATE)] + [R.WORDS]
    for items in lists:
        p = partition(tuple(items))
        assert all(p.values()) and p["train"] != p["test"]


def test_answerable_hits_hold_the_answer_and_the_answer_cites_them(splits):
    out, _ = splits
    facts = {e["id"]: e for e in R.Facts.load(R.CORPUS / "facts.json").entities}
    answerable = [r for r in _all(out) if r["kind"] == "answerable"]
    assert len(answerable) > 50
    for r in answerable:
        value = facts[r["entity"]][r["lang"]][r["relation"]]
        assert r["reference"] == {"type": "string", "value": value}
        hits = re.split(r"(?m)^(?=\[\d+\] )", r["messages"][2]["content"])
        cited = next(h for h in hits if h.startswith(f"[{r['rank']}] "))
        assert R.states(cited, value) and f"({r['passage']}.md)" in cited.splitlines()[0]
        assert (R.CORPUS / "docs" / f"{r['passage']}.md").exists()
        final = r["messages"][3]["content"]
        assert value in final and f"[{r['rank']}]" in final
        for line in r["messages"][2]["content"].splitlines():   # hit headers name the page by its corpus id, no local path
            if re.match(r"\[\d+\] ", line):
                assert re.fullmatch(r"\[\d+\] .+ \((fr|en)/[\w-]+\.md\)", line), line


def test_unanswerable_says_not_found_and_states_no_fact(splits):
    out, _ = splits
    facts = R.Facts.load(R.CORPUS / "facts.json")
    known = {e["id"]: e for e in facts.entities + facts.absent}
    un = [r for r in _all(out) if r["kind"] == "unanswerable"]
    assert {r["why"] for r in un} == {"absent_entity", "absent_fact"}
    for r in un:
        final = r["messages"][3]["content"]
        topic = R.TOPIC[r["lang"]][r["relation"]].format(**R._names(r["lang"], known[r["entity"]]))
        # exactly one of the "not found" sentences about the asked topic: no room for an invented fact
        assert final in {t.format(topic=topic) for t in R.NOT_FOUND[r["lang"]]}, final
        assert (r["why"] == "absent_entity") == (r["entity"] in {e["id"] for e in facts.absent})
        assert (r["why"] == "absent_fact") == (r["relation"] in R.ABSENT_RELATIONS)
        assert r["reference"] is None


def test_render_masks_the_injected_passages(splits, tokenizer):
    out, _ = splits
    r = next(r for r in out["train"] if r["kind"] == "answerable")
    ids, mask = tokenizer.render(r)
    i = ids.index(tokenizer.search_id)
    j = ids.index(tokenizer.search_end_id)
    assert all(mask[i:j + 1])                         # the query the model writes is trained
    k = ids.index(tokenizer.result_id, j)
    end = ids.index(tokenizer.end_id, k)
    assert not any(mask[k:end + 1])                   # the injected hits are not
    assert tokenizer.decode(ids[k + 1:end]).strip().startswith("[1] ")
    assert sum(mask[end + 1:]) > 0                    # the grounded answer is trained


def test_cli_writes_the_splits_and_checks_its_arguments(tmp_path):
    out = tmp_path / "rs.jsonl"
    assert R.main(["--n", "40", "--test-n", "10", "--out", str(out)]) == 0
    lines = {p: [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines()]
             for p in (out, tmp_path / "rs.val.jsonl", tmp_path / "rs.test.jsonl")}
    assert [len(v) for v in lines.values()] == [38, 2, 10]
    assert json.loads((tmp_path / "rs.stats.json").read_text())["sizes"] == {"train": 38, "dev": 2, "test": 10}
    with pytest.raises(HessGPTError, match="--n 0"):
        R.main(["--n", "0", "--out", str(out)])
    with pytest.raises(HessGPTError, match="'de'"):
        R.generate_splits(10, 0, 0.0, langs=("de",))
    with pytest.raises(HessGPTError, match="no facts table"):
        R.generate_splits(10, 0, 0.0, corpus=Path(tmp_path))


def test_relevance_floor_shows_no_results_and_leaves_the_splits_as_they_were(splits):
    """The router's relevance floor empties the hits of absent-country questions, so the training data
    injects "No results." there too; which samples exist is decided with the floor off, so the frozen
    test split (and every other) holds the same prompts and queries with or without it."""
    out, _ = splits
    off, _ = R.generate_splits(300, 120, 0.2, seed=0, min_coverage=0.0)
    for s in ("train", "dev", "test"):
        assert [(r["messages"][0]["content"], r["messages"][1].get("search")) for r in out[s]] == \
               [(r["messages"][0]["content"], r["messages"][1].get("search")) for r in off[s]], s
    absent = [r for r in _all(out) if r.get("why") == "absent_entity"]
    no_results = [r for r in absent if r["messages"][2]["content"] == "No results."]
    assert absent and len(no_results) >= 0.8 * len(absent)
    assert sum(r["messages"][2]["content"] == "No results." for r in _all(off) if r.get("why") == "absent_entity") \
        < len(no_results) / 2   # without the floor, the nearest countries' pages
    # answerable records keep citing a hit that holds the answer (the floor never removed the cited page)
    for r in _all(out):
        if r["kind"] == "answerable":
            assert R.states(r["messages"][2]["content"], r["reference"]["value"])
