"""Data pipeline: every source dataset -> one conversation format (docs/chat-format.md) -> train/val mixes.

- `conversation`: the record dataclasses, validation, JSONL read/write;
- `adapters`: one small function per source schema, registered by dataset name;
- `recipe`: YAML mixture recipes and reading their sources (hub or local files);
- `dedup`, `prepare`: filters, dedup, holdout split and reports behind `hessgpt data prepare`.
"""
