"""The vLLM backend end to end, with a second tuneserve as the upstream (it speaks vLLM's protocol):

A = `tuneserve serve --inference-backend vllm --vllm-url B` trains; B serves. When A's job succeeds, A
registers the adapter with B (/v1/load_lora_adapter), and A's chat/completions are B's answers, streamed
too. A's job creation refuses what vLLM would refuse; B down is a 502 on A and no failed job.

B requires an API key (A sends TUNESERVE_VLLM_API_KEY), so adapters A registers land in B's project of
that key. The proof that B answers, not A: B unloads the adapter and A's next call loads it again on B
(B's /v1/models shows it), and with B down A has nothing to answer with (502).
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import openai
import pytest

from tests.conftest import TINY, chat_jsonl, start_server, wait_for_status

ENV = {"HF_HUB_OFFLINE": "1"}
MESSAGES = [{"role": "user", "content": "Question 1: what is the capital of Zorbia?"}]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return tmp_path_factory.mktemp("upstream-e2e")


@pytest.fixture(scope="module")
def b_key(dirs):
    """B's API key (made before B starts, as an operator would)."""
    result = subprocess.run(
        [sys.executable, "-m", "tuneserve", "keys", "create", "--data-dir", str(dirs / "b"), "--project", "serving"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture(scope="module")
def servers(dirs, b_key, tiny_model_ready):
    b = start_server(dirs / "b", env=ENV)
    a = start_server(
        dirs / "a", "--inference-backend", "vllm", "--vllm-url", b.base_url, env={**ENV, "TUNESERVE_VLLM_API_KEY": b_key}
    )
    state = {"a": a, "b": b}
    yield state
    state["a"].stop()
    state["b"].stop()


def b_models(servers, b_key) -> dict[str, object]:
    return {m.id: m for m in servers["b"].client(b_key).models.list()}


def fine_tune(client) -> object:
    training = client.files.create(file=("train.jsonl", chat_jsonl(12)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=TINY, training_file=training.id, hyperparameters={"n_epochs": 1})
    job = wait_for_status(client, job.id, {"succeeded", "failed", "cancelled"}, timeout_s=300)
    assert job.status == "succeeded", job.error
    return job


@pytest.fixture(scope="module")
def job(servers):
    return fine_tune(servers["a"].client())


def test_a_finished_job_is_registered_with_the_upstream(servers, b_key, job):
    card = b_models(servers, b_key)[job.fine_tuned_model]
    assert card.parent == TINY
    events = [e.message for e in servers["a"].client().fine_tuning.jobs.list_events(job.id, limit=50)]
    assert any(m.startswith(f"Registered {job.fine_tuned_model} with the inference server") for m in events)
    # A lists its own fine-tuned model as before.
    assert job.fine_tuned_model in {m.id for m in servers["a"].client().models.list()}


def test_chat_and_completions_through_a_are_answered_by_b(servers, b_key, job):
    a = servers["a"].client()
    answer = a.chat.completions.create(model=job.fine_tuned_model, messages=MESSAGES, max_tokens=5, temperature=0)
    assert answer.model == job.fine_tuned_model and answer.usage.completion_tokens >= 1
    # The same request to B directly gives the same greedy answer: A passed it through.
    direct = (
        servers["b"]
        .client(b_key)
        .chat.completions.create(model=job.fine_tuned_model, messages=MESSAGES, max_tokens=5, temperature=0)
    )
    assert answer.choices[0].message.content == direct.choices[0].message.content
    text = a.completions.create(model=job.fine_tuned_model, prompt="The capital of Zorbia", max_tokens=3, temperature=0)
    assert text.object == "text_completion" and text.choices[0].text is not None
    # Base models are the upstream's too.
    assert a.chat.completions.create(model=TINY, messages=MESSAGES, max_tokens=2).model == TINY


def test_streaming_through_a_passes_b_events(servers, job):
    stream = (
        servers["a"]
        .client()
        .chat.completions.create(
            model=job.fine_tuned_model,
            messages=MESSAGES,
            max_tokens=5,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.model == job.fine_tuned_model for c in chunks)
    assert any(c.choices and c.choices[0].finish_reason in ("stop", "length") for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1


def test_a_client_leaving_mid_stream_leaves_both_servers_healthy(servers, job):
    body = {"model": job.fine_tuned_model, "messages": MESSAGES, "max_tokens": 200, "stream": True}
    with httpx.stream("POST", f"{servers['a'].base_url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        first = next(response.iter_lines())
        assert first.startswith("data: ")
    again = servers["a"].client().chat.completions.create(model=job.fine_tuned_model, messages=MESSAGES, max_tokens=2)
    assert again.choices[0].message.content is not None


def test_a_model_the_upstream_forgot_is_registered_again_on_first_use(servers, b_key, job):
    """B unloads it (as a restarted vLLM would have): A's next request registers it on B again."""
    unloaded = httpx.post(
        f"{servers['b'].base_url}/v1/unload_lora_adapter",
        json={"lora_name": job.fine_tuned_model},
        headers={"Authorization": f"Bearer {b_key}"},
    )
    assert (
        unloaded.status_code == 200 and unloaded.text == f"Success: LoRA adapter '{job.fine_tuned_model}' removed successfully."
    )
    assert job.fine_tuned_model not in b_models(servers, b_key)
    answer = servers["a"].client().chat.completions.create(model=job.fine_tuned_model, messages=MESSAGES, max_tokens=2)
    assert answer.model == job.fine_tuned_model
    assert job.fine_tuned_model in b_models(servers, b_key)


def test_errors_pass_through_from_the_upstream(servers, job):
    a = servers["a"].client()
    with pytest.raises(openai.NotFoundError) as info:  # B's 404, passed through
        a.chat.completions.create(model="nobody/no-such-model-xyz", messages=MESSAGES)
    assert info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError) as info:  # A's own check: fine-tuned models are the caller project's
        a.chat.completions.create(model=f"ft:{TINY}:default::ftjob-doesnotexist", messages=MESSAGES)
    assert info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as info:
        a.chat.completions.create(model=TINY, messages=MESSAGES, temperature=5)  # B's validation names the parameter
    assert info.value.body["param"] == "temperature"
    bad = httpx.post(
        f"{servers['a'].base_url}/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"


def test_job_creation_refuses_an_adapter_vllm_would_reject(servers):
    a = servers["a"].client()
    training = a.files.create(file=("train.jsonl", chat_jsonl(12)), purpose="fine-tune")
    before = len(a.fine_tuning.jobs.list(limit=100).data)
    with pytest.raises(openai.BadRequestError) as info:
        a.fine_tuning.jobs.create(model=TINY, training_file=training.id, extra_body={"lora": {"r": 64}})
    assert info.value.status_code == 400
    assert (info.value.body["param"], info.value.body["code"]) == ("lora.r", "adapter_rejected_by_upstream")
    assert "max_lora_rank 16" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        a.fine_tuning.jobs.create(
            model=TINY, training_file=training.id, extra_body={"lora": {"target_modules": ["q_proj", "lm_head"]}}
        )
    assert (info.value.body["param"], info.value.body["code"]) == ("lora.target_modules", "adapter_rejected_by_upstream")
    assert len(a.fine_tuning.jobs.list(limit=100).data) == before  # refused before anything was saved


def test_upstream_down_is_a_502_and_a_finished_job_still_succeeds(servers, dirs, b_key, job):
    b = servers["b"]
    b.stop()
    a = servers["a"].client()
    with pytest.raises(openai.InternalServerError) as info:
        a.chat.completions.create(model=job.fine_tuned_model, messages=MESSAGES, max_tokens=2)
    assert info.value.status_code == 502
    # A checks a request with the local routes' schemas before proxying it: with B down, a bad one is still
    # A's own 400 naming the field, as the local backend answers it, not a 502.
    for call, field in (
        (lambda: a.chat.completions.create(model=TINY, messages=MESSAGES, temperature=5), "temperature"),
        (lambda: a.chat.completions.create(model=TINY, messages=[]), "messages"),
        (lambda: a.completions.create(model=TINY, prompt="hi", n=9), "n"),
    ):
        with pytest.raises(openai.BadRequestError) as bad_request:
            call()
        assert (bad_request.value.body["param"], bad_request.value.body["code"]) == (field, "invalid_value")
    assert (info.value.body["code"], info.value.body["type"]) == ("upstream_unavailable", "server_error")
    down = httpx.post(f"{servers['a'].base_url}/v1/chat/completions", json={"model": TINY, "messages": MESSAGES, "stream": True})
    assert down.status_code == 502 and down.json()["error"]["code"] == "upstream_unavailable"

    # Training does not need the upstream: the job succeeds, with a warning that registering failed.
    second = fine_tune(a)
    events = list(a.fine_tuning.jobs.list_events(second.id, limit=50))
    assert any(e.level == "warn" and "Could not register" in e.message for e in events)

    # B back on its port: the first request for the new model registers it there.
    servers["b"] = start_server(dirs / "b", port=b.port, env=ENV)
    answer = a.chat.completions.create(model=second.fine_tuned_model, messages=MESSAGES, max_tokens=2)
    assert answer.model == second.fine_tuned_model
    assert second.fine_tuned_model in b_models(servers, b_key)
