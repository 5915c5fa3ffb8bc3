"""The Ray runner's preflight (jobs/runners/ray_preflight.py): a cluster whose interpreter lacks tuneserve,
or has another version, fails the job at once with the fix, before anything is submitted for it.

The judging and the once-per-runner rule run against a fake Jobs API client (no cluster); one test runs
a server whose --ray-python lacks tuneserve against the real loopback cluster (the passing case is in
test_ray_runner.py, whose jobs carry the preflight's report)."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import tuneserve
from tests.conftest import TINY, chat_jsonl, start_server, wait_for_status
from tuneserve.jobs.runners import ray_preflight
from tuneserve.jobs.runners.ray_preflight import ClusterPython, RayClusterNotReady, judge

# Interpreters of this machine that may lack tuneserve (the venv's own base interpreter has no tuneserve).
BARE_PYTHONS = ("/usr/bin/python3", "/root/.pyenv/versions/3.11.7/bin/python3")


def report_logs(version: str = tuneserve.__version__, python: str = "/opt/venv/bin/python") -> str:
    """A check job's log as Ray gives it back: its report line after Ray's own lines and its echo of the entrypoint."""
    return (
        "2026-01-01 10:00:00,123\tINFO job_manager.py:581 -- Runtime env is setting up.\n"
        f"Running entrypoint for job tuneserve-preflight-1: python -c {shlex.quote(ray_preflight.CODE)}\n"
        f"{ray_preflight.MARKER}{json.dumps({'python': python, 'version': version})}\n"
    )


def test_a_matching_cluster_passes():
    assert judge("python", "SUCCEEDED", report_logs()) == ClusterPython("/opt/venv/bin/python", tuneserve.__version__)


def test_another_version_on_the_cluster_fails_naming_both(monkeypatch):
    monkeypatch.setattr(tuneserve, "__version__", "9.9.9")  # this server, as a newer release
    with pytest.raises(RayClusterNotReady) as caught:
        judge("python", "SUCCEEDED", report_logs(version="0.1.0"))
    message = str(caught.value)
    assert "has tuneserve 0.1.0, but this server is tuneserve 9.9.9" in message
    assert "/opt/venv/bin/python" in message and "tuneserve[ray]==9.9.9" in message


def test_a_missing_module_fails_with_the_fixes():
    logs = "Traceback (most recent call last):\nModuleNotFoundError: No module named 'tuneserve'\n"
    with pytest.raises(RayClusterNotReady) as caught:
        judge("python", "FAILED", logs)
    message = str(caught.value)
    assert "No module named 'tuneserve'" in message
    for fix in ("install tuneserve", "activated virtual environment", "PATH=", "--ray-python", "TUNESERVE_RAY_PYTHON"):
        assert fix in message, fix


def test_a_check_that_never_ran_says_so():
    with pytest.raises(RayClusterNotReady, match="still PENDING after 120 s"):
        judge("python", "still PENDING after 120 s", "")


class FakeJobs:
    """The part of Ray's JobSubmissionClient the runner uses; each check job answers with `logs`."""

    def __init__(self, address: str):
        self.logs = report_logs()
        self.status = "SUCCEEDED"
        self.submitted: list[dict] = []

    def get_address(self) -> str:
        return "http://ray:8265"

    def submit_job(self, **job) -> str:
        self.submitted.append(job)
        return job["submission_id"]

    def get_job_status(self, submission_id: str):
        return SimpleNamespace(value=self.status)

    def get_job_logs(self, submission_id: str) -> str:
        return self.logs


@pytest.fixture
def fake_runner(monkeypatch):
    job_submission = pytest.importorskip("ray.job_submission")
    monkeypatch.setattr(job_submission, "JobSubmissionClient", FakeJobs)
    from tuneserve.jobs.runners.ray import RayRunner

    return RayRunner("http://ray:8265", python="/opt/venv/bin/python")


def test_the_check_runs_once_per_runner_and_again_after_a_failure(fake_runner, tmp_path):
    client = fake_runner.client
    client.status, client.logs = "FAILED", "/bin/sh: 1: /opt/venv/bin/python: not found\n"
    with pytest.raises(RayClusterNotReady, match="not found"):
        fake_runner.start("ftjob-1", tmp_path / "ftjob-1")
    assert [job["submission_id"].startswith("tuneserve-preflight-") for job in client.submitted] == [True]  # the job never went

    client.status, client.logs = "SUCCEEDED", report_logs()  # the user fixed the cluster
    for job_id in ("ftjob-2", "ftjob-3"):
        (tmp_path / job_id).mkdir()
        fake_runner.start(job_id, tmp_path / job_id)
    entrypoints = [job["entrypoint"] for job in client.submitted]
    assert sum("tuneserve-preflight" in job["submission_id"] for job in client.submitted) == 2  # checked once more, then not
    assert entrypoints[1].startswith("/opt/venv/bin/python -c ")
    assert entrypoints[2].startswith("/opt/venv/bin/python -m tuneserve.training.ray_train ")
    # Each job's events say which interpreter ran it.
    assert f"with tuneserve {tuneserve.__version__}" in (tmp_path / "ftjob-3" / "events.jsonl").read_text()


def test_ray_python_is_a_flag_and_a_variable_and_reaches_the_runner(fake_runner, monkeypatch):
    from tuneserve.cli import build_parser, settings_from
    from tuneserve.jobs.worker import runner_from

    def settings(*argv: str):
        return settings_from(build_parser().parse_args([*argv, "--runner", "ray", "--ray-address", "http://ray:8265"]))

    monkeypatch.delenv("TUNESERVE_RAY_PYTHON", raising=False)
    assert settings("worker").ray_python == "python"
    monkeypatch.setenv("TUNESERVE_RAY_PYTHON", "/env/python")
    assert settings("worker").ray_python == "/env/python"
    assert runner_from(settings("serve", "--ray-python", "/flag/python")).python == "/flag/python"


def bare_python() -> str | None:
    """An interpreter here without tuneserve, as on a cluster whose `python` is not the venv's."""
    for path in BARE_PYTHONS:
        if Path(path).exists() and subprocess.run([path, "-c", "import tuneserve"], capture_output=True).returncode != 0:
            return path
    return None


@pytest.mark.ray
def test_a_cluster_python_without_tuneserve_fails_the_job_at_once(tmp_path, ray_cluster, tiny_model_ready):
    python = bare_python()
    if python is None:
        pytest.skip(f"no interpreter without tuneserve here (looked at {', '.join(BARE_PYTHONS)})")
    server = start_server(
        tmp_path / "data",
        "--runner",
        "ray",
        "--ray-address",
        ray_cluster,
        "--ray-python",
        python,
        env={"TUNESERVE_POLL_INTERVAL_S": "0.3"},
    )
    try:
        client = server.client()
        file = client.files.create(file=("t.jsonl", chat_jsonl(10)), purpose="fine-tune")
        started = time.monotonic()
        job = client.fine_tuning.jobs.create(model=TINY, training_file=file.id, extra_body={"num_workers": 1})
        job = wait_for_status(client, job.id, {"running", "succeeded", "failed"}, timeout_s=90)
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert job.status == "failed", job.status
    message = job.error.message
    assert "No module named 'tuneserve'" in message and python in message
    for fix in ("install tuneserve", "activated virtual environment", "--ray-python", "runtime_env"):
        assert fix in message, fix
    assert elapsed < 60, elapsed  # the check's one short Ray job, not a training run failing in Ray
    from ray.job_submission import JobSubmissionClient

    # Nothing was submitted for the job itself.
    assert not [j for j in JobSubmissionClient(ray_cluster).list_jobs() if (j.submission_id or "").startswith(job.id)]
