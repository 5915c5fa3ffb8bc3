"""Leases on SQLite and the real PostgreSQL: claims never hand one job to two workers (threads racing
on separate connections), heartbeats keep a hold fresh, stale holds are found, and a worker of this
host whose process ended is recognised as gone."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

from sqlalchemy import select, update

from tuneserve.ids import new_id, now
from tuneserve.jobs import leases, states
from tuneserve.store.tables import Job


def add_jobs(sessions, n: int, status: str = states.QUEUED, **values) -> list[str]:
    ids = []
    with sessions.begin() as session:
        for _ in range(n):
            job_id = new_id("ftjob")
            fields = dict(
                project="p",
                model="m",
                training_file="file-x",
                hyperparameters={},
                method={},
                spec={},
                seed=1,
                result_files=[],
                created_at=now(),
                attempts=0,
                events_offset=0,
                last_step=0,
            )
            session.add(Job(id=job_id, status=status, **{**fields, **values}))
            ids.append(job_id)
    return ids


def row(sessions, job_id: str) -> Job:
    with sessions() as session:
        return session.scalar(select(Job).where(Job.id == job_id))


def test_claims_take_the_oldest_job_and_count_attempts(sessions):
    first, second = add_jobs(sessions, 2)
    with sessions.begin() as session:
        assert leases.claim_queued(session, "w1", start=True, message="claimed") == (first, 1)
    with sessions.begin() as session:
        assert leases.claim_queued(session, "w2", start=False, message="claimed") == (second, 1)
    with sessions.begin() as session:
        assert leases.claim_queued(session, "w3", start=True, message="claimed") is None
    a, b = row(sessions, first), row(sessions, second)
    assert (a.status, a.worker_id, a.started_at is not None) == (states.RUNNING, "w1", True)
    # start=False (a Ray job waiting for the cluster): held, but still queued until the run starts
    assert (b.status, b.worker_id, b.started_at) == (states.QUEUED, "w2", None)
    assert a.heartbeat_at is not None and abs(a.heartbeat_at - time.time()) < 5  # the database's clock, in epoch seconds


def test_racing_claims_never_hand_out_a_job_twice(sessions):
    """Six workers, each on its own connection, claim until the queue is empty: every job exactly once."""
    job_ids = add_jobs(sessions, 24)
    claims: list[tuple[str, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def worker(name: str) -> None:
        barrier.wait()
        while True:
            with sessions.begin() as session:
                claimed = leases.claim_queued(session, name, start=True, message="claimed")
            if claimed is None:
                return
            with lock:
                claims.append((claimed[0], name))

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(job for job, _ in claims) == sorted(job_ids)
    for job, name in claims:  # the row says who holds it, and it is the one that got it
        assert row(sessions, job).worker_id == name
        assert row(sessions, job).attempts == 1


def test_validation_is_held_by_one_worker(sessions):
    (job_id,) = add_jobs(sessions, 1, status=states.VALIDATING)
    with sessions.begin() as session:
        assert leases.claim_validation(session, job_id, "w1")
    with sessions.begin() as session:
        assert not leases.claim_validation(session, job_id, "w2")
    assert row(sessions, job_id).worker_id == "w1"


def test_heartbeat_keeps_holds_fresh_and_stale_finds_the_silent_ones(sessions):
    mine, theirs, done = add_jobs(sessions, 3)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == mine).values(status=states.RUNNING, worker_id="alive", heartbeat_at=0.0))
        session.execute(update(Job).where(Job.id == theirs).values(status=states.RUNNING, worker_id="silent", heartbeat_at=0.0))
        session.execute(update(Job).where(Job.id == done).values(status=states.SUCCEEDED, worker_id="silent", heartbeat_at=0.0))
    with sessions.begin() as session:
        assert leases.heartbeat(session, "alive") == {mine}
    assert row(sessions, mine).heartbeat_at > time.time() - 5
    with sessions() as session:
        # Finished jobs are never taken back; the observer's own jobs neither.
        assert [j.id for j in leases.stale(session, "observer", 30)] == [theirs]
        assert [j.id for j in leases.stale(session, "silent", 30)] == []


def test_running_job_with_no_holder_counts_as_stale(sessions):
    """A job left running by a version without leases has nobody to heart-beat it."""
    (job_id,) = add_jobs(sessions, 1, status=states.RUNNING)
    with sessions() as session:
        assert [j.id for j in leases.stale(session, "observer", 30)] == [job_id]


def test_lock_if_still_held_and_release(sessions):
    (job_id,) = add_jobs(sessions, 1, status=states.RUNNING, worker_id="w1", heartbeat_at=1.0, runner_pid=123, runner_ref="ref")
    with sessions.begin() as session:
        assert leases.lock_if_still_held(session, job_id, "w2") is None
        job = leases.lock_if_still_held(session, job_id, "w1")
        leases.release(job)
    job = row(sessions, job_id)
    assert (job.status, job.worker_id, job.heartbeat_at, job.runner_pid, job.runner_ref) == (
        states.RUNNING,  # released, not moved: a status change is transition's
        None,
        None,
        None,
        None,
    )
    with sessions.begin() as session:  # free again, and queued: the next claim gets it
        session.execute(update(Job).where(Job.id == job_id).values(status=states.QUEUED))
    with sessions.begin() as session:
        assert leases.claim_queued(session, "w3", start=True, message="claimed") == (job_id, 1)


def test_a_worker_of_this_host_whose_process_ended_is_gone():
    host = socket.gethostname()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "tuneserve", "worker"])
    other = subprocess.Popen(["sleep", "60"])  # a live pid that is not tuneserve: the pid was reused
    try:
        assert leases.is_gone_from_this_host(f"{host}:{ended.pid}:abc")
        assert not leases.is_gone_from_this_host(f"{host}:{alive.pid}:abc")
        assert leases.is_gone_from_this_host(f"{host}:{other.pid}:abc")
        # Another host's worker cannot be judged from here: only its heartbeat tells.
        assert not leases.is_gone_from_this_host(f"elsewhere-{host}:{ended.pid}:abc")
        assert not leases.is_gone_from_this_host(None)
    finally:
        for process in (alive, other):
            process.kill()
            process.wait()


def test_a_lease_lives_and_expires_by_the_database_clock_not_the_hosts(sessions, monkeypatch):
    """A worker whose host clock is an hour behind still holds its job: the heartbeat it writes is the
    database's now. The hold then expires once the database's clock has moved past the timeout."""
    (job_id,) = add_jobs(sessions, 1)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() - 3600)  # the claiming host's skewed clock
    with sessions.begin() as session:
        assert leases.claim_queued(session, "behind:1:aa", start=True, message="claimed") == (job_id, 1)
        assert leases.heartbeat(session, "behind:1:aa") == {job_id}
    monkeypatch.setattr(time, "time", real_time)
    with sessions() as session:
        db_now = leases.db_now(session)
        assert abs(row(sessions, job_id).heartbeat_at - db_now) < 5
        assert leases.stale(session, "observer", 30) == []
    time.sleep(1.2)
    with sessions() as session:
        assert [j.id for j in leases.stale(session, "observer", 1.0)] == [job_id]
        assert leases.stale(session, "observer", 30) == []
