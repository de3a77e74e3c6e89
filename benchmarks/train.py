"""Training-step throughput: HessGPT vs `transformers` MistralForCausalLM, same config, same weights, same data.

    .venv/bin/python -m benchmarks.train                     # ~20M params, batch 8 x 256, 2 threads, 50 steps
    .venv/bin/python -m benchmarks.train --compile           # + torch.compile for HessGPT (slow first step)
    .venv/bin/python -m benchmarks.train --steps 20 --threads 4

One step = forward + backward + AdamW. HessGPT runs with bf16 autocast where the CPU/GPU has it
(hessgpt.device.autocast_dtype), transformers in fp32 (its default). Both start from identical weights and
see identical batches (the repository's fixture text, tokenized with a BPE trained on it), so the loss after
the last step says whether the faster run still learns the same: it should be within 2% of the fp32 reference.
Prints tokens/s (from the median step time), the speed ratio, peak memory (RSS high-water mark of each run's own process) and losses.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = [os.path.join(ROOT, "tests", "fixtures", "text", n) for n in ("fr_ud_gsd.txt", "en_c4.txt")]


def batches(vocab: int, batch: int, seq: int, steps: int, seed: int = 0):
    from hessgpt.tokenizer import train_tokenizer

    tok = train_tokenizer(TEXTS, vocab_size=vocab)
    ids = []
    for path in TEXTS:
        with open(path, encoding="utf-8") as f:
            for block in f.read().split("\n\n"):
                ids += [tok.bos_id] + tok.encode(block) + [tok.eos_id]
    data = torch.tensor(ids)
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(data) - seq - 1, (steps, batch), generator=g)
    return [(torch.stack([data[s:s + seq] for s in row]), torch.stack([data[s + 1:s + seq + 1] for s in row])) for row in starts], tok.vocab_size


def run(kind: str, cfg_dict: dict, state_path: str, data, steps: int, compile_: bool, out_path: str) -> None:
    """One benchmark in this (child) process; writes {"tok_per_s", "losses", ...} to out_path."""
    from hessgpt.config import ModelConfig
    from hessgpt.device import autocast, autocast_dtype

    cfg = ModelConfig(**cfg_dict)
    sd = torch.load(state_path)
    device = torch.device("cpu")
    if kind == "hessgpt":
        from hessgpt.model import Transformer, cross_entropy

        model = Transformer(cfg)
        model.load_state_dict(sd, strict=False)
        amp = autocast_dtype(device, "auto")
        fwd = torch.compile(model) if compile_ else model

        def loss_fn(x, y):
            with autocast(device, amp):
                logits = fwd(x)
            return cross_entropy(logits, y)
    else:
        from transformers import MistralConfig, MistralForCausalLM

        from hessgpt.convert.hf import config_to_hf

        hf_cfg = {k: v for k, v in config_to_hf(cfg).items() if k not in ("architectures", "model_type", "torch_dtype")}
        model = MistralForCausalLM(MistralConfig(**hf_cfg, attn_implementation="sdpa"))
        model.load_state_dict(sd, strict=False)
        if cfg.tie_embeddings:
            model.tie_weights()
        amp = None

        def loss_fn(x, y):
            logits = model(input_ids=x).logits
            return torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    losses, times = [], []
    for x, y in data[:steps]:
        t0 = time.perf_counter()
        loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        times.append(time.perf_counter() - t0)
    warm = 3 if not compile_ else 5  # skip the first steps (allocator warmup, compilation)
    tokens = data[0][0].numel()
    steady = sorted(times[warm:])
    tps = tokens / steady[len(steady) // 2]  # median step: robust to other processes' bursts on a shared machine
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with open(out_path, "w") as f:
        json.dump({"tok_per_s": tps, "losses": losses, "peak_rss": rss, "amp": str(amp), "first_step_s": times[0]}, f)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also time HessGPT with torch.compile")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(args.threads)
    if args.child:
        blob = torch.load(os.path.join(args.tmp, "data.pt"))
        run(args.child, blob["cfg"], os.path.join(args.tmp, "state.pt"), blob["data"], args.steps, args.compile,
            os.path.join(args.tmp, f"{args.child}-{args.compile}.json"))
        return 0
    from hessgpt.config import ModelConfig
    from hessgpt.model import Transformer

    data, vocab = batches(8192, args.batch, args.seq, args.steps)
    cfg = ModelConfig(vocab_size=vocab, dim=384, n_layers=10, n_heads=6, n_kv_heads=6, hidden_dim=1024,
                      context_length=args.seq, tie_embeddings=True)
    model = Transformer(cfg).init_weights(seed=0)
    n = sum(p.numel() for p in model.parameters())
    tmp = tempfile.mkdtemp(prefix="hessgpt-bench-")
    state = os.path.join(tmp, "state.pt")
    torch.save(model.state_dict(), state)
    print(f"model: {n / 1e6:.1f}M params (dim {cfg.dim}, {cfg.n_layers} layers), batch {args.batch} x {args.seq}, "
          f"{args.threads} threads, {args.steps} steps, torch {torch.__version__}")
    runs = [("transformers fp32", "hf", False), ("hessgpt", "hessgpt", False)]
    if args.compile:
        runs.append(("hessgpt + compile", "hessgpt", True))
    results = {}
    torch.save({"data": data, "cfg": cfg.to_dict()}, os.path.join(tmp, "data.pt"))
    for label, kind, comp in runs:
        out = os.path.join(tmp, f"{kind}-{comp}.json")
        # one process per run: clean peak-RSS figures, no allocator/thread state carried between runs
        cmd = [sys.executable, "-m", "benchmarks.train", "--child", kind, "--tmp", tmp, "--steps", str(args.steps),
               "--threads", str(args.threads)] + (["--compile"] if comp else [])
        r = subprocess.run(cmd, cwd=ROOT)
        if r.returncode != 0:
            print(f"{label}: failed (exit {r.returncode})", file=sys.stderr)
            return 1
        with open(out) as f:
            results[label] = json.load(f)
    ref = results["transformers fp32"]
    print(f"{'run':<20} {'autocast':<16} {'tok/s':>8} {'speed':>7} {'peak RSS':>9} {'loss@1':>7} {f'loss@{args.steps}':>8} {'vs fp32':>8}")
    for label, r in results.items():
        speed = r["tok_per_s"] / ref["tok_per_s"]
        dl = (r["losses"][-1] - ref["losses"][-1]) / ref["losses"][-1]
        amp = r["amp"].replace("torch.", "") if label != "transformers fp32" else "fp32"
        print(f"{label:<20} {amp:<16} {r['tok_per_s']:>8,.0f} {speed:>6.2f}x {r['peak_rss'] / 2**20:>7,.0f}MB "
              f"{r['losses'][0]:>7.3f} {r['losses'][-1]:>8.3f} {dl:>+7.1%}")
    if args.compile:
        print(f"(compile: first step {results['hessgpt + compile']['first_step_s']:.0f} s, excluded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
