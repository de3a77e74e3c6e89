"""Flags -> chat backend, in one place: `hessgpt chat`/`ask`, `hessgpt serve` and `hessgpt eval` all call
`build_backend`.

    backend = build_backend(args)                                  # an argparse.Namespace of chat's or serve's flags
    backend = build_backend(BackendSpec(model1="runs/sft", plain=True))

Which backend (serve/backends.py contract):

- `demo` -> `ScriptedBackend` (scripted answers, no model);
- `hf_model` -> `HFBackend` (a local Hugging Face causal LM, optional PEFT `adapter`, `dtype`, `load_in_4bit`),
  with the sandbox's `run_code` hook and the default registry unless `tools` is off; `max_batch` >= 2 decodes
  its requests together on one engine loop (`serve --hf-model`, serve/hf_batching.py);
- `plain` -> `PlainChatBackend` (model 1 alone, no tools: `eval --plain`);
- else `DualModelBackend` (model 1 + optional model 2 + tools), batched on one engine loop
  (`BatchedDualBackend`) when `max_batch` >= 2 (`serve --model1`; chat and ask decode one turn at a time).
"""

import argparse
from dataclasses import dataclass, field

from hessgpt.errors import HessGPTError
from hessgpt.serve.backends import HFBackend, ScriptedBackend
from hessgpt.serve.batching import BatchedDualBackend
from hessgpt.serve.dual import DualModelBackend
from hessgpt.serve.plain import PlainChatBackend
from hessgpt.tools.defaults import default_registry
from hessgpt.tools.router import RouterConfig, sandbox_run_code


@dataclass
class BackendSpec:
    """What a chat backend is made of (the flags of chat/ask, serve and eval, by their names)."""

    model1: str | None = None          # HessGPT checkpoint of model 1 (chat/ask: also the positional CKPT)
    model2: str | None = None          # HessGPT checkpoint of model 2 (the code model), with model1
    hf_model: str | None = None        # a local Hugging Face causal LM directory
    adapter: str | None = None         # a PEFT LoRA adapter on the hf_model
    dtype: str = "auto"                # hf_model weights
    load_in_4bit: bool = False         # hf_model in bitsandbytes nf4
    demo: bool = False                 # scripted answers, no model
    plain: bool = False                # model 1 alone, no tools
    tools: bool = True                 # False = --no-tools: never execute model-written code
    search_index: str | None = None
    http_allow: list[str] = field(default_factory=list)
    device: str | None = None
    max_batch: int = 1                 # >= 2: model 1's / the HF model's turns decode together (continuous batching)
    prefill_chunk: int = 256
    code_votes: int = 1                # model 1 writes this many code blocks a call, the most printed result wins
    token_delay: float = 0.02          # demo: seconds per streamed word

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "BackendSpec":
        """The spec of parsed flags (chat/ask's `add_backend_args` or serve's parser); absent flags keep the defaults."""
        a = vars(args)
        return cls(model1=a.get("model1") or a.get("ckpt"), model2=a.get("model2"), hf_model=a.get("hf_model"),
                   adapter=a.get("adapter"), dtype=a.get("dtype", "auto"), load_in_4bit=bool(a.get("load_in_4bit")),
                   demo=bool(a.get("demo")), plain=bool(a.get("plain")), tools=not a.get("no_tools"),
                   search_index=a.get("search_index"), http_allow=list(a.get("http_allow") or []),
                   device=a.get("device"), max_batch=a.get("max_batch", 1), prefill_chunk=a.get("prefill_chunk", 256),
                   code_votes=a.get("code_votes", 1), token_delay=a.get("token_delay", 0.02))

    def check(self) -> "BackendSpec":
        """One-line errors for flags that do not go together (before anything is loaded)."""
        if self.hf_model and self.model1:
            raise HessGPTError("give either a HessGPT checkpoint (--model1) or --hf-model, not both")
        if not (self.demo or self.hf_model or self.model1):
            raise HessGPTError("no model: give a checkpoint (or --model1 CKPT, or --hf-model DIR)")
        if self.adapter and not self.hf_model:
            raise HessGPTError("--adapter applies to --hf-model; merge a HessGPT adapter with `hessgpt merge`")
        if (self.load_in_4bit or self.dtype != "auto") and not self.hf_model:
            raise HessGPTError("--dtype/--load-in-4bit apply to --hf-model; "
                               "quantize a HessGPT checkpoint with `hessgpt quantize`")
        if self.model2 and not self.model1:
            raise HessGPTError("--model2 goes with --model1")
        if self.code_votes < 1:
            raise HessGPTError(f"--code-votes {self.code_votes}: must be >= 1")
        if self.code_votes > 1 and not (self.model1 and not self.plain and self.tools):
            raise HessGPTError(f"--code-votes {self.code_votes} applies to a HessGPT --model1 with tools")
        if self.code_votes > 1 and self.max_batch > 1:   # the extra blocks would need rows of their own on the loop
            raise HessGPTError(f"--code-votes {self.code_votes} needs --max-batch 1 (batched serving does not vote)")
        return self


def build_backend(spec: "BackendSpec | argparse.Namespace"):
    """The chat backend for a spec (or for parsed flags: `BackendSpec.from_args`)."""
    if not isinstance(spec, BackendSpec):
        spec = BackendSpec.from_args(spec)
    spec.check()
    if spec.demo:
        return ScriptedBackend(token_delay=spec.token_delay, model_id="hessgpt-demo")
    if spec.hf_model:
        return HFBackend(spec.hf_model, adapter=spec.adapter, device=spec.device, dtype=spec.dtype,
                         load_in_4bit=spec.load_in_4bit, run_code=sandbox_run_code() if spec.tools else None,
                         registry=default_registry(spec.search_index, spec.http_allow or None) if spec.tools else None,
                         max_batch=spec.max_batch, prefill_chunk=spec.prefill_chunk)
    if spec.plain:
        return PlainChatBackend(spec.model1, device=spec.device)
    dual = DualModelBackend(spec.model1, spec.model2, device=spec.device, tools=spec.tools,
                            search_index=spec.search_index, http_allow=spec.http_allow or None,
                            config=RouterConfig(code_votes=spec.code_votes))
    if spec.max_batch == 1:
        return dual   # one request at a time, batch-1 decoding (the Scheduler runs one call at once)
    return BatchedDualBackend(dual, spec.max_batch, spec.prefill_chunk)
