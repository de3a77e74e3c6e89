"""Native CPU kernels for batch-1 decoding (fp32, int8 or int4 weights), compiled on first use (see build.py and
decode.c).

`InferenceModel` (inference.py) uses them automatically on CPU with fp32 activations when they are available:

    KernelLinear(weight [out, in])      make_linear hook for fp32 weights: a 1-row x goes through the
                                        AVX2/AVX-512 GEMV, anything else (prefill, batches) through F.linear
    decode_step(inference_model)        the whole decode step of one token in C (batch 1) on KernelLinear
                                        and/or kernels.int8.Int8Linear weights, or None when it does not apply
                                        (not CPU/fp32 activations, batch > 1, another make_linear)
    rows_step(inference_model, cache)   the whole decode step of B rows in C (batched decode, one token each, each
                                        row at its own position in its own slot of a SlotCache), or None
    huge_page_copy(tensor)              large weights live in 2 MiB pages (fewer TLB misses when streamed)
    rows_matmul(linear, x [N, in])      batched decode (InferenceModel.forward_rows): N <= GEMM_ROWS rows through
                                        one native GEMM reading each fp32/int8 weight once for all rows

Everything else (prefill, masks, bf16, CUDA) stays on the PyTorch path, and so does
everything when the kernels cannot be built (no compiler, no AVX2/FMA, not x86-64) or are turned off with
HESSGPT_KERNELS=0 or `with kernels.disabled(): ...` (checked when an InferenceModel is built).

The package holds every linear layout `InferenceModel` lays its weights out in: `KernelLinear` here (native fp32),
`dense.DenseLinear` (the PyTorch path), `int8.Int8Linear` (int8 weight-only) and `int4.Int4Linear` (Q4_0 blocks).
"""

import contextlib
import ctypes
import logging
import mmap
import os

import torch
import torch.nn.functional as F

from hessgpt.kernels import build

log = logging.getLogger(__name__)

_LIB: ctypes.CDLL | None = None
_TRIED = False
_DISABLED = 0   # depth of `disabled()` blocks


def lib() -> ctypes.CDLL | None:
    """The loaded kernel library (built on the first call), or None."""
    global _LIB, _TRIED
    if not _TRIED:
        _TRIED = True
        _LIB = build.load()
        if _LIB is not None:
            log.debug("hessgpt native kernels: AVX%d, %s", _LIB.hg_simd_width(), "OpenMP" if _LIB.hg_openmp() else "pthread pool")
    return _LIB


def available() -> bool:
    """True if new InferenceModels will use the native kernels."""
    if _DISABLED or os.environ.get("HESSGPT_KERNELS", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return lib() is not None


@contextlib.contextmanager
def disabled():
    """InferenceModels built inside this block use the PyTorch path (benchmarks, tests)."""
    global _DISABLED
    _DISABLED += 1
    try:
        yield
    finally:
        _DISABLED -= 1


HUGE_PAGES = True   # copy large weights into transparent-huge-page memory (fewer TLB misses while streaming)


def huge_page_copy(w: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of CPU tensor `w` in private anonymous memory advised MADV_HUGEPAGE before it is
    touched (Linux THP in "madvise" mode, the common default, only backs such regions with 2 MiB pages), when
    it is large enough (>= 2 MiB) and the platform has it; else `w.contiguous()`. Streaming a weight matrix
    through 2 MiB pages instead of 4 KiB ones saves TLB misses: measured +4-9% GEMV bandwidth here."""
    nbytes = w.numel() * w.element_size()
    if not (HUGE_PAGES and hasattr(mmap, "MADV_HUGEPAGE") and nbytes >= 2 << 20 and w.device.type == "cpu"):
        return w.contiguous()
    mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    mm.madvise(mmap.MADV_HUGEPAGE)
    t = torch.frombuffer(mm, dtype=w.dtype).view(w.shape)         # keeps `mm` alive as long as the tensor
    t.copy_(w)
    return t


class KernelLinear:
    """y = x @ W.T with W kept row-major [out, in] (the GEMV's layout; shares the model's storage when the
    weight is already contiguous, e.g. o_proj, down_proj, lm_head). Same interface as kernels.dense.DenseLinear."""

    kind = "native"

    def __init__(self, weight: torch.Tensor):
        self.w = huge_page_copy(weight.detach())         # [out, in] fp32 (the model's own storage if small)
        self.out_features, self.in_features = self.w.shape
        self.lib = lib()

    def _one_row(self, x) -> bool:
        return x.shape[0] == 1 and x.dtype == torch.float32 and x.is_contiguous() and x.device.type == "cpu"

    def __call__(self, x):
        if not self._one_row(x):
            return F.linear(x, self.w)                    # [N, in] -> [N, out] (a GEMM: MKL is good at it)
        y = torch.empty(1, self.out_features)
        self.lib.hg_gemv(self.w.data_ptr(), x.data_ptr(), y.data_ptr(), None, self.out_features, self.in_features,
                         torch.get_num_threads())
        return y

    raw = __call__

    def add_to(self, res, x):
        """res + x @ W.T (a new tensor, like torch.addmm)."""
        if not (self._one_row(x) and res.is_contiguous() and res.dtype == torch.float32):
            return torch.addmm(res, x, self.w.t())
        y = torch.empty_like(res)
        self.lib.hg_gemv(self.w.data_ptr(), x.data_ptr(), y.data_ptr(), res.data_ptr(), self.out_features,
                         self.in_features, torch.get_num_threads())
        return y

    def nbytes(self) -> int:
        return self.w.numel() * self.w.element_size()


GEMM_ROWS = 16   # up to this many rows (a decode batch) go through hg_gemm; more (prefill) through MKL's GEMM


def rows_matmul(lin, x: torch.Tensor, res: torch.Tensor | None = None, nthreads: int | None = None) -> torch.Tensor | None:
    """x [N, in] fp32 -> x @ W.T (+ res [N, out]) through the native hg_gemm (each weight read once for all N
    rows, fp32 activations, int8 weights dequantized per row like the batch-1 step) when `lin` is a
    KernelLinear or a CPU Int8Linear and 1 <= N <= GEMM_ROWS; None when it does not apply."""
    n = x.shape[0]
    if not (1 <= n <= GEMM_ROWS and x.dtype == torch.float32 and x.device.type == "cpu" and _native(lin)):
        return None
    if res is not None and not (res.dtype == torch.float32 and res.shape == (n, lin.out_features)):
        return None
    w, scale, q4 = _weight(lin)
    x = x.contiguous()
    res = None if res is None else res.contiguous()
    y = torch.empty(n, lin.out_features)
    lib().hg_gemm(w.data_ptr(), None if scale is None else scale.data_ptr(), q4, x.data_ptr(), y.data_ptr(),
                  None if res is None else res.data_ptr(), n, lin.out_features, x.shape[1],
                  nthreads or torch.get_num_threads())
    return y


class _Model(ctypes.Structure):
    """hg_model in decode.c (field order and types must match)."""

    _fields_ = [(n, ctypes.c_int) for n in ("dim", "hidden", "n_layers", "n_heads", "n_kv", "hd", "vocab", "max_len")] + \
               [("eps", ctypes.c_float)] + \
               [(n, ctypes.c_void_p) for n in ("embed", "norm", "head", "rope")] + \
               [(n, ctypes.POINTER(ctypes.c_void_p)) for n in ("ln1", "wqkv", "wo", "ln2", "wgu", "wdown", "kc", "vc")] + \
               [(n, ctypes.c_void_p) for n in ("x", "xb", "qkv", "y", "act")] + \
               [(n, ctypes.POINTER(ctypes.c_void_p)) for n in ("s_qkv", "s_o", "s_gu", "s_down")] + \
               [("s_head", ctypes.c_void_p)] + \
               [(n, ctypes.c_int) for n in ("q4_qkv", "q4_o", "q4_gu", "q4_down", "q4_head")]


class DecodeStep:
    """One token of batch-1 decoding on an InferenceModel's weights and KV cache, in a single native call.

        step = DecodeStep(fast)           # after fast.setup_cache(1, max_len)
        logits = step(token, pos)         # [1, V] fp32; writes k, v at `pos` of fast.k_cache / fast.v_cache

    Linear weights are fp32 (KernelLinear), int8 with per-row scales (kernels.int8.Int8Linear) or int4 Q4_0 blocks
    (kernels.int4.Int4Linear), per matrix.
    Holds raw pointers to the InferenceModel's tensors: rebuild it whenever they are reallocated (setup_cache)."""

    def __init__(self, fm, k_rows: list | None = None, v_rows: list | None = None, max_len: int | None = None):
        """k_rows, v_rows: per layer [Hkv, max_len, hd] contiguous cache rows to use instead of fm's batch row 0
        (a slot of a inference.SlotCache, whose length is max_len)."""
        self.lib = lib()
        cfg = fm.config
        max_len = max_len or fm.max_len
        H, Hkv, hd, D, F_ = fm.n_heads, fm.n_kv, fm.hd, fm.dim, fm.hidden
        self.vocab = cfg.vocab_size
        self.rope = torch.view_as_real(fm.freqs_cis)             # [len, hd/2, 2] (cos, sin), shares storage
        assert self.rope.is_contiguous() and self.rope.shape[0] >= max_len
        self.scratch = [torch.zeros(n) for n in (D, D, (H + 2 * Hkv) * hd, H * hd, F_)]   # x, xb, qkv, y, act
        # [Hkv, max_len, hd] views of batch row 0
        self.caches = (k_rows, v_rows) if k_rows is not None else ([c[0] for c in fm.k_cache], [c[0] for c in fm.v_cache])
        assert all(c.is_contiguous() and c.shape[1] == max_len for c in self.caches[0] + self.caches[1])
        self.keep = [fm.embed, fm.norm]                           # keep every tensor we point to alive
        self.arrays = []

        def ptrs(ts):
            self.keep.extend(ts)
            arr = (ctypes.c_void_p * len(ts))(*[t.data_ptr() for t in ts])
            self.arrays.append(arr)
            return ctypes.cast(arr, ctypes.POINTER(ctypes.c_void_p))

        ln1, qkv, o, ln2, gu, down = zip(*fm.layers)
        weights, scales, q4 = {}, {}, {}
        for name, lins in (("qkv", qkv), ("o", o), ("gu", gu), ("down", down)):
            ws = [_weight(lin) for lin in lins]
            weights[name] = ptrs([w for w, _, _ in ws])
            kinds = {(s is not None, k) for _, s, k in ws}
            assert len(kinds) == 1, "a layer stack mixes weight layouts (fp32, int8, int4)"
            scales[name] = ptrs([s for _, s, _ in ws]) if ws[0][1] is not None else None
            q4[name] = ws[0][2]
        head, head_scale, q4["head"] = _weight(fm.head)
        self.keep += [head] + ([head_scale] if head_scale is not None else [])
        self.m = _Model(D, F_, len(fm.layers), H, Hkv, hd, self.vocab, max_len, fm.eps,
                        fm.embed.data_ptr(), fm.norm.data_ptr(), head.data_ptr(), self.rope.data_ptr(),
                        ptrs(list(ln1)), weights["qkv"], weights["o"], ptrs(list(ln2)), weights["gu"], weights["down"],
                        ptrs(self.caches[0]), ptrs(self.caches[1]),
                        *[t.data_ptr() for t in self.scratch],
                        scales["qkv"], scales["o"], scales["gu"], scales["down"],
                        None if head_scale is None else head_scale.data_ptr(),
                        q4["qkv"], q4["o"], q4["gu"], q4["down"], q4["head"])
        self.mref = ctypes.byref(self.m)

    def __call__(self, token: int, pos: int) -> torch.Tensor:
        if not 0 <= token < self.vocab:   # the C code does not bounds-check (F.embedding would raise)
            raise IndexError(f"token id {token} is out of range for a vocabulary of {self.vocab}")
        logits = torch.empty(1, self.vocab)
        self.lib.hg_decode(self.mref, token, pos, logits.data_ptr(), torch.get_num_threads())
        return logits


class RowsStep:
    """The whole forward of B single-token rows in C (hg_decode_rows), on a inference.SlotCache: row b is token
    tokens[b] at position pos[b] of slot slots[b]; each weight is read once for all rows. Rows of one slot at
    consecutive positions are a causal chunk (all rows' keys and values are written before any row attends), so
    one call runs the decode tokens of some sequences and prompt chunks of others together.

        step = rows_step(fast, cache)              # or None where the batch-1 step would be None
        logits = step(tokens, pos, slots)          # [B, V] fp32; writes each row's k, v in its slot
        logits = step(tokens, pos, slots, out=[2, 5])   # [2, V]: only rows 2 and 5 (ascending)"""

    def __init__(self, fm, cache):
        assert all(c.is_contiguous() for c in cache.k + cache.v)
        self.one = DecodeStep(fm, [k[0] for k in cache.k], [v[0] for v in cache.v], cache.max_len)   # slot 0 + offsets
        self.lib, self.vocab, self.slots, self.max_len = self.one.lib, self.one.vocab, cache.slots, cache.max_len
        self.per_row = 2 * fm.dim + (fm.n_heads + 2 * fm.n_kv) * fm.hd + fm.n_heads * fm.hd + fm.hidden
        self.scratch = torch.zeros(0)

    def __call__(self, tokens: list[int], pos: list[int], slots: list[int], out: list[int] | None = None) -> torch.Tensor:
        B = len(tokens)
        out = list(range(B)) if out is None else list(out)
        if not (B >= 1 and len(pos) == B and len(slots) == B):
            raise ValueError(f"{B} rows need {B} positions and {B} slots (got {len(pos)} and {len(slots)})")
        if len(set(zip(slots, pos))) != B:
            raise ValueError("two rows write the same position of the same slot")
        if not out or out != sorted(set(out)) or out[0] < 0 or out[-1] >= B:
            raise ValueError(f"out must be ascending distinct row indices in 0..{B - 1}, got {out}")
        for t, p, s in zip(tokens, pos, slots):   # the C code does not bounds-check
            if not 0 <= t < self.vocab:
                raise IndexError(f"token id {t} is out of range for a vocabulary of {self.vocab}")
            if not 0 <= p < self.max_len or not 0 <= s < self.slots:
                raise ValueError(f"position {p} / slot {s} outside the cache ({self.max_len} positions, {self.slots} slots)")
        if self.scratch.numel() < B * self.per_row:
            self.scratch = torch.zeros(B * self.per_row)
        arr = ctypes.c_long * B
        logits = torch.empty(len(out), self.vocab)
        self.lib.hg_decode_rows(self.one.mref, B, arr(*tokens), arr(*pos), arr(*slots), len(out),
                                (ctypes.c_long * len(out))(*out), self.scratch.data_ptr(), logits.data_ptr(),
                                torch.get_num_threads())
        return logits


def rows_step(fm, cache) -> "RowsStep | None":
    """A RowsStep for InferenceModel `fm` on slot cache `cache` where decode_step(fm, cache) qualifies, else None."""
    return RowsStep(fm, cache) if decode_step(fm, cache, 0) is not None else None


def _weight(lin) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """(row-major weight, fp32 scales or None, 1 for Q4_0 blocks else 0) of a KernelLinear (fp32 [out, in]), an
    Int8Linear (int8 [out, in], scales [out]) or an Int4Linear (packed uint8 [out, in / 2], scales [out, in / 32])."""
    if isinstance(lin, KernelLinear):
        return lin.w, None, 0
    return lin.q, lin.scale_f32, int(lin.kind == "int4")


def _native(lin) -> bool:
    """A KernelLinear (fp32) or a CPU Int8Linear / Int4Linear (kernels/int8.py, int4.py, recognised by `kind`),
    contiguous."""
    if isinstance(lin, KernelLinear):
        return lin.w.dtype == torch.float32 and lin.w.is_contiguous()
    return getattr(lin, "kind", None) in ("int8", "int4") and lin.q.device.type == "cpu" and lin.q.is_contiguous()


def decode_step(fm, cache=None, slot: int = 0) -> DecodeStep | None:
    """A DecodeStep for InferenceModel `fm` if it qualifies (CPU, fp32 activations, batch-1 cache, linears that
    are KernelLinear or Int8Linear, contiguous embedding), else None. With `cache` (a inference.SlotCache): the
    step of one row in slot `slot` of it (a batch whose other rows are idle this step)."""
    if not available() or fm.device.type != "cpu" or fm.dtype != torch.float32:
        return None
    if cache is None and fm.batch != 1:
        return None
    linears = [lin for layer in fm.layers for lin in (layer[1], layer[2], layer[4], layer[5])] + [fm.head]
    if not all(_native(lin) for lin in linears):
        return None
    if not fm.embed.is_contiguous() or fm.embed.dtype != torch.float32 or fm.n_heads % fm.n_kv or fm.hd % 2:
        return None
    if cache is not None:
        return DecodeStep(fm, [k[slot] for k in cache.k], [v[slot] for v in cache.v], cache.max_len)
    return DecodeStep(fm)
