"""Serving: OpenAI-compatible API + web chat page over a pluggable chat backend (see backends.py)."""
