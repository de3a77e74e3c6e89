"""`hessgpt data SUBCOMMAND`: prepare (a recipe -> train/val JSONL + report), shards, routing, refine-pairs."""

from __future__ import annotations

import argparse
import importlib
import sys

from hessgpt.data.recipe import load_recipe
from hessgpt.errors import HessGPTError
from hessgpt.tokenizer import Tokenizer

# subcommands owned by other modules: name -> (module, one-line help); each has main(argv)
DELEGATED = {
    "shards": ("hessgpt.data.shards", "tokenize text/conversations into training shards"),
    "routing": ("hessgpt.data.routing.cli", "build the routing (code/tool/search) dataset"),
    "chat-shards": ("hessgpt.data.chat_shards", "render conversations (+ text) into mid-training shards"),
    "refine-pairs": ("hessgpt.data.refine", "verified refinement pairs for model 2 (draft + run -> fixed program)"),
}


def _parse_local(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise HessGPTError(f"--local expects NAME=PATH, got {item!r}")
        out[name] = path
    return out


def prepare_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="hessgpt data prepare", description="Build a conversation mix from a recipe.")
    p.add_argument("recipe", help="YAML recipe (see recipes/)")
    p.add_argument("--out", required=True, help="output directory: train.jsonl, val.jsonl, report.{json,md}, lengths.png")
    p.add_argument("--tokenizer", help="tokenizer directory: count lengths in tokens (max_tokens) instead of characters")
    p.add_argument("--local", action="append", default=[], metavar="NAME=PATH",
                   help="read source NAME from a local file/dir/glob instead of its recipe path (repeatable); "
                   "NAME.OPTION=PATH replaces a table option such as nexusraven.api_list")  # fmt: skip
    p.add_argument("--seed", type=int, help="override the recipe's seed")
    p.add_argument("--total", type=int, help="override the recipe's total")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    from hessgpt.data.prepare import prepare  # lazy: numpy via data.dedup (~120 ms), only data prepare

    recipe = load_recipe(args.recipe, _parse_local(args.local))
    if args.seed is not None:
        recipe.seed = args.seed
    if args.total is not None:
        recipe.total = args.total
    tokenizer = None
    if args.tokenizer:
        tokenizer = Tokenizer.load(args.tokenizer)
    report = prepare(recipe, args.out, tokenizer=tokenizer, progress=not args.no_progress and sys.stderr.isatty())
    print_summary(report, args.out)
    return 0


def print_summary(report: dict, out: str) -> None:
    rows = [("source", "records", "kept", "train", "val", "skipped")]
    for s in report["sources"]:
        skipped = ", ".join(f"{r}={n}" for r, n in s["skipped"].items()) or "-"
        rows.append((s["name"], str(s["records"]), str(s["kept"]), str(s["train"]), str(s["val"]), skipped))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r[:5], widths))) + "  " + r[5])
    langs = ", ".join(f"{k}={v}" for k, v in report["languages"].items())
    print(f"train {report['train']}  val {report['val']}  languages: {langs or '-'}")
    print(f"wrote {out}/train.jsonl, val.jsonl, report.json, report.md, lengths.png")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: hessgpt data {prepare,shards,routing,chat-shards,refine-pairs} ...\n\n  prepare  build a conversation mix from a recipe\n"
    usage += "".join(f"  {name:<11} {help_}\n" for name, (_, help_) in DELEGATED.items())
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "prepare":
        return prepare_main(rest)
    if cmd in DELEGATED:
        module = importlib.import_module(DELEGATED[cmd][0])  # imported only when asked for
        return int(module.main(rest) or 0)
    print(f"hessgpt data: unknown subcommand {cmd!r}\n\n{usage}", file=sys.stderr)
    return 2
