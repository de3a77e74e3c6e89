"""Continuous batching in `hessgpt serve --model1` (serve/batching.py): requests decoding together on one engine
loop get exactly what they get alone, a disconnect frees its row, overload still answers 429."""

import json
import threading
import time

import httpx
import pytest

from hessgpt import checkpoint
from hessgpt.engine import Engine, SamplingParams
from hessgpt.errors import HessGPTError
from hessgpt.serve.app import main as serve_main
from hessgpt.serve.batching import BatchedDualBackend, EngineLoop
from hessgpt.serve.dual import DualModelBackend

from .conftest import stream_text, wait_until

PROMPTS = ["Bonjour !", "Combien font 6 x 7 ?", "Écris un poème sur la mer, s'il te plaît.", "Hi", "Raconte une histoire",
           "What is the capital of France? Answer in one word."]
MAX_TOKENS = [24, 9, 31, 17, 40, 12]


@pytest.fixture(scope="module")
def dual(tiny_ckpt):
    backend = DualModelBackend(tiny_ckpt, tools=False)
    yield backend
    backend.close()


@pytest.fixture
def batched(dual):
    made = []

    def make(max_batch=4, prefill_chunk=256):
        b = BatchedDualBackend(dual, max_batch, prefill_chunk)
        made.append(b)
        return b

    yield make
    for b in made:
        b.loop.close()


def body(i: int, stream: bool = True, **extra) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": PROMPTS[i]}], "max_tokens": MAX_TOKENS[i],
            "temperature": 0, "stream": stream, "stream_options": {"include_usage": True}, **extra}


@pytest.fixture
def alone(serve, dual):
    """Each request run alone on the batch-1 path (DualModelBackend, one request at a time), greedy."""
    srv = serve(dual)
    return [stream_text(srv.url, body(i)) for i in range(len(PROMPTS))]


def test_rows_with_injected_results_and_chunked_prefill_decode_as_alone(tiny_ckpt):
    """The engine loop, driven as the router drives a Generation (sample, feed it; inject a result mid-turn),
    with 4-token prefill chunks and a row waiting for a free slot: every row's tokens equal Generation's."""
    model, tok = checkpoint.load(tiny_ckpt)
    engine = Engine(model, tok)
    prompts = [tok.render_for_generation([{"role": "user", "content": p}]) for p in PROMPTS[:4]]
    params = [SamplingParams(max_new_tokens=0), SamplingParams(max_new_tokens=0, temperature=0.9, top_k=40, seed=3),
              SamplingParams(max_new_tokens=0, repetition_penalty=1.3), SamplingParams(max_new_tokens=0)]
    inject = {0: (6, [tok.result_id] + tok.encode("42") + [tok.end_id]), 2: (3, [tok.tool_response_id] + tok.encode('{"ok": 1}') + [tok.end_id])}

    def drive(gen, i):
        out = []
        for k in range(20):
            t = gen.next_token()
            out.append(t)
            gen.feed([t])
            if i in inject and k == inject[i][0]:
                gen.feed(inject[i][1])      # a tool result forced into this row only
        return out

    ref = [drive(engine.session(p, sp), i) for i, (p, sp) in enumerate(zip(prompts, params))]
    loop = EngineLoop(engine, max_rows=3, prefill_chunk=4)   # 4 rows, 3 slots: the last one joins late
    got = [None] * 4
    try:
        def worker(i):
            row = loop.open(prompts[i], params[i])
            try:
                got[i] = drive(row, i)
            finally:
                row.close()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert got == ref
        assert wait_until(lambda: loop.stats()["rows"] == 0)
        assert loop.stats()["widest_step"] >= 2
    finally:
        loop.close()


def test_row_protocol_errors_are_clear(tiny_ckpt):
    model, tok = checkpoint.load(tiny_ckpt)
    loop = EngineLoop(Engine(model, tok), max_rows=1)
    try:
        row = loop.open([1, 2, 3], SamplingParams())
        t = row.next_token()
        with pytest.raises(HessGPTError, match="after its last one was fed"):
            row.next_token()
        with pytest.raises(HessGPTError, match=f"must feed its sampled token {t} first"):
            row.feed([t + 1])
        with pytest.raises(HessGPTError, match="exceeds the context window"):
            loop.open([1] * 300, SamplingParams())
        row.close()
    finally:
        loop.close()


def test_concurrent_streams_get_their_own_answers(serve, batched, alone):
    """Six greedy streams at once on a 4-row batch (two wait for a slot): each equals the same request run
    alone on the batch-1 path, text, finish reason and token counts."""
    backend = batched(max_batch=4, prefill_chunk=5)
    srv = serve(backend, queue_size=8)
    got = [None] * len(PROMPTS)
    start = threading.Barrier(len(PROMPTS))

    def client(i):
        start.wait()
        got[i] = stream_text(srv.url, body(i))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == alone
    assert all(u["completion_tokens"] > 0 for _, u, _ in got)
    stats = httpx.get(srv.url + "/health").json()
    assert stats["concurrency"] == 4 and stats["batch"]["max_batch"] == 4
    assert stats["batch"]["widest_step"] >= 2          # the streams did decode together


def test_batched_non_streaming_equals_alone(serve, batched, alone):
    srv = serve(batched(max_batch=2))
    for i in (0, 2):
        r = httpx.post(srv.url + "/v1/chat/completions", json=body(i, stream=False), timeout=60).json()
        assert r["choices"][0]["message"]["content"] == alone[i][0]
        assert r["usage"] == alone[i][1] and r["choices"][0]["finish_reason"] == alone[i][2]


def backend_events(backend, payload: dict):
    params = SamplingParams(max_new_tokens=payload["max_tokens"], temperature=payload["temperature"])
    return backend.stream_chat(payload["messages"], params)


def slow_steps(backend, gate: threading.Event | None = None, delay: float = 0.0):
    """Every batched step waits for `gate` (or sleeps `delay`): rows stay busy for as long as a test needs."""
    step = backend.loop.batch.step

    def held(rows=None, **kw):
        if gate is not None:
            gate.wait(30)
        if delay:
            time.sleep(delay)
        return step(rows, **kw)

    backend.loop.batch.step = held


def test_disconnect_frees_its_row(serve, dual, batched, alone):
    long = {**body(4), "max_tokens": 110}
    done = list(backend_events(dual, long))[-1]
    assert done.data["completion_tokens"] == 110            # alone, this request runs its 110 tokens
    backend = batched(max_batch=2)
    slow_steps(backend, delay=0.02)
    srv = serve(backend)
    with httpx.stream("POST", srv.url + "/v1/chat/completions", json=long, timeout=60) as r:
        got = 0
        for line in r.iter_lines():
            got += '"content"' in line
            if got >= 3:
                break   # the client goes away mid-stream
    assert wait_until(lambda: backend.stats()["rows"] == 0), "the row was never released"
    assert wait_until(lambda: httpx.get(srv.url + "/health").json()["running"] == 0)
    assert backend.stats()["steps"] < 60    # released long before its 110 tokens
    del backend.loop.batch.step   # full speed again
    assert stream_text(srv.url, body(1)) == alone[1]   # the freed slot serves the next request


def test_overload_gives_429_and_the_queue_still_answers(serve, batched, alone):
    backend = batched(max_batch=2)
    gate = threading.Event()
    slow_steps(backend, gate=gate)
    srv = serve(backend, queue_size=1)
    results = {}

    def client(i):
        results[i] = stream_text(srv.url, body(i))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]   # 2 rows + 1 waiting
    for t in threads:
        t.start()
    assert wait_until(lambda: httpx.get(srv.url + "/health").json()["waiting"] == 1)
    assert httpx.get(srv.url + "/health").json()["running"] == 2
    r = httpx.post(srv.url + "/v1/chat/completions", json=body(3), timeout=10)
    assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full" and int(r.headers["Retry-After"]) >= 1
    gate.set()
    for t in threads:
        t.join(60)
    assert [results[i] for i in range(3)] == alone[:3]


def test_serve_flags(tmp_path):
    with pytest.raises(HessGPTError, match="--max-batch 2"):
        serve_main(["--model1", str(tmp_path / "ckpt.pt"), "--concurrency", "2"])
    with pytest.raises(HessGPTError, match="--max-batch 0: must be at least 1"):
        serve_main(["--model1", str(tmp_path / "ckpt.pt"), "--max-batch", "0"])


# ---- a tool round inside a batch ----------------------------------------------------------------------
# A model whose next token depends only on the last one (every block's output projections are zero, so the
# residual stream is the token's embedding; the chain tokens' embeddings are basis vectors and the head maps
# each to its successor): it answers "Je calcule." + a <|code|> block + "Voilà." whatever the prompt, so the
# real router runs the sandbox and injects <|result|>42<|end|> into that row while the others decode.

TEXT1, CODE, TEXT2 = "Je calcule.", "print(6*7)", " Voilà !"


@pytest.fixture(scope="module")
def scripted_dual(tmp_path_factory, tokenizer):
    import torch

    from hessgpt.config import ModelConfig
    from hessgpt.model import Transformer

    tok = tokenizer
    chain = [tok.assistant_id, *tok.encode(TEXT1), tok.code_id, *tok.encode(CODE), tok.end_id, *tok.encode(TEXT2), tok.eos_id]
    keys = chain[:-1]
    assert len(set(keys)) == len(keys), "the chain needs distinct tokens (each has one successor)"
    cfg = ModelConfig.preset("tiny", vocab_size=tok.vocab_size, tie_embeddings=False)
    model = Transformer(cfg).init_weights(seed=0)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for i, (a, b) in enumerate(zip(chain, chain[1:])):
            basis = torch.zeros(cfg.dim)
            basis[i] = 1.0
            model.model.embed_tokens.weight[a] = basis
            model.lm_head.weight[b] += basis
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny")
    checkpoint.save(path, model, tok, meta={"stage": "test"})
    backend = DualModelBackend(path, tools=True)
    yield backend
    backend.close()


def events_of(url: str, payload: dict) -> list:
    out = []
    with httpx.stream("POST", url + "/v1/chat/events", json=payload, timeout=60) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                ev = json.loads(line[6:])
                keep = {k: ev["data"][k] for k in ("finish_reason", "completion_tokens", "status") if k in ev["data"]}
                out.append((ev["type"], ev["text"], keep))
    return out


def test_tool_rounds_inside_a_batch_equal_alone(serve, scripted_dual):
    payloads = [{"model": "tiny", "messages": [{"role": "user", "content": f"Combien font 6 x 7 ? ({i})"}],
                 "max_tokens": n, "temperature": 0} for i, n in enumerate((64, 5, 64, 64, 12))]   # 5, 12: cut before/inside the code
    srv = serve(scripted_dual)
    alone = [events_of(srv.url, p) for p in payloads]
    assert ("code", CODE, {}) in alone[0] and ("result", "42\n", {"status": "ok"}) in alone[0]
    assert "".join(t for ty, t, _ in alone[0] if ty == "text") == TEXT1 + "\n\n" + TEXT2.strip()
    backend = BatchedDualBackend(scripted_dual, max_batch=4)
    try:
        slow_steps(backend, delay=0.005)
        srv2 = serve(backend, queue_size=4)
        got = [None] * len(payloads)
        start = threading.Barrier(len(payloads))

        def client(i):
            start.wait()
            got[i] = events_of(srv2.url, payloads[i])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(payloads))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert got == alone
        assert backend.stats()["widest_step"] >= 2
    finally:
        backend.loop.close()


def test_a_failing_step_fails_its_requests_only_and_the_loop_goes_on(serve, batched, alone):
    backend = batched(max_batch=2)
    step = backend.loop.batch.step
    calls = []

    def broken_once(rows=None, **kw):
        calls.append(rows)
        if len(calls) == 1:
            raise RuntimeError("simulated kernel failure")
        return step(rows, **kw)

    backend.loop.batch.step = broken_once
    srv = serve(backend)
    r = httpx.post(srv.url + "/v1/chat/completions", json=body(0, stream=False), timeout=60)
    assert r.status_code == 500 and "simulated kernel failure" in r.json()["error"]["message"]
    assert wait_until(lambda: backend.stats()["rows"] == 0)     # its row was released
    assert stream_text(srv.url, body(1)) == alone[1]


def test_model1_serves_batched_unless_max_batch_is_1(tiny_ckpt):
    from hessgpt.serve import app
    from hessgpt.serve.build import build_backend

    batched_backend = build_backend(app.build_parser().parse_args(["--model1", tiny_ckpt, "--no-tools", "--max-batch", "3",
                                                                       "--prefill-chunk", "64"]))
    try:
        assert isinstance(batched_backend, BatchedDualBackend)
        assert batched_backend.max_batch == 3 and batched_backend.loop.prefill_chunk == 64
    finally:
        batched_backend.close()
    single = build_backend(app.build_parser().parse_args(["--model1", tiny_ckpt, "--no-tools", "--max-batch", "1"]))
    assert isinstance(single, DualModelBackend)


def test_a_shared_system_prompt_is_prefilled_once_and_answers_stay_the_same(serve, dual, batched):
    """Requests with the same system prompt, one after another: the second one's prompt reuses the keys and values
    the first left in its slot (only its own tokens are prefilled); both answers equal the batch-1 path's."""
    system = {"role": "system", "content": "Tu es HessGPT, un assistant bilingue qui répond brièvement et poliment."}

    def req(i):
        return {**body(i), "messages": [system, {"role": "user", "content": PROMPTS[i]}]}

    ref_srv = serve(dual)
    ref = [stream_text(ref_srv.url, req(i)) for i in (0, 4)]
    backend = batched(max_batch=2)
    srv = serve(backend, concurrency=2)
    first = stream_text(srv.url, req(0))
    assert wait_until(lambda: backend.stats()["rows"] == 0)
    before = backend.stats()
    assert before["prompt_tokens_reused"] == 0 and before["prompt_tokens_prefilled"] == first[1]["prompt_tokens"]
    second = stream_text(srv.url, req(4))
    assert [first, second] == ref
    after = backend.stats()
    shared = after["prompt_tokens_reused"]
    ids = [dual.tokenizer.render_for_generation([system, {"role": "user", "content": PROMPTS[i]}]) for i in (0, 4)]
    common = next(n for n, (a, b) in enumerate(zip(*ids)) if a != b)
    assert shared == common > 10       # the system turn and the user role's opening
    assert after["prompt_tokens_prefilled"] - before["prompt_tokens_prefilled"] == second[1]["prompt_tokens"] - shared
