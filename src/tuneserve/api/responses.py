"""Response models: the JSON the API answers with (OpenAI's shapes and tuneserve's extensions), so
that OpenAPI documents it, and OpenAI's error envelope with `error_responses` for the routes' 4xx.

Each object is built from what a service returns by reading its attributes (`of`): the api never
sees a table class. Fields are in the order the wire has always had them, and a null is sent as
null; where a key is sent only sometimes, the model says so (a subclass adds it, or the route
sends only the keys it set).
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class WireObject(BaseModel):
    # Every field is on the wire, the defaulted ones (`object`) too: the output schema says they are required.
    # from_attributes: a model whose fields are named as the service object's reads them straight off it.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True, from_attributes=True)


# -- errors -------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, or server_error")
    param: str | None = Field(description="the request field at fault, when one is")
    code: str | int | None = Field(description="a string; an upstream vLLM's own errors pass through with its integer code")


class ErrorResponse(BaseModel):
    """OpenAI's error envelope: every error tuneserve answers has this shape (app.py maps them once)."""

    error: ErrorDetail


_ERROR_DESCRIPTIONS = {
    400: "Invalid request: a bad field or value (`param` names the field)",
    401: "No API key, or a wrong one (once any key exists, every request needs one)",
    403: "Not allowed on this resource",
    404: "No such resource in the caller's project",
    409: "The resource's state does not allow it now (a finished job cannot be cancelled, paused or resumed)",
    413: "The upload is larger than the server's limit",
    502: "The upstream inference server (--inference-backend vllm) cannot be reached",
    507: "The server's disk is full: nothing was kept; free space and retry",
}


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error envelope, as every error answer (app.py's handlers, api/limits.py) writes it."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for the error statuses a route can answer, each documented as OpenAI's envelope."""
    return {status: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[status]} for status in statuses}


# -- lists --------------------------------------------------------------------------------


class Page(WireObject, Generic[T]):
    """A page of a cursor-paginated list, newest first: pass the last id seen as `after` for the next."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool

    @classmethod
    def of(cls, data: list[T], has_more: bool):
        return cls(data=data, has_more=has_more)


class IdPage(Page[T], Generic[T]):
    """A page that also names its first and last ids (null when empty), as OpenAI's file and checkpoint lists do."""

    first_id: str | None
    last_id: str | None

    @classmethod
    def of(cls, data: list[T], has_more: bool):
        return cls(
            data=data,
            has_more=has_more,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
        )


# -- files --------------------------------------------------------------------------------


class FileObject(WireObject):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    status_details: str | None = Field(description="for fine-tune files: what the check found, e.g. '20 examples in chat format'")
    expires_at: None = None
    validation: dict[str, Any] | None = Field(
        description="tuneserve extension: the full validation report (format, counts, errors and warnings by line)"
    )

    @classmethod
    def of(cls, file) -> FileObject:
        return cls(
            id=file.id,
            bytes=file.bytes,
            created_at=file.created_at,
            filename=file.filename,
            purpose=file.purpose,
            status=file.status,
            status_details=file.status_details,
            validation=file.report,
        )


class FileList(IdPage[FileObject]):
    pass


class FileDeleted(WireObject):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class PreviewSegment(BaseModel):
    text: str = Field(description="rendered text, special tokens kept")
    trained: bool = Field(description="whether these tokens are trained on (else they are context)")


class ExamplePreview(BaseModel):
    line: int
    n_tokens: int
    n_trained: int
    truncated: bool
    n_tokens_full: int
    segments: list[PreviewSegment]


class FilePreview(WireObject):
    """tuneserve extension: the first examples of a file as a model sees them."""

    object: Literal["list"] = "list"
    data: list[ExamplePreview]
    model: str


# -- fine-tuning jobs ---------------------------------------------------------------------


class FineTuningJob(WireObject):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: dict[str, Any] | None = Field(description='{"code", "message", "param"} once the job has failed')
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: dict[str, Any] = Field(
        description="n_epochs, batch_size, learning_rate_multiplier as resolved ('auto' made numbers); beta for DPO"
    )
    model: str
    organization_id: str = Field(description="the project")
    result_files: list[str]
    seed: int
    status: str
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: int | None = Field(description="while running: when it should finish (unix seconds)")
    integrations: list[dict[str, Any]]
    metadata: dict[str, str] | None
    method: dict[str, Any] = Field(description='{"type": ..., TYPE: {"hyperparameters": ...}}')
    suffix: str | None
    training_type: str = Field(description="tuneserve extension: lora, qlora, ia3 or full")
    kept_checkpoint: dict[str, Any] | None = Field(
        None,
        description="tuneserve extension: when the job judged itself on validation data (early stopping), the checkpoint "
        "its fine-tuned model is: step, epoch, valid_loss (or valid_answer_rouge_l), stopped_early and the reason",
    )

    @classmethod
    def of(cls, job) -> FineTuningJob:
        wandb = job.spec.get("wandb")
        return cls(
            id=job.id,
            created_at=job.created_at,
            error=job.error,
            fine_tuned_model=job.fine_tuned_model,
            finished_at=job.finished_at,
            hyperparameters=job.hyperparameters,
            model=job.model,
            organization_id=job.project,
            result_files=job.result_files or [],
            seed=job.seed,
            status=job.status,
            trained_tokens=job.trained_tokens,
            training_file=job.training_file,
            validation_file=job.validation_file,
            estimated_finish=job.estimated_finish if job.status == "running" else None,
            integrations=[{"type": "wandb", "wandb": wandb}] if wandb else [],
            metadata=job.user_metadata,
            method=job.method,
            suffix=job.suffix,
            training_type=job.spec.get("training_type", "lora"),
            kept_checkpoint=_shown_kept(job.kept_checkpoint),
        )


def _shown_kept(kept: dict[str, Any] | None) -> dict[str, Any] | None:
    """The kept checkpoint as clients see it: its job-relative path is the server's business."""
    return {k: v for k, v in kept.items() if k != "path"} if kept else None


class FineTuningJobList(Page[FineTuningJob]):
    pass


class FineTuningJobEvent(WireObject):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: str = Field(description="message, or metrics (then `data` holds the step's metrics)")
    data: dict[str, Any] | None

    @classmethod
    def of(cls, event) -> FineTuningJobEvent:
        return cls.model_validate(event)


class FineTuningJobEventList(Page[FineTuningJobEvent]):
    pass


class FineTuningJobCheckpoint(WireObject):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str = Field(description="a model name: chat with it, or fine-tune from it")
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, Any]

    @classmethod
    def of(cls, checkpoint) -> FineTuningJobCheckpoint:
        return cls(
            id=checkpoint.id,
            created_at=checkpoint.created_at,
            fine_tuned_model_checkpoint=checkpoint.fine_tuned_model_checkpoint,
            fine_tuning_job_id=checkpoint.job_id,
            step_number=checkpoint.step_number,
            metrics=checkpoint.metrics,
        )


class FineTuningJobCheckpointList(IdPage[FineTuningJobCheckpoint]):
    pass


class HealthCheck(WireObject):
    status: Literal["ok"] = "ok"
    service: Literal["tuneserve"] = "tuneserve"


# -- models -------------------------------------------------------------------------------


class Model(WireObject):
    """A model card. Lineage: `root` is the base model, `parent` the model it was fine-tuned from."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    root: str
    parent: str | None


class FineTunedModel(Model):
    fine_tuning_job_id: str = Field(description="tuneserve extension: the job that made it")


class ModelList(WireObject):
    object: Literal["list"] = "list"
    data: list[FineTunedModel | Model]


class ModelDeleted(WireObject):
    id: str
    object: Literal["model"] = "model"
    deleted: bool


# -- chat and text completions --------------------------------------------------------------
# The routes build these answers as dicts and send only the keys they set (response_model_exclude_unset):
# a key that is there only sometimes (`tool_calls`) has a default; one always sent, if null, has none.


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]
    refusal: None


class FunctionCall(BaseModel):
    name: str
    arguments: str = Field(description="the arguments, as a JSON string")


class ToolCall(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCall] | None = Field(None, description="when the model called tools (the request offered them)")
    refusal: None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str = Field(description="stop, length, or tool_calls")
    logprobs: ChatLogprobs | None


class ChatCompletion(BaseModel):
    """The answer of a request without `stream`; with `stream: true` it comes as server-sent
    `chat.completion.chunk` events instead (text/event-stream), ending with `data: [DONE]`."""

    id: str
    created: int
    model: str
    system_fingerprint: None
    object: Literal["chat.completion"]
    choices: list[ChatChoice]
    usage: Usage


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str = Field(description="stop or length")
    logprobs: CompletionLogprobs | None


class Completion(BaseModel):
    """The answer of a request without `stream`; with `stream: true`, server-sent events of the same shape."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


def streamed_as_events(what: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` entry documenting the `stream: true` form of a 200 answer. Before OpenAPI 3.2 (itemSchema), a
    text/event-stream's `schema` describes one event: its `data` line is a JSON chunk, or `[DONE]` to end."""
    event = {
        "type": "object",
        "properties": {"data": {"type": "string", "description": f"{what}: one JSON object each"}, "event": {"type": "string"}},
        "required": ["data"],
    }
    return {200: {"content": {"text/event-stream": {"schema": event}}}}
