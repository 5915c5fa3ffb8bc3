"""The OPEA fine-tuning micro-service's own paths, which take the job id in a POST body.

Kept separate so the OpenAI routes stay exactly OpenAI's. `training_file` may be a file name
there; the job service accepts both.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from tuneserve.api.deps import Project
from tuneserve.api.schemas import JobIdBody, checkpoint_object, job_object

router = APIRouter(tags=["opea"])


@router.post("/v1/fine_tuning/jobs/retrieve")
def opea_retrieve(request: Request, project: Project, body: JobIdBody):
    """OPEA: retrieve a job by `fine_tuning_job_id`."""
    return job_object(request.app.state.jobs.get(project, body.fine_tuning_job_id))


@router.post("/v1/fine_tuning/jobs/cancel")
def opea_cancel(request: Request, project: Project, body: JobIdBody):
    """OPEA: cancel a job by `fine_tuning_job_id`."""
    return job_object(request.app.state.jobs.cancel(project, body.fine_tuning_job_id))


@router.post("/v1/finetune/list_checkpoints")
def opea_list_checkpoints(request: Request, project: Project, body: JobIdBody):
    """OPEA: a bare JSON array of the job's checkpoints, oldest first."""
    ckpts, _ = request.app.state.jobs.checkpoints(project, body.fine_tuning_job_id, limit=1000)
    return [checkpoint_object(c) for c in reversed(ckpts)]


@router.get("/v1/health_check")
def health_check():
    """OPEA: liveness."""
    return {"status": "ok", "service": "tuneserve"}
