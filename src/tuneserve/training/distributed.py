"""Data-parallel training: which process this is, and how its gradients meet the others'.

Owns: joining the process group when a launcher asked for one (torchrun sets WORLD_SIZE; Ray
Train initialises the group itself), the rank queries, and summing small metric tensors.
One process (no WORLD_SIZE, no group) is rank 0 of 1, and every helper here is then a no-op,
so recipes call them unconditionally.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup() -> None:
    """Join the process group torchrun describes in the environment (Ray Train has joined already)."""
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def joined() -> bool:
    """In a process group, of any size (one of one included)."""
    return dist.is_available() and dist.is_initialized()


def active() -> bool:
    """In a process group of several processes: the collectives below have someone to talk to."""
    return joined() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over every process (a copy; the input is untouched)."""
    out = values.clone()
    if active():
        dist.all_reduce(out)
    return out


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every process when it is true on any (a pause request reaches one process first)."""
    if not active():
        return flag
    return bool(all_sum(torch.tensor([1.0 if flag else 0.0], device=device)).item() > 0)


def barrier() -> None:
    if active():
        dist.barrier()
