"""Refinement pairs for model 2: each mutation kind, verification by execution in the real sandbox, split hygiene."""

import ast
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from hessgpt.data import refine as R
from hessgpt.data.conversation import from_dict
from hessgpt.errors import HessGPTError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "data"


@pytest.fixture(scope="module")
def sandbox():
    from hessgpt.tools.sandbox import Sandbox

    with Sandbox() as sb:
        yield sb


def drafts(code: str, kind: str, seeds=range(12)) -> set[str]:
    return {d for s in seeds if (d := R.mutate(code, kind, random.Random(s))) is not None}


def test_each_mutation_kind_makes_its_edit_and_only_it():
    prog = "a = 15\nb = 23\nprint(a * b)"
    assert drafts("print(15 * 23)", "off_by_one") == {"print(14 * 23)", "print(16 * 23)", "print(15 * 22)", "print(15 * 24)"}
    assert drafts("print(15 * 23)", "wrong_operator") == {"print(15 + 23)"}
    assert drafts("print(3 < 4)", "wrong_operator") == {"print(3 <= 4)"}
    assert drafts(prog, "wrong_variable") == {"a = 15\nb = 23\nprint(b * b)", "a = 15\nb = 23\nprint(a * a)"}
    assert drafts("print(15 * 23)", "missing_print") == {"result = 15 * 23"}
    assert drafts("print(pow(2, 10))", "swapped_arguments") == {"print(pow(10, 2))"}
    assert drafts("print(100 - 7)", "swapped_arguments") == {"print(7 - 100)"}
    bad = drafts("for i in range(3):\n    print(i)", "syntax_error")
    assert bad and all(_not_python(d) for d in bad)
    assert drafts("import math\nprint(math.sqrt(144))", "wrong_function") == {"import math\nprint(math.log(144))"}
    assert drafts("import sympy as sp\nx = sp.symbols('x')\nprint(sp.diff(x**3, x))", "wrong_function") == \
        {"import sympy as sp\nx = sp.symbols('x')\nprint(sp.integrate(x**3, x))"}
    assert drafts(prog, "unused_input") == {"a = 15\nb = 23\nprint(a)", "a = 15\nb = 23\nprint(b)"}
    # positions are UTF-8 byte offsets: an accented string before the edit is kept intact, formatting too
    assert drafts("text = 'été'   # mot\nprint(len(text) + 1)", "off_by_one") == \
        {"text = 'été'   # mot\nprint(len(text) + 0)", "text = 'été'   # mot\nprint(len(text) + 2)"}
    assert drafts("import math\nfrom fractions import Fraction\nprint(math.floor(Fraction(7, 2)))", "missing_import") == \
        {"from fractions import Fraction\nprint(math.floor(Fraction(7, 2)))", "import math\nprint(math.floor(Fraction(7, 2)))"}
    assert drafts("x = 1\nprint(x)", "missing_import") == set()
    assert set(R.MUTATIONS) == {"off_by_one", "wrong_operator", "wrong_variable", "missing_print", "swapped_arguments",
                                "syntax_error", "wrong_function", "unused_input", "missing_import"}
    assert R.DRAFT_KINDS == (*R.MUTATIONS, "other_program")


def test_other_program_drafts_are_another_requests_program_and_verified(sandbox):
    """The draft is a program of another request (another output): the target is this request's program."""
    progs = [R.Program("Calcule 15 * 23", "print(15 * 23)", "345\n", "fr", "p1"),
             R.Program("What is 2 ** 10?", "print(2 ** 10)", "1024\n", "en", "p2"),
             R.Program("Combien font 15 fois 23 ?", "print(23 * 15)", "345\n", "fr", "p3")]   # same output as p1
    pairs = R.make_pairs(progs, sandbox, per_program=1, kinds=("other_program",))
    got = {r["program"]: r["messages"][0]["content"].split("### draft\n")[1].split("\n### run")[0] for r in pairs}
    assert got == {"p1": "print(2 ** 10)", "p2": got["p2"], "p3": "print(2 ** 10)"} and got["p2"] in ("print(15 * 23)", "print(23 * 15)")
    assert all(r["kind"] == "other_program" for r in pairs)
    for r in pairs:   # the prompt shows the draft's real run; the target is the request's own program
        if r["program"] in ("p1", "p3"):
            assert "### run: ok\n1024\n### fix" in r["messages"][0]["content"]
        assert r["messages"][1]["code"] == {"p1": "print(15 * 23)", "p2": "print(2 ** 10)", "p3": "print(23 * 15)"}[r["program"]]


def _not_python(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return True
    return False


def test_a_mutation_that_does_not_apply_gives_none_and_unknown_kind_is_an_error():
    assert R.mutate("print(1)", "wrong_variable", random.Random(0)) is None       # one variable-less print
    assert R.mutate("print('hi')", "wrong_function", random.Random(0)) is None
    assert R.mutate("print(15 * 23", "off_by_one", random.Random(0)) is None      # not Python: nothing to mutate
    with pytest.raises(HessGPTError, match="unknown mutation 'typo'"):
        R.mutate("print(1)", "typo", random.Random(0))


def test_prompt_template_is_the_same_in_both_languages():
    fr = R.refine_prompt("Calcule 15 * 23", "print(15 * 23", "error", "", "Traceback...\nSyntaxError: '(' was never closed")
    en = R.refine_prompt("Compute 15 * 23", "print(15 * 23", "error", "", "Traceback...\nSyntaxError: '(' was never closed")
    assert fr == "### request\nCalcule 15 * 23\n### draft\nprint(15 * 23\n### run: error\nSyntaxError: '(' was never closed\n### fix"
    assert en.replace("Compute", "Calcule") == fr
    assert R.refine_prompt("x", "result = 1", "ok", "").splitlines()[-3:] == ["### run: no output", "", "### fix"]


def test_verification_keeps_only_pairs_whose_draft_fails_and_target_is_right(sandbox):
    progs = [R.Program("Calcule 15 * 23", "print(15 * 23)", "345\n", "fr", "p1"),
             R.Program("Longueur ?", "print(len([1, 2, 3]))", "3\n", "fr", "p2"),   # any off-by-one keeps 3
             R.Program("Combien ?", "print(2 + 2)", "5\n", "fr", "p3")]            # its recorded output is wrong
    stats = Counter()
    pairs = R.make_pairs(progs, sandbox, per_program=1, kinds=("off_by_one",), stats=stats)
    assert [p["program"] for p in pairs] == ["p1"]
    assert stats["dropped_draft_same_output/off_by_one"] == 1 and stats["dropped_target_wrong"] == 1
    rec = pairs[0]
    prompt, code = rec["messages"][0]["content"], rec["messages"][1]["code"]
    assert code == "print(15 * 23)" and rec["kind"] == "off_by_one" and rec["split"] == "train"
    draft = prompt.split("### draft\n")[1].split("\n### run")[0]
    shown = prompt.split("### run: ok\n")[1].split("\n### fix")[0]
    again = sandbox.run(draft)
    assert again.status == "ok" and again.stdout.strip() == shown and shown != "345"   # the real output of the draft
    from_dict(rec)   # a valid conversation: what the SFT stage reads

    # a failing draft: its error's last line is what the prompt shows
    pairs = R.make_pairs(progs[:1], sandbox, per_program=1, kinds=("syntax_error",))
    assert "### run: error\nSyntaxError" in pairs[0]["messages"][0]["content"]
    pairs = R.make_pairs(progs[:1], sandbox, per_program=1, kinds=("missing_print",))
    assert "### run: no output\n\n### fix" in pairs[0]["messages"][0]["content"]


def test_real_code_fixtures_become_programs_that_print_their_test_output(sandbox):
    progs = R.programs_from_code_file(FIX / "apps.jsonl") + R.programs_from_code_file(FIX / "code_contests.jsonl")
    assert {p.request for p in progs} == {"Write a function add(a, b) that returns the sum of a and b.",
                                          "Read two integers a and b and print a + b."}
    for p in progs:
        r = sandbox.run(p.code)
        assert r.status == "ok" and r.stdout.strip() == p.output.strip() == "3", (p.code, r)
    pairs = R.make_pairs(progs, sandbox, per_program=3, seed=1)
    assert len(pairs) >= 4 and all(p["messages"][1]["code"] in {q.code.strip() for q in progs} for p in pairs)


def test_split_hygiene_only_train_programs_and_val_disjoint(sandbox, tmp_path):
    from hessgpt.data.routing.build import generate

    seen: set = set()
    recs = {s: generate(24, seed=5, sandbox=sandbox, progress=False, split=s, seen=seen)[0] for s in ("train", "dev", "test")}
    path = tmp_path / "mixed.jsonl"   # a file mixing the three splits: only train may be used
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for s in recs for r in recs[s]), encoding="utf-8")
    splits, stats = R.build([str(path)], [], sandbox, per_program=2, seed=0, val_fraction=0.3, generation_share=0.5)
    out = splits["train"] + splits["val"]
    assert out and stats["counts"]["skipped_split"] == len(recs["dev"]) + len(recs["test"])
    train_ids = {r["id"] for r in recs["train"]}
    assert {r["program"] for r in out} <= train_ids
    held_out_requests = {r["messages"][0]["content"] for s in ("dev", "test") for r in recs[s]}
    for r in out:
        assert not any(q in r["messages"][0]["content"] for q in held_out_requests)
        from_dict(r)
    # a program's pairs all sit in one split: train and val share no request
    assert not {r["program"] for r in splits["train"]} & {r["program"] for r in splits["val"]}
    kinds = Counter(r["kind"] for r in out)
    assert kinds["generate"] == stats["generation"] > 0 and len(kinds) >= 5


def test_cli_writes_train_val_stats(tmp_path, monkeypatch):
    from hessgpt.data import cli

    src = tmp_path / "routing.jsonl"
    src.write_text(json.dumps({"id": "routing:maths-x", "split": "train", "lang": "en", "messages": [
        {"role": "user", "content": "What is 15 * 23?"}, {"role": "assistant", "content": "", "code": "print(15 * 23)"},
        {"role": "tool", "name": "python", "content": "345\n"}, {"role": "assistant", "content": "345."}]}) + "\n")
    out = tmp_path / "refine"
    assert cli.main(["refine-pairs", "--routing", str(src), "--out", str(out), "--per-program", "3", "--workers", "1"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    rows = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()] + \
        [json.loads(x) for x in (out / "val.jsonl").read_text().splitlines()]
    assert stats["pairs"] == sum(r["kind"] != "generate" for r in rows) >= 2
    with pytest.raises(HessGPTError, match="no such routing file"):
        cli.main(["refine-pairs", "--routing", str(tmp_path / "nope.jsonl"), "--out", str(out)])


def test_code_instructions_become_programs_of_their_own_deterministic_output(sandbox):
    """Code Alpaca-style records (no test): Python that prints the same twice is kept with that output; what
    prints nothing, prints something else on a second run, fails or is not Python is dropped and counted."""
    stats = Counter()
    progs = R.self_outputs(R.programs_from_code_file(FIX / "code_instructions.json", stats), sandbox, stats)
    assert stats["skipped_not_python"] == 1                       # the JavaScript function
    assert (stats["dropped_self_no_output"], stats["dropped_self_nondeterministic"], stats["dropped_self_failed"]) == (1, 1, 1)
    assert {p.request: p.output for p in progs} == {
        "Print the squares of the numbers from 1 to 5.": "1\n4\n9\n16\n25\n",
        "Reverse the given string and print it.\ntext = \"bonjour\"": "ruojnob\n",
        "Compute the factorial of 6 with a recursive function and print it.": "720\n"}
    pairs = R.make_pairs(progs, sandbox, per_program=2, seed=0)
    assert pairs and {p["program"] for p in pairs} <= {p.source for p in progs}
    for rec in pairs:   # each draft really misbehaves, and its target is the original program
        assert rec["messages"][1]["code"] in {p.code.strip() for p in progs}
        from_dict(rec)


def test_code_file_errors_name_the_record(tmp_path):
    bad = tmp_path / "mixed.jsonl"
    bad.write_text('{"instruction": "x", "output": "print(1)"}\n{not json\n{"foo": 1}\n', encoding="utf-8")
    stats = Counter()
    with pytest.raises(HessGPTError, match=r"mixed.jsonl:3: neither an APPS, a CodeContests nor a code-instruction record \(keys \['foo'\]\)"):
        R.programs_from_code_file(bad, stats)
    assert stats["unreadable/corrupt_json"] == 1                  # a corrupt line is counted, not fatal
