"""Shard tokenization throughput: MB of text per second through `hessgpt data shards`' real path (workers read
byte ranges -> filter -> tokenize -> the parent mixes -> write shards), at 1 and 2 workers, with the fast
encoder (tiktoken, verified identical to `tokenizers` at load) and optionally `tokenizers` for reference.

Rounds are interleaved (control, 1 worker, 2 workers, control, 1 worker, ...) and medians reported, so a
burst of other work on the machine shifts one round, not one configuration. The control is the ceiling for
the 2-worker speedup: how much faster 2 processes of pure CPU work (a >= 1 s Python loop each) finish than 1
process doing both, measured in the same rounds. Every run's shards are checked byte-identical to the first.

    python benchmarks/tokenize_speed.py                       # 64 MB built from the repo's fixture texts
    python benchmarks/tokenize_speed.py --encoders fast tokenizers --rounds 1
    python benchmarks/tokenize_speed.py --input corpus.txt --tokenizer tok/ --workers 1 2 4 --filter
"""

import argparse
import filecmp
import multiprocessing as mp
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from hessgpt.data.shards import text_recipe, write_shards  # noqa: E402
from hessgpt.tokenizer import Tokenizer, train_tokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = [os.path.join(ROOT, "tests", "fixtures", "text", f) for f in ("en_c4.txt", "fr_ud_gsd.txt")]


def build_corpus(path: str, mb: float, seed: int = 0) -> None:
    """Documents of the fixture texts (English C4 pages, French sentences in groups of 8), shuffled, repeated."""
    docs = [d.strip() for d in open(FIXTURES[0], encoding="utf-8").read().split("\n\n") if d.strip()]
    lines = open(FIXTURES[1], encoding="utf-8").read().splitlines()
    docs += ["\n".join(lines[i:i + 8]) for i in range(0, len(lines), 8)]
    rng = random.Random(seed)
    size, target = 0, int(mb * 1e6)
    with open(path, "w", encoding="utf-8") as f:
        while size < target:
            rng.shuffle(docs)
            for d in docs:
                f.write(d + "\n\n")
                size += len(d.encode()) + 2
                if size >= target:
                    break


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _burn(n: int) -> int:
    s = 0
    for i in range(n):
        s += i
    return s


def calibrate_burn(seconds: float) -> int:
    """Loop count of `_burn` that takes about `seconds` on one CPU."""
    n = 1_000_000
    t0 = time.perf_counter()
    _burn(n)
    return int(n * seconds / (time.perf_counter() - t0))


def control(n: int) -> float:
    """Speedup of 2 processes over 1 on pure CPU work right now: 1 process runs _burn(n) twice, then 2
    processes run it once each (started before the clock)."""
    t0 = time.perf_counter()
    _burn(n), _burn(n)
    serial = time.perf_counter() - t0
    with mp.get_context("fork").Pool(2) as pool:
        pool.map(_burn, [1000, 1000])
        t0 = time.perf_counter()
        pool.map(_burn, [n, n])
        parallel = time.perf_counter() - t0
    return serial / parallel


def same_shards(a: str, b: str) -> bool:
    files = sorted(f for f in os.listdir(a) if f.endswith(".bin"))
    _, bad, err = filecmp.cmpfiles(a, b, files, shallow=False)
    return bool(files) and not bad and not err and files == sorted(f for f in os.listdir(b) if f.endswith(".bin"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="+", help="text files (default: a corpus built from the fixtures)")
    p.add_argument("--mb", type=float, default=64.0, help="size of the built corpus")
    p.add_argument("--tokenizer", help="tokenizer directory (default: train a 4096-token BPE on the fixtures)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--encoders", nargs="+", default=["fast"], choices=["fast", "tokenizers"])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument("--burn", type=float, default=1.0, help="seconds of pure CPU work per control process")
    p.add_argument("--filter", action="store_true", help="also run the quality filters (default: tokenization only)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        inputs = args.input
        if not inputs:
            inputs = [os.path.join(tmp, "corpus.txt")]
            build_corpus(inputs[0], args.mb)
        tok_dir = args.tokenizer
        if not tok_dir:
            tok_dir = os.path.join(tmp, "tok")
            train_tokenizer(FIXTURES, vocab_size=4096).save(tok_dir)
        tok = Tokenizer.load(tok_dir)
        fast = "tiktoken" if tok._fast_encoder() is not None else "tokenizers (no verified fast path)"
        mbytes = sum(os.path.getsize(f) for f in inputs) / 1e6
        n_burn = calibrate_burn(args.burn)
        load = os.getloadavg()[0]
        print(f"input {mbytes:.1f} MB, tokenizer vocab {tok.vocab_size} ({tok.hash}), fast encoder = {fast}, "
              f"filters {'on' if args.filter else 'off'}, {os.cpu_count()} CPUs, load average {load:.2f}")
        if load >= 0.6:
            print("note: other processes are using the CPUs: multi-worker timings are not meaningful; rerun on an idle machine")
        print(f"{'round':>5} {'encoder':<12} {'workers':>7} {'seconds':>8} {'MB/s':>7} {'Mtok/s':>7} {'CPU s':>6}")
        runs: dict = {}  # (encoder, workers) -> [(MB/s, Mtok/s, CPU s)] per round
        controls, reference = [], None
        for r in range(1, args.rounds + 1):
            c = control(n_burn)
            controls.append(c)
            print(f"{r:>5} {'control':<12} {'2 vs 1':>7} {'':>8} {'':>7} {'':>7} {'':>6}  {c:.2f}x")
            for enc in args.encoders:
                for w in args.workers:
                    out = os.path.join(tmp, f"out-{enc}-{w}-{r}")
                    recipe = text_recipe(inputs, shard_tokens=5_000_000, val_fraction=0.001, val_tokens=100_000)
                    recipe.filter = args.filter
                    cpu0 = _cpu()
                    t0 = time.perf_counter()
                    m = write_shards(recipe, tok, out, workers=w, encoder=enc)
                    dt = time.perf_counter() - t0
                    cpu = _cpu() - cpu0  # this process + its (joined) workers
                    ntok = m["tokens"]["train"] + m["tokens"]["val"]
                    runs.setdefault((enc, w), []).append((mbytes / dt, ntok / dt / 1e6, cpu))
                    print(f"{r:>5} {enc:<12} {w:>7} {dt:>8.2f} {mbytes / dt:>7.2f} {ntok / dt / 1e6:>7.2f} {cpu:>6.2f}")
                    if reference is None:
                        reference = out
                    else:
                        if not same_shards(reference, out):
                            print(f"MISMATCH: {out} differs from {reference}")
                            return 1
                        shutil.rmtree(out)
        print("all configurations wrote byte-identical shards")

        print(f"\nmedians of {args.rounds} interleaved round(s):")
        print(f"{'encoder':<12} {'workers':>7} {'MB/s':>7} {'Mtok/s':>7} {'CPU s':>6} {'speedup':>8}")
        for (enc, w), rows in runs.items():
            speed = ""
            if (enc, args.workers[0]) in runs and w != args.workers[0]:  # paired by round, then the median
                base = runs[(enc, args.workers[0])]
                speed = f"{statistics.median(x[0] / b[0] for x, b in zip(rows, base)):.2f}x"
            print(f"{enc:<12} {w:>7} {statistics.median(x[0] for x in rows):>7.2f} "
                  f"{statistics.median(x[1] for x in rows):>7.2f} {statistics.median(x[2] for x in rows):>6.2f} {speed:>8}")
        ctl = statistics.median(controls)
        print(f"control: 2 processes of pure CPU work ({args.burn:.1f} s each) vs 1: {ctl:.2f}x "
              f"(rounds: {', '.join(f'{c:.2f}' for c in controls)})")
        if ("fast", 1) in runs and ("fast", 2) in runs:
            ratios = [b[0] / a[0] for a, b in zip(runs[("fast", 1)], runs[("fast", 2)])]
            sp = statistics.median(ratios)
            print(f"fast encoder, 2 workers vs 1: {sp:.2f}x (rounds: {', '.join(f'{x:.2f}' for x in ratios)}; "
                  f"goal >= 1.8x: {'met' if sp >= 1.8 else 'NOT met'}), {sp / ctl:.0%} of the control")
        if ("fast", 1) in runs and ("tokenizers", 1) in runs:
            ratio = statistics.median(a[0] / b[0] for a, b in zip(runs[("fast", 1)], runs[("tokenizers", 1)]))
            print(f"fast vs tokenizers at 1 worker: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
