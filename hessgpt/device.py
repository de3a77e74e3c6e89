"""The one place that decides device and dtype.

    device = pick_device(args.device)           # "auto" -> cuda, then mps, then cpu
    amp = autocast_dtype(device, args.dtype)     # bf16 where the hardware has it, else None (fp32)
    with autocast(device, amp): loss = ...
"""

import contextlib
import functools
import os

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


def autocast_dtype(device: torch.device, requested: str | None = "auto") -> torch.dtype | None:
    """The autocast dtype for training/prefill: None means plain fp32."""
    requested = (requested or "auto").lower()
    if requested in ("fp32", "float32"):
        return None
    if requested in ("bf16", "bfloat16"):
        return torch.bfloat16
    if requested in ("fp16", "float16"):
        if device.type != "cuda":
            raise HessGPTError("--dtype fp16 needs a CUDA device (use bf16 or fp32)")
        return torch.float16
    if requested != "auto":
        raise HessGPTError(f"--dtype {requested!r}: use auto, fp32, bf16 or fp16")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def peak_flops(device: torch.device, dtype: torch.dtype | None) -> float | None:
    """Peak matmul FLOP/s used for MFU: env HESSGPT_PEAK_FLOPS wins; else a table for common GPUs; else
    the CPU figures measured on HessGPT's reference 2-core machine (200 GFLOP/s fp32, 593 bf16) scaled by
    the thread count."""
    env = os.environ.get("HESSGPT_PEAK_FLOPS")
    if env:
        return float(env)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        table = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "4090": 165e12,
                 "3090": 71e12, "T4": 65e12, "V100": 125e12, "L40": 181e12}
        for key, flops in table.items():
            if key in name:
                return flops if dtype in (torch.bfloat16, torch.float16) else flops / 8
        return None
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
        return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32
