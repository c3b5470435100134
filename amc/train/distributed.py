"""Training across processes started by torchrun: DistributedDataParallel, gloo on the CPU, nccl on CUDA.

    torchrun --standalone --nproc_per_node=2 .venv/bin/amc finetune --student s.pt --teacher t.pt

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; without them a command runs in one process as before.
- `--batch-size` stays the global batch: every rank trains on its own share of each global batch (the
  in-memory training tensors, shuffled and augmented identically on every rank, then split), so N processes
  take the same steps with the same learning rate as one.
- BatchNorm statistics are per rank, and DDP copies rank 0's to the others before each step (its default;
  torchvision's reference scripts do the same unless asked for SyncBatchNorm).
- Rank 0 alone evaluates, prints, writes checkpoints, TensorBoard and the resolved config.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from amc.device import resolve_device
from amc.errors import AmcError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world_size


ONE_PROCESS = Ranks()


def torchrun_ranks() -> Ranks:
    """This process's place in a torchrun job (one rank of one when not launched by torchrun)."""
    return Ranks(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


def start(device: str, batch_size: int) -> tuple[Ranks, torch.device]:
    """Check the job, join the process group if torchrun started several processes, and pick this rank's device."""
    ranks = torchrun_ranks()
    if batch_size < 1:
        raise AmcError(f"--batch-size is {batch_size}; pass 1 or more")
    if batch_size % ranks.world_size:
        raise AmcError(f"--batch-size {batch_size} does not split evenly among {ranks.world_size} torchrun processes; "
                       f"pass a multiple of {ranks.world_size}")  # fmt: skip
    resolved = resolve_device(device)
    if not ranks.distributed:
        return ranks, resolved
    if resolved.type == "cuda":
        resolved = resolve_device(f"cuda:{ranks.local_rank}")
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return ranks, resolved


def wrap(model: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """The model to train: DDP around it when distributed, else the model itself."""
    if not ranks.distributed:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def summed(values: list[float], ranks: Ranks, device: torch.device) -> list[float]:
    """Element-wise sum of `values` over the ranks (the values themselves in one process)."""
    if not ranks.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()


def finish(ranks: Ranks) -> None:
    """Leave the process group. DDP wrappers sit in reference cycles: collect them first, so that none is torn
    down after its process group is gone (gloo aborts the process if one is)."""
    if ranks.distributed and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
