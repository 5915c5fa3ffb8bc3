"""Leases: which worker holds which job, and taking jobs back from workers that vanished.

A worker (the scheduler inside `tuneserve serve`, or a `tuneserve worker` process) holds a job by
writing its id into jobs.worker_id, and keeps the hold alive by touching jobs.heartbeat_at every few
seconds. A hold whose heartbeat is older than the timeout belongs to a worker that vanished: any
other worker may take the job back. Times come from the database's clock, so hosts whose clocks
disagree still agree on what is stale.

Claims lock the row: on PostgreSQL `SELECT ... FOR UPDATE SKIP LOCKED` then `UPDATE` in one
transaction, so two workers never take the same job and never wait on each other; SQLite has no
row locks (one writer at a time), and the same conditional UPDATE is what makes its claim atomic.

Owns: claims, heartbeats, finding stale holds, releasing. Does not own what a worker does with
a job (scheduler) or how a run is started and stopped (runners/).
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from tuneserve.ids import now
from tuneserve.jobs import states
from tuneserve.store.tables import Job

# Statuses in which a job can be held by a worker: validating its files, waiting on a runner
# (a Ray job PENDING on the cluster), running, or writing its pause checkpoint.
HELD = (states.VALIDATING, states.QUEUED, states.RUNNING, states.PAUSED)


def new_worker_id() -> str:
    """host:pid:random. The host and pid let a restarted worker on the same host see at once that
    the old one is gone; the random part tells apart two lives of a reused pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def db_clock(session: Session) -> ColumnElement[float]:
    """The database's now, as epoch seconds (float)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", func.clock_timestamp())
    return (func.julianday("now") - 2440587.5) * 86400.0


def claim_queued(session: Session, worker_id: str, *, start: bool) -> tuple[str, int] | None:
    """Hold the oldest queued job: (job id, attempt number), or None. `start=True` also moves it to
    running (a local process starts at once); False leaves it queued until the runner says the run
    started (a Ray job waits for the cluster's resources). Commit is the caller's."""
    postgres = session.get_bind().dialect.name == "postgresql"
    # PostgreSQL: lock one row and skip rows that others hold. SQLite: FOR UPDATE is not rendered; try
    # a few candidates, the conditional UPDATE decides.
    candidates = (
        select(Job.id)
        .where(Job.status == states.QUEUED, Job.worker_id.is_(None))
        .order_by(Job.seq)
        .limit(1 if postgres else 5)
        .with_for_update(skip_locked=True)
    )
    for job_id in list(session.scalars(candidates)):
        values = dict(
            worker_id=worker_id, heartbeat_at=db_clock(session), attempts=Job.attempts + 1, runner_pid=None, runner_ref=None
        )
        if start:
            values.update(status=states.RUNNING, started_at=now())
        claimed = session.execute(
            update(Job).where(Job.id == job_id, Job.status == states.QUEUED, Job.worker_id.is_(None)).values(**values)
        ).rowcount
        if claimed:
            return job_id, session.scalar(select(Job.attempts).where(Job.id == job_id))
    return None


def claim_validation(session: Session, job_id: str, worker_id: str) -> bool:
    """Hold a job in validating_files, so that only one worker tokenizes its files."""
    return bool(
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == states.VALIDATING, Job.worker_id.is_(None))
            .values(worker_id=worker_id, heartbeat_at=db_clock(session))
        ).rowcount
    )


def heartbeat(session: Session, worker_id: str) -> set[str]:
    """Touch every job this worker holds; return their ids (a job missing from the answer was taken away)."""
    session.execute(update(Job).where(Job.worker_id == worker_id, Job.status.in_(HELD)).values(heartbeat_at=db_clock(session)))
    return set(session.scalars(select(Job.id).where(Job.worker_id == worker_id, Job.status.in_(HELD))))


def stale(session: Session, worker_id: str, timeout_s: float) -> list[Job]:
    """Jobs held by another worker whose heartbeat is older than `timeout_s`, or that no worker holds
    although they are running (left by a version without leases)."""
    cutoff = db_clock(session) - timeout_s
    return list(
        session.scalars(
            select(Job)
            .where(
                or_(
                    Job.status.in_(HELD)
                    & Job.worker_id.is_not(None)
                    & (Job.worker_id != worker_id)
                    & (Job.heartbeat_at.is_(None) | (Job.heartbeat_at < cutoff)),
                    (Job.status == states.RUNNING) & Job.worker_id.is_(None),
                )
            )
            .order_by(Job.seq)
        )
    )


def lock_if_still_held(session: Session, job_id: str, holder: str | None) -> Job | None:
    """Lock the job's row if `holder` still holds it (None: nobody does); else None (someone acted first)."""
    held_by = Job.worker_id.is_(None) if holder is None else Job.worker_id == holder
    return session.scalar(select(Job).where(Job.id == job_id, held_by).with_for_update(skip_locked=True))


def transfer(session: Session, job: Job, worker_id: str) -> None:
    """Take over a job whose run goes on without its worker (a Ray job): same run, new watcher."""
    job.worker_id = worker_id
    job.heartbeat_at = session.scalar(select(db_clock(session)))


def release(job: Job, *, status: str | None = None) -> None:
    """Let go of a job (and optionally move it, e.g. back to queued): anyone may claim it again."""
    if status is not None:
        job.status = status
    job.worker_id = None
    job.heartbeat_at = None
    job.runner_pid = None
    job.runner_ref = None
    if job.status != states.RUNNING:
        job.estimated_finish = None


def is_gone_from_this_host(worker_id: str | None) -> bool:
    """True if `worker_id` names a worker of this host whose process has ended (so its jobs can be
    taken back now, without waiting for the heartbeat timeout)."""
    if not worker_id:
        return False
    host, _, rest = worker_id.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    # A live process with that pid that is not tuneserve is a reused pid: the worker is gone.
    return b"tuneserve" not in cmdline
