"""The end of a run: the job succeeds (its results file, its model registered with the upstream
inference server), fails with the reason, or is cancelled because someone stopped the run outside
tuneserve.

Every ending is a `transition` fenced by this worker's hold, so a job cancelled or taken back
meanwhile keeps what happened to it.

Owns: endings, the results file, upstream registration of a new model. Does not own noticing that
a run ended (scheduler.py) or its events (ingest.py).
"""

from __future__ import annotations

import csv
import io
import logging
import signal
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tuneserve.ids import now
from tuneserve.jobs import leases, states
from tuneserve.jobs.lifecycle import Note, transition
from tuneserve.jobs.service import model_name_for
from tuneserve.store.files import FileService
from tuneserve.store.tables import Job, JobEvent
from tuneserve.training.events import Message, Result, read_events

log = logging.getLogger("tuneserve.scheduler")

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


class Finisher:
    """Ends the jobs one worker holds."""

    def __init__(self, sessions: sessionmaker[Session], files: FileService, jobs_dir: Path, worker_id: str, upstream=None):
        self.sessions = sessions
        self.files = files
        self.jobs_dir = jobs_dir
        self.worker_id = worker_id
        self.upstream = upstream  # inference.upstream.Upstream: each new fine-tuned adapter is registered there

    def succeeded(self, job_id: str, result: Result) -> None:
        with self.sessions() as session:
            job = session.scalar(select(Job).where(Job.id == job_id))
            metrics = list(
                session.scalars(
                    select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.type == "metrics").order_by(JobEvent.seq)
                )
            )
        results = self.files.create_bytes(job.project, f"{job_id}-results.csv", "fine-tune-results", results_csv(metrics))
        name = model_name_for(job)
        # Register with the upstream before the job says succeeded, so the model answers as soon as it is listed.
        upstream_warning = self._register_upstream(name, (self.jobs_dir / job_id / "final").resolve())
        notes = []
        if upstream_warning:
            notes.append(Note(upstream_warning, level="warn"))
        elif self.upstream is not None:
            notes.append(Note(f"Registered {name} with the inference server at {self.upstream.base_url}"))
        notes.append(Note(f"New fine-tuned model created: {name}"))
        with self.sessions.begin() as session:
            done = transition(
                session,
                job_id,
                states.SUCCEEDED,
                "The job has successfully completed",
                from_={states.RUNNING},
                where=leases.held_by(self.worker_id),
                notes=notes,
                fine_tuned_model=name,
                trained_tokens=result.trained_tokens,
                kept_checkpoint=result.kept_checkpoint,
                result_files=[results.id],
                finished_at=now(),
                estimated_finish=None,
                runner_pid=None,
                heartbeat_at=None,
            )
        if not done and self.upstream is not None and not upstream_warning:
            self._unregister_upstream(name)  # cancelled meanwhile

    def failed(self, job_id: str, reason: str) -> None:
        with self.sessions.begin() as session:
            transition(
                session,
                job_id,
                states.FAILED,
                f"Fine-tuning job failed: {reason}",
                level="error",
                from_={states.RUNNING, states.QUEUED},
                where=leases.held_by(self.worker_id),
                finished_at=now(),
                estimated_finish=None,
                runner_pid=None,
                heartbeat_at=None,
                error={"code": "training_failed", "message": reason, "param": None},
            )

    def cancelled(self, job_id: str, message: str) -> None:
        """The runner says someone else stopped the run (`ray job stop`): OpenAI's word for that is cancelled."""
        with self.sessions.begin() as session:
            transition(
                session,
                job_id,
                states.CANCELLED,
                message,
                level="warn",
                from_={states.RUNNING, states.QUEUED},
                where=leases.held_by(self.worker_id),
                finished_at=now(),
                estimated_finish=None,
                heartbeat_at=None,
            )

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


def last_result(job_dir: Path) -> Result | None:
    """The run's result event, if it wrote one (it did if it finished)."""
    events, _ = read_events(job_dir / "events.jsonl")
    results = [e for e in events if isinstance(e, Result)]
    return results[-1] if results else None


def failure_reason(job_dir: Path, returncode: int | None, detail: str) -> str:
    """The training program's own error event if it wrote one, else the runner's account (the tail of
    the process's stderr; Ray's message and logs)."""
    events, _ = read_events(job_dir / "events.jsonl")
    errors = [e.message for e in events if isinstance(e, Message) and e.level == "error"]
    if errors:
        return errors[-1][-2000:]
    if returncode == 0:  # it ended without its result event: e.g. stopped by a second SIGTERM
        return "the run ended without a result" + (f": {detail}" if detail else "")
    if returncode is not None and returncode < 0:  # subprocess's way of saying a signal ended it
        return _killed_by(-returncode) + (f": {detail}" if detail else "")
    return f"the training program exited with code {returncode}" + (f": {detail}" if detail else "")


def _killed_by(signum: int) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    why = " (the kernel's out-of-memory killer, or a kill -9)" if signum == signal.SIGKILL else ""
    return f"the training process was killed by {name}{why}"


def results_csv(metrics: list[dict | None]) -> bytes:
    """The job's result file (OpenAI's step metrics CSV) from its metrics events' data."""
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
