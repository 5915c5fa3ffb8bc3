"""`tuneserve serve --inference-backend llamacpp` with the real llama-cpp-python (its server, run by tuneserve): a job
trained here is served by llama.cpp as its base GGUF plus its LoRA GGUF, through the same OpenAI routes, and answers
greedily token for token as tuneserve's own engine does (a second server on the same data, --api-only, local backend).

llama-cpp-python compiles llama.cpp (5 to 17 minutes on 2 cores), so it is not a dependency: these tests run where it
is installed, in this venv or in the one $TUNESERVE_LLAMA_CPP_PYTHON names, and are skipped elsewhere (CI)."""

from __future__ import annotations

import openai
import pytest

from tests.api.test_gguf_download import _llama_cpp_python
from tests.conftest import TINY, chat_jsonl, fine_tune_tiny, start_server

pytestmark = pytest.mark.skipif(
    _llama_cpp_python() is None, reason="llama-cpp-python is not installed (or TUNESERVE_LLAMA_CPP_PYTHON)"
)

QUESTIONS = ["Question 3: what is the capital of Zorbia?", "What is the capital of Zorbia?"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory, tiny_model_ready):
    """(llama.cpp-backed server, local-engine server) over one data directory; the first runs the jobs."""
    data = tmp_path_factory.mktemp("llamacpp") / "data"
    llama = start_server(data, "--inference-backend", "llamacpp", "--llama-cpp-python", _llama_cpp_python())
    local = start_server(data, "--api-only")
    yield llama, local
    local.stop()
    llama.stop()


@pytest.fixture(scope="module")
def tuned(servers):
    return fine_tune_tiny(servers[0].client(), chat_jsonl(12), "llama", seed=7, n_epochs=2, learning_rate_multiplier=10)


def greedy(client, model: str, question: str, **extra) -> str:
    messages = [{"role": "user", "content": question}]
    return client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=12, **extra)


def test_the_fine_tuned_model_answers_through_llama_cpp_as_tuneserves_engine_does(servers, tuned):
    llama, local = servers
    events = [e.message for e in llama.client().fine_tuning.jobs.list_events(tuned.id, limit=100).data]
    assert any(m.startswith(f"Registered {tuned.fine_tuned_model} with the inference server") for m in events), events
    for question in QUESTIONS:
        by_llama = greedy(llama.client(), tuned.fine_tuned_model, question)
        by_engine = greedy(local.client(), tuned.fine_tuned_model, question)
        assert by_llama.choices[0].message.content == by_engine.choices[0].message.content
        assert by_llama.choices[0].message.content.startswith("The capital of Z")  # trained: not the base's answer
    # The files llama.cpp serves: the base as f16 GGUF and the adapter as a LoRA GGUF (a small file).
    base = list((llama.data_dir / "llamacpp" / "base").glob("*.gguf"))
    lora = list((llama.data_dir / "llamacpp" / "lora").glob("*.gguf"))
    assert len(base) == 1 and len(lora) == 1 and lora[0].stat().st_size * 5 < base[0].stat().st_size


def test_streaming_completions_and_the_base_model(servers, tuned):
    llama, _ = servers
    client = llama.client()
    whole = greedy(client, tuned.fine_tuned_model, QUESTIONS[0]).choices[0].message.content
    stream = greedy(client, tuned.fine_tuned_model, QUESTIONS[0], stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == whole
    text = client.completions.create(model=tuned.fine_tuned_model, prompt="The capital", max_tokens=5, temperature=0)
    assert text.choices[0].text
    base = greedy(client, TINY, QUESTIONS[0]).choices[0].message.content
    assert base != whole  # the base model, without the adapter


def test_unknown_models_are_404_not_another_models_answer(servers):
    client = servers[0].client()
    with pytest.raises(openai.NotFoundError):
        greedy(client, "ft:tiny-random:default:llama:nosuchjob", QUESTIONS[0])
    with pytest.raises(openai.NotFoundError):
        greedy(client, "no-such/model", QUESTIONS[0])
