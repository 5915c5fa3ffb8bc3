"""SIGKILL the server mid-training, restart it on the same data dir: the job still succeeds,
nothing is lost, and no training process runs twice. On SQLite (in the data dir) and on PostgreSQL."""

import signal

import pytest

from tests.api.test_postgres_server import pg_url  # noqa: F401  (fixture: a fresh schema of the real PostgreSQL)
from tests.conftest import SMOLLM2, start_server, training_pids, wait_for, wait_for_status
from tests.e2e.test_smollm2_flow import facts_jsonl

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_flags(request) -> list[str]:
    """The server's flags for each database: none for SQLite in the data dir, --database-url for PostgreSQL."""
    return [] if request.param == "sqlite" else ["--database-url", request.getfixturevalue("pg_url")]


def test_sigkill_mid_training_then_restart_succeeds(tmp_path, database_flags):
    data_dir = tmp_path / "data"
    server = start_server(data_dir, *database_flags)
    client = server.client()
    file = client.files.create(file=("capitals.jsonl", facts_jsonl(4)), purpose="fine-tune")  # 16 examples
    job = client.fine_tuning.jobs.create(model=SMOLLM2, training_file=file.id, hyperparameters={"n_epochs": 3, "batch_size": 4})
    job_dir = data_dir / "jobs" / job.id

    # The first epoch's checkpoint, then a kill mid-epoch-2.
    wait_for(lambda: (job_dir / "checkpoints" / "step-4" / "adapter_config.json").exists(), 600, "the first checkpoint")
    assert training_pids(job_dir)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    wait_for(lambda: training_pids(job_dir) == [], 10, "the training process to die with the server")

    server = start_server(data_dir, *database_flags)  # the killed server's serve lock died with it
    try:
        client = server.client()
        job = wait_for_status(client, job.id, {"succeeded", "failed"}, timeout_s=900)
        assert job.status == "succeeded", job.error
        assert [j.id for j in client.fine_tuning.jobs.list()] == [job.id]
        assert [f.id for f in client.files.list(purpose="fine-tune")] == [file.id]
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=500)]
        assert any("Server restarted" in m for m in messages)
        assert any("Resumed from checkpoint step-4" in m for m in messages)
        steps = sorted(c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id))
        assert steps == [4, 8, 12]  # no duplicate checkpoint rows after the resume
        reply = client.chat.completions.create(
            model=job.fine_tuned_model, messages=[{"role": "user", "content": "Hi"}], max_tokens=5
        )
        assert reply.choices[0].message.content is not None
    finally:
        server.stop()
