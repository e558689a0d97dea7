"""torch.distributed helpers: env detection (torchrun), init/teardown, reductions, data sharding."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator, List

import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler


@dataclass
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world() -> DistInfo:
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(world_size=ws, rank=int(os.environ.get("RANK", "0")),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(device: str = "cpu") -> DistInfo:
    """Initialise the default process group from torchrun's environment when WORLD_SIZE > 1
    (gloo on CPU, nccl on CUDA).  A group that is already initialised is reused."""
    info = env_world()
    if dist.is_available() and dist.is_initialized():
        info.world_size, info.rank = dist.get_world_size(), dist.get_rank()
        return info
    if info.world_size > 1:
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
        info.initialized_here = True
    return info


def cleanup(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def _comm_device() -> torch.device:
    """gloo reduces CPU tensors, nccl CUDA tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dev = t.device
        x = t.to(_comm_device())
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        t = x.to(dev)
    return t


def all_gather_objects(obj, info: DistInfo) -> list:
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """True on every rank when any rank says True."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


class ResumableBatchSampler:
    """Per-rank training batches for one epoch: torch's :class:`DistributedSampler` (shuffled with
    ``seed + epoch``; one replica when not distributed) cut into per-rank batches of
    ``batch_size // world_size`` (incomplete last batch dropped), skipping the first
    ``start_batch`` batches when resuming mid-epoch.

    DistributedSampler gives rank r the permutation entries r, r+W, r+2W, ...; so the union over ranks
    of batch k is exactly entries [kB, (k+1)B) of the permutation — the same samples a single process
    with global batch B sees at step k.
    """

    def __init__(self, n: int, global_batch: int, info: DistInfo, seed: int = 0):
        if global_batch % info.world_size:
            raise ValueError(f"global batch size {global_batch} is not divisible by the world size "
                             f"{info.world_size}")
        self.n = n
        self.per_rank = global_batch // info.world_size
        self.sampler = DistributedSampler(range(n), num_replicas=info.world_size, rank=info.rank,
                                          shuffle=True, seed=seed, drop_last=False)
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch
        self.sampler.set_epoch(epoch)

    def batches_per_epoch(self) -> int:
        return self.sampler.num_samples // self.per_rank

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start_batch)

    def __iter__(self) -> Iterator[List[int]]:
        idx = list(iter(self.sampler))
        b = self.per_rank
        for k in range(self.start_batch, self.batches_per_epoch()):
            yield idx[k * b:(k + 1) * b]


def shard(n: int, info: DistInfo) -> range:
    """Contiguous, non-padded shard of range(n) for evaluation."""
    per = math.ceil(n / info.world_size)
    return range(min(n, info.rank * per), min(n, (info.rank + 1) * per))
