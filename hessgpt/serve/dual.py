"""`DualModelBackend`: HessGPT's own chat backend — model 1 (+ model 2) and the tools, behind the ChatBackend
contract of serve/backends.py, for the CLI (`chat`, `ask`), the web page, the API and evaluation.

It loads the checkpoints and wires the tool loop (`hessgpt.tools.router.ToolRouter`: sandbox, function registry,
search); the loop itself lives in tools/. serve/batching.py's `BatchedDualBackend` runs its turns together on
one engine loop (`hessgpt serve --model1` with --max-batch >= 2).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hessgpt.data.conversation import flatten_history
from hessgpt.engine import ChatHistory, Engine, SamplingParams
from hessgpt.errors import HessGPTError
from hessgpt.events import Event
from hessgpt.loader import load
from hessgpt.tools.calls import to_chat_format
from hessgpt.tools.defaults import default_registry
from hessgpt.tools.router import RouterConfig, ToolRouter
from hessgpt.tools.sandbox import Sandbox
from hessgpt.tools.search import SearchIndex


class DualModelBackend:
    """Model 1 (+ model 2) + tools: each turn is one `ToolRouter.stream_turn` over the conversation's prompt."""

    def __init__(self, model1: str, model2: str | None = None, device=None, sandbox=None, tools: bool = True,
                 registry=None, search=None, config: RouterConfig | None = None, search_index: str | None = None,
                 http_allow: list[str] | None = None):
        """`search_index`: a database built by `hessgpt search build` answers `<search>` and the `search` tool;
        `http_allow`: hosts the `http_request` tool may reach (none by default). The calculator is always on."""
        m1, tok1 = load(model1, device=device)
        if tok1 is None:
            raise HessGPTError(f"{model1}: no tokenizer in the checkpoint")
        self.engine = Engine(m1, tok1)
        if config is not None and config.code_votes > 1 and self.engine.fast is None:
            # the vote's blocks decode on a BatchDecoder (its own slot cache); the padded fallback would
            # overwrite the turn's KV cache
            raise HessGPTError(f"code_votes={config.code_votes} needs model 1 on CPU or CUDA (it is on {self.engine.device})")
        self.tokenizer = tok1
        self.generation_config = dict(getattr(m1, "generation_config", None) or {})  # model 1's recommended sampling
        self.model2 = None
        if model2:
            m2, tok2 = load(model2, device=device)
            if tok2 is None:
                raise HessGPTError(f"{model2}: no tokenizer in the checkpoint")
            self.model2 = Engine(m2, tok2)
        if tools and sandbox is None:
            sandbox = Sandbox()
        self.sandbox = sandbox
        if search is None and search_index:
            search = SearchIndex(search_index)
        if registry is None and tools:
            registry = default_registry(search_index, http_allow)
        self.router = ToolRouter(self.engine, sandbox, self.model2, registry, search, config)
        self.model_id = Path(model1).name
        self.context_length = self.engine.max_len

    @contextmanager
    def model2_disabled(self):
        """Model 1 + sandbox alone for the duration (`eval tools --model2` measures the same items without it)."""
        cfg = self.router.config
        old, cfg.refine_with_model2 = cfg.refine_with_model2, False
        try:
            yield self
        finally:
            cfg.refine_with_model2 = old

    def stream_chat(self, messages: list[dict], params: SamplingParams, tools: list[dict] | None = None,
                    cancel=None) -> Iterator[Event]:
        msgs = flatten_history(to_chat_format(messages))   # earlier tool turns as the eval and training data render them
        system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else None
        history = ChatHistory.from_dict({"system": system, "tools": tools, "messages": [m for m in msgs if m["role"] != "system"]})
        reserve = min(params.max_new_tokens, self.context_length // 2)
        ids = history.prompt_ids(self.tokenizer, self.context_length, reserve=reserve)
        request = next((m["content"] for m in reversed(msgs) if m["role"] == "user"), "")
        client_tools = {t["name"] for t in tools or [] if isinstance(t, dict) and "name" in t}
        yield from self.router.stream_turn(ids, params, request, client_tools, cancel)

    def close(self) -> None:
        if self.sandbox is not None and hasattr(self.sandbox, "close"):
            self.sandbox.close()
