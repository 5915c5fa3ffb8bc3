"""Event ingestion: the new lines of a run's JOB_DIR/events.jsonl become job events, checkpoints and
the job's estimates, each line exactly once.

The lines are parsed with training/events.py's models (the contract with the training process);
a line that is not an event arrives as a warning message quoting it, so one bad line is shown to
the user and never stops the scheduler.

Owns: reading a job's events into the database. Does not own writing them (training/events.py) or
the end of a job (finish.py).
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tuneserve.ids import new_id
from tuneserve.jobs.lifecycle import add_event
from tuneserve.jobs.service import checkpoint_name_for
from tuneserve.store.tables import Checkpoint as CheckpointRow, Job
from tuneserve.training.events import Checkpoint, Event, Message, Metrics, Result, read_events

# The checkpoint metrics the API shows (OpenAI's names, plus the full validation pass's).
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


def ingest(sessions: sessionmaker[Session], job_id: str, job_dir: Path, worker_id: str) -> None:
    """Apply the new lines of events.jsonl exactly once: the offset commits with the rows, and the row
    lock and the holder check keep two workers from applying the same lines."""
    with sessions.begin() as session:
        job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
        if job is None or job.worker_id != worker_id:
            return
        events, offset = read_events(job_dir / "events.jsonl", job.events_offset)
        for event in events:
            apply(session, job, job_dir, event)
        job.events_offset = offset


def apply(session: Session, job: Job, job_dir: Path, event: Event) -> None:
    """One event of the run, into the job's rows."""
    created = int(event.time)
    match event:
        case Message():
            add_event(session, job.id, event.message, level=event.level, created_at=created)
        case Metrics():
            # Every number the recipe reports (SFT: loss, accuracy, lr, tokens/s; DPO: rewards, margins).
            data = event.numbers()
            add_event(session, job.id, _metrics_message(data), type="metrics", data=data, created_at=created)
            _estimate(job, event)
        case Checkpoint():
            exists = session.scalar(
                select(CheckpointRow.id).where(CheckpointRow.job_id == job.id, CheckpointRow.step_number == event.step)
            )
            if exists is None:
                session.add(
                    CheckpointRow(
                        id=new_id("ftckpt"),
                        job_id=job.id,
                        created_at=created,
                        step_number=event.step,
                        metrics={k: v for k, v in event.metrics.items() if k in METRIC_KEYS},
                        path=str((job_dir / event.path).resolve()),
                        fine_tuned_model_checkpoint=checkpoint_name_for(job, event.step),
                    )
                )
                add_event(session, job.id, f"Checkpoint created at step {event.step}", created_at=created)
        case Result():
            pass  # read when the run has ended (finish.py): a result alone does not end the job


def _estimate(job: Job, event: Metrics) -> None:
    """estimated_finish from the pace of this attempt so far (rough on a resumed job)."""
    step, total = event.step, event.total_steps
    if not step or not total or not job.started_at:
        return
    job.step_time_s = max(0.0, time.time() - job.started_at) / step
    job.last_step, job.total_steps = step, total
    job.estimated_finish = int(time.time() + (total - step) * job.step_time_s)


def _metrics_message(data: dict) -> str:
    parts = [f"training loss={data['train_loss']:.4f}"] if "train_loss" in data else []
    if "valid_loss" in data:
        parts.append(f"validation loss={data['valid_loss']:.4f}")
    if "full_valid_loss" in data:
        parts.append(f"full validation loss={data['full_valid_loss']:.4f}")
    return f"Step {data.get('step')}/{data.get('total_steps')}: " + ", ".join(parts)
