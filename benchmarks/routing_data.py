"""Benchmark: generate the routing dataset (default 20,000 samples, 2 sandbox workers) and time it.

    python -m benchmarks.routing_data [--n 20000] [--workers 2] [--verify 500] [--out DIR]

Prints the wall time, sandbox runs per second, the counts, and re-executes `--verify` random kept
samples in a fresh sandbox to check each one's tool message equals the real stdout again.
Target (issue 5): 20,000 samples in under 5 minutes on 2 cores.
"""

import argparse
import json
import os
import random
import sys
import tempfile
import time

from hessgpt.data.routing.build import generate
from hessgpt.data.routing.output import split_paths, write_jsonl
from hessgpt.tools.sandbox import Sandbox


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verify", type=int, default=500, help="re-execute this many kept Python samples")
    ap.add_argument("--out", default=None, help="folder for routing.jsonl (default: a temp folder)")
    args = ap.parse_args()

    out_dir = args.out or tempfile.mkdtemp(prefix="routing-bench-")
    t0 = time.time()
    records, stats = generate(args.n, seed=args.seed, workers=args.workers, progress=sys.stderr.isatty())
    gen_s = time.time() - t0
    train_p, _, _ = split_paths(os.path.join(out_dir, "routing.jsonl"))
    write_jsonl(train_p, records)
    total_s = time.time() - t0

    py = [r for r in records if any(m["role"] == "tool" for m in r["messages"])]
    picked = random.Random(1).sample(py, min(args.verify, len(py)))
    with Sandbox(workers=args.workers) as sb:
        runs = sb.run_many([r["messages"][1]["code"] for r in picked])
    mismatches = [r["id"] for r, run in zip(picked, runs) if run.status != "ok" or run.stdout != r["messages"][2]["content"]]

    summary = {
        "n": len(records), "workers": args.workers, "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "generate_s": round(gen_s, 1), "total_with_write_s": round(total_s, 1),
        "sandbox_runs": stats.sandbox_runs, "runs_per_s": round(stats.sandbox_runs / gen_s, 1),
        "kept": dict(stats.kept), "langs": dict(stats.langs), "failed_runs": dict(stats.failed),
        "duplicates_skipped": stats.duplicates,
        "verified": len(picked), "verify_mismatches": len(mismatches),
        "under_5_min": total_s < 300, "file": str(train_p),
    }
    print(json.dumps(summary, indent=2))
    return 0 if not mismatches and len(records) == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
