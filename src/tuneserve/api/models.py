"""/v1/models: base models available here and the project's fine-tuned models.

Lineage is in each card: `root` is the base model, `parent` the model it was fine-tuned from
(a base model or another fine-tuned model), and `fine_tuning_job_id` the job that made it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from tuneserve.api.deps import Project
from tuneserve.errors import NotFound

router = APIRouter(prefix="/v1/models", tags=["models"])


def _cards(request: Request, project: str) -> list[dict]:
    catalog = request.app.state.catalog
    cards = [
        {"id": name, "object": "model", "created": 0, "owned_by": "tuneserve", "root": name, "parent": None}
        for name in catalog.base_models()
    ]
    for job in catalog.fine_tuned(project):
        base = job.spec["model"]
        cards.append(
            {
                "id": job.fine_tuned_model,
                "object": "model",
                "created": job.finished_at or job.created_at,
                "owned_by": project,
                "root": base,
                "parent": job.model,
                "fine_tuning_job_id": job.id,
            }
        )  # tuneserve extension: the job that made it (lineage)
    for adapter in catalog.runtime_adapters(project):  # loaded with /v1/load_lora_adapter (vLLM's protocol)
        cards.append(
            {
                "id": adapter["name"],
                "object": "model",
                "created": adapter["created"],
                "owned_by": project,
                "root": adapter["base"],
                "parent": adapter["base"],
            }
        )
    return cards


@router.get("")
def list_models(request: Request, project: Project):
    """Every base model available and every fine-tuned model of the caller's project."""
    return {"object": "list", "data": _cards(request, project)}


@router.get("/{model:path}")
def retrieve_model(request: Request, project: Project, model: str):
    """One model card."""
    for card in _cards(request, project):
        if card["id"] == model:
            return card
    raise NotFound(f"The model {model!r} does not exist", param="model", code="model_not_found")


@router.delete("/{model:path}")
def delete_model(request: Request, project: Project, model: str):
    """Remove a fine-tuned model from serving: it leaves /v1/models and answers 404 from then on."""
    adapter = request.app.state.catalog.delete(project, model)
    if request.app.state.upstream is not None:
        request.app.state.upstream.unregister_adapter(model)
    engine = request.app.state.engine
    if engine is not None:
        engine.unload_adapter(adapter)
    return {"id": model, "object": "model", "deleted": True}
