"""The OpenAI-compatible API against a real uvicorn server, driven by the official `openai` client."""

import json
import socket
import threading
import time

import httpx
import openai
import pytest

from hessgpt.errors import HessGPTError
from hessgpt.events import Event
from hessgpt.serve.api import StopFilter
from hessgpt.serve.app import main as serve_main
from hessgpt.serve.backends import ChatBackend, ScriptedBackend, done_event, to_chat_format

from .conftest import wait_until

ANSWER = "Bonjour ! The answer is forty two, said HessGPT."


def client(srv, key="none"):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0, timeout=20)


def test_scripted_backend_is_a_chat_backend():
    assert isinstance(ScriptedBackend(), ChatBackend)


def test_models_and_health(serve):
    srv = serve(ScriptedBackend([Event("text", ANSWER)], model_id="tiny"))
    models = client(srv).models.list()
    assert [m.id for m in models.data] == ["tiny"]
    h = httpx.get(srv.url + "/health").json()
    assert h["status"] == "ok" and h["model"] == "tiny" and h["running"] == 0


def test_non_streaming(serve):
    backend = ScriptedBackend([Event("text", ANSWER)], model_id="tiny")
    srv = serve(backend)
    r = client(srv).chat.completions.create(
        model="tiny", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Question ?"}],
        temperature=0.3, top_p=0.9, max_tokens=100, seed=7)
    assert r.choices[0].message.content == ANSWER
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == len(ANSWER.split())
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    p = backend.calls[0]["params"]
    assert (p.temperature, p.top_p, p.max_new_tokens, p.seed) == (0.3, 0.9, 100, 7)
    assert backend.calls[0]["messages"] == [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "Question ?"}]


def test_streaming_with_usage(serve):
    srv = serve(ScriptedBackend([Event("text", ANSWER)], model_id="tiny"))
    stream = client(srv).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, stream_options={"include_usage": True})
    deltas, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                deltas.append(c.delta.content)
            finish = c.finish_reason or finish
    assert len(deltas) > 3  # really streamed, word by word
    assert "".join(deltas) == ANSWER
    assert finish == "stop" and usage.completion_tokens == len(deltas)


def test_stream_ends_with_done_marker(serve):
    srv = serve(ScriptedBackend([Event("text", "a b c")], model_id="tiny"))
    with httpx.stream("POST", srv.url + "/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequences(serve, stream):
    backend = ScriptedBackend([Event("text", "one two STOP three four five six")], model_id="tiny", token_delay=0.01)
    srv = serve(backend)
    kw = dict(model="tiny", messages=[{"role": "user", "content": "count"}], stop=["STOP", "never"])
    if stream:
        out = "".join(c.choices[0].delta.content or "" for c in client(srv).chat.completions.create(stream=True, **kw)
                      if c.choices)
    else:
        r = client(srv).chat.completions.create(**kw)
        out = r.choices[0].message.content
        assert r.choices[0].finish_reason == "stop"
    assert out == "one two "
    assert wait_until(lambda: backend.cancelled == 1, timeout=5.0)  # generation stopped at the stop string, not at the end


def test_stop_string_split_across_deltas():
    f = StopFilter(["e tw"])
    assert f.feed("one") == "on"  # "e" may start the stop string: held back
    assert f.feed(" two") == "" and f.hit
    f = StopFilter(["xyz"])
    assert f.feed("ab x") == "ab " and f.flush() == "x"


def test_max_tokens_gives_length(serve):
    srv = serve(ScriptedBackend([Event("text", ANSWER)], model_id="tiny"))
    r = client(srv).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "q"}], max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == " ".join(ANSWER.split()[:3])


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def weather_script(messages, params, tools):
    if messages[-1]["role"] == "tool":
        data = json.loads(messages[-1]["content"])
        return [Event("text", f"It is {data['temp_c']} C in {data['city']}.")]
    assert tools and tools[0]["name"] == "get_weather"
    return [Event("text", "Let me check."), Event("tool_call", data={"name": "get_weather", "arguments": {"city": "Paris"},
                                                                     "id": "call_1"}),
            done_event("tool_calls", 12, 8)]


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_round_trip(serve, stream):
    backend = ScriptedBackend(weather_script, model_id="tiny")
    srv = serve(backend)
    c = client(srv)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        name, args, cid, finish = None, "", None, None
        for chunk in c.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER_TOOL], stream=True):
            for ch in chunk.choices:
                for tc in ch.delta.tool_calls or []:
                    name = tc.function.name or name
                    args += tc.function.arguments or ""
                    cid = tc.id or cid
                finish = ch.finish_reason or finish
    else:
        r = c.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER_TOOL], tool_choice="auto")
        tc = r.choices[0].message.tool_calls[0]
        name, args, cid, finish = tc.function.name, tc.function.arguments, tc.id, r.choices[0].finish_reason
    assert (name, json.loads(args), cid, finish) == ("get_weather", {"city": "Paris"}, "call_1", "tool_calls")
    # the backend got the tools in the conversation format of docs/chat-format.md
    assert backend.calls[0]["tools"] == [{"name": "get_weather", "description": "Current weather in a city",
                                          "parameters": WEATHER_TOOL["function"]["parameters"]}]
    messages += [{"role": "assistant", "content": None, "tool_calls": [
                     {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}]},
                 {"role": "tool", "tool_call_id": cid, "content": json.dumps({"city": "Paris", "temp_c": 21})}]
    r2 = c.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER_TOOL])
    assert r2.choices[0].message.content == "It is 21 C in Paris."
    sent = backend.calls[1]["messages"]
    assert sent[-1]["name"] == "get_weather"  # resolved from tool_call_id
    conv = to_chat_format(sent)
    assert conv[1]["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]


class _ScriptedModel1:
    """Stands in for model 1's Engine: each session replays `script` (token ids) and records what it was fed."""

    def __init__(self, tokenizer, script):
        self.tokenizer, self.script, self.max_len, self.fed = tokenizer, list(script), 4096, []

    def session(self, prompt_ids, params):
        model = self

        class Generation:
            space_left = 10_000

            def next_token(self):
                return model.script.pop(0) if model.script else model.tokenizer.end_id

            def feed(self, ids):
                model.fed.extend(ids)

        return Generation()


def _router_backend(tokenizer, script):
    """HessGPT's own backend (DualModelBackend: the router) over a scripted model 1, no checkpoint loaded."""
    from hessgpt.serve.dual import DualModelBackend
    from hessgpt.tools.router import ToolRouter

    b = DualModelBackend.__new__(DualModelBackend)
    b.engine = _ScriptedModel1(tokenizer, script)
    b.tokenizer, b.generation_config, b.model2, b.sandbox = tokenizer, {}, None, None
    b.router, b.model_id, b.context_length = ToolRouter(b.engine), "tiny", 4096
    return b


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("body", ['Sure: {"name": "get_weather", "arguments": {"city": "Paris"}}',
                                  "{'name': 'get_weather', 'arguments': {'city': 'Paris'}}",
                                  '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}'])
def test_router_call_written_loosely_reaches_the_client_as_tool_calls(serve, tokenizer, body, stream):
    tok = tokenizer
    srv = serve(_router_backend(tok, [tok.tool_call_id] + tok.encode(body) + [tok.end_id]))
    c = client(srv)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        name, args, finish = None, "", None
        for chunk in c.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER_TOOL], stream=True):
            for ch in chunk.choices:
                for tc in ch.delta.tool_calls or []:
                    name, args = tc.function.name or name, args + (tc.function.arguments or "")
                finish = ch.finish_reason or finish
    else:
        r = c.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER_TOOL])
        tc = r.choices[0].message.tool_calls[0]
        name, args, finish = tc.function.name, tc.function.arguments, r.choices[0].finish_reason
    assert (name, json.loads(args), finish) == ("get_weather", {"city": "Paris"}, "tool_calls")


def test_router_call_it_cannot_read_is_not_sent_as_tool_calls(serve, tokenizer):
    tok = tokenizer
    body = '{"name": get_weather, "arguments": {"city": "Paris"}}'
    backend = _router_backend(tok, [tok.tool_call_id] + tok.encode(body) + [tok.end_id] + tok.encode("Sorry.") + [tok.end_id])
    srv = serve(backend)
    r = client(srv).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Weather?"}],
                                            tools=[WEATHER_TOOL])
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == "Sorry."
    fed = tok.decode(backend.engine.fed)
    assert "invalid JSON" in fed and "get_weather" in fed   # the parse error, quoting the call, went back to the model


def test_assistant_tool_calls_sent_by_a_client_are_read_leniently():
    conv = to_chat_format([{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{'city': 'Paris', 'metric': True}"}},
        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "not an object"}}]}])
    assert conv[0]["tool_calls"] == [{"name": "f", "arguments": {"city": "Paris", "metric": True}},
                                     {"name": "g", "arguments": {"_raw": "not an object"}}]


def test_tool_choice_none_hides_tools(serve):
    backend = ScriptedBackend([Event("text", "no tools")], model_id="tiny")
    srv = serve(backend)
    client(srv).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "q"}],
                                        tools=[WEATHER_TOOL], tool_choice="none")
    assert backend.calls[0]["tools"] is None


def post_raw(srv, content, headers=None):
    return httpx.post(srv.url + "/v1/chat/completions", content=content,
                      headers={"content-type": "application/json", **(headers or {})})


def assert_openai_error(r, status, param=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    return err


def test_malformed_json(serve):
    srv = serve(ScriptedBackend(model_id="tiny"))
    err = assert_openai_error(post_raw(srv, b'{"model": "tiny", "messages": ['), 400)
    assert err["code"] == "invalid_json" and err["type"] == "invalid_request_error"
    assert_openai_error(post_raw(srv, b"[1, 2]"), 400)


BASE = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("patch,param", [
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": 3}, "temperature"),
    ({"top_p": [1]}, "top_p"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stream": "yes"}, "stream"),
    ({"stop": [1, 2]}, "stop"),
    ({"seed": 1.5}, "seed"),
    ({"n": 2}, "n"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
    ({"model": 3}, "model"),
    ({"tools": [{"type": "function"}]}, "tools[0]"),
    ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
])
def test_wrong_types_and_values_are_400(serve, patch, param):
    srv = serve(ScriptedBackend(model_id="tiny"))
    assert_openai_error(post_raw(srv, json.dumps({**BASE, **patch})), 400, param)


def test_oversize_inputs(serve):
    backend = ScriptedBackend(model_id="tiny")
    srv = serve(backend, max_messages=4, max_chars=1000, max_tokens_limit=64)
    many = [{"role": "user", "content": "x"}] * 5
    assert assert_openai_error(post_raw(srv, json.dumps({**BASE, "messages": many})), 400, "messages")["code"] == \
        "too_many_messages"
    big = [{"role": "user", "content": "x" * 1001}]
    assert assert_openai_error(post_raw(srv, json.dumps({**BASE, "messages": big})), 400, "messages")["code"] == \
        "too_many_characters"
    err = assert_openai_error(post_raw(srv, json.dumps({**BASE, "max_tokens": 65})), 400, "max_tokens")
    assert "64" in err["message"]
    # the same limits through the openai client raise its BadRequestError
    with pytest.raises(openai.BadRequestError):
        client(srv).chat.completions.create(model="tiny", messages=big)
    assert backend.calls == []  # nothing reached the model


def test_unknown_model_and_route(serve):
    srv = serve(ScriptedBackend(model_id="tiny"))
    with pytest.raises(openai.NotFoundError) as e:
        client(srv).chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "model_not_found"
    assert_openai_error(httpx.get(srv.url + "/v1/nothing"), 404)
    assert_openai_error(httpx.get(srv.url + "/v1/models/gpt-5"), 404, "model")


def test_api_key(serve):
    srv = serve(ScriptedBackend([Event("text", "ok")], model_id="tiny"), api_key="s3cret")
    with pytest.raises(openai.AuthenticationError):
        client(srv, key="wrong").models.list()
    assert assert_openai_error(httpx.get(srv.url + "/v1/models"), 401)["code"] == "invalid_api_key"
    r = client(srv, key="s3cret").chat.completions.create(model="tiny", messages=[{"role": "user", "content": "q"}])
    assert r.choices[0].message.content == "ok"
    assert httpx.get(srv.url + "/health").status_code == 200  # health and the page stay public
    assert httpx.get(srv.url + "/").status_code == 200


def test_non_loopback_host_needs_api_key(monkeypatch):
    monkeypatch.delenv("HESSGPT_API_KEY", raising=False)
    with pytest.raises(HessGPTError, match="--api-key"):
        serve_main(["--demo", "--host", "0.0.0.0"])
    with pytest.raises(HessGPTError, match="--adapter"):
        serve_main(["--demo", "--adapter", "x"])


def test_disconnected_stream_cancels_generation(serve):
    backend = ScriptedBackend([Event("text", "word " * 2000)], model_id="tiny", token_delay=0.01)
    srv = serve(backend)
    with httpx.stream("POST", srv.url + "/v1/chat/completions", json={**BASE, "stream": True}) as r:
        got = 0
        for line in r.iter_lines():
            got += line.startswith("data: ")
            if got >= 5:
                break  # the client goes away mid-stream
    assert wait_until(lambda: backend.cancelled == 1, timeout=5.0), "the backend never saw cancel"
    assert wait_until(lambda: httpx.get(srv.url + "/health").json()["running"] == 0, timeout=5.0)


def test_disconnect_while_waiting_non_streaming(serve):
    backend = ScriptedBackend([Event("text", "word " * 2000)], model_id="tiny", token_delay=0.01)
    srv = serve(backend)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(srv.url + "/v1/chat/completions", json=BASE, timeout=0.5)
    assert wait_until(lambda: backend.cancelled == 1, timeout=5.0)


class GatedBackend(ScriptedBackend):
    """Blocks every call until `gate` is set, so requests pile up in the queue."""

    def __init__(self):
        super().__init__([Event("text", "released")], model_id="tiny")
        self.gate = threading.Event()

    def stream_chat(self, messages, params, tools=None, cancel=None):
        self.gate.wait(10)
        yield from super().stream_chat(messages, params, tools, cancel)


def test_full_queue_gives_429_with_retry_after(serve):
    backend = GatedBackend()
    srv = serve(backend, concurrency=1, queue_size=1)
    results = []

    def call():
        results.append(httpx.post(srv.url + "/v1/chat/completions", json=BASE, timeout=20))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    assert wait_until(lambda: httpx.get(srv.url + "/health").json()["waiting"] == 1, timeout=5.0)
    r = post_raw(srv, json.dumps(BASE))
    err = assert_openai_error(r, 429)
    assert err["code"] == "queue_full" and int(r.headers["Retry-After"]) >= 1
    with pytest.raises(openai.RateLimitError):
        client(srv).chat.completions.create(**BASE)
    backend.gate.set()
    for t in threads:
        t.join(20)
    assert [x.status_code for x in results] == [200, 200]
    assert all(x.json()["choices"][0]["message"]["content"] == "released" for x in results)


def test_graceful_shutdown_finishes_short_and_cancels_long(serve):
    short = ScriptedBackend([Event("text", "a b c d e f g h")], model_id="tiny", token_delay=0.05)
    srv = serve(short, concurrency=2)
    results = []
    t = threading.Thread(target=lambda: results.append(httpx.post(srv.url + "/v1/chat/completions", json=BASE, timeout=20)))
    t.start()
    assert short.started.wait(5)
    srv.stop()  # in-flight work finishes (0.4 s < the 2 s grace period)
    t.join(20)
    assert results[0].status_code == 200 and results[0].json()["choices"][0]["message"]["content"] == "a b c d e f g h"

    long = ScriptedBackend([Event("text", "w " * 10_000)], model_id="tiny", token_delay=0.01)
    srv2 = serve(long)
    t = threading.Thread(target=lambda: httpx.post(srv2.url + "/v1/chat/completions", json=BASE, timeout=20), daemon=True)
    t.start()
    assert long.started.wait(5)
    t0 = time.monotonic()
    srv2.stop()
    assert time.monotonic() - t0 < 10
    assert wait_until(lambda: long.cancelled == 1, timeout=5.0)  # cut after the grace period


def test_events_endpoint_streams_tool_steps(serve):
    srv = serve(ScriptedBackend(model_id="tiny"))  # the demo script: text, code, refined code, result, artifact
    with httpx.stream("POST", srv.url + "/v1/chat/events", json=BASE) as r:
        lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    events = [json.loads(x) for x in lines[:-1]]
    types = [e["type"] for e in events]
    for t in ("text", "code", "refined_code", "result", "artifact", "done"):
        assert t in types
    assert next(e for e in events if e["type"] == "result")["text"] == "12.0\n"
    # an OpenAI client sees the artifact as a fenced block in the answer, not the internal code steps
    r = client(srv).chat.completions.create(**BASE)
    assert "```html\n<!doctype html>" in r.choices[0].message.content
    assert "math.sqrt" not in r.choices[0].message.content.split("```python")[0]


def test_backend_error_is_500_json(serve):
    def broken(messages, params, tools):
        raise RuntimeError("boom")

    srv = serve(ScriptedBackend(broken, model_id="tiny"))
    err = assert_openai_error(post_raw(srv, json.dumps(BASE)), 500)
    assert "boom" in err["message"] and err["type"] == "server_error"


def test_cli_serves_and_shuts_down_on_sigint():
    import signal
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from hessgpt.serve.app import main; sys.exit(main(sys.argv[1:]))",
                             "--demo", "--port", str(port), "--token-delay", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_until(lambda: _health(port), timeout=30), "the server did not come up"
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        r = c.chat.completions.create(model="hessgpt-demo", messages=[{"role": "user", "content": "hi"}])
        assert "12.0" in r.choices[0].message.content
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/" in out


def _health(port) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_backend_failing_mid_stream_ends_with_an_error_chunk(serve):
    def half(messages, params, tools):
        yield Event("text", "partial answer")
        raise RuntimeError("device lost")

    srv = serve(ScriptedBackend(half, model_id="tiny"))
    with httpx.stream("POST", srv.url + "/v1/chat/completions", json={**BASE, "stream": True}) as r:
        lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    err = json.loads(lines[-2])["error"]
    assert "device lost" in err["message"] and err["type"] == "server_error"
    text = "".join(json.loads(x)["choices"][0]["delta"].get("content", "") for x in lines[:-2])
    assert text == "partial answer"


def test_model_sources_fail_clearly(monkeypatch, tmp_path):
    with pytest.raises(HessGPTError, match="ckpt.pt"):  # a missing checkpoint is named
        serve_main(["--model1", str(tmp_path / "ckpt.pt")])
    with pytest.raises(HessGPTError, match="--hf-model"):
        serve_main(["--hf-model", str(tmp_path / "missing")])
    with pytest.raises(HessGPTError, match="--model2 goes with --model1"):
        serve_main(["--demo", "--model2", "x"])
