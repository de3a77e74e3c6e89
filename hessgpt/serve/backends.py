"""Chat backends: what `hessgpt serve` (API + web page) talks to.

A backend turns OpenAI-style messages into a stream of `hessgpt.events.Event`s. The server never looks
inside a model: it only calls `stream_chat`, so the HessGPT dual model (`hessgpt.serve.dual.DualModelBackend`,
batched by serve/batching.py), model 1 alone (`hessgpt.serve.plain.PlainChatBackend`), any Hugging Face causal
LM (`HFBackend`) and a fixed script (`ScriptedBackend`, for tests and demos) are interchangeable; flags become
one of them in hessgpt/serve/build.py. Every backend samples, detokenizes and matches stop strings with the
engine's functions (`engine.sample`, `TextDecoder`, `StopMatcher`): one repetition-penalty rule.

The contract (`ChatBackend`):

- `model_id: str`, `context_length: int` (tokens) — shown by `GET /v1/models`.
- optional `generation_config: dict` — the model's recommended sampling (keys of a checkpoint's
  generation_config.json: temperature, top_k, top_p, repetition_penalty, max_new_tokens); the API, `chat` and
  `ask` use it for every field a request or flag does not set. Absent or {} = greedy.
- `stream_chat(messages, params, tools=None, cancel=None) -> Iterator[Event]`
    - `messages`: OpenAI-style dicts, already validated and normalised by the API:
      `{"role": "system"|"user"|"assistant"|"tool", "content": str}`; an assistant message may carry
      `"tool_calls": [{"id", "type": "function", "function": {"name", "arguments": JSON str}}]`;
      a tool message carries `"tool_call_id"` and `"name"` (filled in by the API from the matching call).
      `to_chat_format(messages)` converts them to the conversation format of docs/chat-format.md.
    - `params`: `hessgpt.engine.SamplingParams` (max_new_tokens already capped by the server limit).
    - `tools`: function definitions in the conversation format (`{"name", "description", "parameters"}`)
      or None. A backend that wants the caller to run a function yields a `tool_call` event
      (data={"name", "arguments": dict, "id"}) and ends with finish_reason "tool_calls".
    - `cancel`: a `threading.Event`; when set (client gone, stop string hit, server shutting down) the
      backend should stop within a token or two and end with finish_reason "cancelled".
    - yields events in order, the last one `Event("done", data={"finish_reason", "prompt_tokens",
      "completion_tokens"})`. Errors a user can fix raise `HessGPTError` (`ContextLengthError` when the
      prompt does not fit) before the first event, so the API can answer 400 instead of a broken stream.
    - it is called from a worker thread; the server runs at most `--concurrency` calls at once (1 by
      default), so a backend does not need to be thread-safe unless it is served with more. A backend with a
      `max_batch` attribute (serve/batching.py's `BatchedDualBackend`, what `--model1` serves; `HFBackend`, whose
      `max_batch` >= 2 decodes on the same engine loop) gets that many worker threads instead, and is thread-safe.

Stop strings are enforced by the server on the "text" deltas (a backend may also honour `params.stop`).
"""

from __future__ import annotations

import json
import sys
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch

from hessgpt.checkpoint import read_generation_config
from hessgpt.device import inference_dtype, pick_device
from hessgpt.engine import SamplingParams, TextDecoder, make_generator, sample
from hessgpt.errors import HessGPTError
from hessgpt.events import Event
from hessgpt.serve.batching import EngineLoop
from hessgpt.serve.hf_batching import HFBatchDecoder, unbatchable
from hessgpt.tools.calls import ToolCallError, read_tool_call, to_chat_format  # to_chat_format: part of the backend contract
from hessgpt.tools.router import TurnText


class ContextLengthError(HessGPTError):
    """The prompt (messages + tools) does not fit the model's context window."""


@runtime_checkable
class ChatBackend(Protocol):
    model_id: str
    context_length: int

    def stream_chat(
        self,
        messages: list[dict],
        params: SamplingParams,
        tools: list[dict] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]: ...


def done_event(finish_reason: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> Event:
    return Event("done", data={"finish_reason": finish_reason, "prompt_tokens": int(prompt_tokens),
                               "completion_tokens": int(completion_tokens)})


# ----------------------------------------------------------------------------------------------------
# ScriptedBackend: a fixed event script, for tests, the load benchmark and `hessgpt serve --demo`.


def split_words(text: str) -> list[str]:
    """'Hello big world' -> ['Hello', ' big', ' world']: word-sized deltas, as a tokenizer would stream."""
    return re.findall(r"\s*\S+|\s+", text)


Script = list[Event] | Callable[[list[dict], SamplingParams, list[dict] | None], Iterable[Event]]


class ScriptedBackend:
    """Replays a script of events, one text word per "token", with an optional delay per token.

    `script` is a list of events or a function `(messages, params, tools) -> events`. "text" events are
    split into word deltas (each counts as one completion token, so max_new_tokens gives "length");
    a final "done" is added if the script has none. It records every call in `calls` and counts the calls
    that saw `cancel` set in `cancelled` (tests use both).
    """

    def __init__(self, script: Script | None = None, *, token_delay: float = 0.0, model_id: str = "hessgpt-scripted",
                 context_length: int = 4096, generation_config: dict | None = None):
        self.script = script if script is not None else demo_script
        self.generation_config = dict(generation_config or {})
        self.token_delay = token_delay
        self.model_id = model_id
        self.context_length = context_length
        self.calls: list[dict] = []
        self.cancelled = 0
        self.started = threading.Event()  # set when a call starts producing (tests wait on it)
        self._lock = threading.Lock()

    def stream_chat(self, messages, params, tools=None, cancel=None):
        with self._lock:
            self.calls.append({"messages": messages, "params": params, "tools": tools})
        self.started.set()
        events = self.script(messages, params, tools) if callable(self.script) else self.script
        prompt_tokens = sum(len(split_words(str(m.get("content") or ""))) for m in messages)
        n = 0

        def stopped() -> bool:
            if cancel is not None and cancel.is_set():
                with self._lock:
                    self.cancelled += 1
                return True
            return False

        for ev in events:
            if ev.type == "done":
                yield ev
                return
            if ev.type != "text":
                if self.token_delay:
                    time.sleep(self.token_delay)
                if stopped():
                    yield done_event("cancelled", prompt_tokens, n)
                    return
                yield ev
                continue
            for piece in split_words(ev.text):
                if self.token_delay:
                    time.sleep(self.token_delay)
                if stopped():
                    yield done_event("cancelled", prompt_tokens, n)
                    return
                if n >= params.max_new_tokens:
                    yield done_event("length", prompt_tokens, n)
                    return
                n += 1
                yield Event("text", piece)
        yield done_event("stop", prompt_tokens, n)


def demo_script(messages: list[dict], params: SamplingParams, tools: list[dict] | None) -> list[Event]:
    """The `--demo` conversation: Markdown, a Python step (code, refined code, result) and an HTML artifact."""
    last = next((m.get("content") or "" for m in reversed(messages) if m["role"] == "user"), "")
    if tools and not any(m["role"] == "tool" for m in messages[-1:]):
        t = tools[0]
        props = list((t.get("parameters") or {}).get("properties", {}))
        args = {p: last[:40] for p in props[:1]}
        return [Event("tool_call", data={"name": t["name"], "arguments": args, "id": "call_demo0"}),
                done_event("tool_calls", 10, 5)]
    if messages and messages[-1]["role"] == "tool":
        return [Event("text", f"The function returned: {messages[-1].get('content', '')}")]
    return [
        Event("text", f"You said: *{last[:200]}*. I'll compute something to show the tool steps.\n\n"),
        Event("code", "import math\nprint(math.sqrt(144))", data={"lang": "python"}),
        Event("refined_code", "import math\nprint(math.sqrt(144))\n", data={"lang": "python"}),
        Event("result", "12.0\n", data={"status": "ok", "duration_ms": 12}),
        Event("text", "The square root of **144** is `12.0`. Here is a small page:\n\n"),
        Event("artifact", "<!doctype html><h1 style='font-family:sans-serif;color:#4f46e5'>Hello from HessGPT</h1>",
              data={"lang": "html"}),
        Event("text", "\n\n```python\nprint('highlighted code')\n```\n"),
    ]


# ----------------------------------------------------------------------------------------------------
# HFBackend: any local Hugging Face causal LM, with its own chat template.

TOOL_SYSTEM_PROMPT = (
    "You can run Python code. To run code, write exactly one block:\n"
    "```python\n# your code, printing what you need\n```\n"
    "and stop; its output will be given to you, then you continue your answer."
)

FUNCTION_SYSTEM_PROMPT = (
    "You can call these functions. To call one, write a block\n"
    "```tool_call\n{{\"name\": \"FUNCTION\", \"arguments\": {{...}}}}\n```\n"
    "and stop; the result will be given to you.\nFunctions:\n{tools}"
)

_END = object()
RunCode = Callable[[str], tuple[str, str]]  # source -> (status "ok"|"error"|"timeout"|..., output)


class FenceSplitter:
    """Splits streamed Markdown text into plain text and fenced blocks whose language is intercepted.

    feed(delta) returns a list of ("text", s) and ("block", lang, source) items as soon as they are certain;
    characters that may start a fence ("`" at the end) are held back until the next delta. Fences with
    other languages pass through as text (the page renders them as Markdown code).
    """

    def __init__(self, intercept: set[str]):
        self.intercept = intercept
        self.buf = ""
        self.block: str | None = None        # lang of the intercepted block we are inside
        self.passthrough = False             # inside a fence we do not intercept

    def feed(self, delta: str) -> list[tuple]:
        self.buf += delta
        out: list[tuple] = []
        while True:
            if self.block is not None:
                end = self.buf.find("```")
                if end < 0:
                    return out
                src, self.buf = self.buf[:end], self.buf[end + 3:]
                lang, self.block = self.block, None
                out.append(("block", lang, src.strip("\n")))
                if self.buf.startswith("\n"):
                    self.buf = self.buf[1:]
                continue
            start = self.buf.find("```")
            if start < 0:
                keep = len(self.buf) - len(self.buf.rstrip("`"))  # a trailing "`" or "``" may become a fence
                if len(self.buf) > keep:
                    out.append(("text", self.buf[: len(self.buf) - keep]))
                    self.buf = self.buf[len(self.buf) - keep:]
                return out
            if self.passthrough:  # closing fence of a block we show as text
                out.append(("text", self.buf[: start + 3]))
                self.buf, self.passthrough = self.buf[start + 3:], False
                continue
            nl = self.buf.find("\n", start)
            if nl < 0:  # the fence line is not complete yet: emit what precedes it, hold the rest
                if start:
                    out.append(("text", self.buf[:start]))
                    self.buf = self.buf[start:]
                return out
            lang = self.buf[start + 3: nl].strip().lower()
            if lang in self.intercept:
                if start:
                    out.append(("text", self.buf[:start]))
                self.buf, self.block = self.buf[nl + 1:], lang
            else:
                out.append(("text", self.buf[: nl + 1]))
                self.buf, self.passthrough = self.buf[nl + 1:], True

    def flush(self) -> list[tuple]:
        """End of stream: an unclosed intercepted block still counts as a block; the rest is text."""
        out = []
        if self.block is not None:
            out.append(("block", self.block, self.buf.strip("\n")))
        elif self.buf:
            out.append(("text", self.buf))
        self.buf, self.block = "", None
        return out


def shared_prefix(held: list[int], prompt: list[int]) -> int:
    """How many leading tokens of `prompt` a cache holding `held` can keep (at most len(prompt) - 1: the last
    prompt token is always computed, its logits give the next token)."""
    n = 0
    for a, b in zip(held, prompt):
        if a != b:
            break
        n += 1
    return min(n, len(prompt) - 1)


class KVState:
    """One turn's transformers KV cache and the token ids it holds (`ids`), reused across tool rounds: a round's
    prompt is the whole conversation re-encoded, so only the tokens after the longest common prefix with `ids`
    are new. `prefilled` counts the tokens computed per round's prompt; `sampled` is the last round's tokens.
    A batched backend keeps its cache on the engine loop instead: `row` (a serve/batching.py BatchedRow)."""

    def __init__(self):
        self.past, self.ids, self.prefilled, self.sampled = None, [], [], []
        self.row = None

    def close(self) -> None:
        if self.row is not None:
            self.row.close()
            self.row = None
        self.past = None

    def reuse(self, prompt: list[int]) -> int:
        """Crop the cache to its common prefix with `prompt` (keeping >= 1 token to compute); -> that length."""
        n = shared_prefix(self.ids, prompt)
        past = self.past
        if (n > 0 and past is not None and getattr(past, "is_croppable", True)
                and past.get_seq_length() == len(self.ids)):
            if len(self.ids) > n:
                past.crop(n - len(self.ids))  # a negative count: drop that many tokens from the end
            self.ids = self.ids[:n]
            return n
        self.past, self.ids = None, []  # nothing shared, or a cache that cannot be cut (sliding window): start over
        return 0


def hf_load_kwargs(device, dtype: str = "auto", load_in_4bit: bool = False) -> dict[str, Any]:
    """`from_pretrained` keyword arguments for `device` (a torch.device): dtype, and on CUDA device_map="auto"
    (accelerate) and, with `load_in_4bit`, bitsandbytes nf4. Raises a one-line HessGPTError when that cannot run."""
    import importlib.util

    torch_dtype = inference_dtype(device, dtype)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if load_in_4bit and device.type != "cuda":
        raise HessGPTError(f"--load-in-4bit needs a CUDA GPU (bitsandbytes nf4), the device here is {device.type}; "
                           "use --dtype bfloat16 or an int8/GGUF HessGPT checkpoint instead")
    if device.type == "cuda":
        if importlib.util.find_spec("accelerate") is None:
            raise HessGPTError("--hf-model on a GPU needs accelerate (device_map='auto'): pip install accelerate")
        kwargs["device_map"] = "auto"
    if load_in_4bit:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise HessGPTError("--load-in-4bit needs bitsandbytes: pip install bitsandbytes")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=torch_dtype)
    return kwargs


class HFBackend:
    """Any local causal LM loaded with `transformers`, prompted with its own chat template.

    - dtype: "auto" (hessgpt.device.inference_dtype: bf16 on a GPU with compute capability >= 8.0, fp16 on older
      GPUs, fp32 on CPU), "float32", "bfloat16" or "float16".
    - on GPU the model is placed with device_map="auto" (needs accelerate); `load_in_4bit=True` loads it in
      bitsandbytes nf4 with that compute dtype. Both are clear errors when impossible, never a silent fallback.
    - `adapter`: a PEFT LoRA adapter directory applied on top of the base.
    - `run_code(source) -> (status, output)`: when given, the system prompt teaches the ```python block
      convention; each block the model writes is cut out of the answer, yielded as a "code" event, run through
      `run_code` ("result" event), fed back to the model as the next user message, and generation continues
      (at most `max_tool_rounds` times). The KV cache is kept across those rounds: only the tokens after the
      longest common prefix with what the model has already seen are prefilled. Without it, code blocks stay
      ordinary Markdown.
    - function `tools` are taught with a ```tool_call JSON block; one is read by hessgpt.tools.calls (leniently, as
      the router does), returned as a "tool_call" event and the turn ends with finish_reason "tool_calls". A block
      that cannot be read is a "tool_call" event with data["error"] quoting it, fed back to the model (one round).
    - `registry` (a ToolRegistry: calculator, search, http_request, as HessGPT's router has): its tools are offered
      the same way beside the request's; a call to one is run here ("tool_call" then "tool_result" events, with
      its duration), fed back, and generation continues, within the same `max_tool_rounds` and KV cache.
    - ```html blocks are yielded as "artifact" events (previewed by the web page, never executed).
    - `max_batch` >= 2 (`hessgpt serve --hf-model --max-batch N`): up to N calls of `stream_chat` at once decode
      together on one engine loop (serve/batching.py's EngineLoop with serve/hf_batching.py's HFBatchDecoder),
      each turn one row for all its tool rounds; greedy answers are the same as alone. 1: one call at a time.
    - usage counts tokens, as the engine's router does: completion_tokens = the token ids sampled over all the
      turn's rounds (an EOS included), and max_new_tokens caps that sum.
    """

    def __init__(self, model_dir: str, adapter: str | None = None, *, dtype: str = "auto", device: str | None = None,
                 load_in_4bit: bool = False, run_code: RunCode | None = None, max_tool_rounds: int = 4,
                 registry=None, max_batch: int = 1, prefill_chunk: int = 256):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if max_batch < 1 or prefill_chunk < 1:
            raise HessGPTError(f"max_batch and prefill_chunk must be >= 1, got {max_batch} and {prefill_chunk}")
        if not os.path.isdir(model_dir):
            raise HessGPTError(f"--hf-model {model_dir!r}: not a directory (a local Hugging Face model folder)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        dev = pick_device(device)
        kwargs = hf_load_kwargs(dev, dtype, load_in_4bit)  # errors (no GPU for 4-bit, ...) before any loading
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if not getattr(self.tokenizer, "chat_template", None):
            raise HessGPTError(f"--hf-model {model_dir!r}: its tokenizer has no chat_template")
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        if "device_map" not in kwargs:
            model = model.to(dev)
        self.dtype = kwargs["dtype"]
        self.model_id = os.path.basename(os.path.normpath(model_dir))
        if adapter:
            from peft import PeftModel

            if not os.path.isdir(adapter):
                raise HessGPTError(f"--adapter {adapter!r}: not a directory (a PEFT adapter folder)")
            model = PeftModel.from_pretrained(model, adapter)
            self.model_id += "+" + os.path.basename(os.path.normpath(adapter))
        self.model = model.eval()
        self.device = next(model.parameters()).device
        cfg = model.config
        self.context_length = int(getattr(cfg, "max_position_embeddings", 0) or self.tokenizer.model_max_length or 2048)
        eos = model.generation_config.eos_token_id if getattr(model, "generation_config", None) else None
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.run_code = run_code
        self.registry = registry  # a hessgpt.tools.registry.ToolRegistry whose tools this backend runs itself
        self.max_tool_rounds = max_tool_rounds
        self.generation_config = read_generation_config(model_dir)  # its own generation_config.json, HF meaning
        if max_batch >= 2 and (why := unbatchable(self.model)) is not None:   # e.g. Mistral's sliding window
            print(f"--hf-model: {why}: requests decode one at a time (--max-batch 1)", file=sys.stderr)
            max_batch = 1
        self.max_batch, self.loop = max_batch, None   # the server runs max_batch calls at once
        if max_batch >= 2:   # they decode together on one engine loop (serve/hf_batching.py)
            self.loop = EngineLoop(decoder=HFBatchDecoder(self.model, max_batch, self.context_length),
                                   prefill_chunk=prefill_chunk)
            self.stats = self.loop.stats   # /health's "batch" (the server shows a backend's stats() when it has one)

    # -- prompt ----------------------------------------------------------------------------------
    def _template_messages(self, messages: list[dict], tools: list[dict] | None) -> list[dict]:
        """OpenAI-style messages -> plain role/content messages any chat template accepts."""
        extra = []
        if self.run_code is not None:
            extra.append(TOOL_SYSTEM_PROMPT)
        if tools:
            extra.append(FUNCTION_SYSTEM_PROMPT.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools)))
        out: list[dict] = []
        for m in messages:
            role, content = m["role"], m.get("content") or ""
            if role == "assistant" and m.get("tool_calls"):
                for c in to_chat_format([m])[0]["tool_calls"]:
                    content += "\n```tool_call\n" + json.dumps(c, ensure_ascii=False) + "\n```"
            if role == "tool":
                role, content = "user", f"Result of {m.get('name') or 'the tool'}:\n```\n{content}\n```"
            if out and out[-1]["role"] == role and role != "system":  # keep roles alternating
                out[-1]["content"] += "\n\n" + content
            else:
                out.append({"role": role, "content": content})
        if extra:
            sys_text = "\n\n".join(extra)
            if out and out[0]["role"] == "system":
                out[0]["content"] = out[0]["content"] + "\n\n" + sys_text
            else:
                out.insert(0, {"role": "system", "content": sys_text})
        return out

    def _encode(self, messages: list[dict]):
        """-> input ids (1, T). Templates without a system role get it merged into the first user message."""
        try:
            enc = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                                     return_tensors="pt")
        except Exception as e:  # jinja TemplateError, e.g. "System role not supported" / roles must alternate
            if not messages or messages[0]["role"] != "system":
                raise HessGPTError(f"the model's chat template rejected the conversation: {e}") from e
            merged = [dict(m) for m in messages[1:]]
            if merged and merged[0]["role"] == "user":
                merged[0]["content"] = messages[0]["content"] + "\n\n" + merged[0]["content"]
            enc = self.tokenizer.apply_chat_template(merged, add_generation_prompt=True, return_dict=True,
                                                     return_tensors="pt")
        return enc["input_ids"].to(self.device)

    # -- generation ------------------------------------------------------------------------------
    def _generate(self, input_ids, params: SamplingParams, max_new: int, cancel, generator,
                  kv: KVState | None = None) -> Iterator[str | None]:
        """Yields text deltas; ends with None after EOS (the model finished its turn). With `kv` (one per turn),
        the previous round's cache is reused for the prefix of `input_ids` it already holds."""
        kv = kv if kv is not None else KVState()
        if self.loop is not None:
            yield from self._generate_on_loop(input_ids, params, max_new, cancel, generator, kv)
            return
        decoder = TextDecoder(decode=lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True))
        start = kv.reuse(input_ids[0].tolist())
        ids = input_ids[:, start:]                     # (1, T - start): only the new tokens are prefilled
        kv.prefilled.append(int(ids.shape[1]))
        kv.sampled = generated = []
        seen = None   # [1, V] the repetition penalty's tokens: the whole sequence, prompt included (engine.process_logits)
        with torch.inference_mode():
            for _ in range(max_new):
                if cancel is not None and cancel.is_set():
                    return
                out = self.model(input_ids=ids, past_key_values=kv.past, use_cache=True)
                kv.past = out.past_key_values
                kv.ids.extend(ids[0].tolist())
                logits = out.logits[:, -1].float()  # (1, vocab)
                if seen is None:
                    seen = torch.zeros_like(logits, dtype=torch.bool)
                    seen[0, input_ids[0]] = True
                tok = int(sample(logits, params, generator, seen)[0])
                seen[0, tok] = True
                generated.append(tok)
                if tok in self.eos_ids or tok in params.stop_token_ids:
                    yield None
                    return
                delta = decoder.push(tok)
                if delta:
                    yield delta
                ids = torch.tensor([[tok]], device=self.device)

    def stream_chat(self, messages, params, tools=None, cancel=None):
        kv = KVState()   # the KV cache (batched: the engine loop's row), kept across this turn's tool rounds
        try:
            yield from self._stream_rounds(messages, params, tools, cancel, kv)
        finally:
            kv.close()   # a batched turn's row goes back to the loop, whether it ended or its client went away

    def _stream_rounds(self, messages, params, tools, cancel, kv: "KVState"):
        client = {t["name"] for t in tools or []}  # the caller's functions: a call to one ends the turn
        offered = list(tools or []) + [t for t in (self.registry.schemas() if self.registry else []) if t["name"] not in client]
        conv = self._template_messages(messages, offered or None)
        intercept = {"html"} | ({"python"} if self.run_code else set()) | ({"tool_call"} if offered else set())
        generator = make_generator(None if params.seed is None else int(params.seed), self.device)
        input_ids = self._encode(conv)
        prompt_tokens = int(input_ids.shape[1])
        if prompt_tokens >= self.context_length:
            raise ContextLengthError(f"the prompt is {prompt_tokens} tokens, the model's context is {self.context_length}")
        completion, rounds = 0, 0
        spacing = TurnText()  # text before and after a code step joined with "\n\n", as the HessGPT router does
        while True:
            budget = min(params.max_new_tokens - completion, self.context_length - int(input_ids.shape[1]))
            if rounds >= self.max_tool_rounds:
                intercept.discard("python")  # no more code runs: later blocks stay Markdown
                if not client:
                    intercept.discard("tool_call")
            splitter = FenceSplitter(intercept)
            answer, pending, ended = "", None, False
            kv.sampled = []   # this round's token ids, filled by the generation: what usage and the budget count
            stream = self._generate_text(input_ids, params, budget, cancel, generator, kv=kv)
            while pending is None:
                delta = next(stream, _END)
                if delta is None or delta is _END:  # EOS (None), or budget spent / cancelled (_END)
                    ended = delta is None
                    items = splitter.flush()
                else:
                    items = splitter.feed(delta)
                for item in items:
                    ev = self._on_item(item)
                    if ev is None:
                        continue
                    if ev.type == "text":
                        answer += ev.text
                        shown = spacing.push(ev.text)
                        if shown:
                            yield Event("text", shown)
                        continue
                    spacing.step()
                    yield ev
                    if ev.type in ("code", "tool_call"):
                        pending = ev  # stop this round: run the code / hand the call to the caller
                        break
                if delta is None or delta is _END:
                    break
            completion += len(kv.sampled)   # tokens, not text deltas (a character split over byte tokens is one delta)
            if cancel is not None and cancel.is_set():
                yield done_event("cancelled", prompt_tokens, completion)
                return
            bad_call = pending is not None and pending.type == "tool_call" and pending.data.get("error")
            if bad_call and rounds >= self.max_tool_rounds:
                yield done_event("stop", prompt_tokens, completion)
                return
            if not bad_call and pending is not None and pending.type == "tool_call" and \
                    (pending.data["name"] in client or not self.registry):
                yield done_event("tool_calls", prompt_tokens, completion)
                return
            if pending is not None:
                rounds += 1
                t0 = time.perf_counter()
                if bad_call:  # the parse error goes back to the model, which may write the call again
                    conv = conv + [{"role": "assistant", "content": answer + "\n```tool_call\n" + pending.text + "\n```"},
                                   {"role": "user", "content": f"Result of the tool call:\n```\n{pending.data['error']}\n```"}]
                elif pending.type == "tool_call":  # a registry tool (calculator, search, http_request): run it here
                    name = pending.data["name"]
                    output = self.registry.call(name, pending.data["arguments"])
                    yield Event("tool_result", output, data={"name": name, "id": pending.data["id"],
                                                             "duration_ms": round((time.perf_counter() - t0) * 1000, 1)})
                    call = json.dumps({"name": name, "arguments": pending.data["arguments"]}, ensure_ascii=False)
                    conv = conv + [{"role": "assistant", "content": answer + "\n```tool_call\n" + call + "\n```"},
                                   {"role": "user", "content": f"Result of {name}:\n```\n{output}\n```"}]
                else:
                    status, output = self.run_code(pending.text)
                    yield Event("result", output, data={"status": status, "duration_ms": round((time.perf_counter() - t0) * 1000, 1)})
                    conv = conv + [{"role": "assistant", "content": answer + "\n```python\n" + pending.text + "\n```"},
                                   {"role": "user", "content": f"Output ({status}):\n```\n{output}\n```"}]
                input_ids = self._encode(conv)
                if completion >= params.max_new_tokens or input_ids.shape[1] >= self.context_length:
                    yield done_event("length", prompt_tokens, completion)
                    return
                continue
            yield done_event("stop" if ended or pending is not None else "length", prompt_tokens, completion)
            return

    def _generate_on_loop(self, input_ids, params, max_new, cancel, generator, kv: KVState) -> Iterator[str | None]:
        """`_generate` on the engine loop (`max_batch` >= 2): the turn's row decodes with the other requests'. The
        first round opens the row (with the turn's generator); a later one cuts it back to the prefix it shares
        with the re-encoded conversation and feeds the rest, as `KVState.reuse` crops the batch-1 cache. Every
        sampled token is fed back (the loop's step already put it in the cache)."""
        decoder = TextDecoder(decode=lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True))
        prompt = input_ids[0].tolist()
        start = shared_prefix(kv.ids, prompt) if kv.row is not None else 0
        if start:
            kv.row.feed(prompt[start:], keep=start)
        else:
            if kv.row is not None:
                kv.row.close()
            kv.row = self.loop.open(prompt, params, generator)
        kv.ids = list(prompt)
        kv.prefilled.append(len(prompt) - start)
        kv.sampled = generated = []
        for _ in range(max_new):
            if cancel is not None and cancel.is_set():
                return
            tok = kv.row.next_token()
            kv.row.feed([tok])
            kv.ids.append(tok)
            generated.append(tok)
            if tok in self.eos_ids or tok in params.stop_token_ids:
                yield None
                return
            delta = decoder.push(tok)
            if delta:
                yield delta

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()

    def _generate_text(self, input_ids, params, budget, cancel, generator, kv=None) -> Iterator[str | None]:
        """Text deltas of one generation round, at most `budget` tokens, whose ids go in `kv.sampled` (the EOS
        token included, as the engine's router counts it): completion_tokens and max_new_tokens across rounds
        count them. A hook tests override to script the model's output."""
        return self._generate(input_ids, params, budget, cancel, generator, kv=kv)

    def _on_item(self, item: tuple) -> Event | None:
        if item[0] == "text":
            return Event("text", item[1]) if item[1] else None
        _, lang, src = item
        if lang == "html":
            return Event("artifact", src, data={"lang": "html"})
        if lang == "python":
            return Event("code", src, data={"lang": "python"})
        # tool_call: {"name": ..., "arguments": {...}}, read leniently (hessgpt.tools.calls, as the router does)
        call = read_tool_call(src, f"call_{os.urandom(6).hex()}")
        if isinstance(call, ToolCallError):  # an error event quoting the text; its message goes back to the model
            return Event("tool_call", src, data={"name": None, "arguments": {}, "error": call.message})
        return Event("tool_call", data={"name": call.name, "arguments": call.arguments, "id": call.id})
