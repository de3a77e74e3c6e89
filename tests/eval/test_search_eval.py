"""`hessgpt eval search`: recall@k on a labelled set, stems vs folding only, on a tiny corpus and on the shipped one."""

import json

import pytest

from hessgpt.errors import HessGPTError
from hessgpt.eval.cli import main as eval_main
from hessgpt.eval.search import (CORPUS, DEFAULT_SETS, evaluate, floor_on_conversations, format_floor, format_table,
                                 load_labelled)
from hessgpt.tools.search import DEFAULT_MIN_COVERAGE


def _corpus(tmp_path):
    c = tmp_path / "corpus"
    (c / "fr").mkdir(parents=True)
    (c / "en").mkdir()
    (c / "fr" / "vote.md").write_text("# Vote\n\nLes élections municipales ont lieu tous les six ans.\n", encoding="utf-8")
    (c / "fr" / "ville.md").write_text("# Ville\n\nOttawa est la capitale du Canada.\n", encoding="utf-8")
    (c / "en" / "bees.md").write_text("# Bees\n\nHoneybees make honey in the hive.\n")
    (c / "en" / "moon.md").write_text("# Moon\n\nArmstrong walked on the Moon in 1969.\n")
    items = [
        {"id": "a", "lang": "fr", "question": "election", "passage": "fr/vote", "split": "test"},        # stems only
        {"id": "b", "lang": "fr", "question": "capitales", "passage": "fr/ville", "split": "dev"},       # stems only
        {"id": "c", "lang": "fr", "question": "Canada", "passage": "fr/ville", "split": "test"},         # both
        {"id": "d", "lang": "en", "question": "honeybee", "passage": "en/bees", "split": "test"},        # stems only
        {"id": "e", "lang": "en", "question": "moon 1969", "passage": "en/moon", "split": "test"},       # both
    ]
    sets = tmp_path / "set.jsonl"
    sets.write_text("".join(json.dumps(r) + "\n" for r in items))
    return c, sets


def test_recall_with_and_without_stems_on_a_tiny_corpus(tmp_path):
    c, sets = _corpus(tmp_path)
    res = evaluate(c, [sets])
    stem, fold = res["analyzers"]["snowball-fr-en"]["recall"], res["analyzers"]["fold"]["recall"]
    assert stem["fr"]["all"] == {"n": 3, "recall@1": 1.0, "recall@5": 1.0}
    assert stem["en"]["test"] == {"n": 2, "recall@1": 1.0, "recall@5": 1.0}
    assert fold["fr"]["test"] == {"n": 2, "recall@1": 0.5, "recall@5": 0.5}
    assert fold["fr"]["dev"]["recall@5"] == 0.0 and fold["en"]["test"]["recall@1"] == 0.5
    assert {m["id"] for m in res["analyzers"]["fold"]["misses"]} == {"a", "b", "d"}
    assert res["analyzers"]["snowball-fr-en"]["misses"] == []
    table = format_table(res)
    assert "| fold | fr | test | 2 | 0.500 | 0.500 |" in table


def test_errors_name_the_offending_value(tmp_path):
    c, sets = _corpus(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "lang": "fr", "question": "q", "passage": "fr/nope", "split": "test"}) + "\n")
    with pytest.raises(HessGPTError, match="fr/nope"):
        evaluate(c, [bad])
    bad.write_text(json.dumps({"id": "x", "question": "q"}) + "\n")
    with pytest.raises(HessGPTError, match="lacks"):
        evaluate(c, [bad])
    with pytest.raises(HessGPTError, match="no such corpus"):
        evaluate(tmp_path / "missing", [sets])


def test_shipped_labelled_sets_and_cli(tmp_path, capsys):
    items = load_labelled(DEFAULT_SETS)
    assert {r["lang"] for r in items} == {"fr", "en"} and len({r["id"] for r in items}) == len(items)
    for lang in ("fr", "en"):
        splits = {r["split"] for r in items if r["lang"] == lang}
        assert splits == {"dev", "test"}, lang
        assert all(r["passage"].startswith(lang + "/") for r in items if r["lang"] == lang)
    out = tmp_path / "search.json"
    assert eval_main(["search", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["kind"] == "search" and res["corpus"] == str(CORPUS) and res["n"] == len(items)
    for a in ("snowball-fr-en", "fold"):
        for lang in ("fr", "en"):
            d = res["analyzers"][a]["recall"][lang]["test"]
            assert 0.0 <= d["recall@1"] <= d["recall@5"] <= 1.0 and d["n"] > 0
    printed = capsys.readouterr().out
    assert "| snowball-fr-en | fr | test |" in printed and "| snowball-fr-en+floor | fr | test |" in printed
    assert "relevance floor on the search conversations" in printed and res["floor"]["splits"]["test"]


def test_relevance_floor_table_on_the_search_conversations():
    res = floor_on_conversations(n=300, test_n=120)
    for split in ("dev", "test"):
        off, on = res["splits"][split]["0.0"], res["splits"][split][str(DEFAULT_MIN_COVERAGE)]
        assert off["answerable"] == on["answerable"] > 0 and off["absent_entity"] == on["absent_entity"] > 0
        # the floor only removes hits: it never finds an answer the floor-off search missed
        assert on["answerable_kept"] <= off["answerable_kept"] <= off["answerable"]
        assert on["absent_entity_empty"] >= off["absent_entity_empty"]
        assert on["absent_fact_empty"] >= off["absent_fact_empty"]
    assert "| test | off |" in format_floor(res) and f"| dev | {DEFAULT_MIN_COVERAGE} |" in format_floor(res)
