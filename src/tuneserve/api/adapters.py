"""vLLM's runtime adapter protocol, spoken by tuneserve itself, and the proxy to an upstream vLLM.

- `router`: `POST /v1/load_lora_adapter {"lora_name", "lora_path"}` serves a PEFT adapter directory
  under a model name (the base model comes from its adapter_config.json); `POST /v1/unload_lora_adapter
  {"lora_name"}` stops serving it. Answers as vLLM does: 200 with a plain-text "Success: ..." line;
  errors in OpenAI's envelope (400 already loaded / bad directory, 404 unknown base model or adapter).
  An adapter belongs to the caller's project (its API key), as fine-tuned models do.
- `proxy_router` (with `--inference-backend vllm`): `/v1/chat/completions` and `/v1/completions` check
  the request against the same schemas as the local routes (so a bad request gets the same 400 from
  either backend), then send its JSON as it came to the upstream (vLLM's own extra fields included)
  and return its answer as it is (SSE bytes unchanged).
  A fine-tuned model of the caller's project that the upstream does not know yet (restarted, or its
  registration failed) is registered on the spot and the request retried once.
Does not own: the HTTP client (inference/upstream.py) nor the model catalog (jobs/catalog.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from tuneserve.api.deps import Catalog, LoadedAdapters, Project, UpstreamServer
from tuneserve.api.responses import ChatCompletion, Completion, error_responses, streamed_as_events
from tuneserve.api.schemas import ChatCompletionRequest, CompletionRequest
from tuneserve.errors import InvalidRequest, NotFound
from tuneserve.ids import now
from tuneserve.inference.upstream import Upstream, UpstreamError
from tuneserve.jobs.catalog import ModelCatalog

router = APIRouter(prefix="/v1", tags=["adapters"])
proxy_router = APIRouter(prefix="/v1", tags=["inference"])


class LoadLoraAdapterRequest(BaseModel):
    lora_name: str = Field(min_length=1, max_length=256)
    lora_path: str = Field(min_length=1)
    load_inplace: bool = Field(False, description="Replace an adapter already loaded under this name (vLLM >= 0.10).")


class UnloadLoraAdapterRequest(BaseModel):
    lora_name: str = Field(min_length=1)


# The routes return PlainTextResponse themselves; with the plain Response as their class, OpenAPI documents
# the errors as the JSON they are (the class's media type would be given to every status).
_TEXT_ANSWER = {
    "response_class": Response,
    "responses": {200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **error_responses(400, 401, 404)},
}


@router.post("/load_lora_adapter", **_TEXT_ANSWER)
def load_lora_adapter(adapters: LoadedAdapters, project: Project, body: LoadLoraAdapterRequest):
    """Serve the PEFT adapter at `lora_path` as the model `lora_name` (vLLM's runtime LoRA loading)."""
    from tuneserve.jobs.preflight import read_adapter_config
    from tuneserve.models import ModelNotFound, check_model

    path = Path(body.lora_path).expanduser()
    config = read_adapter_config(path)
    ref = config.get("base_model_name_or_path")
    if not ref:
        raise InvalidRequest(
            f"{path / 'adapter_config.json'} names no base_model_name_or_path", param="lora_path", code="invalid_adapter"
        )
    try:
        base = check_model(str(ref))
    except ModelNotFound as exc:
        raise NotFound(
            f"The base model {ref!r} of this adapter does not exist here: {exc}", param="lora_path", code="model_not_found"
        ) from None
    if not adapters.add(project, body.lora_name, base, path.resolve(), replace=body.load_inplace, created=now()):
        raise InvalidRequest(
            f"The lora adapter '{body.lora_name}' has already been loaded.", param="lora_name", code="adapter_already_loaded"
        )
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")


@router.post("/unload_lora_adapter", **_TEXT_ANSWER)
def unload_lora_adapter(adapters: LoadedAdapters, project: Project, body: UnloadLoraAdapterRequest):
    """Stop serving an adapter loaded with /v1/load_lora_adapter."""
    if not adapters.remove(project, body.lora_name):
        raise NotFound(f"The lora adapter '{body.lora_name}' cannot be found.", param="lora_name", code="adapter_not_found")
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")


# -- the proxy ------------------------------------------------------------------------------


async def _json_body(request: Request, schema: type[BaseModel]) -> dict:
    """The body as it came, once it passes `schema` (pydantic's errors become the usual 400, naming the field)."""
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object", code="invalid_value")
    try:
        schema.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    return body


def _own_adapter(catalog: ModelCatalog, project: str, model: str) -> Path | None:
    """A fine-tuned model (or checkpoint) must be the caller's: 404 otherwise, before anything is sent.
    Other names (the upstream's base models and adapters) are the upstream's to resolve."""
    if not model.startswith("ft:"):
        return None
    _base, adapter = catalog.lookup(project, model)
    return adapter


async def _proxy(request: Request, upstream: Upstream, catalog: ModelCatalog, project: str, path: str, schema: type[BaseModel]):
    from starlette.concurrency import run_in_threadpool

    body = await _json_body(request, schema)
    adapter = await run_in_threadpool(_own_adapter, catalog, project, body["model"])
    for attempt in (0, 1):
        try:
            if body.get("stream"):
                chunks = await upstream.astream(path, body)
                return StreamingResponse(
                    chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
                )
            answer = await upstream.aforward(path, body)
            return Response(
                answer.content, status_code=answer.status_code, media_type=answer.headers.get("content-type", "application/json")
            )
        except UpstreamError as exc:
            if exc.status != 404 or adapter is None or attempt:
                raise
            # The upstream does not know this fine-tuned model (it restarted, or registering it failed): register, retry.
            await run_in_threadpool(upstream.register_adapter, body["model"], adapter.resolve())
    raise AssertionError("unreachable")


# The body is read raw (it goes on as it came), so OpenAPI documents only the answers; vLLM's have OpenAI's shape.
def _answers(answer: type[BaseModel], streamed: str) -> dict:
    return {"response_model": answer, "responses": {**streamed_as_events(streamed), **error_responses(400, 401, 404, 502)}}


@proxy_router.post("/chat/completions", **_answers(ChatCompletion, "chat.completion.chunk events"))
async def chat_completions(request: Request, upstream: UpstreamServer, catalog: Catalog, project: Project):
    """Chat completions, answered by the upstream inference server (the request JSON is passed as it is)."""
    return await _proxy(request, upstream, catalog, project, "/v1/chat/completions", ChatCompletionRequest)


@proxy_router.post("/completions", **_answers(Completion, "text_completion events"))
async def completions(request: Request, upstream: UpstreamServer, catalog: Catalog, project: Project):
    """Text completions, answered by the upstream inference server."""
    return await _proxy(request, upstream, catalog, project, "/v1/completions", CompletionRequest)
