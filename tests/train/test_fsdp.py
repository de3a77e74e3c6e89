"""Distributed training on CPU (gloo): FSDP2 LoRA saves, resumes on another number of processes, per-rank RNG,
no gradient communication on non-final accumulation micro-steps.

"Identical" below: with dropout 0 a run is deterministic, and 2 processes x 1 micro-batch compute the same
update as 1 process x 2 micro-batches (same rows, same normaliser); only the order of the fp32 gradient sums
differs (gloo's average of two halves vs in-process accumulation), so losses and weights must agree to fp32
rounding (1e-6 absolute; measured 0.0 on this CPU). With dropout on, a resume on as many processes restores
each rank's own RNG and must match the uninterrupted run just as closely (restoring rank 0's RNG on every rank,
the old behaviour, moved the losses by ~1e-3).
"""

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from hessgpt import checkpoint
from hessgpt.device import autocast, grad_scaler
from hessgpt.train import common
from hessgpt.train import distributed as D
from hessgpt.train import lora as L
from hessgpt.train.common import read_metrics

from .conftest import FIXTURES_TEXT, REPO, run_cli

TOL = 1e-6


# ---- in-process pieces ----------------------------------------------------------------------------


def test_optimizer_state_is_keyed_by_name_and_loads_back(small_base):
    """The saved optimizer state is world-size free (parameter names, as FSDP's full state dict); a legacy
    id-keyed `optimizer.state_dict()` still loads."""
    model, _ = checkpoint.load(small_base)
    L.apply_lora(model, L.LoRAConfig(r=4, targets=("q_proj", "v_proj")))
    opt = common.make_optimizer(model.parameters(), 1e-3, 0.0)
    model(torch.randint(0, 100, (2, 16))).float().square().mean().backward()
    opt.step()
    sd = D.full_optimizer_state(model, opt, fsdp=False)
    assert all(k.endswith(("lora_A.weight", "lora_B.weight")) for k in sd["state"])
    assert len(sd["state"]) == 2 * 2 * model.config.n_layers
    for saved in (sd, opt.state_dict()):
        fresh = common.make_optimizer(model.parameters(), 1e-3, 0.0)
        D.load_optimizer_state(model, fresh, saved, fsdp=False)
        a, b = opt.state_dict()["state"], fresh.state_dict()["state"]
        assert a.keys() == b.keys()
        for i in a:
            for k in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(torch.as_tensor(a[i][k]), torch.as_tensor(b[i][k])), (i, k)
    other = common.make_optimizer([p for n, p in model.named_parameters() if "q_proj" in n and p.requires_grad], 1e-3, 0.0)
    with pytest.raises(Exception, match="parameter groups do not match"):
        D.load_optimizer_state(model, other, sd, fsdp=False)


def test_cuda_rng_is_this_gpus_only_and_a_legacy_list_resumes_on_fewer_gpus(monkeypatch):
    """Saved: the process's own GPU's RNG (not one per visible GPU). A legacy list restores this device's entry
    and is skipped when the device is past its end (it used to crash: set_rng_state_all on fewer GPUs)."""
    calls = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: calls.append(("get", device)) or torch.tensor([7], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append(("set", int(state[0]), device)))
    dev = torch.device("cuda", 1)
    state = common.rng_state(dev)
    assert calls == [("get", dev)] and int(state["cuda"][0]) == 7
    assert "cuda" not in common.rng_state(torch.device("cpu"))
    calls.clear()
    legacy = {**state, "cuda": [torch.tensor([i], dtype=torch.uint8) for i in (10, 11, 12)]}
    common.set_rng_state(legacy, dev)
    assert calls == [("set", 11, dev)]
    calls.clear()
    common.set_rng_state({**legacy, "cuda": legacy["cuda"][:1]}, dev)   # saved on 1 GPU, resumed as cuda:1
    common.set_rng_state(state, torch.device("cpu"))
    assert calls == []


def test_mixed_precision_policy():
    cuda = D.mixed_precision(torch.device("cuda", 0), torch.bfloat16)
    assert cuda.param_dtype == torch.bfloat16 and cuda.reduce_dtype == torch.float32
    for dev, amp in ((torch.device("cpu"), torch.bfloat16), (torch.device("cuda", 0), torch.float16), (torch.device("cuda", 0), None)):
        pol = D.mixed_precision(dev, amp)
        assert pol.param_dtype is None and pol.reduce_dtype is None   # fp32 all-gathers and reductions


# ---- 2 gloo processes (torch.multiprocessing) --------------------------------------------------------


def _worker(rank: int, world: int, init_file: str, base: str, out_dir: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    info = D.DistInfo(rank=rank, local_rank=rank, world_size=world, device=torch.device("cpu"))
    try:
        res = {}
        # (1) each rank its own dropout masks, as the trainers seed them
        common.seed_rank(1, rank)
        lin = L.LoRALinear(torch.nn.Linear(32, 8, bias=False), r=4, alpha=8, dropout=0.5)
        res["mask"] = (lin.dropout(torch.ones(6, 32)) != 0)
        # (2) per-rank save/restore: each rank gets its own stream back, not rank 0's
        states = D.rank_rng_states(info)
        res["n_states"] = len(states)
        expect = torch.rand(16)
        torch.manual_seed(12345)
        res["restore_mode"] = D.restore_rng(states, info, seed=1, step=5)
        res["restored_equal"] = torch.equal(torch.rand(16), expect)
        res["expect"] = expect
        # (3) another world size (3 saved states, 2 processes): derived per rank, deterministic
        D.restore_rng(states + states[:1], info, seed=1, step=5)
        first = torch.rand(16)
        res["derive_mode"] = D.restore_rng(states + states[:1], info, seed=1, step=5)
        res["derived_repeat"] = torch.equal(torch.rand(16), first)
        res["derived"] = first
        # (4) FSDP2 LoRA: no gradient communication on the first micro-step; after the last one the sharded
        # gradients equal the full-batch gradient; the adapter gathers to whole tensors on every rank
        model, _ = checkpoint.load(base)
        ref, _ = checkpoint.load(base)
        cfg = L.LoRAConfig(r=4, alpha=8, dropout=0.0, targets=("q_proj", "v_proj"))
        for m in (model, ref):
            torch.manual_seed(0)
            L.apply_lora(m, cfg)
            for i, (name, p) in enumerate(m.named_parameters()):
                if "lora_B" in name:   # non-zero B (the same on every rank), so lora_A gets a gradient too
                    torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(i))
        D.wrap(model, info, fsdp=True, amp=None)
        g = torch.Generator().manual_seed(7)
        xs = torch.randint(0, model.config.vocab_size, (2, world, 2, 24), generator=g)   # [micro, rank, B, T]

        def loss(m, x):
            return m(x).float().logsumexp(-1).mean()

        for micro in range(2):
            with D.grad_sync(model, model, info, fsdp=True, sync=micro == 1):
                loss(model, xs[micro, rank]).backward()
            if micro == 0:
                res["grads_after_first"] = sum(p.grad is not None for p in model.parameters() if p.requires_grad)
        full = {n: p.grad.full_tensor() for n, p in model.named_parameters() if p.requires_grad}
        for x in xs.reshape(-1, *xs.shape[2:]):   # every micro-batch of every rank, averaged over ranks
            (loss(ref, x) / world).backward()
        res["grad_diff"] = max((full[n] - p.grad).abs().max().item() for n, p in ref.named_parameters() if p.requires_grad)
        res["grad_norm"] = max(p.grad.abs().max().item() for p in ref.parameters() if p.requires_grad)
        adapter = L.adapter_state_dict(model)   # collective
        want = L.adapter_state_dict(ref)
        res["adapter_keys_equal"] = adapter.keys() == want.keys()
        res["adapter_plain"] = all(type(t) is torch.Tensor for t in adapter.values())
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_rng_and_fsdp_gradient_sync(small_base, tmp_path, monkeypatch):
    # spawned children unpickle `_worker` by this module's name (`train.test_fsdp` under --import-mode=importlib)
    monkeypatch.syspath_prepend(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), small_base, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert not torch.equal(r0["mask"], r1["mask"]), "both ranks drew the same dropout mask"
    for r in (r0, r1):
        assert r["n_states"] == 2 and r["restore_mode"] == "restored" and r["restored_equal"]
        assert r["derive_mode"] == "derived" and r["derived_repeat"]
        assert r["grads_after_first"] == 0, "gradients were reduce-scattered on a non-final micro-step"
        assert r["grad_norm"] > 1e-4 and r["grad_diff"] < 1e-6, (r["grad_diff"], r["grad_norm"])
        assert r["adapter_keys_equal"] and r["adapter_plain"]
    assert not torch.equal(r0["expect"], r1["expect"])     # each rank restored its own stream
    assert not torch.equal(r0["derived"], r1["derived"])   # derived streams differ per rank too


def _fp16_worker(rank: int, world: int, init_file: str, base: str, out_dir: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    info = D.DistInfo(rank=rank, local_rank=rank, world_size=world, device=torch.device("cpu"))
    cpu = torch.device("cpu")
    try:
        model, _ = checkpoint.load(base)
        model.train()
        D.wrap(model, info, fsdp=True, amp=torch.float16)
        opt = common.make_optimizer(model.parameters(), 1e-3, 0.1)
        scaler = grad_scaler(cpu, torch.float16)   # what the trainers build for --dtype fp16
        x = torch.randint(0, model.config.vocab_size, (2, 25), generator=torch.Generator().manual_seed(rank))
        poisoned = next(p for p in model.parameters() if p.requires_grad)
        steps = []
        for clip, poison in ((1.0, False), (1.0, True), (0.0, True), (0.0, False)):
            with autocast(cpu, torch.float16):   # fp16 autocast on CPU, sharded (DTensor) gradients
                loss = model(x[:, :-1], targets=x[:, 1:]) / x[:, 1:].numel()
            scaler.scale(loss).backward()
            if poison and rank == 1:   # an overflow in rank 1's gradient shard only
                poisoned.grad.to_local().view(-1)[0] = float("inf")
            local_finite = all(torch.isfinite(p.grad.to_local()).all().item() for p in model.parameters() if p.grad is not None)
            before = [p.detach().to_local().clone() for p in model.parameters()]
            scale = scaler.get_scale()
            common.optimizer_step(model.parameters(), opt, scaler, clip)
            changed = any(not torch.equal(p.detach().to_local(), b) for p, b in zip(model.parameters(), before))
            steps.append({"poison": poison, "local_finite": local_finite, "scale": (scale, scaler.get_scale()),
                          "changed": changed, "grads_left": sum(p.grad is not None for p in model.parameters())})
        torch.save(steps, os.path.join(out_dir, f"fp16-rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_fp16_scaler_under_fsdp_skips_an_overflow_of_one_rank_on_every_rank(small_base, tmp_path, monkeypatch):
    """fp16 + FSDP2 on 2 gloo ranks with the trainers' GradScaler and optimizer_step: an inf in rank 1's gradient
    shard only (rank 0's own shards finite) makes both ranks skip the step and halve the scale, with clipping
    (unscale_ then clip_grad_norm_ on DTensors) and without (step's own unscale_). torch.amp.GradScaler does this
    under FSDP2 because DTensor's handler of the inf check all-reduces found_inf (max over the mesh);
    FSDP1's ShardedGradScaler is not needed. Clean steps update the weights on both ranks."""
    monkeypatch.syspath_prepend(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    mp.spawn(_fp16_worker, args=(2, str(tmp_path / "init"), small_base, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"fp16-rank{r}.pt", weights_only=False) for r in (0, 1))
    assert [s["local_finite"] for s in r0] == [True] * 4
    assert [s["local_finite"] for s in r1] == [True, False, False, True]
    for a, b in zip(r0, r1):
        assert a["scale"] == b["scale"] and a["changed"] == b["changed"] and a["grads_left"] == b["grads_left"] == 0
        before, after = a["scale"]
        if a["poison"]:
            assert after == before / 2 and not a["changed"], a
        else:
            assert after == before and a["changed"], a


# ---- the CLI under torchrun -------------------------------------------------------------------------


def _sft(base, data, out, *extra):
    return ["sft", "--base", base, "--data", data, "--out", out, "--batch-size", "2", "--seq-len", "96", "--dtype", "fp32",
            "--no-progress", "--eval-every", "0", "--lora", "--rank", "8", "--alpha", "16", "--steps", "6", "--lr", "3e-3",
            "--device", "cpu", *map(str, extra)]


def _torchrun(args, port):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
                        "-m", "hessgpt", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _assert_same_run(a_dir, b_dir):
    a, b = read_metrics(os.path.join(a_dir, "metrics.jsonl")), read_metrics(os.path.join(b_dir, "metrics.jsonl"))
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 7))
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) < TOL, (a, b)
    assert abs(a[-1]["val_loss"] - b[-1]["val_loss"]) < TOL
    wa, wb = load_file(os.path.join(a_dir, L.WEIGHTS_FILE)), load_file(os.path.join(b_dir, L.WEIGHTS_FILE))
    assert wa.keys() == wb.keys()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < TOL
    assert max(wa[k].abs().max().item() for k in wa if "lora_B" in k) > 1e-3   # the adapter did train


@pytest.mark.slow
def test_fsdp_lora_two_ranks_save_then_resume_on_one_equals_uninterrupted(small_base, sft_dir, tmp_path):
    ref = str(tmp_path / "ref")
    r = run_cli(*_sft(small_base, sft_dir, ref, "--dropout", "0", "--grad-accum", "2"))
    assert r.returncode == 0, r.stderr
    run = str(tmp_path / "run")
    _torchrun(_sft(small_base, sft_dir, run, "--dropout", "0", "--fsdp", "--chunk", "1/2"), 29531)
    # the save that used to crash (safetensors on DTensors): a whole adapter and a 2-rank train state
    last = os.path.join(run, "last")
    cfg, sd, _ = L.read_adapter(last)
    assert cfg.r == 8 and len(sd) == 2 * 4 * 2 and all(type(t) is torch.Tensor for t in sd.values())
    ts = torch.load(os.path.join(last, "train_state.pt"), weights_only=False)
    assert ts["step"] == 3 and ts["world_size"] == 2 and len(ts["rng"]) == 2
    assert ts["rows"] == {"epoch": 0, "pos": 12, "n_rows": ts["rows"]["n_rows"], "global_batch": 4, "seed": 0}
    # resume on 1 process, the same 4 rows per step (2 micro-batches); --fsdp with one process trains unsharded
    r = run_cli(*_sft(small_base, sft_dir, run, "--dropout", "0", "--fsdp", "--grad-accum", "2", "--chunk", "2/2"))
    assert r.returncode == 0, r.stderr
    assert "nothing to shard" in r.stderr and "RNG of 2 process(es), this run has 1" in r.stderr
    _assert_same_run(ref, run)
    # and merges into the same weights
    for d in (ref, run):
        m = run_cli("merge", "--base", small_base, "--lora", d, "--out", d + "-merged")
        assert m.returncode == 0, m.stderr
    a, b = checkpoint.load_model(ref + "-merged").state_dict(), checkpoint.load_model(run + "-merged").state_dict()
    base = checkpoint.load_model(small_base).state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < TOL
    assert max((a[k] - base[k]).abs().max().item() for k in a if "q_proj" in k) > 1e-4


@pytest.mark.slow
def test_fsdp_dropout_resume_on_two_ranks_restores_each_ranks_rng(small_base, sft_dir, tmp_path):
    """Dropout on: 2 ranks, interrupted and resumed on 2 ranks = uninterrupted (each rank its own RNG back)."""
    ref = str(tmp_path / "ref")
    _torchrun(_sft(small_base, sft_dir, ref, "--dropout", "0.1", "--fsdp"), 29533)
    run = str(tmp_path / "run")
    for chunk in ("1/2", "2/2"):
        _torchrun(_sft(small_base, sft_dir, run, "--dropout", "0.1", "--fsdp", "--chunk", chunk), 29535)
    _assert_same_run(ref, run)


@pytest.mark.slow
def test_fsdp_pretrain_two_ranks_then_one_rank_equals_accumulation(tokenizer_dir, tmp_path):
    """pretrain: the loader's position is in tokens, so 2 FSDP ranks (chunk 1/2) resumed on 1 rank with
    --grad-accum 2 (chunk 2/2) read the same tokens as, and equal, an uninterrupted 1-rank run (dropout 0)."""
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
    run = str(tmp_path / "run")
    _torchrun(args(run, "--fsdp", "--chunk", "1/2"), 29539)
    ts = torch.load(os.path.join(run, "last", "train_state.pt"), weights_only=False)
    assert ts["world_size"] == 2 and len(ts["rng"]) == 2 and ts["step"] == 3
    r = run_cli(*args(run, "--fsdp", "--grad-accum", "2", "--chunk", "2/2"))
    assert r.returncode == 0, r.stderr
    a, b = read_metrics(os.path.join(ref, "metrics.jsonl")), read_metrics(os.path.join(run, "metrics.jsonl"))
    assert [x["step"] for x in a] == [x["step"] for x in b] == list(range(1, 7))
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) < TOL, (a, b)
    wa, wb = checkpoint.load_model(ref).state_dict(), checkpoint.load_model(run).state_dict()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < TOL
