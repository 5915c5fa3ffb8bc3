"""Jobs changing hands between workers: taking back the jobs of a worker that vanished (at start,
`recover`; while running, `reap`), and giving up this worker's jobs when it stops (`requeue`, `let_go`).

A job whose worker is gone is watched from here if its run goes on without it (a Ray job), else
what is left of the run is stopped and the job is queued again; it resumes from its last checkpoint.

Owns: those hand-overs. Does not own the holds themselves (leases.py) or the loop that calls
these (scheduler.py).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from tuneserve.jobs import leases, states
from tuneserve.jobs.lifecycle import add_event, transition
from tuneserve.jobs.runners import Runner, RunHandle
from tuneserve.store.tables import Job


class Takeover:
    """One worker's side of the hand-overs. The methods that take jobs back return the handles of
    the runs this worker watches from now on."""

    def __init__(self, sessions: sessionmaker[Session], runner: Runner, jobs_dir: Path, worker_id: str, role: str):
        self.sessions = sessions
        self.runner = runner
        self.jobs_dir = jobs_dir
        self.worker_id = worker_id
        self.role = role  # "Server" or "Worker": how events name this process

    def recover(self) -> dict[str, RunHandle]:
        """At start: jobs held by a worker of this host whose process has ended (this server before its
        restart) are taken back now; those of other hosts only once their heartbeat is stale."""
        with self.sessions() as session:
            held = list(
                session.scalars(
                    select(Job).where(Job.status.in_(leases.HELD), Job.worker_id.is_not(None) | (Job.status == states.RUNNING))
                )
            )
        adopted = {}
        for job in held:
            if job.worker_id is None or leases.is_gone_from_this_host(job.worker_id):
                if (handle := self.take_back(job, f"{self.role} restarted")) is not None:
                    adopted[job.id] = handle
        return adopted

    def reap(self, timeout_s: float) -> dict[str, RunHandle]:
        """Take back the jobs of workers whose heartbeat is older than `timeout_s`."""
        with self.sessions() as session:
            stale = leases.stale(session, self.worker_id, timeout_s)
        adopted = {}
        for job in stale:
            who = f"Worker {job.worker_id}" if job.worker_id else "An earlier server"
            if (handle := self.take_back(job, f"{who} vanished")) is not None:
                adopted[job.id] = handle
        return adopted

    def take_back(self, job: Job, why: str) -> RunHandle | None:
        """A job whose worker is gone: its run's handle if that goes on (Ray), else None after stopping what
        is left of the run and queueing the job again."""
        job_dir = self.jobs_dir / job.id
        handle = None
        if job.status in (states.RUNNING, states.QUEUED):
            handle = self.runner.adopt(job.id, job_dir, job.runner_ref)
        with self.sessions.begin() as session:
            row = leases.lock_if_still_held(session, job.id, job.worker_id)
            # Someone acted first, or the worker was alive after all (its heartbeat moved): leave it.
            if row is None or row.status != job.status or row.heartbeat_at != job.heartbeat_at:
                return None
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
            return handle
        # Held by us now, so nobody claims it while what is left of the old run is stopped.
        self.runner.abandon(job.id, job_dir, job.runner_pid, job.runner_ref, job.attempts)
        with self.sessions.begin() as session:
            row = leases.lock_if_still_held(session, job.id, self.worker_id)
            if row is None:
                return None
            if row.status == states.RUNNING:
                self._back_to_queue(session, job.id, f"{why}; the job is queued again and resumes from its last checkpoint")
            elif row.status == states.QUEUED:
                leases.release(row)
                add_event(session, job.id, f"{why} before its run started; the job waits in the queue again", level="warn")
            else:  # validating (another worker checks the files) or paused (resume queues it)
                leases.release(row)
        return None

    def requeue(self, job_id: str, message: str) -> None:
        """This worker stops a run it holds: the job goes back to the queue for any worker."""
        with self.sessions.begin() as session:
            row = leases.lock_if_still_held(session, job_id, self.worker_id)
            if row is None:
                return
            if row.status == states.RUNNING:
                self._back_to_queue(session, job_id, message)
            elif row.status == states.QUEUED:
                leases.release(row)
                add_event(session, job_id, message, level="warn")

    def let_go(self, job_id: str, message: str) -> None:
        """Leave the hold with a heartbeat in the distant past: any worker takes it over at its next look."""
        with self.sessions.begin() as session:
            if session.execute(
                update(Job).where(Job.id == job_id, leases.held_by(self.worker_id)).values(heartbeat_at=0.0)
            ).rowcount:
                add_event(session, job_id, message)

    def _back_to_queue(self, session: Session, job_id: str, message: str) -> None:
        transition(
            session,
            job_id,
            states.QUEUED,
            message,
            level="warn",
            from_={states.RUNNING},
            where=leases.held_by(self.worker_id),
            estimated_finish=None,
            **leases.RELEASED,
        )
