"""The int4 weight-only linear layout: llama.cpp's Q4_0 blocks (beside kernels/int8.py's per-row int8).

Scheme, the same as llama.cpp's Q4_0 (and gguf-py's `quants.Q4_0`, which the tests compare with byte for byte):
each row of a linear weight W [out, in] is cut into blocks of 32 weights; for a block x[0:32]
    m = the x[j] of largest |x[j]| (the first one),  d = m / -8,  q[j] = clamp(trunc(x[j] / d + 8.5), 0, 15)
and the weight the kernels compute with is (q[j] - 8) * d16, d16 = d rounded to fp16 (kept as fp32 here).
Storage: q packed two per byte, [out, in / 2] uint8, block b of a row at bytes 16 b .. 16 b + 15, byte j holding
q[j] in its low nibble and q[j + 16] in its high nibble (Q4_0's layout, so a GGUF Q4_0 tensor is these bytes
with d16 before each block); scales [out, in / 32] fp32. Quantizing the dequantized weights gives back the same
q and d16 (the block's extreme weight is exactly -8 d16). 4.5 bits a weight instead of int8's 8.

`Int4Linear` has the interface of kernels.dense.DenseLinear. On CPU with the native kernels a decode batch (up to
kernels.GEMM_ROWS rows) runs in C on the packed weights (hg_gemm; the batch-1 decode step and the batched rows
step read them directly); a prefill, or any product without the kernels, dequantizes the matrix and uses the
BLAS GEMM. Rows whose length is not a multiple of 32 cannot be
Q4_0: `make_linear` (below) keeps such a matrix in int8.
"""

import torch
import torch.nn.functional as F

from hessgpt import kernels
from hessgpt.kernels import huge_page_copy
from hessgpt.kernels.int8 import Int8Linear

BLOCK = 32


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W [out, in] float (in % 32 == 0) -> (q uint8 [out, in / 2] packed Q4_0 nibbles, d fp32 [out, in / 32])."""
    out_f, in_f = w.shape
    if in_f % BLOCK:
        raise ValueError(f"int4 (Q4_0) needs rows of a multiple of {BLOCK} weights, got {in_f}")
    blocks = w.detach().float().cpu().reshape(out_f, in_f // BLOCK, BLOCK)
    imax = blocks.abs().argmax(dim=-1, keepdim=True)                       # the first largest |x|
    d = torch.gather(blocks, -1, imax) / -8                                # fp32, as gguf-py and llama.cpp
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = torch.trunc(blocks.double() * inv.double() + 8.5).clamp(0, 15).to(torch.uint8)   # [out, nb, 32]
    packed = q[..., :16] | (q[..., 16:] << 4)                              # [out, nb, 16]
    d16 = d.to(torch.float16).float().squeeze(-1)                          # [out, nb]
    return packed.reshape(out_f, in_f // 2).contiguous().to(w.device), d16.contiguous().to(w.device)


def dequantize_weight(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """(q [out, in / 2] uint8, d [out, in / 32]) -> W [out, in] fp32, the values the kernels compute with."""
    out_f, nb = d.shape
    b = q.reshape(out_f, nb, 16)
    vals = torch.cat([(b & 0x0F), (b >> 4)], dim=-1).to(torch.int32) - 8  # [out, nb, 32]
    return (vals.float() * d.float()[..., None]).reshape(out_f, nb * BLOCK)


class Int4Linear:
    """y = x @ dequant(W).T on Q4_0 weights: native hg_gemm on CPU for a decode batch (weights read once for all
    rows, fp32 activations), else (prefill, no kernels) the dequantized weight through F.linear."""

    kind = "int4"

    def __init__(self, weight: torch.Tensor, q: torch.Tensor | None = None, scale: torch.Tensor | None = None):
        if q is None:
            q, scale = quantize_weight(weight)
        self.q = huge_page_copy(q)                       # [out, in / 2] uint8
        self.scale_f32 = scale.float().contiguous()      # [out, in / 32]
        self.out_features, self.in_features = q.shape[0], q.shape[1] * 2
        self.native = kernels.available() and q.device.type == "cpu"   # HESSGPT_KERNELS=0, kernels.disabled(): off

    def _mm(self, x, res=None):
        if not self.native or x.shape[0] > kernels.GEMM_ROWS:
            # no kernels, or a prefill: the dequantized weight through the BLAS GEMM (faster than hg_gemm at many
            # rows; a transient fp32 copy of this one matrix)
            y = F.linear(x, dequantize_weight(self.q, self.scale_f32).to(x.dtype))
            return y if res is None else res + y
        x32 = x.float().contiguous()
        y = torch.empty(x32.shape[0], self.out_features)
        r = None if res is None else res.float().contiguous()
        kernels.lib().hg_gemm(self.q.data_ptr(), self.scale_f32.data_ptr(), 1, x32.data_ptr(), y.data_ptr(),
                              None if r is None else r.data_ptr(), x32.shape[0], self.out_features,
                              self.in_features, torch.get_num_threads())
        return y.to(x.dtype)

    def __call__(self, x):
        return self._mm(x)

    raw = __call__

    def add_to(self, res, x):
        return self._mm(x, res)

    def nbytes(self) -> int:
        return self.q.numel() + self.scale_f32.numel() * 2   # d is fp16-exact: 2 bytes a block on disk/in GGUF


def make_linear(weight: torch.Tensor):
    """InferenceModel's make_linear for int4: Q4_0 where the rows allow it, else int8."""
    return Int4Linear(weight) if weight.shape[1] % BLOCK == 0 else Int8Linear(weight)
