"""What every training stage shares: LR schedule, AdamW (+ GradScaler step), RNG state, metrics log, stop signals, memory check,
and the "write the final model into the run folder" step. The loops themselves live in pretrain.py / sft.py.
"""

import json
import math
import os
import random
import signal
import time
from dataclasses import asdict, dataclass

import torch

from hessgpt.checkpoint import atomic_dir_write
from hessgpt.errors import HessGPTError
from hessgpt.train import plan

# ---- learning-rate schedule ----------------------------------------------------------------------


@dataclass
class Schedule:
    """Linear warmup, then cosine decay to min_lr (`cosine`), or hold then linear decay over the last
    `decay_frac` of training (`wsd`: warmup-stable-decay, good for chunked/extended runs), or `constant`."""

    lr: float
    total: int
    warmup: int = 0
    min_lr: float = 0.0
    kind: str = "cosine"
    decay_frac: float = 0.2

    def __post_init__(self):
        if self.kind not in ("cosine", "wsd", "constant"):
            raise HessGPTError(f"--schedule {self.kind!r}: use cosine, wsd or constant")

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.kind == "constant":
            return self.lr
        if self.kind == "wsd":
            decay_start = self.total - int(self.decay_frac * self.total)
            if step < decay_start:
                return self.lr
            t = (step - decay_start) / max(1, self.total - decay_start)
            return self.lr + (self.min_lr - self.lr) * min(t, 1.0)
        t = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * t))

    def to_dict(self) -> dict:
        return asdict(self)


def make_optimizer(params, lr: float, weight_decay: float, betas=(0.9, 0.95), device=None) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not norms); the fused kernel (one launch for all parameters)
    on CUDA, and on a CPU where this torch has it."""
    params = [p for p in params if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if device is not None and torch.device(device).type == "cuda":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas)


def optimizer_step(params, optimizer, scaler: torch.amp.GradScaler, clip: float) -> float | None:
    """One update from accumulated gradients (of `scaler.scale(loss)`): unscale, clip the true gradients' norm,
    step (skipped by the scaler when an fp16 gradient overflowed), update the scale, zero the gradients.
    Returns the pre-clip gradient norm (None without clipping)."""
    norm = None
    if clip > 0:
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_([p for p in params if p.requires_grad], clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return norm


# ---- RNG state (exact resume) --------------------------------------------------------------------


def rng_state(device: torch.device | None = None) -> dict:
    """This process's RNG state: Python, numpy, torch CPU and, on CUDA, this process's own GPU only (not one
    entry per visible GPU: a resume with fewer GPUs must not need the others)."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:
        pass
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Restore `rng_state`'s output. A legacy "cuda" list (one state per visible GPU) gives this device's entry."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and device is not None and device.type == "cuda":
        if isinstance(cuda, (list, tuple)):
            index = device.index or 0
            cuda = cuda[index] if index < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])


def seed_rank(seed: int, rank: int, step: int = 0) -> None:
    """Seed every generator from (seed, rank, step): each process its own stream (LoRA/attention dropout masks
    differ between ranks), reproducible. step > 0 is the derived state of a resume on another number of processes."""
    s = seed + rank if step == 0 else (seed * 1_000_003 + step) * 1009 + rank
    random.seed(s)
    torch.manual_seed(s)   # CPU and every CUDA device
    try:
        import numpy as np

        np.random.seed(s % 2**32)
    except ImportError:
        pass


def load_train_state(path: str) -> dict:
    file = os.path.join(path, "train_state.pt")
    if not os.path.exists(file):
        raise HessGPTError(f"{path}: no train_state.pt to resume from")
    return torch.load(file, map_location="cpu", weights_only=False)


# ---- metrics ------------------------------------------------------------------------------------


class Metrics:
    """`DIR/metrics.jsonl` (one JSON object per line) + TensorBoard when installed. On resume, lines after
    the resumed step (written by the interrupted run) are dropped so the log reads as one run."""

    def __init__(self, out_dir: str, resume_step: int | None = None, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(out_dir, "metrics.jsonl")
        self.tb = None
        if not enabled:
            return
        os.makedirs(out_dir, exist_ok=True)
        keep = []
        if resume_step is not None and os.path.exists(self.path):
            with open(self.path) as f:
                keep = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= resume_step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, self.path)
        self.file = open(self.path, "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(os.path.join(out_dir, "tensorboard"), purge_step=resume_step)
        except ImportError:  # tensorboard is optional
            self.tb = None

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def read_metrics(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_losses(metrics_path: str, png_path: str, title: str = "") -> None:
    """Train loss (and validation loss points) against step, as a PNG (matplotlib Agg, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = png_path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, png_path)


# ---- stop signals -------------------------------------------------------------------------------


class StopSignal:
    """SIGINT/SIGTERM set a flag; the loop checks it after each step, saves a checkpoint and exits cleanly."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from a test thread): no handler
                pass

    def _handle(self, signum, frame):
        if self.received is not None:  # second Ctrl-C: give up immediately
            raise KeyboardInterrupt
        self.received = signum

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ---- memory -------------------------------------------------------------------------------------


def available_memory(device: torch.device) -> int | None:
    """Free bytes on the device (CUDA: free GPU memory; CPU: MemAvailable), None if unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def memory_step(cfg, batch: int, seq_len: int, device: torch.device, amp: torch.dtype | None, lora=None,
                fsdp_world: int = 1, packed: bool = False, chunked_ce: bool = True) -> plan.Step:
    """The estimator's view of a training micro-step on this device (the kernels the model uses there):
    packed SFT rows use FlexAttention on CUDA (SDPA with the dense mask when dropout is on) and `masked_attention`
    (T^2 scores) on CPU."""
    attention = "flash"
    if packed:
        attention = "math" if device.type != "cuda" else ("masked" if cfg.dropout > 0 else "flex")
    lo = plan.LoRAShape(lora.r, tuple(lora.targets), lora.dropout) if lora is not None else None
    return plan.Step(batch, seq_len, {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp), lo,
                     bool(getattr(cfg, "activation_checkpointing", False)), attention,
                     "cuda" if device.type == "cuda" else "cpu", ce_chunk=plan.CE_CHUNK if chunked_ce else None,
                     fsdp_world=fsdp_world)


def check_memory(cfg, step: plan.Step, device: torch.device, skip: bool = False) -> int:
    """Refuse a run whose estimated peak (train/plan.py) exceeds 90% of the device's free memory; returns the estimate.
    `skip` (--skip-memory-check) turns the refusal into nothing: the estimate may be wrong for a kernel it does not model."""
    mem = plan.estimate(cfg, step)
    free = available_memory(device)
    if not skip and free is not None and mem.total > 0.9 * free:
        raise HessGPTError(f"batch too large for memory: --batch-size {step.batch} x --seq-len {step.seq_len} needs "
                           f"~{mem.total / 2**30:.1f} GiB ({mem.breakdown()}), {free / 2**30:.1f} GiB free on {device}; "
                           "lower --batch-size (and raise --grad-accum to keep the tokens per step), add "
                           "--activation-checkpointing, or pass --skip-memory-check")
    return mem.total


def oom_error(batch: int, seq_len: int, device) -> HessGPTError:
    return HessGPTError(f"out of memory on {device} at --batch-size {batch} x --seq-len {seq_len}; "
                        "lower --batch-size (and raise --grad-accum to keep the tokens per step)")


# ---- output folder ------------------------------------------------------------------------------


def install_final(out_dir: str, save_fn) -> None:
    """Write the finished model into the run folder (which also holds metrics.jsonl, loss.png, last/):
    `save_fn(tmp)` writes a complete checkpoint/adapter to a temp folder, whose files are then moved in one
    by one with os.replace, meta.json last; meta.json's presence is what marks the stage finished."""
    os.makedirs(out_dir, exist_ok=True)
    staging = os.path.join(out_dir, ".final")
    atomic_dir_write(staging, save_fn)
    meta = os.path.join(out_dir, "meta.json")
    if os.path.exists(meta):
        os.remove(meta)  # the folder is "unfinished" while files are swapped
    names = sorted(os.listdir(staging), key=lambda n: n == "meta.json")
    for name in names:
        os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
    os.rmdir(staging)


def fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Throughput:
    """Tokens/s and MFU over a window of recent steps (the first step, with warmup/compile, is excluded)."""

    def __init__(self, flops_per_token: float, peak: float | None):
        self.fpt, self.peak = flops_per_token, peak
        self.t = time.perf_counter()

    def step(self, tokens: int) -> tuple[float, float | None]:
        now = time.perf_counter()
        dt, self.t = now - self.t, now
        tps = tokens / max(dt, 1e-9)
        mfu = self.fpt * tps / self.peak if self.peak else None
        return tps, mfu


# ---- flags every stage has ----------------------------------------------------------------------


def add_common_args(p, lr: float, batch_size: int, save_every: int = 500, eval_every: int = 250) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, help="optimizer steps (default: stage-specific)")
    g.add_argument("--batch-size", type=int, default=batch_size, help="rows per micro-batch per process")
    g.add_argument("--seq-len", type=int, help="tokens per row (default: the model's context_length)")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    g.add_argument("--min-lr", type=float, help="final learning rate (default: lr / 10)")
    g.add_argument("--warmup", type=int, help="warmup steps (default: 2%% of steps, at least 1)")
    g.add_argument("--schedule", default="cosine", choices=["cosine", "wsd", "constant"])
    g.add_argument("--decay-frac", type=float, default=0.2, help="wsd: fraction of steps spent decaying")
    g.add_argument("--weight-decay", type=float, default=0.1)
    g.add_argument("--beta2", type=float, default=0.95)
    g.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping (0 = off)")
    g.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("runtime")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    r.add_argument("--dtype", default="auto", help="autocast dtype: auto (CUDA: bf16 at compute capability >= 8.0, else fp16 "
                   "with a GradScaler; CPU: bf16 where native, else fp32), bf16, fp16, fp32")
    r.add_argument("--compile", action="store_true", help="torch.compile the model (faster steps after a slow first one)")
    r.add_argument("--fsdp", action="store_true", help="shard the model across torchrun processes (FSDP2) instead of DDP")
    r.add_argument("--sharded-state", action="store_true",
                   help="OUT/last: every process writes its own shard of the model and optimizer (torch.distributed.checkpoint) "
                   "instead of whole tensors gathered on rank 0; --resume reads it on any number of processes. The final "
                   "OUT stays the usual checkpoint (or adapter)")
    r.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    r.add_argument("--peak-flops", type=float, help="device peak FLOP/s for MFU (default: device table)")
    r.add_argument("--skip-memory-check", action="store_true",
                   help="start even when the estimated peak memory (train/plan.py) exceeds 90%% of free memory")
    r.add_argument("--eval-every", type=int, default=eval_every, help="steps between validation passes (0 = only at the end)")
    r.add_argument("--eval-batches", type=int, default=8, help="validation micro-batches per pass")
    r.add_argument("--save-every", type=int, default=save_every, help="steps between checkpoints in OUT/last (0 = only at the end)")
    r.add_argument("--log-every", type=int, default=1, help="steps between metrics.jsonl lines")
    r.add_argument("--resume", action="store_true", help="continue from OUT/last (exact: data position, RNG, optimizer)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")


def make_schedule(args, total: int) -> Schedule:
    warmup = args.warmup if args.warmup is not None else max(1, total // 50)
    min_lr = args.min_lr if args.min_lr is not None else args.lr / 10
    return Schedule(lr=args.lr, total=total, warmup=min(warmup, total), min_lr=min_lr, kind=args.schedule, decay_frac=args.decay_frac)


def check_positive(args, *names) -> None:
    for n in names:
        v = getattr(args, n, None)
        if v is not None and v <= 0:
            raise HessGPTError(f"--{n.replace('_', '-')} must be positive, got {v}")
