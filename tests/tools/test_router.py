"""The tool loop with a scripted model 1 (fixed token sequences), a scripted model 2 and the real sandbox."""

import pytest
import torch

from hessgpt.engine import SamplingParams
from hessgpt.events import Event
from hessgpt.tools.router import HAND_BACK, INBAND_TOOLS, InbandTool, RouterConfig, ToolRouter


class ScriptedGeneration:
    def __init__(self, engine, prompt_ids):
        self.engine, self.fed, self.script = engine, list(prompt_ids), list(engine.script)
        self.space_left = 10_000

    def next_token(self):
        return self.script.pop(0) if self.script else self.engine.tokenizer.end_id

    def feed(self, ids):
        self.fed.extend(ids)


class ScriptedEngine:
    """Stands in for Engine: `session` replays `script`; `generate` (model 2) returns `reply`."""

    def __init__(self, tokenizer, script=(), reply=()):
        self.tokenizer, self.script, self.reply, self.max_len = tokenizer, list(script), list(reply), 4096
        self.sessions = []

    def session(self, prompt_ids, params):
        self.sessions.append(ScriptedGeneration(self, prompt_ids))
        return self.sessions[-1]

    def generate(self, prompt_ids, params):
        self.generate_prompt = prompt_ids
        return list(self.reply)


def turn(tok, text="", code=None, after=None, raw=None):
    ids = tok.encode(text)
    if code is not None:
        ids += [tok.code_id] + tok.encode(code) + [tok.end_id]
    if after is not None:
        ids += tok.encode(after)
    return ids + (raw or []) + [tok.end_id]


@pytest.fixture(scope="module")
def sandbox():
    from hessgpt.tools.sandbox import Sandbox

    with Sandbox() as sb:
        yield sb


def run(router, tok, prompt="Calcule 15 * 23"):
    ids = tok.render_for_generation([{"role": "user", "content": prompt}])
    return list(router.stream_turn(ids, SamplingParams(max_new_tokens=500), request=prompt))


def drain(steps):
    """A handler's Events and its return value (`result = yield from ...` in the loop)."""
    events = []
    while True:
        try:
            events.append(next(steps))
        except StopIteration as stop:
            return events, stop.value


def text_of(events):
    return "".join(e.text for e in events if e.type == "text")


def test_no_code(tokenizer, sandbox):
    eng = ScriptedEngine(tokenizer, turn(tokenizer, "Bonjour ! Je vais bien."))
    events = run(ToolRouter(eng, sandbox), tokenizer, "Salut")
    assert [e.type for e in events if e.type != "text"] == ["done"]
    assert text_of(events) == "Bonjour ! Je vais bien." and events[-1].data["finish_reason"] == "stop"


def test_one_code_block_result_injected(tokenizer, sandbox):
    eng = ScriptedEngine(tokenizer, turn(tokenizer, "Je calcule.", "print(15 * 23)", " Le résultat est 345."))
    events = run(ToolRouter(eng, sandbox), tokenizer)
    types = [e.type for e in events if e.type != "text"]
    assert types == ["code", "result", "done"]
    code, result = events[[e.type for e in events].index("code")], next(e for e in events if e.type == "result")
    assert code.text == "print(15 * 23)" and result.text == "345\n" and result.data["status"] == "ok"
    fed = eng.sessions[0].fed
    # the closing <|end|> of the code block is fed before the injected result, then the model continues
    inject = [tokenizer.end_id, tokenizer.result_id] + tokenizer.encode("345\n") + [tokenizer.end_id]
    start = next(i for i in range(len(fed)) if fed[i:i + len(inject)] == inject)
    assert fed[start - 1] != tokenizer.end_id and tokenizer.decode(fed[start + len(inject):]).startswith(" Le résultat")
    assert text_of(events) == "Je calcule.\n\nLe résultat est 345."  # one blank line between the two parts


def test_model2_refines_the_code(tokenizer, sandbox):
    eng = ScriptedEngine(tokenizer, turn(tokenizer, "", "print(15 * 23", " C'est 345."))  # model 1's code is broken
    model2 = ScriptedEngine(tokenizer, reply=tokenizer.encode("print(15 * 23)"))
    events = run(ToolRouter(eng, sandbox, model2=model2), tokenizer)
    refined = next(e for e in events if e.type == "refined_code")
    assert refined.text == "print(15 * 23)"
    assert refined.data["reason"] == "error" and refined.data["used"] and refined.data["verdict"] == "used"
    assert refined.data["detail"].startswith("SyntaxError")
    result = next(e for e in events if e.type == "result")
    assert result.text == "345\n" and result.data["refined"] and result.data["model1_status"] == "error"
    assert model2.generate_prompt[-1] == tokenizer.code_id  # model 2 is asked to write a code block
    # the prompt is the refinement template: the request, the draft and its real run
    prompt = tokenizer.decode(model2.generate_prompt)
    assert "### request\nCalcule 15 * 23\n### draft\nprint(15 * 23\n### run: error\nSyntaxError" in prompt
    assert "345\n" in tokenizer.decode(eng.sessions[0].fed)   # model 1 reads the refined program's result


class CountingEngine(ScriptedEngine):
    def generate(self, prompt_ids, params):
        self.generate_calls = getattr(self, "generate_calls", 0) + 1
        self.generate_params = params
        return super().generate(prompt_ids, params)


def test_model2_is_not_asked_when_model1s_code_works(tokenizer, sandbox):
    """Model 2 would print something else (360): it is never asked, model 1's right result stays."""
    eng = ScriptedEngine(tokenizer, turn(tokenizer, "", "print(17 * 23)", " 391."))
    model2 = CountingEngine(tokenizer, reply=tokenizer.encode("print(17 * 24)"))
    events = run(ToolRouter(eng, sandbox, model2=model2), tokenizer)
    assert not any(e.type in ("refined_code", "refine_skipped") for e in events)
    assert getattr(model2, "generate_calls", 0) == 0
    result = next(e for e in events if e.type == "result")
    assert result.text == "391\n" and not result.data["refined"]


def test_a_refinement_that_prints_nothing_keeps_model1s_result(tokenizer, sandbox):
    """Seen with the quickstart's model 2: a bare string literal parses and runs "ok" but prints nothing;
    it is not used (model 1's run stays what model 1 reads)."""
    eng = ScriptedEngine(tokenizer, turn(tokenizer, "", "x = 17 * 23", " 391."))   # runs, prints nothing
    model2 = ScriptedEngine(tokenizer, reply=tokenizer.encode('""""""""'))
    events = run(ToolRouter(eng, sandbox, model2=model2), tokenizer)
    refined = next(e for e in events if e.type == "refined_code")
    assert refined.text == '""""""""' and refined.data["reason"] == "no output"
    assert refined.data["verdict"] == "no_output" and not refined.data["used"]
    result = next(e for e in events if e.type == "result")
    assert result.data["status"] == "ok" and result.text == "" and not result.data["refined"]
    assert "(no output: use print() to show a result)" in tokenizer.decode(eng.sessions[0].fed)


@pytest.mark.parametrize("reply, verdict", [("print(1/0)", "failed"), ("print(15 * 23", "not_python"),
                                            ("print(None)", "still_wrong"), ("", "not_python"),
                                            ("print(x for x in [345])", "unchanged")])
def test_a_refinement_that_fails_is_not_used(tokenizer, sandbox, reply, verdict):
    eng = ScriptedEngine(tokenizer, turn(tokenizer, "", "print(x for x in [345])", " 345."))  # a generator's repr
    model2 = ScriptedEngine(tokenizer, reply=tokenizer.encode(reply))
    events = run(ToolRouter(eng, sandbox, model2=model2), tokenizer)
    refined = next(e for e in events if e.type == "refined_code")
    assert refined.data["reason"] == "object repr" and refined.data["verdict"] == verdict and not refined.data["used"]
    result = next(e for e in events if e.type == "result")
    assert result.text.startswith("<generator object") and not result.data["refined"]


def test_a_refinement_that_drops_a_number_of_the_request_is_not_used(tokenizer, sandbox):
    """Measured (docs/tools.md): without this rule a model 2 that writes running-but-wrong programs replaced 146
    failing drafts of 351 to fix 5; with it, 15 to fix 4."""
    eng = ScriptedEngine(tokenizer, turn(tokenizer, "", "print(15 * 23", " 345."))
    model2 = ScriptedEngine(tokenizer, reply=tokenizer.encode("print(15 * 2)"))          # runs, prints 30
    events = run(ToolRouter(eng, sandbox, model2=model2), tokenizer)
    refined = next(e for e in events if e.type == "refined_code")
    assert refined.data["verdict"] == "still_wrong" and not refined.data["used"]
    assert next(e for e in events if e.type == "result").data["status"] == "error"


def test_an_output_that_cannot_be_an_answer_is_refined():
    from hessgpt.tools.router import output_mismatch

    assert output_mismatch("x", "<generator object <genexpr> at 0x7f>\n") == "object repr"
    assert output_mismatch("x", "<function f at 0x7f00>") == "object repr"
    assert output_mismatch("x", "None\n") == "prints None" and output_mismatch("x", "nan") == "not a number"
    for fine in ("345", "['zucchini', 'date']", "False", "[<1>]", "x < y > z", "-14"):
        assert output_mismatch("Calcule 15 * 23", fine) is None, fine


def test_missing_operands():
    from hessgpt.tools.router import missing_operands

    assert missing_operands("Calcule 15 * 23", "print(15 * 24)") == ["23"]
    assert missing_operands("Combien font 60 % de 474,26 ?", "print(round(474.26 * 60 / 100, 2))") == []
    assert missing_operands("Trouve les racines de -x² - 5x + 17 = 0", "print(sp.solve(-1*x**2 + -5*x + 17, x))") == []
    assert missing_operands("Il a 70 000 euros et 1,000 dollars", "print(70000 + 1000)") == []
    assert missing_operands("17 fois 23 ?", "print(17 * 23.0)") == []


def test_check_operands_asks_model2_and_needs_its_code_to_have_them(tokenizer, sandbox):
    """Opt-in (RouterConfig.check_operands): model 1 ran fine but dropped an operand of the request; model 2's
    program is used only if it contains it."""
    for reply, used in (("print(15 * 23)", True), ("print(15 * 25)", False)):
        eng = ScriptedEngine(tokenizer, turn(tokenizer, "", "print(15 * 24)", " 360."))
        model2 = ScriptedEngine(tokenizer, reply=tokenizer.encode(reply))
        events = run(ToolRouter(eng, sandbox, model2=model2, config=RouterConfig(check_operands=True)), tokenizer)
        refined = next(e for e in events if e.type == "refined_code")
        assert refined.data["reason"] == "operand 23 of the request not in the code" and refined.data["used"] is used
        assert next(e for e in events if e.type == "result").text == ("345\n" if used else "360\n")
    eng = ScriptedEngine(tokenizer, turn(tokenizer, "", "print(15 * 24)", " 360."))   # off by default
    events = run(ToolRouter(eng, sandbox, model2=ScriptedEngine(tokenizer, reply=tokenizer.encode("print(1)"))), tokenizer)
    assert not any(e.type == "refined_code" for e in events)


def test_refinement_skipped_when_model2s_context_is_too_small(tokenizer, sandbox):
    eng = ScriptedEngine(tokenizer, turn(tokenizer, "", "print(15 * 23", " 345."))
    model2 = CountingEngine(tokenizer, reply=tokenizer.encode("print(15 * 23)"))
    model2.max_len = 40
    events = run(ToolRouter(eng, sandbox, model2=model2), tokenizer)
    skipped = next(e for e in events if e.type == "refine_skipped")
    assert skipped.data["skipped"] == "context" and skipped.data["reason"] == "error" and skipped.data["context"] == 40
    assert "too small" in skipped.text and getattr(model2, "generate_calls", 0) == 0
    assert next(e for e in events if e.type == "result").data["status"] == "error"


def test_refine_budget_is_sized_to_the_program(tokenizer, sandbox):
    eng = ScriptedEngine(tokenizer, turn(tokenizer, "", "print(15 * 23", " 345."))
    model2 = CountingEngine(tokenizer, reply=tokenizer.encode("print(15 * 23)"))
    run(ToolRouter(eng, sandbox, model2=model2), tokenizer)
    n = len(tokenizer.encode("print(15 * 23"))
    assert model2.generate_params.max_new_tokens == 2 * n + 32 < RouterConfig().refine_max_tokens
    assert model2.generate_params.temperature == 0.0


def test_error_then_recovery(tokenizer, sandbox):
    script = turn(tokenizer, "", "print(1/0)", None, raw=[tokenizer.code_id] + tokenizer.encode("print(1/1)") + [tokenizer.end_id]
                  + tokenizer.encode(" Voilà : 1.0"))
    eng = ScriptedEngine(tokenizer, script)
    events = run(ToolRouter(eng, sandbox), tokenizer)
    results = [e for e in events if e.type == "result"]
    assert [r.data["status"] for r in results] == ["error", "ok"]
    assert "ZeroDivisionError" in results[0].text and results[1].text == "1.0\n"
    assert "ZeroDivisionError" in tokenizer.decode(eng.sessions[0].fed)  # the model reads its error back
    assert text_of(events).endswith("Voilà : 1.0")


def test_html_block_is_an_artifact_never_executed(tokenizer, sandbox):
    html = "<html><body><script>alert(1)</script><h1>Bonjour</h1></body></html>"
    eng = ScriptedEngine(tokenizer, turn(tokenizer, "Voici la page :", html, " Fini."))
    events = run(ToolRouter(eng, sandbox), tokenizer, "Fais une page web")
    assert [e.type for e in events if e.type != "text"] == ["code", "artifact", "done"]
    assert tokenizer.result_id not in eng.sessions[0].fed


def test_call_limit(tokenizer, sandbox):
    block = [tokenizer.code_id] + tokenizer.encode("print(2)") + [tokenizer.end_id]
    eng = ScriptedEngine(tokenizer, block * 4 + tokenizer.encode("ok") + [tokenizer.end_id])
    events = run(ToolRouter(eng, sandbox, config=RouterConfig(max_tool_calls=2)), tokenizer)
    statuses = [e.data["status"] for e in events if e.type == "result"]
    assert statuses == ["ok", "ok", "limit", "limit"]
    assert events[-1].data["finish_reason"] == "stop"


def test_function_call_registered_and_client_side(tokenizer, sandbox):
    from hessgpt.tools.registry import Tool, ToolRegistry

    reg = ToolRegistry()
    reg.register(Tool("add", "Add", {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                                     "required": ["a", "b"]}, lambda a, b: a + b))
    call = [tokenizer.tool_call_id] + tokenizer.encode('{"name": "add", "arguments": {"a": 2, "b": 3}}') + [tokenizer.end_id]
    eng = ScriptedEngine(tokenizer, call + tokenizer.encode("5") + [tokenizer.end_id])
    events = run(ToolRouter(eng, sandbox, registry=reg), tokenizer)
    assert next(e for e in events if e.type == "tool_call").data == {"name": "add", "arguments": {"a": 2, "b": 3}, "id": events[0].data["id"]}
    assert next(e for e in events if e.type == "tool_result").text == "5"
    # a tool declared by the API client is handed back instead of run
    eng = ScriptedEngine(tokenizer, call + tokenizer.encode("5") + [tokenizer.end_id])
    ids = tokenizer.render_for_generation([{"role": "user", "content": "2+3"}])
    events = list(ToolRouter(eng, sandbox, registry=reg).stream_turn(ids, SamplingParams(), client_tools={"add"}))
    assert events[-1].data["finish_reason"] == "tool_calls"


def _add_registry():
    from hessgpt.tools.registry import Tool, ToolRegistry

    return ToolRegistry([Tool("add", "Add", {"type": "object", "properties": {"a": {"type": "number"},
                              "b": {"type": "number"}}, "required": ["a", "b"]}, lambda a, b: a + b)])


@pytest.mark.parametrize("body", [
    'Sure: {"name": "add", "arguments": {"a": 2, "b": 3}} I will add them.',   # text around the object
    "{'name': 'add', 'arguments': {'a': 2, 'b': 3}}",                          # Python literal
    '{"name": "add", "arguments": "{\\"a\\": 2, \\"b\\": 3}"}',                   # arguments as a JSON string
])
def test_function_call_is_parsed_leniently(tokenizer, body):
    """What a small model writes runs through the router's one parser (hessgpt.tools.calls), not a strict json.loads."""
    router = ToolRouter(ScriptedEngine(tokenizer), registry=_add_registry())
    events, response = drain(router.call_function(body, set()))
    assert [e.type for e in events] == ["tool_call", "tool_result"]
    assert events[0].data["name"] == "add" and events[0].data["arguments"] == {"a": 2, "b": 3}
    assert response == "5" and "error" not in events[0].data
    call = [tokenizer.tool_call_id] + tokenizer.encode(body) + [tokenizer.end_id]
    eng = ScriptedEngine(tokenizer, call + tokenizer.encode("5") + [tokenizer.end_id])
    events = run(ToolRouter(eng, registry=_add_registry()), tokenizer)   # the live loop, through the tokenizer
    assert [e.data["arguments"] for e in events if e.type == "tool_call"] == [{"a": 2, "b": 3}]
    assert next(e for e in events if e.type == "tool_result").text == "5"
    assert tokenizer.decode(eng.sessions[0].fed).endswith("5")   # the result went into model 1's context


@pytest.mark.parametrize("body, why", [
    ('{"name": add, "arguments": {"a": 2}}', "invalid JSON"),
    ("I would call add with 2 and 3", "no JSON object"),
    ('{"name": "add", "arguments": [2, 3]}', "must be a JSON object, got list"),
])
def test_malformed_function_call_is_an_error_event_quoting_it(tokenizer, body, why):
    call = [tokenizer.tool_call_id] + tokenizer.encode(body) + [tokenizer.end_id]
    eng = ScriptedEngine(tokenizer, call + tokenizer.encode("Sorry.") + [tokenizer.end_id])
    events = run(ToolRouter(eng, registry=_add_registry()), tokenizer)   # no exception
    [ev] = [e for e in events if e.type == "tool_call"]
    assert ev.data["name"] is None and ev.text == body
    assert why in ev.data["error"] and repr(body) in ev.data["error"]   # says why and names the offending text
    assert not any(e.type == "tool_result" for e in events) and events[-1].data["finish_reason"] == "stop"
    fed = tokenizer.decode(eng.sessions[0].fed)
    assert why in fed and text_of(events).endswith("Sorry.")   # the error went back to the model, which went on


def test_real_engine_tool_loop_injects_into_the_kv_cache(tiny_ckpt, sandbox):
    """With the real engine the injected result must land in the cache exactly as a prompt would."""
    import hessgpt
    from hessgpt.engine import Engine

    model, tok = hessgpt.load(tiny_ckpt)
    engine = Engine(model, tok)
    prompt = tok.render_for_generation([{"role": "user", "content": "2+2"}])
    forced = [tok.code_id] + tok.encode("print(2+2)") + [tok.end_id]

    gen = engine.session(prompt, SamplingParams())
    for t in forced:
        gen.feed([t])
    gen.feed([tok.result_id] + tok.encode("4\n") + [tok.end_id])
    whole = engine.session(prompt + forced + [tok.result_id] + tok.encode("4\n") + [tok.end_id], SamplingParams())
    assert torch.allclose(gen.logits, whole.logits, atol=1e-5)


def test_dual_backend_wires_calculator_and_search(tiny_ckpt, tmp_path, tokenizer):
    """The real backend: the calculator tool is registered by default; a search index answers <search>."""
    from hessgpt.serve.dual import DualModelBackend
    from hessgpt.tools.search import SearchIndex

    doc = tmp_path / "doc.md"
    doc.write_text("# HessGPT\nHessGPT est un modèle bilingue entraîné sur un processeur.\n", encoding="utf-8")
    SearchIndex.build([str(doc)], str(tmp_path / "idx.db"))
    backend = DualModelBackend(tiny_ckpt, tools=True, search_index=str(tmp_path / "idx.db"))
    try:
        assert "calculator" in backend.router.registry and "search" in backend.router.registry
        events, hits = drain(backend.router.run_search("modele bilingue"))
        assert "bilingue" in hits and events[0].type == "search"
        call = '{"name": "calculator", "arguments": {"expression": "15 * 23"}}'
        _, out = drain(backend.router.call_function(call, set()))
        assert out == "345"
    finally:
        backend.close()


def test_text_before_and_after_the_tool_are_joined_by_a_blank_line(tokenizer, sandbox):
    """Not glued ("Je lance un petit script.Résultat : 100."): exactly one "\\n\\n" between the two parts."""
    for lead, after in [("Je lance un petit script.", "Résultat : 100."), ("Je lance un petit script. ", " Résultat : 100."),
                        ("Je lance un petit script.\n", "\n\nRésultat : 100.")]:
        eng = ScriptedEngine(tokenizer, turn(tokenizer, lead, "print(10 * 10)", after))
        events = run(ToolRouter(eng, sandbox), tokenizer, "Calcule 10 * 10")
        assert text_of(events) == "Je lance un petit script.\n\nRésultat : 100.", (lead, after)
        kinds = [e.type for e in events]
        assert kinds.index("code") < kinds.index("result") < max(i for i, k in enumerate(kinds) if k == "text")
        # what the model itself reads is unchanged: the spacing is only in the text events
        assert tokenizer.decode(eng.sessions[0].fed).count("Je lance un petit script.") == 1


def test_spacing_without_lead_text_and_with_two_tools(tokenizer, sandbox):
    code = [tokenizer.code_id] + tokenizer.encode("print(2)") + [tokenizer.end_id]
    eng = ScriptedEngine(tokenizer, code + tokenizer.encode(" Deux.") + [tokenizer.end_id])
    assert text_of(run(ToolRouter(eng, sandbox), tokenizer)) == "Deux."  # no separator before the first text
    script = tokenizer.encode("A.") + code + tokenizer.encode(" B.") + code + code + tokenizer.encode("C.") + [tokenizer.end_id]
    eng = ScriptedEngine(tokenizer, script)
    assert text_of(run(ToolRouter(eng, sandbox), tokenizer)) == "A.\n\nB.\n\nC."


def test_turn_text_streaming_deltas():
    from hessgpt.tools.router import TurnText

    s = TurnText()
    out = [s.push(d) for d in ["Bonjour", " ", "le", " monde. ", "\n"]]
    assert "".join(out) == "Bonjour le monde."  # trailing whitespace held
    s.step()
    out += [s.push(d) for d in [" ", "\n", "Ok", "\n\n", "fin"]]
    assert "".join(out) == "Bonjour le monde.\n\nOk\n\nfin"


# ---- the dual backend with REAL tiny models (trained here, in seconds, to the behaviour each test needs) ----

def overfit(tokenizer, conversations, path, steps=300, seed=0):
    """A `tiny` HessGPT checkpoint (context 512) trained on a few conversations until it repeats them (loss on
    the assistant's tokens, AdamW; one thread: ~20 ms a step, 8x faster than two on a busy 2-core machine),
    saved to `path`: a real model, not a script."""
    import torch.nn.functional as F

    from hessgpt import checkpoint
    from hessgpt.config import ModelConfig
    from hessgpt.model import Transformer

    torch.manual_seed(seed)
    cfg = ModelConfig.preset("tiny", vocab_size=tokenizer.vocab_size, context_length=512)
    model = Transformer(cfg).init_weights(seed=seed)
    rendered = [tokenizer.render(conv) for conv in conversations]
    T = max(len(ids) for ids, _ in rendered) - 1
    x = torch.full((len(rendered), T), tokenizer.pad_id)     # one right-padded batch [B, T]
    y = torch.full((len(rendered), T), -100)
    for b, (ids, mask) in enumerate(rendered):
        x[b, : len(ids) - 1] = torch.tensor(ids[:-1])
        y[b, : len(ids) - 1] = torch.tensor([t if m else -100 for t, m in zip(ids[1:], mask[1:])])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        for _ in range(steps):
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    checkpoint.save(str(path), model, tokenizer, meta={"stage": "test"})
    return str(path), loss.item()


BROKEN, RIGHT = "Calcule 15 * 23", "Calcule 17 * 23"


@pytest.fixture(scope="module")
def dual(tokenizer, sandbox, tmp_path_factory):
    """Model 1 writes broken code for BROKEN and right code for RIGHT; model 2 learnt the refinement prompt of
    BROKEN's draft (-> the fixed program) and, if it were asked about RIGHT's draft, would print 17 * 24."""
    from hessgpt.data.refine import refine_prompt
    from hessgpt.serve.dual import DualModelBackend

    tmp = tmp_path_factory.mktemp("dual")
    m1 = [[{"role": "user", "content": BROKEN}, {"role": "assistant", "content": "", "code": "print(15 * 23"}],
          [{"role": "user", "content": RIGHT}, {"role": "assistant", "content": "", "code": "print(17 * 23)"}]]
    m2 = []
    for request, draft, fixed in ((BROKEN, "print(15 * 23", "print(15 * 23)"), (RIGHT, "print(17 * 23)", "print(17 * 24)")):
        r = sandbox.run(draft)
        m2.append([{"role": "user", "content": refine_prompt(request, draft, r.status, r.stdout, r.stderr)},
                   {"role": "assistant", "content": "", "code": fixed}])
    p1, loss1 = overfit(tokenizer, m1, tmp / "model1", seed=0)
    p2, loss2 = overfit(tokenizer, m2, tmp / "model2", seed=1)
    assert loss1 < 0.05 and loss2 < 0.05, (loss1, loss2)   # learnt (each test checks the generated tokens)
    backend = DualModelBackend(p1, p2, sandbox=sandbox)
    yield backend


def chat(backend, prompt):
    return list(backend.stream_chat([{"role": "user", "content": prompt}], SamplingParams(max_new_tokens=40)))


def test_real_model2_refines_model1s_failing_code(dual):
    assert dual.model2 is not None and dual.model2.max_len == 512
    events = chat(dual, BROKEN)
    code = next(e for e in events if e.type == "code")
    assert code.text == "print(15 * 23"                       # model 1's (real) broken program
    refined = next(e for e in events if e.type == "refined_code")
    assert refined.text == "print(15 * 23)" and refined.data["used"] and refined.data["reason"] == "error"
    result = next(e for e in events if e.type == "result")
    assert result.text == "345\n" and result.data["refined"] and result.data["model1_status"] == "error"
    with dual.model2_disabled():                                # the same item without model 2
        events = chat(dual, BROKEN)
        assert not any(e.type == "refined_code" for e in events)
        assert next(e for e in events if e.type == "result").data["status"] == "error"
    assert dual.router.config.refine_with_model2


def test_real_model2_that_prints_something_else_never_replaces_a_right_answer(dual, sandbox):
    events = chat(dual, RIGHT)
    assert next(e for e in events if e.type == "code").text == "print(17 * 23)"
    assert not any(e.type in ("refined_code", "refine_skipped") for e in events)
    assert next(e for e in events if e.type == "result").text == "391\n"
    # asked anyway, this model 2's program runs and prints something else: the policy is what keeps 391
    first = sandbox.run("print(17 * 23)")
    refined, info = dual.router.refine("print(17 * 23)", RIGHT, first)
    assert refined == "print(17 * 24)" and sandbox.run(refined).stdout == "408\n"
    # and were 391 a failure, this program would still be refused: it drops the request's 23, which model 1 had
    assert dual.router._judge("print(17 * 23)", refined, first, RIGHT)[0] == "still_wrong"


def test_ask_and_chat_show_the_refined_program_and_why(dual):
    import io

    from hessgpt.chat import print_events

    out = io.StringIO()
    turn_ = print_events(iter(chat(dual, BROKEN)), out=out)
    text = out.getvalue()
    assert "code refined by model 2 (error: SyntaxError: '(' was never closed; used)" in text
    assert text.index("print(15 * 23\n") < text.index("print(15 * 23)") < text.index("345")
    assert "print(15 * 23)" in turn_["code"]


def test_eval_tools_model2_block_on_the_real_dual_backend(dual):
    """eval tools --model2 on the real backend: the item model 2 changed runs again with it off, exactly."""
    from hessgpt.eval import tools as T

    samples = [T.Sample(id=p, lang="fr", messages=[{"role": "user", "content": p}], needs_code=True, category="maths")
               for p in (BROKEN, RIGHT)]
    r = T.evaluate(dual, samples, SamplingParams(max_new_tokens=40), progress=False, model2=True)
    m = r["model2"]
    assert (m["calls"], m["changed"], m["fixed"], m["broke"]) == (1, 1, 1, 0)
    assert m["executable_with"] == 1.0 and m["executable_without"] == 0.5
    broken = r["samples"][0]
    assert broken["results"] == ["ok"] and broken["without"]["results"] == ["error"] and "without" not in r["samples"][1]
    assert dual.router.config.refine_with_model2   # turned back on


def test_a_new_in_band_tool_is_one_table_entry(tokenizer):
    """The loop knows tools only through the table: an entry's handler yields its events, its return value is
    injected after the entry's result token, None injects nothing and HAND_BACK ends the turn for the client."""
    assert [t.name for t in INBAND_TOOLS] == ["code", "call", "search"]

    def shout(router, text, turn):
        yield Event("result", text.upper(), {"status": "ok", "tool": "shout"})
        return {"hi": text.upper(), "quiet": None, "client": HAND_BACK}[text]

    for said, injected, finish in [("hi", "HI", "stop"), ("quiet", None, "stop"), ("client", None, "tool_calls")]:
        script = [tokenizer.code_id] + tokenizer.encode(said) + [tokenizer.end_id] + tokenizer.encode("ok") + [tokenizer.end_id]
        eng = ScriptedEngine(tokenizer, script)
        router = ToolRouter(eng)
        router.tools = (InbandTool("shout", opener="code_id", closer="end_id", result="tool_response_id", handler=shout),)
        events = run(router, tokenizer)
        assert [e.text for e in events if e.type == "result"] == [said.upper()]
        assert not any(e.type == "code" for e in events) and events[-1].data["finish_reason"] == finish
        fed = eng.sessions[0].fed
        after = fed[fed.index(tokenizer.code_id):]
        block = [tokenizer.code_id] + tokenizer.encode(said) + [tokenizer.end_id]
        assert after[:len(block)] == block   # the call and its closer went into the context
        rest = after[len(block):]
        if injected is not None:
            assert rest[0] == tokenizer.tool_response_id and tokenizer.decode(rest[1:rest.index(tokenizer.end_id)]) == injected
        else:
            assert tokenizer.tool_response_id not in rest


# ---- self-consistency over code (RouterConfig.code_votes) ------------------------------------------------


class VotingGeneration(ScriptedGeneration):
    @property
    def ids(self):   # Generation.ids: the sequence its cache holds
        return self.fed

    def feed(self, ids, keep=None):
        if keep is not None:
            self.fed = self.fed[:keep]
        self.fed.extend(ids)


class VotingEngine(ScriptedEngine):
    """`generate_batch` (the vote's extra blocks) returns `candidates`, one per prompt, and records the prompts."""

    def __init__(self, tokenizer, script, candidates):
        super().__init__(tokenizer, script)
        self.candidates = [tokenizer.encode(c) for c in candidates]

    def session(self, prompt_ids, params):
        self.sessions.append(VotingGeneration(self, prompt_ids))
        return self.sessions[-1]

    def generate_batch(self, prompts, params):
        self.batch_prompts, self.batch_params = prompts, params
        return self.candidates[:len(prompts)]


def vote_run(tok, sandbox, model1_code, candidates, votes=None):
    script = turn(tok, "Je calcule.", model1_code, " Voilà.")
    eng = VotingEngine(tok, script, candidates)
    router = ToolRouter(eng, sandbox, config=RouterConfig(code_votes=votes or len(candidates) + 1))
    return eng, run(router, tok, "Combien font 17 fois 23 ?")


def test_code_vote_plurality_replaces_model1_block_in_the_cache(tokenizer, sandbox):
    tok = tokenizer
    eng, events = vote_run(tok, sandbox, "print(17 ** 23)",
                           ["print(17 * 23)", "print(23 * 17)", "print(17 + 23)", "print(1/0)"])
    vote = next(e for e in events if e.type == "code_vote")
    assert vote.data == {"candidates": 5, "valid": 4, "distinct": 3, "winner_votes": 2, "chosen": 1, "replaced": True}
    assert vote.text == "print(17 * 23)"
    code, result = next(e for e in events if e.type == "code"), next(e for e in events if e.type == "result")
    assert code.text == "print(17 * 23)" and result.text == "391\n"
    # every extra block is written after the same prefix: the prompt and model 1's text up to <|code|>
    fed = eng.sessions[0].fed
    prefix = eng.batch_prompts[0]
    assert all(p == prefix for p in eng.batch_prompts) and len(eng.batch_prompts) == 4
    assert prefix[-1] == tok.code_id and fed[:len(prefix)] == prefix
    # the cache holds the winning block, closed, then its result: model 1's own block is gone
    after = tok.decode(fed[len(prefix):])
    assert fed[len(prefix):len(prefix) + len(tok.encode("print(17 * 23)")) + 1] == tok.encode("print(17 * 23)") + [tok.end_id]
    assert "17 ** 23" not in tok.decode(fed) and "391" in after
    assert eng.batch_params.temperature == 0.7 and eng.batch_params.stop_token_ids == [tok.end_id, tok.eos_id]


def test_code_vote_tie_or_no_valid_output_keeps_model1_block(tokenizer, sandbox):
    tok = tokenizer
    _, events = vote_run(tok, sandbox, "print(17 * 23)", ["print(17 + 23)"])   # 1 vote each: a tie
    vote = next(e for e in events if e.type == "code_vote")
    assert vote.data["chosen"] == 0 and not vote.data["replaced"] and vote.data["distinct"] == 2
    assert next(e for e in events if e.type == "result").text == "391\n"
    _, events = vote_run(tok, sandbox, "print(17 *", ["print(1/0)", "x = 1"])   # nothing printed an answer
    vote = next(e for e in events if e.type == "code_vote")
    assert vote.data["valid"] == 0 and not vote.data["replaced"]
    assert next(e for e in events if e.type == "code").text == "print(17 *"


def test_code_votes_one_holds_no_vote(tokenizer, sandbox):
    eng, events = vote_run(tokenizer, sandbox, "print(17 * 23)", ["print(1)"], votes=1)
    assert not any(e.type == "code_vote" for e in events) and not hasattr(eng, "batch_prompts")
    with pytest.raises(Exception, match="code_votes must be >= 1"):
        RouterConfig(code_votes=0)
