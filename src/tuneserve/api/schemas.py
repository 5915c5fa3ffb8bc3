"""Request bodies as pydantic models: the fine-tuning create body, OPEA's job-id body, and the inference requests.

Nothing here imports torch. Field limits follow OpenAI's API reference (api-anchors.md 1.3); the
job fields and their limits are the job service's JobRequest (jobs/requests.py). The answers are
api/responses.py's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tuneserve.jobs.requests import JobRequest


class OpeaGeneral(BaseModel):
    """OPEA's General section. The keys api/opea.py reads are typed, so a bad one is a 400 naming it
    (a string `lora_config` was a 500); the others are accepted and ignored. Training's and Dataset's
    values are checked as the JobRequest fields they become."""

    model_config = ConfigDict(extra="allow")
    task: str | None = None
    enable_gradient_checkpointing: bool | None = None
    lora_config: dict[str, Any] | None = Field(None, description="null asks for full fine-tuning")


class CreateFineTuningJob(JobRequest):
    """OpenAI's create request (the job service's JobRequest), plus the OPEA micro-service's
    General/Dataset/Training sections, which api/opea.py maps onto it."""

    model_config = ConfigDict(extra="allow")  # unknown OpenAI fields are accepted and ignored
    General: OpeaGeneral | None = None
    Dataset: dict[str, Any] | None = None
    Training: dict[str, Any] | None = None

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_from_string(cls, value):  # OPEA declares seed as a string
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value


class JobIdBody(BaseModel):
    """The OPEA micro-service's POST body for retrieve, cancel and list_checkpoints."""

    fine_tuning_job_id: str


# -- inference ----------------------------------------------------------------------------


class StreamOptions(BaseModel):
    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    # Any string parses, so that api/inference.check_response_format can answer what is not served with its own 400
    # (param response_format): "json_schema" (no schema-constrained decoding yet, and how to do without) and unknown
    # types. The document lists what is served; the vLLM proxy forwards json_schema, which vLLM serves.
    type: str = Field(
        "text",
        description="'text' or 'json_object' ('json_schema' is not supported yet: 400)",
        json_schema_extra={"enum": ["text", "json_object"]},
    )


class SamplingFields(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI fields are accepted and ignored
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=8)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None  # OpenAI's limit, in the schema
    # Any integer: the sampler takes it modulo 2**64 (api/inference._params), the range of torch's generator.
    # A bound here would be checked by clients in float64, where 2**63 - 1 and 2**63 + 191 are one number.
    seed: int | None = Field(None, description="any integer; the same seed and request give the same answer")
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    stream: bool = False
    stream_options: StreamOptions | None = None

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(s for s in self.stop if s)


class ContentPart(BaseModel):
    """One part of a message's content. Only text parts reach the model; others are accepted and skipped."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def as_template_message(self) -> dict[str, Any]:
        text = (
            self.content
            if isinstance(self.content, str) or self.content is None
            else "".join(part.text or "" for part in self.content if part.type == "text")
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
    # An empty list is nothing to complete (it was a 500): the schema says so, and pydantic answers it.
    prompt: str | Annotated[list[str], Field(min_length=1)] = Field(
        description='A prompt or a list of them; "" starts from the beginning-of-text token.'
    )
    logprobs: int | None = Field(None, ge=0, le=5)  # the legacy API: how many alternatives per token
    response_format: ResponseFormat | None = None  # not in OpenAI's legacy API; vLLM's has it
