"""Data recipes (YAML): which data to take, named as data, never Python classes. Two kinds, one system:

  - a conversation mix (`Recipe`, `load_recipe`): conversation sources for `hessgpt data prepare` (data/prepare.py)
  - a pretraining token mix (`PretrainRecipe`, `load_pretrain_recipe`, `text_recipe`): weighted text or code
    corpora for `hessgpt data shards` (data/shards.py writes their token shards)

Both are read by one reader (`read_recipe_yaml`: valid YAML, a non-empty `sources:` list, no unknown key, unique
source names; its top-level checks are `read_recipe_mapping`, which the pipeline recipe shares), their sources checked by one check (`check_source_keys`, `check_weight`: a mapping, no unknown key,
the key that says where the data is, a positive weight), and their paths resolved by one rule (`resolve_sources`:
`--local NAME=PATH` replaces a source's path; other local paths are relative to the recipe file; hub ids stay).
The two kinds stay two dataclasses because their sources mean different things: a conversation source picks an
adapter by `dataset` and takes `count` or `weight`-share conversations; a pretraining source is a corpus `path`
with a `kind` (text or a code language), its filters and a token weight. The pipeline recipe (train/pipeline.py)
is not a data recipe: it lists `stages`, not `sources`, and checks them itself after `read_recipe_mapping`.

A conversation recipe:

    name: mix-conversations
    seed: 1234
    total: 100000            # conversations in the mix (train + val); omit = as many as the data allows
    val_fraction: 0.05       # per-source validation holdout
    languages: [fr, en]
    max_tokens: 2048         # the model's context (characters are counted without --tokenizer)
    sources:
      - name: ultrachat                          # used in record ids: "ultrachat:<original id>"
        dataset: HuggingFaceH4/ultrachat_200k    # picks the adapter
        path: HuggingFaceH4/ultrachat_200k       # hub id, or a local file / directory / glob
        split: train_sft
        weight: 30                               # or `count: 70000`

`path` defaults to `dataset`. A hub id is streamed (gated sets use HF_TOKEN or the token saved by
`huggingface-cli login`); a local path (jsonl, json, parquet, optionally .gz; relative to the recipe
file) is read here line by line so a corrupt line is a counted skip, not a crash. The same recipe runs
on local copies with `hessgpt data prepare RECIPE --local ultrachat=./ultrachat.jsonl`.

A pretraining recipe (recipes/pretrain-*.yaml; docs/shards.md) has `sources:` of `{path, weight, kind, ...}`
and the shard writer's knobs (`total_tokens`, `shard_tokens`, `val_fraction`, `val_tokens`, `filters`, ...).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import yaml

from hessgpt.data.conversation import Skip
from hessgpt.data.quality import KINDS, CodeFilter, Filters, TextFilter
from hessgpt.datafiles import ROW_SUFFIXES, Unreadable, data_files, is_local
from hessgpt.datafiles import iter_rows as file_rows
from hessgpt.errors import HessGPTError

# ---- the one reader and the shared source checks ---------------------------------------------------------


def read_recipe_mapping(path: Path, list_key: str, known: set[str]) -> dict:
    """The raw YAML mapping of any recipe file (both data kinds here, and the pipeline's stage recipe,
    train/pipeline.py), checked the same way: the file exists, it is valid YAML, a mapping with a non-empty
    `list_key:` list (`sources`, `stages`) and no top-level key outside `known`. Each error is one line naming
    the file."""
    if not path.is_file():
        raise HessGPTError(f"no such recipe file: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: {e.problem}" if mark else str(e).splitlines()[0]
        raise HessGPTError(f"{path}: not valid YAML ({where})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get(list_key), list) or not raw[list_key]:
        raise HessGPTError(f"{path}: a recipe needs a non-empty `{list_key}:` list")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise HessGPTError(f"{path}: unknown key(s) {unknown}; known: {sorted(known)}")
    return raw


def read_recipe_yaml(path: Path, recipe_cls, source_cls) -> tuple[dict, list]:
    """(raw YAML dict, parsed sources) of a data recipe file, checked the same way for both kinds: the checks of
    `read_recipe_mapping` (top-level keys: `recipe_cls`'s fields), then unique source names."""
    raw = read_recipe_mapping(path, "sources", {f.name for f in fields(recipe_cls)})
    sources = [source_cls.from_dict(s, f"{path}: sources[{i}]") for i, s in enumerate(raw["sources"])]
    names = [s.name for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise HessGPTError(f"{path}: source names must be unique; repeated: {dupes} (set `name:`)")
    return raw, sources


def check_source_keys(d, source_cls, where: str, required: str, why: str) -> None:
    """A source entry of either kind: a mapping whose keys are `source_cls` fields, with key `required` set
    (`why` says what it is for, in the error)."""
    if not isinstance(d, dict):
        raise HessGPTError(f"{where}: expected a mapping, got {d!r}")
    known = {f.name for f in fields(source_cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise HessGPTError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    if not d.get(required):
        raise HessGPTError(f"{where}: `{required}` is required ({why})")


def check_weight(weight, where: str, name: str) -> None:
    if not (isinstance(weight, (int, float)) and weight > 0):
        raise HessGPTError(f"{where} {name!r}: weight must be a positive number, got {weight!r}")


def resolve_path(p: str, base: Path) -> str:
    """A local path relative to the recipe's folder `base` made absolute; hub ids (and absolute paths) as given,
    `~` expanded."""
    p = os.path.expanduser(p)
    if is_local(p) and not os.path.isabs(p):
        return str((base / p).resolve())
    return p


def resolve_sources(sources: list, local: dict[str, str], base: Path) -> None:
    """Every source's `path`, in place: `local` (NAME -> PATH, from `--local NAME=PATH`) replaces it, else
    `resolve_path`. A NAME that is no source is an error."""
    local = dict(local)
    for s in sources:
        if s.name in local:
            s.path = os.path.abspath(os.path.expanduser(local.pop(s.name)))
        else:
            s.path = resolve_path(s.path, base)
    if local:
        raise HessGPTError(f"--local names unknown source(s) {sorted(local)}; sources: {[s.name for s in sources]}")


# ---- conversation mixes (hessgpt data prepare) -----------------------------------------------------------


@dataclass
class SourceSpec:
    dataset: str  # the adapter's dataset name
    name: str = ""  # short name used in ids and reports (default: last part of `dataset`)
    path: str = ""  # hub id or local file/dir/glob (default: `dataset`)
    config: str | None = None  # hub config ("name" in datasets.load_dataset)
    split: str = "train"
    data_files: Any = None  # hub: restrict to these files
    revision: str | None = None
    streaming: bool = True
    weight: float | None = None
    count: int | None = None  # conversations to take (train + val)
    val_fraction: float | None = None  # overrides the recipe's
    languages: list[str] | str | None = None  # overrides the recipe's; "all" = no language filter
    options: dict = field(default_factory=dict)  # keyword arguments of the adapter

    @classmethod
    def from_dict(cls, d: dict, where: str = "source") -> "SourceSpec":
        check_source_keys(d, cls, where, "dataset", "it picks the adapter")
        spec = cls(**d)
        spec.name = spec.name or spec.dataset.rstrip("/").split("/")[-1].lower()
        spec.path = str(spec.path or spec.dataset)
        if spec.weight is not None and spec.count is not None:
            raise HessGPTError(f"{where} {spec.name!r}: give `weight` or `count`, not both")
        if spec.weight is not None:
            check_weight(spec.weight, where, spec.name)
        if spec.count is not None and not (isinstance(spec.count, int) and spec.count > 0):
            raise HessGPTError(f"{where} {spec.name!r}: count must be a positive integer, got {spec.count!r}")
        if not isinstance(spec.options, dict):
            raise HessGPTError(f"{where} {spec.name!r}: options must be a mapping")
        return spec


@dataclass
class Dedup:
    exact: bool = True
    near: bool = True
    threshold: float = 0.8  # estimated Jaccard similarity of word 3-gram sets


@dataclass
class Recipe:
    name: str
    sources: list[SourceSpec]
    seed: int = 1234
    total: int | None = None
    val_fraction: float = 0.05
    languages: list[str] | None = None
    max_tokens: int | None = None
    max_chars: int | None = None  # default without a tokenizer: 4 * max_tokens
    dedup: Dedup = field(default_factory=Dedup)
    shuffle_buffer: int = 10_000  # hub streams are shuffled in a buffer this big

    @property
    def char_limit(self) -> int | None:
        if self.max_chars is not None:
            return self.max_chars
        return 4 * self.max_tokens if self.max_tokens else None


def load_recipe(path: str | os.PathLike, local: dict[str, str] | None = None) -> Recipe:
    """Read and check a recipe. `local` maps source names to local paths that replace their `path`."""
    path = Path(path)
    raw, sources = read_recipe_yaml(path, Recipe, SourceSpec)
    names = [s.name for s in sources]
    local = dict(local or {})
    for key in [k for k in local if "." in k and k not in names]:  # NAME.OPTION=PATH: a table an adapter option reads
        name, option = key.split(".", 1)
        src = next((s for s in sources if s.name == name), None)
        if src is None or not isinstance(src.options.get(option), dict):
            raise HessGPTError(f"--local {key}: source {name!r} has no table option {option!r}")
        src.options[option] = {"path": os.path.abspath(os.path.expanduser(local.pop(key)))}
    resolve_sources(sources, local, path.parent)
    for s in sources:
        for v in s.options.values():  # a table an adapter reads too (NexusRaven's api_list)
            if isinstance(v, dict) and isinstance(v.get("path"), str):
                v["path"] = v["path"] if os.path.isabs(v["path"]) else resolve_path(v["path"], path.parent)
    has_weight = [s.weight is not None for s in sources]
    if any(has_weight) and not all(has_weight) and raw.get("total") is None:
        raise HessGPTError(f"{path}: mixing `weight` and `count` sources needs `total:`")
    dedup = raw.get("dedup", {})
    if dedup is False:
        dedup = {"exact": False, "near": False}
    try:
        dedup = Dedup(**(dedup or {}))
    except TypeError as e:
        raise HessGPTError(f"{path}: dedup: {e}") from None
    kw = {k: v for k, v in raw.items() if k not in ("sources", "dedup")}
    kw.setdefault("name", path.stem)
    recipe = Recipe(sources=sources, dedup=dedup, **kw)
    if not 0 <= recipe.val_fraction < 1:
        raise HessGPTError(f"{path}: val_fraction must be in [0, 1), got {recipe.val_fraction}")
    return recipe


# ---- pretraining token mixes (hessgpt data shards) -------------------------------------------------------


@dataclass
class PretrainSource:
    """One weighted corpus. `path` is a hub id (streamed with `datasets`) or a local file/directory/glob."""

    name: str
    path: str
    weight: float = 1.0
    kind: str = "text"               # text | python | javascript | html | css (picks the filters)
    column: str | None = None        # default: "text", else "content" (falcon-refinedweb, the-stack)
    config: str | None = None        # hub config ("20231101.fr", "cosmopedia-v2", "en")
    data_dir: str | None = None      # hub data_dir ("data/python" for bigcode/the-stack)
    data_files: object = None
    split: str = "train"
    revision: str | None = None
    languages: list[str] | None = None  # overrides the recipe's (text sources)
    filters: dict = field(default_factory=dict)  # overrides of TextFilter / CodeFilter fields
    # directories skipped inside a local directory source (installed packages are not the stdlib)
    exclude: list[str] = field(default_factory=lambda: ["site-packages", "dist-packages", "__pycache__", ".git", "node_modules"])

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "PretrainSource":
        check_source_keys(d, cls, where, "path", "a hub id or local path")
        d = dict(d)
        d.setdefault("name", str(d["path"]).rstrip("/").split("/")[-1].lower() + (f"-{d['config']}" if d.get("config") else ""))
        src = cls(**d)
        src.path = str(src.path)
        if src.kind not in KINDS:
            raise HessGPTError(f"{where} {src.name!r}: kind must be one of {list(KINDS)}, got {src.kind!r}")
        check_weight(src.weight, where, src.name)
        return src


@dataclass
class PretrainRecipe:
    name: str
    sources: list[PretrainSource]
    seed: int = 1234
    total_tokens: int | None = None   # train tokens over all chunks; None: until the sources run out
    shard_tokens: int = 100_000_000   # tokens per shard (the last one of a chunk may be shorter)
    val_fraction: float = 0.01        # share of documents held out for validation ...
    val_tokens: int = 10_000_000      # ... up to this many tokens (over all chunks)
    languages: list[str] | None = None
    stop: str = "all_exhausted"       # or first_exhausted: stop when any source runs out (keeps the weights)
    shuffle_buffer: int = 10_000      # hub streams are shuffled in a seeded buffer this big (0: off)
    filters: dict = field(default_factory=dict)  # recipe-wide filter overrides
    filter: bool = True               # False: keep every non-empty document

    def source_filters(self, src: PretrainSource) -> Filters:
        over = {**self.filters, **src.filters}
        if src.kind == "text":
            langs = src.languages if src.languages is not None else self.languages
            text = TextFilter.from_dict({"languages": langs, **over}, f"source {src.name!r} filters")
            return Filters(kind="text", text=text, enabled=self.filter)
        return Filters(kind=src.kind, code=CodeFilter.from_dict(over, f"source {src.name!r} filters"), enabled=self.filter)


def load_pretrain_recipe(path: str | os.PathLike, local: dict[str, str] | None = None) -> PretrainRecipe:
    """Read a pretraining recipe (YAML). Local paths are relative to the recipe file; `local` maps source
    names to local paths that replace their hub ids (`--local NAME=PATH`)."""
    path = Path(path)
    raw, sources = read_recipe_yaml(path, PretrainRecipe, PretrainSource)
    resolve_sources(sources, local or {}, path.parent)
    kw = {k: v for k, v in raw.items() if k != "sources"}
    kw.setdefault("name", path.stem)
    recipe = PretrainRecipe(sources=sources, **kw)
    check_recipe(recipe, str(path))
    return recipe


def check_recipe(recipe: PretrainRecipe, where: str = "recipe") -> None:
    if recipe.stop not in ("all_exhausted", "first_exhausted"):
        raise HessGPTError(f"{where}: stop must be all_exhausted or first_exhausted, got {recipe.stop!r}")
    if not 0 <= recipe.val_fraction < 1:
        raise HessGPTError(f"{where}: val_fraction must be in [0, 1), got {recipe.val_fraction}")
    if not (isinstance(recipe.shard_tokens, int) and recipe.shard_tokens > 0):
        raise HessGPTError(f"{where}: shard_tokens must be a positive integer, got {recipe.shard_tokens!r}")
    if recipe.total_tokens is not None and not (isinstance(recipe.total_tokens, int) and recipe.total_tokens > 0):
        raise HessGPTError(f"{where}: total_tokens must be a positive integer, got {recipe.total_tokens!r}")
    for s in recipe.sources:
        recipe.source_filters(s)  # unknown filter keys fail here, before any work


def text_recipe(paths: list[str], kind: str = "text", languages: list[str] | None = None, **kw) -> PretrainRecipe:
    """The recipe behind `--text FILE...`: every file (or directory) a source of equal weight, all taken."""
    sources = []
    for i, p in enumerate(paths):
        if not os.path.exists(p) and not glob.glob(p):
            raise HessGPTError(f"--text: no such file or directory: {p}")
        name = Path(p.rstrip("/")).name or f"text{i}"
        name = name if name not in [s.name for s in sources] else f"{name}-{i}"
        sources.append(PretrainSource(name=name, path=os.path.abspath(p), kind=kind))
    recipe = PretrainRecipe(name="text", sources=sources, languages=languages, **kw)
    check_recipe(recipe, "--text")
    return recipe


# ---- reading a conversation source's rows ---------------------------------------------------------------
# A row stream yields (position, row) pairs, or Skip instances for lines that could not be read
# (so they are counted). Position is "file:line" for local JSONL, the row number otherwise.


def _local_rows(path: str) -> Iterator:
    """Rows of one local file (hessgpt.datafiles), what could not be read as a counted Skip."""
    for item in file_rows(path):
        yield Skip(item.reason, item.detail) if isinstance(item, Unreadable) else item


def _iter_hub(spec: SourceSpec, seed: int, shuffle_buffer: int) -> Iterator:
    import datasets

    token = os.environ.get("HF_TOKEN") or None  # None: datasets uses the token saved by `huggingface-cli login`
    kwargs = dict(name=spec.config, split=spec.split, data_files=spec.data_files, revision=spec.revision, token=token)
    try:
        ds = datasets.load_dataset(spec.path, streaming=spec.streaming, **kwargs)
    except Exception as e:  # gated without a token, offline, unknown id, bad split...
        hint = " (gated dataset? accept its terms on the hub and set HF_TOKEN or run `huggingface-cli login`)"
        raise HessGPTError(f"source {spec.name!r}: cannot load {spec.path!r} from the hub: {type(e).__name__}: {e}{hint}") from None
    if spec.streaming and shuffle_buffer > 1:
        ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer)
    elif not spec.streaming:
        ds = ds.shuffle(seed=seed)
    it = iter(ds)
    i = 0
    while True:
        try:
            row = next(it)
        except StopIteration:
            return
        except Exception as e:  # a broken shard: count it and stop this source
            yield Skip("load_error", f"after row {i}: {type(e).__name__}: {e}")
            return
        yield str(i), row
        i += 1


def iter_rows(spec: SourceSpec, seed: int = 0, shuffle_buffer: int = 10_000) -> Iterator:
    """Rows of one source, from local files or the hub."""
    if not is_local(spec.path):
        yield from _iter_hub(spec, seed, shuffle_buffer)
        return
    for path in data_files(spec.path, ROW_SUFFIXES):
        yield from _local_rows(path)
