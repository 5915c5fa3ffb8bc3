"""Evaluations as jobs (a tuneserve extension): what the API does with them, and what the
evaluation worker records, without HTTP.

Owns: the `evaluations` table and the reports under DATA_DIR/evaluations/{id}/. Does not own:
running an evaluation (worker.py, runner.py). Statuses: queued -> running -> succeeded | failed |
cancelled. A running evaluation is held by its server's evaluation worker under a lease, as jobs
are (jobs/leases.py: worker_id, heartbeat_at on the database's clock). One running when its server
stopped is queued again when that server starts (or, with servers sharing a database, once its
heartbeat is STALE_AFTER_S old); a worker's writes are fenced by its hold, so one that lost its
hold cannot overwrite what the new holder does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tuneserve.data.records import DataError
from tuneserve.errors import Conflict, InvalidRequest, NotFound, TuneserveError
from tuneserve.evaluation.dataset import load_eval_items
from tuneserve.ids import new_id, now
from tuneserve.jobs import leases, states
from tuneserve.jobs.catalog import ModelCatalog
from tuneserve.store.files import FileService
from tuneserve.store.pagination import page_after
from tuneserve.store.tables import Evaluation, Job

MAX_MODELS = 8
DEFAULTS = {"max_tokens": 256, "temperature": 0.0, "concurrency": 4, "max_items": None}
# A fine-tuning job's automatic evaluation uses at most this many validation examples (CPU-friendly).
AUTO_EVALUATE_MAX_ITEMS = 200
# A running evaluation whose worker has not heart-beaten it for this long (by the database's clock) is
# taken back by another server. The worker beats every few seconds (worker.py HEARTBEAT_EVERY_S).
STALE_AFTER_S = 600.0


class EvaluationService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        files: FileService,
        catalog: ModelCatalog,
        reports_dir: Path,
        *,
        check_base_models: bool = True,
    ):
        self.sessions = sessions
        self.files = files
        self.catalog = catalog
        self.reports_dir = reports_dir
        # With an upstream vLLM, base-model names are vLLM's to judge; fine-tuned names are always checked here.
        self.check_base_models = check_base_models

    # -- create -------------------------------------------------------------------------
    def create(self, project: str, request: dict[str, Any], *, fine_tuning_job_id: str | None = None) -> Evaluation:
        """Check the models and the dataset now (a bad line is a 400 naming it), then queue."""
        models = list(request.get("models") or [])
        if not 1 <= len(models) <= MAX_MODELS or len(set(models)) != len(models):
            raise InvalidRequest(f"models must name 1 to {MAX_MODELS} different models", param="models", code="invalid_value")
        for i, model in enumerate(models):
            if model.startswith("ft:") or self.check_base_models:
                self.catalog.lookup(project, model, param=f"models[{i}]")
        params = {k: request.get(k) if request.get(k) is not None else v for k, v in DEFAULTS.items()}
        file = self.files.get(project, request.get("dataset_file") or "", param="dataset_file")
        path = self.files.blobs.path(file.id)
        if not path.exists():
            raise InvalidRequest(
                f"the content of {file.id} is no longer stored", param="dataset_file", code="file_content_missing"
            )
        try:
            n_items = len(load_eval_items(path, max_items=params["max_items"]))
        except DataError as exc:
            raise InvalidRequest(
                f"dataset_file {file.id} is not an evaluation dataset: {exc}", param="dataset_file", code=exc.code
            ) from None
        judge_model, judge_base_url = request.get("judge_model"), request.get("judge_base_url")
        if judge_base_url:
            if not judge_model:
                raise InvalidRequest("judge_base_url needs judge_model", param="judge_model", code="invalid_value")
            if urlsplit(judge_base_url).scheme not in ("http", "https") or not urlsplit(judge_base_url).netloc:
                raise InvalidRequest("judge_base_url must be an http(s) URL", param="judge_base_url", code="invalid_value")
        elif judge_model and (judge_model.startswith("ft:") or self.check_base_models):
            self.catalog.lookup(project, judge_model, param="judge_model")  # judged by this server: it must exist here
        row = Evaluation(
            id=new_id("eval"),
            project=project,
            status=states.QUEUED,
            models=models,
            dataset_file=file.id,
            judge_model=judge_model,
            judge_base_url=judge_base_url,
            params=params,
            user_metadata=request.get("metadata"),
            fine_tuning_job_id=fine_tuning_job_id,
            progress_done=0,
            progress_total=n_items * len(models),
            created_at=now(),
        )
        with self.sessions.begin() as session:
            session.add(row)
        return row

    def create_auto_evaluations(self) -> list[Evaluation]:
        """Queue an evaluation of [the model it was tuned from, the fine-tuned model] on the validation
        file for every succeeded job that asked for one (`auto_evaluate`) and has none yet."""
        with self.sessions() as session:
            jobs = session.execute(
                select(Job.id, Job.project, Job.model, Job.fine_tuned_model, Job.validation_file, Job.spec).where(
                    Job.status == states.SUCCEEDED,
                    Job.validation_file.is_not(None),
                    Job.fine_tuned_model.is_not(None),
                    ~exists().where(Evaluation.fine_tuning_job_id == Job.id),
                )
            ).all()
        created = []
        for job in jobs:
            if not (job.spec or {}).get("auto_evaluate"):
                continue
            request = {
                "models": [job.model, job.fine_tuned_model],
                "dataset_file": job.validation_file,
                "max_items": AUTO_EVALUATE_MAX_ITEMS,
                "metadata": {"auto_evaluate": "true"},
            }
            try:
                created.append(self.create(job.project, request, fine_tuning_job_id=job.id))
            except TuneserveError as exc:  # recorded as failed, so it is not tried again at every poll
                created.append(self._record_failed(job.project, request, job.id, exc))
            except IntegrityError:
                pass  # another server sharing the database made it first
        return created

    def _record_failed(self, project: str, request: dict[str, Any], job_id: str, exc: TuneserveError) -> Evaluation:
        row = Evaluation(
            id=new_id("eval"),
            project=project,
            status=states.FAILED,
            models=request["models"],
            dataset_file=request["dataset_file"],
            params={**DEFAULTS, "max_items": request["max_items"]},
            user_metadata=request["metadata"],
            fine_tuning_job_id=job_id,
            progress_done=0,
            progress_total=0,
            error={"message": exc.message, "code": exc.code},
            created_at=now(),
            finished_at=now(),
        )
        with self.sessions.begin() as session:
            session.add(row)
        return row

    # -- read ---------------------------------------------------------------------------
    def get(self, project: str, evaluation_id: str) -> Evaluation:
        with self.sessions() as session:
            row = session.scalar(select(Evaluation).where(Evaluation.id == evaluation_id, Evaluation.project == project))
        if row is None:
            raise NotFound(f"No such evaluation: {evaluation_id}", param="evaluation_id", code="evaluation_not_found")
        return row

    def list(self, project: str, *, after: str | None = None, limit: int = 20) -> tuple[list[Evaluation], bool]:
        with self.sessions() as session:
            return page_after(
                session, select(Evaluation).where(Evaluation.project == project), Evaluation, after=after, limit=limit
            )

    def items(self, project: str, evaluation_id: str, *, after: int | None = None, limit: int = 20) -> tuple[list[dict], bool]:
        """Per-item answers and scores, in dataset order; `after` is the last index seen. Empty until it succeeds."""
        row = self.get(project, evaluation_id)
        report = self.report_dir(row.id) / "report.json"
        if row.status != states.SUCCEEDED or not report.exists():
            return [], False
        items = json.loads(report.read_text(encoding="utf-8"))["items"]
        start = 0 if after is None else max(0, after + 1)
        return items[start : start + limit], start + limit < len(items)

    def report_html(self, project: str, evaluation_id: str) -> Path:
        row = self.get(project, evaluation_id)
        path = self.report_dir(row.id) / "report.html"
        if not path.exists():
            raise Conflict(  # 409: the evaluation's state, not the request
                f"Evaluation {evaluation_id} is {row.status}; its report is written when it has run",
                param="evaluation_id",
                code="report_not_ready",
            )
        return path

    # -- change -------------------------------------------------------------------------
    def cancel(self, project: str, evaluation_id: str) -> Evaluation:
        """Cancel; a running evaluation stops after the answers in flight (within seconds)."""
        row = self.get(project, evaluation_id)
        if row.status in (states.SUCCEEDED, states.FAILED):
            raise Conflict(  # 409: the evaluation's state refuses it
                f"Evaluation {evaluation_id} has already {row.status}; it cannot be cancelled",
                param="evaluation_id",
                code="evaluation_not_cancellable",
            )
        with self.sessions.begin() as session:
            session.execute(
                update(Evaluation)
                .where(Evaluation.id == row.id, Evaluation.status.in_((states.QUEUED, states.RUNNING)))
                .values(status=states.CANCELLED, finished_at=now())
            )
        return self.get(project, evaluation_id)

    # -- the worker's side ----------------------------------------------------------------
    def report_dir(self, evaluation_id: str) -> Path:
        return self.reports_dir / evaluation_id

    def dataset_path(self, row: Evaluation) -> Path:
        return self.files.blobs.path(row.dataset_file)

    def requeue_interrupted(self, worker_id: str, stale_after_s: float = STALE_AFTER_S) -> int:
        """Queue again (to run from the beginning) what this server was running when it stopped, and
        what any server has not heart-beaten for `stale_after_s`. Servers sharing a database keep theirs."""
        with self.sessions.begin() as session:
            return session.execute(
                update(Evaluation)
                .where(
                    Evaluation.status == states.RUNNING,
                    or_(
                        leases.held_by(worker_id, Evaluation),
                        leases.held_by(None, Evaluation),
                        leases.is_stale(session, stale_after_s, Evaluation),
                    ),
                )
                .values(status=states.QUEUED, started_at=None, progress_done=0, worker_id=None, heartbeat_at=None)
            ).rowcount

    def claim_next(self, worker_id: str) -> Evaluation | None:
        """The oldest queued evaluation, now running here under `worker_id`'s lease; None when none is
        queued (or another server took it first)."""
        claimed = None
        with self.sessions.begin() as session:
            for evaluation_id in leases.unheld_queued(session, Evaluation):
                if session.execute(
                    update(Evaluation)
                    .where(Evaluation.id == evaluation_id, Evaluation.status == states.QUEUED, leases.held_by(None, Evaluation))
                    .values(status=states.RUNNING, started_at=now(), progress_done=0, **leases.hold(session, worker_id))
                ).rowcount:
                    claimed = evaluation_id
                    break
        if claimed is None:
            return None
        with self.sessions() as session:
            return session.scalar(select(Evaluation).where(Evaluation.id == claimed))

    def heartbeat(self, worker_id: str) -> set[str]:
        """Keep this worker's holds fresh; the ids of the evaluations it still holds."""
        with self.sessions.begin() as session:
            return leases.heartbeat(session, worker_id, Evaluation, statuses=(states.RUNNING,))

    def is_held(self, evaluation_id: str, worker_id: str) -> bool:
        """True while the evaluation runs under `worker_id`'s hold (not cancelled, not taken back)."""
        with self.sessions() as session:
            return bool(
                session.scalar(
                    select(Evaluation.id).where(
                        Evaluation.id == evaluation_id, Evaluation.status == states.RUNNING, leases.held_by(worker_id, Evaluation)
                    )
                )
            )

    def set_progress(self, evaluation_id: str, worker_id: str, done: int, total: int) -> None:
        """Record progress (shown while it runs), if `worker_id` still holds the evaluation."""
        with self.sessions.begin() as session:
            session.execute(
                update(Evaluation)
                .where(Evaluation.id == evaluation_id, Evaluation.status == states.RUNNING, leases.held_by(worker_id, Evaluation))
                .values(progress_done=done, progress_total=total)
            )

    def finish(
        self, evaluation_id: str, worker_id: str, *, summary: dict[str, Any] | None = None, error: dict[str, Any] | None = None
    ) -> bool:
        """succeeded with a summary, or failed with {message, code}, if `worker_id` still holds it; a
        cancelled evaluation stays cancelled, and one taken back by another server is that server's."""
        values: dict[str, Any] = {"status": states.FAILED if error else states.SUCCEEDED, "finished_at": now(), "error": error}
        if summary is not None:
            values["summary"] = summary
        with self.sessions.begin() as session:
            return bool(
                session.execute(
                    update(Evaluation)
                    .where(
                        Evaluation.id == evaluation_id, Evaluation.status == states.RUNNING, leases.held_by(worker_id, Evaluation)
                    )
                    .values(**values, heartbeat_at=None)
                ).rowcount
            )
