"""/v1/chat/completions and /v1/completions, for base and fine-tuned models (OpenAI shapes, SSE streaming).

The route resolves the model name (catalog) and shapes the answer; generation happens in the
inference engine, which is imported on first use so the API never loads torch at start.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Iterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from tuneserve.api.deps import Project
from tuneserve.api.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from tuneserve.errors import InvalidRequest

router = APIRouter(prefix="/v1", tags=["inference"])


def _engine(request: Request):
    state = request.app.state
    with state.engine_lock:
        if state.engine is None:
            from tuneserve.inference.engine import Engine

            state.engine = Engine()
        return state.engine


def _params(body: SamplingFields, index: int):
    from tuneserve.inference.engine import SamplingParams

    seed = body.seed + index if body.seed is not None else None
    return SamplingParams(max_tokens=body.max_completion_tokens or body.max_tokens, temperature=body.temperature,
                          top_p=body.top_p, stop=body.stops(), seed=seed)


def _checked(call, *args):
    """Run an engine call; a prompt that does not fit the model is the caller's error (400)."""
    from tuneserve.inference.engine import ContextLengthExceeded

    try:
        return call(*args)
    except ContextLengthExceeded as exc:
        raise InvalidRequest(str(exc), param="messages", code="context_length_exceeded") from None


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def _sse(chunks: Iterator[dict[str, Any]], close) -> StreamingResponse:
    def body():
        try:
            for chunk in chunks:
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            close()  # stop generation when the client goes away

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/chat/completions")
def chat_completions(request: Request, project: Project, body: ChatCompletionRequest):
    """Chat with a base model or a fine-tuned model (`ft:...`), optionally streamed."""
    base, adapter = request.app.state.catalog.lookup(project, body.model)
    engine = _engine(request)
    messages = [m.as_template_message() for m in body.messages]
    completion_id, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
    head = {"id": completion_id, "created": created, "model": body.model, "system_fingerprint": None}
    if body.stream:
        # The first stream starts here, so a bad prompt is a 400 before any byte is sent.
        open_streams: list = [_checked(engine.stream_chat, base, adapter, messages, _params(body, 0))]

        def chunks():
            prompt_tokens = completion_tokens = 0
            for index in range(body.n):
                if index >= len(open_streams):
                    open_streams.append(engine.stream_chat(base, adapter, messages, _params(body, index)))
                stream = open_streams[index]
                yield {**head, "object": "chat.completion.chunk",
                       "choices": [{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
                for item in stream:
                    if isinstance(item, str):
                        yield {**head, "object": "chat.completion.chunk",
                               "choices": [{"index": index, "delta": {"content": item}, "finish_reason": None}]}
                    else:
                        prompt_tokens, completion_tokens = item.prompt_tokens, completion_tokens + item.completion_tokens
                        yield {**head, "object": "chat.completion.chunk",
                               "choices": [{"index": index, "delta": {}, "finish_reason": item.finish_reason}]}
            if body.stream_options and body.stream_options.include_usage:
                yield {**head, "object": "chat.completion.chunk", "choices": [], "usage": _usage(prompt_tokens, completion_tokens)}

        return _sse(chunks(), lambda: [s.close() for s in open_streams if hasattr(s, "close")])
    results = [_checked(engine.chat, base, adapter, messages, _params(body, i)) for i in range(body.n)]
    return {**head, "object": "chat.completion",
            "choices": [{"index": i, "message": {"role": "assistant", "content": r.text, "refusal": None},
                         "finish_reason": r.finish_reason, "logprobs": None} for i, r in enumerate(results)],
            "usage": _usage(results[0].prompt_tokens, sum(r.completion_tokens for r in results))}


@router.post("/completions")
def completions(request: Request, project: Project, body: CompletionRequest):
    """Plain text completion (no chat template) with a base or fine-tuned model."""
    base, adapter = request.app.state.catalog.lookup(project, body.model)
    engine = _engine(request)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    completion_id, created = f"cmpl-{secrets.token_hex(12)}", int(time.time())
    head = {"id": completion_id, "object": "text_completion", "created": created, "model": body.model}
    jobs = [(p, i) for p in prompts for i in range(body.n)]
    if body.stream:
        open_streams: list = [_checked(engine.stream_complete, base, adapter, jobs[0][0], _params(body, jobs[0][1]))]

        def chunks():
            prompt_tokens = completion_tokens = 0
            for index, (prompt, i) in enumerate(jobs):
                if index >= len(open_streams):
                    open_streams.append(engine.stream_complete(base, adapter, prompt, _params(body, i)))
                stream = open_streams[index]
                for item in stream:
                    if isinstance(item, str):
                        yield {**head, "choices": [{"index": index, "text": item, "logprobs": None, "finish_reason": None}]}
                    else:
                        prompt_tokens += item.prompt_tokens
                        completion_tokens += item.completion_tokens
                        yield {**head, "choices": [{"index": index, "text": "", "logprobs": None, "finish_reason": item.finish_reason}]}
            if body.stream_options and body.stream_options.include_usage:
                yield {**head, "choices": [], "usage": _usage(prompt_tokens, completion_tokens)}

        return _sse(chunks(), lambda: [s.close() for s in open_streams if hasattr(s, "close")])
    results = [_checked(engine.complete, base, adapter, p, _params(body, i)) for p, i in jobs]
    return {**head, "choices": [{"index": i, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason}
                                for i, r in enumerate(results)],
            "usage": _usage(sum(r.prompt_tokens for r in results), sum(r.completion_tokens for r in results))}
