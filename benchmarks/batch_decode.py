"""Batched-decode throughput: aggregate tokens/s of Engine.batch() (BatchDecoder, one batched forward per step)
at batch 1, 4 and 8, next to the batch-1 `Engine.generate` path (native kernels when they build here), on the
same model in the same process, medians of interleaved rounds.

    python benchmarks/batch_decode.py                      # model S, fp32, batches 1 4 8
    python benchmarks/batch_decode.py --models S M --int8 --rounds 5 --tokens 32
    python benchmarks/batch_decode.py --models --checkpoint runs/smollm2-fr-tools/model1   # a real checkpoint

Each row: a 16-token prompt (different per row), then --tokens greedy tokens (no stop token). Prefill is
outside the timed part; a round times every configuration once, in turn, so a noisy neighbour hits them all
alike. Aggregate tok/s = rows * tokens / decode seconds.
"""

import argparse
import statistics
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])

from benchmarks.decode import MODELS, make_model  # noqa: E402
from hessgpt.engine import Engine, SamplingParams  # noqa: E402


def prompts(n: int, vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(10, vocab, (16,), generator=g).tolist() for _ in range(n)]


def time_batch(engine: Engine, rows: list[list[int]], tokens: int) -> float:
    p = SamplingParams(max_new_tokens=tokens, stop_token_ids=[-1])
    batch = engine.batch(max_rows=len(rows))
    ids = [batch.admit(r, p) for r in rows]
    t = time.perf_counter()
    while batch.active():
        batch.step()
    dt = time.perf_counter() - t
    assert all(len(batch.output(i)) == tokens for i in ids)
    return dt


def time_single(engine: Engine, row: list[int], tokens: int) -> float:
    p = SamplingParams(max_new_tokens=tokens, stop_token_ids=[-1])
    gen = engine.session(row, p)
    t = time.perf_counter()
    for _ in range(tokens):
        gen.feed([gen.next_token()])
    return time.perf_counter() - t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=["S"], choices=sorted(MODELS))
    ap.add_argument("--checkpoint", nargs="+", default=[], help="checkpoint folders (hessgpt.load) to time as well")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--int8", action="store_true", help="also the int8 engine")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.tokens} tokens/row, "
          f"medians of {args.rounds} interleaved rounds")
    from hessgpt import loader

    for name in args.models + args.checkpoint:
        model = make_model(name) if name in MODELS else loader.load(name)[0]
        for int8 in ([False, True] if args.int8 else [False]):
            engine = Engine(model, int8=int8)
            rows = prompts(max(args.batches), model.config.vocab_size)
            configs = [("generate (batch-1 path)", lambda: args.tokens / time_single(engine, rows[0], args.tokens))]
            for b in args.batches:
                configs.append((f"batch {b}", lambda b=b: b * args.tokens / time_batch(engine, rows[:b], args.tokens)))
            for _, fn in configs:   # warm-up (kernel build, allocator)
                fn()
            res = {label: [] for label, _ in configs}
            for _ in range(args.rounds):
                for label, fn in configs:
                    res[label].append(fn())
            kind = "int8" if int8 else "fp32"
            base = statistics.median(res["generate (batch-1 path)"])
            for label, v in res.items():
                med = statistics.median(v)
                print(f"{name} {kind:4s} {label:24s} {med:8.1f} tok/s aggregate  ({med / base:4.2f}x generate)"
                      f"  rounds: {' '.join(f'{x:.0f}' for x in v)}")


if __name__ == "__main__":
    main()
