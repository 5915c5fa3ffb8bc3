"""How one model trains across several processes: DDP for adapters, FSDP for full fine-tuning.

Owns: wrapping the module the loop calls, turning gradient sync off between micro-batches, and
gathering whole weights and optimizer state for a checkpoint (and scattering them back on resume).
Does not own joining the process group or the rank queries (training.distributed).

Choices, and why:
- Adapters train with DDP: each rank holds the whole (frozen) base and the small adapter, and only
  the adapter's gradients are averaged; sharding would save little and cost an all-gather per layer.
- Full fine-tuning trains with FSDP2 (`fully_shard`, one unit per decoder layer plus the root):
  each rank keeps a 1/world shard of every weight, gradient and AdamW state (16 bytes a parameter
  in fp32 otherwise held whole on every rank), and gathers one layer's weights just for its
  forward and backward. The embeddings, final norm and LM head belong to the root unit, so the
  head the loss uses is whole inside the wrapped module's forward (training.model.Loaded.apply_head).
- Under FSDP every rank must run every forward: all ranks evaluate, and a rank with fewer examples
  in a step runs padding micro-batches whose loss is multiplied by zero (training.loop._step).
- Full fine-tuning in a process group of one (a one-GPU Ray Train worker, or benchmarks/gpu_suite.py) is
  sharded too: the same FSDP code as on N ranks runs, NCCL included. With bf16 compute, FSDP2's
  MixedPrecisionPolicy gathers the fp32 master weights as bf16 and reduces gradients in fp32.
- Checkpoints hold whole tensors in the single-process format, so a checkpoint written by 2 ranks
  is served, continued or resumed by any number of processes.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from tuneserve.training import distributed

SINGLE, DDP, FSDP = "single", "ddp", "fsdp"


def strategy(training_type: str) -> str:
    """Which wrapping this run uses: FSDP for full fine-tuning in any process group (one of one
    included), DDP for adapters over several processes, else none."""
    if training_type == "full" and distributed.joined():
        return FSDP
    return DDP if distributed.active() else SINGLE


def wrap(
    module: torch.nn.Module,
    layers: torch.nn.ModuleList,
    device: torch.device,
    kind: str,
    compute_dtype: torch.dtype | None = None,
) -> torch.nn.Module:
    """The module the loop calls. FSDP replaces the parameters by shards in place: build the
    optimizer from the parameters after this call, never before. `compute_dtype` (bf16 compute on
    fp32 weights) becomes FSDP's mixed-precision policy."""
    if kind == DDP:
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    if kind == FSDP:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(device.type, (distributed.world_size(),))
        policy = (
            MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
            if compute_dtype
            else MixedPrecisionPolicy()
        )
        for layer in layers:
            fully_shard(layer, mesh=mesh, mp_policy=policy)
        fully_shard(module, mesh=mesh, mp_policy=policy)
    return module


def gradient_sync(module: torch.nn.Module, kind: str, sync: bool) -> contextlib.AbstractContextManager:
    """Within it, backward accumulates gradients locally (sync=False) or also reduces them across ranks."""
    if kind == DDP and not sync:
        return module.no_sync()
    if kind == FSDP:
        module.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def full_model_state(module: torch.nn.Module, kind: str) -> dict[str, torch.Tensor] | None:
    """The whole weights of a sharded model on rank 0 (CPU), {} on the others; None when the module
    holds its whole weights already. A collective under FSDP: every rank calls it."""
    if kind != FSDP:
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    whole = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    # Tied weights (embeddings and LM head) come back as two tensors; keep the first name, as
    # save_pretrained does for a model whose tied weights still share their storage.
    first: dict[int, str] = {}
    aliases = {name for name, p in module.named_parameters(remove_duplicate=False) if first.setdefault(id(p), name) != name}
    return {name: tensor for name, tensor in whole.items() if name not in aliases}


def optimizer_state(module: torch.nn.Module, optimizer: torch.optim.Optimizer, kind: str) -> dict[str, Any]:
    """The optimizer's state keyed by parameter name, so any number of processes can resume from it:
    whole tensors on rank 0 under FSDP (a collective: every rank calls it)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(module, optimizer, options=_options(kind, saving=True))


def load_optimizer_state(module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], kind: str) -> None:
    """Restore what `optimizer_state` saved; under FSDP every rank reads the whole state and keeps its shard."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(module, optimizer, state, options=_options(kind, saving=False))


def _options(kind: str, *, saving: bool):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    if kind != FSDP:
        return StateDictOptions()
    return StateDictOptions(full_state_dict=True, cpu_offload=saving)
