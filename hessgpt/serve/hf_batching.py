"""Continuous batching for `hessgpt serve --hf-model`: the HF model's requests decode together on the same engine
loop as `--model1`'s (serve/batching.py `EngineLoop`), with a transformers step function.

    decoder = HFBatchDecoder(model, max_rows=8, max_len=4096)   # the BatchDecoder interface on a transformers model
    loop = EngineLoop(decoder=decoder, prefill_chunk=256)       # admission, prefill chunks, 429 upstream, disconnects
    HFBackend(dir, max_batch=8)                                 # what `serve --hf-model DIR --max-batch 8` builds

One loop, two step functions: `EngineLoop` only calls `admit / feed / crop / step / release` and reads `free`,
so model 1's `engine.BatchDecoder` (slot cache, hg_gemm) and this `HFBatchDecoder` (any transformers causal LM)
share the queueing, slot admission, chunked prefill, straggler wait, error fan-out and row release. Each HF turn
is one row for all its tool rounds: a round's re-encoded conversation is fed as `feed(ids, keep=n)` (crop the row
to its common prefix with what the cache holds, feed the rest), so the KV cache is kept across rounds as the
batch-1 path (`HFBackend._generate` + `KVState`) keeps it.

The cache is one transformers `DynamicCache` [rows, heads, columns, dim] shared by the rows, with a 2-D attention
mask [rows, columns] saying which columns belong to which row, and `position_ids` per row (RoPE is applied before
the keys are cached, so a row's keys do not depend on the column they sit in). A row joining is prefilled alone
(batch 1, exactly the batch-1 path's prefill) and left-padded into the batch; a prompt chunk or tool result for
one row runs on that row alone and the others get masked columns; a decode step runs every row as one [rows, 1]
forward, the rows not stepping (their tool running) feeding a masked dummy token; a crop masks the row's
columns after its prefix; a released row is dropped from the batch. Masked columns are compacted away when they
are more than half the cache. Sampling is `engine.sample` per row with its own SamplingParams, seeded generator
and repetition-penalty set (the round's prompt plus what it sampled), as the batch-1 path samples, so a request
decodes the same tokens batched as alone (greedy: token for token, up to float rounding of the batched kernels).

Why not transformers' own ContinuousBatchingManager (transformers 5.23 `generation/continuous_batching`,
`model.init_continuous_batching()`): it does stream per request (`add_request(streaming=True)`) and cancel
(`cancel_request`), but it switches the model to paged attention, samples with one GenerationConfig's logits
processors (per-request temperature/top-k/top-p only, one seed for the whole manager, no per-request repetition
penalty over the prompt: not HessGPT's sampler), and a tool round would be a new request re-prefilling the whole
conversation; and it is a second scheduler beside the engine loop `--model1` already has. Models whose cache has
sliding-window or other non-full layers (Mistral with a window, Gemma 2/3, ...) cannot be masked this way:
HFBackend serves them one request at a time (--max-batch 1) and says so in one line at startup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hessgpt.engine import SamplingParams, make_generator, sample
from hessgpt.errors import HessGPTError


@dataclass
class _HFRow:
    """One sequence of the HF batch: its tokens in the cache (in order), next-token logits and sampler state."""

    params: SamplingParams
    generator: torch.Generator | None
    ids: list = field(default_factory=list)   # the token ids its cache columns hold, in order
    logits: torch.Tensor | None = None         # [1, V] fp32, None until fed (or after a crop, before the next feed)
    seen: torch.Tensor | None = None           # [1, V] bool: the repetition penalty's tokens (the ids it holds)


def unbatchable(model) -> str | None:
    """Why the model's cache cannot be batched this way (e.g. "MistralForCausalLM has sliding_window=4096"),
    or None when every layer is full attention (a maskable DynamicLayer)."""
    cfg = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    kinds = set(getattr(cfg, "layer_types", None) or [])
    window = getattr(cfg, "sliding_window", None)
    if kinds - {"full_attention"} or (window and not kinds and getattr(cfg, "use_sliding_window", True)):
        what = ", ".join(sorted(kinds - {"full_attention"})) or f"sliding_window={window}"
        return f"{type(model).__name__} has {what}"
    return None


def check_batchable(model) -> None:
    """One-line HessGPTError unless every layer of the model's cache is full attention (`unbatchable`)."""
    why = unbatchable(model)
    if why is not None:
        raise HessGPTError(f"--max-batch: batched decoding of --hf-model needs full-attention layers, "
                           f"{why}; use --max-batch 1")


class HFBatchDecoder:
    """Several conversations decoded together on a transformers causal LM: the interface of `engine.BatchDecoder`
    that serve/batching.py's EngineLoop drives (`admit`, `feed`, `step`, `release`, `free`, `max_rows`,
    `max_len`), plus `crop`. Every sampled token is returned: where a turn ends (EOS, budget, stop strings) is
    the caller's decision. Runs on the loop's thread only (not thread-safe)."""

    def __init__(self, model, max_rows: int, max_len: int, compact_slack: int = 64):
        if max_rows < 1:
            raise HessGPTError(f"max_rows must be >= 1, got {max_rows}")
        check_batchable(model)
        self.model, self.max_rows, self.max_len, self.compact_slack = model, max_rows, max_len, compact_slack
        self.device = next(model.parameters()).device
        self.rows: dict[int, _HFRow] = {}
        self.order: list[int] = []                 # row id of each batch index of the cache
        self.cache = None                          # transformers DynamicCache [len(order), H, C, D], None when empty
        self.mask: torch.Tensor | None = None      # [len(order), C] long: 1 where the column is the row's token
        self._next_id = 0

    @property
    def free(self) -> list[int]:
        return list(range(self.max_rows - len(self.rows)))

    def columns(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[1])

    # ---- the model call -----------------------------------------------------------------------------------

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache):
        """ids/positions [n, k], mask [n, C + k] over `cache`'s C columns -> (logits [n, V] fp32 of the last column,
        the grown cache)."""
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float(), out.past_key_values

    def _layers(self, cache) -> list:
        """The cache's layers, each a plain transformers DynamicLayer (keys/values [n, H, C, D] we can pad, slice and
        gather); checked by name, so that importing this module does not import transformers."""
        layers = list(cache.layers)
        for layer in layers:
            if type(layer).__name__ != "DynamicLayer":
                raise HessGPTError(f"--max-batch: the model's cache has a {type(layer).__name__} (not full attention); "
                                   f"use --max-batch 1")
        return layers

    def _set(self, keys: list[torch.Tensor], values: list[torch.Tensor], mask: torch.Tensor) -> None:
        for layer, k, v in zip(self._layers(self.cache), keys, values):
            layer.keys, layer.values = k, v
        self.mask = mask

    @staticmethod
    def _pad_left(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
        if n == 0:
            return t
        shape = list(t.shape)
        shape[dim] = n
        return torch.cat([t.new_zeros(shape), t], dim=dim)

    # ---- rows joining, fed, cropped, leaving ---------------------------------------------------------------

    def admit(self, prompt_ids: list[int], params: SamplingParams, generator: torch.Generator | None = None) -> int:
        """Prefill `prompt_ids` alone (batch 1) and add the row to the batch; -> its row id."""
        params.validate()
        prompt_ids = list(prompt_ids)
        if not prompt_ids:
            raise HessGPTError("the prompt is empty")
        if len(prompt_ids) > self.max_len:
            raise HessGPTError(f"prompt of {len(prompt_ids)} tokens exceeds the context window ({self.max_len})")
        if len(self.rows) >= self.max_rows:
            raise HessGPTError(f"the batch is full ({self.max_rows} rows); release a finished row first")
        k = len(prompt_ids)
        with torch.inference_mode():
            ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
            logits, one = self._forward(ids, torch.arange(k, device=self.device)[None], torch.ones_like(ids), None)
            row = _HFRow(params=params, generator=generator if generator is not None else make_generator(params.seed, self.device),
                         ids=prompt_ids, logits=logits)
            row.seen = torch.zeros_like(logits, dtype=torch.bool)
            row.seen[0, ids[0]] = True
            new_layers = self._layers(one)
            if self.cache is None:
                self.cache, self.mask = one, torch.ones_like(ids)
            else:
                c = self.columns()
                width = max(c, k)
                keys = [torch.cat([self._pad_left(a.keys, width - c, 2), self._pad_left(b.keys, width - k, 2)])
                        for a, b in zip(self._layers(self.cache), new_layers)]
                values = [torch.cat([self._pad_left(a.values, width - c, 2), self._pad_left(b.values, width - k, 2)])
                          for a, b in zip(self._layers(self.cache), new_layers)]
                self._set(keys, values, torch.cat([self._pad_left(self.mask, width - c, 1),
                                                   self._pad_left(torch.ones_like(ids), width - k, 1)]))
        rid, self._next_id = self._next_id, self._next_id + 1
        self.rows[rid] = row
        self.order.append(rid)
        return rid

    def _get(self, rid: int) -> _HFRow:
        if rid not in self.rows:
            raise HessGPTError(f"no row {rid} in the batch (released, or never admitted)")
        return self.rows[rid]

    def feed(self, rid: int, ids: list[int]) -> None:
        """Append `ids` (a prompt chunk, a tool result, the next round's new tokens) to one row; its next token is
        sampled after them. One token goes through a batched step (the others feed a masked dummy); more run
        on that row alone."""
        r, ids = self._get(rid), list(ids)
        if not ids:
            return
        if len(r.ids) + len(ids) > self.max_len:
            raise HessGPTError(f"sequence of {len(r.ids) + len(ids)} tokens exceeds the context window ({self.max_len})")
        with torch.inference_mode():
            if len(ids) == 1:
                self._run({rid: ids})
                return
            b, c, k = self.order.index(rid), self.columns(), len(ids)
            x = torch.tensor([ids], dtype=torch.long, device=self.device)
            pos = torch.arange(len(r.ids), len(r.ids) + k, device=self.device)[None]
            if len(self.order) == 1:
                mask = torch.cat([self.mask, torch.ones_like(x)], 1)
                logits, self.cache = self._forward(x, pos, mask, self.cache)
                self.mask = mask
                self._fed(r, ids, logits)
                return
            from_cache = self._layers(self.cache)
            sub = type(self.cache)(ddp_cache_data=[(layer.keys[b:b + 1], layer.values[b:b + 1]) for layer in from_cache])
            logits, sub = self._forward(x, pos, torch.cat([self.mask[b:b + 1], torch.ones_like(x)], 1), sub)
            keys, values = [], []
            for full, one in zip(from_cache, self._layers(sub)):
                for name, out in (("keys", keys), ("values", values)):
                    t = getattr(full, name)
                    grown = torch.cat([t, t.new_zeros(t.shape[0], t.shape[1], k, t.shape[3])], 2)
                    grown[b] = getattr(one, name)[0]
                    out.append(grown)
            mask = torch.cat([self.mask, self.mask.new_zeros(len(self.order), k)], 1)
            mask[b, c:] = 1
            self._set(keys, values, mask)
            self._fed(r, ids, logits)
            self._compact()

    def _fed(self, r: _HFRow, ids: list[int], logits: torch.Tensor) -> None:
        r.ids.extend(ids)
        r.logits = logits
        r.seen[0, torch.tensor(ids, device=self.device)] = True

    def _run(self, tokens: dict[int, list[int]]) -> None:
        """One [rows, 1] forward over the whole batch: each row in `tokens` feeds its one token, the others a
        masked dummy (their column is never attended to)."""
        cols = [[tokens[rid][0] if rid in tokens else 0, len(self.rows[rid].ids), int(rid in tokens)] for rid in self.order]
        ids, pos, new = torch.tensor(cols, dtype=torch.long, device=self.device).T[:, :, None]   # each [n, 1]
        mask = torch.cat([self.mask, new], 1)
        logits, self.cache = self._forward(ids, pos, mask, self.cache)
        self.mask = mask
        for b, rid in enumerate(self.order):
            if rid in tokens:
                self._fed(self.rows[rid], tokens[rid], logits[b:b + 1])
        self._compact()

    def crop(self, rid: int, keep: int) -> None:
        """Keep only the row's first `keep` tokens (its columns after them are masked); feed it before its next step."""
        r = self._get(rid)
        if not 0 < keep <= len(r.ids):
            raise HessGPTError(f"crop: keep must be in 1..{len(r.ids)} (the row's tokens), got {keep}")
        if keep == len(r.ids):
            return
        with torch.inference_mode():
            b = self.order.index(rid)
            cols = self.mask[b].nonzero().squeeze(1)
            self.mask[b, cols[keep:]] = 0
            r.ids, r.logits = r.ids[:keep], None
            r.seen.zero_()
            r.seen[0, torch.tensor(r.ids, device=self.device)] = True

    def release(self, rid: int) -> list[int]:
        """Remove the row (finished or not, e.g. a client gone); -> the ids it held."""
        r = self._get(rid)
        del self.rows[rid]
        b = self.order.index(rid)
        self.order.pop(b)
        if not self.order:
            self.cache, self.mask = None, None
            return r.ids
        with torch.inference_mode():
            keep = torch.tensor([i for i in range(len(self.order) + 1) if i != b], device=self.device)
            layers = self._layers(self.cache)
            self._set([layer.keys.index_select(0, keep) for layer in layers],
                      [layer.values.index_select(0, keep) for layer in layers], self.mask.index_select(0, keep))
            self._compact()
        return r.ids

    def _compact(self) -> None:
        """Drop the masked columns when they are most of the cache: each row's columns, in order, right-aligned."""
        counts = self.mask.sum(1)
        width = int(counts.max())
        if self.columns() - width <= max(self.compact_slack, width):
            return
        n = len(self.order)
        index = torch.zeros(n, width, dtype=torch.long, device=self.device)
        mask = torch.zeros(n, width, dtype=self.mask.dtype, device=self.device)
        for b in range(n):
            cols = self.mask[b].nonzero().squeeze(1)
            index[b, width - len(cols):] = cols
            mask[b, width - len(cols):] = 1
        layers = self._layers(self.cache)
        keys, values = [], []
        for layer in layers:
            h, d = layer.keys.shape[1], layer.keys.shape[3]
            gather = index[:, None, :, None].expand(n, h, width, d)
            keys.append(layer.keys.gather(2, gather))
            values.append(layer.values.gather(2, gather))
        self._set(keys, values, mask)

    # ---- a decode step ----------------------------------------------------------------------------------------

    def step(self, rows=None) -> dict[int, int]:
        """Sample one token for each of `rows` (None = every row with logits) and feed them all through one
        batched forward. -> {row: token}. A row at the end of its context gets its token but is not fed (its
        next step returns nothing for it)."""
        chosen = sorted(self.rows) if rows is None else sorted(set(rows))
        emitted: dict[int, int] = {}
        cont: dict[int, list[int]] = {}
        with torch.inference_mode():
            for rid in chosen:
                r = self._get(rid)
                if r.logits is None:
                    continue
                tok = int(sample(r.logits, r.params, r.generator, r.seen)[0])
                emitted[rid] = tok
                if len(r.ids) >= self.max_len:
                    r.logits = None
                    continue
                cont[rid] = [tok]
            if cont:
                self._run(cont)
        return emitted
