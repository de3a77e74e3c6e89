"""Every dataset named in recipes/*.yaml resolves offline, so a typo shows up here and not on a rented GPU.

- a conversation-mix recipe (sources with `dataset:`): each source's `dataset` picks a registered adapter
  (hessgpt/data/adapters), the hub id it reads (`path`, default `dataset`) is registered to that same adapter,
  and tests/fixtures/data/recipe-all.yaml has a fixture of that adapter's schema that the adapter converts; a
  table an adapter option reads (NexusRaven's `api_list`, with its own hub config) has its fixture too; a hub
  `config` (of a source or of such a table) is one the adapter declares (`register(..., configs=...)`);
- a pretraining recipe (sources with `path:` and a text column): it loads with the shard writer's loader, each
  hub source names an `owner/name` id and, where given, a plain config;
- a pipeline recipe: every `recipe:` it names is a file in recipes/ (checked above through its own case).
Nothing is downloaded: the hub itself is not asked whether a config exists.
"""

import glob
import os
import re

import pytest
import yaml

from hessgpt.data.adapters import get_adapter
from hessgpt.data.conversation import Skip
from hessgpt.data.recipe import iter_rows, load_pretrain_recipe, load_recipe
from hessgpt.datafiles import is_local

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPES = sorted(glob.glob(os.path.join(REPO, "recipes", "*.yaml")))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "data", "recipe-all.yaml")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CONFIG = re.compile(r"^[\w.-]+$")


def _kind(path: str) -> str:
    raw = yaml.safe_load(open(path, encoding="utf-8"))
    if "stages" in raw:
        return "pipeline"
    return "mix" if any("dataset" in s for s in raw.get("sources", [])) else "pretrain"


def _fixture_sources() -> dict:
    """adapter -> [fixture SourceSpec] from recipe-all.yaml."""
    out = {}
    for s in load_recipe(FIXTURES).sources:
        out.setdefault(get_adapter(s.dataset), []).append(s)
    return out


def _adapter_or_none(name: str):
    try:
        return get_adapter(name)
    except KeyError:
        return None


def _converts(spec, adapter) -> bool:
    """The adapter turns at least one of the fixture's first rows into a conversation."""
    items = [it for _, it in zip(range(50), iter_rows(spec))]  # (position, row) pairs or Skip
    if adapter.prepare is not None:
        items = list(adapter.prepare(iter(items), **spec.options))
    for _, row in (it for it in items if not isinstance(it, Skip)):
        try:
            adapter.convert(row, **{k: v for k, v in spec.options.items() if not isinstance(v, dict)})
            return True
        except Skip:
            continue
    return False


def test_every_recipe_is_classified():
    assert RECIPES and {_kind(p) for p in RECIPES} == {"mix", "pretrain", "pipeline"}


@pytest.mark.parametrize("path", [p for p in RECIPES if _kind(p) == "mix"], ids=os.path.basename)
def test_mix_recipe_datasets_have_adapters_and_fixtures(path):
    check_mix_recipe(path)


def check_mix_recipe(path):
    fixtures = _fixture_sources()
    for s in load_recipe(path).sources:
        where = f"{os.path.basename(path)}: source {s.name!r}"
        try:
            adapter = get_adapter(s.dataset)
        except KeyError as e:
            pytest.fail(f"{where}: {e}")
        assert adapter in fixtures, f"{where}: dataset {s.dataset!r} (adapter {adapter.name}) has no fixture in {FIXTURES}"
        assert any(os.path.exists(f.path) and _converts(f, adapter) for f in fixtures[adapter]), \
            f"{where}: no fixture of adapter {adapter.name} converts a row"
        if not is_local(s.path):
            assert HUB_ID.match(s.path), f"{where}: hub id {s.path!r} is not owner/name"
            assert _adapter_or_none(s.path) is adapter, \
                f"{where}: hub id {s.path!r} is not registered to adapter {adapter.name} (dataset {s.dataset!r})"
        if s.config is not None:
            assert s.config in adapter.configs, \
                f"{where}: config {s.config!r} is not one adapter {adapter.name} declares: {adapter.configs}"
        for opt, table in s.options.items():
            if isinstance(table, dict) and "path" in table:
                fixture_tables = [f.options.get(opt) for f in fixtures[adapter] if isinstance(f.options.get(opt), dict)]
                assert fixture_tables and all(os.path.exists(t["path"]) for t in fixture_tables), \
                    f"{where}: option {opt!r} reads a table that no fixture provides"
                if not is_local(table["path"]):
                    assert _adapter_or_none(table["path"]) is adapter, \
                        f"{where}: {opt}.path {table['path']!r} is not registered to adapter {adapter.name}"
                if table.get("config") is not None:
                    assert table["config"] in adapter.configs, \
                        f"{where}: {opt}.config {table['config']!r} is not one adapter {adapter.name} declares: {adapter.configs}"


@pytest.mark.parametrize("path", [p for p in RECIPES if _kind(p) == "pretrain"], ids=os.path.basename)
def test_pretrain_recipe_sources_are_well_formed(path):
    recipe = load_pretrain_recipe(path)
    raw = yaml.safe_load(open(path, encoding="utf-8"))
    assert len(raw["sources"]) == len(recipe.sources)
    for s in raw["sources"]:
        where = f"{os.path.basename(path)}: source {s.get('name')!r}"
        if not is_local(s["path"]) and not s["path"].startswith((".", "/")):
            assert HUB_ID.match(s["path"]), f"{where}: hub id {s['path']!r} is not owner/name"
        if s.get("config") is not None:
            assert CONFIG.match(str(s["config"])), f"{where}: config {s['config']!r} is not a plain name"


@pytest.mark.parametrize("path", [p for p in RECIPES if _kind(p) == "pipeline"], ids=os.path.basename)
def test_pipeline_recipes_name_existing_recipes(path):
    raw = yaml.safe_load(open(path, encoding="utf-8"))
    for st in raw["stages"]:
        if "recipe" in st:
            target = os.path.join(os.path.dirname(path), st["recipe"])
            assert os.path.isfile(target), f"{os.path.basename(path)}: stage {st['name']!r} names {st['recipe']!r}, not a file"


def test_a_typo_is_caught(tmp_path):
    """The check above fails on a misspelt dataset id."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsources:\n  - {name: u, dataset: HuggingFaceH4/ultrachat_2000k, count: 1}\n")
    with pytest.raises(KeyError, match="no adapter for dataset 'HuggingFaceH4/ultrachat_2000k'"):
        get_adapter(load_recipe(bad).sources[0].dataset)


@pytest.mark.parametrize("source, message", [
    ("{name: s, dataset: HuggingFaceTB/smoltalk, config: alll, count: 1}", "config 'alll' is not one adapter"),
    ("{name: w, dataset: wikihow, path: HuggingFaceTB/cosmopedai, config: wikihow, count: 1}",
     "hub id 'HuggingFaceTB/cosmopedai' is not registered to adapter wikihow"),
    ("{name: n, dataset: Nexusflow/NexusRaven_API_evaluation, config: standardized_queries, count: 1, "
     "options: {api_list: {path: Nexusflow/NexusRaven_API_evaluation, config: standardised_api_list}}}",
     "api_list.config 'standardised_api_list' is not one adapter"),
], ids=["config", "hub-id", "table-config"])
def test_a_config_or_hub_id_typo_is_caught(tmp_path, source, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: bad\nsources:\n  - {source}\n")
    with pytest.raises(AssertionError, match=message):
        check_mix_recipe(str(bad))
