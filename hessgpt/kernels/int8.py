"""The int8 weight-only linear layout (beside the fp32 `KernelLinear` of kernels/__init__.py).

Scheme: a linear weight W [out, in] becomes
    q = clamp(round(W / s), -127, 127) int8,   s[o] = bf16(max_i |W[o, i]| / 127)   (one scale per output row)
The scale is rounded to bf16 so the kernel (`torch._weight_int8pack_mm`, bf16 activations, AVX512 on CPU)
uses it exactly, and so dequantize -> quantize gives back the same int8 weights. quantize.py makes whole
int8 checkpoints of it; checkpoint.py reads them back.
"""

import torch

from hessgpt.kernels import huge_page_copy


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W [out, in] float -> (q int8 [out, in], scale fp32 [out]), symmetric per output channel."""
    w = w.detach().float()
    amax = w.abs().amax(dim=1).clamp(min=1e-12)
    scale = (amax / 127).to(torch.bfloat16).float()                 # bf16-exact scale
    q = torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8)
    return q, scale


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale[:, None]


class Int8Linear:
    """y = x @ dequant(W).T through `torch._weight_int8pack_mm` (int8 weights read once, bf16 activations,
    fp32 accumulation). Same interface as kernels.dense.DenseLinear. On CPU with the native kernels (hessgpt/kernels),
    batch-1 decoding bypasses this class: the whole step runs in C on the same int8 weights, fp32 activations."""

    kind = "int8"

    def __init__(self, weight: torch.Tensor, q: torch.Tensor | None = None, scale: torch.Tensor | None = None):
        if q is None:
            q, scale = quantize_weight(weight)
        self.q = huge_page_copy(q)                                   # [out, in] int8 (2 MiB pages on CPU)
        self.scale = scale.to(torch.bfloat16).to(q.device)           # [out], exact (bf16-rounded at quantization)
        self.scale_f32 = self.scale.float()                          # [out], the same values for the native kernels
        self.out_features = q.shape[0]
        # torch 2.13's CPU kernel crashes (SIGSEGV) on rows of a length that is not a multiple of 32 once x has
        # more than one row (seen with 100, 120, 200; tests/kernels): such a matrix goes through its dequantized
        # copy instead (the same bf16 activations)
        self.packed_ok = q.device.type != "cpu" or q.shape[1] % 32 == 0

    def _mm(self, x):
        if self.packed_ok:
            return torch._weight_int8pack_mm(x.to(torch.bfloat16), self.q, self.scale)
        return torch.mm(x.to(torch.bfloat16).float(), dequantize_weight(self.q, self.scale_f32).t()).to(torch.bfloat16)

    def __call__(self, x):
        return self._mm(x).to(x.dtype)

    def raw(self, x):
        """Output left in bf16 (saves two casts when the next op is another int8 matmul)."""
        return self._mm(x)

    def add_to(self, res, x):
        return res.add_(self._mm(x))

    def nbytes(self) -> int:
        return self.q.numel() + self.scale.numel() * 2
