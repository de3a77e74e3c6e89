"""Mixture recipes (YAML) and loading their sources through `datasets` or from local files.

A recipe names datasets (data), never Python classes:

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
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import yaml

from hessgpt.data.conversation import Skip
from hessgpt.datafiles import ROW_SUFFIXES, Unreadable, data_files, is_local
from hessgpt.datafiles import iter_rows as file_rows
from hessgpt.errors import HessGPTError



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
        if not isinstance(d, dict):
            raise HessGPTError(f"{where}: expected a mapping, got {d!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise HessGPTError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        if not d.get("dataset"):
            raise HessGPTError(f"{where}: `dataset` is required (it picks the adapter)")
        spec = cls(**d)
        spec.name = spec.name or spec.dataset.rstrip("/").split("/")[-1].lower()
        spec.path = str(spec.path or spec.dataset)
        if spec.weight is not None and spec.count is not None:
            raise HessGPTError(f"{where} {spec.name!r}: give `weight` or `count`, not both")
        if spec.weight is not None and not (isinstance(spec.weight, (int, float)) and spec.weight > 0):
            raise HessGPTError(f"{where} {spec.name!r}: weight must be a positive number, got {spec.weight!r}")
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


def _resolve(p: str, base: Path) -> str:
    """Local paths are relative to the recipe file; hub ids stay as they are."""
    p = os.path.expanduser(p)
    if is_local(p) and not os.path.isabs(p):
        candidate = base / p
        return str(candidate.resolve())
    return p


def read_recipe_yaml(path: Path, recipe_cls, source_cls) -> tuple[dict, list]:
    """(raw YAML dict, parsed sources) of a recipe file, checked the same way for every recipe kind: valid YAML,
    a non-empty `sources:` list, no unknown top-level key, unique source names."""
    if not path.is_file():
        raise HessGPTError(f"no such recipe file: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise HessGPTError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("sources"), list) or not raw["sources"]:
        raise HessGPTError(f"{path}: a recipe needs a non-empty `sources:` list")
    known = {f.name for f in fields(recipe_cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise HessGPTError(f"{path}: unknown key(s) {unknown}; known: {sorted(known)}")
    sources = [source_cls.from_dict(s, f"{path}: sources[{i}]") for i, s in enumerate(raw["sources"])]
    names = [s.name for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise HessGPTError(f"{path}: source names must be unique; repeated: {dupes} (set `name:`)")
    return raw, sources


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
    for s in sources:
        if s.name in local:
            s.path = os.path.abspath(os.path.expanduser(local.pop(s.name)))
        else:
            s.path = _resolve(s.path, path.parent)
        for v in s.options.values():  # a table an adapter reads too (NexusRaven's api_list)
            if isinstance(v, dict) and isinstance(v.get("path"), str):
                v["path"] = v["path"] if os.path.isabs(v["path"]) else _resolve(v["path"], path.parent)
    if local:
        raise HessGPTError(f"--local names unknown source(s) {sorted(local)}; sources: {names}")
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


# --- reading rows ---------------------------------------------------------------------------------
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
