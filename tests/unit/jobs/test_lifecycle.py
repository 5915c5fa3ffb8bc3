"""Status changes, on SQLite and the real PostgreSQL: the table of allowed moves, and `transition`
moving a job with its event in one go, or refusing (and writing nothing) when the move is not
allowed or the caller's fence does not hold."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tuneserve.jobs import leases, states
from tuneserve.jobs.lifecycle import IllegalMove, Note, transition
from tuneserve.store.tables import JobEvent
from tests.unit.jobs.test_leases import add_jobs, row


def events(sessions, job_id: str) -> list[tuple[str, str]]:
    with sessions() as session:
        return [
            (e.level, e.message)
            for e in session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq))
        ]


def event_count(sessions) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(JobEvent))


@pytest.mark.parametrize(
    "current, to, allowed",
    [
        (states.VALIDATING, states.QUEUED, True),
        (states.VALIDATING, states.FAILED, True),
        (states.VALIDATING, states.RUNNING, False),  # the files are checked first
        (states.QUEUED, states.RUNNING, True),
        (states.QUEUED, states.PAUSED, True),
        (states.RUNNING, states.SUCCEEDED, True),
        (states.RUNNING, states.QUEUED, True),  # its worker vanished: queued again
        (states.PAUSED, states.QUEUED, True),  # resume
        (states.PAUSED, states.RUNNING, False),  # a resumed job is queued, then claimed
        (states.QUEUED, states.SUCCEEDED, False),  # only a run succeeds
        (states.SUCCEEDED, states.RUNNING, False),
        (states.FAILED, states.QUEUED, False),
        (states.CANCELLED, states.CANCELLED, False),
    ],
)
def test_the_table_of_moves(current, to, allowed):
    assert states.can_move(current, to) is allowed
    assert (current in states.sources(to)) is allowed


def test_the_named_sets_follow_the_table():
    assert states.TERMINAL == {states.SUCCEEDED, states.FAILED, states.CANCELLED}
    assert states.CANCELLABLE == {states.VALIDATING, states.QUEUED, states.RUNNING, states.PAUSED}
    assert states.PAUSABLE == {states.QUEUED, states.RUNNING}
    for status in states.TERMINAL:  # nothing leaves an ended job
        assert all(not states.can_move(status, to) for to in states.MOVES)
    assert set(states.MOVES) == {target for targets in states.MOVES.values() for target in targets} | {states.VALIDATING}


def test_a_move_sets_its_fields_and_writes_its_events_in_order(sessions):
    (job_id,) = add_jobs(sessions, 1, status=states.VALIDATING, worker_id="w1", heartbeat_at=1.0)
    with sessions.begin() as session:
        moved = transition(
            session,
            job_id,
            states.QUEUED,
            "Fine-tuning job queued",
            where=leases.held_by("w1"),
            notes=[Note("Files validated: 12 training examples", data={"total_tokens": 99})],
            worker_id=None,
            heartbeat_at=None,
        )
    assert moved
    job = row(sessions, job_id)
    assert (job.status, job.worker_id, job.heartbeat_at) == (states.QUEUED, None, None)
    assert events(sessions, job_id) == [("info", "Files validated: 12 training examples"), ("info", "Fine-tuning job queued")]
    with sessions() as session:
        assert session.scalar(select(JobEvent.data).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)) == {
            "total_tokens": 99
        }


def test_an_illegal_move_is_refused_and_writes_nothing(sessions):
    (job_id,) = add_jobs(sessions, 1, status=states.SUCCEEDED, fine_tuned_model="ft:m:p::x")
    before = event_count(sessions)
    with sessions.begin() as session:
        assert not transition(session, job_id, states.RUNNING, "The run started", worker_id="w1", fine_tuned_model=None)
    job = row(sessions, job_id)
    assert (job.status, job.worker_id, job.fine_tuned_model) == (states.SUCCEEDED, None, "ft:m:p::x")
    assert event_count(sessions) == before


def test_a_move_outside_the_fence_is_refused(sessions):
    """Another worker took the job back: this one's ending must not land."""
    (job_id,) = add_jobs(sessions, 1, status=states.RUNNING, worker_id="new-holder")
    with sessions.begin() as session:
        assert not transition(session, job_id, states.FAILED, "Fine-tuning job failed", where=leases.held_by("old-holder"))
    assert row(sessions, job_id).status == states.RUNNING and events(sessions, job_id) == []


def test_from_narrows_the_move_and_asking_for_a_move_the_table_lacks_raises(sessions):
    (job_id,) = add_jobs(sessions, 1, status=states.RUNNING)
    with sessions.begin() as session:  # a start is only from queued: a running job is not "started" again
        assert not transition(session, job_id, states.RUNNING, "The run started", from_={states.QUEUED})
    with pytest.raises(IllegalMove, match="succeeded"):
        with sessions.begin() as session:
            transition(session, job_id, states.RUNNING, "never", from_={states.QUEUED, states.SUCCEEDED})
    assert row(sessions, job_id).status == states.RUNNING and events(sessions, job_id) == []
