"""The models a project can call: base models and its fine-tuned models and checkpoints.

Owns: turning a model name into (base model reference, adapter directory or None).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tuneserve.errors import NotFound
from tuneserve.jobs import states
from tuneserve.jobs.names import job_id_of, split_checkpoint_name
from tuneserve.models import ModelNotFound, available_base_models, check_model
from tuneserve.store.tables import Checkpoint, Job


class ModelCatalog:
    def __init__(self, sessions: sessionmaker[Session], jobs_dir: Path):
        self.sessions = sessions
        self.jobs_dir = jobs_dir

    def base_models(self) -> list[str]:
        return available_base_models()

    def fine_tuned(self, project: str) -> list[Job]:
        with self.sessions() as session:
            return list(session.scalars(
                select(Job).where(Job.project == project, Job.status == states.SUCCEEDED, Job.fine_tuned_model.is_not(None))
                .order_by(Job.seq)
            ))

    def lookup(self, project: str, name: str, param: str = "model") -> tuple[str, Path | None]:
        """(base reference, adapter dir) for a model name; NotFound (model_not_found) otherwise."""
        if not name.startswith("ft:"):
            try:
                return check_model(name), None
            except ModelNotFound:
                raise NotFound(f"The model {name!r} does not exist", param=param, code="model_not_found") from None
        checkpoint = split_checkpoint_name(name)
        model_name = checkpoint[0] if checkpoint else name
        job_id = job_id_of(model_name)
        with self.sessions() as session:
            job = session.scalar(select(Job).where(Job.id == job_id, Job.project == project))
            row = None
            if job is not None and checkpoint:
                row = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step_number == checkpoint[1]))
        if job is None or (checkpoint and row is None) or (not checkpoint and job.fine_tuned_model != name):
            raise NotFound(f"The model {name!r} does not exist", param=param, code="model_not_found")
        adapter = Path(row.path) if row is not None else self.jobs_dir / job.id / "final"
        return job.spec["model"], adapter
