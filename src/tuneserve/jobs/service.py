"""The job service: what the API (and the CLI) do with jobs, without HTTP.

create resolves a request into a frozen TrainingSpec and queues the job; the scheduler takes
it from there. Every status change writes an event.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from tuneserve.errors import Conflict, InvalidRequest, NotFound
from tuneserve.ids import new_id, now
from tuneserve.jobs import states
from tuneserve.jobs.catalog import ModelCatalog
from tuneserve.jobs.lifecycle import add_event, transition
from tuneserve.jobs.names import checkpoint_model_name, fine_tuned_model_name
from tuneserve.jobs.requests import JobRequest
from tuneserve.models import check_model
from tuneserve.store.files import FileService
from tuneserve.store.pagination import page_after
from tuneserve.store.tables import Checkpoint, Job, JobEvent
from tuneserve.training.spec import OPTIMIZATION_KEYS, LoraSpec, Optimization, TrainingSpec, resolve_hyperparameters


class JobService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        files: FileService,
        catalog: ModelCatalog,
        jobs_dir: Path,
        preflight: Callable[[TrainingSpec], None] | None = None,
    ):
        self.sessions = sessions
        self.files = files
        self.catalog = catalog
        self.jobs_dir = jobs_dir
        self.preflight = preflight  # e.g. jobs.preflight.check_spec_for_vllm: refuse what the serving engine would

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    # -- create -------------------------------------------------------------------------
    def create(self, project: str, request: JobRequest, idempotency_key: str | None = None) -> Job:
        """Validate the request, resolve it into a TrainingSpec, save the job as queued."""
        if idempotency_key:
            with self.sessions() as session:
                existing = session.scalar(select(Job).where(Job.project == project, Job.idempotency_key == idempotency_key))
            if existing is not None:
                return existing

        base, init_adapter = self._resolve_model(project, request.model)
        method_type, hp_request = _method_and_hyperparameters(request)
        training_type = request.training_type or "lora"
        check_training_type(training_type, request.lora)
        training = self.files.find(project, request.training_file, "training_file")
        validation = self.files.find(project, request.validation_file, "validation_file") if request.validation_file else None
        for param, file in (("training_file", training), ("validation_file", validation)):
            if file is not None and file.purpose != "fine-tune":
                raise InvalidRequest(f"{file.id} has purpose {file.purpose!r}; upload it with purpose 'fine-tune'", param=param)
            if file is not None and method_type == "supervised" and file.kind == "preference":
                raise InvalidRequest(
                    f"{file.id} holds preference pairs (chosen/rejected): they train with method 'dpo'; "
                    "'supervised' trains on conversations, prompt/completion or text",
                    param=param,
                    code="unsupported_data_for_method",
                )
            if file is not None and method_type == "dpo" and file.kind not in (None, "preference"):
                raise InvalidRequest(
                    f"{file.id} holds {file.kind} examples, but method 'dpo' trains on preference pairs "
                    "(a prompt with a chosen and a rejected answer)",
                    param=param,
                    code="unsupported_data_for_method",
                )
        if (training.n_examples or 0) < MIN_EXAMPLES:
            raise InvalidRequest(
                f"Training file has {training.n_examples} example(s), but must have at least {MIN_EXAMPLES} "
                "examples (as OpenAI requires)",
                param="training_file",
                code="too_few_examples",
            )
        if request.auto_evaluate and validation is None:
            raise InvalidRequest(
                "auto_evaluate compares the result with its base on the validation file: give a validation_file",
                param="auto_evaluate",
            )
        wandb = _wandb_settings(request.integrations)

        job_id = new_id("ftjob")
        try:
            if request.learning_rate is not None:
                hp_request["learning_rate"] = request.learning_rate
            hyperparameters = resolve_hyperparameters(hp_request, training.n_examples or 0, training_type, method_type)
            seed = request.seed if request.seed is not None else int.from_bytes(job_id.encode()[-4:], "big") % (2**31)
            optional = request.model_dump(include=set(_SPEC_OPTIONS), exclude_none=True)
            if optional.get("train_on_inputs") == "auto":
                optional.pop("train_on_inputs")
            spec = TrainingSpec(
                model=base,
                training_file=str(self.files.blobs.path(training.id)),
                validation_file=str(self.files.blobs.path(validation.id)) if validation else None,
                method=method_type,
                training_type=training_type,
                hyperparameters=hyperparameters,
                lora=LoraSpec(**(request.lora or {})),
                optimization=Optimization(**request.model_dump(include=set(OPTIMIZATION_KEYS), exclude_none=True)),
                seed=seed,
                init_adapter=init_adapter,
                wandb=wandb,
                **optional,
            )
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error["loc"])
            param = f"{_SPEC_PARAMS.get(exc.title, '')}{field}"
            raise InvalidRequest(f"{param}: {error['msg']}", param=param, code="invalid_hyperparameters") from None
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"invalid job parameters: {exc}", code="invalid_hyperparameters") from None
        if self.preflight is not None:
            self.preflight(spec)  # InvalidRequest (400, adapter_rejected_by_upstream) before anything is saved
        hp_public = {
            "n_epochs": hyperparameters.n_epochs,
            "batch_size": hyperparameters.batch_size,
            "learning_rate_multiplier": hyperparameters.learning_rate_multiplier,
        }
        if method_type == "dpo":
            hp_public["beta"] = hyperparameters.beta
        job = Job(
            id=job_id,
            project=project,
            model=request.model,
            training_file=training.id,
            validation_file=validation.id if validation else None,
            status=states.VALIDATING,
            hyperparameters=hp_public,
            method={"type": method_type, method_type: {"hyperparameters": hp_public}},
            spec=spec.model_dump(mode="json"),
            suffix=request.suffix,
            seed=seed,
            user_metadata=request.metadata,
            result_files=[],
            created_at=now(),
            idempotency_key=idempotency_key,
            attempts=0,
            events_offset=0,
            last_step=0,
        )
        spec.write(self.job_dir(job_id))
        with self.sessions.begin() as session:
            session.add(job)
            # The scheduler checks the files with the model's tokenizer, then queues the job.
            add_event(
                session,
                job_id,
                f"Validating training file: {training.id}" + (f" and validation file: {validation.id}" if validation else ""),
            )
        return job

    def _resolve_model(self, project: str, model: str) -> tuple[str, str | None]:
        """A base model, or a fine-tuned model / checkpoint to continue from: (base, its adapter or model dir)."""
        if model.startswith("ft:"):
            base, artifact = self.catalog.artifact(project, model, param="model")
            return base, str(artifact)
        return check_model(model), None  # ModelNotFound is a 404 on param "model"

    # -- read ---------------------------------------------------------------------------
    def get(self, project: str, job_id: str) -> Job:
        with self.sessions() as session:
            job = session.scalar(select(Job).where(Job.id == job_id, Job.project == project))
        if job is None:
            raise NotFound(f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id", code="job_not_found")
        return job

    def list(
        self, project: str, *, after: str | None = None, limit: int = 20, metadata: dict[str, str] | None = None
    ) -> tuple[list[Job], bool]:
        query = select(Job).where(Job.project == project)
        with self.sessions() as session:
            if not metadata:
                return page_after(session, query, Job, after=after, limit=limit)
            # Metadata filters are rare and small; filter in Python to stay portable across databases.
            rows, _ = page_after(session, query, Job, after=after, limit=1_000_000)
        rows = [j for j in rows if all((j.user_metadata or {}).get(k) == v for k, v in metadata.items())]
        return rows[:limit], len(rows) > limit

    def events(self, project: str, job_id: str, *, after: str | None = None, limit: int = 20) -> tuple[list[JobEvent], bool]:
        self.get(project, job_id)
        with self.sessions() as session:
            return page_after(session, select(JobEvent).where(JobEvent.job_id == job_id), JobEvent, after=after, limit=limit)

    def checkpoints(
        self, project: str, job_id: str, *, after: str | None = None, limit: int = 10
    ) -> tuple[list[Checkpoint], bool]:
        self.get(project, job_id)
        with self.sessions() as session:
            return page_after(
                session, select(Checkpoint).where(Checkpoint.job_id == job_id), Checkpoint, after=after, limit=limit
            )

    # -- change -------------------------------------------------------------------------
    def cancel(self, project: str, job_id: str) -> Job:
        """Mark the job cancelled; the scheduler stops its process group within a poll interval."""
        self.get(project, job_id)
        with self.sessions.begin() as session:
            job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
            if job.status == states.CANCELLED:
                return job
            # From any status that may be cancelled (states.MOVES); refused once the job has ended.
            if not transition(
                session, job_id, states.CANCELLED, "Fine-tuning job cancelled", finished_at=now(), estimated_finish=None
            ):
                status = session.scalar(select(Job.status).where(Job.id == job_id))
                raise Conflict(  # 409: the request is fine, the job's state refuses it
                    f"Job {job_id} has already {status}; it cannot be cancelled",
                    param="fine_tuning_job_id",
                    code="job_not_cancellable",
                )
        return self.get(project, job_id)

    def pause(self, project: str, job_id: str) -> Job:
        """Pause a queued or running job. A running one writes a checkpoint at its next step and stops."""
        return self._move(
            project,
            job_id,
            states.PAUSABLE,
            states.PAUSED,
            "Fine-tuning job paused (a running job checkpoints at its next step, then stops)",
            "job_not_pausable",
        )

    def resume(self, project: str, job_id: str) -> Job:
        """Queue a paused job again; it continues from its last checkpoint."""
        return self._move(
            project,
            job_id,
            {states.PAUSED},
            states.QUEUED,
            "Fine-tuning job resumed; it continues from its last checkpoint",
            "job_not_resumable",
        )

    def delete(self, project: str, job_id: str) -> list[tuple[str, Path]]:
        """Delete an ended job: its row, events, checkpoints and directory (weights included). Returns the
        (model name, directory) of every model it served, final and checkpoints, for the caller to unload.

        Refused (409) while the job may still run, and while a job that has not ended starts from one of its
        models. Its result files stay in the files API, as any file does until it is deleted."""
        job = self.get(project, job_id)
        if job.status not in states.TERMINAL:
            raise Conflict(
                f"Job {job_id} is {job.status}; only an ended job can be deleted: cancel it first",
                param="fine_tuning_job_id",
                code="job_not_deletable",
            )
        if job.runner_pid is not None:  # cancelled a moment ago: the scheduler stops its process within a poll
            raise Conflict(
                f"Job {job_id} was cancelled and its run is still stopping; delete it again in a few seconds",
                param="fine_tuning_job_id",
                code="job_still_stopping",
            )
        directory = self.job_dir(job_id)
        with self.sessions.begin() as session:
            for other in session.scalars(select(Job).where(Job.project == project, Job.status.not_in(states.TERMINAL))):
                start = other.spec.get("init_adapter")
                if start and Path(start).is_relative_to(directory):
                    raise Conflict(
                        f"Job {other.id} ({other.status}) continues from a model of {job_id}; "
                        f"cancel it or let it end before deleting {job_id}",
                        param="fine_tuning_job_id",
                        code="job_in_use",
                    )
            served = [
                (c.fine_tuned_model_checkpoint, Path(c.path))
                for c in session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id))
            ]
            if job.fine_tuned_model and job.model_deleted_at is None:
                served.append((job.fine_tuned_model, directory / "final"))
            session.execute(delete(Job).where(Job.id == job_id))  # events and checkpoints go with it (ON DELETE CASCADE)
        shutil.rmtree(directory, ignore_errors=True)
        return served

    def _move(self, project: str, job_id: str, allowed: set[str] | frozenset[str], target: str, message: str, code: str) -> Job:
        self.get(project, job_id)
        with self.sessions.begin() as session:
            job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
            if job.status == target:
                return job
            if not transition(session, job_id, target, message, from_=allowed, estimated_finish=None):
                status = session.scalar(select(Job.status).where(Job.id == job_id))
                raise Conflict(
                    f"Job {job_id} is {status}; only a job that is {' or '.join(sorted(allowed))} can become {target}",
                    param="fine_tuning_job_id",
                    code=code,
                )
        return self.get(project, job_id)


# OpenAI refuses jobs with fewer examples; so do we (the upload report warns first).
MIN_EXAMPLES = 10

# Which request section a pydantic model's error belongs to, for the error's `param`.
_SPEC_PARAMS = {"Hyperparameters": "hyperparameters.", "LoraSpec": "lora.", "TrainingSpec": "", "Optimization": ""}

# Top-level request fields that go into the TrainingSpec as they are (Together's names).
_SPEC_OPTIONS = (
    "max_seq_length",
    "train_on_inputs",
    "n_checkpoints",
    "n_evals",
    "num_workers",
    "resources_per_worker",
    "auto_evaluate",
    "validation_split",
    "early_stopping_patience",
    "early_stopping_metric",
    "neftune_noise_alpha",
)


def check_training_type(training_type: str, lora: Any = None) -> None:
    """QLoRA (torchao's NF4, on CPU and CUDA) trains every LoRA shape but DoRA: refuse that up front."""
    if training_type not in ("lora", "qlora", "ia3", "full"):
        raise InvalidRequest(
            f"training_type {training_type!r} is not one of lora, qlora, ia3, full",
            param="training_type",
            code="unsupported_training_type",
        )
    if training_type == "qlora" and isinstance(lora, dict) and lora.get("use_dora"):
        raise InvalidRequest(
            "training_type 'qlora' does not train DoRA (use_dora) on its NF4 base; train DoRA with 'lora'",
            param="lora.use_dora",
            code="unsupported_training_type",
        )


def _wandb_settings(integrations: list[dict] | None) -> dict | None:
    """OpenAI's `integrations: [{type: wandb, wandb: {...}}]`, checked here so a job never fails late for it."""
    import importlib.util
    import os

    for i, integration in enumerate(integrations or []):
        kind = integration.get("type") if isinstance(integration, dict) else None
        if kind != "wandb":
            raise InvalidRequest(
                f"integrations[{i}].type {kind!r} is not supported; only 'wandb' is", param=f"integrations.{i}.type"
            )
        settings = integration.get("wandb") or {}
        if not isinstance(settings, dict) or not settings.get("project"):
            raise InvalidRequest("integrations: a wandb integration needs wandb.project", param=f"integrations.{i}.wandb.project")
        if importlib.util.find_spec("wandb") is None:
            raise InvalidRequest(
                "integrations: W&B logging needs the wandb package on the server: pip install 'tuneserve[wandb]'",
                param=f"integrations.{i}",
                code="integration_unavailable",
            )
        if not os.environ.get("WANDB_API_KEY"):
            raise InvalidRequest(
                "integrations: W&B logging needs WANDB_API_KEY in the server's environment (keys are never taken from requests)",
                param=f"integrations.{i}",
                code="integration_unavailable",
            )
        return {k: settings[k] for k in ("project", "name", "entity", "tags") if settings.get(k) is not None}
    return None


def model_name_for(job: Job) -> str:
    return fine_tuned_model_name(job.spec["model"], job.project, job.suffix, job.id)


def checkpoint_name_for(job: Job, step: int) -> str:
    return checkpoint_model_name(model_name_for(job), step)


def _method_and_hyperparameters(request: JobRequest) -> tuple[str, dict[str, Any]]:
    """Both OpenAI forms: top-level `hyperparameters` (deprecated) and `method.{type}.hyperparameters` (which win)."""
    hp = request.hyperparameters.model_dump(exclude_none=True) if request.hyperparameters else {}
    method_type = request.method.type if request.method else "supervised"
    if method_type not in ("supervised", "dpo"):
        raise InvalidRequest(
            f"method.type {method_type!r} is not supported; use 'supervised' or 'dpo'",
            param="method.type",
            code="unsupported_method",
        )
    if request.method:
        hp.update(request.method.hyperparameters())
    return method_type, hp
