"""The backend the eval commands generate with: `load_backend`, serve/build.py's `build_backend` for a checkpoint.

The dual-model system (`hessgpt.serve.dual.DualModelBackend`: model 1 + optional model 2, with the sandboxed
tool loop), or with plain=True model 1 alone without tools (`hessgpt.serve.plain.PlainChatBackend`, greedy
unless asked). Both have `stream_chat(messages, params, tools=None) -> Iterator[Event]`.
"""

from pathlib import Path

from hessgpt.errors import HessGPTError
from hessgpt.serve.build import BackendSpec, build_backend


def load_backend(model1: str, model2: str | None = None, plain: bool = False, code_votes: int = 1):
    """The dual-model backend for a checkpoint (or, with plain=True, model 1 alone without tools)."""
    for path in (model1, model2):
        if path is not None and not Path(path).exists():
            raise HessGPTError(f"no such checkpoint {path}")
    return build_backend(BackendSpec(model1=model1, model2=model2, plain=plain, code_votes=code_votes))
