"""`hessgpt pretrain`: next-token pretraining on token shards.

    hessgpt pretrain --model small --data shards/ --out runs/pretrain --steps 2000 --batch-size 16
    hessgpt pretrain --model runs/pretrain --data code-shards/ --out runs/code      # continue from a checkpoint
    hessgpt pretrain ... --resume                                                  # after a crash / Ctrl-C
    hessgpt pretrain ... --steps 30000 --chunk 2/10                                # steps 3000..6000 of 30000, then stop
    torchrun --nproc_per_node 8 -m hessgpt pretrain ... [--fsdp]                   # DDP / FSDP (gloo on CPU)

The model is a preset (its vocab_size set to the tokenizer's) or a checkpoint (HessGPT or HF) to continue.
The tokenizer is `--tokenizer DIR`, else the checkpoint's, else the one the shards were made with
(their manifest records its path); shards made with another tokenizer are refused.

Each step: `grad_accum` micro-batches of [batch_size, seq_len] per process (bf16 autocast where the device
has it), gradient clipping, AdamW (fused), LR from warmup + cosine / warmup-stable-decay. Every
`--eval-every` steps: validation loss and bits per byte. Every `--save-every` steps, on SIGINT/SIGTERM,
and at the end of a `--chunk`: OUT/last/ (checkpoint + train_state.pt: optimizer, RNG, loader position,
step, schedule), from which `--resume` continues exactly; with `--sharded-state` OUT/last/ holds each
process's shard of the model and optimizer instead (distributed.save_sharded_state: config.json, tokenizer,
meta.json, train_state.pt and sharded/, no model.safetensors). At the end OUT itself becomes the checkpoint
(meta.json last: its presence marks the stage finished), with metrics.jsonl and loss.png beside it.
"""

import argparse
import json
import math
import os
import shutil
import sys

import torch

from hessgpt import checkpoint, loader
from hessgpt.config import PRESETS, ModelConfig
from hessgpt.data.loader import ShardLoader, check_shards, read_manifest
from hessgpt.device import autocast, autocast_dtype, grad_scaler, peak_flops, setup_matmul_precision
from hessgpt.errors import HessGPTError
from hessgpt.model import Transformer
from hessgpt.tokenizer import Tokenizer, _bytes_to_unicode
from hessgpt.train import common
from hessgpt.train import distributed as D


def parse_overrides(items: list[str]) -> dict:
    """--set dim=256 --set n_layers=6 -> {"dim": 256, "n_layers": 6} (ints, floats, true/false)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise HessGPTError(f"--set expects KEY=VALUE, got {item!r}")
        low = value.lower()
        if low in ("true", "false"):
            out[key] = low == "true"
        else:
            try:
                out[key] = int(value)
            except ValueError:
                try:
                    out[key] = float(value)
                except ValueError:
                    out[key] = value
    return out


def resolve_tokenizer(args):
    if args.tokenizer:
        return Tokenizer.load(args.tokenizer)
    if args.model not in PRESETS and os.path.isdir(args.model):
        tok = checkpoint.find_tokenizer(args.model)
        if tok is not None:
            return tok
    path = read_manifest(args.data)["tokenizer"].get("path")
    if path and os.path.exists(os.path.join(path, "tokenizer.json")):
        return Tokenizer.load(path)
    raise HessGPTError(f"--data {args.data}: the shards' tokenizer ({path}) is not on this machine; pass --tokenizer DIR")


def build_model(args, tokenizer) -> tuple[Transformer, str | None]:
    """(model, parent checkpoint path or None)."""
    if args.model in PRESETS:
        over = parse_overrides(args.set)
        over["vocab_size"] = tokenizer.vocab_size
        model = Transformer(ModelConfig.preset(args.model, **over)).init_weights(seed=args.seed)
        return model, None
    if args.set:
        raise HessGPTError("--set changes a preset's shape; it cannot be used when --model is a checkpoint")
    model, _ = loader.load(args.model)
    if model.config.vocab_size < tokenizer.vocab_size:
        raise HessGPTError(f"--model {args.model}: vocab_size {model.config.vocab_size} is smaller than the tokenizer's "
                           f"{tokenizer.vocab_size}; use the checkpoint's own tokenizer or a preset")
    return model, os.path.abspath(args.model)


def init_checkpoint(preset: str, tokenizer_dir: str, out: str, overrides: dict | None = None, seed: int = 0) -> None:
    """A randomly initialised preset (vocab_size = the tokenizer's) saved as a checkpoint: the starting point of
    a stage that fine-tunes from scratch (the pipeline's `init` stage)."""
    tok = Tokenizer.load(tokenizer_dir)
    cfg = ModelConfig.preset(preset, **{**(overrides or {}), "vocab_size": tok.vocab_size})
    model = Transformer(cfg).init_weights(seed=seed)
    checkpoint.save(out, model, tok, meta={"stage": "init", "step": 0, "parent": None, "preset": preset,
                                           "overrides": overrides or {}, "seed": seed})


def token_bytes(tokenizer) -> torch.Tensor:
    """UTF-8 bytes each token id stands for (0 for special tokens): the bits-per-byte denominator."""
    byte_chars = set(_bytes_to_unicode().values())
    n = tokenizer.vocab_size
    out = torch.zeros(n, dtype=torch.long)
    for i in range(n):
        if i in tokenizer.special_id_set:
            continue
        s = tokenizer.token_str(i)
        if s is None:
            continue
        out[i] = len(s) if all(c in byte_chars for c in s) else len(tokenizer.decode([i]).encode("utf-8"))
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(prog="hessgpt pretrain", description="Pretrain (or continue pretraining) on token shards.")
    p.add_argument("--model", required=True, help=f"preset ({', '.join(PRESETS)}) or checkpoint to continue from")
    p.add_argument("--data", required=True, help="shards folder (hessgpt data shards)")
    p.add_argument("--out", required=True, help="run folder; becomes the final checkpoint")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the checkpoint's, else the shards')")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset's config (repeatable)")
    p.add_argument("--chunk", help="K/N: train the K-th of N equal parts of --steps, save OUT/last and stop (K>1 resumes)")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each block in backward, keeping only its input (less memory, ~1/3 more compute)")
    common.add_common_args(p, lr=3e-4, batch_size=16, save_every=500, eval_every=250)
    args = p.parse_args(argv)
    common.check_positive(args, "steps", "batch_size", "seq_len", "grad_accum", "lr")
    if args.steps is None:
        args.steps = 1000
    return args


def main(argv: list[str]) -> int:
    return train(parse_args(argv))


def train(args) -> int:
    info = D.init(args.device)
    device = info.device
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = autocast_dtype(device, args.dtype)
    scaler = grad_scaler(device, amp)          # fp16: loss scaling; otherwise a pass-through
    setup_matmul_precision(device)             # CUDA: TF32 for fp32 matmuls
    fsdp = D.uses_fsdp(args.fsdp, info)
    common.seed_rank(args.seed, info.rank)  # dropout masks, each process its own (restored from train_state.pt on --resume)
    out, last = args.out, os.path.join(args.out, "last")
    total = args.steps
    stop_at = total
    if args.chunk:
        try:
            k, n = (int(v) for v in args.chunk.split("/"))
            assert 1 <= k <= n
        except (ValueError, AssertionError):
            raise HessGPTError(f"--chunk {args.chunk!r}: expected K/N with 1 <= K <= N, e.g. 2/10") from None
        stop_at = math.ceil(k * total / n)
        args.resume = args.resume or k > 1
    if args.resume and os.path.exists(os.path.join(out, "meta.json")) and not os.path.exists(last):
        if info.master:
            print(f"{out}: already finished (meta.json present); nothing to do")
        D.cleanup(info)
        return 0
    resuming = args.resume and os.path.exists(os.path.join(last, "train_state.pt"))
    sharded = resuming and D.is_sharded_state(last)   # model + optimizer as DCP shards, loaded after wrapping

    # -- tokenizer, data, model --
    tokenizer = resolve_tokenizer(args)
    check_shards(args.data, tokenizer)
    if sharded:   # the weights come with the optimizer, from the shards, once the model is wrapped
        model = Transformer(ModelConfig.from_json(os.path.join(last, "config.json")))
        parent = checkpoint.read_meta(last).get("parent")
    elif resuming:
        model, _ = checkpoint.load(last)
        parent = checkpoint.read_meta(last).get("parent")
    else:
        model, parent = build_model(args, tokenizer)
    seq_len = args.seq_len or model.config.context_length
    if seq_len > model.config.context_length:
        raise HessGPTError(f"--seq-len {seq_len} is longer than the model's context_length {model.config.context_length}")
    model.to(device).train()
    if args.activation_checkpointing:   # else the config's own (--set activation_checkpointing=true)
        model.config.activation_checkpointing = True
    raw = model
    n_params = sum(p.numel() for p in model.parameters())
    common.check_memory(model.config, common.memory_step(model.config, args.batch_size, seq_len, device, amp,
                                                         fsdp_world=info.world_size if args.fsdp else 1),
                        device, skip=args.skip_memory_check)
    loader = ShardLoader(args.data, batch_size=args.batch_size, seq_len=seq_len, split="train",
                         rank=info.rank, world_size=info.world_size, seed=args.seed)
    try:
        ShardLoader(args.data, batch_size=args.batch_size, seq_len=seq_len, split="val", rank=info.rank, world_size=info.world_size)
        has_val = True
    except HessGPTError as e:
        has_val = False
        if info.master:
            print(f"pretrain: no validation ({e})", file=sys.stderr)
    byte_len = token_bytes(tokenizer).to(device) if has_val else None

    model = D.wrap(model, info, fsdp, amp)   # before the optimizer: FSDP replaces parameters by shards (in place)
    optimizer = common.make_optimizer(model.parameters(), args.lr, args.weight_decay, (0.9, args.beta2), device)
    schedule = common.make_schedule(args, total)
    step = 0
    if resuming:
        state = common.load_train_state(last)
        if sharded:
            D.load_sharded_state(last, raw, optimizer, info)
        else:
            D.load_optimizer_state(raw, optimizer, state["optimizer"], fsdp)
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step = state["step"]
        D.restore_rng(state["rng"], info, args.seed, step)
        if os.path.abspath(args.data) == state.get("data"):
            loader.load_state_dict(state["loader"])   # a position in tokens: any number of processes continues from it
        elif info.master:
            print(f"pretrain: new --data {args.data}: reading it from its start", file=sys.stderr)
    if args.compile:
        model = torch.compile(model)

    tokens_per_step = args.batch_size * seq_len * args.grad_accum * info.world_size
    peak = args.peak_flops or peak_flops(device, amp)
    meter = common.Throughput(raw.config.flops_per_token(seq_len), peak * info.world_size if peak else None)
    metrics = common.Metrics(out, resume_step=step if resuming else 0, enabled=info.master)
    if info.master:
        print(f"pretrain: {n_params:,} params ({args.model}); {tokens_per_step:,} tokens/step "
              f"({args.batch_size} x {seq_len} x {args.grad_accum} accum x {info.world_size} proc); "
              f"steps {step}->{stop_at} of {total}; device {device}, autocast {amp or 'off'}"
              f"{', FSDP' if fsdp else ''}{', compiled' if args.compile else ''}", file=sys.stderr)

    def evaluate() -> tuple[float, float]:
        """(val loss in nats/token, bits per byte) over --eval-batches batches from the start of the val split."""
        model.eval()
        val = ShardLoader(args.data, batch_size=args.batch_size, seq_len=seq_len, split="val", rank=info.rank, world_size=info.world_size)
        nats, toks, nbytes = (torch.zeros((), device=device, dtype=torch.float64) for _ in range(3))
        with torch.no_grad():
            for _ in range(args.eval_batches):
                x, y = (t.to(device) for t in next(val))
                with autocast(device, amp):
                    logits = model(x)
                loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1), reduction="none")
                b = byte_len[y.view(-1)]
                nats += loss.sum().double()
                toks += loss.numel()
                nbytes += b.sum().double()
                if val.steps_per_epoch <= _ + 1:
                    break
        model.train()
        nats, toks = D.all_reduce(nats, info), D.all_reduce(toks, info)
        nbytes = D.all_reduce(nbytes, info)
        return (nats / toks).item(), (nats / math.log(2) / nbytes.clamp(min=1)).item()

    def train_state(done_step: int, rngs: list, opt: dict | None) -> dict:
        ts = {"scaler": scaler.state_dict(), "rng": rngs, "world_size": info.world_size, "loader": loader.state_dict(),
              "step": done_step, "schedule": schedule.to_dict(), "data": os.path.abspath(args.data)}
        return {"optimizer": opt, **ts} if opt is not None else {**ts, "sharded": True}

    def snapshot(path: str, done_step: int, final: bool = False) -> None:
        meta = {"stage": "pretrain", "step": done_step, "parent": parent, "data": os.path.abspath(args.data),
                "tokens": done_step * tokens_per_step, "args": vars(args)}
        if args.sharded_state and not final:   # each rank its own shard; rank 0 adds the small files
            ts = train_state(done_step, D.rank_rng_states(info), None)

            def rest(tmp: str) -> None:
                raw.config.to_json(os.path.join(tmp, "config.json"))
                tokenizer.save(tmp)
                with open(os.path.join(tmp, "meta.json"), "w") as f:
                    json.dump({**meta, "sharded_state": True}, f, indent=2, default=str)
                torch.save(ts, os.path.join(tmp, "train_state.pt"))

            D.save_sharded_state(path, raw, optimizer, info, rest)
            return
        # collectives first, on every rank (`raw`: FSDP shards in place; DDP/compile wrappers prefix the keys)
        sd = D.full_model_state(raw, fsdp)
        opt = None if final else D.full_optimizer_state(raw, optimizer, fsdp)
        rngs = None if final else D.rank_rng_states(info)
        if not info.master:
            return
        with torch.device("meta"):
            plain = Transformer(raw.config)
        checkpoint.load_state_dict_strict(plain, {k: v.float() for k, v in sd.items()}, source="training state")
        ts = None if final else train_state(done_step, rngs, opt)
        if final:
            common.install_final(out, lambda tmp: checkpoint.save(tmp, plain, tokenizer, meta=meta))
        else:
            checkpoint.save(path, plain, tokenizer, meta=meta, train_state=ts)

    stop = common.StopSignal()
    bar = None
    if info.master and not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, desc="pretrain", unit="step", dynamic_ncols=True)
    # ---------------------------------------------------------------- the loop
    try:
        while step < stop_at:
            lr = schedule(step)
            for g in optimizer.param_groups:
                g["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for micro in range(args.grad_accum):
                x, y = next(loader)                                   # [B, T] each
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with D.grad_sync(model, raw, info, fsdp, sync=micro == args.grad_accum - 1):
                    try:
                        with autocast(device, amp):   # summed loss, logits in chunks (model.chunked_cross_entropy)
                            loss = model(x, targets=y) / (y.numel() * args.grad_accum)
                        scaler.scale(loss).backward()
                    except torch.OutOfMemoryError:
                        raise common.oom_error(args.batch_size, seq_len, device) from None
                loss_sum += loss.detach()
            common.optimizer_step(model.parameters(), optimizer, scaler, args.clip)   # unscale, clip, step, update
            step += 1

            loss_val = D.all_reduce(loss_sum, info, "mean").item()
            if not math.isfinite(loss_val):
                raise HessGPTError(f"loss became {loss_val} at step {step}; lower --lr (now {args.lr}) or check the data")
            tps, mfu = meter.step(tokens_per_step)
            row = {"step": step, "loss": loss_val, "lr": lr, "tokens": step * tokens_per_step, "tok_per_s": round(tps, 1),
                   "mfu": round(mfu, 4) if mfu is not None else None}
            if has_val and ((args.eval_every and step % args.eval_every == 0) or step == total):
                row["val_loss"], row["val_bpb"] = evaluate()
            if step % args.log_every == 0 or "val_loss" in row or step == stop_at:
                metrics.log(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"loss {loss_val:.3f} lr {lr:.2e} {tps:,.0f} tok/s" + (f" mfu {mfu:.1%}" if mfu else "")
                                    + (f" val {row['val_loss']:.3f} bpb {row['val_bpb']:.3f}" if "val_loss" in row else ""))
            stopping = D.any_rank(stop.received is not None, info)
            if step < total and (stopping or step == stop_at or (args.save_every and step % args.save_every == 0)):
                snapshot(last, step)
            if stopping and step < total:
                if info.master:
                    print(f"\npretrain: stopped by signal at step {step}; state saved in {last}; continue with --resume", file=sys.stderr)
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
            print(f"pretrain: chunk {args.chunk} done at step {step}/{total}; state in {last}; continue with {nxt}")
        del model  # the DDP wrapper (its Reducer) before the process group: D.cleanup
        D.cleanup(info)
        return 0
    # ---------------------------------------------------------------- the end
    snapshot(out, step, final=True)
    if info.master:
        shutil.rmtree(last, ignore_errors=True)
        common.plot_losses(metrics.path, os.path.join(out, "loss.png"), title=f"pretrain {os.path.basename(os.path.abspath(out))}")
        print(f"pretrain: done, {step} steps, {step * tokens_per_step:,} tokens -> {out} (checkpoint, metrics.jsonl, loss.png)")
    D.barrier(info)
    del model  # the DDP wrapper (its Reducer) before the process group: D.cleanup
    D.cleanup(info)
    return 0
