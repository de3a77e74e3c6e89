"""The dense linear layout (fp32/bf16, any device), beside the native fp32 `KernelLinear` of kernels/__init__.py
and the int8 `Int8Linear` of kernels/int8.py: the three `make_linear` layouts `InferenceModel` (inference.py)
lays its weights out in. All three share one interface: `__call__(x)`, `raw(x)`, `add_to(res, x)`, `nbytes()`,
`out_features` and a `kind` string.

`DenseLinear` is the PyTorch path: what `InferenceModel` uses when the native kernels do not apply (bf16, CUDA,
no compiler, HESSGPT_KERNELS=0), and the reference the kernel tests compare against.
"""

import torch


class DenseLinear:
    """y = x @ W.T with W stored transposed and contiguous ([in, out]). x [N, in] -> [N, out]."""

    kind = "dense"

    def __init__(self, weight: torch.Tensor):
        self.wt = weight.detach().t().contiguous()   # [in, out]
        self.out_features = self.wt.shape[1]

    def __call__(self, x):
        return torch.mm(x, self.wt)

    raw = __call__   # output in the kernel's own dtype (the same here)

    def add_to(self, res, x):
        """res + x @ W.T in one op (the residual add fused into the matmul)."""
        return torch.addmm(res, x, self.wt)

    def nbytes(self) -> int:
        return self.wt.numel() * self.wt.element_size()
