"""Tool-use metrics on a scripted backend whose behaviour is known, so every number has an expected value."""

import json
from pathlib import Path

import pytest

from hessgpt.eval import tools as T
from hessgpt.events import Event

FIX = Path(__file__).parent.parent / "fixtures" / "eval"


class ScriptedBackend:
    """stream_chat answers the last user message from a script: {user text: [events]}; records the calls."""

    def __init__(self, script: dict[str, list[Event]]):
        self.script, self.calls = script, []

    def stream_chat(self, messages, params, tools=None):
        self.calls.append({"messages": messages, "tools": tools, "temperature": params.temperature})
        yield from self.script[messages[-1]["content"]]
        yield Event("done", data={"finish_reason": "stop", "prompt_tokens": 1, "completion_tokens": 1})


def coded(answer: str, status="ok", output="12\n"):
    return [Event("text", "Je calcule. "), Event("code", "print(3*4)", {"lang": "python"}),
            Event("result", output, {"status": status}), Event("text", answer)]


def plain(answer: str):
    return [Event("text", answer)]


def routing_records():
    """8 routing samples, 2 fr + 2 en needing code (reference 12, from the tool output), 2 fr + 2 en not."""
    recs = []
    for i, lang in enumerate(["fr", "fr", "en", "en"]):
        recs.append({"id": f"routing:pos{i}", "source": "routing", "lang": lang, "messages": [
            {"role": "user", "content": f"pos{i}: combien font 3 fois 4 ?"},
            {"role": "assistant", "content": "Je calcule.", "code": "print(3*4)"},
            {"role": "tool", "name": "python", "content": "12\n"},
            {"role": "assistant", "content": "Cela fait 12."}]})
    for i, lang in enumerate(["fr", "fr", "en", "en"]):
        recs.append({"id": f"routing:neg{i}", "source": "routing", "lang": lang, "messages": [
            {"role": "user", "content": f"neg{i}: bonjour"}, {"role": "assistant", "content": "Bonjour !"}]})
    return recs


def routing_script():
    return {
        # needed: coded on 3 of 4 (pos3 answers without code); pos1's code fails; right answer on pos0, pos2
        "pos0: combien font 3 fois 4 ?": coded("Cela fait 12."),
        "pos1: combien font 3 fois 4 ?": coded("Erreur, je ne sais pas.", status="error", output="NameError"),
        "pos2: combien font 3 fois 4 ?": coded("It is 12.0."),
        "pos3: combien font 3 fois 4 ?": plain("It is 13."),
        # not needed: code on 1 of 4 (neg2)
        "neg0: bonjour": plain("Bonjour !"), "neg1: bonjour": plain("Salut !"),
        "neg2: bonjour": coded("Hello!"), "neg3: bonjour": plain("Hi!"),
    }


def test_routing_execution_and_answers(tmp_path):
    data = tmp_path / "routing_val.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in routing_records()))
    samples = T.load_samples(data)
    assert [s.needs_code for s in samples] == [True] * 4 + [False] * 4
    assert [s.reference for s in samples] == [12.0] * 4 + [None] * 4
    assert samples[0].messages == [{"role": "user", "content": "pos0: combien font 3 fois 4 ?"}]

    backend = ScriptedBackend(routing_script())
    r = T.evaluate(backend, samples, progress=False)
    assert all(c["temperature"] == 0.0 for c in backend.calls)  # greedy
    o = r["overall"]
    assert (o["routing"]["tp"], o["routing"]["fp"], o["routing"]["fn"], o["routing"]["tn"]) == (3, 1, 1, 3)
    assert o["routing"]["precision"] == 0.75 and o["routing"]["recall"] == 0.75 and o["routing"]["f1"] == 0.75
    assert o["execution"] == {"executed": 4, "ok": 3, "success_rate": 0.75}
    assert o["answer"] == {"n": 4, "exact_match": 0.5}      # pos0 "12", pos2 "12.0"; pos1 error, pos3 "13"
    assert o["function_call"]["exact_match"] is None
    fr, en = r["per_lang"]["fr"], r["per_lang"]["en"]
    # fr: pos0, pos1 coded (tp 2), no fp -> precision 1, recall 1; en: pos2 coded, pos3 not, neg2 coded
    assert fr["routing"]["precision"] == 1.0 and fr["routing"]["recall"] == 1.0
    assert en["routing"]["precision"] == 0.5 and en["routing"]["recall"] == 0.5
    assert fr["execution"]["success_rate"] == 0.5 and en["execution"]["success_rate"] == 1.0
    assert fr["answer"]["exact_match"] == 0.5 and en["answer"]["exact_match"] == 0.5
    table = T.format_metrics(r)
    assert "| metric | en | fr | overall |" in table
    assert "| routing recall | 0.500 | 1.000 | 0.750 |" in table


def test_search_results_do_not_count_as_code_runs(tmp_path):
    s = T.Sample("x", "en", [{"role": "user", "content": "q"}], needs_code=False)
    b = ScriptedBackend({"q": [Event("search", "weather"), Event("result", "hits", {"status": "ok"}), Event("text", "Sunny.")]})
    o = T.run_sample(b, s, params=type("P", (), {"temperature": 0.0})())
    assert o.code_blocks == 0 and o.results == [] and o.text == "Sunny."


def test_gsm8k_en_and_fr():
    en, fr = T.load_samples(FIX / "gsm8k_test_en.jsonl"), T.load_samples(FIX / "gsm8k_test_fr.jsonl")
    assert len(en) == len(fr) == 20
    assert {s.lang for s in en} == {"en"} and {s.lang for s in fr} == {"fr"}
    assert en[0].reference == 18.0 and fr[2].reference == 70000.0 and fr[15].reference == 125.0
    script = {}
    for i, s in enumerate(en):   # en: always code; right answer on the first 10 of 20
        ans = s.reference if i < 10 else s.reference + 1
        script[s.messages[-1]["content"]] = coded(f"The answer is {ans:,.0f}.")
    for i, s in enumerate(fr):   # fr: never code; right on 5 of 20 (French thousands separator)
        ans = s.reference if i < 5 else s.reference + 1
        script[s.messages[-1]["content"]] = plain(f"La réponse est {ans:,.0f}.".replace(",", "\u202f"))
    r = T.evaluate(ScriptedBackend(script), en + fr, progress=False)
    assert r["per_lang"]["en"]["answer"]["exact_match"] == 0.5
    assert r["per_lang"]["fr"]["answer"]["exact_match"] == 0.25
    assert r["per_lang"]["en"]["routing"]["recall"] == 1.0 and r["per_lang"]["fr"]["routing"]["recall"] == 0.0
    assert r["overall"]["routing"]["recall"] == 0.5 and r["overall"]["routing"]["precision"] == 1.0
    assert r["overall"]["answer"]["exact_match"] == 0.375


def call(name, **args):
    return Event("tool_call", data={"name": name, "arguments": args, "id": "c"})


def test_bfcl_ast_matching():
    simple = T.load_samples(FIX / "bfcl_simple_python.jsonl")  # possible-answer file found by name
    par = T.load_samples(FIX / "bfcl_parallel_multiple.jsonl")
    assert simple[0].tools[0]["parameters"]["type"] == "object"  # BFCL "dict" -> JSON schema "object"
    q = lambda s: s.messages[-1]["content"]  # noqa: E731
    script = {
        q(simple[0]): [call("calculate_triangle_area", base=10, height=5)],                  # optional unit omitted: ok
        q(simple[1]): [call("math.factorial", number=5)],                                    # ok
        q(simple[2]): [call("math.hypot", x=4, y=5, z=0)],                                   # optional given allowed value: ok
        q(simple[3]): [call("algebra.quadratic_roots", a=1, b=3, c=2)],                      # wrong value
        q(simple[4]): [call("solve_quadratic_equation", a=2, b=6)],                          # required c missing
        q(par[0]): [call("math_toolkit.product_of_primes", count=5),                         # any order: ok
                    call("math_toolkit.sum_of_multiples", lower_limit=1, upper_limit=1000, multiples=[3, 5])],
        q(par[1]): [call("area_rectangle.calculate", length=7, breadth=3),                   # int for float: ok
                    call("area_circle.calculate", radius=5)],
        q(par[2]): [call("circle.calculate_area", radius=5), call("circle.calculate_circumference", diameter=10),
                    call("circle.calculate_area", radius=5)],                                # an extra call
    }
    backend = ScriptedBackend(script)
    r = T.evaluate(backend, simple + par, progress=False)
    assert [row["calls_correct"] for row in r["samples"]] == [True, True, True, False, False, True, True, False]
    assert r["overall"]["function_call"] == {"n": 8, "exact_match": 0.625}
    assert r["overall"]["routing"]["precision"] is None  # no routing labels on function-call data
    assert backend.calls[0]["tools"][0]["name"] == "calculate_triangle_area"


def test_value_matching_rules():
    assert T.value_matches("New York, NY", "new york ny")            # BFCL string normalisation
    assert not T.value_matches(7.5, 7)                                 # a non-integer float is not an int
    assert T.value_matches(7, 7.0) and not T.value_matches(True, 1)
    assert T.value_matches({"a": [1, 2]}, {"a": [1, 2]}) and not T.value_matches([2, 1], [1, 2])
    assert not T.call_matches({"name": "f", "arguments": {"x": 1, "y": 2}}, {"f": {"x": [1]}})  # unknown argument
    assert T.call_matches({"name": "f", "arguments": '{"x": 1}'}, {"f": {"x": [1]}})          # JSON-text arguments
    assert not T.call_matches({"name": "g", "arguments": {"x": 1}}, {"f": {"x": [1]}})


def test_conversation_and_xlam_function_calls():
    conv = {"id": "xlam:1", "source": "xlam", "lang": "en",
            "tools": [{"name": "get_weather", "description": "", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "messages": [{"role": "user", "content": "Weather in Paris and Lyon?"},
                         {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                                                                            {"name": "get_weather", "arguments": {"city": "Lyon"}}]},
                         {"role": "tool", "name": "get_weather", "content": "{}"},
                         {"role": "assistant", "content": "Sunny."}]}
    s = T.sample_from_record(conv, 1)
    assert s.needs_code is False and s.tools == conv["tools"]
    assert s.expected_calls == [{"get_weather": {"city": ["Paris"]}}, {"get_weather": {"city": ["Lyon"]}}]
    xlam = {"id": 0, "query": "Where can I find live giveaways for beta access and games?",
            "answers": "[{\"name\": \"live_giveaways_by_type\", \"arguments\": {\"type\": \"beta\"}}]",
            "tools": "[{\"name\": \"live_giveaways_by_type\", \"description\": \"\", \"parameters\": {}}]"}
    x = T.sample_from_record(xlam, 1)
    assert x.lang == "en" and x.expected_calls == [{"live_giveaways_by_type": {"type": ["beta"]}}]
    assert T.calls_match([{"name": "live_giveaways_by_type", "arguments": {"type": "beta"}}], x.expected_calls)
    assert not T.calls_match([{"name": "live_giveaways_by_type", "arguments": {"type": "game"}}], x.expected_calls)


def test_bad_inputs_name_the_record(tmp_path):
    from hessgpt.errors import HessGPTError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "no final number"}\n')
    with pytest.raises(HessGPTError, match="record 1"):
        T.load_samples(bad)
    bad.write_text('{"foo": 1}\n')
    with pytest.raises(HessGPTError, match="unknown format"):
        T.load_samples(bad)


def test_tools_cli_saves_json(tmp_path, monkeypatch, capsys):
    from hessgpt.eval import cli

    data = tmp_path / "routing_val.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in routing_records()))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    seen = {}

    def fake_backend(m1, m2=None, plain=False, code_votes=1):
        seen["paths"] = (m1, m2)
        seen["code_votes"] = code_votes
        return ScriptedBackend(routing_script())

    monkeypatch.setattr(cli, "load_backend", fake_backend)
    assert cli.main(["tools", "--model1", str(ckpt), "--data", str(data)]) == 0
    saved = json.loads((ckpt / "eval" / "tools.json").read_text())
    assert saved["kind"] == "tools" and saved["overall"]["routing"]["recall"] == 0.75
    assert seen["paths"] == (str(ckpt), None) and seen["code_votes"] == 1
    assert cli.main(["tools", "--model1", str(ckpt), "--data", str(data), "--code-votes", "3",
                     "--out", str(tmp_path / "v3.json")]) == 0
    assert seen["code_votes"] == 3
    assert "routing precision" in capsys.readouterr().out


def test_an_html_artifact_counts_as_the_code_block_a_web_request_needs():
    """Web requests are answered with an HTML/CSS/JS block (an artifact, never run): writing it is a correct
    routing decision, and it adds no execution to the success rate."""
    rec = {"id": "routing:web0", "source": "routing", "lang": "fr", "messages": [
        {"role": "user", "content": "web0: fais une page"},
        {"role": "assistant", "content": "Voici la page :", "code": "<h1>Bonjour</h1>", "code_lang": "html"},
        {"role": "assistant", "content": "Fini."}]}
    script = {"web0: fais une page": [Event("text", "Voici : "), Event("code", "<h1>Bonjour</h1>", {"lang": "html"}),
                                      Event("artifact", "<h1>Bonjour</h1>", {"lang": "html"}), Event("text", "Fini.")]}
    sample = T.sample_from_record(rec, 0)
    assert sample.needs_code
    result = T.evaluate(ScriptedBackend(script), [sample], progress=False)
    r = result["overall"]["routing"]
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (1, 0, 0, 0)
    assert result["overall"]["execution"]["executed"] == 0


class Model2ScriptedBackend(ScriptedBackend):
    """Two scripts: with model 2 (default) and, inside `model2_disabled()`, without it."""

    def __init__(self, with_m2, without_m2):
        super().__init__(with_m2)
        self.with_m2, self.without_m2, self.runs = with_m2, without_m2, []

    def model2_disabled(self):
        import contextlib

        @contextlib.contextmanager
        def off():
            self.script = self.without_m2
            try:
                yield self
            finally:
                self.script = self.with_m2
        return off()

    def stream_chat(self, messages, params, tools=None):
        self.runs.append((messages[-1]["content"], self.script is self.with_m2))
        yield from super().stream_chat(messages, params, tools)


def model2_scripts():
    def refined(used):
        return Event("refined_code", "print(3*4)", {"lang": "python", "reason": "error", "used": used,
                                                    "verdict": "used" if used else "failed"})
    err = Event("result", "NameError", {"status": "error"})
    ok = Event("result", "12\n", {"status": "ok"})
    code = Event("code", "print(3*y)", {"lang": "python"})
    with_m2 = {
        "pos0: combien font 3 fois 4 ?": coded("Cela fait 12."),                                   # not asked
        "pos1: combien font 3 fois 4 ?": [code, refined(True), ok, Event("text", "Cela fait 12.")],   # fixed
        "pos2: combien font 3 fois 4 ?": [code, refined(False), err, Event("text", "Erreur.")],      # asked, not used
        "pos3: combien font 3 fois 4 ?": [code, refined(True), Event("result", "13\n", {"status": "ok"}),
                                          Event("text", "Cela fait 13.")],                          # broke
    }
    without = {
        "pos0: combien font 3 fois 4 ?": coded("Cela fait 12."),
        "pos1: combien font 3 fois 4 ?": [code, err, Event("text", "Erreur.")],
        "pos2: combien font 3 fois 4 ?": [code, err, Event("text", "Erreur.")],
        "pos3: combien font 3 fois 4 ?": [code, err, Event("code", "print(3*4)", {"lang": "python"}), ok,
                                          Event("text", "Cela fait 12.")],                          # model 1 recovers
    }
    return with_m2, without


def test_model2_block_with_and_without_on_the_same_items(tmp_path):
    data = tmp_path / "routing_val.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in routing_records()[:4]))
    samples = T.load_samples(data)
    backend = Model2ScriptedBackend(*model2_scripts())
    r = T.evaluate(backend, samples, progress=False, model2=True)
    m = r["model2"]
    assert (m["n"], m["calls"], m["changed"], m["fixed"], m["broke"]) == (4, 3, 2, 1, 1)
    assert m["answer_correct_with"] == 0.5 and m["answer_correct_without"] == 0.5      # pos0 + pos1 / pos0 + pos3
    assert (m["right_with"], m["right_without"]) == (2, 2)
    assert m["executable_with"] == 0.75 and m["executable_without"] == 0.4              # 3/4 blocks; 2/5 blocks
    assert r["overall"]["answer"]["exact_match"] == m["answer_correct_with"]            # the tables are the "with" run
    # only the items whose result model 2 changed were run a second time, without it
    assert sorted(backend.runs) == sorted([(f"pos{i}: combien font 3 fois 4 ?", True) for i in range(4)] +
                                          [("pos1: combien font 3 fois 4 ?", False), ("pos3: combien font 3 fois 4 ?", False)])
    assert T.format_model2(m).count("|") > 10 and "1 / 1" in T.format_model2(m)
    # per call: why it was asked and the router's verdict on its program
    assert m["asked_because"] == {"error": 3} and m["verdicts"] == {"used": 2, "failed": 1}
    assert "used 2, failed 1" in T.format_model2(m)


def test_model2_block_needs_a_backend_that_can_turn_model2_off(tmp_path):
    data = tmp_path / "routing_val.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in routing_records()[:4]))
    with pytest.raises(T.HessGPTError, match="cannot run without it"):
        T.evaluate(ScriptedBackend(model2_scripts()[0]), T.load_samples(data), progress=False, model2=True)


def test_tools_cli_writes_the_model2_block(tmp_path, monkeypatch, capsys):
    from hessgpt.eval import cli

    data = tmp_path / "routing_val.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in routing_records()[:4]))
    ckpt, m2 = tmp_path / "ckpt", tmp_path / "m2"
    ckpt.mkdir()
    m2.mkdir()
    monkeypatch.setattr(cli, "load_backend", lambda m1, m2=None, plain=False, code_votes=1: Model2ScriptedBackend(*model2_scripts()))
    assert cli.main(["tools", "--model1", str(ckpt), "--model2", str(m2), "--data", str(data), "--no-baselines"]) == 0
    saved = json.loads((ckpt / "eval" / "tools.json").read_text())
    block = saved["model2"]
    assert block["checkpoint"] == str(m2) and {"calls", "changed", "fixed", "broke", "answer_correct_with",
                                               "answer_correct_without", "executable_with", "executable_without"} <= set(block)
    assert saved["per_data"]["routing_val"]["model2"]["fixed"] == 1
    assert "| model 2 | without | with |" in capsys.readouterr().out
    # without --model2: no block
    assert cli.main(["tools", "--model1", str(ckpt), "--data", str(data), "--no-baselines"]) == 0
    assert json.loads((ckpt / "eval" / "tools.json").read_text())["model2"] is None


def test_evaluate_refinement_counts_what_the_policy_does(tokenizer):
    """Model 2 (a stub that always writes the right program) behind the real router and sandbox: it is asked
    only on the drafts that fail (syntax error, missing print), fixes those, and never touches the rest."""
    from hessgpt.tools.router import ToolRouter
    from hessgpt.tools.sandbox import Sandbox

    class Model2:
        max_len = 4096

        def __init__(self):
            self.tokenizer = tokenizer

        def generate(self, ids, params):
            return tokenizer.encode("print(15 * 23)")

    rec = {"id": "routing:maths-1", "split": "dev", "lang": "fr", "messages": [
        {"role": "user", "content": "Calcule 15 * 23"}, {"role": "assistant", "content": "", "code": "print(15 * 23)"},
        {"role": "tool", "name": "python", "content": "345\n"}, {"role": "assistant", "content": "345."}]}
    with Sandbox() as sb:
        m2 = Model2()
        r = T.evaluate_refinement(ToolRouter(m2, sb, model2=m2), [rec])
    k = r["per_kind"]
    assert r["programs"] == 1 and set(k) == {"correct", "off_by_one", "wrong_operator", "missing_print", "syntax_error",
                                             "unused_input"}
    assert k["correct"]["asked"] == 0 and k["correct"]["right_with"] == k["correct"]["right_without"] == 1
    for kind in ("missing_print", "syntax_error"):
        assert (k[kind]["asked"], k[kind]["used"], k[kind]["fixed"], k[kind]["right_without"]) == (1, 1, 1, 0), kind
    for kind in ("off_by_one", "wrong_operator", "unused_input"):   # run ok, print a wrong number: not asked
        assert (k[kind]["asked"], k[kind]["right_with"], k[kind]["executable_with"]) == (0, 0, 1), kind
    m = r["mutated"]
    assert (m["n"], m["asked"], m["fixed"], m["broke"]) == (5, 2, 2, 0)
    assert "| all mutated | 5 | 2 |" in T.format_refinement(r)


def test_wrong_maths_answers_are_split_by_where_they_went_wrong():
    """result_right scores the last block's printed output like an answer: it separates code that computed the
    wrong thing from the right result restated wrongly; the code and outputs are kept per sample."""
    qs = [f"q{i}: 3 fois 4 ?" for i in range(6)]
    samples = [T.Sample(f"m{i}", "fr", [{"role": "user", "content": q}], needs_code=True,
                        reference={"type": "number", "value": 12}, category="maths") for i, q in enumerate(qs)]
    script = {qs[0]: coded("Cela fait 12."),                      # right
              qs[1]: coded("Cela fait 13."),                      # printed 12, stated 13
              qs[2]: coded("Cela fait 81.", output="81\n"),       # the code computed something else
              qs[3]: coded("Cela fait 12.", status="error", output="NameError: x"),   # an error, then a guess
              qs[4]: plain("Cela fait 12."),                      # right without code
              qs[5]: plain("Cela fait 7.")}                       # wrong without code: no code run
    r = T.evaluate(ScriptedBackend(script), samples, progress=False)
    m = r["overall"]["maths"]   # the wrong ones (m1, m2, m5) split three ways; the right ones count nowhere
    assert (m["n"], m["right"], m["no_code_run"], m["result_wrong"], m["result_right_stated_wrong"]) == (6, 3, 1, 1, 1)
    rows = {row["id"]: row for row in r["samples"]}
    assert rows["m1"]["code"] == ["print(3*4)"] and rows["m1"]["outputs"] == ["12\n"]
    assert [rows[f"m{i}"]["result_right"] for i in range(6)] == [True, True, False, False, None, None]
    assert "| maths wrong: result right, answer wrong | 1 |" in T.format_metrics(r)
