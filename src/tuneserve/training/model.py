"""The model a recipe trains: base weights, what is trainable, and how it is saved.

Owns: device and dtype, loading the base (4-bit NF4 for QLoRA: training.quantize), wrapping it for the training
type (LoRA/QLoRA, IA3, or every weight for full fine-tuning), continuing from an earlier adapter
or fine-tuned model, gradient checkpointing and torch.compile, and writing the artifact a
checkpoint or the final result holds. Does not own the loop, the data, or the loss.

Artifacts: an adapter (LoRA/QLoRA/IA3) is saved as PEFT saves it (adapter_model.safetensors +
adapter_config.json); full fine-tuning saves a whole model (model.safetensors + config.json).
Both get the tokenizer and chat template beside them, so PEFT, transformers and vLLM load the
directory as it is.
"""

from __future__ import annotations

import contextlib
import math
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from peft import IA3Config, LoraConfig, PeftModel, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import AutoModelForCausalLM

from tuneserve.training.events import EventWriter
from tuneserve.training.spec import TrainingSpec

ADAPTER_FILE = "adapter_model.safetensors"
FULL_MODEL_FILE = "model.safetensors"


@dataclass
class Loaded:
    model: torch.nn.Module  # a PeftModel, or the causal LM itself for full fine-tuning
    causal_lm: torch.nn.Module  # the transformers model inside (with adapter layers injected)
    device: torch.device
    dtype: torch.dtype
    # How a step avoids computing on padding (see training.batching):
    #   "packed": every example of a micro-batch in one row (flash-attention varlen, else SDPA's block mask);
    #   "rows": each example forwarded alone (no padding, no mask: SDPA's fused causal kernel; CPU);
    #   "mixed": "rows" for steps with a long example, "grouped" for steps of short ones (CPU's auto);
    #   "grouped": examples of similar length padded together.
    batching: str
    # Computing under autocast: full fine-tuning (fp32 weights) and adapters (fp32) on a bf16 base.
    autocast_dtype: torch.dtype | None = None

    @property
    def padding_free(self) -> bool:
        return self.batching == "packed"

    @property
    def is_adapter(self) -> bool:
        return isinstance(self.model, PeftModel)

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def decoder(self) -> torch.nn.Module:
        return getattr(self.causal_lm, self.causal_lm.base_model_prefix)

    def hidden_states(self, **inputs: torch.Tensor) -> torch.Tensor:
        """The decoder's last hidden states (no cache: a cache would also turn off packed-row masking)."""
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype else contextlib.nullcontext()
        )
        with autocast:
            return self.decoder()(**inputs, use_cache=False).last_hidden_state

    def lm_head(self) -> torch.nn.Module:
        return self.causal_lm.get_output_embeddings()

    def apply_head(self, head: Callable[[torch.Tensor, torch.nn.Module], Any], **inputs: torch.Tensor) -> Any:
        """`head(last hidden states, LM head)`: a loss from the hidden states, within one call of the
        decoder, so a wrapper that shards weights (FSDP) has the head's weights whole when it runs."""
        return head(self.hidden_states(**inputs), self.lm_head())


def device_and_dtype(precision: str = "auto") -> tuple[torch.device, torch.dtype]:
    """bf16 where the hardware computes it natively: CUDA, and CPUs with AVX512-BF16 or AMX (about
    2x the fp32 matmul rate on this project's 2-core EPYC); float32 elsewhere, or when asked."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    native_bf16 = cuda or torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if precision == "bf16" or (precision == "auto" and native_bf16):
        return device, torch.bfloat16
    return device, torch.float32


def packed_attention() -> str:
    """The attention for packed rows. flash-attention's varlen kernel where it is installed (CUDA):
    no FLOPs across example boundaries. Elsewhere SDPA, with the block-diagonal mask transformers
    builds from the restarting position ids: the same loss as padded rows (benchmarks/gpu_suite.py,
    padding_free), with no compute on padding tokens in the linear layers, though attention still
    spans the whole row. (FlexAttention would skip the masked blocks, but has no backward on CPU and
    has not been measured on a GPU yet.)"""
    return "flash_attention_2" if flash_attention_available() else "sdpa"


def flash_attention_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def load(spec: TrainingSpec, model_dir: Path, events: EventWriter) -> Loaded:
    """The base model wrapped for `spec.training_type`, on this process's device."""
    device, dtype = device_and_dtype(spec.optimization.precision)
    autocast_dtype = None
    if spec.training_type == "full" and dtype != torch.float32:
        # Every weight trains: keep fp32 master weights (bf16 would lose small updates), compute in bf16.
        dtype, autocast_dtype = torch.float32, dtype
    if spec.training_type == "qlora" and spec.lora.use_dora:
        raise ValueError(QLORA_NO_DORA)
    padding_free = packs_rows(spec.optimization.packing)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if padding_free:
        kwargs["attn_implementation"] = packed_attention()
    source = model_dir
    init = Path(spec.init_adapter) if spec.init_adapter else None
    if init is not None and spec.training_type == "full":
        if not (init / "config.json").is_file():
            raise ValueError(f"{init}: full fine-tuning continues from a full model, and this is an adapter")
        source = init  # continue from the earlier full fine-tune's weights
    causal_lm = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    quantized: list[str] = []
    if spec.training_type == "qlora":
        from tuneserve.training.quantize import quantize_nf4

        # Loaded on the CPU in the compute dtype; each linear layer is quantized on the device and its
        # full weight dropped, so the device never holds the full-precision base.
        quantized = quantize_nf4(causal_lm, device)
    causal_lm = causal_lm.to(device)
    if spec.optimization.gradient_checkpointing:
        causal_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        causal_lm.config.use_cache = False
        if spec.training_type == "qlora":
            causal_lm.enable_input_require_grads()  # as peft's prepare_model_for_kbit_training does

    model: torch.nn.Module
    if spec.training_type == "full":
        model = causal_lm
        for p in model.parameters():
            p.requires_grad_(True)
    elif init is not None:
        model = PeftModel.from_pretrained(causal_lm, init, is_trainable=True)
        events.message(f"Continuing from adapter {init} (its adapter shape is used, not the spec's)")
    else:
        model = get_peft_model(causal_lm, _adapter_config(spec))
    if isinstance(model, PeftModel):
        # Serving looks the base model up by the name the user gave, not by this machine's cache path.
        model.peft_config[model.active_adapter].base_model_name_or_path = spec.model
        if dtype != torch.float32:
            # A bf16 base with fp32 adapter weights (PEFT keeps them fp32 so small updates survive): run
            # the adapters' matmuls in bf16 under autocast too, instead of PEFT casting every input to fp32.
            autocast_dtype = dtype
            for module in model.modules():
                if isinstance(module, BaseTunerLayer):
                    module.cast_input_dtype_enabled = False
    if spec.neftune_noise_alpha > 0:
        causal_lm.get_input_embeddings().register_forward_hook(_neftune(spec.neftune_noise_alpha))
    if spec.optimization.torch_compile:
        decoder = getattr(causal_lm, causal_lm.base_model_prefix)
        decoder.forward = torch.compile(decoder.forward)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    batching = choose_batching(spec.optimization.packing, device, n_total)
    precision = f"{dtype}" + (f" weights, {autocast_dtype} compute" if autocast_dtype else "")
    if quantized:
        precision = f"NF4 weights in {len(quantized)} linear layers, {precision}"
    events.message(
        f"Loaded {spec.model} from {source} for {spec.training_type} ({precision}, {device.type}"
        f", {BATCHING_NAMES[batching]}{f' ({packed_attention()})' if batching == 'packed' else ''}): "
        f"{n_trainable:,} of {n_total:,} parameters trainable"
    )
    return Loaded(model, causal_lm, device, dtype, batching, autocast_dtype)


BATCHING_NAMES = {
    "packed": "padding-free packed rows",
    "rows": "one example per forward pass",
    "mixed": "long examples one per forward pass, short ones in length-grouped batches",
    "grouped": "length-grouped batches",
}


# Below this size a model's step is dominated by per-call overhead, so one forward per example
# loses: the 2-layer test model trains 10x slower that way (15 s vs 1.6 s for 32 steps), while
# SmolLM2-135M gains speed and needs a fifth of the memory (benchmarks/train_throughput.py).
ROWS_MIN_PARAMETERS = 50_000_000


def packs_rows(packing: str) -> bool:
    """Padding-free packed rows: asked for, or chosen by auto where flash-attention varlen exists."""
    return packing == "padding_free" or (packing == "auto" and flash_attention_available())


def choose_batching(packing: str, device: torch.device, n_parameters: int) -> str:
    """auto: flash-attention varlen where it exists; on CPU each example alone (no padding, and no
    mask, so no attention matrix is stored) for models of real size; else length groups."""
    if packs_rows(packing):
        return "packed"
    if packing == "per_example":
        return "rows"
    if packing == "auto" and device.type == "cpu" and n_parameters >= ROWS_MIN_PARAMETERS:
        return "mixed"  # long examples alone, short ones batched (training.loop.ROWS_MIN_TOKENS)
    return "grouped"


def _neftune(alpha: float) -> Callable[..., torch.Tensor]:
    """NEFTune (Jain et al. 2023, as TRL's neftune_noise_alpha): while training, add uniform noise of
    scale alpha / sqrt(sequence length x hidden size) to the input embeddings; evaluation sees none."""

    def add_noise(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return output
        scale = alpha / math.sqrt(output.size(-2) * output.size(-1))
        return output + torch.empty_like(output).uniform_(-scale, scale)

    return add_noise


def _adapter_config(spec: TrainingSpec) -> LoraConfig | IA3Config:
    if spec.training_type == "ia3":
        # PEFT knows each architecture's IA3 targets (keys, values and the feed-forward output).
        return IA3Config(task_type="CAUSAL_LM")
    lora = spec.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
        task_type="CAUSAL_LM",
    )


# PEFT's DoRA reads the base weight (its norm) through a dequantize() that torchao's NF4Tensor lacks.
QLORA_NO_DORA = "training_type 'qlora' does not train DoRA (use_dora) on its NF4 base; train DoRA with 'lora'"


def save(directory: Path, loaded: Loaded, tokenizer: Any, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """The adapter (or the whole model) with the tokenizer and chat template beside it. `state_dict`:
    the whole weights gathered from a sharded model (training.parallel), else the model's own."""
    if loaded.is_adapter:
        # save_embedding_layers=False: we never resize the vocabulary, and the "auto" check would look
        # the base model up on the hub by name (a network call, and a warning offline).
        loaded.model.save_pretrained(directory, save_embedding_layers=False)
    else:
        loaded.model.save_pretrained(directory, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(directory)


def weights_file(directory: Path) -> Path:
    """The file whose presence makes a checkpoint directory complete."""
    return directory / (ADAPTER_FILE if (directory / ADAPTER_FILE).exists() else FULL_MODEL_FILE)
