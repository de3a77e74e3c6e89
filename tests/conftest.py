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


# A tiny byte-level BPE with ChatML's special tokens as a transformers tokenizer, for tests that build a small
# Hugging Face Llama to import (`hessgpt convert from-hf`); a fixture since the tests import in importlib mode.
CHATML = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _chatml_tokenizer(texts: list[str], vocab_size: int, chat_template: str | None = None,
                     pad_token: str | None = "<|im_end|>"):
    """(tokenizers.Tokenizer, transformers.PreTrainedTokenizerFast) trained on `texts`; bos <|im_start|>,
    eos <|im_end|>, unk <|endoftext|>."""
    import transformers
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    bpe = HFTokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=CHATML,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    extra = {"pad_token": pad_token} if pad_token else {}
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                                  unk_token="<|endoftext|>", **extra)
    if chat_template is not None:
        hf_tok.chat_template = chat_template
    return bpe, hf_tok


@pytest.fixture(scope="session")
def chatml_tokenizer():
    """`chatml_tokenizer(texts, vocab_size, chat_template=None, pad_token="<|im_end|>") -> (bpe, hf_tok)`."""
    return _chatml_tokenizer
