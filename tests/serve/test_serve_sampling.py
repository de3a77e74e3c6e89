"""One sampler for every backend: the same request gives the same tokens through `--hf-model` (HFBackend on
transformers) and `--model1` (the engine, on the same model converted by `hessgpt convert from-hf`).

Both sample with hessgpt.engine.sample, whose repetition penalty applies to every token of the sequence, the
prompt included (the HF backend's old copy penalised generated tokens only). The tiny Llama's embedding has room
for HessGPT's special tokens, so the conversion adds no rows and both sides sample over the same vocabulary (a
seeded draw reads one uniform per token).
"""

import argparse

import pytest
import torch

from hessgpt.chat import add_backend_args, add_sampling_args, sampling_from_args
from hessgpt.convert.cli import cli_main as convert_main
from hessgpt.serve.backends import HFBackend
from hessgpt.serve.build import build_backend
from hessgpt.serve.dual import DualModelBackend
from hessgpt.tokenizer import SPECIAL_TOKENS


transformers = pytest.importorskip("transformers")

SMOLLM2_TEMPLATE = (   # SmolLM2-135M-Instruct's chat template (Apache-2.0), as in tests/test_imported_chat.py
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
TEXT = ["What is the capital of France? Paris is the capital of France.",
        "Quelle est la capitale de la France ? La capitale de la France est Paris.",
        "print(15 * 23) 345 You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        "system user assistant Bonjour, ça va ? Très bien, merci !"] * 20
MESSAGES = [{"role": "user", "content": "Quelle est la capitale de la France ? Paris, Paris, Paris."}]


@pytest.fixture(scope="module")
def pair(tmp_path_factory, chatml_tokenizer):
    """(HF folder, the HessGPT checkpoint `hessgpt convert from-hf` makes of it) of a tiny random ChatML Llama."""
    root = tmp_path_factory.mktemp("sampling")
    bpe, hf_tok = chatml_tokenizer(TEXT, 400, SMOLLM2_TEMPLATE)
    hf_tok.save_pretrained(root / "hf")
    vocab = bpe.get_vocab_size() + len(SPECIAL_TOKENS) - 1   # room for the tokens `from-hf` adds (all but <pad>)
    conf = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                                    tie_word_embeddings=False, bos_token_id=hf_tok.bos_token_id,
                                    eos_token_id=hf_tok.eos_token_id)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(conf).save_pretrained(root / "hf")
    assert convert_main(["from-hf", str(root / "hf"), str(root / "ckpt")]) == 0
    return str(root / "hf"), str(root / "ckpt")


def flags(argv: list[str]) -> argparse.Namespace:
    """`hessgpt ask`'s backend and sampling flags."""
    p = argparse.ArgumentParser()
    add_backend_args(p)
    add_sampling_args(p)
    return p.parse_args(argv)


@pytest.fixture(scope="module")
def backends(pair):
    hf_dir, ckpt = pair
    hf, native = build_backend(flags(["--hf-model", hf_dir, "--no-tools"])), build_backend(flags(["--model1", ckpt, "--no-tools"]))
    assert isinstance(hf, HFBackend) and isinstance(native, DualModelBackend)
    assert native.engine.vocab_size == hf.model.config.vocab_size   # the conversion added no rows
    return hf, native


def hf_tokens(backend: HFBackend, params, messages=MESSAGES) -> tuple[list[int], list[int]]:
    """(prompt ids, sampled ids) of one turn through the HF backend."""
    seen = []
    generate = HFBackend._generate_text.__get__(backend)

    def spy(input_ids, params, budget, cancel, generator, kv=None):
        seen.append((input_ids[0].tolist(), kv))
        return generate(input_ids, params, budget, cancel, generator, kv=kv)

    backend._generate_text = spy
    try:
        events = list(backend.stream_chat(messages, params))
    finally:
        del backend._generate_text
    assert events[-1].type == "done" and len(seen) == 1
    prompt, kv = seen[0]
    return prompt, kv.sampled


def native_tokens(backend: DualModelBackend, params, messages=MESSAGES) -> tuple[list[int], list[int]]:
    """(prompt ids, sampled ids) of one turn through the router on the engine."""
    engine, prompts, sampled = backend.engine, [], []
    session = type(engine).session.__get__(engine)

    def spy(ids, p):
        gen = session(ids, p)
        next_token = gen.next_token
        gen.next_token = lambda: sampled.append(next_token()) or sampled[-1]
        prompts.append(list(ids))
        return gen

    engine.session = spy
    try:
        events = list(backend.stream_chat(messages, params))
    finally:
        del engine.session
    assert events[-1].type == "done" and len(prompts) == 1
    return prompts[0], sampled


# Sampled runs: seeds whose 20 tokens include none of HessGPT's role/tool tokens (`from-hf` adds them in the
# spare rows): the router ends or opens a block on one, transformers reads it as a plain token (re-picked for
# engine.sample's inverse-transform draw; the seeds that end early agree token for token up to that point).
@pytest.mark.parametrize("argv", [
    [],                                                                             # greedy
    ["--repetition-penalty", "1.8"],                                                # greedy, penalised
    ["--temperature", "0.8", "--top-k", "12", "--repetition-penalty", "1.3", "--seed", "8"],
    ["--temperature", "1.0", "--top-p", "0.9", "--repetition-penalty", "1.6", "--seed", "2"],
    ["--temperature", "1.0", "--top-k", "40", "--repetition-penalty", "1.6", "--seed", "5"],
])
def test_same_request_same_tokens_on_hf_model_and_model1(backends, argv):
    hf, native = backends
    params = sampling_from_args(flags(["--model1", "x", "--max-new-tokens", "20"] + argv))
    hf_prompt, hf_out = hf_tokens(hf, params)
    native_prompt, native_out = native_tokens(native, params)
    assert hf_prompt == native_prompt
    assert len(hf_out) == params.max_new_tokens
    assert hf_out == native_out


def test_the_penalty_covers_the_prompt(backends):
    """The first token is already penalised when the prompt holds it: with the old rule of the HF backend
    (generated tokens only) it was always the unpenalised one."""
    hf, native = backends
    greedy = sampling_from_args(flags(["--model1", "x", "--max-new-tokens", "1"]))
    penalised = sampling_from_args(flags(["--model1", "x", "--max-new-tokens", "1", "--repetition-penalty", "1.8"]))
    _, (first,) = hf_tokens(hf, greedy)
    messages = [{"role": "user", "content": MESSAGES[0]["content"] + hf.tokenizer.decode([first])}]  # the prompt holds it
    prompt, out = hf_tokens(hf, greedy, messages)
    assert first in prompt and out == [first]
    assert hf_tokens(hf, penalised, messages)[1] == native_tokens(native, penalised, messages)[1] != [first]


@pytest.mark.parametrize("n", [20, 40])
def test_usage_counts_tokens_as_model1_does(backends, n):
    """completion_tokens is the number of sampled tokens on both backends (the HF backend once counted text
    deltas: 20 tokens showed as 13 here, as byte tokens of one character stream as one delta)."""
    hf, native = backends
    params = sampling_from_args(flags(["--model1", "x", "--max-new-tokens", str(n)]))
    hf_done, native_done = list(hf.stream_chat(MESSAGES, params))[-1], list(native.stream_chat(MESSAGES, params))[-1]
    assert hf_done.data == native_done.data == {"finish_reason": "length", "prompt_tokens": hf_done.data["prompt_tokens"],
                                                "completion_tokens": n}
    assert len(hf_tokens(hf, params)[1]) == n
