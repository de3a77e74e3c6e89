"""The real HessGPT dual-model backend behind the OpenAI API: the `openai` client against a tiny checkpoint."""

import openai
import pytest

from hessgpt import checkpoint
from hessgpt.engine import Engine, SamplingParams
from hessgpt.serve.dual import DualModelBackend


@pytest.fixture(scope="module")
def dual(tiny_ckpt):
    backend = DualModelBackend(tiny_ckpt, tools=True)
    yield backend
    backend.close()


def test_openai_client_against_the_dual_model(serve, dual, tiny_ckpt):
    server = serve(dual)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x")
    messages = [{"role": "user", "content": "Bonjour !"}]
    r = client.chat.completions.create(model=dual.model_id, messages=messages, max_tokens=12, temperature=0)
    # same text as the engine produces directly (greedy) for the same rendered prompt
    model, tok = checkpoint.load(tiny_ckpt)
    ids = tok.render_for_generation(messages)
    direct = "".join(Engine(model, tok).stream_text(ids, SamplingParams(max_new_tokens=12)))
    assert r.choices[0].message.content == direct
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens <= 12
    stream = client.chat.completions.create(model=dual.model_id, messages=messages, max_tokens=12, temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == direct
