"""SFT: loss only on assistant targets, packing is exact, resume after SIGTERM, DDP == gradient accumulation."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from hessgpt import checkpoint
from hessgpt.train.common import read_metrics
from hessgpt.train.sft import make_batch, masked_loss_sum, pack

from .conftest import REPO, make_conversations, run_cli

CONV = {"messages": [
    {"role": "system", "content": "Tu es HessGPT, un assistant utile."},
    {"role": "user", "content": "Calcule la racine carrée de 144"},
    {"role": "assistant", "content": "Je calcule.", "code": "import math\nprint(math.sqrt(144))"},
    {"role": "tool", "name": "python", "content": "12.0\n"},
    {"role": "assistant", "content": "La racine carrée de 144 est 12.0."},
    {"role": "user", "content": "Merci !"},
    {"role": "assistant", "content": "Avec plaisir."}]}


def test_loss_ignores_system_user_and_tool_targets(small_base, tokenizer):
    model, _ = checkpoint.load(small_base)
    ids, mask = tokenizer.render(CONV)
    batch = make_batch([(ids, mask)], [[0]], seq_len=len(ids) - 1, pad_id=tokenizer.pad_id)
    # the targets the loss sees are exactly the assistant's tokens (text, code block, turn-closing <|end|>)
    enc = tokenizer.encode
    want = (enc("Je calcule.") + [tokenizer.code_id] + enc("import math\nprint(math.sqrt(144))") + [tokenizer.end_id]
            + enc("La racine carrée de 144 est 12.0.") + [tokenizer.end_id] + enc("Avec plaisir.") + [tokenizer.end_id])
    lm = batch["loss_mask"][0]
    assert batch["y"][0][lm.bool()].tolist() == want
    s0, n0 = masked_loss_sum(model, batch, torch.device("cpu"), None)
    # change every non-assistant target (system, user, tool result, markers): the loss must not move
    scrambled = dict(batch)
    y = batch["y"].clone()
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(14, tokenizer.vocab_size, y.shape, generator=g)
    scrambled["y"] = torch.where(lm.bool().unsqueeze(0), y, noise)
    assert not torch.equal(scrambled["y"], y)
    s1, n1 = masked_loss_sum(model, scrambled, torch.device("cpu"), None)
    assert n1 == n0 and s1.item() == s0.item()
    # while changing one assistant target does move it
    k = int(lm.nonzero()[0])
    y2 = y.clone()
    y2[0, k] = (y2[0, k] + 1) % tokenizer.vocab_size
    s2, _ = masked_loss_sum(model, {**batch, "y": y2}, torch.device("cpu"), None)
    assert s2.item() != s0.item()


def test_packed_rows_equal_separate_conversations(small_base, tokenizer):
    """Block-diagonal mask + per-conversation positions: a packed conversation's logits are its own."""
    model, _ = checkpoint.load(small_base)
    convs = make_conversations(5, seed=3)
    examples = [tokenizer.render(c) for c in convs]
    row_len = sum(len(e[0]) for e in examples) + 7  # all in one row, plus padding
    rows = pack(examples, row_len, seed=None)
    assert rows == [[0, 1, 2, 3, 4]]
    batch = make_batch(examples, rows, row_len - 1, tokenizer.pad_id)
    with torch.no_grad():
        packed = model(batch["x"], input_pos=batch["pos"], segments=batch["segments"])[0]
        p = 0
        for ids, _ in examples:
            alone = model(torch.tensor([ids]))[0]
            n = len(ids) - (1 if p + len(ids) > row_len - 1 else 0)
            assert (packed[p:p + n] - alone[:n]).abs().max().item() < 1e-4
            p += len(ids)
    s, n = masked_loss_sum(model, batch, torch.device("cpu"), None)
    assert n.item() == sum(sum(m[1:]) for _, m in examples)


def _sft_args(base, data, out, *extra):
    return ["sft", "--base", base, "--data", data, "--out", out, "--batch-size", "2", "--seq-len", "96", "--dtype", "fp32",
            "--no-progress", "--eval-every", "0", *map(str, extra)]


def test_sft_lora_run_writes_adapter_metrics_and_plot(small_base, sft_dir, tmp_path):
    out = str(tmp_path / "lora")
    r = run_cli(*_sft_args(small_base, sft_dir, out, "--lora", "--rank", "8", "--alpha", "16", "--steps", "8", "--lr", "5e-3"))
    assert r.returncode == 0, r.stderr
    for name in ("adapter_config.json", "adapter_model.safetensors", "hessgpt_adapter.json", "meta.json", "loss.png"):
        assert os.path.exists(os.path.join(out, name)), name
    assert not os.path.exists(os.path.join(out, "last"))
    rows = read_metrics(os.path.join(out, "metrics.jsonl"))
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert "val_loss" in rows[-1] and all(k in rows[0] for k in ("lr", "tokens", "tok_per_s", "mfu"))
    meta = json.load(open(os.path.join(out, "meta.json")))
    assert meta["stage"] == "sft-lora" and meta["parent"] == os.path.abspath(small_base)
    # a second run with --resume sees the finished stage and does nothing
    r2 = run_cli(*_sft_args(small_base, sft_dir, out, "--lora", "--rank", "8", "--alpha", "16", "--steps", "8", "--resume"))
    assert r2.returncode == 0 and "already finished" in r2.stdout


@pytest.mark.slow
def test_full_sft_compiled_saves_a_plain_checkpoint(small_base, sft_dir, tmp_path):
    """--compile wraps the model (state-dict keys "_orig_mod.*"): the saved checkpoint must still be the plain
    Transformer's, and equal to the trained weights (a regression: the final save used to fail)."""
    out = str(tmp_path / "compiled")
    r = run_cli(*_sft_args(small_base, sft_dir, out, "--steps", "2", "--lr", "5e-3", "--compile", "--eval-every", "0"))
    assert r.returncode == 0, r.stderr[-3000:]
    model, _ = checkpoint.load(out)
    base, _ = checkpoint.load(small_base)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert changed, "the compiled run saved the untrained weights"


def test_sft_full_resume_after_sigterm_matches_uninterrupted(small_base, sft_dir, tmp_path):
    common = ("--steps", "30", "--lr", "2e-3", "--save-every", "0", "--dropout", "0")
    ref = str(tmp_path / "ref")
    assert run_cli(*_sft_args(small_base, sft_dir, ref, *common)).returncode == 0
    out = str(tmp_path / "run")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "hessgpt", *_sft_args(small_base, sft_dir, out, *common, "--log-every", "1")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(out, "metrics.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 2:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    if os.path.exists(os.path.join(out, "meta.json")):
        pytest.skip("the run finished before SIGTERM arrived (machine too fast for this test)")
    assert "stopped by signal" in err and os.path.exists(os.path.join(out, "last", "train_state.pt"))
    r = run_cli(*_sft_args(small_base, sft_dir, out, *common, "--resume"))
    assert r.returncode == 0, r.stderr
    a = [row["loss"] for row in read_metrics(os.path.join(ref, "metrics.jsonl"))]
    b = [row["loss"] for row in read_metrics(metrics)]
    assert len(a) == len(b) == 30
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-6, (a, b)


@pytest.mark.slow
def test_torchrun_two_processes_equal_gradient_accumulation(small_base, sft_dir, tmp_path):
    common = ("--steps", "4", "--lr", "3e-3", "--lora", "--dropout", "0", "--device", "cpu")
    one = str(tmp_path / "one")
    r1 = run_cli(*_sft_args(small_base, sft_dir, one, *common, "--grad-accum", "2"))
    assert r1.returncode == 0, r1.stderr
    two = str(tmp_path / "two")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                         "-m", "hessgpt", *_sft_args(small_base, sft_dir, two, *common)],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    a = read_metrics(os.path.join(one, "metrics.jsonl"))
    b = read_metrics(os.path.join(two, "metrics.jsonl"))
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) < 1e-4, (a, b)
    assert abs(a[-1]["val_loss"] - b[-1]["val_loss"]) < 1e-4


def test_first_fit_packing_fills_rows_and_keeps_every_example_once():
    rng = __import__("random").Random(0)
    examples = [([0] * rng.randint(40, 180), None) for _ in range(400)]
    rows = pack(examples, 257, seed=1)
    assert sorted(i for r in rows for i in r) == list(range(400))          # each example exactly once
    assert all(sum(len(examples[i][0]) for i in r) <= 257 for r in rows)   # no row overflows
    fill = sum(len(e[0]) for e in examples) / (len(rows) * 257)
    assert fill > 0.9, fill            # plain greedy (close a row when the next does not fit) gives ~0.75 here
    assert pack(examples, 257, seed=1) == rows and pack(examples, 257, seed=2) != rows


def test_several_data_sources_train_together(small_base, sft_dir, tmp_path):
    """`--data A B`: the conversations of both sources are rendered, packed and trained as one set (the val files of
    those that have one are pooled); the checkpoint records both paths."""
    from hessgpt import loader
    from hessgpt.train.sft import render_sources

    from .conftest import write_jsonl

    extra = tmp_path / "fc.jsonl"                       # a NAME.jsonl source with no NAME.val.jsonl
    write_jsonl(extra, make_conversations(10, seed=7))
    _, tok = loader.load(small_base)
    one, st1, val1 = render_sources([sft_dir], tok, 97)
    both, st2, val2 = render_sources([sft_dir, str(extra)], tok, 97)
    assert st1["conversations"] == 96 and st2["conversations"] == 106 and len(both) == 106
    assert both[:96] == one and len(val2) == len(val1) == 12
    assert render_sources([str(extra)], tok, 97)[2] is None
    out = str(tmp_path / "lora")
    args = _sft_args(small_base, sft_dir, out, "--lora", "--rank", "4", "--steps", "2")
    at = args.index(sft_dir) + 1
    r = run_cli(*args[:at], str(extra), *args[at:])      # --data SFT_DIR fc.jsonl
    assert r.returncode == 0, r.stderr
    assert "106 conversations" in r.stderr
    meta = json.load(open(os.path.join(out, "meta.json")))
    assert meta["data"] == [os.path.abspath(sft_dir), os.path.abspath(extra)]
