"""`hessgpt eval report RUN_OR_CKPT... --out DIR`: checkpoints side by side, in Markdown + JSON + plots.

For each path it reads
- the training log `metrics.jsonl` (lines {"step", "loss", "val_loss"?, "tokens"?, ...}) in the folder or its
  parent (a checkpoint inside a run folder);
- the saved eval results `eval/*.json` (ppl.json, bench.json, tools.json: see hessgpt.eval.cli) in the folder,
  or else in its last sub-folder that has some (run/final/eval/...).

and writes DIR/report.md, DIR/report.json, DIR/loss.png (loss curves) and DIR/bench.png (category bars).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from hessgpt.errors import HessGPTError
from hessgpt.eval.bench import CATEGORIES, CATEGORY_LABELS


@dataclass
class Entry:
    label: str
    path: str
    metrics: list[dict] = field(default_factory=list)   # training log lines
    evals: dict[str, dict] = field(default_factory=dict)  # kind -> result JSON


def read_metrics(path: Path) -> list[dict]:
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):
                continue  # a run still writing its last line
            raise HessGPTError(f"{path}:{i}: invalid JSON") from None
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def _eval_dir(p: Path) -> Path | None:
    if (p / "eval").is_dir() and any((p / "eval").glob("*.json")):
        return p / "eval"
    subs = sorted(d / "eval" for d in p.iterdir() if d.is_dir() and (d / "eval").is_dir() and any((d / "eval").glob("*.json")))
    return subs[-1] if subs else None


def collect(path: str, label: str | None = None) -> Entry:
    p = Path(path)
    if not p.is_dir():
        raise HessGPTError(f"{path} is not a run or checkpoint folder")
    label = label or (f"{p.parent.name}/{p.name}" if p.name in ("final", "last", "best") else p.name)
    e = Entry(label=label, path=str(p))
    for m in (p / "metrics.jsonl", p.parent / "metrics.jsonl"):
        if m.is_file():
            e.metrics = read_metrics(m)
            break
    d = _eval_dir(p)
    if d is not None:
        for f in sorted(d.glob("*.json")):
            try:
                obj = json.loads(f.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                raise HessGPTError(f"{f}: invalid JSON") from None
            e.evals[obj.get("kind", f.stem)] = obj
    if not e.metrics and not e.evals:
        raise HessGPTError(f"{path}: no metrics.jsonl and no eval/*.json results to report")
    return e


# ---------------------------------------------------------------------------- plots


def plot_losses(entries: list[Entry], out: Path) -> Path | None:
    runs = [e for e in entries if any("loss" in r for r in e.metrics)]
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, e in enumerate(runs):
        color = f"C{i % 10}"
        tr = [(r["step"], r["loss"]) for r in e.metrics if r.get("loss") is not None]
        va = [(r["step"], r["val_loss"]) for r in e.metrics if r.get("val_loss") is not None]
        if tr:
            ax.plot(*zip(*tr), color=color, lw=1.2, label=f"{e.label} train")
        if va:
            ax.plot(*zip(*va), color=color, lw=1.5, ls="--", marker="o", ms=3, label=f"{e.label} val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_fig(fig, out)
    return out


def plot_bench(entries: list[Entry], out: Path) -> Path | None:
    runs = [e for e in entries if "bench" in e.evals]
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = list(CATEGORIES)
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, e in enumerate(runs):
        c = e.evals["bench"]["categories"]
        # each bar is the share of the category's points (categories have different maxima)
        vals = [(c[k]["score"] or 0) / c[k]["max"] for k in cats]
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(cats))]
        ax.bar(xs, vals, width, label=f"{e.label} ({e.evals['bench']['total']:.1f}/20)")
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels([f"{CATEGORY_LABELS[k]}\n/{CATEGORIES[k]:g}" for k in cats], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of the category's points")
    ax.set_title("Benchmark /20 by category")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save_fig(fig, out)
    return out


# ---------------------------------------------------------------------------- tables


def _fmt(x, digits=3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in r) + " |" for r in rows]


def summarize(e: Entry) -> dict:
    """The numbers of one entry that the report compares."""
    s: dict = {"label": e.label, "path": e.path}
    if e.metrics:
        last = e.metrics[-1]
        vals = [r["val_loss"] for r in e.metrics if r.get("val_loss") is not None]
        s["train"] = {"steps": last.get("step"), "tokens": last.get("tokens"), "final_loss": last.get("loss"),
                      "final_val_loss": vals[-1] if vals else None, "best_val_loss": min(vals) if vals else None}
    if "bench" in e.evals:
        b = e.evals["bench"]
        s["bench"] = {"total": b["total"], "max": b.get("max", 20),
                      "categories": {k: v["score"] for k, v in b["categories"].items()},
                      "per_lang": {k: v["total"] for k, v in b.get("per_lang", {}).items()},
                      "bleu": b.get("bleu", {})}
        base = b.get("baselines", {}).get("constant")
        if base:
            s["bench"]["constant"] = {"total": base["total"],
                                      "per_lang": {k: v["total"] for k, v in base.get("per_lang", {}).items()}}
        if "overlap" in b:
            s["bench"]["overlap"] = {"n_overlapping": b["overlap"]["n_overlapping"], "ids": b["overlap"]["ids"],
                                     "train_data": b["overlap"]["train_data"]}
    if "ppl" in e.evals:
        p = e.evals["ppl"]
        s["ppl"] = {k: p.get(k) for k in ("data", "mean_nll", "ppl", "bpb", "tokens")}
    if "tools" in e.evals:
        o = e.evals["tools"]["overall"]
        s["tools"] = {"routing_precision": o["routing"]["precision"], "routing_recall": o["routing"]["recall"],
                      "execution_success": o["execution"]["success_rate"], "answer_em": o["answer"]["exact_match"],
                      "function_call_em": o["function_call"]["exact_match"]}
    return s


def build_report(paths: list[str], out_dir: str, labels: list[str] | None = None) -> list[Path]:
    if labels and len(labels) != len(paths):
        raise HessGPTError(f"{len(labels)} labels for {len(paths)} paths")
    entries = [collect(p, labels[i] if labels else None) for i, p in enumerate(paths)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = [summarize(e) for e in entries]
    written = []

    md = ["# HessGPT evaluation report", ""]
    loss_png = plot_losses(entries, out / "loss.png")
    if any("train" in s for s in summaries):
        md += ["## Training", ""]
        md += _table(["run", "steps", "tokens", "final loss", "final val loss", "best val loss"],
                     [[s["label"], *(s["train"][k] for k in ("steps", "tokens", "final_loss", "final_val_loss", "best_val_loss"))]
                      for s in summaries if "train" in s])
        md += ["", "![loss curves](loss.png)", ""] if loss_png else [""]
    bench_png = plot_bench(entries, out / "bench.png")
    if any("bench" in s for s in summaries):
        bs = [s for s in summaries if "bench" in s]
        md += ["## Benchmark /20", ""]
        rows = [[CATEGORY_LABELS[k], *(f"{_fmt(s['bench']['categories'][k], 1)} / {v:g}" for s in bs)]
                for k, v in CATEGORIES.items()]
        rows.append(["**Total**", *(f"**{s['bench']['total']:.1f} / {s['bench']['max']:g}**" for s in bs)])
        for lang in sorted({lang for s in bs for lang in s["bench"]["per_lang"]}):
            rows.append([f"total ({lang})", *(_fmt(s["bench"]["per_lang"].get(lang), 1) for s in bs)])
        if any("constant" in s["bench"] for s in bs):
            rows.append(["constant-answer baseline", *(
                f"{s['bench']['constant']['total']:.1f} / {s['bench']['max']:g}" if "constant" in s["bench"] else "–"
                for s in bs)])
        if any("overlap" in s["bench"] for s in bs):
            rows.append(["items overlapping training data", *(
                str(s["bench"]["overlap"]["n_overlapping"]) if "overlap" in s["bench"] else "–" for s in bs)])
        for key in sorted({k for s in bs for k in s["bench"]["bleu"]}):
            rows.append([f"BLEU / chrF {key}", *(
                "–" if key not in s["bench"]["bleu"] else
                f"{_fmt(s['bench']['bleu'][key]['bleu'], 1)} / {_fmt(s['bench']['bleu'][key]['chrf'], 1)}" for s in bs)])
        md += _table(["category", *(s["label"] for s in bs)], rows)
        md += ["", "![benchmark](bench.png)", ""] if bench_png else [""]
        for s in bs:
            ov = s["bench"].get("overlap")
            if ov and ov["ids"]:
                md += [f"{s['label']}: bench items overlapping {', '.join(map(str, ov['train_data']))}: "
                       f"{', '.join(ov['ids'])}", ""]
    if any("ppl" in s for s in summaries):
        md += ["## Perplexity", ""]
        md += _table(["checkpoint", "data", "NLL (nats/token)", "perplexity", "bits/byte", "tokens"],
                     [[s["label"], ", ".join(map(str, s["ppl"]["data"] or [])), s["ppl"]["mean_nll"], s["ppl"]["ppl"],
                       s["ppl"]["bpb"], s["ppl"]["tokens"]] for s in summaries if "ppl" in s])
        md += [""]
    if any("tools" in s for s in summaries):
        ts = [s for s in summaries if "tools" in s]
        md += ["## Tool use", ""]
        md += _table(["metric", *(s["label"] for s in ts)],
                     [[k.replace("_", " "), *(s["tools"][k] for s in ts)] for k in ts[0]["tools"]])
        md += [""]

    written.append(_atomic_write(out / "report.md", "\n".join(md)))
    written.append(_atomic_write(out / "report.json", json.dumps({"entries": summaries}, ensure_ascii=False, indent=1)))
    written += [p for p in (loss_png, bench_png) if p]
    return written


def _save_fig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def _atomic_write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
