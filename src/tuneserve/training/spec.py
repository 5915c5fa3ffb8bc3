"""The TrainingSpec: the one input of a training process, and how "auto" becomes numbers.

The API, the CLI (`tuneserve train spec.yaml`) and the runners all build the same frozen
spec and write it to `JOB_DIR/spec.json`. This module imports no torch, so the API can use it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from tuneserve.data.auto import auto_batch_size, auto_n_epochs  # noqa: F401 (resolve_hyperparameters; re-exported)

# Base learning rates that `learning_rate_multiplier` scales (OpenAI's multiplier semantics), by
# (method, training_type). Adapters on small instruct models want a high rate; IA3's scaling
# vectors a higher one still (T-Few used 3e-3); full fine-tuning a low one; DPO moves a tuned
# policy a little, so it starts lower than supervised training.
BASE_LEARNING_RATE = {
    ("supervised", "lora"): 1e-3,
    ("supervised", "qlora"): 1e-3,
    ("supervised", "ia3"): 3e-3,
    ("supervised", "full"): 2e-5,
    ("dpo", "lora"): 1e-4,
    ("dpo", "qlora"): 1e-4,
    ("dpo", "ia3"): 3e-4,
    ("dpo", "full"): 1e-6,
}

# The limits of every hyperparameter, here once: the API's request schema (jobs/requests.py) uses them too.
MAX_EPOCHS = 50
MAX_BATCH_SIZE = 256
MAX_LR_MULTIPLIER = 100.0
MAX_DPO_BETA = 10.0

# The held-out split auto makes when no validation file is given (TrainingSpec.validation_split).
MIN_HOLDOUT = 4
MIN_EXAMPLES_TO_SPLIT = 20

Method = Literal["supervised", "dpo"]
TrainingType = Literal["lora", "qlora", "ia3", "full"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LoraSpec(Frozen):
    """LoRA adapter shape. Defaults: r=16, alpha=32 on every linear layer."""

    r: int = Field(16, ge=1, le=1024)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    use_rslora: bool = Field(False, description="Scale by alpha/sqrt(r) instead of alpha/r (rank-stabilized LoRA).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA). vLLM cannot serve DoRA adapters.")


class Hyperparameters(Frozen):
    """Concrete hyperparameters: every "auto" is already resolved."""

    n_epochs: int = Field(ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(ge=1, le=MAX_BATCH_SIZE, description="Examples per optimizer step.")
    learning_rate_multiplier: float = Field(gt=0, le=MAX_LR_MULTIPLIER)
    learning_rate: float = Field(gt=0, description="Absolute peak rate: base rate x multiplier, or as given.")
    beta: float | None = Field(
        None, gt=0, le=MAX_DPO_BETA, description="DPO only: how far the policy may move from the reference."
    )


class Optimization(Frozen):
    """Together-style training options (defaults in parentheses are what tuneserve uses when unset)."""

    lr_scheduler_type: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = Field(0.05, ge=0, le=1, description="Fraction of steps spent ramping up the rate.")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Decay ends at this fraction of the peak rate.")
    weight_decay: float = Field(0.0, ge=0, le=1)
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping; 0 turns it off.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=256, description="Micro-batches per step (same result, less memory).")
    gradient_checkpointing: bool = False
    torch_compile: bool = False
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 matmuls where the hardware has them (CUDA; CPUs with AVX512-BF16/AMX), else fp32."
    )
    packing: Literal["auto", "padding_free", "per_example", "length_grouped"] = Field(
        "auto",
        description="How steps avoid padding: padding_free packs rows (flash-attention varlen where installed, else SDPA with a block-diagonal mask); per_example "
        "runs each example alone (CPU); length_grouped pads examples of similar length; auto picks.",
    )


class TrainingSpec(Frozen):
    """Everything a training process needs; nothing secret, nothing about the server."""

    model: str = Field(description="Base model: built-in id, hub id or local directory.")
    training_file: str = Field(description="Path of the training data (any supported format).")
    validation_file: str | None = None
    method: Method = "supervised"
    training_type: TrainingType = "lora"
    hyperparameters: Hyperparameters
    lora: LoraSpec = LoraSpec()
    optimization: Optimization = Optimization()
    seed: int = Field(42, ge=0, le=2**31 - 1)
    max_seq_length: int = Field(1024, ge=16, le=131072)
    train_on_inputs: bool = Field(False, description="Also train on prompt tokens (user/system turns), not only answers.")
    n_checkpoints: int | None = Field(
        None, ge=1, le=1000, description="Checkpoints over the run, evenly spaced (default: one per epoch)."
    )
    n_evals: int | None = Field(None, ge=0, le=1000, description="Validation passes during the run (default: one per epoch).")
    init_adapter: str | None = Field(None, description="Adapter (or full model) directory to start from (continued fine-tuning).")
    logging_steps: int = Field(1, ge=1)
    wandb: dict[str, Any] | None = Field(
        None, description="W&B run settings (project, name, entity, tags); the key comes from WANDB_API_KEY."
    )
    num_workers: int = Field(1, ge=1, le=1024, description="Data-parallel workers (OPEA's name).")
    resources_per_worker: dict[str, float] = Field(default_factory=dict, description="e.g. {'CPU': 2, 'GPU': 1} (OPEA's name).")
    auto_evaluate: bool = Field(False, description="Evaluate the result against its base on the validation file when done.")
    # Both off by default: measured by benchmarks/auto_quality.py, a 10% split with early stopping on validation loss
    # kept identity at 16/16 for 27% fewer steps, but lost on sentence-to-JSON (mean 7.3 vs 9.7 of 16) and on facts.
    validation_split: float = Field(
        0.0,
        ge=0,
        le=0.5,
        description="With no validation_file: the share of training examples held out to judge the run (a fixed draw, "
        f"at least {MIN_HOLDOUT} examples, none from sets under {MIN_EXAMPLES_TO_SPLIT}), e.g. 0.1; 0 (default): none.",
    )
    early_stopping_patience: int = Field(
        0,
        ge=0,
        le=1000,
        description="With validation data: stop after this many validations without a lower validation loss, and the "
        "result is the checkpoint with the lowest, e.g. 2. 0 (default): train every epoch and keep the last.",
    )
    early_stopping_metric: Literal["loss", "answers"] = Field(
        "loss",
        description="What early stopping judges a validation by: loss (the validation loss, lower is better) or answers "
        "(each held-out prompt answered greedily, ROUGE-L F1 against its reference, higher is better; SFT only).",
    )
    neftune_noise_alpha: float = Field(
        0.0, ge=0, le=100, description="NEFTune: uniform noise of this scale on the input embeddings while training."
    )

    @field_validator("early_stopping_metric")
    @classmethod
    def _answers_are_supervised(cls, metric: str, info: ValidationInfo) -> str:
        # A field validator (not a model one) so that the error names the field: the API's 400 has its param.
        if metric == "answers" and info.data.get("method") == "dpo":
            raise ValueError("'answers' judges generated answers: supervised jobs only, not dpo")
        return metric

    def write(self, job_dir: Path) -> Path:
        job_dir.mkdir(parents=True, exist_ok=True)
        path = job_dir / "spec.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, job_dir: Path) -> "TrainingSpec":
        return cls.model_validate_json((job_dir / "spec.json").read_text())


OPTIMIZATION_KEYS = tuple(Optimization.model_fields)


def resolve_hyperparameters(
    requested: dict[str, Any] | None, n_examples: int, training_type: str = "lora", method: str = "supervised"
) -> Hyperparameters:
    """Turn a request's hyperparameters (numbers or "auto", any key missing) into concrete ones.

    Range errors raise pydantic.ValidationError; callers map them to a 400 naming the field.
    """
    req = dict(requested or {})

    def pick(key: str, default: Any) -> Any:
        value = req.get(key, "auto")
        return default if value is None or value == "auto" else value

    multiplier = float(pick("learning_rate_multiplier", 1.0))
    lr = req.get("learning_rate")
    return Hyperparameters(
        n_epochs=pick("n_epochs", auto_n_epochs(n_examples)),
        batch_size=pick("batch_size", auto_batch_size(n_examples)),
        learning_rate_multiplier=multiplier,
        learning_rate=float(lr) if lr not in (None, "auto") else BASE_LEARNING_RATE[(method, training_type)] * multiplier,
        beta=float(pick("beta", 0.1)) if method == "dpo" else None,
    )


def load_spec_file(path: Path, count_examples) -> TrainingSpec:
    """Read a YAML or JSON spec as a user writes it (hyperparameters may say "auto").

    `count_examples(path) -> int` is given by the caller so that this module stays data-agnostic.
    Relative data paths are taken relative to the spec file.
    """
    raw = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a spec is a mapping with at least 'model' and 'training_file'")
    for key in ("training_file", "validation_file"):
        if raw.get(key):
            p = Path(raw[key]).expanduser()
            raw[key] = str(p if p.is_absolute() else (path.parent / p).resolve())
    method = raw.pop("method", None)
    hp = raw.pop("hyperparameters", None) or {}
    if isinstance(method, dict):  # OpenAI's method={"type": ..., "supervised": {"hyperparameters": ...}} form
        kind = method.get("type", "supervised")
        hp = {**hp, **((method.get(kind) or {}).get("hyperparameters") or {})}
        raw["method"] = kind
    elif isinstance(method, str):
        raw["method"] = method
    if "training_file" not in raw:
        raise ValueError(f"{path}: 'training_file' is required")
    for key in OPTIMIZATION_KEYS:  # Together-style options may sit at the top level of a spec file
        if key in raw:
            raw.setdefault("optimization", {})[key] = raw.pop(key)
    raw["hyperparameters"] = resolve_hyperparameters(
        hp, count_examples(raw["training_file"]), raw.get("training_type", "lora"), raw.get("method", "supervised")
    )
    return TrainingSpec.model_validate(raw)
