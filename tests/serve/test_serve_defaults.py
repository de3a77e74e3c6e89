"""A checkpoint's generation_config.json is what a request that sends no sampling gets, over real HTTP."""

import json
import os
import shutil

import httpx
import openai
import pytest

from hessgpt.serve.backends import ScriptedBackend
from hessgpt.events import Event
from hessgpt.serve.dual import DualModelBackend


def ckpt_with(tmp_path, tiny_ckpt, name, gen):
    path = str(tmp_path / name)
    shutil.copytree(tiny_ckpt, path)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump(gen, f)
    return path


def recording(backend):
    """Record the SamplingParams each engine session (model 1's generation) receives."""
    seen, session = [], backend.engine.session

    def spy(prompt_ids, params):
        seen.append(params)
        return session(prompt_ids, params)

    backend.engine.session = spy
    return seen


def test_greedy_checkpoint_request_without_temperature_is_greedy(serve, tmp_path, tiny_ckpt):
    path = ckpt_with(tmp_path, tiny_ckpt, "greedy", {"temperature": 0.0, "top_k": None, "top_p": 1.0,
                                                     "repetition_penalty": 1.0, "max_new_tokens": 10})
    backend = DualModelBackend(path, tools=False)
    seen = recording(backend)
    srv = serve(backend)
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x")
    msgs = [{"role": "user", "content": "Bonjour !"}]
    answers = [client.chat.completions.create(model=backend.model_id, messages=msgs).choices[0].message.content
               for _ in range(3)]
    assert len(set(answers)) == 1  # deterministic: greedy, not OpenAI's temperature 1.0
    assert [(p.temperature, p.top_k, p.top_p, p.max_new_tokens) for p in seen] == [(0.0, 0, 1.0, 10)] * 3
    card = httpx.get(srv.url + "/v1/models").json()["data"][0]
    assert card["generation_config"]["temperature"] == 0.0 and card["generation_config"]["max_tokens"] == 10


def test_sampling_checkpoint_value_reaches_the_engine(serve, tmp_path, tiny_ckpt):
    path = ckpt_with(tmp_path, tiny_ckpt, "warm", {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "max_new_tokens": 8})
    backend = DualModelBackend(path, tools=False)
    seen = recording(backend)
    srv = serve(backend)
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x")
    msgs = [{"role": "user", "content": "Bonjour !"}]
    client.chat.completions.create(model=backend.model_id, messages=msgs)
    assert (seen[-1].temperature, seen[-1].top_k, seen[-1].top_p, seen[-1].max_new_tokens) == (0.7, 40, 0.9, 8)
    # what the request sets wins over the checkpoint's recommendation; the rest stays the checkpoint's
    client.chat.completions.create(model=backend.model_id, messages=msgs, temperature=0, max_tokens=5)
    assert (seen[-1].temperature, seen[-1].top_k, seen[-1].top_p, seen[-1].max_new_tokens) == (0.0, 40, 0.9, 5)
    # the page's event stream uses the same defaults
    with httpx.stream("POST", srv.url + "/v1/chat/events", json={"model": backend.model_id, "messages": msgs}) as r:
        assert r.status_code == 200 and "[DONE]" in r.read().decode()
    assert seen[-1].temperature == 0.7


def test_backend_without_generation_config_is_greedy(serve):
    """No generation_config (old checkpoint, scripted backend): greedy, max_tokens = the server's default."""
    backend = ScriptedBackend([Event("text", "ok")], model_id="m")
    srv = serve(backend, default_max_tokens=77)
    httpx.post(srv.url + "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    p = backend.calls[-1]["params"]
    assert (p.temperature, p.top_p, p.top_k, p.max_new_tokens) == (0.0, 1.0, 0, 77)
    backend = ScriptedBackend([Event("text", "ok")], model_id="m2", generation_config={"temperature": 0.5, "max_new_tokens": 9999})
    srv = serve(backend, max_tokens_limit=100)
    httpx.post(srv.url + "/v1/chat/completions", json={"model": "m2", "messages": [{"role": "user", "content": "x"}]})
    p = backend.calls[-1]["params"]
    assert (p.temperature, p.max_new_tokens) == (0.5, 100)  # capped by --max-tokens-limit


@pytest.mark.parametrize("flags, expected", [([], 0.7), (["--temperature", "0"], 0.0)])
def test_ask_uses_the_checkpoint_defaults_unless_a_flag_is_set(tmp_path, tiny_ckpt, flags, expected, monkeypatch, capsys):
    from hessgpt import chat

    path = ckpt_with(tmp_path, tiny_ckpt, "warm", {"temperature": 0.7, "max_new_tokens": 4})
    seen = []
    real = DualModelBackend.stream_chat

    def spy(self, messages, params, tools=None, cancel=None):
        seen.append(params)
        return real(self, messages, params, tools, cancel)

    monkeypatch.setattr(DualModelBackend, "stream_chat", spy)
    assert chat.ask_main(["--model1", path, "--no-tools", "--prompt", "Salut", "--json", *flags]) == 0
    assert seen[-1].temperature == expected and seen[-1].max_new_tokens == 4
