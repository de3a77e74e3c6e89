import pytest
import torch

from hessgpt import checkpoint
from hessgpt.engine import ChatHistory, Engine, SamplingParams, StopMatcher, TextDecoder, naive_generate, process_logits
from hessgpt.errors import HessGPTError

SETTINGS = [
    SamplingParams(max_new_tokens=48),
    SamplingParams(max_new_tokens=48, temperature=0.8, seed=1),
    SamplingParams(max_new_tokens=48, temperature=1.0, top_k=20, top_p=0.9, repetition_penalty=1.3, seed=7),
]


@pytest.fixture
def model_tok(tiny_ckpt):
    return checkpoint.load(tiny_ckpt)


@pytest.mark.parametrize("params", SETTINGS)
def test_engine_matches_naive_reference(model_tok, params):
    model, tok = model_tok
    prompt = tok.render_for_generation([{"role": "user", "content": "Bonjour, qui es-tu ?"}])
    ref = naive_generate(model, prompt, params, stop_ids=[tok.end_id, tok.eos_id])
    assert Engine(model, tok).generate(prompt, params) == ref
    assert len(ref) > 0


def test_batched_generation_equals_one_by_one(model_tok):
    model, tok = model_tok
    engine = Engine(model, tok)
    prompts = [tok.encode("Bonjour"), tok.encode("The history of Paris is long and rich"), tok.encode("x = 1")]
    p = SamplingParams(max_new_tokens=24)
    assert engine.generate_batch(prompts, p) == [engine.generate(q, p) for q in prompts]


def test_beam_search(model_tok):
    model, tok = model_tok
    engine = Engine(model, tok)
    prompt = tok.encode("Le chat")
    greedy = engine.generate(prompt, SamplingParams(max_new_tokens=12, stop_token_ids=[-1]))
    assert engine.beam_search(prompt, num_beams=1, max_new_tokens=12, stop_token_ids=[]) == greedy


def test_beam_search_with_full_width_is_exact():
    """With as many beams as the vocabulary, two steps of beam search must find the exact best pair."""
    from hessgpt.config import ModelConfig
    from hessgpt.model import Transformer

    V = 40
    model = Transformer(ModelConfig.preset("tiny", vocab_size=V)).init_weights(5).eval()
    prompt = [3, 14, 15, 9]
    with torch.no_grad():
        first = model(torch.tensor([prompt]))[0, -1].log_softmax(-1)                       # [V]
        pairs = torch.tensor([prompt + [a] for a in range(V)])
        second = model(pairs)[:, -1].log_softmax(-1)                                        # [V, V]
    total = first[:, None] + second
    best = divmod(int(total.argmax()), V)
    assert Engine(model, None).beam_search(prompt, num_beams=V, max_new_tokens=2, length_penalty=0.0) == list(best)


def test_seed_makes_sampling_reproducible(model_tok):
    model, tok = model_tok
    engine = Engine(model, tok)
    prompt = tok.encode("Il était une fois")
    p = SamplingParams(max_new_tokens=30, temperature=1.0, seed=42)
    assert engine.generate(prompt, p) == engine.generate(prompt, p)
    assert engine.generate(prompt, p) != engine.generate(prompt, SamplingParams(max_new_tokens=30, temperature=1.0, seed=43))


def test_top_k_top_p_and_repetition_penalty():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, -1.0]])
    out = process_logits(logits, SamplingParams(temperature=1.0, top_k=2))
    assert torch.isinf(out[0, 2:]).all() and not torch.isinf(out[0, :2]).any()
    probs = logits.softmax(-1)[0]
    out = process_logits(logits, SamplingParams(temperature=1.0, top_p=float(probs[0]) + 0.01))
    assert not torch.isinf(out[0, :2]).any() and torch.isinf(out[0, 2:]).all()
    seen = torch.tensor([[True, False, False, False, True]])
    out = process_logits(logits, SamplingParams(repetition_penalty=2.0), seen)
    assert out[0, 0] == 2.0 and out[0, 4] == -2.0 and out[0, 1] == 3.0


def test_sampling_follows_the_distribution_and_never_picks_a_masked_token():
    """engine.sample's inverse-transform draw: frequencies over 40,000 seeded draws within 5 standard errors of
    the softmax, and a token cut by top-k (probability 0, last in the vocabulary included) never drawn."""
    from hessgpt.engine import make_generator, sample

    logits = torch.tensor([[2.0, 1.5, 0.2, -1.0, 0.9, 3.1, -0.3, 1.1]])
    g = make_generator(11, torch.device("cpu"))
    params = SamplingParams(temperature=1.0)
    draws = torch.cat([sample(logits.expand(400, -1), params, g) for _ in range(100)])   # 40,000 draws
    p = logits.softmax(-1)[0]
    freq = torch.bincount(draws, minlength=8).float() / draws.numel()
    assert ((freq - p).abs() <= 5 * (p * (1 - p) / draws.numel()).sqrt()).all(), (freq, p)
    cut = torch.tensor([[0.5, 4.0, 3.9, 0.1, 3.8]])   # top_k 3 keeps ids 1, 2, 4: id 4 is the last non-zero one
    got = torch.cat([sample(cut.expand(500, -1), SamplingParams(temperature=5.0, top_k=3), g) for _ in range(20)])
    assert set(got.tolist()) == {1, 2, 4}


def test_top_p_within_the_top_tokens_equals_the_full_sort():
    """process_logits' top-p fast path (the nucleus inside the 64 most likely tokens) keeps exactly the tokens
    the full sort keeps; a flat distribution (nucleus wider than 64) takes the full sort."""
    from hessgpt.engine import _top_p_in_top

    g = torch.Generator().manual_seed(0)
    for trial in range(60):
        logits = torch.randn(3, 3000, generator=g) * (0.5 + 8 * torch.rand(1, generator=g))
        top_p = 0.05 + 0.9 * float(torch.rand(1, generator=g))
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        ref = torch.full_like(logits, float("-inf")).scatter(
            -1, order, sorted_logits.masked_fill(probs.cumsum(-1) - probs > top_p, float("-inf")))
        fast = _top_p_in_top(logits, top_p)
        if fast is not None:
            assert torch.equal(torch.isinf(fast), torch.isinf(ref)), trial
        assert torch.equal(torch.isinf(process_logits(logits * 1.0, SamplingParams(temperature=1.0, top_p=top_p))),
                           torch.isinf(ref)), trial
    assert _top_p_in_top(torch.zeros(1, 3000), 0.9) is None


def test_streaming_never_splits_utf8(tokenizer):
    text = "Été 👋🏽 à Zürich — 中文 ✨ fin."
    ids = tokenizer.encode(text)
    dec = TextDecoder(tokenizer)
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_stop_strings_are_cut_across_pieces():
    m = StopMatcher(["STOP"])
    out = []
    for piece in ["Hello ", "wor", "ld S", "TO", "P and more"]:
        text, stopped = m.push(piece)
        out.append(text)
        if stopped:
            break
    assert "".join(out) == "Hello world " and stopped


def test_stream_text_with_stop(model_tok):
    model, tok = model_tok
    engine = Engine(model, tok)
    prompt = tok.encode("Bonjour")
    p = SamplingParams(max_new_tokens=40)
    full = tok.decode(engine.generate(prompt, p))
    assert "".join(engine.stream_text(prompt, p)) == full
    stop = full[5:8]
    cut = "".join(engine.stream_text(prompt, SamplingParams(max_new_tokens=40, stop=[stop])))
    assert cut == full[: full.find(stop)]


def test_generation_feed_injects_tokens(model_tok):
    """The tool loop's primitive: injected tokens land in the cache exactly like a prompt would."""
    model, tok = model_tok
    engine = Engine(model, tok)
    a, b = tok.encode("Calcule 2+2"), tok.encode("4")
    gen = engine.session(a, SamplingParams())
    gen.feed([tok.result_id] + b + [tok.end_id])
    direct = engine.session(a + [tok.result_id] + b + [tok.end_id], SamplingParams())
    assert torch.allclose(gen.logits, direct.logits, atol=1e-5)


def test_generation_feed_keep_rewrites_the_tail(model_tok):
    """A code vote's swap: cut the sequence back and feed other tokens = a fresh sequence of the result
    (logits, the repetition penalty's seen set, and the greedy continuation after it)."""
    model, tok = model_tok
    engine = Engine(model, tok)
    p = SamplingParams(max_new_tokens=8, repetition_penalty=1.3)
    a, wrong, right = tok.encode("Calcule 2+2"), tok.encode(" print(2 ** 2) zzz"), tok.encode(" print(2 + 2)")

    def continue_greedy(gen):
        out = []
        for _ in range(8):
            out.append(gen.next_token())
            gen.feed([out[-1]])
        return out

    gen = engine.session(a + wrong, p)
    gen.feed(right, keep=len(a))
    assert gen.pos == len(a + right) and gen.ids == a + right
    logits, seen = gen.logits.clone(), gen.seen.clone()
    cut = continue_greedy(gen)
    direct = engine.session(a + right, p)
    assert torch.allclose(logits, direct.logits, atol=1e-5) and torch.equal(seen, direct.seen)
    assert cut == continue_greedy(direct)
    with pytest.raises(HessGPTError, match="keep=0"):
        gen.feed(right, keep=0)
    with pytest.raises(HessGPTError, match="needs ids"):
        gen.feed([], keep=2)


def test_generate_batch_leaves_a_session_in_progress_alone(model_tok):
    """A code vote decodes its extra blocks with generate_batch in the middle of the turn's session: the
    session's cache must come out untouched (the batch runs on its own slot cache)."""
    model, tok = model_tok
    engine = Engine(model, tok)
    p = SamplingParams(max_new_tokens=12)
    prompt = tok.encode("Combien font 17 fois 23 ?")

    def greedy(mid=None):
        gen, out = engine.session(prompt, p), []
        for i in range(12):
            if i == 6 and mid is not None:
                mid(gen.ids)
            out.append(gen.next_token())
            gen.feed([out[-1]])
        return out

    ref = greedy()
    votes = greedy(lambda ids: engine.generate_batch([ids] * 3, SamplingParams(max_new_tokens=8, temperature=0.7, seed=1)))
    assert votes == ref


def test_history_drops_oldest_turns_but_keeps_system(tokenizer):
    h = ChatHistory(system="Tu es HessGPT.")
    for i in range(30):
        h.add_user(f"question numéro {i} " * 5)
        h.add({"role": "assistant", "content": f"réponse {i} " * 5})
    h.add_user("dernière question")
    ids = h.prompt_ids(tokenizer, max_len=256, reserve=64)
    assert len(ids) + 64 <= 256
    text = tokenizer.decode(ids)
    assert "Tu es HessGPT." in text and "dernière question" in text and "question numéro 0 " not in text
    with pytest.raises(HessGPTError, match="context window"):
        h2 = ChatHistory()
        h2.add_user("mot " * 400)
        h2.prompt_ids(tokenizer, max_len=256, reserve=64)


def test_sampling_generator_is_made_on_the_logits_device(model_tok, monkeypatch):
    """Seeded sampling on CUDA needs the generator on the logits' device (a CPU generator with CUDA logits is
    an error in torch.multinomial). A spy records the device of every generator the engine creates: the
    logits' (CPU here), and a mocked CUDA device is passed through as is."""
    from hessgpt.engine import make_generator, sample

    made, real = [], torch.Generator

    def spy(device=None):
        made.append(torch.device(device))
        return real(device="cpu")

    monkeypatch.setattr(torch, "Generator", spy)
    model, tok = model_tok
    engine = Engine(model, tok)
    p = SamplingParams(max_new_tokens=4, temperature=1.0, seed=3)
    prompt = tok.encode("Bonjour")
    engine._ensure_cache(1)
    logits_device = engine._forward(torch.tensor([prompt]), 0).device
    first = engine.generate(prompt, p)
    engine.generate_batch([prompt, prompt], p)
    naive_generate(model, prompt, p)
    assert len(made) == 3 and set(made) == {logits_device}
    assert engine.generate(prompt, p) == first                       # seeded: reproducible
    made.clear()
    make_generator(1, torch.device("cuda", 0))
    assert made == [torch.device("cuda", 0)]

    class OnCuda:
        device = torch.device("cuda", 0)

    with pytest.raises(HessGPTError, match="generator is on cuda:0 but the logits are on cpu"):
        sample(torch.zeros(1, 5), SamplingParams(temperature=1.0), OnCuda())
