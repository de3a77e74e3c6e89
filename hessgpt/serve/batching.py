"""Continuous batching for `hessgpt serve --model1`: one engine loop, many conversations decoding together.

    backend = BatchedDualBackend(dual, max_batch=8)  # a DualModelBackend (serve/dual.py) whose turns decode on
                                                     # its EngineLoop: one thread owning an engine.BatchDecoder

The engine loop is the only thread that touches model 1's weights and KV cache. Between two decode steps it
releases the rows whose request ended (finished, cancelled, client gone), admits waiting requests into free
slots (the slot whose cached tokens share the longest prefix with the prompt: only the rest is prefilled), feeds one prefill chunk of each new prompt (`prefill_chunk` tokens, so a long prompt does not stall
the streams already running) and the injected tool results, then runs one batched step for every row whose
turn is waiting for its next token.

Each request keeps the full dual-model router (`hessgpt.tools.router.ToolRouter`: code -> sandbox -> model 2
when the run fails -> `<|result|>` injected, function calls, search), running unchanged in its own worker
thread: the router's `Generation` is a `BatchedRow` here, whose `next_token()` waits for the loop's next
step and whose `feed(ids)` queues the ids for the loop (`BatchDecoder.feed(row, ids)`). A row whose router
is busy (the sandbox running, model 2 rewriting) is left out of the steps until it asks for a token again,
so the others keep decoding. Model 2 (batch 1, its own cache) is shared under a lock.

Rows sample with their own SamplingParams and seeded generator, exactly as `Engine.generate` does for one
sequence (engine.BatchDecoder), so a request decodes the same tokens batched as alone (greedy: token for
token, up to float rounding between the batched GEMM and the batch-1 kernels).

The loop drives a step function with `engine.BatchDecoder`'s interface (admit, feed, step, release, free): model
1's BatchDecoder by default, or `EngineLoop(decoder=HFBatchDecoder(...))` (serve/hf_batching.py), which is how
`hessgpt serve --hf-model --max-batch N` batches: one engine loop for both kinds of model.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import replace

import torch

from hessgpt.engine import BatchDecoder, Engine, SamplingParams
from hessgpt.errors import HessGPTError
from hessgpt.events import Event
from hessgpt.tools.router import ToolRouter


class BatchedRow:
    """One conversation's sequence on the engine loop; the `Generation` interface the router drives.

    `next_token()` blocks until the loop's next step has sampled this row's token. The batch feeds a sampled
    token into the row's cache in the same step, so the router's following `feed([token])` only confirms it;
    anything else it feeds (a closing token's result, a tool response) is queued for the loop. `pos` and
    `space_left` count what the router has fed, as `Generation` does.
    """

    def __init__(self, loop: "EngineLoop", prompt_ids: list[int], params: SamplingParams,
                 generator: torch.Generator | None = None):
        if not prompt_ids:
            raise HessGPTError("the prompt is empty")
        if len(prompt_ids) > loop.max_len:
            raise HessGPTError(f"prompt of {len(prompt_ids)} tokens exceeds the context window ({loop.max_len})")
        self.loop, self.params, self.generator = loop, params.validate(), generator
        self.prefill: list[int] = list(prompt_ids)   # prompt tokens not in the cache yet (the loop feeds chunks)
        self.feeds: deque[tuple[int | None, list[int]]] = deque()   # (keep, injected ids) waiting for the loop
        self.rid: int | None = None                    # row id in the BatchDecoder, once admitted
        self.want = False                              # the router waits for a token
        self.token: int | None = None                  # the token the loop sampled for it
        self.error: BaseException | None = None
        self.closed = False
        self.pending: int | None = None                # sampled (and already in the cache), not yet confirmed by feed
        self.ready = threading.Condition(loop.lock)    # the loop wakes this row alone when its token is there
        self.pos = len(prompt_ids)
        self.space_left_limit = loop.max_len

    @property
    def space_left(self) -> int:
        return self.space_left_limit - self.pos

    def next_token(self) -> int:
        if self.pending is not None:
            raise HessGPTError("a batched row samples its next token only after its last one was fed")
        with self.loop.cond:
            if self.closed:
                raise HessGPTError("the row was released")
            self.want, self.token = True, None
            self.loop.cond.notify()   # only the loop thread waits on it
            while self.token is None and self.error is None:
                if self.loop.closed:
                    raise HessGPTError("the engine loop stopped (server shutting down)")
                self.ready.wait()
            if self.error is not None:
                raise self.error
            self.pending, self.token = self.token, None
            return self.pending

    def feed(self, ids: list[int], keep: int | None = None) -> None:
        """Append `ids`; with `keep`, first cut the row back to its first `keep` tokens (a decoder with `crop`:
        the HF one, whose next tool round shares only a prefix with what the cache holds)."""
        ids = list(ids)
        if keep is not None:
            if not hasattr(self.loop.batch, "crop"):
                raise HessGPTError(f"{type(self.loop.batch).__name__} rows cannot be cut back (feed keep={keep})")
            if self.pending is not None:
                raise HessGPTError("feed the sampled token before cutting the row back")
            if not 0 < keep <= self.pos:
                raise HessGPTError(f"feed keep={keep}: must be in 1..{self.pos} (the row's tokens)")
            if not ids:
                raise HessGPTError("a row cut back needs ids to feed (its next token is sampled after them)")
        if not ids:
            return
        start = self.pos if keep is None else keep
        if start + len(ids) > self.space_left_limit:
            raise HessGPTError(f"sequence of {start + len(ids)} tokens exceeds the context window ({self.space_left_limit})")
        self.pos = start + len(ids)
        if self.pending is not None:
            if ids[0] != self.pending:
                raise HessGPTError(f"a batched row must feed its sampled token {self.pending} first, got {ids[0]}")
            ids, self.pending = ids[1:], None   # the step already put it in the cache
        if ids:
            with self.loop.cond:
                self.feeds.append((keep, ids))
                self.loop.cond.notify_all()

    def close(self) -> None:
        """The turn is over (or its client gone): the loop releases the row before its next step."""
        with self.loop.cond:
            self.closed = True
            self.loop.cond.notify_all()


class EngineLoop:
    """The thread that owns the batch decoder and runs every forward of the served conversations.

    `EngineLoop(engine, max_rows)` decodes on model 1's `engine.BatchDecoder(engine, max_rows)`;
    `EngineLoop(decoder=d)` on any decoder with that interface and `max_rows`, `max_len` (serve/hf_batching.py's
    HFBatchDecoder). `open(prompt_ids, params, generator=None) -> BatchedRow` (from any thread) queues a
    conversation; it is admitted when a slot is free (at most `max_rows` at once). `straggler_s`: after a step, how long the loop waits for the
    routers that just got a token to ask for the next one (so they join the next step instead of the one
    after); a router still busy then (a tool running) is simply not waited for.
    """

    def __init__(self, engine: Engine | None = None, max_rows: int = 8, prefill_chunk: int = 256,
                 straggler_s: float = 0.005, decoder=None):
        if (engine is None) == (decoder is None):
            raise HessGPTError("EngineLoop decodes either an engine or a decoder: give one of them")
        if prefill_chunk < 1:
            raise HessGPTError(f"prefill_chunk must be >= 1, got {prefill_chunk}")
        if decoder is None:
            if max_rows < 1:
                raise HessGPTError(f"max_rows must be >= 1, got {max_rows}")
            decoder = BatchDecoder(engine, max_rows)
            self.max_len = engine.max_len
        else:
            max_rows, self.max_len = decoder.max_rows, decoder.max_len
        self.engine, self.max_rows, self.prefill_chunk, self.straggler_s = engine, max_rows, prefill_chunk, straggler_s
        self.batch = decoder
        # model 1's BatchDecoder queues prompts and results (defer=True) and writes up to prefill_chunk of their
        # tokens inside each decode step (one forward for both); other decoders get them between two steps
        self.deferred = getattr(decoder, "deferred_feeds", False)
        # one lock; the loop thread waits on `cond`, each row's router on the row's own `ready` (a token for one row
        # wakes that row only: with one shared condition every hand-off woke all the routers, ~N^2 wake-ups a step)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.rows: list[BatchedRow] = []      # admitted or waiting for a slot, in arrival order
        self.closed = False
        self.steps = 0                        # batched steps run
        self.stepped_rows = 0                 # sum of the rows in those steps (mean batch = stepped_rows / steps)
        self.widest = 0                       # most rows in one step
        self.thread = threading.Thread(target=self._run, name="hessgpt-engine-loop", daemon=True)
        self.thread.start()

    def open(self, prompt_ids: list[int], params: SamplingParams, generator: torch.Generator | None = None) -> BatchedRow:
        """Queue a conversation; `generator` (optional) is its sampler's, kept by a caller that opens rows for
        the same turn (default: one made from params.seed)."""
        row = BatchedRow(self, prompt_ids, params, generator)
        with self.cond:
            if self.closed:
                raise HessGPTError("the engine loop stopped (server shutting down)")
            self.rows.append(row)
            self.cond.notify_all()
        return row

    def stats(self) -> dict:
        with self.cond:
            admitted = sum(r.rid is not None for r in self.rows)
            return {"max_batch": self.max_rows, "rows": admitted, "waiting_rows": len(self.rows) - admitted,
                    "steps": self.steps, "mean_batch": round(self.stepped_rows / self.steps, 2) if self.steps else 0.0,
                    "widest_step": self.widest, "prompt_tokens_reused": getattr(self.batch, "reused_tokens", 0),
                    "prompt_tokens_prefilled": getattr(self.batch, "prefilled_tokens", None)}

    def close(self, timeout: float = 5.0) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
            self._wake(self.rows)
        self.thread.join(timeout)

    # ---- the loop thread ----------------------------------------------------------------------

    def _batch_params(self, params: SamplingParams) -> SamplingParams:
        """The row's sampling as the batch runs it: every token comes back to the router, which decides where
        the turn ends (stop tokens, structure tokens, max_new_tokens, stop strings are the server's)."""
        return replace(params, stop=[], stop_token_ids=[-1], max_new_tokens=self.max_len)

    def _has_work(self) -> bool:
        free = len(self.batch.free)
        for r in self.rows:
            if r.closed:
                return True
            if r.error is None and (r.feeds or (r.rid is not None and r.prefill) or (r.rid is None and free) or
                                    (r.want and r.rid is not None and not r.prefill) or
                                    (self.deferred and r.rid is not None and self.batch.pending(r.rid))):
                return True
        return False

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:   # a bug in the loop: fail every row (their requests answer an error), refuse new ones
            with self.cond:
                self.closed = True
                for r in self.rows:
                    r.error = r.error or HessGPTError(f"the engine loop failed: {type(e).__name__}: {e}")
                self._wake(self.rows)
            raise

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.closed and not self._has_work():
                    self.cond.wait()
                if self.closed:
                    for r in self.rows:
                        r.error = r.error or HessGPTError("the engine loop stopped (server shutting down)")
                    self._wake(self.rows)
                    return
                release = [r for r in self.rows if r.closed]
                self.rows = [r for r in self.rows if not r.closed]
                free = len(self.batch.free) + sum(r.rid is not None for r in release)
                admit = [r for r in self.rows if r.rid is None and r.error is None][:free]
                chunks = []                                   # (row, ids, is prefill)
                for r in self.rows:
                    if r.error is not None:
                        continue
                    if self.deferred:
                        while r.rid is not None and r.feeds:
                            chunks.append((r, *r.feeds.popleft(), False))
                    elif r.rid is not None and r.prefill:
                        chunks.append((r, None, r.prefill[:self.prefill_chunk], True))
                    elif r.rid is not None and r.feeds:
                        chunks.append((r, *r.feeds.popleft(), False))
            for r in release:
                if r.rid is not None:
                    self.batch.release(r.rid)
            for r in admit:   # the first chunk of the prompt (after what a free slot already holds) is the admit's prefill
                try:
                    if self.deferred:   # the whole prompt queued: the steps write it, prefill_chunk tokens each
                        r.rid = self.batch.admit(r.prefill, self._batch_params(r.params), r.generator, defer=True)
                        r.prefill = []
                        continue
                    cached = self.batch.cached_prefix(r.prefill) if hasattr(self.batch, "cached_prefix") else 0
                    first = r.prefill[:cached + self.prefill_chunk]
                    r.rid = self.batch.admit(first, self._batch_params(r.params), r.generator)
                    r.prefill = r.prefill[len(first):]
                except Exception as e:
                    self._fail(r, e)
            for r, keep, ids, is_prefill in chunks:
                try:
                    if keep is not None:
                        self.batch.crop(r.rid, keep)
                    if self.deferred:
                        self.batch.feed(r.rid, ids, defer=True)
                    else:
                        self.batch.feed(r.rid, ids)
                    if is_prefill:
                        r.prefill = r.prefill[len(ids):]
                except Exception as e:
                    self._fail(r, e)
            with self.cond:
                ready = {r.rid: r for r in self.rows
                         if r.want and r.rid is not None and not r.prefill and not r.feeds and r.error is None}
                queued = {r.rid for r in self.rows
                          if self.deferred and r.rid is not None and r.error is None and self.batch.pending(r.rid)}
            if not ready and not queued:
                continue
            try:   # rows whose router is busy keep their state; queued tokens are written (not sampled) this step
                out = (self.batch.step(rows=list(ready.keys() | queued), budget=self.prefill_chunk) if self.deferred
                       else self.batch.step(rows=list(ready)))
            except Exception as e:
                for r in self.rows:
                    if r.rid in ready or r.rid in queued:
                        self._fail(r, e)
                continue
            sampled = len(ready.keys() - queued)
            self.steps += 1
            self.stepped_rows += sampled
            self.widest = max(self.widest, sampled)
            with self.cond:
                for rid, r in list(ready.items()):
                    if rid in queued:          # its prompt or result was (partly) written: sampled in a later step
                        del ready[rid]
                        continue
                    r.want = False
                    if rid in out:
                        r.token = out[rid]
                    else:   # the row hit the end of its slot (the router checks space_left before, so never in a turn)
                        r.error = HessGPTError(f"row {rid} reached the context window ({self.max_len})")
                self._wake(ready.values())
                deadline = time.monotonic() + self.straggler_s
                while not self.closed and any(not (r.want or r.feeds or r.closed) for r in ready.values()):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.cond.wait(left)

    def _fail(self, r: BatchedRow, e: BaseException) -> None:
        with self.cond:
            r.error = e
            r.want = False
            self._wake([r])

    def _wake(self, rows) -> None:
        """Wake the routers of `rows` (the lock held)."""
        for r in rows:
            r.ready.notify()


class _LoopEngine:
    """What a ToolRouter needs of an engine (tokenizer, max_len, session), decoding on the engine loop.
    One per request: it remembers the rows it opened so the request releases them when it ends."""

    def __init__(self, loop: EngineLoop):
        self.loop, self.tokenizer, self.max_len = loop, loop.engine.tokenizer, loop.engine.max_len
        self.opened: list[BatchedRow] = []

    def session(self, prompt_ids: list[int], params: SamplingParams) -> BatchedRow:
        row = self.loop.open(list(prompt_ids), params)
        self.opened.append(row)
        return row


class _LockedEngine:
    """Model 2 (a batch-1 Engine with one KV cache) shared by the requests' routers: one generation at a time."""

    def __init__(self, engine: Engine):
        self.engine, self.tokenizer, self.max_len = engine, engine.tokenizer, engine.max_len
        self.lock = threading.Lock()

    def generate(self, prompt_ids: list[int], params: SamplingParams) -> list[int]:
        with self.lock:
            return self.engine.generate(prompt_ids, params)


class BatchedDualBackend:
    """A `DualModelBackend` (hessgpt.serve.dual) whose turns decode together on an `EngineLoop`.

    Same ChatBackend contract and the same events; `stream_chat` may be called from up to `max_batch` threads
    at once (the server sizes its worker pool from `max_batch`). Built by `hessgpt serve --model1 ...
    --max-batch N` for N >= 2.
    """

    def __init__(self, dual, max_batch: int = 8, prefill_chunk: int = 256, straggler_s: float = 0.005):
        if dual.engine.fast is None:
            raise HessGPTError(f"--max-batch {max_batch}: batched decoding needs model 1 on CPU or CUDA "
                               f"(it is on {dual.engine.device}); use --max-batch 1")
        if dual.router.config.code_votes > 1:   # the vote's extra blocks would need rows of their own on the loop
            raise HessGPTError(f"code_votes={dual.router.config.code_votes} needs --max-batch 1 (batched serving does not vote)")
        self.dual = dual
        self.max_batch = max_batch
        self.loop = EngineLoop(dual.engine, max_batch, prefill_chunk, straggler_s)
        self.model2 = _LockedEngine(dual.model2) if dual.model2 is not None else None
        self.model_id, self.context_length = dual.model_id, dual.context_length
        self.generation_config = dual.generation_config

    def stream_chat(self, messages: list[dict], params: SamplingParams, tools: list[dict] | None = None,
                    cancel=None) -> Iterator[Event]:
        r = self.dual.router
        engine = _LoopEngine(self.loop)
        turn = copy.copy(self.dual)   # DualModelBackend.stream_chat (prompt, history, client tools) with this router
        turn.router = ToolRouter(engine, r.sandbox, self.model2, r.registry, r.search, r.config)
        try:
            yield from turn.stream_chat(messages, params, tools, cancel)
        finally:
            for row in engine.opened:
                row.close()

    def stats(self) -> dict:
        return self.loop.stats()

    def close(self) -> None:
        self.loop.close()
        self.dual.close()
