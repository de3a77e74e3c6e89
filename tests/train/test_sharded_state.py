"""`--sharded-state`: OUT/last holds each rank's shard of the model (or LoRA adapter) and optimizer, written by
torch.distributed.checkpoint (distributed.save_sharded_state), read back resharded on any number of processes.

"Equal" is the tolerance of test_fsdp.py: with dropout 0, 2 processes x 1 micro-batch and 1 process x 2
micro-batches compute the same update up to the order of fp32 sums (1e-6; measured 0.0 on this CPU).
"""

import os
import shutil

import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader

from hessgpt import checkpoint
from hessgpt.errors import HessGPTError
from hessgpt.train import common
from hessgpt.train import distributed as D
from hessgpt.train import lora as L
from hessgpt.train.common import read_metrics

from .conftest import FIXTURES_TEXT, run_cli
from .test_fsdp import TOL, _assert_same_run, _sft, _torchrun

ONE = D.DistInfo()   # a single process: DCP without a process group


def _net(width: int = 16) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, width), torch.nn.Linear(width, 4))
    opt = common.make_optimizer(net.parameters(), 1e-2, 0.1)
    net(torch.randn(5, 8)).square().mean().backward()
    opt.step()
    opt.zero_grad()
    return net, opt


def _write_marker(tmp):
    with open(os.path.join(tmp, "train_state.pt"), "wb") as f:
        torch.save({"step": 1}, f)


def test_one_process_round_trip_and_an_interrupted_save_keeps_the_previous_state(tmp_path):
    """The model and AdamW state come back exactly (one process, no process group); a save that fails half-way
    (here: in the small files, after the shards) leaves the previous folder as it was and no temp folder."""
    net, opt = _net()
    path = str(tmp_path / "last")
    D.save_sharded_state(path, net, opt, ONE, _write_marker)
    assert D.is_sharded_state(path) and os.path.exists(os.path.join(path, "train_state.pt"))
    fresh, fresh_opt = _net()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)
    D.load_sharded_state(path, fresh, fresh_opt, ONE)
    for a, b in zip(net.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    sa, sb = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (i, k)
    before = sorted(os.listdir(path)), sorted(os.listdir(os.path.join(path, D.SHARDED_DIR)))

    def crash(tmp):
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError, match="killed"):
        D.save_sharded_state(path, fresh, fresh_opt, ONE, crash)
    assert (sorted(os.listdir(path)), sorted(os.listdir(os.path.join(path, D.SHARDED_DIR)))) == before
    assert sorted(os.listdir(tmp_path)) == ["last"]


def test_a_sharded_state_of_another_model_is_a_one_line_error(tmp_path):
    net, opt = _net()
    path = str(tmp_path / "last")
    D.save_sharded_state(path, net, opt, ONE, _write_marker)
    other, other_opt = _net(width=24)
    with pytest.raises(HessGPTError) as e:
        D.load_sharded_state(path, other, other_opt, ONE)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(os.path.join(path, D.SHARDED_DIR)) and "saved by another run" in msg


def _shard_files(last: str) -> list[str]:
    return sorted(n for n in os.listdir(os.path.join(last, D.SHARDED_DIR)) if n.endswith(".distcp"))


@pytest.mark.slow
def test_fsdp_pretrain_sharded_state_resumes_on_two_and_on_one_rank(tokenizer_dir, tmp_path):
    """2 FSDP ranks write their own shards at the chunk end (no model.safetensors, no optimizer in train_state.pt);
    resumed on 2 ranks, and on 1 rank with --grad-accum 2, both equal an uninterrupted 1-rank run (dropout 0),
    and both end as the usual checkpoint folder."""
    shards = str(tmp_path / "shards")
    r = run_cli("data", "shards", "--text", *FIXTURES_TEXT, "--tokenizer", tokenizer_dir, "--out", shards,
                "--val-fraction", "0.1", "--shard-tokens", "8192", "--workers", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    args = lambda out, *e: ["pretrain", "--model", "tiny", "--set", "dim=64", "--set", "n_layers=2", "--set", "context_length=64",
                            "--data", shards, "--out", out, "--batch-size", "4", "--steps", "6", "--dtype", "fp32",
                            "--device", "cpu", "--eval-every", "0", "--eval-batches", "2", "--no-progress", *e]
    ref = str(tmp_path / "ref")
    r = run_cli(*args(ref, "--grad-accum", "2"))
    assert r.returncode == 0, r.stderr
    two, one = str(tmp_path / "two"), str(tmp_path / "one")
    _torchrun(args(two, "--fsdp", "--sharded-state", "--chunk", "1/2"), 29541)
    last = os.path.join(two, "last")
    assert D.is_sharded_state(last) and _shard_files(last) == ["__0_0.distcp", "__1_0.distcp"]
    assert not os.path.exists(os.path.join(last, "model.safetensors"))
    assert not [n for n in os.listdir(two) if ".tmp-" in n or ".old-" in n]
    ts = torch.load(os.path.join(last, "train_state.pt"), weights_only=False)
    assert ts["sharded"] and "optimizer" not in ts and ts["world_size"] == 2 and len(ts["rng"]) == 2 and ts["step"] == 3
    os.makedirs(one)
    for name in ("last", "metrics.jsonl"):
        (shutil.copytree if name == "last" else shutil.copy)(os.path.join(two, name), os.path.join(one, name))
    _torchrun(args(two, "--fsdp", "--sharded-state", "--chunk", "2/2"), 29543)
    r = run_cli(*args(one, "--fsdp", "--sharded-state", "--grad-accum", "2", "--chunk", "2/2"))
    assert r.returncode == 0, r.stderr
    wa = checkpoint.load_model(ref).state_dict()
    a = read_metrics(os.path.join(ref, "metrics.jsonl"))
    for run in (two, one):
        assert checkpoint.is_checkpoint(run) and not os.path.exists(os.path.join(run, "last"))
        assert not os.path.exists(os.path.join(run, D.SHARDED_DIR))
        b = read_metrics(os.path.join(run, "metrics.jsonl"))
        assert [x["step"] for x in a] == [x["step"] for x in b] == list(range(1, 7))
        for x, y in zip(a, b):
            assert abs(x["loss"] - y["loss"]) < TOL, (run, a, b)
        wb = checkpoint.load_model(run).state_dict()
        assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < TOL


@pytest.mark.slow
def test_fsdp_lora_sharded_state_two_ranks_then_one_equals_uninterrupted(small_base, sft_dir, tmp_path):
    """sft --lora --fsdp --sharded-state: the shards hold the adapter's parameters and their AdamW state only (not
    the frozen base); 2 ranks then 1 rank (--grad-accum 2) equal an uninterrupted 1-rank run; OUT is a PEFT adapter."""
    ref = str(tmp_path / "ref")
    r = run_cli(*_sft(small_base, sft_dir, ref, "--dropout", "0", "--grad-accum", "2"))
    assert r.returncode == 0, r.stderr
    run = str(tmp_path / "run")
    _torchrun(_sft(small_base, sft_dir, run, "--dropout", "0", "--fsdp", "--sharded-state", "--chunk", "1/2"), 29545)
    last = os.path.join(run, "last")
    assert D.is_sharded_state(last) and _shard_files(last) == ["__0_0.distcp", "__1_0.distcp"]
    saved = FileSystemReader(os.path.join(last, D.SHARDED_DIR)).read_metadata().state_dict_metadata
    weights = [k for k in saved if k.startswith("model.")]
    assert len(weights) == 2 * 4 * 2 and all("lora_" in k for k in weights), weights
    assert any(k.startswith("optim.state.") and k.endswith("exp_avg") for k in saved)
    ts = torch.load(os.path.join(last, "train_state.pt"), weights_only=False)
    assert ts["sharded"] and "optimizer" not in ts and ts["step"] == 3 and len(ts["rng"]) == 2
    r = run_cli(*_sft(small_base, sft_dir, run, "--dropout", "0", "--fsdp", "--sharded-state", "--grad-accum", "2",
                      "--chunk", "2/2"))
    assert r.returncode == 0, r.stderr
    _assert_same_run(ref, run)
    cfg, sd, _ = L.read_adapter(run)
    assert cfg.r == 8 and not os.path.exists(os.path.join(run, "last"))


def test_full_sft_sharded_state_chunks_on_one_process_equal_uninterrupted(small_base, sft_dir, tmp_path):
    """Full fine-tuning (every weight in the shards, strict), one process (DCP without a process group): chunk 1/2
    with --sharded-state, then chunk 2/2, equals the uninterrupted run; OUT ends as the usual checkpoint."""
    args = lambda out, *e: ["sft", "--base", small_base, "--data", sft_dir, "--out", out, "--batch-size", "2", "--seq-len", "96",
                            "--dtype", "fp32", "--no-progress", "--eval-every", "0", "--steps", "4", "--lr", "1e-3",
                            "--device", "cpu", "--threads", "1", *e]
    ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
    r = run_cli(*args(ref))
    assert r.returncode == 0, r.stderr
    r = run_cli(*args(run, "--sharded-state", "--chunk", "1/2"))
    assert r.returncode == 0, r.stderr
    last = os.path.join(run, "last")
    assert D.is_sharded_state(last) and _shard_files(last) == ["__0_0.distcp"]
    assert not os.path.exists(os.path.join(last, "model.safetensors"))
    r = run_cli(*args(run, "--sharded-state", "--chunk", "2/2"))
    assert r.returncode == 0, r.stderr
    assert "torch.distributed is disabled" not in r.stderr
    a, b = read_metrics(os.path.join(ref, "metrics.jsonl")), read_metrics(os.path.join(run, "metrics.jsonl"))
    assert [x["step"] for x in a] == [x["step"] for x in b] == [1, 2, 3, 4]
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) < TOL, (a, b)
    assert checkpoint.is_checkpoint(run) and not os.path.exists(last)
    wa, wb = checkpoint.load_model(ref).state_dict(), checkpoint.load_model(run).state_dict()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < TOL
