"""Packed-row attention for CPU SFT: forward + backward of `model.masked_attention` against the alternatives.

    .venv/bin/python -m benchmarks.sft_attention                    # the quickstart's model 1 shape, 1 thread
    .venv/bin/python -m benchmarks.sft_attention --batch 16 --threads 2

Shape: B packed rows of T tokens, H heads of head_dim hd, a block-diagonal causal mask from random conversation
boundaries (as `sft.make_batch` builds), bf16 autocast as `hessgpt sft` uses on this CPU. Variants, measured in
interleaved rounds (the median of each round's best of 4 repeats, so the VM's drift hits all alike):
  hessgpt       model.masked_attention: the mask as an additive bias of the scores' dtype, [B, 1, T, S]
  masked_fill   the same maths with masked_fill(-inf) on the [B, H, T, S] scores (the previous version)
  sdpa          F.scaled_dot_product_attention with the boolean mask (PyTorch's fused CPU kernel)
Prints ms per call and each variant's time relative to `hessgpt`, and checks that the outputs agree.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from hessgpt.model import masked_attention


def masked_fill_attention(q, k, v, mask):
    s = torch.matmul(q, k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    s = s.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1), v)


def sdpa(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


VARIANTS = {"hessgpt": masked_attention, "masked_fill": masked_fill_attention, "sdpa": sdpa}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    B, H, T, hd = args.batch, args.heads, args.seq, args.head_dim
    q, k, v = (torch.randn(B, H, T, hd, generator=g, requires_grad=True) for _ in range(3))
    seg = torch.sort(torch.randint(0, 4, (B, T), generator=g), dim=1).values      # ~4 conversations per row
    mask = ((seg[:, :, None] == seg[:, None, :]) & torch.ones(T, T, dtype=torch.bool).tril()).unsqueeze(1)

    def call(f):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = f(q, k, v, mask)
        out.float().sum().backward()
        return out

    outs = {name: call(f).detach().float() for name, f in VARIANTS.items()}   # warm-up + agreement
    times = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, f in VARIANTS.items():
            best = float("inf")
            for _ in range(4):
                t = time.perf_counter()
                call(f)
                best = min(best, time.perf_counter() - t)
            times[name].append(best)
    ref = statistics.median(times["hessgpt"])
    print(f"attention fwd+bwd, B {B} H {H} T {T} hd {hd}, bf16 autocast, {args.threads} thread(s), {args.rounds} rounds")
    for name in VARIANTS:
        med = statistics.median(times[name])
        diff = (outs[name] - outs["hessgpt"]).abs().max().item()
        print(f"  {name:12s} {med * 1e3:7.2f} ms   {med / ref:5.2f}x hessgpt's time   max |out - hessgpt| {diff:.3g}")


if __name__ == "__main__":
    main()
