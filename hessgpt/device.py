"""The one place that decides device and dtype.

    device = pick_device(args.device)           # "auto" -> cuda, then mps, then cpu
    amp = autocast_dtype(device, args.dtype)     # bf16 where the hardware has it, fp16 on older GPUs, else None (fp32)
    scaler = grad_scaler(device, amp)            # loss scaling for fp16, a pass-through otherwise
    with autocast(device, amp): loss = ...
"""

import contextlib
import functools
import os
import re
from dataclasses import dataclass

import torch

from hessgpt.errors import HessGPTError


def pick_device(name: str | None = "auto") -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise HessGPTError(f"--device {name!r} is not a device (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HessGPTError(f"--device {name}: CUDA is not available on this machine")
    return dev


@functools.cache
def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls are native (measured ~1.8x faster training on such CPUs)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_native(device: torch.device) -> bool:
    """CUDA: compute capability >= 8.0 (Ampere and later) has bf16 tensor cores. `torch.cuda.is_bf16_supported()`
    also says yes on a T4 (7.5), where bf16 is emulated: slow, and SDPA falls back to its math kernel."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def autocast_dtype(device: torch.device, requested: str | None = "auto") -> torch.dtype | None:
    """The autocast dtype for training/prefill: None means plain fp32.

    auto: CUDA bf16 at compute capability >= 8.0, else fp16 (train it with `grad_scaler`); CPU bf16 where the
    CPU has native bf16 (AVX512-BF16/AMX), else fp32; fp32 elsewhere. fp16 on a CPU is allowed (autocast has it),
    for testing the GradScaler path."""
    requested = (requested or "auto").lower()
    if requested in ("fp32", "float32"):
        return None
    if requested in ("bf16", "bfloat16"):
        if device.type == "cuda" and not bf16_native(device):
            major, minor = torch.cuda.get_device_capability(device)
            raise HessGPTError(f"--dtype bf16: this GPU (compute capability {major}.{minor}) has no bf16 tensor cores "
                               "(emulated, slow); use --dtype auto (fp16 with a GradScaler) or fp32")
        return torch.bfloat16
    if requested in ("fp16", "float16"):
        if device.type not in ("cuda", "cpu"):
            raise HessGPTError(f"--dtype fp16 needs a CUDA device or the CPU, not {device.type} (use bf16 or fp32)")
        return torch.float16
    if requested != "auto":
        raise HessGPTError(f"--dtype {requested!r}: use auto, fp32, bf16 or fp16")
    if device.type == "cuda":
        return torch.bfloat16 if bf16_native(device) else torch.float16
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling for fp16 autocast (its gradients underflow without it); a disabled pass-through otherwise,
    so the loops always call scaler.scale(loss).backward() / scaler.step(opt) / scaler.update()."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def setup_matmul_precision(device: torch.device) -> None:
    """CUDA: fp32 matmuls (and cuDNN convolutions) on TF32 tensor cores (~8x the fp32 rate at capability >= 8.0;
    10-bit mantissa inputs, fp32 accumulation), as nanoGPT/torchtune do. A no-op elsewhere."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class GPUSpec:
    """A GPU as the planner and the MFU meter see it: total memory as PyTorch reports it (GiB, the "total capacity"
    of its out-of-memory message) and dense (no sparsity) tensor-core peaks from the vendor's datasheet, FLOP/s. fp16 None: as bf16; tf32 None: no TF32."""

    name: str
    memory_gib: float
    bf16: float | None
    capability: tuple[int, int]
    fp32: float
    tf32: float | None = None
    fp16: float | None = None
    pattern: str = ""          # regex on torch.cuda.get_device_name()

    def peak(self, dtype: torch.dtype | None) -> float:
        if dtype == torch.float16:
            return self.fp16 or self.bf16
        if dtype == torch.bfloat16:
            return self.bf16 or self.fp32   # None: emulated (T4)
        return self.tf32 or self.fp32       # fp32 matmuls run as TF32 (setup_matmul_precision)


# Most specific first: "H100 PCIe" before "H100", "L40S" before "L40" before "L4".
GPUS: dict[str, GPUSpec] = {s.name: s for s in [
    GPUSpec("h100-pcie-80gb", 79.1, 756e12, (9, 0), 51.2e12, 378e12, pattern=r"H100.*PCIe"),
    GPUSpec("h100-nvl-94gb", 93.1, 835e12, (9, 0), 60e12, 417e12, pattern=r"H100.*NVL"),
    GPUSpec("h100-80gb", 79.1, 989e12, (9, 0), 67e12, 495e12, pattern=r"H100"),          # SXM5
    GPUSpec("h200-141gb", 139.7, 989e12, (9, 0), 67e12, 495e12, pattern=r"H200"),
    GPUSpec("a100-80gb", 79.1, 312e12, (8, 0), 19.5e12, 156e12, pattern=r"A100.*80GB"),
    GPUSpec("a100-40gb", 39.4, 312e12, (8, 0), 19.5e12, 156e12, pattern=r"A100"),
    GPUSpec("l40s-48gb", 44.3, 362e12, (8, 9), 91.6e12, 183e12, pattern=r"L40S"),
    GPUSpec("l40-48gb", 44.3, 181e12, (8, 9), 90.5e12, 90.5e12, pattern=r"L40\b"),
    GPUSpec("l4-24gb", 22.0, 121e12, (8, 9), 30.3e12, 60e12, pattern=r"L4\b"),
    GPUSpec("a10-24gb", 22.0, 125e12, (8, 6), 31.2e12, 62.5e12, pattern=r"A10\b"),
    GPUSpec("rtx4090-24gb", 23.6, 165e12, (8, 9), 82.6e12, 82.6e12, pattern=r"4090"),     # fp32 accumulation
    GPUSpec("rtx3090-24gb", 23.6, 71e12, (8, 6), 35.6e12, 35.6e12, pattern=r"3090"),
    GPUSpec("v100-32gb", 31.7, None, (7, 0), 15.7e12, None, fp16=125e12, pattern=r"V100"),
    GPUSpec("t4-16gb", 14.7, None, (7, 5), 8.1e12, None, fp16=65e12, pattern=r"T4\b"),
]}


def gpu_spec(name: str) -> GPUSpec | None:
    """The table entry for a table key ("h100-80gb") or a CUDA device name ("NVIDIA H100 PCIe"), None if unknown."""
    if name.lower() in GPUS:
        return GPUS[name.lower()]
    for spec in GPUS.values():
        if re.search(spec.pattern, name):
            return spec
    return None


def peak_flops(device: torch.device, dtype: torch.dtype | None) -> float | None:
    """Peak matmul FLOP/s used for MFU: env HESSGPT_PEAK_FLOPS wins; else the GPU table (dense bf16/fp16, TF32 for
    fp32); else the CPU figures measured on HessGPT's reference 2-core machine (200 GFLOP/s fp32, 593 bf16)
    scaled by the thread count."""
    env = os.environ.get("HESSGPT_PEAK_FLOPS")
    if env:
        return float(env)
    if device.type == "cuda":
        spec = gpu_spec(torch.cuda.get_device_name(device))
        return spec.peak(dtype) if spec else None
    if device.type == "cpu":
        per_thread = 296e9 if dtype == torch.bfloat16 else 100e9
        return per_thread * torch.get_num_threads()
    return None


def inference_dtype(device: torch.device, requested: str | None = "auto") -> torch.dtype:
    """The dtype a Hugging Face model is loaded in (`--dtype` of chat/ask/serve --hf-model).

    auto: bf16 only where the GPU computes it natively (compute capability >= 8.0: Ampere and later), fp16 on
    older GPUs and on Apple's MPS, fp32 on CPU (a 7B model then needs ~28 GB; pick bfloat16 to halve it)."""
    requested = (requested or "auto").lower()
    named = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if requested in named:
        return named[requested]
    if requested != "auto":
        raise HessGPTError(f"--dtype {requested!r}: use auto, float32, bfloat16 or float16")
    if device.type == "cuda":
        return torch.bfloat16 if bf16_native(device) else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32
