"""ShardLoader: exact resume, rank splitting, epochs, tokenizer mismatch and damaged shards."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from hessgpt.data.loader import ShardLoader, check_shards, shard_documents
from hessgpt.data.recipe import text_recipe
from hessgpt.data.shards import write_shards
from hessgpt.errors import HessGPTError

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "text")
TEXTS = [os.path.join(FIXTURES, "en_c4.txt"), os.path.join(FIXTURES, "fr_ud_gsd.txt")]


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory, tokenizer):
    out = str(tmp_path_factory.mktemp("shards") / "out")
    write_shards(text_recipe(TEXTS, shard_tokens=3001, val_fraction=0.2), tokenizer, out, workers=1)
    return out


def _stream(d, split="train"):
    m = json.load(open(os.path.join(d, "manifest.json")))
    return np.concatenate([np.fromfile(os.path.join(d, s["file"]), dtype=m["dtype"]).astype(np.int64)
                           for s in m["shards"] if s["split"] == split])


def _take(loader, n):
    return [next(loader) for _ in range(n)]


def test_batches_are_the_token_stream_with_shifted_targets(shards_dir):
    stream = _stream(shards_dir)
    loader = ShardLoader(shards_dir, batch_size=3, seq_len=50, seed=0)
    assert loader.tokens_per_epoch == len(stream) > 3 * 3001  # several shards
    assert loader.steps_per_epoch == (len(stream) - 1) // 150
    for step in range(loader.steps_per_epoch):  # crosses shard boundaries (3001 is not a multiple of 150)
        x, y = next(loader)
        assert x.shape == y.shape == (3, 50) and x.dtype == y.dtype == torch.long
        g = step * 150
        assert torch.equal(x.flatten(), torch.from_numpy(stream[g:g + 150]))
        assert torch.equal(y.flatten(), torch.from_numpy(stream[g + 1:g + 151]))
    assert loader.epoch == 0
    next(loader)
    assert loader.epoch == 1


def _resume_matches(shards_dir, world_size, steps, cut, **kw):
    for rank in range(world_size):
        ref = ShardLoader(shards_dir, rank=rank, world_size=world_size, **kw)
        expected = _take(ref, steps)
        first = ShardLoader(shards_dir, rank=rank, world_size=world_size, **kw)
        _take(first, cut)
        state = json.loads(json.dumps(first.state_dict()))  # survives a JSON checkpoint
        resumed = ShardLoader(shards_dir, rank=rank, world_size=world_size, **kw)
        resumed.load_state_dict(state)
        got = _take(resumed, steps - cut)
        for (x0, y0), (x1, y1) in zip(expected[cut:], got):
            assert torch.equal(x0, x1) and torch.equal(y0, y1)


@pytest.mark.parametrize("world_size", [1, 2])
def test_resumed_loader_yields_the_same_batches(shards_dir, world_size):
    kw = dict(batch_size=4, seq_len=64, seed=7)
    per_epoch = ShardLoader(shards_dir, world_size=world_size, **kw).steps_per_epoch
    steps = 2 * per_epoch + 3  # into the third epoch (shuffled shard order)
    for cut in (1, per_epoch - 1, per_epoch + 2):
        _resume_matches(shards_dir, world_size, steps, cut, **kw)


def test_two_ranks_split_the_rows_of_one_rank_with_twice_the_batch(shards_dir):
    B, T = 2, 40
    one = ShardLoader(shards_dir, batch_size=2 * B, seq_len=T, seed=3)
    r0 = ShardLoader(shards_dir, batch_size=B, seq_len=T, rank=0, world_size=2, seed=3)
    r1 = ShardLoader(shards_dir, batch_size=B, seq_len=T, rank=1, world_size=2, seed=3)
    assert r0.steps_per_epoch == r1.steps_per_epoch == one.steps_per_epoch
    for _ in range(2 * one.steps_per_epoch + 2):
        (x, y), (x0, y0), (x1, y1) = next(one), next(r0), next(r1)
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
        assert r0.state_dict()["offset"] == r1.state_dict()["offset"] == one.state_dict()["offset"]
    # the rows of an epoch never repeat across ranks or steps
    r0 = ShardLoader(shards_dir, batch_size=B, seq_len=T, rank=0, world_size=2)
    r1 = ShardLoader(shards_dir, batch_size=B, seq_len=T, rank=1, world_size=2)
    starts = []
    for _ in range(r0.steps_per_epoch):
        g = r0.position
        starts += [g + i * T for i in range(B)]
        next(r0)
        starts += [g + B * T + i * T for i in range(B)]
        next(r1)
    assert len(set(starts)) == len(starts)


def test_epochs_reshuffle_shards_by_seed(shards_dir):
    a = ShardLoader(shards_dir, batch_size=1, seq_len=3000, seed=0)
    b = ShardLoader(shards_dir, batch_size=1, seq_len=3000, seed=1)
    n = a.steps_per_epoch
    ea, eb = _take(a, n), _take(b, n)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(ea, eb))  # epoch 0: manifest order for every seed
    a._set_epoch(1), b._set_epoch(1)
    assert a._order != list(range(len(a.shards))) or b._order != list(range(len(b.shards)))
    assert a._order != b._order


def test_state_is_a_token_position_so_batch_shape_may_change(shards_dir):
    a = ShardLoader(shards_dir, batch_size=2, seq_len=32)
    _take(a, 5)
    b = ShardLoader(shards_dir, batch_size=4, seq_len=16, world_size=2, rank=1)
    b.load_state_dict(a.state_dict())
    assert b.position == a.position == 5 * 64
    x, _ = next(b)
    stream = _stream(shards_dir)
    assert torch.equal(x.flatten(), torch.from_numpy(stream[320 + 64:320 + 128]))
    with pytest.raises(HessGPTError, match="seed"):
        ShardLoader(shards_dir, batch_size=2, seq_len=32, seed=9).load_state_dict(a.state_dict())
    with pytest.raises(HessGPTError, match="split"):
        ShardLoader(shards_dir, batch_size=2, seq_len=32, split="val").load_state_dict(a.state_dict())


def test_val_split(shards_dir):
    val = ShardLoader(shards_dir, batch_size=2, seq_len=16, split="val")
    stream = _stream(shards_dir, "val")
    assert val.tokens_per_epoch == len(stream)
    x, y = next(val)
    assert torch.equal(x.flatten(), torch.from_numpy(stream[:32]))


def test_other_tokenizer_is_a_clear_error(shards_dir, tokenizer, tmp_path):
    from hessgpt.tokenizer import Tokenizer, train_tokenizer

    assert check_shards(shards_dir, tokenizer)["tokenizer"]["hash"] == tokenizer.hash
    other_dir = str(tmp_path / "other")
    train_tokenizer(TEXTS[:1], vocab_size=400).save(other_dir)
    other = Tokenizer.load(other_dir)
    with pytest.raises(HessGPTError) as e:
        check_shards(shards_dir, other_dir)
    assert tokenizer.hash in str(e.value) and other.hash in str(e.value)
    with pytest.raises(HessGPTError, match=other.hash):
        ShardLoader(shards_dir, batch_size=1, seq_len=8, tokenizer=other)
    ShardLoader(shards_dir, batch_size=1, seq_len=8, tokenizer=tokenizer)  # the right one is accepted


def test_damaged_or_missing_shards_and_too_small_splits(shards_dir, tmp_path):
    d = str(tmp_path / "copy")
    shutil.copytree(shards_dir, d)
    m = json.load(open(os.path.join(d, "manifest.json")))
    first = os.path.join(d, m["shards"][0]["file"])
    with open(first, "r+b") as f:
        f.truncate(100)
    with pytest.raises(HessGPTError, match="expected .* bytes"):
        ShardLoader(d, batch_size=1, seq_len=8)
    os.remove(first)
    with pytest.raises(HessGPTError, match="no file"):
        ShardLoader(d, batch_size=1, seq_len=8)
    with pytest.raises(HessGPTError, match="fewer than one step"):
        ShardLoader(shards_dir, batch_size=64, seq_len=4096, split="val")
    with pytest.raises(HessGPTError, match="no manifest"):
        ShardLoader(str(tmp_path), batch_size=1, seq_len=8)
    with pytest.raises(HessGPTError, match="no 'test' shards"):
        ShardLoader(shards_dir, batch_size=1, seq_len=8, split="test")


def test_shard_documents_are_the_written_documents(shards_dir, tokenizer):
    """Each val shard's documents (pieces where a document runs across shards), in writing order."""
    m = json.load(open(os.path.join(shards_dir, "manifest.json")))
    pieces = [shard_documents(os.path.join(shards_dir, s["file"])) for s in m["shards"] if s["split"] == "val"]
    stream = _stream(shards_dir, "val")
    text = stream[(stream != tokenizer.bos_id) & (stream != tokenizer.eos_id)].tolist()
    assert len(pieces) > 1 and [t for docs in pieces for d in docs for t in d] == text
    first = pieces[0][0]
    assert [tokenizer.bos_id] + first + [tokenizer.eos_id] == stream[:len(first) + 2].tolist()


def test_shard_documents_take_dtype_and_ids_from_the_manifest(tmp_path):
    """A tokenizer whose <s>/</s> are not 1/2 and a uint32 vocabulary (an adopted HF tokenizer)."""
    stream = np.array([7, 70000, 5, 8, 7, 1, 2, 0, 8, 7, 3], dtype=np.uint32)  # 1, 2 and 0 are text here
    stream.tofile(tmp_path / "val-c00-00000.bin")
    (tmp_path / "manifest.json").write_text(json.dumps({
        "tokenizer": {"hash": "x", "vocab_size": 70001, "bos_id": 7, "eos_id": 8}, "dtype": "uint32",
        "shards": [{"file": "val-c00-00000.bin", "split": "val", "chunk": 0, "tokens": len(stream)}]}))
    assert shard_documents(str(tmp_path / "val-c00-00000.bin")) == [[70000, 5], [1, 2, 0], [3]]
    stream[:5].tofile(tmp_path / "val-c00-00000.bin")  # truncated: named, not misread
    with pytest.raises(HessGPTError, match="expected 44 bytes"):
        shard_documents(str(tmp_path / "val-c00-00000.bin"))
    with pytest.raises(HessGPTError, match="not a shard listed"):
        shard_documents(str(tmp_path / "other.bin"))
