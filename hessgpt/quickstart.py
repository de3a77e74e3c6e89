"""`hessgpt quickstart [--out DIR]`: the whole dual-model system at small scale on a CPU (what `make demo` runs).

    hessgpt quickstart                        # train, evaluate, report, then serve on http://127.0.0.1:8000/
    hessgpt quickstart --no-serve             # stop after the report
    hessgpt quickstart --smoke --no-serve     # the same chain with a tiny budget (tests, CI)

Offline, from data HessGPT ships or generates:
1. `hessgpt pipeline recipes/tiny-cpu.yaml --workdir DIR`: verified FR/EN routing conversations (with greetings
   and facts answered without code), the tokenizer, model 1 (the assistant that decides when to write code),
   model 2 (the code specialist, pretrained on HessGPT's own Python sources, LoRA, merge). Finished stages are
   skipped, an interrupted training stage resumes from its `last/` checkpoint.
2. Evaluations, each skipped when its JSON exists, each beside a constant-answer and a regex-router baseline:
   `eval tools` (routing precision/recall, execution, maths and algo/data exact results, negatives without code)
   on the routing generator's frozen test split (templates, entities and numbers never trained on), its dev
   split, the hand-written out-of-distribution prompts and conversations of hessgpt/eval/prompts, and GSM8K
   fr/en; `eval bench` on a few items; `eval ppl` of model 1 on held-out conversations and of model 2 on code.
3. `hessgpt eval report` (Markdown, JSON, loss and bench plots) in DIR/report.
4. A stage summary (seconds per stage, key metrics), also saved as DIR/quickstart.json.
5. `hessgpt serve --model1 DIR/model1` (web chat page + OpenAI API), unless --no-serve; with `--model2 DIR/model2`
   only when model 2 fixed more items than it broke on the dev split (`model2_pays`; at this scale it does not).

Ctrl-C at any point, then the same command again, continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hessgpt.errors import HessGPTError
from hessgpt.eval import cli as eval_cli
from hessgpt.eval.bench import load_items

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Budget:
    """How much evaluation a run does (the training budget is the recipe's)."""
    recipe: str
    tools_limit: int | None    # routing dev / test conversations scored by `eval tools` (None: all)
    ood_limit: int | None      # items per public out-of-distribution file (None: all)
    gsm8k_limit: int | None    # GSM8K items per language (None: all 20)
    tools_max_new: int         # tokens per generation turn in `eval tools`
    bench_limit: int           # benchmark items (FR + EN)
    bench_max_new: int
    ppl_limit: int             # documents for each perplexity


FULL = Budget("recipes/tiny-cpu.yaml", tools_limit=300, ood_limit=None, gsm8k_limit=None, tools_max_new=160,
              bench_limit=20, bench_max_new=96, ppl_limit=200)
SMOKE = Budget("recipes/smoke-cpu.yaml", tools_limit=6, ood_limit=3, gsm8k_limit=2, tools_max_new=40,
               bench_limit=2, bench_max_new=24, ppl_limit=8)

PROMPTS = REPO / "hessgpt" / "eval" / "prompts"
OOD = [PROMPTS / "tools_ood_fr.jsonl", PROMPTS / "tools_ood_en.jsonl", PROMPTS / "tools_ood_multiturn.jsonl"]
GSM8K = [REPO / "tests" / "fixtures" / "eval" / "gsm8k_test_en.jsonl", REPO / "tests" / "fixtures" / "eval" / "gsm8k_test_fr.jsonl"]


def _fmt(x, pct=False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else (f"{x:.2f}" if isinstance(x, float) else str(x))


def _load_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _save_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _code_val_shards(shards_dir: Path) -> list[str]:
    files = sorted(str(p) for p in shards_dir.glob("val-*.bin")) + sorted(str(p) for p in shards_dir.glob("val-*.npy"))
    if not files:
        raise HessGPTError(f"no validation shards (val-*.bin) in {shards_dir}")
    return files


def bench_subset(path: Path, n: int) -> Path:
    """n shipped bench items, half French half English, taking the categories in turn (its --limit takes the
    first n, all French)."""
    picked = []
    for lang in ("fr", "en"):
        by_cat: dict[str, list] = {}
        for it in load_items([lang]):
            by_cat.setdefault(it["category"], []).append(it)
        queues, k = list(by_cat.values()), (n + 1) // 2 if lang == "fr" else n // 2
        while k and any(queues):
            for q in queues:
                if q and k:
                    picked.append(q.pop(0))
                    k -= 1
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(json.dumps(it, ensure_ascii=False) + "\n" for it in picked), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _tools(m1: Path, m2: Path, data: list, limit: int | None, max_new: int, out: Path) -> list[str]:
    argv = ["tools", "--model1", str(m1), "--model2", str(m2), "--data", *map(str, data),
            "--max-new-tokens", str(max_new), "--out", str(out)]
    return argv + (["--limit", str(limit)] if limit else [])


def evals(out: Path, b: Budget) -> list[tuple[str, Path, list[str]]]:
    """(name, result JSON, `hessgpt eval` argv) for every evaluation of the quickstart.

    `eval tools` on four sets, each with the constant-answer and regex-router baselines: the routing generator's
    frozen test split (templates, entities and numbers never in train or dev: tools.json, the one `eval report`
    shows), its dev split (what recipes are tuned on), the hand-written public out-of-distribution set with
    its multi-turn conversations, and GSM8K fr/en. An item too long for the context is a counted skip."""
    m1, m2 = out / "model1", out / "model2"
    routing, ev = out / "routing", m1 / "eval"
    return [
        ("eval tools test", ev / "tools.json", _tools(m1, m2, [routing / "test.jsonl"], b.tools_limit, b.tools_max_new, ev / "tools.json")),
        ("eval tools dev", ev / "tools-dev.json", _tools(m1, m2, [routing / "val.jsonl"], b.tools_limit, b.tools_max_new, ev / "tools-dev.json")),
        ("eval tools ood", ev / "tools-ood.json", _tools(m1, m2, OOD, b.ood_limit, b.tools_max_new, ev / "tools-ood.json") +
         ["--train-data", str(routing / "train.jsonl"), str(out / "chat-data" / "train.jsonl")]),
        ("eval tools gsm8k", ev / "tools-gsm8k.json", _tools(m1, m2, GSM8K, b.gsm8k_limit, b.tools_max_new, ev / "tools-gsm8k.json")),
        ("eval bench", ev / "bench.json",
         ["bench", str(m1), "--prompts", str(bench_subset(out / "eval-data" / "bench.jsonl", b.bench_limit)),
          "--max-new-tokens", str(b.bench_max_new), "--out", str(ev / "bench.json"),
          "--train-data", str(routing / "train.jsonl"), str(out / "chat-data" / "train.jsonl")]),
        ("eval ppl model1", ev / "ppl.json",
         ["ppl", str(m1), "--data", str(routing / "val.jsonl"), "--limit", str(b.ppl_limit), "--out", str(ev / "ppl.json")]),
        ("eval ppl model2", m2 / "eval" / "ppl.json",
         ["ppl", str(m2), "--data", *_code_val_shards(out / "code-shards"), "--limit", str(b.ppl_limit),
          "--out", str(m2 / "eval" / "ppl.json")]),
    ]


def tools_breakdown(result: dict) -> dict:
    """`eval tools` rows per category (maths, algo, data, web, negative, gsm8k) and language: how many, how many
    with code, whose code ran, whose final answer states the reference result."""
    table: dict[str, dict] = {}
    for r in result.get("samples", []):
        cat = r.get("category") or r["id"].split(":", 1)[-1].split("-", 1)[0]
        t = table.setdefault(f"{cat}/{r['lang']}", {"n": 0, "coded": 0, "ran_ok": 0, "answer_correct": 0, "skipped": 0})
        t["n"] += 1
        t["coded"] += bool(r["coded"])
        t["ran_ok"] += bool(r["results"]) and all(x == "ok" for x in r["results"])
        t["answer_correct"] += bool(r["answer_correct"])
        t["skipped"] += bool(r.get("skipped"))
    return dict(sorted(table.items()))


def _tools_metric(tables: dict) -> str:
    parts = []
    for lang, m in sorted(tables.get("per_lang", {}).items()):
        r = m["routing"]
        parts.append(f"{lang}: P {_fmt(r['precision'])} R {_fmt(r['recall'])} maths {_ratio(m['maths'])} "
                     f"algo+data {_ratio(m['algo_data'])} neg-digits no code {_ratio(m['negatives_with_digits_no_code'], 'rate')}")
    return "; ".join(parts)


def _ratio(t: dict, key: str = "exact_match") -> str:
    return f"{t['right']}/{t['n']}" if t.get("n") else "-"


def _metric(name: str, result: dict) -> str:
    if name.startswith("eval tools"):
        text = _tools_metric(result)
        regex = result.get("baselines", {}).get("regex")
        if regex:
            text += " | regex router: " + _tools_metric(regex)
        ov = result.get("overlap")
        if ov:
            text += f" | {ov['n_overlapping']}/{ov['n_items']} prompts overlap the training data; without them: " + \
                _tools_metric(ov["clean"])
        m2 = result.get("model2")
        if m2:
            text += (f" | model 2: asked {m2['calls']}, changed {m2['changed']}, fixed {m2['fixed']}, broke {m2['broke']}; "
                     f"exact {_fmt(m2['answer_correct_without'], True)} without -> {_fmt(m2['answer_correct_with'], True)} with")
        for stem, c in result.get("conversations", {}).items():
            o = c["overall"]
            text += f" | {stem}: turns {o['turns_right']}/{o['turns']}, conversations {o['conversations_right']}/{o['conversations']}"
        return text
    if name == "eval bench":
        text = ", ".join(f"{lang} {t['total']:.1f}/{result.get('max', 20):g}" for lang, t in result.get("per_lang", {}).items())
        const = result.get("baselines", {}).get("constant")
        if const:
            text += " | constant answer: " + ", ".join(f"{lang} {t['total']:.1f}" for lang, t in const.get("per_lang", {}).items())
        ov = result.get("overlap")
        if ov:
            text += f" | {ov['n_overlapping']}/{ov['n_items']} items overlap the training data"
        return text
    if name.startswith("eval ppl"):
        return f"ppl {result['ppl']:.2f}, {result['bpb']:.3f} bits/byte"
    return ""


def run(out: Path, b: Budget) -> dict:
    from hessgpt.train.pipeline import Pipeline  # lazy: torch via hessgpt.device (~1.8 s), not for --help

    recipe = REPO / b.recipe
    if not recipe.exists():
        raise HessGPTError(f"no recipe {recipe} (quickstart runs from a source checkout of HessGPT)")
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "quickstart.json"
    summary = _load_json(summary_path) if summary_path.exists() else {}
    summary.update(recipe=str(recipe), out=str(out))
    steps = summary.setdefault("evals", {})

    # 1. training: the pipeline skips finished stages and resumes interrupted ones
    pipe = Pipeline(str(recipe), str(out))
    t0 = time.time()
    pipe.run()
    if not all(pipe.done(s) for s in pipe.stages):
        raise KeyboardInterrupt  # a stage stopped on a signal: its state is saved
    print(f"quickstart: pipeline finished ({time.time() - t0:.0f} s this run)", flush=True)

    # 2. evaluations, skipped when their JSON exists
    for name, path, argv in evals(out, b):
        if path.exists():
            print(f"quickstart: {name}: already done ({path})", flush=True)
        else:
            print(f"quickstart: {name}: hessgpt eval {' '.join(argv)}", flush=True)
            t = time.time()
            code = eval_cli.main(argv)
            if code:
                raise HessGPTError(f"{name} failed with exit code {code}")
            steps[name] = {"seconds": round(time.time() - t, 1), "command": "hessgpt eval " + " ".join(argv)}
            _save_json(summary_path, summary)
        result = _load_json(path)
        steps.setdefault(name, {})["metrics"] = _metric(name, result)
        if name.startswith("eval tools"):
            steps[name]["by_category"] = tools_breakdown(result)
            if result.get("model2"):
                steps[name]["model2"] = {k: v for k, v in result["model2"].items() if k != "checkpoint"}

    # 3. the report (cheap: always rebuilt from the JSONs)
    report = out / "report"
    # the final models are merges (no training log): the training stages come as their own columns
    runs = ["model1", "model2"] + [s.name for s in pipe.stages if s.kind in ("pretrain", "sft")]
    eval_cli.main(["report", *(str(out / n) for n in runs), "--labels", ",".join(runs), "--out", str(report)])

    # 4. the summary
    stages = _load_json(out / "pipeline.json").get("stages", {})
    summary["stages"] = {s.name: stages.get(s.name, {}).get("seconds") for s in pipe.stages}
    kind = {s.name: s.kind for s in pipe.stages}
    train_s = sum(v or 0 for k, v in summary["stages"].items() if kind[k] in ("init", "pretrain", "sft", "merge"))
    data_s = sum(v or 0 for v in summary["stages"].values()) - train_s
    eval_s = sum(v.get("seconds") or 0 for v in steps.values())
    summary["totals"] = {"data_s": round(data_s, 1), "train_s": round(train_s, 1), "eval_s": round(eval_s, 1),
                         "train_and_eval_min": round((train_s + eval_s) / 60, 1)}
    summary["report"] = str(report / "report.md")
    _save_json(summary_path, summary)
    print_summary(summary)
    return summary


def model2_table(blocks: dict[str, dict]) -> str:
    """Model 2's effect per evaluation, measured on the same items in the same run (eval tools' model2 block):
    exact answers and execution success without and with it, how often it was asked, changed the result,
    fixed a wrong answer, broke a right one."""
    lines = ["model 2 (same items)      exact without -> with   executable without -> with   asked changed fixed broke"]
    for name, b in blocks.items():
        lines.append(f"{name:<25} {_fmt(b.get('answer_correct_without'), True):>7} -> {_fmt(b.get('answer_correct_with'), True):<7}"
                     f"       {_fmt(b.get('executable_without'), True):>7} -> {_fmt(b.get('executable_with'), True):<7}"
                     f"           {b['calls']:>5} {b['changed']:>7} {b['fixed']:>5} {b['broke']:>5}")
    return "\n".join(lines)


def print_summary(summary: dict) -> None:
    print("\nstage                     seconds  metrics")
    for name, s in summary["stages"].items():
        print(f"{name:<25} {'-' if s is None else f'{s:.0f}':>7}")
    for name, e in summary["evals"].items():
        sec = e.get("seconds")
        print(f"{name:<25} {'-' if sec is None else f'{sec:.0f}':>7}  {e.get('metrics', '')}")
    m2 = {name: e["model2"] for name, e in summary["evals"].items() if e.get("model2")}
    if m2:
        print("\n" + model2_table(m2))
    t = summary["totals"]
    print(f"data {t['data_s']:.0f} s, training {t['train_s']:.0f} s, evaluation {t['eval_s']:.0f} s "
          f"(training + evaluation {t['train_and_eval_min']} min); report: {summary['report']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hessgpt quickstart", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/quickstart", help="working folder (default runs/quickstart)")
    p.add_argument("--smoke", action="store_true", help="tiny budget (recipes/smoke-cpu.yaml, few eval items): a check, not a model")
    p.add_argument("--no-serve", action="store_true", help="do not start `hessgpt serve` at the end")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out).resolve()
    try:
        run(out, SMOKE if args.smoke else FULL)
    except KeyboardInterrupt:
        print(f"\nquickstart: interrupted; run the same command again to continue (work so far is in {out})", file=sys.stderr)
        return 130
    m1, m2 = out / "model1", out / "model2"
    use_m2, why = model2_pays(out)
    print(f"\nquickstart: model 2 {'on' if use_m2 else 'off'} by default ({why})", flush=True)
    with_m2 = f" --model2 {m2}" if use_m2 else ""
    print(f"\ntry it:\n  hessgpt ask --model1 {m1}{with_m2} --prompt \"Calcule 15 * 23\"\n"
          f"  hessgpt chat --model1 {m1}{with_m2}", flush=True)
    if args.no_serve:
        return 0
    from hessgpt.serve import app  # lazy: torch (~1.8 s), only when it serves

    print(f"quickstart: serving on http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    return app.main(["--model1", str(m1), *(["--model2", str(m2)] if use_m2 else []), "--host", args.host,
                     "--port", str(args.port)]) or 0


def model2_pays(out: Path) -> tuple[bool, str]:
    """Whether the quickstart serves and suggests model 2: only if, on the dev split (what recipes are tuned
    on; the test split only reports), it fixed more items than it broke in the same run (eval tools' model2
    block). At the tiny-cpu scale it does not (docs/tools.md, "Model 2"); the numbers decide, not the plan."""
    path = out / "model1" / "eval" / "tools-dev.json"
    block = _load_json(path).get("model2") if path.exists() else None
    if not block:
        return False, f"no model2 block in {path}"
    text = (f"dev split: fixed {block['fixed']}, broke {block['broke']}, asked {block['calls']} times; exact answers "
            f"{_fmt(block['answer_correct_without'], True)} without, {_fmt(block['answer_correct_with'], True)} with")
    return block["fixed"] > block["broke"], text
