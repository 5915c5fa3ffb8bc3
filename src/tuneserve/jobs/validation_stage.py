"""The `validating_files` stage: each new job's files are checked with its model's tokenizer, then
the job is queued, or failed with the reason.

Each check runs in a thread of its own: a large file takes a while to tokenize, and the scheduler
must keep watching running jobs meanwhile. One worker holds each validation (jobs/leases.py), so
the files are tokenized once; a worker that stops lets go of its validations, and another one
checks those files again.

Owns: the stage and its threads. Does not own the file checks themselves (data/), or what happens
to a queued job (scheduler.py).
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from tuneserve.ids import now
from tuneserve.jobs import leases, states
from tuneserve.jobs.lifecycle import Note, transition
from tuneserve.store.tables import Job

log = logging.getLogger("tuneserve.scheduler")


class ValidationStage:
    """The validations one worker holds."""

    def __init__(self, sessions: sessionmaker[Session], worker_id: str):
        self.sessions = sessions
        self.worker_id = worker_id
        self._in_flight: set[str] = set()  # job ids whose thread runs (added here, removed by the thread)

    def start_new(self) -> None:
        """Claim every job waiting in validating_files that no worker holds, and check it in a thread."""
        with self.sessions() as session:
            waiting = list(
                session.scalars(select(Job.id).where(Job.status == states.VALIDATING, Job.worker_id.is_(None)).order_by(Job.seq))
            )
        for job_id in waiting:
            if job_id in self._in_flight:
                continue
            with self.sessions.begin() as session:
                if not leases.claim_validation(session, job_id, self.worker_id):
                    continue
            self._in_flight.add(job_id)
            threading.Thread(target=self._validate, args=(job_id,), name=f"validate-{job_id}", daemon=True).start()

    def release_all(self) -> None:
        """At stop: let go of the files half-validated here, so that another worker checks them."""
        with self.sessions.begin() as session:
            session.execute(
                update(Job)
                .where(leases.held_by(self.worker_id), Job.status == states.VALIDATING)
                .values(worker_id=None, heartbeat_at=None)
            )

    def _validate(self, job_id: str) -> None:
        mine = leases.held_by(self.worker_id)
        try:
            with self.sessions() as session:
                spec = session.scalar(select(Job.spec).where(Job.id == job_id))
            try:
                message, data, error = validate_job_files(spec)
            except Exception as exc:  # an unreadable file fails the job; it never retries forever
                log.exception("validating %s failed", job_id)
                # The client reads this reason: an OSError's text names the server's path, so only its strerror goes out.
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                message, data, error = (
                    "",
                    None,
                    {"code": "invalid_training_file", "param": "training_file", "message": f"{type(exc).__name__}: {reason}"},
                )
            with self.sessions.begin() as session:
                if error is None:
                    transition(
                        session,
                        job_id,
                        states.QUEUED,
                        "Fine-tuning job queued",
                        from_={states.VALIDATING},
                        where=mine,
                        notes=[Note(message, data=data)],
                        worker_id=None,
                        heartbeat_at=None,
                    )
                else:
                    transition(
                        session,
                        job_id,
                        states.FAILED,
                        f"Validation failed: {error['message']}",
                        level="error",
                        from_={states.VALIDATING},
                        where=mine,
                        finished_at=now(),
                        error=error,
                        heartbeat_at=None,
                    )
        except Exception:
            log.exception("validating %s failed", job_id)
            try:  # let go, so that the validation is tried again
                with self.sessions.begin() as session:
                    session.execute(
                        update(Job)
                        .where(Job.id == job_id, Job.status == states.VALIDATING, mine)
                        .values(worker_id=None, heartbeat_at=None)
                    )
            except Exception:
                log.exception("releasing %s failed", job_id)
        finally:
            self._in_flight.discard(job_id)


def validate_job_files(spec: dict) -> tuple[str, dict | None, dict | None]:
    """Check a job's files with its model's tokenizer: (event message, report data, error or None)."""
    from tuneserve.data import validate_file

    hp = spec["hyperparameters"]
    try:
        report = validate_file(
            spec["training_file"], model=spec["model"], max_seq_length=spec["max_seq_length"], n_epochs=hp["n_epochs"]
        )
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
        message += (
            f"; {tokens['total_tokens']} tokens, about {tokens['estimated_training_tokens']} to train on over "
            f"{tokens['n_epochs']} epochs"
        )
        if tokens.get("estimated_time_s"):
            message += f" (about {tokens['estimated_time_s'] / 60:.1f} min at the measured pace)"
    return message, tokens, None
