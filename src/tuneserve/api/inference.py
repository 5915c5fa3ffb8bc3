"""/v1/chat/completions and /v1/completions, for base and fine-tuned models (OpenAI shapes, SSE streaming).

The route resolves the model name (catalog), turns the request into sampling parameters and
shapes the answer; generation happens in the inference engine, imported on first use so the
API never loads torch at start. The `n` choices of one request are generated concurrently, so
the engine's batcher runs them as one batch.
"""

from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from tuneserve.api.deps import Catalog, LocalInference, Project
from tuneserve.api.responses import ChatCompletion, Completion, WireObject, error_responses, streamed_as_events
from tuneserve.api.schemas import ChatCompletionRequest, CompletionRequest, ResponseFormat, SamplingFields
from tuneserve.api.tool_calls import parse_tool_calls
from tuneserve.errors import InvalidRequest

router = APIRouter(prefix="/v1", tags=["inference"])


RESPONSE_FORMAT_TYPES = ("text", "json_object")  # json_object: the hand-written JSON mode (inference/json_mode.py)


def check_response_format(value: ResponseFormat | None) -> bool:
    """The request's `response_format` -> is JSON mode on?

    400 `invalid_request_error` with param "response_format" for what this engine does not serve:
    "json_schema" (decoding is not constrained to a schema yet, and ignoring the schema silently
    would be wrong) and unknown types. The vLLM proxy forwards the body as it is: vLLM's guided
    decoding serves json_schema itself.
    """
    if value is None:
        return False
    kind = value.type
    if kind == "json_schema":
        raise InvalidRequest(
            'response_format {"type": "json_schema"} is not supported yet: decoding is not constrained '
            'to a JSON schema. Use {"type": "json_object"} (the output is one JSON object) and give '
            "the schema in the prompt.",
            param="response_format",
            code="unsupported_value",
        )
    if kind not in RESPONSE_FORMAT_TYPES:
        raise InvalidRequest(
            f"Invalid value for 'response_format': unknown type {kind!r}; supported types are 'text' and 'json_object'",
            param="response_format",
            code="invalid_value",
        )
    return kind == "json_object"


class EngineStatus(WireObject):
    """What the local inference engine holds now: every streamed answer whose client left is freed from both."""

    object: Literal["engine.status"] = "engine.status"
    running_requests: int  # rows in the batch being generated
    waiting_requests: int  # submitted, waiting for a place in the batch


@router.get("/engine/status", response_model=EngineStatus, responses=error_responses(401))
def engine_status(local_engine: LocalInference, _project: Project):
    """A tuneserve extension: the local engine's running and waiting requests (0 and 0 when idle)."""
    activity = local_engine.get().activity()
    return EngineStatus(running_requests=activity["running"], waiting_requests=activity["waiting"])


def _params(body: SamplingFields, index: int, *, logprobs: bool = False, top_logprobs: int = 0, json_mode: bool = False):
    from tuneserve.inference.engine import SamplingParams

    # torch's generator takes 0 .. 2**64 - 1 (a seed past 64 bits was a 500); each choice gets the next seed.
    seed = (body.seed + index) % 2**64 if body.seed is not None else None
    return SamplingParams(
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stops(),
        seed=seed,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        json_mode=json_mode,
    )


def _all(call, count: int, make_args) -> list:
    """`count` engine calls at once, so they share a batch."""
    if count == 1:
        return [call(*make_args(0))]
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda i: call(*make_args(i)), range(count)))


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class _EventStream(StreamingResponse):
    """Server-sent events that stop generating (`close`) when the client leaves, at the disconnect itself.

    Starlette's own response stops only once the thread that reads the engine returns, and closes the body
    when it is garbage collected: a request still waiting for a place in a full batch has no token coming,
    so its place in the queue (and that thread) would be held until the batch drained, then it would
    generate for no one."""

    def __init__(self, body: Iterator[str], close: Callable[[], None]):
        super().__init__(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._close = close

    async def listen_for_disconnect(self, receive) -> None:
        await super().listen_for_disconnect(receive)
        self._close()

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._close()  # sent to the end, failed, or cancelled: the engine's rows end with it


def _sse(chunks: Iterator[dict[str, Any]], close: Callable[[], None]) -> StreamingResponse:
    def body():
        try:
            for chunk in chunks:
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            close()

    return _EventStream(body(), close)


def _chat_logprobs(items) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": t.token,
                "logprob": t.logprob,
                "bytes": t.bytes,
                "top_logprobs": [{"token": a.token, "logprob": a.logprob, "bytes": a.bytes} for a in t.top_logprobs],
            }
            for t in items
        ],
        "refusal": None,
    }


def _completion_logprobs(items, start_offset: int = 0) -> dict[str, Any]:
    offsets, position = [], start_offset
    for t in items:
        offsets.append(position)
        position += len(t.token)
    return {
        "tokens": [t.token for t in items],
        "token_logprobs": [t.logprob for t in items],
        "top_logprobs": [{a.token: a.logprob for a in t.top_logprobs} for t in items],
        "text_offset": offsets,
    }


def _chat_message(text: str, tools_given: bool) -> tuple[dict[str, Any], bool]:
    """The assistant message, with tool calls parsed out when the request offered tools."""
    if tools_given:
        content, calls = parse_tool_calls(text)
        if calls:
            return {"role": "assistant", "content": content, "tool_calls": calls, "refusal": None}, True
    return {"role": "assistant", "content": text, "refusal": None}, False


# The answers are built as dicts and sent with only the keys they have (a message has `tool_calls` only when it called).
@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    response_model_exclude_unset=True,
    responses={**streamed_as_events("chat.completion.chunk events, then [DONE]"), **error_responses(400, 401, 404)},
)
def chat_completions(catalog: Catalog, local_engine: LocalInference, project: Project, body: ChatCompletionRequest):
    """Chat with a base model or a fine-tuned model (`ft:...`), optionally streamed."""
    json_mode = check_response_format(body.response_format)  # a 400 before the model is looked up or loaded
    base, adapter = catalog.lookup(project, body.model)
    engine = local_engine.get()
    messages = [m.as_template_message() for m in body.messages]
    tools = body.tools if body.tools and body.tool_choice != "none" else None
    want_logprobs = body.logprobs or bool(body.top_logprobs)
    params = lambda i: _params(body, i, logprobs=want_logprobs, top_logprobs=body.top_logprobs or 0, json_mode=json_mode)  # noqa: E731
    head = {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "created": int(time.time()),
        "model": body.model,
        "system_fingerprint": None,
    }

    if body.stream:
        # Every choice starts now (the first one here, so a bad prompt is a 400 before any byte is sent).
        streams = [engine.stream_chat(base, adapter, messages, params(0), tools=tools)]
        streams += [engine.stream_chat(base, adapter, messages, params(i), tools=tools) for i in range(1, body.n)]
        return _sse(_chat_chunks(head, streams, tools is not None, body), lambda: [s.close() for s in streams])

    results = _all(lambda *a: engine.chat(*a, tools=tools), body.n, lambda i: (base, adapter, messages, params(i)))
    choices = []
    for index, result in enumerate(results):
        message, called = _chat_message(result.text, tools is not None)
        choices.append(
            {
                "index": index,
                "message": message,
                "finish_reason": "tool_calls" if called else result.finish_reason,
                "logprobs": _chat_logprobs(result.logprobs or ()) if want_logprobs else None,
            }
        )
    return {
        **head,
        "object": "chat.completion",
        "choices": choices,
        "usage": _usage(results[0].prompt_tokens, sum(r.completion_tokens for r in results)),
    }


def _chat_chunks(head: dict, streams: list, tools_given: bool, body: ChatCompletionRequest) -> Iterator[dict[str, Any]]:
    chunk = {**head, "object": "chat.completion.chunk"}
    prompt_tokens = completion_tokens = 0
    want_logprobs = body.logprobs or bool(body.top_logprobs)
    for index, stream in enumerate(streams):
        yield {**chunk, "choices": [{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        held: list[str] = []  # with tools offered, text is held until it is known whether it is a call
        for item in stream:
            if hasattr(item, "finish_reason"):
                prompt_tokens, completion_tokens = item.prompt_tokens, completion_tokens + item.completion_tokens
                finish = item.finish_reason
                if tools_given:
                    message, called = _chat_message("".join(held), True)
                    delta = (
                        {"tool_calls": [{**c, "index": i} for i, c in enumerate(message["tool_calls"])]}
                        if called
                        else {"content": message["content"]}
                    )
                    finish = "tool_calls" if called else finish
                    yield {**chunk, "choices": [{"index": index, "delta": delta, "finish_reason": None}]}
                yield {**chunk, "choices": [{"index": index, "delta": {}, "finish_reason": finish}]}
            elif tools_given:
                held.append(item.text)
            elif item.text or item.logprobs:
                yield {
                    **chunk,
                    "choices": [
                        {
                            "index": index,
                            "delta": {"content": item.text},
                            "finish_reason": None,
                            "logprobs": _chat_logprobs(item.logprobs) if want_logprobs else None,
                        }
                    ],
                }
    if body.stream_options and body.stream_options.include_usage:
        yield {**chunk, "choices": [], "usage": _usage(prompt_tokens, completion_tokens)}


@router.post(
    "/completions",
    response_model=Completion,
    response_model_exclude_unset=True,
    responses={**streamed_as_events("text_completion events, then [DONE]"), **error_responses(400, 401, 404)},
)
def completions(catalog: Catalog, local_engine: LocalInference, project: Project, body: CompletionRequest):
    """Plain text completion (no chat template) with a base or fine-tuned model."""
    json_mode = check_response_format(body.response_format)
    base, adapter = catalog.lookup(project, body.model)
    engine = local_engine.get()
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    jobs = [(p, i) for p in prompts for i in range(body.n)]
    want = body.logprobs is not None
    params = lambda i: _params(body, i, logprobs=want, top_logprobs=body.logprobs or 0, json_mode=json_mode)  # noqa: E731
    head = {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion", "created": int(time.time()), "model": body.model}

    if body.stream:
        streams = [engine.stream_complete(base, adapter, jobs[0][0], params(jobs[0][1]))]
        streams += [engine.stream_complete(base, adapter, p, params(i)) for p, i in jobs[1:]]

        def chunks():
            prompt_tokens = completion_tokens = 0
            for index, stream in enumerate(streams):
                for item in stream:
                    if hasattr(item, "finish_reason"):
                        prompt_tokens += item.prompt_tokens
                        completion_tokens += item.completion_tokens
                        yield {
                            **head,
                            "choices": [{"index": index, "text": "", "logprobs": None, "finish_reason": item.finish_reason}],
                        }
                    elif item.text or item.logprobs:
                        yield {
                            **head,
                            "choices": [
                                {
                                    "index": index,
                                    "text": item.text,
                                    "finish_reason": None,
                                    "logprobs": _completion_logprobs(item.logprobs) if want else None,
                                }
                            ],
                        }
            if body.stream_options and body.stream_options.include_usage:
                yield {**head, "choices": [], "usage": _usage(prompt_tokens, completion_tokens)}

        return _sse(chunks(), lambda: [s.close() for s in streams])

    results = _all(engine.complete, len(jobs), lambda k: (base, adapter, jobs[k][0], params(jobs[k][1])))
    return {
        **head,
        "choices": [
            {
                "index": i,
                "text": r.text,
                "finish_reason": r.finish_reason,
                "logprobs": _completion_logprobs(r.logprobs or ()) if want else None,
            }
            for i, r in enumerate(results)
        ],
        "usage": _usage(sum(r.prompt_tokens for r in results[:: body.n]), sum(r.completion_tokens for r in results)),
    }
