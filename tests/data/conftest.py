import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def convert():
    """convert(dataset, fixture_file, **options) -> validated Conversations, through the real readers."""
    from hessgpt.data.adapters import get_adapter
    from hessgpt.data.conversation import Skip, validate
    from hessgpt.data.recipe import SourceSpec, iter_rows

    def run(dataset: str, fname: str, **options):
        spec = SourceSpec.from_dict({"dataset": dataset, "path": os.fspath(FIXTURES / fname), "options": options})
        adapter = get_adapter(dataset)
        stream = iter_rows(spec)
        if adapter.prepare:
            stream = adapter.prepare(stream, **options)
        out = []
        for item in stream:
            assert not isinstance(item, Skip), item
            res = adapter.convert(item[1], **options)
            out += res if isinstance(res, list) else [res]
        return [validate(c) for c in out]

    return run
