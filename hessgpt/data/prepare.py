"""`hessgpt data prepare`: a recipe -> train.jsonl, val.jsonl and a report.

For each source, in recipe order: read rows -> adapter -> validate -> language ID -> length filter ->
exact/near dedup (across all sources read so far) -> keep, until the source's target is reached.
Then each source is shuffled by the seed, cut to its share of the mix, and split into a validation
holdout and train; the splits are shuffled again and written. Dedup runs before the split, so no
text (or near copy) is in both train and val. Every record is either kept or counted under a skip
reason; nothing depends on time or hash randomization, so two runs give byte-identical files.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import os
import random
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from hessgpt.data.adapters import get_adapter
from hessgpt.data.conversation import Conversation, Skip, validate, write_jsonl
from hessgpt.data.dedup import Deduper
from hessgpt.data.recipe import Recipe, SourceSpec, iter_rows
from hessgpt.errors import HessGPTError


@dataclass
class SourceReport:
    name: str
    dataset: str
    path: str
    records: int = 0  # rows read, readable or not
    converted: int = 0  # conversations the adapter produced
    kept: int = 0  # passed every filter
    train: int = 0
    val: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    examples: dict = field(default_factory=dict)  # reason -> first few "where: detail" strings
    languages: Counter = field(default_factory=Counter)  # of train + val

    def skip(self, s: Skip, where: str = "") -> None:
        self.skipped[s.reason] += 1
        ex = self.examples.setdefault(s.reason, [])
        if len(ex) < 3:
            ex.append(f"{where}: {s.detail}".strip(": ") if where else s.detail)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "dataset": self.dataset, "path": self.path,
            "records": self.records, "converted": self.converted, "kept": self.kept,
            "train": self.train, "val": self.val,
            "unused": self.kept - self.train - self.val,  # kept but beyond the source's share of the mix
            "skipped": dict(sorted(self.skipped.items())), "skip_examples": dict(sorted(self.examples.items())),
            "languages": dict(sorted(self.languages.items())),
        }  # fmt: skip


# Language ID picks among widely written languages: with all 97 of py3langid's, short or code-heavy
# French/English text is often labelled Latin, Pidgin or "no language" (zxx).
ID_LANGUAGES = ("en fr de es it pt nl ru zh ja ko ar pl tr sv cs uk vi id hi ca ro da fi no hu el he fa th").split()
_FENCE = re.compile(r"```.*?(```|$)", flags=re.S)


@functools.lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE)  # its own instance: py3langid's global stays as is
    ident.set_languages(ID_LANGUAGES)
    return ident


def detect_language(text: str) -> str:
    """ISO 639-1 code of the text's language (code blocks removed; the first 4000 characters)."""
    prose = _FENCE.sub(" ", text).strip() or text
    return _identifier().classify(prose[:4000])[0]


def _check_options(spec: SourceSpec, adapter) -> None:
    try:
        inspect.signature(adapter.convert).bind({}, **spec.options)
    except TypeError as e:
        raise HessGPTError(f"source {spec.name!r}: bad options {spec.options} for adapter {adapter.name!r}: {e}") from None


class Measurer:
    """Length of a conversation: tokens of `Tokenizer.render` when a tokenizer is given, else characters."""

    def __init__(self, recipe: Recipe, tokenizer=None):
        self.tokenizer = tokenizer
        self.unit = "tokens" if tokenizer is not None else "chars"
        self.limit = recipe.max_tokens if tokenizer is not None else recipe.char_limit

    def __call__(self, conv: Conversation) -> int:
        if self.tokenizer is None:
            return conv.num_chars()
        try:
            ids, _mask = self.tokenizer.render(conv.to_dict())
        except Exception as e:
            raise Skip("render_error", f"{type(e).__name__}: {e}") from None
        return len(ids)


def _fallback_id(pos: str, conv: Conversation) -> str:
    """For records without an id: "file:line" for local files; a content hash for hub rows, whose
    position depends on the stream shuffle."""
    if ":" in pos:
        return pos
    return hashlib.sha1(conv.text().encode("utf-8")).hexdigest()[:12]


def collect(spec: SourceSpec, recipe: Recipe, deduper: Deduper, measure: Measurer, target: int | None,
            ids: set[str], progress: bool = False) -> tuple[list[tuple[Conversation, int]], SourceReport]:  # fmt: skip
    """Read one source until `target` conversations pass the filters (None: read it all)."""
    try:
        adapter = get_adapter(spec.dataset)
    except KeyError as e:
        raise HessGPTError(f"source {spec.name!r}: {e.args[0]}") from None
    _check_options(spec, adapter)
    rep = SourceReport(spec.name, spec.dataset, spec.path)
    langs = recipe.languages if spec.languages is None else spec.languages
    if langs == "all":  # a source that skips the language filter (code, for instance)
        langs = None
    stream = iter_rows(spec, recipe.seed, recipe.shuffle_buffer)
    if adapter.prepare is not None:
        stream = adapter.prepare(stream, **spec.options)
    kept: list[tuple[Conversation, int]] = []
    bar = tqdm(total=target, desc=spec.name, unit="conv", disable=not progress, leave=False)
    for item in stream:
        if target is not None and len(kept) >= target:
            break
        rep.records += 1
        if isinstance(item, Skip):
            rep.skip(item)
            continue
        pos, row = item
        try:
            if not isinstance(row, dict):
                raise Skip("wrong_type", f"record is {type(row).__name__}, not an object")
            out = adapter.convert(row, **spec.options)
        except Skip as s:
            rep.skip(s, pos)
            continue
        except Exception as e:  # an adapter bug or an odd row must not stop the run
            rep.skip(Skip("adapter_error", f"{type(e).__name__}: {e}"), pos)
            continue
        for conv in out if isinstance(out, list) else [out]:
            rep.converted += 1
            conv.source = spec.name
            conv.id = f"{spec.name}:{conv.id or _fallback_id(pos, conv)}"
            try:
                validate(conv)
                if conv.lang is None:
                    conv.lang = detect_language(conv.text())
                if langs and conv.lang not in langs:
                    raise Skip("wrong_language", conv.lang)
                n = measure(conv)
                if measure.limit and n > measure.limit:
                    raise Skip("too_long", f"{n} {measure.unit} > {measure.limit}")
                dup = deduper.check(conv.text())
                if dup:
                    raise Skip(dup)
            except Skip as s:
                rep.skip(s, conv.id)
                continue
            base, k = conv.id, 2
            while conv.id in ids:  # ids are unique within the output
                conv.id, k = f"{base}#{k}", k + 1
            ids.add(conv.id)
            kept.append((conv, n))
            bar.update(1)
    bar.close()
    rep.kept = len(kept)
    return kept, rep


def targets(recipe: Recipe) -> dict[str, int | None]:
    """Conversations to read per source: `count`, or a weight's share of `total` (None = read all)."""
    out: dict[str, int | None] = {}
    counted = sum(s.count for s in recipe.sources if s.count is not None)
    weight_sum = sum(s.weight for s in recipe.sources if s.weight is not None)
    rest = None if recipe.total is None else max(0, recipe.total - counted)
    for s in recipe.sources:
        if s.count is not None:
            out[s.name] = s.count
        elif s.weight is not None and rest is not None:
            out[s.name] = round(rest * s.weight / weight_sum)
        else:
            out[s.name] = None
    return out


def shares(recipe: Recipe, available: dict[str, int], wanted: dict[str, int | None]) -> dict[str, int]:
    """Final per-source counts. Weighted sources without a total: the largest mix keeping the weights."""
    weighted = [s for s in recipe.sources if s.weight is not None and wanted[s.name] is None]
    out = {name: min(n, wanted[name] if wanted[name] is not None else n) for name, n in available.items()}
    if weighted:
        w = sum(s.weight for s in weighted)
        total = min(available[s.name] * w / s.weight for s in weighted)  # the scarcest source sets the size
        for s in weighted:
            out[s.name] = min(available[s.name], math.floor(total * s.weight / w + 1e-9))
    return out


def split(items: list, fraction: float, seed: int, name: str) -> tuple[list, list]:
    """Shuffle one source by (seed, name) and cut off its validation holdout: (train, val)."""
    items = list(items)
    random.Random(f"{seed}/{name}").shuffle(items)
    n_val = round(len(items) * fraction)
    if fraction > 0 and len(items) >= 2:
        n_val = max(1, n_val)
    return items[n_val:], items[:n_val]


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def histogram(lengths: list[int], bins: int = 20) -> dict:
    if not lengths:
        return {"edges": [], "counts": []}
    hi = max(lengths)
    step = max(1, math.ceil((hi + 1) / bins))
    counts = [0] * bins
    for n in lengths:
        counts[min(bins - 1, n // step)] += 1
    return {"edges": [i * step for i in range(bins + 1)], "counts": counts}


def plot_lengths(path: Path, lengths: list[int], unit: str, limit: int | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(lengths or [0], bins=40, color="#4C72B0")
    if limit:
        ax.axvline(limit, color="#C44E52", linestyle="--", label=f"limit {limit}")
        ax.legend()
    ax.set_xlabel(f"conversation length ({unit})")
    ax.set_ylabel("conversations")
    ax.set_title(f"{len(lengths)} conversations (train + val)")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, metadata={"Software": None})  # no version stamp: the file depends on the data only
    plt.close(fig)
    os.replace(tmp, path)


def report_markdown(report: dict) -> str:
    lines = [f"# Data report: {report['recipe']}", "", f"seed {report['seed']}, lengths in {report['length_unit']}"
             + (f", limit {report['length_limit']}" if report["length_limit"] else ""), "",
             f"**train {report['train']}**, **val {report['val']}** from {report['records']} records read.", "",
             "| source | records | kept | train | val | unused | skipped |", "|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for s in report["sources"]:
        skipped = ", ".join(f"{r} {n}" for r, n in s["skipped"].items()) or "-"
        lines.append(f"| {s['name']} | {s['records']} | {s['kept']} | {s['train']} | {s['val']} | {s['unused']} | {skipped} |")
    lines += ["", "## Skip reasons", "", "| reason | count | example |", "|---|---:|---|"]
    for reason, n in report["skip_reasons"].items():
        ex = next((s["skip_examples"][reason][0] for s in report["sources"] if reason in s["skip_examples"]), "")
        lines.append(f"| {reason} | {n} | {ex[:100].replace('|', '/')} |")
    lines += ["", "## Languages (train + val)", "", "| lang | count |", "|---|---:|"]
    lines += [f"| {lang} | {n} |" for lang, n in report["languages"].items()]
    h = report["lengths"]
    lines += ["", "## Lengths", "", f"min {h['min']}, median {h['median']}, max {h['max']} {report['length_unit']}", "",
              "![length histogram](lengths.png)", ""]  # fmt: skip
    return "\n".join(lines)


def prepare(recipe: Recipe, out_dir: str | os.PathLike, tokenizer=None, progress: bool = False) -> dict:
    """Run a recipe; write train.jsonl, val.jsonl, report.json, report.md, lengths.png. Returns the report."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    measure = Measurer(recipe, tokenizer)
    deduper = Deduper(recipe.dedup.exact, recipe.dedup.near, recipe.dedup.threshold)
    wanted = targets(recipe)
    collected, reports, ids = {}, {}, set()
    for spec in recipe.sources:
        collected[spec.name], reports[spec.name] = collect(spec, recipe, deduper, measure, wanted[spec.name], ids, progress)
    final = shares(recipe, {k: len(v) for k, v in collected.items()}, wanted)

    train, val = [], []
    for spec in recipe.sources:
        frac = recipe.val_fraction if spec.val_fraction is None else spec.val_fraction
        items = collected[spec.name]
        random.Random(f"{recipe.seed}/take/{spec.name}").shuffle(items)
        tr, va = split(items[: final[spec.name]], frac, recipe.seed, spec.name)
        rep = reports[spec.name]
        rep.train, rep.val = len(tr), len(va)
        rep.languages.update(c.lang for c, _ in tr + va)
        train += tr
        val += va
    random.Random(f"{recipe.seed}/train").shuffle(train)
    random.Random(f"{recipe.seed}/val").shuffle(val)
    write_jsonl(out / "train.jsonl", (c for c, _ in train))
    write_jsonl(out / "val.jsonl", (c for c, _ in val))

    lengths = sorted(n for _, n in train + val)
    reasons = Counter()
    for r in reports.values():
        reasons.update(r.skipped)
    report = {
        "recipe": recipe.name, "seed": recipe.seed,
        "length_unit": measure.unit, "length_limit": measure.limit,
        "records": sum(r.records for r in reports.values()),
        "train": len(train), "val": len(val),
        "skipped": sum(reasons.values()),
        "skip_reasons": dict(sorted(reasons.items())),
        "languages": dict(sorted(Counter(c.lang for c, _ in train + val).items())),
        "lengths": {"min": lengths[0] if lengths else 0, "median": lengths[len(lengths) // 2] if lengths else 0,
                    "max": lengths[-1] if lengths else 0, "histogram": histogram(lengths)},
        "sources": [reports[s.name].to_dict() for s in recipe.sources],
    }  # fmt: skip
    _atomic_write(out / "report.json", (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    _atomic_write(out / "report.md", report_markdown(report).encode("utf-8"))
    plot_lengths(out / "lengths.png", lengths, measure.unit, measure.limit)
    return report
