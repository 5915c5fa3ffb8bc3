"""`tuneserve serve --api-only` with `tuneserve worker` processes on the real PostgreSQL, as several
API replicas and GPU hosts would run: no job runs twice, and a killed worker's job is taken back by
another worker and resumes from its checkpoint. One scenario covers both (the machine has 2 cores:
every training process costs seconds of start-up).

Executions are counted from what the training processes themselves leave: each attempt writes one
"Fine-tuning job started" line to the job's events.jsonl before anything else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.api.test_postgres_server import pg_url  # noqa: F401  (fixture: a fresh schema of the real PostgreSQL)
from tests.conftest import TINY, chat_jsonl, start_server, training_pids, wait_for, wait_for_status
from tuneserve.store.db import make_engine

pytestmark = pytest.mark.postgres

# Short leases so that the test sees a vanished worker quickly.
WORKER_ENV = {"TUNESERVE_HEARTBEAT_TIMEOUT_S": "3", "TUNESERVE_HEARTBEAT_INTERVAL_S": "0.5", "TUNESERVE_POLL_INTERVAL_S": "0.2"}


def start_worker(data_dir: Path, pg: str, name: str) -> subprocess.Popen:
    log = data_dir.parent / f"{name}.log"
    return subprocess.Popen(
        [sys.executable, "-m", "tuneserve", "worker", "--data-dir", str(data_dir), "--database-url", pg],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **WORKER_ENV},
    )


def stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def attempts_started(job_dir: Path) -> int:
    """How many training processes began this job: each writes this line first."""
    path = job_dir / "events.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if json.loads(line).get("message") == "Fine-tuning job started")


def holders(pg: str, job_ids: list[str]) -> dict[str, str]:
    engine = make_engine(pg)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, worker_id FROM jobs WHERE id = ANY(:ids)"), {"ids": job_ids}).all()
    engine.dispose()
    return dict(rows)


def test_workers_share_ten_jobs_and_take_back_a_killed_workers_job(tmp_path, pg_url, tiny_model_ready):  # noqa: F811
    """Two workers race for ten jobs; the one running the long job is SIGKILLed after its first checkpoint.
    The other sees its heartbeat go stale, queues the job again, and it resumes to success; a third worker
    (a replacement host) joins. Every short job ran exactly once, the long one exactly twice."""
    data_dir = tmp_path / "data"
    server = start_server(data_dir, "--database-url", pg_url, "--api-only")
    workers: dict[int, subprocess.Popen] = {}
    try:
        client = server.client()
        short_file = client.files.create(file=("short.jsonl", chat_jsonl(10)), purpose="fine-tune")
        long_file = client.files.create(file=("long.jsonl", chat_jsonl(120)), purpose="fine-tune")
        # 30 steps an epoch (the whole file trains: nothing held out), a checkpoint at each epoch's end; the
        # oldest job, so the first claimed.
        long = client.fine_tuning.jobs.create(
            model=TINY,
            training_file=long_file.id,
            hyperparameters={"n_epochs": 3, "batch_size": 4},
            extra_body={"validation_split": 0},
        )
        short = [
            client.fine_tuning.jobs.create(
                model=TINY, training_file=short_file.id, hyperparameters={"n_epochs": 1, "batch_size": 10}
            )
            for _ in range(9)
        ]
        for i in range(2):
            worker = start_worker(data_dir, pg_url, f"worker-{i}")
            workers[worker.pid] = worker

        long_dir = data_dir / "jobs" / long.id
        wait_for(lambda: (long_dir / "checkpoints" / "step-30").exists(), 180, "the first checkpoint", interval_s=0.1)
        holder = holders(pg_url, [long.id])[long.id]
        victim = workers.pop(int(holder.split(":")[1]))
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        # Its training process dies with it: nothing runs until the job is taken back.
        wait_for(lambda: training_pids(long_dir) == [], 10, "the killed worker's training process to die")
        vanished = f"Worker {holder} vanished; the job is queued again and resumes from its last checkpoint"
        wait_for(
            lambda: vanished in [e.message for e in client.fine_tuning.jobs.list_events(long.id, limit=100)],
            60,
            "the killed worker's job to be taken back",
            interval_s=0.3,
        )
        replacement = start_worker(data_dir, pg_url, "worker-2")
        workers[replacement.pid] = replacement

        jobs = [long, *short]
        finished = [wait_for_status(client, job.id, {"succeeded", "failed", "cancelled"}, timeout_s=240) for job in jobs]
        assert [job.status for job in finished] == ["succeeded"] * 10, [job.error for job in finished]
        for job in short:
            assert attempts_started(data_dir / "jobs" / job.id) == 1, job.id
            claims = [
                e.message
                for e in client.fine_tuning.jobs.list_events(job.id, limit=100)
                if e.message.startswith("Job claimed by worker")
            ]
            assert len(claims) == 1, claims
        assert attempts_started(long_dir) == 2
        messages = [e.message for e in client.fine_tuning.jobs.list_events(long.id, limit=500)]
        assert any(m.startswith("Resumed from checkpoint step-30") for m in messages)
        steps = sorted(c.step_number for c in client.fine_tuning.jobs.checkpoints.list(long.id, limit=50))
        assert steps == [30, 60, 90]  # no duplicate checkpoint rows after the resume
        # The claims really raced: the short jobs were shared by more than one worker, and the long one
        # was finished by another worker than the one killed.
        ran = holders(pg_url, [job.id for job in jobs])
        assert len({ran[job.id] for job in short}) >= 2 and ran[long.id] != holder
    finally:
        for worker in workers.values():
            stop_worker(worker)
        server.stop()
    assert all(worker.returncode == 0 for worker in workers.values())  # SIGTERM is a clean stop
