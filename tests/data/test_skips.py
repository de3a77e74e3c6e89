"""A corrupt line, a wrong-type field and a missing field in every source are counted skips with a reason."""

import json
from pathlib import Path

import pytest

from hessgpt.data.prepare import Measurer, collect
from hessgpt.data.dedup import Deduper
from hessgpt.data.recipe import Recipe, SourceSpec, iter_rows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"

# dataset, fixture, the field to break
CASES = [
    ("Anthropic/hh-rlhf", "hh_rlhf.jsonl.gz", "chosen"),
    ("HuggingFaceH4/ultrachat_200k", "ultrachat.jsonl", "messages"),
    ("oasst2", "oasst_trees.jsonl", "prompt"),
    ("vigogne", "vigogne_messages.jsonl", "messages"),
    ("vigogne", "vigogne_conversation.jsonl", "conversation"),
    ("vigogne", "vigogne_instruct.jsonl", "instruction"),
    ("tatsu-lab/alpaca", "alpaca.json", "output"),
    ("databricks/databricks-dolly-15k", "dolly.jsonl", "response"),
    ("WizardLMTeam/WizardLM_evol_instruct_70k", "wizardlm_70k.jsonl", "instruction"),
    ("wizardlm-v2", "wizardlm_v2.jsonl", "conversations"),
    ("HuggingFaceTB/smoltalk", "smoltalk.jsonl", "messages"),
    ("allenai/tulu-3-sft-personas-code", "tulu_personas.jsonl", "messages"),
    ("THUDM/LongAlign-10k", "longalign.jsonl", "messages"),
    ("teknium/OpenHermes-2.5", "openhermes.jsonl", "conversations"),
    ("garage-bAInd/Open-Platypus", "platypus.jsonl", "instruction"),
    ("wikihow", "wikihow_cosmopedia.jsonl", "text"),
    ("wikihow", "wikihow_hf.jsonl", "title"),
    ("Salesforce/xlam-function-calling-60k", "xlam.json", "answers"),
    ("glaiveai/glaive-function-calling-v2", "glaive.jsonl", "chat"),
    ("sharegpt-tools", "sharegpt_tools.json", "conversations"),
    ("nexusraven", "nexusraven_queries.jsonl", "python_function_name"),
    ("sahil2801/CodeAlpaca-20k", "codealpaca.json", "instruction"),
    ("deepmind/code_contests", "code_contests.jsonl", "solutions"),
    ("codeparrot/apps", "apps.jsonl", "question"),
    ("routing", "routing.jsonl", "messages"),
]


def _run(dataset, path, **options):
    recipe = Recipe(name="t", sources=[])
    spec = SourceSpec.from_dict({"dataset": dataset, "path": str(path), "options": options})
    return collect(spec, recipe, Deduper(exact=False, near=False), Measurer(recipe), None, set())


@pytest.mark.parametrize("dataset, fname, key", CASES, ids=[c[1] + ":" + c[2] for c in CASES])
def test_bad_lines_are_counted_skips(tmp_path, dataset, fname, key):
    good = next(r for _, r in iter_rows(SourceSpec.from_dict({"dataset": dataset, "path": str(FIXTURES / fname)})))
    missing = {k: v for k, v in good.items() if k != key}
    wrong = dict(good, **{key: 12345})
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([json.dumps(good), '{"chosen": "\\n\\nHuman: hi', json.dumps(wrong), json.dumps(missing), "[1, 2]"]) + "\n")
    kept, rep = _run(dataset, path)
    assert len(kept) == 1, rep.examples  # the good row still converts
    assert dict(rep.skipped) == {"corrupt_json": 1, "wrong_type": 2, "missing_field": 1}, rep.examples
    assert rep.records == 5
    assert rep.examples["corrupt_json"][0].startswith("bad.jsonl:2:")  # names the line


def test_oasst_flat_rows_missing_ids_are_counted(tmp_path):
    rows = [{"message_id": "r", "parent_id": None, "message_tree_id": "t", "role": "prompter", "text": "Salut ?", "lang": "fr"},
            {"message_id": "a", "parent_id": "r", "message_tree_id": "t", "role": "assistant", "text": "Bonjour !", "lang": "fr", "rank": 0},
            {"message_id": "x", "parent_id": "r", "role": "assistant", "text": "no tree id"}]  # fmt: skip
    path = tmp_path / "flat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{oops\n")
    kept, rep = _run("oasst2", path)
    assert [c.messages[1].content for c, _ in kept] == ["Bonjour !"]
    assert kept[0][0].lang == "fr"  # oasst's own label
    assert dict(rep.skipped) == {"missing_field": 1, "corrupt_json": 1}


def test_an_adapter_crash_is_a_counted_skip(tmp_path, monkeypatch):
    from hessgpt.data.adapters import get_adapter

    adapter = get_adapter("alpaca")

    def boom(row):
        if row["instruction"] == "crash":
            raise RuntimeError("bug")
        return adapter.convert(row)

    import dataclasses

    import hessgpt.data.prepare as prep

    monkeypatch.setattr(prep, "get_adapter", lambda name: dataclasses.replace(adapter, convert=boom))
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"instruction": "crash", "output": "x"}) + "\n" + json.dumps({"instruction": "Hi there", "output": "Hello!"}) + "\n")
    kept, rep = _run("alpaca", path)
    assert len(kept) == 1 and dict(rep.skipped) == {"adapter_error": 1}
    assert "RuntimeError: bug" in rep.examples["adapter_error"][0]


def test_corrupt_gzip_and_invalid_utf8_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(json.dumps({"instruction": "Hi there", "output": "Hello!"}).encode() + b"\n\xff\xfe{}\n")
    kept, rep = _run("alpaca", path)
    assert len(kept) == 1 and dict(rep.skipped) == {"corrupt_json": 1}


def test_truncated_gzip_and_corrupt_parquet_are_counted(tmp_path):
    import gzip

    rows = [{"instruction": f"Question {w}", "output": f"Answer {w}"} for w in ("one", "two", "three")]
    data = gzip.compress(("\n".join(json.dumps(r) for r in rows) + "\n").encode())
    (tmp_path / "t.jsonl.gz").write_bytes(data[: len(data) - 12])  # the gzip trailer and a few bytes cut
    kept, rep = _run("alpaca", tmp_path / "t.jsonl.gz")
    assert dict(rep.skipped) == {"load_error": 1} and len(kept) >= 1
    (tmp_path / "p.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    kept, rep = _run("alpaca", tmp_path / "p.parquet")
    assert kept == [] and dict(rep.skipped) == {"load_error": 1}
