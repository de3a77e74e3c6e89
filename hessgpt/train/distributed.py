"""Scale-out plumbing: `torchrun` process groups, DDP / FSDP wrapping, reductions.

    torchrun --nproc_per_node 8 -m hessgpt pretrain ...      # DDP, one process per GPU (nccl)
    torchrun --nproc_per_node 2 -m hessgpt pretrain ...      # on CPU: gloo
    ... --fsdp                                               # shard params/grads/optimizer (FSDP2 fully_shard)

Without torchrun's environment (RANK/WORLD_SIZE) everything here is a no-op single process (and --fsdp too).

Checkpoints are world-size free: model, adapter and optimizer are gathered to full tensors (rank 0 writes), the
optimizer keyed by parameter name, and the RNG states of all ranks saved as a list. A resume on as many processes
restores each rank its own state; on another number, each rank's RNG is derived from (seed, step, rank).
With --sharded-state the resume state's model and optimizer are instead written by every rank, its own shard
(torch.distributed.checkpoint, OUT/last/sharded/), and read back resharded on any number of processes.
"""

import gc
import os
import sys
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     get_state_dict, set_optimizer_state_dict, set_state_dict)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

from hessgpt.checkpoint import atomic_dir_write
from hessgpt.device import pick_device
from hessgpt.errors import HessGPTError
from hessgpt.train import common


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def init(device_name: str | None = "auto") -> DistInfo:
    """Join the process group torchrun set up (nccl on CUDA, gloo on CPU), or run as one process."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return DistInfo(device=pick_device(device_name))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type == "mps":
        raise HessGPTError("multi-process training on MPS is not supported; use one process")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=rank, local_rank=local, world_size=world, device=device)


def cleanup(info: DistInfo) -> None:
    """Destroy the process group. Drop the DDP-wrapped model before calling this (`del model`): a DDP Reducer
    freed after the group holds its last reference, so ~ProcessGroupGloo runs inside the Reducer's dealloc with
    the GIL held and joins gloo threads that wait for the GIL to free their last work's tensors: a hang at the
    very end of a finished run (seen in CI, torchrun --nproc_per_node 2 on CPU; pytorch/pytorch#56297)."""
    if info.enabled and dist.is_initialized():
        gc.collect()  # a reference cycle may still hold the wrapper
        dist.destroy_process_group()


def uses_fsdp(requested: bool, info: DistInfo) -> bool:
    """--fsdp shards across processes; with one process there is nothing to shard (plain training, same checkpoints)."""
    if requested and not info.enabled:
        print("--fsdp: one process, nothing to shard; training unsharded", file=sys.stderr)
    return requested and info.enabled


def mixed_precision(device: torch.device, amp: torch.dtype | None) -> MixedPrecisionPolicy:
    """FSDP2 policy: on CUDA under bf16 autocast, bf16 all-gathers and compute with fp32 gradient reduction (half
    the parameter traffic, no precision lost in the sum); elsewhere (CPU/gloo, fp16, fp32) everything in fp32."""
    if device.type == "cuda" and amp == torch.bfloat16:
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def wrap(model: torch.nn.Module, info: DistInfo, fsdp: bool = False, amp: torch.dtype | None = None) -> torch.nn.Module:
    """DDP (each process a full replica) or FSDP2 (each block's params sharded across processes, in place:
    the returned module is `model` itself, its state-dict keys unchanged)."""
    if fsdp:
        mp = mixed_precision(info.device, amp)
        for block in model.model.layers:
            fully_shard(block, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return model
    if not info.enabled:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def grad_sync(model: torch.nn.Module, raw: torch.nn.Module, info: DistInfo, fsdp: bool, sync: bool):
    """Context for one accumulation micro-step: gradients are communicated only when `sync` (the last one).
    FSDP2: no reduce-scatter before then (gradients accumulate unsharded); DDP: no_sync()."""
    if fsdp:
        raw.set_requires_gradient_sync(sync)
        return nullcontext()
    if info.enabled and not sync:
        return model.no_sync()
    return nullcontext()


def all_reduce(x: torch.Tensor, info: DistInfo, op: str = "sum") -> torch.Tensor:
    if info.enabled:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM if op in ("sum", "mean") else dist.ReduceOp.MAX)
        if op == "mean":
            x /= info.world_size
    return x


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank if it is True on one (e.g. a SIGTERM seen by one process stops all of them)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    return bool(all_reduce(t, info, "max").item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def full_model_state(model: torch.nn.Module, fsdp: bool) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict on CPU, for saving; collective under FSDP (every rank calls it)."""
    if fsdp:
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _param_names(model: torch.nn.Module, optimizer) -> list[list[str]]:
    """Each param group's parameters by name (the optimizer's order)."""
    name = {id(p): n for n, p in model.named_parameters()}
    try:
        return [[name[id(p)] for p in g["params"]] for g in optimizer.param_groups]
    except KeyError:
        raise HessGPTError("the optimizer holds a parameter the model does not (pass the unwrapped model)") from None


def full_optimizer_state(model, optimizer, fsdp: bool) -> dict:
    """Optimizer state keyed by parameter name (as torch.distributed.checkpoint's full state dict), whole tensors on
    CPU: the same file whatever the number of processes. Collective under FSDP. `model`: the unwrapped module."""
    if fsdp:
        return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    sd = optimizer.state_dict()
    names = [n for group in _param_names(model, optimizer) for n in group]
    return {"state": {names[i]: {k: v.cpu() if torch.is_tensor(v) else v for k, v in st.items()} for i, st in sd["state"].items()},
            "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in sd["param_groups"]]}


def load_optimizer_state(model, optimizer, state: dict, fsdp: bool) -> None:
    """Load `full_optimizer_state`'s output (or a legacy id-keyed `optimizer.state_dict()`) on any number of processes."""
    groups = _param_names(model, optimizer)
    saved = [g["params"] for g in state["param_groups"]]
    if saved and all(isinstance(n, int) for g in saved for n in g):   # legacy: ids in the optimizer's order
        flat = [n for g in groups for n in g]
        state = {"state": {flat[i]: st for i, st in state["state"].items()},
                 "param_groups": [{**g, "params": [flat[i] for i in g["params"]]} for g in state["param_groups"]]}
        saved = [g["params"] for g in state["param_groups"]]
    if saved != groups:
        missing = sorted(set(n for g in groups for n in g) - set(n for g in saved for n in g))
        raise HessGPTError(f"optimizer state: its parameter groups do not match this model's"
                           f"{' (missing ' + ', '.join(missing[:3]) + ')' if missing else ''}; was it saved by another run?")
    if fsdp:
        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
        return
    ids = {n: i for i, n in enumerate(n for g in groups for n in g)}
    optimizer.load_state_dict({"state": {ids[n]: st for n, st in state["state"].items()},
                               "param_groups": [{**g, "params": [ids[n] for n in g["params"]]} for g in state["param_groups"]]})


# ---- sharded resume state (torch.distributed.checkpoint) -------------------------------------------

SHARDED_DIR = "sharded"   # OUT/last/sharded/: DCP's .metadata + one __RANK_0.distcp file per writing rank


def is_sharded_state(path: str) -> bool:
    """True when the resume folder `path` holds a sharded model + optimizer (save_sharded_state) rather than whole tensors."""
    return os.path.exists(os.path.join(path, SHARDED_DIR, ".metadata"))


def _sharded_options(trainable_only: bool) -> StateDictOptions:
    # trainable_only (LoRA): the frozen base comes from --base, only the adapter's parameters are saved and loaded
    return StateDictOptions(ignore_frozen_params=trainable_only, strict=not trainable_only)


@contextmanager
def _one_process_quiet(info: DistInfo):
    """DCP warns that it assumes one process when there is no process group: that is this case, say nothing."""
    with warnings.catch_warnings():
        if not info.enabled:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _first_failure(e: BaseException) -> str:
    """The underlying error of a DCP CheckpointException (it wraps each rank's exception and traceback)."""
    failures = getattr(e, "failures", None) or {}
    for failure in failures.values():
        inner = failure[0] if isinstance(failure, tuple) else failure
        return f"{type(inner).__name__}: {str(inner).strip().splitlines()[0] if str(inner).strip() else ''}"
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"


def _share_path(path: str | None, info: DistInfo) -> str:
    """Rank 0's temp folder name, on every rank (collective)."""
    if not info.enabled:
        return path
    box = [path]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def save_sharded_state(path: str, model: torch.nn.Module, optimizer, info: DistInfo, write_rest,
                       trainable_only: bool = False) -> None:
    """Write a resume folder at `path` in which every rank writes its own shard of the model and optimizer state
    (`dcp.save` into `path/sharded`: nothing is gathered), then rank 0 calls `write_rest(folder)` for the small
    files (train_state.pt without the optimizer, meta.json, ...). Atomic as checkpoint.atomic_dir_write: all of it
    goes to a temp folder beside `path` that rank 0 renames into place once every shard is written, so a crash
    leaves the previous state or the new one. Collective; the ranks must share the filesystem of `path`.
    `model`: the unwrapped (FSDP-sharded in place) module."""
    opts = _sharded_options(trainable_only)
    model_sd, optim_sd = get_state_dict(model, optimizer, options=opts)
    state = {"model": model_sd, "optim": optim_sd}

    def write(tmp: str | None) -> None:
        tmp = _share_path(tmp, info)
        with _one_process_quiet(info):
            dcp.save(state, checkpoint_id=os.path.join(tmp, SHARDED_DIR), no_dist=not info.enabled)
        if info.master:
            write_rest(tmp)

    if info.master:
        atomic_dir_write(path, write)
    else:
        write(None)
    barrier(info)   # no rank goes on (or reads `path`) before rank 0 has swapped the folder in


def load_sharded_state(path: str, model: torch.nn.Module, optimizer, info: DistInfo, trainable_only: bool = False) -> None:
    """Read `save_sharded_state`'s model and optimizer into this run's (FSDP-sharded, DDP or plain) `model` and
    `optimizer`, whatever the number of processes that wrote them: DCP reads each rank the parts of the saved
    tensors its own shards cover. Collective; `model`: the unwrapped module, the optimizer built on it."""
    opts = _sharded_options(trainable_only)
    model_sd, optim_sd = get_state_dict(model, optimizer, options=opts)   # the layout to fill (initialises AdamW's state)
    state = {"model": model_sd, "optim": optim_sd}
    where = os.path.join(path, SHARDED_DIR)
    try:
        with _one_process_quiet(info):
            dcp.load(state, checkpoint_id=where, no_dist=not info.enabled)
    except (CheckpointException, RuntimeError, ValueError, KeyError) as e:   # CheckpointException is a BaseException
        raise HessGPTError(f"{where}: cannot load this sharded state into this run's model and optimizer "
                           f"({_first_failure(e)}); was it saved by another run (other model, LoRA targets or --lora)?") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"], options=opts)


# ---- RNG: each rank its own ------------------------------------------------------------------------


def rank_rng_states(info: DistInfo) -> list[dict]:
    """Every rank's RNG state (index = rank), on every rank; collective."""
    mine = common.rng_state(info.device)
    if not info.enabled:
        return [mine]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, mine)
    return out


def restore_rng(saved, info: DistInfo, seed: int, step: int) -> str:
    """Restore this rank's RNG from a checkpoint's `rank_rng_states` list (a legacy single dict counts as one rank).
    Same number of processes: each rank gets its own state back (exact resume). Otherwise each rank's state is
    derived from (seed, step, rank): deterministic, different per rank, not the stream an uninterrupted run had.
    Returns "restored" or "derived"."""
    states = [saved] if isinstance(saved, dict) else list(saved)
    if len(states) == info.world_size:
        common.set_rng_state(states[info.rank], info.device)
        return "restored"
    common.seed_rank(seed, info.rank, step=max(step, 1))
    if info.master:
        print(f"resume: the checkpoint has the RNG of {len(states)} process(es), this run has {info.world_size}: "
              f"each rank's RNG derived from (seed, step {step}, rank)", file=sys.stderr)
    return "derived"
