"""score_result on fixed answers, skips, multi-turn replay and baselines (issue 14)."""

import json

from hessgpt.eval import tools as T
from hessgpt.eval.scoring import score_result
from hessgpt.events import Event


def num(v, **kw):
    return {"type": "number", "value": v, **kw}


def test_number_right_and_restated_question():
    assert score_result(num(391), "Cela fait 391.", "Combien font 17 fois 23 ?", "fr") == (True, "ok")
    assert score_result(num(12), "It's 144.", "How much is 144 divided by 12?", "en") == (False, "restated_question")
    assert score_result(num(5), "5 * 1 = 5", "what is 5*1?", "en") == (True, "ok")
    assert score_result(num(12), "144 / 12", "How much is 144 divided by 12?", "en") == (False, "restated_question")
    assert score_result(num(392), "Cela fait 391.", "Combien font 17 fois 23 ?", "fr") == (False, "wrong_value")
    assert score_result(num(3), "Je ne sais pas.", "", "fr") == (False, "no_result")
    assert score_result(391.0, "Résultat : 391", "", None) == (True, "ok")  # a plain float reference


def test_decimal_conventions():
    assert score_result(num(1.5), "Il reste 1,5 litre.", "", "fr")[0]
    assert score_result(num(48875), "The total is 48,875.", "", "en")[0]
    assert score_result(num(12500), "Il faut 12 500 euros.", "", "fr")[0]
    assert score_result(num(1000), "That makes 1,000 dollars.", "", "en")[0]
    assert score_result(num(18.3, tol=0.01), "Environ 18,30 €.", "", "fr")[0]


def test_symbolic():
    d = {"type": "symbolic", "value": "6*x + 2"}
    assert score_result(d, "La dérivée est 2 + 6x.", "Dérive 3x^2 + 2x", "fr") == (True, "ok")
    assert score_result(d, "f'(x) = 6*x + 2", "Derivative of 3x^2+2x", None) == (True, "ok")
    assert score_result(d, "La dérivée de 3x^2 + 2x est 3x^2 + 2x.", "Dérive 3x^2 + 2x", "fr") == (False, "wrong_value")
    assert score_result({"type": "symbolic", "value": "x**3/3"}, "Une primitive : x³/3 + C.", "", "fr") == (True, "ok")
    assert score_result(d, "Je ne sais pas faire ça.", "", "fr") == (False, "no_result")
    assert score_result(d, "= __import__('os')", "", None) == (False, "no_result")  # never evaluated


def test_list_string_bool_set():
    ref = {"type": "list", "value": [1, 2, 3]}
    assert score_result(ref, "Voici la liste triée : [1, 2, 3]", "", "fr") == (True, "ok")
    assert score_result(ref, "Triée : 1, 2, 3.", "", "fr") == (True, "ok")
    assert score_result(ref, "Voici la liste triée : [1, 2]", "", "fr") == (False, "wrong_value")     # partial
    assert not score_result(ref, "Voici la liste triée : [3, 2, 1]", "", "fr")[0]
    assert score_result({**ref, "ordered": False}, "Voici la liste : [3, 2, 1]", "", "fr")[0]
    s = {"type": "string", "value": "olleh"}
    assert score_result(s, "À l'envers : « olleh ».", "", "fr")[0]
    assert not score_result(s, "À l'envers : ollehh.", "", "fr")[0]
    assert not score_result(s, "Reversed: OLLEH.", "", "en")[0]
    assert score_result({**s, "ignore_case": True}, "Reversed: OLLEH.", "", "en")[0]
    b = {"type": "bool", "value": True}
    assert score_result(b, "Oui, c'est un nombre premier.", "", "fr") == (True, "ok")
    assert score_result(b, "False", "", "en") == (False, "wrong_value")
    assert score_result({"type": "bool", "value": False}, "Non.", "", "fr") == (True, "ok")
    roots = {"type": "set_of_numbers", "value": [-2, 3]}
    assert score_result(roots, "Les solutions sont 3 et -2.", "Résous x^2 - x - 6 = 0", "fr")[0]
    assert not score_result(roots, "La solution est 3.", "Résous x^2 - x - 6 = 0", "fr")[0]


def test_wrong_language():
    assert score_result(num(12), "The result is 12.", "Combien font 3 fois 4 ?", "fr") == (False, "wrong_language")
    assert score_result(num(12), "12", "Combien font 3 fois 4 ?", "fr") == (True, "ok")  # too short to tell


class Scripted:
    """Answers by the last user message; records every message list it was given."""

    def __init__(self, script, context_length=None):
        self.script, self.seen, self.context_length = script, [], context_length
        self.tokenizer = CharTokenizer()

    def stream_chat(self, messages, params, tools=None):
        self.seen.append([dict(m) for m in messages])
        yield from self.script[messages[-1]["content"]]


class CharTokenizer:
    def render_for_generation(self, conv):
        return list("".join(m["content"] for m in conv["messages"]))


def coded(answer, out="391\n"):
    return [Event("text", "Je calcule."), Event("code", "print(17*23)", {"lang": "python"}),
            Event("result", out, {"status": "ok"}), Event("text", answer)]


def test_final_text_is_after_the_last_result_and_long_items_are_skipped():
    long_q = "Combien font 17 fois 23 ? " + "blabla " * 20
    samples = [T.Sample("a", "fr", [{"role": "user", "content": "Combien font 17 fois 23 ?"}], True, num(391), category="maths"),
               T.Sample("b", "fr", [{"role": "user", "content": long_q}], True, num(391), category="maths")]
    b = Scripted({"Combien font 17 fois 23 ?": coded("Cela fait 391.")}, context_length=60)
    params = type("P", (), {"temperature": 0.0, "max_new_tokens": 16})()
    r = T.evaluate(b, samples, params, progress=False, baselines=True)
    a_row, b_row = r["samples"]
    assert a_row["final_text"] == "Cela fait 391." and a_row["answer_correct"]
    assert b_row["skipped"] == "too_long" and b_row["reason"] == "too_long" and not b_row["answer_correct"]
    assert r["skipped"] == [{"id": "b", "reason": "too_long"}]
    assert r["overall"]["maths"] == {"n": 2, "right": 1, "exact_match": 0.5,   # one denominator, skip included
                                     "no_code_run": 1, "result_wrong": 0, "result_right_stated_wrong": 0}
    assert r["overall"]["skipped"] == 1
    assert set(r["baselines"]) == {"constant", "regex"}
    assert r["baselines"]["constant"]["overall"]["routing"]["tp"] == 0
    assert r["baselines"]["regex"]["overall"]["routing"]["tp"] == 2          # digits: it routes, cannot compute
    assert r["baselines"]["regex"]["overall"]["maths"]["right"] == 0
    table = T.format_metrics(r)
    assert "| metric | fr | fr regex | fr constant | overall | overall regex | overall constant |" in table
    assert "| skipped | 1 | 0 | 0 |" in table


def test_a_backend_error_is_a_counted_skip():
    class Boom:
        context_length = None

        def stream_chat(self, messages, params, tools=None):
            raise RuntimeError("out of memory")
            yield

    s = T.Sample("a", "en", [{"role": "user", "content": "q"}], True, num(1))
    r = T.evaluate(Boom(), [s], progress=False)
    assert r["samples"][0]["skipped"].startswith("error: RuntimeError") and r["overall"]["n"] == 1


def test_multiturn_replay_feeds_the_model_its_own_answer():
    conv = {"id": "mt-fr-001", "lang": "fr", "turns": [
        {"user": "Combien font 17 fois 23 ?", "needs_code": True, "reference": num(391)},
        {"user": "Et si je divise ce résultat par 17 ?", "needs_code": True, "reference": num(23)},
        {"user": "Super, merci !", "needs_code": False, "reference": None}]}
    b = Scripted({"Combien font 17 fois 23 ?": coded("Cela fait 391."),
                  "Et si je divise ce résultat par 17 ?": coded("On obtient 23.", out="23\n"),
                  "Super, merci !": [Event("text", "Avec plaisir !")]})
    r = T.evaluate_conversations(b, [conv])
    assert b.seen[1] == [{"role": "user", "content": "Combien font 17 fois 23 ?"},
                         {"role": "assistant", "content": "Je calcule.Cela fait 391."},
                         {"role": "user", "content": "Et si je divise ce résultat par 17 ?"}]
    assert r["overall"] == {"turns": 3, "turns_right": 3, "turn_rate": 1.0, "conversations": 1,
                            "conversations_right": 1, "conversation_rate": 1.0}
    b.script["Super, merci !"] = coded("Voilà.")   # code on a no-code turn: that turn and the conversation are wrong
    r = T.evaluate_conversations(b, [conv])
    assert r["per_lang"]["fr"]["turns_right"] == 2 and r["overall"]["conversations_right"] == 0
    assert r["conversations"][0]["turns"][2]["reason"] == "wrong_route"


def test_ood_records_and_cli_with_several_files(tmp_path, monkeypatch, capsys):
    from hessgpt.eval import cli

    ood = tmp_path / "tools_ood_fr.jsonl"
    ood.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [
        {"id": "ood-fr-001", "lang": "fr", "category": "maths", "kind": "arith", "needs_code": True,
         "messages": [{"role": "user", "content": "Combien font 17 fois 23 ?"}], "reference": num(391)},
        {"id": "ood-fr-002", "lang": "fr", "category": "negative", "kind": "small_talk", "needs_code": False,
         "messages": [{"role": "user", "content": "J'ai 3 enfants, des idées de vacances ?"}], "reference": None}]))
    mt = tmp_path / "tools_ood_multiturn.jsonl"
    mt.write_text(json.dumps({"id": "mt-fr-001", "lang": "fr", "turns": [
        {"user": "Combien font 17 fois 23 ?", "needs_code": True, "reference": num(391)}]}) + "\n")
    samples = T.load_samples(ood)
    assert samples[0].category == "maths" and samples[0].reference == num(391) and samples[1].needs_code is False
    script = {"Combien font 17 fois 23 ?": coded("Cela fait 391."),
              "J'ai 3 enfants, des idées de vacances ?": [Event("text", "La mer, la montagne !")]}
    monkeypatch.setattr(cli, "load_backend", lambda m1, m2=None, plain=False, code_votes=1: Scripted(script))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    assert cli.main(["tools", "--model1", str(ckpt), "--data", str(ood), str(mt)]) == 0
    saved = json.loads((ckpt / "eval" / "tools.json").read_text())
    assert saved["model"]["overall"]["maths"]["exact_match"] == 1.0
    assert saved["model"]["overall"]["negatives_with_digits_no_code"]["rate"] == 1.0
    assert saved["baselines"]["constant"]["overall"]["maths"]["exact_match"] == 0.0
    assert set(saved["per_data"]) == {"tools_ood_fr"}
    assert saved["conversations"]["tools_ood_multiturn"]["overall"]["turns_right"] == 1
    # the multi-turn replay has its baselines too: the regex router writes code for the sum but cannot state 391
    base = saved["conversations"]["tools_ood_multiturn"]["baselines"]
    assert base["regex"]["overall"]["turns_right"] == 0 and base["constant"]["overall"]["turns_right"] == 0
    out = capsys.readouterr().out
    assert "## tools_ood_fr" in out and "## tools_ood_multiturn" in out
    assert "| turns right (regex) | 0/1 | 0/1 |" in out


def test_routing_id_prefix_gives_the_category():
    rec = {"id": "routing:algo-fr-7", "lang": "fr", "reference": {"type": "bool", "value": True}, "messages": [
        {"role": "user", "content": "121 est-il un palindrome ?"},
        {"role": "assistant", "content": "", "code": "print(True)"}, {"role": "tool", "name": "python", "content": "True"}]}
    s = T.sample_from_record(rec, 1)
    assert s.category == "algo" and s.reference == {"type": "bool", "value": True}


def test_constant_baseline_speaks_the_prompt_language():
    assert T.ConstantBackend().answer([{"role": "user", "content": "Bonjour, comment vas-tu aujourd'hui ?"}]) == "Je ne sais pas."
    assert T.ConstantBackend().answer([{"role": "user", "content": "Hello, how are you today?"}]) == "I don't know."


def test_train_data_overlap_and_clean_tables(tmp_path, monkeypatch, capsys):
    """--train-data lists the items whose prompt a training user message (near-)duplicates and scores the rest."""
    from hessgpt.eval import cli

    ood = tmp_path / "tools_ood_fr.jsonl"
    ood.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [
        {"id": "ood-fr-001", "lang": "fr", "category": "maths", "kind": "arith", "needs_code": True,
         "messages": [{"role": "user", "content": "Combien font 17 fois 23 ?"}], "reference": num(391)},
        {"id": "ood-fr-002", "lang": "fr", "category": "maths", "kind": "arith", "needs_code": True,
         "messages": [{"role": "user", "content": "Et 12 fois 12, ça donne quoi ?"}], "reference": num(144)}]))
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"messages": [{"role": "user", "content": "combien font 17 fois 23 ?"},
                                              {"role": "assistant", "content": "391"}]}) + "\n")
    script = {"Combien font 17 fois 23 ?": coded("Cela fait 391."), "Et 12 fois 12, ça donne quoi ?": coded("Cela fait 140.")}
    monkeypatch.setattr(cli, "load_backend", lambda m1, m2=None, plain=False, code_votes=1: Scripted(script))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    assert cli.main(["tools", "--model1", str(ckpt), "--data", str(ood), "--train-data", str(train)]) == 0
    ov = json.loads((ckpt / "eval" / "tools.json").read_text())["overlap"]
    assert ov["ids"] == ["ood-fr-001"] and ov["overlaps"][0]["match"] == "exact"
    assert ov["clean"]["overall"]["n"] == 1 and ov["clean"]["overall"]["maths"]["exact_match"] == 0.0
    assert ov["clean"]["baselines"]["regex"]["overall"]["n"] == 1
    assert "overlap with the training data: 1 of 2 items (ood-fr-001)" in capsys.readouterr().out


def test_exact_roots_and_labelled_list_items():
    """sympy's closed-form roots are the right answer to a set_of_numbers reference; "quotient 43, remainder 2"
    is the list [43, 2] (both were scored wrong before: real answers from the quickstart's dev split)."""
    roots = {"type": "set_of_numbers", "value": [-6.701562119, -0.298437881]}
    q = "What are the solutions of 2x² + 14x + 4 = 0?"
    assert score_result(roots, "The solutions are: [-7/2 - sqrt(41)/2, -7/2 + sqrt(41)/2].", q, "en") == (True, "ok")
    assert score_result(roots, "The solutions are: [-7/2 - sqrt(41)/2, -7/2 + sqrt(43)/2].", q, "en") == (False, "wrong_value")
    assert score_result(roots, "Solutions: [-7/2 - sqrt(41)/2].", q, "en") == (False, "wrong_value")   # one root
    assert score_result({"type": "set_of_numbers", "value": [0.0, 3.0]}, "Solutions: [0, 3].", "", "en")[0]
    assert not score_result({"type": "set_of_numbers", "value": [1.0]}, "Solutions : [-I, I].", "", "fr")[0]
    div = {"type": "list", "value": [43, 2], "ordered": True}
    assert score_result(div, "776 = 18 × 43 + 2: quotient 43, remainder 2.", "Divide 776 by 18", "en") == (True, "ok")
    assert score_result({"type": "list", "value": [142, 0]}, "568 = 4 × 142 + 0 : le quotient est 142 et le reste 0.",
                        "Division de 568 par 4", "fr") == (True, "ok")
    assert score_result(div, "776 = 18 × 43 + 2: quotient 43, remainder 1.", "", "en") == (False, "wrong_value")
    assert not score_result({"type": "list", "value": ["chat", 2]}, "Résultat : chat, deux 2 trois", "", None)[0]


def test_score_output_reads_a_printed_value():
    from hessgpt.eval.scoring import score_output

    sym = {"type": "symbolic", "value": "x**6*exp(x) + 6*x**5*exp(x)"}
    assert score_output(sym, "x**6*exp(x) + 6*x**5*exp(x)\n") == (True, "ok")
    assert score_output(sym, "(x + 6)*x**5*exp(x)\n") == (True, "ok")                   # equivalent
    assert score_output(sym, "x**6*exp(x)\n") == (False, "wrong_value")
    assert score_output({"type": "list", "value": [7, 8]}, "7\n8\n") == (True, "ok")      # one item per line
    assert score_output({"type": "list", "value": [7, 8]}, "7\n9\n") == (False, "wrong_value")
    assert score_output({"type": "list", "value": [1, 2, 3]}, "[1, 2, 3]\n") == (True, "ok")
    assert score_output({"type": "set_of_numbers", "value": [-0.86483984, 8.86483984]},
                        "[4 - sqrt(213)/3, 4 + sqrt(213)/3]\n") == (True, "ok")
    assert score_output(num(345), "345\n") == (True, "ok")
    assert score_output(num(345), "344\n") == (False, "wrong_value")
    assert score_output({"type": "bool", "value": True}, "True\n") == (True, "ok")
    assert score_output(num(3), "Traceback ...\nNameError: name 'x' is not defined\n")[0] is False
    assert score_output(num(3), "") == (False, "no_result")
