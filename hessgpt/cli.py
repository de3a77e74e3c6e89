"""`hessgpt` — one command for every stage.

Each subcommand lives in its stage's module as `main(argv: list[str]) -> int | None`; this file only
dispatches, so `hessgpt --help` stays instant (no torch import) and each stage owns its own flags.
The dispatcher is where subcommand modules are imported lazily, by name from COMMANDS (importlib), so that
a command loads only its own dependencies; the stages' own modules import at the top (house style), except
a few imports that keep a command from loading torch & co it does not need, each commented `# lazy: ...`.
`hessgpt data` has the one other such table, for its subcommands (hessgpt/data/cli.py DELEGATED).
Errors a user can fix (HessGPTError, missing files) print one line and exit 1, never a traceback.
"""

import importlib
import os
import sys

from hessgpt import __version__
from hessgpt.errors import HessGPTError

# name -> (module, function, one-line help)
COMMANDS = {
    "model": ("hessgpt.cli", "model_main", "presets, `model info PRESET|CKPT`, `model init PRESET --out DIR` (random weights)"),
    "tokenizer": ("hessgpt.tokenizer", "cli_main", "train or adopt a BPE tokenizer: `hessgpt tokenizer train ...`"),
    "convert": ("hessgpt.convert.cli", "cli_main", "convert checkpoints: to-hf, from-hf, to-gguf, from-gguf"),
    "generate": ("hessgpt.chat", "generate_main", "generate text from a prompt"),
    "chat": ("hessgpt.chat", "chat_main", "multi-turn chat in the terminal"),
    "ask": ("hessgpt.chat", "ask_main", "one question through the dual model and its tools, showing each step"),
    "data": ("hessgpt.data.cli", "main", "datasets: prepare, shards, routing"),
    "pretrain": ("hessgpt.train.pretrain", "main", "pretrain a model on token shards"),
    "sft": ("hessgpt.train.sft", "main", "supervised fine-tuning (full or LoRA)"),
    "merge": ("hessgpt.train.merge", "main", "merge a LoRA adapter into its base"),
    "pipeline": ("hessgpt.train.pipeline", "main", "run a staged recipe (pretrain -> SFT -> merge -> ...); --plan --gpu NAME: memory/time per stage"),
    "sandbox": ("hessgpt.tools.sandbox.cli", "main", "the secure Python sandbox: run, doctor"),
    "search": ("hessgpt.tools.search", "main", "local document index for <search>: build, query"),
    "serve": ("hessgpt.serve.app", "main", "OpenAI-compatible API + web chat page"),
    "eval": ("hessgpt.eval.cli", "main", "evaluation: ppl, bench, tools, report"),
    "quantize": ("hessgpt.quantize", "cli_main", "int8 / int4 (Q4_0) weight-only quantization"),
    "quickstart": ("hessgpt.quickstart", "main", "the whole dual-model system at small scale on a CPU"),
}


def _usage() -> str:
    lines = ["usage: hessgpt COMMAND [ARGS...]", "", "commands:"]
    for name, (_, _, help_) in COMMANDS.items():
        lines.append(f"  {name:<11} {help_}")
    lines.append("")
    lines.append("`hessgpt COMMAND --help` for a command's flags.")
    return "\n".join(lines)


def model_main(argv: list[str]) -> int:
    """`hessgpt model presets|info` (hessgpt.loader) and `hessgpt model init` (the model and checkpoint code)."""
    if argv[:1] != ["init"]:
        try:
            return importlib.import_module("hessgpt.loader").cli_main(argv)
        except SystemExit as e:  # argparse's --help / usage error
            if argv[:1] in (["-h"], ["--help"]):
                print("\n`hessgpt model init PRESET --tokenizer DIR --out DIR`: a random-weight checkpoint (--help for flags)")
            return int(e.code or 0)
    import argparse

    p = argparse.ArgumentParser(prog="hessgpt model init", description=(
        "Save a randomly initialised preset (vocab size = the tokenizer's) as a HessGPT checkpoint folder: "
        "the pipeline's `init` stage, and a model to try every command on before any training."))
    p.add_argument("preset", help="preset name (`hessgpt model presets`)")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer folder (`hessgpt tokenizer train`)")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint folder to write")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset's config (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    args = p.parse_args(argv[1:])
    pretrain = importlib.import_module("hessgpt.train.pretrain")
    pretrain.init_checkpoint(args.preset, args.tokenizer, args.out, pretrain.parse_overrides(args.set), args.seed)
    cfg = importlib.import_module("hessgpt.loader").load_config(args.out)
    print(f"wrote {args.out}: {args.preset}, {cfg.num_params():,} parameters (vocab {cfg.vocab_size}, context "
          f"{cfg.context_length}), random weights (seed {args.seed})")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"hessgpt {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"hessgpt: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = COMMANDS[name]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        code = func(rest)
    except HessGPTError as e:
        print(f"hessgpt {name}: error: {e}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"hessgpt {name}: error: no such file: {e.filename or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nhessgpt {name}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
