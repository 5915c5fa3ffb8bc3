"""Fine-tuning jobs through the official openai client, on the tiny model, against a real server."""

import csv
import io
import json
import os
import signal
import time

import httpx
import openai
import pytest

from tests.conftest import TINY, chat_jsonl, training_pids, wait_for, wait_for_status


@pytest.fixture(scope="module")
def training_file(client_module):
    return client_module.files.create(file=("train.jsonl", chat_jsonl(16)), purpose="fine-tune")


@pytest.fixture(scope="module")
def client_module(server):
    return server.client()


def test_job_runs_to_success_with_events_checkpoints_and_results(client, training_file, server):
    validation = client.files.create(file=("valid.jsonl", chat_jsonl(4)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=TINY,
        training_file=training_file.id,
        validation_file=validation.id,
        hyperparameters={"n_epochs": 2, "batch_size": 4},
        suffix="zorbia",
        seed=7,
        metadata={"team": "core"},
    )
    assert job.status in ("validating_files", "queued") and job.object == "fine_tuning.job"
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 4
    assert job.hyperparameters.learning_rate_multiplier == 1.0  # "auto" resolved to a number
    assert job.seed == 7 and job.metadata == {"team": "core"} and job.trained_tokens is None

    job = wait_for_status(client, job.id, {"succeeded", "failed"}, timeout_s=180)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:{TINY}:default:zorbia:{job.id.removeprefix('ftjob-')}"
    assert job.trained_tokens > 0 and job.finished_at >= job.created_at and job.error is None

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    assert events[0].created_at >= events[-1].created_at  # newest first
    metrics = [e for e in events if e.type == "metrics"]
    assert len(metrics) >= 8  # 2 epochs x 4 steps, one metrics event per step
    steps = sorted(e.data["step"] for e in metrics if "train_loss" in e.data)
    assert steps[-1] == metrics[0].data["total_steps"] == 8
    assert all("train_mean_token_accuracy" in e.data for e in metrics if "train_loss" in e.data)
    assert any("valid_loss" in e.data for e in metrics)
    assert any(e.message.startswith("New fine-tuned model created") for e in events)

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert sorted(c.step_number for c in checkpoints) == [4, 8]  # one per epoch
    assert all(c.fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-{c.step_number}" for c in checkpoints)
    assert all(c.metrics.train_loss is not None for c in checkpoints)

    assert len(job.result_files) == 1
    results = client.files.retrieve(job.result_files[0])
    assert results.purpose == "fine-tune-results"
    rows = list(csv.DictReader(io.StringIO(client.files.content(results.id).text)))
    assert rows[0].keys() >= {"step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"}
    assert len(rows) >= 8

    final = server.data_dir / "jobs" / job.id / "final"
    assert (final / "adapter_config.json").exists() and (final / "adapter_model.safetensors").exists()
    assert (final / "tokenizer.json").exists()


def test_method_form_and_auto_hyperparameters(client, training_file):
    job = client.fine_tuning.jobs.create(
        model=TINY,
        training_file=training_file.id,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": "auto", "learning_rate_multiplier": 2}},
        },
    )
    assert job.method.type == "supervised"
    assert job.hyperparameters.n_epochs == 1
    assert isinstance(job.hyperparameters.batch_size, int) and job.hyperparameters.learning_rate_multiplier == 2
    client.fine_tuning.jobs.cancel(job.id)


def test_idempotency_key_returns_the_same_job(client, training_file):
    headers = {"Idempotency-Key": f"retry-{time.time()}"}
    first = client.fine_tuning.jobs.create(model=TINY, training_file=training_file.id, extra_headers=headers)
    second = client.fine_tuning.jobs.create(model=TINY, training_file=training_file.id, extra_headers=headers)
    assert first.id == second.id
    client.fine_tuning.jobs.cancel(first.id)


def test_list_pagination_with_after_and_has_more(client, training_file):
    created = [client.fine_tuning.jobs.create(model=TINY, training_file=training_file.id).id for _ in range(3)]
    for job_id in created:
        client.fine_tuning.jobs.cancel(job_id)
    page = client.fine_tuning.jobs.list(limit=2)
    assert len(page.data) == 2 and page.has_more is True
    assert [j.id for j in page.data] == created[::-1][:2]  # newest first
    following = client.fine_tuning.jobs.list(limit=2, after=page.data[-1].id)
    assert following.data[0].id == created[0]
    every = [j.id for j in client.fine_tuning.jobs.list(limit=1)]  # auto-paging terminates and sees each once
    assert len(every) == len(set(every)) and set(created) <= set(every)


def test_cancel_running_job_stops_its_process(client, training_file, server):
    job = client.fine_tuning.jobs.create(
        model=TINY, training_file=training_file.id, hyperparameters={"n_epochs": 50, "batch_size": 1}
    )
    wait_for_status(client, job.id, {"running"}, timeout_s=120)
    events_file = server.data_dir / "jobs" / job.id / "events.jsonl"
    # The scheduler ingests the first metrics, which give the estimate.
    running = wait_for(
        lambda: (now := client.fine_tuning.jobs.retrieve(job.id)).estimated_finish is not None and now, 60, "an estimate"
    )
    assert running.status == "running" and running.estimated_finish is not None
    assert running.estimated_finish >= running.created_at
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.estimated_finish is None
    assert cancelled.status == "cancelled"
    time.sleep(3)  # within seconds the process group is gone and writes no more events
    size = events_file.stat().st_size
    time.sleep(2)
    assert events_file.stat().st_size == size
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert any(e.message == "Fine-tuning job cancelled" for e in client.fine_tuning.jobs.list_events(job.id, limit=100))


def test_crashing_training_process_fails_the_job_and_server_stays_up(client, server):
    doomed = client.files.create(file=("doomed.jsonl", chat_jsonl(12)), purpose="fine-tune")
    blocker = client.fine_tuning.jobs.create(
        model=TINY, training_file=doomed.id, hyperparameters={"n_epochs": 50, "batch_size": 1}
    )
    job = client.fine_tuning.jobs.create(model=TINY, training_file=doomed.id, hyperparameters={"n_epochs": 1})
    wait_for_status(client, job.id, {"queued"}, timeout_s=60)  # validated, waiting behind the blocker
    (server.data_dir / "files" / doomed.id).unlink()  # the data vanishes under the queued job
    client.fine_tuning.jobs.cancel(blocker.id)
    job = wait_for_status(client, job.id, {"succeeded", "failed"}, timeout_s=120)
    assert job.status == "failed"
    assert job.error.code == "training_failed" and "No such file" in job.error.message
    assert httpx.get(f"{server.base_url}/v1/health_check").status_code == 200


@pytest.mark.parametrize(
    "kwargs,param",
    [
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"batch_size": 300}}, "hyperparameters.batch_size"),
        ({"hyperparameters": {"learning_rate_multiplier": -1}}, "hyperparameters.learning_rate_multiplier"),
        ({"suffix": "x" * 65}, "suffix"),
        ({"seed": -5}, "seed"),
    ],
)
def test_out_of_range_request_is_400(client, training_file, kwargs, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model=TINY, training_file=training_file.id, **kwargs)
    assert info.value.body["param"] == param


def test_unknown_model_file_and_job_are_404(client, training_file):
    with pytest.raises(openai.NotFoundError) as info:
        client.fine_tuning.jobs.create(model="nobody/no-such-model-xyz", training_file=training_file.id)
    assert info.value.body["code"] == "model_not_found" and info.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError) as info:
        client.fine_tuning.jobs.create(model=TINY, training_file="file-missing")
    assert info.value.body["param"] == "training_file"
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-missing")
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.list_events("ftjob-missing")


def test_malformed_json_body_is_400(server):
    response = httpx.post(
        f"{server.base_url}/v1/fine_tuning/jobs",
        content=b'{"model": "x", "training_file": ',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_results_file_cannot_be_training_file(client, training_file):
    job = client.fine_tuning.jobs.create(model=TINY, training_file=training_file.id, hyperparameters={"n_epochs": 1})
    job = wait_for_status(client, job.id, {"succeeded", "failed"}, timeout_s=120)
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model=TINY, training_file=job.result_files[0])
    assert info.value.body["param"] == "training_file"


def test_fewer_than_10_examples_is_refused_at_create(client):
    small = client.files.create(file=("small.jsonl", chat_jsonl(9)), purpose="fine-tune")
    assert small.validation["warning_counts"].get("fewer_than_10_examples") == 1  # the upload warns...
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model=TINY, training_file=small.id)
    assert info.value.body["code"] == "too_few_examples" and "9 example" in info.value.body["message"]  # ...the job refuses


def test_validating_files_step_reports_tokens(client, training_file):
    job = client.fine_tuning.jobs.create(model=TINY, training_file=training_file.id, hyperparameters={"n_epochs": 1})
    wait_for_status(client, job.id, {"queued", "running", "succeeded"}, timeout_s=60)
    validated = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=50) if e.message.startswith("Files validated")]
    assert len(validated) == 1 and "16 training examples" in validated[0].message
    client.fine_tuning.jobs.cancel(job.id)


def test_file_gone_before_validation_fails_the_job_with_reason(client, server):
    gone = client.files.create(file=("gone.jsonl", chat_jsonl(12)), purpose="fine-tune")
    blocker = client.fine_tuning.jobs.create(model=TINY, training_file=gone.id, hyperparameters={"n_epochs": 50, "batch_size": 1})
    wait_for_status(client, blocker.id, {"running"}, timeout_s=60)
    (server.data_dir / "files" / gone.id).unlink()
    job = client.fine_tuning.jobs.create(model=TINY, training_file=gone.id)
    job = wait_for_status(client, job.id, {"failed", "queued"}, timeout_s=60)
    client.fine_tuning.jobs.cancel(blocker.id)
    assert job.status == "failed" and job.error.param == "training_file" and "No such file" in job.error.message


def test_a_training_process_killed_mid_step_fails_the_job_saying_so(client, training_file, server):
    """kill -9 (or the out-of-memory killer) on the training process: the job fails with a message that
    says what happened, nothing is left running, and the server goes on serving."""
    job = client.fine_tuning.jobs.create(
        model=TINY, training_file=training_file.id, hyperparameters={"n_epochs": 50, "batch_size": 1}
    )
    job_dir = server.data_dir / "jobs" / job.id
    wait_for(lambda: client.fine_tuning.jobs.list_events(job.id, limit=100).data[0].type == "metrics", 120, "training steps")
    pids = training_pids(job_dir)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    failed = wait_for_status(client, job.id, {"failed", "succeeded", "cancelled"}, timeout_s=60)
    assert failed.status == "failed"
    assert "killed by SIGKILL" in failed.error.message, failed.error.message
    assert training_pids(job_dir) == []
    assert [m.id for m in client.models.list().data if m.id == TINY] == [TINY]  # the server is healthy


def test_a_split_held_out_of_the_training_file_picks_the_served_checkpoint(client, server):
    """Asked for: a tenth of the file is held out, validated on every epoch, and the checkpoint with the lowest
    validation loss is the fine-tuned model the server answers with (the job says which, and why)."""
    data = client.files.create(file=("split.jsonl", chat_jsonl(24)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=TINY,
        training_file=data.id,
        hyperparameters={"n_epochs": 3, "batch_size": 4},
        extra_body={"validation_split": 0.1, "early_stopping_patience": 1},
    )
    job = wait_for_status(client, job.id, {"succeeded", "failed"}, timeout_s=240)
    assert job.status == "succeeded", job.error
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=200))
    messages = [e.message for e in events]
    assert any(m.startswith("Held out 4 of 24 training examples") for m in messages)
    valid = {e.data["step"]: e.data["valid_loss"] for e in events if e.type == "metrics" and "valid_loss" in e.data}
    assert set(valid) <= {5, 10, 15} and len(valid) >= 2  # 20 examples, batch 4: an epoch is 5 steps
    kept = job.kept_checkpoint
    assert kept["step"] == min(valid, key=valid.get) and kept["valid_loss"] == pytest.approx(valid[kept["step"]])
    assert kept["reason"] in messages and "path" not in kept
    checkpoints = {c.step_number: c.fine_tuned_model_checkpoint for c in client.fine_tuning.jobs.checkpoints.list(job.id).data}
    assert set(checkpoints) == set(valid)  # every validation was a checkpoint, so any can be kept
    job_dir = server.data_dir / "jobs" / job.id
    kept_weights = (job_dir / "checkpoints" / f"step-{kept['step']}" / "adapter_model.safetensors").read_bytes()
    assert (job_dir / "final" / "adapter_model.safetensors").read_bytes() == kept_weights

    def answer(model: str) -> str:
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Where is Quillton?"}], temperature=0, max_tokens=8
        )
        return reply.choices[0].message.content

    assert answer(job.fine_tuned_model) == answer(checkpoints[kept["step"]])


def test_validations_judged_by_held_out_answers(client):
    """early_stopping_metric "answers": every validation answers the held-out prompts and scores them (ROUGE-L F1);
    the kept checkpoint is the best by that score. DPO, which has no answers to compare, is refused with the field."""
    data = client.files.create(file=("answers.jsonl", chat_jsonl(24)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=TINY,
        training_file=data.id,
        hyperparameters={"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 10},
        extra_body={"validation_split": 0.1, "early_stopping_patience": 2, "early_stopping_metric": "answers"},
    )
    job = wait_for_status(client, job.id, {"succeeded", "failed"}, timeout_s=240)
    assert job.status == "succeeded", job.error
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=200))
    scores = {e.data["step"]: e.data["valid_answer_rouge_l"] for e in events if "valid_answer_rouge_l" in (e.data or {})}
    assert len(scores) >= 2 and all(0 <= s <= 1 for s in scores.values())
    best = max(scores.values())
    assert job.kept_checkpoint["valid_answer_rouge_l"] == pytest.approx(best)
    assert scores[job.kept_checkpoint["step"]] == pytest.approx(best)
    assert "held-out answer ROUGE-L" in job.kept_checkpoint["reason"]

    line = {
        "input": {"messages": [{"role": "user", "content": "Hi"}]},
        "preferred_output": [{"role": "assistant", "content": "Hello!"}],
        "non_preferred_output": [{"role": "assistant", "content": "Go away."}],
    }
    pairs = client.files.create(file=("pairs.jsonl", (json.dumps(line) + "\n").encode() * 10), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(
            model=TINY,
            training_file=pairs.id,
            method={"type": "dpo"},
            extra_body={"validation_split": 0.1, "early_stopping_metric": "answers"},
        )
    assert refused.value.body["param"] == "early_stopping_metric"
