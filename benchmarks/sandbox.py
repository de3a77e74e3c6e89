"""Sandbox latency: warm pool (fork per run, all layers) vs a cold `python -c`, in the same run.

    .venv/bin/python benchmarks/sandbox.py [--n 50] [--pool-runs 240]

Prints p50/p95 in ms for `print(2+2)`, a numpy and a sympy snippet. Goal: warm p50 <= 30 ms for trivial code.
Then a pool line: `--pool-runs` runs in run_many calls of 8 over 2 workers (throughput, worker starts, runs
that did not come back "ok"; expected: 2 starts, 0 failures).
"""

import argparse
import statistics
import subprocess
import sys
import time

from hessgpt.tools.sandbox import Limits, Sandbox
from hessgpt.tools.sandbox import supervisor

SNIPPETS = {
    "print(2+2)": "print(2+2)",
    "numpy": "import numpy as np\nprint(np.linalg.solve(np.array([[3.0, 1.0], [1.0, 2.0]]), np.array([9.0, 8.0])))",
    "sympy": "import sympy as sp\nx = sp.Symbol('x')\nprint(sp.solve(x**2 - 5*x + 6, x))",
}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50, help="warm runs per snippet")
    ap.add_argument("--n-cold", type=int, default=5, help="cold runs per snippet")
    ap.add_argument("--pool-runs", type=int, default=240, help="runs for the 2-worker pool line (0: skip)")
    args = ap.parse_args()
    rows = []
    with Sandbox(Limits()) as sb:
        t0 = time.perf_counter()
        sb.run("pass")
        start_ms = (time.perf_counter() - t0) * 1000
        for name, code in SNIPPETS.items():
            sb.run(code)  # warm-up
            rt = []
            for _ in range(args.n):
                t = time.perf_counter()
                r = sb.run(code)
                rt.append((time.perf_counter() - t) * 1000)
                assert r.status == "ok", r
            gap = []  # chat-like: the model generates between calls, the spare child is already forked
            for _ in range(max(5, args.n // 5)):
                time.sleep(0.05)
                t = time.perf_counter()
                sb.run(code)
                gap.append((time.perf_counter() - t) * 1000)
            cold = []
            for _ in range(args.n_cold):
                t = time.perf_counter()
                subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
                cold.append((time.perf_counter() - t) * 1000)
            rows.append((name, pct(rt, .5), pct(rt, .95), pct(gap, .5), statistics.median(cold)))
    print(f"worker start (bwrap + import + warm numpy/sympy): {start_ms:.0f} ms")
    print("| snippet | warm back-to-back p50 ms | p95 ms | warm after 50 ms idle p50 ms | cold `python -c` p50 ms |")
    print("|---|---|---|---|---|")
    for name, p50, p95, idle, cold in rows:
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {idle:.1f} | {cold:.0f} |")
    if args.pool_runs > 0:
        pool(args.pool_runs)


def pool(n: int) -> None:
    """n runs in run_many calls of 8 over 2 workers: each call ends its own thread pool."""
    ids_before = next(supervisor._Worker._ids)
    codes = list(SNIPPETS.values())
    bad = 0
    with Sandbox(Limits(), workers=2) as sb:
        sb.run_many(["pass", "pass"])
        t0 = time.perf_counter()
        for start in range(0, n, 8):
            bad += sum(r.status != "ok" for r in sb.run_many([codes[(start + j) % len(codes)] for j in range(8)]))
        dt = time.perf_counter() - t0
    starts = next(supervisor._Worker._ids) - ids_before - 1
    print(f"pool: {n} runs over 2 workers in {dt:.1f} s ({n / dt:.0f} runs/s), {starts} worker starts, {bad} not ok")


if __name__ == "__main__":
    main()
