"""One assistant turn through the real router behind the API: its spacing, and the history the model reads."""

import json

import httpx
import openai
import pytest

from hessgpt.data.conversation import flatten_history
from hessgpt.serve.dual import DualModelBackend
from hessgpt.tools.router import ToolRouter

LEAD, AFTER, JOINED = "Je lance un petit script.", "Résultat : 100.", "Je lance un petit script.\n\nRésultat : 100."


class FakeResult:
    status, stdout, duration_ms = "ok", "100\n", 1.0

    def text(self):
        return self.stdout


class FakeSandbox:
    def __init__(self):
        self.ran = []

    def run(self, code):
        self.ran.append(code)
        return FakeResult()


class Session:
    def __init__(self, engine, prompt_ids):
        self.prompt, self.fed, self.script, self.space_left = list(prompt_ids), list(prompt_ids), list(engine.script), 10_000

    def next_token(self):
        return self.script.pop(0) if self.script else self.tok_end

    def feed(self, ids):
        self.fed.extend(ids)


class ScriptedEngine:
    """Model 1 replaying the same token script every turn; records each prompt."""

    def __init__(self, tok, script):
        self.tokenizer, self.script, self.max_len, self.sessions = tok, script, 4096, []

    def session(self, prompt_ids, params):
        s = Session(self, prompt_ids)
        s.tok_end = self.tokenizer.end_id
        self.sessions.append(s)
        return s


@pytest.fixture
def backend(tiny_ckpt, tokenizer):
    tok = tokenizer
    script = tok.encode(LEAD) + [tok.code_id] + tok.encode("print(10 * 10)") + [tok.end_id] + tok.encode(" " + AFTER) + [tok.end_id]
    b = DualModelBackend(tiny_ckpt, tools=False)
    b.router = ToolRouter(ScriptedEngine(tok, script), FakeSandbox())
    return b


def test_api_final_message_and_stream_keep_the_blank_line(serve, backend):
    srv = serve(backend)
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x")
    msgs = [{"role": "user", "content": "Calcule 10 * 10"}]
    r = client.chat.completions.create(model=backend.model_id, messages=msgs)
    assert r.choices[0].message.content == JOINED
    stream = client.chat.completions.create(model=backend.model_id, messages=msgs, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == JOINED
    # the page's event stream: text, code, result, text — its text events join the same way
    with httpx.stream("POST", srv.url + "/v1/chat/events", json={"model": backend.model_id, "messages": msgs}) as resp:
        events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
    assert [e["type"] for e in events if e["type"] != "text"] == ["code", "result", "done"]
    assert "".join(e["text"] for e in events if e["type"] == "text") == JOINED


def test_follow_up_sees_the_earlier_tool_turn_as_one_plain_message(serve, backend):
    """An API client sends back the final message content; a client that replays the structured turn
    (function calling) gets it flattened the same way. Either way the model reads no code and no result."""
    tok = backend.tokenizer
    srv = serve(backend)
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x")
    first = client.chat.completions.create(model=backend.model_id, messages=[{"role": "user", "content": "Calcule 10 * 10"}])
    msgs = [{"role": "user", "content": "Calcule 10 * 10"}, {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "Et la capitale de l'Italie ?"}]
    client.chat.completions.create(model=backend.model_id, messages=msgs)
    plain = backend.router.engine.sessions[-1].prompt
    assert tok.decode(plain).count(JOINED) == 1 and tok.code_id not in plain and tok.result_id not in plain
    structured = [{"role": "user", "content": "Calcule 10 * 10"},
                  {"role": "assistant", "content": LEAD, "tool_calls": [
                      {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{\"x\": 1}"}}]},
                  {"role": "tool", "tool_call_id": "c1", "content": "100"},
                  {"role": "assistant", "content": AFTER},
                  {"role": "user", "content": "Et la capitale de l'Italie ?"}]
    client.chat.completions.create(model=backend.model_id, messages=structured)
    assert backend.router.engine.sessions[-1].prompt == plain  # token for token the same prompt


def test_flatten_history_keeps_the_current_turn_structured():
    code_turn = [{"role": "assistant", "content": LEAD + " ", "code": "print(10 * 10)"},
                 {"role": "tool", "name": "python", "content": "100\n"}, {"role": "assistant", "content": " " + AFTER}]
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}, *code_turn,
            {"role": "user", "content": "b"}, {"role": "assistant", "content": "Rome."},
            {"role": "user", "content": "c"}, *code_turn[:2]]
    assert flatten_history(msgs) == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": JOINED},
        {"role": "user", "content": "b"}, {"role": "assistant", "content": "Rome."},
        {"role": "user", "content": "c"}, *code_turn[:2]]
