"""`serve` and `worker` as a user starts them: from a working directory, with a relative --data-dir, with
none at all (./tuneserve-data), and configured by TUNESERVE_* variables alone.

The training process runs with its job directory as its working directory, so any relative path that
reached it failed every job; the settings now make the data dir absolute before anything sees it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from tests.conftest import (
    Server,
    chat_jsonl,
    clean_environment,
    fine_tune_tiny,
    free_port,
    start_server,
    wait_for_status,
    wait_until_serving,
)

# A relative --data-dir and no --data-dir (the default ./tuneserve-data), both against the working directory.
DATA_DIRS = [pytest.param("rel/data", id="relative"), pytest.param(None, id="default")]


def assert_job_ran_under(job_dir: Path) -> None:
    """The job's files are where the data dir says, and the training process saw absolute paths."""
    spec = json.loads((job_dir / "spec.json").read_text())
    assert Path(spec["training_file"]).is_absolute() and Path(spec["training_file"]).is_file()
    assert (job_dir / "final" / "adapter_config.json").is_file()


@pytest.mark.parametrize("data_dir", DATA_DIRS)
def test_serve_runs_a_job_from_a_relative_data_dir(tmp_path, tiny_model_ready, data_dir):
    server = start_server(Path(data_dir) if data_dir else None, cwd=tmp_path, env=clean_environment())
    try:
        client = server.client()
        job = fine_tune_tiny(client, chat_jsonl(12), "relative", seed=1, n_epochs=1)
        assert_job_ran_under(tmp_path / (data_dir or "tuneserve-data") / "jobs" / job.id)
        reply = client.chat.completions.create(
            model=job.fine_tuned_model, max_tokens=4, messages=[{"role": "user", "content": "Question 1"}]
        )
        assert reply.choices[0].finish_reason in ("stop", "length")
    finally:
        server.stop()


@pytest.mark.parametrize("data_dir", DATA_DIRS)
def test_worker_runs_a_job_from_a_relative_data_dir(tmp_path, tiny_model_ready, data_dir):
    """`serve --api-only` and `tuneserve worker` share the data dir (and its SQLite database)."""
    flags = ["--data-dir", data_dir] if data_dir else []
    env = clean_environment()
    server = start_server(Path(data_dir) if data_dir else None, "--api-only", cwd=tmp_path, env=env)
    with (tmp_path / "worker.log").open("ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "tuneserve", "worker", *flags, "--log-level", "warning"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        job = fine_tune_tiny(server.client(), chat_jsonl(12), "worker", seed=1, n_epochs=1)
        assert_job_ran_under(tmp_path / (data_dir or "tuneserve-data") / "jobs" / job.id)
        events = server.client().fine_tuning.jobs.list_events(job.id, limit=100).data
        assert any(e.message.startswith("Job claimed by worker") for e in events)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        server.stop()
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-2000:]


def test_serve_takes_its_settings_from_the_environment(tmp_path, tiny_model_ready):
    """No flags at all: port, data dir, upload limit and concurrency come from TUNESERVE_*."""
    port = free_port()
    env = clean_environment(
        TUNESERVE_PORT=str(port),
        TUNESERVE_DATA_DIR="from-env",
        TUNESERVE_MAX_UPLOAD_BYTES="3000",
        TUNESERVE_MAX_CONCURRENT_JOBS="2",
        TUNESERVE_HOST="127.0.0.1",
    )
    log = tmp_path / "server.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "tuneserve", "serve", "--log-level", "warning"],
        cwd=tmp_path,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    server = wait_until_serving(Server(process, port, tmp_path / "from-env", log))
    try:
        client = server.client()
        with pytest.raises(openai.APIStatusError) as too_big:
            client.files.create(file=("big.jsonl", chat_jsonl(40)), purpose="fine-tune")  # 40 lines: over 3000 bytes
        assert too_big.value.status_code == 413 and "3000" in too_big.value.message
        # Two jobs run at once (TUNESERVE_MAX_CONCURRENT_JOBS=2): both are running at the same moment.
        file = client.files.create(file=("small.jsonl", chat_jsonl(12)), purpose="fine-tune")
        jobs = [
            client.fine_tuning.jobs.create(
                model="tuneserve/tiny-random", training_file=file.id, seed=1, hyperparameters={"n_epochs": 50, "batch_size": 1}
            )
            for _ in range(2)
        ]
        for job in jobs:
            wait_for_status(client, job.id, {"running"}, timeout_s=120)
        assert all(client.fine_tuning.jobs.retrieve(job.id).status == "running" for job in jobs)
        for job in jobs:
            client.fine_tuning.jobs.cancel(job.id)
        assert (tmp_path / "from-env" / "tuneserve.db").is_file()
        assert (tmp_path / "from-env" / "jobs" / jobs[0].id / "spec.json").is_file()
    finally:
        server.stop()


def test_serve_refuses_an_open_host_from_the_environment_without_keys(tmp_path):
    """TUNESERVE_HOST is read (and checked) like --host: no keys on a non-loopback host is refused."""
    result = subprocess.run(
        [sys.executable, "-m", "tuneserve", "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=clean_environment(TUNESERVE_HOST="0.0.0.0"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "refusing to serve on 0.0.0.0" in result.stderr
    assert (tmp_path / "tuneserve-data" / "tuneserve.db").is_file()  # the default data dir, in the working directory
