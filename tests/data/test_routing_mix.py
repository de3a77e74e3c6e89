"""Search conversations mixed into the routing data (hessgpt.data.routing.mix): `search_share` 0 changes
nothing, the counts per kind land in the stats, the search test split is frozen and disjoint, routing samples
that contradict the search data are dropped, the CLI and the pipeline stage take the option, and a mixed
record renders with the injected passages untrained (HessGPT's format and an imported ChatML template)."""

import json

import pytest
import yaml

from hessgpt.data import cli as data_cli
from hessgpt.data.routing import mix as M
from hessgpt.data.routing import search as R
from hessgpt.errors import HessGPTError
from hessgpt.train.pipeline import Pipeline


def _routing_record(i: int, split: str, user: str, category: str = "negative") -> dict:
    return {"id": f"routing:{category}-{i:04d}", "source": "routing", "lang": "fr", "category": category, "kind": "fact",
            "split": split, "reference": None,
            "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": "Réponse."}]}


def _fake_routing(n_train=20, n_dev=4, n_test=10):
    splits = {s: [_routing_record(i, s, f"Question {s} numéro {i} ?") for i in range(k)]
              for s, k in (("train", n_train), ("dev", n_dev), ("test", n_test))}
    stats = {"train": n_train, "dev": n_dev, "val": n_dev, "test": n_test, "kept": {"negative": n_train + n_dev + n_test}}
    return splits, stats


def test_share_zero_changes_nothing():
    splits, stats = _fake_routing()
    out, d = M.mix_search(splits, stats, 0.0, 24, 10, 0.2)
    assert out is splits and d is stats and "search" not in d
    with pytest.raises(HessGPTError, match="--search-share must be in \\[0, 1\\], got 1.5"):
        M.mix_search(splits, stats, 1.5, 24, 10, 0.2)


def test_mixed_counts_kinds_and_split_hygiene():
    splits, stats = _fake_routing(200, 20, 100)
    out, d = M.mix_search(splits, stats, 0.5, 220, 100, 0.1, seed=3)
    s = d["search"]
    assert s["requested"] == {"train+dev": 110, "test": 50}
    assert s["sizes"] == {"train": 99, "dev": 11, "test": 50}
    for split in ("train", "dev", "test"):
        search = [r for r in out[split] if r["category"] == "search"]
        assert len(search) == s["sizes"][split] and len(out[split]) == len(splits[split]) + len(search)
        assert all(r["split"] == split for r in search)
        kinds = s["kinds"][split]
        assert sum(kinds[k] for k in R.KINDS) == len(search)
        assert kinds["answerable"] == sum(r["kind"] == "answerable" for r in search)
        assert sum(v["unanswerable"] for v in kinds["by_lang"].values()) == kinds["unanswerable"]
        assert out[split] != splits[split] + search   # shuffled in
    assert d["train"] == len(out["train"]) and d["test"] == len(out["test"]) and d["kept"]["search"] == 160
    assert {k for k in R.KINDS if s["kinds"]["test"][k]} == set(R.KINDS)
    for key in ("entity", "template", "query_template"):      # search entities / templates never cross splits
        parts = {sp: {(r["lang"], r[key]) for r in out[sp] if r["category"] == "search" and r.get(key)} for sp in out}
        assert not parts["train"] & parts["test"] and not parts["dev"] & parts["test"] and not parts["train"] & parts["dev"]


def test_search_test_split_is_frozen():
    """The test split depends on the seed and its own size, not on how much train data is asked for."""
    a, _ = M.mix_search(*_fake_routing(), 0.1, 200, 100, 0.05, seed=0)
    b, _ = M.mix_search(*_fake_routing(), 0.4, 500, 25, 0.05, seed=0)
    ta = [r for r in a["test"] if r["category"] == "search"]
    tb = [r for r in b["test"] if r["category"] == "search"]
    assert len(ta) == 10 and len(tb) == 10 and ta == tb
    c, _ = M.mix_search(*_fake_routing(), 0.1, 200, 100, 0.05, seed=1)
    assert [r for r in c["test"] if r["category"] == "search"] != ta


def test_search_test_share_trains_on_more_and_keeps_the_frozen_test_items():
    base, _ = M.mix_search(*_fake_routing(), 0.1, 200, 100, 0.05, seed=0)
    more, d = M.mix_search(*_fake_routing(), 0.3, 200, 100, 0.05, seed=0, test_share=0.1)
    search = {k: [r for r in v if r["category"] == "search"] for k, v in more.items()}
    assert [r for r in base["test"] if r["category"] == "search"] == search["test"] and len(search["test"]) == 10
    assert len(search["train"]) + len(search["dev"]) == 60 and d["search"]["test_share"] == 0.1
    assert d["search"]["requested"] == {"train+dev": 60, "test": 10}
    with pytest.raises(HessGPTError, match="--search-test-share must be in \\[0, 1\\], got 2"):
        M.mix_search(*_fake_routing(), 0.1, 200, 100, 0.05, test_share=2)


def test_routing_samples_naming_a_corpus_country_are_dropped():
    splits, stats = _fake_routing()
    splits["train"] += [_routing_record(900, "train", "Quelle est la capitale du Canada ?"),      # indexed country
                        _routing_record(901, "train", "What is the capital of Peru?"),              # absent country
                        _routing_record(902, "train", "Quelle est la capitale de l'Italie ?"),      # not in the corpus
                        _routing_record(903, "train", "Combien font 3 fois 4 ?", "maths")]
    out, d = M.mix_search(splits, stats, 0.2, 24, 10, 0.1)
    users = {r["messages"][0]["content"] for r in out["train"]}
    assert "Quelle est la capitale du Canada ?" not in users and "What is the capital of Peru?" not in users
    assert "Quelle est la capitale de l'Italie ?" in users and "Combien font 3 fois 4 ?" in users
    assert d["search"]["dropped_conflicts"] == {"train": 2, "dev": 0, "test": 0}
    assert M.mentions_corpus_country({"messages": [{"role": "user", "content": "Je pars au JAPON demain"}]}, M.corpus_names())
    assert not M.mentions_corpus_country({"messages": [{"role": "user", "content": "Le japonais est difficile"}]}, M.corpus_names())


def test_cli_search_share(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert data_cli.main(["routing", "--n", "40", "--test-n", "20", "--search-share", "0.25", "--multiturn-share", "0",
                          "--out", str(out), "--no-progress", "--workers", "1"]) == 0
    stats = json.loads((tmp_path / "r.stats.json").read_text())
    assert stats["search"]["sizes"] == {"train": 10, "dev": 0, "test": 5}
    test = [json.loads(x) for x in (tmp_path / "r.test.jsonl").read_text().splitlines()]
    assert sum(r["category"] == "search" for r in test) == 5 and len(test) == stats["test"]
    assert "search records: train" in capsys.readouterr().out
    assert data_cli.main(["routing", "--n", "40", "--test-n", "20", "--search-share", "0.5", "--search-test-share",
                          "0.25", "--multiturn-share", "0", "--out", str(out), "--no-progress", "--workers", "1"]) == 0
    again = [json.loads(x) for x in (tmp_path / "r.test.jsonl").read_text().splitlines()]
    assert [r for r in again if r["category"] == "search"] == [r for r in test if r["category"] == "search"]
    sizes = json.loads((tmp_path / "r.stats.json").read_text())["search"]["sizes"]
    assert sizes["train"] + sizes["dev"] == 20 and sizes["test"] == 5
    with pytest.raises(HessGPTError, match="got -0.1"):
        data_cli.main(["routing", "--n", "10", "--search-share", "-0.1", "--out", str(out), "--no-progress"])


def test_pipeline_routing_stage_takes_search_share(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "t", "workdir": "w", "stages": [
        {"name": "routing", "kind": "routing", "n": 30, "test_n": 10, "val_fraction": 0.1, "multiturn_share": 0.0,
         "search_share": 0.3, "search_kinds": {"answerable": 0.5, "unanswerable": 0.5}, "workers": 1}], "final": {}}))
    p = Pipeline(str(recipe))
    assert p.run() == 0
    out = tmp_path / "w" / "routing"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["search"]["sizes"] == {"train": 8, "dev": 1, "test": 3}
    assert stats["search"]["test_share"] == 0.3
    assert stats["search"]["kind_weights"] == {"answerable": 0.5, "unanswerable": 0.5, "no_search": 0.0}
    train = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    assert sum(r["category"] == "search" for r in train) == 8


def _search_record():
    out, _ = R.generate_splits(30, 0, 0.0, seed=0)
    return next(r for r in out["train"] if r["kind"] == "answerable")


def test_hessgpt_format_masks_the_injected_passages(tokenizer):
    r = _search_record()
    ids, mask = tokenizer.render(r)
    k = ids.index(tokenizer.result_id)
    end = ids.index(tokenizer.end_id, k)
    assert not any(mask[k:end + 1]) and tokenizer.decode(ids[k + 1:end]).strip().startswith("[1] ")
    i, j = ids.index(tokenizer.search_id), ids.index(tokenizer.search_end_id)
    assert all(mask[i:j + 1]) and tokenizer.decode(ids[i + 1:j]).strip() == r["messages"][1]["search"]
    assert tokenizer.decode([t for t, m in zip(ids[end + 1:], mask[end + 1:]) if m]).strip().startswith(
        r["messages"][3]["content"][:20])


def test_imported_chatml_template_masks_the_injected_passages(tmp_path, chatml_tokenizer):
    """The smollm2 recipe's base keeps its ChatML template: the hits sit inside the assistant turn, untrained."""
    transformers = pytest.importorskip("transformers")

    from hessgpt import checkpoint
    from hessgpt.convert.hf import from_hf

    template = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    bpe, hf_tok = chatml_tokenizer(["Quelle est la capitale du Canada ? Ottawa. What is the capital? [1] docs"] * 20,
                                   300, template)
    hf_tok.save_pretrained(tmp_path / "hf")
    conf = transformers.LlamaConfig(vocab_size=bpe.get_vocab_size(), hidden_size=16, intermediate_size=32,
                                    num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                    max_position_embeddings=128, tie_word_embeddings=False)
    transformers.LlamaForCausalLM(conf).save_pretrained(tmp_path / "hf")
    from_hf(str(tmp_path / "hf"), str(tmp_path / "ckpt"))
    _, tok = checkpoint.load(str(tmp_path / "ckpt"))
    r = _search_record()
    ids, mask = tok.render(r)
    hits = r["messages"][2]["content"]
    k = ids.index(tok.result_id)
    end = ids.index(tok.end_id, k)
    assert tok.decode(ids[k + 1:end]) == hits and not any(mask[k:end + 1])
    trained = tok.decode([t for t, m in zip(ids, mask) if m])
    assert r["messages"][1]["search"] in trained and r["messages"][3]["content"] in trained
    assert hits.splitlines()[1] not in trained and r["messages"][0]["content"] not in trained


def test_search_kinds_weight_train_and_dev_and_leave_the_test_split_frozen(tmp_path):
    base, _ = M.mix_search(*_fake_routing(200, 20, 100), 0.5, 220, 100, 0.1, seed=3)
    more, d = M.mix_search(*_fake_routing(200, 20, 100), 0.5, 220, 100, 0.1, seed=3,
                           kinds={"answerable": 0.2, "unanswerable": 0.7, "no_search": 0.1})
    search = lambda out, split: [r for r in out[split] if r["category"] == "search"]   # noqa: E731
    assert search(more, "test") == search(base, "test")
    share = lambda recs: sum(r["kind"] == "unanswerable" for r in recs) / len(recs)   # noqa: E731
    assert share(search(more, "train")) > share(search(base, "train")) + 0.2
    assert d["search"]["kind_weights"] == {"answerable": 0.2, "unanswerable": 0.7, "no_search": 0.1}
    with pytest.raises(HessGPTError, match="unknown kind 'maybe'"):
        M.generate_splits(10, 5, search_share=0.5, search_kinds={"maybe": 1.0})
    with pytest.raises(HessGPTError, match="not all 0"):
        R.check_kinds({"answerable": 0})
    with pytest.raises(HessGPTError, match="'unanswerable:0.4' is not KIND=WEIGHT"):
        data_cli.main(["routing", "--n", "10", "--search-share", "0.5", "--search-kinds", "unanswerable:0.4",
                       "--out", str(tmp_path / "r.jsonl"), "--no-progress"])
