"""QLoRA's 4-bit base: a causal LM's linear weights frozen as NF4, through torchao's NF4Tensor.

Owns: swapping each decoder `nn.Linear` (every layer LoRA can target; never the LM head or the
embeddings) for a `FrozenNF4Linear` whose weight is NormalFloat-4 in blocks of 64 with its scalers
double-quantized in blocks of 256 (QLoRA's paper, as torchtune does), and measuring weight memory.
Does not own loading, adapters or training (training.model).

Why torchao and not bitsandbytes: NF4Tensor is plain torch ops, so QLoRA runs on CPU and CUDA
alike, and torchao is a 3.4 MB wheel (bitsandbytes: 43 MB, CUDA kernels). A FrozenNF4Linear is an
`nn.Linear`, so PEFT wraps it as it wraps any Linear; the adapter it saves holds LoRA weights only,
and is served (or merged) on the unquantized base, as QLoRA users do.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# torchao 0.18's path (earlier releases: torchao.dtypes.nf4tensor). Installed, torchao is imported by
# transformers anyway (its quantizers), so importing it here costs nothing more.
from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import NF4Tensor, linear_nf4, to_nf4

BLOCK_SIZE = 64  # weights per NF4 absmax scaler
SCALER_BLOCK_SIZE = 256  # scalers per double-quantization block


class FrozenNF4Linear(nn.Linear):
    """An `nn.Linear` whose weight is a frozen NF4Tensor: each forward dequantizes it to the input's
    dtype (torchao's `linear_nf4`, which saves the 4-bit weight, not a full one, for backward)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        out_features, in_features = weight.shape
        super().__init__(in_features, out_features, bias=False, device="meta")  # allocates nothing
        self.weight = nn.Parameter(weight, requires_grad=False)
        if bias is not None:
            self.bias = nn.Parameter(bias.detach(), requires_grad=False)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        device: torch.device | str | None = None,
        block_size: int = BLOCK_SIZE,
        scaler_block_size: int = SCALER_BLOCK_SIZE,
    ) -> "FrozenNF4Linear":
        """`linear`'s weight quantized on `device` (default: where it is), in its own dtype (the compute dtype)."""
        weight = linear.weight.detach().to(device).contiguous()
        # Whole scaler blocks: 256 where it divides the number of blocks, else its largest power-of-two
        # divisor (e.g. 64 for SmolLM2's 576-wide layers); bitsandbytes pads instead.
        scaler_block = math.gcd(weight.numel() // block_size, scaler_block_size)
        nf4 = to_nf4(weight, block_size, scaler_block)
        bias = linear.bias.detach().to(device) if linear.bias is not None else None
        return cls(nf4, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = linear_nf4(x, self.weight)
        return out if self.bias is None else out + self.bias.to(out.dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nf4 block={self.weight.block_size} scaler_block={self.weight.scaler_block_size}"


def quantize_nf4(
    model: nn.Module,
    device: torch.device | str | None = None,
    block_size: int = BLOCK_SIZE,
    scaler_block_size: int = SCALER_BLOCK_SIZE,
) -> list[str]:
    """Swap, in place, every `nn.Linear` of `model` but its output embeddings (the LM head) for a
    FrozenNF4Linear quantized on `device`, one layer at a time, dropping each full-precision weight
    as it goes (so `device` never holds more than one of them). Returns the swapped modules' names;
    a layer whose size is not a multiple of `block_size` stays as it is."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and not isinstance(module, FrozenNF4Linear)
        and module is not head
        and module.weight.numel() % block_size == 0
    ]
    for name in names:  # names, not modules: a module kept in a list would keep its full weight alive
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, FrozenNF4Linear.from_linear(getattr(parent, child), device, block_size, scaler_block_size))
    return names


def is_nf4(tensor: torch.Tensor) -> bool:
    return isinstance(tensor, NF4Tensor)


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds: for a wrapper subclass (NF4Tensor, a DTensor shard), the tensors inside it
    (4-bit codes and scalers; the local shard), not its nominal shape and dtype."""
    if hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(inner) for name in names if isinstance(inner := getattr(tensor, name), torch.Tensor))
    return tensor.numel() * tensor.element_size()


def weight_bytes(module: nn.Module) -> int:
    """Bytes of `module`'s parameters and buffers (tied weights once), NF4 weights as stored."""
    return sum(tensor_bytes(t) for t in (*module.parameters(), *module.buffers()))
