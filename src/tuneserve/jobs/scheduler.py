"""The scheduler: claims queued jobs in order, runs them (N at a time) with a runner (local
processes or Ray jobs), and watches each run until it ends.

It runs in one thread of the server, or as a `tuneserve worker` process; several share one
PostgreSQL store, holding jobs under leases (leases.py). All state is in the database and the
job directory (shared storage when there are several hosts), so a restarted server or worker picks
up where the old one stopped (`recover`), and a vanished one's jobs are taken back (`reap`).

Owns: the loop, heart-beating this worker's holds, claiming, launching and watching runs. The
stages around it have modules of their own: validation_stage.py (validating_files), ingest.py
(a run's events into the database), finish.py (endings), takeover.py (jobs changing workers);
every status change is lifecycle.py's `transition`.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from tuneserve.ids import now
from tuneserve.jobs import leases, states
from tuneserve.jobs.finish import Finisher, failure_reason, last_result
from tuneserve.jobs.ingest import ingest
from tuneserve.jobs.lifecycle import add_event, transition
from tuneserve.jobs.runners import Runner, RunHandle
from tuneserve.jobs.runners.local import LocalRunner
from tuneserve.jobs.takeover import Takeover
from tuneserve.jobs.validation_stage import ValidationStage
from tuneserve.store.files import FileService
from tuneserve.store.tables import Job

log = logging.getLogger("tuneserve.scheduler")

# How long a paused training process may take to finish its step and write the pause checkpoint.
PAUSE_GRACE_S = 120.0


class Scheduler:
    """One worker: the scheduler thread inside `tuneserve serve`, or a `tuneserve worker` process.

    Several may share one database (PostgreSQL): each holds the jobs it validates or runs under its
    worker id (leases.py), heart-beats them from a thread of its own (so a long pause or a slow
    Ray call never makes it look dead), and takes back the jobs of workers that vanished.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        files: FileService,
        jobs_dir: Path,
        *,
        max_concurrent: int = 1,
        poll_interval_s: float = 0.5,
        runner: Runner | None = None,
        upstream=None,
        worker_id: str | None = None,
        heartbeat_interval_s: float = 5.0,
        heartbeat_timeout_s: float = 30.0,
        role: str = "Server",
    ):
        self.sessions = sessions
        self.jobs_dir = jobs_dir
        self.max_concurrent = max_concurrent
        self.poll_interval_s = poll_interval_s
        self.runner: Runner = runner or LocalRunner()  # LocalRunner or runners.ray.RayRunner
        self.worker_id = worker_id or leases.new_worker_id()
        self.role = role  # "Server" or "Worker": how events name this process
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.validation = ValidationStage(sessions, self.worker_id)
        self.finish = Finisher(sessions, files, jobs_dir, self.worker_id, upstream)
        self.takeover = Takeover(sessions, self.runner, jobs_dir, self.worker_id, role)
        self.running: dict[str, RunHandle] = {}  # job id -> the runner's handle
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._heart: threading.Thread | None = None
        self._last_heartbeat_ok = time.monotonic()
        self._next_reap = 0.0

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Recover, then run the loop in a thread (inside the server)."""
        self.recover()
        self._thread = threading.Thread(target=self.run, name="tuneserve-scheduler", daemon=True)
        self._thread.start()

    def run(self) -> None:
        """The loop, in the calling thread, until `request_stop` (a `tuneserve worker` runs it in its main thread)."""
        self._heart = threading.Thread(target=self._heartbeat_loop, name="tuneserve-heartbeat", daemon=True)
        self._heart.start()
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the scheduler must outlive any one bad job or database hiccup
                log.exception("scheduler tick failed")
            self._stop.wait(self.poll_interval_s)

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        """Stop the loop. Local runs are stopped and their jobs go back to the queue; runs that live on
        without this process (Ray jobs) go on, and the next worker to look takes over watching them."""
        self._stop.set()
        for thread in (self._thread, self._heart):  # no beat may land after the holds are let go
            if thread:
                thread.join(timeout=10)
        for job_id, handle in list(self.running.items()):
            try:
                if self.runner.detachable:
                    self.takeover.let_go(
                        job_id,
                        f"{self.role} {self.worker_id} stopped; its {self.runner.describe(handle)} goes on, "
                        "and the next server or worker watches it",
                    )
                else:
                    self.runner.stop(handle)
                    self.takeover.requeue(
                        job_id, f"{self.role} stopped; the job is queued again and resumes from its last checkpoint"
                    )
            except Exception:
                log.exception("stopping %s failed", job_id)
        self.running.clear()
        try:
            self.validation.release_all()
        except Exception:
            log.exception("releasing validations failed")

    def recover(self) -> None:
        """At start: take back at once the jobs of this host's ended processes (takeover.py)."""
        self.running.update(self.takeover.recover())

    # -- leases -------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_interval_s):
            try:
                with self.sessions.begin() as session:
                    leases.heartbeat(session, self.worker_id)
                self._last_heartbeat_ok = time.monotonic()
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    def _fence(self) -> None:
        """Unable to heart-beat for the timeout, this worker must look dead to the others, who re-queue its
        jobs: stop its local runs first, so that no job runs twice."""
        if self.runner.detachable or not self.running:
            return
        if time.monotonic() - self._last_heartbeat_ok <= self.heartbeat_timeout_s:
            return
        for job_id, handle in list(self.running.items()):
            log.error(
                "no heartbeat for %.0f s: stopping %s, which other workers will run again",
                time.monotonic() - self._last_heartbeat_ok,
                job_id,
            )
            self.runner.stop(handle)
            self.running.pop(job_id, None)

    # -- one pass -----------------------------------------------------------------------
    def tick(self) -> None:
        self._fence()
        if time.monotonic() >= self._next_reap:
            self._next_reap = time.monotonic() + self.heartbeat_interval_s
            self.running.update(self.takeover.reap(self.heartbeat_timeout_s))
        self.validation.start_new()
        for job_id, handle in list(self.running.items()):
            self._watch(job_id, handle)
        while len(self.running) < self.max_concurrent and (claimed := self._claim_next()):
            self._launch(*claimed)

    # -- running ------------------------------------------------------------------------
    def _claim_next(self) -> tuple[str, int] | None:
        """Hold the oldest queued job (row lock on PostgreSQL, conditional UPDATE on SQLite)."""
        what = "submitting it to the Ray cluster" if self.runner.starts_pending else "starting the training process"
        message = f"Job claimed by {self.role.lower()} {self.worker_id} ({self.runner.name} runner); {what}"
        with self.sessions.begin() as session:
            return leases.claim_queued(session, self.worker_id, start=not self.runner.starts_pending, message=message)

    def _launch(self, job_id: str, attempt: int) -> None:
        job_dir = self.jobs_dir / job_id
        try:
            handle = self.runner.start(job_id, job_dir, attempt)
        except Exception as exc:
            log.exception("starting %s failed", job_id)
            self.finish.failed(job_id, f"could not start the run: {type(exc).__name__}: {exc}")
            return
        self.running[job_id] = handle
        with self.sessions.begin() as session:
            job = session.scalar(select(Job).where(Job.id == job_id, leases.held_by(self.worker_id)))
            if job is None:  # taken back meanwhile (never in practice: the claim is seconds old); _watch stops it
                return
            job.runner_pid = handle.pid
            job.runner_ref = handle.ref
            if handle.dashboard_url:  # the Ray dashboard's page of this run, in the job's metadata for the API and the console
                job.user_metadata = {
                    **(job.user_metadata or {}),
                    "ray_job_id": handle.ref,
                    "ray_dashboard_url": handle.dashboard_url,
                }
                add_event(session, job_id, f"Submitted as {self.runner.describe(handle)}")

    def _watch(self, job_id: str, handle: RunHandle) -> None:
        state = self.runner.poll(handle)
        with self.sessions() as session:
            row = session.execute(select(Job.status, Job.worker_id).where(Job.id == job_id)).one_or_none()
        status, holder = row if row is not None else (None, None)
        if holder != self.worker_id:
            # Another worker took the job back (this one looked dead to it): a local run must stop, or the
            # job would run twice; a Ray run is the other worker's to watch now.
            log.warning("%s is held by %s now; letting go of it", job_id, holder)
            if not self.runner.detachable:
                self.runner.stop(handle)
            self.running.pop(job_id, None)
            return
        ingest(self.sessions, job_id, handle.job_dir, self.worker_id)
        if status not in (states.RUNNING, states.QUEUED):  # cancelled or paused by the API: stop the run
            # SIGTERM first: a paused run writes a checkpoint at its next step boundary, then exits.
            paused = status == states.PAUSED
            self.runner.stop(handle, grace_s=PAUSE_GRACE_S if paused else 5.0, pause=paused)
            ingest(self.sessions, job_id, handle.job_dir, self.worker_id)  # the pause checkpoint
            self.running.pop(job_id, None)
            # Let go: a resumed job must be free for any worker to claim, and a cancelled one is deletable once
            # no process of its own is left (runner_pid cleared).
            with self.sessions.begin() as session:
                session.execute(update(Job).where(Job.id == job_id, leases.held_by(self.worker_id)).values(**leases.RELEASED))
            return
        if status == states.QUEUED:  # held while the runner waits for resources (a Ray job PENDING)
            if state.phase == "pending":
                return
            self._mark_started(job_id, handle)
        if state.phase in ("pending", "running"):
            return
        ingest(self.sessions, job_id, handle.job_dir, self.worker_id)  # lines written just before exit
        self.running.pop(job_id, None)
        if state.phase == "stopped":
            self.finish.cancelled(
                job_id,
                "The run was stopped outside tuneserve"
                + (f" ({state.detail})" if state.detail else "")
                + "; the job is cancelled",
            )
            return
        result = last_result(handle.job_dir)
        if state.returncode == 0 and result is not None:
            self.finish.succeeded(job_id, result)
        else:
            self.finish.failed(job_id, failure_reason(handle.job_dir, state.returncode, self.runner.failure_detail(handle)))

    def _mark_started(self, job_id: str, handle: RunHandle) -> None:
        with self.sessions.begin() as session:
            transition(
                session,
                job_id,
                states.RUNNING,
                f"The run started: {self.runner.describe(handle)}",
                from_={states.QUEUED},
                where=leases.held_by(self.worker_id),
                started_at=now(),
            )
