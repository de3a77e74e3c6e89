"""Building the routing dataset: draw candidates per category (`PYTHON_GENS`, web, negatives), run every
Python one in the sandbox, keep those whose stdout agrees with the reference, record the statistics
(`generate`), and the three splits with their own seeds and multi-turn conversations (`generate_splits`)."""

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from hessgpt.data.routing import algo, data, maths, phrasing as P
from hessgpt.data.routing.candidate import CATEGORIES, Candidate, Gen, LANGS, to_record
from hessgpt.data.routing.multiturn import N_SHARE, compose_conversations, sandbox_runner
from hessgpt.data.routing.negatives import negative_candidate
from hessgpt.data.routing.words import LEADS, _wrap
from hessgpt.data.routing.reference import agrees
from hessgpt.data.routing.splits import MIN_INT_RANGE, MIN_PARTITIONED, SPLITS, SPLIT_SEED_OFFSET, SplitRandom
from hessgpt.data.routing.web import web_candidate
from hessgpt.errors import HessGPTError
from hessgpt.tools import sandbox as tools_sandbox  # the module: .Sandbox looked up per run (tests swap it)


PYTHON_GENS: dict[str, list[tuple[str, Gen, int]]] = {   # category -> [(kind, generator, weight)]
    "maths": maths.GENS,
    "algo": algo.GENS,
    "data": data.GENS,
}


def python_candidate(rng: random.Random, category: str, lang: str) -> Candidate:
    gens = PYTHON_GENS[category]
    kind, gen, _ = rng.choices(gens, weights=[w for *_, w in gens])[0]
    params, code, questions, answers = gen(rng, lang)
    if 1 < len(set(questions)) < MIN_PARTITIONED:   # too few phrasings to partition: compose with task prefixes
        questions = list(questions) + [pre + (q[0].lower() + q[1:] if q[1:2].islower() else q)
                                       for pre in P.TASK_PREFIX[lang] for q in questions]
    template = questions[0] if len(questions) == 1 else rng.choice(questions)   # one: drawn by the generator
    user = _wrap(rng, lang, template.format(**params))
    ref, lines = params.pop("_ref", None), params.pop("_lines", False)
    if ref is None:
        raise AssertionError(f"generator {kind} gave no reference")
    return Candidate(category, kind, lang, user, rng.choice(LEADS[lang]), code, "python", rng.choice(answers), params,
                     reference=ref, ref_lines=lines, template=template)


MAX_OUTPUT_CHARS = 600   # a tool result longer than this teaches nothing useful


@dataclass
class Stats:
    generated: Counter = field(default_factory=Counter)
    duplicates: int = 0
    failed: Counter = field(default_factory=Counter)       # status -> count
    failed_kinds: Counter = field(default_factory=Counter) # category/kind -> count of dropped runs
    kept: Counter = field(default_factory=Counter)         # category -> count
    kinds: Counter = field(default_factory=Counter)        # category/kind -> count
    langs: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    sandbox_runs: int = 0
    retried: int = 0                                       # failed runs tried a second time
    disagreements: Counter = field(default_factory=Counter)  # category/kind -> sandbox stdout != reference
    disagreement_examples: list = field(default_factory=list)
    templates: dict = field(default_factory=dict)   # category/lang -> question templates used
    shared_lists: int = 0          # phrasing lists too short to partition (fewer than 3 items): shared by the splits

    def to_dict(self) -> dict:
        return {"generated": dict(self.generated), "duplicates": self.duplicates, "failed": dict(self.failed),
                "failed_kinds": dict(self.failed_kinds),
                "kept": dict(self.kept), "kinds": dict(sorted(self.kinds.items())), "langs": dict(self.langs),
                "sandbox_runs": self.sandbox_runs, "retried": self.retried, "seconds": round(self.seconds, 1),
                "verification_disagreements": dict(sorted(self.disagreements.items())),
                "verification_disagreement_examples": self.disagreement_examples[:10],
                "shared_short_lists": self.shared_lists,
                "distinct_templates": {k: len(v) for k, v in sorted(self.templates.items())}}


# Share of each category among the samples that need a code block: computation (maths) is what model 1
# most often hands to the sandbox, and the hardest to get right (it copies operands into code and the
# printed result into the answer), so it gets the largest share.
CATEGORY_SHARES = {"maths": 0.4, "algo": 0.2, "web": 0.2, "data": 0.2}


def _quotas(n: int, negative_fraction: float) -> dict[str, int]:
    n_neg = round(n * negative_fraction)
    n_pos = n - n_neg
    q = {c: int(n_pos * CATEGORY_SHARES[c]) for c in CATEGORIES}
    for c in CATEGORIES[: n_pos - sum(q.values())]:
        q[c] += 1
    q["negative"] = n_neg
    return q


def _infra_failure(r) -> bool:
    """The sandbox lost its worker (killed, restarted): not the code's fault, worth another try."""
    return r.status == "error" and "worker stopped answering" in (r.stderr or "")


def _run_with_retry(sb, codes: list[str], stats: "Stats | None" = None, tries: int = 3) -> list:
    """run_many, then up to `tries` more tries, one at a time, for runs whose worker was lost: a worker
    restarted under load must not change which samples are kept (that would break determinism).
    A real error (a traceback, a timeout) is final."""
    results = sb.run_many(codes)
    retried = 0
    for i, r in enumerate(results):
        for _ in range(tries):
            if not _infra_failure(results[i]):
                break
            results[i] = sb.run(codes[i])
            retried += 1
    if stats is not None:
        stats.sandbox_runs += len(codes) + retried
        stats.retried += retried
    return results


def generate(n: int, langs=LANGS, seed: int = 0, negative_fraction: float = 0.25, sandbox=None,
             workers: int = 2, progress: bool = True, split: str = "train",
             seen: set | None = None) -> tuple[list[dict], Stats]:
    """n verified records (shuffled) of one split, and the statistics. `sandbox` is an open Sandbox, or one
    is opened. The split's phrasings, entities and operands come from its own partition (SplitRandom), with
    its own seed (seed + SPLIT_SEED_OFFSET[split]); `seen` (prompt keys) is shared across splits to dedupe."""
    if not langs or any(l not in LANGS for l in langs):
        raise HessGPTError(f"--langs must be a subset of {','.join(LANGS)}, got {','.join(langs) or 'nothing'}")
    if not 0 <= negative_fraction < 1:
        raise HessGPTError(f"--negative-fraction must be in [0, 1), got {negative_fraction}")
    t0 = time.time()
    if split not in SPLITS:
        raise HessGPTError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    rng = SplitRandom(seed + SPLIT_SEED_OFFSET[split], split)
    quotas = _quotas(n, negative_fraction)
    stats = Stats()
    seen = set() if seen is None else seen
    records: list[dict] = []

    def fresh(make: Callable[[str], Candidate], count: int, i0: int) -> list[Candidate]:
        """`count` new (not yet seen) candidates, languages alternating; gives up after many duplicates."""
        out, tries = [], 0
        while len(out) < count and tries < count * 20 + 100:
            c = make(langs[(i0 + tries) % len(langs)])
            c.split = split
            tries += 1
            stats.generated[c.category] += 1
            if c.key() in seen:
                stats.duplicates += 1
                continue
            seen.add(c.key())
            out.append(c)
        return out

    def keep(c: Candidate, stdout: str | None = None):
        records.append(to_record(c, stdout))
        if c.template:
            stats.templates.setdefault(f"{c.category}/{c.lang}", set()).add(c.template)
        stats.kept[c.category] += 1
        stats.kinds[f"{c.category}/{c.kind}"] += 1
        stats.langs[c.lang] += 1

    for cat, make in (("negative", lambda l: negative_candidate(rng, l)), ("web", lambda l: web_candidate(rng, l))):
        for c in fresh(make, quotas[cat], 0):
            keep(c)

    own = sandbox is None
    sb = tools_sandbox.Sandbox(workers=workers) if own else sandbox
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(quotas[c] for c in PYTHON_GENS), desc="routing (sandbox)", unit="sample")
    try:
        for cat in PYTHON_GENS:
            need, offset = quotas[cat], 0
            for _round in range(6):
                if need <= 0:
                    break
                batch = fresh(lambda l: python_candidate(rng, cat, l), int(need * 1.05) + 4, offset)
                offset += len(batch)
                if not batch:
                    break
                for start in range(0, len(batch), 256):   # chunks, so the progress bar moves
                    chunk = batch[start : start + 256]
                    results = _run_with_retry(sb, [c.code for c in chunk], stats)
                    for c, r in zip(chunk, results):
                        if need <= 0:
                            break
                        if r.status != "ok":
                            stats.failed[r.status] += 1
                            stats.failed_kinds[f"{c.category}/{c.kind}"] += 1
                        elif not r.stdout.strip() or len(r.stdout) > MAX_OUTPUT_CHARS:
                            stats.failed["empty_or_long_output"] += 1
                            stats.failed_kinds[f"{c.category}/{c.kind}"] += 1
                        elif not agrees(c.reference, r.stdout, c.ref_lines):
                            stats.disagreements[f"{c.category}/{c.kind}"] += 1
                            if len(stats.disagreement_examples) < 10:
                                stats.disagreement_examples.append(
                                    {"kind": f"{c.category}/{c.kind}", "user": c.user, "stdout": r.stdout[:200],
                                     "reference": c.reference})
                        else:
                            try:
                                keep(c, r.stdout)
                            except (IndexError, KeyError):   # output has fewer lines than the answer uses
                                stats.failed["answer_mismatch"] += 1
                                stats.failed_kinds[f"{c.category}/{c.kind}"] += 1
                                continue
                            need -= 1
                            if bar:
                                bar.update(1)
    finally:
        if bar:
            bar.close()
        if own:
            sb.close()
    random.Random(seed + 1 + SPLIT_SEED_OFFSET[split]).shuffle(records)
    stats.seconds = time.time() - t0
    stats.shared_lists = len(rng.shared_lists)
    return records, stats


def generate_splits(n: int, test_n: int = 600, val_fraction: float = 0.05, langs=LANGS, seed: int = 0,
                    negative_fraction: float = 0.25, workers: int = 2, progress: bool = True,
                    sandbox=None, multiturn_share: float = N_SHARE) -> tuple[dict[str, list[dict]], dict]:
    """{"train", "dev", "test"} -> records, and the stats JSON. n = train + dev (dev = round(n * val_fraction));
    the three splits share no template, entity or operand integer (see partition / int_split), each with its
    own seed; prompts are deduplicated across splits. Train and dev also get multiturn_share x their size of
    2-3 turn conversations composed from their own singles (hessgpt.data.routing_multiturn)."""
    n_dev = round(n * val_fraction)
    sizes = {"train": n - n_dev, "dev": n_dev, "test": test_n}
    own = sandbox is None
    sb = tools_sandbox.Sandbox(workers=workers) if own else sandbox
    seen: set[str] = set()
    out, per = {}, {}
    multi: dict[str, Counter] = {split: Counter() for split in SPLITS}
    try:
        for split in SPLITS:
            if sizes[split] <= 0:
                out[split], per[split] = [], None
                continue
            out[split], st = generate(sizes[split], langs, seed, negative_fraction, sandbox=sb, workers=workers,
                                      progress=progress, split=split, seen=seen)
            per[split] = st
            if split != "test" and multiturn_share > 0:
                # 2-3 turn conversations composed from this split's own singles (the follow-up phrasings are
                # shared by the splits, so the test split stays single-turn: the OOD set measures multi-turn)
                t0 = time.time()
                extra = compose_conversations(out[split], round(multiturn_share * len(out[split])),
                                              random.Random(seed + SPLIT_SEED_OFFSET[split] + 7919), run_code=sandbox_runner(sb),
                                              stats=multi[split])
                for r in extra:
                    r["split"] = split
                out[split] = out[split] + extra
                random.Random(seed + SPLIT_SEED_OFFSET[split]).shuffle(out[split])
                multi[split]["seconds"] = round(time.time() - t0, 1)
    finally:
        if own:
            sb.close()
    stats = {"seed": seed, "langs_requested": list(langs), "train": len(out["train"]), "val": len(out["dev"]),
             "dev": len(out["dev"]), "test": len(out["test"]),
             "splits": {k: (v.to_dict() if v else None) for k, v in per.items()},
             "distinct_prompts": {k: len({" ".join(r["messages"][0]["content"].lower().split()) for r in v})
                                  for k, v in out.items()},
             "verification_disagreements": sum(sum(v.disagreements.values()) for v in per.values() if v),
             "multiturn": {k: dict(v) for k, v in multi.items() if v},
             "partition": {"rule": "sha1 bucket of the item: <10 test, <20 dev, else train (each list keeps one item "
                                   "per split); integers of ranges >= 20 values by the bucket of the integer",
                           "min_partitioned_list": MIN_PARTITIONED, "min_int_range": MIN_INT_RANGE}}
    tot = Stats()
    for v in per.values():
        if v:
            for a in ("generated", "failed", "failed_kinds", "kept", "kinds", "langs", "disagreements"):
                getattr(tot, a).update(getattr(v, a))
            tot.duplicates += v.duplicates
            tot.sandbox_runs += v.sandbox_runs
            tot.retried += v.retried
            tot.seconds += v.seconds
    d = tot.to_dict()
    d.update(stats)
    return out, d
