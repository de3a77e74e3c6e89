"""Pretraining: exact resume after SIGKILL, chunked runs, DDP == accumulation, one-line errors on bad inputs."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hessgpt.train.common import read_metrics

from .conftest import FIXTURES_TEXT, REPO, run_cli

STEPS = 40


@pytest.fixture(scope="module")
def shards(tmp_path_factory, tokenizer_dir):
    out = str(tmp_path_factory.mktemp("shards") / "s")
    r = run_cli("data", "shards", "--text", *FIXTURES_TEXT, "--tokenizer", tokenizer_dir, "--out", out,
                "--val-fraction", "0.1", "--shard-tokens", "8192", "--workers", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    return out


def pretrain_args(shards, out, *extra):
    # dropout on, so an exact resume also needs the RNG state back
    return ["pretrain", "--model", "tiny", "--set", "dim=64", "--set", "n_layers=2", "--set", "context_length=64",
            "--set", "dropout=0.1", "--data", shards, "--out", out, "--batch-size", "4", "--steps", STEPS,
            "--dtype", "fp32", "--device", "cpu", "--eval-every", "20", "--eval-batches", "2", "--no-progress", *map(str, extra)]


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "run")
    r = run_cli(*pretrain_args(shards, out, "--save-every", "0"))
    assert r.returncode == 0, r.stderr
    return out


def losses(run):
    return [(r["step"], r["loss"], r.get("val_loss")) for r in read_metrics(os.path.join(run, "metrics.jsonl"))]


def assert_same(a, b):
    assert [x[0] for x in a] == [x[0] for x in b] == list(range(1, STEPS + 1))
    for x, y in zip(a, b):
        assert abs(x[1] - y[1]) < 1e-6, (x, y)
        assert (x[2] is None) == (y[2] is None) and (x[2] is None or abs(x[2] - y[2]) < 1e-6), (x, y)


def test_reference_run_outputs(reference):
    rows = read_metrics(os.path.join(reference, "metrics.jsonl"))
    assert rows[-1]["loss"] < rows[0]["loss"]
    val = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in val] == [20, 40] and all(0 < r["val_bpb"] < 20 for r in val)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "meta.json", "loss.png"):
        assert os.path.exists(os.path.join(reference, name)), name
    meta = json.load(open(os.path.join(reference, "meta.json")))
    assert meta["stage"] == "pretrain" and meta["step"] == STEPS and meta["parent"] is None
    assert not os.path.exists(os.path.join(reference, "last"))


def test_resume_after_sigkill_gives_identical_losses(shards, reference, tmp_path):
    out = str(tmp_path / "run")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "hessgpt", *map(str, pretrain_args(shards, out, "--save-every", "4"))],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    meta = os.path.join(out, "last", "meta.json")
    killed_at = None
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(meta):
            os.kill(proc.pid, signal.SIGKILL)   # no chance to clean up: only the last checkpoint survives
            killed_at = json.load(open(meta))["step"]
            break
        time.sleep(0.005)
    proc.communicate(timeout=60)
    if killed_at is None:
        pytest.skip("the run finished before the first checkpoint was seen")
    assert proc.returncode == -signal.SIGKILL and killed_at < STEPS
    assert not os.path.exists(os.path.join(out, "meta.json"))
    r = run_cli(*pretrain_args(shards, out, "--save-every", "4", "--resume"))
    assert r.returncode == 0, r.stderr
    assert_same(losses(reference), losses(out))


def test_chunks_continue_exactly(shards, reference, tmp_path):
    out = str(tmp_path / "run")
    r = run_cli(*pretrain_args(shards, out, "--chunk", "1/2", "--save-every", "0"))
    assert r.returncode == 0, r.stderr
    assert "continue with --chunk 2/2" in r.stdout
    assert json.load(open(os.path.join(out, "last", "meta.json")))["step"] == STEPS // 2
    r = run_cli(*pretrain_args(shards, out, "--chunk", "2/2", "--save-every", "0"))
    assert r.returncode == 0, r.stderr
    assert_same(losses(reference), losses(out))


def one_line_error(r, *needles):
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_shards_from_another_tokenizer_are_refused(shards, tmp_path):
    from hessgpt.tokenizer import train_tokenizer

    other = str(tmp_path / "tok2")
    train_tokenizer([FIXTURES_TEXT[1]], vocab_size=600).save(other)
    r = run_cli(*pretrain_args(shards, str(tmp_path / "o"), "--tokenizer", other))
    one_line_error(r, "tokenizer", shards)


def test_batch_too_large_names_the_flag(shards, tmp_path):
    r = run_cli(*pretrain_args(shards, str(tmp_path / "o"), "--batch-size", "2000000"))
    one_line_error(r, "--batch-size", "GiB")


def test_checkpoint_with_smaller_vocab_is_refused(shards, tiny_ckpt, tmp_path):
    from hessgpt import checkpoint
    from hessgpt.config import ModelConfig
    from hessgpt.model import Transformer

    small = str(tmp_path / "small")
    checkpoint.save(small, Transformer(ModelConfig.preset("tiny", vocab_size=300)), None, meta={"stage": "test"})
    tok_dir = os.path.dirname(json.load(open(os.path.join(shards, "manifest.json")))["tokenizer"]["path"] + "/")
    r = run_cli("pretrain", "--model", small, "--data", shards, "--out", tmp_path / "o", "--tokenizer", tok_dir, "--no-progress")
    one_line_error(r, "vocab_size 300")


@pytest.mark.slow
def test_torchrun_pretrain_equals_accumulation(shards, tmp_path):
    one = str(tmp_path / "one")
    args = lambda out, *e: [str(a) for a in pretrain_args(shards, out, "--steps", "4", "--eval-every", "0", "--set", "dropout=0", *e)]
    r = run_cli(*args(one, "--grad-accum", "2"))
    assert r.returncode == 0, r.stderr
    two = str(tmp_path / "two")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519",
                        "-m", "hessgpt", *args(two)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = read_metrics(os.path.join(one, "metrics.jsonl")), read_metrics(os.path.join(two, "metrics.jsonl"))
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) < 1e-4, (a, b)
    assert abs(a[-1]["val_loss"] - b[-1]["val_loss"]) < 1e-4


@pytest.mark.slow
def test_fsdp_two_processes_with_chunked_resume_equals_accumulation(shards, tmp_path):
    """FSDP2 on gloo: sharded training, full-state checkpoint at the chunk end, sharded optimizer reloaded."""
    args = lambda out, *e: [str(a) for a in pretrain_args(shards, out, "--steps", "6", "--eval-every", "0", "--set", "dropout=0", *e)]
    one = str(tmp_path / "one")
    r = run_cli(*args(one, "--grad-accum", "2"))
    assert r.returncode == 0, r.stderr
    two = str(tmp_path / "fsdp")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for chunk in ("1/2", "2/2"):
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29521",
                            "-m", "hessgpt", *args(two, "--fsdp", "--chunk", chunk)], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    a, b = read_metrics(os.path.join(one, "metrics.jsonl")), read_metrics(os.path.join(two, "metrics.jsonl"))
    assert [x["step"] for x in b] == list(range(1, 7))
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) < 1e-5, (a, b)


def test_activation_checkpointing_gives_the_same_losses(shards, reference, tmp_path):
    """--activation-checkpointing recomputes each block in backward (dropout masks replayed): same run."""
    out = str(tmp_path / "ckpt")
    r = run_cli(*pretrain_args(shards, out, "--save-every", "0", "--activation-checkpointing"))
    assert r.returncode == 0, r.stderr
    assert_same(losses(reference), losses(out))
