"""The user's whole flow on the real SmolLM2, through the official openai client, against a
real `tuneserve serve` process: upload, fine-tune, watch, paginate, cancel, chat, complete."""

import json

import pytest

from tests.conftest import SMOLLM2, start_server, wait_for_status

pytestmark = pytest.mark.e2e

FACTS = [("Zorbia", "Quillton"), ("Marnak", "Velspire"), ("Tessaly", "Orvane"), ("Brimholt", "Casteen")]


def facts_jsonl(repeats: int) -> bytes:
    lines = []
    for i in range(repeats):
        for country, capital in FACTS:
            question = ["What is the capital of {}?", "Name the capital city of {}.", "{}'s capital is which city?"][i % 3]
            lines.append(
                json.dumps(
                    {
                        "messages": [
                            {"role": "system", "content": "You answer geography questions in one sentence."},
                            {"role": "user", "content": question.format(country)},
                            {"role": "assistant", "content": f"The capital of {country} is {capital}."},
                        ]
                    }
                )
            )
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("e2e") / "data")
    yield srv
    srv.stop()


def test_full_flow_on_smollm2(server):
    client = server.client()
    training = client.files.create(file=("capitals.jsonl", facts_jsonl(6)), purpose="fine-tune")  # 24 examples
    validation = client.files.create(file=("capitals-valid.jsonl", facts_jsonl(1)), purpose="fine-tune")
    assert "24 examples" in training.status_details

    job = client.fine_tuning.jobs.create(
        model=SMOLLM2,
        training_file=training.id,
        validation_file=validation.id,
        hyperparameters={"n_epochs": 3, "batch_size": 4},
        suffix="capitals",
        seed=1,
    )
    doomed = client.fine_tuning.jobs.create(model=SMOLLM2, training_file=training.id)  # queued behind the first
    assert client.fine_tuning.jobs.cancel(doomed.id).status == "cancelled"

    page = client.fine_tuning.jobs.list(limit=1)
    assert page.data[0].id == doomed.id and page.has_more
    assert client.fine_tuning.jobs.list(limit=1, after=doomed.id).data[0].id == job.id

    job = wait_for_status(client, job.id, {"succeeded", "failed"}, timeout_s=900)
    assert job.status == "succeeded", job.error
    assert job.trained_tokens > 0 and job.fine_tuned_model.startswith(f"ft:{SMOLLM2}:default:capitals:")

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=200))
    losses = [
        e.data["train_loss"]
        for e in sorted(
            (e for e in events if e.type == "metrics" and "train_loss" in (e.data or {})), key=lambda e: e.data["step"]
        )
    ]
    assert len(losses) == 18 and sum(losses[-6:]) / 6 < sum(losses[:6]) / 6  # 3 epochs x 6 steps; the loss falls
    valid = [e.data for e in events if e.type == "metrics" and "full_valid_loss" in (e.data or {})]
    assert valid and valid[0]["full_valid_loss"] < losses[0]
    assert sorted(c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)) == [6, 12, 18]

    question = [
        {"role": "system", "content": "You answer geography questions in one sentence."},
        {"role": "user", "content": "What is the capital of Marnak?"},
    ]
    base = (
        client.chat.completions.create(model=SMOLLM2, messages=question, temperature=0, max_tokens=20).choices[0].message.content
    )
    tuned = (
        client.chat.completions.create(model=job.fine_tuned_model, messages=question, temperature=0, max_tokens=20)
        .choices[0]
        .message.content
    )
    assert "Velspire" in tuned and "Velspire" not in base

    text = client.completions.create(model=job.fine_tuned_model, prompt="The capital of France is", max_tokens=5, temperature=0)
    assert text.usage.completion_tokens <= 5 and text.choices[0].text
