"""Bad requests that were 500s: each is now a 400 (in OpenAI's envelope, naming the field), or answered.

Found by probing a real server (issue 17). The openai client sends what it can; httpx sends the rest.
"""

import httpx
import openai
import pytest

from tests.conftest import TINY, chat_jsonl

BIG = 2**70  # past 64 bits: torch and the database cannot hold it
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def training_file(server):
    return server.client().files.create(file=("bad-requests.jsonl", chat_jsonl(12)), purpose="fine-tune").id


def refused(call, **kwargs) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as info:
        call(**kwargs)
    return info.value


def post(server, path: str, body) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=120)


def assert_envelope(response: httpx.Response, status: int, param: str | None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    return error


# -- fine-tuning jobs: the method object and the OPEA sections ------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"method": {"type": "supervised", "supervised": "x"}}, "method.supervised"),
        ({"method": {"type": "supervised", "supervised": {"hyperparameters": [1]}}}, "method.supervised.hyperparameters"),
        ({"method": {"type": "dpo", "dpo": []}}, "method.dpo"),
        ({"method": "supervised"}, "method"),
        ({"General": "x"}, "General"),
        ({"Dataset": [1]}, "Dataset"),
        ({"Training": 1}, "Training"),
        ({"General": {"lora_config": "x"}}, "General.lora_config"),  # was AttributeError: 'str' has no .get
        ({"General": {"lora_config": []}}, "General.lora_config"),
    ],
)
def test_malformed_method_or_opea_section_is_400(server, training_file, extra, param):
    response = post(server, "/v1/fine_tuning/jobs", {"model": TINY, "training_file": training_file, **extra})
    assert_envelope(response, 400, param)


# -- integers beyond 64 bits ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [BIG, -BIG, 2**63 - 1])
def test_any_integer_seed_is_served_modulo_two_to_the_64(client, seed):
    """Chat and completions take a seed of any size (a seed past 64 bits was a 500): the sampler's is seed mod 2**64."""
    kwargs = {"model": TINY, "max_tokens": 6, "temperature": 1.5, "n": 2}
    chat = client.chat.completions.create(messages=HI, seed=seed, **kwargs)
    same = client.chat.completions.create(messages=HI, seed=seed % 2**64, **kwargs)
    assert [c.message.content for c in chat.choices] == [c.message.content for c in same.choices]
    text = client.completions.create(prompt="hi", seed=seed, **kwargs)
    assert len(text.choices) == 2  # seed + choice index wraps around too


def test_huge_integers_in_job_fields_and_list_params_are_400(client, training_file):
    assert refused(client.fine_tuning.jobs.create, model=TINY, training_file=training_file, seed=BIG).param == "seed"
    hp = refused(client.fine_tuning.jobs.create, model=TINY, training_file=training_file, hyperparameters={"n_epochs": BIG})
    assert hp.param == "hyperparameters.n_epochs"
    assert refused(client.fine_tuning.jobs.list, limit=BIG).param == "limit"
    assert refused(client.files.list, limit=-BIG).param == "limit"


def test_huge_evaluation_max_items_is_400(server, client):
    data = client.files.create(file=("bad-eval.jsonl", b'{"question": "a?", "answer": "b"}\n'), purpose="evals")
    response = post(server, "/v1/evaluations", {"models": [TINY], "dataset_file": data.id, "max_items": BIG})
    assert_envelope(response, 400, "max_items")


# -- empty prompts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["", [""]])
def test_empty_prompt_starts_from_the_beginning_of_text(client, prompt):
    answer = client.completions.create(model=TINY, prompt=prompt, max_tokens=3, temperature=0)
    assert answer.choices[0].finish_reason == "length" and answer.choices[0].text
    assert answer.usage.prompt_tokens == 1 and answer.usage.completion_tokens == 3  # the BOS token alone
    streamed = client.completions.create(model=TINY, prompt=prompt, max_tokens=3, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == answer.choices[0].text


@pytest.mark.parametrize("stream", [False, True])
def test_empty_prompt_list_is_400(client, stream):
    # was ValueError (max_workers must be greater than 0), and IndexError when streamed
    error = refused(client.completions.create, model=TINY, prompt=[], max_tokens=2, n=2, stream=stream)
    assert error.param == "prompt" and "at least 1 item" in error.message  # the list's complaint, not the string's


def test_empty_messages_are_400_and_empty_content_is_answered(client):
    assert refused(client.chat.completions.create, model=TINY, messages=[], max_tokens=2).param == "messages"
    answer = client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": ""}], max_tokens=2)
    assert answer.choices[0].message.role == "assistant" and answer.usage.prompt_tokens > 1


def test_content_part_with_non_string_text_is_400(server):
    body = {"model": TINY, "max_tokens": 2, "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}
    error = assert_envelope(post(server, "/v1/chat/completions", body), 400, "messages.0.content")  # was TypeError
    assert error["code"] == "invalid_value"


def test_content_parts_keep_their_text(client):
    parts = [{"type": "text", "text": "Question 3: what is"}, {"type": "text", "text": " the capital of Zorbia?"}]
    as_parts = client.chat.completions.create(
        model=TINY, messages=[{"role": "user", "content": parts}], max_tokens=4, temperature=0
    )
    as_text = client.chat.completions.create(
        model=TINY,
        messages=[{"role": "user", "content": "Question 3: what is the capital of Zorbia?"}],
        max_tokens=4,
        temperature=0,
    )
    assert as_parts.choices[0].message.content == as_text.choices[0].message.content
    assert as_parts.usage.prompt_tokens == as_text.usage.prompt_tokens


# -- sampling ---------------------------------------------------------------------------------------


def test_tiny_temperature_samples_greedily(client):
    # 1e-300 is 0 in float32: the logits divided by it were inf and the softmax NaN (RuntimeError)
    greedy = client.completions.create(model=TINY, prompt="hi", max_tokens=6, temperature=0)
    tiny = client.completions.create(model=TINY, prompt="hi", max_tokens=6, temperature=1e-300, seed=1)
    assert tiny.choices[0].text == greedy.choices[0].text
    chat = client.chat.completions.create(
        model=TINY, messages=HI, max_tokens=6, temperature=1e-300, logprobs=True, top_logprobs=2
    )
    assert len(chat.choices[0].logprobs.content) == chat.usage.completion_tokens
