"""The API's status changes (cancel, pause, resume) on SQLite and the real PostgreSQL: each goes
through `transition`, writes its event, and a move the state machine lacks is a 400 that changes
nothing. Jobs are inserted as rows here, so these tests do not depend on how `create` is called."""

from __future__ import annotations

import pytest

from tuneserve.errors import Conflict
from tuneserve.jobs import states
from tests.unit.jobs.test_leases import add_jobs, row
from tests.unit.jobs.test_lifecycle import events


def test_pause_resume_and_cancel_write_their_events(jobs, sessions):
    (job_id,) = add_jobs(sessions, 1, project="proj", status=states.RUNNING, estimated_finish=123)
    assert jobs.pause("proj", job_id).status == states.PAUSED
    assert row(sessions, job_id).estimated_finish is None
    assert jobs.pause("proj", job_id).status == states.PAUSED  # idempotent: no second event
    assert jobs.resume("proj", job_id).status == states.QUEUED
    cancelled = jobs.cancel("proj", job_id)
    assert cancelled.status == states.CANCELLED and cancelled.finished_at is not None
    assert jobs.cancel("proj", job_id).status == states.CANCELLED  # idempotent
    assert [m for _, m in events(sessions, job_id)] == [
        "Fine-tuning job paused (a running job checkpoints at its next step, then stops)",
        "Fine-tuning job resumed; it continues from its last checkpoint",
        "Fine-tuning job cancelled",
    ]


@pytest.mark.parametrize(
    "status, move, code",
    [
        (states.SUCCEEDED, "cancel", "job_not_cancellable"),
        (states.FAILED, "cancel", "job_not_cancellable"),
        (states.VALIDATING, "pause", "job_not_pausable"),
        (states.CANCELLED, "pause", "job_not_pausable"),
        (states.RUNNING, "resume", "job_not_resumable"),
        (states.SUCCEEDED, "resume", "job_not_resumable"),
    ],
)
def test_a_move_the_state_machine_lacks_is_refused_and_changes_nothing(jobs, sessions, status, move, code):
    (job_id,) = add_jobs(sessions, 1, project="proj", status=status)
    with pytest.raises(Conflict) as info:  # 409: a well-formed request the job's state refuses
        getattr(jobs, move)("proj", job_id)
    assert info.value.code == code and status in info.value.message
    assert row(sessions, job_id).status == status and events(sessions, job_id) == []
