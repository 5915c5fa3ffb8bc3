"""The scheduler: claims queued jobs in order, runs them (N at a time), and turns the events
of each training process into job events, checkpoints and status.

It runs in one thread of the server. All state is in the database and the job directory, so
a restarted server picks up where the old one stopped (see `recover`).
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import time
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from tuneserve.ids import new_id, now
from tuneserve.jobs import states
from tuneserve.jobs.runners.local import LocalRunner, RunHandle, is_training_process, stop_process_group
from tuneserve.jobs.service import add_event, checkpoint_name_for, model_name_for
from tuneserve.store.files import FileService
from tuneserve.store.tables import Checkpoint, Job, JobEvent
from tuneserve.training.events import read_events

log = logging.getLogger("tuneserve.scheduler")

METRIC_KEYS = ("step", "total_steps", "train_loss", "train_mean_token_accuracy", "valid_loss",
               "valid_mean_token_accuracy", "full_valid_loss", "full_valid_mean_token_accuracy")
RESULT_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


class Scheduler:
    def __init__(self, sessions: sessionmaker[Session], files: FileService, jobs_dir: Path, *,
                 max_concurrent: int = 1, poll_interval_s: float = 0.5, runner: LocalRunner | None = None,
                 upstream=None):
        self.sessions = sessions
        self.upstream = upstream  # inference.upstream.Upstream: each new fine-tuned adapter is registered there
        self.files = files
        self.jobs_dir = jobs_dir
        self.max_concurrent = max_concurrent
        self.poll_interval_s = poll_interval_s
        self.runner = runner or LocalRunner()
        self.running: dict[str, RunHandle] = {}
        self._validating: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="tuneserve-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and the running processes; their jobs go back to the queue."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        for job_id, handle in list(self.running.items()):
            self.runner.stop(handle)
            self._requeue(job_id, "Server stopped; the job is queued again and resumes from its last checkpoint")
        self.running.clear()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the scheduler must outlive any one bad job or database hiccup
                log.exception("scheduler tick failed")
            self._stop.wait(self.poll_interval_s)

    def recover(self) -> None:
        """After a restart: a job left `running` has no process watching it. Make sure its old
        process is gone (so it never runs twice), then queue it again; training resumes from
        the last complete checkpoint in its job directory."""
        with self.sessions() as session:
            orphans = list(session.scalars(select(Job).where(Job.status == states.RUNNING)))
        for job in orphans:
            job_dir = self.jobs_dir / job.id
            if job.runner_pid and is_training_process(job.runner_pid, job_dir):
                stop_process_group(job.runner_pid)
            self._requeue(job.id, "Server restarted; the job is queued again and resumes from its last checkpoint")

    def _requeue(self, job_id: str, message: str) -> None:
        with self.sessions.begin() as session:
            result = session.execute(
                update(Job).where(Job.id == job_id, Job.status == states.RUNNING)
                .values(status=states.QUEUED, runner_pid=None, estimated_finish=None)
            )
            if result.rowcount:
                add_event(session, job_id, message, level="warn")

    # -- one pass -----------------------------------------------------------------------
    def tick(self) -> None:
        self._start_validations()
        for job_id, handle in list(self.running.items()):
            self._watch(job_id, handle)
        while len(self.running) < self.max_concurrent and (job_id := self._claim_next()):
            self._launch(job_id)

    # -- validating_files ----------------------------------------------------------------
    def _start_validations(self) -> None:
        """Each new job's files are checked in a thread of its own: a large file takes a while
        to tokenize, and the scheduler must keep watching running jobs meanwhile."""
        with self.sessions() as session:
            waiting = list(session.scalars(select(Job.id).where(Job.status == states.VALIDATING).order_by(Job.seq)))
        for job_id in waiting:
            if job_id not in self._validating:
                self._validating.add(job_id)
                threading.Thread(target=self._validate, args=(job_id,), name=f"validate-{job_id}", daemon=True).start()

    def _validate(self, job_id: str) -> None:
        try:
            with self.sessions() as session:
                spec = session.scalar(select(Job.spec).where(Job.id == job_id))
            try:
                message, data, error = validate_job_files(spec)
            except Exception as exc:  # an unreadable file fails the job; it never retries forever
                log.exception("validating %s failed", job_id)
                message, data, error = "", None, {"code": "invalid_training_file", "param": "training_file",
                                                  "message": f"{type(exc).__name__}: {exc}"}
            with self.sessions.begin() as session:
                if error is None:
                    moved = session.execute(update(Job).where(Job.id == job_id, Job.status == states.VALIDATING)
                                            .values(status=states.QUEUED)).rowcount
                    if moved:
                        add_event(session, job_id, message, data=data)
                        add_event(session, job_id, "Fine-tuning job queued")
                else:
                    moved = session.execute(update(Job).where(Job.id == job_id, Job.status == states.VALIDATING).values(
                        status=states.FAILED, finished_at=now(), error=error)).rowcount
                    if moved:
                        add_event(session, job_id, f"Validation failed: {error['message']}", level="error")
        except Exception:
            log.exception("validating %s failed", job_id)
        finally:
            self._validating.discard(job_id)

    def _claim_next(self) -> str | None:
        """Take the oldest queued job. The conditional UPDATE makes the claim atomic."""
        with self.sessions.begin() as session:
            for job_id in session.scalars(select(Job.id).where(Job.status == states.QUEUED).order_by(Job.seq).limit(5)):
                claimed = session.execute(
                    update(Job).where(Job.id == job_id, Job.status == states.QUEUED)
                    .values(status=states.RUNNING, started_at=now(), attempts=Job.attempts + 1)
                ).rowcount
                if claimed:
                    add_event(session, job_id, "Job claimed by the local runner; starting the training process")
                    return job_id
        return None

    def _launch(self, job_id: str) -> None:
        job_dir = self.jobs_dir / job_id
        try:
            handle = self.runner.start(job_id, job_dir)
        except Exception as exc:
            self._finish_failed(job_id, f"could not start the training process: {exc}")
            return
        self.running[job_id] = handle
        with self.sessions.begin() as session:
            session.execute(update(Job).where(Job.id == job_id).values(runner_pid=handle.pid))

    def _watch(self, job_id: str, handle: RunHandle) -> None:
        returncode = self.runner.poll(handle)
        self._ingest(job_id, handle.job_dir)
        with self.sessions() as session:
            status = session.scalar(select(Job.status).where(Job.id == job_id))
        if status != states.RUNNING:  # cancelled (or paused) by the API: stop the process group
            self.runner.stop(handle)
            self.running.pop(job_id, None)
            return
        if returncode is None:
            return
        self._ingest(job_id, handle.job_dir)  # lines written just before exit
        self.running.pop(job_id, None)
        result = _last_result(handle.job_dir)
        if returncode == 0 and result is not None:
            self._finish_succeeded(job_id, result)
        else:
            self._finish_failed(job_id, _failure_reason(handle.job_dir, returncode))

    # -- events -------------------------------------------------------------------------
    def _ingest(self, job_id: str, job_dir: Path) -> None:
        """Apply new lines of events.jsonl exactly once (the offset commits with the rows)."""
        with self.sessions.begin() as session:
            job = session.scalar(select(Job).where(Job.id == job_id))
            events, offset = read_events(job_dir / "events.jsonl", job.events_offset)
            for event in events:
                self._apply(session, job, event)
            job.events_offset = offset

    def _apply(self, session: Session, job: Job, event: dict) -> None:
        created = int(event.get("time") or now())
        kind = event.get("type")
        if kind == "message":
            level = {"warning": "warn"}.get(event.get("level", "info"), event.get("level", "info"))
            add_event(session, job.id, str(event.get("message", "")), level=level if level in ("info", "warn", "error") else "info",
                      created_at=created)
        elif kind == "metrics":
            data = {k: event[k] for k in METRIC_KEYS if event.get(k) is not None}
            for extra in ("learning_rate", "tokens_per_second", "epoch"):
                if event.get(extra) is not None:
                    data[extra] = event[extra]
            add_event(session, job.id, _metrics_message(data), type="metrics", data=data, created_at=created)
            self._estimate(job, event)
        elif kind == "checkpoint":
            step = int(event["step"])
            exists = session.scalar(select(Checkpoint.id).where(Checkpoint.job_id == job.id, Checkpoint.step_number == step))
            if exists is None:
                name = checkpoint_name_for(job, step)
                session.add(Checkpoint(id=new_id("ftckpt"), job_id=job.id, created_at=created, step_number=step,
                                       metrics={k: v for k, v in (event.get("metrics") or {}).items() if k in METRIC_KEYS},
                                       path=str((self.jobs_dir / job.id / event["path"]).resolve()),
                                       fine_tuned_model_checkpoint=name))
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
            metrics = list(session.scalars(
                select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.type == "metrics").order_by(JobEvent.seq)
            ))
        results = self.files.create_bytes(job.project, f"{job_id}-results.csv", "fine-tune-results", _results_csv(metrics))
        name = model_name_for(job)
        # Register with the upstream before the job says succeeded, so the model answers as soon as it is listed.
        upstream_warning = self._register_upstream(name, (self.jobs_dir / job_id / "final").resolve())
        with self.sessions.begin() as session:
            done = session.execute(
                update(Job).where(Job.id == job_id, Job.status == states.RUNNING).values(
                    status=states.SUCCEEDED, fine_tuned_model=name, trained_tokens=int(result.get("trained_tokens") or 0),
                    result_files=[results.id], finished_at=now(), estimated_finish=None, runner_pid=None)
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
                update(Job).where(Job.id == job_id, Job.status == states.RUNNING).values(
                    status=states.FAILED, finished_at=now(), estimated_finish=None, runner_pid=None,
                    error={"code": "training_failed", "message": reason, "param": None})
            ).rowcount
            if done:
                add_event(session, job_id, f"Fine-tuning job failed: {reason}", level="error")


def validate_job_files(spec: dict) -> tuple[str, dict | None, dict | None]:
    """Check a job's files with its model's tokenizer: (event message, report data, error or None)."""
    from tuneserve.data import validate_file

    hp = spec["hyperparameters"]
    try:
        report = validate_file(spec["training_file"], model=spec["model"], max_seq_length=spec["max_seq_length"],
                               n_epochs=hp["n_epochs"])
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
        message += (f"; {tokens['total_tokens']} tokens, about {tokens['estimated_training_tokens']} to train on over "
                    f"{tokens['n_epochs']} epochs")
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
        writer.writerow([data.get("step"), data.get("train_loss"), data.get("train_mean_token_accuracy"),
                         data.get("valid_loss", data.get("full_valid_loss")),
                         data.get("valid_mean_token_accuracy", data.get("full_valid_mean_token_accuracy"))])
    return out.getvalue().encode()


def _last_result(job_dir: Path) -> dict | None:
    events, _ = read_events(job_dir / "events.jsonl")
    results = [e for e in events if e.get("type") == "result"]
    return results[-1] if results else None


def _failure_reason(job_dir: Path, returncode: int) -> str:
    """The training process's own error event if it wrote one, else the tail of its stderr."""
    events, _ = read_events(job_dir / "events.jsonl")
    errors = [e["message"] for e in events if e.get("type") == "message" and e.get("level") == "error"]
    if errors:
        return errors[-1][-2000:]
    stderr = job_dir / "stderr.log"
    tail = stderr.read_bytes()[-2000:].decode("utf-8", "replace").strip() if stderr.exists() else ""
    return f"the training process exited with code {returncode}" + (f": {tail}" if tail else "")
