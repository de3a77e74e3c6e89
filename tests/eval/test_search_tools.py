"""`eval tools` on search items (hessgpt.data.routing.search records): <search> precision/recall, the fact
stated on answerable items, "not found" on unanswerable ones, no search on the others, per language, beside
the always-search and never-search (constant) baselines; a wrong answer scores 0; the CLI gives the router
the shipped corpus index, whose hits name pages as the training data does."""

import json

import pytest

from hessgpt.data.routing import search as R
from hessgpt.eval import cli
from hessgpt.eval import tools as T
from hessgpt.eval.scoring import declines, score_search, states_value
from hessgpt.events import Event
from hessgpt.tools.search import DEFAULT_MIN_COVERAGE


@pytest.fixture(scope="module")
def records():
    out, _ = R.generate_splits(40, 60, 0.0, seed=0)
    recs = out["test"]
    assert {r["kind"] for r in recs} == set(R.KINDS) and {r["lang"] for r in recs} == {"fr", "en"}
    return recs


class Replay:
    """Answers each prompt as its record does (the reference turn), or through `answer(record)`."""

    context_length = None

    def __init__(self, records, answer=None, search=True):
        self.by_prompt = {r["messages"][0]["content"]: r for r in records}
        self.answer, self.search = answer, search

    def stream_chat(self, messages, params, tools=None, cancel=None):
        r = self.by_prompt[messages[-1]["content"]]
        m = r["messages"]
        if self.search and m[1].get("search"):
            yield Event("search", m[1]["search"])
            yield Event("result", m[2]["content"], {"status": "ok", "tool": "search"})
        yield Event("text", self.answer(r) if self.answer else m[-1]["content"])
        yield Event("done", data={"finish_reason": "stop"})


def _samples(records, tmp_path):
    p = tmp_path / "test.jsonl"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return T.load_samples(p), p


def test_search_records_load_with_their_spec(records, tmp_path):
    samples, _ = _samples(records, tmp_path)
    for s, r in zip(samples, records):
        assert s.category == "search" and s.needs_code is False and s.reference is None
        assert s.search == {"needed": r["kind"] != "no_search", "answerable": {"answerable": True, "unanswerable": False}.get(r["kind"]),
                            "value": r["reference"]["value"] if r["kind"] == "answerable" else None}
    assert T.search_spec({"category": "maths", "messages": []}) is None


def test_score_search_on_fixed_answers():
    spec = {"needed": True, "answerable": True, "value": "le dollar canadien"}
    assert score_search(spec, True, "Selon [1] (Canada), la monnaie du Canada est le dollar canadien.", lang="fr") == (True, "ok")
    assert score_search(spec, False, "C'est le Dollar Canadien.", lang="fr")[0]           # right without searching
    assert score_search(spec, True, "La monnaie du Canada est l'euro.", lang="fr") == (False, "wrong_value")
    assert score_search(spec, True, "Je n'ai pas trouvé la monnaie du Canada.", lang="fr") == (False, "declined")
    assert score_search({"needed": True, "answerable": True, "value": "Berne"}, True, "The capital is Bern.") == (False, "wrong_value")
    assert score_search({"needed": True, "answerable": True, "value": "Ottawa"}, True,
                        "According to document [1], the capital of Canada is Ottawa.", lang="fr") == (False, "wrong_language")
    un = {"needed": True, "answerable": False, "value": None}
    assert score_search(un, True, "None of the documents mention the population of Canada. I'd rather not make up an answer.") == (True, "ok")
    assert score_search(un, True, "According to [1], Canada has 38 million inhabitants.") == (False, "invented")
    assert score_search(un, True, "I could not find it, but it is about 38 million.") == (False, "number_stated")
    assert score_search(un, True, "Je ne trouve pas cela dans [2], désolé.") == (True, "ok")   # a citation is no number
    ns = {"needed": False, "answerable": None, "value": None}
    assert score_search(ns, False, "Bonjour !") == (True, "ok") and score_search(ns, True, "Bonjour !") == (False, "searched")
    assert score_search(ns, False, "  ") == (False, "empty")
    assert states_value("Mexico City is the capital", "Mexico City") and not states_value("Mexico is big", "Mexico City")
    for t in R.NOT_FOUND["fr"] + R.NOT_FOUND["en"]:
        assert declines(t.format(topic="x"))
    for t in R.ANSWERS["fr"] + R.ANSWERS["en"]:
        assert not declines(t.format(n=1, title="T", fact="f", Fact="F"))


def test_the_reference_answers_score_1_and_baselines_what_they_can(records, tmp_path):
    samples, _ = _samples(records, tmp_path)
    res = T.evaluate(Replay(records), samples, progress=False, baselines=True)
    s = res["overall"]["search"]
    n_need = sum(r["kind"] != "no_search" for r in records)
    assert s["n"] == len(records) and s["tp"] == n_need and s["fp"] == 0 and s["precision"] == s["recall"] == 1.0
    for kind in ("answerable", "unanswerable", "no_search"):
        assert s[kind]["rate"] == 1.0 and s[kind]["n"] == sum(r["kind"] == kind for r in records)
    assert set(res["per_lang"]) == {"fr", "en"} and all(t["search"]["recall"] == 1.0 for t in res["per_lang"].values())
    assert set(res["baselines"]) == {"constant", "regex", "always_search"}
    a = res["baselines"]["always_search"]["overall"]["search"]
    assert a["recall"] == 1.0 and a["precision"] < 1.0 and a["answerable"]["rate"] == 0.0 and a["unanswerable"]["rate"] == 1.0
    assert a["no_search"]["rate"] == 0.0
    c = res["baselines"]["constant"]["overall"]["search"]
    assert c["recall"] == 0.0 and c["precision"] is None and c["answerable"]["rate"] == 0.0 and c["no_search"]["rate"] == 1.0
    # search items are not code-answer items: the code tables are untouched
    assert res["overall"]["answer"]["n"] == 0 and res["overall"]["routing"]["fp"] == 0
    table = T.format_search(res)
    assert "| <search> recall |" in table and "always_search" in table and "fr constant" in table


def test_a_wrong_answer_scores_0_and_a_missing_search_counts(records, tmp_path):
    samples, _ = _samples(records, tmp_path)
    wrong = T.evaluate(Replay(records, answer=lambda r: "D'après [1], c'est Paris." if r["lang"] == "fr"
                              else "According to [1], it is Paris."), samples, progress=False)
    s = wrong["overall"]["search"]
    assert s["answerable"]["right"] == 0 and s["answerable"]["n"] > 0
    assert s["unanswerable"]["rate"] == 0.0   # asserting something where the corpus has nothing: invented
    assert {r["search_reason"] for r in wrong["samples"] if r["search"]["answerable"]} == {"wrong_value"}
    lazy = T.evaluate(Replay(records, search=False), samples, progress=False)["overall"]["search"]
    assert lazy["recall"] == 0.0 and lazy["tp"] == 0 and lazy["answerable"]["rate"] == 1.0   # right from memory, no search


def test_cli_scores_search_with_the_shipped_index(records, tmp_path, monkeypatch, capsys):
    _, data = _samples(records[:8], tmp_path)

    class Router:
        search = None

    class RouterBackend(Replay):
        """Searches through its router's index, as DualModelBackend's ToolRouter does."""

        def __init__(self, recs):
            super().__init__(recs)
            self.router = Router()
            self.hits = []

        def stream_chat(self, messages, params, tools=None, cancel=None):
            r = self.by_prompt[messages[-1]["content"]]
            if r["messages"][1].get("search"):
                hits = self.router.search.search(r["messages"][1]["search"], k=3)
                self.hits.append(hits)
                yield Event("search", r["messages"][1]["search"])
                yield Event("result", R.format_hits(hits), {"status": "ok", "tool": "search"})
            yield Event("text", r["messages"][-1]["content"])

    backend = RouterBackend(records)
    monkeypatch.setattr(cli, "load_backend", lambda m1, m2=None, plain=False, code_votes=1: backend)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    assert cli.main(["tools", "--model1", str(ckpt), "--data", str(data)]) == 0
    saved = json.loads((ckpt / "eval" / "tools.json").read_text())
    assert saved["search_index"] == str(ckpt / "eval" / "search.db")
    assert saved["search_min_coverage"] == DEFAULT_MIN_COVERAGE   # the router's relevance floor, as in the data
    assert saved["model"]["overall"]["search"]["recall"] == 1.0 and "always_search" in saved["baselines"]
    # the router's hits are the training data's: same pages, named by their corpus path
    searched = [r for r in records[:8] if r["kind"] != "no_search"]
    assert backend.hits and [R.format_hits(h) for h in backend.hits] == [r["messages"][2]["content"] for r in searched]
    assert "| <search> recall |" in capsys.readouterr().out
    assert cli.main(["tools", "--model1", str(ckpt), "--data", str(data), "--search-min-coverage", "0",
                     "--out", str(tmp_path / "off.json")]) == 0
    assert backend.router.search.index.min_coverage == 0.0
    assert json.loads((tmp_path / "off.json").read_text())["search_min_coverage"] == 0.0


def test_answer_with_and_without_the_index(records, tmp_path):
    """A model that answers from the hits: right with the index, "not found" once the router has none."""

    class Router:
        search = "an index"

    class Grounded(Replay):
        def __init__(self, recs):
            super().__init__(recs)
            self.router = Router()

        def stream_chat(self, messages, params, tools=None, cancel=None):
            r = self.by_prompt[messages[-1]["content"]]
            m = r["messages"]
            if m[1].get("search"):
                yield Event("search", m[1]["search"])
                yield Event("result", m[2]["content"] if self.router.search else "(search is not configured)", {"status": "ok"})
            if self.router.search or r["kind"] == "no_search":
                yield Event("text", m[-1]["content"])
            else:
                yield Event("text", "I could not find it." if r["lang"] == "en" else "Je n'ai rien trouvé.")

    samples, _ = _samples(records, tmp_path)
    backend = Grounded(records)
    res = T.evaluate(backend, samples, progress=False)
    s = res["overall"]["search"]
    assert s["answerable"]["rate"] == 1.0 and s["answerable_without_search"] == {**s["answerable"], "right": 0, "rate": 0.0}
    assert backend.router.search == "an index"                     # restored after the ablation
    assert "| answerable, index removed: fact stated |" in T.format_search(res)
    assert all(("without_search" in r) == bool(r["search"]["answerable"]) for r in res["samples"])   # only those rerun
    off = T.evaluate(backend, samples, progress=False, search_ablation=False)["overall"]["search"]
    assert off["answerable_without_search"]["n"] == 0
