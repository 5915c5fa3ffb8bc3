"""The upstream client (inference/upstream.py) against a real upstream: a tuneserve process, which speaks
vLLM's runtime-LoRA protocol. vLLM's own answer shapes (flat errors, "already been loaded") are checked
with httpx's mock transport, since no vLLM runs here."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.conftest import TINY, free_port, start_server
from tuneserve.inference.upstream import RuntimeAdapters, Upstream, UpstreamError, UpstreamUnavailable


@pytest.fixture(scope="module")
def upstream_server(tmp_path_factory, tiny_model_ready):
    server = start_server(tmp_path_factory.mktemp("upstream") / "data", env={"HF_HUB_OFFLINE": "1"})
    yield server
    server.stop()


@pytest.fixture
def upstream(upstream_server):
    client = Upstream(upstream_server.base_url, timeout=120)
    yield client
    client.close()


def adapter_dir(path, base=TINY):
    """An adapter directory as far as registration looks (config only; nothing generates with it here)."""
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "base_model_name_or_path": base})
    )
    return path


def model_ids(upstream: Upstream) -> dict[str, dict]:
    return {card["id"]: card for card in upstream.models()}


def test_register_lists_the_adapter_with_its_base_and_unregister_removes_it(upstream, tmp_path):
    path = adapter_dir(tmp_path / "a")
    upstream.register_adapter("ft:unit:a", path)
    card = model_ids(upstream)["ft:unit:a"]
    assert card["parent"] == TINY and card["root"] == TINY
    upstream.register_adapter("ft:unit:a", path)  # already loaded: vLLM says 400, which counts as done
    assert upstream.unregister_adapter("ft:unit:a") is True
    assert "ft:unit:a" not in model_ids(upstream)
    assert upstream.unregister_adapter("ft:unit:a") is False  # unknown: nothing to do


def test_register_errors_pass_through_with_their_status_and_code(upstream, tmp_path):
    with pytest.raises(UpstreamError) as info:
        upstream.register_adapter("ft:unit:missing", tmp_path / "nowhere")
    assert (info.value.status, info.value.param, info.value.code) == (404, "lora_path", "adapter_not_found")
    with pytest.raises(UpstreamError) as info:
        upstream.register_adapter("ft:unit:unknown-base", adapter_dir(tmp_path / "b", base="nobody/no-such-model-xyz"))
    assert (info.value.status, info.value.code) == (404, "model_not_found")


def test_forward_and_stream_a_chat_completion(upstream):
    body = {"model": TINY, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}
    answer = upstream.forward("/v1/chat/completions", body).json()
    assert answer["object"] == "chat.completion" and answer["model"] == TINY
    assert answer["usage"]["completion_tokens"] >= 1

    raw = b"".join(upstream.stream("/v1/chat/completions", {**body, "stream": True}))
    events = [line.removeprefix(b"data: ") for line in raw.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_an_upstream_error_raises_before_any_byte_with_the_upstream_envelope(upstream):
    body = {"model": "nobody/no-such-model-xyz", "messages": [{"role": "user", "content": "hi"}]}
    for call in (upstream.forward, upstream.stream):
        with pytest.raises(UpstreamError) as info:
            call("/v1/chat/completions", body)
        assert (info.value.status, info.value.code, info.value.param) == (404, "model_not_found", "model")


def test_async_forward_and_stream(upstream_server):
    body = {"model": TINY, "prompt": "Once", "max_tokens": 3, "temperature": 0}

    async def run():
        client = Upstream(upstream_server.base_url + "/v1")  # a trailing /v1 is accepted
        try:
            answer = (await client.aforward("/v1/completions", body)).json()
            stream = await client.astream("/v1/completions", {**body, "stream": True})
            raw = b"".join([chunk async for chunk in stream])
            with pytest.raises(UpstreamError):
                await client.astream("/v1/completions", {**body, "model": "nobody/no-such-model-xyz", "stream": True})
            return answer, raw
        finally:
            await client.aclose()

    answer, raw = asyncio.run(run())
    assert answer["object"] == "text_completion" and answer["choices"][0]["text"] is not None
    assert raw.rstrip().endswith(b"data: [DONE]")


def test_an_unreachable_upstream_is_a_502_upstream_unavailable(tmp_path):
    client = Upstream(f"http://127.0.0.1:{free_port()}")
    for call in (
        lambda: client.register_adapter("x", tmp_path),
        lambda: client.forward("/v1/completions", {}),
        lambda: client.stream("/v1/completions", {}),
        client.models,
    ):
        with pytest.raises(UpstreamUnavailable) as info:
            call()
        assert (info.value.status, info.value.code, info.value.type) == (502, "upstream_unavailable", "server_error")


# -- vLLM's own answer shapes (mock transport) ----------------------------------------------


def mocked(handler) -> Upstream:
    return Upstream("http://vllm:8000", api_key="secret-key", transport=httpx.MockTransport(handler))


def test_vllm_already_loaded_and_plain_text_success_and_the_api_key():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers.get("authorization"), json.loads(request.content)))
        if len(seen) == 1:
            return httpx.Response(200, text="Success: LoRA adapter 'ft:x' added successfully.")
        return httpx.Response(
            400,
            json={
                "error": {
                    "message": "The lora adapter 'ft:x' has already been loaded.",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                }
            },
        )

    client = mocked(handler)
    client.register_adapter("ft:x", "/shared/jobs/x/final")
    client.register_adapter("ft:x", "/shared/jobs/x/final")
    assert seen[0] == ("/v1/load_lora_adapter", "Bearer secret-key", {"lora_name": "ft:x", "lora_path": "/shared/jobs/x/final"})


def test_vllm_errors_old_flat_shape_and_non_json_keep_their_status():
    answers = iter(
        [
            httpx.Response(
                400,
                json={
                    "object": "error",
                    "message": "LoRA rank 32 is greater than max_lora_rank 16.",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                },
            ),
            httpx.Response(503, text="Service Unavailable"),
        ]
    )
    client = mocked(lambda request: next(answers))
    with pytest.raises(UpstreamError) as info:
        client.register_adapter("ft:y", "/p")
    assert info.value.status == 400 and "max_lora_rank 16" in info.value.message and info.value.type == "BadRequestError"
    with pytest.raises(UpstreamError) as info:
        client.forward("/v1/chat/completions", {"model": "m"})
    assert (info.value.status, info.value.type, info.value.code) == (503, "server_error", "upstream_error")


def test_runtime_adapters_are_per_project_and_refuse_a_taken_name(tmp_path):
    registry = RuntimeAdapters()
    assert registry.add("p1", "ft:a", TINY, tmp_path)
    assert not registry.add("p1", "ft:a", TINY, tmp_path / "other")
    assert registry.get("p1", "ft:a") == (TINY, tmp_path)
    assert registry.get("p2", "ft:a") is None
    assert registry.add("p1", "ft:a", TINY, tmp_path / "other", replace=True)
    assert [a["path"] for a in registry.list("p1")] == [str(tmp_path / "other")] and registry.list("p2") == []
    assert registry.remove("p1", "ft:a") and not registry.remove("p1", "ft:a")
