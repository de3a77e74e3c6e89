"""`hessgpt sft`: supervised fine-tuning on conversations, full or LoRA.

    hessgpt sft --base runs/pretrain --data data/sft --out runs/sft-lora --lora --rank 32 --alpha 64
    hessgpt sft --base runs/pretrain --data data/routing.jsonl --out runs/sft-full --epochs 2
    torchrun --nproc_per_node 2 -m hessgpt sft ...                     # DDP (gloo on CPU)

Data: a prepared folder with train.jsonl / val.jsonl (`hessgpt data prepare`), or a JSONL file whose
validation split sits beside it as NAME.val.jsonl (`hessgpt data routing`). Records are in the conversation
format (docs/chat-format.md) and rendered with the checkpoint's tokenizer: `render(record) -> (ids, mask)`.

Loss: only where the chat format's mask is 1 (the assistant's text, code, tool calls and turn-closing
`<|end|>`); system, user and tool-result tokens are context, never targets. Token i is predicted from
tokens < i, so targets = ids[1:] with mask[1:].

Packing: conversations are packed first-fit into rows of seq_len + 1 tokens. Each row carries a
block-diagonal causal attention mask (a token attends only to earlier tokens of its own conversation) and
RoPE positions that restart at 0 for each conversation, so a packed conversation sees exactly what it
would see alone (as at inference). Conversations longer than a row are truncated (counted, reported).

Batches: global step s uses G = batch_size x grad_accum x world_size rows of a per-epoch shuffle of the
packed rows; each process takes its micro-batches out of those G. The loss of a step is the sum of masked
token losses over all G rows divided by their number of masked tokens, whatever the split, so 2 processes
x 1 micro-batch and 1 process x 2 micro-batches compute the same update. A checkpoint records the data position
in rows (epoch, rows read), so a resume with another G (another number of processes) continues at the same row.

Distributed (docs/distributed.md): DDP, or FSDP2 with --fsdp; gradients are communicated only on the last
micro-step; checkpoints hold whole tensors and every rank's RNG, so a run resumes on any number of processes.
With --sharded-state, OUT/last/ holds each process's shard of the trainable weights and optimizer instead
(torch.distributed.checkpoint, resharded on resume: distributed.save_sharded_state), train_state.pt and meta.json.

Output (OUT): with --lora a PEFT adapter folder (see lora.py); without, a HessGPT checkpoint. Beside it
metrics.jsonl, loss.png, and last/ (the latest resumable state) while training.
"""

import argparse
import json
import math
import os
import random
import shutil
import sys
import time

import torch

from hessgpt import checkpoint, loader
from hessgpt.device import autocast, autocast_dtype, grad_scaler, peak_flops, setup_matmul_precision
from hessgpt.errors import HessGPTError
from hessgpt.model import Transformer
from hessgpt.train import common
from hessgpt.train import distributed as D
from hessgpt.train import lora as L

# ---- data: read, render, pack ---------------------------------------------------------------------


def data_files(data: str) -> tuple[str, str | None]:
    """(train.jsonl, val.jsonl or None) of a prepared folder or a routing-style NAME.jsonl (+ NAME.val.jsonl)."""
    if os.path.isdir(data):
        train, val = os.path.join(data, "train.jsonl"), os.path.join(data, "val.jsonl")
        if not os.path.exists(train):
            raise HessGPTError(f"--data {data}: no train.jsonl in this folder (make one with `hessgpt data prepare`)")
        return train, val if os.path.exists(val) else None
    if os.path.isfile(data):
        stem = data[: -len(".jsonl")] if data.endswith(".jsonl") else data
        val = stem + ".val.jsonl"
        return data, val if os.path.exists(val) else None
    raise HessGPTError(f"--data {data}: no such file or folder")


def _data_meta(data: list[str]) -> str | list[str]:
    """What a checkpoint records as its data: one absolute path, or the list of them."""
    paths = [os.path.abspath(d) for d in data]
    return paths[0] if len(paths) == 1 else paths


def render_sources(data: list[str], tokenizer, row_len: int) -> tuple[list, dict, list | None]:
    """The train and val conversations of every --data source, rendered: (train examples, stats summed over the
    sources, val examples or None when no source has a val file). Sources are concatenated in order; `pack`
    shuffles them together."""
    examples, stats, val = [], {}, []
    has_val = False
    for source in data:
        train_path, val_path = data_files(source)
        ex, st = render_file(train_path, tokenizer, row_len)
        examples += ex
        for k, v in st.items():
            stats[k] = stats.get(k, 0) + v
        if val_path:
            has_val = True
            val += render_file(val_path, tokenizer, row_len)[0]
    return examples, stats, val if has_val else None


def render_file(path: str, tokenizer, row_len: int) -> tuple[list[tuple[list[int], list[int]]], dict]:
    """Every conversation of a JSONL file -> (ids, loss_mask), truncated to row_len tokens."""
    examples, stats = [], {"conversations": 0, "truncated": 0, "no_target": 0}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                ids, mask = tokenizer.render(record)
            except json.JSONDecodeError as e:
                raise HessGPTError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            except (HessGPTError, KeyError, TypeError, AttributeError) as e:
                raise HessGPTError(f"{path}:{lineno}: cannot render this conversation ({e})") from None
            stats["conversations"] += 1
            if len(ids) > row_len:
                ids, mask = ids[:row_len], mask[:row_len]
                stats["truncated"] += 1
            if not any(mask[1:]):
                stats["no_target"] += 1  # nothing for the assistant to learn (e.g. truncated before its turn)
                continue
            examples.append((ids, mask))
    if not examples:
        raise HessGPTError(f"{path}: no usable conversation (empty file, or no assistant tokens within {row_len} tokens)")
    return examples, stats


def pack(examples: list, row_len: int, seed: int | None, window: int = 64) -> list[list[int]]:
    """First-fit packing in a (seeded) random order: rows of example indices, each row <= row_len tokens.

    Each example goes into the first of the last `window` open rows with room for it, else opens a new row.
    Closing a row as soon as the next example does not fit (plain greedy) leaves ~23% of the routing data's
    rows as padding; first-fit leaves a few %, so a step trains on ~1.3x more conversations for the same
    compute. Deterministic for a seed; rows keep their examples in arrival order."""
    order = list(range(len(examples)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    rows: list[list[int]] = []
    room: list[int] = []          # free tokens of each row
    for i in order:
        n = len(examples[i][0])
        for r in range(max(0, len(rows) - window), len(rows)):
            if room[r] >= n:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(row_len - n)
    return rows


def make_batch(examples: list, rows: list[list[int]], seq_len: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Packed rows -> x, y, loss_mask, pos and segments [B, T] (the conversation index of each input token, -1 =
    padding): the model attends within a conversation from them (model.packed_dense_mask is the [B, 1, T, T]
    bool mask; not built here: 174 ms of CPU per 16 x 2048 batch, measured, against a GPU micro-step of ~0.25 s)."""
    B, L = len(rows), seq_len + 1
    tok = torch.full((B, L), pad_id, dtype=torch.long)
    lm = torch.zeros((B, L), dtype=torch.long)
    seg = torch.full((B, L), -1, dtype=torch.long)   # conversation index within the row; -1 = padding
    pos = torch.zeros((B, L), dtype=torch.long)      # RoPE position, restarting per conversation
    for b, row in enumerate(rows):
        p = 0
        for s, i in enumerate(row):
            ids, mask = examples[i]
            n = len(ids)
            tok[b, p:p + n] = torch.tensor(ids)
            lm[b, p:p + n] = torch.tensor(mask)
            seg[b, p:p + n] = s
            pos[b, p:p + n] = torch.arange(n)
            p += n
        pos[b, p:] = torch.arange(L - p)
    x, y = tok[:, :-1], tok[:, 1:]
    s_in, s_out = seg[:, :-1], seg[:, 1:]
    loss_mask = lm[:, 1:] * (s_in == s_out) * (s_out >= 0)   # a target must belong to the input's conversation
    return {"x": x, "y": y, "loss_mask": loss_mask, "pos": pos[:, :-1], "segments": s_in}


def masked_loss_sum(model, batch: dict, device, amp) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of next-token losses where loss_mask is 1, number of such tokens) for one batch."""
    x, y, m = batch["x"].to(device), batch["y"].to(device), batch["loss_mask"].to(device)
    sel = m.bool()                                                    # [B, T] targets that count
    # logits only where the loss is taken (the head skips the prompt tokens), in chunks; segments: block-diagonal
    # attention (FlexAttention's BlockMask on CUDA, the dense mask on CPU)
    with autocast(device, amp):
        loss = model(x, input_pos=batch["pos"].to(device), segments=batch["segments"].to(device), logits_at=sel, targets=y[sel])
    return loss, sel.sum().to(loss.dtype)


class RowSchedule:
    """Which packed rows each (step, micro-batch, rank) trains on: a per-epoch shuffle of all rows, G a step.

    The data position is (epoch, rows of that epoch's order already read). `origin` = (step, epoch, rows read)
    continues from a saved position, so a resume with another global batch G (another number of processes)
    picks up at the same row, not at step x new G."""

    def __init__(self, n_rows: int, global_batch: int, seed: int, origin: tuple[int, int, int] = (0, 0, 0)):
        self.n, self.g, self.seed = n_rows, global_batch, seed
        self.steps_per_epoch = math.ceil(n_rows / global_batch)
        self.origin = origin
        self._perm_epoch, self._perm = None, None

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, first row of the epoch's order) that `step` starts at; the last step of an epoch wraps around."""
        s0, e0, p0 = self.origin
        d = step - s0
        if d < 0:
            raise HessGPTError(f"row schedule: step {step} is before the resumed step {s0}")
        first = math.ceil((self.n - p0) / self.g)   # steps left in the origin's epoch
        if d < first:
            return e0, p0 + d * self.g
        epoch, k = divmod(d - first, self.steps_per_epoch)
        return e0 + 1 + epoch, k * self.g

    def state_dict(self, step: int) -> dict:
        """The position after `step` steps, in rows: what a resume (on any number of processes) continues from."""
        epoch, pos = self.position(step)
        return {"epoch": epoch, "pos": pos, "n_rows": self.n, "global_batch": self.g, "seed": self.seed}

    @classmethod
    def resumed(cls, n_rows: int, global_batch: int, seed: int, step: int, state: dict | None) -> "RowSchedule":
        if state is None:  # a checkpoint from before positions were saved: step-based (same G assumed)
            return cls(n_rows, global_batch, seed)
        pos = state["pos"]
        if state["n_rows"] != n_rows:  # other data or --seq-len: the same fraction of the epoch
            pos = min(n_rows, round(pos * n_rows / max(1, state["n_rows"])))
        return cls(n_rows, global_batch, seed, origin=(step, state["epoch"], pos))

    def global_rows(self, step: int) -> list[int]:
        epoch, start = self.position(step)
        if epoch != self._perm_epoch:
            self._perm = list(range(self.n))
            random.Random(self.seed * 1000 + epoch).shuffle(self._perm)
            self._perm_epoch = epoch
        return [self._perm[(start + i) % self.n] for i in range(self.g)]  # the last step wraps around

    def micro_rows(self, rows: list[int], micro: int, rank: int, world: int, batch: int) -> list[int]:
        start = (micro * world + rank) * batch
        return rows[start:start + batch]


# ---- run folder -----------------------------------------------------------------------------------


def save_state(path: str, raw, tokenizer, args, lora_cfg, base_hash: str, train_state: dict | None, meta: dict,
               info: D.DistInfo, fsdp: bool, final: bool = False) -> None:
    """A LoRA adapter folder or a full checkpoint (+ train_state.pt when given) at `path`, or (final) installed into
    the run folder `path`. Collective under FSDP: every rank gathers the whole tensors, rank 0 writes (atomically).
    `raw` is the unwrapped model (a DDP or torch.compile wrapper's state-dict keys carry "module." / "_orig_mod."
    prefixes); FSDP shards in place, so `raw` is then the sharded module itself."""
    if lora_cfg is not None:
        adapter = L.adapter_state_dict(raw)   # FSDP: all-gathers each shard

        def write(tmp):
            L.write_adapter(tmp, None, lora_cfg, args.base, base_hash, tokenizer, meta, state=adapter)
            if train_state is not None:
                torch.save(train_state, os.path.join(tmp, "train_state.pt"))
    else:
        sd = D.full_model_state(raw, fsdp)
        if info.master:
            with torch.device("meta"):
                plain = Transformer(raw.config)
            checkpoint.load_state_dict_strict(plain, {k: v.float() for k, v in sd.items()}, source="training state")

        def write(tmp):
            checkpoint.save(tmp, plain, tokenizer, meta=meta, train_state=train_state)
    if not info.master:
        return
    if final:
        common.install_final(path, write)
    elif lora_cfg is not None:
        checkpoint.atomic_dir_write(path, write)
    else:
        write(path)   # checkpoint.save is atomic itself


# ---- the script -----------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(prog="hessgpt sft", description="Supervised fine-tuning (full or LoRA) on conversations.")
    p.add_argument("--base", required=True, help="HessGPT checkpoint (or HF Mistral/Llama dir) to fine-tune")
    p.add_argument("--data", required=True, nargs="+", metavar="DATA",
                   help="prepared folder (train.jsonl, val.jsonl) or a NAME.jsonl (+ NAME.val.jsonl); several: "
                        "their conversations trained together (packed and shuffled as one set)")
    p.add_argument("--out", required=True, help="output folder (adapter with --lora, else a checkpoint)")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the data (when --steps is not given)")
    p.add_argument("--eval-rows", type=int, default=64, help="packed validation rows per pass")
    lo = p.add_argument_group("LoRA")
    lo.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of all weights")
    lo.add_argument("--rank", type=int, default=16, help="LoRA rank r (design: 16-64)")
    lo.add_argument("--alpha", type=float, default=32.0, help="LoRA alpha (scaling = alpha / r; design: 64-128)")
    lo.add_argument("--dropout", type=float, default=0.05, help="dropout on the LoRA input (design: 0.05-0.1)")
    lo.add_argument("--targets", default=",".join(L.ATTENTION_TARGETS),
                    help=f"comma-separated modules to adapt (any of {','.join(L.ALL_TARGETS)})")
    lo.add_argument("--token-rows", choices=["auto", "none"], default="auto",
                    help="auto: a base speaking an imported chat template trains the embedding (and output) rows of "
                         "HessGPT's special tokens with the adapter (peft trainable_token_indices); none: LoRA only")
    p.add_argument("--chunk", help="K/N: train the K-th of N equal parts of the steps, save OUT/last and stop (K>1 resumes)")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each block in backward, keeping only its input (less memory, ~1/3 more compute)")
    common.add_common_args(p, lr=2e-4, batch_size=8, save_every=200, eval_every=100)
    args = p.parse_args(argv)
    common.check_positive(args, "steps", "batch_size", "seq_len", "grad_accum", "lr", "epochs")
    if args.chunk:
        try:
            k, n = (int(v) for v in args.chunk.split("/"))
            assert 1 <= k <= n
        except (ValueError, AssertionError):
            raise HessGPTError(f"--chunk {args.chunk!r}: expected K/N with 1 <= K <= N, e.g. 2/10") from None
        args.resume = args.resume or k > 1
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return train(args)


def train(args) -> int:
    info = D.init(args.device)
    device = info.device
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = autocast_dtype(device, args.dtype)
    scaler = grad_scaler(device, amp)          # fp16: loss scaling; otherwise a pass-through
    setup_matmul_precision(device)             # CUDA: TF32 for fp32 matmuls
    fsdp = D.uses_fsdp(args.fsdp, info)
    out, last = args.out, os.path.join(args.out, "last")
    lora_cfg = L.LoRAConfig(r=args.rank, alpha=args.alpha, dropout=args.dropout,
                            targets=tuple(t.strip() for t in args.targets.split(",") if t.strip())) if args.lora else None
    if args.resume and os.path.exists(os.path.join(out, "meta.json")) and not os.path.exists(last):
        if info.master:
            print(f"{out}: already finished (meta.json present); nothing to do")
        D.cleanup(info)
        return 0
    resuming = args.resume and os.path.exists(os.path.join(last, "train_state.pt"))
    state = common.load_train_state(last) if resuming else None
    sharded = resuming and D.is_sharded_state(last)   # trainable weights + optimizer as DCP shards, loaded after wrapping

    # -- model and tokenizer --
    model, tokenizer = loader.load(args.base)
    if tokenizer is None:
        raise HessGPTError(f"--base {args.base}: no tokenizer.json beside the weights")
    if lora_cfg is not None and args.token_rows == "auto" and tokenizer.template is not None:
        # the rows added at import for <|code|>, <|result|>, ... : never trained, learned with the adapter
        lora_cfg.token_rows = tuple(sorted({i for i in tokenizer.special.values() if i is not None}))
    base_hash = L.weights_hash(args.base) if lora_cfg is not None else None
    if resuming and lora_cfg is None and not sharded:
        model, _ = checkpoint.load(last)
    model.train()
    torch.manual_seed(args.seed)  # LoRA init; then dropout masks, per process
    if lora_cfg is not None:
        L.apply_lora(model, lora_cfg)
        if resuming and not sharded:
            _, sd, _ = L.read_adapter(last)
            L.load_adapter_weights(model, sd, last)
    common.seed_rank(args.seed + 1, info.rank)   # dropout masks: each process its own (restored on --resume)
    seq_len = args.seq_len or model.config.context_length
    model.to(device)
    if args.activation_checkpointing:   # else the config's own (--set activation_checkpointing=true)
        model.config.activation_checkpointing = True
    raw = model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    common.check_memory(model.config, common.memory_step(model.config, args.batch_size, seq_len, device, amp, lora_cfg,
                                                         info.world_size if args.fsdp else 1, packed=True),
                        device, skip=args.skip_memory_check)

    # -- data --
    examples, stats, val_examples = render_sources(args.data, tokenizer, seq_len + 1)
    rows = pack(examples, seq_len + 1, seed=args.seed)
    val_rows = pack(val_examples, seq_len + 1, seed=None)[: args.eval_rows] if val_examples else None
    targets_in = [sum(m[1:]) for _, m in examples]   # masked targets per conversation
    G = args.batch_size * args.grad_accum * info.world_size
    tokens_per_step = G * seq_len
    step = state["step"] if state else 0
    sched_rows = RowSchedule.resumed(len(rows), G, args.seed, step, state.get("rows")) if state else RowSchedule(len(rows), G, args.seed)
    if args.steps:
        total = args.steps
    elif state and "schedule" in state:   # the interrupted run's length (the LR schedule goes on unchanged)
        total = state["schedule"]["total"]
    else:
        total = max(1, math.ceil(args.epochs * sched_rows.steps_per_epoch))
    stop_at = total
    if args.chunk:
        k, n = (int(v) for v in args.chunk.split("/"))
        stop_at = math.ceil(k * total / n)
    schedule = common.make_schedule(args, total)

    # -- optimizer, state --
    model = D.wrap(model, info, fsdp, amp)   # before the optimizer: FSDP replaces parameters by shards (in place)
    optimizer = common.make_optimizer(model.parameters(), args.lr, args.weight_decay if lora_cfg is None else 0.0,
                                      (0.9, args.beta2), device)
    if state:
        if sharded:
            D.load_sharded_state(last, raw, optimizer, info, trainable_only=lora_cfg is not None)
        else:
            D.load_optimizer_state(raw, optimizer, state["optimizer"], fsdp)
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        D.restore_rng(state["rng"], info, args.seed + 1, step)
        saved_g = state.get("rows", {}).get("global_batch", G)
        if saved_g != G and info.master:
            print(f"sft: resuming with {G} rows/step (the checkpoint's run had {saved_g}): the data continues from the "
                  f"same row, the updates differ from an uninterrupted run", file=sys.stderr)
    if args.compile:
        model = torch.compile(model)

    fpt = raw.config.flops_per_token(seq_len)
    if lora_cfg is not None:  # frozen weights need no weight-gradient: ~2/3 of the full cost
        fpt = fpt * 2 / 3
    peak = args.peak_flops or peak_flops(device, amp)
    meter = common.Throughput(fpt, peak * info.world_size if peak else None)
    metrics = common.Metrics(out, resume_step=step if resuming else 0, enabled=info.master)
    if info.master:
        n_tok = sum(len(e[0]) for e in examples)
        print(f"sft: {'LoRA r=%d alpha=%g on %s' % (lora_cfg.r, lora_cfg.alpha, ','.join(lora_cfg.targets)) if lora_cfg else 'full fine-tuning'}; "
              f"trainable {trainable:,} of {sum(p.numel() for p in raw.parameters()):,} params; "
              f"{stats['conversations']} conversations ({stats['truncated']} truncated, {stats['no_target']} without targets) "
              f"-> {len(rows)} packed rows of {seq_len + 1} ({n_tok / (len(rows) * (seq_len + 1)):.0%} full); "
              f"{G} rows/step, {total} steps{'; resuming at step %d' % step if resuming else ''}; "
              f"device {device}, autocast {amp or 'off'}, {info.world_size} process(es){' (FSDP)' if fsdp else ''}", file=sys.stderr)

    def evaluate() -> float | None:
        if not val_rows:
            return None
        model.eval()
        tot, cnt = torch.zeros((), device=device), torch.zeros((), device=device)
        with torch.no_grad():
            mine = val_rows[info.rank::info.world_size]
            if not mine and fsdp:  # FSDP: every rank must join the forward passes' collectives
                raise HessGPTError("--fsdp: fewer validation rows than processes; raise --eval-rows")
            # FSDP: every rank runs as many forwards (each one all-gathers); a rank with fewer rows repeats its
            # first batch and does not count it
            n_batches = math.ceil(len(val_rows[0::info.world_size]) / args.batch_size) if fsdp else math.ceil(len(mine) / args.batch_size)
            for b in range(n_batches):
                i = b * args.batch_size
                extra = i >= len(mine)
                batch = make_batch(val_examples, mine[0 if extra else i:][:args.batch_size], seq_len, tokenizer.pad_id)
                s, c = masked_loss_sum(model, batch, device, amp)
                if not extra:
                    tot, cnt = tot + s, cnt + c
        model.train()
        tot, cnt = D.all_reduce(tot, info), D.all_reduce(cnt, info)
        return (tot / cnt.clamp(min=1)).item()

    def snapshot(path, done_step, final=False):
        meta = {"stage": "sft-lora" if lora_cfg else "sft", "step": done_step, "parent": os.path.abspath(args.base),
                "data": _data_meta(args.data), "args": vars(args), "tokens": done_step * tokens_per_step}
        # collectives first, on every rank: the optimizer's shards and every rank's RNG
        sharded_save = args.sharded_state and not final
        opt = None if final or sharded_save else D.full_optimizer_state(raw, optimizer, fsdp)
        rngs = None if final else D.rank_rng_states(info)
        ts = None if final else {"scaler": scaler.state_dict(), "rng": rngs, "world_size": info.world_size, "step": done_step,
                                 "rows": sched_rows.state_dict(done_step), "schedule": schedule.to_dict(),
                                 "data": _data_meta(args.data), **({"sharded": True} if sharded_save else {"optimizer": opt})}
        if sharded_save:   # each rank its own shard of the trainable weights and optimizer; rank 0 adds the small files
            def rest(tmp):
                with open(os.path.join(tmp, "meta.json"), "w") as f:
                    json.dump({**meta, "sharded_state": True}, f, indent=2, default=str)
                torch.save(ts, os.path.join(tmp, "train_state.pt"))

            D.save_sharded_state(path, raw, optimizer, info, rest, trainable_only=lora_cfg is not None)
            return
        save_state(out if final else path, raw, tokenizer, args, lora_cfg, base_hash, ts, meta, info, fsdp, final=final)

    stop = common.StopSignal()
    bar = None
    if info.master and not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, desc="sft", unit="step", dynamic_ncols=True)
    # ---------------------------------------------------------------- the loop
    try:
        while step < stop_at:
            lr = schedule(step)
            for g in optimizer.param_groups:
                g["lr"] = lr
            rows_now = sched_rows.global_rows(step)
            # normaliser: masked tokens of the whole global batch (every rank can count them)
            n_target = sum(targets_in[i] for r in rows_now for i in rows[r])
            loss_sum = torch.zeros((), device=device)
            for micro in range(args.grad_accum):
                batch = make_batch(examples, [rows[r] for r in sched_rows.micro_rows(rows_now, micro, info.rank, info.world_size, args.batch_size)],
                                   seq_len, tokenizer.pad_id)
                with D.grad_sync(model, raw, info, fsdp, sync=micro == args.grad_accum - 1):
                    try:
                        s, _ = masked_loss_sum(model, batch, device, amp)
                    except torch.OutOfMemoryError:
                        raise common.oom_error(args.batch_size, seq_len, device) from None
                    # DDP and FSDP average gradients over processes: scale by world so the sum over all rows / n_target remains
                    scaler.scale(s * info.world_size / max(n_target, 1)).backward()
                loss_sum += s.detach()
            common.optimizer_step(model.parameters(), optimizer, scaler, args.clip)   # unscale, clip, step, update
            step += 1

            loss = (D.all_reduce(loss_sum, info) / max(n_target, 1)).item()
            tps, mfu = meter.step(tokens_per_step)
            row = {"step": step, "loss": loss, "lr": lr, "tokens": step * tokens_per_step, "tok_per_s": round(tps, 1),
                   "mfu": round(mfu, 4) if mfu is not None else None}
            if (args.eval_every and step % args.eval_every == 0) or step == total:
                row["val_loss"] = evaluate()
                if row["val_loss"] is None:
                    del row["val_loss"]
            if step % args.log_every == 0 or "val_loss" in row or step == total:
                metrics.log(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"loss {loss:.3f} lr {lr:.2e} {tps:,.0f} tok/s" + (f" mfu {mfu:.1%}" if mfu else "")
                                    + (f" val {row['val_loss']:.3f}" if "val_loss" in row else ""))
            stopping = D.any_rank(stop.received is not None, info)
            if step < total and (stopping or step == stop_at or (args.save_every and step % args.save_every == 0)):
                snapshot(last, step)
            if stopping and step < total:
                if info.master:
                    print(f"\nsft: stopped by signal at step {step}; state saved in {last}; continue with --resume", file=sys.stderr)
                del model  # the DDP wrapper (its Reducer) before the process group: D.cleanup
                D.cleanup(info)
                return 0
    finally:
        stop.restore()
        if bar is not None:
            bar.close()
        metrics.close()

    if step < total:  # end of a chunk
        if info.master:
            k, n = args.chunk.split("/")
            nxt = f"--chunk {int(k) + 1}/{n}" if int(k) < int(n) else "--resume"
            print(f"sft: chunk {args.chunk} done at step {step}/{total}; state in {last}; continue with {nxt}")
        del model  # the DDP wrapper (its Reducer) before the process group: D.cleanup
        D.cleanup(info)
        return 0
    # ---------------------------------------------------------------- the end
    snapshot(out, step, final=True)
    if info.master:
        shutil.rmtree(last, ignore_errors=True)
        common.plot_losses(metrics.path, os.path.join(out, "loss.png"), title=f"sft {os.path.basename(os.path.abspath(out))}")
        print(f"sft: done, {step} steps -> {out} ({'LoRA adapter' if lora_cfg else 'checkpoint'}), metrics.jsonl, loss.png")
    D.barrier(info)
    del model  # the DDP wrapper (its Reducer) before the process group: D.cleanup
    D.cleanup(info)
    return 0
