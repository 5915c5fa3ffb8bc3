"""chat/completions and completions, for base and fine-tuned models, through the openai client."""

import json

import openai
import pytest

from tests.conftest import TINY, chat_jsonl, fine_tune_tiny

QUESTION = [{"role": "user", "content": "Question 3: what is the capital of Zorbia?"}]


@pytest.fixture(scope="module")
def tuned(server):
    return fine_tune_tiny(server.client(), chat_jsonl(16), "infer", n_epochs=3, learning_rate_multiplier=10)


def greedy(client, model, messages=QUESTION, **kw):
    return client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=12, **kw)


def test_models_list_shows_base_and_fine_tuned(client, tuned):
    models = {m.id: m for m in client.models.list()}
    assert TINY in models and "HuggingFaceTB/SmolLM2-135M-Instruct" in models
    card = models[tuned.fine_tuned_model]
    assert card.model_extra["parent"] == TINY and card.model_extra["root"] == TINY
    assert client.models.retrieve(tuned.fine_tuned_model).id == tuned.fine_tuned_model


def test_chat_with_base_and_fine_tuned_models(client, tuned):
    base = greedy(client, TINY)
    ft = greedy(client, tuned.fine_tuned_model)
    assert base.object == "chat.completion" and ft.model == tuned.fine_tuned_model
    assert ft.choices[0].message.role == "assistant"
    assert ft.choices[0].message.content != base.choices[0].message.content  # the adapter is applied
    assert greedy(client, TINY).choices[0].message.content == base.choices[0].message.content  # and removed again
    assert ft.usage.prompt_tokens > 10 and 0 < ft.usage.completion_tokens <= 12
    assert ft.usage.total_tokens == ft.usage.prompt_tokens + ft.usage.completion_tokens


def test_checkpoint_model_answers(client, tuned):
    checkpoint = client.fine_tuning.jobs.checkpoints.list(tuned.id).data[-1]
    reply = greedy(client, checkpoint.fine_tuned_model_checkpoint)
    assert reply.choices[0].message.content is not None


def test_streaming_matches_non_streaming(client, tuned):
    full = greedy(client, tuned.fine_tuned_model).choices[0].message.content
    chunks = list(greedy(client, tuned.fine_tuned_model, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert any(c.choices and c.choices[0].finish_reason in ("stop", "length") for c in chunks)


def test_completions_max_tokens_seed_and_stop(client, tuned):
    reply = client.completions.create(
        model=tuned.fine_tuned_model, prompt="The capital of Zorbia is", max_tokens=5, temperature=0
    )
    assert reply.object == "text_completion" and reply.usage.completion_tokens <= 5
    first = client.completions.create(model=TINY, prompt="Once upon a time", max_tokens=8, temperature=1.0, seed=11)
    again = client.completions.create(model=TINY, prompt="Once upon a time", max_tokens=8, temperature=1.0, seed=11)
    assert first.choices[0].text == again.choices[0].text
    long = client.completions.create(model=TINY, prompt="Once upon a time", max_tokens=8, temperature=0)
    assert len(long.choices[0].text) > 3
    stop = long.choices[0].text[2:4]
    cut = client.completions.create(model=TINY, prompt="Once upon a time", max_tokens=8, temperature=0, stop=[stop])
    assert stop not in cut.choices[0].text and cut.choices[0].finish_reason == "stop"


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        greedy(client, "ft:nope:default::123")
    assert info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        greedy(client, "no-such/base-model-xyz")


def test_bad_sampling_values_are_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=TINY, messages=QUESTION, temperature=5)
    assert info.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=TINY, messages=[])


def test_json_schema_response_format_is_400_until_supported_and_json_object_still_answers(client):
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as info:
        greedy(client, TINY, response_format=schema)
    error = info.value.body
    assert info.value.status_code == 400 and error["param"] == "response_format"
    assert error["type"] == "invalid_request_error" and error["code"] == "unsupported_value"
    assert "json_schema" in error["message"] and "not supported yet" in error["message"]
    assert '{"type": "json_object"}' in error["message"]
    with pytest.raises(openai.BadRequestError) as info:  # the check comes before the model lookup
        greedy(client, "ft:nope:default::123", response_format=schema)
    assert info.value.body["param"] == "response_format"
    with pytest.raises(openai.BadRequestError) as info:  # completions takes response_format too (vLLM's API does)
        client.completions.create(model=TINY, prompt="Once upon a time", max_tokens=4, extra_body={"response_format": schema})
    assert info.value.body["param"] == "response_format" and info.value.body["code"] == "unsupported_value"
    with pytest.raises(openai.BadRequestError) as info:  # an unknown type names the param too
        greedy(client, TINY, response_format={"type": "yaml"})
    assert info.value.body["param"] == "response_format" and info.value.body["code"] == "invalid_value"
    assert "'yaml'" in info.value.body["message"] and "json_object" in info.value.body["message"]

    for kind in ("text", "json_object"):  # what is served still answers
        reply = greedy(client, TINY, response_format={"type": kind})
        assert reply.choices[0].message.content is not None
        if kind == "json_object":
            assert isinstance(json.loads(reply.choices[0].message.content), dict)  # JSON mode is on
    reply = client.completions.create(
        model=TINY,
        prompt="Once upon a time",
        max_tokens=12,
        temperature=0,
        extra_body={"response_format": {"type": "json_object"}},
    )
    assert isinstance(json.loads(reply.choices[0].text), dict)  # and honoured on completions, not ignored
