"""`hessgpt pipeline RECIPE --plan --gpu NAME`: the GPU table, fits / does not fit, suggestions that do fit, and
each shipped GPU recipe fitting its target GPU."""

import os
import re

import pytest
import torch

from hessgpt.config import ModelConfig
from hessgpt.device import GPUS, gpu_spec, peak_flops
from hessgpt.errors import HessGPTError
from hessgpt.train import lora as L
from hessgpt.train import pipeline
from hessgpt.train.plan import GiB, LoRAShape, Step, estimate

from .conftest import REPO

RECIPES = os.path.join(REPO, "recipes")
LORA_STAGES = ["--only", "model1-chat-lora", "--only", "model1-routing-lora", "--only", "model2-code-lora",
               "--only", "model2-refine-lora"]


def plan(capsys, recipe, *args):
    code = pipeline.main([os.path.join(RECIPES, recipe), "--plan", *args])
    return code, capsys.readouterr().out


def test_gpu_table_names_and_dense_peaks():
    for name in ("h100-80gb", "h100-pcie-80gb", "h200-141gb", "a100-80gb", "a100-40gb", "l40s-48gb", "l4-24gb",
                 "rtx4090-24gb", "t4-16gb"):
        assert name in GPUS
    # device names as torch.cuda.get_device_name() gives them -> entry: L40S is not an L4, H100 PCIe not the SXM
    by_device = {"NVIDIA H100 80GB HBM3": "h100-80gb", "NVIDIA H100 PCIe": "h100-pcie-80gb", "NVIDIA H200": "h200-141gb",
                 "NVIDIA A100-SXM4-80GB": "a100-80gb", "NVIDIA A100-PCIE-40GB": "a100-40gb", "NVIDIA L40S": "l40s-48gb",
                 "NVIDIA L4": "l4-24gb", "NVIDIA GeForce RTX 4090": "rtx4090-24gb", "Tesla T4": "t4-16gb"}
    for device_name, key in by_device.items():
        assert gpu_spec(device_name).name == key, device_name
    bf16 = {k: GPUS[k].peak(torch.bfloat16) for k in GPUS}
    assert bf16["h100-80gb"] == 989e12 and bf16["h100-pcie-80gb"] == 756e12
    assert bf16["l40s-48gb"] == 362e12 and bf16["l4-24gb"] == 121e12
    assert bf16["a100-40gb"] == bf16["a100-80gb"] == 312e12 and bf16["rtx4090-24gb"] == 165e12
    assert GPUS["t4-16gb"].peak(torch.float16) == 65e12 and GPUS["t4-16gb"].capability == (7, 5)


def test_peak_flops_reads_the_device_name(monkeypatch):
    monkeypatch.delenv("HESSGPT_PEAK_FLOPS", raising=False)
    cuda = torch.device("cuda", 0)
    for device_name, bf16, fp32 in (("NVIDIA L40S", 362e12, 183e12), ("NVIDIA L4", 121e12, 60e12),
                                    ("NVIDIA H100 PCIe", 756e12, 378e12), ("NVIDIA H100 80GB HBM3", 989e12, 495e12)):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, n=device_name: n)
        assert peak_flops(cuda, torch.bfloat16) == bf16
        assert peak_flops(cuda, None) == fp32          # fp32 matmuls run as TF32
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    assert peak_flops(cuda, torch.bfloat16) is None


@pytest.mark.parametrize("recipe,gpu,extra", [
    ("hessgpt-dual.yaml", "h100-80gb", []),
    ("hessgpt-dual.yaml", "a100-80gb", []),
    ("hessgpt-dual-24gb.yaml", "l4-24gb", []),
    ("hessgpt-dual-24gb.yaml", "rtx4090-24gb", []),
    ("hessgpt-dual-t4.yaml", "t4-16gb", LORA_STAGES),
])
def test_shipped_gpu_recipes_fit_their_gpu(capsys, tmp_path, recipe, gpu, extra):
    code, out = plan(capsys, recipe, "--gpu", gpu, "--workdir", str(tmp_path), *extra)
    assert code == 0, out
    n = len(re.findall(r"^  memory .* -> fits", out, re.M))
    assert n == (4 if extra else 6) and "DOES NOT FIT" not in out
    assert f"training stages fit on {gpu}" in out
    assert re.search(r"tokens/s; 3800 steps .* -> \d+h\d\dm", out) or extra   # wall time of model 1's pretraining


def test_a_stage_that_does_not_fit_exits_1_with_settings_that_do(capsys, tmp_path):
    code, out = plan(capsys, "hessgpt-dual.yaml", "--gpu", "a100-40gb", "--workdir", str(tmp_path))
    assert code == 1 and "DOES NOT FIT" in out and "do not fit on a100-40gb" in out
    # the suggestion for model 1's pretraining keeps the tokens per step and fits per the same estimator
    block = out[out.index("model1-pretrain ("):out.index("model1-chat-lora (")]
    m = re.search(r"would fit, same tokens per step: --batch-size (\d+) --grad-accum (\d+) \((\d+\.\d) GiB\)", block)
    assert m, block
    b, accum = int(m[1]), int(m[2])
    assert b * accum == 16 * 16
    need = estimate(ModelConfig.preset("model1-0.5b"), Step(b, 2048, "bf16", ce_chunk=2048)).total
    assert need <= 0.9 * GPUS["a100-40gb"].memory_gib * GiB and abs(need / GiB - float(m[3])) < 0.06
    assert "--activation-checkpointing" in block


def test_bf16_recipe_on_a_t4_is_refused_and_auto_means_fp16(capsys, tmp_path):
    code, out = plan(capsys, "hessgpt-dual.yaml", "--gpu", "t4-16gb", "--workdir", str(tmp_path), "--only", "model1-chat-lora")
    assert code == 1 and "bf16 is refused on t4-16gb" in out
    code, out = plan(capsys, "hessgpt-dual-t4.yaml", "--gpu", "t4-16gb", "--workdir", str(tmp_path), "--only", "model1-chat-lora")
    assert code == 0 and "fp16, checkpointing on" in out


def test_gpu_memory_override_and_finished_stages(capsys, tmp_path):
    code, out = plan(capsys, "hessgpt-dual-24gb.yaml", "--gpu-memory", "8", "--workdir", str(tmp_path))
    assert "a 8 GiB GPU" in out and "  speed " not in out     # no GPU named: no peak FLOP/s, no speed line
    need = estimate(ModelConfig.preset("model1-0.5b"), Step(8, 2048, "bf16", None, True, ce_chunk=2048)).total
    assert need > 0.9 * 8 * GiB and code == 1
    os.makedirs(tmp_path / "model1-pretrain")
    (tmp_path / "model1-pretrain" / "meta.json").write_text("{}")
    _, out = plan(capsys, "hessgpt-dual.yaml", "--gpu", "h100-80gb", "--workdir", str(tmp_path))
    assert "model1-pretrain: already done, not planned" in out and "model1-pretrain (" not in out


def test_plan_errors_are_one_line(capsys):
    with pytest.raises(HessGPTError, match="'h300'.*h100-80gb"):
        pipeline.main([os.path.join(RECIPES, "hessgpt-dual.yaml"), "--plan", "--gpu", "h300"])
    with pytest.raises(HessGPTError, match="--plan needs --gpu"):
        pipeline.main([os.path.join(RECIPES, "hessgpt-dual.yaml"), "--plan"])
    with pytest.raises(HessGPTError, match="--mfu 2.0"):
        pipeline.main([os.path.join(RECIPES, "hessgpt-dual.yaml"), "--plan", "--gpu", "l4-24gb", "--mfu", "2"])


def test_lora_checkpointing_is_what_makes_a_t4_fit():
    """The T4 recipe's choice, from the estimator: batch 8 LoRA needs checkpointing on 14.7 GiB."""
    cfg, lo = ModelConfig.preset("model1-0.5b"), LoRAShape(64, L.ALL_TARGETS, 0.05)
    usable = 0.9 * GPUS["t4-16gb"].memory_gib * GiB
    assert estimate(cfg, Step(8, 2048, "fp16", lo, False, "flex", ce_chunk=2048)).total > usable
    assert estimate(cfg, Step(8, 2048, "fp16", lo, True, "flex", ce_chunk=2048)).total < usable
