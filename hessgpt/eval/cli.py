"""`hessgpt eval {ppl,bench,tools,refine,search,report}`.

Every command saves its JSON result where `hessgpt eval report` finds it: `--out FILE`, by default
`<ckpt>/eval/<kind>.json` (ppl.json, bench.json, tools.json) for a checkpoint folder, or
`<folder of the file>/eval/<kind>.json` for a checkpoint file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path

import hessgpt
from hessgpt import __version__
from hessgpt.data.routing.search import shipped_search
from hessgpt.errors import HessGPTError
from hessgpt.eval import search as search_eval
from hessgpt.eval.bench import (LLMJudge, constant_baseline, format_overlap, format_table, generate_fn, load_items,
                                overlap_report, run_bench)
from hessgpt.eval.report import build_report
from hessgpt.eval.tools import (BASELINES, _read_jsonl, attach_search, evaluate, evaluate_conversations,
                                evaluate_refinement, format_conversations, format_metrics, format_model2,
                                format_refinement, format_search, has_search, is_multiturn_file, load_conversations,
                                load_samples, metrics, model2_summary, tables)
from hessgpt.tools.sandbox import Sandbox
from hessgpt.tools.search import DEFAULT_MIN_COVERAGE, SearchIndex


def default_out(ckpt: str, kind: str) -> Path:
    p = Path(ckpt)
    return (p if p.is_dir() else p.parent) / "eval" / f"{kind}.json"


def save_json(obj: dict, path: str | Path) -> Path:
    """Atomic write (temp file + os.replace), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _header(kind: str, ckpt: str | None) -> dict:
    return {"kind": kind, "checkpoint": None if ckpt is None else str(ckpt),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "hessgpt": __version__}


def load_backend(model1: str, model2: str | None = None, plain: bool = False, code_votes: int = 1):
    from hessgpt.eval.backend import load_backend as load  # lazy: torch (~1.5 s), only commands that load a model

    return load(model1, model2, plain=plain, code_votes=code_votes)


# ---------------------------------------------------------------------------- subcommands


def cmd_ppl(args) -> int:
    import torch  # lazy: torch (~1.5 s), only eval ppl

    from hessgpt.eval.ppl import combine, iter_eval_texts, perplexity  # lazy: torch (~1.5 s), only eval ppl

    if not Path(args.ckpt).exists():
        raise HessGPTError(f"no such checkpoint {args.ckpt}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok = hessgpt.load(args.ckpt, device=device)
    model.eval()
    decode = getattr(tok, "decode", None)
    per_file = {}
    for path in args.data:  # one pass per file; the overall numbers combine them
        texts = iter_eval_texts([path], decode=decode, limit=args.limit)
        per_file[path] = perplexity(model, tok.encode, texts, args.context_len, args.stride, args.batch_size, device,
                                    bos_id=tok.bos_id)   # the tokenizer's own <s>, not a fixed id
    r = combine(list(per_file.values()))
    per_file = {k: v.to_dict() for k, v in per_file.items()} if len(per_file) > 1 else {}
    result = {**_header("ppl", args.ckpt), "data": args.data, **r.to_dict(), "per_file": per_file}
    out = save_json(result, args.out or default_out(args.ckpt, "ppl"))
    print(f"mean NLL {r.mean_nll:.4f} nats/token | perplexity {r.ppl:.3f} | {r.bpb:.4f} bits/byte "
          f"({r.tokens} tokens, {r.bytes} bytes, {r.docs} documents, context {r.context_len}, stride {r.stride})")
    print(f"saved {out}")
    return 0


def cmd_bench(args) -> int:
    """The model's /20 beside the constant-answer baseline; with --train-data, the items that overlap the
    training data's user messages. Without a checkpoint (only --train-data), just the overlap and the baseline."""
    langs = [x.strip() for x in args.lang.split(",") if x.strip()]
    items = load_items(langs, args.prompts)[: args.limit]
    if args.ckpt is None and not args.train_data:
        raise HessGPTError("eval bench needs a checkpoint (or --train-data alone, for the overlap check)")
    judge = None
    if args.judge_url or args.judge_model:
        if not (args.judge_url and args.judge_model):
            raise HessGPTError("--judge-url and --judge-model go together")
        judge = LLMJudge(args.judge_url, args.judge_model)
    overlap = overlap_report(items, args.train_data) if args.train_data else None
    if args.ckpt is not None:
        backend = load_backend(args.ckpt, plain=args.plain)
        result = run_bench(generate_fn(backend, args.max_new_tokens), items, judge=judge)
        result = {**_header("bench", args.ckpt), "langs": langs, "judge": args.judge_model, **result}
    else:
        base = constant_baseline(items)
        result = {**_header("bench", None), "langs": langs, "max": base["max"], "n_items": base["n_items"],
                  "baselines": {"constant": base}}
    if overlap is not None:
        result["overlap"] = overlap
    out = args.out or (default_out(args.ckpt, "bench") if args.ckpt is not None else None)
    out = save_json(result, out) if out else None
    base = result["baselines"]["constant"]
    if args.ckpt is not None:
        print(format_table(result))
        for lang, t in result["per_lang"].items():
            print(f"{lang}: {t['total']:.1f} / {result['max']:g} ({t['n_items']} items) | constant answer "
                  f"{base['per_lang'][lang]['total']:.1f}")
        for key, b in result["bleu"].items():
            print(f"{key}: BLEU {b['bleu']:.1f} chrF {b['chrf']:.1f} ({b['n']} items)")
    else:
        print(f"constant answer: {base['total']:.1f} / {base['max']:g} ({base['n_items']} items)")
    if overlap is not None:
        print(format_overlap(overlap))
    if out:
        print(f"saved {out}")
    return 0


def cmd_tools(args) -> int:
    """Each --data file scored and printed separately (keyed by file stem under "per_data"), plus the combined
    single-turn tables at the top level; multi-turn files go to "conversations" (keyed by stem)."""
    from hessgpt.engine import SamplingParams  # lazy: torch (~1.5 s), only eval tools

    singles, multis = {}, {}
    for path in args.data:
        if not Path(path).exists():
            raise HessGPTError(f"no such data file {path}")
        stem = Path(path).stem
        if is_multiturn_file(path):
            multis[stem] = load_conversations(path, args.limit)
        else:
            singles[stem] = load_samples(path, args.answers if len(args.data) == 1 else None, args.limit)
    backend = load_backend(args.model1, args.model2, code_votes=args.code_votes)
    search_db = _search_for_router(args, backend)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0, seed=0)
    samples = [s for ss in singles.values() for s in ss]
    with_model2 = args.model2 is not None   # model 2's effect measured on the same items (model2 block)
    result = evaluate(backend, samples, params, baselines=not args.no_baselines, model2=with_model2) if samples else \
        {"overall": metrics([]), "per_lang": {}, "skipped": [], "samples": []}
    model = {k: result[k] for k in ("overall", "per_lang", "skipped", "samples")}
    per_data, start = {}, 0
    for stem, ss in singles.items():  # per-file tables from the same rows (no second run)
        rows = slice(start, start + len(ss))
        per_data[stem] = _split(result, rows)
        start += len(ss)
    model2 = {"checkpoint": args.model2, **result["model2"]} if "model2" in result else None
    out_obj = {**_header("tools", args.model1), "model2": model2, "data": args.data, "search_index": search_db,
               "search_min_coverage": args.search_min_coverage if search_db else None,
               "model": model, "baselines": result.get("baselines", {}), "per_data": per_data,
               # kept for readers of the earlier layout (eval report, quickstart)
               "overall": model["overall"], "per_lang": model["per_lang"]}
    if multis:
        out_obj["conversations"] = {}
        for stem, convs in multis.items():
            conv = evaluate_conversations(backend, convs, params)
            if not args.no_baselines:  # the same replay with the constant and regex-router baselines
                conv["baselines"] = {name: {k: v for k, v in evaluate_conversations(cls(), convs, params).items()
                                            if k != "conversations"} for name, cls in BASELINES.items()}
            out_obj["conversations"][stem] = conv
    if args.train_data and samples:
        out_obj["overlap"] = _overlap(result, samples, args.train_data)
    out = save_json(out_obj, args.out or default_out(args.model1, "tools"))
    for stem, table in per_data.items():
        print(f"## {stem}\n{format_metrics(table)}\n")
        if has_search(table):
            print(f"{format_search(table)}\n")
        if "model2" in table:
            print(f"{format_model2(table['model2'])}\n")
    if len(per_data) > 1:
        print(f"## combined\n{format_metrics(result)}\n")
        if has_search(result):
            print(f"{format_search(result)}\n")
        if model2:
            print(f"{format_model2(model2)}\n")
    for stem, conv in out_obj.get("conversations", {}).items():
        print(f"## {stem}\n{format_conversations(conv)}\n")
    if "overlap" in out_obj:
        ov = out_obj["overlap"]
        print(f"## overlap with the training data: {ov['n_overlapping']} of {ov['n_items']} items "
              f"({', '.join(ov['ids']) or 'none'}); without them:\n{format_metrics(ov['clean'])}\n")
    print(f"saved {out}")
    return 0


def _search_for_router(args, backend) -> str | None:
    """The index the router answers `<search>` from: --search-index, else the shipped corpus
    (hessgpt/data/search_corpus, the one the search training data was generated from) indexed into
    <out folder>/search.db, its hits named by page ("fr/canada.md") as in that data. The path used, or
    None when the backend has no router (scripted, plain)."""
    if not hasattr(backend, "router"):
        return None
    if args.search_index:
        attach_search(backend, SearchIndex(args.search_index, min_coverage=args.search_min_coverage))
        return args.search_index
    folder = Path(args.out or default_out(args.model1, "tools")).parent
    attach_search(backend, shipped_search(folder, min_coverage=args.search_min_coverage))
    return str(folder / "search.db")


def _overlap(result: dict, samples: list, train_files: list[str]) -> dict:
    """Which single-turn items' prompts overlap a training user message (hessgpt.eval.bench's rule: exact,
    contained, Jaccard, 8-gram), and the model's and baselines' tables over the other ("clean") items."""
    items = [{"id": s.id, "lang": s.lang, "category": s.category, "messages": s.messages} for s in samples]
    ov = overlap_report(items, train_files)
    bad = set(ov["ids"])

    def clean(res):
        return _without_samples(tables([r for r in res["samples"] if r["id"] not in bad]))

    ov["clean"] = clean(result)
    ov["clean"]["baselines"] = {k: clean(v) for k, v in result.get("baselines", {}).items()}
    return ov


def _without_samples(t: dict) -> dict:
    return {k: v for k, v in t.items() if k != "samples"}


def _split(result: dict, rows: slice) -> dict:
    """The tables of one file: model and baselines recomputed over that file's rows."""
    out = _without_samples(tables(result["samples"][rows]))
    if "model2" in result:
        out["model2"] = model2_summary(result["samples"][rows])
    out["baselines"] = {k: _without_samples(tables(v["samples"][rows])) for k, v in result.get("baselines", {}).items()}
    return out


def cmd_refine(args) -> int:
    """Model 2 alone under the router's policy, on mutated dev/test programs (eval.tools.evaluate_refinement)."""
    from hessgpt.engine import Engine  # lazy: torch (~1.5 s), only eval refine
    from hessgpt.tools.router import RouterConfig, ToolRouter  # lazy: torch via hessgpt.engine, only eval refine

    if not Path(args.model2).exists():
        raise HessGPTError(f"no such checkpoint {args.model2}")
    records = []
    for path in args.data:
        if not Path(path).exists():
            raise HessGPTError(f"no such data file {path}")
        records += _read_jsonl(Path(path))
    model, tok = hessgpt.load(args.model2)
    engine = Engine(model, tok)
    with Sandbox() as sb:
        router = ToolRouter(engine, sb, model2=engine, config=RouterConfig(check_operands=args.check_operands))
        result = evaluate_refinement(router, records, seed=args.seed, limit=args.limit, progress=True)
    out = save_json({**_header("refine", args.model2), "data": args.data, **result},
                    args.out or default_out(args.model2, "refine"))
    print(format_refinement(result))
    print(f"saved {out}")
    return 0


def cmd_report(args) -> int:
    paths = build_report(args.paths, args.out, labels=args.labels.split(",") if args.labels else None)
    for p in paths:
        print(f"wrote {p}")
    return 0


def cmd_search(args) -> int:
    res = search_eval.evaluate(args.corpus or search_eval.CORPUS, args.sets or search_eval.DEFAULT_SETS)
    print(search_eval.format_table(res))
    if not args.no_floor:
        res["floor"] = search_eval.floor_on_conversations()
        print(f"\nrelevance floor on the search conversations' queries (top {res['floor']['k']}):")
        print(search_eval.format_floor(res["floor"]))
    if args.out:
        print(f"saved {save_json({**_header('search', None), **res}, args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hessgpt eval", description="Evaluate HessGPT checkpoints.")
    sub = p.add_subparsers(dest="cmd", required=True)

    q = sub.add_parser("ppl", help="perplexity and bits per byte on held-out text (strided window)")
    q.add_argument("ckpt")
    q.add_argument("--data", nargs="+", required=True, help=".txt/.jsonl/.json/.parquet(.gz) text, .npy/.bin token shards, or folders")
    q.add_argument("--context-len", type=int, default=None, help="window length (default: the model's context)")
    q.add_argument("--stride", type=int, default=None, help="window step (default: context/2)")
    q.add_argument("--batch-size", type=int, default=8)
    q.add_argument("--limit", type=int, default=None, help="at most this many documents per file")
    q.add_argument("--device", default=None)
    q.add_argument("--out", default=None, help="result JSON (default CKPT/eval/ppl.json)")
    q.set_defaults(func=cmd_ppl)

    b = sub.add_parser("bench", help="the /20 benchmark (factual, conversation, instruction, creativity, robustness)")
    b.add_argument("ckpt", nargs="?", default=None, help="checkpoint (omit with --train-data for the overlap check alone)")
    b.add_argument("--lang", default="fr,en", help="comma-separated: fr,en")
    b.add_argument("--prompts", default=None, help="a JSONL prompt set instead of the shipped one")
    b.add_argument("--limit", type=int, default=None)
    b.add_argument("--max-new-tokens", type=int, default=256)
    b.add_argument("--plain", action="store_true", help="model alone, without the tool loop (default: dual-model router)")
    b.add_argument("--judge-url", default=None, help="OpenAI-compatible endpoint of an LLM judge (optional)")
    b.add_argument("--judge-model", default=None)
    b.add_argument("--train-data", nargs="+", default=None, metavar="FILE",
                   help="JSONL conversation files (e.g. the routing train split, chat data): report the bench items "
                        "whose prompts or references overlap their user messages")
    b.add_argument("--out", default=None, help="result JSON (default CKPT/eval/bench.json)")
    b.set_defaults(func=cmd_bench)

    t = sub.add_parser("tools", help="routing, execution, answers and function calls of the dual model")
    t.add_argument("--model1", required=True)
    t.add_argument("--model2", default=None, help="model 2 checkpoint: the JSON gets a \"model2\" block (asked, changed, "
                   "fixed, broke; exact answers and execution with and without model 2, on the same items)")
    t.add_argument("--data", nargs="+", required=True,
                   help="JSONL files (each scored separately): conversation format, OOD single/multi-turn, GSM8K, BFCL or xLAM")
    t.add_argument("--no-baselines", action="store_true", help="skip the constant and regex-router baselines")
    t.add_argument("--train-data", nargs="+", default=None,
                   help="training JSONL files: list the items whose prompt overlaps a training user message (the "
                        "`eval bench` rule) and score the model and baselines again without them (\"clean\")")
    t.add_argument("--answers", default=None, help="BFCL possible-answer file (default: DATA_possible_answer.jsonl)")
    t.add_argument("--limit", type=int, default=None, help="at most this many samples per file")
    t.add_argument("--max-new-tokens", type=int, default=512)
    t.add_argument("--code-votes", type=int, default=1, metavar="K",
                   help="self-consistency: model 1 writes K code blocks a call (K-1 sampled), the most printed result wins")
    t.add_argument("--search-index", default=None, metavar="DB",
                   help="a `hessgpt search build` index answering the model's <search> blocks (default: the shipped "
                        "corpus hessgpt/data/search_corpus, indexed beside the result JSON)")
    t.add_argument("--search-min-coverage", type=float, default=DEFAULT_MIN_COVERAGE, metavar="F",
                   help=f"the index's relevance floor (default {DEFAULT_MIN_COVERAGE}; 0: off, every OR-fallback hit)")
    t.add_argument("--out", default=None, help="result JSON (default MODEL1/eval/tools.json)")
    t.set_defaults(func=cmd_tools)

    f = sub.add_parser("refine", help="model 2 under the router's policy on mutated dev/test programs (no model 1)")
    f.add_argument("--model2", required=True)
    f.add_argument("--data", nargs="+", required=True, help="routing JSONL (dev/test splits: never model 2's training data)")
    f.add_argument("--limit", type=int, default=None, help="at most this many programs")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--check-operands", action="store_true",
                   help="the policy also asks model 2 when a number of the request is missing from the code")
    f.add_argument("--out", default=None, help="result JSON (default MODEL2/eval/refine.json)")
    f.set_defaults(func=cmd_refine)

    s = sub.add_parser("search", help="recall@1/@5 of the local search index on a labelled question set, with and without stems")
    s.add_argument("--corpus", default=None, help="corpus folder (default: the shipped hessgpt/data/search_corpus/docs)")
    s.add_argument("--sets", nargs="+", default=None, help="labelled JSONL files (default: prompts/search_{fr,en}.jsonl)")
    s.add_argument("--out", default=None, help="result JSON (optional)")
    s.add_argument("--no-floor", action="store_true",
                   help="skip the relevance-floor table on the search conversations (generated from the shipped corpus)")
    s.set_defaults(func=cmd_search)

    r = sub.add_parser("report", help="Markdown + JSON + plots comparing runs/checkpoints")
    r.add_argument("paths", nargs="+", help="run folders (metrics.jsonl) and/or checkpoint folders (eval/*.json)")
    r.add_argument("--out", required=True)
    r.add_argument("--labels", default=None, help="comma-separated names for the paths (default: folder names)")
    r.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
