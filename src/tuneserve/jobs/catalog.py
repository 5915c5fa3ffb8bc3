"""The models a project can call: base models and its fine-tuned models and checkpoints.

Owns: turning a model name into (base model reference, adapter directory or None). A model
made by full fine-tuning is a whole model directory: it is its own base, with no adapter. So is,
for serving, an adapter other than LoRA (IA3): PEFT batches requests for several adapters only
when they are all LoRA, so the engine merges such an adapter into a copy of its base instead.
"""

from __future__ import annotations

import json
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
            return list(
                session.scalars(
                    select(Job)
                    .where(
                        Job.project == project,
                        Job.status == states.SUCCEEDED,
                        Job.fine_tuned_model.is_not(None),
                        Job.model_deleted_at.is_(None),
                    )
                    .order_by(Job.seq)
                )
            )

    def lookup(self, project: str, name: str, param: str = "model") -> tuple[str, Path | None]:
        """(base reference, adapter dir) for a model name, as serving loads it; NotFound (model_not_found) otherwise."""
        if self.runtime is not None and (loaded := self.runtime.get(project, name)) is not None:
            return loaded
        if not name.startswith("ft:"):
            try:
                return check_model(name), None
            except ModelNotFound:
                raise NotFound(f"The model {name!r} does not exist", param=param, code="model_not_found") from None
        base, artifact = self.artifact(project, name, param)
        return (str(artifact), None) if served_whole(artifact) else (base, artifact)

    def artifact(self, project: str, name: str, param: str = "model") -> tuple[str, Path]:
        """(the base model it was trained from, its adapter or full-model directory) for a fine-tuned model or checkpoint."""
        checkpoint = split_checkpoint_name(name)
        model_name = checkpoint[0] if checkpoint else name
        job_id = job_id_of(model_name)
        with self.sessions() as session:
            job = session.scalar(select(Job).where(Job.id == job_id, Job.project == project))
            row = None
            if job is not None and checkpoint:
                row = session.scalar(
                    select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step_number == checkpoint[1])
                )
        if (
            job is None
            or job.model_deleted_at is not None
            or (checkpoint and row is None)
            or (not checkpoint and job.fine_tuned_model != name)
        ):
            raise NotFound(f"The model {name!r} does not exist", param=param, code="model_not_found")
        artifact = Path(row.path) if row is not None else self.jobs_dir / job.id / "final"
        return job.spec["model"], artifact

    def delete(self, project: str, name: str) -> Path:
        """Remove a fine-tuned model (and its checkpoints) from serving; return its adapter dir.

        The job, its events and its files stay: deleting a model is not deleting its history."""
        if self.runtime is not None and (loaded := self.runtime.get(project, name)) is not None:
            self.runtime.remove(project, name)
            return loaded[1]
        if not name.startswith("ft:") or split_checkpoint_name(name):
            self.lookup(project, name)  # an unknown name is still a 404
            raise Forbidden(f"Only fine-tuned models can be deleted, not {name!r}", param="model")
        _, adapter = self.artifact(project, name)
        with self.sessions.begin() as session:
            job = session.scalar(select(Job).where(Job.id == job_id_of(name), Job.project == project))
            job.model_deleted_at = now()
        return adapter


def is_full_model(directory: Path) -> bool:
    """A whole model (full fine-tuning) rather than an adapter."""
    return (directory / "config.json").is_file() and not (directory / "adapter_config.json").is_file()


def served_whole(directory: Path) -> bool:
    """Served as a model of its own: a full fine-tune, or an adapter that is not LoRA (merged on load)."""
    if is_full_model(directory):
        return True
    try:
        return json.loads((directory / "adapter_config.json").read_text()).get("peft_type", "LORA") != "LORA"
    except (OSError, ValueError):
        return False
