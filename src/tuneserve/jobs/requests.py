"""JobRequest: what creating a fine-tuning job takes (JobService.create), typed.

OpenAI's create request and the tuneserve / Together options on how to train. The API's create
body (api/schemas.CreateFineTuningJob) is this class plus OPEA's config sections, so the two
never drift. The request checks what it can say alone (types, the hyperparameters' limits, the
literals); what needs the training file or the model (resolving "auto", the TrainingSpec's
ranges) the service checks, each as a 400 naming the field. Limits and literals come from
training.spec, where they are defined once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tuneserve.training.spec import MAX_BATCH_SIZE, MAX_DPO_BETA, MAX_EPOCHS, MAX_LR_MULTIPLIER, Optimization, TrainingType

Auto = Literal["auto"]

# The spec's own literals for the options that are a choice, so a request accepts exactly what a spec does.
LrSchedulerType = Optimization.model_fields["lr_scheduler_type"].annotation
Precision = Optimization.model_fields["precision"].annotation
Packing = Optimization.model_fields["packing"].annotation


class RequestedHyperparameters(BaseModel):
    """Hyperparameters as a request gives them: "auto" or a number within the training spec's limits
    (training.spec.Hyperparameters is the resolved, concrete form)."""

    model_config = ConfigDict(extra="forbid")
    n_epochs: Auto | Annotated[int, Field(ge=1, le=MAX_EPOCHS)] | None = None
    batch_size: Auto | Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE)] | None = None
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=MAX_LR_MULTIPLIER)] | None = None
    beta: Auto | Annotated[float, Field(gt=0, le=MAX_DPO_BETA)] | None = Field(None, description="DPO only (default 0.1).")


class MethodBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    hyperparameters: RequestedHyperparameters | None = None


class Method(BaseModel):
    """OpenAI's `method`. "reinforcement" parses (it is OpenAI's) so the service can refuse it by name."""

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: MethodBody | None = None
    dpo: MethodBody | None = None
    reinforcement: dict[str, Any] | None = None

    def hyperparameters(self) -> dict[str, Any]:
        """The given hyperparameters of the method's own section (`method.{type}.hyperparameters`), nulls left out."""
        body = getattr(self, self.type, None)
        hp = body.hyperparameters if isinstance(body, MethodBody) else None
        return hp.model_dump(exclude_none=True) if hp is not None else {}


class JobRequest(BaseModel):
    """A fine-tuning job to create. `training_file` and `validation_file` are file ids, or file names."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    hyperparameters: RequestedHyperparameters | None = None
    method: Method | None = None
    suffix: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[^:\s]+$")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = Field(
        None,
        description='[{"type": "wandb", "wandb": {"project": ..., "name", "entity", "tags"}}]; needs wandb and WANDB_API_KEY on the server.',
    )
    # tuneserve / Together extensions: how to train (all optional; limits are checked against the TrainingSpec).
    training_type: TrainingType | None = Field(
        None, description="lora (default); qlora (4-bit NF4 base, torchao); ia3 (OCI's T-Few); full (OCI's Vanilla)."
    )
    lora: dict[str, Any] | None = Field(None, description="{r, alpha, dropout, target_modules, use_rslora, use_dora}")
    learning_rate: float | None = Field(None, description="Absolute peak rate (Together's); overrides learning_rate_multiplier.")
    lr_scheduler_type: LrSchedulerType | None = None
    warmup_ratio: float | None = Field(None, description="Fraction of steps spent warming up (default 0.05).")
    min_lr_ratio: float | None = Field(None, description="The schedule decays to this fraction of the peak (default 0).")
    weight_decay: float | None = None
    max_grad_norm: float | None = Field(None, description="Gradient clipping (default 1.0; 0 turns it off).")
    train_on_inputs: bool | Auto | None = Field(None, description="Train on prompt tokens too (default false).")
    n_checkpoints: int | None = Field(None, description="Checkpoints over the run, evenly spaced (default: one per epoch).")
    n_evals: int | None = Field(None, description="Validation passes during the run (default: one per epoch).")
    gradient_accumulation_steps: int | None = Field(None, description="Micro-batches per step: same update, less memory.")
    max_seq_length: int | None = Field(None, description="Tokens per example; longer ones are truncated (default 1024).")
    gradient_checkpointing: bool | None = None
    torch_compile: bool | None = None
    precision: Precision | None = Field(None, description="auto (default): bf16 where the hardware has it.")
    packing: Packing | None = Field(
        None, description="auto (default): padding_free with flash-attention on CUDA, per_example on CPU, else length_grouped."
    )
    num_workers: int | None = Field(None, description="Data-parallel workers (OPEA's name), for the Ray runner.")
    resources_per_worker: dict[str, float] | None = Field(None, description='e.g. {"CPU": 2, "GPU": 1} (OPEA\'s name).')
    auto_evaluate: bool | None = Field(
        None, description="When the job succeeds, evaluate it against its base on the validation file."
    )
    validation_split: float | None = Field(
        None,
        description="With no validation_file: the share of training examples held out to validate on, e.g. 0.1 (a fixed "
        "draw; none from sets under 20 examples); default 0: none.",
    )
    early_stopping_patience: int | None = Field(
        None,
        description="With validation data: stop after this many validations without a lower validation loss; the "
        "fine-tuned model is then the checkpoint with the lowest, e.g. 2 (default 0: train every epoch, keep the last).",
    )
    early_stopping_metric: Literal["loss", "answers"] | None = Field(
        None,
        description="What a validation is judged by: loss (default), or answers (each held-out prompt answered greedily, "
        "ROUGE-L F1 against its reference; supervised only).",
    )
    neftune_noise_alpha: float | None = Field(None, description="NEFTune noise on the input embeddings (default 0: off).")

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value):
        if value is not None:
            if len(value) > 16:
                raise ValueError("at most 16 metadata pairs")
            for key, item in value.items():
                if len(key) > 64 or len(item) > 512:
                    raise ValueError("metadata keys are at most 64 characters and values at most 512")
        return value
