"""The native decode kernels (hessgpt/kernels) against PyTorch: GEMV, one decode step, the engine end to end,
and the fallback when they are turned off."""

import pytest
import torch

from hessgpt import checkpoint, kernels
from hessgpt.config import ModelConfig
from hessgpt.engine import Engine, SamplingParams, naive_generate
from hessgpt.inference import InferenceModel
from hessgpt.kernels import build, int4
from hessgpt.kernels.dense import DenseLinear
from hessgpt.kernels.int8 import Int8Linear
from hessgpt.model import Transformer

REASON = build.unavailable_reason()
if REASON is None and kernels.lib() is None:
    REASON = "the kernel library failed to build (see the debug log of hessgpt.kernels.build)"
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"native kernels unavailable: {REASON}")

CONFIGS = [
    dict(vocab_size=300, dim=96, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=160, rope_theta=50000.0, tie_embeddings=False),  # GQA
    dict(vocab_size=300, dim=120, n_layers=2, n_heads=3, n_kv_heads=3, hidden_dim=200, tie_embeddings=True),   # MHA, hd 40, tied
    dict(vocab_size=301, dim=80, n_layers=3, n_heads=8, n_kv_heads=1, hidden_dim=100, tie_embeddings=False),  # MQA, hd 10, odd sizes
]


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    old = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(old)


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (16, 32), (33, 67), (300, 96), (1030, 768), (2048, 2048)])
def test_gemv_matches_torch(shape, threads):
    out, inp = shape
    g = torch.Generator().manual_seed(out)
    w, x, res = torch.randn(out, inp, generator=g), torch.randn(1, inp, generator=g), torch.randn(1, out, generator=g)
    lin = kernels.KernelLinear(w)
    ref = (x.double() @ w.double().t())
    scale = (x.double().abs() @ w.double().abs().t())    # error bound scales with sum |w x|
    assert ((lin(x).double() - ref).abs() / scale).max() < 1e-5
    assert ((lin.add_to(res, x).double() - (ref + res.double())).abs() / (scale + res.double().abs())).max() < 1e-5
    xs = torch.randn(3, inp, generator=g)                 # several rows: the PyTorch path on the same weight
    assert torch.allclose(lin(xs), xs @ w.t(), atol=1e-4)


def test_linear_shares_contiguous_weights():
    w = torch.randn(8, 4)
    assert kernels.KernelLinear(w).w.data_ptr() == w.data_ptr()


@pytest.mark.parametrize("cfg", CONFIGS)
def test_decode_step_matches_pytorch_path_and_full_forward(cfg, threads):
    model = Transformer(ModelConfig(context_length=64, **cfg)).init_weights(3).eval()
    native, ref = InferenceModel(model), InferenceModel(model, make_linear=DenseLinear)
    native.setup_cache(1, 64)
    ref.setup_cache(1, 64)
    assert native.decode_step is not None and ref.decode_step is None
    ids = torch.randint(0, cfg["vocab_size"], (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids)[0]                                                # [40, V]
    a, b = [native.forward(ids[:, :5], 0)], [ref.forward(ids[:, :5], 0)]    # prefill (PyTorch in both)
    calls = 0
    step = native.decode_step

    def counting(tok, pos):
        nonlocal calls
        calls += 1
        return step(tok, pos)

    native.decode_step = counting
    for i in range(5, 40):
        a.append(native.forward(ids[:, i:i + 1], i))
        b.append(ref.forward(ids[:, i:i + 1], i))
    assert calls == 35
    a, b = torch.cat(a), torch.cat(b)
    assert (a - b).abs().max() < 1e-4
    assert (a - full[4:]).abs().max() < 1e-4
    for k_native, k_ref in zip(native.k_cache + native.v_cache, ref.k_cache + ref.v_cache):   # same KV cache
        assert (k_native - k_ref).abs().max() < 1e-5


def _dequantized_reference(q8: InferenceModel, model) -> InferenceModel:
    """A PyTorch-path InferenceModel whose linears are the fp32 dequantization of q8's int8 (or int4) weights."""
    ref = InferenceModel(model, make_linear=DenseLinear)

    def deq(lin):
        if isinstance(lin, int4.Int4Linear):
            return DenseLinear(int4.dequantize_weight(lin.q, lin.scale_f32))
        return DenseLinear(lin.q.float() * lin.scale_f32[:, None]) if isinstance(lin, Int8Linear) else DenseLinear(lin.w)

    ref.layers = [(ln1, deq(qkv), deq(o), ln2, deq(gu), deq(down)) for ln1, qkv, o, ln2, gu, down in q8.layers]
    ref.head = deq(q8.head)
    return ref


def _step_through(fast, ids):
    """Logits [T, V] of feeding ids [1, T] one token at a time (every step a decode step)."""
    return torch.cat([fast.forward(ids[:, i:i + 1], i) for i in range(ids.shape[1])])


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("quantize_head", [True, False], ids=["int8-head", "fp32-head"])
def test_int8_decode_step_matches_the_dequantized_model(cfg, quantize_head, threads):
    """int8 weights in the native step: logits = x . (q * scale) in fp32, i.e. the dequantized fp32 model."""
    model = Transformer(ModelConfig(context_length=48, **cfg)).init_weights(4).eval()
    q8 = InferenceModel(model, make_linear=Int8Linear, quantize_head=quantize_head)
    ref = _dequantized_reference(q8, model)
    q8.setup_cache(1, 48)
    ref.setup_cache(1, 48)
    assert isinstance(q8.decode_step, kernels.DecodeStep) and ref.decode_step is None
    assert q8.decode_step.m.s_head is None if not quantize_head else q8.decode_step.m.s_head is not None
    ids = torch.randint(0, cfg["vocab_size"], (1, 30), generator=torch.Generator().manual_seed(1))
    a, b = _step_through(q8, ids), _step_through(ref, ids)
    assert (a - b).abs().max() < 1e-4 * max(1.0, b.abs().max().item())
    with torch.no_grad():
        fp32 = model(ids)[0]
    assert (a - fp32).abs().max() > 1e-6           # it really decoded the int8 weights, not the fp32 ones


@pytest.mark.parametrize("k", [96, 120, 200])
def test_int8_linear_takes_any_row_length_with_several_rows(k):
    """torch's packed int8 CPU kernel crashes on rows of a length that is not a multiple of 32 with more than one
    row (a prefill of such a model, e.g. dim 120): Int8Linear computes those through the dequantized weight."""
    g = torch.Generator().manual_seed(k)
    lin = Int8Linear(torch.randn(64, k, generator=g))
    x, res = torch.randn(5, k, generator=g), torch.randn(5, 64, generator=g)
    want = x.to(torch.bfloat16).float() @ (lin.q.float() * lin.scale_f32[:, None]).T
    tol = 1e-2 * want.abs().max().item()
    assert lin.packed_ok == (k % 32 == 0)
    assert torch.allclose(lin(x), want, atol=tol) and torch.allclose(lin.raw(x).float(), want, atol=tol)
    assert torch.allclose(lin.add_to(res.clone(), x), res + want, atol=tol)


INT4_CONFIGS = [CONFIGS[0],   # every matrix Q4_0 (rows of 96 and 160)
                dict(vocab_size=300, dim=64, n_layers=2, n_heads=4, n_kv_heads=1, hidden_dim=120, tie_embeddings=False)]  # down_proj int8


@pytest.mark.parametrize("cfg", INT4_CONFIGS)
def test_int4_decode_step_matches_the_dequantized_model(cfg, threads):
    """Q4_0 weights in the native step: logits of the fp32 model holding the dequantized weights; a matrix whose
    rows are not a multiple of 32 (down_proj of hidden 120) stays int8 beside the int4 ones."""
    model = Transformer(ModelConfig(context_length=48, **cfg)).init_weights(4).eval()
    q4 = InferenceModel(model, make_linear=int4.make_linear)
    kinds = {lin.kind for layer in q4.layers for lin in layer[1:3] + layer[4:]}
    assert kinds == ({"int4"} if cfg["hidden_dim"] % 32 == 0 else {"int4", "int8"}) and q4.head.kind == "int4"
    ref = _dequantized_reference(q4, model)
    q4.setup_cache(1, 48)
    ref.setup_cache(1, 48)
    assert isinstance(q4.decode_step, kernels.DecodeStep) and q4.decode_step.m.q4_qkv == 1 and q4.decode_step.m.q4_head == 1
    ids = torch.randint(0, cfg["vocab_size"], (1, 30), generator=torch.Generator().manual_seed(1))
    a, b = _step_through(q4, ids), _step_through(ref, ids)
    assert (a - b).abs().max() < 1e-4 * max(1.0, b.abs().max().item())
    q4.setup_cache(1, 48)   # prefill: int4 through the dequantized fp32 GEMM; int8 through bf16 activations
    tol = 1e-4 if kinds == {"int4"} else 3e-2
    assert (q4.forward(ids, 0, all_logits=True)[0] - b).abs().max() < tol * max(1.0, b.abs().max().item())


def test_decode_step_rejects_out_of_range_tokens():
    model = Transformer(ModelConfig(context_length=16, **CONFIGS[0])).init_weights(0).eval()
    fast = InferenceModel(model)
    fast.setup_cache(1, 16)
    with pytest.raises(IndexError):
        fast.forward(torch.tensor([[300]]), 0)


def test_engine_greedy_equals_naive_reference_through_the_kernel(tiny_ckpt, threads):
    model, tok = checkpoint.load(tiny_ckpt)
    engine = Engine(model, tok)
    engine._ensure_cache(1)
    step, calls = engine.fast.decode_step, []
    assert step is not None, "the engine's batch-1 decode does not use the native step"
    engine.fast.decode_step = lambda t, p: calls.append(p) or step(t, p)
    prompt = tok.encode("Il était une fois, dans une ville lointaine,")
    p = SamplingParams(max_new_tokens=60, stop_token_ids=[-1])
    out = engine.generate(prompt, p)
    assert out == naive_generate(model, prompt, p)
    assert len(calls) == len(out) == 60                 # every generated token was fed through the native step


def test_existing_engine_tests_run_on_the_kernel(tiny_ckpt):
    """tests/test_engine*.py build Engine(model) on CPU fp32: they must get the native path by default."""
    model, tok = checkpoint.load(tiny_ckpt)
    engine = Engine(model, tok)
    engine.session(tok.encode("Bonjour"), SamplingParams())
    assert engine.fast.decode_step is not None
    assert isinstance(engine.fast.head, kernels.KernelLinear)


def test_disabled_kernels_fall_back_to_pytorch(tiny_ckpt, monkeypatch):
    model, tok = checkpoint.load(tiny_ckpt)
    prompt = tok.encode("The weather today is")
    p = SamplingParams(max_new_tokens=20, stop_token_ids=[-1])
    expected = naive_generate(model, prompt, p)
    with kernels.disabled():
        engine = Engine(model, tok)
    assert engine.generate(prompt, p) == expected
    assert engine.fast.decode_step is None and isinstance(engine.fast.head, DenseLinear)
    monkeypatch.setenv("HESSGPT_KERNELS", "0")
    assert not kernels.available() and build.load() is None
    engine = Engine(model, tok)
    assert engine.generate(prompt, p) == expected
    assert engine.fast.decode_step is None


def test_build_failure_falls_back_silently(tmp_path, monkeypatch):
    monkeypatch.setenv("HESSGPT_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")            # a "compiler" that always fails
    assert build.load() is None
    assert list(tmp_path.iterdir()) == []        # no half-written library left behind
    monkeypatch.setenv("CC", "no-such-compiler-hessgpt")
    assert build.unavailable_reason().startswith("no C compiler")


def test_build_is_cached_per_source_and_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("HESSGPT_KERNEL_CACHE", str(tmp_path))
    lib = build.load()
    assert lib is not None and lib.hg_simd_width() in (256, 512)
    files = list(tmp_path.glob("*.so"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    assert build.load() is not None and files[0].stat().st_mtime_ns == mtime   # reused, not rebuilt
    assert build.library_path(openmp=True) != build.library_path(openmp=False)


@pytest.mark.parametrize("variant", ["openmp", "avx2"])
def test_other_builds_decode_the_same(variant, tmp_path, monkeypatch, threads):
    """The OpenMP build, and the AVX2 code (what a CPU without AVX-512 runs) built for haswell."""
    monkeypatch.setenv("HESSGPT_KERNEL_CACHE", str(tmp_path))
    lib = build.load(openmp=True) if variant == "openmp" else build.load(march="haswell")
    assert lib is not None
    assert lib.hg_openmp() == 1 if variant == "openmp" else lib.hg_simd_width() == 256
    w, x = torch.randn(37, 70), torch.randn(70)
    y = torch.empty(37)
    lib.hg_gemv(w.data_ptr(), x.data_ptr(), y.data_ptr(), None, 37, 70, torch.get_num_threads())
    assert torch.allclose(y, w @ x, atol=1e-5)
    model = Transformer(ModelConfig(context_length=32, **CONFIGS[0])).init_weights(5).eval()
    fast = InferenceModel(model)
    fast.setup_cache(1, 32)
    ref = InferenceModel(model, make_linear=DenseLinear)
    ref.setup_cache(1, 32)
    fast.decode_step.lib = lib
    fast.forward(torch.tensor([[1, 2, 3]]), 0), ref.forward(torch.tensor([[1, 2, 3]]), 0)
    for i, t in enumerate([4, 5, 6, 7]):
        a, b = fast.forward(torch.tensor([[t]]), 3 + i), ref.forward(torch.tensor([[t]]), 3 + i)
        assert (a - b).abs().max() < 1e-4
    q8 = InferenceModel(model, make_linear=Int8Linear)     # int8 weights through the same build
    q8.setup_cache(1, 32)
    q8.decode_step.lib = lib
    ref8 = _dequantized_reference(q8, model)
    ref8.setup_cache(1, 32)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7]])
    assert (_step_through(q8, ids) - _step_through(ref8, ids)).abs().max() < 1e-4
    q4 = InferenceModel(model, make_linear=int4.make_linear)   # int4 (Q4_0) weights: the AVX2 unpacking too
    q4.setup_cache(1, 32)
    q4.decode_step.lib = lib
    ref4 = _dequantized_reference(q4, model)
    ref4.setup_cache(1, 32)
    assert (_step_through(q4, ids) - _step_through(ref4, ids)).abs().max() < 1e-4
