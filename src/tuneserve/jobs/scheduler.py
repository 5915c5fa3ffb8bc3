"""The scheduler: claims queued jobs in order, runs them (N at a time) with a runner (local
processes or Ray jobs), and turns the events of each run into job events, checkpoints and status.

It runs in one thread of the server, or as a `tuneserve worker` process; several share one
PostgreSQL store, holding jobs under leases (jobs/leases.py). All state is in the database and the
job directory (shared storage when there are several hosts), so a restarted server or worker picks
up where the old one stopped (`recover`), and a vanished one's jobs are taken back (`_reap`).
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from tuneserve.ids import new_id, now
from tuneserve.jobs import leases, states
from tuneserve.jobs.runners.local import LocalRunner
from tuneserve.jobs.service import add_event, checkpoint_name_for, model_name_for
from tuneserve.store.files import FileService
from tuneserve.store.tables import Checkpoint, Job, JobEvent
from tuneserve.training.events import read_events

log = logging.getLogger("tuneserve.scheduler")

METRIC_KEYS = (
    "step",
    "total_steps",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)
# How long a paused training process may take to finish its step and write the pause checkpoint.
PAUSE_GRACE_S = 120.0
# OpenAI's result-file columns first, then tuneserve's.
RESULT_COLUMNS = (
    "step",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "learning_rate",
    "tokens_per_second",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)


class Scheduler:
    """One worker: the scheduler thread inside `tuneserve serve`, or a `tuneserve worker` process.

    Several may share one database (PostgreSQL): each holds the jobs it validates or runs under its
    worker id (jobs/leases.py), heart-beats them from a thread of its own (so a long pause or a slow
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
        runner=None,
        upstream=None,
        worker_id: str | None = None,
        heartbeat_interval_s: float = 5.0,
        heartbeat_timeout_s: float = 30.0,
        role: str = "Server",
    ):
        self.sessions = sessions
        self.upstream = upstream  # inference.upstream.Upstream: each new fine-tuned adapter is registered there
        self.files = files
        self.jobs_dir = jobs_dir
        self.max_concurrent = max_concurrent
        self.poll_interval_s = poll_interval_s
        self.runner = runner or LocalRunner()  # LocalRunner or runners.ray.RayRunner
        self.worker_id = worker_id or leases.new_worker_id()
        self.role = role  # "Server" or "Worker": how events name this process
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.running: dict[str, Any] = {}  # job id -> the runner's handle
        self._validating: set[str] = set()
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
                    self._let_go(
                        job_id,
                        f"{self.role} {self.worker_id} stopped; its {self.runner.describe(handle)} goes on, "
                        "and the next server or worker watches it",
                    )
                else:
                    self.runner.stop(handle)
                    self._requeue(job_id, f"{self.role} stopped; the job is queued again and resumes from its last checkpoint")
            except Exception:
                log.exception("stopping %s failed", job_id)
        self.running.clear()
        try:
            with self.sessions.begin() as session:  # files half-validated: another worker checks them
                session.execute(
                    update(Job)
                    .where(Job.worker_id == self.worker_id, Job.status == states.VALIDATING)
                    .values(worker_id=None, heartbeat_at=None)
                )
        except Exception:
            log.exception("releasing validations failed")

    def recover(self) -> None:
        """At start: jobs held by a worker of this host whose process has ended (this server before its
        restart) are taken back now; those of other hosts only once their heartbeat is stale."""
        with self.sessions() as session:
            held = list(
                session.scalars(
                    select(Job).where(Job.status.in_(leases.HELD), Job.worker_id.is_not(None) | (Job.status == states.RUNNING))
                )
            )
        for job in held:
            if job.worker_id is None or leases.is_gone_from_this_host(job.worker_id):
                self._take_back(job, f"{self.role} restarted")

    def _requeue(self, job_id: str, message: str) -> None:
        with self.sessions.begin() as session:
            job = leases.lock_if_still_held(session, job_id, self.worker_id)
            if job is not None and job.status in (states.RUNNING, states.QUEUED):
                leases.release(job, status=states.QUEUED)
                add_event(session, job_id, message, level="warn")

    def _let_go(self, job_id: str, message: str) -> None:
        """Leave the hold with a heartbeat in the distant past: any worker takes it over at its next look."""
        with self.sessions.begin() as session:
            if session.execute(
                update(Job).where(Job.id == job_id, Job.worker_id == self.worker_id).values(heartbeat_at=0.0)
            ).rowcount:
                add_event(session, job_id, message)

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

    def _reap(self) -> None:
        """Take back the jobs of workers whose heartbeat is stale."""
        with self.sessions() as session:
            stale = leases.stale(session, self.worker_id, self.heartbeat_timeout_s)
        for job in stale:
            who = f"Worker {job.worker_id}" if job.worker_id else "An earlier server"
            self._take_back(job, f"{who} vanished")

    def _take_back(self, job: Job, why: str) -> None:
        """A job whose worker is gone: watch its run if that goes on (Ray), else stop what is left of it
        and queue the job again (it resumes from its last checkpoint)."""
        job_dir = self.jobs_dir / job.id
        handle = None
        if job.status in (states.RUNNING, states.QUEUED):
            handle = self.runner.adopt(job.id, job_dir, job.runner_ref)
        with self.sessions.begin() as session:
            row = leases.lock_if_still_held(session, job.id, job.worker_id)
            # Someone acted first, or the worker was alive after all (its heartbeat moved): leave it.
            if row is None or row.status != job.status or row.heartbeat_at != job.heartbeat_at:
                return
            leases.transfer(session, row, self.worker_id)
            if handle is not None:
                add_event(
                    session,
                    job.id,
                    f"{why}; {self.role.lower()} {self.worker_id} watches its "
                    f"{self.runner.describe(handle)} now (the run goes on)",
                    level="warn",
                )
        if handle is not None:
            self.running[job.id] = handle
            return
        # Held by us now, so nobody claims it while what is left of the old run is stopped.
        self.runner.abandon(job.id, job_dir, job.runner_pid, job.runner_ref, job.attempts)
        with self.sessions.begin() as session:
            row = leases.lock_if_still_held(session, job.id, self.worker_id)
            if row is None:
                return
            if row.status == states.RUNNING:
                leases.release(row, status=states.QUEUED)
                add_event(session, job.id, f"{why}; the job is queued again and resumes from its last checkpoint", level="warn")
            elif row.status == states.QUEUED:
                leases.release(row)
                add_event(session, job.id, f"{why} before its run started; the job waits in the queue again", level="warn")
            else:  # validating (another worker checks the files) or paused (resume queues it)
                leases.release(row)

    # -- one pass -----------------------------------------------------------------------
    def tick(self) -> None:
        self._fence()
        if time.monotonic() >= self._next_reap:
            self._next_reap = time.monotonic() + self.heartbeat_interval_s
            self._reap()
        self._start_validations()
        for job_id, handle in list(self.running.items()):
            self._watch(job_id, handle)
        while len(self.running) < self.max_concurrent and (claimed := self._claim_next()):
            self._launch(*claimed)

    # -- validating_files ----------------------------------------------------------------
    def _start_validations(self) -> None:
        """Each new job's files are checked in a thread of its own: a large file takes a while
        to tokenize, and the scheduler must keep watching running jobs meanwhile. One worker
        holds each validation, so the files are tokenized once."""
        with self.sessions() as session:
            waiting = list(
                session.scalars(select(Job.id).where(Job.status == states.VALIDATING, Job.worker_id.is_(None)).order_by(Job.seq))
            )
        for job_id in waiting:
            if job_id in self._validating:
                continue
            with self.sessions.begin() as session:
                if not leases.claim_validation(session, job_id, self.worker_id):
                    continue
            self._validating.add(job_id)
            threading.Thread(target=self._validate, args=(job_id,), name=f"validate-{job_id}", daemon=True).start()

    def _validate(self, job_id: str) -> None:
        held = (Job.id == job_id) & (Job.status == states.VALIDATING) & (Job.worker_id == self.worker_id)
        try:
            with self.sessions() as session:
                spec = session.scalar(select(Job.spec).where(Job.id == job_id))
            try:
                message, data, error = validate_job_files(spec)
            except Exception as exc:  # an unreadable file fails the job; it never retries forever
                log.exception("validating %s failed", job_id)
                message, data, error = (
                    "",
                    None,
                    {"code": "invalid_training_file", "param": "training_file", "message": f"{type(exc).__name__}: {exc}"},
                )
            with self.sessions.begin() as session:
                if error is None:
                    moved = session.execute(
                        update(Job).where(held).values(status=states.QUEUED, worker_id=None, heartbeat_at=None)
                    ).rowcount
                    if moved:
                        add_event(session, job_id, message, data=data)
                        add_event(session, job_id, "Fine-tuning job queued")
                else:
                    moved = session.execute(
                        update(Job).where(held).values(status=states.FAILED, finished_at=now(), error=error, heartbeat_at=None)
                    ).rowcount
                    if moved:
                        add_event(session, job_id, f"Validation failed: {error['message']}", level="error")
        except Exception:
            log.exception("validating %s failed", job_id)
            try:  # let go, so that the validation is tried again
                with self.sessions.begin() as session:
                    session.execute(update(Job).where(held).values(worker_id=None, heartbeat_at=None))
            except Exception:
                log.exception("releasing %s failed", job_id)
        finally:
            self._validating.discard(job_id)

    # -- running ------------------------------------------------------------------------
    def _claim_next(self) -> tuple[str, int] | None:
        """Hold the oldest queued job (row lock on PostgreSQL, conditional UPDATE on SQLite)."""
        with self.sessions.begin() as session:
            claimed = leases.claim_queued(session, self.worker_id, start=not self.runner.starts_pending)
            if claimed:
                what = "submitting it to the Ray cluster" if self.runner.starts_pending else "starting the training process"
                add_event(
                    session,
                    claimed[0],
                    f"Job claimed by {self.role.lower()} {self.worker_id} ({self.runner.name} runner); {what}",
                )
        return claimed

    def _launch(self, job_id: str, attempt: int) -> None:
        job_dir = self.jobs_dir / job_id
        try:
            handle = self.runner.start(job_id, job_dir, attempt)
        except Exception as exc:
            log.exception("starting %s failed", job_id)
            self._finish_failed(job_id, f"could not start the run: {type(exc).__name__}: {exc}")
            return
        self.running[job_id] = handle
        with self.sessions.begin() as session:
            job = session.scalar(select(Job).where(Job.id == job_id, Job.worker_id == self.worker_id))
            if job is None:  # taken back meanwhile (never in practice: the claim is seconds old); _watch stops it
                return
            job.runner_pid = getattr(handle, "pid", None)
            job.runner_ref = handle.ref
            url = getattr(handle, "dashboard_url", None)
            if url:  # the Ray dashboard's page of this run, in the job's metadata for the API and the console
                job.user_metadata = {**(job.user_metadata or {}), "ray_job_id": handle.ref, "ray_dashboard_url": url}
                add_event(session, job_id, f"Submitted as {self.runner.describe(handle)}")

    def _watch(self, job_id: str, handle) -> None:
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
        self._ingest(job_id, handle.job_dir)
        if status not in (states.RUNNING, states.QUEUED):  # cancelled or paused by the API: stop the run
            # SIGTERM first: a paused run writes a checkpoint at its next step boundary, then exits.
            paused = status == states.PAUSED
            self.runner.stop(handle, grace_s=PAUSE_GRACE_S if paused else 5.0, pause=paused)
            self._ingest(job_id, handle.job_dir)  # the pause checkpoint
            self.running.pop(job_id, None)
            if paused:  # a resumed job must be free for any worker to claim
                with self.sessions.begin() as session:
                    session.execute(
                        update(Job)
                        .where(Job.id == job_id, Job.worker_id == self.worker_id)
                        .values(worker_id=None, heartbeat_at=None, runner_pid=None, runner_ref=None)
                    )
            return
        if status == states.QUEUED:  # held while the runner waits for resources (a Ray job PENDING)
            if state.phase == "pending":
                return
            self._mark_started(job_id, handle)
        if state.phase in ("pending", "running"):
            return
        self._ingest(job_id, handle.job_dir)  # lines written just before exit
        self.running.pop(job_id, None)
        if state.phase == "stopped":
            self._finish_cancelled(
                job_id,
                "The run was stopped outside tuneserve"
                + (f" ({state.detail})" if state.detail else "")
                + "; the job is cancelled",
            )
            return
        result = _last_result(handle.job_dir)
        if state.returncode == 0 and result is not None:
            self._finish_succeeded(job_id, result)
        else:
            self._finish_failed(job_id, _failure_reason(handle.job_dir, state.returncode, self.runner.failure_detail(handle)))

    def _mark_started(self, job_id: str, handle) -> None:
        with self.sessions.begin() as session:
            moved = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == states.QUEUED, Job.worker_id == self.worker_id)
                .values(status=states.RUNNING, started_at=now())
            ).rowcount
            if moved:
                add_event(session, job_id, f"The run started: {self.runner.describe(handle)}")

    # -- events -------------------------------------------------------------------------
    def _ingest(self, job_id: str, job_dir: Path) -> None:
        """Apply new lines of events.jsonl exactly once (the offset commits with the rows; the row lock and
        the holder check keep two workers from applying the same lines)."""
        with self.sessions.begin() as session:
            job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
            if job is None or job.worker_id != self.worker_id:
                return
            events, offset = read_events(job_dir / "events.jsonl", job.events_offset)
            for event in events:
                self._apply(session, job, event)
            job.events_offset = offset

    def _apply(self, session: Session, job: Job, event: dict) -> None:
        created = int(event.get("time") or now())
        kind = event.get("type")
        if kind == "message":
            level = {"warning": "warn"}.get(event.get("level", "info"), event.get("level", "info"))
            add_event(
                session,
                job.id,
                str(event.get("message", "")),
                level=level if level in ("info", "warn", "error") else "info",
                created_at=created,
            )
        elif kind == "metrics":
            # Every number the recipe reports (SFT: loss, accuracy, lr, tokens/s; DPO: rewards, margins).
            data = {k: v for k, v in event.items() if k not in ("type", "time") and isinstance(v, (int, float))}
            add_event(session, job.id, _metrics_message(data), type="metrics", data=data, created_at=created)
            self._estimate(job, event)
        elif kind == "checkpoint":
            step = int(event["step"])
            exists = session.scalar(select(Checkpoint.id).where(Checkpoint.job_id == job.id, Checkpoint.step_number == step))
            if exists is None:
                name = checkpoint_name_for(job, step)
                session.add(
                    Checkpoint(
                        id=new_id("ftckpt"),
                        job_id=job.id,
                        created_at=created,
                        step_number=step,
                        metrics={k: v for k, v in (event.get("metrics") or {}).items() if k in METRIC_KEYS},
                        path=str((self.jobs_dir / job.id / event["path"]).resolve()),
                        fine_tuned_model_checkpoint=name,
                    )
                )
                add_event(session, job.id, f"Checkpoint created at step {step}", created_at=created)

    def _estimate(self, job: Job, event: dict) -> None:
        """estimated_finish from the pace of this attempt so far (rough on a resumed job)."""
        step, total = event.get("step"), event.get("total_steps")
        if not step or not total or not job.started_at:
            return
        job.step_time_s = max(0.0, time.time() - job.started_at) / step
        job.last_step, job.total_steps = step, total
        job.estimated_finish = int(time.time() + (total - step) * job.step_time_s)

    # -- endings ------------------------------------------------------------------------
    def _finish_succeeded(self, job_id: str, result: dict) -> None:
        with self.sessions() as session:
            job = session.scalar(select(Job).where(Job.id == job_id))
            metrics = list(
                session.scalars(
                    select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.type == "metrics").order_by(JobEvent.seq)
                )
            )
        results = self.files.create_bytes(job.project, f"{job_id}-results.csv", "fine-tune-results", _results_csv(metrics))
        name = model_name_for(job)
        # Register with the upstream before the job says succeeded, so the model answers as soon as it is listed.
        upstream_warning = self._register_upstream(name, (self.jobs_dir / job_id / "final").resolve())
        with self.sessions.begin() as session:
            done = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == states.RUNNING, Job.worker_id == self.worker_id)
                .values(
                    status=states.SUCCEEDED,
                    fine_tuned_model=name,
                    trained_tokens=int(result.get("trained_tokens") or 0),
                    result_files=[results.id],
                    finished_at=now(),
                    estimated_finish=None,
                    runner_pid=None,
                    heartbeat_at=None,
                )
            ).rowcount
            if done:
                if upstream_warning:
                    add_event(session, job_id, upstream_warning, level="warn")
                elif self.upstream is not None:
                    add_event(session, job_id, f"Registered {name} with the inference server at {self.upstream.base_url}")
                add_event(session, job_id, f"New fine-tuned model created: {name}")
                add_event(session, job_id, "The job has successfully completed")
        if not done and self.upstream is not None and not upstream_warning:
            self._unregister_upstream(name)  # cancelled meanwhile

    def _register_upstream(self, name: str, adapter: Path) -> str | None:
        """Load the adapter into the upstream vLLM; a warning message if that fails (the job still succeeds,
        and the first request for the model registers it again)."""
        if self.upstream is None:
            return None
        try:
            self.upstream.register_adapter(name, adapter)
            return None
        except Exception as exc:  # the training succeeded: a serving problem must not fail the job
            log.warning("registering %s with %s failed: %s", name, self.upstream.base_url, exc)
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            return f"Could not register {name} with the inference server at {self.upstream.base_url}: {message}"

    def _unregister_upstream(self, name: str) -> None:
        try:
            self.upstream.unregister_adapter(name)
        except Exception as exc:
            log.warning("unregistering %s from %s failed: %s", name, self.upstream.base_url, exc)

    def _finish_failed(self, job_id: str, reason: str) -> None:
        with self.sessions.begin() as session:
            done = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status.in_((states.RUNNING, states.QUEUED)), Job.worker_id == self.worker_id)
                .values(
                    status=states.FAILED,
                    finished_at=now(),
                    estimated_finish=None,
                    runner_pid=None,
                    heartbeat_at=None,
                    error={"code": "training_failed", "message": reason, "param": None},
                )
            ).rowcount
            if done:
                add_event(session, job_id, f"Fine-tuning job failed: {reason}", level="error")

    def _finish_cancelled(self, job_id: str, message: str) -> None:
        """The runner says someone else stopped the run (`ray job stop`): OpenAI's word for that is cancelled."""
        with self.sessions.begin() as session:
            done = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status.in_((states.RUNNING, states.QUEUED)), Job.worker_id == self.worker_id)
                .values(status=states.CANCELLED, finished_at=now(), estimated_finish=None, heartbeat_at=None)
            ).rowcount
            if done:
                add_event(session, job_id, message, level="warn")


def validate_job_files(spec: dict) -> tuple[str, dict | None, dict | None]:
    """Check a job's files with its model's tokenizer: (event message, report data, error or None)."""
    from tuneserve.data import validate_file

    hp = spec["hyperparameters"]
    try:
        report = validate_file(
            spec["training_file"], model=spec["model"], max_seq_length=spec["max_seq_length"], n_epochs=hp["n_epochs"]
        )
    except Exception as exc:  # no tokenizer report (e.g. the model cannot load here): the structural check still counts
        log.warning("token report unavailable: %s", exc)
        report = validate_file(spec["training_file"])
    if not report.ok:
        return "", None, {"code": "invalid_training_file", "message": report.summary(), "param": "training_file"}
    if spec.get("validation_file"):
        valid = validate_file(spec["validation_file"])
        if not valid.ok:
            return "", None, {"code": "invalid_validation_file", "message": valid.summary(), "param": "validation_file"}
    tokens = getattr(report, "tokens", None)
    message = f"Files validated: {report.n_examples} training examples ({report.format})"
    if tokens:
        message += (
            f"; {tokens['total_tokens']} tokens, about {tokens['estimated_training_tokens']} to train on over "
            f"{tokens['n_epochs']} epochs"
        )
        if tokens.get("estimated_time_s"):
            message += f" (about {tokens['estimated_time_s'] / 60:.1f} min at the measured pace)"
    return message, tokens, None


def _metrics_message(data: dict) -> str:
    parts = [f"training loss={data['train_loss']:.4f}"] if "train_loss" in data else []
    if "valid_loss" in data:
        parts.append(f"validation loss={data['valid_loss']:.4f}")
    if "full_valid_loss" in data:
        parts.append(f"full validation loss={data['full_valid_loss']:.4f}")
    return f"Step {data.get('step')}/{data.get('total_steps')}: " + ", ".join(parts)


def _results_csv(metrics: list[dict | None]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(RESULT_COLUMNS)
    for data in metrics:
        if not data:
            continue
        writer.writerow(
            [
                data.get("step"),
                data.get("train_loss"),
                data.get("train_mean_token_accuracy"),
                data.get("valid_loss", data.get("full_valid_loss")),
                data.get("valid_mean_token_accuracy", data.get("full_valid_mean_token_accuracy")),
                data.get("learning_rate"),
                data.get("tokens_per_second"),
                data.get("full_valid_loss"),
                data.get("full_valid_mean_token_accuracy"),
            ]
        )
    return out.getvalue().encode()


def _last_result(job_dir: Path) -> dict | None:
    events, _ = read_events(job_dir / "events.jsonl")
    results = [e for e in events if e.get("type") == "result"]
    return results[-1] if results else None


def _failure_reason(job_dir: Path, returncode: int | None, detail: str) -> str:
    """The training program's own error event if it wrote one, else the runner's account (the tail of
    the process's stderr; Ray's message and logs)."""
    events, _ = read_events(job_dir / "events.jsonl")
    errors = [e["message"] for e in events if e.get("type") == "message" and e.get("level") == "error"]
    if errors:
        return errors[-1][-2000:]
    if returncode == 0:  # it ended without its result event: e.g. stopped by a second SIGTERM
        return "the run ended without a result" + (f": {detail}" if detail else "")
    return f"the training program exited with code {returncode}" + (f": {detail}" if detail else "")
