"""Changing a job's status: `transition`, the one function that does it, and the job events it writes.

A move is one conditional UPDATE: the job moves only if its status is one the move is allowed from
(jobs/states.py's MOVES, narrowed by `from_`) and the caller's fence holds (`where`, e.g. "this
worker still holds the job"). The event saying so is added in the same transaction, so a status
and its event are committed together or not at all. A move that does not apply (the job finished
meanwhile, another worker took it back) changes nothing, writes nothing, and returns False.

Owns: status moves and job events. Does not own the table of allowed moves (states.py) or who
holds a job (leases.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from tuneserve.ids import new_id, now
from tuneserve.jobs import states
from tuneserve.store.tables import Job, JobEvent


class IllegalMove(ValueError):
    """A caller asked for a move the state machine does not have (a bug, not a race)."""


@dataclass(frozen=True)
class Note:
    """An event that goes with a status change, written just before the one naming the change
    (e.g. the validation report before "Fine-tuning job queued")."""

    message: str
    level: str = "info"
    data: dict[str, Any] | None = None


def transition(
    session: Session,
    job_id: str,
    to: str,
    message: str,
    *,
    level: str = "info",
    from_: Iterable[str] | None = None,
    where: ColumnElement[bool] | None = None,
    notes: Sequence[Note] = (),
    **fields: Any,
) -> bool:
    """Move job `job_id` to status `to`, set `fields` with it, and write the event `message`.

    Args:
        from_: the statuses this move is meant for (default: every one MOVES allows); naming one
            that MOVES does not allow raises IllegalMove.
        where: the fence, e.g. `Job.worker_id == me`: no move unless it holds at the moment of the move.
        notes: events written before `message`, only if the job moves.
        fields: other columns to set with the status (finished_at, error, the lease's columns...).

    Returns:
        True if the job moved; False if it was in no status the move applies to, or the fence did
        not hold (nothing is written then). Commit is the caller's.
    """
    allowed = states.sources(to)
    if from_ is not None:
        wanted = frozenset(from_)
        if not wanted <= allowed:
            raise IllegalMove(f"a job cannot move from {', '.join(sorted(wanted - allowed))} to {to}")
        allowed = wanted
    condition = (Job.id == job_id) & Job.status.in_(allowed)
    if where is not None:
        condition = condition & where
    # A plain UPDATE (rows already loaded in this session are not refreshed): its row count is the answer.
    statement = update(Job).where(condition).values(status=to, **fields)
    moved = session.execute(statement, execution_options={"synchronize_session": False}).rowcount
    if not moved:
        return False
    for note in notes:
        add_event(session, job_id, note.message, level=note.level, data=note.data)
    add_event(session, job_id, message, level=level)
    return True


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict | None = None,
    created_at: int | None = None,
) -> None:
    """Add one job event (what `GET /v1/fine_tuning/jobs/{id}/events` lists). Commit is the caller's."""
    session.add(
        JobEvent(
            id=new_id("ftevent"),
            job_id=job_id,
            created_at=created_at or now(),
            level=level,
            message=message,
            type=type,
            data=data,
        )
    )
