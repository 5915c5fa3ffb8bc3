"""Wire schemas: request bodies as pydantic models, responses as OpenAI-shaped dicts.

Nothing here imports torch. Field limits follow OpenAI's API reference (api-anchors.md 1.3).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tuneserve.store.tables import Checkpoint, File, Job, JobEvent
from tuneserve.training.spec import MAX_BATCH_SIZE, MAX_DPO_BETA, MAX_EPOCHS, MAX_LR_MULTIPLIER

Auto = Literal["auto"]


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
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: MethodBody | None = None
    dpo: MethodBody | None = None
    reinforcement: dict[str, Any] | None = None


class CreateFineTuningJob(BaseModel):
    """OpenAI's create request, plus the OPEA micro-service's General/Dataset/Training sections."""

    model_config = ConfigDict(extra="allow")
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
    training_type: Literal["lora", "qlora", "ia3", "full"] | None = Field(
        None, description="lora (default); qlora (4-bit NF4 base, torchao); ia3 (OCI's T-Few); full (OCI's Vanilla)."
    )
    lora: dict[str, Any] | None = Field(None, description="{r, alpha, dropout, target_modules, use_rslora, use_dora}")
    learning_rate: float | None = Field(None, description="Absolute peak rate (Together's); overrides learning_rate_multiplier.")
    lr_scheduler_type: Literal["linear", "cosine", "constant"] | None = None
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
    precision: Literal["auto", "bf16", "fp32"] | None = Field(None, description="auto (default): bf16 where the hardware has it.")
    packing: Literal["auto", "padding_free", "per_example", "length_grouped"] | None = Field(
        None, description="auto (default): padding_free with flash-attention on CUDA, per_example on CPU, else length_grouped."
    )
    num_workers: int | None = Field(None, description="Data-parallel workers (OPEA's name), for the Ray runner.")
    resources_per_worker: dict[str, float] | None = Field(None, description='e.g. {"CPU": 2, "GPU": 1} (OPEA\'s name).')
    auto_evaluate: bool | None = Field(
        None, description="When the job succeeds, evaluate it against its base on the validation file."
    )
    General: dict[str, Any] | None = None
    Dataset: dict[str, Any] | None = None
    Training: dict[str, Any] | None = None

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_from_string(cls, value):  # OPEA declares seed as a string
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

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

    def to_service_request(self) -> dict[str, Any]:
        """The plain request the job service takes; OPEA's config sections mapped onto it."""
        request = self.model_dump(exclude={"General", "Dataset", "Training"}, exclude_none=True)
        if self.hyperparameters:
            request["hyperparameters"] = self.hyperparameters.model_dump(exclude_none=True)
        if self.method:
            body = getattr(self.method, self.method.type, None)
            hp = body.hyperparameters.model_dump(exclude_none=True) if body is not None and body.hyperparameters else {}
            request["method"] = {"type": self.method.type, self.method.type: {"hyperparameters": hp}}
        training = self.Training or {}
        opea_hp = {
            "n_epochs": training.get("epochs"),
            "batch_size": training.get("batch_size"),
            "learning_rate": training.get("learning_rate"),
            "beta": training.get("dpo_beta"),
        }
        if any(v is not None for v in opea_hp.values()):
            request["hyperparameters"] = {
                **request.get("hyperparameters", {}),
                **{k: v for k, v in opea_hp.items() if v is not None},
            }
        for ours, theirs in (
            ("num_workers", "num_training_workers"),
            ("resources_per_worker", "resources_per_worker"),
            ("weight_decay", "weight_decay"),
            ("gradient_accumulation_steps", "gradient_accumulation_steps"),
            ("lr_scheduler_type", "lr_scheduler"),
        ):
            if training.get(theirs) is not None:
                request.setdefault(ours, training[theirs])
        if (self.Dataset or {}).get("max_length"):
            request["max_seq_length"] = int(self.Dataset["max_length"])
        general = self.General or {}
        if general.get("task") == "dpo":
            request["method"] = {"type": "dpo", "dpo": {"hyperparameters": request.pop("hyperparameters", {})}}
        if general.get("enable_gradient_checkpointing"):
            request.setdefault("gradient_checkpointing", True)
        if "lora_config" in general:
            lora = general["lora_config"]
            if lora is None:  # OPEA's way of asking for full fine-tuning
                request.setdefault("training_type", "full")
            else:
                mapped = {
                    "r": lora.get("r"),
                    "alpha": lora.get("lora_alpha"),
                    "dropout": lora.get("lora_dropout"),
                    "target_modules": lora.get("target_modules"),
                }
                request["lora"] = {k: v for k, v in mapped.items() if v is not None}
        return request


class JobIdBody(BaseModel):
    """The OPEA micro-service's POST body for retrieve, cancel and list_checkpoints."""

    fine_tuning_job_id: str


# -- responses ----------------------------------------------------------------------------


def file_object(row: File) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": row.created_at,
        "filename": row.filename,
        "purpose": row.purpose,
        "status": row.status,
        "status_details": row.status_details,
        "expires_at": None,
        # tuneserve extension: the full validation report (format, counts, errors and warnings by line).
        "validation": row.report,
    }


def job_object(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": job.created_at,
        "error": job.error,
        "fine_tuned_model": job.fine_tuned_model,
        "finished_at": job.finished_at,
        "hyperparameters": job.hyperparameters,
        "model": job.model,
        "organization_id": job.project,
        "result_files": job.result_files or [],
        "seed": job.seed,
        "status": job.status,
        "trained_tokens": job.trained_tokens,
        "training_file": job.training_file,
        "validation_file": job.validation_file,
        "estimated_finish": job.estimated_finish if job.status == "running" else None,
        "integrations": _integrations(job),
        "metadata": job.user_metadata,
        "method": job.method,
        "suffix": job.suffix,
        # tuneserve extension: how it trains.
        "training_type": job.spec.get("training_type", "lora"),
    }


def _integrations(job: Job) -> list[dict[str, Any]]:
    wandb = job.spec.get("wandb")
    return [{"type": "wandb", "wandb": wandb}] if wandb else []


def event_object(event: JobEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "object": "fine_tuning.job.event",
        "created_at": event.created_at,
        "level": event.level,
        "message": event.message,
        "type": event.type,
        "data": event.data,
    }


def checkpoint_object(ckpt: Checkpoint) -> dict[str, Any]:
    return {
        "id": ckpt.id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": ckpt.created_at,
        "fine_tuned_model_checkpoint": ckpt.fine_tuned_model_checkpoint,
        "fine_tuning_job_id": ckpt.job_id,
        "step_number": ckpt.step_number,
        "metrics": ckpt.metrics,
    }


def list_object(data: list[dict[str, Any]], has_more: bool, *, with_ids: bool = False) -> dict[str, Any]:
    page: dict[str, Any] = {"object": "list", "data": data, "has_more": has_more}
    if with_ids:
        page["first_id"] = data[0]["id"] if data else None
        page["last_id"] = data[-1]["id"] if data else None
    return page


# -- inference ----------------------------------------------------------------------------


class StreamOptions(BaseModel):
    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    # Any string parses; api/inference.check_response_format answers 400 (param response_format) for what is not
    # served: "json_schema" (no schema-constrained decoding yet) and unknown types.
    type: str = Field("text", description="'text' or 'json_object' ('json_schema' is not supported yet: 400)")


class SamplingFields(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI fields are accepted and ignored
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=8)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stop_limit(cls, value):
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(s for s in self.stop if s)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def as_template_message(self) -> dict[str, Any]:
        text = (
            self.content
            if isinstance(self.content, str) or self.content is None
            else "".join(part.get("text", "") for part in self.content if part.get("type") == "text")
        )
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": text or ""}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        if self.name:
            message["name"] = self.name
        return message


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None


class CompletionRequest(SamplingFields):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=5)  # the legacy API: how many alternatives per token
    response_format: ResponseFormat | None = None  # not in OpenAI's legacy API; vLLM's has it
