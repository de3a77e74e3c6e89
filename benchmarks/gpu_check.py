"""GPU check: does HessGPT's training and inference stack run right, and fast, on this GPU? (issue 17)

    python -m benchmarks.gpu_check                 # one CUDA GPU: <= 6 minutes on an H100/H200
    python -m benchmarks.gpu_check --cpu-smoke     # the same checks on CPU at tiny sizes (CI: tests/test_gpu_check.py)

Prints one line per check, `STATUS name: measurement (threshold)`, STATUS one of PASS, FAIL, INFO (a number
with no threshold here), SKIP (cannot run on this machine); exits 1 when a line is FAIL. The checks:

  env                 torch/CUDA versions, the GPU, its table entry (hessgpt.device.GPUS); PASS at compute
                      capability >= 8.0 (native bf16), INFO below (fp16 + GradScaler)
  numerics            a small model's logits under bf16 autocast vs fp32: relative error < 2%;
                      chunked cross-entropy (model(x, targets=y)) vs the plain loss: relative error < 1e-5 (fp32)
  attention.flash     the pretraining call (causal, GQA via enable_gqa, bf16, model1 shapes) runs with only the
                      flash kernel allowed (PASS), and its speed vs the math kernel (INFO)
  attention.packed_*  FlexAttention with the packed rows' BlockMask vs the dense mask: values and gradients (fp32,
                      max abs diff < 2e-3; CPU: values only, torch has no FlexAttention backward on CPU); its speed
                      vs the previous path, SDPA with the dense mask on repeated kv heads (PASS when faster),
                      conversations of 300-900 tokens in 2048-token rows
  sft.*               one LoRA step of the recipe's model1-chat-lora stage (r 64, 7 targets) on packed rows: finite
                      loss, only adapter weights move, the rows go to FlexAttention (one call per layer) on CUDA
                      and to the dense-mask path on CPU, steady-state peak memory vs train/plan.py's estimate
                      (within 15%), tokens/s (INFO)
  pretrain.*          model1-0.5b at recipes/hessgpt-dual.yaml's micro-batch (16 x 2048, bf16, fused AdamW, chunked
                      loss): steady-state peak allocated memory vs the estimate (within 15%); tokens/s and MFU eager
                      (INFO) and torch.compile'd (PASS at MFU >= 35% on an H100/H200, INFO elsewhere)
  engine              seeded sampling on the device twice gives the same tokens (the generator lives on the logits'
                      device); greedy cached decode = the no-cache reference; decode tokens/s (INFO)
  distributed         2-rank NCCL all-reduce + an FSDP2 step whose gathered weights agree on both ranks (SKIP with
                      fewer than 2 GPUs)
  hf                  the HF backend loads a tiny Mistral built here on the device (bf16 at capability >= 8.0) and
                      streams a reply
  total               wall time (PASS <= 360 s on a GPU)

Nothing is downloaded. When the device tool lends a GPU to a session (its `status` says so), run this there
and record the lines in docs/benchmarks.md ("GPU check").
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import yaml

from hessgpt import model as model_mod
from hessgpt.config import ModelConfig
from hessgpt.device import autocast, gpu_spec, peak_flops
from hessgpt.engine import Engine, SamplingParams, naive_generate
from hessgpt.model import Transformer, masked_attention, packed_block_mask, packed_dense_mask
from hessgpt.train import common
from hessgpt.train import lora as L

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "hessgpt-dual.yaml")
RESULTS: list[tuple[str, str, str]] = []


@dataclass
class Sizes:
    """What each check runs at: the design's sizes on a GPU, tiny ones for --cpu-smoke."""

    label: str
    model: dict                 # ModelConfig of the pretrain / LoRA / engine checks
    batch: int                  # micro-batch of the pretrain and LoRA steps
    seq_len: int
    numerics: tuple             # (preset, batch, seq_len) of the fp32-vs-bf16 logits check
    equal: tuple                # (B, T) of the flex-vs-dense equality check (fp32)
    conv: tuple                 # conversation lengths (min, max) in packed rows
    steps: int                  # timed steps
    decode_tokens: int
    compile: bool


def recipe_sizes() -> tuple[int, int, dict]:
    """(micro-batch, seq_len) of model1-pretrain and the LoRA block of model1-chat-lora in the dual recipe."""
    with open(RECIPE) as f:
        stages = {s["name"]: s for s in yaml.safe_load(f)["stages"]}
    pre = stages["model1-pretrain"]["args"]
    return int(pre["batch-size"]), int(pre["seq-len"]), stages["model1-chat-lora"]["lora"]


def gpu_sizes() -> Sizes:
    batch, seq_len, _ = recipe_sizes()
    return Sizes("model1-0.5b", ModelConfig.preset("model1-0.5b").to_dict(), batch, seq_len, ("small", 4, 256), (2, 1024),
                 (300, 900),
                 steps=4, decode_tokens=128, compile=True)


def cpu_sizes() -> Sizes:
    tiny = ModelConfig.preset("tiny", vocab_size=512, dim=64, n_layers=2, hidden_dim=128, context_length=128).to_dict()
    return Sizes("tiny", tiny, 2, 64, ("tiny", 2, 64), (1, 256), (20, 90), steps=1, decode_tokens=8, compile=False)


# ---- reporting ------------------------------------------------------------------------------------------


def report(status: str, name: str, text: str) -> None:
    RESULTS.append((status, name, text))
    print(f"{status:<4} {name}: {text}", flush=True)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeat: int, warmup: int = 1) -> float:
    """Median seconds of fn() over `repeat` runs after `warmup` ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def packed_segments(B: int, T: int, lengths: tuple[int, int], gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """segments, positions [B, T] of rows packed with conversations of random lengths in [lo, hi]."""
    seg = torch.empty(B, T, dtype=torch.long)
    pos = torch.empty(B, T, dtype=torch.long)
    for b in range(B):
        p, s = 0, 0
        while p < T:
            n = min(T - p, int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=gen)))
            seg[b, p:p + n], pos[b, p:p + n] = s, torch.arange(n)
            p, s = p + n, s + 1
    return seg, pos


def millions(model) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M"


def build(cfg: dict, device, dtype=torch.float32, seed: int = 0) -> Transformer:
    with torch.device(device):
        m = Transformer(ModelConfig.from_dict(cfg))
    if device.type == "cpu":
        m.init_weights(seed)
    else:
        _init_on_device(m, seed)
    return m.to(dtype)


def _init_on_device(m: Transformer, seed: int) -> None:
    # init_weights draws on the CPU (seeded generator); for a 0.5B model on a GPU draw there instead
    g = torch.Generator(device=m.lm_head.weight.device).manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                std = 0.02 / (2 * m.config.n_layers) ** 0.5 if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                p.normal_(0.0, std, generator=g)


# ---- the checks -----------------------------------------------------------------------------------------


def check_env(device, sz: Sizes) -> None:
    report("INFO", "env.torch", f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
           f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}, "
           f"{torch.get_num_threads()} CPU threads")
    if device.type != "cuda":
        report("INFO", "env.device", "CPU (--cpu-smoke: tiny sizes; thresholds marked GPU are not applied)")
        return
    name = torch.cuda.get_device_name(device)
    cap = torch.cuda.get_device_capability(device)
    free, total = torch.cuda.mem_get_info(device)
    spec = gpu_spec(name)
    report("INFO", "env.gpu", f"{name}, capability {cap[0]}.{cap[1]}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} free), "
           f"{torch.cuda.device_count()} visible; table entry {spec.name if spec else None} "
           f"(bf16 peak {spec.bf16 / 1e12 if spec and spec.bf16 else None} TFLOP/s)")
    if cap >= (8, 0):
        report("PASS", "env.bf16", f"compute capability {cap[0]}.{cap[1]} >= 8.0: native bf16 autocast")
    else:
        report("INFO", "env.bf16", f"compute capability {cap[0]}.{cap[1]} < 8.0: training runs fp16 with a GradScaler")


def check_numerics(device, sz: Sizes) -> None:
    preset, nb, nt = sz.numerics
    m = build(ModelConfig.preset(preset, vocab_size=2048, context_length=256).to_dict(), device, seed=1).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 2048, (nb, nt), generator=g).to(device)
    with torch.no_grad():
        ref = m(ids).double()
        with autocast(device, torch.bfloat16):
            low = m(ids).double()
    rel = ((low - ref).norm() / ref.norm()).item()
    agree = (low.argmax(-1) == ref.argmax(-1)).float().mean().item()
    report(verdict(rel < 0.02), "numerics.bf16", f"{preset} preset: logits rel. error {rel:.2e} vs fp32 (< 2e-2), top-1 agreement {agree:.1%}")
    y = torch.randint(0, 2048, (nb, nt), generator=g).to(device)
    m.train()
    chunked = model_mod.chunked_cross_entropy(m(ids, return_hidden=True), m.lm_head, y, chunk=300)
    plain = F.cross_entropy(m(ids).float().view(-1, 2048), y.view(-1), reduction="sum")
    rel = abs(chunked.item() - plain.item()) / plain.item()
    report(verdict(rel < 1e-5), "numerics.chunked_ce", f"chunked (300 rows) vs plain loss rel. error {rel:.1e} (< 1e-5)")


def attention_shape(sz: Sizes) -> tuple[int, int, int, int, int]:
    """(B, H, Hkv, T, hd) of the model's attention at the pretrain/LoRA micro-batch (shared shapes: the
    compiled FlexAttention kernel of the speed check is the one the LoRA step then reuses)."""
    cfg = ModelConfig.from_dict(sz.model)
    return sz.batch, cfg.n_heads, cfg.n_kv_heads, sz.seq_len, cfg.head_dim


def check_attention(device, sz: Sizes) -> None:
    B, H, Hkv, T, hd = attention_shape(sz)
    dt = torch.bfloat16 if device.type == "cuda" else torch.float32
    g = torch.Generator().manual_seed(0)

    def qkv(B, T, dtype, requires_grad=True):
        return [torch.randn(B, n, T, hd, generator=g).to(device, dtype).requires_grad_(requires_grad) for n in (H, Hkv, Hkv)]

    def fwd_bwd(fn, q, k, v):
        def run():
            fn(q, k, v).sum().backward()
        return run

    flops = 4 * B * H * T * T * hd / 2 * 3.5   # causal: forward 2 matmuls over half the square, backward 2.5x that
    q, k, v = qkv(B, T, dt)
    causal = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # noqa: E731
    if device.type == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        t_flash = None
        try:
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                t_flash = timed(fwd_bwd(causal, q, k, v), device, 5)
            report("PASS", "attention.flash", f"the pretraining call (causal, enable_gqa, bf16, [{B},{H}/{Hkv},{T},{hd}]) "
                   f"runs on the flash kernel: fwd+bwd {t_flash * 1e3:.2f} ms, {flops / t_flash / 1e12:.0f} TFLOP/s")
        except RuntimeError as e:
            report("FAIL", "attention.flash", f"the pretraining call cannot use flash: {str(e).splitlines()[0][:160]}")
        t_default = timed(fwd_bwd(causal, q, k, v), device, 5)
        with sdpa_kernel([SDPBackend.MATH]):
            t_math = timed(fwd_bwd(causal, q, k, v), device, 2)
        report("INFO", "attention.dispatch", f"the same call as the model makes it (PyTorch's kernel choice, cuDNN "
               f"where preferred): {t_default * 1e3:.2f} ms; math kernel {t_math * 1e3:.2f} ms"
               + (f" ({t_math / t_flash:.1f}x flash)" if t_flash else ""))
    else:
        t = timed(fwd_bwd(causal, q, k, v), device, 2)
        report("INFO", "attention.flash", f"CPU SDPA causal GQA fwd+bwd [{B},{H}/{Hkv},{T},{hd}] {t * 1e3:.1f} ms (no flash on CPU)")

    # block-sparse vs dense, fp32 (TF32 off): values, and gradients where torch has a FlexAttention backward
    Be, Te = sz.equal
    seg, _ = packed_segments(Be, Te, sz.conv, g)
    seg = seg.to(device)
    bm, dense = packed_block_mask(seg), packed_dense_mask(seg)
    grads = device.type == "cuda"
    q32, k32, v32 = qkv(Be, Te, torch.float32, grads)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.set_grad_enabled(grads), warnings.catch_warnings():
            warnings.simplefilter("ignore")     # CPU: flex_attention's eager reference warns that it is slow
            if device.type == "cuda":
                a = model_mod.block_sparse_attention(q32, k32, v32, bm, True)
            else:                               # eager reference: compiling it would take a minute on CPU
                a = model_mod.flex_attention(q32, k32, v32, block_mask=bm, enable_gqa=True)
            b = masked_attention(q32, k32, v32, dense)
            diff = (a - b).abs().max().item()
            if grads:
                w = torch.randn(a.shape, generator=g).to(device)
                ga = torch.autograd.grad((a * w).sum(), (q32, k32, v32))
                gb = torch.autograd.grad((b * w).sum(), (q32, k32, v32))
                diff = max([diff] + [(x - y).abs().max().item() for x, y in zip(ga, gb)])
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    what = "values and gradients" if grads else "values (torch has no FlexAttention backward on CPU)"
    report(verdict(diff < 2e-3), "attention.packed_equal",
           f"flex vs dense mask [{Be},{H}/{Hkv},{Te},{hd}] fp32, {what}: max abs diff {diff:.1e} (< 2e-3)")

    seg, _ = packed_segments(B, T, sz.conv, g)
    seg = seg.to(device)
    bm, dense = packed_block_mask(seg), packed_dense_mask(seg)
    live = bm.to_dense().float().mean().item()
    if device.type == "cuda":
        t_flex = timed(fwd_bwd(lambda q, k, v: model_mod.block_sparse_attention(q, k, v, bm, True), q, k, v),
                       device, 5, warmup=2)
        rep = H // Hkv      # the previous path: kv heads repeated, SDPA with the dense mask (memory-efficient kernel)
        t_dense = timed(fwd_bwd(lambda q, k, v: F.scaled_dot_product_attention(
            q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), attn_mask=dense), q, k, v), device, 3)
        report(verdict(t_flex < t_dense), "attention.packed_speed",
               f"packed rows [{B},{H}/{Hkv},{T},{hd}] bf16, conversations of {sz.conv[0]}-{sz.conv[1]} tokens: "
               f"block-sparse flex fwd+bwd {t_flex * 1e3:.2f} ms vs repeated kv + SDPA dense mask {t_dense * 1e3:.2f} ms "
               f"({t_dense / t_flex:.1f}x; {live:.0%} of blocks visited; PASS when faster)")
    else:
        report("INFO", "attention.packed_speed", f"CPU: not timed ({live:.0%} of the 128x128 blocks visited at T={T})")


def _train_step(model, optimizer, batch_fn, device, amp):
    x, kwargs, n = batch_fn()
    with autocast(device, amp):
        loss = model(x, **kwargs) / n
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def _peak_of_next_step(model, optimizer, batch_fn, device, amp) -> int:
    """Peak allocated bytes of one more step (the optimizer states exist from the first step on: steady state)."""
    if device.type != "cuda":
        _train_step(model, optimizer, batch_fn, device, amp)
        return 0
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    _train_step(model, optimizer, batch_fn, device, amp)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def _estimate(cfg, batch, seq_len, device, amp, lora=None, packed=False, loss_fraction=None):
    """train/plan.py's estimate for this step (via train/common.memory_step), None when that API is absent."""
    memory_step = getattr(common, "memory_step", None)
    if memory_step is None:
        return None
    from hessgpt.train import plan

    step = memory_step(cfg, batch, seq_len, device, amp, lora=lora, packed=packed)
    if loss_fraction is not None and hasattr(step, "loss_fraction"):
        step.loss_fraction = loss_fraction
    return plan.estimate(cfg, step).total


def _memory_line(name, device, measured, estimate) -> None:
    if device.type != "cuda":
        report("INFO", name, "CPU: peak allocated memory is not measured (tests/train/test_memory.py checks saved bytes)")
    elif estimate is None:
        report("INFO", name, f"peak allocated {measured / 2**30:.2f} GiB; no estimator API (train/common.memory_step)")
    else:
        err = abs(estimate - measured) / measured
        report(verdict(err <= 0.15), name, f"peak allocated {measured / 2**30:.2f} GiB vs estimate {estimate / 2**30:.2f} GiB "
               f"({err:.0%} off, <= 15%)")


def check_pretrain(device, sz: Sizes) -> None:
    amp = torch.bfloat16 if device.type == "cuda" else None
    m = build(sz.model, device).train()
    cfg = m.config
    B, T = sz.batch, sz.seq_len
    g = torch.Generator().manual_seed(0)
    data = [torch.randint(0, cfg.vocab_size, (B, T + 1), generator=g).to(device) for _ in range(2)]
    k = [0]

    def batch():
        d = data[k[0] % 2]
        k[0] += 1
        return d[:, :-1], {"targets": d[:, 1:]}, B * T

    opt = common.make_optimizer(m.parameters(), 3e-4, 0.1, device=device)
    loss = _train_step(m, opt, batch, device, amp)
    measured = _peak_of_next_step(m, opt, batch, device, amp)
    report(verdict(bool(torch.isfinite(loss))), "pretrain.step", f"{sz.label}, {millions(m)} params, "
           f"micro-batch {B} x {T}, loss {loss.item():.3f} (finite)")
    _memory_line("pretrain.memory", device, measured, _estimate(cfg, B, T, device, amp))
    peak = peak_flops(device, amp)
    spec = gpu_spec(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    fast_gpu = spec is not None and spec.name.startswith(("h100", "h200"))
    for mode in ("eager", "compiled"):
        if mode == "compiled" and not sz.compile:
            report("SKIP", "pretrain.compiled", "--cpu-smoke: torch.compile takes ~1 min per shape on a 2-core CPU")
            continue
        step_model = torch.compile(m) if mode == "compiled" else m
        t0 = time.perf_counter()
        s = timed(lambda: _train_step(step_model, opt, batch, device, amp), device, sz.steps, warmup=2 if mode == "compiled" else 1)
        warm = time.perf_counter() - t0 - s * sz.steps
        tps = B * T / s
        mfu = cfg.flops_per_token(T) * tps / peak if peak else None
        text = f"{tps:,.0f} tokens/s, MFU {mfu:.1%}" if mfu is not None else f"{tps:,.0f} tokens/s"
        if mode == "compiled":
            text += f" (compile + warmup {warm:.0f} s)"
        if mode == "compiled" and fast_gpu:
            report(verdict(mfu >= 0.35), "pretrain.compiled", text + " (MFU >= 35% on an H100/H200)")
        else:
            report("INFO", f"pretrain.{mode}", text)


def check_lora(device, sz: Sizes) -> None:
    amp = torch.bfloat16 if device.type == "cuda" else None
    m = build(sz.model, device)
    _, _, lo = recipe_sizes()
    lcfg = L.LoRAConfig(r=int(lo["rank"]) if device.type == "cuda" else 4, alpha=float(lo["alpha"]),
                        dropout=float(lo["dropout"]), targets=tuple(lo["targets"]))
    L.apply_lora(m, lcfg)
    m.to(device).train()
    cfg = m.config
    B, T = sz.batch, sz.seq_len
    g = torch.Generator().manual_seed(1)
    seg, pos = packed_segments(B, T, sz.conv, g)
    ids = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    sel = torch.rand(B, T, generator=g) < 0.5                       # assistant tokens: about half of a row
    y = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    ids, seg, pos, sel, y = (t.to(device) for t in (ids, seg, pos, sel, y))
    n = sel.sum()

    def batch():
        return ids, {"input_pos": pos, "segments": seg, "logits_at": sel, "targets": y[sel]}, n

    trainable = [p for p in m.parameters() if p.requires_grad]
    frozen = {k: v.detach().clone() for k, v in m.state_dict().items() if "lora_" not in k}
    opt = common.make_optimizer(trainable, 2e-4, 0.0, device=device)
    counted, real = [], model_mod.block_sparse_attention

    def counting(*a, **kw):
        counted.append(1)
        return real(*a, **kw)

    model_mod.block_sparse_attention = counting     # which attention path the packed rows take
    try:
        loss = _train_step(m, opt, batch, device, amp)
    finally:
        model_mod.block_sparse_attention = real
    measured = _peak_of_next_step(m, opt, batch, device, amp)
    moved = sum(not torch.equal(v, m.state_dict()[k]) for k, v in frozen.items())
    ok = bool(torch.isfinite(loss)) and moved == 0
    report(verdict(ok), "sft.lora_step", f"r={lcfg.r} on {len(lcfg.targets)} targets, {sum(p.numel() for p in trainable) / 1e6:.1f}M "
           f"trainable, packed {B} x {T}, loss {loss.item():.3f}; frozen tensors changed: {moved} (0)")
    if device.type == "cuda":
        report(verdict(len(counted) == cfg.n_layers), "sft.packed_attention",
               f"packed rows on CUDA: {len(counted)} FlexAttention (block-sparse) calls for {cfg.n_layers} layers")
    else:
        report(verdict(not counted), "sft.packed_attention",
               f"packed rows on CPU: the dense-mask path (masked_attention), {len(counted)} FlexAttention calls (0)")
    _memory_line("sft.lora_memory", device, measured, _estimate(cfg, B, T, device, amp, lora=lcfg, packed=True,
                                                                 loss_fraction=n.item() / (B * T)))
    s = timed(lambda: _train_step(m, opt, batch, device, amp), device, sz.steps)
    report("INFO", "sft.lora_speed", f"{B * T / s:,.0f} tokens/s (eager)")


def check_engine(device, sz: Sizes) -> None:
    dt = torch.bfloat16 if device.type == "cuda" else torch.float32
    m = build(sz.model, device, dt).eval()
    engine = Engine(m, None)
    prompt = list(range(5, 37))
    p = SamplingParams(max_new_tokens=sz.decode_tokens, temperature=0.8, top_k=50, seed=7, stop_token_ids=[-1])
    a, b = engine.generate(prompt, p), engine.generate(prompt, p)
    report(verdict(a == b and len(a) == sz.decode_tokens), "engine.seeded",
           f"seeded sampling on {device.type} twice: {'same' if a == b else 'different'} {len(a)} tokens")
    tiny = build(cpu_sizes().model, device, seed=3).eval()             # fp32: both paths round alike
    greedy = SamplingParams(max_new_tokens=16, stop_token_ids=[-1])
    same = Engine(tiny, None).generate(prompt, greedy) == naive_generate(tiny, prompt, greedy)
    report(verdict(same), "engine.greedy", f"cached greedy decode {'=' if same else '!='} the no-cache reference (16 tokens)")
    t = timed(lambda: engine.generate(prompt, p), device, 1 if device.type == "cpu" else 2)
    report("INFO", "engine.decode", f"batch-1 decode {sz.decode_tokens / t:,.0f} tokens/s ({dt}, {sz.label}, {millions(m)} params)")


def _dist_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from hessgpt.train import distributed as D

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    dev = torch.device("cuda", rank)
    x = torch.full((4,), float(rank + 1), device=dev)
    dist.all_reduce(x)
    m = build(cpu_sizes().model, dev).train()
    info = D.DistInfo(rank=rank, local_rank=rank, world_size=world, device=dev)
    sharded = D.wrap(m, info, fsdp=True, amp=torch.bfloat16)
    opt = common.make_optimizer(sharded.parameters(), 1e-3, 0.0, device=dev)
    ids = torch.randint(0, m.config.vocab_size, (2, 33), generator=torch.Generator().manual_seed(rank)).to(dev)
    with autocast(dev, torch.bfloat16):
        loss = sharded(ids[:, :-1], targets=ids[:, 1:]) / ids[:, 1:].numel()
    loss.backward()
    opt.step()
    full = D.full_model_state(sharded, True)
    digest = torch.tensor([sum(v.float().sum().item() for v in full.values())], device=dev)
    other = digest.clone()
    dist.broadcast(other, 0)
    if rank == 0:
        with open(out, "w") as f:
            f.write(f"{x[0].item()} {digest.item()} {other.item()}\n")
    elif digest.item() != other.item():
        with open(out + ".mismatch", "w") as f:
            f.write(f"{digest.item()} {other.item()}\n")
    dist.destroy_process_group()


def check_distributed(device, sz: Sizes) -> None:
    if device.type != "cuda" or torch.cuda.device_count() < 2:
        n = torch.cuda.device_count() if device.type == "cuda" else 0
        report("SKIP", "distributed.nccl_fsdp", f"{n} GPU(s): needs 2 (2-process gloo FSDP runs are in tests/train)")
        return
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank0.txt")
        mp.spawn(_dist_worker, args=(2, port, out), nprocs=2, join=True)
        reduced, d0, d1 = (float(v) for v in open(out).read().split())
        ok = reduced == 3.0 and not os.path.exists(out + ".mismatch")
    report(verdict(ok), "distributed.nccl_fsdp", f"2 ranks: all_reduce {reduced} (3.0), FSDP2 step, gathered weights agree")


def check_hf(device, sz: Sizes) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    from hessgpt.serve.backends import HFBackend

    template = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST]{{ m['content'] }}[/INST]"
                "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(["Bonjour, comment allez-vous ? Hello, how are you?"] * 10,
                                trainers.BpeTrainer(vocab_size=300, show_progress=False, special_tokens=["<pad>", "<s>", "</s>", "<unk>", "[INST]", "[/INST]"],
                                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                         pad_token="<pad>", chat_template=template)
        hf_tok.save_pretrained(tmp)
        torch.manual_seed(0)
        MistralForCausalLM(MistralConfig(vocab_size=len(hf_tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                         bos_token_id=1, eos_token_id=2, pad_token_id=0)).save_pretrained(tmp)
        t = time.perf_counter()
        backend = HFBackend(tmp, device=str(device))
        events = list(backend.stream_chat([{"role": "user", "content": "Bonjour"}],
                                          SamplingParams(max_new_tokens=8, temperature=0.8, seed=1)))
        t = time.perf_counter() - t
    want = torch.bfloat16 if device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0) else (
        torch.float16 if device.type == "cuda" else torch.float32)
    ok = backend.device.type == device.type and backend.dtype == want and len(events) > 0
    report(verdict(ok), "hf.backend", f"tiny Mistral on {backend.device} in {backend.dtype} (want {want}), "
           f"{len(events)} events streamed with a seed, {t:.1f} s")


CHECKS = [check_env, check_numerics, check_attention, check_lora, check_pretrain, check_engine, check_distributed, check_hf]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="run every check on CPU at tiny sizes (CI)")
    p.add_argument("--only", help="comma-separated check names to run (env,numerics,attention,pretrain,lora,engine,distributed,hf)")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.cpu_smoke:
        device, sz = torch.device("cpu"), cpu_sizes()
    else:
        if not torch.cuda.is_available():
            print("FAIL env.device: no CUDA GPU here (use --cpu-smoke on a CPU)")
            return 1
        device, sz = torch.device("cuda", 0), gpu_sizes()
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    only = set(args.only.split(",")) if args.only else None
    t0 = time.perf_counter()
    for check in CHECKS:
        name = check.__name__.removeprefix("check_")
        if only and name not in only:
            continue
        try:
            check(device, sz)
        except Exception as e:   # one broken check does not hide the others
            last = traceback.extract_tb(e.__traceback__)[-1]
            report("FAIL", name, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''} "
                   f"({os.path.basename(last.filename)}:{last.lineno})")
        if name == "pretrain":
            torch._dynamo.reset()    # its compiled graphs hold the 0.5B model's weights
        if device.type == "cuda":
            torch.cuda.empty_cache()
    total = time.perf_counter() - t0
    if device.type == "cuda" and not only:
        report(verdict(total <= 360), "total", f"{total:.0f} s (<= 360 s)")
    else:
        report("INFO", "total", f"{total:.1f} s")
    return 1 if any(r[0] == "FAIL" for r in RESULTS) else 0


if __name__ == "__main__":
    sys.exit(main())
