"""Fixtures for the training tests: tiny conversation sets, a tiny base checkpoint, token shards."""

import json
import os
import random
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_conversations(n: int, seed: int = 0) -> list[dict]:
    """Small routing-style conversations: arithmetic answered with code + result, greetings answered directly."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        if i % 3 == 2:
            msgs = [{"role": "user", "content": rng.choice(["Bonjour !", "Hello there", "Merci beaucoup"])},
                    {"role": "assistant", "content": rng.choice(["Bonjour, comment puis-je aider ?", "Hi! How can I help?"])}]
        else:
            msgs = [{"role": "system", "content": "Tu es HessGPT."},
                    {"role": "user", "content": f"Combien font {a} fois {b} ?"},
                    {"role": "assistant", "content": "Je calcule.", "code": f"print({a} * {b})"},
                    {"role": "tool", "name": "python", "content": f"{a * b}\n"},
                    {"role": "assistant", "content": f"{a} fois {b} font {a * b}."}]
        out.append({"id": f"test:{i}", "source": "test", "lang": "fr", "messages": msgs})
    return out


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


@pytest.fixture(scope="session")
def sft_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sftdata")
    write_jsonl(d / "train.jsonl", make_conversations(96, seed=1))
    write_jsonl(d / "val.jsonl", make_conversations(12, seed=2))
    return str(d)


@pytest.fixture(scope="session")
def small_base(tmp_path_factory, tokenizer):
    """A tiny random model (dim 64, 2 layers, ctx 128, GQA, untied) as a HessGPT checkpoint."""
    from hessgpt import checkpoint
    from hessgpt.config import ModelConfig
    from hessgpt.model import Transformer

    cfg = ModelConfig(vocab_size=tokenizer.vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=160,
                      context_length=128, tie_embeddings=False)
    model = Transformer(cfg).init_weights(seed=0)
    path = str(tmp_path_factory.mktemp("base") / "base")
    checkpoint.save(path, model, tokenizer, meta={"stage": "test"})
    return path


def run_cli(*args, env=None, timeout=300):
    """`python -m hessgpt ARGS` in a subprocess -> CompletedProcess (text)."""
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "hessgpt", *map(str, args)], cwd=REPO, env=e, capture_output=True,
                          text=True, timeout=timeout)


FIXTURES_TEXT = [os.path.join(REPO, "tests", "fixtures", "text", "fr_ud_gsd.txt"),
                 os.path.join(REPO, "tests", "fixtures", "text", "en_c4.txt")]
