"""The models a project can call: base models and its fine-tuned models and checkpoints.

Owns: turning a model name into (base model reference, adapter directory or None).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tuneserve.errors import Forbidden, NotFound
from tuneserve.ids import now
from tuneserve.jobs import states
from tuneserve.jobs.names import job_id_of, split_checkpoint_name
from tuneserve.models import ModelNotFound, available_base_models, check_model
from tuneserve.store.tables import Checkpoint, Job


class ModelCatalog:
    def __init__(self, sessions: sessionmaker[Session], jobs_dir: Path, runtime=None):
        self.sessions = sessions
        self.jobs_dir = jobs_dir
        self.runtime = runtime  # inference.upstream.RuntimeAdapters: adapters loaded with /v1/load_lora_adapter

    def base_models(self) -> list[str]:
        return available_base_models()

    def runtime_adapters(self, project: str) -> list[dict]:
        """Adapters the project loaded with /v1/load_lora_adapter: [{"name", "base", "path", "created"}]."""
        return self.runtime.list(project) if self.runtime is not None else []

    def fine_tuned(self, project: str) -> list[Job]:
        with self.sessions() as session:
            return list(session.scalars(
                select(Job).where(Job.project == project, Job.status == states.SUCCEEDED, Job.fine_tuned_model.is_not(None),
                                  Job.model_deleted_at.is_(None))
                .order_by(Job.seq)
            ))

    def lookup(self, project: str, name: str, param: str = "model") -> tuple[str, Path | None]:
        """(base reference, adapter dir) for a model name; NotFound (model_not_found) otherwise."""
        if self.runtime is not None and (loaded := self.runtime.get(project, name)) is not None:
            return loaded
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
        if job is None or job.model_deleted_at is not None or (checkpoint and row is None) \
                or (not checkpoint and job.fine_tuned_model != name):
            raise NotFound(f"The model {name!r} does not exist", param=param, code="model_not_found")
        adapter = Path(row.path) if row is not None else self.jobs_dir / job.id / "final"
        return job.spec["model"], adapter

    def delete(self, project: str, name: str) -> Path:
        """Remove a fine-tuned model (and its checkpoints) from serving; return its adapter dir.

        The job, its events and its files stay: deleting a model is not deleting its history."""
        if self.runtime is not None and (loaded := self.runtime.get(project, name)) is not None:
            self.runtime.remove(project, name)
            return loaded[1]
        if not name.startswith("ft:") or split_checkpoint_name(name):
            self.lookup(project, name)  # an unknown name is still a 404
            raise Forbidden(f"Only fine-tuned models can be deleted, not {name!r}", param="model")
        _, adapter = self.lookup(project, name)
        with self.sessions.begin() as session:
            job = session.scalar(select(Job).where(Job.id == job_id_of(name), Job.project == project))
            job.model_deleted_at = now()
        return adapter
