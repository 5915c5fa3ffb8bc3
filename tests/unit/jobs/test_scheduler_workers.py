"""The scheduler as one of several workers, on SQLite and the real PostgreSQL, with a recording runner
(the logic only; real processes, workers and Ray clusters are in tests/api/test_workers.py and tests/ray/):
taking back a vanished worker's job, adopting a run that goes on, letting go of a job taken away,
a run that waits for resources (queued until it starts), a run stopped outside tuneserve, and the
restart of a server whose old process is gone."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tuneserve.jobs import states
from tuneserve.jobs.runners.state import RunState
from tuneserve.jobs.scheduler import Scheduler
from tuneserve.store.tables import Job, JobEvent
from tests.unit.jobs.test_leases import add_jobs, row


@dataclass
class Handle:
    job_id: str
    job_dir: Path
    ref: str
    pid: int | None = None
    dashboard_url: str | None = None


@dataclass
class RecordingRunner:
    """Says what the test tells it to; records what the scheduler asks of it."""

    detachable: bool = False
    starts_pending: bool = False
    name: str = "recording"
    states: dict[str, RunState] = field(default_factory=dict)  # job id -> what poll answers
    live: set[str] = field(default_factory=set)  # refs that `adopt` finds still going on
    started: list[tuple[str, int]] = field(default_factory=list)
    stopped: list[tuple[str, bool]] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)

    def start(self, job_id, job_dir, attempt=1):
        self.started.append((job_id, attempt))
        return Handle(job_id, job_dir, f"{job_id}-attempt-{attempt}")

    def poll(self, handle):
        return self.states.get(handle.job_id, RunState("running"))

    def stop(self, handle, grace_s=5.0, *, pause=False):
        self.stopped.append((handle.job_id, pause))

    def failure_detail(self, handle):
        return "recorded failure"

    def adopt(self, job_id, job_dir, runner_ref):
        return Handle(job_id, job_dir, runner_ref) if runner_ref in self.live else None

    def abandon(self, job_id, job_dir, runner_pid, runner_ref, attempt=None):
        self.abandoned.append(job_id)

    def describe(self, handle):
        return f"run {handle.ref}"


@pytest.fixture
def runner():
    return RecordingRunner()


@pytest.fixture
def scheduler(sessions, files, jobs_dir, runner):
    jobs_dir.mkdir(parents=True, exist_ok=True)
    return Scheduler(
        sessions, files, jobs_dir, runner=runner, worker_id="me:1:aa", heartbeat_interval_s=1, heartbeat_timeout_s=30
    )


def messages(sessions, job_id: str) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)))


def hold(sessions, job_id: str, **values) -> None:
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def write_events(jobs_dir: Path, job_id: str, *events: dict) -> None:
    job_dir = jobs_dir / job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    with (job_dir / "events.jsonl").open("a") as f:
        for event in events:
            f.write(json.dumps({"time": time.time(), **event}) + "\n")


def test_a_vanished_workers_job_is_queued_again_then_run_here(sessions, scheduler, runner):
    (job_id,) = add_jobs(
        sessions, 1, status=states.RUNNING, worker_id="gone:7:bb", heartbeat_at=1.0, attempts=1, runner_ref="old-run"
    )
    scheduler.tick()
    log = messages(sessions, job_id)
    assert "Worker gone:7:bb vanished; the job is queued again and resumes from its last checkpoint" in log
    assert runner.abandoned == [job_id]  # what the old worker left is stopped before anyone runs it again
    assert runner.started == [(job_id, 2)]  # then claimed (here, the same tick): attempt 2
    job = row(sessions, job_id)
    assert (job.status, job.worker_id) == (states.RUNNING, "me:1:aa")


def test_a_fresh_heartbeat_is_left_alone(sessions, scheduler, runner):
    (job_id,) = add_jobs(sessions, 1, status=states.RUNNING, worker_id="busy:7:bb", heartbeat_at=time.time())
    scheduler.tick()
    assert (row(sessions, job_id).worker_id, runner.abandoned, runner.started) == ("busy:7:bb", [], [])


def test_a_run_that_goes_on_is_adopted_not_restarted(sessions, files, jobs_dir):
    runner = RecordingRunner(detachable=True, live={"ray-run-1"})
    scheduler = Scheduler(sessions, files, jobs_dir, runner=runner, worker_id="me:1:aa", heartbeat_timeout_s=30)
    (job_id,) = add_jobs(sessions, 1, status=states.RUNNING, worker_id="gone:7:bb", heartbeat_at=1.0, runner_ref="ray-run-1")
    scheduler.tick()
    assert runner.started == [] and runner.abandoned == []
    assert row(sessions, job_id).worker_id == "me:1:aa" and job_id in scheduler.running
    assert any("watches its run ray-run-1 now (the run goes on)" in m for m in messages(sessions, job_id))


def test_a_job_taken_away_is_stopped_here(sessions, scheduler, runner):
    (job_id,) = add_jobs(sessions, 1)
    scheduler.tick()
    assert job_id in scheduler.running
    hold(sessions, job_id, worker_id="other:2:cc")  # another worker took it back: this one looked dead
    scheduler.tick()
    assert runner.stopped == [(job_id, False)] and job_id not in scheduler.running
    assert row(sessions, job_id).worker_id == "other:2:cc"


def test_a_run_waiting_for_resources_stays_queued_until_it_starts(sessions, files, jobs_dir):
    runner = RecordingRunner(starts_pending=True)
    scheduler = Scheduler(sessions, files, jobs_dir, runner=runner, worker_id="me:1:aa")
    (job_id,) = add_jobs(sessions, 1, spec={"model": "m"})
    runner.states[job_id] = RunState("pending")
    scheduler.tick()
    assert runner.started == [(job_id, 1)]
    job = row(sessions, job_id)
    assert (job.status, job.worker_id, job.runner_ref) == (states.QUEUED, "me:1:aa", f"{job_id}-attempt-1")
    scheduler.tick()  # a held queued job is not claimed again
    assert runner.started == [(job_id, 1)]

    runner.states[job_id] = RunState("running")
    scheduler.tick()
    assert row(sessions, job_id).status == states.RUNNING and row(sessions, job_id).started_at is not None
    assert f"The run started: run {job_id}-attempt-1" in messages(sessions, job_id)

    write_events(jobs_dir, job_id, {"type": "result", "trained_tokens": 42})
    runner.states[job_id] = RunState("exited", 0)
    scheduler.tick()
    job = row(sessions, job_id)
    assert (job.status, job.trained_tokens) == (states.SUCCEEDED, 42)


def test_a_run_stopped_outside_tuneserve_cancels_the_job(sessions, scheduler, runner):
    (job_id,) = add_jobs(sessions, 1)
    scheduler.tick()
    runner.states[job_id] = RunState("stopped", detail="Job was intentionally stopped.")
    scheduler.tick()
    assert row(sessions, job_id).status == states.CANCELLED
    assert messages(sessions, job_id)[-1] == (
        "The run was stopped outside tuneserve (Job was intentionally stopped.); the job is cancelled"
    )


def test_a_failed_run_says_why(sessions, scheduler, runner):
    (job_id,) = add_jobs(sessions, 1)
    scheduler.tick()
    runner.states[job_id] = RunState("exited", 1)
    scheduler.tick()
    job = row(sessions, job_id)
    assert job.status == states.FAILED
    assert job.error["message"] == "the training program exited with code 1: recorded failure"


def test_a_paused_job_is_let_go_so_any_worker_can_resume_it(sessions, scheduler, runner):
    (job_id,) = add_jobs(sessions, 1)
    scheduler.tick()
    hold(sessions, job_id, status=states.PAUSED)
    scheduler.tick()
    assert runner.stopped == [(job_id, True)]  # pause=True: the run is asked for its checkpoint first
    job = row(sessions, job_id)
    assert (job.status, job.worker_id) == (states.PAUSED, None)
    hold(sessions, job_id, status=states.QUEUED)  # what resume does
    scheduler.tick()
    assert runner.started[-1] == (job_id, 2)


def test_restart_takes_back_at_once_the_jobs_of_this_hosts_ended_process(sessions, scheduler, runner):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    old = f"{socket.gethostname()}:{ended.pid}:dd"
    (job_id,) = add_jobs(sessions, 1, status=states.RUNNING, worker_id=old, heartbeat_at=time.time(), attempts=1)
    (elsewhere,) = add_jobs(sessions, 1, status=states.RUNNING, worker_id="far-host:9:ee", heartbeat_at=time.time())
    scheduler.recover()
    assert row(sessions, job_id).status == states.QUEUED
    assert "Server restarted; the job is queued again and resumes from its last checkpoint" in messages(sessions, job_id)
    assert row(sessions, elsewhere).worker_id == "far-host:9:ee"  # another host's job waits for its heartbeat to go stale


def test_a_worker_that_cannot_heartbeat_stops_its_local_runs(sessions, scheduler, runner):
    (job_id,) = add_jobs(sessions, 1)
    scheduler.tick()
    scheduler._last_heartbeat_ok = time.monotonic() - 31  # the database was unreachable for longer than the timeout
    scheduler.tick()
    assert runner.stopped == [(job_id, False)] and scheduler.running == {}


def test_a_runs_events_are_ingested_and_a_bad_line_is_a_warning_not_a_crash(sessions, scheduler, runner, jobs_dir):
    (job_id,) = add_jobs(sessions, 1, spec={"model": "m"})
    scheduler.tick()
    write_events(
        jobs_dir,
        job_id,
        {"type": "metrics", "step": 2, "total_steps": 8, "train_loss": 1.25, "learning_rate": 0.01},
        {"type": "checkpoint", "step": 2},  # no path: not an event
        {"type": "estimate", "step": 2},  # a kind this server does not know
    )
    with (jobs_dir / job_id / "events.jsonl").open("a") as f:
        f.write("{not json\n")
    write_events(
        jobs_dir, job_id, {"type": "checkpoint", "step": 4, "path": "checkpoints/step-4", "metrics": {"train_loss": 1.0}}
    )
    scheduler.tick()
    with sessions() as session:
        rows = list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)))
    metrics = [e for e in rows if e.type == "metrics"]
    assert [(e.message, e.data) for e in metrics] == [
        ("Step 2/8: training loss=1.2500", {"step": 2, "total_steps": 8, "train_loss": 1.25, "learning_rate": 0.01})
    ]
    warnings = [e.message for e in rows if e.level == "warn"]
    assert len(warnings) == 3 and all(w.startswith("unreadable event line") for w in warnings)
    assert "checkpoint.path" in warnings[0] and "estimate" in warnings[1] and "not json" in warnings[2]
    assert rows[-1].message == "Checkpoint created at step 4"  # the lines after the bad ones still count
    job = row(sessions, job_id)
    assert job.events_offset == (jobs_dir / job_id / "events.jsonl").stat().st_size and job.status == states.RUNNING
    assert (job.last_step, job.total_steps) == (2, 8)
    scheduler.tick()  # each line is applied once
    assert len(messages(sessions, job_id)) == len(rows)


def test_a_finished_run_is_succeeded_with_its_result_and_results_file(sessions, scheduler, runner, jobs_dir, files):
    (job_id,) = add_jobs(sessions, 1, spec={"model": "m"}, project="proj")
    scheduler.tick()
    write_events(
        jobs_dir,
        job_id,
        {"type": "metrics", "step": 1, "total_steps": 1, "train_loss": 0.5},
        {"type": "result", "trained_tokens": 7, "train_loss": 0.5},
    )
    runner.states[job_id] = RunState("exited", 0)
    scheduler.tick()
    job = row(sessions, job_id)
    assert (job.status, job.trained_tokens, job.worker_id, job.heartbeat_at) == (states.SUCCEEDED, 7, "me:1:aa", None)
    assert job.fine_tuned_model and job.finished_at is not None
    log = messages(sessions, job_id)
    assert log[-2:] == [f"New fine-tuned model created: {job.fine_tuned_model}", "The job has successfully completed"]
    (results,) = job.result_files
    _, path = files.content_path("proj", results)
    assert path.read_text().splitlines()[1].startswith("1,0.5,")


def test_a_cancelled_jobs_run_is_stopped_and_its_late_result_changes_nothing(sessions, scheduler, runner, jobs_dir):
    (job_id,) = add_jobs(sessions, 1, spec={"model": "m"})
    scheduler.tick()
    hold(sessions, job_id, status=states.CANCELLED)  # what the API's cancel does
    write_events(jobs_dir, job_id, {"type": "result", "trained_tokens": 7})
    runner.states[job_id] = RunState("exited", 0)
    scheduler.tick()
    assert runner.stopped == [(job_id, False)] and job_id not in scheduler.running
    assert row(sessions, job_id).status == states.CANCELLED and row(sessions, job_id).fine_tuned_model is None
