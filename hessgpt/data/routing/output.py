"""Where the routing data goes: OUT.jsonl (train) beside OUT.val.jsonl (dev), OUT.test.jsonl (test) and
OUT.stats.json, each JSONL file written whole or not at all."""

import json
import os
from pathlib import Path


def split_paths(out: str) -> tuple[Path, Path, Path]:
    """out.jsonl -> (out.jsonl, out.val.jsonl, out.stats.json)."""
    p = Path(out)
    stem = p.name[: -len(".jsonl")] if p.name.endswith(".jsonl") else p.name
    return p, p.with_name(stem + ".val.jsonl"), p.with_name(stem + ".stats.json")


def test_path(out: str) -> Path:
    p = Path(out)
    stem = p.name[: -len(".jsonl")] if p.name.endswith(".jsonl") else p.name
    return p.with_name(stem + ".test.jsonl")


def write_jsonl(path: Path, records: list[dict]) -> None:
    """One JSON record per line, written to a temporary file then renamed (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
