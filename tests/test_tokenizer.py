import json
import os

import pytest

from hessgpt.errors import HessGPTError
from hessgpt.tokenizer import SPECIAL_TOKENS, Tokenizer, adopt_tokenizer

TEXT_FILES = [os.path.join(os.path.dirname(__file__), "fixtures", "text", n) for n in ("fr_ud_gsd.txt", "en_c4.txt")]

TEXTS = [
    "Bonjour ! Ça va ? L'élève a réussi l'épreuve — « très bien » à 95 %.",
    "The quick brown fox jumps over the lazy dog's back... twice!",
    "Emoji: 👋🏽 🇫🇷 🤖 ✨ — and CJK 中文, Ünïcödé ½ ∑",
    "def fib(n):\n    if n < 2:\n        return n\n\treturn fib(n - 1) + fib(n - 2)  # tabs, spaces\n\n\n",
    "  leading and trailing spaces  ",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_is_lossless(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_special_ids_are_fixed(tokenizer):
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tokenizer.special[t] == i
        assert tokenizer.hf.token_to_id(t) == i


def test_special_tokens_cannot_come_from_text(tokenizer):
    for t in SPECIAL_TOKENS:
        ids = tokenizer.encode(f"user typed {t} here")
        assert not set(ids) & tokenizer.special_id_set, t
        assert tokenizer.decode(ids) == f"user typed {t} here"


def test_fast_encoder_is_verified_identical(tokenizer):
    assert tokenizer._fast_encoder() is not None, "tiktoken fast path should be available for byte-level BPE"
    for path in TEXT_FILES:
        text = open(path, encoding="utf-8").read()
        for line in text.splitlines()[:400]:
            assert tokenizer.encode(line) == tokenizer.encode_slow(line)
        assert tokenizer.encode(text[:20000]) == tokenizer.encode_slow(text[:20000])


CONV = {"tools": [{"name": "get_weather", "description": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "messages": [
            {"role": "system", "content": "Tu es HessGPT."},
            {"role": "user", "content": "Calcule la racine carrée de 144"},
            {"role": "assistant", "content": "Je calcule.", "code": "import math\nprint(math.sqrt(144))"},
            {"role": "tool", "name": "python", "content": "12.0\n"},
            {"role": "assistant", "content": "La racine carrée de 144 est 12.0."},
            {"role": "user", "content": "Et la météo à Paris et Lyon ?"},
            {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                                                                {"name": "get_weather", "arguments": {"city": "Lyon"}}]},
            {"role": "tool", "name": "get_weather", "content": "{\"temp\": 21}"},
            {"role": "tool", "name": "get_weather", "content": "{\"temp\": 23}"},
            {"role": "assistant", "content": "21 °C à Paris, 23 °C à Lyon."},
            {"role": "user", "content": "Cherche HessGPT"},
            {"role": "assistant", "content": "", "search": "HessGPT"},
            {"role": "tool", "name": "search", "content": "HessGPT est un modèle."},
            {"role": "assistant", "content": "Voilà.", "code": "<p>hi</p>", "code_lang": "html"},
            {"role": "assistant", "content": "Fini."},
        ]}


def _spans(tok, ids, mask):
    """Decoded text of the masked (trained) spans, and of the unmasked ones."""
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    ignored = tok.decode([i for i, m in zip(ids, mask) if not m])
    return trained, ignored


def test_loss_mask_trains_only_on_assistant_tokens(tokenizer):
    ids, mask = tokenizer.render(CONV)
    assert len(ids) == len(mask)
    trained, ignored = _spans(tokenizer, ids, mask)
    for s in ["Je calcule.", "import math", "La racine carrée de 144 est 12.0.", "21 °C à Paris", "get_weather", "Lyon", "HessGPT", "Fini."]:
        assert s in trained, s
    for s in ["Tu es HessGPT.", "Calcule la racine", "12.0\n", "{\"temp\": 21}", "Et la météo", "HessGPT est un modèle.", "# Tools"]:
        assert s in ignored and s not in trained, s
    # structure tokens: role markers and results are context, assistant's closers are targets
    by_id = {}
    for i, m in zip(ids, mask):
        by_id.setdefault(i, set()).add(m)
    assert by_id[tokenizer.user_id] == {0} and by_id[tokenizer.system_id] == {0} and by_id[tokenizer.assistant_id] == {0}
    assert by_id[tokenizer.result_id] == {0} and by_id[tokenizer.tool_response_id] == {0}
    assert by_id[tokenizer.code_id] == {1} and by_id[tokenizer.tool_call_id] == {1} and by_id[tokenizer.search_id] == {1}
    assert by_id[tokenizer.end_id] == {0, 1}
    assert ids.count(tokenizer.assistant_id) == 3  # one marker per turn, results injected mid-turn


def test_parse_inverts_render(tokenizer):
    ids, _ = tokenizer.render(CONV)
    assert tokenizer.parse(ids) == CONV["messages"]


def test_tools_without_a_system_message_are_rendered_not_dropped(tokenizer):
    """A conversation (an API request, a glaive/BFCL record) with tools and no system message: an empty system
    message is put first and the tools go into it, in training and at generation; parse gives the messages back."""
    conv = {"tools": CONV["tools"], "messages": CONV["messages"][1:]}
    ids, mask = tokenizer.render(conv)
    want, _ = tokenizer.render({"tools": CONV["tools"], "messages": [{"role": "system", "content": ""}, *conv["messages"]]})
    assert ids == want and ids[1] == tokenizer.system_id
    assert '# Tools\n{"name": "get_weather"' in tokenizer.decode(ids[:ids.index(tokenizer.end_id)])
    first = {"tools": CONV["tools"], "messages": conv["messages"][:1]}
    assert tokenizer.render_for_generation(first)[:ids.index(tokenizer.end_id)] == ids[:ids.index(tokenizer.end_id)]
    assert tokenizer.parse(ids)[0] == conv["messages"][0]
    assert tokenizer.render({"messages": conv["messages"]})[0][1] == tokenizer.user_id   # no tools: no system message


def test_parse_reads_tool_calls_with_the_lenient_parser(tokenizer):
    # a small model's call with text around it / as a Python literal is read like the router reads it
    def call_ids(body):
        return [tokenizer.assistant_id, tokenizer.tool_call_id, *tokenizer.encode(body), tokenizer.end_id, tokenizer.end_id]
    got = tokenizer.parse(call_ids('Sure: {"name": "get_weather", "arguments": {"city": "Lyon"}}'))
    assert got[-1]["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Lyon"}}]
    got = tokenizer.parse(call_ids("{'name': 'add', 'arguments': '{\"a\": 2}'}"))
    assert got[-1]["tool_calls"] == [{"name": "add", "arguments": {"a": 2}}]
    got = tokenizer.parse(call_ids("no call here"))            # unparsable: kept verbatim for the caller to report
    assert got[-1]["tool_calls"] == [{"name": None, "arguments": "no call here"}]


def test_render_for_generation_ends_with_assistant(tokenizer):
    msgs = CONV["messages"][:5] + [{"role": "user", "content": "Merci"}]
    ids = tokenizer.render_for_generation(msgs)
    assert ids[-1] == tokenizer.assistant_id and ids[-2] == tokenizer.end_id
    with pytest.raises(HessGPTError):
        tokenizer.render_for_generation(CONV["messages"][:3])


def test_bad_messages_name_the_problem(tokenizer):
    with pytest.raises(HessGPTError, match="message 1: unknown role 'robot'"):
        tokenizer.render([{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}])
    with pytest.raises(HessGPTError, match="message 0: a tool message"):
        tokenizer.render([{"role": "tool", "content": "x"}])


def test_adopt_adds_missing_special_tokens(tmp_path):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    hf = HFTokenizer(models.BPE(vocab={"a": 0, "b": 1, "<s>": 2, "</s>": 3, "<unk>": 4}, merges=[], unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.save(str(tmp_path / "tokenizer.json"))
    tok = adopt_tokenizer(str(tmp_path))
    assert tok.special["<s>"] == 2 and tok.special["<|code|>"] >= 5
    assert tok.vocab_size == 5 + len(SPECIAL_TOKENS) - 4  # <s> </s> <unk> existed; <pad> falls back to <unk>
    tok.save(str(tmp_path / "adopted"))
    again = Tokenizer.load(str(tmp_path / "adopted"))
    assert again.special == tok.special
    assert json.load(open(tmp_path / "adopted" / "hessgpt_tokenizer.json"))["special_tokens"]["<|end|>"] == tok.end_id


def test_lang_weights_subsample(tmp_path):
    from hessgpt.tokenizer import _weighted_texts

    fr = list(_weighted_texts(TEXT_FILES, {"fr": 0.5, "en": 0.5}))
    heavy_fr = list(_weighted_texts(TEXT_FILES, {"fr": 0.9, "en": 0.1}))
    en_bytes = lambda docs: sum(len(d) for d in docs if "the" in d.split())  # crude: English docs use "the"
    assert en_bytes(heavy_fr) < en_bytes(fr)


def test_smollm2_pre_tokenizer_gets_the_fast_path_with_identical_tokens(tmp_path):
    """SmolLM2's pre-tokenizer (Digits(individual_digits) then ByteLevel's regex, a Sequence) maps to
    SMOLLM_PATTERN: the tiktoken path is taken and gives `tokenizers`' tokens exactly, whitespace runs before a
    digit included (where the one-regex DIGITS_PATTERN splits "  1" as " ", " ", "1")."""
    import tiktoken
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from hessgpt.tokenizer import DIGITS_PATTERN, SMOLLM_PATTERN

    corpus = [open(p, encoding="utf-8").read() for p in TEXT_FILES] + ["x = [\n    1,\n    22]\n  3  ' 4\t\t5"] * 20
    bpe = HFTokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=list(SPECIAL_TOKENS),
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = Tokenizer(bpe)
    fast = tok._fast_encoder()
    assert fast is not None and fast._pat_str == SMOLLM_PATTERN
    probes = ["x = [\n    1,\n    22]", "  1 22 333 ' 4", "a  1b", "\t\t5", "l'été 2024  à  12h30", *TEXTS]
    for text in probes + corpus[0].splitlines()[:300]:
        assert tok.encode(text) == tok.encode_slow(text), text
    # the case that tells the two regexes apart: the one-regex split would not have matched
    ranks = fast._mergeable_ranks
    naive = tiktoken.Encoding(name="naive", pat_str=DIGITS_PATTERN, mergeable_ranks=ranks, special_tokens={})
    assert naive.encode_ordinary("x  1") != tok.encode_slow("x  1") == fast.encode_ordinary("x  1")
