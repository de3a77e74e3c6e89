"""Backends the eval commands generate with.

`load_backend` gives the dual-model system (`hessgpt.tools.router.DualModelBackend`: model 1 + optional model
2, with the sandboxed tool loop). `PlainChatBackend` is model 1 alone, without tools: the renderer of
docs/chat-format.md + the engine, greedy. Both have `stream_chat(messages, params, tools=None) -> Iterator[Event]`.
"""

from __future__ import annotations

from pathlib import Path

from hessgpt.errors import HessGPTError
from hessgpt.events import Event


class PlainChatBackend:
    """One checkpoint, chat only: text events until <|end|> / </s> (a code block is just text here)."""

    def __init__(self, path: str, device: str | None = None):
        import hessgpt
        from hessgpt.engine import Engine

        model, self.tokenizer = hessgpt.load(path, device=device)
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


def load_backend(model1: str, model2: str | None = None, plain: bool = False):
    """The dual-model backend for a checkpoint (or, with plain=True, model 1 alone without tools)."""
    if not Path(model1).exists():
        raise HessGPTError(f"no such checkpoint {model1}")
    if model2 is not None and not Path(model2).exists():
        raise HessGPTError(f"no such checkpoint {model2}")
    if plain:
        return PlainChatBackend(model1)
    try:
        from hessgpt.tools.router import DualModelBackend
    except ImportError as e:
        raise HessGPTError(f"the dual-model router is not available ({e}); use --plain for chat without tools") from None
    return DualModelBackend(model1, model2)
