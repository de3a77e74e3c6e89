"""Scale-out plumbing: `torchrun` process groups, DDP / FSDP wrapping, reductions.

    torchrun --nproc_per_node 8 -m hessgpt pretrain ...      # DDP, one process per GPU (nccl)
    torchrun --nproc_per_node 2 -m hessgpt pretrain ...      # on CPU: gloo
    ... --fsdp                                               # shard params/grads/optimizer (FSDP2 fully_shard)

Without torchrun's environment (RANK/WORLD_SIZE) everything here is a no-op single process (and --fsdp too).

Checkpoints are world-size free: model, adapter and optimizer are gathered to full tensors (rank 0 writes), the
optimizer keyed by parameter name, and the RNG states of all ranks saved as a list. A resume on as many processes
restores each rank its own state; on another number, each rank's RNG is derived from (seed, step, rank).
"""

import gc
import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

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
