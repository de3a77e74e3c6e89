"""Training precision rules (hessgpt/device.py) and their wiring (train/common.py, pretrain/sft): bf16 only at
CUDA capability >= 8.0, else fp16 with a GradScaler; TF32 for fp32 matmuls on CUDA; fused AdamW on CUDA."""

import json
import math

import pytest
import torch

from hessgpt import device as dev
from hessgpt.errors import HessGPTError
from hessgpt.train import common

from .conftest import run_cli

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")


@pytest.mark.parametrize("capability,expected", [((7, 5), torch.float16), ((7, 0), torch.float16),
                                                 ((8, 0), torch.bfloat16), ((8, 9), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_dtype_follows_the_compute_capability(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)   # what a T4 answers: not trusted
    assert dev.autocast_dtype(CUDA, "auto") == expected
    # the scaler is on exactly for fp16 (checked on the CPU scaler: a CUDA one disables itself without CUDA)
    assert dev.grad_scaler(CPU, expected).is_enabled() == (expected == torch.float16)


def test_explicit_bf16_below_capability_8_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    with pytest.raises(HessGPTError, match=r"--dtype bf16: .*capability 7\.5.*--dtype auto"):
        dev.autocast_dtype(CUDA, "bf16")
    assert dev.autocast_dtype(CUDA, "fp16") == torch.float16 and dev.autocast_dtype(CUDA, "fp32") is None


def test_cpu_dtype_is_unchanged(monkeypatch):
    for native, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(dev, "cpu_has_bf16", lambda native=native: native)
        assert dev.autocast_dtype(CPU, "auto") == expected
    assert dev.autocast_dtype(CPU, "fp16") == torch.float16     # allowed on CPU (autocast has it): the scaler path
    with pytest.raises(HessGPTError, match="--dtype fp16 needs a CUDA device or the CPU, not mps"):
        dev.autocast_dtype(torch.device("mps"), "fp16")


def test_tf32_for_fp32_matmuls_on_cuda_only():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        dev.setup_matmul_precision(CPU)
        assert torch.backends.cuda.matmul.allow_tf32 is False
        dev.setup_matmul_precision(CUDA)
        assert torch.backends.cuda.matmul.allow_tf32 is True and torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_adamw_is_fused_on_cuda(monkeypatch):
    calls = []

    class Recorder:
        def __init__(self, groups, **kw):
            calls.append(kw)

    monkeypatch.setattr(torch.optim, "AdamW", Recorder)
    params = [torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))]
    common.make_optimizer(params, 1e-3, 0.1, device=CUDA)
    assert calls[-1]["fused"] is True


def _model_and_batch():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    return model, x, y


def test_optimizer_step_unscales_before_clipping_and_skips_overflows():
    """fp16 autocast on CPU with a real GradScaler: the update equals an unscaled fp32-gradient update with the
    same clipping (the scale is a power of 2: unscaling is exact), and an overflowed step changes nothing but
    halves the scale."""
    ref, x, y = _model_and_batch()
    model, _, _ = _model_and_batch()
    opt = common.make_optimizer(model.parameters(), 1e-2, 0.0, betas=(0.9, 0.999))
    opt_ref = common.make_optimizer(ref.parameters(), 1e-2, 0.0, betas=(0.9, 0.999))
    scaler = dev.grad_scaler(CPU, torch.float16)
    off = dev.grad_scaler(CPU, torch.bfloat16)
    assert scaler.is_enabled() and not off.is_enabled()
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.float16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        scaler.scale(loss).backward()
        with torch.autocast("cpu", dtype=torch.float16):
            loss_ref = torch.nn.functional.cross_entropy(ref(x).float(), y)
        off.scale(loss_ref).backward()      # disabled scaler: a plain backward
        norm = common.optimizer_step(model.parameters(), opt, scaler, clip=0.05)
        norm_ref = common.optimizer_step(ref.parameters(), opt_ref, off, clip=0.05)
        assert math.isclose(float(norm), float(norm_ref), rel_tol=1e-3)   # clipped on the true gradients
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    assert all(p.grad is None for p in model.parameters())
    # an overflow: the step is skipped, the scale halves
    before = [p.detach().clone() for p in model.parameters()]
    scale = scaler.get_scale()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = torch.nn.functional.cross_entropy(model(x).float(), y)
    scaler.scale(loss).backward()
    next(model.parameters()).grad[0, 0] = float("inf")
    common.optimizer_step(model.parameters(), opt, scaler, clip=1.0)
    assert scaler.get_scale() == scale / 2
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)


def test_sft_trains_in_fp16_with_the_scaler_on_cpu(small_base, sft_dir, tmp_path):
    """The wired loop end to end: `hessgpt sft --dtype fp16` on CPU runs its steps with finite losses close to
    the fp32 run's."""
    rows = {}
    for dtype in ("fp16", "fp32"):
        out = tmp_path / dtype
        r = run_cli("sft", "--base", small_base, "--data", sft_dir, "--out", out, "--device", "cpu", "--dtype", dtype,
                    "--steps", "3", "--batch-size", "2", "--seq-len", "96", "--save-every", "2", "--eval-every", "0",
                    "--no-progress", "--threads", "1")
        assert r.returncode == 0, r.stderr
        with open(out / "metrics.jsonl") as f:
            rows[dtype] = [json.loads(line)["loss"] for line in f if line.strip()]
    assert len(rows["fp16"]) == 3 and all(math.isfinite(v) for v in rows["fp16"])
    for a, b in zip(rows["fp16"], rows["fp32"]):
        assert abs(a - b) < 0.02 * b
