"""`hessgpt data routing` (and `python -m hessgpt.data.routing`): the verified bilingual routing dataset.

    hessgpt data routing --n 20000 --out data/routing.jsonl [--langs fr,en] [--seed 0]
                         [--val-fraction 0.05] [--negative-fraction 0.25] [--workers 2]
        -> data/routing.jsonl (train) + data/routing.val.jsonl (validation) + data/routing.stats.json
    hessgpt data routing --validate llm_made.jsonl [--out checked.jsonl]
        -> runs every code block of an externally generated file, reports and drops the wrong samples
    hessgpt data routing ... --search-share 0.12
        -> + search conversations (hessgpt.data.routing.mix)

What the data is and how it is built: hessgpt/data/routing/__init__.py.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from hessgpt.data.routing.check import validate_file
from hessgpt.data.routing.mix import generate_splits
from hessgpt.data.routing.multiturn import N_SHARE
from hessgpt.data.routing.output import split_paths, test_path, write_jsonl
from hessgpt.data.routing.search import KINDS as SEARCH_KINDS
from hessgpt.errors import HessGPTError


def build_parser(prog: str = "hessgpt data routing") -> argparse.ArgumentParser:
    """The routing CLI's arguments."""
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="number of samples (train + val)")
    ap.add_argument("--out", help="output JSONL (train); the validation split goes to OUT.val.jsonl, stats to OUT.stats.json")
    ap.add_argument("--langs", default="fr,en", help="comma-separated languages (fr, en)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-fraction", type=float, default=0.05, help="dev (tuning) split, a share of --n")
    ap.add_argument("--test-n", type=int, default=600, help="size of the test split (own seed, disjoint phrasings, "
                                                           "entities and operands; never used to choose anything)")
    ap.add_argument("--negative-fraction", type=float, default=0.25, help="share of direct answers without code")
    ap.add_argument("--multiturn-share", type=float, default=N_SHARE,
                    help=f"2-3 turn conversations added to train and dev, as a share of their size (default {N_SHARE})")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="sandbox workers")
    ap.add_argument("--validate", metavar="FILE", help="check an externally generated file instead of generating")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--search-share", type=float, default=0.0,
                    help="search conversations (hessgpt.data.routing.search) added, as a share of --n (train + dev) "
                         "and of --test-n (test); default 0: none")
    ap.add_argument("--search-test-share", type=float, default=None,
                    help="the test split's search share, when it differs from --search-share (train on more search "
                         "data, keep the same frozen test items)")
    ap.add_argument("--search-kinds", default=None, metavar="KIND=W,...",
                    help="kind weights of the train and dev search conversations, e.g. "
                         "answerable=0.45,unanswerable=0.4,no_search=0.15 (default 0.6/0.25/0.15; the test split "
                         "keeps the default, so it stays frozen)")
    return ap


def parse_kinds(text: str | None) -> dict[str, float] | None:
    """'answerable=0.5,unanswerable=0.4' -> {kind: weight}; a clear error naming a bad item."""
    if not text:
        return None
    out = {}
    for item in text.split(","):
        name, _, value = item.strip().partition("=")
        try:
            out[name.strip()] = float(value)   # no "=": value is "", not a number
        except ValueError:
            raise HessGPTError(f"--search-kinds: {item.strip()!r} is not KIND=WEIGHT") from None
    return out


def run_validate(args) -> int:
    """--validate FILE: run every code block of an externally generated file, drop the wrong samples."""
    out = args.out or str(Path(args.validate).with_suffix("")) + ".valid.jsonl"
    rep = validate_file(args.validate, out, workers=args.workers)
    for lineno, problem in rep["problems"]:
        print(f"{args.validate}:{lineno}: dropped: {problem}")
    print(f"checked {rep['records']} records ({rep['code_runs']} code blocks run in the sandbox): "
          f"kept {rep['kept']}, dropped {rep['dropped']} -> {out}")
    return 0


def check_args(args) -> tuple[str, ...]:
    """Refuse bad sizes with a one-line error; the requested languages."""
    if not args.out:
        raise HessGPTError("--out FILE is required (or --validate FILE)")
    if args.n <= 0:
        raise HessGPTError(f"--n must be positive, got {args.n}")
    if not 0 <= args.val_fraction < 1:
        raise HessGPTError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if not 0 <= args.multiturn_share <= 1:
        raise HessGPTError(f"--multiturn-share must be in [0, 1], got {args.multiturn_share}")
    if args.test_n < 0:
        raise HessGPTError(f"--test-n must be >= 0, got {args.test_n}")
    return tuple(l.strip() for l in args.langs.split(",") if l.strip())


def write_and_report(args, splits: dict[str, list[dict]], d: dict) -> None:
    """Write the three splits and the stats beside --out, print the summary and any short split."""
    train_p, val_p, stats_p = split_paths(args.out)
    test_p = test_path(args.out)
    write_jsonl(train_p, splits["train"])
    write_jsonl(val_p, splits["dev"])
    write_jsonl(test_p, splits["test"])
    stats_p.write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    fails = ", ".join(f"{k}={v}" for k, v in d["failed"].items()) or "none"
    total = sum(len(v) for v in splits.values())
    print(f"routing: {total} samples in {d['seconds']:.1f} s ({d['sandbox_runs']} sandbox runs, failed runs dropped: "
          f"{fails}, disagreeing with the reference: {d['verification_disagreements']}, duplicates skipped: {d['duplicates']})")
    print("  " + "  ".join(f"{k}={v}" for k, v in d["kept"].items()) + "  |  " + "  ".join(f"{k}={v}" for k, v in d["langs"].items()))
    print(f"  wrote {train_p} ({d['train']}), {val_p} (dev, {d['dev']}), {test_p} (test, {d['test']}), {stats_p}")
    mt = {k: sum(v.get(kind, 0) for kind in ("multiturn-unrelated", "multiturn-followup", "multiturn-thanks",
                                               "multiturn-correction")) for k, v in d.get("multiturn", {}).items()}
    if mt:
        print("  multi-turn conversations: " + ", ".join(f"{k} {v}" for k, v in mt.items()))
    want = {"train": args.n - round(args.n * args.val_fraction), "dev": round(args.n * args.val_fraction), "test": args.test_n}
    want = {k: v + mt.get(k, 0) + d.get("search", {}).get("sizes", {}).get(k, 0)
            - d.get("search", {}).get("dropped_conflicts", {}).get(k, 0) for k, v in want.items()}
    for k, v in want.items():
        if len(splits[k]) < v:
            print(f"  warning: {k}: only {len(splits[k])} of {v} requested samples (not enough distinct prompts)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.validate:
        return run_validate(args)
    langs = check_args(args)
    splits, d = generate_splits(args.n, args.test_n, args.val_fraction, langs, args.seed, args.negative_fraction,
                                workers=args.workers, progress=not args.no_progress and sys.stderr.isatty(),
                                multiturn_share=args.multiturn_share, search_share=args.search_share,
                                search_test_share=args.search_test_share, search_kinds=parse_kinds(args.search_kinds))
    write_and_report(args, splits, d)
    if "search" in d:
        s = d["search"]
        print("  search records: " + "; ".join(f"{split} " + ", ".join(f"{k} {v[k]}" for k in SEARCH_KINDS)
                                                for split, v in s["kinds"].items())
              + f"; routing samples naming a corpus country dropped: {s['dropped_conflicts']}")
    return 0
