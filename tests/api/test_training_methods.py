"""Issue 4 through the official openai client against a real server (tiny model): pause and resume,
continuing from a checkpoint, DPO in OpenAI's shape, and serving IA3, QLoRA and fully fine-tuned models."""

from __future__ import annotations

import json
import time
from pathlib import Path

import openai
import pytest

from tests.conftest import TINY, chat_jsonl, wait_for, wait_for_status

DPO_SUBSET = Path(__file__).resolve().parents[1] / "unit" / "training" / "data" / "dpo_en_demo_8.json"


def metrics_events(client, job_id):
    return [e for e in client.fine_tuning.jobs.list_events(job_id, limit=1000) if e.type == "metrics"]


def test_pause_checkpoints_and_resume_finishes(client):
    file = client.files.create(file=("long.jsonl", chat_jsonl(48)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=TINY,
        training_file=file.id,
        suffix="pause",
        hyperparameters={"n_epochs": 8, "batch_size": 1},
        extra_body={"validation_split": 0},  # all 48 train, no early stop: 384 short steps
    )
    wait_for_status(client, job.id, {"running"}, timeout_s=120)
    wait_for(lambda: metrics_events(client, job.id), 60, "the first metrics")
    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused"

    def pause_checkpoint():
        """The newest checkpoint once it is at the last step trained. An epoch's checkpoint (step 48)
        may come first, when the pause lands after it: wait for the pause's own."""
        checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
        last_step = max(e.data["step"] for e in metrics_events(client, job.id))
        return checkpoints[0] if checkpoints and checkpoints[0].step_number == last_step else None

    # The process finishes its step, writes the checkpoint and exits: pause takes a checkpoint.
    checkpoint = wait_for(pause_checkpoint, 60, "the pause checkpoint at the last step", interval_s=0.3)
    steps_at_pause = checkpoint.step_number
    assert steps_at_pause < 384
    time.sleep(1.5)
    assert max(e.data["step"] for e in metrics_events(client, job.id)) == steps_at_pause  # really stopped
    assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"

    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.pause(job.id + "x")
    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "queued"
    done = wait_for_status(client, job.id, {"succeeded", "failed"}, timeout_s=240)
    assert done.status == "succeeded", done.error
    steps = [e.data["step"] for e in metrics_events(client, job.id) if "train_loss" in e.data]
    assert sorted(set(steps)) == list(range(1, 385))  # every step once: none lost, none repeated
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000)]
    assert any(m.startswith(f"Resumed from checkpoint step-{steps_at_pause}") for m in messages)
    with pytest.raises(openai.ConflictError) as info:
        client.fine_tuning.jobs.pause(job.id)  # succeeded: nothing to pause (409)
    assert info.value.body["code"] == "job_not_pausable"


def test_continue_from_a_checkpoint(client):
    file = client.files.create(file=("zorbia.jsonl", chat_jsonl(16)), purpose="fine-tune")
    first = client.fine_tuning.jobs.create(
        model=TINY, training_file=file.id, suffix="first", hyperparameters={"n_epochs": 3, "batch_size": 4}
    )
    first = wait_for_status(client, first.id, {"succeeded", "failed"})
    assert first.status == "succeeded", first.error
    checkpoint = client.fine_tuning.jobs.checkpoints.list(first.id).data[0]
    second = client.fine_tuning.jobs.create(
        model=checkpoint.fine_tuned_model_checkpoint,
        training_file=file.id,
        suffix="second",
        hyperparameters={"n_epochs": 1, "batch_size": 4},
    )
    second = wait_for_status(client, second.id, {"succeeded", "failed"})
    assert second.status == "succeeded", second.error

    def first_loss(job_id: str) -> float:
        steps = sorted((e for e in metrics_events(client, job_id) if "train_loss" in e.data), key=lambda e: e.data["step"])
        return steps[0].data["train_loss"]

    assert first_loss(second.id) < first_loss(first.id)  # it starts from the trained adapter
    answer = client.chat.completions.create(
        model=second.fine_tuned_model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert answer.choices[0].message.content is not None


@pytest.mark.parametrize("training_type", ["ia3", "qlora", "full"])  # qlora: an NF4 base, on CPU too; served on the full base
def test_ia3_qlora_and_full_models_are_served(client, training_type):
    file = client.files.create(file=(f"{training_type}.jsonl", chat_jsonl(12)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=TINY,
        training_file=file.id,
        suffix=training_type,
        hyperparameters={"n_epochs": 1, "batch_size": 4},
        extra_body={"training_type": training_type},
    )
    assert job.model_extra["training_type"] == training_type
    job = wait_for_status(client, job.id, {"succeeded", "failed"})
    assert job.status == "succeeded", job.error
    answer = client.chat.completions.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert answer.model == job.fine_tuned_model and answer.usage.completion_tokens > 0


def test_dpo_job_in_openais_shape(client):
    rows = json.loads(DPO_SUBSET.read_text())
    data = ("\n".join(json.dumps(r) for r in rows + rows) + "\n").encode()  # 16 pairs: OpenAI's minimum is 10
    file = client.files.create(file=("dpo.jsonl", data), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=TINY,
        training_file=file.id,
        suffix="dpo",
        extra_body={"max_seq_length": 128},
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1, "batch_size": 8}}},
    )
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2
    job = wait_for_status(client, job.id, {"succeeded", "failed"})
    assert job.status == "succeeded", job.error
    last = max(metrics_events(client, job.id), key=lambda e: e.data["step"])
    assert {"rewards_margin", "rewards_accuracy", "train_loss"} <= set(last.data)


def test_bad_training_options_are_400s_naming_the_field(client):
    file = client.files.create(file=("ok.jsonl", chat_jsonl(12)), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model=TINY, training_file=file.id, extra_body={"warmup_ratio": 3})
    assert info.value.body["param"] == "warmup_ratio"
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(
            model=TINY, training_file=file.id, extra_body={"training_type": "qlora", "lora": {"use_dora": True}}
        )
    assert info.value.body["param"] == "lora.use_dora" and "DoRA" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model=TINY, training_file=file.id, extra_body={"training_type": "prefix"})
    assert info.value.body["param"] == "training_type"
