"""`PlainChatBackend`: model 1 alone, chat only, no tools — the renderer of docs/chat-format.md + the engine.

What `hessgpt eval ... --plain` measures (a code block is just text here). Follows the ChatBackend contract of
serve/backends.py.
"""

from pathlib import Path

from hessgpt.engine import Engine
from hessgpt.errors import HessGPTError
from hessgpt.events import Event
from hessgpt.loader import load


class PlainChatBackend:
    """One checkpoint, chat only: text events until <|end|> / </s>."""

    def __init__(self, path: str, device: str | None = None):
        model, self.tokenizer = load(path, device=device)
        self.engine = Engine(model, self.tokenizer)
        self.model_id = Path(path).name
        self.context_length = self.engine.max_len

    def stream_chat(self, messages, params, tools=None, cancel=None):
        conv = {"messages": [{"role": m["role"], "content": m.get("content") or ""} for m in messages]}
        if tools:
            conv["tools"] = tools
        ids = self.tokenizer.render_for_generation(conv)
        if len(ids) >= self.context_length:
            raise HessGPTError(f"prompt of {len(ids)} tokens does not fit the context ({self.context_length})")
        n = 0
        for delta in self.engine.stream_text(ids, params):
            n += 1
            yield Event("text", delta)
        yield Event("done", data={"finish_reason": "stop", "prompt_tokens": len(ids), "completion_tokens": n})
