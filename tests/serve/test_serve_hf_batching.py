"""Continuous batching in `hessgpt serve --hf-model` (serve/hf_batching.py on serve/batching.py's engine loop), on a
tiny random LlamaForCausalLM saved here: concurrent requests get what they get alone, a tool round runs inside
the batch, a disconnect frees its row, overload still answers 429."""

import threading
import time

import httpx
import pytest
import torch

from hessgpt.engine import SamplingParams, sample
from hessgpt.errors import HessGPTError
from hessgpt.serve.app import build_parser
from hessgpt.serve.app import main as serve_main
from hessgpt.serve.backends import HFBackend
from hessgpt.serve.build import build_backend
from hessgpt.serve.hf_batching import HFBatchDecoder, check_batchable

from .conftest import stream_text, wait_until

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}<<SYS>>{{ m['content'] }}<</SYS>>"
    "{% elif m['role'] == 'user' %}[INST]{{ m['content'] }}[/INST]"
    "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)
CORPUS = ["Bonjour, comment allez-vous ? Hello, how are you today?", "The answer is 42. La réponse est 42.",
          "print(6 * 7)\n```python\nimport math\n```", "Paris est la capitale de la France."] * 20
PROMPTS = ["Bonjour !", "Combien font 6 x 7 ?", "Écris un poème sur la mer.", "Hi", "Raconte une histoire",
           "What is the capital of France?"]
MAX_TOKENS = [14, 6, 19, 9, 24, 11]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A 2-layer random LlamaForCausalLM and its byte-level BPE tokenizer with a chat template (nothing downloaded)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("hf") / "tiny-llama"
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>", "<unk>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                     pad_token="<pad>", chat_template=CHAT_TEMPLATE)
    hf_tok.save_pretrained(d)
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=len(hf_tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def alone_backend(model_dir):
    return HFBackend(model_dir, max_batch=1)


@pytest.fixture
def batched(model_dir):
    made = []

    def make(max_batch=4, prefill_chunk=256):
        b = HFBackend(model_dir, max_batch=max_batch, prefill_chunk=prefill_chunk)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def body(i: int, **extra) -> dict:
    return {"model": "tiny-llama", "messages": [{"role": "user", "content": PROMPTS[i]}], "max_tokens": MAX_TOKENS[i],
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}, **extra}


@pytest.fixture(scope="module")
def alone(alone_backend):
    """Each request alone on the batch-1 path (HFBackend, max_batch 1), greedy, through stream_chat."""
    out = []
    for i in range(len(PROMPTS)):
        events = list(alone_backend.stream_chat(body(i)["messages"], SamplingParams(max_new_tokens=MAX_TOKENS[i])))
        done = events[-1].data
        out.append(("".join(e.text for e in events if e.type == "text"),
                    {"prompt_tokens": done["prompt_tokens"], "completion_tokens": done["completion_tokens"],
                     "total_tokens": done["prompt_tokens"] + done["completion_tokens"]}, done["finish_reason"]))
    return out


# ---- the step function alone ------------------------------------------------------------------------------


def reference(model, prompt: list[int], n: int, inject: dict[int, list[int]] | None = None) -> list[int]:
    """Greedy batch-1 decoding on a plain DynamicCache (HFBackend._generate's loop): `inject[k]` is fed after token k."""
    past, ids, out = None, torch.tensor([prompt]), []
    seen = torch.zeros(1, model.config.vocab_size, dtype=torch.bool)
    seen[0, ids[0]] = True
    with torch.inference_mode():
        for k in range(n):
            o = model(input_ids=ids, past_key_values=past, use_cache=True)
            past = o.past_key_values
            tok = int(sample(o.logits[:, -1].float(), SamplingParams(), None, seen)[0])
            out.append(tok)
            nxt = [tok] + (inject or {}).get(k, [])
            seen[0, torch.tensor(nxt)] = True
            ids = torch.tensor([nxt])
    return out


def test_decoder_rows_decode_as_alone(alone_backend):
    """Rows joining late (left-padded in), one left out of a step, a multi-token feed into one row, a crop and a
    release: every row's greedy tokens equal batch-1 decoding's; masked columns get compacted away."""
    model = alone_backend.model
    prompts = [[1, 5, 9, 33, 2], list(range(40, 60)), [3], [100, 101, 102, 103, 104, 105]]
    inject = {1: {3: [50, 51, 52, 53]}}
    want = [reference(model, p, 24, inject.get(i)) for i, p in enumerate(prompts)]
    d = HFBatchDecoder(model, max_rows=4, max_len=256, compact_slack=8)
    greedy = SamplingParams(max_new_tokens=0)
    rows = [d.admit(p, greedy) for p in prompts[:2]]
    out = {}
    for step in range(40):
        if step == 2:
            rows.append(d.admit(prompts[2], greedy))
        if step == 5:
            rows.append(d.admit(prompts[3], greedy))
        running = [r for r in rows if len(out.setdefault(r, [])) < 24 and not (step in (7, 8) and r == rows[0])]
        if not running:
            break
        for r, tok in d.step(running).items():
            out[r].append(tok)
            if r == rows[1] and len(out[r]) == 4:
                d.feed(r, inject[1][3])
    assert [out[r] for r in rows] == want
    assert d.columns() < max(len(p) for p in prompts) + 24 + 4 + 8 + 2 * 24   # the holes did not pile up
    # a crop: row 3 cut back to its prompt + 2 tokens, then fed a new ending = that sequence prefilled alone
    kept = prompts[3] + out[rows[3]][:2]
    d.crop(rows[3], len(kept))
    d.feed(rows[3], [7, 8, 9])
    d.release(rows[0])
    got = [d.step([rows[3]])[rows[3]] for _ in range(6)]
    assert got == reference(model, kept + [7, 8, 9], 6)
    assert len(d.order) == 3 and len(d.free) == 1
    with pytest.raises(HessGPTError, match="no row"):
        d.feed(rows[0], [1])
    # a prompt fed in chunks into a row alone in its batch (the loop's --prefill-chunk) = the prompt at once
    solo = HFBatchDecoder(model, max_rows=1, max_len=256)
    r = solo.admit(prompts[1][:3], greedy)
    solo.feed(r, prompts[1][3:11])
    solo.feed(r, prompts[1][11:])
    assert [solo.step()[r] for _ in range(5)] == reference(model, prompts[1], 5)


def test_sliding_window_models_are_refused_in_one_line():
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=1, sliding_window=8)
    with pytest.raises(HessGPTError, match="use --max-batch 1") as e:
        check_batchable(MistralForCausalLM(cfg))
    assert "\n" not in str(e.value)


def test_a_sliding_window_model_is_served_one_request_at_a_time_not_refused(model_dir, tmp_path, capsys):
    """`serve --hf-model` of a Mistral with a window (max-batch 8 by default) still starts: one line says its
    requests decode one at a time, and it answers."""
    import shutil

    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    d = tmp_path / "tiny-mistral"
    shutil.copytree(model_dir, d)
    tok = AutoTokenizer.from_pretrained(d)
    cfg = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, sliding_window=8, max_position_embeddings=256,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    MistralForCausalLM(cfg).save_pretrained(d)
    b = HFBackend(str(d), max_batch=8)
    try:
        assert b.max_batch == 1 and b.loop is None
        err = capsys.readouterr().err
        assert "MistralForCausalLM has sliding_window=8: requests decode one at a time (--max-batch 1)" in err
        events = list(b.stream_chat([{"role": "user", "content": "Bonjour !"}], SamplingParams(max_new_tokens=4)))
        assert events[-1].type == "done"
    finally:
        b.close()


# ---- through the server -------------------------------------------------------------------------------------


def test_concurrent_streams_equal_alone(serve, batched, alone):
    """Six greedy streams at once on a 4-row batch (two wait for a row), prompts prefilled 5 tokens at a time:
    each equals the same request alone, text, finish reason and token counts."""
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
    stats = httpx.get(srv.url + "/health").json()
    assert stats["concurrency"] == 4 and stats["batch"]["max_batch"] == 4
    assert stats["batch"]["widest_step"] >= 2          # they did decode together
    assert wait_until(lambda: backend.stats()["rows"] == 0)


def test_seeded_sampling_in_a_batch_equals_alone(batched, alone_backend):
    """Each row samples with its own params and seeded generator: sampled answers are the same batched as alone."""
    params = [SamplingParams(max_new_tokens=10, temperature=0.9, top_k=40, seed=3),
              SamplingParams(max_new_tokens=8, temperature=0.7, repetition_penalty=1.3, seed=5),
              SamplingParams(max_new_tokens=9)]

    def text(backend, i):
        return "".join(e.text for e in backend.stream_chat(body(i)["messages"], params[i]) if e.type == "text")

    want = [text(alone_backend, i) for i in range(3)]
    multi = batched(max_batch=3)
    got = [None] * 3
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, text(multi, i))) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == want


class CodeOnce(HFBackend):
    """The real model on the engine loop, but a request saying "calcule" ends its first round with a scripted
    ```python block after 4 real tokens (a random model never writes one)."""

    def __init__(self, src: HFBackend, run_code):
        self.__dict__.update(src.__dict__)
        self.run_code, self.max_tool_rounds, self.kvs = run_code, 4, []

    def _generate_text(self, input_ids, params, budget, cancel, generator, kv=None):
        if kv.prefilled or "calcule" not in self.tokenizer.decode(input_ids[0]):
            return self._generate(input_ids, params, budget, cancel, generator, kv=kv)
        self.kvs.append(kv)
        real = list(self._generate(input_ids, params, 4, cancel, generator, kv=kv))
        return iter([t for t in real if t] + ["\n```python\nprint(6 * 7)\n```"])


def test_a_tool_round_inside_the_batch_equals_alone(batched, alone_backend):
    """A code round (cut out, run, fed back on the same row: cache kept) while other requests decode: its events
    and the others' text equal the same requests run one at a time."""
    run_code = lambda src: ("ok", "42\n")  # noqa: E731
    msgs = [[{"role": "user", "content": "calcule 6*7"}]] + [body(i)["messages"] for i in range(3)]
    limits = [30, 14, 6, 19]

    def events(backend, i):
        evs = list(backend.stream_chat(msgs[i], SamplingParams(max_new_tokens=limits[i])))
        return [(e.type, e.text, e.data.get("finish_reason"), e.data.get("completion_tokens")) for e in evs]

    solo = CodeOnce(alone_backend, run_code)
    want = [events(solo, i) for i in range(4)]
    assert [e[0] for e in want[0] if e[0] != "text"] == ["code", "result", "done"]
    multi = CodeOnce(batched(max_batch=4), run_code)
    got = [None] * 4
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, events(multi, i))) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == want
    kv = multi.kvs[0]
    assert len(kv.prefilled) == 2 and kv.prefilled[1] < len(kv.ids) - kv.prefilled[0]   # round 2 reused the row
    assert multi.loop.stats()["widest_step"] >= 2 and wait_until(lambda: multi.stats()["rows"] == 0)


def slow_steps(backend, gate: threading.Event | None = None, delay: float = 0.0):
    """Every batched step waits for `gate` (or sleeps `delay`): rows stay busy for as long as a test needs."""
    step = backend.loop.batch.step

    def held(rows=None):
        if gate is not None:
            gate.wait(30)
        if delay:
            time.sleep(delay)
        return step(rows)

    backend.loop.batch.step = held


def test_disconnect_frees_its_row(serve, batched, alone):
    backend = batched(max_batch=2)
    slow_steps(backend, delay=0.02)
    srv = serve(backend)
    with httpx.stream("POST", srv.url + "/v1/chat/completions", json={**body(4), "max_tokens": 200}, timeout=60) as r:
        got = 0
        for line in r.iter_lines():
            got += '"content"' in line
            if got >= 3:
                break   # the client goes away mid-stream
    assert wait_until(lambda: backend.stats()["rows"] == 0), "the row was never released"
    assert wait_until(lambda: httpx.get(srv.url + "/health").json()["running"] == 0)
    assert backend.stats()["steps"] < 100    # released long before its 200 tokens
    assert backend.loop.batch.cache is None  # its columns went with it
    del backend.loop.batch.step   # full speed again
    assert stream_text(srv.url, body(1)) == alone[1]   # the freed row serves the next request


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
    r = httpx.post(srv.url + "/v1/chat/completions", json=body(3), timeout=10)
    assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full"
    gate.set()
    for t in threads:
        t.join(60)
    assert [results[i] for i in range(3)] == alone[:3]


def test_serve_flags_batch_the_hf_model(model_dir):
    b = build_backend(build_parser().parse_args(["--hf-model", model_dir, "--max-batch", "3", "--no-tools"]))
    try:
        assert b.max_batch == 3 and b.loop.max_rows == 3 and b.stats()["max_batch"] == 3
    finally:
        b.close()
    one = build_backend(build_parser().parse_args(["--hf-model", model_dir, "--max-batch", "1", "--no-tools"]))
    assert one.max_batch == 1 and one.loop is None and not hasattr(one, "stats")
    with pytest.raises(HessGPTError, match="--hf-model shares one model between requests; use --max-batch 2"):
        serve_main(["--hf-model", model_dir, "--concurrency", "2"])
