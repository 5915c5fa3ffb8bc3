"""Together's fine-tuning API, as the `together` SDK (3.x) sends and parses it: the create body, and the answers
(job, event, checkpoint, file, model limits, price estimate) built from what the services return.

Together's job object has ISO-8601 timestamps, its own status names and `fine-tune-event` events; these models say
so, field by field, so that OpenAPI documents them and the SDK's pydantic types parse them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneserve.api.responses import WireObject
from tuneserve.jobs.names import fine_tuned_model_name

# tuneserve's job statuses as Together names them. "paused" has no Together name (its SDK cannot pause): it stays.
STATUS = {
    "validating_files": "pending",
    "queued": "queued",
    "running": "running",
    "paused": "paused",
    "succeeded": "completed",
    "failed": "error",
    "cancelled": "cancelled",
}


def iso(seconds: int | None) -> str | None:
    """Together's timestamps: ISO-8601 in UTC with a Z (its SDK parses them as datetimes)."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# -- the create body ------------------------------------------------------------------------


class Strict(BaseModel):
    # A key tuneserve does not know is a 400 naming it, never dropped.
    model_config = ConfigDict(extra="forbid")


class LrSchedulerArgs(Strict):
    min_lr_ratio: float | None = None
    num_cycles: float | None = None


class LrScheduler(Strict):
    lr_scheduler_type: Literal["linear", "cosine"]
    lr_scheduler_args: LrSchedulerArgs | None = None


class TrainingTypeBody(Strict):
    type: Literal["Full", "Lora"]
    lora_r: int | None = None
    lora_alpha: float | None = None
    lora_dropout: float | None = None
    lora_trainable_modules: str | None = None


class TrainingMethodBody(Strict):
    method: Literal["sft", "dpo"]
    train_on_inputs: bool | Literal["auto"] | None = None
    dpo_beta: float | None = None
    dpo_normalize_logratios_by_length: bool | None = None
    dpo_reference_free: bool | None = None
    rpo_alpha: float | None = None
    simpo_gamma: float | None = None


class MultimodalParams(Strict):
    train_vision: bool | None = None


class TogetherCreateBody(Strict):
    """POST /v1/fine-tunes: the body `together.fine_tuning.create(...)` sends (its FinetuneRequest, nulls left out)."""

    training_file: str = Field(min_length=1)
    model: str | None = None
    validation_file: str | None = None
    packing: bool | None = None
    n_epochs: int | None = None
    learning_rate: float | None = None
    lr_scheduler: LrScheduler | None = None
    warmup_ratio: float | None = None
    max_grad_norm: float | None = None
    weight_decay: float | None = None
    n_checkpoints: int | None = None
    n_evals: int | None = None
    max_seq_length: int | None = None
    batch_size: int | Literal["max"] | None = None
    gradient_accumulation_steps: int | None = None
    suffix: str | None = None
    wandb_key: str | None = None
    wandb_base_url: str | None = None
    wandb_project_name: str | None = None
    wandb_name: str | None = None
    wandb_entity: str | None = None
    random_seed: int | None = None
    early_stopping_enabled: bool | None = None
    early_stopping_patience: int | None = None
    early_stopping_min_delta: float | None = None
    early_stopping_warmup_evals: int | None = None
    training_type: TrainingTypeBody | None = None
    training_method: TrainingMethodBody | None = None
    from_checkpoint: str | None = None
    multimodal_params: MultimodalParams | None = None
    from_hf_model: str | None = None
    hf_model_revision: str | None = None
    hf_api_token: str | None = None
    hf_output_repo_name: str | None = None


class EstimatePriceBody(BaseModel):
    """POST /v1/fine-tunes/estimate-price: what the SDK sends before each create (the rest is the create's to check)."""

    model_config = ConfigDict(extra="allow")
    training_file: str = Field(min_length=1)
    validation_file: str | None = None


class PreviewBody(Strict):
    """POST /v1/fine-tunes/preview: how the first rows of a training file are tokenized (SFT only, as Together)."""

    model: str = Field(min_length=1, description="the base model whose tokenizer and chat template are used")
    training_file: str = Field(min_length=1)
    top_k: int = Field(5, ge=1, le=100, description="how many rows, from the start of the file")
    train_on_inputs: bool = False
    training_method: Literal["sft"] = "sft"


# -- answers --------------------------------------------------------------------------------


class TogetherJob(WireObject):
    """A fine-tuning job as Together's FinetuneResponse (retrieve, create, cancel, and each item of list)."""

    id: str
    object: Literal["finetune"] = "finetune"
    status: str = Field(description="pending, queued, running, completed, error, cancelled (paused: a tuneserve pause)")
    user_id: str = Field(description="the project")
    created_at: str
    updated_at: str
    started_at: str | None
    model: str
    model_output_name: str = Field(description="the fine-tuned model's name: chat with it once the job has completed")
    adapter_output_name: str | None
    training_file: str
    validation_file: str | None
    n_epochs: int
    batch_size: int
    learning_rate: float
    lr_scheduler: dict[str, Any]
    warmup_ratio: float
    max_grad_norm: float
    weight_decay: float
    max_seq_length: int
    n_checkpoints: int | None
    n_evals: int | None
    suffix: str | None
    random_seed: int
    training_type: dict[str, Any]
    training_method: dict[str, Any]
    train_on_inputs: bool
    from_checkpoint: str | None
    token_count: int | None
    total_price: int = Field(0, description="always 0: self-hosted")
    steps_completed: int
    total_steps: int | None
    wandb_project_name: str | None
    wandb_name: str | None
    wandb_entity: str | None
    error: dict[str, Any] | None = Field(description="tuneserve extension: {code, message, param} once the job has failed")

    @classmethod
    def of(cls, job, from_checkpoint: str | None = None) -> TogetherJob:
        spec = job.spec
        hp, opt, lora = spec["hyperparameters"], spec.get("optimization", {}), spec.get("lora", {})
        scheduler = opt.get("lr_scheduler_type", "linear")
        args: dict[str, Any] = {"min_lr_ratio": opt.get("min_lr_ratio", 0.0)}
        if scheduler == "cosine":
            args["num_cycles"] = 0.5  # tuneserve's cosine decays over half a cycle, as Together's default
        kind = spec.get("training_type", "lora")
        if kind in ("lora", "qlora"):
            modules = lora.get("target_modules", "all-linear")
            training_type = {
                "type": "Lora",
                "lora_r": lora.get("r", 16),
                "lora_alpha": round(lora.get("alpha", 32)),
                "lora_dropout": lora.get("dropout", 0.0),
                "lora_trainable_modules": modules if isinstance(modules, str) else ",".join(modules),
            }
        else:
            training_type = {"type": "Full" if kind == "full" else kind.upper()}
        if spec.get("method") == "dpo":
            method = {"method": "dpo", "dpo_beta": hp.get("beta")}
        else:
            method = {"method": "sft", "train_on_inputs": spec.get("train_on_inputs", False)}
        wandb = spec.get("wandb") or {}
        updated = max(t for t in (job.created_at, job.started_at, job.finished_at) if t is not None)
        return cls(
            id=job.id,
            status=STATUS.get(job.status, job.status),
            user_id=job.project,
            created_at=iso(job.created_at),
            updated_at=iso(updated),
            started_at=iso(job.started_at),
            model=job.model,
            model_output_name=fine_tuned_model_name(spec["model"], job.project, job.suffix, job.id),
            adapter_output_name=None,
            training_file=job.training_file,
            validation_file=job.validation_file,
            n_epochs=hp["n_epochs"],
            batch_size=hp["batch_size"],
            learning_rate=hp["learning_rate"],
            lr_scheduler={"lr_scheduler_type": scheduler, "lr_scheduler_args": args},
            warmup_ratio=opt.get("warmup_ratio", 0.05),
            max_grad_norm=opt.get("max_grad_norm", 1.0),
            weight_decay=opt.get("weight_decay", 0.0),
            max_seq_length=spec.get("max_seq_length", 1024),
            n_checkpoints=spec.get("n_checkpoints"),
            n_evals=spec.get("n_evals"),
            suffix=job.suffix,
            random_seed=job.seed,
            training_type=training_type,
            training_method=method,
            train_on_inputs=spec.get("train_on_inputs", False),
            # A job continued from a fine-tuned model or checkpoint has that name as its model.
            from_checkpoint=from_checkpoint or (job.model if job.model.startswith("ft:") else None),
            token_count=job.trained_tokens,
            steps_completed=job.last_step or 0,
            total_steps=job.total_steps,
            wandb_project_name=wandb.get("project"),
            wandb_name=wandb.get("name"),
            wandb_entity=wandb.get("entity"),
            error=job.error,
        )


class TogetherJobList(WireObject):
    object: Literal["list"] = "list"
    data: list[TogetherJob]


# Together's event types, by what tuneserve's events say (their first words); metrics are at .../metrics, not here.
_EVENT_TYPES = (
    ("Validating", "job_pending"),
    ("Fine-tuning job queued", "job_pending"),
    ("Checkpoint created", "checkpoint_save"),
    ("The job has successfully completed", "job_complete"),
    ("Fine-tuning job failed", "job_error"),
    ("Validation failed", "job_error"),
    ("Fine-tuning job cancelled", "cancel_requested"),
)
_LEVELS = {"info": "info", "warn": "warning", "warning": "warning", "error": "error"}


class TogetherEvent(WireObject):
    object: Literal["fine-tune-event"] = "fine-tune-event"
    created_at: str
    level: Literal["info", "warning", "error"]
    message: str
    type: str = Field(description="Together's event type (job_pending, job_start, checkpoint_save, job_complete, ...)")

    @classmethod
    def of(cls, event) -> TogetherEvent:
        level = _LEVELS.get(event.level, "info")
        kind = next((t for prefix, t in _EVENT_TYPES if event.message.startswith(prefix)), None)
        if kind is None:
            kind = {"error": "job_error", "warning": "warning"}.get(level, "job_start")
        return cls(created_at=iso(event.created_at), level=level, message=event.message, type=kind)


class TogetherEventList(WireObject):
    object: Literal["list"] = "list"
    data: list[TogetherEvent]


class TogetherMetrics(WireObject):
    metrics: list[dict[str, float]] = Field(description="per logged step: global_step, train_loss, learning_rate, ...")


class TogetherCheckpoint(WireObject):
    checkpoint_type: str = Field(description="Final, or Intermediate")
    created_at: str
    path: str = Field(description="the checkpoint's model name: chat with it, or continue from it")
    step: int
    checkpoint: Literal["adapter", "model"]


class TogetherCheckpointList(WireObject):
    object: Literal["list"] = "list"
    data: list[TogetherCheckpoint]


class TogetherFile(WireObject):
    """A file as Together's FileResponse."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    FileType: Literal["jsonl", "parquet", "csv"]
    purpose: str
    processing_status: Literal["COMPLETED"] = "COMPLETED"
    LineCount: int | None = Field(description="the examples in a fine-tune file")

    @classmethod
    def of(cls, file) -> TogetherFile:
        suffix = file.filename.rsplit(".", 1)[-1].lower()
        return cls(
            id=file.id,
            bytes=file.bytes,
            created_at=file.created_at,
            filename=file.filename,
            FileType=suffix if suffix in ("parquet", "csv") else "jsonl",
            purpose=file.purpose,
            LineCount=file.n_examples,
        )


class LoraLimits(BaseModel):
    default_rank: int
    max_batch_size: int
    max_batch_size_dpo: int
    max_rank: int
    min_batch_size: int
    target_modules: list[str]


class FullLimits(BaseModel):
    max_batch_size: int
    max_batch_size_dpo: int
    min_batch_size: int


class ModelLimits(WireObject):
    """GET /v1/fine-tunes/models/limits: the ranges tuneserve's training spec accepts, for any model."""

    model_name: str
    default_gradient_accumulation_steps: int
    lora_training: LoraLimits
    full_training: FullLimits
    max_learning_rate: float
    min_learning_rate: float
    max_num_checkpoints: int
    max_num_epochs: int
    max_num_evals: int
    max_seq_length_dpo: int
    max_seq_length_sft: int
    min_max_seq_length: int
    merge_output_lora: bool
    supports_full_training: bool
    supports_reasoning: bool
    supports_tools: bool
    supports_vision: bool


class PriceEstimate(WireObject):
    estimation_available: Literal[True] = True
    allowed_to_proceed: bool = True
    estimated_total_price: float = Field(0.0, description="always 0: self-hosted")


class PreviewRow(BaseModel):
    input_ids: list[int]
    labels: list[int] = Field(description="the id trained at each position, -100 where masked")
    num_tokens: int
    num_trained_tokens: int
    tokens: list[str]
    trained_spans: list[list[int]] = Field(description="half-open [start, end) token ranges that are trained")
    truncated: bool = Field(description="cut to max_seq_length")


class Preview(WireObject):
    dataset_format: Literal["general", "conversation", "instruction"]
    max_seq_length: int
    model: str
    rows: list[PreviewRow]
    train_on_inputs: bool


class JobDeleted(WireObject):
    message: str
