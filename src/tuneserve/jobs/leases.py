"""Leases: which worker holds which job (or evaluation), and taking them back from workers that vanished.

A worker (the scheduler inside `tuneserve serve`, a `tuneserve worker` process, the evaluation
worker of a server) holds a row by writing its id into worker_id, and keeps the hold alive by
touching heartbeat_at every few seconds. A hold whose heartbeat is older than the timeout belongs
to a worker that vanished: any other worker may take the row back. Times come from the database's
clock, never a host's, so hosts whose clocks disagree still agree on what is stale. Jobs and
evaluations are held the same way (both tables have worker_id and heartbeat_at).

Claims lock the row: on PostgreSQL `SELECT ... FOR UPDATE SKIP LOCKED` then `UPDATE` in one
transaction, so two workers never take the same row and never wait on each other; SQLite has no
row locks (one writer at a time), and the same conditional UPDATE is what makes its claim atomic.

Owns: claims, heartbeats, finding stale holds, releasing. Does not own what a worker does with
a job (scheduler.py) or how a run is started and stopped (runners/).
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from tuneserve.ids import now
from tuneserve.jobs import states
from tuneserve.jobs.lifecycle import add_event, transition
from tuneserve.store.tables import Evaluation, Job

# Statuses in which a job can be held by a worker: validating its files, waiting on a runner
# (a Ray job PENDING on the cluster), running, or writing its pause checkpoint.
HELD = (states.VALIDATING, states.QUEUED, states.RUNNING, states.PAUSED)
# What letting go of a job clears: nobody holds it, and no run is recorded for it.
RELEASED = {"worker_id": None, "heartbeat_at": None, "runner_pid": None, "runner_ref": None}


def new_worker_id() -> str:
    """host:pid:random. The host and pid let a restarted worker on the same host see at once that
    the old one is gone; the random part tells apart two lives of a reused pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def db_clock(session: Session) -> ColumnElement[float]:
    """The database's now, as epoch seconds (float): an expression, evaluated by the database."""
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", func.clock_timestamp())
    return (func.julianday("now") - 2440587.5) * 86400.0


def db_now(session: Session) -> float:
    """The database's now, read once (epoch seconds)."""
    return float(session.scalar(select(db_clock(session))))


def held_by(worker_id: str | None, table: type[Job] | type[Evaluation] = Job) -> ColumnElement[bool]:
    """The fence of a worker's writes: the row is (still) held by `worker_id` (None: by nobody)."""
    return table.worker_id.is_(None) if worker_id is None else table.worker_id == worker_id


def is_stale(session: Session, timeout_s: float, table: type[Job] | type[Evaluation] = Job) -> ColumnElement[bool]:
    """The row's heartbeat is missing, or older than `timeout_s` by the database's clock."""
    return table.heartbeat_at.is_(None) | (table.heartbeat_at < db_clock(session) - timeout_s)


def unheld_queued(session: Session, table: type[Job] | type[Evaluation] = Job) -> list[str]:
    """Ids of the oldest queued rows nobody holds, to try to claim in order. PostgreSQL: one, locked,
    skipping rows that others lock. SQLite: FOR UPDATE is not rendered; a few, the conditional UPDATE decides."""
    postgres = session.get_bind().dialect.name == "postgresql"
    candidates = (
        select(table.id)
        .where(table.status == states.QUEUED, table.worker_id.is_(None))
        .order_by(table.seq)
        .limit(1 if postgres else 5)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(candidates))


def hold(session: Session, worker_id: str) -> dict[str, Any]:
    """The columns a claim sets: who holds the row, and a first heartbeat."""
    return {"worker_id": worker_id, "heartbeat_at": db_clock(session)}


def claim_queued(session: Session, worker_id: str, *, start: bool, message: str) -> tuple[str, int] | None:
    """Hold the oldest queued job: (job id, attempt number), or None. `start=True` also moves it to
    running (a local process starts at once); False leaves it queued until the runner says the run
    started (a Ray job waits for the cluster's resources). `message` is the claim's job event.
    Commit is the caller's."""
    for job_id in unheld_queued(session, Job):
        values = dict(hold(session, worker_id), attempts=Job.attempts + 1, runner_pid=None, runner_ref=None)
        unheld = held_by(None)
        if start:
            claimed = transition(
                session, job_id, states.RUNNING, message, from_={states.QUEUED}, where=unheld, started_at=now(), **values
            )
        else:  # held, but no status change: no transition
            claimed = bool(
                session.execute(
                    update(Job).where(Job.id == job_id, Job.status == states.QUEUED, unheld).values(**values)
                ).rowcount
            )
            if claimed:
                add_event(session, job_id, message)
        if claimed:
            return job_id, session.scalar(select(Job.attempts).where(Job.id == job_id))
    return None


def claim_validation(session: Session, job_id: str, worker_id: str) -> bool:
    """Hold a job in validating_files, so that only one worker tokenizes its files."""
    return bool(
        session.execute(
            update(Job).where(Job.id == job_id, Job.status == states.VALIDATING, held_by(None)).values(**hold(session, worker_id))
        ).rowcount
    )


def heartbeat(
    session: Session, worker_id: str, table: type[Job] | type[Evaluation] = Job, statuses: tuple[str, ...] = HELD
) -> set[str]:
    """Touch every row this worker holds; return their ids (a row missing from the answer was taken away)."""
    mine = held_by(worker_id, table) & table.status.in_(statuses)
    session.execute(update(table).where(mine).values(heartbeat_at=db_clock(session)))
    return set(session.scalars(select(table.id).where(mine)))


def stale(session: Session, worker_id: str, timeout_s: float) -> list[Job]:
    """Jobs held by another worker whose heartbeat is older than `timeout_s`, or that no worker holds
    although they are running (left by a version without leases)."""
    return list(
        session.scalars(
            select(Job)
            .where(
                or_(
                    Job.status.in_(HELD)
                    & Job.worker_id.is_not(None)
                    & (Job.worker_id != worker_id)
                    & is_stale(session, timeout_s),
                    (Job.status == states.RUNNING) & Job.worker_id.is_(None),
                )
            )
            .order_by(Job.seq)
        )
    )


def lock_if_still_held(session: Session, job_id: str, holder: str | None) -> Job | None:
    """Lock the job's row if `holder` still holds it (None: nobody does); else None (someone acted first)."""
    return session.scalar(select(Job).where(Job.id == job_id, held_by(holder)).with_for_update(skip_locked=True))


def transfer(session: Session, job: Job, worker_id: str) -> None:
    """Take over a job whose run goes on without its worker (a Ray job): same run, new watcher."""
    job.worker_id = worker_id
    job.heartbeat_at = db_now(session)


def release(job: Job) -> None:
    """Let go of a job without moving it: anyone may claim it again (a status change is `transition`'s,
    with RELEASED among its fields)."""
    for column, value in RELEASED.items():
        setattr(job, column, value)
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
