"""Shared fixtures: a small trained tokenizer and a tiny random checkpoint (built once per session)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")           # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TEXT_FILES = [os.path.join(FIXTURES, "text", "fr_ud_gsd.txt"), os.path.join(FIXTURES, "text", "en_c4.txt")]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    from hessgpt.tokenizer import train_tokenizer

    out = str(tmp_path_factory.mktemp("tok"))
    train_tokenizer(TEXT_FILES, vocab_size=1024).save(out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from hessgpt.tokenizer import Tokenizer

    return Tokenizer.load(tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, tokenizer):
    """A random-weight `tiny` model saved as a HessGPT checkpoint (GQA, untied head, non-default rope base)."""
    from hessgpt import checkpoint
    from hessgpt.config import ModelConfig
    from hessgpt.model import Transformer

    cfg = ModelConfig.preset("tiny", vocab_size=tokenizer.vocab_size, tie_embeddings=False, rope_theta=50000.0)
    model = Transformer(cfg).init_weights(seed=0)
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny")
    checkpoint.save(path, model, tokenizer, meta={"stage": "test"})
    return path
