"""Mid-training shards: rendered conversations (special tokens kept) + text, readable by the shard loader."""

import json
import os

import numpy as np
import pytest

from hessgpt.data.chat_shards import main, write_chat_shards
from hessgpt.data.loader import ShardLoader
from hessgpt.errors import HessGPTError
from hessgpt.tokenizer import Tokenizer, train_tokenizer

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
TEXT = os.path.join(FIXTURES, "text", "en_c4.txt")
ROUTING = os.path.join(FIXTURES, "data", "routing.jsonl")   # inline format: <|code|> is plain text there
CODED = {"messages": [{"role": "user", "content": "Calcule 15 * 23"},
                      {"role": "assistant", "content": "Je calcule.", "code": "print(15 * 23)"},
                      {"role": "tool", "name": "python", "content": "345\n"},
                      {"role": "assistant", "content": "15 * 23 = 345."}]}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    train_tokenizer([TEXT, ROUTING], vocab_size=600).save(str(d))
    return Tokenizer.load(str(d))


def _records(path):
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def test_documents_are_rendered_conversations_and_text(tok, tmp_path):
    out = str(tmp_path / "mid")
    coded = tmp_path / "coded.jsonl"
    coded.write_text(json.dumps(CODED) + "\n", encoding="utf-8")
    m = write_chat_shards([ROUTING, str(coded)], [TEXT], tok, out, val_fraction=0.0, seed=0)
    tokens = np.fromfile(os.path.join(out, "train-c00-00000.bin"), dtype=m["dtype"]).tolist()
    # split the stream back into documents at </s>: every conversation's render() must be there, special
    # tokens included (that is the point of mid-training), and every text block encoded with <s> ... </s>
    docs, cur = [], []
    for t in tokens:
        cur.append(t)
        if t == tok.eos_id:
            docs.append(tuple(cur))
            cur = []
    assert not cur
    want = [tuple(tok.render(r)[0]) + (tok.eos_id,) for r in _records(ROUTING) + [CODED]]
    assert all(w in docs for w in want)
    assert tok.code_id in want[-1] and tok.result_id in want[-1]   # tool tokens kept, not plain text
    n_text = m["sources"][TEXT]["docs"]
    assert n_text > 0 and len(docs) == len(want) + n_text
    assert m["tokens"]["train"] == len(tokens) and m["tokens"]["val"] == 0


def test_loader_reads_them_and_val_is_disjoint_and_deterministic(tok, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    m = write_chat_shards([ROUTING], [TEXT], tok, a, val_fraction=0.2, seed=3)
    write_chat_shards([ROUTING], [TEXT], tok, b, val_fraction=0.2, seed=3)
    for f in ("train-c00-00000.bin", "val-c00-00000.bin"):
        assert open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read()
    assert m["tokens"]["val"] > 0 and m["tokens"]["train"] > 0
    total_docs = sum(s["docs"] for s in m["sources"].values())
    assert sum(s["train_docs"] + s["val_docs"] for s in m["sources"].values()) == total_docs
    x, y = next(iter(ShardLoader(a, batch_size=2, seq_len=16, tokenizer=tok)))
    assert x.shape == (2, 16) and bool((x[:, 1:] == y[:, :-1]).all())
    xv, _ = next(iter(ShardLoader(a, batch_size=1, seq_len=8, split="val", tokenizer=tok)))
    assert xv.shape == (1, 8)


def test_bad_inputs_name_the_file(tok, tmp_path):
    with pytest.raises(HessGPTError, match="nope.jsonl"):
        write_chat_shards([str(tmp_path / "nope.jsonl")], [], tok, str(tmp_path / "o"))
    with pytest.raises(HessGPTError, match="at least one"):
        write_chat_shards([], [], tok, str(tmp_path / "o"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                   "not json\n", encoding="utf-8")
    m = write_chat_shards([str(bad)], [], tok, str(tmp_path / "o"), val_fraction=0.0)
    assert m["sources"][str(bad)]["docs"] == 1 and m["sources"][str(bad)]["rejected"] == {"unreadable": 1}


def test_cli(tok, tmp_path, capsys):
    out = str(tmp_path / "cli")
    assert main(["--chat", ROUTING, "--tokenizer", tok.path, "--out", out]) == 0
    assert "train" in capsys.readouterr().out and os.path.exists(os.path.join(out, "manifest.json"))
