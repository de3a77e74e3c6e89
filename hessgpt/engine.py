"""Generation engine, separate from the model: static KV cache, prefill/decode split, sampling, streaming,
batched generation, beam search, and the token-level hooks the tool loop (tools/router.py) drives.

    engine = Engine(model, tokenizer)
    for text in engine.stream_text(tokenizer.render_for_generation(conv), SamplingParams(temperature=0.7)):
        print(text, end="")

The tool loop uses a `Generation`: `tok = gen.next_token()` samples from the current logits; `gen.feed(ids)`
runs those ids (the sampled token, or an injected `<|result|>...<|end|>`) through the model and the cache.
`naive_generate` (a full forward per step, no cache) is the reference the engine must match token for token.

Several sequences at once: `engine.batch(max_rows)` is a `BatchDecoder` (admit a prompt -> row id, `step()` ->
{row: token} for every running row in one batched forward, `feed(row, ids)`, `release(row)` frees the slot for
the next row); `generate_batch` runs it to the end. Each row keeps its own positions, cache slot and
SamplingParams, and decodes the same tokens as alone. On CPU its linears go through the native batched GEMM
(kernels.rows_matmul: each weight read once per step for all rows); a single sequence keeps the batch-1 C step.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch

from hessgpt.errors import HessGPTError
from hessgpt.inference import InferenceModel, int4_inference_model, int8_inference_model


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0          # 0 = greedy
    top_k: int = 0                    # 0 = off
    top_p: float = 1.0                # 1 = off
    repetition_penalty: float = 1.0   # 1 = off
    stop: list[str] = field(default_factory=list)         # stop strings (not included in the output)
    stop_token_ids: list[int] = field(default_factory=list)
    seed: int | None = None

    def validate(self) -> "SamplingParams":
        if self.max_new_tokens < 0:
            raise HessGPTError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise HessGPTError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise HessGPTError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise HessGPTError(f"top_k must be >= 0, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise HessGPTError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        return self


GENERATION_KEYS = ("temperature", "top_k", "top_p", "repetition_penalty", "max_new_tokens")


def sampling_params(gen: dict | None = None, **overrides) -> SamplingParams:
    """SamplingParams from a generation config (checkpoint.read_generation_config: the keys a folder sets; the
    others keep SamplingParams' defaults, which are checkpoint.DEFAULT_GENERATION_CONFIG). `overrides` whose
    value is None keep the config's value; a top_k of None means off (0)."""
    kw = {k: v for k, v in (gen or {}).items() if k in GENERATION_KEYS}
    if "top_k" in kw:
        kw["top_k"] = kw["top_k"] or 0
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return SamplingParams(**kw).validate()


# ---- sampling -----------------------------------------------------------------------------------


def _top_p_in_top(logits: torch.Tensor, top_p: float, k: int = 64) -> torch.Tensor | None:
    """process_logits' top-p cut when every row's nucleus lies within its k most likely tokens (the usual case:
    a sort of k values instead of the whole vocabulary, ~0.1 ms vs 3 ms at 50k): the same kept tokens as the
    full sort; None when some row needs more than k."""
    if logits.size(-1) <= k:
        return None
    top, order = torch.topk(logits, k, dim=-1)                             # sorted, descending
    probs = (top - torch.logsumexp(logits, -1, keepdim=True)).exp()     # their probabilities among all V
    cum = probs.cumsum(-1)
    if bool((cum[:, -1] < top_p).any()):
        return None
    keep = top.masked_fill(cum - probs > top_p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, keep)


def process_logits(logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None = None) -> torch.Tensor:
    """logits [B, V] (fp32) -> adjusted logits [B, V]: repetition penalty, temperature, top-k, top-p.

    `seen` [B, V] bool marks the tokens the repetition penalty applies to: every token of the sequence so far —
    the prompt, injected tool results and generated tokens alike. That is the one rule of every backend (the
    engine's Generation, BatchDecoder, naive_generate and serve/backends.HFBackend all build it that way)."""
    logits = logits.float()
    if params.repetition_penalty != 1.0 and seen is not None:
        # CTRL/HF convention: seen tokens' positive logits are divided, negative ones multiplied
        penalised = torch.where(logits > 0, logits / params.repetition_penalty, logits * params.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if params.temperature == 0:
        return logits
    logits = logits / params.temperature
    if params.top_k > 0:
        k = min(params.top_k, logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        nucleus = _top_p_in_top(logits, params.top_p)
        if nucleus is not None:
            return nucleus
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        cum = probs.cumsum(-1)
        drop = cum - probs > params.top_p          # keep the smallest prefix whose mass reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None,
           seen: torch.Tensor | None = None) -> torch.Tensor:
    """logits [B, V] -> next tokens [B]."""
    logits = process_logits(logits, params, seen)
    if params.temperature == 0:
        return logits.argmax(-1)
    probs = logits.softmax(-1)
    if generator is not None and generator.device.type != probs.device.type:
        raise HessGPTError(f"the sampling generator is on {generator.device} but the logits are on {probs.device}")
    # inverse transform sampling: one uniform per row against the cumulative distribution (float64), the law
    # of torch.multinomial at a tenth of its cost on a 50k vocabulary (~0.1 ms vs 1 ms a row on this CPU)
    cdf = probs.double().cumsum(-1)                                       # [B, V]
    total = cdf[:, -1:]
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=torch.float64) * total
    idx = torch.searchsorted(cdf, u, right=True)                          # the first token whose cdf passes u
    last = (cdf < total).sum(-1, keepdim=True)                            # the last token of non-zero probability
    return torch.minimum(idx, last).squeeze(-1)


def make_generator(seed: int | None, device) -> torch.Generator | None:
    """A seeded generator on `device`, the device of the logits it samples from (torch.rand needs
    both on the same one: a CPU generator with CUDA logits is an error)."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)


# ---- streaming text -----------------------------------------------------------------------------


class TextDecoder:
    """Incremental detokenizer: emits text only once its UTF-8 bytes are complete (never half a character).

    `decode(ids) -> str` defaults to `tokenizer.decode`; a backend on another tokenizer passes its own (the HF
    backend: transformers' decode with skip_special_tokens=True)."""

    def __init__(self, tokenizer=None, decode: Callable[[list[int]], str] | None = None):
        if decode is None and tokenizer is None:
            raise HessGPTError("TextDecoder needs a tokenizer or a decode function")
        self.tok = tokenizer
        self.decode = decode or tokenizer.decode
        self.ids: list[int] = []
        self.prefix = 0   # start of the window decoded for context
        self.read = 0     # ids before this were already emitted

    def push(self, token: int) -> str:
        self.ids.append(token)
        prefix_text = self.decode(self.ids[self.prefix:self.read])
        text = self.decode(self.ids[self.prefix:])
        if text.endswith("\ufffd") or len(text) <= len(prefix_text):
            return ""  # an incomplete multi-byte character: wait for more tokens
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(prefix_text):]

    def flush(self) -> str:
        text = self.decode(self.ids[self.prefix:])
        prefix_text = self.decode(self.ids[self.prefix:self.read])
        self.prefix = self.read = len(self.ids)
        return text[len(prefix_text):]


class StopMatcher:
    """Holds back text that may be the start of a stop string; `push` returns (text to emit, stopped)."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def push(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        self.pending += text
        for s in self.stops:
            i = self.pending.find(s)
            if i >= 0:
                out, self.pending = self.pending[:i], ""
                return out, True
        keep = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


# ---- the engine ---------------------------------------------------------------------------------


class Generation:
    """One sequence in progress on the engine's KV cache (batch 1).

    `logits` always holds the next-token logits for the sequence so far. `next_token()` samples from them;
    `feed(ids)` appends ids (sampled or injected) to the sequence and updates `logits`.
    """

    def __init__(self, engine: "Engine", prompt_ids: list[int], params: SamplingParams):
        self.engine, self.params = engine, params.validate()
        self.ids: list[int] = []
        self.generator = make_generator(params.seed, engine.device)
        self.seen = torch.zeros(1, engine.vocab_size, dtype=torch.bool, device=engine.device)
        self.pos = 0
        self.logits: torch.Tensor | None = None
        if not prompt_ids:
            raise HessGPTError("the prompt is empty")
        self.feed(prompt_ids)

    @property
    def space_left(self) -> int:
        return self.engine.max_len - self.pos

    def feed(self, ids: list[int], keep: int | None = None) -> None:
        """Append `ids`; with `keep`, first cut the sequence back to its first `keep` tokens (the cache is
        indexed by position: the cut tokens' keys and values are overwritten, never attended to)."""
        if keep is not None:
            if not 0 < keep <= self.pos:
                raise HessGPTError(f"feed keep={keep}: must be in 1..{self.pos} (the sequence's tokens)")
            if not ids:
                raise HessGPTError("a sequence cut back needs ids to feed (its next token is sampled after them)")
            self.pos, self.ids = keep, self.ids[:keep]
            self.seen.zero_()
            self.seen[0, torch.tensor(self.ids, dtype=torch.long, device=self.engine.device)] = True
        if not ids:
            return
        if self.pos + len(ids) > self.engine.max_len:
            raise HessGPTError(f"sequence of {self.pos + len(ids)} tokens exceeds the context window ({self.engine.max_len})")
        x = torch.tensor([ids], dtype=torch.long, device=self.engine.device)
        self.logits = self.engine._forward(x, self.pos)
        self.seen[0, x[0]] = True
        self.ids.extend(ids)
        self.pos += len(ids)

    def next_token(self) -> int:
        return int(sample(self.logits, self.params, self.generator, self.seen)[0])


@dataclass
class _Row:
    """One sequence of a BatchDecoder: its own cache slot, position, next-token logits, sampler and stops."""

    slot: int
    params: SamplingParams
    stop_ids: set
    generator: torch.Generator | None
    seen: torch.Tensor                 # [1, V] bool: tokens in the sequence (repetition penalty)
    logits: torch.Tensor | None = None # [1, V] fp32 next-token logits
    pos: int = 0                       # tokens in the cache slot
    ids: list = field(default_factory=list)   # those tokens (len pos): a released slot keeps them for prefix reuse
    out: list = field(default_factory=list)   # generated tokens (stop token excluded)
    limit: int = 0                     # len(out) at which the row stops (max_new_tokens, or set by feed)
    unfed: list = field(default_factory=list) # the last token, when the row finished on it (not in the cache)
    todo: list = field(default_factory=list)  # tokens to write before its next sample (deferred admit / feed)
    done: bool = False


RIDE_TOKENS = 48   # queued chunks up to this long share the decode step's forward (BatchDecoder.step)


class BatchDecoder:
    """Several sequences decoded together, one batched forward per step, on a cache of `max_rows` slots.
    Rows join (`admit`) and leave (`release`) between steps; a released row's slot goes back to the free
    pool and the next admitted row reuses it. The loop a server drives:

        batch = engine.batch(max_rows=8)
        row = batch.admit(prompt_ids, params)       # prefill into a free slot -> row id
        while batch.active():
            for row, tok in batch.step().items():   # one token for every running row
                ...                                 # stream it
            for row in batch.finished():
                batch.release(row)

    Each row has its own SamplingParams (temperature, top-k/p, repetition penalty, seed, max_new_tokens,
    stop token ids, stop strings) and so decodes exactly what `Engine.generate` decodes for it alone (greedy:
    token for token, up to float rounding between the batched GEMM and the batch-1 kernels). `feed(row, ids)`
    injects tokens into one row (a tool result), like `Generation.feed`.
    Runs on `InferenceModel.forward_rows`: on CPU its linears are the native hg_gemm (each weight read once
    per step for all rows), attention and norms PyTorch ops; single-sequence generation keeps the batch-1 C
    step. The cache holds max_rows x context_length positions per layer (allocated here).

    Prefix reuse (llama.cpp server's cached prompt, per slot): a released slot keeps its tokens' keys and
    values, so `admit` puts a new prompt in the free slot whose cached tokens share its longest prefix and
    prefills only the rest (a served conversation's system prompt and earlier turns are computed once).
    `reused_tokens` / `prefilled_tokens` count the prompt tokens taken from a slot and those computed.

    Deferred prompts (a server's chunked prefill): `admit(..., defer=True)` and `feed(..., defer=True)` only
    queue the tokens; each `step(budget=N)` writes up to N queued tokens in the same forward as the decode
    tokens of the other rows (on CPU one native call, kernels.rows_step: the weights read once for both), and
    a row is sampled again once all its queued tokens are in the cache."""

    deferred_feeds = True   # admit/feed take defer=True (serve/batching.py's EngineLoop relies on it)

    def __init__(self, engine: "Engine", max_rows: int = 8):
        if max_rows < 1:
            raise HessGPTError(f"max_rows must be >= 1, got {max_rows}")
        if engine.fast is None:
            raise HessGPTError("batched decoding needs the engine's fast path (CPU or CUDA), not fast=False")
        engine._refresh_fast()
        self.engine, self.fast, self.max_rows = engine, engine.fast, max_rows
        self.cache = self.fast.new_slot_cache(max_rows, engine.max_len)
        self.free = list(range(max_rows - 1, -1, -1))   # free slots, the lowest popped first
        self.rows: dict[int, _Row] = {}
        self._next_id = 0
        self.slot_ids: dict[int, list[int]] = {}   # free slot -> the tokens whose keys/values it still holds
        self.reused_tokens = self.prefilled_tokens = 0

    def cached_prefix(self, prompt_ids: list[int]) -> int:
        """How many leading tokens of `prompt_ids` a free slot already holds (at most all but the last: the
        next token's logits need one position computed); 0 when no slot is free."""
        return self._best_slot(list(prompt_ids))[1]

    def _best_slot(self, prompt_ids: list[int]) -> tuple[int | None, int]:
        best, n_best = None, -1
        for slot in reversed(self.free):          # lowest slot first: ties keep the lowest
            cached = self.slot_ids.get(slot, [])
            n = 0
            for a, b in zip(cached, prompt_ids[:-1]):
                if a != b:
                    break
                n += 1
            if n > n_best:
                best, n_best = slot, n
        return best, max(n_best, 0)

    def admit(self, prompt_ids: list[int], params: SamplingParams, generator: torch.Generator | None = None,
              defer: bool = False) -> int:
        """Prefill `prompt_ids` into a free slot; returns the row id. `generator` overrides the one made from
        params.seed (rows sharing one generator). defer: queue the prompt for the next steps instead."""
        params.validate()
        prompt_ids = list(prompt_ids)
        if not prompt_ids:
            raise HessGPTError("the prompt is empty")
        if len(prompt_ids) > self.engine.max_len:
            raise HessGPTError(f"prompt of {len(prompt_ids)} tokens exceeds the context window ({self.engine.max_len})")
        if not self.free:
            raise HessGPTError(f"the batch is full ({self.max_rows} rows); release a finished row first")
        dev = self.engine.device
        slot, shared = self._best_slot(prompt_ids)
        self.free.remove(slot)
        row = _Row(slot=slot, params=params,
                   stop_ids=set(params.stop_token_ids or self.engine.default_stop_ids()),
                   generator=generator if generator is not None else make_generator(params.seed, dev),
                   seen=torch.zeros(1, self.engine.vocab_size, dtype=torch.bool, device=dev))
        rid, self._next_id = self._next_id, self._next_id + 1
        self.rows[rid] = row
        if shared:                                  # the slot's keys/values of these positions are this prompt's
            row.pos, row.ids = shared, prompt_ids[:shared]
            row.seen[0, torch.tensor(row.ids, device=dev)] = True
        self.slot_ids.pop(slot, None)
        self.reused_tokens += shared
        self.prefilled_tokens += len(prompt_ids) - shared
        if defer:
            row.todo = prompt_ids[shared:]
        else:
            self._feed(row, prompt_ids[shared:])
        row.limit = params.max_new_tokens
        row.done = row.limit == 0
        return rid

    def _feed(self, row: _Row, ids: list[int]) -> None:
        if row.pos + len(ids) > self.engine.max_len:
            raise HessGPTError(f"sequence of {row.pos + len(ids)} tokens exceeds the context window ({self.engine.max_len})")
        dev = self.engine.device
        x = torch.tensor([ids], dtype=torch.long, device=dev)
        row.logits = self.fast.forward_rows(x, torch.tensor([row.pos], device=dev), [row.slot], self.cache).float()
        row.seen[0, x[0]] = True
        row.pos += len(ids)
        row.ids.extend(ids)

    def feed(self, row: int, ids: list[int], max_new_tokens: int | None = None, defer: bool = False) -> None:
        """Append `ids` (e.g. an injected tool result) to one row, after its last generated token; its next
        token is sampled after them. A finished row runs again, for `max_new_tokens` more tokens (default: its
        params' max_new_tokens). A stop token that ended the row is not in the sequence: include it in `ids`
        if it belongs there."""
        r = self._get(row)
        ids = r.unfed + list(ids)
        if max_new_tokens is not None and max_new_tokens < 0:
            raise HessGPTError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if ids and defer:
            if r.pos + len(r.todo) + len(ids) > self.engine.max_len:
                raise HessGPTError(f"sequence of {r.pos + len(r.todo) + len(ids)} tokens exceeds the context window ({self.engine.max_len})")
            r.todo.extend(ids)
            r.unfed = []
        elif ids:
            if r.todo:
                raise HessGPTError(f"row {row} has {len(r.todo)} queued tokens: feed it with defer=True")
            self._feed(r, ids)
            r.unfed = []
        if r.done:
            r.limit = len(r.out) + (r.params.max_new_tokens if max_new_tokens is None else max_new_tokens)
            r.done = r.limit == len(r.out)

    def _get(self, row: int) -> _Row:
        if row not in self.rows:
            raise HessGPTError(f"no row {row} in the batch (released, or never admitted)")
        return self.rows[row]

    def pending(self, row: int) -> int:
        """How many queued tokens (defer=True) the row still has to write before it is sampled again."""
        return len(self._get(row).todo)

    def active(self) -> list[int]:
        """Rows still decoding."""
        return [rid for rid, r in self.rows.items() if not r.done]

    def finished(self) -> list[int]:
        """Rows done (stop token, stop string, max_new_tokens or the context window), not yet released."""
        return [rid for rid, r in self.rows.items() if r.done]

    def output(self, row: int) -> list[int]:
        """The tokens generated so far for `row` (its stop token excluded)."""
        return list(self._get(row).out)

    def release(self, row: int) -> list[int]:
        """Remove `row` (finished or not, e.g. a client gone); its slot is reused. Returns its tokens."""
        self._get(row)
        r = self.rows.pop(row)
        self.free.append(r.slot)
        self.free.sort(reverse=True)
        self.slot_ids[r.slot] = r.ids
        return r.out

    def _stop_string(self, r: _Row) -> bool:
        tok = self.engine.tokenizer
        if not r.params.stop or tok is None:
            return False
        window = 4 * max(len(s) for s in r.params.stop) + 4   # a character is at most 4 byte tokens
        text = tok.decode(r.out[-window:])
        return any(s and s in text for s in r.params.stop)

    def step(self, rows: Iterable[int] | None = None, budget: int | None = None) -> dict[int, int]:
        """Sample one token for every running row, then run all rows that continue through one batched
        forward. `rows`: only these row ids advance (e.g. the server leaves out a row whose tool is running);
        the others keep their position, logits and sampler state untouched. None = every running row.
        Rows with queued tokens (defer=True) are not sampled: up to `budget` of their tokens (None: all) go
        into the same forward. Returns {row: token} for the tokens generated this step (a stop token is not
        returned: the row is just marked finished)."""
        chosen = list(self.rows.items()) if rows is None else [(rid, self._get(rid)) for rid in sorted(set(rows))]
        emitted: dict[int, int] = {}
        cont: list[tuple[_Row, int]] = []
        for rid, r in chosen:
            if r.done or r.todo:
                continue
            tok = int(sample(r.logits, r.params, r.generator, r.seen)[0])
            if tok in r.stop_ids:
                r.done = True
                continue
            r.out.append(tok)
            emitted[rid] = tok
            if len(r.out) >= r.limit or r.pos >= self.engine.max_len or self._stop_string(r):
                r.done, r.unfed = True, [tok]
                continue
            cont.append((r, tok))
        left = float("inf") if budget is None else budget
        chunks: list[tuple[_Row, list[int]]] = []      # queued tokens written this step
        for _, r in chosen:
            if r.todo and left > 0:
                chunks.append((r, r.todo[:int(min(left, len(r.todo)))]))
                left -= len(chunks[-1][1])
        # short chunks ride in the decode step's ragged native forward; a long one is faster through its own
        # prefill forward (PyTorch's GEMM: 990 vs 460 tok/s at 512 tokens, SmolLM2-135M on 2 cores)
        ride = [(r, ids) for r, ids in chunks if len(ids) <= RIDE_TOKENS]
        if ride and self._forward_tokens(cont, ride):
            cont, chunks = [], [(r, ids) for r, ids in chunks if len(ids) > RIDE_TOKENS]
        for r, ids in chunks:                          # no ragged native step here: each chunk its own forward
            r.todo = r.todo[len(ids):]
            self._feed(r, ids)
        if cont:
            dev = self.engine.device
            cont.sort(key=lambda c: c[0].slot)                       # slot order: contiguous slots read as views
            ids = torch.tensor([[t] for _, t in cont], dtype=torch.long, device=dev)          # [B, 1]
            pos = torch.tensor([r.pos for r, _ in cont], dtype=torch.long, device=dev)        # [B]
            logits = self.fast.forward_rows(ids, pos, [r.slot for r, _ in cont], self.cache).float()   # [B, V]
            for i, (r, t) in enumerate(cont):
                r.logits = logits[i:i + 1]
                r.seen[0, t] = True
                r.pos += 1
                r.ids.append(t)
        return emitted

    def _forward_tokens(self, cont: list[tuple[_Row, int]], chunks: list[tuple[_Row, list[int]]]) -> bool:
        """The decode tokens `cont` and the queued chunks in one ragged forward (InferenceModel.forward_tokens);
        False (nothing done) where that path does not exist."""
        seqs = [(r, [t]) for r, t in cont] + chunks
        tokens, pos, slots, out = [], [], [], []
        for r, ids in seqs:
            tokens += ids
            pos += range(r.pos, r.pos + len(ids))
            slots += [r.slot] * len(ids)
            out.append(len(tokens) - 1)
        logits = self.fast.forward_tokens(tokens, pos, slots, self.cache, out)
        if logits is None:
            return False
        dev = self.engine.device
        for i, (r, ids) in enumerate(seqs):
            r.logits = logits[i:i + 1]
            r.seen[0, torch.tensor(ids, device=dev)] = True
            r.pos += len(ids)
            r.ids.extend(ids)
        for r, ids in chunks:
            r.todo = r.todo[len(ids):]
        return True


class Engine:
    """Generation on a model. On CPU and CUDA the engine decodes through `InferenceModel` (inference.py), an
    inference-only, pre-laid-out copy of the weights built here (fused projections, in-place RoPE, its own KV
    cache); `fast=False`, the default on other devices (MPS), uses the Transformer's own cache instead (why
    both exist, measured: model.py's docstring). `int8=True` stores the linear weights as int8 with
    per-output-channel scales (kernels/int8.py; `quantize_int8()` switches an existing engine) for CPU chat;
    `int4=True` as llama.cpp's Q4_0 blocks (kernels/int4.py; `quantize_int4()`). A quantized checkpoint folder
    (quantize.py) decodes with its own scheme by default.
    The view is rebuilt if the model's weights change (e.g. an Engine kept across training steps)."""

    def __init__(self, model, tokenizer=None, max_len: int | None = None, device=None, int8: bool = False,
                 fast: bool | None = None, int4: bool = False):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = device or next(model.parameters()).device
        self.vocab_size = model.config.vocab_size
        self.max_len = max_len or model.config.context_length
        self._cache_batch = 0
        self.int4 = int4 or bool(getattr(model, "int4_state", None))
        self.int8 = not self.int4 and (int8 or bool(getattr(model, "int8_state", None)))
        if fast is None:
            fast = torch.device(self.device).type in ("cpu", "cuda")
        if (self.int8 or self.int4) and not fast:
            raise HessGPTError(f"{'int4' if self.int4 else 'int8'} weights need the fast decode path (CPU or CUDA)")
        self.fast = None
        self._fast_key = None
        if fast:
            self._build_fast()

    # ---- the forward every generation method goes through ---------------------------------------

    def _weights_key(self):
        return tuple((id(p), p._version) for p in self.model.parameters())

    def _build_fast(self) -> None:
        self.fast = int4_inference_model(self.model) if self.int4 else \
            int8_inference_model(self.model) if self.int8 else InferenceModel(self.model)
        self._fast_key = self._weights_key()

    def quantize_int8(self) -> None:
        """Switch this engine to int8 weights (kernels/int8.py) in place; the model itself is not modified."""
        if self.fast is None:
            raise HessGPTError("int8 weights need the fast decode path (CPU or CUDA)")
        self.int8, self.int4 = True, False
        self._build_fast()
        self.fast.setup_cache(max(self._cache_batch, 1), self.max_len)

    def quantize_int4(self) -> None:
        """Switch this engine to int4 Q4_0 weights (kernels/int4.py) in place; the model itself is not modified."""
        if self.fast is None:
            raise HessGPTError("int4 weights need the fast decode path (CPU or CUDA)")
        self.int8, self.int4 = False, True
        self._build_fast()
        self.fast.setup_cache(max(self._cache_batch, 1), self.max_len)

    def _refresh_fast(self) -> None:
        if self._fast_key != self._weights_key():   # weights changed since the view was built
            self._build_fast()

    def _ensure_cache(self, batch: int) -> None:
        if self.fast is not None:
            self._refresh_fast()
            self.fast.setup_cache(batch, self.max_len)
            return
        if self._cache_batch != batch or self.model.cache_len != self.max_len:
            p = next(self.model.parameters())
            self.model.setup_caches(batch, self.max_len, dtype=p.dtype, device=self.device)
            self._cache_batch = batch

    def _forward(self, ids: torch.Tensor, pos: int) -> torch.Tensor:
        """ids [B, T] at positions pos..pos+T-1 of the cache -> next-token logits [B, V] (fp32)."""
        if self.fast is not None:
            return self.fast.forward(ids, pos).float()
        return self._model_forward(ids, pos)

    def _model_forward(self, ids: torch.Tensor, pos: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """`_forward` on the Transformer's own cache (fast=False); `mask` [B, 1, T, pos+T] bool (True = attend)
        replaces the causal default (`_generate_batch_padded` hides the left padding with it)."""
        T = ids.shape[1]
        with torch.inference_mode():
            logits = self.model(ids, input_pos=torch.arange(pos, pos + T, device=self.device), mask=mask, kv_len=pos + T)
        return logits[:, -1].float()

    def _reorder_cache(self, rows: torch.Tensor) -> None:
        if self.fast is not None:
            self.fast.reorder_cache(rows)
            return
        for layer in self.model.model.layers:
            c = layer.self_attn.kv_cache
            c.k.copy_(c.k.index_select(0, rows))
            c.v.copy_(c.v.index_select(0, rows))

    def default_stop_ids(self) -> list[int]:
        if self.tokenizer is None:
            return []
        return self.tokenizer.stop_ids  # <|end|>, </s> and an imported template's end-of-turn (e.g. <|im_end|>)

    def session(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        self._ensure_cache(1)
        return Generation(self, list(prompt_ids), params)

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[int]:
        """Generated token ids, one by one; stops at a stop token (not yielded), max_new_tokens or the context."""
        gen = self.session(prompt_ids, params)
        stop_ids = set(params.stop_token_ids or self.default_stop_ids())
        for _ in range(params.max_new_tokens):
            tok = gen.next_token()
            if tok in stop_ids:
                return
            yield tok
            if gen.space_left <= 0:
                return
            gen.feed([tok])

    def generate(self, prompt_ids: list[int], params: SamplingParams) -> list[int]:
        return list(self.stream(prompt_ids, params))

    def stream_text(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[str]:
        """Text deltas, never splitting a UTF-8 character, with stop strings removed."""
        if self.tokenizer is None:
            raise HessGPTError("stream_text needs a tokenizer")
        dec, stops = TextDecoder(self.tokenizer), StopMatcher(params.stop)
        for tok in self.stream(prompt_ids, params):
            text, stopped = stops.push(dec.push(tok))
            if text:
                yield text
            if stopped:
                return
        text, stopped = stops.push(dec.flush())
        tail = text if stopped else text + stops.flush()
        if tail:
            yield tail

    # ---- batched generation ---------------------------------------------------------------

    def batch(self, max_rows: int = 8) -> BatchDecoder:
        """A step-level batched decoder (rows join and leave between steps) on its own slot cache."""
        return BatchDecoder(self, max_rows)

    def generate_batch(self, prompts: list[list[int]], params: "SamplingParams | list[SamplingParams]") -> list[list[int]]:
        """Several prompts at once, each at its own positions (no padding), one batched forward per step.
        `params`: one SamplingParams for all rows (they share one seeded generator) or one per prompt (each its
        own). Returns each row's new tokens, cut at its first stop token."""
        if self.fast is None:
            if isinstance(params, list):
                raise HessGPTError("per-row SamplingParams need the fast path (fast=True)")
            return self._generate_batch_padded(prompts, params)
        per_row = params if isinstance(params, list) else [params] * len(prompts)
        if len(per_row) != len(prompts):
            raise HessGPTError(f"{len(per_row)} SamplingParams for {len(prompts)} prompts")
        if any(not p for p in prompts):
            raise HessGPTError("a prompt in the batch is empty")
        if not prompts:
            return []
        for p in per_row:
            p.validate()
        shared = None if isinstance(params, list) else make_generator(params.seed, self.device)
        dec = BatchDecoder(self, max_rows=len(prompts))
        rows = [dec.admit(p, sp, shared) for p, sp in zip(prompts, per_row)]
        while dec.active():
            dec.step()
        return [dec.release(r) for r in rows]

    def _generate_batch_padded(self, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
        """fast=False: left-padded, pad keys masked out (RoPE is relative, so the shift is exact up to float
        rounding). Returns each row's new tokens, cut at its first stop token."""
        params.validate()
        B = len(prompts)
        if B == 0:
            return []
        if any(not p for p in prompts):
            raise HessGPTError("a prompt in the batch is empty")
        T = max(len(p) for p in prompts)
        total = min(self.max_len, T + params.max_new_tokens)
        if T >= self.max_len:
            raise HessGPTError(f"prompt of {T} tokens does not fit the context window ({self.max_len})")
        self._ensure_cache(B)
        dev = self.device
        pad = self.tokenizer.pad_id if self.tokenizer is not None else 0
        x = torch.full((B, T), pad, dtype=torch.long, device=dev)
        valid = torch.zeros(B, self.max_len, dtype=torch.bool, device=dev)   # which cache slots hold real tokens
        for b, p in enumerate(prompts):
            x[b, T - len(p):] = torch.tensor(p, device=dev)
            valid[b, T - len(p):T] = True
        seen = torch.zeros(B, self.vocab_size, dtype=torch.bool, device=dev)
        seen.scatter_(1, x, True)
        seen[:, pad] = seen[:, pad] & torch.tensor([pad in p for p in prompts], device=dev)
        gen = make_generator(params.seed, dev)
        stop_ids = torch.tensor(params.stop_token_ids or self.default_stop_ids() or [-1], device=dev)
        causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
        mask = (causal[None] & valid[:, None, :T])[:, None]                          # [B, 1, T, T]
        mask = mask | torch.eye(T, dtype=torch.bool, device=dev)[None, None]          # pad queries see themselves (no NaN)
        with torch.inference_mode():
            logits = self._model_forward(x, 0, mask)
            out = torch.zeros(B, 0, dtype=torch.long, device=dev)
            done = torch.zeros(B, dtype=torch.bool, device=dev)
            for pos in range(T, total):
                tok = sample(logits, params, gen, seen)
                tok = torch.where(done, torch.full_like(tok, pad), tok)
                done = done | torch.isin(tok, stop_ids)
                out = torch.cat([out, tok[:, None]], 1)
                if bool(done.all()) or pos + 1 >= total:
                    break
                seen.scatter_(1, tok[:, None], True)
                valid[:, pos] = True
                logits = self._model_forward(tok[:, None], pos, valid[:, None, None, : pos + 1])
        stops = set(stop_ids.tolist())
        results = []
        for row in out.tolist():  # each row up to (not including) its first stop token
            end = next((i for i, t in enumerate(row) if t in stops), len(row))
            results.append(row[:end])
        return results

    # ---- beam search ------------------------------------------------------------------------

    def beam_search(self, prompt_ids: list[int], num_beams: int = 4, max_new_tokens: int = 64,
                    length_penalty: float = 1.0, stop_token_ids: list[int] | None = None) -> list[int]:
        """Highest-scoring continuation (sum of log-probs / length**length_penalty), ending at a stop token."""
        if num_beams < 1:
            raise HessGPTError(f"num_beams must be >= 1, got {num_beams}")
        if len(prompt_ids) >= self.max_len:
            raise HessGPTError(f"prompt of {len(prompt_ids)} tokens does not fit the context window ({self.max_len})")
        self._ensure_cache(num_beams)
        dev = self.device
        stop_ids = set(self.default_stop_ids() if stop_token_ids is None else stop_token_ids)
        T = len(prompt_ids)
        x = torch.tensor([prompt_ids] * num_beams, device=dev)
        finished: list[tuple[float, list[int]]] = []
        with torch.inference_mode():
            logp = self._forward(x, 0).log_softmax(-1)
            beams: list[list[int]] = [[]]
            scores = torch.zeros(1, device=dev)
            logp = logp[:1]
            for step in range(max_new_tokens):
                pos = T + step
                if pos >= self.max_len:
                    break
                cand = (scores[:, None] + logp).view(-1)                   # [beams * V]
                top = torch.topk(cand, min(2 * num_beams, cand.numel()))
                new_beams, new_scores, parents = [], [], []
                for score, flat in zip(top.values.tolist(), top.indices.tolist()):
                    parent, tok = divmod(flat, self.vocab_size)
                    seq = beams[parent] + [tok]
                    if tok in stop_ids:
                        finished.append((score / max(len(seq), 1) ** length_penalty, beams[parent]))
                    else:
                        new_beams.append(seq)
                        new_scores.append(score)
                        parents.append(parent)
                    if len(new_beams) == num_beams:
                        break
                best_finished = max((f[0] for f in finished), default=float("-inf"))
                if not new_beams or (len(finished) >= num_beams and
                                     max(new_scores) / (len(new_beams[0])) ** length_penalty < best_finished):
                    break
                idx = torch.tensor(parents + [parents[-1]] * (num_beams - len(parents)), device=dev)
                self._reorder_cache(idx)  # cache rows follow the surviving beams
                toks = torch.tensor([b[-1] for b in new_beams] + [new_beams[-1][-1]] * (num_beams - len(new_beams)), device=dev)
                logp = self._forward(toks[:, None], pos).log_softmax(-1)
                logp = logp[: len(new_beams)]
                beams, scores = new_beams, torch.tensor(new_scores, device=dev)
            for seq, score in zip(beams, scores.tolist()):
                finished.append((score / max(len(seq), 1) ** length_penalty, seq))
        return max(finished, key=lambda f: f[0])[1]


def naive_generate(model, prompt_ids: list[int], params: SamplingParams, stop_ids: list[int] = ()) -> list[int]:
    """Reference: a full forward over the whole sequence at every step, no cache. Same sampler and RNG."""
    params.validate()
    dev = next(model.parameters()).device
    gen = make_generator(params.seed, dev)
    ids = list(prompt_ids)
    seen = torch.zeros(1, model.config.vocab_size, dtype=torch.bool, device=dev)
    seen[0, torch.tensor(ids, device=dev)] = True
    stops = set(params.stop_token_ids or stop_ids)
    out: list[int] = []
    was_cached = model.has_cache
    if was_cached:
        raise HessGPTError("naive_generate needs a model without KV caches (call model.clear_caches())")
    with torch.inference_mode():
        for _ in range(params.max_new_tokens):
            logits = model(torch.tensor([ids], device=dev))[:, -1].float()
            tok = int(sample(logits, params, gen, seen)[0])
            if tok in stops:
                break
            out.append(tok)
            ids.append(tok)
            seen[0, tok] = True
            if len(ids) >= model.config.context_length:
                break
    return out


# ---- multi-turn history -------------------------------------------------------------------------


class ChatHistory:
    """A conversation that keeps its turns and, when rendering, drops the oldest turns (never the system
    prompt) so the prompt plus `reserve` new tokens fit the context window."""

    def __init__(self, system: str | None = None, tools: list | None = None):
        self.system = system
        self.tools = tools
        self.turns: list[list[dict]] = []   # each turn: a user message followed by assistant/tool messages

    def add_user(self, text: str) -> None:
        self.turns.append([{"role": "user", "content": text}])

    def add(self, message: dict) -> None:
        if not self.turns:
            raise HessGPTError("add a user message first")
        self.turns[-1].append(message)

    def messages(self) -> list[dict]:
        sys = [{"role": "system", "content": self.system}] if self.system else []
        return sys + [m for t in self.turns for m in t]

    def reset(self) -> None:
        self.turns = []

    def prompt_ids(self, tokenizer, max_len: int, reserve: int = 256) -> list[int]:
        sys = [{"role": "system", "content": self.system}] if self.system else []
        for start in range(len(self.turns)):
            conv = {"messages": sys + [m for t in self.turns[start:] for m in t], "tools": self.tools}
            ids = tokenizer.render_for_generation(conv)
            if len(ids) + reserve <= max_len:
                self.turns = self.turns[start:]  # forget what no longer fits
                return ids
        raise HessGPTError(f"the last message alone needs more than the context window ({max_len} tokens) "
                           f"minus {reserve} for the answer; shorten it or lower max_new_tokens")

    def to_dict(self) -> dict:
        return {"system": self.system, "tools": self.tools, "messages": [m for t in self.turns for m in t]}

    @classmethod
    def from_dict(cls, d: dict) -> "ChatHistory":
        h = cls(d.get("system"), d.get("tools"))
        for m in d.get("messages", []):
            if m.get("role") == "user":
                h.add_user(m["content"])
            elif m.get("role") != "system":
                h.add(m)
        return h
