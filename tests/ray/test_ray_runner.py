"""`tuneserve serve --runner ray` against a real local Ray cluster (2 CPUs, loopback): a job trains
with Ray Train's TorchTrainer on 2 CPU workers over gloo, is paused (a checkpoint, then the Ray job
ends), resumed (a new Ray job continues from the checkpoint) and succeeds, through the real openai
client; another job is cancelled and its Ray job stops. Events and checkpoints come back through
the shared job directory."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

import tuneserve
from tests.conftest import TINY, chat_jsonl, start_server, wait_for, wait_for_status

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory, ray_cluster, tiny_model_ready):
    server = start_server(
        tmp_path_factory.mktemp("ray") / "data",
        "--runner",
        "ray",
        "--ray-address",
        ray_cluster,
        env={"TUNESERVE_POLL_INTERVAL_S": "0.3"},
    )
    yield server
    server.stop()


def ray_status(address: str, submission_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return str(JobSubmissionClient(address).get_job_status(submission_id).value)


def messages(client, job_id: str) -> list[str]:
    return [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=500)]


def has_metrics(client, job_id: str) -> bool:
    return any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job_id, limit=20))


def create(client, n_examples: int, n_epochs: int, training_type: str = "lora"):
    file = client.files.create(file=("t.jsonl", chat_jsonl(n_examples)), purpose="fine-tune")
    return client.fine_tuning.jobs.create(
        model=TINY,
        training_file=file.id,
        hyperparameters={"n_epochs": n_epochs, "batch_size": 4},
        # The whole file trains (nothing held out, no early stop), so the step counts below are the file's.
        extra_body={"num_workers": 2, "resources_per_worker": {"CPU": 1}, "training_type": training_type, "validation_split": 0},
    )


def test_two_ray_workers_train_pause_resume_and_succeed(ray_server, ray_cluster):
    """Full fine-tuning: the two workers shard the model with FSDP; the pause checkpoint gathers it whole."""
    client = ray_server.client()
    job = create(client, 96, 4, "full")  # 24 steps an epoch
    job = wait_for_status(client, job.id, {"running", "failed"}, timeout_s=120)
    assert job.status == "running", job.error
    # The job links to its Ray job on the dashboard.
    assert job.metadata["ray_job_id"] == f"{job.id}-attempt-1"
    assert job.metadata["ray_dashboard_url"] == f"{ray_cluster}/#/jobs/{job.id}-attempt-1"

    wait_for(lambda: has_metrics(client, job.id), 120, "the first metrics")
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    # The run checkpoints at its next step and ends; its Ray job then ends by itself.
    wait_for(lambda: ray_status(ray_cluster, f"{job.id}-attempt-1") in ("SUCCEEDED", "FAILED", "STOPPED"), 90, "the pause")
    assert ray_status(ray_cluster, f"{job.id}-attempt-1") == "SUCCEEDED"
    stop = wait_for(
        lambda: [m for m in messages(client, job.id) if m.startswith("Stopped on request at step")],
        30,
        "the pause checkpoint's event",
    )
    paused_step = int(stop[0].split("at step ")[1].split()[0])
    assert paused_step in {c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)}

    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    job = wait_for_status(client, job.id, {"succeeded", "failed", "cancelled"}, timeout_s=180)
    assert job.status == "succeeded", job.error
    assert job.metadata["ray_job_id"] == f"{job.id}-attempt-2"
    assert ray_status(ray_cluster, f"{job.id}-attempt-2") == "SUCCEEDED"
    log = messages(client, job.id)
    assert f"Resumed from checkpoint step-{paused_step} (step {paused_step} of 96)" in log
    # The preflight's report, in the events: the cluster's `python` is this venv's, with this tuneserve.
    report = f"The Ray cluster runs 'python' as {Path(sys.executable).parent}/python, with tuneserve {tuneserve.__version__}"
    assert report in log, [m for m in log if m.startswith("The Ray cluster")]
    # Both attempts trained on two Ray Train workers, sharded.
    assert sum("2 process(es) (FSDP)" in m for m in log if m.startswith("Training on")) == 2
    steps = sorted(c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id, limit=20))
    assert steps[-1] == 96 and len(steps) == len(set(steps))
    reply = client.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert reply.choices[0].message.content is not None


def test_cancel_stops_the_ray_job(ray_server, ray_cluster):
    client = ray_server.client()
    job = create(client, 200, 20)
    wait_for(lambda: has_metrics(client, job.id), 150, "the first metrics")
    assert any("2 process(es) (DDP)" in m for m in messages(client, job.id))  # an adapter: data parallel, not sharded
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    wait_for(lambda: ray_status(ray_cluster, f"{job.id}-attempt-1") != "RUNNING", 60, "Ray to stop the job")
    assert ray_status(ray_cluster, f"{job.id}-attempt-1") == "STOPPED"
    # Nothing trains any more: the event file stops growing.
    events = ray_server.data_dir / "jobs" / job.id / "events.jsonl"
    size = events.stat().st_size
    time.sleep(3)
    assert events.stat().st_size == size
    job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "cancelled" and job.fine_tuned_model is None
